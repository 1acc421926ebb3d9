"""Input history is append-only in storage: each entry is written once.

A record says how many of its history entries the store holds
(``stored_history``); a store writes only the rest and counts them in once the
write-set is durable.  These tests run on both stores (the SQLite ones on real
threads, so real time).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import attrs
import pytest
import trio

import suricate
from suricate import Completed, InputState, StoreError, TurnResult
from suricate._model import InputEvent, StateChange
from suricate._model._session import _moved
from suricate.store import SnapshotWrite, SqliteStore, WriteSet
from suricate.store._schema import moved_row
from suricate.testing import ScriptedExecutor


def history_rows(db: Path, input_id: str) -> list[tuple[int, str]]:
    """The stored history of an input as (n, state), checked against its length."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        ((text, length),) = conn.execute(
            "SELECT history_json, history_len FROM inputs WHERE input_id = ?", (input_id,)
        ).fetchall()
    finally:
        conn.close()
    entries = json.loads(text)
    assert len(entries) == length
    return [(n, e[0]) for n, e in enumerate(entries)]


async def _stored_input(rt: suricate.Runtime) -> suricate.InputRecord:
    s = await rt.open_session("s")
    ack = await s.submit({"x": 1})
    record = await rt.store.load_input("s", ack.input_id)
    assert record is not None and record.stored_history == 1
    return record


async def test_every_committed_record_counts_its_history_as_stored(rt) -> None:
    s = await rt.open_session("s")
    await s.attach(ScriptedExecutor(fail_times=1))
    with trio.fail_after(20):
        outcome = await s.ask({"x": 1})
    assert isinstance(outcome, Completed)
    record = await s.input(outcome.input_id)
    assert record is not None
    assert [h.state for h in record.history] == [
        InputState.QUEUED, InputState.STAGED, InputState.QUEUED, InputState.STAGED,
        InputState.CONSUMED,
    ]
    assert record.stored_history == len(record.history)
    assert await rt.store.load_input("s", outcome.input_id) == record


async def test_a_failed_write_set_writes_no_history_entry(rt, store) -> None:
    record = await _stored_input(rt)
    staged = _moved(record, InputEvent.STAGE, 2.0, run_id="r1", attempt=1)
    assert staged.stored_history == 1
    poisoned = WriteSet(
        session_id="s",
        inputs=(staged,),
        snapshot=SnapshotWrite(value_json="1", expected_revision=41),
    )
    with pytest.raises(StoreError):
        await store.commit(poisoned)
    assert staged.stored_history == 1  # nothing of it counts as stored
    assert await store.load_input("s", record.input_id) == record
    if isinstance(store, SqliteStore):
        assert history_rows(store.path, record.input_id) == [(0, "queued")]
    # The next write of the input writes the entry the failed one did not.
    await store.commit(WriteSet(session_id="s", inputs=(staged,)))
    assert staged.stored_history == 2
    loaded = await store.load_input("s", record.input_id)
    assert loaded == staged and loaded.history == staged.history
    if isinstance(store, SqliteStore):
        assert history_rows(store.path, record.input_id) == [(0, "queued"), (1, "staged")]


async def test_a_record_moved_twice_before_one_commit_writes_both_entries(rt, store) -> None:
    record = await _stored_input(rt)
    staged = _moved(record, InputEvent.STAGE, 2.0, run_id="r1", attempt=1)
    requeued = _moved(staged, InputEvent.FAIL_RETRY, 3.0, order=9)
    restaged = _moved(requeued, InputEvent.STAGE, 4.0, run_id="r2", attempt=2)
    await store.commit(WriteSet(session_id="s", inputs=(restaged,)))
    loaded = await store.load_input("s", record.input_id)
    assert loaded is not None
    assert [(h.state, h.at, h.run_id) for h in loaded.history] == [
        (InputState.QUEUED, record.history[0].at, None),
        (InputState.STAGED, 2.0, "r1"),
        (InputState.QUEUED, 3.0, "r1"),
        (InputState.STAGED, 4.0, "r2"),
    ]
    assert (loaded.order, loaded.attempt, loaded.run_id) == (9, 2, "r2")


async def test_a_fresh_record_moved_before_its_first_commit_writes_its_whole_row(rt, store) -> None:
    record = await _stored_input(rt)
    fresh = attrs.evolve(
        record, input_id="fresh", seq=record.seq + 1, history=record.history, stored_history=0
    )
    staged = _moved(fresh, InputEvent.STAGE, 2.0, run_id="r1", attempt=1)
    await store.commit(WriteSet(session_id="s", inputs=(staged,)))
    loaded = await store.load_input("s", "fresh")
    assert loaded == staged
    assert [h.state for h in loaded.history] == [InputState.QUEUED, InputState.STAGED]


async def test_a_record_counting_history_the_store_does_not_hold_fails_alone(rt, store) -> None:
    record = await _stored_input(rt)
    ghost = attrs.evolve(
        record,
        input_id="ghost",
        seq=record.seq + 1,
        history=(*record.history, StateChange(InputState.STAGED, 2.0, "r")),
        state=InputState.STAGED,
    )
    assert ghost.stored_history == 1  # but the store never saw this input
    with pytest.raises(StoreError):
        await store.commit(WriteSet(session_id="s", inputs=(ghost,)))
    assert await store.load_input("s", "ghost") is None


def test_a_write_of_a_stored_record_carries_only_its_new_history_entries() -> None:
    record = _moved(
        _moved(_fresh(), InputEvent.STAGE, 2.0, run_id="r1", attempt=1),
        InputEvent.FAIL_RETRY,
        3.0,
    )
    object.__setattr__(record, "stored_history", 2)  # as if the staged record was committed
    row = moved_row(record)
    assert json.loads(f"[{row[9]}]") == [["queued", 3.0, "r1"]]
    assert row[10:] == (3, "s", "i1", 2)


def _fresh() -> suricate.InputRecord:
    return suricate.InputRecord(
        session_id="s",
        input_id="i1",
        seq=1,
        order=1,
        kind="prompt",
        payload_json="1",
        durability=suricate.Durability.DURABLE,
        handling=suricate.Handling.QUEUE,
        history=(StateChange(InputState.QUEUED, 1.0),),
    )


@pytest.mark.parametrize("store_factory", ["sqlite"], indirect=True)
async def test_each_history_entry_is_written_once_through_a_workload(store_factory) -> None:
    store = store_factory()
    assert isinstance(store, SqliteStore)
    db = store.path
    async with suricate.open_runtime(store):
        pass
    conn = sqlite3.connect(db)
    # Every update of an input row: its history lengths, and whether the
    # stored text of the entries it held before is kept byte for byte.
    conn.executescript(
        "CREATE TABLE updates (input_id TEXT, old_len INTEGER, new_len INTEGER, kept INTEGER);"
        "CREATE TRIGGER log_updates AFTER UPDATE ON inputs BEGIN "
        "INSERT INTO updates VALUES (new.input_id, old.history_len, new.history_len, "
        "substr(new.history_json, 1, length(old.history_json) - 1) "
        "= substr(old.history_json, 1, length(old.history_json) - 1)); END;"
    )
    conn.close()
    ids = []
    async with suricate.open_runtime(SqliteStore(db)) as rt:
        s = await rt.open_session("s")
        await s.submit({"old": 1}, kind="k", supersession_key="same")
        await s.submit({"new": 1}, kind="k", supersession_key="same")
        ex = ScriptedExecutor(fail_times=1, result=lambda t: TurnResult(result="ok", snapshot=1))
        await s.attach(ex)
        with trio.fail_after(20):
            for n in range(5):
                ids.append((await s.ask({"n": n}, idempotency_key=f"k{n}")).input_id)
        await s.detach()
        queued = await s.submit({"left": 1})
        await s.reset()
        records = [await s.input(i) for i in (*ids, queued.input_id)]
    conn = sqlite3.connect(db)
    try:
        updates = conn.execute("SELECT input_id, old_len, new_len, kept FROM updates").fetchall()
        lengths = dict(conn.execute("SELECT input_id, history_len FROM inputs").fetchall())
    finally:
        conn.close()
    assert updates and all(kept == 1 and new > old > 0 for _, old, new, kept in updates)
    for record in records:
        assert record is not None
        assert lengths[record.input_id] == len(record.history) == record.stored_history
        assert history_rows(db, record.input_id) == [
            (n, h.state.value) for n, h in enumerate(record.history)
        ]
        # Each update added the entries after the ones stored: none twice.
        steps = sorted((old, new) for i, old, new, _ in updates if i == record.input_id)
        assert all(a[1] == b[0] for a, b in zip(steps, steps[1:]))


async def test_a_record_behind_the_store_rewrites_the_stored_history_whole(rt, store) -> None:
    """A commit whose record memory never adopted (the writer committed,
    the caller gave up) leaves the store ahead; the next write of the older
    record replaces it entirely, so the store again equals memory."""
    record = await _stored_input(rt)
    adopted_nowhere = _moved(record, InputEvent.STAGE, 2.0, run_id="r1", attempt=1)
    await store.commit(WriteSet(session_id="s", inputs=(adopted_nowhere,)))
    abandoned = _moved(record, InputEvent.ABANDON, 3.0, reason=suricate.AbandonReason.RESET)
    assert abandoned.stored_history == 1
    await store.commit(WriteSet(session_id="s", inputs=(abandoned,)))
    loaded = await store.load_input("s", record.input_id)
    assert loaded == abandoned
    assert [h.state for h in loaded.history] == [InputState.QUEUED, InputState.ABANDONED]
    if isinstance(store, SqliteStore):
        assert history_rows(store.path, record.input_id) == [(0, "queued"), (1, "abandoned")]
