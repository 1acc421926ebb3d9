"""Cancelling the scope around ``open_runtime`` is a shutdown, not a race.

A seeded sweep over cancel points (DESIGN section 3, issue 12 item 3): for
each seed a subprocess (``tests/crash/cancel_scope.py``) runs, at each of
``POINTS`` delays drawn from the seed, a small SQLite workload (3 sessions x
10 inputs, steered, interrupting, failing and checkpointing inputs) on a
fresh file under ``trio.move_on_after(delay)``, so the cancellation lands
before, during and after the workload's turns, and then reopens that file
itself; this process reopens it once more after the subprocess is gone.  The subprocess matters:
a shutdown stuck inside a shielded scope ignores every trio timeout, and only
killing its process bounds it.

Each test checks one guarantee over all cancel points and names the points
(``seed/point``) that break it.  The cancel points are real time (SQLite uses
threads), so which points break varies from run to run: a sweep of this size
hit each of these failures on every run before shutdown became a protocol.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import suricate
from suricate.testing import durable_view, memory_view

SCRIPT = Path(__file__).parent / "crash" / "cancel_scope.py"
SEEDS = range(1, 26)
POINTS = 8
"""Cancel points per seed (one subprocess per seed, a fresh file per point)."""
SESSIONS = ("w0", "w1", "w2")
RUN_WITHIN = 60.0
"""Seconds a seed's subprocess may take: past it, it hangs and is killed."""

pytestmark = pytest.mark.timeout(900)


@attrs.frozen(kw_only=True)
class Run:
    """What one cancel point did (``seed/point``)."""

    name: str
    db: Path
    acked: dict[str, list[str]]
    left: dict[str, Any] | None
    """The ``left`` line (``None``: it never left the cancelled scope)."""
    reopened: dict[str, Any] | None
    hung: bool


def _run_seed(workdir: Path, seed: int) -> list[Run]:
    hung = False
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), str(workdir), str(seed), str(POINTS)],
            capture_output=True,
            text=True,
            timeout=RUN_WITHIN,
        )
        out = done.stdout
    except subprocess.TimeoutExpired as exc:  # killed by subprocess.run
        hung = True
        raw = exc.stdout or ""
        out = raw.decode() if isinstance(raw, bytes) else raw
    acked: list[dict[str, list[str]]] = [{sid: [] for sid in SESSIONS} for _ in range(POINTS)]
    lines: list[dict[str, dict[str, Any]]] = [{} for _ in range(POINTS)]
    for text in out.splitlines():
        line = json.loads(text)
        if line["phase"] == "ack":
            acked[line["point"]][line["session"]].append(line["input"])
        else:
            lines[line["point"]][line["phase"]] = line
    runs = []
    for point in range(POINTS):
        runs.append(
            Run(
                name=f"{seed}/{point}",
                db=workdir / f"point{point}.db",
                acked=acked[point],
                left=lines[point].get("left"),
                reopened=lines[point].get("reopened"),
                hung=hung and "left" not in lines[point],
            )
        )
        if "left" not in lines[point]:
            break  # the subprocess got no further: later points never ran
    return runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    return [
        run for seed in SEEDS for run in _run_seed(tmp_path_factory.mktemp(f"seed{seed}"), seed)
    ]


def _report(failures: dict[str, str], sweep: list[Run]) -> str:
    return f"{len(failures)} of {len(sweep)} cancel points (seed/point): " + "; ".join(
        f"{name}: {why}" for name, why in failures.items()
    )


def test_leaving_a_cancelled_scope_around_open_runtime_returns_promptly_and_raises_nothing(
    sweep: list[Run],
) -> None:
    failures: dict[str, str] = {}
    for run in sweep:
        if run.hung or run.left is None:
            failures[run.name] = f"never left the cancelled scope (killed after {RUN_WITHIN}s)"
        elif "error" in run.left:
            failures[run.name] = f"leaving it raised {run.left['error']}"
    assert not failures, _report(failures, sweep)


def test_the_process_that_cancelled_its_runtime_can_reopen_the_file(sweep: list[Run]) -> None:
    failures = {
        run.name: "; ".join(run.reopened["problems"])
        for run in sweep
        if run.reopened is not None and run.reopened["problems"]
    }
    assert not failures, _report(failures, sweep)


async def _check_reopened(run: Run) -> list[str]:
    """Reopen the point's file here and check what the cancel left behind."""
    problems: list[str] = []
    with trio.fail_after(60):
        async with suricate.open_runtime(run.db) as rt:
            for sid in SESSIONS:
                if sid not in await rt.store.list_sessions():
                    if run.acked[sid]:
                        problems.append(f"{sid}: acknowledged inputs but not in the store")
                    continue
                try:
                    s = await rt.open_session(sid)
                except Exception as exc:
                    problems.append(f"open_session({sid!r}) raised {exc!r}")
                    continue
                for input_id in run.acked[sid]:
                    if await s.input(input_id) is None:
                        problems.append(f"{sid}: acknowledged input {input_id} is lost")
                in_memory = await memory_view(s)
                stored = await durable_view(rt.store, sid)
                if in_memory != stored:
                    problems.append(f"{sid}: memory differs from the store")
                orders: dict[int, list[int]] = {}
                for _, state, _, _, lane, order in stored.inputs:
                    if state == "queued":
                        orders.setdefault(lane, []).append(order)
                for lane, taken in sorted(orders.items()):
                    if len(set(taken)) != len(taken):
                        problems.append(f"{sid}: queued inputs share an order in lane {lane}")
                # What is left still runs to an outcome.
                await s.attach(lambda turn: None)
                for input_id in run.acked[sid]:
                    await s.wait(input_id)
                # Inputs admitted but never acknowledged before the cancel may
                # still be running: compare once the session is quiet.
                await s.detach()
                assert await memory_view(s) == await durable_view(rt.store, sid)
    return problems


async def test_a_cancelled_runtime_keeps_every_acknowledged_input_in_order_and_memory_equal_to_store(
    sweep: list[Run],
) -> None:
    failures: dict[str, str] = {}
    for run in sweep:
        try:
            problems = await _check_reopened(run)
        except Exception as exc:
            problems = [f"reopening raised {exc!r}"]
        if problems:
            failures[run.name] = "; ".join(problems)
    assert not failures, _report(failures, sweep)
