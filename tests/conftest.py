from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import suricate
from suricate import MemoryStore, Store
from suricate.store import SqliteStore
from suricate.testing import FaultyStore

StoreFactory = Callable[[], Store]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Virtual time jumps while a worker thread is busy (trio issue #456): tests on
    # the autojump clock run on the MemoryStore only, never on SQLite's threads.
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("store_factory") == "sqlite"
        uses_clock = "autojump_clock" in getattr(item, "fixturenames", ())
        (drop if on_sqlite and uses_clock else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


@pytest.fixture(params=["memory", "sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes the store of one database: each call is a new process's view of it."""
    if request.param == "memory":
        memory = MemoryStore()
        return lambda: memory
    return lambda: SqliteStore(tmp_path / "agent.db")


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


@pytest.fixture
async def rt(store: Store, ids: Callable[[], str]) -> AsyncIterator[suricate.Runtime]:
    async with suricate.open_runtime(store, id_factory=ids, seed=1) as runtime:
        yield runtime


@pytest.fixture
async def faulty(
    store_factory: StoreFactory, ids: Callable[[], str]
) -> AsyncIterator[tuple[suricate.Runtime, FaultyStore]]:
    """A runtime over a :class:`FaultyStore` (to fail or hold its commits)."""
    store = FaultyStore(store_factory())
    async with suricate.open_runtime(store, id_factory=ids) as runtime:
        yield runtime, store
