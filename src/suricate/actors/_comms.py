"""Comms: delivering the transactional outbox into sessions.

Theory of operation
-------------------
A turn's peer messages are committed with the turn, as outbox rows (DESIGN
section 9).  For every open session there is a :class:`CommsDrain`: when a
commit adds rows addressed to it (or it is opened, or revived), the drain is
kicked; it reads the session's pending rows in commit order and submits each
as an input of kind ``peer_message`` (or ``peer_response``) with the
idempotency key ``suricate:outbox:<row id>``.  The session marks the row
delivered in the same transaction that admits the input, so a crash at any
point delivers each committed row exactly once, and a row from a turn that
never committed does not exist.

The drain holds a task only while it has rows to deliver, and delivers one
row at a time, so a full target mailbox holds it back (bounded in flight).
A target that is ``STOPPED`` keeps its rows waiting until it is revived; a
``RETIRED`` or ``DESTROYED`` one turns them into dead letters (a
``peer_response`` to a retired session is still accepted).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ActorStopped, InputRejected, NotReady, Overloaded, SessionDestroyed
from .._events import Event, EventBus
from .._model import Input, OutboxRow, SessionState, decode_json
from ._messages import MarkDead, Submit

if TYPE_CHECKING:
    from ..store._protocol import Store
    from .._kernel import ActorRef

__all__ = ["Comms", "CommsDrain", "outbox_key"]

log = logging.getLogger("suricate.comms")

BATCH = 64
MAX_BACKOFF = 5.0


def outbox_key(row_id: int) -> str:
    return f"suricate:outbox:{row_id}"


def peer_input(row: OutboxRow) -> Input:
    """The input that delivers one outbox row."""
    message = row.message
    metadata: dict[str, Any] = {"from": message.session_id, "outbox_id": row.id}
    if message.reply:
        metadata["reply"] = True
    return Input(
        decode_json(message.payload_json),
        kind=message.kind,
        idempotency_key=outbox_key(row.id),
        correlation_id=message.correlation_id,
        metadata=metadata,
    )


class CommsDrain:
    """Delivers the outbox rows addressed to one session."""

    def __init__(self, session_id: str, ref: ActorRef[Any], comms: Comms) -> None:
        self.session_id = session_id
        self.ref = ref
        self.comms = comms
        self.running = False
        self.again = False
        self.delivered = 0
        self.scope = trio.CancelScope()
        self.idle = trio.Event()
        self.idle.set()

    def kick(self) -> None:
        """New rows may be waiting: deliver them (at most one task at a time)."""
        if self.comms.closed:
            return
        if self.running:
            self.again = True
            return
        self.running = True
        self.idle = trio.Event()
        self.scope = trio.CancelScope()
        self.comms.nursery.start_soon(self._run, name=f"comms drain {self.session_id}")

    @trio.lowlevel.enable_ki_protection  # Ctrl-C goes to the embedding task
    async def _run(self) -> None:
        try:
            with self.scope:
                await self._loop()
        except ActorStopped:
            pass  # the runtime is closing: the rows wait in the outbox
        finally:
            self.running = False
            self.idle.set()

    async def _loop(self) -> None:
        failures = 0
        while not self.comms.closed:
            self.again = False
            try:
                more = await self._deliver_some()
            except (ActorStopped, trio.Cancelled):
                raise
            except Exception as exc:  # StoreError, Overloaded: try again later
                failures += 1
                delay = min(MAX_BACKOFF, 0.01 * 2**failures)
                log.warning("comms drain %s: %s; retrying in %.2f s", self.session_id, exc, delay)
                await trio.sleep(delay)
                continue
            failures = 0
            if not (more or self.again):
                break

    async def _deliver_some(self) -> bool:
        """Deliver up to one batch; True if more rows may be waiting."""
        rows = await self.comms.store.load_outbox(self.session_id, limit=BATCH)
        for row in rows:
            try:
                await self.ref.ask(Submit(peer_input(row), internal=True, outbox_id=row.id))
            except NotReady as exc:
                if exc.state is SessionState.RETIRED:
                    await self._dead(row, "target session is retired")
                    continue
                return False  # STOPPED (or not ready yet): wait until revived
            except SessionDestroyed:
                await self._dead(row, "target session is destroyed")
                continue
            except Overloaded:
                raise
            except InputRejected as exc:
                await self._dead(row, f"rejected by the target: {exc.reason}")
                continue
            self.delivered += 1
        return len(rows) == BATCH

    async def _dead(self, row: OutboxRow, reason: str) -> None:
        await self.ref.ask(MarkDead(row.id, reason))
        self.comms.emit_dead_letter(row.message.session_id, self.session_id, reason, row.id)


class Comms:
    """Routes outbox kicks to the drains of open sessions."""

    def __init__(self, store: Store, nursery: trio.Nursery, bus: EventBus) -> None:
        self.store = store
        self.nursery = nursery
        self.bus = bus
        self.drains: dict[str, CommsDrain] = {}
        self.known: set[str] = set()
        self.closed = False

    async def start(self) -> None:
        self.known.update(await self.store.list_sessions())

    def add(self, session_id: str, ref: ActorRef[Any]) -> CommsDrain:
        self.known.add(session_id)
        drain = self.drains[session_id] = CommsDrain(session_id, ref, self)
        drain.kick()
        return drain

    def notify(self, sender: str, targets: set[str], kinds: dict[str, str]) -> None:
        """Rows for ``targets`` were committed by ``sender``."""
        for target in targets:
            drain = self.drains.get(target)
            if drain is not None:
                drain.kick()
            elif target not in self.known:
                self.emit_dead_letter(sender, target, "unknown target", None)

    def kick(self, session_id: str) -> None:
        drain = self.drains.get(session_id)
        if drain is not None:
            drain.kick()

    def emit_dead_letter(
        self, sender: str | None, target: str, reason: str, row: int | None
    ) -> None:
        if self.bus.active:
            self.bus.publish(
                Event(
                    kind="dead_letter",
                    session_id=target,
                    data={"from": sender, "reason": reason, "outbox_id": row},
                    at=time.time(),
                )
            )

    async def close(self) -> None:
        """Stop every drain; undelivered rows stay in the outbox."""
        self.closed = True
        for drain in self.drains.values():
            drain.scope.cancel()
        for drain in self.drains.values():
            await drain.idle.wait()

