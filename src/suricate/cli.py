"""The ``suricate`` command: a demo daemon, and inspection of a store file.

The inspection commands (``inspect``, ``inputs``, ``show``, ``receipts``)
open the database read-only, so they work while a daemon owns the file.
``recover`` opens it for writing (it commits the recovery), so it refuses a
file that a running daemon owns.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import sqlite_utils
import trio

from ._errors import RecoveryCorruption, StoreError, SuricateError
from ._model import InputRecord, InputState
from .store._schema import (
    INPUT_COLUMNS,
    INPUT_V2_COLUMNS,
    RECEIPT_COLUMNS,
    SCHEMA_VERSION,
    input_from_row,
    receipt_from_row,
)

__all__ = ["main"]


class CliError(click.ClickException):
    """A clear message and a non-zero exit code."""

    exit_code = 2


# -- read-only access -------------------------------------------------------------------


@contextmanager
def _open_ro(db: str) -> Iterator[sqlite_utils.Database]:
    path = Path(db)
    if not path.exists():
        raise CliError(f"{db}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        database = sqlite_utils.Database(conn)
        tables = database.table_names()
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{db}: not a SQLite database ({exc})") from None
    try:
        if "suricate_schema" not in tables:
            raise CliError(f"{db}: not a suricate database")
        (version,) = conn.execute("SELECT version FROM suricate_schema").fetchone()
        if version > SCHEMA_VERSION:
            raise CliError(f"{db}: written by a newer suricate (schema {version})")
        yield database
    finally:
        conn.close()


def _require_session(db: sqlite_utils.Database, session_id: str) -> None:
    row = db.execute("SELECT 1 FROM sessions WHERE session_id = ?", [session_id]).fetchone()
    if row is None:
        raise CliError(f"unknown session {session_id!r}")


def _input_columns(db: sqlite_utils.Database) -> str:
    """What to read of an input: a file of an older schema has no checksum."""
    names = {c.name for c in db.table("inputs").columns}
    return INPUT_COLUMNS if "payload_crc" in names else INPUT_V2_COLUMNS


def _corrupt(exc: RecoveryCorruption) -> CliError:
    return CliError(f"{exc} (see docs/durability.md, Corruption)")


def _emit(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    as_json: bool,
    title: str,
    *,
    ids: Sequence[str] = (),
) -> None:
    """Print ``rows`` as JSON, or as a table that never cuts a value.

    An id column (``ids``) is as wide as its longest id, so that each id can
    be copied from the table in one piece; the other columns share the rest
    of the terminal's width and fold a long value over several lines
    (nothing is ever replaced by an ellipsis).  When the ids do not fit
    side by side at this width, each row is printed as a block of
    ``column: value`` lines instead.  A list is printed one item a line.
    """
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    natural = [
        max([len(column), *(len(line) for r in cells for line in r[i].splitlines())])
        for i, column in enumerate(columns)
    ]
    available = console.width - (3 * len(columns) + 1)  # borders and padding
    widths = _fit(natural, [None if c in ids else len(c) for c in columns], available) or _fit(
        natural, [None if c in ids else min(len(c), 4) for c in columns], available
    )
    click.echo(title)
    if widths is None:
        for r in cells:
            for column, value in zip(columns, r):
                lines = value.splitlines() or [""]
                click.echo(f"  {column}: {lines[0]}")
                for line in lines[1:]:
                    click.echo(f"  {' ' * len(column)}  {line}")
            click.echo("")
        return
    table = Table()
    for column, width in zip(columns, widths):
        table.add_column(column, overflow="fold", no_wrap=False, width=width)
    for r in cells:
        table.add_row(*r)
    console.print(table)


def _fit(natural: list[int], floors: list[int | None], available: int) -> list[int] | None:
    """Column widths within ``available``: a column whose floor is None is
    kept whole (an id), the others are narrowed, widest first, down to their
    floor; None if that is not enough."""
    widths = list(natural)
    excess = sum(widths) - available
    while excess > 0:
        narrowable = [
            i for i, (w, floor) in enumerate(zip(widths, floors)) if floor is not None and w > floor
        ]
        if not narrowable:
            return None
        widest = max(narrowable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_cell(v) for v in value)
    return str(value)


def _when(at: float | None) -> str | None:
    return None if not at else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@click.group()
@click.version_option(package_name="suricate")
def main() -> None:
    """suricate: an actor runtime for long-running agent daemons."""


@main.command()
@click.argument("db")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def inspect(db: str, as_json: bool) -> None:
    """Sessions of DB: stored state, inputs by state, last turn, last activity.

    The states are what the file holds.  A running daemon does not store
    ``attached`` or ``running`` (they are stored as ``idle``); when a
    runtime owns the file, the listing says so.  ``last_turn`` is the time
    of the session's latest committed turn (its latest receipt),
    ``last_activity`` the latest change of any kind (a submit, a commit).
    """
    owner = _owner(db)
    with _open_ro(db) as database:
        rows = []
        for sid, state, updated in database.execute(
            "SELECT session_id, state, updated_at FROM sessions ORDER BY rowid"
        ).fetchall():
            counts = dict(
                database.execute(
                    "SELECT state, count(*) FROM inputs WHERE session_id = ? GROUP BY state", [sid]
                ).fetchall()
            )
            (last,) = database.execute(
                "SELECT max(submitted_at) FROM inputs WHERE session_id = ?", [sid]
            ).fetchone()
            (turn,) = database.execute(
                "SELECT max(at) FROM receipts WHERE session_id = ?", [sid]
            ).fetchone()
            rows.append(
                {
                    "session": sid,
                    "stored_state": state,
                    **{s.value: counts.get(s.value, 0) for s in InputState},
                    "last_turn": _when(turn),
                    "last_activity": _when(max(filter(None, (updated, last, turn)), default=None)),
                }
            )
    columns = ["session", "stored_state", *(s.value for s in InputState), "last_turn", "last_activity"]
    if as_json:
        _emit(rows, columns, True, db)
        return
    _emit(rows, columns, False, db, ids=["session"])
    if owner is not None:
        click.echo(
            f"owned by a running runtime ({owner}): the states are as stored; a session "
            "with an attached executor, or running a turn, is stored as idle"
        )


def _owner(db: str) -> str | None:
    """Who owns the store at ``db``, if a runtime holds its lock (read-only check)."""
    import os

    from .store import _files

    try:
        path = Path(os.path.realpath(db))
        inode = path.stat().st_ino
        locks = sorted(path.parent.glob(f".suricate-{inode}.*.lock"))
    except OSError:
        return None
    for lock in locks:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            import fcntl

            if _files._lock_in_the_way(fd) == fcntl.F_WRLCK:
                return _files._holder(fd)
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


@main.command()
@click.argument("db")
@click.argument("session")
@click.option("--state", type=click.Choice([s.value for s in InputState]), help="only this state")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def inputs(db: str, session: str, state: str | None, as_json: bool) -> None:
    """Inputs of SESSION in admission order."""
    with _open_ro(db) as database:
        _require_session(database, session)
        sql = f"SELECT {_input_columns(database)} FROM inputs WHERE session_id = ?"
        args: list[Any] = [session]
        if state:
            sql += " AND state = ?"
            args.append(state)
        try:
            records = [input_from_row(r) for r in database.execute(sql + " ORDER BY seq", args)]
        except RecoveryCorruption as exc:
            raise _corrupt(exc) from None
    rows = [
        {
            "input_id": r.input_id,
            "seq": r.seq,
            "kind": r.kind,
            "state": r.state.value,
            "attempt": r.attempt,
            "reason": r.reason.value if r.reason else None,
            "submitted": _when(r.submitted_at),
        }
        for r in records
    ]
    _emit(rows, ["input_id", "seq", "kind", "state", "attempt", "reason", "submitted"], as_json, session, ids=["input_id"])


@main.command()
@click.argument("db")
@click.argument("session")
@click.argument("input_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def show(db: str, session: str, input_id: str, as_json: bool) -> None:
    """One input: its payload, full history and outcome.

    An input whose row is corrupt is shown as stored, column by column, with
    what is wrong with it (and the command exits with status 2)."""
    with _open_ro(db) as database:
        _require_session(database, session)
        columns = _input_columns(database)
        row = database.execute(
            f"SELECT {columns} FROM inputs WHERE session_id = ? AND input_id = ?",
            [session, input_id],
        ).fetchone()
        if row is None:
            raise CliError(f"session {session!r} has no input {input_id!r}")
        try:
            record: InputRecord = input_from_row(row)
        except RecoveryCorruption as exc:
            names = [c.strip() for c in columns.split(",")]
            stored = dict(zip(names, row))
            if as_json:
                click.echo(json.dumps({"corrupt": str(exc), "row": stored}, indent=2, default=repr))
            else:
                for name, value in stored.items():
                    click.echo(f"{name}: {value!r}")
            raise _corrupt(exc) from None
    outcome = record.outcome()
    data: dict[str, Any] = {
        "input_id": record.input_id,
        "session": record.session_id,
        "seq": record.seq,
        "kind": record.kind,
        "handling": record.handling.value,
        "durability": record.durability.value,
        "state": record.state.value,
        "reason": record.reason.value if record.reason else None,
        "attempt": record.attempt,
        "run_id": record.run_id,
        "boundary": record.boundary,
        "idempotency_key": record.idempotency_key,
        "supersession_key": record.supersession_key,
        "correlation_id": record.correlation_id,
        "superseded_by": record.superseded_by,
        "submitted": _when(record.submitted_at),
    }
    not_before = getattr(record, "not_before", None)
    if not_before is not None:
        data["not_before"] = _when(not_before)
    data.update(
        {
            "payload": record.payload,
            "metadata": record.metadata,
            "error": record.error,
            "result": record.result,
            "history": [_change(h) for h in record.history],
            "outcome": None
            if outcome is None
            else {"type": type(outcome).__name__, **_outcome_fields(outcome)},
        }
    )
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key, value in data.items():
        if key == "history":
            click.echo("history:")
            for h in value:
                line = f"  {h['at']}  {h['state']:<10} {h['run_id'] or ''}"
                click.echo(line.rstrip() + (f"  error: {h['error']}" if h.get("error") else ""))
        else:
            click.echo(f"{key}: {json.dumps(value, ensure_ascii=False)}")


def _change(change: Any) -> dict[str, Any]:
    entry = {"state": change.state.value, "at": _when(change.at), "run_id": change.run_id}
    error = getattr(change, "error", None)
    if error is not None:
        entry["error"] = error
    return entry


def _outcome_fields(outcome: Any) -> dict[str, Any]:
    fields = {k: v for k, v in vars(outcome).items()} if hasattr(outcome, "__dict__") else {}
    if not fields:
        import attrs

        fields = attrs.asdict(outcome)
    return {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items() if k != "input_id"}


@main.command()
@click.argument("db")
@click.argument("session")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def receipts(db: str, session: str, as_json: bool) -> None:
    """Boundary receipts of SESSION: which run committed which inputs."""
    with _open_ro(db) as database:
        _require_session(database, session)
        try:
            found = [
                receipt_from_row(r)
                for r in database.execute(
                    f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE session_id = ? ORDER BY at, run_id, sequence",
                    [session],
                ).fetchall()
            ]
        except RecoveryCorruption as exc:
            raise _corrupt(exc) from None
        rows = [
            {
                "run_id": r.run_id,
                "sequence": r.sequence,
                "inputs": list(r.input_ids),
                "at": _when(r.at),
            }
            for r in found
        ]
    _emit(rows, ["run_id", "sequence", "inputs", "at"], as_json, f"receipts of {session}", ids=["run_id", "inputs"])


@main.command()
@click.argument("db")
@click.argument("session", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def recover(db: str, session: str | None, as_json: bool) -> None:
    """Run recovery on DB (one SESSION, or all) and print what it did.

    Each session's report is the one of the recovery that opening it ran:
    how many inputs it found active, requeued (a run the last process did
    not finish) and abandoned (attempts spent), and a line per input it
    moved.  A file whose last owner stopped cleanly has nothing to recover.
    """
    with _open_ro(db) as database:
        if session is not None:
            _require_session(database, session)

    async def run() -> list[dict[str, Any]]:
        from .runtime import open_runtime

        out = []
        async with open_runtime(db) as rt:
            ids = [session] if session else await rt.store.list_sessions()
            for sid in ids:
                # Opening a stored session runs its recovery: report that one
                # (a second recover() would find nothing left to do).
                s = await rt.open_session(sid)
                report = s.recovered
                out.append(
                    {
                        "session": sid,
                        "recovered": report.inputs_recovered if report else 0,
                        "requeued": report.inputs_requeued if report else 0,
                        "abandoned": report.inputs_abandoned if report else 0,
                        "details": list(report.details) if report else [],
                    }
                )
        return out

    try:
        rows = trio.run(run)
    except SuricateError as exc:
        raise CliError(str(exc)) from None
    _emit(
        rows, ["session", "recovered", "requeued", "abandoned"], as_json, f"recovery of {db}", ids=["session"]
    )
    if not as_json:
        details = [f"{row['session']}: {line}" for row in rows for line in row["details"]]
        click.echo("\n".join(details) if details else "recovery moved no input")


@main.command()
@click.option("--db", default="suricate-demo.db", show_default=True, help="the SQLite file")
@click.option("--sessions", default=4, show_default=True, type=click.IntRange(2, 1000), help="agents")
@click.option("--inputs", default=30, show_default=True, type=click.IntRange(1, 1_000_000), help="tasks per agent")
@click.option(
    "--seconds",
    default=None,
    type=click.FloatRange(0, 3600),
    help="spread the tasks over this many seconds  [default: 20; 0 with --fast]",
)
@click.option(
    "--think",
    default=None,
    type=click.FloatRange(0, 10),
    help="seconds per turn  [default: 0.2; 0 with --fast]",
)
@click.option("--fast", is_flag=True, help="no pacing and no thinking: a run of a second or two")
def demo(db: str, sessions: int, inputs: int, seconds: float | None, think: float | None, fast: bool) -> None:
    """Run a supervised multi-agent daemon on DB, with a live screen.

    Agents answer their tasks and message their neighbour about each one;
    one flaky agent crashes now and then and is restarted by its supervisor.
    The screen shows each agent's turns, messages and restarts as they
    happen.  The run ends once everything is answered and delivered, with
    nothing left queued (exit status 0).  Ctrl-C stops it cleanly (exit
    status 130); run it again on the same file to recover and finish.
    """
    from ._demo import run_demo

    if seconds is None:
        seconds = 0.0 if fast else 20.0
    if think is None:
        think = 0.0 if fast else 0.2
    try:
        code = run_demo(db=db, sessions=sessions, inputs=inputs, think=think, seconds=seconds)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    sys.exit(code)



@main.command("retry")
@click.argument("db")
@click.argument("session")
@click.argument("input_id")
def retry_command(db: str, session: str, input_id: str) -> None:
    """Re-drive the abandoned input INPUT_ID of SESSION: it is queued again
    with its id and idempotency key, attempts reset (needs ownership of DB,
    like recover; an executor attached later runs it)."""
    with _open_ro(db) as database:
        _require_session(database, session)

    async def run() -> str:
        from .runtime import open_runtime

        async with open_runtime(db) as rt:
            s = await rt.open_session(session)
            ack = await s.retry(input_id)
            return ack.input_id

    try:
        queued = trio.run(run)
    except SuricateError as exc:
        raise CliError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    click.echo(f"{queued} queued again in session {session}")
