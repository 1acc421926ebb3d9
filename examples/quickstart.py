"""A small agent daemon: a few sessions, one flaky agent, live events.

Run it with ``python examples/quickstart.py``.  It hosts three agent sessions
on an in-memory store, submits work to each, shows the events as they
happen, and prints a summary.  One agent fails its first attempt at every
input; the runtime retries it.  Another input is interrupted by an urgent
one, and one session is retired while work is still queued, draining it.
"""

from __future__ import annotations

import sys

import trio

import suricate
from suricate import Handling, Input, Turn, TurnResult


async def echo_agent(turn: Turn) -> TurnResult:
    """Answers each input and counts its turns in the session snapshot."""
    count = (turn.snapshot or {}).get("turns", 0) + 1
    await trio.sleep(0.01)  # pretend to think
    return TurnResult(
        snapshot={"turns": count},
        results={i.input_id: f"echo: {i.payload['text']}" for i in turn.inputs if i.input_id},
    )


class FlakyAgent:
    """Fails the first attempt at every input: the runtime retries it."""

    async def run(self, turn: Turn) -> TurnResult:
        if turn.attempt == 1:
            raise ConnectionError("model endpoint hiccup")
        return TurnResult(result=f"flaky but done (attempt {turn.attempt})")


async def slow_agent(turn: Turn) -> TurnResult:
    text = turn.inputs[0].payload["text"]
    if text == "long task":
        await trio.sleep(10)
    return TurnResult(result=f"slow agent handled {text!r}")


async def watch(rt: suricate.Runtime, task_status: trio.TaskStatus[None]) -> None:
    async with rt.events(kinds={"input.consumed", "input.abandoned", "run.failed", "session.state"}) as events:
        task_status.started()
        async for event in events:
            detail = event.data.get("error") or event.data.get("to") or event.data.get("state")
            print(f"  [{event.session_id}] {event.kind:<15} {detail}")


async def main() -> int:
    async with suricate.open_runtime() as rt, trio.open_nursery() as nursery:
        await nursery.start(watch, rt)
        alice = await rt.open_session("alice")
        bob = await rt.open_session("bob")
        carol = await rt.open_session("carol")
        await alice.attach(echo_agent)
        await bob.attach(FlakyAgent())
        await carol.attach(slow_agent)

        print("submitting work to three agents")
        acks = [await alice.submit(Input({"text": f"hello {n}"}, idempotency_key=f"a-{n}")) for n in range(3)]
        dup = await alice.submit(Input({"text": "hello 0"}, idempotency_key="a-0"))
        print(f"  duplicate submit deduplicated to {dup.existing_input_id[:8]}")
        flaky = await bob.submit({"text": "please"})
        long = await carol.submit({"text": "long task"})
        while (await carol.state()) is not suricate.SessionState.RUNNING:
            await trio.sleep(0.001)
        urgent = await carol.submit({"text": "urgent"}, handling=Handling.INTERRUPT)

        with trio.fail_after(10):
            results = [await alice.wait(a.input_id) for a in acks]
            bob_outcome = await bob.wait(flaky.input_id)
            urgent_outcome = await carol.wait(urgent.input_id)
        await carol.detach(cancel=True)
        long_state = (await carol.input(long.input_id)).state.name
        report = await carol.retire()

        print("outcomes")
        for outcome in results:
            print(f"  alice: {outcome.result}")
        print(f"  bob:   {bob_outcome.result}")
        print(f"  carol: {urgent_outcome.result}; the interrupted long task is {long_state}")
        print(f"  carol retired: {report.inputs_abandoned} queued input abandoned")
        print(f"  alice's snapshot: {await alice.snapshot()}")
        ok = (
            all(isinstance(o, suricate.Completed) for o in results)
            and isinstance(bob_outcome, suricate.Completed)
            and isinstance(urgent_outcome, suricate.Completed)
        )
        nursery.cancel_scope.cancel()
    print("all inputs accounted for" if ok else "something went wrong")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
