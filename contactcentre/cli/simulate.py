"""The ``contactcentre simulate`` command:

    contactcentre simulate SCENARIO.toml [--seed N] [--calls N] [--set KEY=VALUE ...] [--json] [--report F]


Human output is a short table; ``--json`` prints one object (see ``SimResult.to_json``); ``--report`` writes
an HTML page with the day charts (and, with ``--sweep``, a staffing sweep beside the Erlang curve).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from contactcentre.simulation.engine import SimResult, simulate
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


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.calls is not None and args.calls < 1:
        print("--calls must be at least 1", file=err)
        return 2
    if args.sweep and args.report is None:
        print("--sweep draws a chart in the report: give --report FILE.html too", file=err)
        return 2
    try:
        loaded = load_scenario(args.scenario, args.overrides)
        sweep = _parse_sweep(args.sweep) if args.sweep else None
    except ValueError as exc:  # a ConfigError (file: key: problem) or a bad --sweep
        print(exc, file=err)
        return 2
    show = err.isatty() and not args.json
    progress = _Progress(err) if show else None
    result = simulate(loaded, seed=args.seed, calls=args.calls, timeline=args.report is not None, progress=progress)
    if progress is not None:
        progress.done()
    data = result.to_json()
    if args.report is not None:
        from contactcentre.simulation.report import write_report

        points = []
        if sweep is not None:
            for n in range(sweep[0], sweep[1] + 1):
                what_if = load_scenario(args.scenario, [*args.overrides, f"agent_groups.0.count={n}"])
                r = simulate(what_if, seed=args.seed, calls=args.calls)
                points.append((n, r.to_json()))
        write_report(args.report, loaded, result, points)
    if args.json:
        print(json.dumps(data, indent=2), file=out)
    else:
        _table(result, out)
        if args.report is not None:
            print(f"report written to {args.report}", file=out)
    return 0


def _parse_sweep(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 0 < int(lo) <= int(hi):
        raise ValueError(f"--sweep {text!r}: give LO:HI agent counts, e.g. 45:55")
    return int(lo), int(hi)


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


def _table(result: SimResult, out: TextIO) -> None:
    d = result.to_json()
    rows = [
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
    ]
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
