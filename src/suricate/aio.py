"""suricate for asyncio programs: the same API, as asyncio awaitables.

    async with suricate.aio.open_runtime("agent.db") as rt:
        s = await rt.open_session("alice")
        await s.attach(agent)            # an asyncio coroutine function
        print(await s.ask({"text": "hi"}))

The trio runtime runs as a *guest* on the running asyncio loop
(``trio.lowlevel.start_guest_run``): one thread, both schedulers.  Each call
hands a coroutine to trio and awaits its result as an asyncio future;
cancelling the asyncio task cancels only that call.  Executors given to
:meth:`AioSession.attach` as coroutine functions (or objects with an async
``run``) run as asyncio tasks on the asyncio loop, so asyncio clients (HTTP,
LLM SDKs) work unchanged; ``await turn.checkpoint(...)`` works from them too.
Plain functions run on their own thread, as in the trio face.  Errors are the
same typed exceptions.  Event iterators end when the runtime is left.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import outcome
import trio

from ._errors import RuntimeClosed
from ._events import Event, Subscription
from .runtime import open_runtime as open_trio_runtime

__all__ = ["AioRuntime", "AioSession", "open_runtime"]


class _Portal:
    """Runs trio coroutines from asyncio code on the same thread (guest mode)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, system: trio.Nursery
    ) -> None:
        self.loop = loop
        self.token = token
        self.system = system
        self.closed = False

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")
        future: asyncio.Future[Any] = self.loop.create_future()
        box: dict[str, Any] = {}

        def deliver(result: outcome.Outcome[Any]) -> None:
            if future.done():
                return
            if isinstance(result, outcome.Value):
                future.set_result(result.value)
            elif isinstance(result, outcome.Error):
                future.set_exception(result.error)

        async def runner() -> None:
            result: outcome.Outcome[Any] | None = None
            with trio.CancelScope() as scope:
                box["scope"] = scope
                if box.get("cancelled"):
                    scope.cancel()
                result = await outcome.acapture(fn, *args, **kwargs)
            if result is not None and not (
                isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled)
            ):
                self.loop.call_soon_threadsafe(deliver, result)

        def start() -> None:
            try:
                self.system.start_soon(runner)
            except RuntimeError:  # the runtime is gone
                self.loop.call_soon_threadsafe(
                    deliver, outcome.Error(RuntimeClosed("the runtime is closed"))
                )

        self.token.run_sync_soon(start)
        try:
            return await future
        except asyncio.CancelledError:
            # Cancel only this call: its trio task, not the runtime.
            box["cancelled"] = True
            scope = box.get("scope")
            if scope is not None:
                self.token.run_sync_soon(scope.cancel)
            raise


class _AioTurn:
    """The turn an asyncio executor sees: ``checkpoint`` is an asyncio awaitable."""

    def __init__(self, turn: Any, portal: _Portal) -> None:
        self._turn = turn
        self._portal = portal
        self.run_id = turn.run_id
        self.session_id = turn.session_id
        self.inputs = turn.inputs
        self.snapshot = turn.snapshot
        self.attempt = turn.attempt

    async def checkpoint(self, **kwargs: Any) -> Any:
        joined = await self._portal.call(self._turn.checkpoint, **kwargs)
        self.snapshot = self._turn.snapshot
        return joined


class _AsyncioExecutor:
    """Runs an asyncio coroutine function as a suricate executor."""

    def __init__(self, fn: Callable[[Any], Any], portal: _Portal) -> None:
        self.fn = fn
        self.portal = portal

    async def run(self, turn: Any) -> Any:
        loop = self.portal.loop
        done = trio.Event()
        box: dict[str, asyncio.Task[Any]] = {}
        token = self.portal.token

        def start() -> None:
            task = loop.create_task(self.fn(_AioTurn(turn, self.portal)))
            box["task"] = task
            task.add_done_callback(lambda _: token.run_sync_soon(done.set))

        loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        except trio.Cancelled:
            def cancel() -> None:
                task = box.get("task")
                if task is not None:
                    task.cancel()

            loop.call_soon_threadsafe(cancel)
            raise
        task = box["task"]
        if task.cancelled():
            raise RuntimeError("the asyncio executor task was cancelled")
        error = task.exception()
        if error is not None:
            raise error
        return task.result()


class AioSession:
    """A session handle whose methods are asyncio awaitables."""

    def __init__(self, session: Any, portal: _Portal) -> None:
        self._session = session
        self._portal = portal
        self.id: str = session.id

    def __repr__(self) -> str:
        return f"<AioSession {self.id!r}>"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self._portal.call(getattr(self._session, name), *args, **kwargs)

    async def submit(self, input_or_payload: Any, **input_fields: Any) -> Any:
        return await self._call("submit", input_or_payload, **input_fields)

    async def wait(self, input_id: str, *, timeout: float | None = None) -> Any:
        return await self._call("wait", input_id, timeout=timeout)

    async def ask(self, input_or_payload: Any, *, timeout: float | None = None, **fields: Any) -> Any:
        return await self._call("ask", input_or_payload, timeout=timeout, **fields)

    async def attach(self, executor: Any, **options: Any) -> None:
        run = getattr(executor, "run", None)
        if inspect.iscoroutinefunction(executor) or inspect.iscoroutinefunction(run):
            executor = _AsyncioExecutor(run if inspect.iscoroutinefunction(run) else executor, self._portal)
        await self._call("attach", executor, **options)

    async def ensure_attached(self, executor: Any, **options: Any) -> bool:
        run = getattr(executor, "run", None)
        if inspect.iscoroutinefunction(executor) or inspect.iscoroutinefunction(run):
            executor = _AsyncioExecutor(run if inspect.iscoroutinefunction(run) else executor, self._portal)
        return bool(await self._call("ensure_attached", executor, **options))

    async def detach(self, *, cancel: bool = False) -> None:
        await self._call("detach", cancel=cancel)

    async def retry(self, input_id: str) -> Any:
        return await self._call("retry", input_id)

    async def cancel(self, input_id: str) -> Any:
        return await self._call("cancel", input_id)

    async def inputs(
        self, *, state: Any = None, limit: int = 100, after: str | None = None
    ) -> Any:
        return await self._call("inputs", state=state, limit=limit, after=after)

    async def state(self) -> Any:
        return await self._call("state")

    async def input(self, input_id: str) -> Any:
        return await self._call("input", input_id)

    async def snapshot(self) -> Any:
        return await self._call("snapshot")

    async def receipt(self, run_id: str, sequence: int) -> Any:
        return await self._call("receipt", run_id, sequence)

    async def stats(self) -> Any:
        return await self._call("stats")

    async def retire(self) -> Any:
        return await self._call("retire")

    async def reset(self) -> Any:
        return await self._call("reset")

    async def recycle(self) -> Any:
        return await self._call("recycle")

    async def stop(self) -> Any:
        return await self._call("stop")

    async def destroy(self) -> Any:
        return await self._call("destroy")

    async def recover(self) -> Any:
        return await self._call("recover")


class _AioEvents:
    """Events as an asyncio iterator; use it as an async context manager.

    It ends (``StopAsyncIteration``) when the runtime is left; one entered
    after that ends at once.  Iterated without being entered it yields
    nothing, and ends when the runtime is left.
    """

    def __init__(self, runtime: AioRuntime, subscription: Subscription | None) -> None:
        self._runtime = runtime
        self._subscription = subscription
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._scope: trio.CancelScope | None = None
        if subscription is None:
            self._end()

    def _end(self) -> None:
        self._queue.put_nowait(None)  # read again by every later reader

    async def __aenter__(self) -> _AioEvents:
        portal = self._runtime._portal
        subscription = self._subscription
        if subscription is None:
            return self
        started = portal.loop.create_future()

        def settle() -> None:
            if not started.done():
                started.set_result(None)

        async def forward() -> None:
            try:
                with trio.CancelScope() as self._scope:
                    async with subscription as events:
                        portal.loop.call_soon_threadsafe(settle)
                        async for event in events:
                            portal.loop.call_soon_threadsafe(self._queue.put_nowait, event)
            finally:
                portal.loop.call_soon_threadsafe(self._end)
                portal.loop.call_soon_threadsafe(settle)

        def start() -> None:
            try:
                portal.system.start_soon(forward)
            except RuntimeError:  # the runtime is gone
                portal.loop.call_soon_threadsafe(self._end)
                portal.loop.call_soon_threadsafe(settle)

        try:
            portal.token.run_sync_soon(start)
        except trio.RunFinishedError:
            self._end()
            return self
        await started
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._scope is not None and not self._runtime._portal.closed:
            self._runtime._portal.token.run_sync_soon(self._scope.cancel)

    def __aiter__(self) -> _AioEvents:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class AioRuntime:
    """A runtime for asyncio code; get one from :func:`open_runtime`."""

    def __init__(self, runtime: Any, portal: _Portal) -> None:
        self._runtime = runtime
        self._portal = portal
        self._handles: dict[str, AioSession] = {}
        self._iterators: weakref.WeakSet[_AioEvents] = weakref.WeakSet()

    @property
    def store(self) -> Any:
        return self._runtime.store

    def _handle(self, session: Any) -> AioSession:
        handle = self._handles.get(session.id)
        if handle is None:
            handle = self._handles[session.id] = AioSession(session, self._portal)
        return handle

    async def open_session(self, session_id: str) -> AioSession:
        return self._handle(await self._portal.call(self._runtime.open_session, session_id))

    def session(self, session_id: str) -> AioSession:
        return self._handle(self._runtime.session(session_id))

    def sessions(self) -> list[AioSession]:
        return [self._handle(s) for s in self._runtime.sessions()]

    async def stats(self) -> Any:
        return await self._portal.call(self._runtime.stats)

    async def dead_letters(self) -> Any:
        return await self._portal.call(self._runtime.dead_letters)

    async def wait_idle(self, *, timeout: float | None = None) -> None:
        await self._portal.call(lambda: self._runtime.wait_idle(timeout=timeout))

    def events(self, session_id: str | None = None, kinds: Any = None) -> _AioEvents:
        """Events as an asyncio iterator (see ``_AioEvents``).

        Raises:
            InputRejected: bad arguments.
        """
        subscription = self._runtime.events(session_id, kinds)
        iterator = _AioEvents(self, None if self._portal.closed else subscription)
        self._iterators.add(iterator)
        return iterator

    def _close(self) -> None:
        """End every event iterator (the runtime was left)."""
        for iterator in list(self._iterators):
            iterator._end()


@asynccontextmanager
async def open_runtime(store: Any = None, **options: Any) -> AsyncIterator[AioRuntime]:
    """Run a runtime as a trio guest on the running asyncio loop.

    Takes the arguments of :func:`suricate.open_runtime`.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[AioRuntime] = loop.create_future()
    finished: asyncio.Future[outcome.Outcome[Any]] = loop.create_future()
    leave: dict[str, Any] = {}

    async def main() -> None:
        async with open_trio_runtime(store, **options) as rt, trio.open_nursery() as system:
            portal = _Portal(loop, trio.lowlevel.current_trio_token(), system)
            leave["event"] = trio.Event()
            leave["portal"] = portal
            loop.call_soon_threadsafe(ready.set_result, AioRuntime(rt, portal))
            await leave["event"].wait()
            portal.closed = True
            system.cancel_scope.cancel()

    def done(result: outcome.Outcome[Any]) -> None:
        if not ready.done():
            if isinstance(result, outcome.Error):
                ready.set_exception(result.error)
            else:
                ready.set_exception(RuntimeClosed("the runtime ended before it started"))
        if not finished.done():
            finished.set_result(result)

    trio.lowlevel.start_guest_run(
        main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=done,
        host_uses_signal_set_wakeup_fd=True,
    )
    runtime = await ready
    try:
        yield runtime
    finally:
        portal: _Portal = leave["portal"]
        try:
            portal.token.run_sync_soon(leave["event"].set)
        except trio.RunFinishedError:  # it crashed meanwhile
            pass
        result = await asyncio.shield(finished)
        portal.closed = True
        runtime._close()
        result.unwrap()
