"""Run control: the session actor stages each turn in the commit of the decision
that made it possible and hands it to its loop; the loop runs it and reports
one outcome; the mailbox keeps being served while a turn runs."""

from __future__ import annotations

from collections.abc import Callable

import trio

import suricate
from suricate import Completed, Handling, InputState, MemoryStore, SessionState
from suricate.store import WriteSet
from suricate.testing import ScriptedExecutor, durable_view, memory_view


class _Recording(MemoryStore):
    """Remembers every write-set it committed."""

    def __init__(self) -> None:
        super().__init__()
        self.write_sets: list[WriteSet] = []

    async def commit(self, write_set: WriteSet) -> None:
        await super().commit(write_set)
        self.write_sets.append(write_set)


def _states(ws: WriteSet) -> dict[str, InputState]:
    return {r.input_id: r.state for r in ws.inputs}


async def test_with_a_backlog_each_turn_commit_also_stages_the_next_turn(
    ids: Callable[[], str],
) -> None:
    store = _Recording()
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        acks = [await s.submit({"n": n}) for n in range(3)]
        first, second, third = (a.input_id for a in acks)
        before = len(store.write_sets)
        await s.attach(ScriptedExecutor())
        with trio.fail_after(5):
            for ack in acks:
                assert isinstance(await s.wait(ack.input_id), Completed)
        turns = store.write_sets[before:]
    # One commit per turn: the first stages input 1; each turn's commit also
    # stages the next input; the last commits alone.
    assert [_states(ws) for ws in turns] == [
        {first: InputState.STAGED},
        {first: InputState.CONSUMED, second: InputState.STAGED},
        {second: InputState.CONSUMED, third: InputState.STAGED},
        {third: InputState.CONSUMED},
    ]


async def test_an_input_for_an_idle_attached_session_is_admitted_and_staged_in_one_commit(
    ids: Callable[[], str],
) -> None:
    store = _Recording()
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.attach(ScriptedExecutor())
        await trio.testing.wait_all_tasks_blocked()
        before = len(store.write_sets)
        with trio.fail_after(5):
            outcome = await s.ask({"x": 1})
        turns = store.write_sets[before:]
    assert [_states(ws) for ws in turns] == [
        {outcome.input_id: InputState.STAGED},
        {outcome.input_id: InputState.CONSUMED},
    ]


async def test_the_mailbox_is_served_while_a_long_turn_runs(rt: suricate.Runtime) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    long = await s.submit({"long": True})
    with trio.fail_after(5):
        await ex.wait_turns(1)
        # Each of these is answered while the turn is still running.
        queued = await s.submit({"next": 1})
        assert (await s.stats()).state is SessionState.RUNNING
        assert (await s.input(queued.input_id)).state is InputState.QUEUED
        urgent = await s.submit({"now": 1}, handling=Handling.INTERRUPT)
        await ex.wait_turns(2)  # the interrupt cancelled the long turn and runs next
        assert ex.turns[1].payloads == ({"now": 1},)
        assert (await s.input(long.input_id)).state is InputState.QUEUED
        report = await s.stop()
    assert report.inputs_abandoned == 3
    assert await s.state() is SessionState.STOPPED
    assert {(await s.input(i)).state for i in (long.input_id, queued.input_id, urgent.input_id)} == {
        InputState.ABANDONED
    }
    assert await memory_view(s) == await durable_view(rt.store, "s")


async def test_a_turn_that_reports_after_its_session_stopped_changes_nothing(
    rt: suricate.Runtime,
) -> None:
    s = await rt.open_session("s")
    gate = trio.Event()
    returned = trio.Event()

    async def slow(turn: suricate.Turn) -> suricate.TurnResult:
        with trio.CancelScope(shield=True):  # finishes whatever happens around it
            await gate.wait()
        returned.set()
        return suricate.TurnResult(result="late")

    await s.attach(slow)
    ack = await s.submit({"x": 1})
    with trio.fail_after(5):
        await trio.testing.wait_all_tasks_blocked()
        await s.stop()
        gate.set()
        await returned.wait()
        await trio.testing.wait_all_tasks_blocked()
    record = await s.input(ack.input_id)
    assert record is not None and record.state is InputState.ABANDONED
    assert await memory_view(s) == await durable_view(rt.store, "s")
