"""``suricate retry DB SESSION INPUT_ID``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

import suricate

SRC = str(Path(suricate.__file__).resolve().parents[1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-c", "from suricate.cli import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


async def _prepare(path: Path) -> tuple[str, str]:
    async def failing(turn: suricate.Turn) -> None:
        raise suricate.TerminalError("bad request")

    async with suricate.open_runtime(path) as rt:
        s = await rt.open_session("alice")
        await s.attach(failing)
        with trio.fail_after(10):
            gone = await s.ask({"n": 1}, idempotency_key="k")
        await s.detach()
        queued = await s.submit({"n": 2})
    return gone.input_id, queued.input_id


async def test_retry_requeues_an_abandoned_input(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    gone, _ = await _prepare(db)
    proc = await trio.to_thread.run_sync(lambda: _cli("retry", str(db), "alice", gone))
    assert proc.returncode == 0, proc.stderr
    assert gone in proc.stdout
    with trio.fail_after(20):
        async with suricate.open_runtime(db) as rt:
            s = await rt.open_session("alice")
            record = await s.input(gone)
            assert record is not None and record.state is suricate.InputState.QUEUED
            assert record.attempt == 0 and record.idempotency_key == "k"
            await s.attach(suricate.testing.ScriptedExecutor())
            assert isinstance(await s.wait(gone), suricate.Completed)


async def test_retry_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    _, queued = await _prepare(db)
    for args in (
        ("retry", str(db), "alice", queued),  # not abandoned
        ("retry", str(db), "alice", "nope"),  # unknown input
        ("retry", str(db), "bob", queued),  # unknown session
        ("retry", str(tmp_path / "missing.db"), "alice", queued),
    ):
        proc = await trio.to_thread.run_sync(lambda args=args: _cli(*args))
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
