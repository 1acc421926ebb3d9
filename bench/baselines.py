"""Baselines measured in the same run: the physical ceilings suricate is compared to."""

from __future__ import annotations

import queue
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import trio


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, session TEXT, payload TEXT)"
    )
    return conn


def single_row_commit_latency(path: Path, n: int = 200) -> float:
    """Median seconds of one ``BEGIN; INSERT; COMMIT`` (WAL, synchronous=FULL)."""
    conn = _connect(path)
    samples = []
    try:
        for i in range(n):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO rows (session, payload) VALUES (?, ?)", ("s", f'{{"n":{i}}}'))
            conn.execute("COMMIT")
            samples.append(time.perf_counter() - start)
    finally:
        conn.close()
    return statistics.median(samples)


class _GroupWriter:
    """One thread that commits whatever rows are waiting, in one transaction,
    and acknowledges each producer through the trio token."""

    def __init__(self, path: Path, token: trio.lowlevel.TrioToken) -> None:
        self.conn = _connect(path)
        self.token = token
        self.inbox: queue.SimpleQueue[tuple[tuple[str, str], object] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            first = self.inbox.get()
            if first is None:
                break
            batch = [first]
            while True:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.inbox.put(None)
                    break
                batch.append(item)
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO rows (session, payload) VALUES (?, ?)", [row for row, _ in batch]
            )
            self.conn.execute("COMMIT")
            self.token.run_sync_soon(_ack_all, [task for _, task in batch])
        self.conn.close()

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join()


def _ack_all(tasks: list[object]) -> None:
    for task in tasks:
        trio.lowlevel.reschedule(task)  # type: ignore[arg-type]


async def group_writer_throughput(path: Path, submitters: int, seconds: float) -> float:
    """Acknowledged rows per second of the bare group-commit writer."""
    writer = _GroupWriter(path, trio.lowlevel.current_trio_token())
    done = 0
    deadline = trio.current_time() + seconds

    async def producer(k: int) -> None:
        nonlocal done
        n = 0
        while trio.current_time() < deadline:
            task = trio.lowlevel.current_task()
            writer.inbox.put(((f"s{k % 64}", f'{{"n":{n}}}'), task))
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
            done += 1
            n += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for k in range(submitters):
            nursery.start_soon(producer, k)
    elapsed = trio.current_time() - start
    await trio.to_thread.run_sync(writer.close)
    return done / elapsed


async def trio_round_trips(seconds: float) -> float:
    """Request/response round trips per second between two trio tasks."""
    send_req, recv_req = trio.open_memory_channel[object](0)
    count = 0
    deadline = trio.current_time() + seconds

    async def server() -> None:
        async for reply in recv_req:
            await reply.send(None)  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        send_rep, recv_rep = trio.open_memory_channel[None](1)
        start = trio.current_time()
        while trio.current_time() < deadline:
            await send_req.send(send_rep)
            await recv_rep.receive()
            count += 1
        elapsed = trio.current_time() - start
        await send_req.aclose()
    return count / elapsed
