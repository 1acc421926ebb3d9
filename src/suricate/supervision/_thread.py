"""Executors written as blocking code, hosted on their own thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

from ..actors._bridge import ThreadHost, call_in_thread

__all__ = ["ThreadExecutor"]


class ThreadExecutor:
    """Hosts a blocking ``fn(turn) -> TurnResult | None`` on a pykka thread.

    Each turn runs on the executor's own daemon thread, so a slow call never
    blocks the trio loop.  A turn that outlives ``turn_timeout`` is abandoned
    (Python cannot kill a thread) and :meth:`replace` gives the executor a
    fresh thread for the next turn.
    """

    def __init__(self, fn: Callable[[Any], Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self.fn = fn
        self.name = name or f"suricate-{getattr(fn, '__name__', 'executor')}"
        self._host: pykka.ActorRef[Any] | None = None

    def _ensure(self) -> pykka.ActorRef[Any]:
        if self._host is None or not self._host.is_alive():
            self._host = ThreadHost.start(self.name)
        return self._host

    async def run(self, turn: Any) -> Any:
        return await call_in_thread(self._ensure(), self.fn, turn)

    def replace(self) -> None:
        """Abandon the current thread (possibly stuck) and use a new one."""
        host, self._host = self._host, None
        if host is not None:
            host.stop(block=False)

    def close(self) -> None:
        self.replace()
