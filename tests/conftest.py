from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import pytest

import suricate
from suricate.store import MemoryStore


@pytest.fixture
def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def rt(store: MemoryStore, ids: Callable[[], str]) -> AsyncIterator[suricate.Runtime]:
    async with suricate.open_runtime(store, id_factory=ids, seed=1) as runtime:
        yield runtime
