"""A peer request that recovery settles still answers its requester (DESIGN 9).

The responder is SIGKILLed mid-turn (``tests/crash/responder.py``) with the
request durably ``STAGED`` at its last attempt, or ``APPLIED`` at a committed
boundary; a fresh runtime then opens it.  Recovery abandons the first with
``MAX_ATTEMPTS`` and consumes the second: either way the requester must get
its ``peer_response``, never silence.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

import suricate
from suricate import AbandonReason, InputState

RESPONDER = Path(__file__).parent / "crash" / "responder.py"
CORRELATION = "q-1"



def _kill_responder_mid_turn(db: Path, mode: str) -> str:
    """Run the responder workload until bob's turn is stuck, SIGKILL it, and
    return the id of bob's request input."""
    proc = subprocess.Popen(
        [sys.executable, str(RESPONDER), str(db), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["stuck"]:
            raise RuntimeError(f"the responder workload did not get stuck: {line!r}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return line[1]


async def _response_after_reopening(db: Path, mode: str) -> tuple[suricate.InputRecord, Any]:
    """Kill the responder, reopen the file with the requester attached, open
    the responder (recovery runs), and return its request's record and the
    requester's ``peer_response`` input."""
    request_id = _kill_responder_mid_turn(db, mode)
    responses: list[suricate.Input] = []
    got = trio.Event()

    async def alice(turn: suricate.Turn) -> None:
        for inp in turn.inputs:
            if inp.kind == "peer_response":
                responses.append(inp)
                got.set()

    async with suricate.open_runtime(db, max_attempts=3) as rt:
        stored = await rt.store.load_input("bob", request_id)
        assert stored is not None and stored.metadata["reply"] is True
        if mode == "last_attempt":
            assert (stored.state, stored.attempt) == (InputState.STAGED, 3)
        else:
            assert stored.state is InputState.APPLIED
        a = await rt.open_session("alice")
        await a.attach(alice)
        bob = await rt.open_session("bob")  # recovery settles the request here
        record = await bob.input(request_id)
        assert record is not None
        with trio.fail_after(5):
            await got.wait()
    (response,) = responses
    return record, response


async def test_a_request_abandoned_by_recovery_at_its_last_attempt_answers_the_requester(
    tmp_path: Path,
) -> None:
    record, response = await _response_after_reopening(tmp_path / "agent.db", "last_attempt")
    assert (record.state, record.reason) == (InputState.ABANDONED, AbandonReason.MAX_ATTEMPTS)
    assert response.correlation_id == CORRELATION
    assert response.metadata["from"] == "bob"
    assert response.payload == {
        "outcome": "abandoned",
        "request_input_id": record.input_id,
        "reason": AbandonReason.MAX_ATTEMPTS.value,
        "error": record.error,
    }
    assert "process exited during run" in (record.error or "")


async def test_a_request_consumed_by_recovery_from_its_boundary_answers_the_requester(
    tmp_path: Path,
) -> None:
    record, response = await _response_after_reopening(tmp_path / "agent.db", "applied")
    assert record.state is InputState.CONSUMED
    assert response.correlation_id == CORRELATION
    assert response.metadata["from"] == "bob"
    assert response.payload == {
        "outcome": "completed",
        "request_input_id": record.input_id,
        "result": {"partial": True},
    }
