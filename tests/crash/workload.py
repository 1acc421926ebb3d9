"""A durable workload to be killed at a random moment (the crash harness).

Usage: python workload.py DB ACK_LOG EFFECTS_LOG SEED

Opens the SQLite store at DB, runs concurrent submitters over several
sessions with an executor that also sends peer messages to other sessions,
and whose side effects are appended to EFFECTS_LOG
(one line per (run_id, input_id): idempotent by key), and appends each input
id to ACK_LOG only after ``submit`` returned for it.  Writes go straight to
the kernel (``os.write``), so a SIGKILL loses nothing that was logged.
"""

from __future__ import annotations

import os
import random
import sys

import trio

import suricate

SESSIONS = 8
SUBMITTERS_PER_SESSION = 4


def main() -> None:
    db, ack_log, effects_log, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    acks = os.open(ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    effects = os.open(effects_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def executor(turn: suricate.Turn) -> suricate.TurnResult:
        for inp in turn.inputs:
            os.write(effects, f"{turn.session_id} {turn.run_id} {inp.input_id}\n".encode())
        if rng.random() < 0.1:
            await trio.sleep(0.002)
        if rng.random() < 0.05:
            raise RuntimeError("flaky agent")
        count = (turn.snapshot or {}).get("turns", 0) + 1
        messages = []
        for inp in turn.inputs:
            if inp.kind == "prompt" and rng.random() < 0.3:
                target = f"agent-{rng.randrange(SESSIONS)}"
                messages.append(suricate.PeerMessage(target, {"about": inp.input_id}))
        return suricate.TurnResult(
            snapshot={"turns": count}, result=[i.payload for i in turn.inputs], messages=messages
        )

    async def submitter(s: suricate.Session, who: int) -> None:
        n = 0
        while True:
            ack = await s.submit({"who": who, "n": n}, idempotency_key=f"{who}-{n}")
            os.write(acks, f"{s.id} {ack.input_id}\n".encode())
            n += 1

    async def run() -> None:
        async with suricate.open_runtime(db) as rt:
            sessions = [await rt.open_session(f"agent-{i}") for i in range(SESSIONS)]
            for s in sessions:
                await s.attach(executor, max_batch=rng.choice([1, 2, 4]))
            print("ready", flush=True)
            async with trio.open_nursery() as nursery:
                for s in sessions:
                    for _ in range(SUBMITTERS_PER_SESSION):
                        nursery.start_soon(submitter, s, rng.randrange(1 << 30))

    trio.run(run)


if __name__ == "__main__":
    main()
