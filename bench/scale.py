"""Scale figures: memory per idle session, and recovery time of a large store.

Both measure in a fresh interpreter (``python -m bench.scale ...``), so that
nothing the runner did before (other figures, the store's build) is in the
numbers: RSS starts clean, and recovery starts from a cold runtime.  Only
the part being measured is timed, not interpreter start-up or imports.

These figures have no baseline: their ratio is the value itself (KiB per
session, seconds), to be read against the goal.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import suricate

Measure = Callable[[Callable[[], float], int], dict[str, float]]
Fresh = Callable[[Path, str], Path]

ROOT = Path(__file__).resolve().parent.parent
#: Sessions opened before the first RSS reading, so lazily built code paths
#: and caches are not charged to the measured sessions.
WARM_SESSIONS = 100


def _child(*args: str, timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.scale ARGS`` and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.scale {' '.join(args)} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- idle sessions ------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _idle_sessions(n: int) -> dict[str, Any]:
    async with suricate.open_runtime(None) as rt:
        for i in range(WARM_SESSIONS):
            await rt.open_session(f"warm-{i}")
        gc.collect()
        before = _rss_kib()
        start = time.perf_counter()
        for i in range(n):
            await rt.open_session(f"session-{i:07d}")
        open_s = time.perf_counter() - start
        gc.collect()
        after = _rss_kib()
        stats = await rt.stats()
        if stats.sessions_open != n + WARM_SESSIONS:
            raise RuntimeError(f"expected {n + WARM_SESSIONS} open sessions: {stats}")
    return {
        "sessions": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": (after - before) / n,
        "open_s": open_s,
        "sessions_holding_a_task": stats.sessions_active,
    }


def idle_session_figure(repeat: int, quick: bool, measure: Measure) -> dict[str, Any]:
    n = 10_000 if quick else 100_000
    runs: list[dict[str, Any]] = []

    def one() -> float:
        result = _child("idle", str(n), timeout=600)
        runs.append(result)
        return float(result["kib_per_session"])

    kib = measure(one, repeat)
    return {
        "idle_session_kib": {
            "ratio": kib["median"],
            "suricate_kib_per_session": kib,
            "sessions": n,
            "store": "MemoryStore, sessions opened and left idle (no executor attached)",
            "runs": runs[1:],  # the first was the warm-up
            "goal": "<= 8",
        }
    }


# -- recovery -----------------------------------------------------------------------------


async def _noop_executor(turn: suricate.Turn) -> None:
    return None


async def build_store(path: Path, total: int, sessions: int, queued_per_session: int) -> None:
    """Fill ``path`` through suricate: ``total`` inputs over ``sessions``
    sessions, each with an idempotency key; a no-op executor consumes all but
    the last ``queued_per_session`` of each session, which stay queued."""
    per = total // sessions
    consumed = per - queued_per_session
    with trio.fail_after(1800):
        async with suricate.open_runtime(path, max_queued=per + 1) as rt:
            handles = [await rt.open_session(f"s{i:04d}") for i in range(sessions)]

            async def fill(s: suricate.Session) -> None:
                last = None
                for i in range(consumed):
                    last = (await s.submit({"n": i}, idempotency_key=f"m{i}")).input_id
                # Batches keep the build short; recovery reads no receipts of
                # consumed inputs, so the batch size does not change the figure.
                await s.attach(_noop_executor, max_batch=100)
                if last is not None:
                    outcome = await s.wait(last)
                    if not isinstance(outcome, suricate.Completed):
                        raise RuntimeError(f"build: {outcome!r}")
                await s.detach()
                for i in range(consumed, per):
                    await s.submit({"n": i}, idempotency_key=f"m{i}")

            async with trio.open_nursery() as nursery:
                for s in handles:
                    nursery.start_soon(fill, s)


async def _reopen(path: Path, sessions: int) -> dict[str, Any]:
    start = time.perf_counter()
    async with suricate.open_runtime(path, max_queued=1 << 30) as rt:
        handles = [await rt.open_session(f"s{i:04d}") for i in range(sessions)]
        seconds = time.perf_counter() - start
        queued = 0
        for s in handles:
            queued += (await s.stats()).inputs["queued"]
    return {"seconds": seconds, "queued_after_recovery": queued}


def recovery_figure(tmp: Path, repeat: int, quick: bool, measure: Measure, fresh: Fresh) -> dict[str, Any]:
    total = 10_000 if quick else 100_000
    sessions = 100
    queued_per_session = total // sessions // 10
    path = fresh(tmp, "recovery.db")
    start = time.perf_counter()
    trio.run(build_store, path, total, sessions, queued_per_session)
    build_s = time.perf_counter() - start
    expected = queued_per_session * sessions
    runs: list[dict[str, Any]] = []

    def one() -> float:
        result = _child("reopen", str(path), str(sessions), timeout=600)
        if result["queued_after_recovery"] != expected:
            raise RuntimeError(f"recovery found {result['queued_after_recovery']} queued, not {expected}")
        runs.append(result)
        return float(result["seconds"])

    seconds = measure(one, repeat)
    return {
        "recovery_s_100k": {
            "ratio": seconds["median"],
            "suricate_s": seconds,
            "inputs": total,
            "sessions": sessions,
            "queued_inputs": expected,
            "terminal_inputs": total - expected,
            "store": "SqliteStore built through suricate (submit with an idempotency key each, "
            "no-op executor with max_batch=100, the rest left queued); timed: open_runtime "
            "plus open_session of every session, in a fresh process",
            "database_bytes": path.stat().st_size,
            "build_s": build_s,
            "runs": runs[1:],
            "goal": "<= 2",
        }
    }


def main(argv: list[str]) -> int:
    what, *args = argv
    if what == "idle":
        result = trio.run(_idle_sessions, int(args[0]))
    elif what == "reopen":
        result = trio.run(_reopen, Path(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown: {what}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
