"""The one bridge between trio and pykka's thread-hosted actors.

A trio task hands a call to a pykka ``ThreadingActor`` with ``tell`` (never
blocking the trio thread) and parks.  The actor's thread runs the call and
hands the outcome back with ``TrioToken.run_sync_soon``, which reschedules the
parked task.  Awaiting a pykka future inside trio does not work (its
``__await__`` blocks), and ``trio.to_thread`` per call costs more; this costs
one thread switch each way.

Nothing escapes a hosted call: a ``BaseException`` raised by user code inside
the thread is handed back to trio as an error, because one escaping a pykka
actor would make pykka stop every actor in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import outcome
import pykka
import trio

__all__ = ["ThreadHost", "call_in_thread", "call_on_host"]


class _Call:
    __slots__ = ("fn", "args", "token", "done", "pass_host")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        token: trio.lowlevel.TrioToken,
        done: Callable[[outcome.Outcome[Any]], None],
        pass_host: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.token = token
        self.done = done
        self.pass_host = pass_host


class ThreadHost(pykka.ThreadingActor):
    """A pykka actor on a daemon thread that runs calls handed over by trio."""

    use_daemon_thread = True

    def __init__(self, name: str = "suricate-thread") -> None:
        super().__init__()
        self.name = name

    def on_start(self) -> None:
        threading.current_thread().name = self.name

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, _Call):
            return None
        try:
            args = (self, *message.args) if message.pass_host else message.args
            result: outcome.Outcome[Any] = outcome.Value(message.fn(*args))
        except BaseException as exc:  # noqa: BLE001 - must never escape into pykka
            if not isinstance(exc, Exception):
                exc = RuntimeError(f"thread-hosted call raised {exc!r}")
            result = outcome.Error(exc)
        try:
            message.token.run_sync_soon(message.done, result)
        except trio.RunFinishedError:
            pass
        return None


async def call_in_thread(host: pykka.ActorRef[Any], fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on ``host``'s thread and return its result here.

    Cancelling the caller abandons the result; the thread finishes the call
    (Python cannot interrupt it).

    Raises:
        pykka.ActorDeadError: the host is dead.  Whatever ``fn`` raised.
    """
    return await _call(host, fn, args, pass_host=False)


async def call_on_host(
    host: pykka.ActorRef[Any], fn: Callable[..., Any], *args: Any, handover: bool = False
) -> Any:
    """Like :func:`call_in_thread`, but calls ``fn(host_actor, *args)``, so
    that ``fn`` can use state the host keeps on its own thread (a SQLite
    connection opened in ``on_start``).

    With ``handover``, a cancelled caller still waits for the result (the
    cancellation takes effect at its next checkpoint): for calls whose effect
    cannot be withdrawn once handed over, such as a commit.
    """
    return await _call(host, fn, args, pass_host=True, handover=handover)


async def _call(
    host: pykka.ActorRef[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    pass_host: bool,
    handover: bool = False,
) -> Any:
    task = trio.lowlevel.current_task()
    abandoned = False

    def done(result: outcome.Outcome[Any]) -> None:
        if not abandoned:
            trio.lowlevel.reschedule(task, result)

    def abort(_: Any) -> trio.lowlevel.Abort:
        nonlocal abandoned
        if handover:  # the thread answers; the cancellation waits for it
            return trio.lowlevel.Abort.FAILED
        abandoned = True
        return trio.lowlevel.Abort.SUCCEEDED

    host.tell(_Call(fn, args, trio.lowlevel.current_trio_token(), done, pass_host))
    return await trio.lowlevel.wait_task_rescheduled(abort)
