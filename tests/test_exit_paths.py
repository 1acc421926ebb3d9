"""Leaving ``open_runtime`` by any path releases what it opened: the store's
lock and threads, so that the same process can open the same file again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

import suricate
from suricate.store import SqliteStore


class _CrashingStore(SqliteStore):
    """A SQLite store whose background task crashes once told to."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.crash = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        await super().start(nursery)

        async def background() -> None:
            await self.crash.wait()
            raise RuntimeError("the store's background task failed")

        nursery.start_soon(background)


def _store_threads(path: Path) -> list[str]:
    """The store's connection threads of ``path`` still alive (named after its file)."""
    names = {f"suricate-writer-{path.name}", f"suricate-reader-{path.name}"}
    return [t.name for t in threading.enumerate() if t.name in names]


async def _noop(turn: suricate.Turn) -> None:
    return None


async def test_after_runtime_crashed_the_same_process_reopens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exit-after-crash.db"
    store = _CrashingStore(path)
    with trio.fail_after(30):
        with pytest.raises(suricate.RuntimeCrashed):
            async with suricate.open_runtime(store) as rt:
                s = await rt.open_session("s")
                await s.attach(_noop)
                await s.ask({"before": "the crash"})
                store.crash.set()
                await trio.sleep_forever()
        assert _store_threads(path) == []
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("s")
            await s.attach(_noop)
            assert isinstance(await s.ask({"after": "the crash"}), suricate.Completed)


async def test_after_a_cancelled_exit_the_same_process_reopens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exit-after-cancel.db"
    with trio.fail_after(30):
        with trio.CancelScope() as scope:
            async with suricate.open_runtime(path) as rt:
                s = await rt.open_session("s")
                await s.attach(_noop)
                await s.ask({"x": 1})
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert _store_threads(path) == []
        async with suricate.open_runtime(path) as rt:
            assert (await rt.open_session("s")).id == "s"


async def test_an_exception_in_the_body_releases_the_file_and_propagates_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "exit-after-raise.db"

    class Boom(Exception):
        pass

    with trio.fail_after(30):
        with pytest.raises(Boom):
            async with suricate.open_runtime(path) as rt:
                await rt.open_session("s")
                raise Boom
        assert _store_threads(path) == []
        async with suricate.open_runtime(path) as rt:
            await rt.open_session("s")
