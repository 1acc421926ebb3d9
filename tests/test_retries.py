"""Retries that fit LLM work: the default failed-run backoff, TerminalError,
re-driving an abandoned input, cancelling a queued one, keeping the backlog
when a supervisor gives up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

import suricate
from suricate import (
    AbandonReason,
    Abandoned,
    Completed,
    InputState,
    MemoryStore,
    SessionState,
)


# -- 1. the default failed-run backoff ---------------------------------------------


async def test_by_default_three_failed_runs_take_about_one_plus_two_seconds(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    starts: list[float] = []

    async def failing(turn: suricate.Turn) -> None:
        starts.append(trio.current_time())
        raise RuntimeError("rate limited")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids, seed=7) as rt:
        s = await rt.open_session("s")
        await s.attach(failing)
        outcome = await s.ask({"n": 1}, timeout=60)
    assert isinstance(outcome, Abandoned) and outcome.reason is AbandonReason.MAX_ATTEMPTS
    assert len(starts) == 3
    first, second = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.8 <= first <= 1.2  # initial 1.0, jitter 0.2
    assert 1.6 <= second <= 2.4  # times the multiplier 2.0
    assert 2.4 <= starts[2] - starts[0] <= 3.6


async def test_retry_none_retries_at_once(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    starts: list[float] = []

    async def failing(turn: suricate.Turn) -> None:
        starts.append(trio.current_time())
        raise RuntimeError("boom")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(failing, retry=None)
        outcome = await s.ask({"n": 1}, timeout=60)
    assert isinstance(outcome, Abandoned)
    assert len(starts) == 3 and starts[2] - starts[0] < 0.01


def test_the_default_retry_is_the_documented_backoff() -> None:
    import inspect

    default = inspect.signature(suricate.Session.attach).parameters["retry"].default
    assert default == suricate.Backoff(initial=1.0, multiplier=2.0, maximum=60.0, jitter=0.2)


# -- 2. TerminalError ----------------------------------------------------------------


def test_terminal_error_is_a_suricate_error_exported() -> None:
    assert issubclass(suricate.TerminalError, suricate.SuricateError)
    assert "TerminalError" in suricate.__all__
    assert suricate.AbandonReason.FAILED.value == "failed"
    assert str(suricate.TerminalError("bad request")) == "bad request"


async def test_terminal_error_abandons_at_once_without_retry_or_crash(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    runs: list[str] = []

    async def executor(turn: suricate.Turn) -> suricate.TurnResult:
        payload = turn.inputs[0].payload
        runs.append(payload["n"])
        if payload["n"] == "bad":
            raise suricate.TerminalError("400 bad request")
        return suricate.TurnResult(result="ok")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(executor)
        start = trio.current_time()
        bad = await s.submit({"n": "bad"})
        good = await s.submit({"n": "good"})
        outcome = await s.wait(bad.input_id, timeout=30)
        assert outcome == Abandoned(
            input_id=bad.input_id, reason=AbandonReason.FAILED, error="TerminalError: 400 bad request"
        ) or (
            isinstance(outcome, Abandoned)
            and outcome.reason is AbandonReason.FAILED
            and "400 bad request" in (outcome.error or "")
        )
        assert isinstance(await s.wait(good.input_id, timeout=30), Completed)
        # No backoff after a terminal error, no retry, no crash.
        assert trio.current_time() - start < 0.5
        assert runs == ["bad", "good"]
        stats = await s.stats()
        assert stats.restarts == 0 and stats.crashes == 0
        record = await s.input(bad.input_id)
        assert record is not None and record.attempt == 1
        assert record.state is InputState.ABANDONED
        assert await s.state() is SessionState.ATTACHED


async def test_terminal_error_after_a_checkpoint_consumes_the_applied_input(
    ids: Callable[[], str],
) -> None:
    async def executor(turn: suricate.Turn) -> None:
        await turn.checkpoint(results={turn.inputs[0].input_id: "half"})
        raise suricate.TerminalError("cannot go on")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(executor)
        with trio.fail_after(5):
            outcome = await s.ask({"n": 1})
    assert isinstance(outcome, Completed)
    assert outcome.result == "half"
    assert outcome.interrupted is True


# -- 3. Session.retry ----------------------------------------------------------------


async def _abandoned_input(s: suricate.Session) -> str:
    """An input abandoned after its attempts ran out, on a detached session."""

    async def failing(turn: suricate.Turn) -> None:
        raise RuntimeError("outage")

    await s.attach(failing, retry=None)
    ack = await s.submit({"n": 1}, idempotency_key="k-1")
    outcome = await s.wait(ack.input_id, timeout=10)
    assert isinstance(outcome, Abandoned) and outcome.reason is AbandonReason.MAX_ATTEMPTS
    await s.detach()
    return ack.input_id


async def test_retry_requeues_an_abandoned_input_at_the_tail_with_its_id_and_key(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        gone = await _abandoned_input(s)
        other = await s.submit({"n": 2})
        ack = await s.retry(gone)
        assert ack == suricate.Accepted(input_id=gone, state=InputState.QUEUED)
        record = await s.input(gone)
        assert record is not None
        assert record.state is InputState.QUEUED and record.attempt == 0
        assert record.reason is None
        assert record.idempotency_key == "k-1"
        assert [h.state for h in record.history][-2:] == [InputState.ABANDONED, InputState.QUEUED]
        # The key still names the same input.
        dup = await s.submit({"n": 1}, idempotency_key="k-1")
        assert dup.input_id == gone
        # At the tail: behind the input submitted after it was abandoned.
        order: list[str] = []

        async def ok(turn: suricate.Turn) -> suricate.TurnResult:
            order.append(turn.inputs[0].input_id or "")
            return suricate.TurnResult(result="done")

        await s.attach(ok)
        with trio.fail_after(10):
            assert await s.wait(gone) == Completed(input_id=gone, result="done")
        assert order == [other.input_id, gone]
    # Durable: a new runtime sees the completion.
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert await s.wait(gone) == Completed(input_id=gone, result="done")


async def test_retry_of_an_input_not_in_memory_loads_it_from_the_store(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        gone = await _abandoned_input(await rt.open_session("s"))
    async with suricate.open_runtime(store_factory(), id_factory=lambda: "x" + ids()) as rt:
        s = await rt.open_session("s")
        waiter_before = await s.wait(gone)
        assert isinstance(waiter_before, Abandoned)
        await s.retry(gone)
        await s.attach(suricate.testing.ScriptedExecutor())
        with trio.fail_after(10):
            assert isinstance(await s.wait(gone), Completed)


async def test_retry_refuses_other_states_and_unknown_ids(ids: Callable[[], str]) -> None:
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        queued = await s.submit({"n": 1})
        with pytest.raises(suricate.NotReady):
            await s.retry(queued.input_id)
        with pytest.raises(suricate.InputNotFound):
            await s.retry("nope")
        with pytest.raises(suricate.InputRejected):
            await s.retry(3)  # type: ignore[arg-type]
        await s.attach(suricate.testing.ScriptedExecutor())
        with trio.fail_after(5):
            await s.wait(queued.input_id)
        with pytest.raises(suricate.NotReady):
            await s.retry(queued.input_id)  # consumed


async def test_retry_into_a_stopped_session_is_refused(ids: Callable[[], str]) -> None:
    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        ack = await s.submit({"n": 1})
        await s.stop()
        with pytest.raises(suricate.NotReady):
            await s.retry(ack.input_id)


# -- 4. Session.cancel ---------------------------------------------------------------


async def test_cancel_abandons_a_queued_input_and_resolves_its_waiters(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        ack = await s.submit({"n": 1})
        keep = await s.submit({"n": 2})
        got: list[suricate.Outcome] = []

        async def waiter() -> None:
            got.append(await s.wait(ack.input_id))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.05)
            outcome = await s.cancel(ack.input_id)
        expected = Abandoned(input_id=ack.input_id, reason=AbandonReason.CANCELLED)
        assert outcome == expected and got == [expected]
        assert await s.cancel(ack.input_id) == expected  # terminal: unchanged
        await s.attach(suricate.testing.ScriptedExecutor())
        with trio.fail_after(5):
            done = await s.wait(keep.input_id)
        assert await s.cancel(keep.input_id) == done
        with pytest.raises(suricate.InputNotFound):
            await s.cancel("nope")
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert await s.wait(ack.input_id) == expected


async def test_cancel_refuses_a_staged_input(ids: Callable[[], str]) -> None:
    started = trio.Event()
    release = trio.Event()

    async def slow(turn: suricate.Turn) -> None:
        started.set()
        await release.wait()

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(slow)
        ack = await s.submit({"n": 1})
        with trio.fail_after(5):
            await started.wait()
        with pytest.raises(suricate.NotReady):
            await s.cancel(ack.input_id)
        release.set()
        with trio.fail_after(5):
            assert isinstance(await s.wait(ack.input_id), Completed)


# -- 5. GiveUp.KEEP --------------------------------------------------------------------


def test_give_up_is_an_exported_enum_defaulting_to_abandon() -> None:
    assert "GiveUp" in suricate.__all__
    assert {m.name for m in suricate.GiveUp} == {"ABANDON", "KEEP"}
    assert suricate.RestartPolicy().on_give_up is suricate.GiveUp.ABANDON


async def test_give_up_keep_leaves_the_backlog_queued_for_the_next_attach(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    async def crashing(turn: suricate.Turn) -> None:
        raise suricate.Fatal("down")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        acks = [await s.submit({"n": n}) for n in range(4)]
        async with rt.events("s", kinds={"supervisor.gave_up"}) as events:
            await s.attach(
                crashing,
                restart=suricate.RestartPolicy(
                    max_restarts=1, within=60.0, on_give_up=suricate.GiveUp.KEEP
                ),
            )
            with trio.fail_after(30):
                async for _ in events:
                    break
        with trio.fail_after(30):
            while await s.state() is not SessionState.STOPPED:
                await trio.sleep(0.01)
        records = [await s.input(a.input_id) for a in acks]
        assert all(r is not None and r.state is InputState.QUEUED for r in records)
        await s.attach(suricate.testing.ScriptedExecutor())
        with trio.fail_after(30):
            for ack in acks:
                assert isinstance(await s.wait(ack.input_id), Completed)


async def test_give_up_abandon_is_still_the_default(
    autojump_clock: trio.abc.Clock, ids: Callable[[], str]
) -> None:
    async def crashing(turn: suricate.Turn) -> None:
        raise suricate.Fatal("down")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        acks = [await s.submit({"n": n}) for n in range(3)]
        await s.attach(crashing, restart=suricate.RestartPolicy(max_restarts=0))
        with trio.fail_after(30):
            outcomes = [await s.wait(a.input_id) for a in acks]
        assert all(isinstance(o, Abandoned) for o in outcomes)
        assert await s.state() is SessionState.STOPPED


async def test_a_backlog_kept_after_giving_up_survives_a_restart(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async def crashing(turn: suricate.Turn) -> None:
        raise suricate.Fatal("down")

    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        acks = [await s.submit({"n": n}) for n in range(3)]
        await s.attach(
            crashing,
            retry=None,
            restart=suricate.RestartPolicy(max_restarts=0, on_give_up=suricate.GiveUp.KEEP),
        )
        with trio.fail_after(10):
            while await s.state() is not SessionState.STOPPED:
                await trio.sleep(0.01)
    async with suricate.open_runtime(store_factory(), id_factory=lambda: "b" + ids()) as rt:
        s = await rt.open_session("s")
        assert await s.state() is SessionState.STOPPED
        assert [r.state for r in await s.inputs()] == [InputState.QUEUED] * 3
        with pytest.raises(suricate.NotReady):
            await s.submit({"n": 9})
        await s.attach(suricate.testing.ScriptedExecutor())
        with trio.fail_after(10):
            for ack in acks:
                assert isinstance(await s.wait(ack.input_id), Completed)


async def test_a_thread_hosted_executor_can_raise_terminal_error(ids: Callable[[], str]) -> None:
    def blocking(turn: suricate.Turn) -> None:
        raise suricate.TerminalError("invalid")

    async with suricate.open_runtime(MemoryStore(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(blocking)
        with trio.fail_after(10):
            outcome = await s.ask({"n": 1})
    assert isinstance(outcome, Abandoned) and outcome.reason is AbandonReason.FAILED
