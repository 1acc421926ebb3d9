"""The completion registry: callers wait here for the outcome of an input.

A waiter is registered by the session actor while the input is not terminal,
and resolved by the session actor only after the commit that made the
outcome durable has been adopted in memory (DESIGN section 6.7).  Both go
through this actor's mailbox, from the same session actor, in order: a
resolution can never overtake the registration it answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from .._errors import RuntimeClosed, WaitTimeout
from .._model import Outcome
from .._kernel import Actor

__all__ = ["CompletionRegistry", "Waiter"]


class Waiter:
    """One caller waiting for one input's outcome."""

    __slots__ = ("key", "event", "outcome", "error", "withdrawn")

    def __init__(self, key: tuple[str, str] = ("", "")) -> None:
        self.key = key
        self.event = trio.Event()
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.withdrawn = False
        """Its caller left: it is never registered (again)."""

    def resolve(self, outcome: Outcome) -> None:
        if not self.event.is_set():
            self.outcome = outcome
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self, timeout: float | None) -> Outcome:
        """Wait for the outcome.

        Raises:
            WaitTimeout: past ``timeout``.  RuntimeClosed: the runtime was left.
        """
        if timeout is None:
            await self.event.wait()
        else:
            with trio.move_on_after(timeout):
                await self.event.wait()
        if self.error is not None:
            raise self.error
        if self.outcome is None:
            raise WaitTimeout(f"input {self.key[1]} not terminal within {timeout} s")
        return self.outcome


@attrs.frozen
class Register:
    waiter: Waiter


@attrs.frozen
class Unregister:
    waiter: Waiter


@attrs.frozen
class Resolve:
    session_id: str
    outcomes: Sequence[Outcome]


@attrs.frozen
class CloseAll:
    pass


class CompletionRegistry(Actor):
    """Holds every waiter by ``(session_id, input_id)``."""

    def __init__(self) -> None:
        self.waiters: dict[tuple[str, str], set[Waiter]] = {}
        self.closed = False

    async def actor_receive(self, message: object) -> None:
        self.actor_receive_now(message)

    def actor_receive_now(self, message: object) -> None:
        if isinstance(message, Resolve):
            for outcome in message.outcomes:
                for waiter in self.waiters.pop((message.session_id, outcome.input_id), ()):
                    waiter.resolve(outcome)
        elif isinstance(message, Register):
            if message.waiter.withdrawn:
                pass
            elif self.closed:
                message.waiter.fail(RuntimeClosed("the runtime is closed"))
            else:
                self.waiters.setdefault(message.waiter.key, set()).add(message.waiter)
        elif isinstance(message, Unregister):
            key = message.waiter.key
            bucket = self.waiters.get(key)
            if bucket is not None:
                bucket.discard(message.waiter)
                if not bucket:
                    del self.waiters[key]
        elif isinstance(message, CloseAll):
            self.closed = True
            error = RuntimeClosed("the runtime was closed while waiting")
            for bucket in self.waiters.values():
                for waiter in bucket:
                    waiter.fail(error)
            self.waiters.clear()
        else:
            raise TypeError(f"unknown message {message!r}")

    def pending(self) -> int:
        return sum(len(b) for b in self.waiters.values())
