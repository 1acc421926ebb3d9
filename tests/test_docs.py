"""The documentation is self-contained and its examples run as written.

Every fenced ``python`` block of README.md and docs/*.md is executed, in a
fresh directory, by a fresh interpreter on this checkout's sources.  A block
right after ``<!-- run: pytest -->`` is a test module, run by pytest with
trio mode on (as docs/testing.md tells readers to configure it).  A block
right after ``<!-- no-run ... -->`` is a fragment and is only compiled.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!--\s*(?P<mark>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            mark = (match.group("mark") or "").split(":")[0].strip()
            found.append((f"{page.relative_to(ROOT)}:{line}", mark, match.group("code")))
    return found


BLOCKS = _blocks()


def test_the_docs_do_not_refer_to_a_design_document_or_private_modules() -> None:
    problems = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{page.relative_to(ROOT)}:{number}"
            if "DESIGN" in line or re.search(r"\bsection \d", line, re.I):
                problems.append(f"{where}: refers to a design document: {line.strip()}")
            if re.search(r"\]\([^)]*src/suricate/(?:[\w/]*/)?_\w", line):
                problems.append(f"{where}: links to a private module: {line.strip()}")
            if re.search(r"\bsuricate(?:\.\w+)*\._[a-z]\w*", line):
                problems.append(f"{where}: names a private module: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_the_readme_quickstart_is_among_the_executed_examples() -> None:
    readme = [mark for where, mark, _ in BLOCKS if where.startswith("README.md")]
    assert readme and "no-run" not in readme
    assert len([b for b in BLOCKS if b[1] == "no-run"]) <= 3  # fragments stay rare


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.parametrize(("where", "mark", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_each_example_runs_as_written(where: str, mark: str, code: str, tmp_path: Path) -> None:
    if mark == "no-run":
        compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    if mark == "run":
        (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
        (tmp_path / "test_example.py").write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"]
    else:
        (tmp_path / "example.py").write_text(code)
        command = [sys.executable, "example.py"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, f"{where}\n{proc.stdout}\n{proc.stderr}"


def test_logging_is_documented_as_it_behaves(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import trio

    import suricate

    page = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    fields = ("suricate_event", "session_id", "input_id", "run_id")
    for needle in ('logging.getLogger("suricate")', "NullHandler", "logging.basicConfig(level=logging.INFO)", *fields):
        assert needle in page, needle
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("suricate").handlers)

    async def failing(turn: suricate.Turn) -> suricate.TurnResult:
        raise ValueError("bad request")

    async def main() -> None:
        async with suricate.open_runtime(max_attempts=1) as rt:
            s = await rt.open_session("alice")
            await s.attach(failing, retry=None)
            await s.ask({"x": 1}, timeout=10)

    with caplog.at_level(logging.WARNING, logger="suricate"):
        trio.run(main)
    failed = [r for r in caplog.records if getattr(r, "suricate_event", None) == "run.failed"]
    assert failed and failed[0].levelno == logging.WARNING and failed[0].name == "suricate.session"
    assert all(hasattr(failed[0], f) for f in fields) and failed[0].session_id == "alice"
    assert "bad request" in failed[0].getMessage()


def test_the_correlation_id_of_a_peer_response_is_documented_where_it_is() -> None:
    page = (ROOT / "docs" / "comms.md").read_text(encoding="utf-8")
    assert "`Input.correlation_id`" in page
