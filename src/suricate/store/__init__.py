"""Persistence: the :class:`Store` protocol and its implementations."""

from .._model import OutboxMessage, Receipt, SessionRecord, SnapshotWrite, StoredSession, WriteSet
from ._memory import MemoryStore
from ._protocol import Store
from ._sqlite import SqliteStore, StoreStatistics

__all__ = [
    "MemoryStore",
    "OutboxMessage",
    "Receipt",
    "SessionRecord",
    "SnapshotWrite",
    "SqliteStore",
    "Store",
    "StoreStatistics",
    "StoredSession",
    "WriteSet",
]
