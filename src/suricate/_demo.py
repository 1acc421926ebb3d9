"""``suricate demo``: a supervised multi-agent daemon on an embedded SQLite file."""

from __future__ import annotations

import sys
import time
from typing import Any

import trio

import suricate

from ._errors import StoreError

FLAKY = "agent-0"


def _agent(session_id: str, neighbour: str, think: float) -> Any:
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
                messages.append(suricate.PeerMessage(neighbour, {"from": session_id, "turn": count}))
        return suricate.TurnResult(snapshot={"turns": count}, results=results, messages=messages)

    return run


def run_demo(*, db: str, sessions: int, inputs: int, think: float) -> int:
    """Run the demo; returns the process exit code (130 when interrupted)."""
    live = sys.stdout.isatty()
    try:
        return trio.run(_main, db, sessions, inputs, think, live)
    except BaseException as exc:
        if not _only_interrupts(exc):
            raise
        print("interrupted: the runtime stopped cleanly; run again on the same file to continue")
        return 130


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


async def _main(db: str, n_sessions: int, n_inputs: int, think: float, live: bool) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    ids = [f"agent-{i}" for i in range(n_sessions)]
    started = time.monotonic()
    restarts = 0
    turns = 0

    async def count_turns(rt: suricate.Runtime, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal turns
        async with rt.events(kinds={"run.committed", "lagged"}) as events:
            task_status.started()
            async for event in events:
                turns += event.data.get("dropped", 1) if event.kind == "lagged" else 1
    try:
        runtime = suricate.open_runtime(db, seed=1)
        async with runtime as rt, trio.open_nursery() as background:
            await background.start(count_turns, rt)
            handles = [await rt.open_session(sid) for sid in ids]
            recovered = 0
            for s in handles:
                stats = await s.stats()
                recovered += stats.inputs["queued"]
            console.print(
                f"[bold]suricate demo[/] on {db}: {n_sessions} agents, {n_inputs} inputs each"
                + (f"; recovered {recovered} unfinished inputs from the last run" if recovered else "")
            )
            policy = suricate.RestartPolicy(max_restarts=1000, within=1.0)
            for i, s in enumerate(handles):
                await s.attach(_agent(s.id, ids[(i + 1) % n_sessions], think), restart=policy)

            progress = Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=not live,
            )
            total = n_sessions * n_inputs
            submit_task = progress.add_task("submitting", total=total)
            done_task = progress.add_task("completing", total=total)
            completed: dict[str, int] = {sid: 0 for sid in ids}

            def table() -> Table:
                t = Table(title="sessions")
                for column in ("session", "completed", "of"):
                    t.add_column(column)
                for sid in ids:
                    t.add_row(sid, str(completed[sid]), str(n_inputs))
                return t

            acks: dict[str, list[str]] = {sid: [] for sid in ids}

            async def submit_all(s: suricate.Session) -> None:
                for n in range(n_inputs):
                    ack = await s.submit(
                        {"text": f"task {n}", "n": n}, idempotency_key=f"demo:{s.id}:{n}"
                    )
                    acks[s.id].append(ack.input_id)
                    progress.advance(submit_task)

            async def wait_all(s: suricate.Session) -> None:
                for input_id in acks[s.id]:
                    outcome = await s.wait(input_id)
                    if isinstance(outcome, suricate.Completed):
                        completed[s.id] += 1
                    progress.advance(done_task)

            with Live(table(), console=console, refresh_per_second=4, transient=True) if live else _null():
                console.print("phase: submitting") if not live else None
                progress.start()
                async with trio.open_nursery() as nursery:
                    for s in handles:
                        nursery.start_soon(submit_all, s)
                if not live:
                    console.print("phase: completing")
                async with trio.open_nursery() as nursery:
                    for s in handles:
                        nursery.start_soon(wait_all, s)
                progress.stop()
            for s in handles:
                restarts += (await s.stats()).restarts
            elapsed = time.monotonic() - started
            done = sum(completed.values())
            console.print(table())
            console.print(
                f"summary: {done} of {total} inputs completed, {restarts} restarts, "
                f"{turns} turns, {turns / elapsed:.0f} turns/s over {elapsed:.1f} s"
            )
            background.cancel_scope.cancel()
            return 0 if done == total else 1
    except StoreError:
        raise


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
