"""The executor loop of one session, and the supervision of that loop.

Theory of operation
-------------------
The session actor owns run control: it decides when a turn starts, stages
its inputs durably (in the same commit as the decision that made the turn
possible), and hands the loop a :class:`TurnStart` through a one-slot
hand-off (:meth:`ExecutorLoop.offer`).  Each turn carries a cancel scope that
the actor keeps: cancelling the turn (an ``INTERRUPT`` input,
``detach(cancel=True)``, a stop, a shutdown) is cancelling that scope, also
before the loop has begun the turn, which then never runs.

The loop is "receive a turn, run it, report one outcome": every turn it
receives ends in exactly one :class:`TurnReport` (committed result, failed
run or interruption).  It tells the actor when it is ready for a turn:
with the report itself after a committed turn, or with :class:`LoopReady`
after a retry backoff or a restart.

An ordinary exception from the executor is a failed run.  A crash is the
loop dying: ``Fatal``, a turn past ``turn_timeout``, or a ``BaseException``
other than cancellation and ``KeyboardInterrupt`` escaping the executor; the
turn is reported as failed first.  The supervisor part of
:meth:`ExecutorLoop.run` restarts the loop per its :class:`RestartPolicy`
(intensity, backoff, restart type), or gives up, which stops the session
(:class:`LoopGaveUp`).

This module knows nothing of the session actor: it talks to it through an
:class:`~suricate._kernel.ActorRef` with the messages defined here.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from .._errors import ActorStopped, NotReady, TerminalError
from .._kernel import Actor, ActorRef
from .._model import UNCHANGED, Input, InputRecord, RunState, decode_json
from .._turn import ExecutorExit, Fatal, Turn, TurnResult
from ._policy import DEFAULT_RETRY, Backoff, GiveUp, RestartPolicy
from ._supervisor import ChildSpec, Supervisor, SupervisorGaveUp, describe

__all__ = [
    "RUNNING_SESSION",
    "CheckpointTurn",
    "ExecutorCrashed",
    "ExecutorLoop",
    "LoopGaveUp",
    "LoopExited",
    "LoopOptions",
    "LoopReady",
    "TurnEnd",
    "TurnReport",
    "TurnStart",
    "TurnTimeout",
]

log = logging.getLogger("suricate.supervision")

RUNNING_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "suricate_running_session", default=None
)
"""The id of the session whose turn the current task runs (inherited by the
tasks a turn starts), so that a session can refuse calls that would wait for
its own turn."""


class TurnTimeout(Exception):
    """A turn ran past ``turn_timeout``: a crash of the loop."""


class ExecutorCrashed(Exception):
    """A ``BaseException`` (``SystemExit``, ``GeneratorExit``, ...) escaped the
    executor: a crash of that session's loop, never of the runtime."""


class _Exit(Exception):
    """The executor raised ExecutorExit: a normal exit."""


def _check_restart(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, RestartPolicy):
        raise TypeError(f"restart must be a RestartPolicy, got {value!r}")


def _check_retry(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Backoff):
        raise TypeError(f"retry must be a Backoff or None, got {value!r}")


def _check_timeout(instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"turn_timeout must be a number of seconds or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"turn_timeout must be finite and > 0, got {value!r}")


def _check_batch(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_batch must be an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class LoopOptions:
    """How a session's executor loop runs (the arguments of ``attach``).

    Raises:
        TypeError, ValueError: a bad option (``attach`` reports it as
            ``InputRejected``).
    """

    restart: RestartPolicy = attrs.field(factory=RestartPolicy, validator=_check_restart)
    retry: Backoff | None = attrs.field(default=DEFAULT_RETRY, validator=_check_retry)
    turn_timeout: float | None = attrs.field(default=None, validator=_check_timeout)
    max_batch: int = attrs.field(default=1, validator=_check_batch)


# -- the protocol between a session actor and its loop ------------------------------


@attrs.frozen(eq=False)
class TurnStart:
    """A staged turn handed to the loop, with the cancel scope the actor keeps."""

    run: RunState
    inputs: tuple[InputRecord, ...]
    snapshot_json: str | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class TurnEnd(enum.Enum):
    COMMIT = "commit"
    """The executor returned: commit its result."""
    FAIL = "fail"
    """A failed run (its inputs are retried or abandoned)."""
    INTERRUPT = "interrupt"
    """Cancelled before its commit: requeued without an attempt counted."""


@attrs.frozen(eq=False)
class TurnReport:
    """The one outcome of a turn.  Answered with ``True`` once committed as
    reported, ``False`` when the run was failed instead (a rejected result or
    a failed commit)."""

    loop: ExecutorLoop
    run_id: str
    end: TurnEnd
    result: TurnResult | None = None
    error: str | None = None
    ready: bool = True
    """The loop takes its next turn at once (if the run committed as reported)."""
    terminal: bool = False
    """A failed run that raised ``TerminalError``: its inputs are not retried."""


@attrs.frozen(eq=False)
class LoopReady:
    """The loop waits for a turn (a new incarnation, or after a retry backoff)."""

    loop: ExecutorLoop


@attrs.frozen(eq=False)
class CheckpointTurn:
    run_id: str
    snapshot: Any = UNCHANGED
    results: Mapping[str, Any] | None = None


@attrs.frozen(eq=False)
class LoopGaveUp:
    """The loop's restart policy gave up: the session stops."""

    loop: ExecutorLoop
    reason: str
    keep: bool = False
    """Keep the backlog queued (``GiveUp.KEEP``) instead of abandoning it."""


@attrs.frozen(eq=False)
class LoopExited:
    loop: ExecutorLoop


def _cancellation(exc: BaseException) -> bool:
    """``exc`` is trio's cancellation (alone or grouped) or a Ctrl-C: not ours to catch."""
    if isinstance(exc, (trio.Cancelled, KeyboardInterrupt)):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_cancellation(e) for e in exc.exceptions)
    return False


class ExecutorLoop:
    """Runs one session's turns, supervised by its restart policy."""

    def __init__(
        self,
        *,
        session: ActorRef[Actor],
        session_id: str,
        run_turn: Callable[[Turn], Awaitable[TurnResult | None]],
        options: LoopOptions,
        rng: random.Random,
        emit: Callable[..., None],
    ) -> None:
        self.session = session
        self.session_id = session_id
        self.run_turn = run_turn
        self.options = options
        self.rng = rng
        self.emit = emit
        self.exited = trio.Event()
        self.closing = False
        self.supervisor: Supervisor | None = None
        self._slot: TurnStart | None = None
        self._filled = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._delay_scope: trio.CancelScope | None = None
        self._failures = 0
        self._crashed = False
        self._crashing: TurnStart | None = None  # the turn a crash ended

    # -- called by the session actor (same trio thread, never blocking) ----------

    def offer(self, start: TurnStart) -> None:
        """Hand the loop its next turn (the actor offers one only when the
        loop said it is ready, so the slot is empty)."""
        assert self._slot is None, "a turn is already waiting for the loop"
        self._slot = start
        self._filled.set()

    def close(self) -> None:
        """Exit after the turn in hand (cancel it first through its scope); no restart."""
        self.closing = True
        if self._delay_scope is not None:  # a retry backoff is not a turn to finish
            self._delay_scope.cancel()
        self._filled.set()
        if self.supervisor is not None:
            self.supervisor.request_stop()

    def kill(self) -> None:
        """Cancel the loop outright (its session stopped or was destroyed)."""
        self.closing = True
        if self._scope is not None:
            self._scope.cancel()
        self._filled.set()

    @property
    def restart_count(self) -> int:
        return self.supervisor.restart_count if self.supervisor is not None else 0

    @property
    def crashes(self) -> int:
        return self.supervisor.crash_count if self.supervisor is not None else 0

    # -- the loop ------------------------------------------------------------------

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def run(self) -> None:
        """Run the loop under its supervisor until it ends for good."""
        policy = self.options.restart
        child = ChildSpec(
            name="executor loop",
            run=self._incarnation,
            restart=policy.restart,
            stop=self._filled.set,
            # A closing loop finishes its turn (detach waits for it); a hung
            # turn is bounded by turn_timeout, and detach(cancel=True) cancels.
            shutdown=math.inf,
        )
        self.supervisor = Supervisor([child], policy=policy, rng=self.rng, emit=self._emit)
        try:
            with trio.CancelScope() as self._scope:
                try:
                    await self.supervisor.run()
                except SupervisorGaveUp as exc:  # the supervisor emitted gave_up
                    await self._give_up(exc.reason)
                else:
                    if self._crashed and not self.closing:
                        # A crash that was not restarted (TEMPORARY): the session stops.
                        assert self.supervisor.last_crash is not None
                        reason = f"executor crashed: {describe(self.supervisor.last_crash)}"
                        self.emit("supervisor.gave_up", {"reason": reason})
                        await self._give_up(reason)
        except ActorStopped:
            pass
        finally:
            self._scope = None
            with trio.CancelScope(shield=True):
                try:
                    await self.session.tell(LoopExited(self))
                except ActorStopped:
                    self.exited.set()

    def _emit(self, kind: str, data: Mapping[str, Any]) -> None:
        """Supervisor events; a crash names the run it ended and its inputs."""
        crashing = self._crashing
        if kind == "supervisor.crashed" and crashing is not None:
            self._crashing = None
            data = {**data, "inputs": [r.input_id for r in crashing.inputs]}
            self.emit(kind, data, run_id=crashing.run.run_id)
            return
        self.emit(kind, data)

    async def _incarnation(self) -> None:
        """One life of the loop: returning is a normal exit, raising a crash."""
        self._crashed = False
        try:
            if self.closing:
                return
            await self.session.ask(LoopReady(self))
            while True:
                start = await self._receive()
                if start is None:
                    return
                await self._turn(start)
        except _Exit:
            self.emit("supervisor.exited", {"reason": "executor exit"})
        except ActorStopped:
            self.closing = True
        except Exception:
            self._crashed = True
            raise
        else:
            self._crashing = None
        finally:
            if self.closing and self.supervisor is not None and not self.supervisor.stopping:
                # Ending because it was told to, or because its session is
                # gone, is not an exit to restart.
                self.supervisor.request_stop()

    async def _receive(self) -> TurnStart | None:
        """The next turn; ``None`` once closing with no turn in hand."""
        while self._slot is None:
            if self.closing:
                return None
            self._filled = trio.Event()
            await self._filled.wait()
        start, self._slot = self._slot, None
        return start

    async def _give_up(self, reason: str) -> None:
        """Stop the session; a failure to record that is logged, not raised
        (the session stays as the store has it, and recovers from there)."""
        self.closing = True
        try:
            keep = self.options.restart.on_give_up is GiveUp.KEEP
            await self.session.ask(LoopGaveUp(self, reason, keep))
        except ActorStopped:
            raise
        except Exception as exc:
            log.error(
                "session %s: could not stop after giving up (%s): %s",
                self.session_id, reason, describe(exc),
            )

    async def _report(self, report: TurnReport) -> bool:
        """Hand the turn's one outcome to the session, as a handover: the
        session must hear how every turn it handed out ended, and the loop
        how its report was taken, whatever cancels the loop meanwhile."""
        try:
            return bool(await self.session.ask(report, handover=True))
        except NotReady:  # the run is over already (stopped, destroyed)
            return False

    async def _turn(self, start: TurnStart) -> None:
        self._crashing = start  # until it ends without crashing the loop
        await self._run(start)
        self._crashing = None

    async def _run(self, start: TurnStart) -> None:
        run_id = start.run.run_id
        scope = start.scope
        if scope.cancel_called:  # cancelled before it began: it never runs
            await self._report(TurnReport(self, run_id, TurnEnd.INTERRUPT))
            return
        turn = Turn(
            run_id=run_id,
            session_id=self.session_id,
            inputs=[r.to_input() for r in start.inputs],
            snapshot=decode_json(start.snapshot_json),
            attempt=max(r.attempt for r in start.inputs),
            checkpoint=self._checkpoint,
        )
        result: Any = None
        failure: BaseException | None = None
        timeout = self.options.turn_timeout
        timer: trio.CancelScope | None = None
        token = RUNNING_SESSION.set(self.session_id)
        try:
            with scope:
                try:
                    if timeout is None:
                        result = await self.run_turn(turn)
                    else:
                        with trio.move_on_after(timeout) as timer:
                            result = await self.run_turn(turn)
                except BaseException as exc:
                    if _cancellation(exc):
                        raise
                    failure = exc
        except BaseException:
            # Cancelled from outside (the runtime torn down around it): the
            # turn is interrupted, and its session still hears so.
            await self._report(TurnReport(self, run_id, TurnEnd.INTERRUPT, ready=False))
            raise
        finally:
            RUNNING_SESSION.reset(token)
        if scope.cancelled_caught or isinstance(failure, ExecutorExit):
            await self._report(
                TurnReport(self, run_id, TurnEnd.INTERRUPT, ready=failure is None)
            )
            if failure is not None:
                raise _Exit
            return
        if timer is not None and timer.cancelled_caught:
            # A thread-hosted executor gets a fresh thread; the stuck one is abandoned.
            replace = getattr(getattr(self.run_turn, "__self__", None), "replace", None)
            if callable(replace):
                replace()
            error = f"turn exceeded turn_timeout of {timeout} s"
            await self._report(TurnReport(self, run_id, TurnEnd.FAIL, error=error, ready=False))
            raise TurnTimeout(f"turn {run_id} exceeded turn_timeout of {timeout} s")
        if isinstance(failure, TerminalError):
            # Not retried, not a crash, and no backoff: the next input is
            # another request, which the error says nothing about.
            await self._report(
                TurnReport(self, run_id, TurnEnd.FAIL, error=describe(failure), terminal=True)
            )
            return
        if failure is not None:
            crash = isinstance(failure, Fatal) or not isinstance(failure, Exception)
            delay = 0.0 if crash else self._next_delay()
            await self._report(
                TurnReport(
                    self, run_id, TurnEnd.FAIL, error=describe(failure), ready=not crash and delay <= 0
                )
            )
            if isinstance(failure, Fatal):
                raise failure
            if crash:
                raise ExecutorCrashed(f"executor raised {describe(failure)}") from failure
            await self._after_failure(delay)
            return
        if result is not None and not isinstance(result, TurnResult):
            error = f"executor returned {type(result).__name__}, not TurnResult or None"
            delay = self._next_delay()
            await self._report(TurnReport(self, run_id, TurnEnd.FAIL, error=error, ready=delay <= 0))
            await self._after_failure(delay)
            return
        if await self._report(TurnReport(self, run_id, TurnEnd.COMMIT, result=result)):
            self._failures = 0
            return
        # The result was rejected or its commit failed: a failed run.
        await self._after_failure(self._next_delay(), told=False)

    def _next_delay(self) -> float:
        """Count a failed run; the delay before the next turn."""
        self._failures += 1
        retry = self.options.retry
        if retry is None or self.closing:
            return 0.0
        return retry.delay(self._failures, self.rng)

    async def _after_failure(self, delay: float, *, told: bool = True) -> None:
        """Wait the retry backoff (``close`` ends it early), then say ready,
        unless the report already did (``told`` and no delay)."""
        if delay > 0:
            with trio.move_on_after(delay) as self._delay_scope:
                await trio.sleep_forever()
            self._delay_scope = None
        elif told:
            return
        if not self.closing:
            await self.session.ask(LoopReady(self))

    async def _checkpoint(
        self, turn: Turn, snapshot: Any, results: Mapping[str, Any] | None
    ) -> list[Input]:
        records = await self.session.ask(CheckpointTurn(turn.run_id, snapshot, results))
        return [r.to_input() for r in records]
