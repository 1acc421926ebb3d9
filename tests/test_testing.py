"""The test kit itself: views that catch a disagreement, holds that hold."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing

import suricate
from suricate import Handling, InputRecord, InputState
from suricate.store import MemoryStore, WriteSet
from suricate.testing import FaultyStore, durable_view, memory_view


class _Tampering(FaultyStore):
    """Commits a changed copy of each input record that ``change`` rewrites:
    the store then disagrees with the session's memory."""

    def __init__(self, change: Callable[[InputRecord], InputRecord]) -> None:
        super().__init__(MemoryStore())
        self.change = change
        self.armed = False

    async def commit(self, write_set: WriteSet) -> None:
        if self.armed:
            write_set = attrs.evolve(write_set, inputs=tuple(map(self.change, write_set.inputs)))
        await super().commit(write_set)


async def test_views_of_a_healthy_session_list_each_lane_in_running_order(ids) -> None:
    store = FaultyStore(MemoryStore())
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        q1 = await s.submit("q1")
        st = await s.submit("st", handling=Handling.STEER)
        q2 = await s.submit("q2")
        it = await s.submit("it", handling=Handling.INTERRUPT)
        view = await memory_view(s)
        assert view == await durable_view(store, "s")
    assert view.lanes == ((it.input_id,), (st.input_id,), (q1.input_id, q2.input_id))
    assert [(i[0], i[1], i[3], i[4]) for i in view.inputs] == sorted(
        [
            (q1.input_id, "queued", 1, 2),
            (st.input_id, "queued", 2, 1),
            (q2.input_id, "queued", 3, 2),
            (it.input_id, "queued", 4, 0),
        ]
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: attrs.evolve(r, order=0), id="order"),
        pytest.param(lambda r: attrs.evolve(r, handling=Handling.STEER), id="lane"),
        pytest.param(lambda r: attrs.evolve(r, seq=r.seq + 10), id="seq"),
    ],
)
async def test_views_differ_when_memory_and_store_disagree_about_order(ids, change) -> None:
    store = _Tampering(change)
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        await s.submit("first")
        store.armed = True
        await s.submit("second")  # the store now holds it elsewhere than memory does
        assert await memory_view(s) != await durable_view(store, "s")


async def test_a_held_commit_waits_until_released_and_then_commits(ids) -> None:
    store = FaultyStore(MemoryStore())
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        hold = store.hold_commit_if(lambda ws: any(r.payload == "held" for r in ws.inputs))
        acks: list[suricate.Accepted | suricate.Deduplicated] = []

        async def submit() -> None:
            acks.append(await s.submit("held"))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                held = await hold.wait_reached()
                await trio.testing.wait_all_tasks_blocked()
                assert hold.reached and acks == []
                assert (await durable_view(store, "s")).inputs == ()
                hold.release()
        (ack,) = acks
        assert [r.input_id for r in held.inputs] == [ack.input_id]
        record = await store.load_input("s", ack.input_id)
        assert record is not None and record.state is InputState.QUEUED
        # One-shot: the next matching write-set passes.
        await s.submit("held")
        assert await memory_view(s) == await durable_view(store, "s")
