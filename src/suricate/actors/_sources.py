"""External sources: draining an async iterable of envelopes into a session.

Theory of operation
-------------------
``session.drain_from(factory, ...)`` calls ``factory()`` for an async
iterable of envelopes (objects with ``id``, ``payload`` and ``async ack()``)
and submits each envelope as an input of the session, with the idempotency
key ``suricate:source:<name>:<id>``, so a redelivered envelope is
deduplicated.  An envelope is acknowledged only after the input it became is
durable: a failure before the commit leaves it unacknowledged, for its source
to deliver again.  A malformed envelope becomes a dead letter (durably) and
is then acknowledged; the drain carries on.

``TIMED`` drains exit after ``idle_timeout`` seconds without an envelope.
``PERSISTENT`` drains are supervised: a failing source is started again
through the factory, per the restart policy.  Every exit is reported on the
event stream as ``drain.exited`` with its :class:`DrainExit` reason.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

import attrs
import trio

from .._errors import ActorStopped, InputRejected, NotReady, SessionDestroyed
from .._events import Event, EventBus
from .._model import DeadLetter, Input, encode_json
from .._model._values import RESERVED_KINDS
from ..supervision._policy import Restart, RestartPolicy
from ..supervision._supervisor import ChildSpec, Supervisor, SupervisorGaveUp, describe
from .._kernel import ActorRef
from ._messages import AddDeadLetter, Submit

__all__ = ["DrainExit", "DrainMode", "SourceDrain"]


class DrainMode(enum.Enum):
    """How an external-source drain lives."""

    TIMED = "timed"
    """Exits after ``idle_timeout`` seconds without an envelope."""
    PERSISTENT = "persistent"
    """Runs until dismissed; a failing source is restarted through its factory."""


class DrainExit(enum.Enum):
    """Why a drain ended (reported as ``drain.exited``)."""

    IDLE_TIMEOUT = "idle_timeout"
    DISMISSED = "dismissed"
    """``dismiss()`` was called, or the source came to its end."""
    FAILED = "failed"
    """The source or a commit failed (for ``PERSISTENT``: past the restart policy)."""
    ABORTED = "aborted"
    """The runtime was left while the drain ran."""
    SESSION_SHUTDOWN = "session_shutdown"
    """The session stopped accepting input (retired, stopped, destroyed)."""


class _SessionGone(Exception):
    pass


class _Ended(Exception):
    def __init__(self, reason: DrainExit) -> None:
        self.reason = reason


class SourceDrain:
    """A running drain from an external source into one session."""

    def __init__(
        self,
        *,
        session_id: str,
        ref: ActorRef[Any],
        factory: Callable[[], AsyncIterable[Any]],
        name: str,
        mode: DrainMode,
        idle_timeout: float | None,
        restart: RestartPolicy,
        bus: EventBus,
        rng: random.Random,
    ) -> None:
        self.session_id = session_id
        self.ref = ref
        self.factory = factory
        self.name = name
        self.mode = mode
        self.idle_timeout = idle_timeout
        self.restart = restart
        self.bus = bus
        self.rng = rng
        self.delivered = 0
        self.dead = 0
        self.reason: DrainExit | None = None
        self.error: BaseException | None = None
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._dismissed = False

    def __repr__(self) -> str:
        return f"<SourceDrain {self.name} -> {self.session_id!r}: {self.reason or 'running'}>"

    def dismiss(self) -> None:
        """End the drain (reason ``DISMISSED``); envelopes in flight are not acknowledged."""
        self._dismissed = True
        self._scope.cancel()

    def abort(self) -> None:
        self._scope.cancel()

    async def wait(self) -> DrainExit:
        """Wait for the drain to end; returns why it ended."""
        await self._done.wait()
        assert self.reason is not None
        return self.reason

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def run(self) -> None:
        reason = DrainExit.ABORTED
        try:
            with self._scope:
                reason = await self._supervised()
            if self._scope.cancelled_caught:
                reason = DrainExit.DISMISSED if self._dismissed else DrainExit.ABORTED
        finally:
            self.reason = reason
            self._done.set()
            if self.bus.active:
                data: dict[str, Any] = {"reason": reason.value, "source": self.name}
                if self.error is not None:
                    data["error"] = describe(self.error)
                self.bus.publish(
                    Event(kind="drain.exited", session_id=self.session_id, data=data, at=time.time())
                )

    async def _supervised(self) -> DrainExit:
        if self.mode is DrainMode.TIMED:
            try:
                return await self._life()
            except _SessionGone:
                return DrainExit.SESSION_SHUTDOWN
            except Exception as exc:
                self.error = exc
                return DrainExit.FAILED
        ended: list[DrainExit] = []

        async def life() -> None:
            try:
                ended.append(await self._life())
            except _SessionGone:
                ended.append(DrainExit.SESSION_SHUTDOWN)
            except Exception as exc:
                self.error = exc
                raise

        supervisor = Supervisor(
            [ChildSpec(name=f"source {self.name}", run=life, restart=Restart.TRANSIENT)],
            policy=attrs.evolve(self.restart, restart=Restart.TRANSIENT),
            rng=self.rng,
        )
        try:
            await supervisor.run()
        except SupervisorGaveUp:
            return DrainExit.FAILED
        return ended[-1] if ended else DrainExit.FAILED

    async def _life(self) -> DrainExit:
        """One life of the source: drain it until it ends or idles out."""
        iterator = aiter(self.factory())
        idle = self.idle_timeout if self.mode is DrainMode.TIMED else None
        try:
            while True:
                with trio.move_on_after(idle if idle is not None else math.inf) as timer:
                    try:
                        envelope = await anext(iterator)
                    except StopAsyncIteration:
                        return DrainExit.DISMISSED
                if timer.cancelled_caught:
                    return DrainExit.IDLE_TIMEOUT
                await self._deliver(envelope)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()

    async def _deliver(self, envelope: Any) -> None:
        try:
            envelope_id = envelope.id
            payload = envelope.payload
            ack = envelope.ack
            if not isinstance(envelope_id, (str, int)) or isinstance(envelope_id, bool):
                raise InputRejected(f"envelope id must be a str or int, got {envelope_id!r}")
            if not callable(ack):
                raise InputRejected("envelope has no ack()")
            kind = str(getattr(envelope, "kind", None) or "external")
            if kind in RESERVED_KINDS:
                raise InputRejected(f"kind {kind!r} is reserved for the runtime")
            inp = Input(
                payload,
                kind=kind,
                idempotency_key=f"suricate:source:{self.name}:{envelope_id}",
                metadata={"source": self.name, "envelope_id": envelope_id},
            )
            encode_json(payload)
        except (AttributeError, InputRejected) as exc:
            await self._dead_letter(envelope, f"malformed envelope: {describe(exc)}")
            return
        try:
            await self.ref.ask(Submit(inp, internal=True))
        except (NotReady, SessionDestroyed, ActorStopped) as exc:
            raise _SessionGone() from exc
        except InputRejected as exc:
            await self._dead_letter(envelope, f"rejected by the session: {exc.reason}")
            return
        self.delivered += 1
        await ack()

    async def _dead_letter(self, envelope: Any, reason: str) -> None:
        try:
            payload_json: str | None = encode_json(getattr(envelope, "payload", None))
        except InputRejected:
            payload_json = None
        letter = DeadLetter(
            id=0,
            session_id=None,
            target=self.session_id,
            payload_json=payload_json,
            kind=f"source:{self.name}",
            reason=reason,
            at=time.time(),
        )
        try:
            await self.ref.ask(AddDeadLetter(letter))
        except (NotReady, SessionDestroyed, ActorStopped) as exc:
            raise _SessionGone() from exc
        self.dead += 1
        if self.bus.active:
            self.bus.publish(
                Event(
                    kind="dead_letter",
                    session_id=self.session_id,
                    data={"from": f"source:{self.name}", "reason": reason},
                    at=time.time(),
                )
            )
        ack = getattr(envelope, "ack", None)
        if callable(ack):
            await ack()
