"""Turn throughput against peers: LangGraph with its SQLite checkpointer, and pykka.

Every side does the same work per message: durably record the input, run a
no-op turn, durably record the result, on SQLite in WAL mode with
``synchronous=FULL``, over 64 sessions (threads, actors) fed continuously.

- suricate: 64 sessions with a no-op async executor; per session one task
  doing ``await s.ask(...)`` in a loop.
- LangGraph: one graph with a single no-op node compiled with ``SqliteSaver``
  over one ``sqlite3`` connection (``check_same_thread=False``, as its
  docstring recommends: the saver serializes calls with its own lock),
  invoked with ``durability="sync"`` (every step is checkpointed before the
  next starts) from 64 threads, one thread id each.
- pykka: one ``ThreadingActor`` per session; each message ``INSERT`` s its
  input and commits, runs a no-op turn, ``UPDATE`` s the row with the result
  and commits.  The actors share one connection guarded by a lock (the same
  pattern as ``SqliteSaver``; one connection per actor measured slower here,
  because 64 writers then wait in SQLite's sleeping busy handler).  Callers
  ``ask`` their actor from 64 threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypedDict

import pykka
import trio

import suricate

SESSIONS = 64
#: Added to a run's length to bound it: a side that does not finish by then fails.
SLACK_S = 120.0

Pair = Callable[
    [Callable[[], float], Callable[[], float], int], tuple[dict[str, float], dict[str, float]]
]
Fresh = Callable[[Path, str], Path]


# -- suricate -----------------------------------------------------------------------------


async def _noop_executor(turn: suricate.Turn) -> None:
    return None


async def suricate_turns_throughput(path: Path, sessions: int, seconds: float) -> float:
    """Completed turns per second: ``sessions`` sessions on the SQLite store,
    each fed by a task that ``ask`` s in a loop (one input per turn)."""
    done = 0
    with trio.fail_after(seconds + SLACK_S):
        async with suricate.open_runtime(path) as rt:
            handles = [await rt.open_session(f"s{i}") for i in range(sessions)]
            for s in handles:
                await s.attach(_noop_executor)
            deadline = trio.current_time() + seconds

            async def feeder(s: suricate.Session) -> None:
                nonlocal done
                n = 0
                while trio.current_time() < deadline:
                    outcome = await s.ask({"n": n})
                    if not isinstance(outcome, suricate.Completed):
                        raise RuntimeError(f"turn did not complete: {outcome!r}")
                    done += 1
                    n += 1

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for s in handles:
                    nursery.start_soon(feeder, s)
            elapsed = trio.current_time() - start
    return done / elapsed


def _run_threads(threads: int, seconds: float, work: Callable[[int, float], int]) -> float:
    """Run ``work(k, deadline)`` on ``threads`` threads started together;
    the sum of what they return, per second of wall time."""
    barrier = threading.Barrier(threads + 1, timeout=SLACK_S)
    deadline = [0.0]

    def body(k: int) -> int:
        barrier.wait()
        return work(k, deadline[0])

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(body, k) for k in range(threads)]
        start = time.perf_counter()
        deadline[0] = start + seconds
        barrier.wait()
        done = sum(f.result(timeout=seconds + SLACK_S) for f in futures)
        elapsed = time.perf_counter() - start
    return done / elapsed


# -- LangGraph ----------------------------------------------------------------------------


def require_langgraph() -> str | None:
    """``None`` when LangGraph and its SQLite checkpointer import, else why not."""
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
        import langgraph.graph  # noqa: F401
    except ImportError as exc:
        return (
            f"LangGraph is not installed ({exc}); it comes with the 'bench' extra: "
            "pip install -e '.[bench]'"
        )
    return None


class _GraphState(TypedDict, total=False):
    n: int
    result: Any


def _noop_node(state: _GraphState) -> dict[str, Any]:
    return {"result": None}


def langgraph_invokes_throughput(
    path: Path, threads: int, seconds: float, info: dict[str, Any] | None = None
) -> float:
    """Completed ``invoke`` calls per second of a one-node graph checkpointed
    by ``SqliteSaver``, ``threads`` threads each on its own thread id.
    ``info``, when given, receives what the database ran with."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        saver.setup()  # sets journal_mode=WAL
        conn.execute("PRAGMA synchronous = FULL")  # SQLite's default, made explicit
        builder = StateGraph(_GraphState)
        builder.add_node("noop", _noop_node)
        builder.add_edge(START, "noop")
        builder.add_edge("noop", END)
        graph = builder.compile(checkpointer=saver)
        invokes = [0] * threads

        def work(k: int, deadline: float) -> int:
            config: Any = {"configurable": {"thread_id": f"t{k}"}}
            n = 0
            while time.perf_counter() < deadline:
                graph.invoke({"n": n}, config, durability="sync")
                n += 1
            invokes[k] = n
            return n

        rate = _run_threads(threads, seconds, work)
        # The threads are done: nothing else uses the connection now.
        if invokes[0]:
            last = graph.get_state({"configurable": {"thread_id": "t0"}}).values
            if last.get("n") != invokes[0] - 1:
                raise RuntimeError(f"LangGraph did not checkpoint the last invoke: {last!r}")
        if info is not None:
            (checkpoints,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
            (writes,) = conn.execute("SELECT count(*) FROM writes").fetchone()
            info["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            info["synchronous"] = conn.execute("PRAGMA synchronous").fetchone()[0]
            info["checkpoint_rows_per_invoke"] = round(checkpoints / max(1, sum(invokes)), 2)
            info["write_rows_per_invoke"] = round(writes / max(1, sum(invokes)), 2)
        return rate
    finally:
        conn.close()


# -- pykka --------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS inputs (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
        "payload TEXT NOT NULL, state TEXT NOT NULL, result TEXT)"
    )
    return conn


class _SessionActor(pykka.ThreadingActor):
    """One session: record the input, run a no-op turn, record the result."""

    use_daemon_thread = True

    def __init__(self, session_id: str, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        super().__init__()
        self.session_id = session_id
        self.conn = conn
        self.lock = lock

    def on_receive(self, message: Any) -> Any:
        payload = json.dumps(message)
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            cursor = self.conn.execute(
                "INSERT INTO inputs (session_id, payload, state) VALUES (?, ?, 'queued')",
                (self.session_id, payload),
            )
            self.conn.execute("COMMIT")
        row_id = cursor.lastrowid
        result = None  # the no-op turn
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE inputs SET state = 'consumed', result = ? WHERE id = ?",
                (json.dumps(result), row_id),
            )
            self.conn.execute("COMMIT")
        return result


def pykka_turns_throughput(path: Path, sessions: int, seconds: float) -> float:
    """Completed turns per second: one pykka actor per session, asked from
    one thread per session."""
    conn = _connect(path)
    lock = threading.Lock()
    actors = [_SessionActor.start(f"s{i}", conn, lock) for i in range(sessions)]
    try:

        def work(k: int, deadline: float) -> int:
            actor = actors[k]
            n = 0
            while time.perf_counter() < deadline:
                actor.ask({"n": n}, timeout=SLACK_S)
                n += 1
            return n

        rate = _run_threads(sessions, seconds, work)
        (pending,) = conn.execute("SELECT count(*) FROM inputs WHERE state != 'consumed'").fetchone()
        if pending:
            raise RuntimeError(f"pykka side left {pending} inputs unconsumed")
        return rate
    finally:
        for actor in actors:
            actor.stop(timeout=SLACK_S)
        conn.close()


# -- the figures ----------------------------------------------------------------------------


def turns_vs_langgraph(tmp: Path, repeat: int, seconds: float, pair: Pair, fresh: Fresh) -> dict[str, Any]:
    problem = require_langgraph()
    if problem is not None:  # main checks first; this is for direct callers
        raise RuntimeError(problem)
    info: dict[str, Any] = {}
    ours, peer = pair(
        lambda: trio.run(suricate_turns_throughput, fresh(tmp, "turns.db"), SESSIONS, seconds),
        lambda: langgraph_invokes_throughput(fresh(tmp, "langgraph.db"), SESSIONS, seconds, info),
        repeat,
    )
    return {
        "turns_vs_langgraph": {
            "ratio": ours["median"] / peer["median"],
            "suricate_turns_per_s": ours,
            "langgraph_invokes_per_s": peer,
            "setup": {
                "sessions": SESSIONS,
                "seconds_per_run": seconds,
                "suricate": "SqliteStore (WAL, synchronous=FULL), no-op async executor, one ask loop per session",
                "langgraph": "SqliteSaver on one connection (check_same_thread=False), one no-op node, "
                "durability='sync', ThreadPoolExecutor(64), one thread id per thread",
                "langgraph_db": info,
            },
        }
    }


def turns_vs_pykka(tmp: Path, repeat: int, seconds: float, pair: Pair, fresh: Fresh) -> dict[str, Any]:
    ours, peer = pair(
        lambda: trio.run(suricate_turns_throughput, fresh(tmp, "turns.db"), SESSIONS, seconds),
        lambda: pykka_turns_throughput(fresh(tmp, "pykka.db"), SESSIONS, seconds),
        repeat,
    )
    return {
        "turns_vs_pykka": {
            "ratio": ours["median"] / peer["median"],
            "suricate_turns_per_s": ours,
            "pykka_turns_per_s": peer,
            "setup": {
                "sessions": SESSIONS,
                "seconds_per_run": seconds,
                "pykka": "one ThreadingActor per session, one shared connection behind a lock "
                "(WAL, synchronous=FULL), INSERT+COMMIT, no-op, UPDATE+COMMIT per message, "
                "64 caller threads",
            },
        }
    }
