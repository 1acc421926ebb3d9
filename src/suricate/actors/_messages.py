"""Messages understood by the session actor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._model import UNCHANGED, DeadLetter, Input, InputRecord, RunState, SessionOp

if TYPE_CHECKING:
    from .._turn import TurnResult
    from ..supervision._loop import ExecutorLoop, LoopOptions

__all__ = [
    "AddDeadLetter",
    "Attach",
    "CheckpointTurn",
    "CommitTurn",
    "Detach",
    "FailTurn",
    "GiveUp",
    "InterruptTurn",
    "LoopExited",
    "MarkDead",
    "Operate",
    "Read",
    "Recover",
    "Recycle",
    "STOP",
    "Submit",
    "SubmitWait",
    "TakeTurn",
    "TurnStart",
    "Wait",
]


@attrs.frozen
class Submit:
    input: Input
    internal: bool = False
    outbox_id: int | None = None


@attrs.frozen
class AddDeadLetter:
    """Record a dead letter from outside the outbox (a malformed envelope)."""

    letter: DeadLetter


@attrs.frozen
class MarkDead:
    """Turn an outbox row addressed to this session into a dead letter."""

    row_id: int
    reason: str


@attrs.frozen
class Wait:
    """Answer the outcome of ``input_id``, or register ``waiter`` for it."""

    input_id: str
    waiter: Any = None  # Waiter | None: the caller's, so that it can withdraw it


@attrs.frozen
class SubmitWait:
    """Submit, then wait for the outcome (``ask``) in one mailbox round."""

    input: Input
    waiter: Any = None


@attrs.frozen
class Operate:
    op: SessionOp


@attrs.frozen
class Recycle:
    pass


@attrs.frozen
class Recover:
    pass


@attrs.frozen
class Read:
    what: str
    args: tuple[Any, ...] = ()


@attrs.frozen
class Attach:
    executor: Any
    options: LoopOptions


@attrs.frozen
class Detach:
    cancel: bool = False


@attrs.frozen
class TakeTurn:
    loop: ExecutorLoop
    max_batch: int = 1


@attrs.frozen
class TurnStart:
    run: RunState
    inputs: tuple[InputRecord, ...]
    snapshot_json: str | None


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()
"""Answer to ``TakeTurn``: the loop must exit (detached, stopped, replaced)."""


@attrs.frozen
class CheckpointTurn:
    run_id: str
    snapshot: Any = UNCHANGED
    results: Mapping[str, Any] | None = None


@attrs.frozen
class CommitTurn:
    run_id: str
    result: TurnResult | None


@attrs.frozen
class FailTurn:
    run_id: str
    error: str


@attrs.frozen
class InterruptTurn:
    run_id: str


@attrs.frozen
class LoopExited:
    loop: ExecutorLoop


@attrs.frozen
class GiveUp:
    loop: ExecutorLoop
    reason: str
