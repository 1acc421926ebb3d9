"""A store written by an older release opens, migrates and keeps every record.

``tests/data/store-v1.db`` was written by the release of schema version 1
(``tests/data/make_store_v1.py``); ``store-v1.expected.json`` holds every row
it wrote.  These tests use real threads (the SQLite store), so real time.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import suricate
from suricate import (
    AbandonReason,
    Abandoned,
    Completed,
    Deduplicated,
    InputRecord,
    InputState,
    SessionState,
    Superseded,
)
from suricate.store._schema import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "store-v1.expected.json").read_text())
#: What recovery changes when the file is opened (DESIGN section 7).
RECOVERED: dict[str, dict[str, Any]] = EXPECTED["recovery"]["crashed"]


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    shutil.copyfile(DATA / "store-v1.db", path)
    return path


def _history(record: InputRecord) -> list[list[Any]]:
    return [[h.state.value, h.at, h.run_id] for h in record.history]


def _check_as_stored(record: InputRecord, row: dict[str, Any]) -> None:
    assert record.input_id == row["input_id"]
    assert (record.seq, record.order) == (row["seq"], row["lane_order"])
    assert (record.kind, record.payload_json) == (row["kind"], row["payload_json"])
    assert (record.durability.value, record.handling.value) == (row["durability"], row["handling"])
    assert record.idempotency_key == row["idempotency_key"]
    assert record.supersession_key == row["supersession_key"]
    assert record.correlation_id == row["correlation_id"]
    assert record.metadata_json == row["metadata_json"]
    assert record.state.value == row["state"]
    assert record.attempt == row["attempt"]
    assert (record.run_id, record.boundary) == (row["run_id"], row["boundary"])
    assert (record.reason.value if record.reason else None) == row["reason"]
    assert record.error == row["error"]
    assert record.result_json == row["result_json"]
    assert record.superseded_by == row["superseded_by"]
    assert record.submitted_at == row["submitted_at"]
    assert _history(record) == row["history"]


def _outcome(row: dict[str, Any]) -> suricate.Outcome:
    if row["state"] == "consumed":
        return Completed(input_id=row["input_id"], result=json.loads(row["result_json"]))
    if row["state"] == "superseded":
        return Superseded(input_id=row["input_id"], by=row["superseded_by"])
    assert row["state"] == "abandoned"
    return Abandoned(input_id=row["input_id"], reason=AbandonReason(row["reason"]), error=row["error"])


async def test_every_session_input_outcome_and_receipt_of_a_v1_store_survives(v1) -> None:
    with trio.fail_after(30):
        async with suricate.open_runtime(v1) as rt:
            for sid, stored in EXPECTED["sessions"].items():
                if sid in ("crashed", "inbox"):
                    continue  # recovery changes crashed; opening inbox admits its message
                s = await rt.open_session(sid)
                assert (await s.state()).value == stored["state"]
                assert await s.snapshot() == json.loads(stored["snapshot_json"] or "null")
                for row in stored["inputs"]:
                    record = await s.input(row["input_id"])
                    assert record is not None
                    _check_as_stored(record, row)
                    if InputState(row["state"]).terminal:
                        assert await s.wait(row["input_id"], timeout=5) == _outcome(row)
                for receipt in stored["receipts"]:
                    found = await s.receipt(receipt["run_id"], receipt["sequence"])
                    assert found is not None
                    assert list(found.input_ids) == json.loads(receipt["input_ids_json"])
                    assert found.at == receipt["at"]
                loaded = await rt.store.load_session(sid)
                assert loaded is not None
                assert loaded.snapshot_revision == stored["snapshot_revision"]
                assert loaded.record.stop_reason == stored["stop_reason"]
                assert dict(loaded.idempotency) == {
                    r["idempotency_key"]: r["input_id"]
                    for r in stored["inputs"]
                    if r["idempotency_key"] is not None
                }


async def test_idempotency_keys_of_a_v1_store_still_deduplicate(v1) -> None:
    with trio.fail_after(30):
        async with suricate.open_runtime(v1) as rt:
            alpha = await rt.open_session("alpha")
            (held,) = [r for r in EXPECTED["sessions"]["alpha"]["inputs"] if r["idempotency_key"] == "k-1"]
            ack = await alpha.submit({"again": True}, idempotency_key="k-1")
            assert ack == Deduplicated(input_id=held["input_id"], existing_input_id=held["input_id"])
            fresh = await alpha.submit({"new": True})
            assert fresh.input_id not in {r["input_id"] for r in EXPECTED["sessions"]["alpha"]["inputs"]}
            record = await alpha.input(fresh.input_id)
            assert record is not None
            # Submits write only their input row: the next seq follows the highest stored.
            assert record.seq == max(r["seq"] for r in EXPECTED["sessions"]["alpha"]["inputs"]) + 1


async def test_a_v1_store_keeps_its_outbox_and_dead_letters(v1) -> None:
    (delivered, dead, pending) = EXPECTED["outbox"]
    with trio.fail_after(30):
        async with suricate.open_runtime(v1) as rt:
            letters = await rt.dead_letters()
            assert [(d.id, d.target, d.reason, d.at) for d in letters] == [
                (dead["id"], "ghost", "unknown target", dead["at"])
            ]
            assert letters[0].payload_json == dead["payload_json"]
            (row,) = await rt.store.load_outbox("inbox")
            assert (row.id, row.message.payload_json) == (pending["id"], pending["payload_json"])
            assert await rt.store.load_outbox("beta") == []
            inbox = await rt.open_session("inbox")
            with trio.fail_after(10):
                while not (await inbox.stats()).inputs["queued"]:
                    await trio.sleep(0.01)
            assert await rt.store.load_outbox("inbox") == []
            beta = await rt.open_session("beta")
            (message,) = [r for r in EXPECTED["sessions"]["beta"]["inputs"] if r["kind"] == "peer_message"]
            record = await beta.input(message["input_id"])
            assert record is not None and record.state is InputState.QUEUED
            assert record.payload == json.loads(delivered["payload_json"])


async def test_recovery_of_a_v1_store_requeues_staged_inputs_as_the_rules_say(v1) -> None:
    stored = {r["input_id"]: r for r in EXPECTED["sessions"]["crashed"]["inputs"]}
    with trio.fail_after(30):
        async with suricate.open_runtime(v1) as rt:
            s = await rt.open_session("crashed")
            assert await s.state() is SessionState.IDLE
            assert await s.snapshot() == {"crashed": True}
            for input_id, expected in RECOVERED.items():
                row = stored[input_id]
                record = await s.input(input_id)
                assert record is not None
                assert record.state.value == expected["state"], input_id
                if "attempt" in expected:
                    assert record.attempt == expected["attempt"]
                history = _history(record)
                moved = row["state"] in ("staged", "applied")
                # Recovery appends one entry to what the file held; the rest is untouched.
                assert history[: len(row["history"])] == row["history"]
                assert len(history) == len(row["history"]) + moved
                if moved:
                    assert history[-1][0] == expected["state"]
                    assert history[-1][2] == row["run_id"]
                if InputState(expected["state"]).terminal:
                    outcome = await s.wait(input_id, timeout=5)
                    if expected["state"] == "consumed":
                        # Applied at a boundary, then the process exited: cut
                        # short after a checkpoint.
                        assert outcome == Completed(
                            input_id=input_id, result=expected["result"], interrupted=True
                        )
                        assert record.history[-1].error == "process exited during run"
                    else:
                        assert outcome == Abandoned(
                            input_id=input_id,
                            reason=AbandonReason(expected["reason"]),
                            error=expected["error"],
                        )
            stats = await s.stats()
            assert stats.inputs["queued"] == 3
            receipt = await s.receipt("run-c", 1)
            assert receipt is not None and receipt.input_ids == ("c3",)
        # Recovery was committed: a second open finds nothing left to recover.
        async with suricate.open_runtime(v1) as rt:
            s = await rt.open_session("crashed")
            report = await s.recover()
            assert (report.inputs_requeued, report.inputs_abandoned) == (0, 0)
            for input_id, expected in RECOVERED.items():
                record = await s.input(input_id)
                assert record is not None and record.state.value == expected["state"]


async def test_a_recovered_v1_store_runs_its_queued_work(v1) -> None:
    with trio.fail_after(30):
        async with suricate.open_runtime(v1) as rt:
            s = await rt.open_session("crashed")
            await s.attach(lambda turn: suricate.TurnResult(result="done"))
            for input_id in ("c1", "c4", "c5"):
                assert await s.wait(input_id, timeout=10) == Completed(input_id=input_id, result="done")
            record = await s.input("c1")
            assert record is not None
            assert [h.state for h in record.history][-3:] == [
                InputState.QUEUED,
                InputState.STAGED,
                InputState.CONSUMED,
            ]


def _read(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_opening_a_v1_store_counts_every_history_for_appending(v1) -> None:
    with trio.fail_after(30):
        async with suricate.open_runtime(v1):
            pass
    assert _read(v1, "SELECT version FROM suricate_schema") == [(SCHEMA_VERSION,)]
    for stored in EXPECTED["sessions"].values():
        for row in stored["inputs"]:
            ((text, length),) = _read(
                v1, "SELECT history_json, history_len FROM inputs WHERE input_id = ?", row["input_id"]
            )
            assert json.loads(text) == row["history"]
            assert length == len(row["history"])
    indexes = {name for (name,) in _read(v1, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_inputs_idempotency", "idx_inputs_session_id_seq"} <= indexes
    assert {"idx_outbox_pending", "idx_outbox_dead"} <= indexes
    assert not {"idx_outbox_target_state_id", "idx_outbox_state_id"} & indexes
    # Reopening finds nothing to migrate and changes nothing.
    before = _read(v1, "SELECT * FROM inputs ORDER BY rowid")
    async with suricate.open_runtime(v1):
        pass
    assert _read(v1, "SELECT * FROM inputs ORDER BY rowid") == before


async def test_a_migration_that_fails_leaves_the_v1_store_untouched(v1) -> None:
    conn = sqlite3.connect(v1)
    conn.execute("UPDATE inputs SET history_json = 'not json' WHERE input_id = 'c6'")
    conn.commit()
    conn.close()
    with pytest.raises(suricate.StoreError):
        async with suricate.open_runtime(v1):
            pass
    assert _read(v1, "SELECT version FROM suricate_schema") == [(1,)]
    columns = {c for _, c, *_ in _read(v1, "PRAGMA table_info(inputs)")}
    assert "history_len" not in columns
    indexes = {name for (name,) in _read(v1, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_outbox_target_state_id", "idx_outbox_state_id"} <= indexes


async def test_show_reads_the_history_of_a_migrated_v1_store(v1) -> None:
    async with suricate.open_runtime(v1):
        pass
    (row,) = [r for r in EXPECTED["sessions"]["alpha"]["inputs"] if r["state"] == "abandoned"]
    script = shutil.which("suricate") or str(Path(sys.executable).with_name("suricate"))
    proc = await trio.run_process(
        [script, "show", str(v1), "alpha", row["input_id"], "--json"], capture_stdout=True
    )
    shown = json.loads(proc.stdout)
    assert [h["state"] for h in shown["history"]] == [h[0] for h in row["history"]]
    assert [h["run_id"] for h in shown["history"]] == [h[2] for h in row["history"]]
    assert shown["outcome"] == {"type": "Abandoned", "reason": "max_attempts", "error": row["error"]}


async def test_receipts_are_clustered_on_their_key_after_migration(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    shutil.copyfile(DATA / "store-v1.db", path)
    before = _read(path, "SELECT session_id, run_id, sequence, input_ids_json FROM receipts ORDER BY 1, 2, 3")
    with trio.fail_after(30):
        async with suricate.open_runtime(path):
            pass
    (sql,) = _read(path, "SELECT sql FROM sqlite_master WHERE name = 'receipts'")[0]
    assert "WITHOUT ROWID" in sql
    after = _read(path, "SELECT session_id, run_id, sequence, input_ids_json FROM receipts ORDER BY 1, 2, 3")
    assert after == before and before
