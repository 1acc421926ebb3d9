"""SIGKILL during start-up recovery, again and again, on one store.

For each store:

1. **Build**: run ``startup_workload.py build`` on a new file and SIGKILL it
   ``BUILD_ROUNDS`` times (each run recovers what the last left, re-stages
   it and counts attempts), so that its sessions hold ``QUEUED``, ``STAGED``
   and ``APPLIED`` inputs at every attempt count, and pending peer messages.
2. **Kill the opening**: ``kills`` times, run ``startup_workload.py open``
   (open the runtime, open every session: one recovery commit each, several
   at once, plus peer-message delivery) and SIGKILL it at a seeded point of
   its progress (right after it started, or after its k-th line).  Each
   time, the file is read before and after with plain sqlite3 and
   :func:`check_opening` checks what the killed opening did: every input is
   still there, each one either untouched or moved exactly as the recovery
   rules say (DESIGN section 7, attempt counts unchanged), each session
   recovered whole or not at all, only peer messages added (each from an
   outbox row now delivered), every ``RecoveryReport`` the process printed
   equal to what its commit did; plus the store invariants of
   ``checks.check_store``.
3. **Final reopen** (:func:`final_check`): the recovery reports of the last
   opening equal what the recovery rules predict from the file; memory
   equals the store for every session (``memory_view == durable_view``),
   also after a second ``recover()``, which finds nothing to requeue or
   abandon; then an executor finishes everything and every acknowledged
   input has exactly one outcome, no input is consumed twice, every peer
   message is delivered exactly once.

Used by ``tests/test_crash_campaigns.py`` (a few kills) and runnable as a soak:

    python tests/crash/startup.py --kills 200 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import suricate
from suricate.testing import durable_view, memory_view

sys.path.insert(0, str(Path(__file__).parent))

import checks  # noqa: E402
from startup_workload import MAX_ATTEMPTS  # noqa: E402

WORKLOAD = Path(__file__).with_name("startup_workload.py")
BUILD_ROUNDS = 4
STEP_TIMEOUT = 60.0


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKLOAD), *args], stdout=subprocess.PIPE, text=True
    )


def build_store(workdir: Path, seed: int, rounds: int = BUILD_ROUNDS) -> tuple[Path, Path]:
    """A store left by ``rounds`` killed runs of the build workload."""
    db, acks = workdir / "agent.db", workdir / "acks.log"
    rng = random.Random(seed)
    for n in range(rounds):
        checks.kill_when_ready(
            [sys.executable, str(WORKLOAD), "build", str(db), str(acks), str(rng.randrange(1 << 30))],
            rng.uniform(0.15, 0.6), what=f"build round {n}", timeout=STEP_TIMEOUT,
        )
    return db, acks


def kill_opening(db: Path, seed: int) -> dict[str, Any]:
    """Run the opener and SIGKILL it at the point ``seed`` draws.

    Returns ``after`` (how many of its lines had been read when the kill was
    sent), ``completed`` (it printed ``done`` first) and ``reports``
    (session -> the report it printed, for every complete ``opened`` line).
    """
    rng = random.Random(seed)
    # Early kills are drawn more often: each opening then leaves work to the next.
    target = int(rng.random() ** 2 * (2 + len(checks.read_store(db).sessions)))
    jitter = rng.uniform(0.0, 0.004)
    proc = _popen("open", str(db), str(seed))
    lines: list[str] = []
    completed = False
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if first != "starting":
            raise RuntimeError(f"the opener did not start: {first!r}")
        while len(lines) < target:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "done":
                completed = True
                break
        if not completed:
            time.sleep(jitter)
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(STEP_TIMEOUT)
        assert proc.stdout is not None
        lines.extend(proc.stdout.read().splitlines(keepends=True))
        proc.stdout.close()
    if not completed and proc.returncode != -signal.SIGKILL:
        completed = proc.returncode == 0 and any(x.strip() == "done" for x in lines)
        if not completed:
            raise RuntimeError(f"the opener exited with {proc.returncode}: {lines[-3:]}")
    reports = {}
    for line in lines:
        if line.endswith("\n") and line.startswith("opened "):
            _, session_id, fields = line.split(" ", 2)
            reports[session_id] = json.loads(fields)
    return {"after": target, "completed": completed, "reports": reports}


def recovered_state(row: checks.Row, receipts: Any) -> tuple[str, str | None]:
    """What recovery makes of a stored input: (state, abandon reason)."""
    if row.state == "applied" and (row.session_id, row.run_id, row.boundary) in receipts:
        return "consumed", None
    if row.state in ("staged", "applied"):
        if row.attempt >= MAX_ATTEMPTS:
            return "abandoned", "max_attempts"
        return "queued", None
    return row.state, row.reason


def expected_report(pre: checks.Snapshot, session_id: str) -> dict[str, int]:
    requeued = abandoned = consumed = active = 0
    for row in pre.of(session_id):
        if row.state not in checks.ACTIVE:
            continue
        active += 1
        state, _ = recovered_state(row, pre.receipts)
        if row.state == "queued":
            continue
        requeued += state == "queued"
        abandoned += state == "abandoned"
        consumed += state == "consumed"
    return {
        "recovered": active,
        "requeued": requeued,
        "abandoned": abandoned,
        "details": requeued + abandoned + consumed,
    }


def check_opening(
    pre: checks.Snapshot, post: checks.Snapshot, reports: dict[str, dict[str, int]]
) -> collections.Counter[str]:
    """What one (killed) opening did to the file, against the recovery rules."""
    counts: collections.Counter[str] = collections.Counter()
    due: collections.Counter[str] = collections.Counter()
    moved: collections.Counter[str] = collections.Counter()
    for input_id, before in pre.inputs.items():
        after = post.inputs.get(input_id)
        where = f"input {input_id} of {before.session_id} ({before.state}, attempt {before.attempt})"
        assert after is not None, f"{where} disappeared"
        assert after.attempt == before.attempt, f"{where}: recovery changed the attempt count"
        state, reason = recovered_state(before, pre.receipts)
        if state != before.state:
            due[before.session_id] += 1
        if after.state == before.state:
            assert after.history == before.history, f"{where}: history changed, state did not"
            continue
        assert (after.state, after.reason) == (state, reason), (
            f"{where}: became {after.state}({after.reason}), recovery rules say {state}({reason})"
        )
        assert after.history == (*before.history, after.state), (
            f"{where}: history {list(before.history)} -> {list(after.history)}"
        )
        moved[before.session_id] += 1
        counts[f"{before.state}->{after.state}"] += 1
    counts["sessions_recovered"] += len(moved)
    for session_id, n in due.items():
        assert moved[session_id] in (0, n), (
            f"session {session_id} recovered in part: {moved[session_id]} of {n} inputs moved"
        )
    for input_id, after in post.inputs.items():
        if input_id in pre.inputs:
            continue
        where = f"new input {input_id} of {after.session_id} ({after.kind}, {after.state})"
        assert after.kind.startswith("peer_") and after.state == "queued", where
        assert after.key is not None and after.key.startswith(checks.OUTBOX_KEY), where
        row_id = int(after.key[len(checks.OUTBOX_KEY) :])
        assert pre.outbox[row_id][3] == "pending", f"{where}: row {row_id} was delivered before"
        assert post.outbox[row_id][3] == "delivered", f"{where}: row {row_id} not marked"
        counts["delivered"] += 1
    for row_id, (_, _, _, state) in pre.outbox.items():
        if state != "pending":
            assert post.outbox[row_id][3] == state, f"outbox row {row_id}: {state} changed"
    for session_id, report in reports.items():
        if report is None:
            continue
        assert moved[session_id] == due[session_id], (
            f"session {session_id} reported {report} but its recovery is not in the file"
        )
        expected = expected_report(pre, session_id)
        assert report == expected, f"session {session_id} reported {report}, expected {expected}"
        counts["reports"] += 1
    checks.check_store(post, max_attempts=MAX_ATTEMPTS)
    return counts


async def final_check(db: Path, acks: Path) -> collections.Counter[str]:
    """Reopen the file for good and check it (step 3 of the module docstring)."""
    pre = checks.read_store(db)
    checks.check_store(pre, max_attempts=MAX_ATTEMPTS)
    acked = checks.parse_acks(acks.read_text().splitlines())
    missing = checks.missing_acks(pre, acked)
    assert not missing, f"acknowledged inputs lost: {missing[:5]}"
    counts: collections.Counter[str] = collections.Counter()

    async def finish(turn: suricate.Turn) -> suricate.TurnResult:
        return suricate.TurnResult(result="after restart")

    async with suricate.open_runtime(db, max_attempts=MAX_ATTEMPTS) as rt:
        with trio.fail_after(STEP_TIMEOUT):
            ids = await rt.store.list_sessions()
            assert set(ids) == set(pre.sessions)
            for session_id in ids:
                s = await rt.open_session(session_id)
                assert s.recovered is not None
                got = checks.reported(s.recovered)
                expected = expected_report(pre, session_id)
                assert got == expected, f"{session_id}: recovery reported {got}, expected {expected}"
                counts["requeued"] += got["requeued"]
                counts["abandoned_at_open"] += got["abandoned"]
            await settle(rt)
            for s in rt.sessions():
                assert await memory_view(s) == await durable_view(rt.store, s.id), s.id
                again = await s.recover()
                assert (again.inputs_requeued, again.inputs_abandoned) == (0, 0), (s.id, again)
                assert await memory_view(s) == await durable_view(rt.store, s.id), s.id
            for s in rt.sessions():
                await s.attach(finish, retry=None, max_batch=8)
            for session_id, input_ids in acked.items():
                s = rt.session(session_id)
                for input_id in input_ids:
                    outcome = await s.wait(input_id)
                    name = type(outcome).__name__
                    if isinstance(outcome, suricate.Abandoned):
                        name += f"({outcome.reason.value})"
                    counts[name] += 1
            await settle(rt)
    post = checks.read_store(db)
    counts.update(checks.check_store(post, max_attempts=MAX_ATTEMPTS, settled=True))
    for session_id, input_ids in acked.items():
        for input_id in input_ids:
            assert post.inputs[input_id].state in checks.TERMINAL, input_id
    counts["acked"] = sum(len(v) for v in acked.values())
    return counts


async def settle(rt: suricate.Runtime) -> None:
    """Wait until every open session's comms drain has nothing left to deliver
    (a ``STOPPED`` session keeps its rows until it is revived: not waited for)."""
    while True:
        for drain in list(rt._comms.drains.values()):
            await drain.idle.wait()
        waiting = [
            s
            for s in rt.sessions()
            if await rt.store.load_outbox(s.id, limit=1)
            and await s.state() is not suricate.SessionState.STOPPED
        ]
        if not waiting:
            return
        for s in waiting:
            rt._comms.kick(s.id)
        await trio.sleep(0.01)


def run_store(workdir: Path, seed: int, kills: int) -> collections.Counter[str]:
    """One store: build it, kill ``kills`` openings, reopen and check."""
    rng = random.Random(seed)
    db, acks = build_store(workdir, rng.randrange(1 << 30))
    totals: collections.Counter[str] = collections.Counter()
    start = checks.read_store(db)
    totals["staged_at_start"] += sum(1 for r in start.inputs.values() if r.state == "staged")
    totals["applied_at_start"] += sum(1 for r in start.inputs.values() if r.state == "applied")
    totals["queued_at_start"] += sum(1 for r in start.inputs.values() if r.state == "queued")
    for _ in range(kills):
        pre = checks.read_store(db)
        opening = kill_opening(db, rng.randrange(1 << 30))
        post = checks.read_store(db)
        totals.update(check_opening(pre, post, opening["reports"]))
        if opening["completed"]:
            totals["openings_completed"] += 1
        elif opening["reports"]:
            totals["killed_while_opening"] += 1
        else:
            totals["killed_before_first_open"] += 1
    totals.update(trio.run(final_check, db, acks))
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="openings killed in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-store", type=int, default=5, help="openings killed per store")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    totals: collections.Counter[str] = collections.Counter()
    done = 0
    stores = 0
    while done < args.kills:
        kills = min(args.per_store, args.kills - done)
        with tempfile.TemporaryDirectory() as tmp:
            totals.update(run_store(Path(tmp), rng.randrange(1 << 30), kills))
        done += kills
        stores += 1
        print(f"store {stores}: {done}/{args.kills} openings: ok ({dict(totals)})", flush=True)
    print(f"startup campaign seed {args.seed}: {done} openings over {stores} stores, "
          f"0 lost, 0 consumed twice ({dict(totals)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
