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
- pykka: one ``ThreadingActor`` per session, asked from one thread per
  session.  Each message does the rows of a suricate turn: ``INSERT`` s its
  input and commits, runs a no-op turn, then ``UPDATE`` s the input with the
  result and upserts the session's snapshot row and commits (two commits per
  turn).  It is measured in every configuration of :data:`PYKKA_CONFIGS`,
  alternately in the same run, and the ratio is taken against the fastest
  one (by median) of that run, so the peer is the strongest configuration
  found, and it is re-chosen on every machine.  The configurations: one
  connection shared behind a lock, or a connection per actor (SQLite's busy
  handler queuing the writers, ``timeout=30``), or a connection per actor
  behind a lock; each with explicit ``BEGIN IMMEDIATE`` on an autocommit
  connection or with the ``sqlite3`` module's default implicit deferred
  transactions.  WAL and ``synchronous=FULL`` are fixed: that is the shape.
  Measured here (two runs of ``--only turns_vs_pykka turns_vs_pykka_1``,
  table in docs/PERFORMANCE.md): at 64 sessions the shared connection behind
  a lock was the fastest (~1.7-1.9k turns/s, either transaction style), a
  connection per actor behind a lock 0.76-0.88x of it, one with the busy
  handler 0.17-0.81x (its writers sleep between retries); at one session,
  where nothing contends, the configurations do the same work and differ by
  the disk's fsync noise only.

``turns_vs_pykka`` runs 64 sessions; ``turns_vs_pykka_1`` one session with one
caller asking sequentially, against the fastest pykka configuration at one
session.
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

import attrs
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
#: Runs every side (by name) alternately ``repeat`` times after a warm-up of
#: each, and returns each side's summary (median, min, max).
Many = Callable[[dict[str, Callable[[], float]], int], dict[str, dict[str, float]]]


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


@attrs.frozen(kw_only=True)
class PykkaConfig:
    """How the pykka peer holds its SQLite connections and opens its transactions."""

    #: ``True``: every actor uses one connection (the pattern of LangGraph's
    #: ``SqliteSaver``; it needs the lock).  ``False``: each actor opens its
    #: own connection in ``on_start``.
    shared_connection: bool
    #: ``True``: a process-wide lock is held around each transaction, so
    #: writers queue on it and wake as soon as it is free.  ``False``: writers
    #: queue in SQLite's busy handler (``busy_timeout``, set by ``timeout=``),
    #: which sleeps between retries.
    lock: bool
    #: ``True``: autocommit connection (``isolation_level=None``) with explicit
    #: ``BEGIN IMMEDIATE`` ... ``COMMIT``.  ``False``: the ``sqlite3`` default
    #: isolation level: a deferred transaction opened implicitly by the first
    #: ``INSERT`` or ``UPDATE``, ended by ``conn.commit()``.
    immediate: bool

    def __attrs_post_init__(self) -> None:
        if self.shared_connection and not self.lock:
            raise ValueError("a shared connection needs the lock: transactions would interleave")

    @property
    def name(self) -> str:
        if self.shared_connection:
            connection = "shared connection + lock"
        else:
            connection = "connection per actor" + (" + lock" if self.lock else ", busy_timeout")
        begin = "BEGIN IMMEDIATE" if self.immediate else "implicit deferred BEGIN"
        return f"{connection}, {begin}"


#: Every configuration measured; the fastest of a run is that run's pykka peer.
PYKKA_CONFIGS: tuple[PykkaConfig, ...] = (
    PykkaConfig(shared_connection=True, lock=True, immediate=True),
    PykkaConfig(shared_connection=True, lock=True, immediate=False),
    PykkaConfig(shared_connection=False, lock=False, immediate=True),
    PykkaConfig(shared_connection=False, lock=False, immediate=False),
    PykkaConfig(shared_connection=False, lock=True, immediate=True),
)
#: SQLite's busy handler waits this long for the write lock before failing.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS inputs (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
    "payload TEXT NOT NULL, state TEXT NOT NULL, result TEXT)",
    "CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, "
    "snapshot TEXT NOT NULL)",
)
_INSERT_INPUT = "INSERT INTO inputs (session_id, payload, state) VALUES (?, ?, 'queued')"
_CONSUME_INPUT = "UPDATE inputs SET state = 'consumed', result = ? WHERE id = ?"
_UPSERT_SNAPSHOT = (
    "INSERT INTO sessions (session_id, revision, snapshot) VALUES (?, ?, ?) "
    "ON CONFLICT (session_id) DO UPDATE SET revision = excluded.revision, snapshot = excluded.snapshot"
)


def _connect(path: Path, config: PykkaConfig) -> sqlite3.Connection:
    if config.immediate:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    else:  # the default isolation level
        conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _create(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA:
            conn.execute(statement)
    finally:
        conn.close()


class _Transaction:
    """One transaction on ``conn`` in ``config``'s style, under ``lock`` if shared."""

    def __init__(self, conn: sqlite3.Connection, config: PykkaConfig, lock: threading.Lock | None) -> None:
        self.conn = conn
        self.immediate = config.immediate
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        if self.lock is not None:
            self.lock.acquire()
        if self.immediate:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        try:
            if kind is None:
                if self.immediate:
                    self.conn.execute("COMMIT")
                else:
                    self.conn.commit()
            elif self.immediate:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.rollback()
        finally:
            if self.lock is not None:
                self.lock.release()


class _SessionActor(pykka.ThreadingActor):
    """One session: commit the input row, run a no-op turn, commit the result
    and the session's snapshot (the same rows as a suricate turn)."""

    use_daemon_thread = True

    def __init__(
        self, session_id: str, path: Path, config: PykkaConfig, shared: sqlite3.Connection | None,
        lock: threading.Lock | None,
    ) -> None:
        super().__init__()
        self.session_id = session_id
        self.path = path
        self.config = config
        self.conn = shared
        self.own = shared is None
        self.lock = lock
        self.revision = 0

    def on_start(self) -> None:
        if self.own:
            self.conn = _connect(self.path, self.config)

    def on_stop(self) -> None:
        if self.own and self.conn is not None:
            self.conn.close()

    def on_receive(self, message: Any) -> Any:
        assert self.conn is not None
        payload = json.dumps(message)
        with _Transaction(self.conn, self.config, self.lock) as conn:
            row_id = conn.execute(_INSERT_INPUT, (self.session_id, payload)).lastrowid
        result = None  # the no-op turn
        self.revision += 1
        snapshot = json.dumps({"revision": self.revision, "last_input": row_id})
        with _Transaction(self.conn, self.config, self.lock) as conn:
            conn.execute(_CONSUME_INPUT, (json.dumps(result), row_id))
            conn.execute(_UPSERT_SNAPSHOT, (self.session_id, self.revision, snapshot))
        return result


def pykka_turns_throughput(path: Path, sessions: int, seconds: float, config: PykkaConfig) -> float:
    """Completed turns per second: one pykka actor per session, asked from
    one thread per session, each ask waiting for the answer before the next."""
    _create(path)
    shared = _connect(path, config) if config.shared_connection else None
    lock = threading.Lock() if config.lock else None
    actors = [_SessionActor.start(f"s{i}", path, config, shared, lock) for i in range(sessions)]
    asked = [0] * sessions
    try:

        def work(k: int, deadline: float) -> int:
            actor = actors[k]
            n = 0
            while time.perf_counter() < deadline:
                actor.ask({"n": n}, timeout=SLACK_S)
                n += 1
            asked[k] = n
            return n

        rate = _run_threads(sessions, seconds, work)
    finally:
        for actor in actors:
            actor.stop(timeout=SLACK_S)
        if shared is not None:
            shared.close()
    check = sqlite3.connect(path)
    try:
        (pending,) = check.execute("SELECT count(*) FROM inputs WHERE state != 'consumed'").fetchone()
        (revisions,) = check.execute("SELECT coalesce(sum(revision), 0) FROM sessions").fetchone()
    finally:
        check.close()
    if pending or revisions != sum(asked):
        raise RuntimeError(
            f"pykka peer ({config.name}): {pending} inputs unconsumed, "
            f"{revisions} snapshot revisions for {sum(asked)} turns"
        )
    return rate


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


def _pykka_figure(
    key: str, tmp: Path, sessions: int, repeat: int, seconds: float, many: Many, fresh: Fresh
) -> dict[str, Any]:
    """suricate against every :data:`PYKKA_CONFIGS` peer, all run alternately;
    the ratio is against the fastest peer (by median) of this run."""
    sides: dict[str, Callable[[], float]] = {
        "suricate": lambda: trio.run(suricate_turns_throughput, fresh(tmp, "turns.db"), sessions, seconds),
    }

    def peer(config: PykkaConfig) -> Callable[[], float]:
        return lambda: pykka_turns_throughput(fresh(tmp, "pykka.db"), sessions, seconds, config)

    for config in PYKKA_CONFIGS:
        sides[config.name] = peer(config)
    measured = many(sides, repeat)
    ours = measured.pop("suricate")
    strongest = max(measured, key=lambda name: measured[name]["median"])
    return {
        key: {
            "ratio": ours["median"] / measured[strongest]["median"],
            "suricate_turns_per_s": ours,
            "pykka_turns_per_s": measured[strongest],
            "pykka_peer": strongest,
            "pykka_configurations_turns_per_s": measured,
            "setup": {
                "sessions": sessions,
                "seconds_per_run": seconds,
                "suricate": "SqliteStore (WAL, synchronous=FULL), no-op async executor, one ask loop per session",
                "pykka": f"one ThreadingActor per session, {sessions} caller thread(s) asking in a loop; "
                "per message INSERT input + COMMIT, no-op, UPDATE input + UPSERT snapshot + COMMIT "
                "(WAL, synchronous=FULL); the fastest of the configurations in pykka_peer",
            },
        }
    }


def turns_vs_pykka(tmp: Path, repeat: int, seconds: float, many: Many, fresh: Fresh) -> dict[str, Any]:
    """``SESSIONS`` sessions, each in a closed loop, against the strongest pykka peer."""
    return _pykka_figure("turns_vs_pykka", tmp, SESSIONS, repeat, seconds, many, fresh)


def turns_vs_pykka_1(tmp: Path, repeat: int, seconds: float, many: Many, fresh: Fresh) -> dict[str, Any]:
    """One session and one caller asking sequentially, against the strongest pykka peer."""
    return _pykka_figure("turns_vs_pykka_1", tmp, 1, repeat, seconds, many, fresh)
