"""``contactcentre ivr-stats``: IVR containment statistics per node, rebuilt from the store's event log.

    contactcentre ivr-stats [--menu NAME] [--since WHEN] [--until WHEN] [--json] [--database-url URL]

``WHEN`` is an ISO date or date-time (``2026-11-25``, ``2026-11-25T08:00``); without a zone it is UTC.
Exit codes: 0 done, 1 the database failed, 2 bad arguments or database URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from contactcentre.cli.store import add_database_argument, store_failed
from contactcentre.reporting.ivr_stats import IvrStats


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ivr-stats",
        help="IVR containment statistics per node, from the event log",
        description="How calls went through the IVR: outcomes, containment (served in self-service) and, per "
        "node, entries, failed inputs and the ways calls left it.",
    )
    p.add_argument("--menu", default=None, help="only this menu (its name = in the menu file)")
    p.add_argument("--since", type=_when, default=None, metavar="WHEN", help="from this instant (UTC unless zoned)")
    p.add_argument("--until", type=_when, default=None, metavar="WHEN", help="up to this instant (exclusive)")
    p.add_argument("--json", action="store_true", help="print one JSON object (its fields: docs/ivr.md)")
    add_database_argument(p)


def _when(text: str) -> int:
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return int(at.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    from contactcentre.reporting.ivr_stats import stats_from_store
    from contactcentre.store.db import DatabaseError, StoreFailure, open_store

    try:
        engine = open_store(args.database_url, upgrade=False)
    except (DatabaseError, StoreFailure) as exc:
        return store_failed("contactcentre ivr-stats", exc)
    try:
        with engine.connect() as conn:
            stats = stats_from_store(conn, args.menu, args.since, args.until)
    except StoreFailure as exc:
        return store_failed("contactcentre ivr-stats", exc)
    finally:
        engine.dispose()
    print(json.dumps(stats.as_dict(), indent=2) if args.json else report(stats))
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def report(stats: IvrStats) -> str:
    """The statistics as a plain-text table."""
    if not stats.calls and not stats.nodes:
        return "no IVR calls logged"
    mean = f"{stats.time_in_ivr_ms / stats.calls / 1000:.1f} s" if stats.calls else "-"
    lines = [
        f"{stats.calls} calls finished · containment {_pct(stats.containment_rate)} · "
        f"abandoned in the IVR {_pct(stats.abandon_rate)} · mean time in the IVR {mean}",
        "outcomes: " + (", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items())) or "-"),
        "",
        f"{'node':<20} {'entered':>8} {'timeout':>8} {'invalid':>8}  exits",
    ]
    for name, node in sorted(stats.nodes.items()):
        exits = ", ".join(f"{cause} {n}" for cause, n in sorted(node.exits.items())) or "-"
        lines.append(
            f"{name:<20} {node.entered:>8} {node.failures['timeout']:>8} {node.failures['invalid']:>8}  {exits}"
        )
    return "\n".join(lines)
