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


def _emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console().print(table)


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
    """Sessions of DB: state, inputs by state, last activity."""
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
            rows.append(
                {
                    "session": sid,
                    "state": state,
                    **{s.value: counts.get(s.value, 0) for s in InputState},
                    "last_activity": _when(max(filter(None, (updated, last)), default=None)),
                }
            )
    _emit(rows, ["session", "state", *(s.value for s in InputState), "last_activity"], as_json, db)


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
    _emit(rows, ["input_id", "seq", "kind", "state", "attempt", "reason", "submitted"], as_json, session)


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
    data = {
        "input_id": record.input_id,
        "session": record.session_id,
        "kind": record.kind,
        "handling": record.handling.value,
        "state": record.state.value,
        "attempt": record.attempt,
        "idempotency_key": record.idempotency_key,
        "payload": record.payload,
        "metadata": record.metadata,
        "history": [
            {"state": h.state.value, "at": _when(h.at), "run_id": h.run_id} for h in record.history
        ],
        "outcome": None
        if outcome is None
        else {"type": type(outcome).__name__, **_outcome_fields(outcome)},
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key, value in data.items():
        if key == "history":
            click.echo("history:")
            for h in value:
                click.echo(f"  {h['at']}  {h['state']:<10} {h['run_id'] or ''}")
        else:
            click.echo(f"{key}: {json.dumps(value, ensure_ascii=False)}")


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
    _emit(rows, ["run_id", "sequence", "inputs", "at"], as_json, f"receipts of {session}")


@main.command()
@click.argument("db")
@click.argument("session", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def recover(db: str, session: str | None, as_json: bool) -> None:
    """Run recovery on DB (one SESSION, or all) and print the reports."""
    with _open_ro(db) as database:
        if session is not None:
            _require_session(database, session)

    async def run() -> list[dict[str, Any]]:
        from .runtime import open_runtime

        out = []
        async with open_runtime(db) as rt:
            ids = [session] if session else await rt.store.list_sessions()
            for sid in ids:
                s = await rt.open_session(sid)
                report = await s.recover()
                out.append(
                    {
                        "session": sid,
                        "recovered": report.inputs_recovered,
                        "requeued": report.inputs_requeued,
                        "abandoned": report.inputs_abandoned,
                        "details": list(report.details),
                    }
                )
        return out

    try:
        rows = trio.run(run)
    except SuricateError as exc:
        raise CliError(str(exc)) from None
    _emit(rows, ["session", "recovered", "requeued", "abandoned"], as_json, f"recovery of {db}")


@main.command()
@click.option("--db", default="suricate-demo.db", show_default=True, help="the SQLite file")
@click.option("--sessions", default=6, show_default=True, type=click.IntRange(2, 1000))
@click.option("--inputs", default=200, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--think", default=0.002, show_default=True, type=click.FloatRange(0, 10), help="seconds per turn")
def demo(db: str, sessions: int, inputs: int, think: float) -> None:
    """Run a supervised multi-agent daemon on DB, with live progress.

    Agents answer their inputs and message their neighbour; one flaky agent
    crashes now and then and is restarted by its supervisor.  Ctrl-C stops it
    cleanly; run it again on the same file to recover and finish.
    """
    from ._demo import run_demo

    try:
        code = run_demo(db=db, sessions=sessions, inputs=inputs, think=think)
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
