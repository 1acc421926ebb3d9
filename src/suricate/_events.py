"""The runtime's event stream (DESIGN section 10).

Publishing never blocks: each subscriber has a bounded buffer; when it is
full the oldest event is dropped, and the subscriber is handed one ``lagged``
event with the number dropped before the next event it reads.

When the runtime is left the bus closes: every subscription's iteration ends
(``StopAsyncIteration``) once its buffered events are read, and a
subscription entered or iterated after the close ends at once.  Ending, not
raising, is the rule on every face (DESIGN section 16).
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import attrs
import trio

__all__ = ["Event", "EventBus", "Subscription", "EVENT_KINDS"]

EVENT_KINDS = frozenset(
    {
        "input.accepted",
        "input.staged",
        "input.applied",
        "input.requeued",
        "input.consumed",
        "input.abandoned",
        "input.superseded",
        "run.started",
        "run.committed",
        "run.failed",
        "session.state",
        "supervisor.crashed",
        "supervisor.restarted",
        "supervisor.gave_up",
        "supervisor.exited",
        "drain.exited",
        "dead_letter",
        "lagged",
    }
)


@attrs.frozen(kw_only=True)
class Event:
    """One thing that happened.  ``at`` is wall-clock time (``time.time()``)."""

    kind: str
    session_id: str | None = None
    input_id: str | None = None
    run_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)
    at: float = 0.0


class Subscription:
    """An async iterator over events, from the moment it was entered.

    Iterating it without entering it first yields nothing until the runtime
    closes, and then ends: enter it with ``async with``.
    """

    def __init__(
        self,
        bus: EventBus,
        session_id: str | None,
        kinds: Collection[str] | None,
        buffer: int,
    ) -> None:
        self._bus = bus
        self.session_id = session_id
        self.kinds = None if kinds is None else frozenset(kinds)
        self._buffer: collections.deque[Event] = collections.deque(maxlen=buffer)
        self._dropped = 0
        self._event = trio.Event()
        self._closed = False

    def _offer(self, event: Event) -> None:
        if self.session_id is not None and event.session_id != self.session_id:
            return
        if self.kinds is not None and event.kind not in self.kinds:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
        self._buffer.append(event)
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def __aenter__(self) -> Subscription:
        if self._bus.closed:
            self.close()
        else:
            self._bus._subscribers.add(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._bus._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                return Event(kind="lagged", session_id=self.session_id, data={"dropped": dropped}, at=time.time())
            if self._buffer:
                return self._buffer.popleft()
            if self._closed or self._bus.closed:
                raise StopAsyncIteration
            self._event = trio.Event()
            # Not entered: nothing is offered to it, only the close wakes it.
            waiting = self not in self._bus._subscribers
            if waiting:
                self._bus._waiting.add(self)
            try:
                await self._event.wait()
            finally:
                if waiting:
                    self._bus._waiting.discard(self)


class EventBus:
    """Fans events out to subscribers without ever blocking the publisher."""

    def __init__(self, buffer: int = 1024) -> None:
        self.buffer = buffer
        self._subscribers: set[Subscription] = set()
        self._waiting: set[Subscription] = set()
        """Subscriptions iterated without being entered: woken by the close."""
        self.closed = False

    def subscribe(
        self, session_id: str | None = None, kinds: Collection[str] | None = None
    ) -> Subscription:
        return Subscription(self, session_id, kinds, self.buffer)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber._offer(event)

    def close(self) -> None:
        """End every subscription, and any entered later."""
        self.closed = True
        for subscriber in (*self._subscribers, *self._waiting):
            subscriber.close()
        self._waiting.clear()
