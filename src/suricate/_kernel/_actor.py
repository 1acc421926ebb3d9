"""The actor kernel: a bounded mailbox served one message at a time.

Theory of operation
-------------------
An :class:`Actor` is an object with an ``actor_receive`` coroutine.  An
:class:`ActorRef` owns its mailbox: ``tell`` enqueues a message, ``ask``
enqueues it with a reply slot and waits for the answer (or the exception the
handler raised).  Messages are handled strictly one after another, in arrival
order, so an actor's state needs no locks.

The actor holds a trio task only while it has mail: the first message into an
empty mailbox starts a task in the actor system's nursery, and the task
returns as soon as the mailbox is empty again.  An idle actor therefore costs
a few Python objects and no task (passivation, DESIGN section 2).

A handler that raises answers the asker with that exception and the actor
carries on.  A handler that raises for a ``tell`` (nobody to answer) is a
crash of the actor: the exception escapes into the system nursery, where its
supervisor sees it.

An actor whose handling never awaits may also define a synchronous
``actor_receive_now``.  A ``tell_nowait`` that finds its mailbox empty and no
task serving it is then handled at once, in the sender's task: the message
would have been next anyway, and a handler that cannot yield runs whole, so
the order and the one-at-a-time guarantee are the same, without the task
switch.  Its exception is raised to the sender (it is the sender's bug).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio

from .._errors import ActorStopped, WaitTimeout

__all__ = ["Actor", "ActorRef", "ActorStatistics", "spawn"]

T = TypeVar("T", bound="Actor", covariant=True)
A = TypeVar("A", bound="Actor")


class Actor:
    """Base class of actors.  Subclasses implement :meth:`actor_receive`.

    Attributes that the kernel uses carry the ``actor_`` prefix, so a
    subclass cannot clash with them.
    """

    #: Capacity of the mailbox; ``tell`` waits (``tell_nowait`` raises
    #: ``trio.WouldBlock``) while it is full.
    actor_mailbox_size: int = 1024

    #: When set, the kernel hands every waiting message (up to this many) to
    #: :meth:`actor_receive_batch` at once instead of calling
    #: :meth:`actor_receive` per message: the shape of a group commit.
    actor_batch_max: int = 0

    #: A synchronous handler (``def actor_receive_now(self, message)``) that
    #: the kernel may call in the sender's task for a ``tell_nowait`` to an
    #: idle actor (see the module notes); only for handling that never awaits.
    actor_receive_now: Callable[[Any], None] | None = None

    async def actor_receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError

    async def actor_receive_batch(self, messages: list[Any]) -> list[outcome.Outcome[Any]]:
        """Handle several messages; one outcome per message, in order."""
        raise NotImplementedError

    def actor_stopped(self) -> None:
        """Called once when the actor stops (after its last message)."""


@attrs.frozen(kw_only=True)
class ActorStatistics:
    """A snapshot of one actor's mailbox."""

    name: str
    mailbox_depth: int
    mailbox_size: int
    processed: int
    failed: int
    active: bool
    """A task is serving the mailbox right now."""
    stopped: bool


class _Reply:
    """A one-shot answer slot that parks the asking task without an Event."""

    __slots__ = ("task", "result", "abandoned")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[Any] | None = None
        self.abandoned = False

    def set(self, result: outcome.Outcome[Any]) -> None:
        if self.abandoned or self.result is not None:
            return
        self.result = result
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task, result)

    async def wait(self, handover: bool = False) -> Any:
        if self.result is not None:
            if handover:
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                await trio.lowlevel.checkpoint()
            return self.result.unwrap()
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if handover:  # the answer comes; the cancellation waits for it
                return trio.lowlevel.Abort.FAILED
            self.abandoned = True
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class ActorRef(Generic[T]):
    """The address of an actor: the only way to talk to it."""

    __slots__ = (
        "_actor",
        "name",
        "_nursery",
        "_mail",
        "_space",
        "_running",
        "_stopped",
        "_idle",
        "_processed",
        "_failed",
        "_capacity",
    )

    def __init__(self, actor: T, nursery: trio.Nursery, *, name: str) -> None:
        self._actor = actor
        self.name = name
        self._nursery = nursery
        self._capacity = actor.actor_mailbox_size
        self._mail: collections.deque[tuple[Any, _Reply | None]] = collections.deque()
        self._space = trio.lowlevel.ParkingLot()
        self._running = False
        self._stopped = False
        self._idle: trio.Event | None = None
        self._processed = 0
        self._failed = 0

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _put(self, message: Any, reply: _Reply | None) -> None:
        self._check()  # again: the actor may have stopped while the sender waited
        self._mail.append((message, reply))
        if not self._running:
            self._serve_soon()

    def _serve_soon(self) -> None:
        self._running = True
        self._nursery.start_soon(self._serve, name=self.name)

    def _check(self) -> None:
        if self._stopped:
            raise ActorStopped(f"actor {self.name} is stopped")

    async def _wait_space(self) -> None:
        while len(self._mail) >= self._capacity:
            await self._space.park()
            self._check()

    def tell_nowait(self, message: Any) -> None:
        """Enqueue ``message`` without waiting (or handle it at once, see above).

        Raises:
            ActorStopped: the actor stopped.  trio.WouldBlock: the mailbox is full.
        """
        self._check()
        if not self._running and not self._mail:
            receive_now = self._actor.actor_receive_now
            if receive_now is not None:
                self._running = True  # a message sent from inside the handler queues
                try:
                    receive_now(message)
                except BaseException:
                    self._failed += 1
                    raise
                else:
                    self._processed += 1
                finally:
                    self._running = False
                    if self._stopped:
                        self._finish()
                    elif self._mail:  # sent from inside the handler: served next
                        self._serve_soon()
                return
        if len(self._mail) >= self._capacity:
            raise trio.WouldBlock
        self._put(message, None)

    async def tell(self, message: Any) -> None:
        """Enqueue ``message``, waiting for room in the mailbox.

        Raises:
            ActorStopped: the actor stopped.
        """
        self._check()
        await trio.lowlevel.checkpoint()
        await self._wait_space()  # others may have filled it meanwhile
        self._put(message, None)

    async def ask(
        self, message: Any, *, timeout: float | None = None, handover: bool = False
    ) -> Any:
        """Send ``message`` and wait for the handler's answer.

        The handler's exception is raised here.  Cancelling the asker does not
        withdraw a message already enqueued.  With ``handover``, a message
        once enqueued is also waited for: a cancellation of the asker takes
        effect at its next checkpoint after the answer (for messages whose
        effect cannot be withdrawn, such as a write-set handed to a store).

        Raises:
            ActorStopped: the actor stopped before answering.
            WaitTimeout: no answer within ``timeout`` seconds.
        """
        self._check()
        reply = _Reply()
        if timeout is None:
            if len(self._mail) >= self._capacity:
                await self._wait_space()
            self._put(message, reply)
            return await reply.wait(handover)
        with trio.move_on_after(timeout):
            if len(self._mail) >= self._capacity:
                await self._wait_space()
            self._put(message, reply)
            return await reply.wait()
        reply.abandoned = True
        raise WaitTimeout(f"{self.name} did not answer within {timeout} s")

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def _serve(self) -> None:
        mail = self._mail
        actor = self._actor
        receive = actor.actor_receive
        batch_max = actor.actor_batch_max
        try:
            while mail and not self._stopped:
                if batch_max:
                    await self._serve_batch(batch_max)
                    continue
                message, reply = mail.popleft()
                if self._space.statistics().tasks_waiting:
                    self._space.unpark()
                if reply is None:
                    try:
                        await receive(message)
                    except BaseException:
                        self._failed += 1
                        raise
                else:
                    try:
                        value = await receive(message)
                    except Exception as exc:
                        self._failed += 1
                        reply.set(outcome.Error(exc))
                    except BaseException as exc:
                        reply.set(outcome.Error(ActorStopped(f"actor {self.name} was cancelled")))
                        raise exc
                    else:
                        reply.set(outcome.Value(value))
                self._processed += 1
                # Let others run between messages.  This also lingers one
                # scheduling round before an empty mailbox ends the task: an
                # asker that was just answered often sends again within it,
                # which then costs no new task.
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._running = False
            if self._stopped:
                self._finish()
            elif mail:
                # A handler was cancelled (its asker got ActorStopped): the
                # messages behind it are still served, by a new task.
                try:
                    self._serve_soon()
                except RuntimeError:  # the nursery is closed: nobody will serve them
                    self._running = False
                    self._stopped = True
                    self._finish()
            if self._idle is not None and not self._running:
                self._idle.set()
                self._idle = None

    async def _serve_batch(self, batch_max: int) -> None:
        mail = self._mail
        taken = [mail.popleft() for _ in range(min(batch_max, len(mail)))]
        if self._space.statistics().tasks_waiting:
            self._space.unpark_all()
        try:
            results = await self._actor.actor_receive_batch(
                [message for message, _ in taken]
            )
        except BaseException as exc:
            self._failed += len(taken)
            self._processed += len(taken)
            error = exc if isinstance(exc, Exception) else ActorStopped(f"actor {self.name} was cancelled")
            for _, reply in taken:
                if reply is not None:
                    reply.set(outcome.Error(error))
            if not isinstance(exc, Exception) or any(reply is None for _, reply in taken):
                raise
            return
        for (_, reply), result in zip(taken, results, strict=True):
            if isinstance(result, outcome.Error):
                self._failed += 1
            if reply is not None:
                reply.set(result)
        self._processed += len(taken)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _finish(self) -> None:
        error = ActorStopped(f"actor {self.name} is stopped")
        while self._mail:
            _, reply = self._mail.popleft()
            if reply is not None:
                reply.set(outcome.Error(error))
        self._space.unpark_all()
        self._actor.actor_stopped()

    def stop(self) -> None:
        """Stop after the message being handled: pending asks get ``ActorStopped``."""
        if self._stopped:
            return
        self._stopped = True
        if not self._running:
            self._finish()

    async def wait_idle(self) -> None:
        """Wait until no task serves the mailbox (it is empty, or stopped)."""
        while self._running:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            name=self.name,
            mailbox_depth=len(self._mail),
            mailbox_size=self._capacity,
            processed=self._processed,
            failed=self._failed,
            active=self._running,
            stopped=self._stopped,
        )


def spawn(actor: A, nursery: trio.Nursery, *, name: str | None = None) -> ActorRef[A]:
    """Give ``actor`` a mailbox served by tasks in ``nursery``."""
    return ActorRef(actor, nursery, name=name or type(actor).__name__)
