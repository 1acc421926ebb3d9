"""The ``suricate`` console script, run for real in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
# ``python -m suricate`` with this checkout's sources first on the path: the
# command under test is the one of the code under test, not whatever
# ``suricate`` entry point happens to be installed.
SCRIPT = [sys.executable, "-m", "suricate"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}


def run(*args: str, timeout: float = 120, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
        env={**ENV, "COLUMNS": str(columns)},
    )


def test_the_command_under_test_is_this_checkout() -> None:
    proc = subprocess.run(
        [*SCRIPT[:1], "-c", "import suricate.cli; print(suricate.cli.__file__)"],
        capture_output=True, text=True, env=ENV,
    )
    assert Path(proc.stdout.strip()).resolve().is_relative_to(SRC)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("cli") / "demo.db"
    proc = run("demo", "--db", str(db), "--sessions", "3", "--inputs", "20", "--fast")
    assert proc.returncode == 0, proc.stderr
    assert "summary: 60 of 60 inputs completed" in proc.stdout
    return db


def _nothing_queued(db: Path) -> None:
    """Every input of every session finished and every peer message delivered."""
    sessions = json.loads(run("inspect", str(db), "--json").stdout)
    for s in sessions:
        assert s["queued"] == s["staged"] == s["applied"] == 0, s
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone() == (0,)
    finally:
        conn.close()


def test_a_finished_demo_leaves_nothing_queued(demo_db) -> None:
    _nothing_queued(demo_db)
    sessions = json.loads(run("inspect", str(demo_db), "--json").stdout)
    # 20 tasks each, and the 20 messages about its neighbour's tasks
    assert [s["consumed"] for s in sessions] == [40, 40, 40]


def test_the_demo_shows_restarts_and_messages_as_they_happen(tmp_path) -> None:
    proc = run("demo", "--db", str(tmp_path / "d.db"), "--sessions", "2", "--inputs", "25", "--fast")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    restarts = [n for n, line in enumerate(lines) if line.startswith("restart: agent-0 restarted")]
    assert len(restarts) == 3  # tasks 3, 13 and 23 crash the flaky agent once each
    assert restarts[0] < lines.index("phase: settling")
    assert "msgs received" in proc.stdout and "3 restarts" in proc.stdout
    assert "50 messages handled" in proc.stdout


def test_the_demo_lasts_long_enough_to_watch_by_default(tmp_path) -> None:
    assert "20; 0 with --fast" in " ".join(run("demo", "--help").stdout.split())
    started = time.monotonic()
    proc = run("demo", "--db", str(tmp_path / "paced.db"), "--sessions", "2", "--inputs", "10",
               "--seconds", "2", "--think", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 2 * 0.9  # the tasks arrive over the seconds asked for
    _nothing_queued(tmp_path / "paced.db")


def test_inspect_lists_every_session_as_json(demo_db) -> None:
    proc = run("inspect", str(demo_db), "--json")
    assert proc.returncode == 0, proc.stderr
    sessions = json.loads(proc.stdout)
    assert [s["session"] for s in sessions] == ["agent-0", "agent-1", "agent-2"]
    assert all(s["stored_state"] == "idle" and s["consumed"] >= 20 for s in sessions)
    assert all(s["last_turn"] is not None for s in sessions)
    table = run("inspect", str(demo_db))
    assert table.returncode == 0 and "agent-2" in table.stdout


def test_inputs_show_and_receipts_agree(demo_db) -> None:
    listed = json.loads(run("inputs", str(demo_db), "agent-1", "--state", "consumed", "--json").stdout)
    assert len(listed) >= 20 and all(i["state"] == "consumed" for i in listed)
    first = listed[0]
    shown = run("show", str(demo_db), "agent-1", first["input_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert [h["state"] for h in detail["history"]][0] == "queued"
    assert detail["history"][-1]["state"] == "consumed"
    assert detail["outcome"]["type"] == "Completed"
    receipts = json.loads(run("receipts", str(demo_db), "agent-1", "--json").stdout)
    assert any(first["input_id"] in r["inputs"] for r in receipts)
    assert "history:" in run("show", str(demo_db), "agent-1", first["input_id"]).stdout


def test_recover_prints_its_report(demo_db, tmp_path) -> None:
    db = tmp_path / "copy.db"
    shutil.copy(demo_db, db)
    proc = run("recover", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert [r["session"] for r in reports] == ["agent-0", "agent-1", "agent-2"]
    assert all(r["abandoned"] == 0 for r in reports)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "{missing}"), "no such file"),
        (("inspect", "{text}"), "not a SQLite database"),
        (("inspect", "{other}"), "not a suricate database"),
        (("inputs", "{db}", "nobody"), "unknown session 'nobody'"),
        (("show", "{db}", "agent-0", "no-such-input"), "has no input 'no-such-input'"),
        (("receipts", "{db}", "nobody"), "unknown session"),
        (("recover", "{db}", "nobody"), "unknown session"),
    ],
)
def test_bad_arguments_get_a_clear_message_and_a_nonzero_exit(demo_db, tmp_path, args, message) -> None:
    text = tmp_path / "notes.db"
    text.write_text("just some text\n" * 50)
    other = tmp_path / "other.db"
    import sqlite3

    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    paths = {"missing": str(tmp_path / "missing.db"), "text": str(text), "other": str(other), "db": str(demo_db)}
    proc = run(*(a.format(**paths) for a in args))
    assert proc.returncode != 0
    assert message in proc.stderr


def test_read_only_commands_work_while_a_daemon_owns_the_file(tmp_path) -> None:
    db = tmp_path / "live.db"
    daemon = subprocess.Popen(
        [*SCRIPT, "demo", "--db", str(db), "--sessions", "2", "--inputs", "400", "--think", "0.01", "--seconds", "0"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            if line.startswith("phase: submitting"):
                break
        proc = run("inspect", str(db), "--json")
        assert proc.returncode == 0, proc.stderr
        assert {s["session"] for s in json.loads(proc.stdout)} == {"agent-0", "agent-1"}
        table = run("inspect", str(db))
        assert "owned by a running runtime (pid" in table.stdout and "as stored" in table.stdout
        locked = run("recover", str(db))
        assert locked.returncode != 0 and "owned by another runtime" in locked.stderr
    finally:
        daemon.send_signal(signal.SIGINT)
        daemon.wait(timeout=60)
        daemon.stdout.close()


def test_an_interrupted_demo_resumes_on_rerun_and_completes_everything(tmp_path) -> None:
    db = tmp_path / "resume.db"
    args = ["demo", "--db", str(db), "--sessions", "4", "--inputs", "150", "--think", "0.01", "--seconds", "0"]
    first = subprocess.Popen([*SCRIPT, *args], stdout=subprocess.PIPE, text=True, env=ENV)
    assert first.stdout is not None
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("phase: completing"):
            break
    time.sleep(0.3)  # let it work a little past the phase change: an arbitrary midway point
    first.send_signal(signal.SIGINT)
    rest = first.stdout.read()
    first.stdout.close()
    assert first.wait(timeout=60) == 130
    assert "interrupted" in rest
    second = run(*args)
    assert second.returncode == 0, second.stderr
    assert "recovered" in second.stdout
    assert "summary: 600 of 600 inputs completed" in second.stdout
    _nothing_queued(db)


STALLING_WORKLOAD = """
import sys, trio, suricate

async def agent(turn):
    print("running", turn.inputs[0].input_id, flush=True)
    await trio.sleep_forever()

async def main():
    async with suricate.open_runtime(sys.argv[1]) as rt:
        s = await rt.open_session("worker-with-a-long-session-name")
        await s.attach(agent)
        await s.submit({"text": "stall"})
        await trio.sleep_forever()

trio.run(main)
"""


def test_recover_after_a_kill_reports_the_recovery_that_ran_at_open(tmp_path) -> None:
    db = tmp_path / "killed.db"
    workload = subprocess.Popen(
        [sys.executable, "-c", STALLING_WORKLOAD, str(db)], stdout=subprocess.PIPE, text=True, env=ENV,
    )
    assert workload.stdout is not None
    line = workload.stdout.readline()
    assert line.startswith("running "), line
    input_id = line.split()[1]
    workload.kill()  # mid-turn: the input is STAGED in the file
    workload.wait(timeout=30)
    workload.stdout.close()
    staged = json.loads(run("inputs", str(db), "worker-with-a-long-session-name", "--json").stdout)
    assert [(i["input_id"], i["state"]) for i in staged] == [(input_id, "staged")]

    for suffix in ("", "-wal", "-shm"):  # the same file, to run the table form on it too
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", tmp_path / f"copy.db{suffix}")

    proc = run("recover", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["session"] == "worker-with-a-long-session-name"
    assert report["requeued"] == 1 and report["abandoned"] == 0
    assert any(input_id in d and "requeued" in d for d in report["details"])
    # a second recovery finds nothing to do, and says so
    (second,) = json.loads(run("recover", str(db), "--json").stdout)
    assert second["requeued"] == 0 and second["details"] == []

    table = run("recover", str(tmp_path / "copy.db"), columns=80)
    assert table.returncode == 0, table.stderr
    assert input_id in table.stdout and "requeued" in table.stdout
    assert "worker-with-a-long-session-name" in table.stdout


LONG = "planner-for-the-quarterly-report-of-the-northern-region"


@pytest.fixture(scope="module")
def rich_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store whose inputs use every field: two sessions with long ids."""
    import trio

    import suricate

    db = tmp_path_factory.mktemp("fields") / "fields.db"

    async def agent(turn: suricate.Turn) -> suricate.TurnResult:
        if turn.inputs[0].payload.get("fail"):
            raise ValueError("the model said no")
        return suricate.TurnResult(result={"answer": 42})

    async def build() -> list[str]:
        async with suricate.open_runtime(str(db), max_attempts=2) as rt:
            ids = []
            for sid in (LONG, LONG + "-2"):
                s = await rt.open_session(sid)
                await s.attach(agent, retry=None)
                ack = await s.submit(
                    {"fail": True}, kind="task", idempotency_key="key-1", supersession_key="topic",
                    correlation_id="corr-7", metadata={"from": "tests"},
                )
                ok = await s.submit({"fail": False}, kind="task")
                await s.wait(ack.input_id, timeout=30)
                await s.wait(ok.input_id, timeout=30)
                ids += [ack.input_id, ok.input_id]
            return ids

    return db, trio.run(build)


def test_ids_are_never_cut_at_80_columns(rich_db) -> None:
    db, input_ids = rich_db
    inspected = run("inspect", str(db), columns=80)
    assert inspected.returncode == 0, inspected.stderr
    assert LONG in inspected.stdout and LONG + "-2" in inspected.stdout
    assert "…" not in inspected.stdout
    for sid, ids in ((LONG, input_ids[:2]), (LONG + "-2", input_ids[2:])):
        listed = run("inputs", str(db), sid, columns=80)
        assert listed.returncode == 0, listed.stderr
        assert all(i in listed.stdout for i in ids), listed.stdout
        assert "…" not in listed.stdout
    demo_like = run("receipts", str(db), LONG, columns=80)
    assert input_ids[1] in demo_like.stdout and "…" not in demo_like.stdout


def test_show_prints_every_field_of_the_input(rich_db) -> None:
    db, input_ids = rich_db
    shown = json.loads(run("show", str(db), LONG, input_ids[0], "--json").stdout)
    assert shown["correlation_id"] == "corr-7"
    assert shown["supersession_key"] == "topic"
    assert shown["idempotency_key"] == "key-1"
    assert shown["durability"] == "durable"
    assert shown["metadata"] == {"from": "tests"}
    assert shown["attempt"] == 2 and shown["run_id"]
    assert shown["state"] == "abandoned" and shown["reason"] == "max_attempts"
    assert "the model said no" in shown["error"]
    done = json.loads(run("show", str(db), LONG, input_ids[1], "--json").stdout)
    assert done["result"] == {"answer": 42}
    text = run("show", str(db), LONG, input_ids[0], columns=80).stdout
    for needle in ("correlation_id: \"corr-7\"", "supersession_key: \"topic\"", "durability: \"durable\"",
                   "metadata: {\"from\": \"tests\"}", "attempt: 2", "error: ", "the model said no"):
        assert needle in text, (needle, text)


def test_show_prints_why_each_failed_attempt_left_its_run(rich_db) -> None:
    db, input_ids = rich_db
    shown = json.loads(run("show", str(db), LONG, input_ids[0], "--json").stdout)
    left = [entry for entry in shown["history"] if entry.get("error")]
    # Two failed runs: the first requeued it, the second abandoned it.
    assert [entry["state"] for entry in left] == ["queued", "abandoned"], shown["history"]
    assert all("the model said no" in entry["error"] for entry in left)
    text = run("show", str(db), LONG, input_ids[0], columns=80).stdout
    assert text.count("the model said no") >= 3, text  # the input's error and both entries
