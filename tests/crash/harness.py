"""Kill a durable workload with SIGKILL, restart on its file, check nothing was lost.

Used by ``tests/test_crash.py`` (a few kill points) and runnable as a soak:

    python tests/crash/harness.py --kills 300
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sqlite3
import sys
import tempfile
from pathlib import Path

import trio

import suricate

sys.path.insert(0, str(Path(__file__).parent))

import checks  # noqa: E402

WORKLOAD = Path(__file__).with_name("workload.py")


def run_until_killed(workdir: Path, seed: int, delay: float) -> tuple[Path, Path, Path]:
    """Run the workload in a subprocess and SIGKILL it ``delay`` s after it is ready."""
    db, acks, effects = workdir / "agent.db", workdir / "acks.log", workdir / "effects.log"
    checks.kill_when_ready(
        [sys.executable, str(WORKLOAD), str(db), str(acks), str(effects), str(seed)], delay,
        what="workload",
    )
    return db, acks, effects


async def recover_and_check(db: Path, acks: Path) -> dict[str, int]:
    """Reopen the file, finish every acknowledged input, check the invariants.

    Returns counts for the report; raises AssertionError on a violation.
    """
    acked: dict[str, list[str]] = collections.defaultdict(list)
    for line in acks.read_text().splitlines():
        session_id, input_id = line.split()
        acked[session_id].append(input_id)
    outcomes: collections.Counter[str] = collections.Counter()

    async def finish(turn: suricate.Turn) -> suricate.TurnResult:
        return suricate.TurnResult(result="after restart")

    async with suricate.open_runtime(db) as rt:
        for session_id in await rt.store.list_sessions():
            s = await rt.open_session(session_id)
            await s.attach(finish)
        for session_id, input_ids in acked.items():
            s = rt.session(session_id)
            with trio.fail_after(60):
                for input_id in input_ids:
                    record = await s.input(input_id)
                    assert record is not None, f"acknowledged input {input_id} was lost"
                    outcome = await s.wait(input_id)
                    outcomes[type(outcome).__name__] += 1
        # Every committed peer message is delivered once the drains settle.
        with trio.fail_after(60):
            while True:
                for drain in list(rt._comms.drains.values()):
                    await drain.idle.wait()
                waiting = [s for s in rt.sessions() if await rt.store.load_outbox(s.id, limit=1)]
                if not waiting:
                    break
                for s in waiting:
                    rt._comms.kick(s.id)
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, session_id, run_id, state FROM outbox").fetchall()
        assert all(state == "delivered" for _, _, _, state in rows), "undelivered outbox rows"
        for row_id, sender, run_id, _ in rows:
            (copies,) = conn.execute(
                "SELECT count(*) FROM inputs WHERE idempotency_key = ?", (f"suricate:outbox:{row_id}",)
            ).fetchone()
            assert copies == 1, f"outbox row {row_id} delivered {copies} times"
            (committed,) = conn.execute(
                "SELECT count(*) FROM receipts WHERE session_id = ? AND run_id = ?", (sender, run_id)
            ).fetchone()
            assert committed, f"outbox row {row_id} comes from a turn that never committed"
        outcomes["messages"] = len(rows)
        seen: collections.Counter[str] = collections.Counter()
        for (input_ids,) in conn.execute("SELECT input_ids_json FROM receipts"):
            seen.update(json.loads(input_ids))
        twice = [i for i, n in seen.items() if n > 1]
        assert not twice, f"inputs committed by more than one receipt: {twice[:5]}"
        consumed_without_receipt = conn.execute(
            "SELECT count(*) FROM inputs WHERE state = 'consumed' AND run_id IS NULL"
        ).fetchone()[0]
        assert consumed_without_receipt == 0
    finally:
        conn.close()
    return {"acked": sum(len(v) for v in acked.values()), **outcomes}


def kill_points(kills: int, seed: int) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(rng.randrange(1 << 30), rng.uniform(0.05, 0.8)) for _ in range(kills)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    totals: collections.Counter[str] = collections.Counter()
    for n, (seed, delay) in enumerate(kill_points(args.kills, args.seed), 1):
        with tempfile.TemporaryDirectory() as tmp:
            db, acks, _ = run_until_killed(Path(tmp), seed, delay)
            totals.update(trio.run(recover_and_check, db, acks))
        print(f"kill {n}/{args.kills}: ok ({dict(totals)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
