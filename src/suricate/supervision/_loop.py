"""The executor loop of one session, and the supervision of that loop.

Theory of operation
-------------------
The loop asks its session actor for the next turn (``TakeTurn``).  The actor
stages the turn's inputs durably and answers with them, or answers ``None``
when there is nothing to run; the loop then parks until the actor wakes it
(a submit, a requeue): there is no polling.  The executor runs inside a
cancel scope that the actor cancels for an ``INTERRUPT`` input, a
``detach(cancel=True)``, a stop or a shutdown; a cancelled turn is reported
with ``InterruptTurn`` and its inputs are requeued without an attempt.

An ordinary exception from the executor is a failed run (``FailTurn``).  A
crash is the loop dying: ``Fatal``, a turn past ``turn_timeout``, or any
error escaping the loop.  The supervisor part of :meth:`ExecutorLoop.run`
restarts the loop per its :class:`RestartPolicy` (intensity, backoff,
restart type), or gives up, which stops the session (``GiveUp``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ActorStopped, NotReady, StoreError
from .._model import UNCHANGED, decode_json
from .._turn import ExecutorExit, Fatal, Turn, TurnResult, as_executor
from ..actors._messages import (
    STOP,
    CheckpointTurn,
    CommitTurn,
    FailTurn,
    GiveUp,
    InterruptTurn,
    LoopExited,
    TakeTurn,
    TurnStart,
)
from ._policy import Backoff, RestartPolicy
from ._supervisor import ChildSpec, Supervisor, SupervisorGaveUp, describe

if TYPE_CHECKING:
    from ..actors._actor import ActorRef

__all__ = ["ExecutorLoop", "LoopOptions", "TurnTimeout"]

log = logging.getLogger("suricate.supervision")


class TurnTimeout(Exception):
    """A turn ran past ``turn_timeout``: a crash of the loop."""


class _Exit(Exception):
    """The executor raised ExecutorExit: a normal exit."""


@attrs.frozen(kw_only=True)
class LoopOptions:
    """How a session's executor loop runs (the arguments of ``attach``)."""

    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    retry: Backoff | None = None
    turn_timeout: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.gt(0)),
    )
    max_batch: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class ExecutorLoop:
    """Runs one session's turns, supervised by its restart policy."""

    def __init__(
        self,
        *,
        session: ActorRef[Any],
        session_id: str,
        executor: Any,
        options: LoopOptions,
        rng: random.Random,
        emit: Callable[[str, Mapping[str, Any]], None],
    ) -> None:
        self.session = session
        self.session_id = session_id
        self.executor = executor
        self.run_turn: Callable[[Turn], Awaitable[TurnResult | None]] = as_executor(executor)
        self.options = options
        self.rng = rng
        self.emit = emit
        self.exited = trio.Event()
        self.stopping = False
        self.supervisor: Supervisor | None = None
        self._crashed = False
        self._pending = False
        self._wake: trio.Event | None = None
        self._handed: TurnStart | None = None
        self._cancelled_start: str | None = None  # a run cancelled before it began
        self._turn_scope: trio.CancelScope | None = None
        self._scope: trio.CancelScope | None = None
        self._delay_scope: trio.CancelScope | None = None
        self._failures = 0

    # -- called by the session actor (same trio thread, never blocking) ----------

    def wake(self) -> None:
        """New work may be ready."""
        self._pending = True
        if self._wake is not None:
            self._wake.set()

    @property
    def parked(self) -> bool:
        """Waiting for work, not yet woken, not stopping, nothing handed to it."""
        wake = self._wake
        return (
            wake is not None
            and not wake.is_set()
            and not self.stopping
            and self._handed is None
        )

    def hand(self, start: TurnStart) -> bool:
        """Give the parked loop a turn the session already staged; False if
        the loop is no longer parked (it will not run it)."""
        if not self.parked:
            return False
        self._handed = start
        self.wake()
        return True

    def cancel_turn(self, run_id: str | None = None) -> bool:
        """Cancel the running turn, unless its commit has started; True if cancelled.

        ``run_id`` names the session's current run: if the loop has not begun
        it yet (its start is on the way), it is interrupted without running.
        """
        if self._turn_scope is not None:
            self._turn_scope.cancel()
            return True
        if run_id is not None:
            self._cancelled_start = run_id
            return True
        return False

    def stop(self) -> None:
        """Exit after the current turn (cancel it first with :meth:`cancel_turn`); no restart."""
        self.stopping = True
        if self._delay_scope is not None:  # a retry backoff is not a turn to finish
            self._delay_scope.cancel()
        self.wake()
        if self.supervisor is not None:
            self.supervisor.request_stop()

    def kill(self) -> None:
        """Cancel the loop outright (the session stopped or was destroyed)."""
        self.stopping = True
        if self._scope is not None:
            self._scope.cancel()
        self.wake()

    # -- the loop ------------------------------------------------------------------

    @property
    def restart_count(self) -> int:
        return self.supervisor.restart_count if self.supervisor is not None else 0

    @property
    def crashes(self) -> int:
        return self.supervisor.crash_count if self.supervisor is not None else 0

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def run(self) -> None:
        """Run the loop under its supervisor until it ends for good."""
        policy = self.options.restart
        child = ChildSpec(
            name="executor loop",
            run=self._incarnation,
            restart=policy.restart,
            stop=self.wake,
            # A stopping loop finishes its turn (detach waits for it); a hung
            # turn is bounded by turn_timeout, and detach(cancel=True) cancels.
            shutdown=math.inf,
        )
        self.supervisor = Supervisor([child], policy=policy, rng=self.rng, emit=self.emit)
        try:
            with trio.CancelScope() as self._scope:
                try:
                    await self.supervisor.run()
                except SupervisorGaveUp as exc:  # the supervisor emitted gave_up
                    await self._give_up(exc.reason)
                else:
                    if self._crashed and not self.stopping:
                        # A TEMPORARY loop that crashed is not restarted: the session stops.
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

    async def _incarnation(self) -> None:
        """One life of the loop: returning is a normal exit, raising a crash."""
        self._crashed = False
        try:
            await self._serve()
        except _Exit:
            self.emit("supervisor.exited", {"reason": "executor exit"})
        except ActorStopped:
            self.stopping = True
        except Exception:
            self._crashed = True
            raise
        finally:
            if self.stopping and self.supervisor is not None and not self.supervisor.stopping:
                # Ending because it was told to (also before it first ran), or
                # because its session is gone, is not an exit to restart.
                self.supervisor.request_stop()

    async def _give_up(self, reason: str) -> None:
        """Stop the session; a failure to record that is logged, not raised
        (the session stays as the store has it, and recovers from there)."""
        self.stopping = True
        try:
            await self.session.ask(GiveUp(self, reason))
        except ActorStopped:
            raise
        except Exception as exc:
            log.error("session %s: could not stop after giving up (%s): %s",
                      self.session_id, reason, describe(exc))

    async def _serve(self) -> None:
        while True:
            start = self._handed
            if start is not None:  # staged when it was admitted: it has begun
                self._handed = None
            elif self.stopping:
                return
            else:
                self._pending = False
                start = await self.session.ask(TakeTurn(self, self.options.max_batch))
                if start is STOP:
                    return
            if start is None or not await self._turn(start):
                await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        if not self._pending and not self.stopping and self._handed is None:
            self._wake = trio.Event()
            await self._wake.wait()
            self._wake = None

    async def _turn(self, start: TurnStart) -> bool:
        """Run one turn; False when the session said no work is waiting."""
        run = start.run
        if run.run_id == self._cancelled_start:
            self._cancelled_start = None
            await self._ask_ignoring_stale(InterruptTurn(run.run_id))
            return True
        inputs = [r.to_input() for r in start.inputs]
        turn = Turn(
            run_id=run.run_id,
            session_id=self.session_id,
            inputs=inputs,
            snapshot=decode_json(start.snapshot_json),
            attempt=max(r.attempt for r in start.inputs),
            loop=self,
        )
        result: TurnResult | None = None
        failure: Exception | None = None
        exit_ = False
        timeout = self.options.turn_timeout
        with trio.CancelScope() as scope:
            self._turn_scope = scope
            try:
                with trio.move_on_after(timeout if timeout is not None else float("inf")) as timer:
                    result = await self.run_turn(turn)
            except ExecutorExit:
                exit_ = True
            except Exception as exc:
                failure = exc
        self._turn_scope = None
        if scope.cancelled_caught or exit_:
            await self._ask_ignoring_stale(InterruptTurn(run.run_id))
            if exit_:
                raise _Exit
            return True
        if timer.cancelled_caught:
            # A thread-hosted executor gets a fresh thread; the stuck one is abandoned.
            replace = getattr(getattr(self.run_turn, "__self__", self.executor), "replace", None)
            if replace is not None:
                replace()
            await self._ask_ignoring_stale(
                FailTurn(run.run_id, f"turn exceeded turn_timeout of {timeout} s")
            )
            raise TurnTimeout(f"turn {run.run_id} exceeded turn_timeout of {timeout} s")
        if failure is not None:
            await self._ask_ignoring_stale(FailTurn(run.run_id, describe(failure)))
            if isinstance(failure, Fatal):
                raise failure
            await self._retry_delay()
            return True
        if result is not None and not isinstance(result, TurnResult):
            error = f"executor returned {type(result).__name__}, not TurnResult or None"
            await self._ask_ignoring_stale(FailTurn(run.run_id, error))
            await self._retry_delay()
            return True
        self._pending = False  # a wake from here on is seen below
        try:
            committed = await self._ask_ignoring_stale(CommitTurn(run.run_id, result))
        except StoreError as exc:
            # The commit did not happen: the inputs are still staged, durably.
            await self._ask_ignoring_stale(FailTurn(run.run_id, describe(exc)))
            await self._retry_delay()
            return True
        if committed is False:  # the result was rejected: a failed run
            await self._retry_delay()
            return True
        self._failures = 0
        return bool(committed != "idle")

    async def _retry_delay(self) -> None:
        self._failures += 1
        retry = self.options.retry
        if retry is not None and not self.stopping:
            delay = retry.delay(self._failures, self.rng)
            if delay > 0:
                with trio.move_on_after(delay) as self._delay_scope:  # stop() ends it early
                    await trio.sleep_forever()
                self._delay_scope = None

    async def _ask_ignoring_stale(self, message: Any) -> Any:
        """Ask the session; a turn that is no longer current (the session was
        stopped or destroyed meanwhile) is simply over."""
        try:
            return await self.session.ask(message)
        except NotReady:
            return None

    async def checkpoint(
        self, turn: Turn, *, snapshot: Any = UNCHANGED, results: Mapping[str, Any] | None = None
    ) -> list[Any]:
        records = await self.session.ask(CheckpointTurn(turn.run_id, snapshot, results))
        return [r.to_input() for r in records]
