"""The crash harness in CI: SIGKILL a durable workload at 20 random moments.

The workload's turns also send peer messages, so kills land between a turn's
commit and the delivery of its messages too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "crash"))

import harness  # noqa: E402

POINTS = harness.kill_points(20, seed=20261122)


@pytest.mark.parametrize(("seed", "delay"), POINTS, ids=[f"kill{n}" for n in range(len(POINTS))])
async def test_every_acknowledged_input_survives_a_sigkill_and_commits_once(
    tmp_path: Path, seed: int, delay: float
) -> None:
    db, acks, _ = harness.run_until_killed(tmp_path, seed, delay)
    counts = await harness.recover_and_check(db, acks)
    assert counts["acked"] > 0
    assert counts["acked"] == sum(v for k, v in counts.items() if k not in ("acked", "messages"))
