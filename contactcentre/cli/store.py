"""The case-store commands of ``contactcentre``.

    contactcentre migrate [--database-url URL]
    contactcentre screen-pop (--phone N | --email A | --chat T) [--limit N] [--json] [--config FILE]
    contactcentre customers import FILE.csv [--dry-run] [--region CC]
    contactcentre customers duplicates [--min-score X] [--json]
    contactcentre customers merge SURVIVOR MERGED
    contactcentre customers export ID [-o FILE]
    contactcentre customers erase ID --reason TEXT --yes

Every command takes ``--database-url`` (default ``$CONTACTCENTRE_DATABASE_URL``, else ./contactcentre.sqlite).
Only ``migrate`` changes the schema; the others refuse a database that is not at the current version.
Commands that read or change customer data write an audit entry naming ``--actor`` (default: the OS user).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from contactcentre.server.clock import centre_time
from contactcentre.store.db import DEFAULT_DATABASE, ENV_VAR, DatabaseError


def now_ms() -> int:
    """Wall-clock epoch milliseconds, for commands run by a person."""
    return time.time_ns() // 1_000_000


def add_database_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help=f"SQLAlchemy URL or SQLite path (default ${ENV_VAR}, else ./{DEFAULT_DATABASE})",
    )


def _add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=None, help="who is doing this, for the audit log (default: your login)")


def add_parsers(sub: Any) -> None:
    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the case store's schema",
        description="Bring the database's schema to the newest version (creating it when empty).",
    )
    add_database_argument(mig)

    pop = sub.add_parser("screen-pop", help="what an agent sees for a phone number, e-mail address or chat token")
    who = pop.add_mutually_exclusive_group(required=True)
    who.add_argument("--phone", metavar="NUMBER", help="the caller's number, e.g. +31600000042")
    who.add_argument("--email", metavar="ADDRESS", help="the sender's e-mail address")
    who.add_argument("--chat", metavar="TOKEN", help="a chat visitor's token (identity kind chat)")
    pop.add_argument("--limit", type=int, default=10, help="interactions to show (default 10)")
    pop.add_argument("--region", default=None, help="country for national phone numbers (default NL)")
    pop.add_argument("--json", action="store_true", help="print JSON")
    pop.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="centre configuration whose time zone the times are printed in (default contactcentre/data/default.toml)",
    )  # fmt: skip
    add_database_argument(pop)
    _add_actor(pop)

    cust = sub.add_parser("customers", help="import, de-duplicate, merge, export or erase customers")
    csub = cust.add_subparsers(dest="customers_command", required=True, metavar="ACTION")

    imp = csub.add_parser("import", help="import a CSV customer list, with a validation report")
    imp.add_argument("file", type=Path, metavar="FILE.csv")
    imp.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    imp.add_argument("--region", default="NL", help="country for national phone numbers (default NL)")
    add_database_argument(imp)
    _add_actor(imp)

    dup = csub.add_parser("duplicates", help="list customers that are probably one person")
    dup.add_argument("--min-score", type=float, default=0.88, help="name similarity threshold (default 0.88)")
    dup.add_argument("--json", action="store_true", help="print JSON")
    add_database_argument(dup)

    mer = csub.add_parser("merge", help="merge one customer into another (identities, cases, history)")
    mer.add_argument("survivor", metavar="SURVIVOR_ID")
    mer.add_argument("merged", metavar="MERGED_ID")
    add_database_argument(mer)
    _add_actor(mer)

    exp = csub.add_parser("export", help="everything about a customer, as JSON (subject access request)")
    exp.add_argument("customer_id", metavar="ID")
    exp.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="write here, not stdout")
    add_database_argument(exp)
    _add_actor(exp)

    era = csub.add_parser("erase", help="erase a customer's personal data everywhere (keeps statistics)")
    era.add_argument("customer_id", metavar="ID")
    era.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    era.add_argument("--yes", action="store_true", help="really do it (cannot be undone)")
    add_database_argument(era)
    _add_actor(era)


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 done, 1 refused or failed (the message says why), 2 bad arguments or database URL."""
    from contactcentre.store.db import StoreFailure, connect, migrate, open_store

    actor = getattr(args, "actor", None) or _login()
    try:
        if args.command == "migrate":
            engine = connect(args.database_url)
            try:
                at = migrate(engine)
            finally:
                engine.dispose()
            print(f"{engine.url.render_as_string(hide_password=True)}: schema at revision {at} (newest)")
            return 0
        engine = open_store(args.database_url, upgrade=False)
    except (DatabaseError, StoreFailure) as exc:
        return store_failed(f"contactcentre {args.command}", exc)
    try:
        if args.command == "screen-pop":
            return _screen_pop(engine, args, actor)
        return _customers(engine, args, actor)
    except StoreFailure as exc:
        return store_failed(f"contactcentre {args.command}", exc)
    finally:
        engine.dispose()


def database_reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)  # the driver's own message, without SQLAlchemy's statement dump
    return " ".join(str(orig if orig is not None else exc).split())


def store_failed(prog: str, exc: Exception) -> int:
    """Say why the store could not be opened or used, and return the command's exit code: 2 for a database
    that is not usable as it is (``DatabaseError``: not a centre's store, or not migrated), 1 for an error
    the database raised (``StoreFailure``)."""
    if isinstance(exc, DatabaseError):
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(f"{prog}: database error: {database_reason(exc)}", file=sys.stderr)
    return 1


def _login() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"


def _screen_pop(engine: Any, args: argparse.Namespace, actor: str) -> int:
    from contactcentre.store.identity import DEFAULT_REGION
    from contactcentre.store.privacy import record_read
    from contactcentre.store.screenpop import screen_pop

    kind, value = next((k, getattr(args, k)) for k in ("phone", "email", "chat") if getattr(args, k))
    zone = "UTC" if args.json else _centre_zone(args.config)  # JSON has epoch milliseconds, no zone to name
    if zone is None:
        return 2
    with engine.begin() as conn:
        pop = screen_pop(conn, kind, value, now_ms(), limit=args.limit, region=args.region or DEFAULT_REGION)
        if pop.customer is not None:
            record_read(conn, pop.customer.id, now_ms(), actor=actor, what="screen-pop")
    if args.json:
        print(msgspec.json.encode(pop).decode())
        return 0 if pop.matched else 1
    if not pop.matched or pop.customer is None:
        print(f"no customer has {kind} {pop.value}")
        return 1
    print(_render_pop(pop, zone))
    return 0


def _centre_zone(path: Path | None) -> str | None:
    """The configuration's time zone, or None (the reason printed) when the file cannot be read."""
    from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

    try:
        return load_config(path or DEFAULT_CONFIG_PATH).timezone
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _when(ms: int | None, zone: str) -> str:
    return "-" if ms is None else centre_time(ms, zone)


def _render_pop(pop: Any, zone: str) -> str:
    c = pop.customer
    consents = [name for name in ("email", "sms", "calls") if getattr(c, f"consent_{name}")]
    lines = [
        f"{c.name or '(no name)'}  [{c.id}]  tier {c.tier or '-'}  value {c.lifetime_value or '-'}"
        f"  segment {c.value_segment or '-'}  account manager {c.account_manager_id or '-'}",
        f"consents: {', '.join(consents) or 'none'}{'  DO NOT CALL' if c.do_not_call else ''}",
    ]
    s = pop.signals
    lines.append(f"churn risk: {s.risk}" + (f" ({'; '.join(s.reasons)})" if s.reasons else ""))
    lines.append(f"open cases ({len(pop.open_cases)}):")
    for case in pop.open_cases:
        due = case.first_response_due_ms or case.resolution_due_ms
        lines.append(
            f"  {case.token}  {case.status:<7} {case.subject or ''}  due {_when(due, zone)}"
            f"{'  OVERDUE' if case.overdue else ''}  ({case.interactions} contacts)"
        )
    lines.append(f"last {len(pop.recent)} interactions:")
    for i in pop.recent:
        lines.append(
            f"  {_when(i.started_ms, zone)}  {i.channel:<8} {i.direction:<8} {i.queue or '-':<12} "
            f"{i.agent_id or '-':<10} {i.outcome or 'live':<11} {i.disposition or ''}"
        )
    return "\n".join(lines)


def _customers(engine: Any, args: argparse.Namespace, actor: str) -> int:
    action = args.customers_command
    now = now_ms()
    if action == "import":
        from contactcentre.store.importer import import_customers_csv

        if not args.file.is_file():
            print(f"contactcentre customers import: {args.file}: no such file", file=sys.stderr)
            return 2
        # The importer reads the bytes itself, so that a row that is not UTF-8 is reported, not patched.
        with engine.begin() as conn:
            report = import_customers_csv(
                conn, args.file, now, region=args.region, source_name=str(args.file), dry_run=args.dry_run
            )
        print(report.text())
        return 0 if not report.errors else 1
    if action == "duplicates":
        from contactcentre.store.dedupe import find_duplicates

        with engine.connect() as conn:
            pairs = find_duplicates(conn, min_name_score=args.min_score)
        if args.json:
            print(json.dumps([_plain(p) for p in pairs], indent=2))
        else:
            for p in pairs:
                print(f"{p.a}  {p.b}  {p.score:.2f}  {'; '.join(p.reasons)}")
            print(f"{len(pairs)} probable duplicate pair{'s' * (len(pairs) != 1)}")
        return 0
    if action == "merge":
        from contactcentre.store.dedupe import MergeError, merge_customers

        try:
            with engine.begin() as conn:
                result = merge_customers(conn, args.survivor, args.merged, now, actor=actor)
        except MergeError as exc:
            print(f"contactcentre customers merge: {exc}", file=sys.stderr)
            return 1
        print(f"merged {args.merged} into {args.survivor}: {_plain(result)}")
        return 0
    if action == "export":
        from contactcentre.store.privacy import export_customer_json

        try:
            with engine.begin() as conn:
                text = export_customer_json(conn, args.customer_id, now, actor=actor)
        except LookupError as exc:
            print(f"contactcentre customers export: {exc}", file=sys.stderr)
            return 1
        if args.output is None:
            print(text)
        else:
            args.output.write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.output}")
        return 0
    if action == "erase":
        from contactcentre.store.privacy import erase_customer

        if not args.yes:
            print("contactcentre customers erase: this cannot be undone; add --yes to do it", file=sys.stderr)
            return 2
        try:
            with engine.begin() as conn:
                report = erase_customer(conn, args.customer_id, now, actor=actor, reason=args.reason)
        except LookupError as exc:
            print(f"contactcentre customers erase: {exc}", file=sys.stderr)
            return 1
        print(f"erased {args.customer_id}: {_plain(report)}")
        return 0
    raise AssertionError(action)


def _plain(obj: Any) -> Any:
    """A dataclass or msgspec struct as plain data, for printing."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return msgspec.to_builtins(obj)
