"""An in-memory store with the same semantics as the SQLite store, minus the disk."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from .._errors import StoreError
from .._model import (
    DeadLetter,
    InputRecord,
    InputState,
    OutboxMessage,
    OutboxRow,
    Receipt,
    SessionRecord,
    StoredSession,
    WriteSet,
    check_version,
)
from .._model._values import mark_stored

__all__ = ["MemoryStore"]


def _dead(row: int, message: OutboxMessage, reason: str, at: float) -> DeadLetter:
    return DeadLetter(
        id=row,
        session_id=message.session_id,
        target=message.target,
        payload_json=message.payload_json,
        kind=message.kind,
        reason=reason,
        at=at,
    )


class _Stored:
    __slots__ = ("record", "snapshot_json", "revision", "inputs", "keys")

    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        self.snapshot_json: str | None = None
        self.revision = 0
        self.inputs: dict[str, InputRecord] = {}
        self.keys: dict[str, str] = {}


class MemoryStore:
    """Keeps every record in memory; each ``commit`` is atomic.

    Useful for tests and for daemons that need no durability.  A
    ``MemoryStore`` may be handed to several runtimes in turn (never at once)
    to simulate a restart: records survive, in-memory session state does not.
    Once closed it refuses commits but still answers reads.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, _Stored] = {}
        self._receipts: dict[tuple[str, str, int], Receipt] = {}
        # id -> [message, state ("pending" | "delivered" | "dead"), reason]
        self._outbox: dict[int, list[Any]] = {}
        self._dead: list[DeadLetter] = []
        self._next_row = 1
        self._closed = False
        self.commits = 0

    async def start(self, nursery: trio.Nursery) -> None:
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    async def load_session(self, session_id: str) -> StoredSession | None:
        await trio.lowlevel.checkpoint()
        stored = self._sessions.get(session_id)
        if stored is None:
            return None
        check_version("session", stored.record.version)
        active = []
        for record in stored.inputs.values():
            check_version("input", record.version)
            if not record.state.terminal:
                active.append(record)
        active.sort(key=lambda r: r.seq)
        receipts = frozenset(
            (r.run_id, r.boundary)
            for r in active
            if r.run_id is not None
            and r.boundary is not None
            and (session_id, r.run_id, r.boundary) in self._receipts
        )
        # Submits write only their input row: the counters come from the rows.
        lifecycle = stored.record
        if stored.inputs:
            top = max(r.seq for r in stored.inputs.values())
            if top >= lifecycle.next_seq:
                lifecycle = attrs.evolve(lifecycle, next_seq=top + 1)
        return StoredSession(
            record=lifecycle,
            snapshot_json=stored.snapshot_json,
            snapshot_revision=stored.revision,
            inputs=tuple(active),
            idempotency=dict(stored.keys),
            receipts=receipts,
        )

    async def commit(self, write_set: WriteSet) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        sid = write_set.session_id
        stored = self._sessions.get(sid)
        if stored is None and write_set.session is None:
            raise StoreError(f"session {sid!r} has no lifecycle record")
        # Validate everything before changing anything: the commit is atomic.
        snapshot = write_set.snapshot
        revision = stored.revision if stored is not None else 0
        if snapshot is not None and snapshot.expected_revision != revision:
            raise StoreError(
                f"snapshot of {sid!r} is at revision {revision}, "
                f"expected {snapshot.expected_revision}"
            )
        receipt = write_set.receipt
        if receipt is not None and (sid, receipt.run_id, receipt.sequence) in self._receipts:
            raise StoreError(f"receipt {receipt.run_id}/{receipt.sequence} of {sid!r} exists")
        for record in write_set.inputs:
            # As on disk: a record with stored history rewrites a stored row.
            if record.stored_history and (stored is None or record.input_id not in stored.inputs):
                raise StoreError(f"input {record.input_id} of {sid!r} has no row")
            if stored is not None:
                key = record.idempotency_key
                holder = stored.keys.get(key) if key is not None else None
                if holder is not None and holder != record.input_id:
                    raise StoreError(f"idempotency key {key!r} of {sid!r} is held by {holder}")
        for row in (*write_set.delivered, *(row for row, _ in write_set.dead)):
            if row not in self._outbox:
                raise StoreError(f"no outbox row {row}")
        if stored is None:
            assert write_set.session is not None
            stored = self._sessions[sid] = _Stored(write_set.session)
        if write_set.session is not None:
            stored.record = write_set.session
        for record in write_set.inputs:
            stored.inputs[record.input_id] = record
            if record.idempotency_key is not None:
                stored.keys[record.idempotency_key] = record.input_id
        if snapshot is not None:
            stored.snapshot_json = snapshot.value_json
            stored.revision = snapshot.revision
        if receipt is not None:
            self._receipts[sid, receipt.run_id, receipt.sequence] = receipt
        for message in write_set.messages:
            row = self._next_row
            self._next_row += 1
            if message.target in self._sessions:
                self._outbox[row] = [message, "pending", None]
            else:
                self._outbox[row] = [message, "dead", "unknown target"]
                self._dead.append(_dead(row, message, "unknown target", self.now()))
        for row in write_set.delivered:
            self._outbox[row][1] = "delivered"
        for row, reason in write_set.dead:
            entry = self._outbox[row]
            entry[1:] = ["dead", reason]
            self._dead.append(_dead(row, entry[0], reason, self.now()))
        for letter in write_set.dead_letters:
            self._dead.append(attrs.evolve(letter, id=self._next_row))
            self._next_row += 1
        mark_stored(write_set.inputs)
        self.commits += 1

    async def load_input(self, session_id: str, input_id: str) -> InputRecord | None:
        await trio.lowlevel.checkpoint()
        stored = self._sessions.get(session_id)
        record = stored.inputs.get(input_id) if stored is not None else None
        if record is not None:
            check_version("input", record.version)
        return record

    async def load_inputs(
        self,
        session_id: str,
        *,
        state: InputState | None = None,
        after_seq: int = -1,
        limit: int = 100,
    ) -> list[InputRecord]:
        await trio.lowlevel.checkpoint()
        stored = self._sessions.get(session_id)
        if stored is None:
            return []
        found = sorted(
            (
                r
                for r in stored.inputs.values()
                if r.seq > after_seq and (state is None or r.state is state)
            ),
            key=lambda r: r.seq,
        )[:limit]
        for record in found:
            check_version("input", record.version)
        return found

    async def load_receipt(self, session_id: str, run_id: str, sequence: int) -> Receipt | None:
        await trio.lowlevel.checkpoint()
        return self._receipts.get((session_id, run_id, sequence))

    def now(self) -> float:
        return time.time()

    @property
    def outbox(self) -> list[OutboxMessage]:
        """Every message ever committed to the outbox, in commit order."""
        return [entry[0] for entry in self._outbox.values()]

    async def load_outbox(self, target: str, *, limit: int = 64) -> list[OutboxRow]:
        await trio.lowlevel.checkpoint()
        rows = []
        for row, (message, state, _) in self._outbox.items():
            if state == "pending" and message.target == target:
                rows.append(OutboxRow(id=row, message=message))
                if len(rows) >= limit:
                    break
        return rows

    async def dead_letters(self) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        return list(self._dead)

    async def list_sessions(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return list(self._sessions)
