"""Comms: the transactional outbox, delivery, peer requests, dead letters."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import suricate
from suricate import AbandonReason, Completed, PeerMessage, SessionState, TurnResult
from suricate.testing import ScriptedExecutor


class Inbox:
    """A list that can be awaited until it holds ``n`` items."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = trio.Event()

    def append(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, n: int) -> list[Any]:
        with trio.fail_after(30):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items


async def settle(rt: suricate.Runtime) -> None:
    """Wait until every drain is idle and nothing waits in the outbox for an
    open session that accepts input (a STOPPED one keeps its messages)."""
    with trio.fail_after(60):
        while True:
            for drain in list(rt._comms.drains.values()):
                await drain.idle.wait()
            pending = False
            for s in rt.sessions():
                if await s.state() is SessionState.STOPPED:
                    continue
                if await rt.store.load_outbox(s.id, limit=1):
                    pending = True
                    rt._comms.kick(s.id)
            if not pending:
                return


async def test_ping_pong_a_thousand_rounds_delivers_every_message_once_in_order(
    store_factory, ids
) -> None:
    rounds = 1000
    seen: dict[str, list[int]] = {"ping": [], "pong": []}
    done = trio.Event()

    def player(me: str, other: str):
        async def run(turn: suricate.Turn) -> TurnResult:
            messages = []
            for inp in turn.inputs:
                n = inp.payload["n"]
                seen[me].append(n)
                if n >= rounds:
                    done.set()
                else:
                    messages.append(PeerMessage(other, {"n": n + 1}))
            return TurnResult(result="ok", messages=messages)

        return run

    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        ping = await rt.open_session("ping")
        pong = await rt.open_session("pong")
        await ping.attach(player("ping", "pong"))
        await pong.attach(player("pong", "ping"))
        await ping.submit({"n": 0})
        with trio.fail_after(120):
            await done.wait()
        await settle(rt)
        assert seen["ping"] == list(range(0, rounds + 1, 2))
        assert seen["pong"] == list(range(1, rounds, 2))
        assert await rt.dead_letters() == []
        assert (await pong.stats()).inputs["queued"] == 0


async def test_a_message_carries_its_sender_and_an_outbox_key(rt) -> None:
    inbox = Inbox()

    async def receiver(turn: suricate.Turn) -> None:
        for inp in turn.inputs:
            inbox.append(inp)

    a = await rt.open_session("a")
    b = await rt.open_session("b")
    await a.attach(ScriptedExecutor(result=lambda t: TurnResult(messages=[PeerMessage("b", {"hi": [1, 2]})])))
    await b.attach(receiver)
    with trio.fail_after(10):
        await a.ask("go")
    (message,) = await inbox.wait_for(1)
    assert message.kind == "peer_message"
    assert message.payload == {"hi": [1, 2]}
    assert message.metadata["from"] == "a"
    assert message.idempotency_key == f"suricate:outbox:{message.metadata['outbox_id']}"
    with pytest.raises(suricate.InputRejected):
        await b.submit({"x": 1}, idempotency_key=message.idempotency_key)


async def test_messages_wait_for_a_target_that_is_not_open(store_factory, ids) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        await rt.open_session("later")  # known to the store
        await rt.open_session("sender")
    received = Inbox()

    async def collect(turn: suricate.Turn) -> None:
        for inp in turn.inputs:
            received.append(inp.payload)

    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        sender = await rt.open_session("sender")
        await sender.attach(
            ScriptedExecutor(result=lambda t: TurnResult(messages=[PeerMessage("later", t.inputs[0].payload)]))
        )
        with trio.fail_after(10):
            for n in range(3):
                await sender.ask({"n": n})
        assert len(await rt.store.load_outbox("later")) == 3
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        later = await rt.open_session("later")
        await later.attach(collect)
        assert await received.wait_for(3) == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_a_stopped_target_keeps_its_messages_until_revived(rt) -> None:
    sender = await rt.open_session("sender")
    target = await rt.open_session("target")
    await target.stop()
    await sender.attach(ScriptedExecutor(result=lambda t: TurnResult(messages=[PeerMessage("target", "hello")])))
    with trio.fail_after(10):
        await sender.ask("go")
    await settle(rt)
    assert [r.message.payload_json for r in await rt.store.load_outbox("target")] == ['"hello"']
    ex = ScriptedExecutor()
    await target.attach(ex)
    await settle(rt)
    with trio.fail_after(10):
        await ex.wait_finished(1)
    assert ex.payloads == ["hello"]
    assert await rt.dead_letters() == []


@pytest.mark.parametrize("fate", ["unknown", "destroyed", "retired"])
async def test_undeliverable_messages_become_dead_letters(rt, fate) -> None:
    sender = await rt.open_session("sender")
    if fate != "unknown":
        target = await rt.open_session("target")
        await getattr(target, "destroy" if fate == "destroyed" else "retire")()
    async with rt.events(kinds={"dead_letter"}) as events:
        await sender.attach(
            ScriptedExecutor(result=lambda t: TurnResult(messages=[PeerMessage("target", {"x": 1})]))
        )
        with trio.fail_after(10):
            assert isinstance(await sender.ask("go"), Completed)
            await settle(rt)
            event = await events.__anext__()
    (letter,) = await rt.dead_letters()
    reason = {
        "unknown": "unknown target",
        "destroyed": "target session is destroyed",
        "retired": "target session is retired",
    }[fate]
    assert (letter.session_id, letter.target, letter.reason) == ("sender", "target", reason)
    assert event.data["reason"] == reason


async def test_a_peer_request_gets_the_responders_result_back(rt) -> None:
    responses = Inbox()

    async def asker(turn: suricate.Turn) -> TurnResult | None:
        for inp in turn.inputs:
            if inp.kind == "peer_response":
                responses.append(inp)
                return None
        return TurnResult(
            messages=[PeerMessage("oracle", {"q": 6 * 7}, reply=True, correlation_id="q-1")]
        )

    async def oracle(turn: suricate.Turn) -> TurnResult:
        return TurnResult(result={"answer": turn.inputs[0].payload["q"]})

    a = await rt.open_session("asker")
    o = await rt.open_session("oracle")
    await a.attach(asker)
    await o.attach(oracle)
    await a.submit("start")
    (response,) = await responses.wait_for(1)
    assert response.correlation_id == "q-1"
    assert response.metadata["from"] == "oracle"
    assert response.payload["outcome"] == "completed"
    assert response.payload["result"] == {"answer": 42}


async def test_a_failing_responder_answers_with_an_abandoned_outcome_not_silence(rt) -> None:
    responses = Inbox()

    async def asker(turn: suricate.Turn) -> TurnResult | None:
        if turn.inputs[0].kind == "peer_response":
            responses.append((turn.inputs[0].correlation_id, turn.inputs[0].payload))
            return None
        return TurnResult(messages=[PeerMessage("flaky", "please", reply=True)])

    a = await rt.open_session("asker")
    f = await rt.open_session("flaky")
    await a.attach(asker)
    await f.attach(ScriptedExecutor(fail_times=99, error=ValueError("no can do")), retry=None)
    await a.submit("start")
    ((correlation, payload),) = await responses.wait_for(1)
    assert correlation and correlation.endswith(":0")
    assert payload["outcome"] == "abandoned"
    assert payload["reason"] == AbandonReason.MAX_ATTEMPTS.value
    assert payload["error"] == "ValueError: no can do"


async def test_a_response_reaches_a_retired_requester(rt) -> None:
    got = Inbox()
    gate = trio.Event()

    async def asker(turn: suricate.Turn) -> TurnResult | None:
        if turn.inputs[0].kind == "peer_response":
            got.append(turn.inputs[0].payload["outcome"])
            return None
        return TurnResult(messages=[PeerMessage("slow", "q", reply=True)])

    async def slow(turn: suricate.Turn) -> TurnResult:
        await gate.wait()
        return TurnResult(result="a")

    a = await rt.open_session("asker")
    s = await rt.open_session("slow")
    await a.attach(asker)
    await s.attach(slow)
    with trio.fail_after(10):
        await a.ask("start")
        await a.retire()
        assert await a.state() is SessionState.RETIRED
        gate.set()
        assert await got.wait_for(1) == ["completed"]


@pytest.mark.parametrize("fate", ["destroy", "retire"])
async def test_messages_held_for_a_stopped_target_turn_dead_when_it_ends(rt, fate) -> None:
    sender = await rt.open_session("sender")
    target = await rt.open_session("target")
    await target.stop()
    await sender.attach(ScriptedExecutor(result=lambda t: TurnResult(messages=[PeerMessage("target", "hi")])))
    with trio.fail_after(10):
        await sender.ask("go")
    assert len(await rt.store.load_outbox("target")) == 1
    async with rt.events(kinds={"dead_letter"}) as events:
        await getattr(target, fate)()
        with trio.fail_after(10):
            event = await events.__anext__()
    reason = "target session is destroyed" if fate == "destroy" else "target session is retired"
    assert event.data["reason"] == reason
    assert [d.reason for d in await rt.dead_letters()] == [reason]
    assert await rt.store.load_outbox("target") == []
