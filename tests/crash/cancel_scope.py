"""Cancel the scope around ``open_runtime`` while turns commit, then reopen.

Usage: python cancel_scope.py WORKDIR SEED POINTS

For each of POINTS cancel points drawn from SEED: runs a small SQLite
workload on ``WORKDIR/point<k>.db`` (3 sessions x 10 inputs, some steered,
some interrupting, some failing once, some checkpointing) inside
``trio.move_on_after(delay)``, then reopens that file in the same process.
Prints one JSON object per line, flushed at once, so that a parent that has
to kill a hung run still knows how far it got (each carries ``"point": k``):

- ``{"phase": "ack", "session": ..., "input": ...}`` for each input
  acknowledged (``submit`` returned);
- ``{"phase": "left", "delay": ..., "seconds": ..., "cancelled": bool}`` once
  the cancelled scope was left (with ``"error"`` if leaving it raised);
- ``{"phase": "reopened", "problems": [...]}`` after reopening the file in
  this same process and opening every session.

It runs in a subprocess because a shutdown that hangs inside a shielded
scope cannot be cut short by any trio timeout.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import trio

import suricate

SESSIONS = 3
INPUTS = 10
LEAVE_WITHIN = 10.0
"""Seconds the cancelled scope may take to be left."""


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def draw_delays(seed: int, points: int) -> list[float]:
    """The cancel points of ``seed``: anywhere from the runtime's start to a
    little past the end of the workload (about 0.12 s on this machine)."""
    rng = random.Random(seed)
    return [rng.uniform(0.0, 0.12) for _ in range(points)]


async def workload(db: str, seed: int, acked: dict[str, list[str]], point: int) -> None:
    rng = random.Random(seed * 1000 + point)
    failed: set[str] = set()

    async def executor(turn: suricate.Turn) -> suricate.TurnResult:
        lead = turn.inputs[0]
        if lead.payload["checkpoint"]:
            await turn.checkpoint(snapshot={"at": lead.payload["i"]})
        await trio.sleep(lead.payload["work"])
        if lead.payload["fail"] and lead.input_id not in failed:
            failed.add(lead.input_id or "")
            raise RuntimeError("fails once")
        return suricate.TurnResult(
            snapshot={"last": lead.payload["i"]}, result=[i.payload["i"] for i in turn.inputs]
        )

    async def submitter(s: suricate.Session, plan: list[dict[str, Any]]) -> None:
        for step in plan:
            ack = await s.submit(
                {k: step[k] for k in ("i", "work", "fail", "checkpoint")},
                handling=step["handling"],
                idempotency_key=f"{s.id}-{step['i']}",
            )
            acked[s.id].append(ack.input_id)
            say(phase="ack", point=point, session=s.id, input=ack.input_id)
        for input_id in list(acked[s.id]):
            await s.wait(input_id)

    plans = {
        f"w{n}": [
            {
                "i": i,
                "work": rng.choice([0.0, 0.0, 0.002, 0.01]),
                "fail": rng.random() < 0.15,
                "checkpoint": rng.random() < 0.2,
                "handling": rng.choices(
                    [suricate.Handling.QUEUE, suricate.Handling.STEER, suricate.Handling.INTERRUPT],
                    weights=[6, 2, 2],
                )[0],
            }
            for i in range(INPUTS)
        ]
        for n in range(SESSIONS)
    }
    async with suricate.open_runtime(db, seed=seed) as rt:
        sessions = [await rt.open_session(sid) for sid in plans]
        for s in sessions:
            await s.attach(executor, retry=None, max_batch=rng.choice([1, 2]))
        async with trio.open_nursery() as nursery:
            for s in sessions:
                nursery.start_soon(submitter, s, plans[s.id])


async def reopen(db: str) -> list[str]:
    """Reopen ``db`` in this process (whose runtime was just cancelled) and
    open every session: what went wrong, if anything."""
    problems: list[str] = []
    try:
        with trio.fail_after(LEAVE_WITHIN):
            async with suricate.open_runtime(db) as rt:
                for sid in (f"w{n}" for n in range(SESSIONS)):
                    await rt.open_session(sid)
    except Exception as exc:
        problems.append(f"reopening in the same process raised {exc!r}")
    return problems


async def cancel_once(workdir: str, seed: int, point: int, delay: float) -> None:
    db = f"{workdir}/point{point}.db"
    started = time.monotonic()
    acked: dict[str, list[str]] = {f"w{n}": [] for n in range(SESSIONS)}
    try:
        with trio.fail_after(LEAVE_WITHIN):
            with trio.move_on_after(delay) as scope:
                await workload(db, seed, acked, point)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        say(phase="left", point=point, delay=delay, error=repr(exc),
            seconds=time.monotonic() - started)
    else:
        say(phase="left", point=point, delay=delay, seconds=time.monotonic() - started,
            cancelled=scope.cancelled_caught)
    say(phase="reopened", point=point, problems=await reopen(db))


async def main(workdir: str, seed: int, points: int) -> None:
    for point, delay in enumerate(draw_delays(seed, points)):
        await cancel_once(workdir, seed, point, delay)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
