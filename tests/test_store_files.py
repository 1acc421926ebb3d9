"""The SQLite store's files: identity, the owner's lock, modes, refusals, release.

Real threads and real processes: real time with ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import suricate
from suricate.store import SqliteStore

APPLICATION_ID = 0x53555249  # b"SURI"

ENV = {**os.environ, "PYTHONPATH": str(Path(suricate.__file__).parent.parent)}

HOLDER = textwrap.dedent(
    """
    import sys, trio, suricate
    async def main():
        async with suricate.open_runtime(sys.argv[1]) as rt:
            await rt.open_session("held")
            print("ready", flush=True)
            await trio.sleep_forever()
    trio.run(main)
    """
)

# Opens every lock file beside the database read-only and locks it as far as
# read access allows: flock (any mode) and a POSIX read lock (lockf LOCK_SH).
READER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    directory = sys.argv[1]
    fds = [
        os.open(os.path.join(directory, name), os.O_RDONLY)
        for name in os.listdir(directory)
        if name.endswith(".lock")
    ]
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("ready", len(fds), flush=True)
    for fd in fds:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(0.01)
    print("read-locked", flush=True)
    time.sleep(3600)
    """
)


class Child:
    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=ENV
        )
        self.pid = self.proc.pid

    def ready(self, word: str = "ready") -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith(word), line
        return line

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.poll() is None:
            child.kill()
        elif child.proc.stdout is not None:
            child.proc.stdout.close()


def spawn(children: list[Child], script: str, *args: object) -> Child:
    child = Child(script, *map(str, args))
    children.append(child)
    return child


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def snapshot(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` with a digest of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"
        for p in sorted(directory.iterdir())
    }


async def make_store(db: Path) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        await s.submit({"x": 1})


def lock_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".lock"))


# -- single owner, keyed on the file -------------------------------------------------


async def test_a_symlink_to_an_owned_file_is_refused_naming_the_holder(db, tmp_path) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(db)
    async with suricate.open_runtime(db):
        with pytest.raises(suricate.StoreLocked, match=f"pid {os.getpid()}"):
            async with suricate.open_runtime(link):
                pass
    async with suricate.open_runtime(link) as rt:  # the real file, once free
        assert rt.store.path == link  # type: ignore[attr-defined]
    assert not (tmp_path / "link.db-wal").exists()


async def test_a_hard_link_to_an_owned_file_is_refused_naming_the_holder(db, tmp_path) -> None:
    async with suricate.open_runtime(db):
        os.link(db, tmp_path / "link.db")
        with pytest.raises(suricate.StoreLocked, match=f"pid {os.getpid()}"):
            async with suricate.open_runtime(tmp_path / "link.db"):
                pass


async def test_links_to_a_file_another_process_owns_are_refused(db, tmp_path, children) -> None:
    await make_store(db)
    (tmp_path / "sym.db").symlink_to(db)
    holder = spawn(children, HOLDER, db)
    holder.ready()
    os.link(db, tmp_path / "hard.db")
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.link(db, other / "far.db")
    for name in (tmp_path / "sym.db", tmp_path / "hard.db"):
        with pytest.raises(suricate.StoreLocked, match=f"pid {holder.pid}"):
            async with suricate.open_runtime(name):
                pass
    # A link in another directory cannot find the lock: a file with several
    # names is refused instead, so it never gets a second owner.
    with pytest.raises(suricate.StoreError, match="hard links"):
        async with suricate.open_runtime(other / "far.db"):
            pass
    holder.kill()
    (tmp_path / "hard.db").unlink()
    (other / "far.db").unlink()
    async with suricate.open_runtime(tmp_path / "sym.db") as rt:
        assert await (await rt.open_session("held")).state() is suricate.SessionState.IDLE


# -- the lock file ---------------------------------------------------------------------


async def test_a_lock_file_planted_as_a_symlink_is_never_followed(db, tmp_path) -> None:
    await make_store(db)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n" * 100)
    before = victim.read_bytes()
    # The name older releases used: nothing opens it any more.
    (tmp_path / "agent.db.lock").unlink(missing_ok=True)
    (tmp_path / "agent.db.lock").symlink_to(victim)
    async with suricate.open_runtime(db):
        pass
    assert victim.read_bytes() == before
    # The name this release uses: refused, explained, the target untouched.
    planted = tmp_path / f".suricate-{db.stat().st_ino}.0.lock"  # generation 0
    planted.symlink_to(victim)
    with pytest.raises(suricate.StoreError, match="symbolic link") as info:
        async with suricate.open_runtime(db):
            pass
    assert str(planted) in str(info.value)
    assert victim.read_bytes() == before


async def test_a_process_that_can_only_read_the_lock_file_cannot_lock_the_owner_out(
    db, tmp_path, children
) -> None:
    # A killed owner leaves its lock file behind, for anyone to open.
    owner = spawn(children, HOLDER, db)
    owner.ready()
    owner.kill()
    assert lock_files(tmp_path)
    stale = spawn(children, READER, tmp_path)
    assert stale.ready() == "ready 1"
    stale.ready("read-locked")  # flock and a POSIX read lock, both held
    with trio.fail_after(30):
        async with suricate.open_runtime(db) as rt:
            await rt.open_session("s")
            # The owner still excludes every other runtime ...
            second = spawn(children, HOLDER, db)
            assert second.proc.wait(timeout=20) != 0
            with pytest.raises(suricate.StoreLocked, match=f"pid {os.getpid()}"):
                async with suricate.open_runtime(db):
                    pass
            # ... and a reader arriving while it runs gets its flock, not the lock.
            late = spawn(children, READER, tmp_path)
            late.ready()
        # Once the owner left, a later runtime takes over although both hold on.
        async with suricate.open_runtime(db) as rt:
            await rt.open_session("s")
    assert late.proc.poll() is None and stale.proc.poll() is None
    assert lock_files(tmp_path) == []


async def test_the_lock_is_released_and_its_file_removed_on_close(db, tmp_path) -> None:
    async with suricate.open_runtime(db) as rt:
        store = rt.store
        assert isinstance(store, SqliteStore)
        path = store.lock_path
        assert path is not None and path.parent == tmp_path
        assert path.read_text() == f"pid {os.getpid()} on host {os.uname().nodename}\n"
        # Reading the lock file in the owner's process does not drop the lock.
        assert path.read_bytes()
        with pytest.raises(suricate.StoreLocked):
            async with suricate.open_runtime(db):
                pass
    assert lock_files(tmp_path) == []


# -- modes -----------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [None, 0o640])
async def test_store_files_are_created_with_the_store_mode_whatever_the_umask(
    db, tmp_path, umask_022, mode
) -> None:
    store = SqliteStore(db) if mode is None else SqliteStore(db, mode=mode)
    expected = 0o600 if mode is None else mode
    async with suricate.open_runtime(store) as rt:
        s = await rt.open_session("s")
        await s.submit({"x": 1})
        lock = store.lock_path
        assert lock is not None
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), lock]
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
            p.name: oct(expected) for p in files
        }


def test_a_mode_that_locks_the_owner_out_is_rejected(db) -> None:
    for bad in (0o400, 0o1600, -1, "600", True):
        with pytest.raises(ValueError, match="mode"):
            SqliteStore(db, mode=bad)  # type: ignore[arg-type]


# -- a refused database is untouched ---------------------------------------------------


def newer_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE suricate_schema SET version = 99")
    conn.commit()
    conn.close()


def other_application(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()


def foreign_tables(db: Path) -> None:
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()


def foreign_wal_tables(db: Path) -> None:
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()


def not_sqlite(db: Path) -> None:
    db.write_bytes(b"a shopping list\n" * 100)


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (newer_schema, "schema version 99"),
        (other_application, "another application"),
        (foreign_tables, "not a suricate store"),
        (foreign_wal_tables, "not a suricate store"),
        (not_sqlite, "not a database"),
    ],
)
async def test_a_refused_database_is_left_byte_for_byte_untouched_with_no_side_files(
    db, tmp_path, spoil, why
) -> None:
    await make_store(db)
    for leftover in tmp_path.iterdir():  # the database alone in its directory
        if leftover != db:
            leftover.unlink()
    spoil(db)
    before = snapshot(tmp_path)
    assert set(before) == {"agent.db"}
    with pytest.raises(suricate.StoreError, match=why):
        async with suricate.open_runtime(db):
            pass
    assert snapshot(tmp_path) == before


async def test_new_files_carry_suricate_application_id_and_old_ones_get_it(db) -> None:
    await make_store(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    conn.execute("PRAGMA application_id = 0")  # as files from before the id was set
    conn.commit()
    conn.close()
    async with suricate.open_runtime(db) as rt:
        await rt.open_session("s")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    conn.close()


# -- leaving by any path releases the lock and the threads -----------------------------


def store_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("suricate-") and "agent.db" in t.name]


async def test_aclose_after_an_error_releases_lock_and_threads_so_the_file_reopens(db) -> None:
    failed = False
    try:
        async with trio.open_nursery() as nursery:
            store = SqliteStore(db)
            try:
                await store.start(nursery)
                assert store_threads()
                raise ZeroDivisionError
            finally:
                with trio.CancelScope(shield=True):
                    await store.aclose()
    except* ZeroDivisionError:
        failed = True
    assert failed and store_threads() == []
    async with trio.open_nursery() as nursery:
        again = SqliteStore(db)
        await again.start(nursery)
        await again.aclose()
        await again.aclose()  # idempotent
        again.close()


async def test_aclose_interrupted_by_cancellation_still_releases_everything(db) -> None:
    async with trio.open_nursery() as nursery:
        store = SqliteStore(db)
        await store.start(nursery)
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.aclose()  # not shielded: cancelled at its first checkpoint
        assert scope.cancelled_caught
    assert store_threads() == []
    async with trio.open_nursery() as nursery:
        again = SqliteStore(db)
        await again.start(nursery)
        again.close()
    assert store_threads() == []


async def test_close_is_synchronous_idempotent_and_safe_after_a_failed_start(db, tmp_path) -> None:
    async with suricate.open_runtime(db):
        async with trio.open_nursery() as nursery:
            refused = SqliteStore(db)
            with pytest.raises(suricate.StoreLocked):
                await refused.start(nursery)
            refused.close()
            await refused.aclose()
    async with trio.open_nursery() as nursery:
        store = SqliteStore(db)
        await store.start(nursery)
        store.close()
        store.close()
        with pytest.raises(suricate.StoreError, match="not open"):
            await store.list_sessions()
    assert store_threads() == [] and lock_files(tmp_path) == []


async def test_a_start_cancelled_halfway_leaves_nothing_held(db) -> None:
    for delay in (0.0, 0.001, 0.005, 0.02):
        async with trio.open_nursery() as nursery:
            store = SqliteStore(db)
            with trio.move_on_after(delay):
                await store.start(nursery)
            with trio.CancelScope(shield=True):
                await store.aclose()
        assert store_threads() == []
    async with trio.open_nursery() as nursery:
        store = SqliteStore(db)
        await store.start(nursery)
        await store.aclose()
