"""The session actor: the one place where a session changes.

Every mutation of a session (submits, control operations, the turns of its
executor loop) is a message to this actor, handled one at a time.  Each
handler asks the pure :class:`~suricate._model.SessionCore` for a step,
commits the step's write-set to the store, and only then adopts the step in
memory, publishes its events, resolves the waiters of inputs it made terminal
and wakes or cancels the executor loop.  A failed commit raises
:class:`StoreError` to the caller with the core untouched.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._errors import InputNotFound, InputRejected, NotReady, StoreError
from .._events import Event, EventBus
from .._model import (
    Abandoned,
    Completed,
    Durability,
    InputRecord,
    OutboxMessage,
    Outcome,
    RunState,
    SessionCore,
    SessionOp,
    SessionState,
    Step,
    StoredSession,
    decode_json,
    encode_json,
)
from ..store import Store
from ._actor import Actor, ActorRef
from ._messages import (
    STOP,
    AddDeadLetter,
    Attach,
    CheckpointTurn,
    CommitTurn,
    Detach,
    FailTurn,
    GiveUp,
    InterruptTurn,
    LoopExited,
    MarkDead,
    Operate,
    Read,
    Recover,
    Recycle,
    Submit,
    SubmitWait,
    TakeTurn,
    TurnStart,
    Wait,
)
from ._registry import CompletionRegistry, Register, Resolve, Waiter

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
    if kind == "input.abandoned" and data.get("reason") == "max_attempts":
        level = logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s session=%s input=%s run=%s %s",
            kind, session_id, input_id, run_id, data,
            extra={
                "suricate_event": kind,
                "session_id": session_id,
                "input_id": input_id,
                "run_id": run_id,
            },
        )


def _response_payload(input_id: str, outcome: Outcome) -> dict[str, Any]:
    """The payload of a ``peer_response``: the request's outcome, as JSON."""
    if isinstance(outcome, Completed):
        return {"outcome": "completed", "request_input_id": input_id, "result": outcome.result}
    if isinstance(outcome, Abandoned):
        return {
            "outcome": "abandoned",
            "request_input_id": input_id,
            "reason": outcome.reason.value,
            "error": outcome.error,
        }
    return {"outcome": "superseded", "request_input_id": input_id, "by": outcome.by}


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
    """Owns one :class:`SessionCore`."""

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
    ) -> None:
        self.core = core
        self.store = store
        self.registry = registry
        self.bus = bus
        self.new_id = new_id
        self.loop_nursery = loop_nursery
        self.rng = rng
        self.loop: Any = None  # ExecutorLoop | None
        self.comms: Any = None  # Comms | None, set by the runtime
        self.ref: ActorRef[SessionActor] | None = None
        self.restarts = 0
        self.crashes = 0
        self._cancelling: str | None = None  # the run whose cancellation was requested
        self._cancel_all = False  # shutting down: every turn is cancelled
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Submit: self._submit,
            MarkDead: self._mark_dead,
            AddDeadLetter: self._add_dead_letter,
            Wait: self._wait,
            SubmitWait: self._submit_wait,
            Read: self._read,
            TakeTurn: self._take_turn,
            CommitTurn: self._commit_turn,
            FailTurn: self._fail_turn,
            InterruptTurn: self._interrupt_turn,
            CheckpointTurn: self._checkpoint_turn,
            Operate: self._operate,
            Attach: self._attach,
            Detach: self._detach,
            LoopExited: self._loop_exited,
            GiveUp: self._give_up,
            Recycle: self._recycle,
            Recover: self._recover,
        }

    @property
    def session_id(self) -> str:
        return self.core.id

    async def actor_receive(self, message: Any) -> Any:
        return await self._handlers[type(message)](message)

    # -- the commit-then-adopt discipline ------------------------------------------

    async def _commit(self, step: Step) -> None:
        """Commit ``step``, then adopt it and carry out its effects."""
        replies = self._replies(step)
        if replies:
            step = attrs.evolve(step, messages=step.messages + replies)
        write_set = step.write_set(self.core.id)
        if write_set is not None:
            # No shield needed: a session actor's task is only ever cancelled
            # when the runtime itself is torn down after a crash, and then its
            # memory is discarded; the store, the one truth, is recovered.
            try:
                await self.store.commit(write_set)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"commit failed: {exc!r}") from exc
        self.core.apply(step)
        await self._effects(step)
        if step.messages and self.comms is not None:
            self.comms.notify(self.core.id, {m.target for m in step.messages}, {})

    def _replies(self, step: Step) -> tuple[OutboxMessage, ...]:
        """Responses to peer requests that this step brings to their outcome.

        They are committed in the same transaction as the outcome itself: a
        requester always hears back, exactly once, whatever the outcome.
        """
        out = []
        for record in step.records:
            if not record.state.terminal or record.kind != "peer_message":
                continue
            metadata = record.metadata
            if not (isinstance(metadata, dict) and metadata.get("reply")):
                continue
            outcome = record.outcome()
            assert outcome is not None
            out.append(
                OutboxMessage(
                    session_id=self.core.id,
                    run_id=record.run_id,
                    target=metadata["from"],
                    payload_json=encode_json(_response_payload(record.input_id, outcome)),
                    kind="peer_response",
                    correlation_id=record.correlation_id,
                )
            )
        return tuple(out)

    async def _effects(self, step: Step) -> None:
        if step.events:
            if self.bus.active:
                now = time.time()
                sid = self.core.id
                for kind, input_id, run_id, data in step.events:
                    self.bus.publish(
                        Event(
                            kind=kind, session_id=sid, input_id=input_id, run_id=run_id,
                            data=data, at=now,
                        )
                    )
            if log.isEnabledFor(logging.DEBUG) or any(e[0] in _NOTABLE for e in step.events):
                for kind, input_id, run_id, data in step.events:
                    _log(kind, self.core.id, input_id, run_id, data)
        outcomes: list[Outcome] = [o for r in step.terminal() if (o := r.outcome()) is not None]
        if outcomes:
            await self._tell_registry(Resolve(self.core.id, outcomes))
        loop = self.loop
        if loop is not None:
            if step.cancel_run:
                self._cancel_run(loop)
            if step.wake:
                loop.wake()

    def _cancel_run(self, loop: Any) -> None:
        """Cancel the running turn (unless its commit has started); from here
        on the run may not commit a boundary, and an orphan is interrupted."""
        run = self.core.run
        if run is not None and loop.cancel_turn(run.run_id):
            self._cancelling = run.run_id

    def cancel_loop(self) -> None:
        """Cancel the running turn and stop the loop (runtime shutdown).  Not
        a message: it runs between two steps of a handler, so a turn staged
        by a handler still committing is cancelled when that commit returns."""
        self._cancel_all = True
        loop = self.loop
        if loop is not None:
            self._cancel_run(loop)
            loop.stop()

    async def _tell_registry(self, message: Any) -> None:
        # Without a scheduling round when there is room: FIFO order is what
        # keeps a resolution behind the registration it answers.
        try:
            self.registry.tell_nowait(message)
        except trio.WouldBlock:
            await self.registry.tell(message)

    def emit(self, kind: str, data: Any, *, run_id: str | None = None) -> None:
        _log(kind, self.core.id, None, run_id, data)
        if self.bus.active:
            self.bus.publish(
                Event(kind=kind, session_id=self.core.id, run_id=run_id, data=data, at=time.time())
            )

    # -- submit and read -------------------------------------------------------------

    async def _submit(self, message: Submit) -> Any:
        loop = self.loop
        # A loop parked for work gets the input staged in its admitting commit.
        start_run = self.new_id if loop is not None and loop.parked else None
        step = self.core.submit(
            message.input,
            input_id=self.new_id(),
            now=time.time(),
            internal=message.internal,
            outbox_id=message.outbox_id,
            start_run=start_run,
        )
        if step.records or step.delivered:
            await self._commit(step)
            if isinstance(step.run, RunState):
                start = TurnStart(
                    run=step.run, inputs=step.records[:1], snapshot_json=self.core.snapshot_json
                )
                if not (loop is self.loop and loop.hand(start)):
                    # Its loop is gone meanwhile: the staged turn is an orphan,
                    # interrupted (no attempt counted) when the exit is settled.
                    self._cancelling = step.run.run_id
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
            await self._tell_registry(Register(waiter))
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
        if op not in (SessionOp.STOP, SessionOp.DESTROY):  # those cancel a run anyway
            await self._settle_orphan()
        step = self.core.operate(op, now=time.time())
        await self._commit(step)
        if op in (SessionOp.STOP, SessionOp.DESTROY):
            self._drop_loop(kill=True)
        if op in (SessionOp.RETIRE, SessionOp.DESTROY) and self.comms is not None:
            # Rows held for a stopped session now turn into dead letters.
            self.comms.kick(self.core.id)
        return step.reply

    def _drop_loop(self, *, kill: bool) -> None:
        loop, self.loop = self.loop, None
        if loop is not None:
            self.restarts += loop.restart_count
            self.crashes += loop.crashes
            if kill:
                loop.kill()
            else:
                loop.stop()

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
        await self._settle_orphan()
        step = self.core.recycle(await self._reload_source(), now=time.time())
        await self._commit(step)
        return step.reply

    async def _recover(self, message: Recover) -> Any:
        if self.core.state is SessionState.DESTROYED:
            return self.core.recover(StoredSession(record=self.core.record), now=time.time()).reply
        await self._settle_orphan()
        step = self.core.recover(await self._reload_source(), now=time.time())
        await self._commit(step)
        return step.reply

    # -- the executor loop -----------------------------------------------------------

    async def _attach(self, message: Attach) -> None:
        from ..supervision._loop import ExecutorLoop

        loop = ExecutorLoop(
            session=self.ref,  # type: ignore[arg-type]
            session_id=self.core.id,
            executor=message.executor,
            options=message.options,
            rng=self.rng,
            emit=self.emit,
        )
        await self._settle_orphan()
        revived = self.core.state is SessionState.STOPPED
        step = self.core.operate(SessionOp.ATTACH, now=time.time())
        await self._commit(step)
        if revived and self.comms is not None:
            self.comms.kick(self.core.id)
        if self.loop is not None:  # a detached loop still finishing: it is stale now
            self._drop_loop(kill=False)
        self.loop = loop
        self.loop_nursery.start_soon(loop.run, name=f"executor loop {self.core.id}")

    async def _detach(self, message: Detach) -> trio.Event | None:
        loop = self.loop
        if loop is None:
            step = self.core.operate(SessionOp.DETACH, now=time.time())
            await self._commit(step)
            return None
        if message.cancel:
            self._cancel_run(loop)
        loop.stop()
        exited: trio.Event = loop.exited
        return exited

    async def _loop_exited(self, message: LoopExited) -> None:
        loop = message.loop
        try:
            if loop is self.loop:
                self._drop_loop(kill=False)
                if self.core.attached:
                    await self._commit(self.core.operate(SessionOp.DETACH, now=time.time()))
                await self._fail_orphan("executor loop exited during the run")
        except StoreError as exc:
            # Nobody to answer: the run stays staged, durably and in memory,
            # and the next loop's first TakeTurn fails it again.
            log.warning("session %s: could not settle after its loop exited: %s", self.core.id, exc)
        finally:
            loop.exited.set()

    async def _give_up(self, message: GiveUp) -> None:
        if message.loop is not self.loop:
            return
        await self._fail_orphan(message.reason)
        step = self.core.operate(SessionOp.STOP, now=time.time(), stop_reason=message.reason)
        await self._commit(step)
        self._drop_loop(kill=False)

    async def _fail_orphan(self, error: str) -> None:
        """Fail a run whose loop is gone (it crashed before reporting); a run
        whose cancellation was requested is interrupted (no attempt counted)."""
        run = self.core.run
        if run is None:
            return
        if run.run_id == self._cancelling:
            await self._commit(self.core.interrupt_turn(run.run_id, now=time.time()))
        else:
            await self._commit(self.core.fail_turn(run.run_id, error=error, now=time.time()))

    async def _settle_orphan(self) -> None:
        """Settle a run left without a loop (settling it failed when the loop
        exited) before an operation that needs the session not running."""
        if self.loop is None:
            await self._fail_orphan("executor loop exited during the run")

    async def _take_turn(self, message: TakeTurn) -> Any:
        loop = message.loop
        if loop is not self.loop or loop.stopping:
            return STOP
        if self.core.state in (SessionState.STOPPED, SessionState.DESTROYED):
            return STOP
        await self._fail_orphan("executor loop crashed during the run")
        step = self.core.take_turn(run_id=self.new_id(), now=time.time(), max_batch=message.max_batch)
        if step.reply is None:
            return None
        await self._commit(step)
        if self._cancel_all:  # shut down while staging: the turn must not run
            self._cancel_run(loop)
        return TurnStart(run=step.reply, inputs=step.records, snapshot_json=self.core.snapshot_json)

    async def _checkpoint_turn(self, message: CheckpointTurn) -> tuple[InputRecord, ...]:
        if message.run_id == self._cancelling:
            raise NotReady(self.core.state, f"run {message.run_id} is being cancelled")
        step = self.core.checkpoint(
            message.run_id, snapshot=message.snapshot, results=message.results, now=time.time()
        )
        await self._commit(step)
        return step.reply  # type: ignore[no-any-return]

    async def _commit_turn(self, message: CommitTurn) -> bool | str:
        result = message.result
        run = self.core._current(message.run_id)
        now = time.time()
        try:
            if result is None:
                step = self.core.commit_turn(message.run_id, now=now)
            else:
                messages = tuple(
                    OutboxMessage(
                        session_id=self.core.id,
                        run_id=message.run_id,
                        target=m.to,
                        payload_json=encode_json(m.payload, what="peer message payload"),
                        reply=m.reply,
                        correlation_id=m.correlation_id
                        or (f"{message.run_id}:{n}" if m.reply else None),
                    )
                    for n, m in enumerate(result.messages)
                )
                step = self.core.commit_turn(
                    message.run_id,
                    snapshot=result.snapshot,
                    results=result.results_for(run.input_ids),
                    messages=messages,
                    now=now,
                )
        except InputRejected as exc:
            await self._commit(
                self.core.fail_turn(message.run_id, error=f"invalid turn result: {exc.reason}", now=now)
            )
            return False
        await self._commit(step)
        # Tell the loop whether to ask for the next turn right away: saves
        # it a round trip that would only find the queue empty.
        return "more" if self.core.has_work() else "idle"

    async def _fail_turn(self, message: FailTurn) -> None:
        await self._commit(self.core.fail_turn(message.run_id, error=message.error, now=time.time()))

    async def _interrupt_turn(self, message: InterruptTurn) -> None:
        await self._commit(self.core.interrupt_turn(message.run_id, now=time.time()))

    def actor_stopped(self) -> None:
        self._drop_loop(kill=True)

