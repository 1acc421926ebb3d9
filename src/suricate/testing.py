"""The test kit: drive suricate from your own tests.

- :class:`FaultyStore` wraps any store and fails chosen commits, or holds
  one in flight (:meth:`FaultyStore.hold_commit_if`) so that a test can put
  the other side of a race in place before it lands.
- :class:`ScriptedExecutor` records the turns it saw, can fail a number of
  times, and can block each turn until the test releases it.
- :func:`memory_view` and :func:`durable_view` render a session's in-memory
  and stored state in one comparable form, to check checkpoint rollback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ._errors import StoreError
from ._model import (
    DeadLetter,
    InputRecord,
    InputState,
    OutboxRow,
    Receipt,
    StoredSession,
    WriteSet,
)
from ._turn import Turn, TurnResult
from .actors._messages import Read
from .runtime import Session
from .store._protocol import Store

__all__ = [
    "CommitHold",
    "FaultyStore",
    "ScriptedExecutor",
    "SeenTurn",
    "SessionView",
    "durable_view",
    "memory_view",
]


class CommitHold:
    """A commit held in flight by :meth:`FaultyStore.hold_commit_if`.

    The first write-set matching the predicate waits inside ``commit`` (it
    has not reached the inner store) until :meth:`release`; cancelling the
    committing task meanwhile abandons it, writing nothing.
    """

    def __init__(self, predicate: Callable[[WriteSet], bool]) -> None:
        self.predicate = predicate
        self.write_set: WriteSet | None = None
        """The held write-set, once one matched."""
        self._reached = trio.Event()
        self._released = trio.Event()

    @property
    def reached(self) -> bool:
        """Whether a write-set matched (it may since have been released)."""
        return self._reached.is_set()

    async def wait_reached(self) -> WriteSet:
        """Wait until a matching write-set is held, and return it."""
        await self._reached.wait()
        assert self.write_set is not None
        return self.write_set

    def release(self) -> None:
        """Let the held write-set go on to the inner store (or its armed
        fault); a hold released before it matched lets its write-set pass."""
        self._released.set()


class FaultyStore:
    """A store that fails the commits you arm, holds the ones you ask it to
    hold, and passes everything else to ``inner``.  A failed commit writes
    nothing."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._next: list[BaseException | None] = []
        self._predicates: list[tuple[Callable[[WriteSet], bool], BaseException | None]] = []
        self._poisoned: dict[int, tuple[WriteSet, BaseException]] = {}
        self._holds: list[CommitHold] = []
        self.failed: list[WriteSet] = []
        self.committed: list[WriteSet] = []

    def fail_next_commit(self, error: BaseException | None = None) -> None:
        """Fail the next write-set committed (with ``StoreError``, or ``error``)."""
        self._next.append(error)

    def fail_commit_if(
        self, predicate: Callable[[WriteSet], bool], error: BaseException | None = None
    ) -> Callable[[], None]:
        """Fail every write-set matching ``predicate`` until the returned
        function (or :meth:`disarm`) is called."""
        entry = (predicate, error)
        self._predicates.append(entry)

        def disarm() -> None:
            if entry in self._predicates:
                self._predicates.remove(entry)

        return disarm

    def hold_commit_if(self, predicate: Callable[[WriteSet], bool]) -> CommitHold:
        """Hold the next write-set matching ``predicate`` in flight until the
        returned :class:`CommitHold` is released.  Holds are one-shot and
        matched in the order they were made; later write-sets pass."""
        hold = CommitHold(predicate)
        self._holds.append(hold)
        return hold

    def disarm(self) -> None:
        """Remove every armed fault, and every hold that has not matched yet
        (a write-set already held stays held until its hold is released)."""
        self._next.clear()
        self._predicates.clear()
        self._holds.clear()

    def _fault(self, write_set: WriteSet) -> BaseException | None:
        poisoned = self._poisoned.get(id(write_set))
        if poisoned is not None and poisoned[0] is write_set:
            return poisoned[1]
        for predicate, error in self._predicates:
            if predicate(write_set):
                return error or StoreError("injected commit failure")
        if self._next:
            error = self._next.pop(0)
            fault = error or StoreError("injected commit failure")
            # Keep the write-set alive: its id must not be reused by another.
            self._poisoned[id(write_set)] = (write_set, fault)
            return fault
        return None

    async def start(self, nursery: trio.Nursery) -> None:
        await self.inner.start(nursery)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def commit(self, write_set: WriteSet) -> None:
        for hold in self._holds:
            if hold.predicate(write_set):
                self._holds.remove(hold)
                hold.write_set = write_set
                hold._reached.set()
                await hold._released.wait()
                break
        fault = self._fault(write_set)
        if fault is not None:
            await trio.lowlevel.checkpoint()
            self.failed.append(write_set)
            raise fault
        await self.inner.commit(write_set)
        self.committed.append(write_set)

    async def load_session(self, session_id: str) -> StoredSession | None:
        return await self.inner.load_session(session_id)

    async def load_input(self, session_id: str, input_id: str) -> InputRecord | None:
        return await self.inner.load_input(session_id, input_id)

    async def load_receipt(self, session_id: str, run_id: str, sequence: int) -> Receipt | None:
        return await self.inner.load_receipt(session_id, run_id, sequence)

    async def load_inputs(
        self,
        session_id: str,
        *,
        state: InputState | None = None,
        after_seq: int = -1,
        limit: int = 100,
    ) -> list[InputRecord]:
        return await self.inner.load_inputs(
            session_id, state=state, after_seq=after_seq, limit=limit
        )

    async def list_sessions(self) -> list[str]:
        return await self.inner.list_sessions()

    async def load_outbox(self, target: str, *, limit: int = 64) -> list[OutboxRow]:
        return await self.inner.load_outbox(target, limit=limit)

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.inner.dead_letters()


@attrs.frozen(kw_only=True)
class SeenTurn:
    """What a :class:`ScriptedExecutor` saw of one turn."""

    run_id: str
    input_ids: tuple[str, ...]
    payloads: tuple[Any, ...]
    attempt: int
    snapshot: Any


def _echo(turn: Turn) -> TurnResult:
    return TurnResult(results={i.input_id: i.payload for i in turn.inputs if i.input_id})


class ScriptedExecutor:
    """An async executor for tests.

    Args:
        result: ``turn -> TurnResult | None``; by default each input's result
            is its payload.
        fail_times: the first ``fail_times`` turns raise ``error``.
        error: the exception (class or instance) a failing turn raises.
        block: each turn waits for :meth:`release` before finishing.
    """

    def __init__(
        self,
        *,
        result: Callable[[Turn], TurnResult | None] = _echo,
        fail_times: int = 0,
        error: type[BaseException] | BaseException = RuntimeError,
        block: bool = False,
    ) -> None:
        self.result = result
        self.fail_times = fail_times
        self.error = error
        self.block = block
        self.turns: list[SeenTurn] = []
        self.finished = 0
        self.cancelled = 0
        self._released = 0
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def payloads(self) -> list[Any]:
        """Every payload seen, in turn order."""
        return [p for t in self.turns for p in t.payloads]

    def release(self, n: int = 1) -> None:
        """Let ``n`` more blocked turns finish."""
        self._released += n
        self._notify()

    async def wait_turns(self, n: int) -> None:
        """Wait until ``n`` turns have started."""
        while len(self.turns) < n:
            await self._changed.wait()

    async def wait_finished(self, n: int) -> None:
        """Wait until ``n`` turns have returned or raised."""
        while self.finished < n:
            await self._changed.wait()

    async def run(self, turn: Turn) -> TurnResult | None:
        index = len(self.turns)
        self.turns.append(
            SeenTurn(
                run_id=turn.run_id,
                input_ids=tuple(i.input_id or "" for i in turn.inputs),
                payloads=tuple(i.payload for i in turn.inputs),
                attempt=turn.attempt,
                snapshot=turn.snapshot,
            )
        )
        self._notify()
        try:
            if self.block:
                while self._released <= index - self.cancelled:
                    await self._changed.wait()
            if index < self.fail_times:
                error = self.error
                raise error if isinstance(error, BaseException) else error(f"scripted failure {index + 1}")
            return self.result(turn)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.finished += 1
            self._notify()


@attrs.frozen(kw_only=True)
class SessionView:
    """A session's state in a form that memory and store can both produce.

    Two views are equal only if memory and store agree on the lifecycle, the
    counters, the snapshot, every durable non-terminal input (state, attempt,
    admission sequence, lane and position in it), the order in which the
    queued inputs of each lane will run, and the idempotency keys.
    """

    state: str
    next_seq: int
    snapshot_json: str | None
    snapshot_revision: int
    inputs: tuple[tuple[str, str, int, int, int, int], ...]
    """``(input_id, state, attempt, seq, lane, order)`` of every durable
    non-terminal input, sorted by input id.  ``lane`` is 0 for INTERRUPT, 1 for
    STEER, 2 for QUEUE; ``order`` is the input's position key in its lane."""
    lanes: tuple[tuple[str, ...], ...]
    """For each lane (INTERRUPT, STEER, QUEUE), the ids of its durable
    ``QUEUED`` inputs in the order they will run."""
    keys: tuple[tuple[str, str], ...]


def _view(
    state: str,
    next_seq: int,
    snapshot_json: str | None,
    revision: int,
    inputs: Sequence[InputRecord],
    lanes: Sequence[Sequence[InputRecord]],
    keys: dict[str, str],
) -> SessionView:
    return SessionView(
        state=state,
        next_seq=next_seq,
        snapshot_json=snapshot_json,
        snapshot_revision=revision,
        inputs=tuple(
            sorted(
                (r.input_id, r.state.value, r.attempt, r.seq, r.lane, r.order)
                for r in inputs
                if r.durable
            )
        ),
        lanes=tuple(tuple(r.input_id for r in lane if r.durable) for lane in lanes),
        keys=tuple(sorted(keys.items())),
    )


def _stored_lanes(inputs: Sequence[InputRecord]) -> list[list[InputRecord]]:
    """The queued inputs of each lane in the order a session loaded from
    ``inputs`` runs them: by lane order, then admission sequence."""
    lanes: list[list[InputRecord]] = [[], [], []]
    for record in sorted(inputs, key=lambda r: (r.order, r.seq)):
        if record.state is InputState.QUEUED:
            lanes[record.lane].append(record)
    return lanes


async def memory_view(session: Session) -> SessionView:
    """The session's in-memory state (persisted fields only)."""
    core = await session._ask(Read("core"))
    ephemeral = {
        r.idempotency_key
        for r in (*core.active.values(), *core.recent.values())
        if not r.durable and r.idempotency_key is not None
    }
    return _view(
        core.record.state.value,
        core.next_seq,
        core.snapshot_json,
        core.revision,
        list(core.active.values()),
        [list(core.queued(lane)) for lane in range(3)],
        {k: v for k, v in core.keys.items() if k not in ephemeral},
    )


async def durable_view(store: Store, session_id: str) -> SessionView:
    """The session as the store holds it."""
    stored = await store.load_session(session_id)
    if stored is None:
        raise LookupError(session_id)
    return _view(
        stored.record.state.value,
        stored.record.next_seq,
        stored.snapshot_json,
        stored.snapshot_revision,
        stored.inputs,
        _stored_lanes(stored.inputs),
        dict(stored.idempotency),
    )

