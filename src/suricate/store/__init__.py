"""Persistence: the stores and what they persist.

:class:`~suricate.Store` (the protocol), :class:`~suricate.MemoryStore` and
:class:`~suricate.Receipt` have their public home in ``suricate``; this
package adds the SQLite store and the records a store implementation needs
(the three stay importable from here too).
"""

from .._exports import fix_module_metadata
from .._model import OutboxMessage, Receipt, SessionRecord, SnapshotWrite, StoredSession, WriteSet
from ._memory import MemoryStore
from ._protocol import Store
from ._sqlite import SqliteStore, StoreStatistics

__all__ = [
    "OutboxMessage",
    "SessionRecord",
    "SnapshotWrite",
    "SqliteStore",
    "StoreStatistics",
    "StoredSession",
    "WriteSet",
]

fix_module_metadata(__name__, __all__, globals())
