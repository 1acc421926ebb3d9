"""suricate's side of each figure."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import trio

import suricate


async def durable_submit_throughput(path: Path | None, submitters: int, seconds: float, sessions: int = 64) -> float:
    """Acknowledged durable submits per second, ``submitters`` spread over ``sessions``."""
    done = 0
    async with suricate.open_runtime(path, max_queued=1 << 30) as rt:
        handles = [await rt.open_session(f"s{i}") for i in range(sessions)]
        deadline = trio.current_time() + seconds

        async def submitter(k: int) -> None:
            nonlocal done
            s = handles[k % sessions]
            n = 0
            while trio.current_time() < deadline:
                await s.submit({"n": n})
                done += 1
                n += 1

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for k in range(submitters):
                nursery.start_soon(submitter, k)
        elapsed = trio.current_time() - start
    return done / elapsed


async def submit_latency(path: Path, n: int = 200) -> float:
    """Median seconds of one durable ``submit`` with a single submitter."""
    samples = []
    async with suricate.open_runtime(path, max_queued=1 << 30) as rt:
        s = await rt.open_session("s")
        for i in range(20):
            await s.submit({"warm": i})
        for i in range(n):
            start = time.perf_counter()
            await s.submit({"n": i})
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)
