"""Run the benchmarks: ``python -m bench [--quick] [--json] [--only NAME ...] [--counts]``.

Every figure is a ratio of suricate against a baseline measured in the same
run on the same machine; each side is the median of ``--repeat`` runs after a
warm-up, reported with its min and max.  Figures without a baseline
(``idle_session_kib``, ``recovery_s_100k``) report the value itself as their
ratio.  ``turns_vs_langgraph`` needs the ``bench`` extra.

``--counts`` prints only the deterministic per-turn counts of
:mod:`bench.counts` (actor messages, trio task steps, thread crossings,
Python calls per thread, SQL statements, WAL bytes), in well under two
minutes; with ``--json`` as one JSON object.  A full run includes them under
the ``"counts"`` key, measured in a fresh interpreter so that neither the
probes nor the other figures disturb each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from . import baselines, counts, peers, scale, suricate_side


def _fresh(tmp: Path, name: str) -> Path:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{tmp / name}{suffix}").unlink(missing_ok=True)
    return tmp / name


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _measure(fn: Callable[[], float], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    return _summary([fn() for _ in range(repeat)])


def _measure_pair(
    ours: Callable[[], float], baseline: Callable[[], float], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Both sides, warmed up, then run alternately: a load that comes and
    goes on a shared machine hits both sides alike."""
    ours()
    baseline()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        a.append(ours())
        b.append(baseline())
    return _summary(a), _summary(b)


def _measure_many(sides: dict[str, Callable[[], float]], repeat: int) -> dict[str, dict[str, float]]:
    """Every side warmed up once, then ``repeat`` rounds of one run each;
    each round starts one side later than the last, so that no side always
    runs right after the same other side."""
    names = list(sides)
    for name in names:
        sides[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            values[name].append(sides[name]())
    return {name: _summary(v) for name, v in values.items()}


def _trio(fn: Callable[..., Awaitable[float]], *args: Any) -> Callable[[], float]:
    return lambda: trio.run(fn, *args)


def durable_submit_figures(tmp: Path, repeat: int, seconds: float, quick: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for submitters in (1, 64) if quick else (1, 64, 1024):
        def suricate_run(n: int = submitters) -> float:
            return trio.run(
                suricate_side.durable_submit_throughput, _fresh(tmp, "s.db"), n, seconds
            )

        def bare_run(n: int = submitters) -> float:
            return trio.run(baselines.group_writer_throughput, _fresh(tmp, "bare.db"), n, seconds)

        ours, bare = _measure_pair(suricate_run, bare_run, repeat)
        figures[f"durable_submit_ratio_{submitters}"] = {
            "ratio": ours["median"] / bare["median"],
            "suricate_per_s": ours,
            "baseline_per_s": bare,
        }
    return figures


def ack_latency_figure(tmp: Path, repeat: int, quick: bool) -> dict[str, Any]:
    n = 100 if quick else 300
    ours, bare = _measure_pair(
        lambda: trio.run(suricate_side.submit_latency, _fresh(tmp, "slat.db"), n),
        lambda: baselines.single_row_commit_latency(_fresh(tmp, "lat.db"), n),
        repeat,
    )
    return {
        "ack_latency_ratio_1": {
            "ratio": ours["median"] / bare["median"],
            "suricate_s": ours,
            "baseline_s": bare,
        }
    }


def memory_submit_figure(repeat: int, seconds: float) -> dict[str, Any]:
    ours, trips = _measure_pair(
        _trio(suricate_side.durable_submit_throughput, None, 1, seconds, 1),
        _trio(baselines.trio_round_trips, seconds),
        repeat,
    )
    return {
        "memory_submit_ratio": {
            "ratio": ours["median"] / trips["median"],
            "suricate_per_s": ours,
            "baseline_per_s": trips,
        }
    }


FIGURES = {
    "durable_submit": lambda a, tmp: durable_submit_figures(tmp, a.repeat, a.seconds, a.quick),
    "ack_latency": lambda a, tmp: ack_latency_figure(tmp, a.repeat, a.quick),
    "memory_submit": lambda a, tmp: memory_submit_figure(a.repeat, a.seconds),
    "turns_vs_langgraph": lambda a, tmp: peers.turns_vs_langgraph(
        tmp, a.repeat, a.seconds, _measure_pair, _fresh
    ),
    "turns_vs_pykka": lambda a, tmp: peers.turns_vs_pykka(
        tmp, a.repeat, a.seconds, _measure_many, _fresh
    ),
    "turns_vs_pykka_1": lambda a, tmp: peers.turns_vs_pykka_1(
        tmp, a.repeat, a.seconds, _measure_many, _fresh
    ),
    "idle_session_kib": lambda a, tmp: scale.idle_session_figure(a.repeat, a.quick, _measure),
    "recovery_s_100k": lambda a, tmp: scale.recovery_figure(tmp, a.repeat, a.quick, _measure, _fresh),
}

#: Figures that need something outside the core dependencies: a check that
#: returns why it cannot run, or None.  Checked before any figure runs.
REQUIRES: dict[str, Callable[[], str | None]] = {
    "turns_vs_langgraph": peers.require_langgraph,
}


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| figure | ratio | suricate (median, min-max) | baseline (median, min-max) |",
        "|---|---|---|---|",
    ]
    for name, fig in results.items():
        sides = [v for v in fig.values() if isinstance(v, dict) and "median" in v]
        cells = [f"{s['median']:.6g} ({s['min']:.6g}-{s['max']:.6g})" for s in sides]
        cells += ["(no baseline)"] * (2 - len(cells))
        lines.append(f"| {name} | {fig['ratio']:.3f} | {cells[0]} | {cells[1]} |")
    for name, fig in results.items():
        configurations = fig.get("pykka_configurations_turns_per_s")
        if configurations:
            lines += ["", f"{name}: every pykka configuration, turns/s (the fastest is the peer)", ""]
            lines += ["| pykka configuration | median (min-max) | suricate / it |", "|---|---|---|"]
            ours = fig["suricate_turns_per_s"]["median"]
            for config, s in configurations.items():
                mark = " **(peer)**" if config == fig["pykka_peer"] else ""
                lines.append(
                    f"| {config}{mark} | {s['median']:.6g} ({s['min']:.6g}-{s['max']:.6g}) | {ours / s['median']:.3f} |"
                )
    return "\n".join(lines)


def counts_in_child(quick: bool) -> dict[str, Any]:
    """``python -m bench.counts --json`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.counts", "--json", *(["--quick"] if quick else [])],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.counts failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run, well under 2 minutes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--only", nargs="*", choices=sorted([*FIGURES, "counts"]), help="run only these"
    )
    parser.add_argument(
        "--counts", action="store_true", help="only the deterministic per-turn counts (bench.counts)"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per side (default 5; quick 3)")
    parser.add_argument("--seconds", type=float, default=None, help="length of a throughput run")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.seconds = args.seconds or (0.5 if args.quick else 2.0)
    if args.counts:
        figures = counts.counts(args.quick, Path(os.environ["BENCH_TMP"]) if "BENCH_TMP" in os.environ else None)
        print(json.dumps(figures) if args.json else counts.table(figures))
        return 0
    want_counts = args.only is None or "counts" in args.only
    names = [n for n in (FIGURES if args.only is None else args.only) if n != "counts"]
    for name in names:
        problem = REQUIRES[name]() if name in REQUIRES else None
        if problem is not None:
            print(f"python -m bench: cannot run {name}: {problem}", file=sys.stderr)
            return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for name in names:
            results.update(FIGURES[name](args, Path(tmp)))
    per_turn = counts_in_child(args.quick) if want_counts else None
    if args.json:
        out: dict[str, Any] = {k: v["ratio"] for k, v in results.items()}
        if per_turn is not None:
            out["counts"] = per_turn
        print(json.dumps(out | {"details": results}))
    else:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        if results:
            print(_table(results))
        if per_turn is not None:
            print()
            print(counts.table(per_turn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
