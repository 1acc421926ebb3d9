"""SIGKILL a workload while control operations race its turns, then check.

Each kill point runs ``control_workload.py`` on a new file (turns, submits,
peer messages, and two tasks issuing attach / detach / retire / reset / stop
/ destroy / recycle / recover / open at random), SIGKILLs it ``delay``
seconds after it is ready, and :func:`recover_and_check` reopens the file:

- the store invariants of ``checks.check_store`` hold on the file as the
  killed process left it (attempts within ``max_attempts``, at most one
  terminal transition per input, no input in two receipts, nothing consumed
  without the receipt of its run, no active input in a ``STOPPED`` or
  ``DESTROYED`` session, each peer message delivered at most once and only
  from a committed turn);
- every acknowledged input is present after the reopen, each session's
  ``RecoveryReport`` is what the recovery rules predict from the file, and
  memory equals the store for every session (``memory_view ==
  durable_view``);
- a ``STOPPED`` or ``DESTROYED`` session holds no active input; a
  ``DESTROYED`` one refuses new input with ``SessionDestroyed``, a
  ``RETIRED`` one with ``NotReady``;
- after attaching an executor to every session that is not destroyed,
  every acknowledged input reaches exactly one outcome, and an input
  abandoned as ``RETIRED``, ``RESET``, ``STOPPED`` or ``DESTROYED`` belongs
  to a session on which that operation was issued;
- afterwards every peer message is delivered exactly once (or is a dead
  letter, never both) and no input was consumed twice.

The operations begun and not ended when the kill landed are reported
(``in_flight``).  Used by ``tests/test_crash_campaigns.py`` (a few kill
points) and runnable as a soak:

    python tests/crash/control.py --kills 200 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

import suricate
from suricate.testing import durable_view, memory_view

sys.path.insert(0, str(Path(__file__).parent))

import checks  # noqa: E402
from control_workload import MAX_ATTEMPTS  # noqa: E402
from startup import expected_report, settle  # noqa: E402

WORKLOAD = Path(__file__).with_name("control_workload.py")
STEP_TIMEOUT = 60.0
CAUSE = {"retired": "retire", "reset": "reset", "stopped": "stop", "destroyed": "destroy"}
"""The control operation an abandon reason needs on its session."""


def run_until_killed(workdir: Path, seed: int, delay: float) -> tuple[Path, Path]:
    db, log = workdir / "agent.db", workdir / "events.log"
    checks.kill_when_ready(
        [sys.executable, str(WORKLOAD), str(db), str(log), str(seed)], delay,
        what="workload", timeout=STEP_TIMEOUT, must_live=True,
    )
    return db, log


def parse_ops(lines: list[str]) -> tuple[dict[str, set[str]], list[str], collections.Counter[str]]:
    """Operations begun per session, those in flight at the kill, and counts
    of the results of the ended ones (``op:result``)."""
    begun: dict[str, set[str]] = collections.defaultdict(set)
    open_ops: dict[str, str] = {}
    results: collections.Counter[str] = collections.Counter()
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "begin":
            _, n, op, session_id = parts
            begun[session_id].add(op)
            open_ops[n] = f"{op} {session_id}"
        elif len(parts) == 5 and parts[0] == "end":
            _, n, op, _, result = parts
            open_ops.pop(n, None)
            results[f"{op}:{result.split('(')[0]}"] += 1
    return begun, list(open_ops.values()), results


async def recover_and_check(db: Path, log: Path) -> dict[str, Any]:
    """Reopen the file and check the invariants of the module docstring."""
    lines = log.read_text().splitlines()
    acked = checks.parse_acks(lines)
    begun, in_flight, results = parse_ops(lines)
    left = checks.read_store(db)
    checks.check_store(left, max_attempts=MAX_ATTEMPTS)
    missing = checks.missing_acks(left, acked)
    assert not missing, f"acknowledged inputs lost: {missing[:5]}"
    outcomes: collections.Counter[str] = collections.Counter()
    states: collections.Counter[str] = collections.Counter()

    async def finish(turn: suricate.Turn) -> suricate.TurnResult:
        return suricate.TurnResult(result="after restart")

    async with suricate.open_runtime(db, max_attempts=MAX_ATTEMPTS) as rt:
        with trio.fail_after(STEP_TIMEOUT):
            for session_id in await rt.store.list_sessions():
                s = await rt.open_session(session_id)
                assert s.recovered is not None
                got = checks.reported(s.recovered)
                expected = expected_report(left, session_id)
                assert got == expected, f"{session_id}: recovery reported {got}, expected {expected}"
            await settle(rt)
            for s in rt.sessions():
                assert await memory_view(s) == await durable_view(rt.store, s.id), s.id
                state = await s.state()
                assert state.value == left.sessions[s.id], (s.id, state, left.sessions[s.id])
                states[state.value] += 1
                for input_id in acked.get(s.id, []):
                    record = await s.input(input_id)
                    assert record is not None, f"acknowledged input {input_id} was lost"
                    if state in (suricate.SessionState.STOPPED, suricate.SessionState.DESTROYED):
                        assert record.state.terminal, (s.id, state, input_id, record.state)
                if state is suricate.SessionState.DESTROYED:
                    try:
                        await s.submit("probe", idempotency_key="probe")
                    except suricate.SessionDestroyed:
                        pass
                    else:
                        raise AssertionError(f"destroyed session {s.id} accepted an input")
                    continue
                if state is suricate.SessionState.RETIRED:
                    try:
                        await s.submit("probe", idempotency_key="probe")
                    except suricate.NotReady:
                        pass
                    else:
                        raise AssertionError(f"retired session {s.id} accepted an input")
                await s.attach(finish, retry=None, max_batch=4)
            for session_id, input_ids in acked.items():
                s = rt.session(session_id)
                for input_id in input_ids:
                    outcome = await s.wait(input_id)
                    name = type(outcome).__name__
                    if isinstance(outcome, suricate.Abandoned):
                        reason = outcome.reason.value
                        name += f"({reason})"
                        cause = CAUSE.get(reason)
                        assert cause is None or cause in begun[session_id], (
                            f"input {input_id} of {session_id} abandoned as {reason}, "
                            f"but no {cause} was issued on it (only {sorted(begun[session_id])})"
                        )
                    outcomes[name] += 1
            await settle(rt)
    after = checks.read_store(db)
    counts = checks.check_store(after, max_attempts=MAX_ATTEMPTS, settled=True)
    return {
        "acked": sum(len(v) for v in acked.values()),
        "outcomes": dict(outcomes),
        "states": dict(states),
        "ops": dict(results),
        "in_flight": in_flight,
        **counts,
    }


def kill_points(kills: int, seed: int) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(rng.randrange(1 << 30), rng.uniform(0.05, 1.0)) for _ in range(kills)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    totals: collections.Counter[str] = collections.Counter()
    in_flight: collections.Counter[str] = collections.Counter()
    ops: collections.Counter[str] = collections.Counter()
    for n, (seed, delay) in enumerate(kill_points(args.kills, args.seed), 1):
        with tempfile.TemporaryDirectory() as tmp:
            db, log = run_until_killed(Path(tmp), seed, delay)
            report = trio.run(recover_and_check, db, log)
        totals.update(report["outcomes"])
        totals.update({k: report[k] for k in ("acked", "messages", "dead_letters")})
        ops.update(report["ops"])
        flying = [x.split()[0] for x in report["in_flight"]]
        in_flight.update(flying or ["none"])
        print(f"kill {n}/{args.kills}: ok, in flight: {report['in_flight'] or 'none'}, "
              f"states {report['states']}", flush=True)
    print(f"control campaign seed {args.seed}: {args.kills} kills, 0 lost, 0 consumed twice "
          f"({dict(totals)}); in flight at the kill: {dict(in_flight)}; "
          f"operations: {dict(sorted(ops.items()))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
