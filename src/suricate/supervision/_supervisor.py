"""An OTP-style supervisor on trio.

Theory of operation
-------------------
A :class:`Supervisor` runs its children (each a :class:`ChildSpec`: an async
function and a restart type) as tasks of its own nursery, starting them in
order.  When a child returns, that is a normal exit; when it raises, a crash.
The restart type decides whether the child comes back (``PERMANENT`` always,
``TRANSIENT`` after a crash, ``TEMPORARY`` never) and the strategy decides
which children restart with it: ``ONE_FOR_ONE`` only that child,
``ONE_FOR_ALL`` every child, ``REST_FOR_ONE`` the child and those started
after it.  Children that restart together are first stopped in reverse start
order, then started again in order.

Restarts are counted in a window (:func:`may_restart`); the restart that
would exceed the policy's intensity makes the supervisor stop all children
(reverse order) and raise :class:`SupervisorGaveUp`: escalation to whoever
runs the supervisor.  Before each restart the supervisor waits the backoff
delay (:func:`next_delay`).

Stopping a child first asks it to stop (its spec's ``stop`` callable), waits
up to its ``shutdown`` seconds, then cancels it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from .._errors import SuricateError
from ._policy import Restart, RestartPolicy, Strategy, may_restart, next_delay

__all__ = ["ChildSpec", "Supervisor", "SupervisorGaveUp"]


class SupervisorGaveUp(SuricateError):
    """A supervisor exceeded its restart intensity and stopped its children."""

    def __init__(self, reason: str, last_error: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.last_error = last_error


@attrs.frozen(kw_only=True)
class ChildSpec:
    """One supervised child.

    Args:
        name: for events and errors.
        run: the child's body; returning is a normal exit, raising a crash.
        restart: when it is restarted.
        stop: asks the running child to finish (optional, not awaited).
        shutdown: seconds a stopping child gets before it is cancelled.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    restart: Restart = Restart.PERMANENT
    stop: Callable[[], None] | None = None
    shutdown: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


class _Stopped(Exception):
    """Marks the report of a child that the supervisor stopped."""


_STOPPED = _Stopped()


class _Child:
    __slots__ = ("spec", "scope", "done", "running", "stopping")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.running = False
        self.stopping = False


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Runs and restarts children per a strategy and a restart policy.

    ``emit(kind, data)`` receives ``supervisor.crashed``,
    ``supervisor.restarted`` (with the delay) and ``supervisor.gave_up``.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        policy: RestartPolicy | None = None,
        rng: random.Random | None = None,
        emit: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError("child names must be unique")
        self.children = [_Child(spec) for spec in children]
        self.strategy = strategy
        self.policy = policy or RestartPolicy()
        self.rng = rng or random.Random()
        self.emit = emit or (lambda kind, data: None)
        self.history: list[float] = []
        self.restart_count = 0
        self.crash_count = 0
        self.last_crash: BaseException | None = None
        self.stopping = False
        self._reports: trio.MemorySendChannel[tuple[_Child, BaseException | None]]
        self._nursery: trio.Nursery | None = None
        self._delay_scope: trio.CancelScope | None = None

    # -- control --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop every child (reverse order) and return from :meth:`run`; nothing restarts."""
        self.stopping = True
        if self._delay_scope is not None:  # no restart is coming: end its backoff
            self._delay_scope.cancel()
        for child in reversed(self.children):
            if child.running and child.spec.stop is not None:
                child.stopping = True
                child.spec.stop()
        if self._nursery is not None:
            self._nursery.start_soon(self._stop_children, list(self.children))

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until every child has ended for good, or raise ``SupervisorGaveUp``."""
        send, receive = trio.open_memory_channel[tuple[_Child, BaseException | None]](math.inf)
        self._reports = send
        gave_up: SupervisorGaveUp | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for child in self.children:
                    await self._start(child)
                await self._supervise(receive)
            except SupervisorGaveUp as exc:
                gave_up = exc  # raised below, outside the nursery: unwrapped
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()
        if gave_up is not None:
            raise gave_up

    async def _start(self, child: _Child) -> None:
        """Start ``child`` and return once its body has begun: children start in order."""
        assert self._nursery is not None
        child.done = trio.Event()
        child.scope = trio.CancelScope()
        child.running = True
        child.stopping = False
        await self._nursery.start(self._body, child, name=child.spec.name)

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def _body(
        self, child: _Child, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        error: BaseException | None = None
        assert child.scope is not None
        task_status.started()
        with child.scope:
            try:
                await child.spec.run()
            except Exception as exc:
                error = exc
        child.running = False
        child.done.set()
        stopped = child.stopping or child.scope.cancelled_caught
        # Always report, so the supervising loop wakes; a stopped child's end
        # is not an exit to act on.
        self._reports.send_nowait((child, _STOPPED if stopped else error))

    async def _stop_children(self, children: Sequence[_Child]) -> None:
        """Stop ``children`` one by one, last started first."""
        for child in reversed(children):
            if not child.running:
                continue
            child.stopping = True
            if child.spec.stop is not None:
                child.spec.stop()
            with trio.move_on_after(child.spec.shutdown):
                await child.done.wait()
            if child.running and child.scope is not None:
                child.scope.cancel()
                await child.done.wait()

    async def _supervise(
        self, reports: trio.MemoryReceiveChannel[tuple[_Child, BaseException | None]]
    ) -> None:
        while any(c.running for c in self.children) or reports.statistics().current_buffer_used:
            child, error = await reports.receive()
            if self.stopping or error is _STOPPED:
                continue
            if error is not None:
                self.crash_count += 1
                self.last_crash = error
                self.emit("supervisor.crashed", {"child": child.spec.name, "error": describe(error)})
            wanted = child.spec.restart is Restart.PERMANENT or (
                error is not None and child.spec.restart is Restart.TRANSIENT
            )
            if not wanted:
                continue
            now = trio.current_time()
            if not may_restart(self.policy, self.history, now):
                reason = (
                    f"more than {self.policy.max_restarts} restarts within {self.policy.within} s"
                    + (f"; last error: {describe(error)}" if error is not None else "")
                )
                self.emit("supervisor.gave_up", {"reason": reason})
                self.stopping = True
                await self._stop_children(self.children)
                raise SupervisorGaveUp(reason, error)
            group = self._group(child)
            await self._stop_children([c for c in group if c is not child])
            delay = next_delay(self.policy, self.history, now, self.rng)
            if delay > 0:
                with trio.move_on_after(delay) as self._delay_scope:
                    await trio.sleep_forever()
                self._delay_scope = None
            if self.stopping:
                continue
            self.history.append(trio.current_time())
            self.restart_count += 1
            for member in group:
                if member is child or member.spec.restart is not Restart.TEMPORARY:
                    await self._start(member)
            self.emit(
                "supervisor.restarted",
                {"child": child.spec.name, "delay": delay, "count": self.restart_count},
            )

    def _group(self, child: _Child) -> list[_Child]:
        """The children that restart with ``child``, in start order."""
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self.children)
        if self.strategy is Strategy.REST_FOR_ONE:
            return self.children[self.children.index(child) :]
        return [child]
