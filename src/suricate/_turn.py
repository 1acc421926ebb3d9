"""What executors see and return: turns, results, peer messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, Union

import attrs

from ._errors import InputRejected, SuricateError
from ._model import UNCHANGED, Input

__all__ = [
    "Checkpointer",
    "Executor",
    "ExecutorExit",
    "Fatal",
    "PeerMessage",
    "Turn",
    "TurnResult",
]


class ExecutorExit(Exception):
    """Raise from an executor to end its loop normally.

    The current turn's inputs go back to the head of their lanes without an
    attempt counted.  A ``PERMANENT`` restart policy starts the loop again;
    ``TRANSIENT`` and ``TEMPORARY`` do not.
    """


class Fatal(SuricateError):
    """Raise from an executor to mark a crash of its loop (not a failed run):
    the supervisor restarts the loop or gives up, per its policy."""


def _check_target(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise InputRejected("PeerMessage.to must be a session id")


@attrs.frozen
class PeerMessage:
    """A message to another session, committed with the turn that sends it.

    With ``reply=True`` it is a request: the target's outcome for it comes
    back to the sending session as a ``peer_response`` input carrying the
    same ``correlation_id`` (one is made up when none is given).
    """

    to: str = attrs.field(validator=_check_target)
    payload: Any
    reply: bool = attrs.field(default=False, kw_only=True)
    correlation_id: str | None = attrs.field(default=None, kw_only=True)


def _check_results(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise InputRejected(
            f"TurnResult.results must be a mapping of input id to result, got {type(value).__name__}"
        )


def _check_messages(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise InputRejected(
            f"TurnResult.messages must be a list of PeerMessage, got {type(value).__name__}"
        )
    for message in value:
        if not isinstance(message, PeerMessage):
            raise InputRejected(
                f"TurnResult.messages must hold PeerMessage values, got {type(message).__name__}"
            )


@attrs.frozen(kw_only=True)
class TurnResult:
    """What a turn commits.

    Args:
        snapshot: the session's new snapshot (omit to leave it unchanged).
        results: a result per input id of the turn.
        result: one result for every input of the turn.
        messages: peer messages, committed with the turn.
    """

    snapshot: Any = UNCHANGED
    results: Mapping[str, Any] | None = attrs.field(default=None, validator=_check_results)
    result: Any = UNCHANGED
    messages: Sequence[PeerMessage] = attrs.field(default=(), validator=_check_messages)

    def results_for(self, input_ids: Sequence[str]) -> dict[str, Any] | None:
        if self.results is not None and self.result is not UNCHANGED:
            raise InputRejected("give either results or result, not both")
        if self.result is not UNCHANGED:
            return {i: self.result for i in input_ids}
        return None if self.results is None else dict(self.results)


class Checkpointer(Protocol):
    """Commits a boundary of a running turn (the executor loop provides it)."""

    def __call__(
        self, turn: Turn, snapshot: Any, results: Mapping[str, Any] | None
    ) -> Awaitable[list[Input]]: ...


class Turn:
    """One run of an executor over one or more inputs of a session."""

    __slots__ = ("run_id", "session_id", "inputs", "snapshot", "attempt", "_checkpoint")

    def __init__(
        self,
        *,
        run_id: str,
        session_id: str,
        inputs: list[Input],
        snapshot: Any,
        attempt: int,
        checkpoint: Checkpointer | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.inputs = inputs
        self.snapshot = snapshot
        self.attempt = attempt
        self._checkpoint = checkpoint

    def __repr__(self) -> str:
        return f"<Turn {self.run_id} of {self.session_id!r}: {len(self.inputs)} inputs>"

    async def checkpoint(
        self, *, snapshot: Any = UNCHANGED, results: Mapping[str, Any] | None = None
    ) -> list[Input]:
        """Commit a boundary: the turn's inputs so far become ``APPLIED``
        (with ``results``), ``snapshot`` is committed, a receipt is written.

        Returns:
            The ``STEER`` inputs that arrived meanwhile; they join this turn.
        """
        if self._checkpoint is None:
            raise RuntimeError("this turn is not running in an executor loop")
        joined = await self._checkpoint(self, snapshot, results)
        self.inputs.extend(joined)
        if snapshot is not UNCHANGED:
            self.snapshot = snapshot
        return joined


class _RunExecutor(Protocol):
    async def run(self, turn: Turn) -> TurnResult | None: ...


Executor = Union[Callable[[Turn], Awaitable["TurnResult | None"]], _RunExecutor]
