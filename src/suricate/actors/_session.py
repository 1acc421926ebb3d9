"""The session actor: the one place where a session changes.

Every mutation of a session (opening and recovery, submits, control
operations, the turns of its executor loop) is a message to this actor,
handled one at a time.  Each handler asks the pure
:class:`~suricate._model.SessionCore` for a step and passes it to
:meth:`SessionActor._commit`, the one commit path: the core settles the step
(adds the responses to peer requests it brings to an outcome and, when the
loop is ready and work is due, stages the next turn in the same write-set),
the write-set is committed, and only then is the step adopted in memory, its
events published, the waiters of inputs it made terminal resolved, and the
turn it staged handed to the loop or the turn it ends cancelled.  A failed
commit raises :class:`StoreError` to the caller with the core untouched.

Run control lives here alone.  The actor hands each staged turn to the loop
(:meth:`ExecutorLoop.offer`) with a cancel scope it keeps; cancelling a turn
is cancelling that scope.  The loop answers every turn with one
:class:`TurnReport` and says when it is ready for the next.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import InputNotFound, InputRejected, NotReady, StoreError
from .._events import Event, EventBus
from .._kernel import Actor, ActorRef
from .._model import (
    AbandonReason,
    Durability,
    InputRecord,
    OutboxMessage,
    Outcome,
    RecoveryReport,
    RunState,
    SessionCore,
    SessionOp,
    SessionState,
    Step,
    StoredSession,
    decode_json,
    encode_json,
    expand_events,
    recover_step,
)
from ..store._protocol import Store
from ..supervision._loop import (
    CheckpointTurn,
    ExecutorLoop,
    LoopExited,
    LoopGaveUp,
    LoopReady,
    TurnEnd,
    TurnReport,
    TurnStart,
)
from ..supervision._thread import as_executor
from ._messages import (
    AddDeadLetter,
    Attach,
    Cancel,
    Detach,
    ListInputs,
    MarkDead,
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
from ._registry import CompletionRegistry, Register, Resolve, Waiter

if TYPE_CHECKING:
    from ._comms import Comms

__all__ = ["SessionActor", "SessionStats"]

log = logging.getLogger("suricate.session")


#: Events logged at WARNING (or ERROR); the rest at DEBUG.
_NOTABLE = {
    "run.failed": logging.WARNING,
    "supervisor.crashed": logging.WARNING,
    "supervisor.gave_up": logging.ERROR,
    "dead_letter": logging.WARNING,
}


def _log(kind: str, session_id: str, input_id: str | None, run_id: str | None, data: Any) -> None:
    """Log one event through ``logging`` with its ids as structured context."""
    level = _NOTABLE.get(kind, logging.DEBUG)
    if kind == "input.abandoned" and data.get("reason") in ("max_attempts", "failed"):
        level = logging.WARNING
    if log.isEnabledFor(level):
        inputs = input_id
        if inputs is None and isinstance(data.get("inputs"), list):
            # A run's line names every input of the run.
            inputs = ",".join(data["inputs"]) or None
        log.log(
            level,
            "%s session=%s input=%s run=%s %s",
            kind, session_id, inputs, run_id, data,
            extra={
                "suricate_event": kind,
                "session_id": session_id,
                "input_id": input_id,
                "run_id": run_id,
            },
        )


def _notable(step: Step) -> bool:
    """The step has an event logged above DEBUG (so built even with no subscriber)."""
    for part in step.events:
        if isinstance(part, tuple) and part[0] in _NOTABLE:
            return True
    for record in step.records:
        if record.reason is AbandonReason.MAX_ATTEMPTS or record.reason is AbandonReason.FAILED:
            return True
    return False


@attrs.frozen(kw_only=True)
class SessionStats:
    """A snapshot of one session's queues, turn and supervision."""

    session_id: str
    state: SessionState
    inputs: dict[str, int]
    """Non-terminal inputs by state, and queued inputs per lane (``lane_*``)."""
    running_run_id: str | None
    restarts: int
    crashes: int
    mailbox_depth: int
    messages_processed: int



class SessionActor(Actor):
    """Owns one :class:`SessionCore`, and the run control of its session."""

    actor_mailbox_size = 4096

    def __init__(
        self,
        core: SessionCore,
        *,
        store: Store,
        registry: ActorRef[CompletionRegistry],
        bus: EventBus,
        new_id: Callable[[], str],
        loop_nursery: trio.Nursery,
        rng: random.Random,
        comms: Comms | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.registry = registry
        self.bus = bus
        self.new_id = new_id
        self.loop_nursery = loop_nursery
        self.rng = rng
        self.comms = comms
        self.ref: ActorRef[SessionActor] | None = None
        self.loop: ExecutorLoop | None = None
        self.restarts = 0
        self.crashes = 0
        self.closing = False
        """The runtime is shutting down: no turn starts any more."""
        self._ready = False  # the loop waits for a turn
        self._turn: TurnStart | None = None  # handed to the loop, not yet reported
        self._unsettled: TurnStart | None = None  # reported, but its settling failed
        self._registry_backlog: list[Any] = []  # rarely used: a list costs an idle session least
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Submit: self._submit,
            SubmitWait: self._submit_wait,
            Wait: self._wait,
            Read: self._read,
            MarkDead: self._mark_dead,
            AddDeadLetter: self._add_dead_letter,
            Open: self._open,
            Operate: self._operate,
            Recycle: self._recycle,
            Recover: self._recover,
            Attach: self._attach,
            Retry: self._retry,
            Cancel: self._cancel,
            ListInputs: self._list_inputs,
            Detach: self._detach,
            LoopReady: self._loop_ready,
            TurnReport: self._turn_report,
            CheckpointTurn: self._checkpoint_turn,
            LoopGaveUp: self._give_up,
            LoopExited: self._loop_exited,
        }

    @property
    def session_id(self) -> str:
        return self.core.id

    async def actor_receive(self, message: Any) -> Any:
        try:
            return await self._handlers[type(message)](message)
        finally:
            if self._registry_backlog:
                await self._flush_registry()

    # -- the one commit path ---------------------------------------------------------

    def _may_start(self) -> bool:
        loop = self.loop
        return self._ready and loop is not None and not loop.closing and not self.closing

    async def _commit(self, step: Step) -> Step:
        """Settle ``step``, commit it, then adopt it and carry out its effects.

        Returns the step as committed (with the responses and the turn it staged).
        """
        loop = self.loop
        step = self.core.settle(
            step,
            now=time.time(),
            start=self.new_id if self._may_start() else None,
            max_batch=loop.options.max_batch if loop is not None else 1,
        )
        write_set = step.write_set(self.core.id)
        if write_set is not None:
            # A store's commit is cancellation-atomic (the Store protocol):
            # cancelled, it committed nothing; returned, memory follows it.
            try:
                await self.store.commit(write_set)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"commit failed: {exc!r}") from exc
        before = self.core.run
        staged = isinstance(step.run, RunState) and (
            before is None or before.run_id != step.run.run_id
        )
        self.core.apply(step)
        self._effects(step, staged)
        return step

    def _effects(self, step: Step, staged: bool) -> None:
        if step.events and (
            self.bus.active or log.isEnabledFor(logging.DEBUG) or _notable(step)
        ):
            events = list(expand_events(step.events))
            if self.bus.active:
                now = time.time()
                sid = self.core.id
                for kind, input_id, run_id, data in events:
                    self.bus.publish(
                        Event(
                            kind=kind, session_id=sid, input_id=input_id, run_id=run_id,
                            data=data, at=now,
                        )
                    )
            for kind, input_id, run_id, data in events:
                _log(kind, self.core.id, input_id, run_id, data)
        outcomes: list[Outcome] = [o for r in step.terminal() if (o := r.outcome()) is not None]
        if outcomes:
            self._tell_registry(Resolve(self.core.id, outcomes))
        turn = self._turn
        if turn is not None:
            if step.cancel_run:
                turn.scope.cancel()
            run = self.core.run
            if run is None or run.run_id != turn.run.run_id:
                self._turn = None  # that run is over (stopped, destroyed): its report is stale
        if staged:
            run = self.core.run
            assert run is not None and self.loop is not None
            start = TurnStart(
                run=run,
                inputs=tuple(self.core.active[i] for i in run.input_ids),
                snapshot_json=self.core.snapshot_json,
            )
            if self.closing:  # shut down while it was staged: it never runs
                start.scope.cancel()
            self._turn = start
            self._ready = False
            self.loop.offer(start)
        if step.messages and self.comms is not None:
            self.comms.notify(self.core.id, {m.target for m in step.messages}, {})

    def _tell_registry(self, message: Any) -> None:
        # FIFO order is what keeps a resolution behind the registration it
        # answers; the registry handles a message to its idle mailbox at once.
        # A full mailbox queues the message here, and so do all after it,
        # until the handler's end sends them in order.
        if not self._registry_backlog:
            try:
                self.registry.tell_nowait(message)
                return
            except trio.WouldBlock:
                pass
        self._registry_backlog.append(message)

    async def _flush_registry(self) -> None:
        backlog = self._registry_backlog
        while backlog:
            await self.registry.tell(backlog[0])
            del backlog[0]

    def emit(self, kind: str, data: Mapping[str, Any], *, run_id: str | None = None) -> None:
        _log(kind, self.core.id, None, run_id, data)
        if self.bus.active:
            self.bus.publish(
                Event(kind=kind, session_id=self.core.id, run_id=run_id, data=data, at=time.time())
            )

    # -- opening ---------------------------------------------------------------------

    async def _open(self, message: Open) -> RecoveryReport | None:
        """Create the session in the store, or recover the stored one."""
        now = time.time()
        if message.stored is None:
            await self._commit(Step(session=self.core.record, lifecycle=True))
            return None
        step = recover_step(message.stored, limits=self.core.limits, now=now)
        if not step.records:  # nothing to recover: nothing to write
            step = attrs.evolve(step, lifecycle=False, session=None)
        await self._commit(step)
        return step.reply  # type: ignore[no-any-return]

    # -- submit and read -------------------------------------------------------------

    async def _submit(self, message: Submit) -> Any:
        step = self.core.submit(
            message.input,
            input_id=self.new_id(),
            now=time.time(),
            internal=message.internal,
            outbox_id=message.outbox_id,
        )
        if step.records or step.delivered:
            await self._commit(step)
        return step.reply

    async def _mark_dead(self, message: MarkDead) -> None:
        await self._commit(Step(dead=((message.row_id, message.reason),)))

    async def _add_dead_letter(self, message: AddDeadLetter) -> None:
        await self._commit(Step(dead_letters=(message.letter,)))

    async def _record(self, input_id: str) -> InputRecord | None:
        record = self.core.lookup(input_id)
        if record is None:
            record = await self.store.load_input(self.core.id, input_id)
        return record

    async def _known(self, input_id: str) -> InputRecord:
        record = await self._record(input_id)
        if record is None:
            raise InputNotFound(f"session {self.core.id!r} has no input {input_id!r}")
        return record

    async def _retry(self, message: Retry) -> Any:
        record = await self._known(message.input_id)
        step = await self._commit(self.core.retry(record, now=time.time()))
        return step.reply

    async def _cancel(self, message: Cancel) -> Any:
        record = await self._known(message.input_id)
        step = self.core.cancel(record, now=time.time())
        if step.records:
            step = await self._commit(step)
        return step.reply

    async def _list_inputs(self, message: ListInputs) -> tuple[InputRecord, ...]:
        """Durable records from the store, ephemeral ones from memory, merged
        in admission order."""
        after_seq = -1
        if message.after is not None:
            after_seq = (await self._known(message.after)).seq
        state = message.state
        stored = await self.store.load_inputs(
            self.core.id, state=state, after_seq=after_seq, limit=message.limit
        )
        by_id = {r.input_id: r for r in stored}
        for record in (*self.core.recent.values(), *self.core.active.values()):
            if record.seq > after_seq and (state is None or record.state is state):
                if record.durability is Durability.EPHEMERAL or record.input_id in by_id:
                    by_id[record.input_id] = record  # memory follows the store
        return tuple(sorted(by_id.values(), key=lambda r: r.seq)[: message.limit])

    async def _submit_wait(self, message: SubmitWait) -> Outcome | Waiter:
        ack = await self._submit(Submit(message.input))
        return await self._wait(Wait(ack.input_id, message.waiter))

    async def _wait(self, message: Wait) -> Outcome | Waiter:
        record = await self._record(message.input_id)
        if record is None:
            raise InputNotFound(f"session {self.core.id!r} has no input {message.input_id!r}")
        outcome = record.outcome()
        if outcome is not None:
            return outcome
        waiter = message.waiter or Waiter()
        waiter.key = (self.core.id, message.input_id)
        if not waiter.withdrawn:
            self._tell_registry(Register(waiter))
        return waiter

    async def _read(self, message: Read) -> Any:
        what = message.what
        if what == "state":
            return self.core.state
        if what == "input":
            return await self._record(message.args[0])
        if what == "snapshot":
            return decode_json(self.core.snapshot_json)
        if what == "receipt":
            return await self.store.load_receipt(self.core.id, *message.args)
        if what == "core":
            return self.core
        if what == "stats":
            stats = self.ref.statistics() if self.ref is not None else None
            loop = self.loop
            return SessionStats(
                session_id=self.core.id,
                state=self.core.state,
                inputs=self.core.counts(),
                running_run_id=self.core.run.run_id if self.core.run else None,
                restarts=self.restarts + (loop.restart_count if loop else 0),
                crashes=self.crashes + (loop.crashes if loop else 0),
                mailbox_depth=stats.mailbox_depth if stats else 0,
                messages_processed=stats.processed if stats else 0,
            )
        raise ValueError(f"unknown read {what!r}")

    # -- control operations ----------------------------------------------------------

    async def _operate(self, message: Operate) -> Any:
        op = message.op
        if op not in (SessionOp.STOP, SessionOp.DESTROY):  # those end a run anyway
            await self._settle_unheld()
        step = await self._commit(self.core.operate(op, now=time.time()))
        if op in (SessionOp.STOP, SessionOp.DESTROY):
            self._unsettled = None
            self._drop_loop(kill=True)
        if op in (SessionOp.RETIRE, SessionOp.DESTROY) and self.comms is not None:
            # Rows held for a stopped session now turn into dead letters.
            self.comms.kick(self.core.id)
        return step.reply

    def _drop_loop(self, *, kill: bool) -> None:
        loop, self.loop = self.loop, None
        self._ready = False
        if loop is not None:
            self.restarts += loop.restart_count
            self.crashes += loop.crashes
            if kill:
                loop.kill()
            else:
                loop.close()

    async def _reload_source(self) -> StoredSession:
        stored = await self.store.load_session(self.core.id)
        if stored is None:
            raise StoreError(f"session {self.core.id!r} is not in the store")
        # Ephemeral inputs live only here: carry them over.
        ephemeral = tuple(
            r for r in self.core.active.values() if r.durability is Durability.EPHEMERAL
        )
        record = attrs.evolve(
            stored.record,
            next_seq=max(stored.record.next_seq, self.core.next_seq),
            next_order=max(stored.record.next_order, self.core.next_order),
        )
        return attrs.evolve(stored, record=record, inputs=stored.inputs + ephemeral)

    async def _recycle(self, message: Recycle) -> Any:
        await self._settle_unheld()
        step = await self._commit(self.core.recycle(await self._reload_source(), now=time.time()))
        return step.reply

    async def _recover(self, message: Recover) -> Any:
        if self.core.state is SessionState.DESTROYED:
            return self.core.recover(StoredSession(record=self.core.record), now=time.time()).reply
        await self._settle_unheld()
        step = await self._commit(self.core.recover(await self._reload_source(), now=time.time()))
        return step.reply

    # -- the executor loop -----------------------------------------------------------

    async def _attach(self, message: Attach) -> bool:
        if message.if_detached and self.core.attached:
            return False
        await self._settle_unheld()
        revived = self.core.state is SessionState.STOPPED
        await self._commit(self.core.operate(SessionOp.ATTACH, now=time.time()))
        if revived and self.comms is not None:
            self.comms.kick(self.core.id)
        if self.loop is not None:  # a loop still finishing after it gave up: stale now
            self._drop_loop(kill=False)
        assert self.ref is not None
        loop = ExecutorLoop(
            session=self.ref,
            session_id=self.core.id,
            run_turn=as_executor(message.executor),
            options=message.options,
            rng=self.rng,
            emit=self.emit,
        )
        self.loop = loop
        self.loop_nursery.start_soon(loop.run, name=f"executor loop {self.core.id}")
        return True

    async def _detach(self, message: Detach) -> trio.Event | None:
        loop = self.loop
        if loop is None:
            await self._commit(self.core.operate(SessionOp.DETACH, now=time.time()))
            return None
        if message.cancel and self._turn is not None:
            self._turn.scope.cancel()
        self._ready = False
        loop.close()
        return loop.exited

    async def _loop_ready(self, message: LoopReady) -> None:
        if message.loop is not self.loop or message.loop.closing:
            return
        self._ready = True
        await self._settle_unheld()
        await self._commit(Step())  # stages a turn if work is due

    async def _turn_report(self, report: TurnReport) -> bool:
        turn = self._turn
        if turn is None or turn.run.run_id != report.run_id:
            raise NotReady(self.core.state, f"run {report.run_id} is not the running turn")
        self._turn = None
        current = report.loop is self.loop
        now = time.time()
        if report.end is TurnEnd.COMMIT:
            try:
                step = self._commit_step(report, now)
            except InputRejected as exc:
                await self._settle(turn, self.core.fail_turn(
                    report.run_id, error=f"invalid turn result: {exc.reason}", now=now
                ))
                return False
            self._ready = current and report.ready
            try:
                await self._commit(step)
            except StoreError as exc:
                self._ready = False
                # Not committed: the inputs are still staged, durably.
                await self._settle(turn, self.core.fail_turn(
                    report.run_id, error=f"turn commit failed: {exc}", now=now
                ))
                return False
            return True
        self._ready = current and report.ready
        if report.end is TurnEnd.FAIL:
            assert report.error is not None
            step = self.core.fail_turn(
                report.run_id, error=report.error, now=now, terminal=report.terminal
            )
        else:
            step = self.core.interrupt_turn(report.run_id, now=now)
        await self._settle(turn, step)
        return True

    def _commit_step(self, report: TurnReport, now: float) -> Step:
        """The commit of a reported result.  Raises InputRejected for a result
        that cannot be committed (a failed run)."""
        result = report.result
        if result is None:
            return self.core.commit_turn(report.run_id, now=now)
        run = self.core._current(report.run_id)
        messages = tuple(
            OutboxMessage(
                session_id=self.core.id,
                run_id=report.run_id,
                target=m.to,
                payload_json=encode_json(m.payload, what="peer message payload"),
                reply=m.reply,
                correlation_id=m.correlation_id or (f"{report.run_id}:{n}" if m.reply else None),
            )
            for n, m in enumerate(result.messages)
        )
        return self.core.commit_turn(
            report.run_id,
            snapshot=result.snapshot,
            results=result.results_for(run.input_ids),
            messages=messages,
            now=now,
        )

    async def _settle(self, turn: TurnStart, step: Step) -> None:
        """Commit the end of a failed or interrupted run; if that commit fails,
        the run stays unsettled (durably staged) until the next chance."""
        try:
            await self._commit(step)
        except StoreError:
            self._unsettled = turn
            raise

    async def _settle_unheld(self) -> None:
        """Settle a run whose end could not be committed before: interrupted if
        its cancellation was requested, else failed."""
        turn = self._unsettled
        run = self.core.run
        if turn is None or run is None or run.run_id != turn.run.run_id:
            self._unsettled = None
            return
        now = time.time()
        if turn.scope.cancel_called:
            step = self.core.interrupt_turn(run.run_id, now=now)
        else:
            step = self.core.fail_turn(run.run_id, error="executor loop exited during the run", now=now)
        await self._commit(step)
        self._unsettled = None

    async def _checkpoint_turn(self, message: CheckpointTurn) -> tuple[InputRecord, ...]:
        turn = self._turn
        if turn is None or turn.run.run_id != message.run_id:
            raise NotReady(self.core.state, f"run {message.run_id} is not the running turn")
        if turn.scope.cancel_called:
            raise NotReady(self.core.state, f"run {message.run_id} is being cancelled")
        step = await self._commit(self.core.checkpoint(
            message.run_id, snapshot=message.snapshot, results=message.results, now=time.time()
        ))
        return step.reply  # type: ignore[no-any-return]

    async def _give_up(self, message: LoopGaveUp) -> None:
        if message.loop is not self.loop:
            return
        await self._settle_unheld()
        await self._commit(
            self.core.operate(
                SessionOp.STOP, now=time.time(), stop_reason=message.reason, keep=message.keep
            )
        )
        self._drop_loop(kill=False)

    async def _loop_exited(self, message: LoopExited) -> None:
        loop = message.loop
        try:
            if loop is self.loop:
                self._drop_loop(kill=False)
                if self._turn is not None:  # it ended without reporting (killed)
                    self._unsettled, self._turn = self._turn, None
                if self.core.attached:
                    await self._commit(self.core.operate(SessionOp.DETACH, now=time.time()))
                await self._settle_unheld()
        except StoreError as exc:
            # Nobody to answer: the run stays staged, durably and in memory,
            # and the next attach, reset, recycle or recover settles it.
            log.warning("session %s: could not settle after its loop exited: %s", self.core.id, exc)
        finally:
            loop.exited.set()

    # -- shutdown --------------------------------------------------------------------

    def begin_shutdown(self) -> ExecutorLoop | None:
        """No turn starts from here on; the loop exits after the turn in hand.
        Returns the loop to wait for.  Not a message: it takes effect between
        two steps of a handler."""
        self.closing = True
        loop = self.loop
        if loop is not None:
            self._ready = False
            loop.close()
        return loop

    def cancel_turn(self) -> None:
        """Cancel the turn in hand (shutdown past its grace): it is requeued
        without an attempt counted."""
        if self._turn is not None:
            self._turn.scope.cancel()

    def actor_stopped(self) -> None:
        self._drop_loop(kill=True)
