"""The OTP supervisor on trio (virtual time)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from suricate import Backoff, Restart, RestartPolicy, Strategy
from suricate.supervision._supervisor import ChildSpec, Supervisor, SupervisorGaveUp


class Crash(Exception):
    pass


class Children:
    """Children that log their starts and stops, and crash or exit on command."""

    def __init__(self, names: str) -> None:
        self.names = names.split()
        self.log: list[str] = []
        self.actions: dict[str, list[str]] = {n: [] for n in self.names}
        self.kick: dict[str, trio.Event] = {n: trio.Event() for n in self.names}
        self._changed = trio.Event()

    def note(self, line: str) -> None:
        self.log.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, line: str, count: int = 1) -> None:
        with trio.fail_after(1000):
            while self.log.count(line) < count:
                await self._changed.wait()

    def spec(self, name: str, restart: Restart = Restart.PERMANENT) -> ChildSpec:
        async def run() -> None:
            self.note(f"start {name}")
            try:
                while True:
                    await self.kick[name].wait()
                    self.kick[name] = trio.Event()
                    action = self.actions[name].pop(0)
                    if action == "crash":
                        raise Crash(name)
                    if action == "exit":
                        self.note(f"exit {name}")
                        return
            except trio.Cancelled:
                self.note(f"stop {name}")
                raise

        return ChildSpec(name=name, run=run, restart=restart, shutdown=0.0)

    def do(self, name: str, action: str) -> None:
        self.actions[name].append(action)
        self.kick[name].set()


async def _run(sup: Supervisor, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await sup.run()


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, ["start b"]),
        (Strategy.ONE_FOR_ALL, ["stop c", "stop a", "start a", "start b", "start c"]),
        (Strategy.REST_FOR_ONE, ["stop c", "start b", "start c"]),
    ],
)
async def test_strategies_restart_exactly_the_right_children_in_order(
    strategy, expected, autojump_clock
) -> None:
    kids = Children("a b c")
    sup = Supervisor([kids.spec(n) for n in kids.names], strategy=strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(_run, sup)
        await trio.testing.wait_all_tasks_blocked()
        assert kids.log == ["start a", "start b", "start c"]
        kids.log.clear()
        kids.do("b", "crash")
        await kids.wait_for("start b", 1)
        await trio.testing.wait_all_tasks_blocked()
        assert kids.log == expected
        assert sup.restart_count == 1 and sup.crash_count == 1
        kids.log.clear()
        sup.request_stop()
    assert kids.log == ["stop c", "stop b", "stop a"]


@pytest.mark.parametrize(
    ("restart", "on_exit", "on_crash"),
    [
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, True),
        (Restart.TEMPORARY, False, False),
    ],
)
async def test_restart_types_on_normal_exit_and_on_crash(
    restart, on_exit, on_crash, autojump_clock
) -> None:
    for action, wanted in (("exit", on_exit), ("crash", on_crash)):
        kids = Children("a keep")
        sup = Supervisor([kids.spec("a", restart), kids.spec("keep")])
        async with trio.open_nursery() as nursery:
            await nursery.start(_run, sup)
            await trio.testing.wait_all_tasks_blocked()
            kids.do("a", action)
            await trio.testing.wait_all_tasks_blocked()
            assert (kids.log.count("start a") == 2) is wanted, (action, kids.log)
            sup.request_stop()


async def test_exact_backoff_sequence_and_restart_times(autojump_clock) -> None:
    kids = Children("a")
    policy = RestartPolicy(
        max_restarts=10, within=1000, backoff=Backoff(initial=0.5, multiplier=3, maximum=10)
    )
    delays: list[float] = []
    sup = Supervisor(
        [kids.spec("a")],
        policy=policy,
        emit=lambda kind, data: delays.append(data["delay"]) if kind == "supervisor.restarted" else None,
    )
    crash_times = []
    async with trio.open_nursery() as nursery:
        await nursery.start(_run, sup)
        start = trio.current_time()
        for n in range(5):
            await kids.wait_for("start a", n + 1)
            crash_times.append(trio.current_time() - start)
            kids.do("a", "crash")
        await kids.wait_for("start a", 6)
        sup.request_stop()
    assert delays == [0.5, 1.5, 4.5, 10, 10]
    assert [t - start for t in sup.history] == pytest.approx([0.5, 2.0, 6.5, 16.5, 26.5])
    assert crash_times == pytest.approx([0, 0.5, 2.0, 6.5, 16.5])


def test_jittered_delays_stay_within_bounds_for_a_seeded_source() -> None:
    backoff = Backoff(initial=1, multiplier=2, maximum=8, jitter=0.25)
    rng = random.Random(7)
    for k in range(1, 8):
        base = min(8, 2 ** (k - 1))
        delay = backoff.delay(k, rng)
        assert base * 0.75 <= delay <= base * 1.25
    assert [Backoff(initial=1, jitter=0.5).delay(1, random.Random(3)) for _ in range(2)] == [
        Backoff(initial=1, jitter=0.5).delay(1, random.Random(3))
    ] * 2


async def test_intensity_gives_up_on_one_crash_too_many_and_stops_all(autojump_clock) -> None:
    kids = Children("a b")
    sup = Supervisor(
        [kids.spec("a"), kids.spec("b")], policy=RestartPolicy(max_restarts=2, within=10)
    )

    async def crash_thrice() -> None:
        for n in range(3):
            await kids.wait_for("start a", n + 1)
            kids.do("a", "crash")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_thrice)
        with pytest.raises(SupervisorGaveUp, match="more than 2 restarts within 10"):
            await sup.run()
    assert kids.log.count("start a") == 3
    assert kids.log[-1] == "stop b"


async def test_crashes_spread_wider_than_the_window_never_give_up(autojump_clock) -> None:
    kids = Children("a")
    sup = Supervisor([kids.spec("a")], policy=RestartPolicy(max_restarts=2, within=10))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        for n in range(20):
            await kids.wait_for("start a", n + 1)
            kids.do("a", "crash")
            await trio.sleep(6)
        await trio.testing.wait_all_tasks_blocked()
        assert sup.restart_count == 20
        sup.request_stop()


async def test_a_stopping_child_gets_its_shutdown_time_then_is_cancelled(autojump_clock) -> None:
    stopped_at: list[float] = []

    async def stubborn() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped_at.append(trio.current_time())

    asked = []
    sup = Supervisor(
        [ChildSpec(name="s", run=stubborn, stop=lambda: asked.append(1), shutdown=3.0)]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        sup.request_stop()
    assert asked and stopped_at == [pytest.approx(start + 3.0)]


def test_child_names_must_be_unique() -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValueError):
        Supervisor([ChildSpec(name="x", run=noop), ChildSpec(name="x", run=noop)])
