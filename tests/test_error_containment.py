"""Errors stay where they belong (issue 12 item 4).

A bad argument is refused before anything changes; an executor's
``BaseException`` is a crash of that session's loop, which its supervisor
handles; a malformed ``TurnResult`` is a failed run; a session cannot
deadlock itself by detaching from inside its own turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import suricate
from suricate import AbandonReason, Abandoned, Completed, RestartPolicy, SessionState, TurnResult
from suricate.store import MemoryStore
from suricate.testing import ScriptedExecutor, durable_view, memory_view


@asynccontextmanager
async def _runtime(ids: Callable[[], str]) -> AsyncIterator[tuple[suricate.Runtime, MemoryStore]]:
    """A runtime opened in the test's own task, bounded as a whole.

    Not a fixture: pytest-trio cancels a fixture when its test fails, and a
    cancelled runtime shuts down shielded, which a loop that died unreported
    would make wait for ever.  Here a failure in the body leaves the runtime
    unshielded, so the bound holds.
    """
    store = MemoryStore()
    with trio.fail_after(20):
        async with suricate.open_runtime(store, id_factory=ids) as rt:
            yield rt, store


# -- attach validates every argument up front -----------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            {"restart": "not a policy"},
            id="restart",
        ),
        pytest.param(
            {"retry": "x"},
            id="retry",
        ),
        pytest.param({"turn_timeout": -1}, id="turn_timeout"),
    ],
)
async def test_attach_with_a_bad_argument_is_rejected_and_changes_nothing(
    ids, options: dict[str, Any]
) -> None:
    async with _runtime(ids) as (rt, store):
        s = await rt.open_session("s")
        ack = await s.submit({"x": 1})
        before = await memory_view(s)
        with pytest.raises(suricate.InputRejected):
            await s.attach(ScriptedExecutor(), **options)
        assert await s.state() is SessionState.IDLE
        assert await memory_view(s) == before == await durable_view(store, "s")
        # Still attachable, and the work it held runs.
        await s.attach(ScriptedExecutor())
        with trio.fail_after(5):
            assert isinstance(await s.wait(ack.input_id), Completed)


# -- a BaseException from an executor is that session's crash -------------------------


class _Custom(BaseException):
    """A BaseException of the user's own."""


@pytest.mark.parametrize(
    "error",
    [SystemExit(3), GeneratorExit(), _Custom("mine")],
    ids=["SystemExit", "GeneratorExit", "custom"],
)
async def test_a_base_exception_from_an_executor_crashes_only_its_sessions_loop(
    ids, autojump_clock, error: BaseException
) -> None:
    store = MemoryStore()
    with trio.fail_after(30):
        async with suricate.open_runtime(store, id_factory=ids) as rt:
            a = await rt.open_session("a")
            b = await rt.open_session("b")
            crashing = ScriptedExecutor(fail_times=1, error=error)
            await a.attach(crashing, restart=RestartPolicy(max_restarts=3, within=60))
            await b.attach(ScriptedExecutor())
            first = await a.ask({"x": 1})
            # Another session keeps working meanwhile.
            assert isinstance(await b.ask({"y": 1}), Completed)
            assert isinstance(first, Completed)
            record = await a.input(first.input_id)
            assert record.attempt == 2  # the crashed run counted an attempt
            stats = await a.stats()
            assert (stats.crashes, stats.restarts) == (1, 1)
            assert await a.state() is SessionState.ATTACHED


async def test_a_supervisor_that_gives_up_on_base_exceptions_stops_only_its_session(
    ids, autojump_clock
) -> None:
    store = MemoryStore()
    with trio.fail_after(30):
        async with suricate.open_runtime(store, id_factory=ids) as rt:
            a = await rt.open_session("a")
            b = await rt.open_session("b")
            await a.attach(
                ScriptedExecutor(fail_times=99, error=_Custom), restart=RestartPolicy(max_restarts=0)
            )
            await b.attach(ScriptedExecutor())
            outcome = await a.ask({"x": 1})
            assert isinstance(outcome, Abandoned) and outcome.reason is AbandonReason.STOPPED
            assert await a.state() is SessionState.STOPPED
            assert isinstance(await b.ask({"y": 1}), Completed)


# -- a malformed TurnResult is a failed run ------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TurnResult(results=[1, 2]), "results"),  # type: ignore[arg-type]
        (lambda: TurnResult(messages=[{"to": "b"}]), "messages"),  # type: ignore[list-item]
        (lambda: TurnResult(messages=None), "messages"),  # type: ignore[arg-type]
    ],
    ids=["results-list", "messages-dicts", "messages-None"],
)
async def test_a_malformed_turn_result_is_a_failed_run_with_a_clear_error(
    ids, make: Callable[[], TurnResult], field: str
) -> None:
    async with _runtime(ids) as (rt, store):
        s = await rt.open_session("s")
        ex = ScriptedExecutor(result=lambda turn: make() if turn.inputs[0].payload == "bad" else None)
        await s.attach(ex, retry=None)
        with trio.fail_after(10):
            # Two of them in a row: each is abandoned after its attempts, the
            # loop never crashes, and the session keeps serving.
            for _ in range(2):
                outcome = await s.ask("bad")
                assert isinstance(outcome, Abandoned)
                assert outcome.reason is AbandonReason.MAX_ATTEMPTS
                assert field in (outcome.error or ""), outcome.error
            assert isinstance(await s.ask("good"), Completed)
        stats = await s.stats()
        assert (stats.crashes, stats.restarts) == (0, 0)
        assert await s.state() is SessionState.ATTACHED
        assert await memory_view(s) == await durable_view(store, "s")


# -- detach from inside the session's own turn ----------------------------------------


async def test_detach_from_inside_the_sessions_own_turn_raises_not_ready(ids) -> None:
    refused: list[BaseException] = []
    async with _runtime(ids) as (rt, store):
        s = await rt.open_session("s")

        async def detaches_itself(turn: suricate.Turn) -> TurnResult:
            try:
                await s.detach()
            except suricate.NotReady as exc:
                refused.append(exc)
            return TurnResult(result="went on")

        await s.attach(detaches_itself)
        with trio.fail_after(5):
            outcome = await s.ask({"x": 1})
        assert outcome == Completed(input_id=outcome.input_id, result="went on")
        assert len(refused) == 1
        assert await s.state() is SessionState.ATTACHED
