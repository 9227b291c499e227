"""The ``contactcentre erlang {b,c,a,staff}`` command: the planning formulas (``contactcentre.planning.erlang``) on the
command line, as a small table or as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from contactcentre.planning.erlang import (
    SL_VARIANTS,
    _count,
    _non_negative,
    _positive,
    _share,
    erlang_a,
    erlang_b,
    erlang_b_max_load,
    erlang_c,
    staff,
)

EXIT_OK, EXIT_USAGE, EXIT_UNSTABLE = 0, 2, 3

_EXIT_CODES = (
    "exit codes: 0 done; 2 bad arguments; 3 unstable (Erlang C with offered load A >= agents: no steady "
    "state, the queue grows without bound)"
)


def _arg(kind: type[int] | type[float], check: Callable[[str, Any], Any]) -> Callable[[str], Any]:
    """An argparse ``type=``: convert, then validate; failures become one clear argparse error (exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        try:
            return check("value", value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    return parse


_POSITIVE = _arg(float, _positive)
_NON_NEGATIVE = _arg(float, _non_negative)
_COUNT = _arg(int, _count)
_SHARE = _arg(float, _share)


def _occupancy_cap(text: str) -> float:
    v = _POSITIVE(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text!r}")
    return v


def add_erlang_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``erlang`` and its four subcommands on the ``contactcentre`` subparsers ``sub``."""
    erl = sub.add_parser(
        "erlang",
        help="capacity planning: Erlang B, C, A and staffing",
        description="Queueing formulas for planning, in seconds. Human output is a small table; "
        "--json prints one JSON object.",
        epilog=_EXIT_CODES,
    )
    esub = erl.add_subparsers(dest="erlang_model", required=True, metavar="MODEL")

    def common(p: argparse.ArgumentParser, agents: bool = True) -> None:
        p.add_argument("--per-hour", type=_POSITIVE, required=True, metavar="L", help="arrivals per hour")
        p.add_argument("--aht", type=_POSITIVE, required=True, metavar="S", help="mean handling time, seconds")
        if agents:
            p.add_argument("--agents", type=_COUNT, required=True, metavar="N", help="agents (integer >= 1)")
        p.add_argument("--threshold", type=_NON_NEGATIVE, required=True, metavar="T", help="service-level threshold, s")

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    b = esub.add_parser(
        "b",
        help="Erlang B: blocking of N lines (M/M/c/c), or the load N lines carry",
        description="Erlang B (M/M/c/c). With --load: the blocking probability. With --max-blocking: the "
        "largest offered load the lines carry at that blocking (15 lines at 0.01 carry 8.108 Erlangs).",
        epilog="exit codes: 0 done; 2 bad arguments",
    )
    b.add_argument("--lines", type=_COUNT, required=True, metavar="N", help="lines / servers (integer >= 1)")
    g = b.add_mutually_exclusive_group(required=True)
    g.add_argument("--load", type=_POSITIVE, metavar="A", help="offered load in Erlangs")
    g.add_argument("--max-blocking", type=_SHARE, metavar="P", help="blocking target, 0 < P < 1")
    json_flag(b)

    c = esub.add_parser(
        "c",
        help="Erlang C (M/M/c, no abandonment): P(wait), service level, ASA, occupancy",
        description="Erlang C (M/M/c, FIFO, infinite patience). service_level = P(wait <= T) over all "
        "calls; asa_s = mean wait over all calls, zero waits included. If the offered load A = L*S/3600 is "
        "at least the number of agents there is no steady state: the answer is 'unstable' (exit code 3; "
        'with --json {"stable": false, "p_wait": 1.0, "service_level": 0.0, "asa_s": null, ...}).',
        epilog=_EXIT_CODES,
    )
    common(c)
    json_flag(c)

    a = esub.add_parser(
        "a",
        help="Erlang A (M/M/c+M, exponential patience): waiting, abandonment, four service levels",
        description="Erlang A (M/M/c+M: callers hang up after an exponential patience with mean P). "
        "service_level_offered = answered within T / all arrivals; service_level_answered = answered "
        "within T / answered; service_level_virtual = P(offered wait <= T); service_level_asterisk2 = "
        "(answered + abandoned within T) / (answered + abandoned), Asterisk's SL2. mean_wait_s is the mean "
        "time in queue over all arrivals, abandoners included. Always stable.",
        epilog="exit codes: 0 done; 2 bad arguments",
    )
    common(a)
    a.add_argument("--patience", type=_POSITIVE, required=True, metavar="P", help="mean patience, seconds")
    json_flag(a)

    s = esub.add_parser(
        "staff",
        help="the fewest agents meeting a service-level target (Erlang C, or Erlang A with --patience)",
        description="The smallest number of agents with service level >= TARGET within T (and occupancy "
        "<= X with --max-occupancy). Without --patience: Erlang C. With --patience: Erlang A, targeting "
        "--sl-variant, by default 'offered' = answered within T / ALL arrivals (abandons count as misses; "
        "the strictest variant, and the Erlang C figure as patience grows). 'answered' = answered within "
        "T / answered; 'virtual' = P(offered wait <= T); 'asterisk2' = (answered + abandoned within T) / "
        "(answered + abandoned).",
        epilog="exit codes: 0 done; 2 bad arguments",
    )
    common(s, agents=False)
    s.add_argument("--target", type=_SHARE, default=0.8, metavar="SL", help="service-level target, 0 < SL < 1 (0.8)")
    s.add_argument("--patience", type=_POSITIVE, metavar="P", help="mean patience, seconds: use Erlang A")
    s.add_argument("--max-occupancy", type=_occupancy_cap, metavar="X", help="also keep occupancy <= X (0 < X <= 1)")
    s.add_argument(
        "--sl-variant",
        choices=SL_VARIANTS,
        default="offered",
        help="Erlang A service level to target (default offered)",
    )
    json_flag(s)
    return erl


def _fmt(v: Any, digits: int = 6) -> str:
    """A figure for the table: probabilities and shares to 6 decimals, seconds and Erlangs to 3."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def _num(v: float) -> str:
    """An input echoed in a title: as short as it reads (850, 0.8, 42.5)."""
    return f"{v:g}"


def _table(title: str, rows: Sequence[tuple[str, Any, int, str]], out: Any) -> None:
    """Print ``title`` and one line per (key, value, decimals, note), the values aligned on the point."""
    print(title, file=out)
    width = max(len(k) for k, _, _, _ in rows)
    cells = [_fmt(v, digits).partition(".") for _, v, digits, _ in rows]
    left = max(len(whole) for whole, _, _ in cells)
    right = max(len(dot + frac) for _, dot, frac in cells)
    for (key, _, _, note), (whole, dot, frac) in zip(rows, cells, strict=True):
        print(f"  {key:<{width}}  {whole:>{left}}{dot + frac:<{right}}  {note}".rstrip(), file=out)


def run_erlang(args: argparse.Namespace, out: Any = None) -> int:
    """Run ``contactcentre erlang MODEL ...`` for parsed ``args``; returns the exit code."""
    out = out if out is not None else sys.stdout
    model = args.erlang_model
    if model == "b":
        return _run_b(args, out)
    if model == "c":
        return _run_c(args, out)
    if model == "a":
        return _run_a(args, out)
    return _run_staff(args, out)


def _emit_json(d: dict[str, Any], out: Any) -> None:
    print(json.dumps(d), file=out)


def _run_b(args: argparse.Namespace, out: Any) -> int:
    n = args.lines
    if args.load is not None:
        blocking = erlang_b(args.load, n)
        d = {
            "blocking": blocking,
            "lines": n,
            "offered_load_erlangs": args.load,
            "carried_load_erlangs": args.load * (1.0 - blocking),
        }
        rows = [
            ("blocking", blocking, 7, "share of calls finding every line busy"),
            ("carried_load_erlangs", d["carried_load_erlangs"], 3, "Erlangs"),
        ]
        title = f"Erlang B: {_num(args.load)} Erlangs on {n} lines"
    else:
        load = erlang_b_max_load(n, args.max_blocking)
        d = {"max_load_erlangs": load, "lines": n, "blocking": args.max_blocking}
        note = f"Erlangs: the most with blocking <= {_num(args.max_blocking)}"
        rows = [("max_load_erlangs", load, 3, note)]
        title = f"Erlang B: {n} lines"
    if args.json:
        _emit_json(d, out)
    else:
        _table(title, rows, out)
    return EXIT_OK


def _run_c(args: argparse.Namespace, out: Any) -> int:
    r = erlang_c(args.per_hour, args.aht, args.agents, args.threshold)
    if not r.stable:
        if args.json:
            _emit_json(r.to_dict(), out)
        else:
            print(
                f"unstable: offered load {r.offered_load_erlangs:.4g} Erlangs needs more than {r.agents} "
                f"agents (at least {r.min_stable_agents} for the queue to settle)",
                file=out,
            )
        return EXIT_UNSTABLE
    if args.json:
        _emit_json(r.to_dict(), out)
        return EXIT_OK
    t = _num(r.threshold_s)
    _table(
        f"Erlang C (M/M/c): {_num(r.per_hour)}/h, AHT {_num(r.aht_s)} s, {r.agents} agents, T {t} s",
        [
            ("offered_load_erlangs", r.offered_load_erlangs, 3, "Erlangs"),
            ("p_wait", r.p_wait, 6, "share of calls that wait"),
            ("service_level", r.service_level, 6, f"waited <= {t} s, all calls"),
            ("asa_s", r.asa_s, 3, "s, mean wait of all calls"),
            ("occupancy", r.occupancy, 6, "share of agent time handling calls"),
            ("mean_wait_if_waiting_s", r.mean_wait_if_waiting_s, 3, "s, mean wait of the calls that wait"),
            ("wait_p90_s", r.wait_p90_s, 3, "s, 90 % of calls wait less"),
            ("wait_p99_s", r.wait_p99_s, 3, "s, 99 % of calls wait less"),
        ],
        out,
    )
    return EXIT_OK


def _run_a(args: argparse.Namespace, out: Any) -> int:
    r = erlang_a(args.per_hour, args.aht, args.agents, args.threshold, args.patience)
    if args.json:
        _emit_json(r.to_dict(), out)
        return EXIT_OK
    t = _num(r.threshold_s)
    _table(
        f"Erlang A (M/M/c+M): {_num(r.per_hour)}/h, AHT {_num(r.aht_s)} s, {r.agents} agents, "
        f"patience {_num(r.patience_s)} s, T {t} s",
        [
            ("offered_load_erlangs", r.offered_load_erlangs, 3, "Erlangs"),
            ("p_wait", r.p_wait, 6, "share of calls that wait"),
            ("p_abandon", r.p_abandon, 6, "share of calls that hang up"),
            ("mean_wait_s", r.mean_wait_s, 3, "s, mean time in queue of all calls"),
            ("service_level_offered", r.service_level_offered, 6, f"answered <= {t} s / all calls"),
            ("service_level_answered", r.service_level_answered, 6, f"answered <= {t} s / answered"),
            ("service_level_virtual", r.service_level_virtual, 6, f"offered wait <= {t} s"),
            (
                "service_level_asterisk2",
                r.service_level_asterisk2,
                6,
                f"(answered + abandoned) <= {t} s / all",
            ),
            ("occupancy", r.occupancy, 6, "share of agent time handling calls"),
        ],
        out,
    )
    return EXIT_OK


def _run_staff(args: argparse.Namespace, out: Any) -> int:
    s = staff(
        args.per_hour,
        args.aht,
        args.threshold,
        args.target,
        patience_s=args.patience,
        max_occupancy=args.max_occupancy,
        sl_variant=args.sl_variant,
    )
    if args.json:
        _emit_json(s.to_dict(), out)
        return EXIT_OK
    t = _num(s.threshold_s)
    what = "Erlang C" if s.model == "erlang_c" else f"Erlang A, patience {_num(args.patience)} s"
    cap = "" if s.max_occupancy is None else f", occupancy <= {_num(s.max_occupancy)}"
    _table(
        f"Staffing ({what}): {_num(args.per_hour)}/h, AHT {_num(args.aht)} s, SL {_num(s.target)} within {t} s{cap}",
        [
            ("agents", s.agents, 0, "fewest meeting the target"),
            ("offered_load_erlangs", s.offered_load_erlangs, 3, "Erlangs"),
            ("service_level", s.service_level, 6, f"{s.sl_variant}, at {s.agents} agents"),
            ("occupancy", s.occupancy, 6, "share of agent time handling calls"),
        ],
        out,
    )
    return EXIT_OK
