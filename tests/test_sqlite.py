"""The SQLite store: durability, opening errors, single owner, group commit, recovery.

These tests use real threads (the store's writer and reader), so real time
with ``trio.fail_after``, never the autojump clock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
import trio

import suricate
from suricate import AbandonReason, Abandoned, Completed, InputState, SessionState
from suricate._kernel import call_on_host
from suricate.store import SqliteStore, WriteSet
from suricate.testing import FaultyStore, ScriptedExecutor, durable_view, memory_view


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_a_path_opens_a_sqlite_store_in_wal_mode_with_full_sync(db) -> None:
    async with suricate.open_runtime(str(db)) as rt:
        assert isinstance(rt.store, SqliteStore)
        assert rt.store.synchronous == "FULL"
        await rt.open_session("s")
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert rows(db, "SELECT session_id, state FROM sessions") == [("s", "idle")]
    assert rows(db, "SELECT version FROM suricate_schema") == [(4,)]


async def test_submit_returns_only_after_the_row_is_in_the_file(db) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        with trio.fail_after(10):
            for n in range(5):
                ack = await s.submit({"n": n})
                # A separate connection sees the row the moment submit returned.
                assert rows(db, "SELECT state FROM inputs WHERE input_id = ?", ack.input_id) == [
                    ("queued",)
                ]


async def test_a_turn_commits_snapshot_receipt_results_and_messages_in_one_transaction(db) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        await rt.open_session("peer")
        ex = ScriptedExecutor(
            result=lambda t: suricate.TurnResult(
                snapshot={"done": 1},
                result="ok",
                messages=[suricate.PeerMessage("peer", {"hello": 1})],
            )
        )
        await s.attach(ex)
        with trio.fail_after(10):
            outcome = await s.ask({"x": 1})
    (state, result, run_id), = rows(
        db, "SELECT state, result_json, run_id FROM inputs WHERE input_id = ?", outcome.input_id
    )
    assert (state, json.loads(result)) == ("consumed", "ok")
    assert rows(db, "SELECT input_ids_json FROM receipts WHERE run_id = ?", run_id) == [
        (json.dumps([outcome.input_id]),)
    ]
    assert rows(db, "SELECT snapshot_json, snapshot_revision FROM sessions WHERE session_id='s'") == [
        ('{"done":1}', 1)
    ]
    assert rows(db, "SELECT target, payload_json, run_id FROM outbox") == [
        ("peer", '{"hello":1}', run_id)
    ]


async def test_outcomes_survive_a_restart(db) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        await s.attach(ScriptedExecutor(fail_times=5, error=ValueError("nope")), retry=None)
        with trio.fail_after(10):
            failed = await s.ask({"x": 1})
            await s.detach()
            await s.attach(ScriptedExecutor())
            done = await s.ask({"y": (1, 2)})
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        assert await s.wait(failed.input_id) == Abandoned(
            input_id=failed.input_id, reason=AbandonReason.MAX_ATTEMPTS, error="ValueError: nope"
        )
        assert await s.wait(done.input_id) == Completed(input_id=done.input_id, result={"y": [1, 2]})


# -- opening errors -------------------------------------------------------------------


async def test_a_missing_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(suricate.StoreError, match="does not exist"):
        async with suricate.open_runtime(tmp_path / "nowhere" / "agent.db"):
            pass


async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(db) -> None:
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    before = db.read_bytes()
    with pytest.raises(suricate.StoreError, match="not a database"):
        async with suricate.open_runtime(db):
            pass
    assert db.read_bytes() == before


async def test_a_sqlite_file_of_another_application_is_refused(db) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(suricate.StoreError, match="not a suricate store"):
        async with suricate.open_runtime(db):
            pass
    assert rows(db, "SELECT name FROM sqlite_master") == [("recipes",)]


async def test_a_read_only_file_is_refused(db) -> None:
    async with suricate.open_runtime(db) as rt:
        await rt.open_session("s")
    db.chmod(0o444)
    try:
        with pytest.raises(suricate.StoreError, match="read-only"):
            async with suricate.open_runtime(db):
                pass
    finally:
        db.chmod(0o644)


async def test_a_newer_schema_version_is_refused_untouched(db) -> None:
    async with suricate.open_runtime(db) as rt:
        await rt.open_session("s")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE suricate_schema SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(suricate.StoreError, match="schema version 99"):
        async with suricate.open_runtime(db):
            pass
    assert rows(db, "SELECT version FROM suricate_schema") == [(99,)]


async def test_an_unknown_record_version_fails_loudly_on_read(db) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        ack = await s.submit({"x": 1})
    conn = sqlite3.connect(db)
    conn.execute("UPDATE inputs SET version = 7 WHERE input_id = ?", (ack.input_id,))
    conn.commit()
    conn.close()
    async with suricate.open_runtime(db) as rt:
        with pytest.raises(suricate.RecoveryCorruption, match="version 7"):
            await rt.open_session("s")


# -- single owner ----------------------------------------------------------------------


async def test_a_second_runtime_on_the_same_file_is_refused_naming_the_holder(db) -> None:
    async with suricate.open_runtime(db) as rt:
        await rt.open_session("s")
        with pytest.raises(suricate.StoreLocked, match=f"pid {os.getpid()}"):
            async with suricate.open_runtime(db):
                pass
        # Readers in other processes still see the file.
        assert rows(db, "SELECT session_id FROM sessions") == [("s",)]
    async with suricate.open_runtime(db) as rt:  # released on close
        assert [s.id for s in [await rt.open_session("s")]] == ["s"]


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


async def test_another_process_is_refused_and_a_dead_owner_is_taken_over(db) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(suricate.StoreLocked, match=f"pid {proc.pid}"):
            async with suricate.open_runtime(db):
                pass
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("held")
        assert await s.state() is SessionState.IDLE


# -- group commit ----------------------------------------------------------------------


async def test_one_poisoned_write_set_in_a_group_fails_alone(db) -> None:
    async with suricate.open_runtime(db) as rt:
        sessions = [await rt.open_session(f"s{n}") for n in range(40)]
        store = rt.store
        assert isinstance(store, SqliteStore)
        # A write-set whose snapshot compare-and-swap cannot hold.
        poison = WriteSet(
            session_id="s0",
            snapshot=suricate.store.SnapshotWrite(value_json="1", expected_revision=41),
        )
        results: dict[str, object] = {}

        async def submit(s: suricate.Session) -> None:
            results[s.id] = await s.submit({"from": s.id})

        async def poisoned() -> None:
            try:
                await store.commit(poison)
            except suricate.StoreError as exc:
                results["poison"] = exc

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for s in sessions[:20]:
                    nursery.start_soon(submit, s)
                nursery.start_soon(poisoned)
                for s in sessions[20:]:
                    nursery.start_soon(submit, s)
        stats = store.statistics()
    assert isinstance(results.pop("poison"), suricate.StoreError)
    assert all(isinstance(r, suricate.Accepted) for r in results.values()) and len(results) == 40
    assert stats.largest_batch > 1
    assert stats.failed_write_sets == 1
    assert len(rows(db, "SELECT input_id FROM inputs")) == 40
    assert rows(db, "SELECT snapshot_revision FROM sessions WHERE session_id = 's0'") == [(0,)]


async def test_a_real_disk_full_fault_mid_run_rolls_back_to_what_a_fresh_process_recovers(db) -> None:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        for n in range(3):
            await s.submit({"n": n})
        store = rt.store
        assert isinstance(store, SqliteStore)

        def fill(host: object) -> None:
            conn = host.connection()  # type: ignore[attr-defined]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await call_on_host(store._writer, fill)
        with pytest.raises(suricate.StoreError, match="full"):
            await s.submit({"big": "x" * 200_000})
        assert await memory_view(s) == await durable_view(store, "s")

        def make_room(host: object) -> None:
            host.connection().execute("PRAGMA max_page_count = 1073741823")  # type: ignore[attr-defined]

        await call_on_host(store._writer, make_room)
        # With room again, the same submit succeeds.
        ack = await s.submit({"big": "x" * 200_000})
        assert (await s.input(ack.input_id)).state is suricate.InputState.QUEUED
        in_memory = await memory_view(s)
        assert in_memory == await durable_view(store, "s")
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        assert await memory_view(s) == in_memory


async def test_faulty_store_around_sqlite_rolls_back_each_operation(db) -> None:
    store = FaultyStore(SqliteStore(db))
    async with suricate.open_runtime(store) as rt:
        s = await rt.open_session("s")
        await s.submit({"x": 1})
        for op in (lambda: s.submit({"y": 1}), s.retire, s.reset, s.recycle, s.stop, s.destroy):
            before = await memory_view(s)
            store.fail_next_commit()
            with pytest.raises(suricate.StoreError):
                await op()
            assert await memory_view(s) == before == await durable_view(store, "s")
            await op()  # the fault is spent: the same operation now succeeds
            assert await memory_view(s) == await durable_view(store, "s")
        assert await s.state() is suricate.SessionState.DESTROYED


# -- recovery, row by row --------------------------------------------------------------


def _set(db: Path, input_id: str, **columns: object) -> None:
    conn = sqlite3.connect(db)
    assignments = ", ".join(f"{k} = ?" for k in columns)
    conn.execute(f"UPDATE inputs SET {assignments} WHERE input_id = ?", (*columns.values(), input_id))
    conn.commit()
    conn.close()


async def _seed(db: Path, n: int) -> list[str]:
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        return [(await s.submit({"n": i})).input_id for i in range(n)]


async def test_recovery_rules_row_by_row(db) -> None:
    queued, staged, exhausted, applied_ok, applied_lost = await _seed(db, 5)
    _set(db, staged, state="staged", attempt=1, run_id="r1")
    _set(db, exhausted, state="staged", attempt=3, run_id="r2")
    _set(db, applied_ok, state="applied", attempt=1, run_id="r3", boundary=1)
    _set(db, applied_lost, state="applied", attempt=1, run_id="r4", boundary=1)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO receipts VALUES ('s', 'r3', 1, ?, 0, 1)", (json.dumps([applied_ok]),)
    )
    conn.commit()
    conn.close()
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        states = {i: (await s.input(i)).state for i in (queued, staged, exhausted, applied_ok, applied_lost)}
        assert states == {
            queued: InputState.QUEUED,
            staged: InputState.QUEUED,
            exhausted: InputState.ABANDONED,
            applied_ok: InputState.CONSUMED,
            applied_lost: InputState.QUEUED,
        }
        assert await s.wait(exhausted) == Abandoned(
            input_id=exhausted, reason=AbandonReason.MAX_ATTEMPTS, error="process exited during run"
        )
        ex = ScriptedExecutor()
        await s.attach(ex)
        with trio.fail_after(10):
            for i in (queued, staged, applied_lost):
                assert isinstance(await s.wait(i), Completed)
    # Admission order kept; requeued ones at their original place.
    assert [p["n"] for p in ex.payloads] == [0, 1, 4]


async def test_recover_reports_what_it_did(db) -> None:
    _, staged = await _seed(db, 2)
    async with suricate.open_runtime(db) as rt:
        s = await rt.open_session("s")
        # Behind the session's back, as a crashed earlier process would have left it.
        _set(db, staged, state="staged", attempt=3, run_id="r9")
        report = await s.recover()
        assert await s.wait(staged) == Abandoned(
            input_id=staged, reason=AbandonReason.MAX_ATTEMPTS, error="process exited during run"
        )
    assert report.inputs_recovered == 2
    assert report.inputs_abandoned == 1


@pytest.mark.parametrize(
    "corruption",
    ["destroyed_with_active_input", "missing_payload", "unknown_session_version"],
)
async def test_corrupt_records_fail_closed(db, corruption) -> None:
    first, = await _seed(db, 1)
    conn = sqlite3.connect(db)
    if corruption == "destroyed_with_active_input":
        conn.execute("UPDATE sessions SET state = 'destroyed'")
    elif corruption == "missing_payload":
        conn.execute("UPDATE inputs SET payload_json = NULL")
    else:
        conn.execute("UPDATE sessions SET version = 2")
    conn.commit()
    conn.close()
    async with suricate.open_runtime(db) as rt:
        with pytest.raises(suricate.RecoveryCorruption):
            await rt.open_session("s")


async def test_runtime_stats_report_group_commit_batches(db) -> None:
    async with suricate.open_runtime(db) as rt:
        sessions = [await rt.open_session(f"s{n}") for n in range(8)]
        async with trio.open_nursery() as nursery:
            for s in sessions:
                nursery.start_soon(s.submit, {"x": 1})
        stats = await rt.stats()
    assert stats.store.write_sets >= 16  # 8 session records, 8 inputs
    assert stats.store.batches <= stats.store.write_sets
    assert stats.store.failed_write_sets == 0


@pytest.mark.parametrize("store_factory", ["memory", "sqlite"], indirect=True)
async def test_an_input_row_colliding_with_another_inputs_key_fails_and_replaces_nothing(
    rt, store
) -> None:
    s = await rt.open_session("s")
    first = await s.submit({"x": 1}, idempotency_key="k")
    record = await store.load_input("s", first.input_id)
    forged = attrs.evolve(record, input_id="forged", seq=record.seq + 100)
    with pytest.raises(suricate.StoreError):
        await store.commit(WriteSet(session_id="s", inputs=(forged,)))
    assert await store.load_input("s", first.input_id) == record
    assert await store.load_input("s", "forged") is None
