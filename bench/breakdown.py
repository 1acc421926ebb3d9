"""Where one durable submit's time goes: ``python -m bench.breakdown``.

Times a single submitter's ``submit`` on a SQLite store and splits each one at
the trio <-> writer-thread bridge: trio before the hand-off, the hop to the
writer thread, the writer's commit, the hop back to trio, trio after.  The
bridge is wrapped for the run only; nothing in the library changes.  Prints
the median of each part, in microseconds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import suricate
from suricate._kernel import _bridge

PARTS = ("total", "trio before the hop", "hop to the writer", "writer commit",
         "hop back to trio", "trio after the hop")


def _instrument(marks: dict[str, float]) -> None:
    receive = _bridge.ThreadHost.on_receive
    call = _bridge._call

    def on_receive(self: Any, message: Any) -> Any:
        if isinstance(message, _bridge._Call):
            marks["writer_start"] = time.perf_counter()
            token = message.token

            class _Token:
                def run_sync_soon(self, fn: Any, *args: Any) -> None:
                    marks["writer_end"] = time.perf_counter()
                    token.run_sync_soon(fn, *args)

            message.token = _Token()
        return receive(self, message)

    async def timed_call(host: Any, fn: Any, args: Any, **options: Any) -> Any:
        marks["hop_start"] = time.perf_counter()
        try:
            return await call(host, fn, args, **options)
        finally:
            marks["hop_end"] = time.perf_counter()

    _bridge.ThreadHost.on_receive = on_receive  # type: ignore[method-assign]
    _bridge._call = timed_call  # type: ignore[assignment]


async def breakdown(path: Path, n: int = 300) -> dict[str, float]:
    marks: dict[str, float] = {}
    _instrument(marks)
    rows = []
    async with suricate.open_runtime(path, max_queued=1 << 30) as rt:
        s = await rt.open_session("s")
        for i in range(50):
            await s.submit({"warm": i})
        for i in range(n):
            start = time.perf_counter()
            await s.submit({"n": i})
            end = time.perf_counter()
            rows.append((
                end - start,
                marks["hop_start"] - start,
                marks["writer_start"] - marks["hop_start"],
                marks["writer_end"] - marks["writer_start"],
                marks["hop_end"] - marks["writer_end"],
                end - marks["hop_end"],
            ))
    return {name: statistics.median(r[k] for r in rows) * 1e6 for k, name in enumerate(PARTS)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        parts = trio.run(breakdown, Path(tmp) / "breakdown.db")
    for name, micros in parts.items():
        print(f"{name:22s} {micros:8.1f} us")


if __name__ == "__main__":
    sys.exit(main())
