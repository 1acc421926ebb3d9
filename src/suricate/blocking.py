"""suricate for threaded programs: the same API, synchronous and thread-safe.

    with suricate.blocking.open_runtime("agent.db") as rt:
        s = rt.open_session("alice")
        s.attach(agent)                 # a plain function runs on its own thread
        print(s.ask({"text": "hi"}))

The trio runtime runs on a background thread; every method hands its call to
that thread (``trio.from_thread``) and blocks until it returns, so any number
of threads may call at once.  Errors are the same typed exceptions.  Leaving
the ``with`` block leaves the runtime exactly as the trio face does: turns in
flight get ``shutdown_grace`` to commit and are then requeued, and waits still
pending raise ``RuntimeClosed``; event iterators end, and a thread blocked
reading one is released.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ._errors import RuntimeClosed, WaitTimeout
from ._events import Event, Subscription
from .runtime import open_runtime as open_trio_runtime

__all__ = ["BlockingRuntime", "BlockingSession", "EventIterator", "open_runtime"]


class _Portal:
    """Runs coroutines on the runtime's trio thread from any other thread."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token
        self.closed = False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self.token)
        except trio.RunFinishedError:
            raise RuntimeClosed("the runtime is closed") from None

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self.token)
        except trio.RunFinishedError:
            raise RuntimeClosed("the runtime is closed") from None


class BlockingSession:
    """A session handle whose methods block; the names of the trio API."""

    def __init__(self, session: Any, portal: _Portal) -> None:
        self._session = session
        self._portal = portal
        self.id: str = session.id

    def __repr__(self) -> str:
        return f"<BlockingSession {self.id!r}>"

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._session, name)
        return self._portal.call(lambda: method(*args, **kwargs))

    def submit(self, input_or_payload: Any, **input_fields: Any) -> Any:
        return self._call("submit", input_or_payload, **input_fields)

    def wait(self, input_id: str, *, timeout: float | None = None) -> Any:
        return self._call("wait", input_id, timeout=timeout)

    def ask(self, input_or_payload: Any, *, timeout: float | None = None, **fields: Any) -> Any:
        return self._call("ask", input_or_payload, timeout=timeout, **fields)

    def attach(self, executor: Any, **options: Any) -> None:
        self._call("attach", executor, **options)

    def ensure_attached(self, executor: Any, **options: Any) -> bool:
        return bool(self._call("ensure_attached", executor, **options))

    def detach(self, *, cancel: bool = False) -> None:
        self._call("detach", cancel=cancel)

    def retry(self, input_id: str) -> Any:
        return self._call("retry", input_id)

    def cancel(self, input_id: str) -> Any:
        return self._call("cancel", input_id)

    def inputs(self, *, state: Any = None, limit: int = 100, after: str | None = None) -> Any:
        return self._call("inputs", state=state, limit=limit, after=after)

    def state(self) -> Any:
        return self._call("state")

    def input(self, input_id: str) -> Any:
        return self._call("input", input_id)

    def snapshot(self) -> Any:
        return self._call("snapshot")

    def receipt(self, run_id: str, sequence: int) -> Any:
        return self._call("receipt", run_id, sequence)

    def stats(self) -> Any:
        return self._call("stats")

    def retire(self) -> Any:
        return self._call("retire")

    def reset(self) -> Any:
        return self._call("reset")

    def recycle(self) -> Any:
        return self._call("recycle")

    def stop(self) -> Any:
        return self._call("stop")

    def destroy(self) -> Any:
        return self._call("destroy")

    def recover(self) -> Any:
        return self._call("recover")

    def drain_from(self, source_factory: Any, **options: Any) -> Any:
        return self._portal.call_sync(lambda: self._session.drain_from(source_factory, **options))


class EventIterator:
    """Events as a blocking iterator; use it as a context manager.

    It ends (``StopIteration``) when the runtime is left, also for a thread
    blocked in ``next``; one entered after that ends at once.  Iterated
    without being entered it yields nothing, and ends when the runtime is left.
    """

    def __init__(self, runtime: BlockingRuntime, subscription: Subscription | None) -> None:
        self._runtime = runtime
        self._subscription = subscription
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._scope: trio.CancelScope | None = None
        if subscription is None:
            self._end()

    def _end(self) -> None:
        self._queue.put(None)  # read again by every later reader

    def __enter__(self) -> EventIterator:
        subscription = self._subscription
        if subscription is None:
            return self
        started = threading.Event()

        async def forward() -> None:
            try:
                with trio.CancelScope() as self._scope:
                    async with subscription as events:
                        started.set()
                        async for event in events:
                            self._queue.put(event)
            finally:
                self._end()
                started.set()

        def start() -> None:
            self._runtime._system.start_soon(forward)

        try:
            self._runtime._portal.call_sync(start)
        except (RuntimeClosed, RuntimeError):  # left meanwhile
            self._end()
            return self
        started.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        scope = self._scope
        if scope is not None and not self._runtime._portal.closed:
            try:
                self._runtime._portal.call_sync(scope.cancel)
            except RuntimeClosed:
                pass

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return self.next()

    def next(self, timeout: float | None = None) -> Event:
        """The next event; ``WaitTimeout`` if none comes within ``timeout``."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise WaitTimeout(f"no event within {timeout} s") from None
        if event is None:
            self._queue.put(None)
            raise StopIteration
        return event


class BlockingRuntime:
    """A runtime whose methods block; get one from :func:`open_runtime`."""

    def __init__(self, runtime: Any, portal: _Portal, system: trio.Nursery) -> None:
        self._runtime = runtime
        self._portal = portal
        self._system = system
        self._handles: dict[str, BlockingSession] = {}
        self._lock = threading.Lock()
        self._iterators: weakref.WeakSet[EventIterator] = weakref.WeakSet()

    @property
    def store(self) -> Any:
        return self._runtime.store

    def _handle(self, session: Any) -> BlockingSession:
        with self._lock:
            handle = self._handles.get(session.id)
            if handle is None:
                handle = self._handles[session.id] = BlockingSession(session, self._portal)
            return handle

    def open_session(self, session_id: str) -> BlockingSession:
        return self._handle(self._portal.call(self._runtime.open_session, session_id))

    def session(self, session_id: str) -> BlockingSession:
        return self._handle(self._portal.call_sync(self._runtime.session, session_id))

    def sessions(self) -> list[BlockingSession]:
        return [self._handle(s) for s in self._portal.call_sync(self._runtime.sessions)]

    def stats(self) -> Any:
        return self._portal.call(self._runtime.stats)

    def dead_letters(self) -> Any:
        return self._portal.call(self._runtime.dead_letters)

    def wait_idle(self, *, timeout: float | None = None) -> None:
        self._portal.call(lambda: self._runtime.wait_idle(timeout=timeout))

    def events(self, session_id: str | None = None, kinds: Any = None) -> EventIterator:
        """Events as a blocking iterator (see :class:`EventIterator`).

        Raises:
            InputRejected: bad arguments.
        """
        # Checked here, in the caller's thread; the subscription is entered
        # on the trio thread.  After the runtime was left: an ended iterator.
        subscription = self._runtime.events(session_id, kinds)
        iterator = EventIterator(self, None if self._portal.closed else subscription)
        with self._lock:
            self._iterators.add(iterator)
        return iterator

    def _close(self) -> None:
        """End every event iterator (the runtime was left)."""
        with self._lock:
            iterators = list(self._iterators)
        for iterator in iterators:
            iterator._end()


@contextmanager
def open_runtime(store: Any = None, **options: Any) -> Iterator[BlockingRuntime]:
    """Run a runtime on a background thread for the ``with`` block.

    Takes the arguments of :func:`suricate.open_runtime`.  An exception raised
    in the block propagates unchanged; opening errors are raised here.
    """
    ready: queue.SimpleQueue[tuple[BlockingRuntime | None, BaseException | None]] = (
        queue.SimpleQueue()
    )
    leave: dict[str, Any] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            async with open_trio_runtime(store, **options) as rt, trio.open_nursery() as system:
                portal = _Portal(trio.lowlevel.current_trio_token())
                leave["event"] = trio.Event()
                leave["portal"] = portal
                ready.put((BlockingRuntime(rt, portal, system), None))
                await leave["event"].wait()
                system.cancel_scope.cancel()
        except BaseException as exc:
            if "event" not in leave:
                ready.put((None, exc))
            else:
                failure.append(exc)

    thread = threading.Thread(target=trio.run, args=(main,), name="suricate-runtime", daemon=True)
    thread.start()
    runtime, error = ready.get()
    if error is not None:
        thread.join()
        raise error
    assert runtime is not None
    try:
        yield runtime
    finally:
        portal: _Portal = leave["portal"]
        try:
            portal.call_sync(leave["event"].set)
        except RuntimeClosed:
            pass
        portal.closed = True
        thread.join()
        runtime._close()
        if failure:
            raise failure[0]
