"""Corrupted records fail closed: one bad column, one typed error, one session.

Each test takes a store written by suricate, changes one column of one row
with plain ``sqlite3`` (as a damaged page or a stray write would), reopens it
with ``open_runtime`` and checks that the call that meets the bad value
raises :class:`suricate.RecoveryCorruption` naming the session, the input
and the column, while the other session of the file keeps working.  These
tests use real threads (the SQLite store), so real time.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio

import suricate
from suricate import Completed, InputState, PeerMessage, TurnResult
from suricate.store._schema import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"


async def _build(path: Path) -> dict[str, Any]:
    """Two sessions, each with a consumed input (result, receipt, snapshot)
    and a queued one; ``bad`` also sent a message that became a dead letter."""
    ids: dict[str, Any] = {}
    async with suricate.open_runtime(path) as rt:
        for sid in ("bad", "good"):
            s = await rt.open_session(sid)

            def turn(t: suricate.Turn, sid: str = sid) -> TurnResult:
                messages = [PeerMessage("ghost", {"lost": True})] if sid == "bad" else []
                return TurnResult(result={"answer": 42}, snapshot={"turns": 1}, messages=messages)

            await s.attach(turn)
            done = await s.submit({"n": 1}, metadata={"tag": "done"})
            assert await s.wait(done.input_id, timeout=10) == Completed(
                input_id=done.input_id, result={"answer": 42}
            )
            await s.detach()
            queued = await s.submit({"n": 2}, metadata={"tag": "queued"})
            record = await s.input(done.input_id)
            assert record is not None and record.run_id is not None
            ids[sid] = {
                "done": done.input_id,
                "queued": queued.input_id,
                "run_id": record.run_id,
                "boundary": record.boundary,
            }
    return ids


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("corruption") / "template.db"
    ids = trio.run(_build, path)
    return path, ids


@pytest.fixture
def store(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    source, ids = template
    path = tmp_path / "agent.db"
    shutil.copyfile(source, path)
    return path, ids["bad"]


def _corrupt(path: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(sql, args).rowcount == 1, sql
        conn.commit()
    finally:
        conn.close()


class Blob(bytes):
    """A value stored as a blob (``bytes`` are stored as text that is not UTF-8)."""


def _value(value: Any) -> str:
    """The SQL for a corrupt value: text that is not UTF-8, a blob, or a parameter."""
    if isinstance(value, Blob):
        return "?"
    return "CAST(? AS TEXT)" if isinstance(value, bytes) else "?"


def _set_input(path: Path, input_id: str, column: str, value: Any) -> None:
    _corrupt(path, f"UPDATE inputs SET {column} = {_value(value)} WHERE input_id = ?", value, input_id)


def _names(exc: BaseException, column: str, input_id: str | None) -> None:
    message = str(exc)
    assert "'bad'" in message, message
    assert f"column {column}" in message, message
    if input_id is not None:
        assert input_id in message, message


async def _others_keep_working(rt: suricate.Runtime) -> None:
    """The healthy session of the file opens and runs its work."""
    good = await rt.open_session("good")
    assert await good.snapshot() == {"turns": 1}
    await good.attach(lambda t: TurnResult(result="ok"))
    ack = await good.submit({"n": 3})
    assert await good.wait(ack.input_id, timeout=10) == Completed(input_id=ack.input_id, result="ok")
    assert good in rt.sessions()


# -- found by recovery: open_session raises ---------------------------------------------

#: (column, value) of the queued input of ``bad``: each is refused by open_session.
QUEUED_INPUT = [
    ("state", "bogus"),
    ("state", 7),
    ("handling", "sideways"),
    ("handling", None),
    ("durability", "maybe"),
    ("durability", None),
    ("reason", "whim"),
    ("history_json", "not json"),
    ("history_json", '{"queued": 1}'),
    ("history_json", '[["queued", "noon", null]]'),
    ("history_json", '[["waiting", 1.0, null]]'),
    ("history_json", None),
    ("metadata_json", "{not json"),
    ("metadata_json", "[1, 2]"),
    ("result_json", "not json"),
    ("attempt", "two"),
    ("lane_order", "first"),
    ("boundary", "one"),
    ("version", "one"),
    ("run_id", Blob(b"r1")),
    ("submitted_at", "noon"),
    ("payload_json", "garbage"),
    ("payload_json", '{"n":3}'),
    ("payload_json", None),
    ("payload_json", b"\xff\xfe"),
    ("payload_crc", 12345),
    ("payload_crc", None),
]


@pytest.mark.parametrize(("column", "value"), QUEUED_INPUT, ids=[f"{c}={v!r}" for c, v in QUEUED_INPUT])
async def test_a_corrupt_column_of_a_queued_input_fails_open_session(store, column, value) -> None:
    path, ids = store
    _set_input(path, ids["queued"], column, value)
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await rt.open_session("bad")
            # A checksum that does not match names the payload it checks.
            expected = "payload_json" if column == "payload_crc" and value is not None else column
            _names(caught.value, expected, ids["queued"])
            assert isinstance(caught.value, suricate.StoreError)
            # Refused again, not half-open.
            with pytest.raises(suricate.RecoveryCorruption):
                await rt.open_session("bad")
            assert rt.sessions() == []
            await _others_keep_working(rt)


@pytest.mark.parametrize("state", ["bogus", "Consumed", 3, b"\xc3"])
async def test_an_input_with_an_unknown_state_is_not_dropped(store, state) -> None:
    """A row whose state is no state must not be left out of recovery."""
    path, ids = store
    _set_input(path, ids["done"], "state", state)
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await rt.open_session("bad")
            _names(caught.value, "state", ids["done"])
            await _others_keep_working(rt)


SESSION_ROW = [
    ("state", "napping"),
    ("state", "running"),  # never persisted
    ("snapshot_json", "{broken"),
    ("next_seq", "many"),
    ("next_order", 1.5),
    ("snapshot_revision", "two"),
    ("version", "one"),
    ("stop_reason", b"\xff"),
]


@pytest.mark.parametrize(("column", "value"), SESSION_ROW, ids=[f"{c}={v!r}" for c, v in SESSION_ROW])
async def test_a_corrupt_column_of_the_session_row_fails_open_session(store, column, value) -> None:
    path, _ = store
    _corrupt(path, f"UPDATE sessions SET {column} = {_value(value)} WHERE session_id = 'bad'", value)
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await rt.open_session("bad")
            _names(caught.value, column, None)
            await _others_keep_working(rt)


async def test_a_text_seq_of_a_terminal_input_fails_open_session(store) -> None:
    path, ids = store
    _set_input(path, ids["done"], "seq", "x")
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await rt.open_session("bad")
            _names(caught.value, "seq", ids["done"])
            await _others_keep_working(rt)


async def test_a_text_attempt_is_refused_at_open_instead_of_crash_looping(store) -> None:
    path, ids = store
    _set_input(path, ids["queued"], "attempt", "two")
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption, match="column attempt"):
                await rt.open_session("bad")
            await _others_keep_working(rt)
    # Nothing was written: the healthy rows of the bad session are as they were.
    conn = sqlite3.connect(path)
    try:
        ((state,),) = conn.execute("SELECT state FROM inputs WHERE input_id = ?", (ids["queued"],))
    finally:
        conn.close()
    assert state == "queued"


# -- found by the read that meets it -----------------------------------------------------

#: (column, value) of the consumed input of ``bad``: recovery never reads it,
#: ``input`` and ``wait`` do.
DONE_INPUT = [
    ("result_json", "{not json"),
    ("reason", "whim"),
    ("attempt", "two"),
    ("handling", None),
    ("metadata_json", '"a string"'),
    ("history_json", '[["consumed", 1.0]]'),
    ("payload_json", '{"n":2}'),
    ("version", 2),
]


@pytest.mark.parametrize(("column", "value"), DONE_INPUT, ids=[f"{c}={v!r}" for c, v in DONE_INPUT])
async def test_a_corrupt_terminal_input_fails_the_read_that_meets_it(store, column, value) -> None:
    path, ids = store
    _set_input(path, ids["done"], column, value)
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("bad")
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await s.wait(ids["done"], timeout=5)
            _names(caught.value, column, ids["done"])
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await s.input(ids["done"])
            _names(caught.value, column, ids["done"])
            # The session itself keeps serving.
            queued = await s.input(ids["queued"])
            assert queued is not None and queued.state is InputState.QUEUED
            await s.attach(lambda t: TurnResult(result="later"))
            assert await s.wait(ids["queued"], timeout=10) == Completed(
                input_id=ids["queued"], result="later"
            )
            await _others_keep_working(rt)


@pytest.mark.parametrize(
    ("column", "value"),
    [("input_ids_json", "nope"), ("input_ids_json", '{"a": 1}'), ("at", "noon"), ("version", "x")],
)
async def test_a_corrupt_receipt_fails_the_receipt_read(store, column, value) -> None:
    path, ids = store
    _corrupt(
        path,
        f"UPDATE receipts SET {column} = ? WHERE session_id = 'bad' AND run_id = ? AND sequence = ?",
        value,
        ids["run_id"],
        ids["boundary"],
    )
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("bad")
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await s.receipt(ids["run_id"], ids["boundary"])
            _names(caught.value, column, None)
            assert ids["run_id"] in str(caught.value)
            assert await s.snapshot() == {"turns": 1}
            await _others_keep_working(rt)


@pytest.mark.parametrize(
    ("column", "value"), [("at", "noon"), ("reason", b"\xff"), ("version", "x"), ("kind", Blob(b"k"))]
)
async def test_a_corrupt_dead_letter_fails_dead_letters(store, column, value) -> None:
    path, _ = store
    _corrupt(path, f"UPDATE outbox SET {column} = {_value(value)} WHERE state = 'dead'", value)
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await rt.dead_letters()
            _names(caught.value, column, None)
            await rt.open_session("bad")
            await _others_keep_working(rt)


# -- one session never stops another -----------------------------------------------------


async def test_a_session_that_fails_to_open_leaves_the_open_ones_serving(store) -> None:
    path, ids = store
    _set_input(path, ids["queued"], "state", "bogus")
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            good = await rt.open_session("good")
            await good.attach(lambda t: TurnResult(result="ok"))
            for _ in range(3):
                with pytest.raises(suricate.RecoveryCorruption):
                    await rt.open_session("bad")
            assert rt.sessions() == [good]
            ack = await good.submit({"n": 4})
            assert await good.wait(ack.input_id, timeout=10) == Completed(
                input_id=ack.input_id, result="ok"
            )
            assert [d.target for d in await rt.dead_letters()] == ["ghost"]


async def test_recover_of_an_open_session_meets_corruption_and_the_session_keeps_serving(store) -> None:
    path, ids = store
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("bad")
            # Behind the open session's back.
            _set_input(path, ids["queued"], "state", "bogus")
            with pytest.raises(suricate.RecoveryCorruption) as caught:
                await s.recover()
            _names(caught.value, "state", ids["queued"])
            record = await s.input(ids["done"])
            assert record is not None and record.state is InputState.CONSUMED
            await _others_keep_working(rt)


async def test_removing_a_corrupt_sessions_rows_lets_its_id_open_afresh(store) -> None:
    """The operator's last resort, as docs/durability.md gives it."""
    path, ids = store
    _set_input(path, ids["queued"], "handling", "sideways")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        BEGIN;
        DELETE FROM inputs   WHERE session_id = 'bad';
        DELETE FROM receipts WHERE session_id = 'bad';
        DELETE FROM outbox   WHERE target = 'bad' AND state = 'pending';
        DELETE FROM sessions WHERE session_id = 'bad';
        COMMIT;
        """
    )
    conn.close()
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            s = await rt.open_session("bad")
            assert await s.input(ids["queued"]) is None
            assert await s.snapshot() is None
            await _others_keep_working(rt)


# -- the payload checksum ----------------------------------------------------------------


def _read(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_every_input_is_written_with_the_checksum_of_its_payload(store) -> None:
    path, _ = store
    stored = _read(path, "SELECT payload_json, payload_crc FROM inputs")
    assert len(stored) == 4
    for payload, crc in stored:
        assert crc == zlib.crc32(payload.encode("utf-8"))


async def test_a_v1_store_is_migrated_with_checksums_that_then_catch_corruption(tmp_path) -> None:
    path = tmp_path / "agent.db"
    shutil.copyfile(DATA / "store-v1.db", path)
    with trio.fail_after(30):
        async with suricate.open_runtime(path):
            pass
    assert _read(path, "SELECT version FROM suricate_schema") == [(SCHEMA_VERSION,)] == [(4,)]
    stored = _read(path, "SELECT session_id, input_id, state, payload_json, payload_crc FROM inputs")
    assert stored
    for *_, payload, crc in stored:
        assert crc == zlib.crc32((payload or "").encode("utf-8"))
    sid, input_id, *_ = next(r for r in stored if r[2] == "queued")
    _set_input(path, input_id, "payload_json", '{"tampered": true}')
    with trio.fail_after(30):
        async with suricate.open_runtime(path) as rt:
            with pytest.raises(suricate.RecoveryCorruption, match="checksum") as caught:
                await rt.open_session(sid)
            assert input_id in str(caught.value) and "column payload_json" in str(caught.value)


# -- the operator's view -----------------------------------------------------------------


def test_show_prints_a_corrupt_input_as_stored_and_says_what_is_wrong(store) -> None:
    path, ids = store
    _set_input(path, ids["queued"], "attempt", "two")
    script = Path(sys.executable).with_name("suricate")
    proc = subprocess.run(
        [str(script), "show", str(path), "bad", ids["queued"]],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "attempt: 'two'" in proc.stdout
    assert f"input_id: {ids['queued']!r}" in proc.stdout
    assert "column attempt" in proc.stderr
    proc = subprocess.run(
        [str(script), "show", str(path), "bad", ids["queued"], "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    shown = json.loads(proc.stdout)
    assert shown["row"]["attempt"] == "two" and "column attempt" in shown["corrupt"]
