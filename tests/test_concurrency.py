"""Serialization under concurrency: nothing lost, nothing twice, nothing hanging."""

from __future__ import annotations

import collections

import trio

import suricate
from suricate import AbandonReason, Abandoned, Completed
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


async def test_destroy_racing_with_submits_loses_and_hangs_nothing(rt, store) -> None:
    s = await rt.open_session("victim")
    ex = ScriptedExecutor()
    await s.attach(ex)
    accepted: list[str] = []
    refused = 0

    async def submitter(who: int) -> None:
        nonlocal refused
        for i in range(20):
            try:
                ack = await s.submit({"who": who, "i": i})
            except suricate.SessionDestroyed:
                refused += 1
            else:
                accepted.append(ack.input_id)
            await trio.lowlevel.checkpoint()  # interleave with the other tasks

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for who in range(10):
                nursery.start_soon(submitter, who)
            for _ in range(30):
                await trio.lowlevel.checkpoint()  # interleave with the other tasks
            report = await s.destroy()
        outcomes = [await s.wait(i) for i in accepted]
    assert len(accepted) + refused == 200
    assert refused > 0 and accepted
    assert report.inputs_abandoned == sum(
        1 for o in outcomes if isinstance(o, Abandoned)
    )
    for o in outcomes:
        assert isinstance(o, Completed) or o == Abandoned(
            input_id=o.input_id, reason=AbandonReason.DESTROYED
        )
    assert await s.state() is suricate.SessionState.DESTROYED
    assert await memory_view(s) == await durable_view(store, "victim")
