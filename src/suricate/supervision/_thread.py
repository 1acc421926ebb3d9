"""Executors written as blocking code, hosted on their own thread."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pykka

from .._errors import InputRejected
from .._kernel import ThreadHost, call_in_thread
from .._turn import Turn, TurnResult

__all__ = ["ThreadExecutor", "as_executor"]


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


def as_executor(executor: Any) -> Callable[[Turn], Awaitable[TurnResult | None]]:
    """Normalize an executor to one async callable.

    Raises:
        InputRejected: ``executor`` is not an async function, an object with an
            async ``run`` method, or a plain function.
    """
    run = getattr(executor, "run", None)
    if run is not None and inspect.iscoroutinefunction(run):
        return run  # type: ignore[no-any-return]
    if inspect.iscoroutinefunction(executor) or inspect.iscoroutinefunction(
        getattr(executor, "__call__", None)  # noqa: B004 (the method, not callability)
    ):
        return executor  # type: ignore[no-any-return]
    if callable(executor):
        return ThreadExecutor(executor).run
    raise InputRejected(f"not an executor: {executor!r}")
