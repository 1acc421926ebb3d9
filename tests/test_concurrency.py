"""Serialization under concurrency: nothing lost, nothing twice, nothing hanging."""

from __future__ import annotations

import collections

import pytest
import trio
import trio.testing

import suricate
from suricate import AbandonReason, Abandoned, Completed, SessionState
from suricate.testing import ScriptedExecutor, durable_view, memory_view


async def test_many_sessions_and_submitters_complete_every_input_exactly_once(rt, store) -> None:
    executors: dict[str, ScriptedExecutor] = {}
    outcomes: list[suricate.Outcome] = []
    submitted: list[tuple[str, str]] = []

    async def submitter(s: suricate.Session, who: int) -> None:
        mine = []
        for i in range(10):
            ack = await s.submit({"who": who, "i": i}, idempotency_key=f"{who}-{i}")
            submitted.append((s.id, ack.input_id))
            mine.append(ack.input_id)
            await trio.lowlevel.checkpoint()  # interleave with the other tasks
        for input_id in mine:
            outcomes.append(await s.wait(input_id))

    with trio.fail_after(60):
        sessions = [await rt.open_session(f"s{n}") for n in range(100)]
        for s in sessions:
            executors[s.id] = ScriptedExecutor()
            await s.attach(executors[s.id])
        async with trio.open_nursery() as nursery:
            for s in sessions:
                for who in range(10):
                    nursery.start_soon(submitter, s, who)
    assert len(submitted) == 100 * 10 * 10
    assert len(set(submitted)) == len(submitted)
    assert all(isinstance(o, Completed) for o in outcomes)
    for s in sessions:
        payloads = executors[s.id].payloads
        assert len(payloads) == 100
        seen = collections.Counter((p["who"], p["i"]) for p in payloads)
        assert set(seen.values()) == {1}
        # Each submitter's inputs ran in the order it submitted them.
        for who in range(10):
            assert [p["i"] for p in payloads if p["who"] == who] == list(range(10))
        assert (await s.stats()).inputs["queued"] == 0
        assert await memory_view(s) == await durable_view(store, s.id)


def _destroys(ws: suricate.store.WriteSet) -> bool:
    return ws.session is not None and ws.session.state is SessionState.DESTROYED


async def _submit_all(s: suricate.Session, n: int, tag: str) -> tuple[list[str], int]:
    """``n`` concurrent submits; returns the accepted ids and the refusals."""
    accepted: list[str] = []
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        try:
            ack = await s.submit({"tag": tag, "i": i})
        except suricate.SessionDestroyed:
            refused += 1
        else:
            accepted.append(ack.input_id)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return accepted, refused


@pytest.mark.parametrize("order", ["submits_behind_the_destroy", "destroy_behind_a_turn_commit"])
async def test_destroy_racing_with_submits_loses_and_hangs_nothing(faulty, order) -> None:
    rt, store = faulty
    s = await rt.open_session("victim")
    ex = ScriptedExecutor(block=True)
    await s.attach(ex)
    with trio.fail_after(30):
        before, _ = await _submit_all(s, 5, "before")  # one runs, four queue
        await ex.wait_turns(1)
        (running,) = ex.turns[0].input_ids
        async with trio.open_nursery() as nursery:
            if order == "submits_behind_the_destroy":
                # Submits reach the session while its destroy commits.
                hold = store.hold_commit_if(_destroys)
                reports = await _in_mailbox(nursery, s.destroy)
                await hold.wait_reached()
                late = await _in_mailbox(nursery, _submit_all, s, 10, "late")
            else:
                # The destroy reaches the session while the turn commits.
                hold = store.hold_commit_if(lambda ws: ws.receipt is not None)
                ex.release()
                await hold.wait_reached()
                reports = await _in_mailbox(nursery, s.destroy)
                late = []
            hold.release()
        outcomes = {i: await s.wait(i) for i in before}
    (report,) = reports
    if late:
        ((accepted, refused),) = late
        assert (accepted, refused) == ([], 10)  # refused, none lost
    abandoned = {i for i, o in outcomes.items() if isinstance(o, Abandoned)}
    if order == "submits_behind_the_destroy":
        assert abandoned == set(before)  # the running turn too: cancelled
        assert ex.finished == ex.cancelled == 1
    else:
        assert outcomes[running] == Completed(input_id=running, result=ex.turns[0].payloads[0])
        assert abandoned == set(before) - {running}
    assert report.inputs_abandoned == len(abandoned)
    for i in abandoned:
        assert outcomes[i] == Abandoned(input_id=i, reason=AbandonReason.DESTROYED)
    assert await s.state() is suricate.SessionState.DESTROYED
    assert await memory_view(s) == await durable_view(store, "victim")


async def _in_mailbox(nursery: trio.Nursery, call, *args) -> list:
    """Start ``call`` and return once it waits (its messages are in the
    session's mailbox); the returned list gets its result."""
    out: list = []

    async def run() -> None:
        out.append(await call(*args))

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()
    return out
