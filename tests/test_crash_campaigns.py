"""The SIGKILL campaigns in CI, on a small seeded budget.

- Start-up recovery (``tests/crash/startup.py``): two stores, each built by
  killing a stalling, checkpointing workload four times; then an opener that
  recovers every session is killed at three seeded points of its progress,
  each killed opening checked against the recovery rules, and a final
  reopen checks reports, memory against store, and exactly-once outcomes.
- Racing control operations (``tests/crash/control.py``): six kill points of
  a workload whose control tasks attach, detach, retire, reset, stop,
  destroy, recycle, recover and open sessions while turns run.

Soaks: ``python tests/crash/startup.py --kills 200 --seed N`` and
``python tests/crash/control.py --kills 200 --seed N``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent / "crash"))

import control  # noqa: E402
import startup  # noqa: E402

STORES = [(20261123, 3), (20261124, 3)]
CONTROL_POINTS = control.kill_points(6, seed=20261125)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("seed", "kills"), STORES, ids=[f"store{n}" for n in range(len(STORES))])
def test_killed_start_up_recovery_loses_nothing_and_recovers_by_the_rules(
    tmp_path: Path, seed: int, kills: int
) -> None:
    counts = startup.run_store(tmp_path, seed, kills)
    assert counts["acked"] > 0
    # The built store had work for recovery, and the openings were killed.
    assert counts["staged_at_start"] + counts["applied_at_start"] > 0
    assert counts["openings_completed"] < kills
    outcomes = sum(v for k, v in counts.items() if k.startswith(("Completed", "Abandoned")))
    assert outcomes == counts["acked"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("seed", "delay"), CONTROL_POINTS, ids=[f"kill{n}" for n in range(len(CONTROL_POINTS))]
)
def test_a_sigkill_amid_racing_control_operations_loses_nothing(
    tmp_path: Path, seed: int, delay: float
) -> None:
    db, log = control.run_until_killed(tmp_path, seed, delay)
    report = trio.run(control.recover_and_check, db, log)
    assert report["acked"] > 0
    assert sum(report["outcomes"].values()) == report["acked"]
    assert report["ops"], "no control operation ended before the kill"
