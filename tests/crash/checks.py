"""Invariants of a SQLite store left by a killed process, read with plain sqlite3.

Shared by the SIGKILL campaigns (``startup.py``, ``control.py``).  Every
function reads the file through a read-only connection, so it can run on a
file whose owner was just killed (its ``-wal`` still there) or after a
runtime closed it; nothing here goes through suricate's own code.

:func:`check_store` raises ``AssertionError`` naming the first violation:

- an input's attempt count is never above ``max_attempts`` (staging counts
  an attempt; a ``STAGED`` input at ``max_attempts`` is abandoned by
  recovery, never staged again);
- an input's history ends in its state and holds at most one terminal entry,
  and a terminal input holds exactly one (nothing is completed twice);
- no input is named by two receipts; an input named by a receipt is
  ``APPLIED`` or ``CONSUMED`` by that run (a committed boundary's effects
  are never abandoned or rerun); every ``CONSUMED`` input is named by exactly
  one receipt, of the run it records (consumed once, by a run that
  committed it);
- a ``STOPPED`` or ``DESTROYED`` session holds no active input, and an
  input abandoned as ``DESTROYED`` is in a destroyed session (a destroy
  commits whole);
- every outbox row comes from a turn that committed (a receipt of its run)
  and is delivered at most once: a ``delivered`` row is exactly one input of
  its target (by its ``suricate:outbox:<id>`` key), any other row none; with
  ``settled=True`` no row is still pending.
"""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

TERMINAL = frozenset({"consumed", "superseded", "abandoned"})
ACTIVE = frozenset({"queued", "staged", "applied"})
OUTBOX_KEY = "suricate:outbox:"


class Row(NamedTuple):
    session_id: str
    input_id: str
    seq: int
    kind: str
    key: str | None
    state: str
    attempt: int
    run_id: str | None
    boundary: int | None
    reason: str | None
    history: tuple[str, ...]


class Snapshot(NamedTuple):
    """What the file holds: sessions, inputs, receipts and outbox rows."""

    sessions: dict[str, str]
    inputs: dict[str, Row]
    receipts: dict[tuple[str, str, int], tuple[str, ...]]
    outbox: dict[int, tuple[str, str | None, str, str]]
    """``id -> (sender, run_id, target, state)``."""

    def of(self, session_id: str) -> list[Row]:
        return [r for r in self.inputs.values() if r.session_id == session_id]


def read_store(db: Path) -> Snapshot:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")
        sessions = dict(conn.execute("SELECT session_id, state FROM sessions"))
        inputs = {}
        for row in conn.execute(
            "SELECT session_id, input_id, seq, kind, idempotency_key, state, attempt, run_id, "
            "boundary, reason, history_json FROM inputs"
        ):
            history = tuple(h[0] for h in json.loads(row[10] or "[]"))
            inputs[row[1]] = Row(*row[:10], history)  # type: ignore[call-arg]
        receipts = {
            (sid, run_id, seq): tuple(json.loads(ids))
            for sid, run_id, seq, ids in conn.execute(
                "SELECT session_id, run_id, sequence, input_ids_json FROM receipts"
            )
        }
        outbox = {
            row_id: (sender, run_id, target, state)
            for row_id, sender, run_id, target, state in conn.execute(
                "SELECT id, session_id, run_id, target, state FROM outbox"
            )
        }
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Snapshot(sessions, inputs, receipts, outbox)


def check_store(snap: Snapshot, *, max_attempts: int, settled: bool = False) -> dict[str, int]:
    """Check the invariants of the module docstring; returns a few counts."""
    named: dict[str, list[tuple[str, str, int]]] = collections.defaultdict(list)
    for (sid, run_id, seq), input_ids in snap.receipts.items():
        for input_id in input_ids:
            named[input_id].append((sid, run_id, seq))
    for r in snap.inputs.values():
        where = f"input {r.input_id} of {r.session_id} ({r.state}, history {list(r.history)})"
        assert 0 <= r.attempt <= max_attempts, f"{where}: attempt {r.attempt} > {max_attempts}"
        assert r.history and r.history[-1] == r.state, f"{where}: history does not end in it"
        terminal = sum(1 for h in r.history if h in TERMINAL)
        assert terminal == (r.state in TERMINAL), f"{where}: {terminal} terminal transitions"
        receipts = named.get(r.input_id, [])
        assert len(receipts) <= 1, f"{where}: named by {len(receipts)} receipts {receipts}"
        if receipts:
            ((sid, run_id, _),) = receipts
            assert sid == r.session_id and run_id == r.run_id, (
                f"{where}: named by a receipt of run {run_id}, records run {r.run_id}"
            )
            assert r.state in ("applied", "consumed"), (
                f"{where}: its run committed it at a boundary, yet it is {r.state}"
            )
        if r.state == "consumed":
            assert receipts, f"{where}: consumed without a receipt naming it"
        if r.reason == "destroyed":
            owner = snap.sessions.get(r.session_id)
            assert owner == "destroyed", f"{where}: abandoned as destroyed in a {owner} session"
    for sid, state in snap.sessions.items():
        if state in ("stopped", "destroyed"):
            active = [r.input_id for r in snap.of(sid) if r.state in ACTIVE]
            assert not active, f"session {sid} is {state} with active inputs {active[:5]}"
    copies = collections.Counter(
        int(r.key[len(OUTBOX_KEY) :])
        for r in snap.inputs.values()
        if r.key is not None and r.key.startswith(OUTBOX_KEY)
    )
    committed_runs = {(sid, run_id) for sid, run_id, _ in snap.receipts}
    states: collections.Counter[str] = collections.Counter()
    for row_id, (sender, from_run, target, state) in snap.outbox.items():
        states[state] += 1
        assert (sender, from_run) in committed_runs, (
            f"outbox row {row_id} ({sender} -> {target}) comes from run {from_run}, "
            "which never committed"
        )
        expected = 1 if state == "delivered" else 0
        assert copies[row_id] == expected, (
            f"outbox row {row_id} ({state}) delivered {copies[row_id]} times"
        )
        if settled:
            assert state != "pending", f"outbox row {row_id} ({sender} -> {target}) undelivered"
    return {
        "inputs": len(snap.inputs),
        "consumed": sum(1 for r in snap.inputs.values() if r.state == "consumed"),
        "messages": states["delivered"],
        "dead_letters": states["dead"],
    }


def parse_acks(lines: Iterable[str]) -> dict[str, list[str]]:
    """``session input`` lines (a torn last line is ignored) by session."""
    acked: dict[str, list[str]] = collections.defaultdict(list)
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ack":
            acked[parts[1]].append(parts[2])
    return acked


def missing_acks(snap: Snapshot, acked: dict[str, list[str]]) -> list[str]:
    return [
        i
        for sid, ids in acked.items()
        for i in ids
        if i not in snap.inputs or snap.inputs[i].session_id != sid
    ]


def kill_when_ready(
    argv: list[str], delay: float, *, what: str, timeout: float | None = None,
    must_live: bool = False,
) -> None:
    """Start ``argv`` (a workload that prints ``ready``), SIGKILL it ``delay``
    seconds after that line, and reap it.

    Raises:
        RuntimeError: it did not print ``ready``, or (``must_live``) it
            exited before the kill.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{what} did not start: {line!r}")
        time.sleep(delay)
        if must_live and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before the kill")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()


def reported(report: Any) -> dict[str, int]:
    """A ``RecoveryReport`` as the counts the campaigns compare with the file."""
    return {
        "recovered": report.inputs_recovered,
        "requeued": report.inputs_requeued,
        "abandoned": report.inputs_abandoned,
        "details": len(report.details),
    }


def describe(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
