"""The ``contactcentre simulate`` command:

    contactcentre simulate SCENARIO.toml [--seed N] [--calls N] [--set KEY=VALUE ...] [--json] [--report F]
                                         [--replications N [--jobs J]] [--sweep LO:HI]


Human output is a short table; ``--json`` prints one object (see ``SimResult.to_json``); ``--report`` writes
an HTML page with the day charts (and, with ``--sweep``, a staffing sweep beside the Erlang curve).
``--replications N`` runs seeds SEED … SEED+N−1 (in ``--jobs`` worker processes) and reports each KPI's
mean and 95 % confidence interval (``Replications.to_json`` with ``--json``); the sweep's points are then
means over N runs each, drawn with their intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from contactcentre.simulation.engine import SimResult, simulate
from contactcentre.simulation.replications import KPIS, Replications, run_many, seeds_for
from contactcentre.simulation.scenario import load_scenario


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a scenario through the production router under a virtual clock",
        description="Discrete-event simulation of a scenario (TOML) on the real router. "
        "Exit codes: 0 done, 2 bad scenario or arguments.",
    )
    p.add_argument(
        "scenario",
        type=Path,
        metavar="SCENARIO.toml",
        help="a scenario file, or the name of a shipped one: e8_mmc, day_200_agents",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--calls", type=int, default=None, help="arrivals to simulate (default: the scenario's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what-if: change a scenario value, e.g. --set agent_groups.0.count=52 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", type=Path, default=None, metavar="FILE.html", help="write an HTML report")
    p.add_argument(
        "--sweep",
        default=None,
        metavar="LO:HI",
        help="with --report: also simulate agent_groups.0.count from LO to HI for the staffing chart",
    )
    p.add_argument(
        "--replications",
        type=int,
        default=1,
        metavar="N",
        help="run N independent seeds (SEED, SEED+1, ...) and report each KPI's mean and 95%% confidence "
        "interval; with --sweep, N runs per point",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="J",
        help="worker processes for the replications and the sweep (0: one per CPU; default 1)",
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.calls is not None and args.calls < 1:
        print("--calls must be at least 1", file=err)
        return 2
    if args.sweep and args.report is None:
        print("--sweep draws a chart in the report: give --report FILE.html too", file=err)
        return 2
    if args.replications < 1:
        print("--replications must be at least 1", file=err)
        return 2
    if args.jobs < 0:
        print("--jobs must be 0 (one per CPU) or more", file=err)
        return 2
    jobs = args.jobs or os.cpu_count() or 1
    try:
        loaded = load_scenario(args.scenario, args.overrides)
        sweep = _parse_sweep(args.sweep) if args.sweep else None
        what_ifs = (
            [(n, load_scenario(args.scenario, [*args.overrides, f"agent_groups.0.count={n}"])) for n in sweep]
            if sweep is not None
            else []
        )
    except ValueError as exc:  # a ConfigError (file: key: problem) or a bad --sweep
        print(exc, file=err)
        return 2
    n_runs = args.replications
    seeds = seeds_for(loaded, n_runs, args.seed)
    # Every run, the sweep's included, goes to one pool. The first is the one whose day the report draws.
    work = [(loaded, s, args.calls, args.report is not None and i == 0) for i, s in enumerate(seeds)]
    work += [(what_if, s, args.calls, False) for _, what_if in what_ifs for s in seeds]
    show = err.isatty() and not args.json
    progress = _Progress(err) if show else None
    if len(work) == 1:
        results = [_run_here(work[0], progress)]
    else:
        results = run_many(work, jobs=jobs, done=(lambda k: progress(k / len(work))) if progress else None)
    if progress is not None:
        progress.done()
    result = results[0]
    summary = Replications(seeds, [r.to_json() for r in results[:n_runs]]) if n_runs > 1 else None
    if args.report is not None:
        from contactcentre.simulation.report import write_report

        points = []
        for k, (n, _) in enumerate(what_ifs):
            runs = results[n_runs * (k + 1) : n_runs * (k + 2)]
            if n_runs == 1:
                points.append((n, runs[0].to_json()))
            else:
                rep = Replications(seeds, [r.to_json() for r in runs])
                points.append((n, {**rep.means(), "half_width": {q: iv.half_width for q, iv in rep.total.items()}}))
        write_report(args.report, loaded, result, points)
    if args.json:
        data = summary.to_json() if summary is not None else result.to_json()
        print(json.dumps(data, indent=2), file=out)
    else:
        if summary is not None:
            _summary_table(summary, jobs, out)
        else:
            _table(result, out)
        if args.report is not None:
            print(f"report written to {args.report}", file=out)
    return 0


def _run_here(job: tuple[Any, int, int | None, bool], progress: _Progress | None) -> SimResult:
    """A lone run, in this process (with the progress bar worker processes cannot draw)."""
    loaded, seed, calls, timeline = job
    return simulate(loaded, seed=seed, calls=calls, timeline=timeline, progress=progress)


def _parse_sweep(text: str) -> range:
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 0 < int(lo) <= int(hi):
        raise ValueError(f"--sweep {text!r}: give LO:HI agent counts, e.g. 45:55")
    return range(int(lo), int(hi) + 1)


class _Progress:
    """A one-line progress bar on a terminal (stderr)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, fraction: float) -> None:
        width = 40
        filled = round(width * min(1.0, fraction))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%}")
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "%":
        return f"{value * 100:.2f} %"
    if kind == "s":
        return f"{value:.2f} s"
    return f"{value:,}"


_ROWS = (
    ("offered", "n"),
    ("answered", "n"),
    ("abandoned", "n"),
    ("p_wait", "%"),
    ("p_abandon", "%"),
    ("service_level_offered", "%"),
    ("service_level_answered", "%"),
    ("asa_s", "s"),
    ("mean_wait_s", "s"),
    ("wait_p90_s", "s"),
    ("wait_p99_s", "s"),
    ("occupancy", "%"),
)
assert {k for k, _ in _ROWS} == set(KPIS)


def _summary_table(rep: Replications, jobs: int, out: TextIO) -> None:
    """Mean and confidence interval of each KPI over the replications (the total; --json has the queues)."""
    pct = round(rep.confidence * 100)
    print(f"{'':24}{'mean':>14}{f'± {pct} % CI':>14}{'low':>14}{'high':>14}", file=out)
    for key, kind in _ROWS:
        iv = rep.total[key]
        if kind == "n":  # counts: one decimal for the mean, the interval in counts
            cells = [f"{iv.mean:,.1f}" if iv.mean is not None else "–"]
            cells += [f"{x:,.1f}" if x is not None else "–" for x in (iv.half_width, iv.low, iv.high)]
        else:
            cells = [_fmt(x, kind) for x in (iv.mean, iv.half_width, iv.low, iv.high)]
        print(f"{key:24}" + "".join(f"{c:>14}" for c in cells), file=out)
    d = rep.to_json()
    first, last = rep.seeds[0], rep.seeds[-1]
    print(
        f"{len(rep.runs)} replications (seeds {first}–{last}) in {min(jobs, len(rep.runs))} process(es): "
        f"{d['arrivals_simulated']:,} arrivals simulated in {d['wall_s']:.1f} s of run time; Student t "
        f"interval of the mean over the runs; T = {rep.runs[0]['threshold_s']:g} s",
        file=out,
    )


def _table(result: SimResult, out: TextIO) -> None:
    d = result.to_json()
    rows = _ROWS
    queues = list(d["queues"])
    head = f"{'':24}{'total':>14}" + "".join(f"{q:>14}" for q in queues if len(queues) > 1)
    print(head, file=out)
    for key, kind in rows:
        line = f"{key:24}{_fmt(d.get(key), kind):>14}"
        if len(queues) > 1:
            line += "".join(f"{_fmt(d['queues'][q].get(key), kind):>14}" for q in queues)
        print(line, file=out)
    print(
        f"T = {result.threshold_ms / 1000:g} s; {result.arrivals:,} arrivals simulated "
        f"({d['simulated_hours']:.1f} h measured) in {result.wall_s:.1f} s wall = "
        f"{d['contacts_per_second']:,.0f} contacts/s; seed {result.seed}",
        file=out,
    )
