"""The supervised executor loop: crashes, restarts, giving up, thread-hosted executors."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import trio
import trio.testing

import suricate
from suricate import (
    AbandonReason,
    Abandoned,
    Backoff,
    Completed,
    Restart,
    RestartPolicy,
    SessionState,
    TurnResult,
)
from suricate.supervision import ExecutorLoop, LoopOptions
from suricate.testing import FaultyStore, ScriptedExecutor


async def test_fatal_crashes_the_loop_which_restarts_after_its_backoff(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(fail_times=2, error=suricate.Fatal("bad state"))
    policy = RestartPolicy(max_restarts=5, within=100, backoff=Backoff(initial=1, multiplier=2))
    async with rt.events(session_id="s", kinds={"supervisor.restarted"}) as events:
        await s.attach(ex, restart=policy)
        start = trio.current_time()
        with trio.fail_after(50):
            outcome = await s.ask({"x": 1})
        delays = [(await events.__anext__()).data["delay"] for _ in range(2)]
    assert isinstance(outcome, Completed)
    assert delays == [1, 2]
    assert trio.current_time() - start == pytest.approx(3)
    assert [t.attempt for t in ex.turns] == [1, 2, 3]
    stats = await s.stats()
    assert (stats.restarts, stats.crashes) == (2, 2)


async def test_too_many_crashes_give_up_and_stop_the_session(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(fail_times=100, error=suricate.Fatal("always"))
    other = await rt.open_session("other")
    await other.attach(ScriptedExecutor())
    async with rt.events(session_id="s", kinds={"supervisor.gave_up"}) as events:
        first = await s.submit({"x": 1})
        second = await s.submit({"x": 2})
        # Each input crashes one run: the first is requeued behind the second.
        await s.attach(ex, restart=RestartPolicy(max_restarts=1, within=10))
        with trio.fail_after(50):
            gave_up = await events.__anext__()
            out1 = await s.wait(first.input_id)
            out2 = await s.wait(second.input_id)
    assert "more than 1 restarts" in gave_up.data["reason"]
    assert await s.state() is SessionState.STOPPED
    assert out1 == Abandoned(
        input_id=first.input_id, reason=AbandonReason.STOPPED, error="Fatal: always"
    )
    assert out2 == Abandoned(
        input_id=second.input_id, reason=AbandonReason.STOPPED, error="Fatal: always"
    )
    # Another session is untouched, and attach revives the stopped one.
    with trio.fail_after(5):
        assert isinstance(await other.ask({"y": 1}), Completed)
        await s.attach(ScriptedExecutor())
        assert isinstance(await s.ask({"z": 1}), Completed)


async def test_a_poison_input_is_abandoned_after_max_attempts_crashes(rt, autojump_clock) -> None:
    s = await rt.open_session("s")

    async def executor(turn: suricate.Turn) -> TurnResult:
        if turn.inputs[0].payload == "poison":
            raise suricate.Fatal("poisoned")
        return TurnResult(result="ok")

    await s.attach(executor, restart=RestartPolicy(max_restarts=10, within=1))
    poison = await s.submit("poison")
    after = await s.submit("fine")
    with trio.fail_after(50):
        assert (await s.wait(poison.input_id)).reason is AbandonReason.MAX_ATTEMPTS
        assert isinstance(await s.wait(after.input_id), Completed)


async def test_a_turn_past_its_timeout_is_a_crash(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    calls = []

    async def executor(turn: suricate.Turn) -> TurnResult:
        calls.append(turn.attempt)
        if turn.attempt == 1:
            await trio.sleep_forever()
        return TurnResult(result="second time")

    await s.attach(executor, turn_timeout=2)
    with trio.fail_after(50):
        outcome = await s.ask({"x": 1})
    assert outcome == Completed(input_id=outcome.input_id, result="second time")
    assert calls == [1, 2]
    assert (await s.stats()).crashes == 1


@pytest.mark.parametrize(
    ("restart", "restarted"),
    [(Restart.PERMANENT, True), (Restart.TRANSIENT, False), (Restart.TEMPORARY, False)],
)
async def test_executor_exit_restarts_only_permanent_loops(rt, restart, restarted) -> None:
    s = await rt.open_session("s")
    seen = []

    async def executor(turn: suricate.Turn) -> TurnResult:
        seen.append(turn.attempt)
        if len(seen) == 1:
            raise suricate.ExecutorExit
        return TurnResult(result="ok")

    async with rt.events(session_id="s", kinds={"session.state"}) as events:
        await s.attach(executor, restart=RestartPolicy(restart=restart))
        ack = await s.submit({"x": 1})
        with trio.fail_after(5):
            if restarted:
                assert isinstance(await s.wait(ack.input_id), Completed)
                assert seen == [1, 1]
                return
            async for event in events:
                if event.data["to"] == "idle":
                    break
            record = await s.input(ack.input_id)
            assert record.state is suricate.InputState.QUEUED and record.attempt == 0


async def test_a_plain_function_runs_on_its_own_thread() -> None:
    main = threading.get_ident()
    threads = []

    def blocking(turn: suricate.Turn) -> TurnResult:
        threads.append(threading.get_ident())
        return TurnResult(result=turn.inputs[0].payload * 2)

    async with suricate.open_runtime() as rt:
        s = await rt.open_session("s")
        await s.attach(blocking)
        with trio.fail_after(10):
            outcomes = [await s.ask(i) for i in range(3)]
    assert [o.result for o in outcomes] == [0, 2, 4]
    assert threads and all(t != main for t in threads)


async def test_a_thread_executor_that_raises_fails_the_run() -> None:
    def blocking(turn: suricate.Turn) -> TurnResult:
        if turn.attempt < 2:
            raise KeyError("missing")
        return TurnResult(result="ok")

    async with suricate.open_runtime() as rt:
        s = await rt.open_session("s")
        await s.attach(suricate.ThreadExecutor(blocking))
        with trio.fail_after(10):
            outcome = await s.ask("x")
    assert outcome == Completed(input_id=outcome.input_id, result="ok")


async def test_a_stuck_thread_is_replaced_on_timeout() -> None:
    release = threading.Event()
    threads = []

    def blocking(turn: suricate.Turn) -> TurnResult:
        threads.append(threading.current_thread())
        if turn.attempt == 1:
            release.wait(30)
        return TurnResult(result="fresh thread")

    try:
        async with suricate.open_runtime() as rt:
            s = await rt.open_session("s")
            await s.attach(blocking, turn_timeout=0.2)
            with trio.fail_after(10):
                outcome = await s.ask("x")
    finally:
        release.set()
    assert outcome.result == "fresh thread"
    assert len(threads) == 2 and threads[0] is not threads[1]


async def test_a_hung_session_is_restarted_then_stopped_while_others_progress_unchanged(
    rt, autojump_clock
) -> None:
    completions: dict[str, list[float]] = {}
    all_done = trio.Event()

    async def worker(turn: suricate.Turn) -> TurnResult:
        await trio.sleep(1)  # the turn's own work, in virtual time
        completions.setdefault(turn.session_id, []).append(trio.current_time())
        if sum(len(v) for v in completions.values()) >= 50 * 30:
            all_done.set()
        return TurnResult(result="ok")

    async def hang(turn: suricate.Turn) -> TurnResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    others = [await rt.open_session(f"w{n}") for n in range(50)]
    for s in others:
        await s.attach(worker)
        for i in range(40):
            await s.submit({"i": i})
    start = trio.current_time()
    hung = await rt.open_session("hung")
    await hung.attach(hang, turn_timeout=5, restart=RestartPolicy(max_restarts=2, within=100))
    stuck = await hung.submit({"x": 1})
    with trio.fail_after(1000):
        outcome = await hung.wait(stuck.input_id)
    gave_up_at = trio.current_time() - start
    await trio.testing.wait_all_tasks_blocked()  # the loop gives up after the abandon
    assert await hung.state() is SessionState.STOPPED
    assert outcome == Abandoned(
        input_id=stuck.input_id, reason=AbandonReason.MAX_ATTEMPTS,
        error="turn exceeded turn_timeout of 5 s",
    )
    assert (await hung.stats()).restarts == 2
    assert gave_up_at == pytest.approx(15)
    with trio.fail_after(1000):
        await all_done.wait()

    def done_within(lo: float, hi: float) -> list[int]:
        return [sum(1 for t in completions[s.id] if lo < t - start <= hi) for s in others]

    # While the hung session was being restarted and stopped, and after: the same pace.
    assert done_within(0, 15) == done_within(15, 30) == [15] * 50


async def test_a_thread_executor_whose_thread_died_gets_a_new_one() -> None:
    threads: list[threading.Thread] = []

    def blocking(turn: suricate.Turn) -> TurnResult:
        threads.append(threading.current_thread())
        return TurnResult(result="ok")

    te = suricate.ThreadExecutor(blocking)
    async with suricate.open_runtime() as rt:
        s = await rt.open_session("s")
        await s.attach(te)
        with trio.fail_after(10):
            await s.ask("first")
            assert te._host is not None
            te._host.stop()  # the thread dies between turns
            assert isinstance(await s.ask("second"), Completed)
    assert len(threads) == 2 and threads[0] is not threads[1]
    assert not threads[0].is_alive()


async def _collect(events: Any, seconds: float) -> list[suricate.Event]:
    got = []
    with trio.move_on_after(seconds):
        async for event in events:
            got.append(event)
    return got


async def test_a_loop_stopped_before_it_runs_ends_without_restarts(rt, autojump_clock) -> None:
    # A detach (or shutdown) handled before the new loop's task first ran.
    s = await rt.open_session("s")
    emitted: list[str] = []
    loop = ExecutorLoop(
        session=s._ref,
        session_id="s",
        run_turn=ScriptedExecutor().run,
        options=LoopOptions(),
        rng=random.Random(1),
        emit=lambda kind, data: emitted.append(kind),
    )
    loop.close()
    start = trio.current_time()
    with trio.fail_after(5):
        await loop.run()
    assert (trio.current_time(), loop.restart_count, emitted) == (start, 0, [])


async def test_detach_ends_a_retry_backoff_at_once(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(fail_times=100)
    await s.attach(ex, retry=Backoff(initial=1000))
    await s.submit({"x": 1})
    with trio.fail_after(5):
        await ex.wait_finished(1)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await s.detach()
    assert trio.current_time() == start
    assert len(ex.turns) == 1


async def test_shutdown_ends_a_restart_backoff_at_once(store, ids, autojump_clock) -> None:
    ex = ScriptedExecutor(fail_times=100, error=suricate.Fatal("down"))
    policy = RestartPolicy(max_restarts=5, within=10_000, backoff=Backoff(initial=1000))
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(ex, restart=policy)
        await s.submit({"x": 1})
        with trio.fail_after(5):
            await ex.wait_finished(1)
            await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert trio.current_time() == start
    assert len(ex.turns) == 1


async def test_giving_up_is_one_event(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    async with rt.events(session_id="s", kinds={"supervisor.gave_up"}) as events:
        await s.attach(
            ScriptedExecutor(fail_times=100, error=suricate.Fatal("x")),
            restart=RestartPolicy(max_restarts=1, within=10),
        )
        await s.submit({"x": 1})
        assert len(await _collect(events, 100)) == 1
    assert await s.state() is SessionState.STOPPED


async def test_a_failed_give_up_commit_leaves_the_runtime_running(store, ids, autojump_clock) -> None:
    faulty = FaultyStore(store)
    disarm = faulty.fail_commit_if(
        lambda ws: ws.session is not None and ws.session.state is SessionState.STOPPED
    )
    async with suricate.open_runtime(faulty, id_factory=ids) as rt:
        s = await rt.open_session("s")
        ack = await s.submit({"x": 1})
        async with rt.events(session_id="s", kinds={"supervisor.gave_up"}) as events:
            await s.attach(
                ScriptedExecutor(fail_times=1, error=suricate.Fatal("x")),
                restart=RestartPolicy(max_restarts=0, within=10),
            )
            with trio.fail_after(50):
                await events.__anext__()
                await trio.testing.wait_all_tasks_blocked()
        assert faulty.failed  # the STOPPED record was refused
        assert await s.state() is SessionState.IDLE  # as the store has it
        disarm()
        with trio.fail_after(50):
            await s.attach(ScriptedExecutor())
            assert isinstance(await s.wait(ack.input_id), Completed)
