"""The ``contactcentre`` command.

    contactcentre demo [--config FILE] [--host H] [--port P] [--cti-port P] [--database PATH] [--seed N]
                       [--rate-scale X] [--duration S]
    contactcentre serve [--config FILE] [--database-url URL] [--host H] [--http-port P] [--smtp-port P]
                        [--ws-port P] [--role all|router|edge --redis-url URL --node-id NAME]
    contactcentre check-config FILE
    contactcentre simulate SCENARIO.toml [--seed N] [--calls N] [--set KEY=VALUE ...] [--json] [--report F]
    contactcentre erlang {b,c,a,staff} ... [--json]
    contactcentre migrate [--database-url URL]
    contactcentre screen-pop (--phone N | --email A | --chat T) [--config FILE] [--database-url URL]
    contactcentre customers {import,duplicates,merge,export,erase} ... [--database-url URL]
    contactcentre user {add,token,list,disable,enable,totp,password} ... [--database-url URL]
    contactcentre ivr-stats [--menu NAME] [--since WHEN] [--until WHEN] [--json] [--database-url URL]
    contactcentre admin show [--config FILE] [--json] [--database-url URL]

Exit codes: 0 done, 1 could not run (e.g. the port is taken), 2 bad configuration or arguments,
3 an unstable Erlang C queue (offered load at or above the agents).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from contactcentre.cli import admin as admin_cli
from contactcentre.cli import ivr as ivr_cli
from contactcentre.cli import store as store_cli
from contactcentre.cli import users as users_cli
from contactcentre.cli.erlang import add_erlang_parser, run_erlang
from contactcentre.config import DEFAULT_CONFIG_PATH, CentreConfig, ConfigError, load_config

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig
    from contactcentre.server.roles import Cluster
    from contactcentre.server.runtime import DemoUser
from contactcentre.cli import simulate as simulate_cli
from contactcentre.loadgen import generator as loadgen

DEFAULT_DATABASE = "contactcentre-demo.sqlite"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contactcentre", description="An omnichannel contact-centre engine.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="a live centre on embedded SQLite with seeded simulated traffic, in your browser",
        description="Run the demo centre: simulated customers and agents on the real router, a live "
        "dashboard at http://HOST:PORT/, every event logged to SQLite. Stop with Ctrl-C.",
    )
    demo.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="FILE", help="centre configuration (TOML)"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one")
    demo.add_argument(
        "--database",
        type=Path,
        default=Path(DEFAULT_DATABASE),
        metavar="PATH",
        help=f"SQLite case store and event log, recreated fresh each run (default ./{DEFAULT_DATABASE})",
    )
    demo.add_argument("--smtp-port", type=int, default=0, metavar="P", help="SMTP port (default: a free one)")
    demo.add_argument("--ws-port", type=int, default=0, metavar="P", help="WebSocket port (default: a free one)")
    demo.add_argument(
        "--cti-port",
        type=int,
        default=0,
        metavar="P",
        help="CTI link port of the simulated switch, for `contactcentre loadgen` and softphones (default: a free one)",
    )
    demo.add_argument("--seed", type=int, default=None, metavar="N", help="random seed (default: [demo] seed)")
    demo.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply every arrival rate by this (default 1)",
    )
    demo.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    demo.add_argument(
        "--at",
        type=_clock_time,
        default=None,
        metavar="TIME",
        help="start the centre's clock at HH:MM today (or YYYY-MM-DDTHH:MM) in its time zone instead of now, "
        "e.g. 21:30 for the IVR's closed hours",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log routing refusals and more")

    srv = sub.add_parser(
        "serve",
        help="run the live centre: web, REST API, e-mail (SMTP), web chat and agent WebSockets",
        description="Run the live centre on the database (created if empty, else it must be migrated). "
        "Ports default to the configuration's [server] section. Stop with Ctrl-C or SIGTERM.",
    )
    srv.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="FILE", help="centre configuration (TOML)"
    )
    srv.add_argument("--database-url", default=None, metavar="URL", help="default $CONTACTCENTRE_DATABASE_URL")
    srv.add_argument("--host", default=None, help="address to listen on (default [server] host)")
    srv.add_argument("--http-port", type=int, default=None, metavar="P", help="web and REST API port; 0: a free one")
    srv.add_argument("--smtp-port", type=int, default=None, metavar="P", help="SMTP port; 0: a free one")
    srv.add_argument("--ws-port", type=int, default=None, metavar="P", help="WebSocket port (chat, agents)")
    srv.add_argument("--cti-port", type=int, default=None, metavar="P", help="CTI link port of the switch")
    srv.add_argument("--sip-port", type=int, default=None, metavar="P", help="UDP port of the SIP front door")
    srv.add_argument(
        "--role",
        choices=("all", "router", "edge"),
        default="all",
        help="all: the whole centre in this process (default); router: the ACD, its timers and the store writer"
        " (active or standby); edge: the front doors (SMTP, WebSockets, HTTP, CTI, SIP). router and edge need"
        " PostgreSQL and Redis (docs/scaling.md)",
    )
    srv.add_argument(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis for --role router|edge (default $CONTACTCENTRE_REDIS_URL, else redis://127.0.0.1:6379/0)",
    )
    srv.add_argument(
        "--node-id", default=None, metavar="NAME", help="this node's name, unique in the centre (default host-pid)"
    )
    srv.add_argument("--redis-prefix", default="cc", metavar="P", help="key prefix of this centre's streams in Redis")
    srv.add_argument(
        "--voice",
        action="store_true",
        help="with --role edge: this edge runs the switch (CTI link, SIP, IVR, callbacks); one edge of a centre does",
    )
    srv.add_argument(
        "--lease-ttl-ms",
        type=int,
        default=None,
        metavar="MS",
        help="--role router: the active router's lease in Redis lapses this long after its last renewal, and a"
        " standby takes over about this long after its death (default 2000; shorter only for tests and benchmarks)",
    )
    srv.add_argument(
        "--commit-timeout-s",
        type=float,
        default=None,
        metavar="S",
        help="--role edge: answer 'try again' (SMTP 451, chat unavailable, HTTP 503) when the router has not"
        " confirmed an input's commit within this many seconds (default 10; covers a router fail-over)",
    )
    srv.add_argument("-v", "--verbose", action="store_true", help="log more")

    check = sub.add_parser("check-config", help="check a centre configuration file")
    check.add_argument("file", type=Path, metavar="FILE")

    add_erlang_parser(sub)  # contactcentre erlang {b,c,a,staff} ... [--json]
    simulate_cli.add_parser(sub)  # contactcentre simulate SCENARIO.toml ...
    loadgen.add_parser(sub)  # contactcentre loadgen --scenario F --tokens F ... (docs/loadgen.md)
    store_cli.add_parsers(sub)  # migrate, screen-pop, customers ...
    users_cli.add_parser(sub)  # user add|token|list|disable|enable|totp|password
    ivr_cli.add_parser(sub)  # ivr-stats
    admin_cli.add_parser(sub)  # admin show
    return p


def _whose(user: DemoUser) -> str:
    """The banner's note on an agent: a simulated console works as it, or it is left for a person."""
    if user.role != "agent":
        return ""
    return "  (simulated)" if user.simulated else "  (free for you)"


def _clock_time(text: str) -> time | datetime:
    """``--at HH:MM`` (today) or ``--at YYYY-MM-DDTHH:MM``."""
    try:
        return time.fromisoformat(text) if len(text) <= 8 else datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a time of day as HH:MM, or YYYY-MM-DDTHH:MM") from None


def _start_ms(config: CentreConfig, at: time | datetime | None) -> int | None:
    """``--at`` in the centre's time zone as epoch ms (None: now, the wall clock)."""
    if at is None:
        return None
    zone = ZoneInfo(config.timezone)
    when = at if isinstance(at, datetime) else datetime.combine(datetime.now(zone).date(), at)
    return int(when.replace(tzinfo=zone).timestamp() * 1000)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `contactcentre ... | head`: the reader left; that is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — keeps the interpreter's final flush quiet
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "erlang":
        return run_erlang(args)  # exit 0 done, 2 bad arguments, 3 unstable Erlang C
    if args.command == "simulate":
        return simulate_cli.run(args)
    if args.command == "loadgen":
        return loadgen.run(args)
    if args.command in ("migrate", "screen-pop", "customers"):
        return store_cli.run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "user":
        return users_cli.run(args)
    if args.command == "ivr-stats":
        return ivr_cli.run(args)
    if args.command == "admin":
        return admin_cli.run(args)
    return _demo(args)


def _load(path: Path) -> CentreConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check_config(path: Path) -> int:
    cfg = _load(path)
    if cfg is None:
        return 2
    print(f"{path}: ok ({len(cfg.queues)} queues, {len(cfg.agents)} agents)")
    return 0


def _log_to_stderr(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _cluster(args: argparse.Namespace) -> Cluster:
    import socket

    from contactcentre.server.roles import Cluster

    url = args.redis_url or os.environ.get("CONTACTCENTRE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    node = args.node_id or f"{socket.gethostname()[:40]}-{os.getpid()}"
    cluster = Cluster(redis_url=url, node_id=node, prefix=args.redis_prefix, voice=args.voice)
    if args.lease_ttl_ms is not None:
        cluster.lease_ttl_ms = args.lease_ttl_ms
    if args.commit_timeout_s is not None:
        cluster.commit_timeout_s = args.commit_timeout_s
    return cluster


def _serve_router(args: argparse.Namespace, cfg: CentreConfig, cluster: Cluster) -> int:
    import asyncio
    import signal

    from contactcentre.server.roles import RoleError, run_router
    from contactcentre.server.runtime import run

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def said(node: Any) -> None:
            print(f"contactcentre serve --role router: {node.node_id} is {node.state}", flush=True)

        return await run_router(cfg, args.database_url, cluster, stop=stop, on_state=said)

    if args.lease_ttl_ms is not None and args.lease_ttl_ms < 100:
        print("contactcentre serve: --lease-ttl-ms must be at least 100", file=sys.stderr)
        return 2
    try:
        node = run(main())
    except RoleError as exc:
        print(f"contactcentre serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if node.state == "lost":
        print(
            f"contactcentre serve: router {node.node_id} lost its lease (now held by {node.holder or 'nobody'})"
            " and stopped routing; start it again to come back as a standby",
            file=sys.stderr,
        )
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from contactcentre.server.runtime import ServeError, ServerInfo, run, serve

    _log_to_stderr(args.verbose)
    cfg = _load(args.config)
    if cfg is None:
        return 2
    from contactcentre.server.roles import RoleError

    try:
        cluster = _cluster(args) if args.role != "all" else None
    except RoleError as exc:
        print(f"contactcentre serve: {exc}", file=sys.stderr)
        return 2
    if args.role == "router":
        assert cluster is not None
        return _serve_router(args, cfg, cluster)
    if args.commit_timeout_s is not None and not args.commit_timeout_s > 0:
        print("contactcentre serve: --commit-timeout-s must be more than 0", file=sys.stderr)
        return 2

    def ready(info: ServerInfo) -> None:
        smtp = f"smtp://{info.host}:{info.smtp_port}" if info.smtp_port else "e-mail off"
        print(
            f"contactcentre serve: {info.url} · {smtp} · ws://{info.host}:{info.ws_port}/chat and /agent "
            f"· store {info.database} (Ctrl-C to stop)",
            flush=True,
        )
        if info.cti_port is not None:
            # a configured token is not echoed into logs; this run's random one must be, or nobody could connect
            token = "[server.voice] cti_token" if cfg.server.voice.cti_token else info.cti_token
            where = f"tcp://{info.cti_host or info.host}:{info.cti_port}"
            print(f"  CTI link (simulated switch, docs/cti.md): {where} token {token}", flush=True)
        if info.sip_port is not None:
            where = f"{info.sip_host or info.host}:{info.sip_port}"
            print(f"  SIP front door (docs/sip.md): sip:2001@{where} (UDP)", flush=True)

    try:
        summary = run(
            serve(
                cfg,
                args.database_url,
                host=args.host,
                http_port=args.http_port,
                smtp_port=args.smtp_port,
                ws_port=args.ws_port,
                cti_port=args.cti_port,
                sip_port=args.sip_port,
                ready=ready,
                cluster=cluster,
            )
        )
    except ServeError as exc:
        print(f"contactcentre serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"contactcentre serve: stopped ({summary.arrived} contacts arrived, all logged)", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from contactcentre.server.runtime import DemoError, DemoInfo, run, run_demo

    _log_to_stderr(args.verbose)
    cfg = _load(args.config)
    if cfg is None:
        return 2
    if cfg.demo is None or not cfg.demo.traffic:
        print(f"{args.config}: demo: no [demo] section with [[demo.traffic]] entries to run", file=sys.stderr)
        return 2
    if args.rate_scale <= 0:
        print(f"--rate-scale must be > 0, not {args.rate_scale}", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print(f"--duration must be > 0, not {args.duration}", file=sys.stderr)
        return 2

    def ready(info: DemoInfo) -> None:
        lines = [
            f"contactcentre demo: {info.url} (Ctrl-C to stop) — case store and event log in {info.database_path}",
            f"  e-mail:  smtp://{info.host}:{info.smtp_port}  (send mail to any address; it becomes a case)",
            f"  chat:    {info.url}chat  (the customer widget; ws://{info.host}:{info.ws_port}/chat)",
            f"  agents:  ws://{info.host}:{info.ws_port}/agent  (docs/protocol.md); REST API under {info.url}api/",
            *([f"  phones:  sip:2001@{info.host}:{info.sip_port} over UDP (docs/sip.md)"] if info.sip_port else []),
            *(
                [f"  CTI:     tcp://{info.cti_host}:{info.cti_port}  token {info.cti_token}  (docs/cti.md)"]
                if info.cti_port
                else []
            ),
            f"  console: {info.url}login  (supervisor or admin: the dashboard; an agent: {info.url}agent)",
            "  demo users (token for the API and agent protocol, password for the console login):",
        ]
        for u in info.users:
            lines.append(f"    {u.name:<12} {u.role:<10} token {u.token}  password {u.password}{_whose(u)}")
        free = [u.name for u in info.users if u.role == "agent" and not u.simulated]
        if free:
            lines.append(
                f"  log in as {' or '.join(free)} to take calls and chats yourself; the other agents are simulated "
                "(logging in as one takes over its work)"
            )
        print("\n".join(lines), flush=True)

    try:
        summary = run(
            run_demo(
                cfg,
                host=args.host,
                port=args.port,
                database_path=args.database,
                seed=args.seed,
                rate_scale=args.rate_scale,
                duration_s=args.duration,
                smtp_port=args.smtp_port,
                ws_port=args.ws_port,
                cti_port=args.cti_port,
                ready=ready,
                start_ms=_start_ms(cfg, args.at),
            )
        )
    except DemoError as exc:
        print(f"contactcentre demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130
    print(
        f"contactcentre demo: stopped ({summary.arrived} contacts arrived, "
        f"{summary.events_logged} events logged in {args.database}, "
        f"{summary.mails_delivered} e-mails delivered to the demo customers' mailboxes)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
