"""The two processes of the start-up recovery campaign (``startup.py``).

Usage:
    python startup_workload.py build DB ACK_LOG SEED
    python startup_workload.py open DB SEED

``build`` runs a durable workload meant to be killed: ``SESSIONS`` sessions,
a submitter each, an executor whose turns often stall (the run's inputs stay
``STAGED``) or commit a ``checkpoint`` and then stall (``APPLIED``, with a
receipt), sometimes fail, and send peer messages.  Killed a few times on the
same file, it leaves many sessions holding ``QUEUED``, ``STAGED`` and
``APPLIED`` inputs at every attempt count, and undelivered outbox rows.
It prints ``ready`` once every session is open and attached, and appends
``ack SESSION INPUT`` to ACK_LOG after each ``submit`` returned.

``open`` is start-up recovery alone: it prints ``starting``, opens the
runtime (``runtime``), then opens every stored session, several at once in
a seeded order (each ``open_session`` is a recovery commit; opening also
delivers pending peer messages), printing ``opened SESSION REPORT`` (the
``RecoveryReport`` as JSON) after each, then ``done``.  No executor is
attached, so nothing but recovery and delivery writes.
"""

from __future__ import annotations

import json
import os
import random
import sys

import trio

import suricate

SESSIONS = 24
MAX_ATTEMPTS = 3
OPENING_AT_ONCE = 6


def build(db: str, ack_log: str, seed: int) -> None:
    rng = random.Random(seed)
    acks = os.open(ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def executor(turn: suricate.Turn) -> suricate.TurnResult:
        roll = rng.random()
        if roll < 0.15:
            await trio.sleep(0.003)
            raise RuntimeError("flaky agent")
        if roll < 0.4:  # stall with the inputs STAGED
            await trio.sleep(rng.uniform(0.05, 1.5))
        elif roll < 0.65:  # commit a boundary, then stall with them APPLIED
            first = turn.inputs[0].input_id or ""
            await turn.checkpoint(
                snapshot={"boundary": turn.run_id}, results={first: "partial"}
            )
            await trio.sleep(rng.uniform(0.05, 1.5))
        messages = [
            suricate.PeerMessage(f"agent-{rng.randrange(SESSIONS)}", {"about": i.input_id})
            for i in turn.inputs
            if i.kind == "prompt" and rng.random() < 0.3
        ]
        return suricate.TurnResult(
            snapshot={"last": turn.run_id}, result="done", messages=messages
        )

    async def submitter(s: suricate.Session, who: int) -> None:
        n = 0
        while True:
            ack = await s.submit({"who": who, "n": n}, idempotency_key=f"{who}-{n}")
            os.write(acks, f"ack {s.id} {ack.input_id}\n".encode())
            n += 1
            await trio.sleep(rng.uniform(0.0, 0.05))

    async def run() -> None:
        async with suricate.open_runtime(db, max_attempts=MAX_ATTEMPTS, seed=seed) as rt:
            sessions = [await rt.open_session(f"agent-{i}") for i in range(SESSIONS)]
            for s in sessions:
                await s.attach(executor, retry=None, max_batch=rng.choice([1, 2, 3]))
            print("ready", flush=True)
            async with trio.open_nursery() as nursery:
                for s in sessions:
                    nursery.start_soon(submitter, s, rng.randrange(1 << 30))

    trio.run(run)


def open_all(db: str, seed: int) -> None:
    rng = random.Random(seed)

    async def opener(rt: suricate.Runtime, session_id: str, limit: trio.CapacityLimiter) -> None:
        async with limit:
            s = await rt.open_session(session_id)
        report = s.recovered
        fields = {
            "recovered": report.inputs_recovered,
            "requeued": report.inputs_requeued,
            "abandoned": report.inputs_abandoned,
            "details": len(report.details),
        } if report is not None else None
        print("opened", session_id, json.dumps(fields), flush=True)

    async def run() -> None:
        print("starting", flush=True)
        async with suricate.open_runtime(db, max_attempts=MAX_ATTEMPTS, seed=seed) as rt:
            print("runtime", flush=True)
            ids = await rt.store.list_sessions()
            rng.shuffle(ids)
            limit = trio.CapacityLimiter(OPENING_AT_ONCE)
            async with trio.open_nursery() as nursery:
                for session_id in ids:
                    nursery.start_soon(opener, rt, session_id, limit)
            print("done", flush=True)

    trio.run(run)


def main() -> None:
    mode = sys.argv[1]
    if mode == "build":
        build(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "open":
        open_all(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
