"""The SQLite schema, its migrations, and the mapping of records to rows.

The schema is created and migrated with sqlite-utils.  ``suricate_schema``
holds the schema version; :data:`MIGRATIONS` are applied in order, each in
its own transaction.  A database whose version is newer than this release
knows is refused, untouched.

Every value read back goes through :func:`decode_row`: a row whose columns
hold the wrong storage class, an unknown enum value, JSON that does not
parse or has the wrong shape, an unknown record version, or a payload that
no longer matches its checksum is :class:`RecoveryCorruption` naming the
session, the input (where there is one) and the column.  A stored record is
never guessed at, dropped or half-read.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import sqlite_utils

from .._errors import RecoveryCorruption, StoreError
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
    StateChange,
)
from .._model._records import PERSISTED_STATES
from .._model._values import RECORD_VERSION

__all__ = [
    "INPUT_COLUMNS",
    "INPUT_ROW_COLUMNS",
    "INPUT_V2_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "corruption",
    "decode_row",
    "input_from_row",
    "input_to_row",
    "migrate",
    "moved_row",
    "payload_crc",
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


def payload_crc(payload_json: str | None) -> int:
    """The checksum stored with an input's payload (CRC-32 of its UTF-8 text)."""
    return zlib.crc32((payload_json or "").encode("utf-8", "surrogatepass"))


def _v3(db: sqlite_utils.Database) -> None:
    """Each input's payload carries a checksum.

    ``inputs.payload_crc`` is computed once, when the row is inserted (a
    payload never changes afterwards), and checked on every read, so that a
    payload changed under the store (a damaged page, a stray write) is
    detected instead of handed to an executor.  Existing rows are back-filled
    from the payload they hold.
    """
    db.table("inputs").add_column("payload_crc", int)
    db.register_function(payload_crc, deterministic=True, name="suricate_payload_crc")
    db.execute("UPDATE inputs SET payload_crc = suricate_payload_crc(payload_json)")


def _v4(db: sqlite_utils.Database) -> None:
    """Receipts are clustered on their key (``WITHOUT ROWID``).

    A receipt row is small and only ever read by its key: stored in the key's
    own b-tree, a turn's receipt writes one page instead of two (the table's
    and its key index's).
    """
    db.execute(
        "CREATE TABLE receipts_v4 ("
        " session_id TEXT NOT NULL, run_id TEXT NOT NULL, sequence INTEGER NOT NULL,"
        " input_ids_json TEXT NOT NULL, at REAL, version INTEGER NOT NULL,"
        " PRIMARY KEY (session_id, run_id, sequence)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO receipts_v4 (session_id, run_id, sequence, input_ids_json, at, version)"
        " SELECT session_id, run_id, sequence, input_ids_json, at, version FROM receipts"
    )
    db.execute("DROP TABLE receipts")
    db.execute("ALTER TABLE receipts_v4 RENAME TO receipts")


MIGRATIONS: Final[Sequence[Callable[[sqlite_utils.Database], None]]] = (_v1, _v2, _v3, _v4)
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


# -- decoding ------------------------------------------------------------------------

_NULL: Final = type(None)
_TEXT_T: Final = (str,)
_OPT_TEXT: Final = (str, _NULL)
_INT: Final = (int,)
_OPT_INT: Final = (int, _NULL)
_OPT_TIME: Final = (float, int, _NULL)

#: Storage classes as SQLite hands them to Python, for messages.
_CLASS: Final[Mapping[type, str]] = {
    str: "text",
    int: "an integer",
    float: "a real",
    bytes: "a blob",
    _NULL: "NULL",
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def corruption(where: str, column: str, detail: str) -> RecoveryCorruption:
    """The error for a stored value that cannot be read back."""
    return RecoveryCorruption(f"corrupt record: {where}, column {column}: {detail}")


@attrs.frozen
class Column:
    """One stored column: the storage classes it may hold and, if the value
    needs more than a type check, its decoder (which raises on a bad value)."""

    name: str
    types: tuple[type, ...]
    decode: Callable[[Any], Any] | None = None


class Table:
    """The columns one ``*_from_row`` reads, in order, and how a row of them
    names itself in an error (``where``)."""

    def __init__(self, columns: Sequence[Column], where: Callable[[Sequence[Any]], str]) -> None:
        self.columns = tuple(columns)
        self.types = tuple(c.types for c in self.columns)
        self.decoders = tuple((i, c.decode) for i, c in enumerate(self.columns) if c.decode)
        self.where = where

    def mistyped(self, row: Sequence[Any]) -> RecoveryCorruption:
        if len(row) != len(self.columns):
            return RecoveryCorruption(
                f"corrupt record: a row of {len(row)} columns where {len(self.columns)} belong"
            )
        for column, value in zip(self.columns, row):
            if not isinstance(value, column.types):
                expected = " or ".join(_CLASS.get(t, t.__name__) for t in column.types)
                found = (
                    "NULL"
                    if value is None
                    else f"{_CLASS.get(type(value), type(value).__name__)} {_show(value)}"
                )
                return corruption(
                    self.where(row), column.name, f"holds {found} where {expected} belongs"
                )
        raise AssertionError("the row is well typed")  # pragma: no cover


def decode_row(table: Table, row: Sequence[Any]) -> list[Any]:
    """The decoded values of ``row``, one per column of ``table``.

    The one guard of every read: each column's storage class is checked (in
    one pass, in C), then each decoder runs; whatever fails is re-raised as
    :class:`RecoveryCorruption` naming the row and the column.
    """
    if len(row) != len(table.types) or not all(map(isinstance, row, table.types)):
        raise table.mistyped(row)
    values = list(row)
    for i, decode in table.decoders:
        try:
            values[i] = decode(values[i])
        except Exception as exc:
            detail = f"unknown value {_show(values[i])}" if isinstance(exc, KeyError) else str(exc)
            raise corruption(table.where(row), table.columns[i].name, detail) from None
    return values


class _Members(dict[Any, Any]):
    """Stored enum text to its member; an unknown text raises ``ValueError``."""

    def __missing__(self, value: Any) -> Any:
        known = ", ".join(k for k in self if k is not None)
        raise ValueError(f"unknown value {_show(value)} (known: {known})")


def _enum(members: Mapping[str, Any], *, optional: bool = False) -> Callable[[Any], Any]:
    """The decoder of an enum column (``optional``: NULL is ``None``): a dict
    lookup, the cheapest call there is."""
    table = _Members(members)
    if optional:
        table[None] = None
    return table.__getitem__


def _json(value: str | None) -> str | None:
    """Check JSON text (kept as text: it is decoded where it is used)."""
    if value is not None:
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc}): {_show(value)}") from None
    return value


def _json_object(value: str | None) -> str | None:
    if value is not None:
        try:
            decoded = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc}): {_show(value)}") from None
        if type(decoded) is not dict:
            raise ValueError(f"not a JSON object: {_show(value)}")
    return value


def _version(kind: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value != RECORD_VERSION:
            raise ValueError(
                f"{kind} record has version {value}; this release reads version {RECORD_VERSION}"
            )
        return value

    return check


def _number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and value == value


def _history(value: str) -> tuple[StateChange, ...]:
    """``history_json``: a JSON array of ``[state, at, run_id]`` entries, or
    ``[state, at, run_id, error]`` for an entry with an error (files written
    before errors were recorded hold only the first form: their errors are
    ``None``)."""
    try:
        entries = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc}): {_show(value)}") from None
    if type(entries) is not list:
        raise ValueError(f"not a JSON array: {_show(value)}")
    state = _STATE
    history = []
    for n, entry in enumerate(entries):
        if type(entry) is not list or len(entry) not in (3, 4):
            raise ValueError(f"entry {n} is not [state, at, run_id]: {_show(entry)}")
        s, at, run_id = entry[:3]
        error = entry[3] if len(entry) == 4 else None
        if type(s) is not str or s not in state:
            raise ValueError(f"entry {n} has an unknown state {_show(s)}")
        if (
            not _number(at)
            or not (run_id is None or type(run_id) is str)
            or not (error is None or type(error) is str)
        ):
            raise ValueError(f"entry {n} is not [state, at, run_id]: {_show(entry)}")
        history.append(StateChange(state[s], at, run_id, error))
    return tuple(history)


def _input_ids(value: str) -> tuple[str, ...]:
    try:
        ids = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc}): {_show(value)}") from None
    if type(ids) is not list or not all(type(i) is str for i in ids):
        raise ValueError(f"not a JSON array of input ids: {_show(value)}")
    return tuple(ids)


# -- rows ------------------------------------------------------------------------------

SESSION_COLUMNS: Final = (
    "session_id, state, next_seq, next_order, stop_reason, created_at, updated_at, "
    "snapshot_json, snapshot_revision, version"
)

#: The columns :func:`input_from_row` reads, but the checksum (files before
#: schema version 3 have none).
INPUT_V2_COLUMNS: Final = (
    "session_id, input_id, seq, lane_order, kind, payload_json, durability, handling, "
    "idempotency_key, supersession_key, correlation_id, metadata_json, state, attempt, "
    "run_id, boundary, reason, error, result_json, superseded_by, submitted_at, "
    "history_json, version"
)
#: What :func:`input_from_row` reads.
INPUT_COLUMNS: Final = f"{INPUT_V2_COLUMNS}, payload_crc"
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


_SESSIONS: Final = Table(
    (
        Column("session_id", _TEXT_T),
        Column("state", _TEXT_T, _enum({m.value: m for m in PERSISTED_STATES})),
        Column("next_seq", _INT),
        Column("next_order", _INT),
        Column("stop_reason", _OPT_TEXT),
        Column("created_at", _OPT_TIME),
        Column("updated_at", _OPT_TIME),
        Column("snapshot_json", _OPT_TEXT, _json),
        Column("snapshot_revision", _INT),
        Column("version", _INT, _version("session")),
    ),
    lambda row: f"session {row[0]!r}",
)


def session_from_row(row: Sequence[Any]) -> tuple[SessionRecord, str | None, int]:
    """A ``sessions`` row as (record, snapshot JSON, snapshot revision).

    Raises:
        RecoveryCorruption: a column does not hold what suricate wrote.
    """
    v = decode_row(_SESSIONS, row)
    record = SessionRecord(
        session_id=v[0],
        state=v[1],
        next_seq=v[2],
        next_order=v[3],
        stop_reason=v[4],
        created_at=v[5] or 0.0,
        updated_at=v[6] or 0.0,
        version=v[9],
    )
    return record, v[7], v[8]


#: Enum members to their stored text: a dict lookup is cheaper than ``.value``
#: (an enum property), and a row takes five or more of them.
_TEXT: Final[dict[Any, str]] = {
    m: m.value for e in (InputState, Durability, Handling, AbandonReason) for m in e
}
_STATE: Final = {m.value: m for m in InputState}


_entries: Final = json.JSONEncoder(separators=(",", ":")).encode


def _entry(h: StateChange) -> list[Any]:
    """One history entry as JSON: the error only when there is one."""
    if h.error is None:
        return [_TEXT[h.state], h.at, h.run_id]
    return [_TEXT[h.state], h.at, h.run_id, h.error]


def _history_json(history: Sequence[StateChange]) -> str:
    return json.dumps([_entry(h) for h in history])


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
        payload_crc(r.payload_json),
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
        _entries([_entry(h) for h in r.history[stored:]])[1:-1],
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


_INPUT_V2: Final = (
    Column("session_id", _TEXT_T),
    Column("input_id", _TEXT_T),
    Column("seq", _INT),
    Column("lane_order", _INT),
    Column("kind", _TEXT_T),
    Column("payload_json", _OPT_TEXT),
    Column("durability", _TEXT_T, _enum({m.value: m for m in Durability})),
    Column("handling", _TEXT_T, _enum({m.value: m for m in Handling})),
    Column("idempotency_key", _OPT_TEXT),
    Column("supersession_key", _OPT_TEXT),
    Column("correlation_id", _OPT_TEXT),
    Column("metadata_json", _OPT_TEXT, _json_object),
    Column("state", _TEXT_T, _enum(_STATE)),
    Column("attempt", _INT),
    Column("run_id", _OPT_TEXT),
    Column("boundary", _OPT_INT),
    Column("reason", _OPT_TEXT, _enum({m.value: m for m in AbandonReason}, optional=True)),
    Column("error", _OPT_TEXT),
    Column("result_json", _OPT_TEXT, _json),
    Column("superseded_by", _OPT_TEXT),
    Column("submitted_at", _OPT_TIME),
    Column("history_json", _TEXT_T, _history),
    Column("version", _INT, _version("input")),
)


def _input_where(row: Sequence[Any]) -> str:
    return f"session {row[0]!r}, input {row[1]!r}"


_INPUTS: Final = Table((*_INPUT_V2, Column("payload_crc", _INT)), _input_where)
_INPUTS_V2: Final = Table(_INPUT_V2, _input_where)


def input_from_row(row: Sequence[Any]) -> InputRecord:
    """An ``inputs`` row (``INPUT_COLUMNS``, or ``INPUT_V2_COLUMNS`` of a file
    of an older schema, read without the checksum) as a record.

    Raises:
        RecoveryCorruption: a column does not hold what suricate wrote
            (including a payload that does not match its checksum).
    """
    checked = len(row) == len(_INPUTS.columns)
    v = decode_row(_INPUTS if checked else _INPUTS_V2, row)
    payload = v[5]
    if checked and payload_crc(payload) != v[23]:
        raise corruption(
            _input_where(row),
            "payload_json",
            f"the payload does not match its checksum (payload_crc {v[23]}): "
            "it changed after it was written",
        )
    history = v[21]
    return InputRecord(
        session_id=v[0],
        input_id=v[1],
        seq=v[2],
        order=v[3],
        kind=v[4],
        payload_json=payload or "",
        durability=v[6],
        handling=v[7],
        idempotency_key=v[8],
        supersession_key=v[9],
        correlation_id=v[10],
        metadata_json=v[11],
        state=v[12],
        attempt=v[13],
        run_id=v[14],
        boundary=v[15],
        reason=v[16],
        error=v[17],
        result_json=v[18],
        superseded_by=v[19],
        submitted_at=v[20] or 0.0,
        history=history,
        version=v[22],
        stored_history=len(history),
    )


RECEIPT_COLUMNS: Final = "session_id, run_id, sequence, input_ids_json, at, version"

_RECEIPTS: Final = Table(
    (
        Column("session_id", _TEXT_T),
        Column("run_id", _TEXT_T),
        Column("sequence", _INT),
        Column("input_ids_json", _TEXT_T, _input_ids),
        Column("at", _OPT_TIME),
        Column("version", _INT, _version("receipt")),
    ),
    lambda row: f"session {row[0]!r}, receipt {row[1]!r}/{row[2]!r}",
)


def receipt_from_row(row: Sequence[Any]) -> Receipt:
    """A ``receipts`` row (``RECEIPT_COLUMNS``) as a receipt.

    Raises:
        RecoveryCorruption: a column does not hold what suricate wrote.
    """
    v = decode_row(_RECEIPTS, row)
    return Receipt(
        session_id=v[0],
        run_id=v[1],
        sequence=v[2],
        input_ids=v[3],
        at=v[4] or 0.0,
        version=v[5],
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


def _outbox(where: Callable[[Sequence[Any]], str], payload: Column) -> Table:
    return Table(
        (
            Column("id", _INT),
            Column("session_id", _OPT_TEXT),
            Column("run_id", _OPT_TEXT),
            Column("target", _TEXT_T),
            payload,
            Column("kind", _TEXT_T),
            Column("reply", _OPT_INT),
            Column("correlation_id", _OPT_TEXT),
            Column("state", _TEXT_T),
            Column("reason", _OPT_TEXT),
            Column("at", _OPT_TIME),
            Column("version", _INT, _version("outbox")),
        ),
        where,
    )


#: A pending row is delivered as an input: its payload must be JSON.
_OUTBOX: Final = _outbox(
    lambda row: f"session {row[3]!r}, outbox row {row[0]!r} (from {row[1]!r})",
    Column("payload_json", _TEXT_T, _json),
)
#: A dead letter is shown as it was refused: its payload may be anything.
_DEAD: Final = _outbox(
    lambda row: f"session {row[1]!r}, dead letter {row[0]!r} (to {row[3]!r})",
    Column("payload_json", _OPT_TEXT),
)


def outbox_from_row(row: Sequence[Any]) -> OutboxRow:
    """A pending ``outbox`` row (``OUTBOX_COLUMNS``).

    Raises:
        RecoveryCorruption: a column does not hold what suricate wrote.
    """
    v = decode_row(_OUTBOX, row)
    return OutboxRow(
        id=v[0],
        message=OutboxMessage(
            session_id=v[1],
            run_id=v[2],
            target=v[3],
            payload_json=v[4],
            kind=v[5],
            reply=bool(v[6]),
            correlation_id=v[7],
            version=v[11],
        ),
    )


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """A dead ``outbox`` row (``OUTBOX_COLUMNS``).

    Raises:
        RecoveryCorruption: a column does not hold what suricate wrote.
    """
    v = decode_row(_DEAD, row)
    return DeadLetter(
        id=v[0],
        session_id=v[1],
        target=v[3],
        payload_json=v[4],
        kind=v[5],
        reason=v[9] or "",
        at=v[10] or 0.0,
    )
