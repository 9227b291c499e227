"""What an administrator looks at: users, queues and routing settings, disposition codes, canned responses and
IVR files, as the ``/admin`` page shows it and ``contactcentre admin show`` prints it (``docs/web.md``).

    contactcentre admin show [--config FILE] [--database-url URL] [--json]

Users live in the database (``contactcentre user ...`` changes them); everything else is the centre's
configuration file, checked by ``contactcentre check-config`` and read at start-up. Agents' skills are the
configuration's ``[[agents]]`` entries (the users table holds none): edit the file and restart. Exit codes:
0 done, 1 a database error, 2 a bad configuration or an unusable database.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from contactcentre.cli.store import add_database_argument, store_failed
from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from contactcentre.reporting.admin_view import overview
from contactcentre.store.users import admin_users


def format_text(view: dict[str, Any]) -> str:
    """The overview as the plain text ``contactcentre admin show`` prints."""
    out = [f"{view['centre']} — administration", "", "Users (contactcentre user ...)"]
    for u in view["users"]:
        flags = [u["role"]]
        if u["agent_id"]:
            flags.append(f"agent {u['agent_id']}" + (f" (extension {u['extension']})" if u.get("extension") else ""))
        flags.append("TOTP" if u["totp"] else "no TOTP")
        if not u["has_password"]:
            flags.append("token only")
        if u["disabled"]:
            flags.append("DISABLED")
        out.append(f"  {u['id']:<16} {', '.join(flags)}" + (f"  skills: {u['skills']}" if u["skills"] else ""))
        if u["problem"]:
            out.append(f"    ! {u['problem']}")
    if view["agents_without_user"]:
        out.append(f"  configured agents without a login: {', '.join(view['agents_without_user'])}")
    out += ["", "Routing ([routing])"]
    # TOML's spelling, as the file takes them (not Python's True/False)
    out += [f"  {k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in view["routing"].items()]
    out += ["", "Queues ([[queues]])"]
    for q in view["queues"]:
        out.append(f"  {q['name']} (number {q['number']}): {q['channels']}; skills {q['skills']}")
        out.append(f"    strategy {q['strategy']}, priority {q['priority']}, SLA {q['sla']}, hours {q['hours']}")
        out.append(f"    max wait {q['max_wait']}, max depth {q['max_depth']}")
        out += [f"    overflow {step}" for step in q["overflow"]]
    out += ["", "Disposition codes ([dispositions] codes)"]
    out.append("  " + (", ".join(view["dispositions"]) or "none: agents may type any code"))
    out += ["", "Canned responses ([[canned]])"]
    for c in view["canned"]:
        first = c["text"].strip().splitlines()[0] if c["text"].strip() else ""
        out.append(f"  {c['name']} ({c['channel']}): {first}")
    if not view["canned"]:
        out.append("  none")
    out += ["", "IVR menus ([server.voice] ivr)"]
    out += [f"  {i['number']}: {i['file']}" for i in view["ivr"]] or ["  none"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ command


def add_parser(sub: Any) -> None:
    admin = sub.add_parser(
        "admin",
        help="show users, queues, routing, disposition codes, canned responses and IVR files",
        description="What the /admin page shows. Users change with `contactcentre user ...`; the rest is the "
        "configuration file (check it with `contactcentre check-config`), agents' skills included.",
    )
    asub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    show = asub.add_parser("show", help="print the overview")
    show.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="FILE", help="centre configuration (TOML)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    add_database_argument(show)


def run(args: argparse.Namespace) -> int:
    from contactcentre.store.db import DatabaseError, StoreFailure, open_store

    prog = "contactcentre admin"
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        engine = open_store(args.database_url, upgrade=False)
    except (DatabaseError, StoreFailure) as exc:
        return store_failed(prog, exc)
    try:
        with engine.connect() as conn:
            view = overview(config, admin_users(conn))
    except StoreFailure as exc:
        return store_failed(prog, exc)
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps(view, indent=2) + "\n" if args.json else format_text(view))
    return 0
