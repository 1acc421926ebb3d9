"""The one exception hierarchy of suricate.

Every error the runtime raises on purpose is a :class:`SuricateError`.  Where a
built-in exception has the same meaning, the class subclasses it as well, so
``except LookupError`` keeps working for code that does not know suricate.
"You closed it" (:class:`RuntimeClosed`) is kept apart from "it died under you"
(:class:`RuntimeCrashed`, :class:`ActorStopped`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorStopped",
    "IllegalTransition",
    "InputNotFound",
    "InputRejected",
    "NotReady",
    "Overloaded",
    "RecoveryCorruption",
    "RuntimeClosed",
    "RuntimeCrashed",
    "SessionDestroyed",
    "SessionNotFound",
    "StoreError",
    "StoreLocked",
    "SuricateError",
    "TerminalError",
    "WaitTimeout",
]


class SuricateError(Exception):
    """Base class of every error raised by suricate."""


class InputRejected(SuricateError, ValueError):
    """Raised by ``submit`` (and by ``Input``, ``open_session``, ``open_runtime``
    and every other public call) when the input or an argument is invalid: a
    payload that is not JSON or is too large, a bad session id, text that UTF-8
    cannot encode (a lone surrogate), an unknown handling mode, a reserved key
    or kind, a wrong type, a timeout that is not a finite number >= 0, an
    unknown keyword.  It is raised before anything is looked up or persisted:
    no state changed (``ask`` submitted nothing).  ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReady(SuricateError):
    """Raised when an operation is not allowed in the session's current
    lifecycle state (``state``), e.g. ``submit`` to a retired session or
    ``reset`` while a turn runs.  Nothing changed."""

    def __init__(self, state: Any, message: str | None = None) -> None:
        self.state = state
        name = getattr(state, "name", state)
        super().__init__(message or f"session is {name}")


class SessionDestroyed(SuricateError):
    """Raised by operations that would change a destroyed session.  Its
    records stay readable (``wait``, ``input``, ``state``, ``snapshot``)."""


class SessionNotFound(SuricateError, LookupError):
    """Raised by ``Runtime.session(id)`` for a session that is not open."""


class InputNotFound(SuricateError, LookupError):
    """Raised by ``wait`` for an input id the session has never had."""


class Overloaded(SuricateError):
    """Raised by ``submit`` when the session already holds ``max_queued``
    non-terminal inputs.  Nothing was persisted."""


class WaitTimeout(SuricateError, TimeoutError):
    """Raised when ``wait``/``ask`` (or an actor ask) outlives its timeout.
    The input itself is unaffected and may still complete."""


class StoreError(SuricateError):
    """Raised when the store failed to commit or read.  The session has been
    rolled back to its last committed state: in memory equals durable."""


class StoreLocked(StoreError):
    """Raised when another runtime owns the store's file."""


class RecoveryCorruption(StoreError):
    """Raised when stored records contradict each other or carry an unknown
    record version; recovery fails closed instead of guessing."""


class RuntimeClosed(SuricateError):
    """Raised to callers still waiting (or calling) after the runtime was left.
    Event iterators do not raise it: they end."""


class RuntimeCrashed(SuricateError):
    """Raised by ``open_runtime`` when one of its runtime-wide actors (store,
    completion registry) crashed; the cause is chained."""


class ActorStopped(SuricateError):
    """Raised when a message is sent to, or pending in, an actor that stopped."""


class TerminalError(SuricateError):
    """Raised by an executor (not by suricate) for an error that retrying
    cannot fix: a bad request, a result that will never be valid.  The
    turn's inputs are abandoned at once (``AbandonReason.FAILED``, the
    error kept), with no retry and no backoff; the executor loop is not
    crashed.  Inputs that reached a checkpoint are consumed, as after any
    failed run."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IllegalTransition(SuricateError):
    """Raised when a lifecycle event is not allowed in the current state.
    Nothing changed."""

    def __init__(self, state: Any, event: Any) -> None:
        self.state = state
        self.event = event
        super().__init__(
            f"illegal transition: {getattr(event, 'name', event)} "
            f"in state {getattr(state, 'name', state)}"
        )
