"""Write ``store-v1.db`` and ``store-v1.expected.json``: a store of schema version 1.

Run it with the release that wrote schema version 1 (commit e12c7e5), from
the repository root::

    PYTHONPATH=src python tests/data/make_store_v1.py

Later releases must open the file, migrate it and keep every record
(tests/test_migration.py).  The sessions cover every input state and every
kind of row a version-1 file holds:

- ``alpha``: consumed inputs with results (one turn with a checkpoint, so
  two receipts of one run), idempotency keys, metadata, a correlation id, a
  snapshot, an input abandoned after three failed runs (``max_attempts`` with
  the error), a superseded input, peer messages (delivered to ``beta``,
  pending for ``inbox``, dead for ``ghost``).
- ``beta``: the delivered peer message, still queued; an input abandoned by
  ``reset``; queued inputs.
- ``gamma``: retired without an executor (``retired``).
- ``stopped`` and ``destroyed``: sessions in those states, their inputs
  abandoned with that reason.
- ``inbox``: known to the store, never opened again: its message is pending.
- ``crashed``: written straight through the store, as a process killed in
  the middle of turns leaves it: staged inputs (a first attempt and a last
  one), an applied input whose boundary committed (a receipt), one whose
  boundary did not, a queued input and a cancelled one.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import trio

import suricate
from suricate import AbandonReason, Durability, Handling, InputRecord, InputState, PeerMessage
from suricate import TurnResult
from suricate._model import StateChange
from suricate.store import Receipt, SessionRecord, SnapshotWrite, SqliteStore, WriteSet

HERE = Path(__file__).parent
DB = HERE / "store-v1.db"
EXPECTED = HERE / "store-v1.expected.json"


def _ids(prefix: str) -> Any:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):04d}"


async def _alpha_executor(turn: suricate.Turn) -> TurnResult:
    payloads = [i.payload for i in turn.inputs]
    if any(isinstance(p, dict) and p.get("fail") for p in payloads):
        raise RuntimeError("the tool call failed")
    count = (turn.snapshot or {}).get("count", 0) + len(turn.inputs)
    first = turn.inputs[0]
    if isinstance(first.payload, dict) and first.payload.get("checkpoint"):
        await turn.checkpoint(
            snapshot={"count": count, "checkpointed": True},
            results={first.input_id: {"partial": True}},
        )
    messages = []
    if isinstance(first.payload, dict) and "send" in first.payload:
        messages = [PeerMessage(first.payload["send"], {"from": "alpha", "n": count})]
    return TurnResult(
        snapshot={"count": count},
        results={i.input_id: {"echo": i.payload} for i in turn.inputs if i.input_id},
        messages=messages,
    )


async def _through_the_runtime() -> None:
    async with suricate.open_runtime(DB, id_factory=_ids("id")) as rt:
        alpha = await rt.open_session("alpha")
        beta = await rt.open_session("beta")
        await rt.open_session("inbox")
        ack = await beta.submit({"b": "reset me"})
        await beta.reset()
        await beta.wait(ack.input_id)
        await alpha.submit({"q": "old"}, kind="note", supersession_key="topic")
        await alpha.submit({"q": "new"}, kind="note", supersession_key="topic")
        await alpha.attach(_alpha_executor, retry=suricate.Backoff(initial=0.0))
        with trio.fail_after(30):
            await alpha.ask({"q": 1}, idempotency_key="k-1", metadata={"user": "ann"})
            await alpha.ask({"checkpoint": True}, correlation_id="corr-7")
            await alpha.ask({"send": "beta"}, handling=Handling.STEER)
            await alpha.ask({"fail": True}, idempotency_key="k-fail")
            await alpha.ask({"send": "ghost"})
        await alpha.detach()

        await beta.submit({"b": 1}, idempotency_key="b-1", metadata={"tags": ["x", "y"]})
        await beta.submit({"b": 2}, handling="steer")

        gamma = await rt.open_session("gamma")
        await gamma.submit({"g": 1})
        await gamma.submit({"g": 2}, idempotency_key="g-2")
        await gamma.retire()

        stopped = await rt.open_session("stopped")
        await stopped.submit({"s": 1})
        await stopped.stop()

        destroyed = await rt.open_session("destroyed")
        await destroyed.submit({"d": 1}, idempotency_key="d-1")
        await destroyed.destroy()

    # A second run in which inbox is not open: alpha's message to it stays pending.
    async with suricate.open_runtime(DB, id_factory=_ids("r2-")) as rt:
        alpha = await rt.open_session("alpha")
        await alpha.attach(_alpha_executor)
        with trio.fail_after(30):
            await alpha.ask({"send": "inbox"})
        await alpha.detach()


def _record(n: int, state: InputState, history: list[tuple[InputState, float, str | None]], **fields: Any) -> InputRecord:
    base = 1_700_000_000.0
    return InputRecord(
        session_id="crashed",
        input_id=f"c{n}",
        seq=n,
        order=fields.pop("order", n),
        kind=fields.pop("kind", "prompt"),
        payload_json=json.dumps({"c": n}),
        durability=Durability.DURABLE,
        handling=fields.pop("handling", Handling.QUEUE),
        state=state,
        submitted_at=base + n,
        history=tuple(StateChange(state=s, at=base + at, run_id=r) for s, at, r in history),
        **fields,
    )


async def _killed_mid_turn() -> None:
    """The rows a process killed inside turns leaves, committed as the runtime would."""
    q, st, ap, ab = InputState.QUEUED, InputState.STAGED, InputState.APPLIED, InputState.ABANDONED
    store = SqliteStore(DB)
    async with trio.open_nursery() as nursery:
        await store.start(nursery)
        session = SessionRecord(
            session_id="crashed", next_seq=7, next_order=7, created_at=1_700_000_000.0,
            updated_at=1_700_000_010.0,
        )
        inputs = (
            # Staged on its first attempt: requeued.
            _record(1, st, [(q, 1, None), (st, 8, "run-b")], attempt=1, run_id="run-b"),
            # Staged on its last attempt: abandoned.
            _record(
                2, st, [(q, 2, None), (st, 3, "run-a"), (q, 4, "run-a"), (st, 5, "run-a2"),
                        (q, 6, "run-a2"), (st, 8, "run-b")],
                attempt=3, run_id="run-b", error="earlier failure", order=8,
            ),
            # Applied at boundary 1 of run-c, whose receipt committed: consumed.
            _record(
                3, ap, [(q, 3, None), (st, 7, "run-c"), (ap, 7.5, "run-c")],
                attempt=1, run_id="run-c", boundary=1, result_json='{"partial":1}',
                idempotency_key="c-3", metadata_json='{"m":3}', handling=Handling.STEER,
            ),
            # Applied at a boundary with no receipt: requeued.
            _record(4, ap, [(q, 4, None), (st, 7, "run-d"), (ap, 7.5, "run-d")],
                    attempt=1, run_id="run-d", boundary=2),
            _record(5, q, [(q, 5, None)], idempotency_key="c-5", supersession_key="sk"),
            _record(
                6, ab, [(q, 6, None), (ab, 6.5, None)],
                reason=AbandonReason.CANCELLED, error="cancelled by the operator",
            ),
        )
        await store.commit(
            WriteSet(
                session_id="crashed",
                session=session,
                inputs=inputs,
                snapshot=SnapshotWrite(value_json='{"crashed":true}', expected_revision=0),
                receipt=Receipt(
                    session_id="crashed", run_id="run-c", sequence=1, input_ids=("c3",),
                    at=1_700_000_007.5,
                ),
            )
        )
        await store.aclose()


def _dump() -> dict[str, Any]:
    """Everything the file holds, as the expectations of the migration test."""
    conn = sqlite3.connect(DB)
    conn.row_factory = sqlite3.Row
    try:
        sessions = {}
        for s in conn.execute("SELECT * FROM sessions ORDER BY rowid"):
            inputs = []
            for r in conn.execute(
                "SELECT * FROM inputs WHERE session_id = ? ORDER BY seq", (s["session_id"],)
            ):
                row = dict(r)
                row["history"] = json.loads(row.pop("history_json"))
                inputs.append(row)
            receipts = [
                dict(r)
                for r in conn.execute(
                    "SELECT run_id, sequence, input_ids_json, at FROM receipts "
                    "WHERE session_id = ? ORDER BY rowid",
                    (s["session_id"],),
                )
            ]
            sessions[s["session_id"]] = {
                "state": s["state"],
                "next_seq": s["next_seq"],
                "next_order": s["next_order"],
                "stop_reason": s["stop_reason"],
                "snapshot_json": s["snapshot_json"],
                "snapshot_revision": s["snapshot_revision"],
                "inputs": inputs,
                "receipts": receipts,
            }
        outbox = [dict(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        conn.close()
    return {
        "schema_version": 1,
        "sessions": sessions,
        "outbox": outbox,
        # What recovery does with the rows of a process killed inside turns.
        "recovery": {
            "crashed": {
                "c1": {"state": "queued", "attempt": 1},
                "c2": {"state": "abandoned", "reason": "max_attempts",
                       "error": "process exited during run"},
                "c3": {"state": "consumed", "result": {"partial": 1}},
                "c4": {"state": "queued", "attempt": 1},
                "c5": {"state": "queued", "attempt": 0},
                "c6": {"state": "abandoned", "reason": "cancelled",
                       "error": "cancelled by the operator"},
            }
        },
    }


def _single_file() -> None:
    conn = sqlite3.connect(DB)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm", ".lock"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)


def main() -> int:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)
    trio.run(_through_the_runtime)
    trio.run(_killed_mid_turn)
    _single_file()
    EXPECTED.write_text(json.dumps(_dump(), indent=1, sort_keys=True) + "\n")
    print(f"{DB.name}: {DB.stat().st_size} bytes; {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
