"""The SQLite store: one writer thread, group commit, durable before ack.

Theory of operation
-------------------
Two pykka ``ThreadingActor`` hosts own the two connections to the file: the
writer (opened in ``on_start``, migrations applied there) and a reader (a
read-only connection; WAL lets it read while the writer writes).  Nothing in
trio blocks on SQLite: every call goes through :mod:`suricate._kernel._bridge`.

The trio-side :class:`StoreActor` takes every write-set waiting in its
mailbox as one batch (group commit): one ``BEGIN IMMEDIATE ... COMMIT``.  If
any write-set fails (a snapshot revision mismatch, a duplicate receipt, a
colliding key) or the ``COMMIT`` itself does, the whole transaction is rolled
back and the batch is committed write-set by write-set, so that only the bad
one fails and nothing of it is kept.  That retry costs one transaction per
write-set; failures are rare, so the common path pays no savepoints.  Each
caller is answered only after the transaction holding its write-set
committed; with ``synchronous=FULL`` (the default) that means it is on disk.

Before any connection opens, :func:`~suricate.store._files.open_files`
resolves the real path, checks (reading only) that the file is suricate's,
creates a missing one with the store's mode, and takes the owner's lock,
keyed on the file's identity: a second runtime on the same file, in this
process or another, through any symlink or a hard link beside it, gets
:class:`StoreLocked`.  The kernel releases the lock when its process dies,
so a stale claim is taken over.  ``close`` (and ``aclose``, whatever
interrupts it) always stops both threads and releases the lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import outcome
import pykka
import trio

from .._errors import StoreError
from .._model import (
    DeadLetter,
    InputRecord,
    InputState,
    OutboxRow,
    Receipt,
    StoredSession,
    WriteSet,
)
from .._kernel import Actor, ActorRef, ThreadHost, call_on_host, spawn
from .._model._values import mark_stored
from ._files import DEFAULT_MODE, StoreFiles, check_connection, check_mode, claim, open_files
from ._schema import (
    INPUT_COLUMNS,
    INPUT_ROW_COLUMNS,
    MOVED_COLUMNS,
    OUTBOX_COLUMNS,
    RECEIPT_COLUMNS,
    SESSION_COLUMNS,
    check_schema,
    corruption,
    dead_letter_from_row,
    input_from_row,
    input_to_row,
    migrate,
    moved_row,
    outbox_from_row,
    outbox_to_row,
    receipt_from_row,
    rewritten_row,
    session_from_row,
    session_to_row,
)

__all__ = ["SqliteStore", "StoreStatistics"]

SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL", "EXTRA")
MAX_BATCH: Final = 1024


def _store_error(exc: BaseException, doing: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"{doing}: {type(exc).__name__}: {exc}")


def _connect(target: str, *, uri: bool, timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(
        target, uri=uri, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        # Fails with "file is not a database" on anything but SQLite.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


class _Connection(ThreadHost):
    """A pykka thread owning one SQLite connection, opened in ``on_start``."""

    def __init__(self, name: str, target: str, *, uri: bool, pragmas: Sequence[str], writer: bool) -> None:
        super().__init__(name)
        self.target = target
        self.uri = uri
        self.pragmas = pragmas
        self.writer = writer
        self.conn: sqlite3.Connection | None = None
        self.open_error: BaseException | None = None

    def on_start(self) -> None:
        super().on_start()
        try:
            conn = _connect(self.target, uri=self.uri)
            try:
                if self.writer:
                    # Read before anything writes: a refused file stays untouched.
                    check_connection(conn, Path(self.target))
                for pragma in self.pragmas:
                    conn.execute(pragma)
                if self.writer:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"could not switch the database to WAL (got {mode})")
                    migrate(conn)
                    claim(conn)
                else:
                    check_schema(conn)
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        except Exception as exc:  # handed to trio by the first call
            self.open_error = exc

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def connection(self) -> sqlite3.Connection:
        if self.open_error is not None:
            raise self.open_error
        if self.conn is None:
            raise StoreError("the store is closed")
        return self.conn


# -- the writer's side (runs on the writer thread) --------------------------------------


# An upsert on the primary key only: a row that collides with another input's
# unique seq or idempotency key fails the write-set instead of replacing it.
_UPSERT_INPUT: Final = (
    f"INSERT INTO inputs ({INPUT_ROW_COLUMNS}) "
    f"VALUES ({', '.join('?' * len(INPUT_ROW_COLUMNS.split(',')))}) "
    "ON CONFLICT(session_id, input_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in (c.strip() for c in INPUT_ROW_COLUMNS.split(","))
        if c not in ("session_id", "input_id")
    )
)
_SET_MOVED: Final = ", ".join(f"{c} = ?" for c in MOVED_COLUMNS)
# A stored input: only what a move changes (no indexed column, so no index
# page is written), its new history entries appended to the stored text.  The
# last parameter is the history_len the record expects: if the stored history
# is another (a commit whose record memory never adopted), nothing matches
# and the whole history is rewritten instead (_REWRITE_INPUT).
_APPEND_INPUT: Final = (
    f"UPDATE inputs SET {_SET_MOVED}, history_json = CASE WHEN ?10 = '' THEN history_json "
    "WHEN history_len = 0 THEN '[' || ?10 || ']' "
    "ELSE substr(history_json, 1, length(history_json) - 1) || ',' || ?10 || ']' END, "
    "history_len = ?11 WHERE session_id = ?12 AND input_id = ?13 AND history_len = ?14"
)
_REWRITE_INPUT: Final = (
    f"UPDATE inputs SET {_SET_MOVED}, history_json = ?, history_len = ? "
    "WHERE session_id = ? AND input_id = ?"
)


def _write_inputs(conn: sqlite3.Connection, inputs: Sequence[InputRecord]) -> None:
    fresh = []
    moved = []
    for r in inputs:
        if r.stored_history:
            moved.append(r)
        else:
            fresh.append(input_to_row(r))
    if len(fresh) == 1:
        conn.execute(_UPSERT_INPUT, fresh[0])
    elif fresh:
        conn.executemany(_UPSERT_INPUT, fresh)
    if len(moved) == 1:
        if conn.execute(_APPEND_INPUT, moved_row(moved[0])).rowcount != 1:
            _rewrite(conn, moved)
    elif moved:
        if conn.executemany(_APPEND_INPUT, [moved_row(r) for r in moved]).rowcount != len(moved):
            _rewrite(conn, moved)


def _rewrite(conn: sqlite3.Connection, moved: Sequence[InputRecord]) -> None:
    """Rewrite the inputs whose stored history is not the one their record
    expects (rare: all of them, which is idempotent for those appended)."""
    for r in moved:
        if conn.execute(_REWRITE_INPUT, rewritten_row(r)).rowcount != 1:
            raise StoreError(f"input {r.input_id} of {r.session_id!r} has no row")


def _apply(conn: sqlite3.Connection, ws: WriteSet) -> None:
    sid = ws.session_id
    if ws.session is not None:
        conn.execute(
            "INSERT INTO sessions (session_id, state, next_seq, next_order, stop_reason, "
            "created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET state = excluded.state, "
            "next_seq = excluded.next_seq, next_order = excluded.next_order, "
            "stop_reason = excluded.stop_reason, updated_at = excluded.updated_at, "
            "version = excluded.version",
            session_to_row(ws.session),
        )
    if ws.inputs:
        _write_inputs(conn, ws.inputs)
    snapshot = ws.snapshot
    if snapshot is not None:
        cursor = conn.execute(
            "UPDATE sessions SET snapshot_json = ?, snapshot_revision = ? "
            "WHERE session_id = ? AND snapshot_revision = ?",
            (snapshot.value_json, snapshot.revision, sid, snapshot.expected_revision),
        )
        if cursor.rowcount != 1:
            raise StoreError(
                f"snapshot of {sid!r} is not at revision {snapshot.expected_revision}"
            )
    receipt = ws.receipt
    if receipt is not None:
        try:
            conn.execute(
                "INSERT INTO receipts (session_id, run_id, sequence, input_ids_json, at, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    receipt.run_id,
                    receipt.sequence,
                    json.dumps(list(receipt.input_ids)),
                    receipt.at,
                    receipt.version,
                ),
            )
        except sqlite3.IntegrityError:
            raise StoreError(
                f"receipt {receipt.run_id}/{receipt.sequence} of {sid!r} exists"
            ) from None
    now = time.time()
    for m in ws.messages:
        known = conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (m.target,)).fetchone()
        state, reason = ("pending", None) if known else ("dead", "unknown target")
        conn.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES (NULL, {', '.join('?' * 11)})",
            outbox_to_row(m, state, reason, now),
        )
    for row in ws.delivered:
        if conn.execute("UPDATE outbox SET state = 'delivered' WHERE id = ?", (row,)).rowcount != 1:
            raise StoreError(f"no outbox row {row}")
    for row, reason in ws.dead:
        cursor = conn.execute(
            "UPDATE outbox SET state = 'dead', reason = ?, at = ? WHERE id = ?", (reason, now, row)
        )
        if cursor.rowcount != 1:
            raise StoreError(f"no outbox row {row}")
    for letter in ws.dead_letters:
        conn.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES (NULL, {', '.join('?' * 11)})",
            (
                letter.session_id, None, letter.target, letter.payload_json, letter.kind, 0,
                None, "dead", letter.reason, now, 1,
            ),
        )


def _transaction(conn: sqlite3.Connection, write_sets: Sequence[WriteSet]) -> None:
    """Apply ``write_sets`` in one transaction: all of them, or (raising) none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for ws in write_sets:
            _apply(conn, ws)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _commit_one(conn: sqlite3.Connection, ws: WriteSet) -> outcome.Outcome[None]:
    try:
        _transaction(conn, (ws,))
    except Exception as exc:
        return outcome.Error(_store_error(exc, "commit failed"))
    mark_stored(ws.inputs)
    return outcome.Value(None)


def _commit_batch(host: _Connection, batch: list[WriteSet]) -> list[outcome.Outcome[None]]:
    """Commit ``batch`` in one transaction; a failing write-set fails alone.

    The batch is applied optimistically, without a savepoint per write-set
    (two statements each).  If anything fails, the whole transaction rolls
    back and the write-sets are committed one by one, so that only those that
    really fail are reported as failed.
    """
    conn = host.connection()
    if len(batch) == 1:
        return [_commit_one(conn, batch[0])]
    try:
        _transaction(conn, batch)
    except Exception:
        return [_commit_one(conn, ws) for ws in batch]
    for ws in batch:
        mark_stored(ws.inputs)
    return [outcome.Value(None) for _ in batch]  # an outcome is unwrapped once


# -- the reader's side ------------------------------------------------------------------


#: The rows recovery reads: every input that is not terminal, and every one
#: whose state is not a state at all (so that it fails, not vanishes).
_RECOVERED_INPUTS: Final = (
    f"SELECT {INPUT_COLUMNS} FROM inputs WHERE session_id = ? "
    "AND (state IS NULL OR state NOT IN ('consumed', 'superseded', 'abandoned')) ORDER BY seq"
)


#: The columns that name a row in an error, when they are read.
_KEYS: Final = ("session_id", "input_id", "run_id", "sequence", "id")


def _as_text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _undecodable(
    conn: sqlite3.Connection, exc: sqlite3.OperationalError, sql: str, args: Sequence[Any]
) -> Exception:
    """The error for stored text that is not UTF-8 (SQLite cannot hand it to
    Python): a :class:`RecoveryCorruption` naming the row and the column,
    found by reading the rows again as bytes (a rare, slow path)."""
    if "decode" not in str(exc):
        return exc
    conn.text_factory = bytes
    try:
        cursor = conn.execute(sql, args)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            for name, value in zip(names, row):
                if isinstance(value, bytes):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        where = ", ".join(
                            f"{n.replace('_id', '')} {_as_text(v)!r}"
                            for n, v in zip(names, row)
                            if n in _KEYS and v is not None
                        )
                        return corruption(
                            where, name, f"holds bytes that are not UTF-8: {value[:40]!r}"
                        )
    finally:
        conn.text_factory = str
    return exc


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Every row ``sql`` selects (text that is not UTF-8 is RecoveryCorruption)."""
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        raise _undecodable(conn, exc, sql, args) from None


def _load_session(host: _Connection, session_id: str) -> StoredSession | None:
    conn = host.connection()
    conn.execute("BEGIN")
    try:
        found = _rows(
            conn, f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        )
        if not found:
            return None
        record, snapshot_json, revision = session_from_row(found[0])
        # Submits write only their input row: the counters come from the rows.
        (top,) = conn.execute(
            "SELECT MAX(seq) FROM inputs WHERE session_id = ?", (session_id,)
        ).fetchone()
        if top is not None and type(top) is not int:
            raise _bad_seq(conn, session_id)
        if top is not None and top >= record.next_seq:
            record = attrs.evolve(record, next_seq=top + 1)
        inputs = tuple(
            input_from_row(r) for r in _rows(conn, _RECOVERED_INPUTS, (session_id,))
        )
        keys = dict(
            _rows(
                conn,
                "SELECT idempotency_key, input_id FROM inputs WHERE session_id = ? "
                "AND idempotency_key IS NOT NULL",
                (session_id,),
            )
        )
        receipts = set()
        for r in inputs:
            if r.run_id is not None and r.boundary is not None:
                found = conn.execute(
                    "SELECT 1 FROM receipts WHERE session_id = ? AND run_id = ? AND sequence = ?",
                    (session_id, r.run_id, r.boundary),
                ).fetchall()
                if found:
                    receipts.add((r.run_id, r.boundary))
    finally:
        conn.execute("COMMIT")
    return StoredSession(
        record=record,
        snapshot_json=snapshot_json,
        snapshot_revision=revision,
        inputs=inputs,
        idempotency=keys,
        receipts=frozenset(receipts),
    )


def _bad_seq(conn: sqlite3.Connection, session_id: str) -> Exception:
    """A ``seq`` that is not an integer (the highest, which recovery reads)."""
    row = conn.execute(
        "SELECT input_id, seq FROM inputs WHERE session_id = ? AND typeof(seq) != 'integer' "
        "ORDER BY seq DESC LIMIT 1",
        (session_id,),
    ).fetchone()
    input_id, seq = row if row is not None else (None, None)
    return corruption(
        f"session {session_id!r}, input {input_id!r}", "seq", f"holds {seq!r} where an integer belongs"
    )


def _load_input(host: _Connection, session_id: str, input_id: str) -> InputRecord | None:
    found = _rows(
        host.connection(),
        f"SELECT {INPUT_COLUMNS} FROM inputs WHERE session_id = ? AND input_id = ?",
        (session_id, input_id),
    )
    return input_from_row(found[0]) if found else None


def _load_inputs(
    host: _Connection, session_id: str, state: str | None, after_seq: int, limit: int
) -> list[InputRecord]:
    sql = f"SELECT {INPUT_COLUMNS} FROM inputs WHERE session_id = ? AND seq > ?"
    args: list[Any] = [session_id, after_seq]
    if state is not None:
        sql += " AND state = ?"
        args.append(state)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    return [input_from_row(r) for r in _rows(host.connection(), sql, args)]


def _load_receipt(host: _Connection, session_id: str, run_id: str, sequence: int) -> Receipt | None:
    found = _rows(
        host.connection(),
        f"SELECT {RECEIPT_COLUMNS} FROM receipts "
        "WHERE session_id = ? AND run_id = ? AND sequence = ?",
        (session_id, run_id, sequence),
    )
    return receipt_from_row(found[0]) if found else None


def _list_sessions(host: _Connection) -> list[str]:
    return [r[0] for r in host.connection().execute("SELECT session_id FROM sessions ORDER BY rowid")]


def _load_outbox(host: _Connection, target: str, limit: int) -> list[OutboxRow]:
    return [
        outbox_from_row(r)
        for r in _rows(
            host.connection(),
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE target = ? AND state = 'pending' "
            "ORDER BY id LIMIT ?",
            (target, limit),
        )
    ]


def _dead_letters(host: _Connection) -> list[DeadLetter]:
    return [
        dead_letter_from_row(r)
        for r in _rows(
            host.connection(), f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'dead' ORDER BY id"
        )
    ]


def _ping(host: _Connection) -> None:
    host.connection()


# -- the trio side ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """Group commit figures of a :class:`SqliteStore`."""

    batches: int
    write_sets: int
    largest_batch: int
    failed_write_sets: int


class StoreActor(Actor):
    """Gathers the write-sets waiting in its mailbox into one transaction."""

    actor_mailbox_size = 65536
    actor_batch_max = MAX_BATCH

    def __init__(self, writer: pykka.ActorRef[Any]) -> None:
        self.writer = writer
        self.batches = 0
        self.write_sets = 0
        self.largest = 0
        self.failed = 0

    async def actor_receive_batch(self, messages: list[Any]) -> list[outcome.Outcome[Any]]:
        try:
            # Once handed to the writer, a batch commits whatever happens to
            # this task: its outcome is always delivered to its callers.
            results: list[outcome.Outcome[None]] = await call_on_host(
                self.writer, _commit_batch, messages, handover=True
            )
        except Exception as exc:  # the writer thread is gone
            error = _store_error(exc, "the store's writer failed")
            results = [outcome.Error(error) for _ in messages]
        self.batches += 1
        self.write_sets += len(messages)
        self.largest = max(self.largest, len(messages))
        self.failed += sum(1 for r in results if isinstance(r, outcome.Error))
        return results


class SqliteStore:
    """The default durable store: one SQLite file in WAL mode.

    Args:
        path: the database file.  Its directory must exist.  A symlink is
            resolved: the store opens, locks and names its side files after
            the real file.
        synchronous: ``"FULL"`` (default: a commit survives power loss),
            ``"EXTRA"``, or ``"NORMAL"`` (faster; a power loss may lose the
            last commits, though never corrupt the file; a process crash
            loses nothing).
        mode: permission bits of the files the store creates (the database,
            its ``-wal`` and ``-shm`` files, the lock file), whatever the
            umask: ``0o600`` (default) or, say, ``0o640`` for group read.
            Existing files keep their mode.

    Raises (from ``start``, that is from ``open_runtime``):
        StoreError: missing directory, not a SQLite database, another
            application's database, read-only file, a schema written by a
            newer release, a file with several hard links, a planted lock
            file; a refused file is left untouched.  StoreLocked: another
            runtime owns the file.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", mode: int = DEFAULT_MODE
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.mode = check_mode(mode)
        self._writer: pykka.ActorRef[Any] | None = None
        self._reader: pykka.ActorRef[Any] | None = None
        self._actor: ActorRef[StoreActor] | None = None
        self._figures = StoreActor(None)  # type: ignore[arg-type]  # figures before start
        self._files: StoreFiles | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def lock_path(self) -> Path | None:
        """The lock file held while the store is open (None when it is not)."""
        return None if self._files is None else self._files.lock.path

    async def start(self, nursery: trio.Nursery) -> None:
        if self._files is not None:
            raise StoreError(f"{self.path} is already open")
        # Checks, creation and the lock touch the disk: off the trio thread.
        # Not abandoned on cancellation, so that the lock is never orphaned.
        files = await trio.to_thread.run_sync(open_files, self.path, self.mode)
        self._files = files
        try:
            pragmas = (f"PRAGMA synchronous = {self.synchronous}",)
            name = files.path.name
            self._writer = _Connection.start(
                f"suricate-writer-{name}", str(files.path), uri=False, pragmas=pragmas, writer=True
            )
            await call_on_host(self._writer, _ping)
            read_uri = f"{files.path.as_uri()}?mode=ro"
            self._reader = _Connection.start(
                f"suricate-reader-{name}", read_uri, uri=True, pragmas=(), writer=False
            )
            await call_on_host(self._reader, _ping)
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception):
                raise _store_error(exc, f"cannot open {self.path}") from exc
            raise
        self._figures = StoreActor(self._writer)
        self._actor = spawn(self._figures, nursery, name=f"store {self.path.name}")

    def _stop_hosts(self) -> None:
        """Stop both connection threads, joining each for up to 10 s (blocking)."""
        hosts = (self._reader, self._writer)
        self._reader = self._writer = None
        for host in hosts:
            if host is not None:
                try:
                    host.stop(block=True, timeout=10)
                except pykka.ActorDeadError:
                    pass
                except pykka.Timeout:  # pragma: no cover - a wedged SQLite call
                    pass

    def close(self) -> None:
        """Release everything at once: the store actor, both threads, the lock.

        Synchronous and idempotent; safe after a failed or cancelled
        ``start`` and after ``aclose``.  Call it from the trio thread (it
        stops the trio-side store actor: pending commits get
        ``ActorStopped``, never a silent success).  It blocks while the
        threads finish the call they are in.
        """
        actor, self._actor = self._actor, None
        try:
            if actor is not None:
                actor.stop()
            self._stop_hosts()
        finally:
            files, self._files = self._files, None
            if files is not None:
                files.release()

    async def aclose(self) -> None:
        """Finish the commits in hand, then release everything (idempotent).

        Whatever interrupts it (cancellation included), the lock and the
        threads are released before it returns or raises; shield it to let
        the commits in hand finish.
        """
        try:
            actor = self._actor
            if actor is not None:
                await actor.wait_idle()
                actor.stop()
                self._actor = None
            # Joining the hosts blocks briefly (they are idle): do it off the trio thread.
            await trio.to_thread.run_sync(self._stop_hosts)
        finally:
            self.close()

    def statistics(self) -> StoreStatistics:
        actor = self._figures
        return StoreStatistics(
            batches=actor.batches,
            write_sets=actor.write_sets,
            largest_batch=actor.largest,
            failed_write_sets=actor.failed,
        )

    @property
    def commits(self) -> int:
        """Write-sets committed so far."""
        stats = self.statistics()
        return stats.write_sets - stats.failed_write_sets

    async def commit(self, write_set: WriteSet) -> None:
        if self._actor is None:
            raise StoreError("the store is not open")
        # A handover: a caller cancelled after this point still learns the
        # outcome, so that a write-set is never committed behind its back.
        await self._actor.ask(write_set, handover=True)

    async def _read(self, fn: Any, *args: Any) -> Any:
        if self._reader is None:
            raise StoreError("the store is not open")
        try:
            return await call_on_host(self._reader, fn, *args)
        except StoreError:
            raise
        except pykka.ActorDeadError as exc:
            raise StoreError("the store's reader is gone") from exc
        except sqlite3.Error as exc:
            raise _store_error(exc, "read failed") from exc

    async def load_session(self, session_id: str) -> StoredSession | None:
        result: StoredSession | None = await self._read(_load_session, session_id)
        return result

    async def load_input(self, session_id: str, input_id: str) -> InputRecord | None:
        result: InputRecord | None = await self._read(_load_input, session_id, input_id)
        return result

    async def load_inputs(
        self,
        session_id: str,
        *,
        state: InputState | None = None,
        after_seq: int = -1,
        limit: int = 100,
    ) -> list[InputRecord]:
        text = None if state is None else state.value
        result: list[InputRecord] = await self._read(
            _load_inputs, session_id, text, after_seq, limit
        )
        return result

    async def load_receipt(self, session_id: str, run_id: str, sequence: int) -> Receipt | None:
        result: Receipt | None = await self._read(_load_receipt, session_id, run_id, sequence)
        return result

    async def list_sessions(self) -> list[str]:
        result: list[str] = await self._read(_list_sessions)
        return result

    async def load_outbox(self, target: str, *, limit: int = 64) -> list[OutboxRow]:
        result: list[OutboxRow] = await self._read(_load_outbox, target, limit)
        return result

    async def dead_letters(self) -> list[DeadLetter]:
        result: list[DeadLetter] = await self._read(_dead_letters)
        return result

