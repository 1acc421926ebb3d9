"""External sources drained into a session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

import suricate
from suricate import DrainExit, DrainMode
from suricate.testing import FaultyStore, ScriptedExecutor


@attrs.define
class Envelope:
    id: Any
    payload: Any
    source: Source
    acked: bool = False
    kind: str | None = None

    async def ack(self) -> None:
        self.acked = True
        self.source.acks.append(self.id)
        self.source.acked.set()
        self.source.acked = trio.Event()


class Source:
    """A broker stand-in: redelivers every envelope not yet acknowledged."""

    def __init__(self, payloads: list[Any], *, fail_after: int | None = None) -> None:
        self.envelopes = [Envelope(n, p, self) for n, p in enumerate(payloads)]
        self.acks: list[Any] = []
        self.acked = trio.Event()
        self.opened = 0
        self.fail_after = fail_after

    async def wait_acks(self, n: int) -> None:
        with trio.fail_after(100):
            while len(self.acks) < n:
                await self.acked.wait()

    def __call__(self) -> AsyncIterator[Any]:
        self.opened += 1
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        for n, envelope in enumerate(e for e in self.envelopes if not e.acked):
            if self.fail_after is not None and n >= self.fail_after:
                self.fail_after = None
                raise ConnectionError("broker went away")
            yield envelope
        await trio.sleep_forever()


async def test_envelopes_become_inputs_and_are_acked_after_commit(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    ex = ScriptedExecutor()
    await s.attach(ex)
    source = Source([{"n": 0}, {"n": 1}, {"n": 2}])
    async with rt.events(kinds={"drain.exited"}) as events:
        drain = s.drain_from(source, name="broker", idle_timeout=30)
        assert await drain.wait() is DrainExit.IDLE_TIMEOUT
        exited = await events.__anext__()
    assert exited.data == {"reason": "idle_timeout", "source": "broker"}
    assert source.acks == [0, 1, 2]
    await ex.wait_finished(3)
    assert ex.payloads == [{"n": 0}, {"n": 1}, {"n": 2}]
    record = await s.input(ex.turns[0].input_ids[0])
    assert record.idempotency_key == "suricate:source:broker:0"
    assert record.kind == "external"


async def test_a_commit_failure_leaves_the_envelope_unacked_and_persistent_redelivers(
    store_factory, ids, autojump_clock
) -> None:
    store = FaultyStore(store_factory())
    async with suricate.open_runtime(store, id_factory=ids) as rt:
        s = await rt.open_session("s")
        source = Source([{"n": 0}, {"n": 1}])
        store.fail_next_commit()
        timed = s.drain_from(source, name="b", idle_timeout=5)
        assert await timed.wait() is DrainExit.FAILED
        assert isinstance(timed.error, suricate.StoreError)
        assert source.acks == []
        store.fail_next_commit()
        persistent = s.drain_from(source, name="b", mode=DrainMode.PERSISTENT)
        await source.wait_acks(2)
        assert source.acks == [0, 1]
        assert source.opened == 3  # timed once, persistent twice (restarted after the failure)
        persistent.dismiss()
        assert await persistent.wait() is DrainExit.DISMISSED
        assert (await s.stats()).inputs["queued"] == 2


async def test_a_persistent_drain_restarts_a_failing_source(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    source = Source([{"n": n} for n in range(4)], fail_after=2)
    async with rt.events(kinds={"drain.exited"}) as events:
        drain = s.drain_from(source, mode=DrainMode.PERSISTENT, name="flaky")
        await source.wait_acks(4)
        assert source.opened == 2
        drain.dismiss()
        assert await drain.wait() is DrainExit.DISMISSED
        assert (await events.__anext__()).data["reason"] == "dismissed"
    assert source.acks == [0, 1, 2, 3]


async def test_redelivered_envelopes_are_deduplicated(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    source = Source([{"n": 0}])
    for _ in range(2):
        source.envelopes[0].acked = False
        assert await s.drain_from(source, name="b", idle_timeout=1).wait() is DrainExit.IDLE_TIMEOUT
    assert source.acks == [0, 0]
    assert (await s.stats()).inputs["queued"] == 1


async def test_malformed_envelopes_are_dead_letters_and_the_drain_carries_on(
    rt, autojump_clock
) -> None:
    s = await rt.open_session("s")
    source = Source([{"n": 0}, float("nan"), {"n": 2}])
    source.envelopes[1].payload = float("nan")

    class NoId:
        payload = {"x": 1}

        async def ack(self) -> None:
            pass

    async def factory() -> AsyncIterator[Any]:
        async for envelope in source():
            yield envelope
            if envelope.id == 0:
                yield NoId()

    drain = s.drain_from(factory, name="mixed", idle_timeout=1)
    assert await drain.wait() is DrainExit.IDLE_TIMEOUT
    assert source.acks == [0, 1, 2]
    letters = await rt.dead_letters()
    assert [(d.target, d.kind) for d in letters] == [("s", "source:mixed")] * 2
    assert all(d.reason.startswith("malformed envelope") for d in letters)
    assert (await s.stats()).inputs["queued"] == 2


async def test_a_drain_ends_when_its_session_stops_accepting_input(rt, autojump_clock) -> None:
    s = await rt.open_session("s")
    source = Source([{"n": 0}])
    await s.retire()
    assert await s.drain_from(source, name="b").wait() is DrainExit.SESSION_SHUTDOWN
    assert source.acks == []


async def test_leaving_the_runtime_aborts_running_drains(store_factory, ids) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        drain = s.drain_from(Source([]), mode=DrainMode.PERSISTENT, name="quiet")
    assert drain.reason is DrainExit.ABORTED


async def test_bad_drain_arguments_are_rejected(rt) -> None:
    s = await rt.open_session("s")
    with pytest.raises(suricate.InputRejected):
        s.drain_from("not callable")  # type: ignore[arg-type]
    with pytest.raises(suricate.InputRejected):
        s.drain_from(Source([]), idle_timeout=None)
    with pytest.raises(suricate.InputRejected):
        s.drain_from(Source([]), mode="timed")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["peer_message", "peer_response"])
async def test_an_envelope_of_a_reserved_kind_is_a_dead_letter(rt, autojump_clock, kind) -> None:
    s = await rt.open_session("s")
    source = Source([{"n": 0}, {"n": 1}])
    source.envelopes[0].kind = kind
    drain = s.drain_from(source, name="forged", idle_timeout=1)
    assert await drain.wait() is DrainExit.IDLE_TIMEOUT
    assert source.acks == [0, 1]
    (letter,) = await rt.dead_letters()
    assert letter.reason == f"malformed envelope: InputRejected: kind {kind!r} is reserved for the runtime"
    assert (await s.stats()).inputs["queued"] == 1
