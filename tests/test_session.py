"""Behaviour of sessions through the public API (MemoryStore, virtual time)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import suricate
from suricate import (
    AbandonReason,
    Abandoned,
    Completed,
    Deduplicated,
    Handling,
    Input,
    InputState,
    SessionState,
    Superseded,
    TurnResult,
)
from suricate import MemoryStore
from suricate.testing import FaultyStore, ScriptedExecutor, durable_view, memory_view


async def test_submit_is_durable_and_the_executor_sees_the_decoded_payload(rt, store) -> None:
    s = await rt.open_session("alice")
    ack = await s.submit({"text": "hi", "n": (1, 2)})
    assert isinstance(ack, suricate.Accepted) and ack.state is InputState.QUEUED
    stored = await store.load_input("alice", ack.input_id)
    assert stored is not None and stored.state is InputState.QUEUED
    ex = ScriptedExecutor()
    await s.attach(ex)
    with trio.fail_after(5):
        outcome = await s.wait(ack.input_id)
    assert outcome == Completed(input_id=ack.input_id, result={"text": "hi", "n": [1, 2]})
    assert ex.payloads == [{"text": "hi", "n": [1, 2]}]
    record = await s.input(ack.input_id)
    assert record.state is InputState.CONSUMED
    assert [h.state for h in record.history] == [
        InputState.QUEUED,
        InputState.STAGED,
        InputState.CONSUMED,
    ]


async def test_duplicate_idempotency_key_is_deduplicated_runs_once_and_persists_nothing(
    rt, store
) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor()
    await s.attach(ex)
    first = await s.submit(Input({"a": 1}, idempotency_key="k"))
    with trio.fail_after(5):
        await s.wait(first.input_id)
    commits = store.commits
    again = await s.submit({"a": "different"}, idempotency_key="k")
    assert again == Deduplicated(input_id=first.input_id, existing_input_id=first.input_id)
    assert store.commits == commits
    with trio.fail_after(5):
        assert await s.wait(again.input_id) == Completed(input_id=first.input_id, result={"a": 1})
    assert ex.payloads == [{"a": 1}]


async def test_a_newer_input_supersedes_a_queued_one_and_its_waiter_learns_by_whom(rt) -> None:
    s = await rt.open_session("s")
    old = await s.submit({"v": 1}, kind="status", supersession_key="mood")
    async with trio.open_nursery() as nursery:
        outcomes = []

        async def waiter() -> None:
            outcomes.append(await s.wait(old.input_id))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        new = await s.submit({"v": 2}, kind="status", supersession_key="mood")
    assert outcomes == [Superseded(input_id=old.input_id, by=new.input_id)]
    other_kind = await s.submit({"v": 3}, kind="other", supersession_key="mood")
    assert (await s.input(new.input_id)).state is InputState.QUEUED
    assert (await s.input(other_kind.input_id)).state is InputState.QUEUED


async def test_a_failing_input_is_abandoned_after_max_attempts_with_its_error(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(fail_times=10, error=ValueError("model said no"))
    await s.attach(ex)
    with trio.fail_after(5):
        outcome = await s.ask({"x": 1})
    assert isinstance(outcome, Abandoned)
    assert outcome.reason is AbandonReason.MAX_ATTEMPTS
    assert outcome.error == "ValueError: model said no"
    assert [t.attempt for t in ex.turns] == [1, 2, 3]


async def test_a_failed_run_is_retried_behind_other_queued_work(rt) -> None:
    s = await rt.open_session("s")
    acks = [await s.submit({"i": i}) for i in range(3)]
    ex = ScriptedExecutor(fail_times=1)
    await s.attach(ex)
    with trio.fail_after(5):
        for ack in acks:
            assert isinstance(await s.wait(ack.input_id), Completed)
    assert ex.payloads == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 0}]


async def test_inputs_submitted_one_after_another_run_in_submit_order(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor()
    await s.attach(ex)
    acks = [await s.submit({"i": i}) for i in range(50)]
    with trio.fail_after(5):
        for ack in acks:
            await s.wait(ack.input_id)
    assert ex.payloads == [{"i": i} for i in range(50)]
    assert all(len(t.payloads) == 1 for t in ex.turns)


async def test_max_batch_lets_one_turn_take_several_queued_inputs(rt) -> None:
    s = await rt.open_session("s")
    acks = [await s.submit({"i": i}) for i in range(5)]
    ex = ScriptedExecutor()
    await s.attach(ex, max_batch=2)
    with trio.fail_after(5):
        for ack in acks:
            await s.wait(ack.input_id)
    assert [len(t.payloads) for t in ex.turns] == [2, 2, 1]


async def test_steer_inputs_run_before_queued_ones(rt) -> None:
    s = await rt.open_session("s")
    await s.submit({"q": 1})
    await s.submit({"q": 2})
    steer = await s.submit({"s": 1}, handling="steer")
    ex = ScriptedExecutor()
    await s.attach(ex)
    with trio.fail_after(5):
        await s.wait(steer.input_id)
        await ex.wait_finished(3)
    assert ex.payloads == [{"s": 1}, {"q": 1}, {"q": 2}]


async def test_interrupt_cancels_the_running_turn_and_requeues_it_without_an_attempt(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    first = await s.submit({"n": "long"})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        urgent = await s.submit({"n": "urgent"}, handling=Handling.INTERRUPT)
        await ex.wait_turns(2)
        ex.release(2)
        assert isinstance(await s.wait(urgent.input_id), Completed)
        assert isinstance(await s.wait(first.input_id), Completed)
    assert ex.cancelled == 1
    assert ex.payloads == [{"n": "long"}, {"n": "urgent"}, {"n": "long"}]
    assert [t.attempt for t in ex.turns] == [1, 1, 1]
    record = await s.input(first.input_id)
    assert record.attempt == 1


async def test_interrupt_with_no_turn_running_acts_as_steer(rt) -> None:
    s = await rt.open_session("s")
    await s.submit({"q": 1})
    await s.submit({"i": 1}, handling="interrupt")
    ex = ScriptedExecutor()
    await s.attach(ex)
    with trio.fail_after(5):
        await ex.wait_finished(2)
    assert ex.payloads == [{"i": 1}, {"q": 1}]


async def test_checkpoint_applies_inputs_and_hands_steered_inputs_to_the_turn(rt) -> None:
    s = await rt.open_session("s")
    gate = trio.Event()
    started = trio.Event()
    joined: list[list[object]] = []

    async def executor(turn: suricate.Turn) -> TurnResult:
        started.set()
        await gate.wait()
        more = await turn.checkpoint(snapshot={"step": 1}, results={turn.inputs[0].input_id: "half"})
        joined.append([i.payload for i in more])
        return TurnResult(snapshot={"step": 2}, result="done")

    await s.attach(executor)
    first = await s.submit({"q": 1})
    with trio.fail_after(5):
        await started.wait()
        assert await s.state() is SessionState.RUNNING
        steer = await s.submit({"s": 1}, handling="steer")
        gate.set()
        assert await s.wait(first.input_id) == Completed(input_id=first.input_id, result="done")
        assert await s.wait(steer.input_id) == Completed(input_id=steer.input_id, result="done")
    assert joined == [[{"s": 1}]]
    assert await s.snapshot() == {"step": 2}
    record = await s.input(first.input_id)
    assert [h.state for h in record.history][-2:] == [InputState.APPLIED, InputState.CONSUMED]
    receipt = await s.receipt(record.run_id, 1)
    assert receipt is not None and receipt.input_ids == (first.input_id,)
    final = await s.receipt(record.run_id, 2)
    assert final is not None and final.input_ids == (steer.input_id,)


async def test_a_non_json_result_is_a_failed_run(rt) -> None:
    s = await rt.open_session("s")

    async def executor(turn: suricate.Turn) -> TurnResult:
        return TurnResult(result={1, 2})

    await s.attach(executor)
    with trio.fail_after(5):
        outcome = await s.ask({"x": 1})
    assert isinstance(outcome, Abandoned) and outcome.reason is AbandonReason.MAX_ATTEMPTS
    assert "not JSON" in (outcome.error or "")


async def test_ephemeral_inputs_run_but_are_never_written(rt, store) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(result=lambda turn: TurnResult(snapshot={"seen": 1}, result="ok"))
    await s.attach(ex)
    commits = store.commits
    ack = await s.submit({"e": 1}, durability="ephemeral")
    assert store.commits == commits
    with trio.fail_after(5):
        assert await s.wait(ack.input_id) == Completed(input_id=ack.input_id, result="ok")
    assert await store.load_input("s", ack.input_id) is None
    assert (await store.load_session("s")).snapshot_json == '{"seen":1}'


async def test_wait_on_a_terminal_input_answers_at_once_also_after_a_restart(
    store_factory, ids
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(ScriptedExecutor())
        with trio.fail_after(5):
            done = await s.ask({"x": 1})
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert await s.wait(done.input_id) == done
        with pytest.raises(suricate.InputNotFound):
            await s.wait("no-such-input")


async def test_wait_past_its_timeout_raises_and_leaves_no_waiter(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    ack = await s.submit({"x": 1})
    with pytest.raises(suricate.WaitTimeout):
        await s.wait(ack.input_id, timeout=10)
    assert (await rt.stats()).waiters == 0
    with trio.move_on_after(1):
        await s.wait(ack.input_id)
    assert (await rt.stats()).waiters == 0


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (float("nan"), {}),
        ({1: "int key"}, {}),
        ({"s": {1, 2}}, {}),
        (object(), {}),
        ("x" * 2000, {}),
        ({"ok": 1}, {"handling": "sideways"}),
        ({"ok": 1}, {"kind": 7}),
        ({"ok": 1}, {"idempotency_key": 5}),
        ({"ok": 1}, {"metadata": ["not", "a", "mapping"]}),
        ({"ok": 1}, {"metadata": {"bad": float("inf")}}),
        ({"ok": 1}, {"kind": "peer_message"}),
        ({"ok": 1}, {"idempotency_key": "suricate:outbox:1"}),
        ({"ok": 1}, {"no_such_field": 1}),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(payload, fields, store, ids) -> None:
    async with suricate.open_runtime(store, id_factory=ids, max_payload_bytes=1000) as rt:
        s = await rt.open_session("s")
        before = await store.load_session("s")
        commits = store.commits
        with pytest.raises(suricate.InputRejected) as info:
            await s.submit(payload, **fields)
        assert info.value.reason
        assert store.commits == commits
        assert await store.load_session("s") == before
        assert (await s.stats()).inputs["queued"] == 0


@pytest.mark.parametrize("session_id", ["", "x" * 129, "a\x00b", "tab\there", 42, None])
async def test_bad_session_ids_are_rejected_before_any_lookup(rt, store, session_id) -> None:
    with pytest.raises(suricate.InputRejected):
        await rt.open_session(session_id)
    with pytest.raises(suricate.InputRejected):
        rt.session(session_id)
    assert await store.list_sessions() == []


async def test_unknown_session_is_not_found_and_open_session_is_idempotent(rt) -> None:
    with pytest.raises(suricate.SessionNotFound):
        rt.session("nobody")
    a = await rt.open_session("ünïcødé-" + "x" * 120)
    assert await rt.open_session(a.id) is a
    assert rt.session(a.id) is a
    assert rt.sessions() == [a]


async def test_submit_to_destroyed_retired_and_stopped_sessions_is_refused(rt) -> None:
    d = await rt.open_session("d")
    await d.destroy()
    with pytest.raises(suricate.SessionDestroyed):
        await d.submit({"x": 1})
    r = await rt.open_session("r")
    await r.retire()
    with pytest.raises(suricate.NotReady) as info:
        await r.submit({"x": 1})
    assert info.value.state is SessionState.RETIRED
    st = await rt.open_session("st")
    await st.stop()
    with pytest.raises(suricate.NotReady) as info:
        await st.submit({"x": 1})
    assert info.value.state is SessionState.STOPPED


async def test_overloaded_beyond_max_queued(store, ids) -> None:
    async with suricate.open_runtime(store, id_factory=ids, max_queued=3) as rt:
        s = await rt.open_session("s")
        for i in range(3):
            await s.submit({"i": i})
        with pytest.raises(suricate.Overloaded):
            await s.submit({"i": 3})
        assert (await s.stats()).inputs["queued"] == 3


# -- waiter outcomes of control operations -----------------------------------------------


async def _waiting(s: suricate.Session, nursery: trio.Nursery, n: int) -> tuple[list, list]:
    acks = [await s.submit({"i": i}) for i in range(n)]
    outcomes: list = []

    async def wait(input_id: str) -> None:
        outcomes.append(await s.wait(input_id))

    for ack in acks:
        nursery.start_soon(wait, ack.input_id)
    await trio.testing.wait_all_tasks_blocked()
    return acks, outcomes


@pytest.mark.parametrize(
    ("op", "reason", "state"),
    [
        ("reset", AbandonReason.RESET, SessionState.IDLE),
        ("destroy", AbandonReason.DESTROYED, SessionState.DESTROYED),
        ("stop", AbandonReason.STOPPED, SessionState.STOPPED),
        ("retire", AbandonReason.RETIRED, SessionState.RETIRED),
    ],
)
async def test_operations_without_executor_abandon_waiters_with_their_reason(
    rt, op, reason, state
) -> None:
    s = await rt.open_session("s")
    async with trio.open_nursery() as nursery:
        acks, outcomes = await _waiting(s, nursery, 3)
        report = await getattr(s, op)()
    assert report.inputs_abandoned == 3
    assert sorted(o.input_id for o in outcomes) == sorted(a.input_id for a in acks)
    assert all(o == Abandoned(input_id=o.input_id, reason=reason) for o in outcomes)
    assert await s.state() is state


async def test_retire_with_an_executor_drains_and_completes_waiters(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    async with trio.open_nursery() as nursery:
        acks, outcomes = await _waiting(s, nursery, 3)
        report = await s.retire()
        assert report == suricate.RetireReport(inputs_abandoned=0, inputs_pending_drain=3)
        assert await s.state() is SessionState.RETIRED
        ex.release(3)
    assert sorted(o.input_id for o in outcomes) == sorted(a.input_id for a in acks)
    assert all(isinstance(o, Completed) for o in outcomes)
    assert await s.state() is SessionState.RETIRED


async def test_destroy_keeps_records_readable(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(result=lambda t: TurnResult(snapshot={"k": 1}, result="r"))
    await s.attach(ex)
    with trio.fail_after(5):
        done = await s.ask({"x": 1})
    await s.destroy()
    assert await s.destroy() == suricate.DestroyReport(inputs_abandoned=0)
    assert await s.state() is SessionState.DESTROYED
    assert await s.wait(done.input_id) == done
    assert (await s.input(done.input_id)).state is InputState.CONSUMED
    assert await s.snapshot() == {"k": 1}
    with pytest.raises(suricate.SessionDestroyed):
        await s.attach(ex)
    assert await s.recover() == suricate.RecoveryReport()


async def test_stop_while_running_cancels_the_turn_and_attach_revives(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    ack = await s.submit({"x": 1})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        report = await s.stop()
        assert report.inputs_abandoned == 1
        assert await s.wait(ack.input_id) == Abandoned(
            input_id=ack.input_id, reason=AbandonReason.STOPPED
        )
        await ex.wait_finished(1)
    assert ex.cancelled == 1
    assert await s.state() is SessionState.STOPPED
    await s.attach(ScriptedExecutor())
    assert await s.state() is SessionState.ATTACHED
    with trio.fail_after(5):
        assert isinstance(await s.ask({"y": 2}), Completed)


async def test_reset_while_running_is_refused_and_changes_nothing(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    ack = await s.submit({"x": 1})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        for op in ("reset", "recycle", "recover"):
            with pytest.raises(suricate.NotReady) as info:
                await getattr(s, op)()
            assert info.value.state is SessionState.RUNNING
        assert (await s.input(ack.input_id)).state is InputState.STAGED
        ex.release()
        assert isinstance(await s.wait(ack.input_id), Completed)


async def test_detach_waits_for_the_running_turn_to_commit(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    first = await s.submit({"x": 1})
    second = await s.submit({"x": 2})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.detach)
            await trio.testing.wait_all_tasks_blocked()
            assert await s.state() is SessionState.RUNNING
            ex.release()
    assert await s.state() is SessionState.IDLE
    assert isinstance(await s.wait(first.input_id), Completed)
    assert (await s.input(second.input_id)).state is InputState.QUEUED


async def test_detach_with_cancel_requeues_the_turn_without_an_attempt(rt) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    ack = await s.submit({"x": 1})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        await s.detach(cancel=True)
    record = await s.input(ack.input_id)
    assert record.state is InputState.QUEUED and record.attempt == 0
    assert await s.state() is SessionState.IDLE


async def test_recycle_keeps_queued_work_and_waiters(rt) -> None:
    s = await rt.open_session("s")
    async with trio.open_nursery() as nursery:
        acks, outcomes = await _waiting(s, nursery, 2)
        eph = await s.submit({"e": 1}, durability="ephemeral")
        report = await s.recycle()
        assert report.inputs_transferred == 3
        await s.attach(ScriptedExecutor())
    assert len(outcomes) == 2 and all(isinstance(o, Completed) for o in outcomes)
    with trio.fail_after(5):
        assert isinstance(await s.wait(eph.input_id), Completed)


async def test_leaving_the_runtime_requeues_turns_in_flight_and_fails_pending_waits(
    store_factory, ids
) -> None:
    errors: list[BaseException] = []
    ex = ScriptedExecutor(block=True)
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(ex)
        running = await s.submit({"x": 1})
        queued = await s.submit({"x": 2})

        async def waiter() -> None:
            try:
                await s.wait(queued.input_id)
            except suricate.RuntimeClosed as exc:
                errors.append(exc)

        rt._nursery.start_soon(waiter)
        with trio.fail_after(5):
            await ex.wait_turns(1)
    assert len(errors) == 1
    assert ex.cancelled == 1
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        run = await s.input(running.input_id)
        assert run.state is InputState.QUEUED and run.attempt == 0
        assert (await s.input(queued.input_id)).state is InputState.QUEUED


async def test_ephemeral_inputs_vanish_on_restart(store_factory, ids) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        durable = await s.submit({"d": 1})
        ephemeral = await s.submit({"e": 1}, durability="ephemeral")
        assert (await s.input(ephemeral.input_id)).state is InputState.QUEUED
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        assert (await s.input(durable.input_id)).state is InputState.QUEUED
        assert await s.input(ephemeral.input_id) is None
        with pytest.raises(suricate.InputNotFound):
            await s.wait(ephemeral.input_id)
        assert (await s.stats()).inputs["queued"] == 1


async def test_shutdown_grace_lets_a_turn_in_flight_commit(ids, autojump_clock) -> None:
    store = MemoryStore()

    started = trio.Event()

    async def slow(turn: suricate.Turn) -> TurnResult:
        started.set()
        await trio.sleep(1)  # the turn's own work, in virtual time
        return TurnResult(result="late")

    async with suricate.open_runtime(store, id_factory=ids, shutdown_grace=5) as rt:
        s = await rt.open_session("s")
        await s.attach(slow)
        ack = await s.submit({"x": 1})
        await started.wait()
    assert (await store.load_input("s", ack.input_id)).state is InputState.CONSUMED


async def test_an_exception_in_the_body_propagates_unwrapped() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with suricate.open_runtime() as rt:
            await (await rt.open_session("s")).submit({"x": 1})
            raise Boom()


async def test_calls_after_the_runtime_closed_raise_runtime_closed() -> None:
    async with suricate.open_runtime() as rt:
        s = await rt.open_session("s")
    with pytest.raises(suricate.RuntimeClosed):
        await s.submit({"x": 1})
    with pytest.raises(suricate.RuntimeClosed):
        await rt.open_session("t")


async def test_events_follow_an_input_through_its_life(rt) -> None:
    s = await rt.open_session("s")
    async with rt.events(session_id="s") as events:
        await s.attach(ScriptedExecutor())
        with trio.fail_after(5):
            ack = await s.submit({"x": 1})
            await s.wait(ack.input_id)
        kinds = []
        with trio.move_on_after(0.1):
            async for event in events:
                kinds.append((event.kind, event.input_id))
                if event.kind == "input.consumed":
                    break
    assert [k for k, _ in kinds] == [
        "session.state",
        "input.accepted",
        "run.started",
        "input.staged",
        "run.committed",
        "input.consumed",
    ]
    assert all(i == ack.input_id for k, i in kinds if k.startswith("input."))


async def test_a_stalled_subscriber_lags_and_never_blocks_the_runtime(store, ids) -> None:
    async with suricate.open_runtime(store, id_factory=ids, event_buffer=4) as rt:
        s = await rt.open_session("s")
        async with rt.events(kinds=["input.accepted"]) as events:
            for i in range(10):
                await s.submit({"i": i})
            first = await events.__anext__()
            assert first.kind == "lagged" and first.data == {"dropped": 6}
            rest = [await events.__anext__() for _ in range(4)]
    assert [e.kind for e in rest] == ["input.accepted"] * 4


async def test_failures_are_logged_with_their_ids(rt, caplog) -> None:
    import logging

    s = await rt.open_session("s")
    await s.attach(ScriptedExecutor(fail_times=1, error=ValueError("flaky")))
    with caplog.at_level(logging.WARNING, logger="suricate"), trio.fail_after(5):
        await s.ask({"x": 1})
    (record,) = [r for r in caplog.records if r.suricate_event == "run.failed"]
    assert record.session_id == "s" and record.run_id
    assert "ValueError: flaky" in record.getMessage()


@pytest.mark.parametrize("how", ["wait", "ask"])
async def test_a_caller_cancelled_while_its_wait_is_in_the_mailbox_leaves_no_waiter(
    rt, autojump_clock, how
) -> None:
    s = await rt.open_session("s")
    ack = await s.submit({"x": 1})
    with trio.CancelScope() as scope:
        scope.cancel()  # the message is sent, then the caller is cancelled at once
        if how == "wait":
            await s.wait(ack.input_id)
        else:
            await s.ask({"x": 2})
    await trio.testing.wait_all_tasks_blocked()
    assert (await rt.stats()).waiters == 0
    await s.attach(ScriptedExecutor())
    with trio.fail_after(5):
        assert isinstance(await s.wait(ack.input_id), Completed)
    assert (await rt.stats()).waiters == 0


async def test_an_input_for_a_parked_loop_is_admitted_and_staged_in_one_commit(rt, store) -> None:
    s = await rt.open_session("s")
    await s.attach(ScriptedExecutor())
    await trio.testing.wait_all_tasks_blocked()
    commits = store.commits
    async with rt.events(session_id="s") as events:
        with trio.fail_after(5):
            done = await s.ask({"x": 1})
        kinds = [(await events.__anext__()).kind for _ in range(5)]
    assert store.commits - commits == 2  # admitted+staged, then the turn
    assert kinds == ["input.accepted", "run.started", "input.staged", "run.committed", "input.consumed"]
    record = await s.input(done.input_id)
    assert [h.state for h in record.history] == [
        InputState.QUEUED,
        InputState.STAGED,
        InputState.CONSUMED,
    ]
    assert record.attempt == 1


def _stages(ws: suricate.store.WriteSet) -> bool:
    """The write-set that stages a turn."""
    return any(r.state is InputState.STAGED for r in ws.inputs)


async def _in_mailbox(nursery: trio.Nursery, call, *args, **kwargs) -> list:
    """Start ``call`` and return once it waits on the session (its message
    is in the mailbox); the returned list gets its result."""
    out: list = []

    async def run() -> None:
        out.append(await call(*args, **kwargs))

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()
    return out


@pytest.mark.parametrize("order", ["while_its_staging_commits", "once_the_turn_began"])
async def test_detach_cancel_right_after_a_submit_never_runs_the_staged_turn(
    faulty, order
) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    await trio.testing.wait_all_tasks_blocked()  # the loop is parked for work
    with trio.fail_after(5):
        if order == "while_its_staging_commits":
            # The detach is in the mailbox before the submit's commit (which
            # stages the turn) returns: the turn has not begun.
            hold = store.hold_commit_if(_stages)
            async with trio.open_nursery() as nursery:
                acks = await _in_mailbox(nursery, s.submit, {"n": 1})
                await hold.wait_reached()
                await _in_mailbox(nursery, s.detach, cancel=True)
                hold.release()
            (ack,) = acks
        else:
            ack = await s.submit({"n": 1})
            await ex.wait_turns(1)
            await s.detach(cancel=True)
            assert ex.cancelled == 1
    record = await s.input(ack.input_id)
    assert (record.state, record.attempt) == (InputState.QUEUED, 0)
    # Whether the executor was entered before the cancel is the runtime's
    # to decide; a turn that was entered never finished.
    assert ex.finished == ex.cancelled == len(ex.turns)
    assert await s.state() is SessionState.IDLE
    assert await memory_view(s) == await durable_view(store, "s")


async def _refusal(call) -> SessionState | None:
    """The state ``call`` was refused in (``NotReady``), or ``None``."""
    try:
        await call()
    except suricate.NotReady as exc:
        return exc.state
    return None


class _HeldLoads(FaultyStore):
    """Holds the next ``load_session`` once ``hold_load`` is armed."""

    def __init__(self, inner: suricate.Store) -> None:
        super().__init__(inner)
        self.load_reached = trio.Event()
        self.load_released = trio.Event()
        self.hold_load = False

    async def load_session(self, session_id: str):  # type: ignore[no-untyped-def]
        if self.hold_load:
            self.hold_load = False
            self.load_reached.set()
            await self.load_released.wait()
        return await super().load_session(session_id)


@pytest.mark.parametrize(
    "order", ["wake_settled_first", "submit_while_the_wake_is_handled", "wake_while_the_submit_commits"]
)
async def test_a_submit_behind_another_wake_of_a_parked_loop_is_staged_once(
    store_factory, ids, order
) -> None:
    # ``recycle`` wakes a parked loop (it may have new work); the submit and
    # that wake reach the session in each order.
    store = _HeldLoads(store_factory())
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(ScriptedExecutor())
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            if order == "wake_settled_first":
                await s.recycle()
                await trio.testing.wait_all_tasks_blocked()
                done = await s.ask({"n": 1})
            elif order == "submit_while_the_wake_is_handled":
                store.hold_load = True  # the recycle reloads from the store
                async with trio.open_nursery() as nursery:
                    await _in_mailbox(nursery, s.recycle)
                    await store.load_reached.wait()
                    asked = await _in_mailbox(nursery, s.ask, {"n": 1})
                    store.load_released.set()
                (done,) = asked
            else:
                # The submit's commit stages the turn: the recycle behind it
                # finds the session running and is refused.
                hold = store.hold_commit_if(lambda ws: bool(ws.inputs))
                async with trio.open_nursery() as nursery:
                    asked = await _in_mailbox(nursery, s.ask, {"n": 1})
                    await hold.wait_reached()
                    refused = await _in_mailbox(nursery, _refusal, s.recycle)
                    hold.release()
                (done,) = asked
                assert refused == [SessionState.RUNNING]
        assert isinstance(done, Completed)
        record = await s.input(done.input_id)
        assert [h.state for h in record.history] == [
            InputState.QUEUED, InputState.STAGED, InputState.CONSUMED,
        ]
        assert record.attempt == 1
        assert await memory_view(s) == await durable_view(store, "s")


@pytest.mark.parametrize("order", ["while_its_staging_commits", "once_the_turn_began"])
async def test_a_cancel_right_after_a_turn_was_handed_to_the_loop_is_not_lost(
    faulty, order
) -> None:
    rt, store = faulty
    s = await rt.open_session("s")
    ack = await s.submit({"n": 1})  # queued first: attaching stages it
    ex = ScriptedExecutor(block=True)
    with trio.fail_after(5):
        if order == "while_its_staging_commits":
            hold = store.hold_commit_if(_stages)
            async with trio.open_nursery() as nursery:
                await _in_mailbox(nursery, s.attach, ex)
                await hold.wait_reached()
                await _in_mailbox(nursery, s.detach, cancel=True)
                hold.release()
        else:
            async with rt.events(session_id=s.id, kinds={"run.started"}) as events:
                await s.attach(ex)
                await events.__anext__()
            await ex.wait_turns(1)
            await s.detach(cancel=True)
            assert ex.cancelled == 1
    record = await s.input(ack.input_id)
    assert (record.state, record.attempt) == (InputState.QUEUED, 0)
    # Whether the executor was entered before the cancel is the runtime's
    # to decide; a turn that was entered never finished.
    assert ex.finished == ex.cancelled == len(ex.turns)
    assert await memory_view(s) == await durable_view(store, "s")


class _SlowStaging(MemoryStore):
    """Holds the commit that stages a turn until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.staging = trio.Event()
        self.release = trio.Event()

    async def commit(self, write_set: suricate.store.WriteSet) -> None:
        if any(r.state is InputState.STAGED for r in write_set.inputs) and not self.release.is_set():
            self.staging.set()
            await self.release.wait()
        await super().commit(write_set)


async def test_shutdown_while_a_turn_is_being_staged_never_runs_it(ids) -> None:
    store = _SlowStaging()
    runs: list[str] = []

    async def hangs(turn: suricate.Turn) -> None:
        runs.append(turn.run_id)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with suricate.open_runtime(store, id_factory=ids) as rt:
                s = await rt.open_session("s")
                ack = await s.submit({"x": 1})
                await s.attach(hangs)
                await store.staging.wait()

                async def release_once_shutdown_waits() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    store.release.set()

                nursery.start_soon(release_once_shutdown_waits)
            # Left while the staging commit was in flight: it committed, then
            # the turn was cancelled before it began.
    assert runs == []
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        record = await (await rt.open_session("s")).input(ack.input_id)
    assert (record.state, record.attempt) == (InputState.QUEUED, 0)
