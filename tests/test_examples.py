"""The README's main job: the quickstart runs and accounts for every input."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_runs_and_accounts_for_every_input() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "all inputs accounted for" in proc.stdout
    assert "bob:   flaky but done (attempt 2)" in proc.stdout
    assert "interrupted long task is QUEUED" in proc.stdout
