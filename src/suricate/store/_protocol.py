"""The Store protocol: what the runtime needs from persistence.

A store commits one :class:`~suricate._model.WriteSet` per ``commit`` call,
atomically: all of it or nothing (DESIGN section 6).  It may batch concurrent
write-sets internally, but a failing write-set must fail alone.  Snapshot
writes are compare-and-swap on the stored revision; a receipt is unique per
``(session, run, sequence)``.  Any failure is raised as :class:`StoreError`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio

from .._model import (
    DeadLetter,
    InputRecord,
    InputState,
    OutboxRow,
    Receipt,
    StoredSession,
    WriteSet,
)

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Persistence for sessions.  Every method may raise ``StoreError``."""

    async def start(self, nursery: trio.Nursery) -> None:
        """Open the store; background tasks, if any, run in ``nursery``."""

    async def aclose(self) -> None:
        """Close the store; later calls raise ``StoreError``."""

    async def load_session(self, session_id: str) -> StoredSession | None:
        """The stored session, or ``None`` if it was never created.

        Raises:
            RecoveryCorruption: a record has an unknown version.
        """

    async def commit(self, write_set: WriteSet) -> None:
        """Commit ``write_set`` atomically; return only once it is durable.

        Also atomic under cancellation: a commit that raises ``trio.Cancelled``
        committed nothing (a store whose commit cannot be withdrawn once
        handed on waits for its outcome instead of being cancelled).
        """

    async def load_input(self, session_id: str, input_id: str) -> InputRecord | None:
        """One input record, terminal or not."""

    async def load_inputs(
        self,
        session_id: str,
        *,
        state: InputState | None = None,
        after_seq: int = -1,
        limit: int = 100,
    ) -> list[InputRecord]:
        """Up to ``limit`` input records with an admission sequence above
        ``after_seq`` (in ``state``, if given), in admission order."""

    async def load_receipt(self, session_id: str, run_id: str, sequence: int) -> Receipt | None:
        """The receipt of one boundary of a run."""

    async def list_sessions(self) -> list[str]:
        """The ids of every stored session."""

    async def load_outbox(self, target: str, *, limit: int = 64) -> list[OutboxRow]:
        """Up to ``limit`` undelivered outbox rows addressed to ``target``,
        in commit order.  A message committed to a session the store has
        never seen is a dead letter from its commit on."""

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
