"""What a store keeps for a session, and the write-set that changes it.

A :class:`WriteSet` is the unit of atomicity (DESIGN section 6): the store
commits all of it or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import RecoveryCorruption
from ._values import RECORD_VERSION, InputRecord, SessionState

__all__ = [
    "DeadLetter",
    "OutboxMessage",
    "OutboxRow",
    "Receipt",
    "SessionRecord",
    "SnapshotWrite",
    "StoredSession",
    "WriteSet",
    "check_version",
]


def check_version(kind: str, version: int) -> None:
    """Fail loudly on a record written by another release."""
    if version != RECORD_VERSION:
        raise RecoveryCorruption(
            f"{kind} record has version {version}; this release reads version {RECORD_VERSION}"
        )


#: Lifecycle states that are persisted; ATTACHED and RUNNING persist as IDLE.
PERSISTED_STATES = frozenset(
    {SessionState.IDLE, SessionState.RETIRED, SessionState.STOPPED, SessionState.DESTROYED}
)


@attrs.frozen(kw_only=True)
class SessionRecord:
    """The durable lifecycle record of one session."""

    session_id: str
    state: SessionState = attrs.field(default=SessionState.IDLE)
    next_seq: int = 1
    next_order: int = 1
    stop_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = RECORD_VERSION

    @state.validator
    def _persisted(self, attribute: Any, value: SessionState) -> None:
        if value not in PERSISTED_STATES:
            raise ValueError(f"{value.name} is never persisted")


@attrs.frozen(kw_only=True)
class Receipt:
    """Proof that a run committed boundary ``sequence`` with ``input_ids``."""

    session_id: str
    run_id: str
    sequence: int
    input_ids: tuple[str, ...]
    at: float = 0.0
    version: int = RECORD_VERSION


@attrs.frozen(kw_only=True)
class OutboxMessage:
    """A peer message committed with the turn that sent it (the outbox).

    ``kind`` is ``peer_message`` for a message a turn sent, ``peer_response``
    for the answer to a request (``reply=True``) that the runtime sends when
    the request's input reaches its outcome.
    """

    session_id: str
    run_id: str | None
    target: str
    payload_json: str
    kind: str = "peer_message"
    reply: bool = False
    correlation_id: str | None = None
    version: int = RECORD_VERSION


@attrs.frozen(kw_only=True)
class OutboxRow:
    """A committed outbox message waiting for delivery, with its row id."""

    id: int
    message: OutboxMessage


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message that could not be delivered, and why."""

    id: int
    session_id: str | None
    """The sender (``None`` for an external source)."""
    target: str
    payload_json: str | None
    kind: str
    reason: str
    at: float = 0.0


@attrs.frozen(kw_only=True)
class SnapshotWrite:
    """A compare-and-swap of the session snapshot: ``expected_revision`` must
    be the stored revision, which then becomes ``expected_revision + 1``."""

    value_json: str | None
    expected_revision: int

    @property
    def revision(self) -> int:
        return self.expected_revision + 1


@attrs.frozen(kw_only=True)
class WriteSet:
    """Everything one session operation changes, committed atomically."""

    session_id: str
    session: SessionRecord | None = None
    inputs: tuple[InputRecord, ...] = ()
    snapshot: SnapshotWrite | None = None
    receipt: Receipt | None = None
    messages: tuple[OutboxMessage, ...] = ()
    delivered: tuple[int, ...] = ()
    """Outbox rows this write-set delivered (as the inputs it admits)."""
    dead: tuple[tuple[int, str], ...] = ()
    """Outbox rows that become dead letters, with the reason."""
    dead_letters: tuple[DeadLetter, ...] = ()
    """New dead letters that never were in the outbox (malformed envelopes)."""

    @property
    def empty(self) -> bool:
        return (
            self.session is None
            and not self.inputs
            and self.snapshot is None
            and self.receipt is None
            and not self.messages
            and not self.delivered
            and not self.dead
            and not self.dead_letters
        )


@attrs.frozen(kw_only=True)
class StoredSession:
    """A session as loaded from a store.

    ``inputs`` are the non-terminal input records in admission order;
    ``idempotency`` maps every idempotency key ever admitted to its input id;
    ``receipts`` holds the receipts of the runs that ``APPLIED`` inputs name.
    """

    record: SessionRecord
    snapshot_json: str | None = None
    snapshot_revision: int = 0
    inputs: tuple[InputRecord, ...] = ()
    idempotency: Mapping[str, str] = attrs.field(factory=dict)
    receipts: frozenset[tuple[str, int]] = frozenset()
