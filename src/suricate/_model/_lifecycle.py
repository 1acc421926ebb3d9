"""The two lifecycle state machines, as data (DESIGN sections 4 and 5).

Theory of operation
-------------------
An input moves through ``QUEUED -> STAGED -> (APPLIED ->) CONSUMED`` on the
happy path.  Every move is an :class:`InputEvent`; :data:`INPUT_TRANSITIONS`
is the complete list of legal moves, and :func:`next_input_state` is the only
way the model computes a new input state, so an event that is not in the table
raises :class:`IllegalTransition` before anything changes.

A session's lifecycle is driven by operations (:class:`SessionOp`).  For every
pair of (observable state, operation) :data:`SESSION_RULES` holds a
:class:`Rule`: refuse with a typed error, do nothing, or move to a state
(possibly abandoning the non-terminal inputs).  Where the target depends on
whether an executor is attached, the rule names both.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

import attrs

from .._errors import IllegalTransition, NotReady, SessionDestroyed
from ._values import AbandonReason, InputState, SessionState

__all__ = [
    "INPUT_TRANSITIONS",
    "InputEvent",
    "Rule",
    "SESSION_RULES",
    "SessionOp",
    "next_input_state",
    "session_rule",
]


class InputEvent(enum.Enum):
    """What happens to an input; the rows of :data:`INPUT_TRANSITIONS`."""

    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow
    SUPERSEDE = "supersede"
    """A newer input of the same kind and supersession key was accepted."""
    STAGE = "stage"
    """The executor loop takes the input into a run (attempt + 1)."""
    CHECKPOINT = "checkpoint"
    """The turn committed a boundary with ``Turn.checkpoint``."""
    COMMIT = "commit"
    """The run committed."""
    FAIL_RETRY = "fail_retry"
    """The run failed or crashed and attempts remain."""
    FAIL_FINAL = "fail_final"
    """The run failed or crashed and the last attempt is spent."""
    FAIL_TERMINAL = "fail_terminal"
    """The run raised ``TerminalError``: no retry."""
    INTERRUPT = "interrupt"
    """The run was cancelled (interrupt, ``detach(cancel=True)``, shutdown, stop)."""
    ABANDON = "abandon"
    """retire without executor, reset, stop, destroy; ``cancel`` of a queued input."""
    RETRY = "retry"
    """``Session.retry``: an abandoned input is re-driven (attempts reset).
    The one event a terminal state accepts, and only on explicit request."""


Q, S, A = InputState.QUEUED, InputState.STAGED, InputState.APPLIED
E = InputEvent

INPUT_TRANSITIONS: Final[Mapping[tuple[InputState, InputEvent], InputState]] = {
    (Q, E.SUPERSEDE): InputState.SUPERSEDED,
    (Q, E.STAGE): S,
    (S, E.CHECKPOINT): A,
    (S, E.COMMIT): InputState.CONSUMED,
    (A, E.COMMIT): InputState.CONSUMED,
    (S, E.FAIL_RETRY): Q,
    (S, E.FAIL_FINAL): InputState.ABANDONED,
    # Effects of an applied input were committed at its boundary.
    (A, E.FAIL_RETRY): InputState.CONSUMED,
    (A, E.FAIL_FINAL): InputState.CONSUMED,
    (S, E.FAIL_TERMINAL): InputState.ABANDONED,
    (A, E.FAIL_TERMINAL): InputState.CONSUMED,
    (A, E.INTERRUPT): InputState.CONSUMED,
    (S, E.INTERRUPT): Q,
    (Q, E.ABANDON): InputState.ABANDONED,
    (S, E.ABANDON): InputState.ABANDONED,
    (A, E.ABANDON): InputState.ABANDONED,
    (InputState.ABANDONED, E.RETRY): Q,
}
del Q, S, A, E


def next_input_state(state: InputState, event: InputEvent) -> InputState:
    """The state an input in ``state`` moves to on ``event``.

    Raises:
        IllegalTransition: the event is not allowed in that state.
    """
    try:
        return INPUT_TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None


class SessionOp(enum.Enum):
    """Operations on a session; the columns of :data:`SESSION_RULES`."""

    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow
    SUBMIT = "submit"
    ATTACH = "attach"
    DETACH = "detach"
    RETIRE = "retire"
    RESET = "reset"
    RECYCLE = "recycle"
    STOP = "stop"
    DESTROY = "destroy"
    RECOVER = "recover"


class Effect(enum.Enum):
    """What an allowed operation does besides moving the state."""

    NONE = "none"
    ABANDON = "abandon"
    """Abandon every non-terminal input."""
    ABANDON_IF_DETACHED = "abandon_if_detached"
    """Abandon every non-terminal input unless an executor is attached (retire)."""
    RELOAD = "reload"
    """Rebuild in-memory state from the store (recycle)."""
    RECOVER = "recover"
    """Apply the recovery rules (DESIGN section 7)."""
    REPORT_ONLY = "report_only"
    """Answer with an empty report; change nothing."""


@attrs.frozen
class Rule:
    """The rule for one (state, operation) pair.

    ``refuse`` names the error class, if refused.  ``to`` is the new persisted
    state (``None``: unchanged); ``attached`` is the new attachment (``None``:
    unchanged).  ``cancel_run`` cancels a running turn first.
    """

    refuse: type[Exception] | None = None
    to: SessionState | None = None
    attached: bool | None = None
    effect: Effect = Effect.NONE
    reason: AbandonReason | None = None
    cancel_run: bool = False

    @property
    def allowed(self) -> bool:
        return self.refuse is None


I, AT, R, RT, ST, D = (
    SessionState.IDLE,
    SessionState.ATTACHED,
    SessionState.RUNNING,
    SessionState.RETIRED,
    SessionState.STOPPED,
    SessionState.DESTROYED,
)
Op = SessionOp
_refused = Rule(refuse=NotReady)
_destroyed = Rule(refuse=SessionDestroyed)
_noop = Rule()


def _abandon(to: SessionState, reason: AbandonReason, **kw: object) -> Rule:
    return Rule(to=to, effect=Effect.ABANDON, reason=reason, **kw)  # type: ignore[arg-type]


SESSION_RULES: Final[Mapping[tuple[SessionState, SessionOp], Rule]] = {
    # submit: peer_response inputs to a RETIRED session are the one exception (comms).
    **{(s, Op.SUBMIT): _noop for s in (I, AT, R)},
    (RT, Op.SUBMIT): _refused,
    (ST, Op.SUBMIT): _refused,
    (D, Op.SUBMIT): _destroyed,
    (I, Op.ATTACH): Rule(attached=True),
    (AT, Op.ATTACH): _refused,
    (R, Op.ATTACH): _refused,
    (RT, Op.ATTACH): Rule(attached=True),  # refused instead if already attached
    (ST, Op.ATTACH): Rule(to=I, attached=True),
    (D, Op.ATTACH): _destroyed,
    (I, Op.DETACH): _noop,
    (AT, Op.DETACH): Rule(attached=False),
    (R, Op.DETACH): Rule(attached=False),  # after the turn commits, or cancelled
    (RT, Op.DETACH): Rule(attached=False),
    (ST, Op.DETACH): _noop,
    (D, Op.DETACH): _destroyed,
    (I, Op.RETIRE): Rule(
        to=RT, effect=Effect.ABANDON_IF_DETACHED, reason=AbandonReason.RETIRED
    ),
    (AT, Op.RETIRE): Rule(to=RT, effect=Effect.ABANDON_IF_DETACHED, reason=AbandonReason.RETIRED),
    (R, Op.RETIRE): Rule(to=RT, effect=Effect.ABANDON_IF_DETACHED, reason=AbandonReason.RETIRED),
    (RT, Op.RETIRE): _noop,
    (ST, Op.RETIRE): Rule(to=RT, effect=Effect.ABANDON_IF_DETACHED, reason=AbandonReason.RETIRED),
    (D, Op.RETIRE): _destroyed,
    (I, Op.RESET): _abandon(I, AbandonReason.RESET),
    (AT, Op.RESET): _abandon(I, AbandonReason.RESET),
    (R, Op.RESET): _refused,
    (RT, Op.RESET): _abandon(I, AbandonReason.RESET),
    (ST, Op.RESET): _refused,
    (D, Op.RESET): _destroyed,
    **{(s, Op.RECYCLE): Rule(effect=Effect.RELOAD) for s in (I, AT, RT, ST)},
    (R, Op.RECYCLE): _refused,
    (D, Op.RECYCLE): _destroyed,
    **{
        (s, Op.STOP): _abandon(ST, AbandonReason.STOPPED, attached=False, cancel_run=True)
        for s in (I, AT, R, RT)
    },
    (ST, Op.STOP): _noop,
    (D, Op.STOP): _destroyed,
    **{
        (s, Op.DESTROY): _abandon(D, AbandonReason.DESTROYED, attached=False, cancel_run=True)
        for s in (I, AT, R, RT, ST)
    },
    (D, Op.DESTROY): _noop,
    **{(s, Op.RECOVER): Rule(effect=Effect.RECOVER) for s in (I, AT, RT, ST)},
    (R, Op.RECOVER): _refused,
    (D, Op.RECOVER): Rule(effect=Effect.REPORT_ONLY),
}
del I, AT, R, RT, ST, D, Op


def session_rule(state: SessionState, op: SessionOp) -> Rule:
    """The rule of ``op`` in ``state``; every pair is in the table."""
    return SESSION_RULES[state, op]


def refuse(state: SessionState, rule: Rule, session_id: str) -> Exception:
    """The error a refusing rule raises."""
    if rule.refuse is SessionDestroyed:
        return SessionDestroyed(f"session {session_id!r} is destroyed")
    return NotReady(state)
