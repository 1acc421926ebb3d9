"""The session reducer: every decision about one session, with no I/O.

Theory of operation
-------------------
:class:`SessionCore` holds one session's in-memory state.  Its decision
methods (``submit``, ``take_turn``, ``checkpoint``, ``commit_turn``,
``fail_turn``, ``interrupt_turn``, ``operate``, ``recover``) read that state
and return a :class:`Step`: the changed input records, the new lifecycle
record, the snapshot write, receipt and outgoing messages (together: the
store write-set), the events to publish and the reply.  They never change the
core and never read a clock: ``now`` and fresh ids are arguments.

The session actor commits ``step.write_set`` and only then calls
:meth:`SessionCore.apply`, the one method that mutates.  A failed commit
therefore leaves the core exactly at its last committed state: that is
checkpoint rollback (DESIGN section 6.4), by construction.

Lanes are three deques of ``(order, input_id)``, INTERRUPT before STEER before
QUEUE, each sorted by ``order``.  Entries whose input has left ``QUEUED`` (or
moved) are stale; readers skip them and :meth:`apply` drops them from the
heads, so no decision has to rebuild an index.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import operator
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, Final, TypeVar, Union

import attrs

from .._errors import InputRejected, NotReady, Overloaded, RecoveryCorruption
from ._lifecycle import (
    Effect,
    InputEvent,
    Rule,
    SessionOp,
    next_input_state,
    refuse,
    session_rule,
)
from ._records import (
    DeadLetter,
    OutboxMessage,
    Receipt,
    SessionRecord,
    SnapshotWrite,
    StoredSession,
    WriteSet,
    check_version,
)
from ._values import (
    RESERVED_KEY_PREFIX,
    RESERVED_KINDS,
    AbandonReason,
    Abandoned,
    Accepted,
    Completed,
    Deduplicated,
    DestroyReport,
    Durability,
    Handling,
    Input,
    InputRecord,
    InputState,
    Outcome,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    SessionState,
    StateChange,
    StopReport,
    Superseded,
    encodable,
    encode_json,
)

__all__ = ["Limits", "RunState", "SessionCore", "Step", "UNCHANGED", "check_session_id"]

MAX_SESSION_ID_LENGTH: Final = 128
INTERRUPTED: Final = "interrupted"
"""The error in the history of an input whose run was cancelled."""
PROCESS_EXITED: Final = "process exited during run"
"""The error in the history of an input whose run recovery found unfinished."""
RECENT_EPHEMERAL: Final = 1024
"""Terminal ephemeral inputs remembered for ``wait`` (they are never stored)."""


def check_session_id(session_id: object) -> str:
    """Validate a session id: a ``str`` of 1 to 128 code points without
    control characters, that UTF-8 can encode (no lone surrogate).

    Raises:
        InputRejected: anything else.
    """
    if not isinstance(session_id, str):
        raise InputRejected(f"session id must be a str, got {type(session_id).__name__}")
    if not 1 <= len(session_id) <= MAX_SESSION_ID_LENGTH:
        raise InputRejected(f"session id must have 1 to {MAX_SESSION_ID_LENGTH} characters")
    if not session_id.isprintable() and any(
        unicodedata.category(ch) == "Cc" for ch in session_id
    ):
        raise InputRejected("session id must not contain control characters")
    if not encodable(session_id):
        raise InputRejected("session id is not encodable as UTF-8 (it holds a lone surrogate)")
    return session_id


@attrs.frozen(kw_only=True)
class Limits:
    """Per-session limits, set on the runtime."""

    max_payload_bytes: int = attrs.field(default=1 << 20, validator=attrs.validators.gt(0))
    max_queued: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    max_attempts: int = attrs.field(default=3, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class RunState:
    """The turn in flight: its inputs and the boundaries it committed."""

    run_id: str
    input_ids: tuple[str, ...]
    sequence: int = 0
    started_at: float = 0.0


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

#: (kind, input_id, run_id, data) of an event to publish.
EventSpec = tuple[str, str | None, str | None, Mapping[str, Any]]
_T = TypeVar("_T", bound=attrs.AttrsInstance)


class InputEvents:
    """The ``input.*`` events of some records, built only when someone listens
    (the reducer describes its events; building them costs dicts per record)."""

    __slots__ = ("records",)

    def __init__(self, records: Sequence[InputRecord]) -> None:
        self.records = tuple(records)

    def specs(self) -> tuple[EventSpec, ...]:
        return _input_events(self.records)


class AcceptedEvent:
    """``input.accepted`` of a record just admitted, built only when someone listens."""

    __slots__ = ("record",)

    def __init__(self, record: InputRecord) -> None:
        self.record = record

    def specs(self) -> tuple[EventSpec, ...]:
        r = self.record
        return (("input.accepted", r.input_id, None, {"kind": r.kind, "handling": r.handling.value}),)


EventPart = Union[EventSpec, InputEvents, AcceptedEvent]


def expand_events(parts: Iterable[EventPart]) -> Iterator[EventSpec]:
    """The events a step describes, in order."""
    for part in parts:
        if isinstance(part, tuple):
            yield part
        else:
            yield from part.specs()



@attrs.frozen(kw_only=True)
class Step:
    """The outcome of one decision: what to commit, then what to adopt."""

    records: tuple[InputRecord, ...] = ()
    session: SessionRecord | None = None
    lifecycle: bool = False
    """The lifecycle record must be written even without durable input rows."""
    attached: bool | None = None
    run: RunState | None | _Unchanged = UNCHANGED
    snapshot: SnapshotWrite | None = None
    receipt: Receipt | None = None
    messages: tuple[OutboxMessage, ...] = ()
    events: tuple[EventPart, ...] = ()
    """What happened, described: :func:`expand_events` builds the events."""
    reply: Any = None
    cancel_run: bool = False
    """Cancel the running turn (an INTERRUPT input, stop, destroy)."""
    reload: StoredSession | None = None
    """Replace the in-memory state by this stored state (recycle, recover)."""
    delivered: tuple[int, ...] = ()
    """Outbox rows delivered by this step (a peer message admitted)."""
    dead: tuple[tuple[int, str], ...] = ()
    """Outbox rows this step turns into dead letters, with the reason."""
    dead_letters: tuple[DeadLetter, ...] = ()
    """New dead letters from outside the outbox (malformed envelopes)."""
    next_seq: int | None = None
    next_order: int | None = None
    """New admission counters (kept in memory; see ``SessionCore._load``)."""

    def write_set(self, session_id: str) -> WriteSet | None:
        """The write-set of this step, or ``None`` when nothing is durable."""
        inputs = tuple(r for r in self.records if r.durability is Durability.DURABLE)
        durable = bool(
            inputs
            or self.snapshot
            or self.receipt
            or self.messages
            or self.delivered
            or self.dead
            or self.dead_letters
        )
        if not (durable or self.lifecycle):
            return None
        return WriteSet(
            session_id=session_id,
            session=self.session if (self.lifecycle or durable) else None,
            inputs=inputs,
            snapshot=self.snapshot,
            receipt=self.receipt,
            messages=self.messages,
            delivered=self.delivered,
            dead=self.dead,
            dead_letters=self.dead_letters,
        )

    def terminal(self) -> Iterator[InputRecord]:
        """The records this step made terminal."""
        return (r for r in self.records if r.state.terminal)


def _copier(cls: type[_T]) -> Callable[[_T], _T]:
    """A function copying every field of a frozen attrs ``cls``, compiled from
    its fields: a third of the cost of ``attrs.evolve`` (which builds and
    checks a keyword dict of every field on each call).  For values the
    reducer builds itself, whose fields it has already checked."""
    lines = ["def copy(value, new=new, cls=cls, put=put):", "    out = new(cls)"]
    lines += [f"    put(out, {a.name!r}, value.{a.name})" for a in attrs.fields(cls)]
    lines.append("    return out")
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls, "put": _put}
    exec("\n".join(lines), namespace)  # noqa: S102 - the source is built from field names
    copy: Callable[[_T], _T] = namespace["copy"]
    return copy


_put: Final = object.__setattr__
_copy_record: Final = _copier(InputRecord)
_copy_step: Final = _copier(Step)


def _replaced(step: Step, **changes: Any) -> Step:
    """``step`` with ``changes``: ``attrs.evolve`` without its cost."""
    out = _copy_step(step)
    for name, value in changes.items():
        _put(out, name, value)
    return out


def _moved(
    record: InputRecord,
    event: InputEvent,
    now: float,
    *,
    cause: str | None = None,
    **changes: Any,
) -> InputRecord:
    """``record`` after ``event`` at ``now``, with ``changes`` to its fields.

    ``cause`` is the error its history entry carries: why a run it was in
    ended without committing it (a failed run's error, ``"interrupted"``,
    ``"process exited during run"``).

    The copy is made and filled before anyone sees it, so the record stays
    immutable to its readers; it carries ``stored_history``, so the store
    writes only the history entry added here (and any added since the last
    commit).
    """
    state = next_input_state(record.state, event)
    moved = _copy_record(record)
    put = _put
    for name, value in changes.items():
        put(moved, name, value)
    put(moved, "state", state)
    put(moved, "history", (*record.history, StateChange(state, now, moved.run_id, cause)))
    return moved


_EVENT_OF_STATE: Final = {
    InputState.QUEUED: "input.requeued",
    InputState.STAGED: "input.staged",
    InputState.APPLIED: "input.applied",
    InputState.CONSUMED: "input.consumed",
    InputState.SUPERSEDED: "input.superseded",
    InputState.ABANDONED: "input.abandoned",
}


def _input_events(records: Sequence[InputRecord]) -> tuple[EventSpec, ...]:
    out: list[EventSpec] = []
    for r in records:
        data: dict[str, Any] = {"state": r.state.value, "attempt": r.attempt}
        if r.reason is not None:
            data["reason"] = r.reason.value
            data["error"] = r.error
        if r.superseded_by is not None:
            data["by"] = r.superseded_by
        out.append((_EVENT_OF_STATE[r.state], r.input_id, r.run_id, data))
    return tuple(out)


_ORDER: Final = operator.attrgetter("order")
_LANE_ORDER: Final = operator.attrgetter("lane", "order")


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
    assert isinstance(outcome, Superseded)
    return {"outcome": "superseded", "request_input_id": input_id, "by": outcome.by}


def _replies(session_id: str, records: Sequence[InputRecord]) -> tuple[OutboxMessage, ...]:
    """Responses to the peer requests among ``records`` that are terminal."""
    out = []
    for record in records:
        if record.kind != "peer_message" or not record.state.terminal:
            continue
        metadata = record.metadata
        if not (isinstance(metadata, dict) and metadata.get("reply")):
            continue
        outcome = record.outcome()
        assert outcome is not None
        out.append(
            OutboxMessage(
                session_id=session_id,
                run_id=record.run_id,
                target=metadata["from"],
                payload_json=encode_json(_response_payload(record.input_id, outcome)),
                kind="peer_response",
                correlation_id=record.correlation_id,
            )
        )
    return tuple(out)


class SessionCore:
    """One session's in-memory state and the decisions about it.

    Only :meth:`apply` mutates; everything else is a pure function of the
    current state and its arguments.
    """

    __slots__ = (
        "id",
        "limits",
        "record",
        "next_seq",
        "next_order",
        "attached",
        "run",
        "snapshot_json",
        "revision",
        "active",
        "keys",
        "supersession",
        "recent",
        "_lanes",
    )

    def __init__(self, stored: StoredSession, limits: Limits) -> None:
        self.id = stored.record.session_id
        self.limits = limits
        self.attached = False
        self.run: RunState | None = None
        self.recent: collections.OrderedDict[str, InputRecord] = collections.OrderedDict()
        self._load(stored)

    def _load(self, stored: StoredSession) -> None:
        self.record = stored.record
        # The counters are kept here and written with lifecycle records; a
        # submit writes only its input row (stores derive them again on load).
        self.next_seq = stored.record.next_seq
        self.next_order = max(
            [stored.record.next_order, *(r.order + 1 for r in stored.inputs)]
        )
        self.snapshot_json = stored.snapshot_json
        self.revision = stored.snapshot_revision
        self.active: dict[str, InputRecord] = {}
        self.keys: dict[str, str] = dict(stored.idempotency)
        # (kind, supersession key) -> the non-terminal inputs that carry it.
        self.supersession: dict[tuple[str, str], set[str]] = {}
        self._lanes: tuple[collections.deque[tuple[int, str]], ...] = (
            collections.deque(),
            collections.deque(),
            collections.deque(),
        )
        for record in sorted(stored.inputs, key=lambda r: r.order):
            self._adopt(record)

    # -- observation -------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The observable lifecycle state."""
        persisted = self.record.state
        if persisted is not SessionState.IDLE:
            return persisted
        if self.run is not None:
            return SessionState.RUNNING
        return SessionState.ATTACHED if self.attached else SessionState.IDLE

    def lookup(self, input_id: str) -> InputRecord | None:
        """The in-memory record of an input (active or recent ephemeral)."""
        return self.active.get(input_id) or self.recent.get(input_id)

    def queued(self, lane: int | None = None) -> Iterator[InputRecord]:
        """Queued inputs in the order they will run (one lane, or all)."""
        lanes = self._lanes if lane is None else (self._lanes[lane],)
        for index, entries in enumerate(lanes):
            lane_no = index if lane is None else lane
            for order, input_id in entries:
                record = self.active.get(input_id)
                if (
                    record is not None
                    and record.state is InputState.QUEUED
                    and record.order == order
                    and record.lane == lane_no
                ):
                    yield record

    def has_work(self) -> bool:
        return next(self.queued(), None) is not None

    def counts(self) -> dict[str, int]:
        """Non-terminal inputs by state, and queued inputs by lane."""
        out = {s.value: 0 for s in (InputState.QUEUED, InputState.STAGED, InputState.APPLIED)}
        for record in self.active.values():
            out[record.state.value] += 1
        for name, lane in zip(("interrupt", "steer", "queue"), range(3), strict=True):
            out[f"lane_{name}"] = sum(1 for _ in self.queued(lane))
        return out

    # -- decisions ---------------------------------------------------------------

    def _rule(self, op: SessionOp) -> Rule:
        """The allowed rule of ``op`` now, or raise the table's refusal.

        A retired session draining a turn reads ``RETIRED`` but is running:
        operations that the table refuses while ``RUNNING`` are refused then too.
        """
        state = self.state
        if (
            self.run is not None
            and state is SessionState.RETIRED
            and op in (SessionOp.RESET, SessionOp.RECYCLE, SessionOp.RECOVER)
        ):
            state = SessionState.RUNNING
        rule = session_rule(state, op)
        if not rule.allowed:
            raise refuse(state, rule, self.id)
        return rule

    def _evolve_record(self, now: float, **changes: Any) -> SessionRecord:
        counters = {"next_seq": self.next_seq, "next_order": self.next_order}
        return attrs.evolve(self.record, updated_at=now, **(counters | changes))

    def submit(
        self,
        inp: Input,
        *,
        input_id: str,
        now: float,
        internal: bool = False,
        outbox_id: int | None = None,
    ) -> Step:
        """Admit ``inp``.  ``reply`` is :class:`Accepted` or :class:`Deduplicated`.

        ``outbox_id`` names the outbox row this input delivers: the row is
        marked delivered in the same commit (also when deduplicated).

        Raises:
            InputRejected, NotReady, SessionDestroyed, Overloaded.
        """
        state = self.state
        rule = session_rule(state, SessionOp.SUBMIT)
        if not rule.allowed and not (
            state is SessionState.RETIRED and inp.kind == "peer_response"
        ):
            raise refuse(state, rule, self.id)
        if not internal:
            if inp.kind in RESERVED_KINDS:
                raise InputRejected(f"kind {inp.kind!r} is reserved for the runtime")
            if inp.idempotency_key is not None and inp.idempotency_key.startswith(
                RESERVED_KEY_PREFIX
            ):
                raise InputRejected(f"idempotency keys starting {RESERVED_KEY_PREFIX!r} are reserved")
        payload_json = encode_json(inp.payload)
        size = len(payload_json.encode("utf-8"))
        if size > self.limits.max_payload_bytes:
            raise InputRejected(
                f"payload is {size} bytes, over the limit of {self.limits.max_payload_bytes}"
            )
        metadata_json = (
            None if inp.metadata is None else encode_json(dict(inp.metadata), what="metadata")
        )
        key = inp.idempotency_key
        durable = inp.durability is Durability.DURABLE
        existing = None if key is None else self.keys.get(key)
        # A durable submit is never acknowledged with an ephemeral input's id,
        # which would not survive a restart: it is admitted and takes the key.
        if existing is not None and not (durable and self._ephemeral(existing)):
            return Step(
                reply=Deduplicated(input_id=existing, existing_input_id=existing),
                delivered=() if outbox_id is None else (outbox_id,),
            )
        if len(self.active) >= self.limits.max_queued:
            raise Overloaded(
                f"session {self.id!r} holds {len(self.active)} non-terminal inputs "
                f"(max_queued={self.limits.max_queued})"
            )
        seq, order = self.next_seq, self.next_order
        record = InputRecord(
            session_id=self.id,
            input_id=input_id,
            seq=seq,
            order=order,
            kind=inp.kind,
            payload_json=payload_json,
            durability=inp.durability,
            handling=inp.handling,
            idempotency_key=key,
            supersession_key=inp.supersession_key,
            correlation_id=inp.correlation_id,
            metadata_json=metadata_json,
            submitted_at=now,
            history=(StateChange(state=InputState.QUEUED, at=now),),
        )
        records = [record]
        events: list[EventPart] = [AcceptedEvent(record)]
        if inp.supersession_key is not None:
            # Supersession acts within one durability class: an ephemeral
            # input never moves a durable one (that would write a record
            # naming an input the store never holds), nor a durable one an
            # ephemeral one.
            holders = self.supersession.get((inp.kind, inp.supersession_key), ())
            older = sorted(
                (
                    r
                    for r in map(self.active.__getitem__, holders)
                    if r.state is InputState.QUEUED and r.durability is inp.durability
                ),
                key=lambda r: r.seq,
            )
            gone = [_moved(r, InputEvent.SUPERSEDE, now, superseded_by=input_id) for r in older]
            records.extend(gone)
            events.append(InputEvents(gone))
        cancel = (
            inp.handling is Handling.INTERRUPT
            and self.run is not None
            and self.record.state is SessionState.IDLE
        )
        return Step(
            records=tuple(records),
            next_seq=seq + 1,
            next_order=order + 1,
            events=tuple(events),
            reply=Accepted(input_id=input_id),
            cancel_run=cancel,
            delivered=() if outbox_id is None else (outbox_id,),
        )

    def retry(self, record: InputRecord, *, now: float) -> Step:
        """Re-drive an abandoned input (``record``, from memory or the store):
        it goes back to ``QUEUED`` at the tail of its lane, attempts reset,
        same id and idempotency key.  ``reply`` is :class:`Accepted`.

        Raises:
            NotReady: the input is not ``ABANDONED``, or the session takes
                no input (retired, stopped).  SessionDestroyed.  Overloaded.
        """
        state = self.state
        rule = session_rule(state, SessionOp.SUBMIT)
        if not rule.allowed:
            raise refuse(state, rule, self.id)
        if record.state is not InputState.ABANDONED:
            raise NotReady(
                state,
                f"input {record.input_id} is {record.state.name}: "
                "only an ABANDONED input can be retried",
            )
        if len(self.active) >= self.limits.max_queued:
            raise Overloaded(
                f"session {self.id!r} holds {len(self.active)} non-terminal inputs "
                f"(max_queued={self.limits.max_queued})"
            )
        order = self.next_order
        again = _moved(
            record,
            InputEvent.RETRY,
            now,
            order=order,
            attempt=0,
            run_id=None,
            boundary=None,
            reason=None,
            error=None,
            result_json=None,
        )
        return Step(
            records=(again,),
            session=self._evolve_record(now, next_order=order + 1),
            next_order=order + 1,
            lifecycle=True,
            events=(InputEvents([again]),),
            reply=Accepted(input_id=record.input_id),
        )

    def cancel(self, record: InputRecord, *, now: float) -> Step:
        """Cancel one input: a ``QUEUED`` one is abandoned (``CANCELLED``); a
        terminal one answers its outcome unchanged.  ``reply`` is the outcome.

        Raises:
            NotReady: the input is ``STAGED`` or ``APPLIED`` (in a run).
        """
        outcome = record.outcome()
        if outcome is not None:
            return Step(reply=outcome)
        if record.state is not InputState.QUEUED:
            raise NotReady(
                self.state,
                f"input {record.input_id} is {record.state.name}: "
                "only a QUEUED input can be cancelled",
            )
        gone = _moved(record, InputEvent.ABANDON, now, reason=AbandonReason.CANCELLED)
        return Step(
            records=(gone,),
            session=self._evolve_record(now),
            lifecycle=True,
            events=(InputEvents([gone]),),
            reply=gone.outcome(),
        )

    def _take(self, *, only_steer: bool, max_batch: int) -> list[InputRecord]:
        taken = [r for lane in (0, 1) for r in self.queued(lane)]
        if taken or only_steer:
            return taken
        out = []
        for record in self.queued(2):
            out.append(record)
            if len(out) >= max_batch:
                break
        return out

    def _stage(self, records: Sequence[InputRecord], run_id: str, now: float) -> list[InputRecord]:
        return [
            _moved(r, InputEvent.STAGE, now, run_id=run_id, attempt=r.attempt + 1, boundary=None)
            for r in records
        ]

    def take_turn(self, *, run_id: str, now: float, max_batch: int = 1) -> Step:
        """Start the next turn, if the session may run one and has work.

        ``reply`` is the :class:`RunState` (and ``records`` the staged inputs),
        or ``None`` when there is nothing to run.
        """
        step = self.settle(Step(), now=now, start=lambda: run_id, max_batch=max_batch)
        return attrs.evolve(step, reply=step.run) if isinstance(step.run, RunState) else Step()

    def settle(
        self,
        step: Step,
        *,
        now: float,
        start: Callable[[], str] | None = None,
        max_batch: int = 1,
    ) -> Step:
        """Complete a decision before it is committed.

        Adds the responses to the peer requests that ``step`` brings to their
        outcome (committed with the outcome: a requester always hears back,
        exactly once).  With ``start`` (which makes a run id), and when the
        session after ``step`` is attached, not running, accepting turns and
        has work queued, the next turn is staged in the same step: ``run`` is
        then its :class:`RunState`.
        """
        replies = _replies(self.id, step.records)
        if replies:
            step = _replaced(step, messages=step.messages + replies)
        if start is None:
            return step
        attached = self.attached if step.attached is None else step.attached
        run = self.run if isinstance(step.run, _Unchanged) else step.run
        record = step.session or (step.reload.record if step.reload is not None else self.record)
        if not attached or run is not None:
            return step
        if record.state not in (SessionState.IDLE, SessionState.RETIRED):
            return step
        picked = self._next_after(step, max_batch)
        if not picked:
            return step
        run_id = start()
        staged = {r.input_id: r for r in self._stage(picked, run_id, now)}
        ids = tuple(staged)
        records = [staged.pop(r.input_id, r) for r in step.records]
        records.extend(staged.values())
        new_run = RunState(run_id=run_id, input_ids=ids, started_at=now)
        return _replaced(
            step,
            records=tuple(records),
            run=new_run,
            events=(
                *step.events,
                ("run.started", None, run_id, {"inputs": list(ids)}),
                InputEvents([r for r in records if r.input_id in ids]),
            ),
        )

    def _next_after(self, step: Step, max_batch: int) -> list[InputRecord]:
        """The inputs the next turn takes once ``step`` is adopted: every
        INTERRUPT and STEER input, else up to ``max_batch`` QUEUE inputs."""
        lanes_empty = not (self._lanes[0] or self._lanes[1] or self._lanes[2])
        if step.reload is None and lanes_empty:  # the usual case: only what this step queued
            fresh = [r for r in step.records if r.state is InputState.QUEUED]
            if not fresh:
                return []
            fresh.sort(key=_LANE_ORDER)
            first = fresh[0].lane
            if first < 2:
                return [r for r in fresh if r.lane < 2]
            return fresh[:max_batch]
        changed = {r.input_id: r for r in step.records}
        fresh_by_lane: tuple[list[InputRecord], ...] = ([], [], [])
        if step.reload is not None:
            base = {r.input_id: r for r in step.reload.inputs} | changed
            for r in base.values():
                if r.state is InputState.QUEUED:
                    fresh_by_lane[r.lane].append(r)
            lanes: Sequence[Sized] = ((), (), ())  # the reload replaces the lanes
        else:
            for r in changed.values():
                if r.state is InputState.QUEUED:
                    fresh_by_lane[r.lane].append(r)
            lanes = self._lanes
        taken: list[InputRecord] = []
        for lane in (0, 1, 2):
            if lane == 2 and taken:
                break
            limit = max_batch if lane == 2 else None
            new = fresh_by_lane[lane]
            if not lanes[lane]:  # the usual case: only what this step queued
                if new:
                    new.sort(key=_ORDER)
                    taken.extend(new[:limit])
                continue
            current = (r for r in self.queued(lane) if r.input_id not in changed)
            merged = heapq.merge(current, sorted(new, key=_ORDER), key=_ORDER) if new else current
            for r in merged:
                if limit is not None and len(taken) >= limit:
                    break
                taken.append(r)
        return taken

    def _current(self, run_id: str) -> RunState:
        if self.run is None or self.run.run_id != run_id:
            raise NotReady(self.state, f"run {run_id} is not the running turn")
        return self.run

    def _snapshot_write(self, snapshot: Any) -> SnapshotWrite | None:
        if snapshot is UNCHANGED:
            return None
        return SnapshotWrite(
            value_json=encode_json(snapshot, what="snapshot"), expected_revision=self.revision
        )

    def _results(self, run: RunState, results: Mapping[str, Any] | None) -> dict[str, str]:
        if results is None:
            return {}
        unknown = set(results) - set(run.input_ids)
        if unknown:
            raise InputRejected(f"results name inputs that are not in the turn: {sorted(unknown)}")
        return {k: encode_json(v, what="result") for k, v in results.items()}

    def checkpoint(
        self,
        run_id: str,
        *,
        snapshot: Any = UNCHANGED,
        results: Mapping[str, Any] | None = None,
        now: float,
    ) -> Step:
        """Commit a boundary of the running turn; hand it the steered inputs.

        ``reply`` is the list of newly staged records that join the turn.
        """
        run = self._current(run_id)
        encoded = self._results(run, results)
        sequence = run.sequence + 1
        applied = [
            _moved(
                r,
                InputEvent.CHECKPOINT,
                now,
                boundary=sequence,
                result_json=encoded.get(r.input_id, r.result_json),
            )
            for r in (self.active[i] for i in run.input_ids)
            if r.state is InputState.STAGED
        ]
        joined = self._stage(self._take(only_steer=True, max_batch=0), run_id, now)
        receipt = Receipt(
            session_id=self.id,
            run_id=run_id,
            sequence=sequence,
            input_ids=tuple(r.input_id for r in applied),
            at=now,
        )
        new_run = attrs.evolve(
            run,
            sequence=sequence,
            input_ids=run.input_ids + tuple(r.input_id for r in joined),
        )
        return Step(
            records=(*applied, *joined),
            run=new_run,
            snapshot=self._snapshot_write(snapshot),
            receipt=receipt,
            events=(InputEvents(applied), InputEvents(joined)),
            reply=joined,
        )

    def commit_turn(
        self,
        run_id: str,
        *,
        snapshot: Any = UNCHANGED,
        results: Mapping[str, Any] | None = None,
        messages: Sequence[OutboxMessage] = (),
        now: float,
    ) -> Step:
        """Commit the running turn: its inputs become ``CONSUMED``.

        Raises:
            InputRejected: a result or the snapshot is not JSON (the caller
                turns that into a failed run).
        """
        run = self._current(run_id)
        encoded = self._results(run, results)
        sequence = run.sequence + 1
        consumed = []
        for input_id in run.input_ids:
            record = self.active[input_id]
            changes: dict[str, Any] = {}
            if input_id in encoded:
                changes["result_json"] = encoded[input_id]
            if record.state is InputState.STAGED:
                changes["boundary"] = sequence
            consumed.append(_moved(record, InputEvent.COMMIT, now, **changes))
        receipt = Receipt(
            session_id=self.id,
            run_id=run_id,
            sequence=sequence,
            input_ids=tuple(r.input_id for r in consumed if r.boundary == sequence),
            at=now,
        )
        return Step(
            records=tuple(consumed),
            run=None,
            snapshot=self._snapshot_write(snapshot),
            receipt=receipt,
            messages=tuple(messages),
            events=(
                ("run.committed", None, run_id, {"sequence": sequence}),
                InputEvents(consumed),
            ),
        )

    def fail_turn(
        self, run_id: str, *, error: str, now: float, terminal: bool = False
    ) -> Step:
        """The running turn failed: requeue its inputs behind other queued
        work, or abandon them with ``MAX_ATTEMPTS`` once attempts run out.

        ``terminal`` (the executor raised ``TerminalError``): abandon them at
        once with ``FAILED``.  In every case an input the run had applied (a
        checkpoint) is consumed: its effects were committed at the boundary.
        """
        run = self._current(run_id)
        next_order = self.next_order
        records = []
        for input_id in run.input_ids:
            record = self.active[input_id]
            if terminal:
                records.append(
                    _moved(
                        record,
                        InputEvent.FAIL_TERMINAL,
                        now,
                        cause=error,
                        **(
                            {"reason": AbandonReason.FAILED, "error": error}
                            if record.state is InputState.STAGED
                            else {}
                        ),
                    )
                )
            elif record.attempt >= self.limits.max_attempts:
                records.append(
                    _moved(
                        record,
                        InputEvent.FAIL_FINAL,
                        now,
                        cause=error,
                        error=error,
                        **(
                            {"reason": AbandonReason.MAX_ATTEMPTS}
                            if record.state is InputState.STAGED
                            else {}
                        ),
                    )
                )
            elif record.state is InputState.STAGED:
                records.append(
                    _moved(
                        record, InputEvent.FAIL_RETRY, now, cause=error, order=next_order, error=error
                    )
                )
                next_order += 1
            else:
                records.append(_moved(record, InputEvent.FAIL_RETRY, now, cause=error))
        return Step(
            records=tuple(records),
            session=self._evolve_record(now, next_order=next_order),
            next_order=next_order,
            lifecycle=True,
            run=None,
            events=(
                ("run.failed", None, run_id, {"error": error, "inputs": list(run.input_ids)}),
                InputEvents(records),
            ),
        )

    def interrupt_turn(self, run_id: str, *, now: float) -> Step:
        """The running turn was cancelled before its commit: its staged
        inputs go back to the head of their lanes, attempt not counted."""
        run = self._current(run_id)
        records = [
            _moved(
                r,
                InputEvent.INTERRUPT,
                now,
                cause=INTERRUPTED,
                **({"attempt": r.attempt - 1} if r.state is InputState.STAGED else {}),
            )
            for r in (self.active[i] for i in run.input_ids)
        ]
        return Step(
            records=tuple(records),
            session=self._evolve_record(now),
            lifecycle=True,
            run=None,
            events=(
                (
                    "run.failed",
                    None,
                    run_id,
                    {"error": INTERRUPTED, "inputs": list(run.input_ids)},
                ),
                InputEvents(records),
            ),
        )

    def _abandon_all(self, reason: AbandonReason, now: float) -> list[InputRecord]:
        out = []
        for record in self.active.values():
            if record.state is InputState.APPLIED and self.run is not None:
                # Cancelled after its boundary: its effects were committed.
                out.append(_moved(record, InputEvent.INTERRUPT, now, cause=INTERRUPTED))
            else:
                cause = None if record.state is InputState.QUEUED else INTERRUPTED
                out.append(_moved(record, InputEvent.ABANDON, now, cause=cause, reason=reason))
        return out

    def _keep_all(self, now: float) -> list[InputRecord]:
        """A stop that keeps the backlog (``GiveUp.KEEP``): queued inputs stay,
        those in a run go back to the head of their lanes (attempt not counted),
        applied ones are consumed."""
        return [
            _moved(
                r,
                InputEvent.INTERRUPT,
                now,
                cause=INTERRUPTED,
                **({"attempt": r.attempt - 1} if r.state is InputState.STAGED else {}),
            )
            for r in self.active.values()
            if r.state is not InputState.QUEUED
        ]

    def operate(
        self,
        op: SessionOp,
        *,
        now: float,
        stop_reason: str | None = None,
        keep: bool = False,
    ) -> Step:
        """Apply a control operation (attach, detach, retire, reset, stop,
        destroy) per the session lifecycle table.  ``reply`` is its report.

        ``keep`` (a stop after the supervisor gave up, with ``GiveUp.KEEP``):
        the non-terminal inputs are kept queued instead of abandoned.

        Raises:
            NotReady, SessionDestroyed: the table refuses the operation.
        """
        state = self.state
        rule = self._rule(op)
        if op is SessionOp.ATTACH and state is SessionState.RETIRED and self.attached:
            raise NotReady(state, "an executor is already attached")
        records: list[InputRecord] = []
        if keep and op is SessionOp.STOP and rule.effect is Effect.ABANDON:
            records = self._keep_all(now)
        elif rule.effect is Effect.ABANDON or (
            rule.effect is Effect.ABANDON_IF_DETACHED and not self.attached
        ):
            assert rule.reason is not None
            records = self._abandon_all(rule.reason, now)
            if rule.effect is Effect.ABANDON_IF_DETACHED and self.run is not None:
                # Detached while a turn is in flight: that turn still commits.
                running = set(self.run.input_ids)
                records = [r for r in records if r.input_id not in running]
        abandoned = sum(1 for r in records if r.state is InputState.ABANDONED)
        pending = 0 if rule.effect is Effect.NONE else len(self.active) - len(records)
        record = None
        if rule.to is not None and rule.to is not self.record.state:
            record = self._evolve_record(
                now,
                state=rule.to,
                stop_reason=stop_reason if rule.to is SessionState.STOPPED else None,
            )
        elif records:
            record = self._evolve_record(now)
        reply: Any = None
        if op is SessionOp.RETIRE:
            reply = RetireReport(inputs_abandoned=abandoned, inputs_pending_drain=pending)
        elif op is SessionOp.RESET:
            reply = ResetReport(inputs_abandoned=abandoned)
        elif op is SessionOp.STOP:
            reply = StopReport(inputs_abandoned=abandoned)
        elif op is SessionOp.DESTROY:
            reply = DestroyReport(inputs_abandoned=abandoned)
        cancel = rule.cancel_run and self.run is not None
        new_state = state
        if rule.to is not None or rule.attached is not None:
            persisted = rule.to or self.record.state
            attached = self.attached if rule.attached is None else rule.attached
            if persisted is not SessionState.IDLE:
                new_state = persisted
            elif self.run is not None and not cancel:
                new_state = SessionState.RUNNING
            else:
                new_state = SessionState.ATTACHED if attached else SessionState.IDLE
        events: list[EventPart] = [InputEvents(records)]
        if new_state is not state:
            events.append(("session.state", None, None, {"from": state.value, "to": new_state.value}))
        return Step(
            records=tuple(records),
            session=record,
            lifecycle=record is not None,
            attached=rule.attached,
            run=None if cancel else UNCHANGED,
            events=tuple(events),
            reply=reply,
            cancel_run=cancel,
        )

    def recycle(self, stored: StoredSession, *, now: float) -> Step:
        """Rebuild from the store, keeping queued work and waiters."""
        self._rule(SessionOp.RECYCLE)
        _check_stored(stored)
        record = attrs.evolve(stored.record, updated_at=now)
        transferred = len(stored.inputs)
        return Step(
            session=record,
            lifecycle=True,
            reload=attrs.evolve(stored, record=record),
            reply=RecycleReport(inputs_transferred=transferred),
        )

    def recover(self, stored: StoredSession, *, now: float) -> Step:
        """Apply the recovery rules (DESIGN section 7) to ``stored``.

        ``reply`` is the :class:`RecoveryReport`; ``reload`` the recovered state.

        Raises:
            NotReady: a turn is running.  RecoveryCorruption: fail closed.
        """
        rule = self._rule(SessionOp.RECOVER)
        if rule.effect is Effect.REPORT_ONLY:
            return Step(reply=RecoveryReport())
        return recover_step(stored, limits=self.limits, now=now)

    # -- adoption ----------------------------------------------------------------

    def _ephemeral(self, input_id: str) -> bool:
        """Whether ``input_id`` is an ephemeral input still remembered.

        An id held in ``keys`` but not in memory is a durable input's: an
        ephemeral input's key is forgotten with its record."""
        record = self.lookup(input_id)
        return record is not None and record.durability is Durability.EPHEMERAL

    def _adopt(self, record: InputRecord) -> None:
        """Index one record whose new version is committed."""
        input_id = record.input_id
        previous = self.active.get(input_id)
        key = record.idempotency_key
        if key is not None:
            holder = self.keys.get(key)
            if holder is None or (
                holder != input_id and record.durable and self._ephemeral(holder)
            ):
                self.keys[key] = input_id
        if record.state.terminal:
            self.active.pop(input_id, None)
            if record.durability is Durability.EPHEMERAL:
                self.recent[input_id] = record
                if len(self.recent) > RECENT_EPHEMERAL:
                    _, evicted = self.recent.popitem(last=False)
                    # Its key lives only as long as its record is remembered:
                    # a Deduplicated must name an input that wait still knows.
                    gone = evicted.idempotency_key
                    if gone is not None and self.keys.get(gone) == evicted.input_id:
                        del self.keys[gone]
            if record.supersession_key is not None:
                skey = (record.kind, record.supersession_key)
                holders = self.supersession.get(skey)
                if holders is not None:
                    holders.discard(input_id)
                    if not holders:
                        del self.supersession[skey]
            return
        self.active[input_id] = record
        if record.supersession_key is not None:
            self.supersession.setdefault((record.kind, record.supersession_key), set()).add(input_id)
        if record.state is not InputState.QUEUED:
            return
        if previous is not None and previous.state is InputState.QUEUED and previous.order == record.order:
            return
        lane = self._lanes[record.lane]
        entry = (record.order, input_id)
        if not lane or entry > lane[-1]:
            lane.append(entry)
        elif entry < lane[0]:
            lane.appendleft(entry)
        else:
            bisect.insort(lane, entry)

    def apply(self, step: Step) -> None:
        """Adopt a committed step.  The only method that mutates the core."""
        if step.reload is not None:
            self._load(step.reload)
        if step.session is not None:
            self.record = step.session
        if step.next_seq is not None:
            self.next_seq = step.next_seq
        if step.next_order is not None:
            self.next_order = step.next_order
        for record in step.records:
            self._adopt(record)
        if step.snapshot is not None:
            self.snapshot_json = step.snapshot.value_json
            self.revision = step.snapshot.revision
        if step.attached is not None:
            self.attached = step.attached
        if not isinstance(step.run, _Unchanged):
            self.run = step.run
        for lane in self._lanes:
            while lane:
                order, input_id = lane[0]
                head = self.active.get(input_id)
                if head is not None and head.state is InputState.QUEUED and head.order == order:
                    break
                lane.popleft()


def _check_stored(stored: StoredSession) -> None:
    check_version("session", stored.record.version)
    destroyed = stored.record.state is SessionState.DESTROYED
    stopped = stored.record.state is SessionState.STOPPED
    for record in stored.inputs:
        check_version("input", record.version)
        if record.state.terminal:
            continue
        # A stopped session keeps queued inputs after its supervisor gave up
        # with GiveUp.KEEP; it never holds inputs in a run.
        if destroyed or (stopped and record.state is not InputState.QUEUED):
            raise RecoveryCorruption(
                f"session {stored.record.session_id!r} is {stored.record.state.name} "
                f"but input {record.input_id} is {record.state.name}"
            )
        if not record.payload_json:
            raise RecoveryCorruption(
                f"input {record.input_id} is {record.state.name} but has no payload"
            )


def recover_step(stored: StoredSession, *, limits: Limits, now: float) -> Step:
    """The recovery of a stored session as a step (DESIGN section 7).

    Raises:
        RecoveryCorruption: the stored records contradict each other.
    """
    _check_stored(stored)
    records: list[InputRecord] = []
    kept: list[InputRecord] = []
    requeued = abandoned = 0
    details: list[str] = []
    next_order = stored.record.next_order
    for record in sorted(stored.inputs, key=lambda r: r.order):
        state = record.state
        if state is InputState.APPLIED and (record.run_id, record.boundary) in stored.receipts:
            records.append(_moved(record, InputEvent.COMMIT, now, cause=PROCESS_EXITED))
            details.append(f"{record.input_id}: applied at a committed boundary, consumed")
            continue
        if state is InputState.QUEUED:
            kept.append(record)
            continue
        as_staged = (
            attrs.evolve(record, state=InputState.STAGED, boundary=None)
            if state is InputState.APPLIED
            else record
        )
        if as_staged.attempt >= limits.max_attempts:
            gone = _moved(
                as_staged,
                InputEvent.FAIL_FINAL,
                now,
                cause=PROCESS_EXITED,
                reason=AbandonReason.MAX_ATTEMPTS,
                error=PROCESS_EXITED,
            )
            records.append(gone)
            abandoned += 1
            details.append(f"{record.input_id}: attempts exhausted, abandoned")
        else:
            back = _moved(as_staged, InputEvent.FAIL_RETRY, now, cause=PROCESS_EXITED)
            records.append(back)
            kept.append(back)
            requeued += 1
            details.append(f"{record.input_id}: interrupted run, requeued")
    lifecycle = attrs.evolve(stored.record, next_order=next_order, updated_at=now)
    reload = attrs.evolve(stored, record=lifecycle, inputs=tuple(kept))
    report = RecoveryReport(
        inputs_recovered=len(stored.inputs),
        inputs_requeued=requeued,
        inputs_abandoned=abandoned,
        details=tuple(details),
    )
    return Step(
        records=tuple(records),
        session=lifecycle,
        lifecycle=True,
        run=None,
        events=(InputEvents(records),),
        reply=report,
        reload=reload,
    )
