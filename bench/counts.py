"""Deterministic per-turn counts: ``python -m bench --counts [--json]``.

The ratios of ``python -m bench`` move with the machine; these counts do not.
They say *how much work* a turn is, so that a change to the hot path can be
judged by what it removed, not by a timing taken on a noisy machine.

The shape is ``turns_vs_pykka``'s suricate side: ``sessions`` sessions on the
SQLite store (WAL, ``synchronous=FULL``), each attached to a no-op async
executor and fed by one task doing ``await s.ask(...)`` in a closed loop.
Every session first runs ``warm`` turns (code paths, caches, the WAL and the
database file all warmed up), the system settles, then every session runs
``turns`` more inside the measured window.  Each count below is the total
over the window divided by the turns in it.

- ``actor_messages``: calls of ``tell``, ``tell_nowait`` and ``ask`` on
  suricate's ``ActorRef`` (by method too).  A ``tell_nowait`` that its actor
  handles at once, in the sender's task, still counts: it is a message.
- ``trio_task_steps``: ``trio.abc.Instrument.before_task_step`` calls, i.e.
  how many times the scheduler resumed a task.
- ``thread_crossings``: calls handed from trio to a pykka host thread
  (``ThreadHost.on_receive`` runs) plus calls handed back to trio from any
  other thread (``TrioToken.run_sync_soon`` called off the trio thread).
- ``python_calls``: ``'call'`` events of ``sys.setprofile`` per thread: the
  trio thread (``trio``) and every other thread by name.  A ``'call'`` is a
  Python frame starting *or resuming*: each resumption of a coroutine or
  generator counts, which is what a task switch costs in Python frames.
- ``sql_statements``: statements started on each connection (SQLite's trace
  callback, installed on every connection by wrapping ``sqlite3.connect``),
  by the thread that opened the connection and by first keyword.
- ``wal_frames`` / ``wal_bytes``: frames appended to the write-ahead log.
  At the start of every statement on a connection that writes, the WAL index
  header in the ``-shm`` file is read (``mxFrame``, the frame count, and the
  salts, which change whenever a checkpoint lets the log restart from its
  first frame): the frames since the last reading are ``mxFrame`` minus the
  last ``mxFrame``, or ``mxFrame`` itself after a restart.  Frames are only
  appended inside a writer's ``COMMIT`` (or a cache spill), so readings taken
  at statement starts see every commit whole.  Bytes are frames times
  (24-byte frame header + page size); the log's 32-byte header written on a
  restart and the checkpoint's copies into the database file are not
  included.  The window's last commit is read at the window's end.

The Python calls are counted in a second run of the same workload (fresh
database, same warm-up), with none of the other probes installed: each probe
is Python code and would otherwise show up in the call counts.

Also reported, under ``os`` and *not* deterministic (they follow timing):
context switches and ``wchar`` (bytes passed to ``write``-family system
calls) of each thread, from ``/proc/self/task/*``, taken in the first run.

The only suricate internals used are resolved in :func:`patch_points`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
import trio.testing

import suricate

#: (sessions, warm-up turns per session, measured turns per session)
SHAPES: tuple[tuple[int, int, int], ...] = ((1, 300, 2000), (64, 10, 100))
QUICK_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 100, 500), (64, 5, 20))
#: Time allowed for one run of a shape; a run that does not finish by then fails.
RUN_LIMIT_S = 300.0
#: SQLite's WAL frame header, before each page image.
WAL_FRAME_HEADER = 24
#: Thread name under which the trio thread's figures are reported.
TRIO_THREAD = "trio"

_ACTOR_METHODS = ("tell", "tell_nowait", "ask")


# -- the internal names the counts depend on ------------------------------------------------


@attrs.frozen(kw_only=True)
class PatchPoints:
    """The suricate classes whose methods are wrapped while counting."""

    #: The kernel's actor address: ``tell``, ``tell_nowait`` and ``ask`` are counted.
    actor_ref: type
    #: The trio <-> pykka bridge's host actor: ``on_receive`` is one call into a thread.
    thread_host: type


def patch_points() -> PatchPoints:
    """Resolve every suricate-internal name the counts wrap, or fail saying which moved.

    Raises:
        RuntimeError: a class or method is no longer where the counts expect it.
    """
    try:
        from suricate._kernel import ActorRef, ThreadHost
    except ImportError as exc:
        raise RuntimeError(
            f"bench.counts: cannot import a patch point ({exc}); the actor kernel or the "
            "trio<->pykka bridge moved: update bench.counts.patch_points"
        ) from exc
    points = PatchPoints(actor_ref=ActorRef, thread_host=ThreadHost)
    for cls, names in ((ActorRef, _ACTOR_METHODS), (ThreadHost, ("on_receive",))):
        for name in names:
            if not callable(getattr(cls, name, None)):
                raise RuntimeError(
                    f"bench.counts: {cls.__module__}.{cls.__qualname__}.{name} is gone: "
                    "update bench.counts.patch_points"
                )
    return points


@contextmanager
def _patched(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``owner.name`` with ``make(original)`` for the block."""
    own = name in vars(owner)
    original = vars(owner)[name] if own else getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


# -- run one: messages, task steps, crossings, SQL, WAL -------------------------------------


class _Wal:
    """Frames appended to one database's WAL, read from its ``-shm`` header."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.frames = 0
        self.page_size = 0
        self.last: tuple[int, tuple[int, int]] | None = None
        self.lock = threading.Lock()

    def _header(self) -> tuple[int, int, tuple[int, int]] | None:
        if self.fd is None:
            try:
                self.fd = os.open(self.path + "-shm", os.O_RDONLY)
            except FileNotFoundError:
                return None
        raw = os.pread(self.fd, 48, 0)
        if len(raw) < 48:
            return None
        # WalIndexHdr: u32 iVersion, u32 unused, u32 iChange, u8 isInit,
        # u8 bigEndCksum, u16 szPage, u32 mxFrame, u32 nPage, u32 aFrameCksum[2],
        # u32 aSalt[2], u32 aCksum[2]; native byte order.
        page, frames = struct.unpack_from("=HI", raw, 14)
        salts = struct.unpack_from("=II", raw, 32)
        return (65536 if page == 1 else page), frames, salts

    def sample(self, counting: bool) -> None:
        with self.lock:
            header = self._header()
            if header is None:
                return
            page, frames, salts = header
            self.page_size = page
            if self.last is not None and counting:
                last_frames, last_salts = self.last
                self.frames += frames if salts != last_salts else frames - last_frames
            self.last = (frames, salts)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _database_path(target: Any, uri: bool) -> str | None:
    if target == ":memory:" or not target:
        return None
    if uri:
        parts = urlsplit(str(target))
        return os.path.abspath(parts.path) if parts.scheme == "file" and parts.path else None
    return os.path.abspath(str(os.fspath(target)))


class _Probes:
    """Counters for run one; they count only while :attr:`on` is set."""

    def __init__(self, points: PatchPoints) -> None:
        self.points = points
        self.on = False
        self.messages: Counter[str] = Counter()
        self.steps = 0
        self.to_thread = 0
        self.to_trio = 0
        self.sql_by_thread: Counter[str] = Counter()
        self.sql_by_kind: Counter[str] = Counter()
        self.wals: dict[str, _Wal] = {}
        self.trio_thread = threading.get_ident()

    @contextmanager
    def installed(self) -> Iterator[None]:
        with (
            _patched(self.points.actor_ref, "tell", self._count_async("tell")),
            _patched(self.points.actor_ref, "tell_nowait", self._count_sync("tell_nowait")),
            _patched(self.points.actor_ref, "ask", self._count_async("ask")),
            _patched(self.points.thread_host, "on_receive", self._count_to_thread),
            _patched(trio.lowlevel.TrioToken, "run_sync_soon", self._count_to_trio),
            _patched(sqlite3, "connect", self._traced_connect),
        ):
            try:
                yield
            finally:
                for wal in self.wals.values():
                    wal.close()

    def _count_sync(self, name: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def counted(ref: Any, *args: Any, **kwargs: Any) -> Any:
                if self.on:
                    self.messages[name] += 1
                return original(ref, *args, **kwargs)

            return counted

        return make

    def _count_async(self, name: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            async def counted(ref: Any, *args: Any, **kwargs: Any) -> Any:
                if self.on:
                    self.messages[name] += 1
                return await original(ref, *args, **kwargs)

            return counted

        return make

    def _count_to_thread(self, original: Any) -> Any:
        def on_receive(host: Any, message: Any) -> Any:
            if self.on:
                self.to_thread += 1
            return original(host, message)

        return on_receive

    def _count_to_trio(self, original: Any) -> Any:
        def run_sync_soon(token: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on and threading.get_ident() != self.trio_thread:
                self.to_trio += 1
            return original(token, *args, **kwargs)

        return run_sync_soon

    def _traced_connect(self, original: Any) -> Any:
        def connect(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn: sqlite3.Connection = original(target, *args, **kwargs)
            path = _database_path(target, bool(kwargs.get("uri", False)))
            wal = None if path is None else self.wals.setdefault(path, _Wal(path))
            opener = threading.current_thread().name
            writes = False

            def trace(statement: str) -> None:
                nonlocal writes
                kind = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
                if kind in ("INSERT", "UPDATE", "DELETE", "REPLACE") or (
                    kind == "BEGIN" and "IMMEDIATE" in statement.upper()
                ):
                    writes = True
                if wal is not None and writes:
                    wal.sample(self.on)
                if self.on:
                    self.sql_by_thread[opener] += 1
                    self.sql_by_kind[kind] += 1

            conn.set_trace_callback(trace)
            return conn

        return connect

    def begin(self) -> None:
        for wal in self.wals.values():
            wal.sample(False)
        self.on = True

    def end(self) -> None:
        for wal in self.wals.values():
            wal.sample(True)
        self.on = False


class _Steps(trio.abc.Instrument):
    """Counts task steps while its probes are on."""

    def __init__(self, probes: _Probes) -> None:
        self.probes = probes

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.probes.on:
            self.probes.steps += 1


# -- run two: Python calls per thread -------------------------------------------------------


class _Calls:
    """``'call'`` profile events per thread, counted only while :attr:`on` is set.

    Threads started after :meth:`installed` is entered get a counter when
    they first run Python code; the trio thread gets its own at :meth:`begin`
    (``sys.setprofile`` applies to the calling thread only).
    """

    def __init__(self) -> None:
        self.on = False
        self.per_thread: dict[int, list[int]] = {}
        self.trio_thread = threading.get_ident()

    def _counter(self) -> Callable[[FrameType, str, Any], None]:
        count = self.per_thread.setdefault(threading.get_ident(), [0])

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and self.on:
                count[0] += 1

        return profile

    def _install(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(self._counter())

    @contextmanager
    def installed(self) -> Iterator[None]:
        threading.setprofile(self._install)
        try:
            yield
        finally:
            threading.setprofile(None)
            sys.setprofile(None)

    def begin(self) -> None:
        sys.setprofile(self._counter())
        self.on = True

    def end(self) -> None:
        self.on = False
        sys.setprofile(None)

    def by_name(self, names: dict[int, str]) -> Counter[str]:
        out: Counter[str] = Counter()
        for ident, (count,) in self.per_thread.items():
            if count:
                name = TRIO_THREAD if ident == self.trio_thread else names.get(ident, f"thread-{ident}")
                out[name] += count
        return out


# -- the OS's view (not deterministic) -----------------------------------------------------


def _task_figures() -> dict[int, dict[str, int]]:
    """Per native thread id: context switches and ``wchar`` from /proc."""
    figures: dict[int, dict[str, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields: dict[str, int] = {}
            with open(f"/proc/self/task/{tid}/status") as status:
                for line in status:
                    key, _, value = line.partition(":")
                    if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                        fields[key] = int(value)
            with open(f"/proc/self/task/{tid}/io") as io:
                for line in io:
                    key, _, value = line.partition(":")
                    if key == "wchar":
                        fields[key] = int(value)
        except OSError:  # no /proc, or the thread ended meanwhile
            continue
        figures[int(tid)] = fields
    return figures


def _thread_names() -> dict[int, str]:
    """Native thread id to name, for the threads alive now."""
    return {
        t.native_id: (TRIO_THREAD if t is threading.main_thread() else t.name)
        for t in threading.enumerate()
        if t.native_id is not None
    }


def _os_delta(
    before: dict[int, dict[str, int]], after: dict[int, dict[str, int]], names: dict[int, str], turns: int
) -> dict[str, Any]:
    switches: Counter[str] = Counter()
    wchar: Counter[str] = Counter()
    for tid, end in after.items():
        start = before.get(tid, {})
        name = names.get(tid, f"task-{tid}")
        switches[name] += sum(
            end.get(k, 0) - start.get(k, 0) for k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
        )
        wchar[name] += end.get("wchar", 0) - start.get("wchar", 0)
    return {
        "context_switches": _per(switches, turns),
        "wchar_bytes": _per(wchar, turns),
    }


def _per(counter: Counter[str], turns: int) -> dict[str, float]:
    return {k: round(v / turns, 3) for k, v in sorted(counter.items()) if v}


# -- the workload -----------------------------------------------------------------------------


async def _noop_executor(turn: suricate.Turn) -> None:
    return None


async def closed_loop(
    path: Path, sessions: int, warm: int, turns: int, begin: Callable[[], None], end: Callable[[], None]
) -> None:
    """``sessions`` sessions, each asked ``warm`` then ``turns`` times in a
    closed loop; ``begin()`` and ``end()`` bracket the second part, called
    when nothing else is running."""

    async def feed(s: suricate.Session, first: int, count: int) -> None:
        for n in range(first, first + count):
            outcome = await s.ask({"n": n})
            if not isinstance(outcome, suricate.Completed):
                raise RuntimeError(f"turn did not complete: {outcome!r}")

    async def phase(handles: list[suricate.Session], first: int, count: int) -> None:
        async with trio.open_nursery() as nursery:
            for s in handles:
                nursery.start_soon(feed, s, first, count)
        await trio.testing.wait_all_tasks_blocked(0.01)

    with trio.fail_after(RUN_LIMIT_S):
        async with suricate.open_runtime(path) as rt:
            handles = [await rt.open_session(f"s{i}") for i in range(sessions)]
            for s in handles:
                await s.attach(_noop_executor)
            await phase(handles, 0, warm)
            begin()
            await phase(handles, warm, turns)
            end()


def _fresh(directory: Path, name: str) -> Path:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{directory / name}{suffix}").unlink(missing_ok=True)
    return directory / name


def count_shape(directory: Path, sessions: int, warm: int, turns: int) -> dict[str, Any]:
    """Both runs of one shape; every count per turn."""
    points = patch_points()
    total = sessions * turns

    probes = _Probes(points)
    os_before: dict[int, dict[str, int]] = {}
    os_after: dict[int, dict[str, int]] = {}
    os_names: dict[int, str] = {}

    def begin_one() -> None:
        os_before.update(_task_figures())
        probes.begin()

    def end_one() -> None:
        probes.end()
        os_after.update(_task_figures())
        os_names.update(_thread_names())

    with probes.installed():
        start = time.perf_counter()
        trio.run(
            closed_loop, _fresh(directory, "counts.db"), sessions, warm, turns, begin_one, end_one,
            instruments=[_Steps(probes)],
        )
        first_s = time.perf_counter() - start
    os_figures = _os_delta(os_before, os_after, os_names, total)

    calls = _Calls()
    names: dict[int, str] = {}

    def end_two() -> None:
        calls.end()
        names.update({t.ident: t.name for t in threading.enumerate() if t.ident is not None})

    with calls.installed():
        start = time.perf_counter()
        trio.run(closed_loop, _fresh(directory, "counts.db"), sessions, warm, turns, calls.begin, end_two)
        second_s = time.perf_counter() - start

    wal_frames = sum(w.frames for w in probes.wals.values())
    page_size = max((w.page_size for w in probes.wals.values()), default=0)
    messages = sum(probes.messages.values())
    python_calls = calls.by_name(names)
    for what, seen in (("actor message", messages), ("SQL statement", sum(probes.sql_by_thread.values())),
                       ("thread crossing", probes.to_thread)):
        if not seen:
            raise RuntimeError(
                f"bench.counts: no {what} counted in {total} turns: the hot path no longer goes "
                "through bench.counts.patch_points (or sqlite3.connect): update them"
            )
    return {
        "sessions": sessions,
        "warm_turns_per_session": warm,
        "turns": total,
        "per_turn": {
            "actor_messages": round(messages / total, 3),
            "actor_messages_by_method": _per(probes.messages, total),
            "trio_task_steps": round(probes.steps / total, 3),
            "thread_crossings": round((probes.to_thread + probes.to_trio) / total, 3),
            "thread_crossings_by_direction": {
                "to_thread": round(probes.to_thread / total, 3),
                "to_trio": round(probes.to_trio / total, 3),
            },
            "python_calls": round(sum(python_calls.values()) / total, 1),
            "python_calls_by_thread": _per(python_calls, total),
            "sql_statements": round(sum(probes.sql_by_thread.values()) / total, 3),
            "sql_statements_by_thread": _per(probes.sql_by_thread, total),
            "sql_statements_by_kind": _per(probes.sql_by_kind, total),
            "wal_frames": round(wal_frames / total, 3),
            "wal_bytes": round(wal_frames * (WAL_FRAME_HEADER + page_size) / total),
        },
        "page_size": page_size,
        "os_per_turn_not_deterministic": os_figures,
        "run_seconds": {"probes": round(first_s, 1), "python_calls": round(second_s, 1)},
    }


def counts(quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Every shape's counts, keyed ``sessions_<n>``."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        return {
            f"sessions_{sessions}": count_shape(Path(tmp), sessions, warm, turns)
            for sessions, warm, turns in (QUICK_SHAPES if quick else SHAPES)
        }


def table(figures: dict[str, Any]) -> str:
    """The per-turn counts as a markdown table, one column per shape."""
    shapes = list(figures)
    keys: list[str] = []
    for shape in shapes:
        for key in figures[shape]["per_turn"]:
            if key not in keys:
                keys.append(key)
    lines = ["| per turn | " + " | ".join(shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    for key in keys:
        cells = []
        for shape in shapes:
            value = figures[shape]["per_turn"].get(key)
            if isinstance(value, dict):
                cells.append(", ".join(f"{k} {v:g}" for k, v in value.items()) or "-")
            else:
                cells.append("-" if value is None else f"{value:g}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for shape in shapes:
        fig = figures[shape]
        lines.append("")
        lines.append(
            f"{shape}: {fig['turns']} turns measured after {fig['warm_turns_per_session']} warm-up "
            f"turns per session; not deterministic: {json.dumps(fig['os_per_turn_not_deterministic'])}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    figures = counts(quick)
    if "--json" in argv:
        print(json.dumps(figures))
    else:
        print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
