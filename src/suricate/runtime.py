"""The runtime: opens the actor tree, and the control plane over sessions.

``open_runtime`` starts the store, the completion registry and the event bus
in a system nursery, and hands out :class:`Session` handles.  Leaving it is
not a stop (DESIGN section 3): executor loops stop taking turns, turns in
flight get ``shutdown_grace`` seconds to commit and are then cancelled (their
inputs requeued without an attempt), queued inputs stay ``QUEUED``, and
pending ``wait`` calls raise :class:`RuntimeClosed`.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ._errors import (
    ActorStopped,
    WaitTimeout,
    InputRejected,
    NotReady,
    RuntimeClosed,
    RuntimeCrashed,
    SessionNotFound,
)
from ._events import EventBus, Subscription
from ._model import (
    Accepted,
    DeadLetter,
    Deduplicated,
    DestroyReport,
    Input,
    InputRecord,
    InputState,
    Limits,
    Outcome,
    Receipt,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    SessionCore,
    SessionOp,
    SessionRecord,
    SessionState,
    StopReport,
    StoredSession,
    check_session_id,
)
from ._model._values import check_text
from ._kernel import ActorRef, spawn
from .actors._comms import Comms
from .actors._sources import DrainExit, DrainMode, SourceDrain
from .actors._messages import (
    Attach,
    Cancel,
    Detach,
    ListInputs,
    Open,
    Operate,
    Read,
    Recover,
    Recycle,
    Retry,
    Submit,
    SubmitWait,
    Wait,
)
from .actors._registry import CloseAll, CompletionRegistry, Unregister, Waiter
from .actors._session import SessionActor, SessionStats
from .store import SqliteStore
from .store._memory import MemoryStore
from .store._protocol import Store
from .supervision import LoopOptions
from .supervision._policy import DEFAULT_RETRY, Backoff, RestartPolicy
from .supervision._loop import RUNNING_SESSION
from .supervision._thread import as_executor

__all__ = [
    "DrainExit",
    "DrainMode",
    "Runtime",
    "RuntimeStats",
    "Session",
    "SourceDrain",
    "open_runtime",
]


@attrs.frozen(kw_only=True)
class RuntimeStats:
    """A snapshot of the runtime."""

    sessions_open: int
    sessions_active: int
    """Sessions whose actor holds a task right now (the rest are passivated)."""
    waiters: int
    registry_mailbox_depth: int
    store: Any = None
    """The store's own figures (``StoreStatistics`` for SQLite: group commit
    batches, write-sets, largest batch, failed write-sets), if it has any."""


class Session:
    """A handle on one open session.  Every method asks the session actor."""

    __slots__ = ("id", "recovered", "_ref", "_runtime")

    def __init__(
        self,
        session_id: str,
        ref: ActorRef[SessionActor],
        runtime: Runtime,
        recovered: RecoveryReport | None = None,
    ) -> None:
        self.id = session_id
        self.recovered = recovered
        """The report of the recovery that ran when this runtime opened the
        session (``None`` for a session it created)."""
        self._ref = ref
        self._runtime = runtime

    def __repr__(self) -> str:
        return f"<Session {self.id!r}>"

    async def _ask(self, message: Any) -> Any:
        self._runtime._check_open()
        try:
            return await self._ref.ask(message)
        except ActorStopped:
            raise RuntimeClosed("the runtime is closed") from None

    async def submit(self, input_or_payload: Any, **input_fields: Any) -> Accepted | Deduplicated:
        """Submit an :class:`Input` (or a payload plus ``Input`` fields).

        Returns once the input is durable (``Accepted``), or the idempotency key
        was seen before (``Deduplicated``).

        Raises:
            InputRejected: a bad input, or a keyword that is not an ``Input``
                field (nothing was submitted).  NotReady, SessionDestroyed,
                Overloaded, StoreError.
        """
        inp = _as_input(input_or_payload, input_fields)
        return await self._ask(Submit(inp))  # type: ignore[no-any-return]

    async def wait(self, input_id: str, *, timeout: float | None = None) -> Outcome:
        """Wait for the outcome of ``input_id``: ``Completed``, ``Abandoned``
        or ``Superseded``.  A terminal input answers at once.

        Args:
            timeout: seconds, a finite number >= 0; ``None`` waits without
                a limit.

        Raises:
            InputRejected: ``input_id`` is not a str (or not UTF-8
                encodable), or ``timeout`` is not a finite number >= 0.
            InputNotFound: the session never had that input.
            WaitTimeout: not terminal within ``timeout`` seconds.
            RuntimeClosed: the runtime was left while waiting.
        """
        check_text(input_id, "input_id")
        _check_timeout(timeout)
        waiter = Waiter()
        return await self._await(Wait(input_id, waiter), waiter, timeout)

    async def _await(
        self, message: Wait | SubmitWait, waiter: Waiter, timeout: float | None
    ) -> Outcome:
        """Send ``message`` (which carries ``waiter``) and wait for the outcome."""
        try:
            answer = await self._ask(message)
            if not isinstance(answer, Waiter):
                waiter.resolve(answer)  # answered at once, never registered
            return await waiter.wait(timeout)
        finally:
            await self._withdraw(waiter)

    async def _withdraw(self, waiter: Waiter) -> None:
        """Leave no waiter behind a caller that stopped waiting (timed out or
        cancelled, also while its message was still in the session's mailbox)."""
        if waiter.event.is_set():
            return
        waiter.withdrawn = True  # a Register still on its way is ignored
        if waiter.key[0]:  # the session has seen it: it may be registered
            with trio.CancelScope(shield=True):
                try:
                    await self._runtime._registry.ask(Unregister(waiter))
                except ActorStopped:
                    pass

    async def ask(
        self, input_or_payload: Any, *, timeout: float | None = None, **input_fields: Any
    ) -> Outcome:
        """``submit`` then ``wait`` for the input's outcome (one round trip).

        Every argument is checked before anything is submitted.

        Raises:
            InputRejected: a bad input, or ``timeout`` is not a finite number
                >= 0 (nothing was submitted).  And what ``submit`` and
                ``wait`` raise.
        """
        _check_timeout(timeout)
        inp = _as_input(input_or_payload, input_fields)
        waiter = Waiter()
        return await self._await(SubmitWait(inp, waiter), waiter, timeout)

    async def attach(
        self,
        executor: Any,
        *,
        restart: RestartPolicy | None = None,
        retry: Backoff | None = DEFAULT_RETRY,
        turn_timeout: float | None = None,
        max_batch: int = 1,
    ) -> None:
        """Attach an executor: a loop starts running the session's turns.

        Args:
            executor: ``async def executor(turn)``, an object with an async
                ``run(turn)``, or a plain function (hosted on a thread).
            restart: how the loop is restarted after a crash.
            retry: delay before the next turn after a failed run; by default
                ``Backoff(initial=1.0, multiplier=2.0, maximum=60.0,
                jitter=0.2)``; ``None`` retries at once.
            turn_timeout: a turn running longer is a crash.
            max_batch: how many ``QUEUE`` inputs one turn may take.

        Raises:
            NotReady: already attached.  SessionDestroyed.  InputRejected: bad
                arguments (nothing changed).
        """
        try:
            options = LoopOptions(
                restart=restart if restart is not None else RestartPolicy(),
                retry=retry,
                turn_timeout=turn_timeout,
                max_batch=max_batch,
            )
        except (TypeError, ValueError) as exc:
            raise InputRejected(str(exc)) from None
        as_executor(executor)  # reject non-executors before anything changes
        await self._ask(Attach(executor, options))

    async def ensure_attached(self, executor: Any, **attach_options: Any) -> bool:
        """Attach ``executor`` (with the options of :meth:`attach`) unless an
        executor is attached already.  Safe under concurrent calls: the
        session actor decides, so exactly one of them attaches.

        Returns:
            ``True`` if this call attached it, ``False`` if one was attached
            (nothing changed).

        Raises:
            SessionDestroyed.  InputRejected: bad arguments or an unknown
                option (nothing changed).
        """
        unknown = set(attach_options) - _ATTACH_OPTIONS
        if unknown:
            raise InputRejected(f"unknown attach options: {sorted(unknown)}")
        restart = attach_options.get("restart")
        try:
            options = LoopOptions(
                restart=restart if restart is not None else RestartPolicy(),
                retry=attach_options.get("retry", DEFAULT_RETRY),
                turn_timeout=attach_options.get("turn_timeout"),
                max_batch=attach_options.get("max_batch", 1),
            )
        except (TypeError, ValueError) as exc:
            raise InputRejected(str(exc)) from None
        as_executor(executor)
        return bool(await self._ask(Attach(executor, options, if_detached=True)))

    async def retry(self, input_id: str) -> Accepted:
        """Re-drive an abandoned input: it goes back to ``QUEUED`` at the tail
        of its lane with its attempts reset, the same id and idempotency key,
        its history recording the move.  Waiters of the old outcome already
        had it; ``wait`` from now on sees the new one.  Durable when it returns.

        Raises:
            InputRejected: ``input_id`` is not a str.  InputNotFound: the
                session never had that input.  NotReady: the input is not
                ``ABANDONED``, or the session takes no input (retired,
                stopped).  SessionDestroyed.  Overloaded.  StoreError.
        """
        check_text(input_id, "input_id")
        return await self._ask(Retry(input_id))  # type: ignore[no-any-return]

    async def cancel(self, input_id: str) -> Outcome:
        """Cancel one input: a ``QUEUED`` one becomes ``ABANDONED(CANCELLED)``
        and its waiters are resolved; a terminal one answers its outcome
        unchanged.

        Raises:
            InputRejected: ``input_id`` is not a str.  InputNotFound.
            NotReady: the input is ``STAGED`` or ``APPLIED`` (in a run:
                interrupt the run instead).  StoreError.
        """
        check_text(input_id, "input_id")
        return await self._ask(Cancel(input_id))  # type: ignore[no-any-return]

    async def inputs(
        self,
        *,
        state: InputState | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> tuple[InputRecord, ...]:
        """Input records in admission order, terminal ones read from the store.

        Args:
            state: only inputs in this state.
            limit: at most this many (an int from 1 to 10,000).
            after: an input id: list the inputs admitted after it (paging).

        Raises:
            InputRejected: a bad argument.  InputNotFound: ``after`` names
                no input of the session.
        """
        if state is not None and not isinstance(state, InputState):
            raise InputRejected(f"state must be an InputState or None, got {state!r}")
        if not _is_int(limit) or not 1 <= limit <= MAX_LIST:
            raise InputRejected(f"limit must be an int from 1 to {MAX_LIST}, got {limit!r}")
        if after is not None:
            check_text(after, "after")
        return await self._ask(ListInputs(state, limit, after))  # type: ignore[no-any-return]

    async def detach(self, *, cancel: bool = False) -> None:
        """Detach the executor.  A running turn is first allowed to commit,
        or with ``cancel=True`` cancelled and its inputs requeued.

        Raises:
            NotReady: called from inside this session's own turn (it would
                wait for itself).
        """
        if not isinstance(cancel, bool):
            raise InputRejected(f"cancel must be a bool, got {type(cancel).__name__}")
        if RUNNING_SESSION.get() == self.id:
            raise NotReady(
                SessionState.RUNNING, f"session {self.id!r}: detach from inside its own turn"
            )
        exited = await self._ask(Detach(cancel))
        if exited is not None:
            await exited.wait()

    async def state(self) -> SessionState:
        return await self._ask(Read("state"))  # type: ignore[no-any-return]

    async def input(self, input_id: str) -> InputRecord | None:
        """The record of one input (with its history), or ``None``.

        Raises:
            InputRejected: ``input_id`` is not a str, or not UTF-8 encodable.
        """
        check_text(input_id, "input_id")
        return await self._ask(Read("input", (input_id,)))  # type: ignore[no-any-return]

    async def snapshot(self) -> Any:
        """The committed snapshot value (JSON), or ``None``."""
        return await self._ask(Read("snapshot"))

    async def receipt(self, run_id: str, sequence: int) -> Receipt | None:
        """The receipt of boundary ``sequence`` of run ``run_id``, or ``None``.

        Raises:
            InputRejected: ``run_id`` is not a UTF-8 encodable str, or
                ``sequence`` is not an int.
        """
        check_text(run_id, "run_id")
        if not _is_int(sequence):
            raise InputRejected(f"sequence must be an int, got {type(sequence).__name__}")
        return await self._ask(Read("receipt", (run_id, sequence)))  # type: ignore[no-any-return]

    async def stats(self) -> SessionStats:
        return await self._ask(Read("stats"))  # type: ignore[no-any-return]

    async def retire(self) -> RetireReport:
        """No new input; an attached executor drains the queue, else the
        queued inputs are abandoned (``RETIRED``)."""
        return await self._ask(Operate(SessionOp.RETIRE))  # type: ignore[no-any-return]

    async def reset(self) -> ResetReport:
        """Abandon every non-terminal input (``RESET``); keeps the snapshot."""
        return await self._ask(Operate(SessionOp.RESET))  # type: ignore[no-any-return]

    async def recycle(self) -> RecycleReport:
        """Rebuild the in-memory state from the store, keeping work and waiters."""
        return await self._ask(Recycle())  # type: ignore[no-any-return]

    async def stop(self) -> StopReport:
        """Cancel a running turn, detach, abandon all (``STOPPED``)."""
        return await self._ask(Operate(SessionOp.STOP))  # type: ignore[no-any-return]

    async def destroy(self) -> DestroyReport:
        """Cancel, abandon all (``DESTROYED``); records stay readable."""
        return await self._ask(Operate(SessionOp.DESTROY))  # type: ignore[no-any-return]

    async def recover(self) -> RecoveryReport:
        """Apply the recovery rules to the stored state (DESIGN section 7)."""
        return await self._ask(Recover())  # type: ignore[no-any-return]

    def drain_from(
        self,
        source_factory: Callable[[], AsyncIterable[Any]],
        *,
        mode: DrainMode = DrainMode.TIMED,
        idle_timeout: float | None = 60.0,
        name: str | None = None,
        restart: RestartPolicy | None = None,
    ) -> SourceDrain:
        """Start draining an external source into this session.

        Args:
            source_factory: returns an async iterable of envelopes (``id``,
                ``payload``, ``async ack()``, optionally ``kind``); called
                again when a ``PERSISTENT`` drain restarts.
            mode: ``TIMED`` (exits after ``idle_timeout`` s of silence) or
                ``PERSISTENT`` (restarted per ``restart`` after a failure).
            name: names the source in idempotency keys (``suricate:source:<name>:<id>``)
                and events; give a stable name so redeliveries deduplicate
                across restarts of the process.

        Returns:
            The running :class:`SourceDrain`: ``await drain.wait()`` for its
            exit reason, ``drain.dismiss()`` to end it.

        Raises:
            InputRejected: bad arguments.  RuntimeClosed.
        """
        self._runtime._check_open()
        if not callable(source_factory):
            raise InputRejected("source_factory must be callable")
        if not isinstance(mode, DrainMode):
            raise InputRejected(f"mode must be a DrainMode, got {mode!r}")
        _check_timeout(idle_timeout, "idle_timeout")
        if mode is DrainMode.TIMED and (idle_timeout is None or idle_timeout <= 0):
            raise InputRejected("a TIMED drain needs an idle_timeout > 0")
        if name is not None:
            check_text(name, "name")
        if restart is not None and not isinstance(restart, RestartPolicy):
            raise InputRejected(f"restart must be a RestartPolicy, got {type(restart).__name__}")
        drain = SourceDrain(
            session_id=self.id,
            ref=self._ref,
            factory=source_factory,
            name=name or str(getattr(source_factory, "__name__", "source")),
            mode=mode,
            idle_timeout=idle_timeout,
            restart=restart or RestartPolicy(),
            bus=self._runtime._bus,
            rng=self._runtime._rng,
        )
        self._runtime._sources.add(drain)
        self._runtime._nursery.start_soon(self._runtime._run_source, drain)
        return drain


_ATTACH_OPTIONS = frozenset({"restart", "retry", "turn_timeout", "max_batch"})
MAX_LIST = 10_000
"""The largest page ``Session.inputs`` returns."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_timeout(timeout: object, what: str = "timeout") -> None:
    """``None``, or a finite number of seconds >= 0 (``inf`` is refused:
    ``None`` is how to say "no limit")."""
    if timeout is None:
        return
    if not _is_number(timeout) or not math.isfinite(timeout) or timeout < 0:  # type: ignore[arg-type,operator]
        raise InputRejected(f"{what} must be None or a finite number >= 0, got {timeout!r}")


def _as_input(value: Any, fields: dict[str, Any]) -> Input:
    if "input_id" in fields:
        raise InputRejected("input_id is set by the runtime")
    if isinstance(value, Input):
        if value.input_id is not None:
            raise InputRejected("input_id is set by the runtime")
        if fields:
            try:
                return attrs.evolve(value, **fields)
            except TypeError as exc:
                raise InputRejected(str(exc)) from None
        return value
    try:
        return Input(value, **fields)
    except TypeError as exc:
        raise InputRejected(str(exc)) from None


class Runtime:
    """Hosts sessions.  Get one from :func:`open_runtime`."""

    def __init__(
        self,
        *,
        store: Store,
        nursery: trio.Nursery,
        loop_nursery: trio.Nursery,
        registry: ActorRef[CompletionRegistry],
        registry_actor: CompletionRegistry,
        bus: EventBus,
        limits: Limits,
        new_id: Callable[[], str],
        rng: random.Random,
    ) -> None:
        self.store = store
        self._nursery = nursery
        self._loop_nursery = loop_nursery
        self._registry = registry
        self._registry_actor = registry_actor
        self._actors: dict[str, SessionActor] = {}
        self._bus = bus
        self.limits = limits
        self._new_id = new_id
        self._rng = rng
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, trio.Event] = {}
        self._comms = Comms(store, nursery, bus)
        self._sources: set[SourceDrain] = set()
        self.closed = False

    async def _run_source(self, drain: SourceDrain) -> None:
        try:
            await drain.run()
        finally:
            self._sources.discard(drain)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")

    async def open_session(self, session_id: str) -> Session:
        """Create a session, or load (and recover) a persisted one.  Idempotent.

        Raises:
            InputRejected: a bad session id.  StoreError, RecoveryCorruption.
        """
        check_session_id(session_id)
        self._check_open()
        while True:
            session = self._sessions.get(session_id)
            if session is not None:
                return session
            opening = self._opening.get(session_id)
            if opening is None:
                break
            await opening.wait()
            self._check_open()
        self._opening[session_id] = done = trio.Event()
        try:
            stored = await self.store.load_session(session_id)
            if stored is None:
                now = time.time()
                record = SessionRecord(session_id=session_id, created_at=now, updated_at=now)
                core = SessionCore(StoredSession(record=record), self.limits)
            else:
                # Recovery runs as the actor's first message: one commit path.
                core = SessionCore(StoredSession(record=stored.record), self.limits)
            actor = SessionActor(
                core,
                store=self.store,
                registry=self._registry,
                bus=self._bus,
                new_id=self._new_id,
                loop_nursery=self._loop_nursery,
                rng=self._rng,
                comms=self._comms,
            )
            ref = spawn(actor, self._nursery, name=f"session {session_id}")
            actor.ref = ref
            try:
                report = await ref.ask(Open(stored))
            except BaseException:
                ref.stop()
                raise
            session = Session(session_id, ref, self, report)
            self._sessions[session_id] = session
            self._actors[session_id] = actor
            self._comms.add(session_id, ref)
            return session
        finally:
            del self._opening[session_id]
            done.set()

    def session(self, session_id: str) -> Session:
        """The handle of an open session.

        Raises:
            SessionNotFound: the session is not open in this runtime.
        """
        check_session_id(session_id)
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"session {session_id!r} is not open") from None

    async def dead_letters(self) -> list[DeadLetter]:
        """Every message that could not be delivered, with the reason, oldest first."""
        self._check_open()
        return await self.store.dead_letters()

    def sessions(self) -> list[Session]:
        """Every open session, in the order they were opened."""
        return list(self._sessions.values())

    def events(
        self, session_id: str | None = None, kinds: Collection[str] | None = None
    ) -> Subscription:
        """Subscribe to events (an async context manager and iterator).

        The subscription starts when it is entered.  Its iteration ends when
        the runtime is left; one entered (or iterated) after that ends at once.

        Raises:
            InputRejected: a bad ``session_id``, or ``kinds`` is not a
                collection of str (a bare str is refused).
        """
        if session_id is not None:
            check_session_id(session_id)
        if kinds is not None:
            if isinstance(kinds, (str, bytes)) or not isinstance(kinds, Collection):
                raise InputRejected("kinds must be a collection of str, or None")
            for kind in kinds:
                check_text(kind, "an event kind")
        return self._bus.subscribe(session_id, kinds)

    def _busy(self) -> bool:
        """Whether some open session has a turn running, due work for an
        attached executor, or outbox rows being delivered to it."""
        for actor in self._actors.values():
            core = actor.core
            if core.run is not None or actor._turn is not None:
                return True
            if actor.loop is not None and core.attached and core.has_work():
                return True
        return any(drain.running for drain in self._comms.drains.values())

    async def _undelivered(self) -> bool:
        """Whether an open session that takes input has outbox rows waiting."""
        for session_id, actor in self._actors.items():
            if actor.core.state in (SessionState.STOPPED, SessionState.DESTROYED):
                continue  # its rows wait until it is revived (or are dead)
            if await self.store.load_outbox(session_id, limit=1):
                self._comms.kick(session_id)
                return True
        return False

    async def wait_idle(self, *, timeout: float | None = None) -> None:
        """Wait until no open session has a turn running, a due input queued
        for an attached executor, or an undelivered outbox row addressed to
        it: message passing between the open sessions has settled.

        Raises:
            InputRejected: ``timeout`` is not ``None`` or a finite number >= 0.
            WaitTimeout: still busy after ``timeout`` seconds.
            RuntimeClosed.
        """
        _check_timeout(timeout)
        self._check_open()
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            quiet = 0
            while True:
                self._check_open()
                if self._busy():
                    quiet = 0
                elif await self._undelivered():
                    quiet = 0
                else:
                    quiet += 1
                    if quiet >= 2:  # twice in a row, a poll apart: settled
                        return
                await trio.sleep(IDLE_POLL)
        assert scope.cancelled_caught
        raise WaitTimeout(f"the runtime was still busy after {timeout} s")

    async def stats(self) -> RuntimeStats:
        await trio.lowlevel.checkpoint()
        registry = self._registry_actor
        return RuntimeStats(
            sessions_open=len(self._sessions),
            sessions_active=sum(1 for s in self._sessions.values() if s._ref.statistics().active),
            waiters=registry.pending(),
            registry_mailbox_depth=self._registry.statistics().mailbox_depth,
            store=_store_statistics(self.store),
        )

    async def _shutdown(self, grace: float) -> None:
        """The shutdown protocol: no turn starts; turns in flight get ``grace``
        seconds to commit, then are cancelled (requeued without an attempt)
        and their ends committed; then everything else closes."""
        actors = list(self._actors.values())
        loops = [loop for actor in actors if (loop := actor.begin_shutdown()) is not None]
        with trio.move_on_after(grace):
            for loop in loops:
                await loop.exited.wait()
        for actor in actors:
            actor.cancel_turn()
        with trio.move_on_after(SHUTDOWN_BOUND):
            for loop in loops:
                await loop.exited.wait()
        for loop in loops:
            if not loop.exited.is_set():  # a turn that ignores cancellation
                loop.kill()
        await self._comms.close()
        for drain in list(self._sources):
            drain.abort()
        for drain in list(self._sources):
            await drain.wait()
        self.closed = True
        await self._registry.tell(CloseAll())
        await self._registry.wait_idle()
        for session in self._sessions.values():
            session._ref.stop()
        for session in self._sessions.values():
            await session._ref.wait_idle()
        self._registry.stop()
        self._bus.close()


IDLE_POLL: float = 0.005
"""Seconds between two looks of ``wait_idle``."""

SHUTDOWN_BOUND: float = 10.0
"""Seconds the shutdown waits for cancelled turns to report, and for the
store to close, before it stops waiting."""


def _store_statistics(store: Any) -> Any:
    while not callable(getattr(store, "statistics", None)) and hasattr(store, "inner"):
        store = store.inner  # a wrapper such as FaultyStore
    statistics = getattr(store, "statistics", None)
    return statistics() if callable(statistics) else None


def _default_ids() -> Callable[[], str]:
    """Ids unique across runtimes: a random 64-bit prefix per runtime, then a counter."""
    prefix = uuid.uuid4().hex[:16]
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):08x}"


@asynccontextmanager
async def open_runtime(
    store: Store | str | os.PathLike[str] | None = None,
    *,
    shutdown_grace: float = 0.0,
    max_payload_bytes: int = 1 << 20,
    max_queued: int = 10_000,
    max_attempts: int = 3,
    event_buffer: int = 1024,
    seed: int | None = None,
    id_factory: Callable[[], str] | None = None,
) -> AsyncIterator[Runtime]:
    """Open a runtime over ``store``.

    Args:
        store: a :class:`Store`; ``None`` for a :class:`MemoryStore`; a path
            for the SQLite store.
        shutdown_grace: seconds turns in flight get to commit when the
            runtime is left, before they are cancelled and requeued.
        max_payload_bytes: limit on an input payload's UTF-8 JSON size.
        max_queued: limit on non-terminal inputs per session.
        max_attempts: runs an input may fail before it is abandoned.
        event_buffer: events buffered per subscriber before it lags.
        seed: seeds the random source of backoff jitter.
        id_factory: makes input and run ids (default: random UUID hex).

    An exception raised in the body propagates unchanged.  Every argument is
    checked before anything opens: the counts must be ints (not bools) > 0,
    ``shutdown_grace`` a finite number >= 0, ``seed`` an int or ``None``,
    ``id_factory`` a callable or ``None``.

    Raises:
        RuntimeCrashed: a runtime-wide actor crashed.
        InputRejected: bad arguments (nothing was opened).
        StoreError: the store could not open.
    """
    for name, count in (
        ("max_payload_bytes", max_payload_bytes),
        ("max_queued", max_queued),
        ("max_attempts", max_attempts),
        ("event_buffer", event_buffer),
    ):
        if not _is_int(count) or count <= 0:
            raise InputRejected(f"{name} must be an int > 0, got {count!r}")
    limits = Limits(
        max_payload_bytes=max_payload_bytes, max_queued=max_queued, max_attempts=max_attempts
    )
    if not _is_number(shutdown_grace) or not math.isfinite(shutdown_grace) or shutdown_grace < 0:
        raise InputRejected(f"shutdown_grace must be a finite number >= 0, got {shutdown_grace!r}")
    if seed is not None and not _is_int(seed):
        raise InputRejected(f"seed must be an int or None, got {type(seed).__name__}")
    if id_factory is not None and not callable(id_factory):
        raise InputRejected("id_factory must be callable or None")
    if store is None:
        store = MemoryStore()
    elif isinstance(store, (str, os.PathLike, Path)):
        store = SqliteStore(store)
    elif not isinstance(store, Store):
        raise InputRejected(f"not a store: {store!r}")
    body_error: BaseException | None = None
    started = False
    try:
        async with trio.open_nursery() as system:
            try:
                await store.start(system)
            except Exception as exc:
                # Opening errors are the caller's to see, as they are.
                body_error = exc
                system.cancel_scope.cancel()
                raise
            started = True
            registry_actor = CompletionRegistry()
            registry = spawn(registry_actor, system, name="completion registry")
            async with trio.open_nursery() as loops:
                runtime = Runtime(
                    store=store,
                    nursery=system,
                    loop_nursery=loops,
                    registry=registry,
                    registry_actor=registry_actor,
                    bus=EventBus(event_buffer),
                    limits=limits,
                    new_id=id_factory or _default_ids(),
                    rng=random.Random(seed),
                )
                await runtime._comms.start()
                try:
                    yield runtime
                except BaseException as exc:
                    body_error = exc
                # Shielded against a cancelled body (or a crash elsewhere), and
                # bounded: leaving always returns.
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(shutdown_grace + 2 * SHUTDOWN_BOUND):
                        await runtime._shutdown(shutdown_grace)
                runtime._bus.close()  # also when the shutdown ran out of time
                loops.cancel_scope.cancel()
            await _close_store(store)
            started = False
            system.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        internal = _without(group, body_error)
        if internal is None and body_error is None:
            # Cancelled before the body began: the enclosing scope takes it.
            raise _leaves(group)[0] from None
        if internal is None and body_error is not None:
            raise body_error from None
        if isinstance(internal, KeyboardInterrupt):
            raise internal from None
        if internal is not None:
            raise RuntimeCrashed(f"the runtime crashed: {internal!r}") from internal
    finally:
        if started:  # left by a crash or a cancellation: release the store all the same
            await _close_store(store)
    if body_error is not None:
        raise body_error


async def _close_store(store: Store) -> None:
    """Close ``store`` whatever is cancelling the caller, within a bound."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(SHUTDOWN_BOUND):
            await store.aclose()


def _without(group: BaseExceptionGroup[Any], error: BaseException | None) -> BaseException | None:
    """What ``group`` holds besides ``error`` and cancellation, if anything."""
    rest = [e for e in _leaves(group) if e is not error and not isinstance(e, trio.Cancelled)]
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else BaseExceptionGroup("runtime failures", rest)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out

