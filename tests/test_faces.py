"""One behaviour suite, run against the trio, blocking and asyncio faces.

Each scenario is an ``async def`` that talks to a *face*: an object with the
runtime API whose methods are awaited.  The trio face runs it under trio, the
asyncio face under asyncio, and the blocking face drives it synchronously
(its awaitables never suspend: each wraps a blocking call).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import suricate
import suricate.aio
import suricate.blocking
from suricate import AbandonReason, Abandoned, Completed, Deduplicated

ROOT = Path(__file__).resolve().parent.parent


def echo(turn: suricate.Turn) -> suricate.TurnResult:
    """A plain function: every face hosts it on a thread."""
    return suricate.TurnResult(result=turn.inputs[0].payload)


def always_fails(turn: suricate.Turn) -> None:
    raise ValueError("no luck")


class _Awaitable:
    """Wraps a blocking API so that scenarios can ``await`` it."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if isinstance(result, suricate.blocking.BlockingSession):
                return _Awaitable(result)
            return result

        return call


def _drive(coro: Awaitable[Any]) -> Any:
    """Run a coroutine that never really suspends (the blocking face)."""
    gen = coro.__await__()
    try:
        gen.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a blocking-face scenario suspended")


Scenario = Callable[[Any], Awaitable[None]]


def run_on(face: str, scenario: Scenario) -> None:
    if face == "trio":

        async def main() -> None:
            async with suricate.open_runtime() as rt:
                with trio.fail_after(30):
                    await scenario(rt)

        trio.run(main)
    elif face == "asyncio":

        async def amain() -> None:
            async with suricate.aio.open_runtime() as rt:
                await asyncio.wait_for(scenario(rt), 30)

        asyncio.run(amain())
    else:
        with suricate.blocking.open_runtime() as rt:
            _drive(scenario(_Awaitable(rt)))


FACES = ["trio", "blocking", "asyncio"]


async def submit_wait_ask(rt: Any) -> None:
    s = await rt.open_session("s")
    await s.attach(echo)
    ack = await s.submit({"n": 1})
    assert await s.wait(ack.input_id, timeout=10) == Completed(input_id=ack.input_id, result={"n": 1})
    outcome = await s.ask([1, 2], timeout=10)
    assert isinstance(outcome, Completed) and outcome.result == [1, 2]
    assert (await s.input(ack.input_id)).state is suricate.InputState.CONSUMED


async def deduplication(rt: Any) -> None:
    s = await rt.open_session("s")
    first = await s.submit({"a": 1}, idempotency_key="k")
    again = await s.submit({"a": 2}, idempotency_key="k")
    assert again == Deduplicated(input_id=first.input_id, existing_input_id=first.input_id)


async def control_operations_and_waiter_outcomes(rt: Any) -> None:
    for op, reason in (("reset", AbandonReason.RESET), ("destroy", AbandonReason.DESTROYED),
                       ("retire", AbandonReason.RETIRED), ("stop", AbandonReason.STOPPED)):
        s = await rt.open_session(f"s-{op}")
        ack = await s.submit({"x": op})
        report = await getattr(s, op)()
        assert report.inputs_abandoned == 1
        assert await s.wait(ack.input_id, timeout=10) == Abandoned(input_id=ack.input_id, reason=reason)
    recycled = await rt.open_session("s-recycle")
    await recycled.submit({"x": 1})
    assert (await recycled.recycle()).inputs_transferred == 1
    assert (await recycled.recover()).inputs_recovered == 1


async def max_attempts_outcome(rt: Any) -> None:
    s = await rt.open_session("s")
    await s.attach(always_fails, retry=None)
    outcome = await s.ask({"x": 1}, timeout=10)
    assert outcome.reason is AbandonReason.MAX_ATTEMPTS and outcome.error == "ValueError: no luck"


async def typed_errors_cross_the_boundary(rt: Any) -> None:
    s = await rt.open_session("s")
    await s.destroy()
    try:
        await s.submit({"x": 1})
    except suricate.SessionDestroyed:
        pass
    else:
        raise AssertionError("SessionDestroyed expected")
    try:
        await s.wait("no-such-input")
    except suricate.InputNotFound:
        pass
    else:
        raise AssertionError("InputNotFound expected")
    idle = await rt.open_session("idle")
    try:
        await idle.submit(float("nan"))
    except suricate.InputRejected:
        pass
    else:
        raise AssertionError("InputRejected expected")
    ack = await idle.submit({"x": 1})
    try:
        await idle.wait(ack.input_id, timeout=0.05)
    except suricate.WaitTimeout:
        pass
    else:
        raise AssertionError("WaitTimeout expected")


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    "scenario",
    [
        submit_wait_ask,
        deduplication,
        control_operations_and_waiter_outcomes,
        max_attempts_outcome,
        typed_errors_cross_the_boundary,
    ],
)
def test_behaviour_is_the_same_on_every_face(face: str, scenario: Scenario) -> None:
    run_on(face, scenario)


def test_an_asyncio_executor_with_sleep_and_httpx_completes_inputs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "asyncio_face.py")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["{'echo': '/a'}", "{'echo': '/b'}", "{'echo': '/c'}"]


def test_sixteen_threads_submitting_complete_every_input_exactly_once() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "blocking_face.py")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "400 inputs completed by 16 threads, 400 distinct" in proc.stdout


def test_cancelling_an_asyncio_wait_cancels_only_that_wait() -> None:
    async def main() -> None:
        async with suricate.aio.open_runtime() as rt:
            s = await rt.open_session("s")
            ack = await s.submit({"x": 1})
            waiting = asyncio.create_task(s.wait(ack.input_id))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await s.attach(echo)
            assert isinstance(await s.wait(ack.input_id, timeout=10), Completed)
            assert (await rt.stats()).waiters == 0

    asyncio.run(main())


def test_leaving_a_blocking_runtime_fails_pending_waits_with_runtime_closed() -> None:
    errors: list[BaseException] = []
    with suricate.blocking.open_runtime() as rt:
        s = rt.open_session("s")
        ack = s.submit({"x": 1})
        started = threading.Event()

        def waiter() -> None:
            started.set()
            try:
                s.wait(ack.input_id)
            except suricate.RuntimeClosed as exc:
                errors.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        started.wait()
        with rt.events(session_id="s") as events:
            s.submit({"y": 1})
            assert events.next(timeout=10).kind == "input.accepted"
    thread.join(timeout=30)
    assert len(errors) == 1
    with pytest.raises(suricate.RuntimeClosed):
        s.submit({"z": 1})


def test_an_exception_in_an_asyncio_body_propagates_and_the_runtime_closes() -> None:
    class Boom(Exception):
        pass

    async def main() -> None:
        async with suricate.aio.open_runtime() as rt:
            await rt.open_session("s")
            raise Boom()

    with pytest.raises(Boom):
        asyncio.run(main())


# -- event iterators end when the runtime closes (DESIGN section 16) ------------------


def _events_end_on_trio() -> None:
    async def main() -> None:
        ended: list[str] = []
        async with trio.open_nursery() as nursery:
            async with suricate.open_runtime() as rt:

                async def reader(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    async with rt.events() as events:
                        task_status.started()
                        async for _ in events:
                            pass
                    ended.append("entered before")

                async def unentered(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    task_status.started()
                    async for _ in rt.events():
                        pass
                    ended.append("never entered")

                await nursery.start(reader)
                await nursery.start(unentered)
                await (await rt.open_session("s")).submit({"x": 1})
            with trio.fail_after(10):
                async with rt.events(session_id="s") as events:
                    assert [e async for e in events] == []
                assert [e async for e in rt.events()] == []
        assert sorted(ended) == ["entered before", "never entered"]

    trio.run(main)


def _events_end_on_asyncio() -> None:
    async def main() -> None:
        async with suricate.aio.open_runtime() as rt:

            async def reader() -> int:
                async with rt.events() as events:
                    started.set()
                    return len([e async for e in events])

            started = asyncio.Event()
            reading = asyncio.create_task(reader())
            unentered = asyncio.create_task(_count(rt.events()))
            await started.wait()
            await (await rt.open_session("s")).submit({"x": 1})
        assert await asyncio.wait_for(reading, 10) >= 1
        assert await asyncio.wait_for(unentered, 10) == 0
        async with rt.events(session_id="s") as events:
            assert await asyncio.wait_for(_count(events), 10) == 0
        assert await asyncio.wait_for(_count(rt.events()), 10) == 0

    async def _count(events: Any) -> int:
        return len([e async for e in events])

    asyncio.run(main())


def _events_end_on_blocking() -> None:
    counts: dict[str, int] = {}
    started = threading.Event()

    with suricate.blocking.open_runtime() as rt:

        def reader() -> None:
            with rt.events() as events:
                started.set()
                counts["entered"] = len(list(events))

        def unentered() -> None:
            counts["never entered"] = len(list(rt.events()))

        # Daemon threads here, so that a failure cannot hang the test run; the
        # subprocess test below checks that a plain thread lets a process exit.
        threads = [
            threading.Thread(target=reader, daemon=True),
            threading.Thread(target=unentered, daemon=True),
        ]
        for thread in threads:
            thread.start()
        started.wait(10)
        rt.open_session("s").submit({"x": 1})
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert counts["entered"] >= 1 and counts["never entered"] == 0
    with rt.events(session_id="s") as events:
        assert list(events) == []
    assert list(rt.events()) == []


@pytest.mark.parametrize("face", FACES)
def test_event_iterators_end_when_the_runtime_is_left_and_after(face: str) -> None:
    {"trio": _events_end_on_trio, "asyncio": _events_end_on_asyncio,
     "blocking": _events_end_on_blocking}[face]()


@pytest.mark.parametrize("face", FACES)
def test_event_arguments_are_checked_on_every_face(face: str) -> None:
    async def scenario(rt: Any) -> None:
        for bad in ({"session_id": "x\ud800"}, {"kinds": "input.accepted"}, {"session_id": 1}):
            try:
                rt.events(**bad)
            except suricate.InputRejected:
                pass
            else:
                raise AssertionError(f"InputRejected expected for {bad}")

    if face == "blocking":
        with suricate.blocking.open_runtime() as rt:
            _drive(scenario(rt))
    else:
        run_on(face, scenario)


def test_a_process_with_a_thread_reading_blocking_events_exits() -> None:
    code = (
        "import threading, suricate.blocking\n"
        "with suricate.blocking.open_runtime() as rt:\n"
        "    ready = threading.Event()\n"
        "    def read():\n"
        "        with rt.events() as events:\n"
        "            ready.set()\n"
        "            for _ in events: pass\n"
        "    threading.Thread(target=read).start()\n"
        "    ready.wait(10)\n"
        "print('left')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(suricate.__file__).parent.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "left\n"
