"""``suricate demo``: a supervised multi-agent daemon on an embedded SQLite file.

Each agent answers the tasks it is given and tells its neighbour about each
one (a peer message, committed with the turn and delivered exactly once);
the neighbour handles the message in a turn of its own.  The first agent is
flaky: its loop crashes on every tenth task, and its supervisor restarts it.
Tasks arrive over ``seconds`` seconds, so that the screen can be watched;
the run ends once every task is answered, every message delivered and
handled, and nothing is left queued.
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import trio

import suricate

FLAKY = "agent-0"
RECENT = 6


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Board:
    """What the screen shows; updated as things happen, rendered on each refresh."""

    def __init__(self, db: str, ids: list[str], n_inputs: int) -> None:
        self.db = db
        self.ids = ids
        self.n_inputs = n_inputs
        self.started = time.monotonic()
        self.phase = "starting"
        self.submitted = dict.fromkeys(ids, 0)
        self.completed = dict.fromkeys(ids, 0)
        self.turns = dict.fromkeys(ids, 0)
        self.sent = dict.fromkeys(ids, 0)
        self.received = dict.fromkeys(ids, 0)
        self.restarts = dict.fromkeys(ids, 0)
        self.last = dict.fromkeys(ids, "")
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT)
        self.messages: collections.deque[str] = collections.deque(maxlen=4)

    def note(self, line: str) -> None:
        """A line for the screen's log of crashes, restarts and phases."""
        self.recent.append(f"{time.monotonic() - self.started:6.1f}s  {line}")

    def message(self, line: str) -> None:
        """A line for the screen's latest messages."""
        self.messages.append(f"{time.monotonic() - self.started:6.1f}s  {line}")

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"suricate demo on {self.db}", title_justify="left")
        for column in ("agent", "tasks done", "turns", "msgs sent", "msgs received", "restarts", "last turn"):
            t.add_column(column, overflow="fold")
        for sid in self.ids:
            t.add_row(
                sid + (" (flaky)" if sid == FLAKY else ""),
                f"{self.completed[sid]}/{self.n_inputs}",
                str(self.turns[sid]),
                str(self.sent[sid]),
                str(self.received[sid]),
                str(self.restarts[sid]),
                self.last[sid],
            )
        return t

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        head = Text(f"{self.phase} ({elapsed:.0f} s; Ctrl-C stops cleanly, a rerun finishes)")
        return Group(
            head,
            self.table(),
            Text("latest messages", style="bold"),
            Text("\n".join(self.messages) or "  none yet"),
            Text("supervision and progress", style="bold"),
            Text("\n".join(self.recent) or "  nothing yet"),
        )


def _agent(session_id: str, neighbour: str, think: float, board: _Board) -> Any:
    async def run(turn: suricate.Turn) -> suricate.TurnResult:
        if think:
            await trio.sleep(think)
        count = (turn.snapshot or {}).get("turns", 0) + 1
        first = turn.inputs[0]
        if (
            session_id == FLAKY
            and first.kind == "prompt"
            and first.payload.get("n", 0) % 10 == 3
            and turn.attempt == 1
        ):
            # The flaky agent's loop crashes on every tenth task; its
            # supervisor restarts it and the input is retried.
            raise suricate.Fatal(f"{session_id} lost its model connection")
        messages = []
        results: dict[str, Any] = {}
        for inp in turn.inputs:
            assert inp.input_id is not None
            results[inp.input_id] = f"{session_id} handled {inp.kind} #{count}"
            if inp.kind == "prompt":
                messages.append(
                    suricate.PeerMessage(neighbour, {"from": session_id, "task": inp.payload.get("n")})
                )
                board.last[session_id] = f"task {inp.payload.get('n')}, told {neighbour}"
                board.message(f"{session_id} answered task {inp.payload.get('n')} and messages {neighbour}")
            else:
                board.received[session_id] += 1
                board.last[session_id] = f"message from {inp.payload.get('from')}"
        board.sent[session_id] += len(messages)
        return suricate.TurnResult(snapshot={"turns": count}, results=results, messages=messages)

    return run


def run_demo(*, db: str, sessions: int, inputs: int, think: float, seconds: float) -> int:
    """Run the demo; returns the process exit code (130 when interrupted)."""
    live = sys.stdout.isatty()
    try:
        return trio.run(_main, db, sessions, inputs, think, seconds, live)
    except BaseException as exc:
        if not _only_interrupts(exc):
            raise
        print("interrupted: the runtime stopped cleanly; run again on the same file to continue")
        return 130


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def _unsettled(db: str) -> tuple[int, int]:
    """Inputs not yet finished and peer messages not yet delivered, as stored."""
    path = Path(db).resolve()
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        (active,) = conn.execute(
            "SELECT count(*) FROM inputs WHERE state IN ('queued', 'staged', 'applied')"
        ).fetchone()
        (pending,) = conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()
    finally:
        conn.close()
    return int(active), int(pending)


async def _main(
    db: str, n_sessions: int, n_inputs: int, think: float, seconds: float, live: bool
) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    ids = [f"agent-{i}" for i in range(n_sessions)]
    board = _Board(db, ids, n_inputs)

    def say(line: str) -> None:
        board.note(line)
        if not live:
            console.print(line, soft_wrap=True)

    async def watch(rt: suricate.Runtime, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        kinds = {"run.committed", "supervisor.crashed", "supervisor.restarted", "supervisor.gave_up"}
        async with rt.events(kinds=kinds) as events:
            task_status.started()
            async for event in events:
                sid = event.session_id or ""
                if event.kind == "run.committed" and sid in board.turns:
                    board.turns[sid] += 1
                elif event.kind == "supervisor.crashed":
                    board.note(f"{sid} crashed: {event.data.get('error', '')}")
                elif event.kind == "supervisor.restarted" and sid in board.restarts:
                    board.restarts[sid] += 1
                    say(f"restart: {sid} restarted by its supervisor ({board.restarts[sid]} so far)")
                elif event.kind == "supervisor.gave_up":
                    say(f"{sid}: its supervisor gave up: {event.data.get('reason', '')}")

    async with suricate.open_runtime(db, seed=1) as rt, trio.open_nursery() as background:
        await background.start(watch, rt)
        handles = [await rt.open_session(sid) for sid in ids]
        unfinished = sum(s.recovered.inputs_recovered for s in handles if s.recovered)
        console.print(
            f"[bold]suricate demo[/] on {db}: {n_sessions} agents, {n_inputs} tasks each"
            + (f"; recovered {_plural(unfinished, 'unfinished input')} from the last run" if unfinished else "")
        )
        policy = suricate.RestartPolicy(max_restarts=1000, within=1.0)
        for i, s in enumerate(handles):
            await s.attach(_agent(s.id, ids[(i + 1) % n_sessions], think, board), restart=policy)

        acks: dict[str, list[str]] = {sid: [] for sid in ids}
        pace = seconds / n_inputs if n_inputs else 0.0

        async def submit_all(s: suricate.Session) -> None:
            for n in range(n_inputs):
                ack = await s.submit(
                    {"text": f"task {n}", "n": n}, kind="prompt", idempotency_key=f"demo:{s.id}:{n}"
                )
                acks[s.id].append(ack.input_id)
                board.submitted[s.id] += 1
                if pace and isinstance(ack, suricate.Accepted):
                    await trio.sleep(pace)

        async def wait_all(s: suricate.Session) -> None:
            while len(acks[s.id]) < n_inputs or board.completed[s.id] < len(acks[s.id]):
                if board.completed[s.id] == len(acks[s.id]):
                    await trio.sleep(0.01)
                    continue
                outcome = await s.wait(acks[s.id][board.completed[s.id]])
                if not isinstance(outcome, suricate.Completed):
                    say(f"{s.id}: an input ended {type(outcome).__name__}")
                board.completed[s.id] += 1

        screen = Live(board, console=console, refresh_per_second=8) if live else _null()
        with screen:
            board.phase = "tasks arriving"
            say("phase: submitting")
            async with trio.open_nursery() as nursery:
                for s in handles:
                    nursery.start_soon(wait_all, s)
                async with trio.open_nursery() as submitters:
                    for s in handles:
                        submitters.start_soon(submit_all, s)
                board.phase = "every task submitted; answering"
                say("phase: completing")
            board.phase = "every task answered; delivering the last messages"
            say("phase: settling")
            # Done means settled: every peer message delivered and handled,
            # nothing queued, no turn in flight (as the store has it).
            while True:
                active, pending = await trio.to_thread.run_sync(_unsettled, db)
                if not active and not pending:
                    break
                await trio.sleep(0.05)
            board.phase = "done"
        background.cancel_scope.cancel()

    elapsed = time.monotonic() - board.started
    done = sum(board.completed.values())
    total = n_sessions * n_inputs
    turns = sum(board.turns.values())
    if not live:
        console.print(board.table())
    console.print(
        f"summary: {done} of {total} inputs completed, {_plural(sum(board.restarts.values()), 'restart')}, "
        f"{_plural(turns, 'turn')} and {_plural(sum(board.received.values()), 'message')} handled "
        f"in {elapsed:.1f} s; nothing left queued"
    )
    return 0 if done == total else 1


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
