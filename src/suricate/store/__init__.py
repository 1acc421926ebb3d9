"""Persistence: the :class:`Store` protocol and its implementations."""

from .._model import OutboxMessage, Receipt, SessionRecord, SnapshotWrite, StoredSession, WriteSet
from ._memory import MemoryStore
from ._protocol import Store

__all__ = [
    "MemoryStore",
    "OutboxMessage",
    "Receipt",
    "SessionRecord",
    "SnapshotWrite",
    "Store",
    "StoredSession",
    "WriteSet",
]
