"""Checkpoint rollback: a failed commit leaves memory equal to the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import suricate
from suricate import Completed, InputState, SessionState, TurnResult
from suricate.testing import FaultyStore, ScriptedExecutor, durable_view, memory_view


async def _prepare(rt: suricate.Runtime, state: str) -> suricate.Session:
    s = await rt.open_session("s")
    await s.submit({"q": 1}, idempotency_key="k1")
    await s.submit({"q": 2}, kind="k", supersession_key="same")
    if state == "retired":
        await s.retire()
    elif state == "stopped":
        await s.stop()
    return s


OPERATIONS: list[tuple[str, str, Callable[[suricate.Session], Awaitable[object]], SessionState]] = [
    # (state before, name, operation, state once it succeeded)
    ("idle", "submit", lambda s: s.submit({"q": 3}, kind="k", supersession_key="same"), SessionState.IDLE),
    ("idle", "retire", lambda s: s.retire(), SessionState.RETIRED),
    ("idle", "reset", lambda s: s.reset(), SessionState.IDLE),
    ("idle", "recycle", lambda s: s.recycle(), SessionState.IDLE),
    ("idle", "stop", lambda s: s.stop(), SessionState.STOPPED),
    ("idle", "destroy", lambda s: s.destroy(), SessionState.DESTROYED),
    ("idle", "recover", lambda s: s.recover(), SessionState.IDLE),
    ("retired", "reset", lambda s: s.reset(), SessionState.IDLE),
    ("retired", "stop", lambda s: s.stop(), SessionState.STOPPED),
    ("stopped", "attach", lambda s: s.attach(ScriptedExecutor()), SessionState.ATTACHED),
    ("stopped", "retire", lambda s: s.retire(), SessionState.RETIRED),
    ("stopped", "destroy", lambda s: s.destroy(), SessionState.DESTROYED),
]


@pytest.mark.parametrize(("state", "name", "operation", "after"), OPERATIONS)
async def test_a_failed_commit_rolls_every_operation_back_and_a_retry_succeeds(
    faulty, state, name, operation, after
) -> None:
    rt, store = faulty
    s = await _prepare(rt, state)
    before = await memory_view(s)
    state_before = await s.state()
    assert before == await durable_view(store, "s")
    store.fail_next_commit()
    with pytest.raises(suricate.StoreError):
        await operation(s)
    assert len(store.failed) == 1
    assert await memory_view(s) == before
    assert await durable_view(store, "s") == before
    assert await s.state() is state_before
    # Once the store works again, the same operation succeeds.
    store.disarm()
    await operation(s)
    assert len(store.failed) == 1
    assert await s.state() is after
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_custom_error_is_raised_as_given(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    store.fail_next_commit(suricate.StoreError("disk full"))
    with pytest.raises(suricate.StoreError, match="disk full"):
        await s.submit({"x": 1}, idempotency_key="k")
    assert await memory_view(s) == await durable_view(store, "s")
    store.disarm()
    ack = await s.submit({"x": 1}, idempotency_key="k")
    assert isinstance(ack, suricate.Accepted)  # the failed submit left no trace
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_failed_turn_commit_requeues_and_the_retry_commits_once(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    armed = {"on": True}
    store.fail_commit_if(lambda ws: armed["on"] and ws.receipt is not None)
    ex = ScriptedExecutor(result=lambda t: TurnResult(snapshot={"n": len(ex.turns)}, result="ok"))

    def disarm_after_first(turn: suricate.Turn) -> TurnResult:
        armed["on"] = False
        return TurnResult(snapshot={"turns": 2}, result="ok")

    ex.result = lambda turn: (
        TurnResult(snapshot={"turns": 1}, result="first") if len(ex.turns) == 1 else disarm_after_first(turn)
    )
    await s.attach(ex)
    with trio.fail_after(5):
        outcome = await s.ask({"x": 1})
    assert outcome == Completed(input_id=outcome.input_id, result="ok")
    assert len(ex.turns) == 2 and [t.attempt for t in ex.turns] == [1, 2]
    assert await s.snapshot() == {"turns": 2}
    record = await s.input(outcome.input_id)
    assert record.state is InputState.CONSUMED and record.attempt == 2
    receipts = [ws.receipt for ws in store.committed if ws.receipt is not None]
    assert [r.input_ids for r in receipts] == [(outcome.input_id,)]
    assert await memory_view(s) == await durable_view(store, "s")


async def test_turn_commits_that_always_fail_abandon_the_input_with_the_store_error(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    disarm = store.fail_commit_if(
        lambda ws: ws.receipt is not None, suricate.StoreError("read-only")
    )
    await s.attach(
        ScriptedExecutor(result=lambda t: TurnResult(snapshot={"x": t.inputs[0].payload}, result="ok")),
        retry=None,
    )
    with trio.fail_after(5):
        outcome = await s.ask({"x": 1})
    assert isinstance(outcome, suricate.Abandoned)
    assert outcome.reason is suricate.AbandonReason.MAX_ATTEMPTS
    assert "read-only" in (outcome.error or "")
    assert await memory_view(s) == await durable_view(store, "s")
    assert await s.snapshot() is None
    # Once the store takes turn commits again, the same input commits.
    disarm()
    with trio.fail_after(5):
        again = await s.ask({"x": 1})
    assert again == Completed(input_id=again.input_id, result="ok")
    assert await s.snapshot() == {"x": {"x": 1}}
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_failed_staging_commit_crashes_the_loop_which_restarts_and_completes(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    ack = await s.submit({"x": 1})
    store.fail_next_commit()
    ex = ScriptedExecutor()
    await s.attach(ex)
    with trio.fail_after(5):
        assert isinstance(await s.wait(ack.input_id), Completed)
    assert (await s.stats()).restarts == 1
    assert [t.attempt for t in ex.turns] == [1]
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_failed_checkpoint_is_a_failed_run_and_memory_equals_store(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    calls = []

    async def executor(turn: suricate.Turn) -> TurnResult:
        calls.append(turn.attempt)
        if turn.attempt == 1:
            store.fail_next_commit()
        await turn.checkpoint(snapshot={"a": turn.attempt})
        return TurnResult(result="done")

    await s.attach(executor)
    with trio.fail_after(5):
        outcome = await s.ask({"x": 1})
    assert isinstance(outcome, Completed)
    assert calls == [1, 2]
    assert await s.snapshot() == {"a": 2}
    assert await memory_view(s) == await durable_view(store, "s")
    assert await s.state() is SessionState.ATTACHED


async def test_a_run_left_unsettled_by_failed_commits_is_settled_by_the_next_attach(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    ack = await s.submit({"x": 1})
    with trio.fail_after(5):
        await ex.wait_turns(1)
    # Requeueing the cancelled turn fails: when the loop reports the
    # interruption, and again when its exit tries to settle the run.
    disarm = store.fail_commit_if(
        lambda ws: any(r.state is InputState.QUEUED for r in ws.inputs)
    )
    with trio.fail_after(5):
        await s.detach(cancel=True)
    assert (await s.input(ack.input_id)).state is InputState.STAGED
    assert await memory_view(s) == await durable_view(store, "s")
    disarm()
    again = ScriptedExecutor()
    with trio.fail_after(5):
        await s.attach(again)
        assert isinstance(await s.wait(ack.input_id), Completed)
    assert [t.attempt for t in again.turns] == [1]  # an interruption counts no attempt
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_checkpoint_after_the_turn_was_interrupted_is_refused(faulty) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    gate = trio.Event()
    started = trio.Event()
    refused: list[Exception] = []
    interrupted: list[str] = []

    async def executor(turn: suricate.Turn) -> TurnResult:
        if turn.inputs[0].payload == "first" and not refused:
            interrupted.append(turn.run_id)
            started.set()
            with trio.CancelScope(shield=True):
                await gate.wait()
                try:
                    await turn.checkpoint(results={turn.inputs[0].input_id: "partial"})
                except suricate.NotReady as exc:
                    refused.append(exc)
            await trio.sleep_forever()
        return TurnResult(result=[i.payload for i in turn.inputs])

    await s.attach(executor)
    first = await s.submit("first")
    with trio.fail_after(5):
        await started.wait()
    urgent = await s.submit("urgent", handling=suricate.Handling.INTERRUPT)
    gate.set()
    with trio.fail_after(5):
        assert await s.wait(urgent.input_id) == Completed(input_id=urgent.input_id, result=["urgent"])
        assert await s.wait(first.input_id) == Completed(input_id=first.input_id, result=["first"])
    assert len(refused) == 1
    # The interrupted run committed nothing: no boundary, no results.
    assert not [ws for ws in store.committed if ws.receipt and ws.receipt.run_id == interrupted[0]]
    assert await memory_view(s) == await durable_view(store, "s")


async def test_a_failed_admit_and_stage_commit_admits_nothing_and_the_loop_stays_parked(
    faulty,
) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    await s.attach(ScriptedExecutor())
    await trio.testing.wait_all_tasks_blocked()
    before = await memory_view(s)
    store.fail_next_commit()
    with pytest.raises(suricate.StoreError):
        await s.submit({"x": 1}, idempotency_key="k")
    assert await memory_view(s) == before == await durable_view(store, "s")
    assert await s.state() is SessionState.ATTACHED
    store.disarm()
    with trio.fail_after(5):
        done = await s.ask({"x": 1}, idempotency_key="k")
    assert done == Completed(input_id=done.input_id, result={"x": 1})
    record = await s.input(done.input_id)
    assert [h.state for h in record.history] == [
        InputState.QUEUED, InputState.STAGED, InputState.CONSUMED,
    ]
    assert await memory_view(s) == await durable_view(store, "s")
