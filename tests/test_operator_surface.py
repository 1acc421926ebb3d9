"""The operator's and developer's surface: errors in history, Completed.interrupted,
Session.inputs, Runtime.wait_idle, Session.ensure_attached, failure log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

import suricate
from suricate import Completed, InputState, MemoryStore, SessionState, TurnResult
from suricate.testing import ScriptedExecutor


# -- errors in history ---------------------------------------------------------------


async def test_a_failed_run_leaves_its_error_in_the_history(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    calls = 0

    async def flaky(turn: suricate.Turn) -> TurnResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("429 slow down")
        return TurnResult(result="ok")

    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(flaky, retry=None)
        with trio.fail_after(10):
            ack = await s.submit({"n": 1})
            assert await s.wait(ack.input_id) == Completed(input_id=ack.input_id, result="ok")
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        record = await s.input(ack.input_id)
    assert record is not None
    states = [(h.state, h.error) for h in record.history]
    assert states == [
        (InputState.QUEUED, None),
        (InputState.STAGED, None),
        (InputState.QUEUED, "RuntimeError: 429 slow down"),
        (InputState.STAGED, None),
        (InputState.CONSUMED, None),
    ]


async def test_an_interrupted_run_says_interrupted_in_the_history(ids: Callable[[], str]) -> None:
    started = trio.Event()

    async def slow(turn: suricate.Turn) -> None:
        started.set()
        await trio.sleep_forever()

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(slow)
        ack = await s.submit({"n": 1})
        with trio.fail_after(5):
            await started.wait()
            await s.detach(cancel=True)
        record = await s.input(ack.input_id)
    assert record is not None
    assert (record.history[-1].state, record.history[-1].error) == (InputState.QUEUED, "interrupted")


async def test_recovery_says_the_process_exited_during_the_run(tmp_path) -> None:
    path = tmp_path / "agent.db"
    store = suricate.store.SqliteStore(path)
    started = trio.Event()

    async def hang(turn: suricate.Turn) -> None:
        started.set()
        await trio.sleep_forever()

    # A run that never ends: the runtime is left with the input staged on disk
    # (as after a crash, the store is what the next process sees).
    faulty = suricate.testing.FaultyStore(store)
    with trio.fail_after(20):
        async with suricate.open_runtime(faulty) as rt:
            s = await rt.open_session("s")
            await s.attach(hang)
            ack = await s.submit({"n": 1})
            await started.wait()
            # The interruption at shutdown cannot be written: the input stays STAGED.
            faulty.fail_commit_if(lambda ws: True)
    with trio.fail_after(20):
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("s")
            record = await s.input(ack.input_id)
    assert record is not None and record.state is InputState.QUEUED
    assert record.history[-1].error == "process exited during run"


# -- Completed.interrupted -----------------------------------------------------------


async def test_interrupt_after_a_checkpoint_completes_as_interrupted_also_after_a_restart(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    checkpointed = trio.Event()

    async def agent(turn: suricate.Turn) -> TurnResult:
        if turn.inputs[0].payload.get("stop"):
            return TurnResult(result="stopped")
        await turn.checkpoint(results={turn.inputs[0].input_id: "partial"})
        checkpointed.set()
        await trio.sleep_forever()
        raise AssertionError

    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(agent)
        with trio.fail_after(10):
            ack = await s.submit({"n": 1})
            await checkpointed.wait()
            await s.submit({"stop": True}, handling="interrupt")
            outcome = await s.wait(ack.input_id)
        assert outcome == Completed(input_id=ack.input_id, result="partial", interrupted=True)
        done = await s.ask({"n": 2, "stop": True}, timeout=10)
        assert done == Completed(input_id=done.input_id, result="stopped", interrupted=False)
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert await s.wait(ack.input_id) == outcome
        assert (await s.wait(done.input_id)).interrupted is False  # type: ignore[union-attr]


# -- Session.inputs ------------------------------------------------------------------


async def test_inputs_lists_in_admission_order_with_state_filter_and_paging(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        acks = [await s.submit({"n": n}) for n in range(5)]
        eph = await s.submit({"n": "e"}, durability="ephemeral")
        await s.cancel(acks[1].input_id)
        everything = await s.inputs()
        assert [r.input_id for r in everything] == [a.input_id for a in acks] + [eph.input_id]
        assert [r.input_id for r in await s.inputs(state=InputState.ABANDONED)] == [
            acks[1].input_id
        ]
        page = await s.inputs(limit=2)
        assert [r.input_id for r in page] == [acks[0].input_id, acks[1].input_id]
        rest = await s.inputs(limit=2, after=page[-1].input_id)
        assert [r.input_id for r in rest] == [acks[2].input_id, acks[3].input_id]
        await s.attach(ScriptedExecutor())
        with trio.fail_after(10):
            for ack in acks:
                await s.wait(ack.input_id)
        consumed = await s.inputs(state=InputState.CONSUMED)
        assert [r.input_id for r in consumed] == [
            acks[0].input_id, *(a.input_id for a in acks[2:]), eph.input_id
        ]
        for bad in ({"limit": 0}, {"limit": "3"}, {"limit": True}, {"state": "queued"}, {"after": 5}):
            with pytest.raises(suricate.InputRejected):
                await s.inputs(**bad)  # type: ignore[arg-type]
        with pytest.raises(suricate.InputNotFound):
            await s.inputs(after="nope")
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert [r.input_id for r in await s.inputs()] == [a.input_id for a in acks]


# -- Runtime.wait_idle ---------------------------------------------------------------


async def test_wait_idle_returns_once_message_passing_settles(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    async def ping(turn: suricate.Turn) -> TurnResult:
        n = turn.inputs[0].payload["n"]
        await trio.sleep(1)
        messages = [suricate.PeerMessage("pong", {"n": n + 1})] if n < 5 else []
        return TurnResult(result=n, messages=messages)

    async def pong(turn: suricate.Turn) -> TurnResult:
        n = turn.inputs[0].payload["n"]
        await trio.sleep(1)
        return TurnResult(result=n, messages=[suricate.PeerMessage("ping", {"n": n + 1})])

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        a = await rt.open_session("ping")
        b = await rt.open_session("pong")
        await a.attach(ping)
        await b.attach(pong)
        await rt.wait_idle(timeout=5)  # nothing to do
        await a.submit({"n": 0})
        with pytest.raises(suricate.WaitTimeout):
            await rt.wait_idle(timeout=0.5)
        await rt.wait_idle(timeout=60)
        # ping gets 0, 2, 4, 6 and pong 1, 3, 5: every message was delivered and ran.
        assert len(await a.inputs()) == 4 and len(await b.inputs()) == 3
        for s in (a, b):
            assert all(r.state is InputState.CONSUMED for r in await s.inputs())
        with pytest.raises(suricate.InputRejected):
            await rt.wait_idle(timeout=-1)


async def test_wait_idle_ignores_work_without_an_executor(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.submit({"n": 1})
        await rt.wait_idle(timeout=1)


# -- Session.ensure_attached ---------------------------------------------------------


async def test_ensure_attached_attaches_once_under_concurrent_calls(ids: Callable[[], str]) -> None:
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        results: list[bool] = []

        async def call() -> None:
            results.append(await s.ensure_attached(ScriptedExecutor(), retry=None))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
        assert sorted(results) == [False, False, False, False, True]
        assert await s.state() is SessionState.ATTACHED
        assert await s.ensure_attached(ScriptedExecutor()) is False
        with pytest.raises(suricate.InputRejected):
            await s.ensure_attached(ScriptedExecutor(), bogus=1)
        with pytest.raises(suricate.InputRejected):
            await s.ensure_attached(ScriptedExecutor(), max_batch=0)
        await s.detach()
        assert await s.ensure_attached(ScriptedExecutor()) is True
        with trio.fail_after(5):
            assert isinstance(await s.ask({"n": 1}), Completed)


# -- logging ---------------------------------------------------------------------------


async def test_failure_log_lines_name_session_run_and_inputs(
    caplog: pytest.LogCaptureFixture, ids: Callable[[], str]
) -> None:
    async def failing(turn: suricate.Turn) -> None:
        raise RuntimeError("nope")

    caplog.set_level(logging.WARNING, logger="suricate")
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(failing, retry=None)
        with trio.fail_after(5):
            ack = await s.ask({"n": 1})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run.failed")]
    assert len(lines) == 3
    for line in lines:
        assert "session=s" in line and f"input={ack.input_id}" in line and "run=id-" in line
        assert "input=None" not in line


async def test_a_crash_log_line_names_the_run_and_its_inputs(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    async def crashing(turn: suricate.Turn) -> None:
        raise suricate.Fatal("down")

    caplog.set_level(logging.WARNING, logger="suricate")
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(crashing, retry=None, restart=suricate.RestartPolicy(max_restarts=0))
        with trio.fail_after(5):
            ack = await s.ask({"n": 1})
    crashed = [r for r in caplog.records if r.getMessage().startswith("supervisor.crashed")]
    assert crashed
    assert f"input={ack.input_id}" in crashed[0].getMessage()
    assert getattr(crashed[0], "run_id", None) is not None


# -- the other faces -----------------------------------------------------------------


def _echo(turn: suricate.Turn) -> TurnResult:
    return TurnResult(results={i.input_id: i.payload for i in turn.inputs if i.input_id})


def _terminal(turn: suricate.Turn) -> None:
    raise suricate.TerminalError("never")


def test_the_blocking_face_has_retry_cancel_inputs_ensure_attached_wait_idle() -> None:
    import suricate.blocking

    with suricate.blocking.open_runtime() as rt:
        s = rt.open_session("s")
        queued = s.submit({"n": 1})
        assert isinstance(s.cancel(queued.input_id), suricate.Abandoned)
        assert s.ensure_attached(_terminal) is True  # a plain function: on a thread
        assert s.ensure_attached(_terminal) is False
        gone = s.ask({"n": 2}, timeout=10)
        assert isinstance(gone, suricate.Abandoned)
        assert gone.reason is suricate.AbandonReason.FAILED
        s.detach()
        s.attach(_echo)
        assert s.retry(gone.input_id).input_id == gone.input_id
        rt.wait_idle(timeout=10)
        assert s.wait(gone.input_id, timeout=10) == Completed(input_id=gone.input_id, result={"n": 2})
        assert [r.input_id for r in s.inputs()] == [queued.input_id, gone.input_id]


def test_the_asyncio_face_has_retry_cancel_inputs_ensure_attached_wait_idle() -> None:
    import asyncio

    import suricate.aio

    async def agent(turn: suricate.Turn) -> TurnResult:
        await asyncio.sleep(0)
        return _echo(turn)

    async def main() -> None:
        async with suricate.aio.open_runtime() as rt:
            s = await rt.open_session("s")
            queued = await s.submit({"n": 1})
            assert isinstance(await s.cancel(queued.input_id), suricate.Abandoned)
            assert await s.ensure_attached(agent) is True
            assert await s.ensure_attached(agent) is False
            assert (await s.retry(queued.input_id)).input_id == queued.input_id
            await rt.wait_idle(timeout=10)
            assert [r.state for r in await s.inputs()] == [InputState.CONSUMED]

    asyncio.run(main())
