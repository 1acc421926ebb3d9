"""A workload racing control operations against turns, to be killed (``control.py``).

Usage: python control_workload.py DB LOG SEED

Opens the SQLite store at DB with ``INITIAL`` sessions, attaches a flaky
executor to each (turns that checkpoint, stall, fail, and send peer
messages), runs two submitters per session (queue, steer and interrupt
inputs, some superseding each other), and ``CONTROLLERS`` tasks that keep
issuing seeded control operations on random sessions (mostly ones not yet
destroyed): attach, detach (waiting or cancelling), retire, reset, stop,
destroy, recycle, recover, and ``open`` (a new session, attached, with
submitters: destroyed ones are replaced).  Prints ``ready`` once the first sessions are attached.

Appends to LOG (``os.write`` of whole lines, so a SIGKILL loses nothing
logged):

- ``ack SESSION INPUT`` after ``submit`` returned;
- ``begin N OP SESSION`` before control operation N is issued, and
  ``end N OP SESSION RESULT`` after it returned (RESULT is the report's
  class and counts, or the exception's class): an operation begun and not
  ended was in flight when the process was killed.
"""

from __future__ import annotations

import itertools
import os
import random
import sys

import attrs
import trio

import suricate

INITIAL = 6
CONTROLLERS = 2
MAX_ATTEMPTS = 3
OPS = {
    "attach": 14,
    "detach": 8,
    "retire": 7,
    "reset": 10,
    "stop": 7,
    "destroy": 3,
    "recycle": 14,
    "recover": 10,
    "open": 4,
}


def main() -> None:
    db, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    known: list[str] = []
    destroyed: set[str] = set()
    counter = itertools.count()
    fresh = itertools.count(INITIAL)

    def say(line: str) -> None:
        os.write(log, f"{line}\n".encode())

    async def executor(turn: suricate.Turn) -> suricate.TurnResult:
        roll = rng.random()
        if roll < 0.25:
            await turn.checkpoint(
                snapshot={"boundary": turn.run_id},
                results={turn.inputs[0].input_id or "": "partial"},
            )
        if rng.random() < 0.4:
            await trio.sleep(rng.uniform(0.0, 0.03))
        if rng.random() < 0.12:
            raise RuntimeError("flaky agent")
        messages = [
            suricate.PeerMessage(rng.choice(known), {"about": i.input_id})
            for i in turn.inputs
            if i.kind == "prompt" and rng.random() < 0.3
        ]
        return suricate.TurnResult(snapshot={"last": turn.run_id}, result="done", messages=messages)

    async def submitter(s: suricate.Session, who: int) -> None:
        n = 0
        while True:
            handling = rng.choices(["queue", "steer", "interrupt"], weights=[16, 3, 1])[0]
            supersede = rng.random() < 0.1
            try:
                ack = await s.submit(
                    {"who": who, "n": n},
                    handling=handling,
                    kind="status" if supersede else "prompt",
                    supersession_key="latest" if supersede else None,
                    idempotency_key=f"{who}-{n}",
                )
            except suricate.SessionDestroyed:
                return
            except (suricate.NotReady, suricate.Overloaded):
                await trio.sleep(rng.uniform(0.005, 0.03))
                continue
            say(f"ack {s.id} {ack.input_id}")
            n += 1
            await trio.sleep(rng.uniform(0.0, 0.01))

    async def attach(s: suricate.Session) -> None:
        await s.attach(executor, retry=None, max_batch=rng.choice([1, 2, 3]))

    async def start(rt: suricate.Runtime, nursery: trio.Nursery, session_id: str) -> str:
        s = await rt.open_session(session_id)
        await attach(s)
        known.append(session_id)
        for _ in range(2):
            nursery.start_soon(submitter, s, rng.randrange(1 << 30))
        return "opened"

    async def operate(rt: suricate.Runtime, nursery: trio.Nursery, op: str, session_id: str) -> str:
        if op == "open":
            return await start(rt, nursery, session_id)
        s = rt.session(session_id)
        if op == "attach":
            await attach(s)
            return "attached"
        if op == "detach":
            cancel = rng.random() < 0.5
            await s.detach(cancel=cancel)
            return "detached(cancel)" if cancel else "detached"
        report = await getattr(s, op)()
        if op == "destroy":
            destroyed.add(session_id)
        fields = attrs.asdict(report, filter=lambda a, v: isinstance(v, int))
        return f"{type(report).__name__}({','.join(f'{k}={v}' for k, v in fields.items())})"

    async def controller(rt: suricate.Runtime, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(rng.uniform(0.0, 0.01))
            op = rng.choices(list(OPS), weights=list(OPS.values()))[0]
            if op == "open":
                session_id = f"agent-{next(fresh)}"
            else:
                live = [x for x in known if x not in destroyed]
                session_id = rng.choice(live if live and rng.random() < 0.9 else known)
            n = next(counter)
            say(f"begin {n} {op} {session_id}")
            try:
                result = await operate(rt, nursery, op, session_id)
            except suricate.SuricateError as exc:
                result = type(exc).__name__
            say(f"end {n} {op} {session_id} {result}")

    async def run() -> None:
        async with suricate.open_runtime(db, max_attempts=MAX_ATTEMPTS, seed=seed) as rt:
            async with trio.open_nursery() as nursery:
                for i in range(INITIAL):
                    await start(rt, nursery, f"agent-{i}")
                print("ready", flush=True)
                for _ in range(CONTROLLERS):
                    nursery.start_soon(controller, rt, nursery)

    trio.run(run)


if __name__ == "__main__":
    main()
