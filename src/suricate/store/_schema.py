"""The SQLite schema, its migrations, and the mapping of records to rows.

The schema is created and migrated with sqlite-utils.  ``suricate_schema``
holds the schema version; :data:`MIGRATIONS` are applied in order, each in
its own transaction.  A database whose version is newer than this release
knows is refused, untouched.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

import sqlite_utils

from .._errors import StoreError
from .._model import (
    AbandonReason,
    DeadLetter,
    Durability,
    Handling,
    InputRecord,
    InputState,
    OutboxMessage,
    OutboxRow,
    Receipt,
    SessionRecord,
    SessionState,
    StateChange,
    check_version,
)

__all__ = [
    "INPUT_COLUMNS",
    "INPUT_ROW_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "input_from_row",
    "input_to_row",
    "migrate",
    "moved_row",
    "receipt_from_row",
    "rewritten_row",
    "session_from_row",
]

NON_TERMINAL: Final = ("queued", "staged", "applied")


def _v1(db: sqlite_utils.Database) -> None:
    db.table("sessions").create(
        {
            "session_id": str,
            "state": str,
            "next_seq": int,
            "next_order": int,
            "stop_reason": str,
            "created_at": float,
            "updated_at": float,
            "snapshot_json": str,
            "snapshot_revision": int,
            "version": int,
        },
        pk="session_id",
        not_null={"state", "next_seq", "next_order", "snapshot_revision", "version"},
        defaults={"snapshot_revision": 0},
    )
    db.table("inputs").create(
        {
            "session_id": str,
            "input_id": str,
            "seq": int,
            "lane_order": int,
            "kind": str,
            "payload_json": str,
            "durability": str,
            "handling": str,
            "idempotency_key": str,
            "supersession_key": str,
            "correlation_id": str,
            "metadata_json": str,
            "state": str,
            "attempt": int,
            "run_id": str,
            "boundary": int,
            "reason": str,
            "error": str,
            "result_json": str,
            "superseded_by": str,
            "submitted_at": float,
            "history_json": str,
            "version": int,
        },
        pk=("session_id", "input_id"),
        not_null={"seq", "lane_order", "kind", "state", "attempt", "version"},
        foreign_keys=[("session_id", "sessions", "session_id")],
    )
    db.table("inputs").create_index(["session_id", "seq"], unique=True)
    db.execute(
        "CREATE UNIQUE INDEX idx_inputs_idempotency ON inputs(session_id, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL"
    )
    db.table("receipts").create(
        {
            "session_id": str,
            "run_id": str,
            "sequence": int,
            "input_ids_json": str,
            "at": float,
            "version": int,
        },
        pk=("session_id", "run_id", "sequence"),
        not_null={"input_ids_json", "version"},
    )
    db.table("outbox").create(
        {
            "id": int,
            "session_id": str,
            "run_id": str,
            "target": str,
            "payload_json": str,
            "kind": str,
            "reply": int,
            "correlation_id": str,
            "state": str,
            "reason": str,
            "at": float,
            "version": int,
        },
        pk="id",
        not_null={"target", "kind", "state", "version"},
    )
    db.table("outbox").create_index(["target", "state", "id"])
    db.table("outbox").create_index(["state", "id"])


def _v2(db: sqlite_utils.Database) -> None:
    """History becomes append-only; the outbox indexes only what is read.

    ``inputs.history_len`` counts the entries of ``history_json``: a write of
    a stored input appends its new entries to the stored text (when the
    stored count is the one the record expects) instead of re-encoding them
    all.  The outbox indexes shrink to the rows their queries read: pending
    rows by target, dead rows by id.
    """
    db.table("inputs").add_column("history_len", int, not_null_default=0)
    db.execute(
        "UPDATE inputs SET history_len = json_array_length(history_json) "
        "WHERE history_json IS NOT NULL"
    )
    for index in db.table("outbox").indexes:
        db.execute(f"DROP INDEX [{index.name}]")
    # Partial indexes: a row leaves them once delivered (sqlite-utils makes
    # only full ones).
    db.execute("CREATE INDEX idx_outbox_pending ON outbox(target, id) WHERE state = 'pending'")
    db.execute("CREATE INDEX idx_outbox_dead ON outbox(id) WHERE state = 'dead'")


MIGRATIONS: Final[Sequence[Callable[[sqlite_utils.Database], None]]] = (_v1, _v2)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _stored_version(db: sqlite_utils.Database) -> int:
    if "suricate_schema" not in db.table_names():
        if db.table_names():
            raise StoreError(
                "the database holds tables but no suricate schema: not a suricate store"
            )
        return 0
    row = db.execute("SELECT version FROM suricate_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema on ``conn`` (in autocommit mode).

    Raises:
        StoreError: the database was written by a newer schema version, or is
            not a suricate store.
    """
    db = sqlite_utils.Database(conn)
    version = _stored_version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}; this release knows up to "
            f"{SCHEMA_VERSION}: upgrade suricate to open it"
        )
    for number in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number](db)
            if number == 0:
                db.table("suricate_schema").create({"version": int}, not_null={"version"})
                conn.execute("INSERT INTO suricate_schema(version) VALUES (?)", (number + 1,))
            else:
                conn.execute("UPDATE suricate_schema SET version = ?", (number + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def check_schema(conn: sqlite3.Connection) -> None:
    """Check a (read-only) connection sees a schema this release can read."""
    version = _stored_version(sqlite_utils.Database(conn))
    if version != SCHEMA_VERSION:
        raise StoreError(f"the database has schema version {version}, expected {SCHEMA_VERSION}")


# -- rows ----------------------------------------------------------------------------

SESSION_COLUMNS: Final = (
    "session_id, state, next_seq, next_order, stop_reason, created_at, updated_at, "
    "snapshot_json, snapshot_revision, version"
)

#: What :func:`input_from_row` reads.
INPUT_COLUMNS: Final = (
    "session_id, input_id, seq, lane_order, kind, payload_json, durability, handling, "
    "idempotency_key, supersession_key, correlation_id, metadata_json, state, attempt, "
    "run_id, boundary, reason, error, result_json, superseded_by, submitted_at, "
    "history_json, version"
)
#: What :func:`input_to_row` writes.
INPUT_ROW_COLUMNS: Final = f"{INPUT_COLUMNS}, history_len"

#: What a write of a stored input sets: the fields a move can change (the
#: rest of a record is fixed at admission), then its history.
MOVED_COLUMNS: Final = (
    "lane_order",
    "state",
    "attempt",
    "run_id",
    "boundary",
    "reason",
    "error",
    "result_json",
    "superseded_by",
)


def session_to_row(r: SessionRecord) -> tuple[Any, ...]:
    return (
        r.session_id,
        r.state.value,
        r.next_seq,
        r.next_order,
        r.stop_reason,
        r.created_at,
        r.updated_at,
        r.version,
    )


def session_from_row(row: Sequence[Any]) -> tuple[SessionRecord, str | None, int]:
    """A ``sessions`` row as (record, snapshot JSON, snapshot revision)."""
    check_version("session", row[9])
    record = SessionRecord(
        session_id=row[0],
        state=SessionState(row[1]),
        next_seq=row[2],
        next_order=row[3],
        stop_reason=row[4],
        created_at=row[5] or 0.0,
        updated_at=row[6] or 0.0,
        version=row[9],
    )
    return record, row[7], row[8]


#: Enum members to their stored text: a dict lookup is cheaper than ``.value``
#: (an enum property), and a row takes five or more of them.
_TEXT: Final[dict[Any, str]] = {
    m: m.value for e in (InputState, Durability, Handling, AbandonReason) for m in e
}
_STATE: Final = {m.value: m for m in InputState}


_entries: Final = json.JSONEncoder(separators=(",", ":")).encode


def _history_json(history: Sequence[StateChange]) -> str:
    text = _TEXT
    return json.dumps([[text[h.state], h.at, h.run_id] for h in history])


def input_to_row(r: InputRecord) -> tuple[Any, ...]:
    """The whole ``inputs`` row of a record (``INPUT_ROW_COLUMNS``)."""
    text = _TEXT
    return (
        r.session_id,
        r.input_id,
        r.seq,
        r.order,
        r.kind,
        r.payload_json,
        text[r.durability],
        text[r.handling],
        r.idempotency_key,
        r.supersession_key,
        r.correlation_id,
        r.metadata_json,
        text[r.state],
        r.attempt,
        r.run_id,
        r.boundary,
        text[r.reason] if r.reason is not None else None,
        r.error,
        r.result_json,
        r.superseded_by,
        r.submitted_at,
        _history_json(r.history),
        r.version,
        len(r.history),
    )


def moved_row(r: InputRecord) -> tuple[Any, ...]:
    """A write of a stored record: ``MOVED_COLUMNS``, the history entries the
    store does not hold yet (JSON array items, no brackets), the new
    ``history_len``, the key, and the ``history_len`` the record expects."""
    text = _TEXT
    reason = r.reason
    stored = r.stored_history
    return (
        r.order,
        text[r.state],
        r.attempt,
        r.run_id,
        r.boundary,
        text[reason] if reason is not None else None,
        r.error,
        r.result_json,
        r.superseded_by,
        _entries([[text[h.state], h.at, h.run_id] for h in r.history[stored:]])[1:-1],
        len(r.history),
        r.session_id,
        r.input_id,
        stored,
    )


def rewritten_row(r: InputRecord) -> tuple[Any, ...]:
    """A write of a stored record whose stored history is not the one it
    expects: ``MOVED_COLUMNS``, the whole history, its length, the key."""
    row = moved_row(r)
    return (*row[:9], _history_json(r.history), *row[10:13])


def input_from_row(row: Sequence[Any]) -> InputRecord:
    """An ``inputs`` row (``INPUT_COLUMNS``) as a record.

    Raises:
        RecoveryCorruption: the record version is unknown.
    """
    check_version("input", row[22])
    state = _STATE
    history = tuple(
        StateChange(state[s], at, run_id) for s, at, run_id in json.loads(row[21] or "[]")
    )
    return InputRecord(
        session_id=row[0],
        input_id=row[1],
        seq=row[2],
        order=row[3],
        kind=row[4],
        payload_json=row[5] or "",
        durability=Durability(row[6]),
        handling=Handling(row[7]),
        idempotency_key=row[8],
        supersession_key=row[9],
        correlation_id=row[10],
        metadata_json=row[11],
        state=state[row[12]],
        attempt=row[13],
        run_id=row[14],
        boundary=row[15],
        reason=AbandonReason(row[16]) if row[16] is not None else None,
        error=row[17],
        result_json=row[18],
        superseded_by=row[19],
        submitted_at=row[20] or 0.0,
        history=history,
        version=row[22],
        stored_history=len(history),
    )


def receipt_from_row(row: Sequence[Any]) -> Receipt:
    check_version("receipt", row[5])
    return Receipt(
        session_id=row[0],
        run_id=row[1],
        sequence=row[2],
        input_ids=tuple(json.loads(row[3])),
        at=row[4] or 0.0,
        version=row[5],
    )


OUTBOX_COLUMNS: Final = (
    "id, session_id, run_id, target, payload_json, kind, reply, correlation_id, state, "
    "reason, at, version"
)


def outbox_to_row(m: OutboxMessage, state: str, reason: str | None, at: float) -> tuple[Any, ...]:
    return (
        m.session_id,
        m.run_id,
        m.target,
        m.payload_json,
        m.kind,
        int(m.reply),
        m.correlation_id,
        state,
        reason,
        at,
        m.version,
    )


def outbox_from_row(row: Sequence[Any]) -> OutboxRow:
    check_version("outbox", row[11])
    return OutboxRow(
        id=row[0],
        message=OutboxMessage(
            session_id=row[1],
            run_id=row[2],
            target=row[3],
            payload_json=row[4],
            kind=row[5],
            reply=bool(row[6]),
            correlation_id=row[7],
            version=row[11],
        ),
    )


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    check_version("outbox", row[11])
    return DeadLetter(
        id=row[0],
        session_id=row[1],
        target=row[3],
        payload_json=row[4],
        kind=row[5],
        reason=row[9] or "",
        at=row[10] or 0.0,
    )
