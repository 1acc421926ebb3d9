"""Messages understood by the session actor."""

from __future__ import annotations

from typing import Any

import attrs

from .._model import DeadLetter, Input, SessionOp, StoredSession
from ..supervision._loop import LoopOptions
from ._registry import Waiter

__all__ = [
    "AddDeadLetter",
    "Attach",
    "Cancel",
    "Detach",
    "ListInputs",
    "Retry",
    "MarkDead",
    "Open",
    "Operate",
    "Read",
    "Recover",
    "Recycle",
    "Submit",
    "SubmitWait",
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
    waiter: Waiter | None = None
    """The caller's, so that it can withdraw it."""


@attrs.frozen
class SubmitWait:
    """Submit, then wait for the outcome (``ask``) in one mailbox round."""

    input: Input
    waiter: Waiter | None = None


@attrs.frozen
class Open:
    """The session's first message: create it in the store (``stored`` is
    ``None``) or recover the stored state.  Answers the recovery report."""

    stored: StoredSession | None


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
    if_detached: bool = False
    """``ensure_attached``: do nothing (answer ``False``) if attached."""


@attrs.frozen
class Detach:
    cancel: bool = False


@attrs.frozen
class Retry:
    """Re-drive an abandoned input (``Session.retry``)."""

    input_id: str


@attrs.frozen
class Cancel:
    """Cancel one queued input (``Session.cancel``)."""

    input_id: str


@attrs.frozen
class ListInputs:
    """Records in admission order (``Session.inputs``)."""

    state: Any
    limit: int
    after: str | None
