"""The actor kernel (``suricate._kernel``): mailbox order, ask/tell,
timeouts, the bounded mailbox, stopping, passivation and statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import outcome
import pytest
import trio
import trio.testing

import suricate
from suricate import ActorStopped, WaitTimeout
from suricate.actors import Actor, ActorRef, ActorStatistics, spawn


class Gate:
    """A message that keeps the actor busy until ``open`` is set."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.entered = trio.Event()


class Recorder(Actor):
    """Records every message; echoes it back, raises exceptions, waits on gates."""

    def __init__(self, mailbox_size: int = 1024) -> None:
        self.actor_mailbox_size = mailbox_size
        self.received: list[Any] = []
        self.stopped_calls = 0

    async def actor_receive(self, message: Any) -> Any:
        self.received.append(message)
        if isinstance(message, Gate):
            message.entered.set()
            await message.open.wait()
            return "gate passed"
        if isinstance(message, BaseException):
            raise message
        return ("echo", message)

    def actor_stopped(self) -> None:
        self.stopped_calls += 1


async def busy(ref: ActorRef[Recorder]) -> Gate:
    """Make the actor busy on a gate, with its mailbox empty."""
    gate = Gate()
    ref.tell_nowait(gate)
    await gate.entered.wait()
    assert ref.statistics().mailbox_depth == 0
    return gate


# -- order, ask and tell ------------------------------------------------------------


async def test_tells_and_asks_are_handled_one_at_a_time_in_arrival_order() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        await ref.tell(1)
        ref.tell_nowait(2)
        answers: list[Any] = []

        async def asker(n: int) -> None:
            answers.append(await ref.ask(n))

        nursery.start_soon(asker, 3)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(4)
        assert actor.received == [gate]  # nothing overtook the busy handler
        gate.open.set()
        assert await ref.ask(5) == ("echo", 5)
        assert actor.received == [gate, 1, 2, 3, 4, 5]
        assert answers == [("echo", 3)]


async def test_ask_returns_the_handler_value() -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(), nursery)
        assert await ref.ask({"x": 1}) == ("echo", {"x": 1})


async def test_ask_reraises_the_handler_exception_and_the_actor_keeps_working() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        boom = ValueError("boom")
        with pytest.raises(ValueError) as info:
            await ref.ask(boom)
        assert info.value is boom
        assert await ref.ask("after") == ("echo", "after")
        stats = ref.statistics()
        assert stats.failed == 1 and stats.processed == 2 and not stats.stopped
        assert actor.received == [boom, "after"]


async def test_a_tell_whose_handler_raises_crashes_into_the_nursery() -> None:
    actor = Recorder()
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="crash")):
        async with trio.open_nursery() as nursery:
            ref = spawn(actor, nursery)
            await ref.tell(RuntimeError("crash"))
    assert ref.statistics().failed == 1
    assert ref.statistics().processed == 0


# -- timeouts -----------------------------------------------------------------------


async def test_ask_timeout_raises_wait_timeout_and_the_late_answer_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        gate = Gate()
        start = trio.current_time()
        with pytest.raises(WaitTimeout) as info:
            await ref.ask(gate, timeout=5)
        assert trio.current_time() - start == pytest.approx(5)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, suricate.SuricateError)
        # The message was delivered; the handler is still running it.
        assert actor.received == [gate]
        gate.open.set()
        assert await ref.ask("next") == ("echo", "next")
        assert ref.statistics().processed == 2


async def test_ask_that_answers_in_time_is_not_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(), nursery)
        gate = await busy(ref)

        async def open_later() -> None:
            await trio.sleep(4)
            gate.open.set()

        nursery.start_soon(open_later)
        assert await ref.ask("x", timeout=5) == ("echo", "x")
        assert trio.current_time() == pytest.approx(4)


async def test_ask_timeout_while_waiting_for_room_never_delivers_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder(mailbox_size=1)
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        ref.tell_nowait("fills the mailbox")
        with pytest.raises(WaitTimeout):
            await ref.ask("too late", timeout=3)
        gate.open.set()
        await ref.wait_idle()
        assert actor.received == [gate, "fills the mailbox"]


# -- the bounded mailbox ------------------------------------------------------------


async def test_tell_nowait_raises_would_block_when_the_mailbox_is_full() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder(mailbox_size=2)
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        ref.tell_nowait("a")
        ref.tell_nowait("b")
        with pytest.raises(trio.WouldBlock):
            ref.tell_nowait("c")
        assert ref.statistics().mailbox_depth == 2
        gate.open.set()
        await ref.wait_idle()
        assert actor.received == [gate, "a", "b"]


async def test_tell_waits_for_room_and_then_delivers_in_order() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder(mailbox_size=1)
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        await ref.tell("first")
        delivered = trio.Event()

        async def teller() -> None:
            await ref.tell("second")
            delivered.set()

        nursery.start_soon(teller)
        await trio.testing.wait_all_tasks_blocked()
        assert not delivered.is_set()
        assert ref.statistics().mailbox_depth == 1
        gate.open.set()
        await delivered.wait()
        await ref.wait_idle()
        assert actor.received == [gate, "first", "second"]


class _BeforeSecondStep(trio.abc.Instrument):
    """Runs ``action`` just before the task named ``task_name`` resumes from
    its first yield: a deterministic way to interleave with one checkpoint."""

    def __init__(self, task_name: str, action: Callable[[], None]) -> None:
        self.task_name = task_name
        self.action = action
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.task_name:
            self.steps += 1
            if self.steps == 2:
                self.action()


async def test_tell_never_fills_the_mailbox_beyond_its_capacity() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder(mailbox_size=1)
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        instrument = _BeforeSecondStep("teller", lambda: ref.tell_nowait("jumped in"))
        trio.lowlevel.add_instrument(instrument)
        try:
            nursery.start_soon(ref.tell, "teller's", name="teller")
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(instrument)
        depth = ref.statistics().mailbox_depth
        gate.open.set()
        await ref.wait_idle()
        assert instrument.steps >= 2
        assert depth <= 1


# -- stopping -----------------------------------------------------------------------


async def test_stop_finishes_the_current_message_and_fails_pending_and_later_asks() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        gate = Gate()
        results: dict[str, Any] = {}

        async def asker(name: str, message: Any) -> None:
            try:
                results[name] = await ref.ask(message)
            except ActorStopped as exc:
                results[name] = exc

        nursery.start_soon(asker, "current", gate)
        await gate.entered.wait()
        nursery.start_soon(asker, "pending-1", 1)
        nursery.start_soon(asker, "pending-2", 2)
        await trio.testing.wait_all_tasks_blocked()
        assert ref.statistics().mailbox_depth == 2
        ref.stop()
        assert ref.stopped
        gate.open.set()
        await ref.wait_idle()
        await trio.testing.wait_all_tasks_blocked()
        assert results["current"] == "gate passed"
        assert isinstance(results["pending-1"], ActorStopped)
        assert isinstance(results["pending-2"], ActorStopped)
        assert actor.received == [gate]
        assert actor.stopped_calls == 1
        with pytest.raises(ActorStopped):
            await ref.ask("later")
        with pytest.raises(ActorStopped):
            await ref.tell("later")
        with pytest.raises(ActorStopped):
            ref.tell_nowait("later")
        assert actor.received == [gate]
        stats = ref.statistics()
        assert stats.stopped and not stats.active and stats.mailbox_depth == 0


async def test_stop_wakes_a_teller_waiting_for_room_with_actor_stopped() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder(mailbox_size=1)
        ref = spawn(actor, nursery)
        gate = await busy(ref)
        ref.tell_nowait("fills the mailbox")
        outcome: list[Any] = []

        async def teller() -> None:
            try:
                await ref.tell("waiting")
                outcome.append("delivered")
            except ActorStopped:
                outcome.append("stopped")

        nursery.start_soon(teller)
        await trio.testing.wait_all_tasks_blocked()
        ref.stop()
        gate.open.set()
        await ref.wait_idle()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == ["stopped"]
        assert actor.received == [gate]


async def test_stopping_an_idle_actor_calls_its_hook_once() -> None:
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        assert await ref.ask("x") == ("echo", "x")
        await ref.wait_idle()
        ref.stop()
        ref.stop()
        assert actor.stopped_calls == 1
        assert ref.statistics().stopped


async def test_stop_during_a_tell_fails_the_tell_and_calls_the_hook_once() -> None:
    # Regression: tell checked for a stop only before its checkpoint, so a stop
    # in between let it return for a message never handled, and actor_stopped()
    # ran a second time when the serve task that message started finished.
    async with trio.open_nursery() as nursery:
        actor = Recorder()
        ref = spawn(actor, nursery)
        outcome: list[str] = []

        async def teller() -> None:
            try:
                await ref.tell("racing")
                outcome.append("returned")
            except ActorStopped:
                outcome.append("stopped")

        instrument = _BeforeSecondStep("teller", ref.stop)
        trio.lowlevel.add_instrument(instrument)
        try:
            nursery.start_soon(teller, name="teller")
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(instrument)
        await ref.wait_idle()
        assert instrument.steps >= 2 and ref.stopped
        assert actor.received == []
        assert actor.stopped_calls == 1
        assert outcome == ["stopped"]


# -- batches ------------------------------------------------------------------------


class Batcher(Actor):
    """Takes waiting messages in batches (the store actor's group-commit shape)."""

    actor_batch_max = 3

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.fail_next = False

    async def actor_receive_batch(self, messages: list[Any]) -> list[Any]:
        self.batches.append(list(messages))
        if isinstance(messages[0], Gate):
            messages[0].entered.set()
            await messages[0].open.wait()
        if self.fail_next:
            self.fail_next = False
            raise OSError("whole batch failed")
        return [
            outcome.Error(m) if isinstance(m, Exception) else outcome.Value(("batched", m))
            for m in messages
        ]


async def test_waiting_messages_are_handed_over_in_batches_of_at_most_batch_max() -> None:
    async with trio.open_nursery() as nursery:
        actor = Batcher()
        ref = spawn(actor, nursery)
        gate = Gate()
        ref.tell_nowait(gate)
        await gate.entered.wait()
        answers: dict[int, Any] = {}

        async def asker(n: int, message: Any) -> None:
            try:
                answers[n] = await ref.ask(message)
            except LookupError as exc:
                answers[n] = exc

        bad = KeyError("no such thing")
        for n, message in enumerate(["a", bad, "c", "d"]):
            nursery.start_soon(asker, n, message)
            await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
        await ref.wait_idle()
        await trio.testing.wait_all_tasks_blocked()
        assert actor.batches == [[gate], ["a", bad, "c"], ["d"]]
        assert answers == {0: ("batched", "a"), 1: bad, 2: ("batched", "c"), 3: ("batched", "d")}
        stats = ref.statistics()
        assert stats.processed == 5 and stats.failed == 1


async def test_a_batch_handler_that_raises_answers_every_asker_and_the_actor_goes_on() -> None:
    async with trio.open_nursery() as nursery:
        actor = Batcher()
        ref = spawn(actor, nursery)
        actor.fail_next = True
        errors: list[BaseException] = []

        async def asker(message: str) -> None:
            with pytest.raises(OSError) as info:
                await ref.ask(message)
            errors.append(info.value)

        nursery.start_soon(asker, "x")
        nursery.start_soon(asker, "y")
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 2 and errors[0] is errors[1]
        assert await ref.ask("z") == ("batched", "z")
        assert ref.statistics().failed == 2


# -- passivation and statistics -----------------------------------------------------


async def test_an_idle_actor_holds_no_task_and_reactivates_on_its_next_message() -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(), nursery, name="passive")
        assert not ref.statistics().active
        assert nursery.child_tasks == frozenset()
        await ref.tell("wake")
        assert ref.statistics().active
        assert [t.name for t in nursery.child_tasks] == ["passive"]
        await ref.wait_idle()
        assert not ref.statistics().active
        assert nursery.child_tasks == frozenset()
        assert await ref.ask("again") == ("echo", "again")
        await ref.wait_idle()
        assert nursery.child_tasks == frozenset()
        assert ref.statistics().processed == 2


async def test_wait_idle_returns_at_once_for_an_idle_actor() -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(), nursery)
        with trio.fail_after(1):
            await ref.wait_idle()
        assert not ref.statistics().active


async def test_statistics_count_messages_failures_and_mailbox_depth() -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(mailbox_size=8), nursery, name="counted")
        assert ref.statistics() == ActorStatistics(
            name="counted",
            mailbox_depth=0,
            mailbox_size=8,
            processed=0,
            failed=0,
            active=False,
            stopped=False,
        )
        gate = await busy(ref)
        for n in range(3):
            ref.tell_nowait(n)
        stats = ref.statistics()
        assert stats.mailbox_depth == 3 and stats.active and stats.processed == 0
        gate.open.set()
        for _ in range(2):
            with pytest.raises(KeyError):
                await ref.ask(KeyError("k"))
        await ref.wait_idle()
        assert ref.statistics() == ActorStatistics(
            name="counted",
            mailbox_depth=0,
            mailbox_size=8,
            processed=6,
            failed=2,
            active=False,
            stopped=False,
        )


async def test_spawn_names_the_actor_after_its_class_by_default() -> None:
    async with trio.open_nursery() as nursery:
        ref = spawn(Recorder(), nursery)
        assert ref.name == "Recorder"
        assert ref.statistics().name == "Recorder"
        assert "Recorder" in repr(ref)


# -- synchronous handling --------------------------------------------------------------


class Tally(Recorder):
    """Handles plain messages synchronously when the kernel lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[Any] = []

    def actor_receive_now(self, message: Any) -> None:
        self.inline.append(message)
        self.received.append(message)


async def test_a_tell_nowait_to_an_idle_sync_actor_is_handled_at_once_without_a_task() -> None:
    async with trio.open_nursery() as nursery:
        actor = Tally()
        ref = spawn(actor, nursery)
        ref.tell_nowait("a")
        assert actor.received == ["a"] and actor.inline == ["a"]
        stats = ref.statistics()
        assert (stats.active, stats.processed, stats.mailbox_depth) == (False, 1, 0)


async def test_a_busy_sync_actor_queues_so_nothing_overtakes() -> None:
    async with trio.open_nursery() as nursery:
        actor = Tally()
        ref = spawn(actor, nursery)
        gate = Gate()
        await ref.tell(gate)  # tell always queues: the actor's task serves the gate
        await gate.entered.wait()
        ref.tell_nowait("b")  # queued behind the gate, not handled inline
        ref.tell_nowait("c")
        assert actor.received == [gate]
        gate.open.set()
        await ref.wait_idle()
        assert actor.received == [gate, "b", "c"] and actor.inline == []
        ref.tell_nowait("d")
        assert actor.received[-1] == "d" and actor.inline == ["d"]


async def test_a_stopped_sync_actor_refuses_a_tell_nowait() -> None:
    async with trio.open_nursery() as nursery:
        actor = Tally()
        ref = spawn(actor, nursery)
        ref.stop()
        with pytest.raises(ActorStopped):
            ref.tell_nowait("late")
        assert actor.received == []


class Echoer(Actor):
    """Handles inline; a message for itself sent from inside the handler queues."""

    def __init__(self) -> None:
        self.ref: ActorRef[Echoer] | None = None
        self.active = 0
        self.most = 0
        self.log: list[Any] = []

    def actor_receive_now(self, message: Any) -> None:
        self.active += 1
        self.most = max(self.most, self.active)
        self.log.append(message)
        if message == "ping":
            assert self.ref is not None
            self.ref.tell_nowait("pong")
        if message == "fail":
            self.active -= 1
            raise ValueError("bad message")
        self.active -= 1

    async def actor_receive(self, message: Any) -> None:
        self.actor_receive_now(message)


async def test_a_sync_handler_is_never_re_entered_and_failures_are_counted() -> None:
    async with trio.open_nursery() as nursery:
        actor = Echoer()
        ref = actor.ref = spawn(actor, nursery)
        ref.tell_nowait("ping")
        assert actor.log == ["ping"]  # "pong" queued, not handled inside "ping"
        await ref.wait_idle()
        assert actor.log == ["ping", "pong"] and actor.most == 1
        with pytest.raises(ValueError, match="bad message"):
            ref.tell_nowait("fail")  # the sender's bug: raised to the sender
        stats = ref.statistics()
        assert (stats.processed, stats.failed, stats.active) == (2, 1, False)
        ref.tell_nowait("after")
        assert actor.log[-1] == "after"
