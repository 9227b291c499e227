"""The one wiring place: the loop, the reactor, the store, the router (through ``driver.RouterDriver``), the
adapters, the web site and the demo's traffic. Nothing imports this module but the command line (and tests):
it imports everything else.

``run_demo`` builds a whole live centre on one asyncio loop: Twisted's asyncio reactor is installed on that
loop before anything else from ``twisted.internet`` is imported, and the web site is served by it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.acd import LiveStats, Router
from contactcentre.config import CentreConfig
from contactcentre.edge.limits import TOO_MANY_CONNECTIONS, PeerCount
from contactcentre.server.centre import ServerInfo
from contactcentre.server.clock import LoopClock
from contactcentre.server.driver import RouterDriver

__all__ = [
    "CentreLoop",
    "RouterDriver",
    "ServerInfo",
    "close_centre",
    "install_reactor",
    "open_centre",
    "run",
    "run_demo",
    "serve",
]

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre
    from contactcentre.server.roles import Cluster

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ reactor


def install_reactor(loop: asyncio.AbstractEventLoop) -> Any:
    """Install Twisted's asyncio reactor on ``loop`` (once per process) and return it.

    This must run before anything imports ``twisted.internet.reactor``; importing it first would install
    Twisted's default (epoll) reactor, which knows nothing of the asyncio loop.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor

    if getattr(reactor, "_asyncioEventloop", None) is not loop:
        raise RuntimeError(
            "a Twisted reactor was installed before the runtime could install the asyncio reactor on its loop"
        )
    return reactor


_twisted_logging_started = False


def _route_twisted_logging() -> None:
    """Send Twisted's log events (e.g. errors while rendering a page) to Python logging."""
    global _twisted_logging_started
    if _twisted_logging_started:
        return
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    _twisted_logging_started = True


# ----------------------------------------------------------------------------------------------- the loop

ACCEPT_WARNING_EVERY_S = 60.0
_OUT_OF_FDS = "socket.accept() out of system resource"


class CentreLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, except when the process runs out of file descriptors (EMFILE) while accepting.

    asyncio then tries ``backlog`` (100) accepts in one go, logs a traceback for each and schedules a restart
    of the port for each, so every restart that finds the process still full makes a hundred more: a spin
    that wrote 240,000 tracebacks in 45 s. Here, once out of descriptors, a port tries one accept per wake-up
    (asyncio's own retry then comes once a second) and the condition is logged as one line a minute with
    how often it recurred, until the port accepts again."""

    def __init__(self) -> None:
        super().__init__()
        self._short_of_fds_until = 0.0  # loop time until which ports accept one connection at a time
        self._fd_warned_at: float | None = None
        self._fd_refusals = 0

    def _accept_connection(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *rest: Any,
    ) -> None:
        if self.time() < self._short_of_fds_until:
            backlog = 1
        super()._accept_connection(protocol_factory, sock, sslcontext, server, backlog, *rest)  # type: ignore[misc]

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if context.get("message") != _OUT_OF_FDS:
            super().call_exception_handler(context)
            return
        now = self.time()
        self._short_of_fds_until = now + ACCEPT_WARNING_EVERY_S
        self._fd_refusals += 1
        if self._fd_warned_at is None or now - self._fd_warned_at >= ACCEPT_WARNING_EVERY_S:
            sock = context.get("socket")
            port = sock.getsockname()[1] if sock is not None else "?"
            log.warning(
                "out of file descriptors (%s): port %s accepts again once some close (%d refusals since the"
                " last warning; raise the process's limit, ulimit -n, or lower [server.limits])",
                context.get("exception"),
                port,
                self._fd_refusals,
            )
            self._fd_warned_at, self._fd_refusals = now, 0


def run(main: Any) -> Any:
    """``asyncio.run`` on a ``CentreLoop``: how the command line runs the server and the demo."""
    with asyncio.Runner(loop_factory=CentreLoop) as runner:
        return runner.run(main)


# --------------------------------------------------------------------------------------------------- demo


class DemoError(Exception):
    """The demo cannot start (database path unusable, port taken); the message says why."""


@dataclass(frozen=True)
class DemoUser:
    name: str
    role: str
    token: str
    password: str
    simulated: bool = False  # an agent a simulated console works as ([demo] agents_for_people: the others)


@dataclass(frozen=True)
class DemoInfo:
    url: str
    host: str
    port: int
    database_path: Path
    smtp_port: int | None = None
    ws_port: int | None = None
    users: tuple[DemoUser, ...] = ()
    sip_port: int | None = None
    cti_port: int | None = None
    cti_token: str | None = None
    cti_host: str | None = None


@dataclass(frozen=True)
class DemoSummary:
    arrived: int
    events_logged: int
    refused: int
    mails_delivered: int = 0


_SQLITE_MAGIC = b"SQLite format 3\x00"


def fresh_database(path: str | Path) -> Path:
    """Remove a previous demo database (and its WAL files) so the run starts from nothing.

    Refuses to delete anything that is not an SQLite database, so a mistyped ``--database`` cannot destroy
    an unrelated file."""
    path = Path(path)
    if path.is_dir():
        raise DemoError(f"{path}: is a directory, not a database file")
    if path.exists():
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise DemoError(f"{path}: exists and is not an SQLite database; not overwriting it")
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    if not path.parent.is_dir():
        raise DemoError(f"{path}: directory {path.parent} does not exist")
    return path


async def run_demo(
    config: CentreConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_path: str | Path = "contactcentre-demo.sqlite",
    seed: int | None = None,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    *,
    smtp_port: int = 0,
    ws_port: int = 0,
    cti_port: int = 0,
    ready: Callable[[DemoInfo], None] | None = None,
    stop: asyncio.Event | None = None,
    start_ms: int | None = None,
) -> DemoSummary:
    """The live server (``serve``) on a fresh SQLite file, with demo users and simulated people.

    Before the server starts, the store gets the demo's customer book and one user per configured agent plus
    a supervisor and an admin (their tokens and passwords go to ``ready``). Once it listens, ``LiveDemo``
    starts simulated agents on the agent protocol and customers on SMTP, the chat WebSocket and (until
    telephony exists) direct voice arrivals. Runs until SIGINT/SIGTERM, ``duration_s`` or ``stop``.
    ``start_ms`` starts the centre's clock there instead of now (``demo --at``: the evening at noon).
    """
    from aiosmtpd.smtp import SMTP

    from contactcentre.demo.customers import seed_demo_customers
    from contactcentre.demo.live import LiveDemo
    from contactcentre.store.db import DatabaseError, open_store
    from contactcentre.store.users import add_user

    if config.demo is None or not config.demo.traffic:
        raise DemoError("the configuration has no [demo] section with [[demo.traffic]] entries")
    if rate_scale <= 0:
        raise DemoError(f"--rate-scale must be > 0, not {rate_scale}")
    db = fresh_database(database_path)
    try:
        engine = open_store(db)  # a fresh file, migrated to the current schema
    except DatabaseError as exc:
        raise DemoError(str(exc)) from None
    now = LoopClock(asyncio.get_running_loop(), start_ms=start_ms).now_ms()
    users: list[DemoUser] = []
    tokens: dict[str, str] = {}
    try:
        with engine.begin() as conn:  # the demo's customers, so contacts land on them and screen-pop shows them
            seed_demo_customers(conn, now, tuple(config.tiers))
            for name, role in (("admin", "admin"), ("supervisor", "supervisor")):
                password = secrets.token_urlsafe(9)
                users.append(DemoUser(name, role, add_user(conn, name, role, now, password=password), password))
            simulated = {a.id for a in config.agents[: len(config.agents) - config.demo.agents_for_people]}
            for a in config.agents:
                password = secrets.token_urlsafe(9)
                token = add_user(conn, a.id, "agent", now, agent_id=a.id, display_name=a.name, password=password)
                users.append(DemoUser(a.id, "agent", token, password, simulated=a.id in simulated))
                if a.id in simulated:
                    tokens[a.id] = token
    finally:
        engine.dispose()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # The customers' mail servers: replies and acknowledgements go to a sink on this loop, so the demo's
    # outbound e-mail is really sent (and counted) instead of failing against a smarthost that is not there.
    mailbox = DemoMailbox()
    sink = await loop.create_server(lambda: SMTP(mailbox), "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    email_cfg = msgspec.structs.replace(config.server.email, smarthost="127.0.0.1", smarthost_port=sink_port)
    # The simulated customers and agents all come from 127.0.0.1: one address standing for everyone, which the
    # per-address caps would turn away at a raised --rate-scale.
    limits = msgspec.structs.replace(
        config.server.limits, max_connections_per_address=100_000, new_chats_per_minute=1e6, new_chats_burst=100_000
    )
    server_cfg = msgspec.structs.replace(config.server, email=email_cfg, limits=limits)
    config = msgspec.structs.replace(config, server=server_cfg)
    timeout = loop.call_later(duration_s, stop.set) if duration_s is not None else None
    demo_seed = config.demo.seed if seed is None else seed

    def started(centre: Centre, info: ServerInfo) -> LiveDemo:
        traffic = LiveDemo(centre, info, config, tokens, seed=demo_seed, rate_scale=rate_scale)
        traffic.start()
        return traffic

    def on_ready(info: ServerInfo) -> None:
        if ready is not None:
            ports = (info.smtp_port, info.ws_port, tuple(users))
            cti = {"cti_port": info.cti_port, "cti_token": info.cti_token, "cti_host": info.cti_host}
            ready(DemoInfo(info.url, info.host, info.http_port, db, *ports, sip_port=info.sip_port, **cti))

    try:
        summary = await serve(
            config,
            db,
            host=host,
            http_port=port,
            smtp_port=smtp_port,
            ws_port=ws_port,
            cti_port=cti_port,
            sip_port=0,
            ready=on_ready,
            started=started,
            stop=stop,
            start_ms=start_ms,
        )
    except ServeError as exc:
        raise DemoError(str(exc)) from None
    finally:
        if timeout is not None:
            timeout.cancel()
        sink.close()
        await sink.wait_closed()
    return DemoSummary(
        arrived=summary.arrived,
        events_logged=summary.events_logged,
        refused=summary.refused,
        mails_delivered=mailbox.received,
    )


class DemoMailbox:
    """The demo customers' mailboxes: an aiosmtpd handler that accepts and counts what the centre sends."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 OK"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -------------------------------------------------------------------------------------------------- serve


def _cannot_listen(what: str, host: str, port: int, why: object) -> str:
    """A port that cannot be had, and what to do about it (a newcomer's first stumble: a second demo)."""
    return (
        f"cannot listen {what}on {host}:{port}: {why} (is another server running there? choose another port in"
        " the configuration's [server] or with the command's port options; 0 picks a free one)"
    )


class ServeError(Exception):
    """The server cannot start (database unusable, port taken); the message says why."""


async def open_centre(
    config: CentreConfig,
    database_url: str | Path | None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    create_if_empty: bool = True,
    start_ms: int | None = None,
) -> Centre:
    """Open the store, restore the router from its log and return the running centre (no adapters).

    The log's inputs are replayed into a fresh router at their own times (``centre.replay_log``), then the
    router is advanced to now (offers that expired while the server was down fall through, SLA timers fire)
    and every agent who was ready is put away as ``disconnected`` until their console comes back. Contacts
    that were waiting keep their place; contacts an agent was handling stay theirs.
    """
    from contactcentre.server.centre import Centre, disconnected_agents, replay_log
    from contactcentre.store.db import DatabaseError, check_current, connect, is_empty, migrate
    from contactcentre.store.eventlog import first_logged_ms
    from contactcentre.store.fence import fence_holder
    from contactcentre.store.writer import StoreWriter

    loop = loop or asyncio.get_running_loop()
    try:
        engine = connect(database_url)
    except DatabaseError as exc:
        raise ServeError(str(exc)) from None
    try:
        if create_if_empty and is_empty(engine):
            migrate(engine)
        check_current(engine)
        with engine.connect() as conn:
            first = first_logged_ms(conn)
            routed = fence_holder(conn)
        if routed is not None:  # router nodes serve this store (docs/scaling.md): never route beside them
            token, holder, since = routed
            raise ServeError(
                f"database {engine.url.render_as_string(hide_password=True)} is served by router nodes (the fence"
                f" is {token}, taken by {holder} at {since} ms): start this node with --role router (it waits as"
                " a standby) or --role edge, not --role all"
            )
    except DatabaseError as exc:
        engine.dispose()
        raise ServeError(str(exc)) from None
    except ServeError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise ServeError(f"database {engine.url.render_as_string(hide_password=True)}: {exc}") from None
    clock = LoopClock(loop, start_ms=start_ms)  # start_ms: the demo's --at; None is the wall clock
    router = Router(config, start_ms=first if first is not None else clock.now_ms())
    stats = LiveStats(short_abandon_ms=round(config.routing.short_abandon_s * 1000))
    replayed = replay_log(engine, router, stats)
    if router.now_ms > clock.now_ms():  # the wall clock went back since the log was written
        log.warning("restore: the log ends %d ms in the future; the clock starts there", router.now_ms - clock.now_ms())
        clock = LoopClock(loop, not_before_ms=router.now_ms)
    writer = StoreWriter(engine, loop=loop)
    driver = RouterDriver(router, clock, loop, stats=stats, writer=writer)
    centre = Centre(config, engine, driver, writer)
    driver.catch_up()  # what fell due while the server was down
    for ev in disconnected_agents(router, clock.now_ms()):
        driver.submit(ev)
    if replayed:
        waiting = sum(1 for c in router.contact_list() if c.state == "queued")
        log.warning("restore: %d logged inputs replayed; %d contacts waiting", replayed, waiting)
    return centre


async def close_centre(centre: Centre) -> None:
    """Stop the router, commit everything pending, release the database."""
    centre.driver.close()
    try:
        await centre.writer.close()
    finally:
        centre.close()
        centre.engine.dispose()


@dataclass(frozen=True)
class ServeSummary:
    arrived: int
    events_logged: int
    refused: int


def counted_connection(count: PeerCount) -> type[Any]:
    """A WebSocket connection class that counts itself against its peer's address from the moment the TCP
    connection is made (a socket that never finishes its handshake holds a place too) until it is gone.
    One over the cap is not ``admitted``: the handshake answers it 429."""
    from websockets.asyncio.server import ServerConnection

    class CountedConnection(ServerConnection):
        peer_host = ""
        admitted = False

        def connection_made(self, transport: Any) -> None:
            peer = transport.get_extra_info("peername")
            self.peer_host = str(peer[0]) if peer else ""
            self.admitted = count.acquire(self.peer_host)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.admitted:
                self.admitted = False
                count.release(self.peer_host)
            super().connection_lost(exc)

    return CountedConnection


def _lock_database(database_url: str | Path | None) -> Any:
    """The server's lock on its database, taken before the log is replayed: a second server on the same store
    would route the same contacts beside the first (``store/instance.py``)."""
    from contactcentre.store.db import DatabaseError
    from contactcentre.store.instance import lock_database

    try:
        return lock_database(database_url)
    except DatabaseError as exc:
        raise ServeError(str(exc)) from None
    except Exception as exc:  # the database cannot be reached: open_centre would say the same
        raise ServeError(f"database: {exc}") from None


AGENT_MAX_FRAME = 256 * 1024  # an agent's e-mail reply can be long; a customer's chat line cannot


async def serve(
    config: CentreConfig,
    database_url: str | Path | None = None,
    *,
    host: str | None = None,
    http_port: int | None = None,
    smtp_port: int | None = None,
    ws_port: int | None = None,
    cti_port: int | None = None,
    sip_port: int | None = None,
    ready: Callable[[ServerInfo], None] | None = None,
    started: Callable[[Centre, ServerInfo], Any] | None = None,
    stop: asyncio.Event | None = None,
    start_ms: int | None = None,
    cluster: Cluster | None = None,
) -> ServeSummary:
    """Run the live centre until SIGINT/SIGTERM or ``stop``: the store writer, the restored router, the web
    site with the REST API and the chat widget, SMTP for e-mail, one WebSocket port for customers' chats
    (``/chat``) and agents' consoles (``/agent``). Ports come from ``[server]`` unless given here.

    ``started(centre, info)`` runs once everything listens (the demo starts its simulated traffic there;
    it may return an object with ``stop()``, called first at shutdown). Shutdown stops accepting, tells
    connected clients, commits everything pending and closes the database: no accepted contact is lost.

    With ``cluster`` this is an edge node (``--role edge``, ``docs/scaling.md``): the same front doors, the
    router in another process (``roles.open_edge``).
    """
    loop = asyncio.get_running_loop()
    reactor = install_reactor(loop)
    import websockets.asyncio.server as ws_server
    from twisted.internet.error import CannotListenError

    from contactcentre.edge.agents.gateway import AgentGateway
    from contactcentre.edge.chat.channel import ChatChannel
    from contactcentre.edge.cti.link import CtiServer
    from contactcentre.edge.email.channel import EmailChannel
    from contactcentre.edge.voice.callback import CallbackChannel
    from contactcentre.edge.voice.channel import VoiceChannel, switch_config
    from contactcentre.edge.voice.ivr import IvrRunner
    from contactcentre.edge.web import DashboardSite
    from contactcentre.edge.web.api import Api
    from contactcentre.edge.web.auth import WebAuth
    from contactcentre.edge.web.console import ConsolePage
    from contactcentre.edge.web.live import LiveHub
    from contactcentre.edge.web.metrics import MetricsResource
    from contactcentre.edge.web.widget import widget_resource
    from contactcentre.reporting.metrics import CentreMetrics, LoopLag
    from contactcentre.telephony import Switch

    srv = config.server
    host = srv.host if host is None else host
    http_port = srv.http_port if http_port is None else http_port
    smtp_port = srv.smtp_port if smtp_port is None else smtp_port
    ws_port = srv.ws_port if ws_port is None else ws_port
    cti_port = srv.cti_port if cti_port is None else cti_port
    sip_port = srv.sip_port if sip_port is None else sip_port
    cti_host, sip_host = srv.cti_host or host, srv.sip_host or host
    _route_twisted_logging()
    if cluster is None:
        instance = _lock_database(database_url)
        try:
            centre = await open_centre(config, database_url, loop=loop, start_ms=start_ms)
        except BaseException:
            instance.release()
            raise
    else:
        from contactcentre.server.roles import RoleError, open_edge

        instance = _NoLock()  # edges share the store; the routers' lease and fence keep one of them routing
        try:
            centre = await open_edge(config, database_url, cluster)
        except RoleError as exc:
            raise ServeError(str(exc)) from None
    stop = stop or asyncio.Event()
    signals: list[int] = []
    listening = None
    site: DashboardSite | None = None
    wss = None
    email: EmailChannel | None = None
    chat: ChatChannel | None = None
    # Web sessions: the site's pages and the REST API, and (for the console's WebSocket) the agent gateway.
    web_auth = WebAuth(centre)
    agents = AgentGateway(centre, web_auth=web_auth)
    extra: Any = None
    api: Any = None
    cti: CtiServer | None = None
    cti_token: str | None = None
    cti_listening = None
    voice: VoiceChannel | None = None
    ivr: IvrRunner | None = None
    callbacks: CallbackChannel | None = None
    sip: Any = None
    sip_listening = None
    live_hub: Any = None
    loop_lag: LoopLag | None = None
    try:
        takes_calls = any("voice" in q.channels for q in config.queues) and bool(config.agents)
        takes_calls = takes_calls and (cluster is None or cluster.voice)  # one edge of many runs the switch
        if srv.voice.enabled and takes_calls:
            # The simulated switch shares the centre's clock, so its events and the router's agree on time.
            run = f"{centre.now_ms():x}"[-8:]  # call ids are contact ids: unique to this run of the server
            switch = Switch(switch_config(config), start_ms=centre.now_ms(), call_prefix=f"call-{run}-")
            cti_token = srv.voice.cti_token or secrets.token_urlsafe(24)  # unset: this run's own, printed
            cti = CtiServer(
                switch,
                reactor,
                token=cti_token,
                login_timeout_s=srv.voice.cti_login_timeout_s,
                now_ms=centre.now_ms,
                allow_simulation=srv.voice.simulate_inbound,
            )
            voice = VoiceChannel.for_config(centre, cti.driver)
            voice.restore()
            if srv.voice.ivr:  # IVR numbers answer calls and queue them with the caller's choices (docs/ivr.md)
                ivr = IvrRunner.for_config(centre, cti.driver, reactor)
            if any("callback" in q.channels for q in config.queues):
                callbacks = CallbackChannel(centre, voice)  # dials through the voice channel's switch
                callbacks.restore()
            try:
                cti_listening = reactor.listenTCP(cti_port, cti, interface=cti_host)
            except CannotListenError as exc:
                raise ServeError(_cannot_listen("for CTI ", cti_host, cti_port, exc.socketError)) from None
            if srv.voice.sip:  # the SIP front door (docs/sip.md): SIP phones' calls arrive on the switch's trunks
                from twisted.internet.defer import maybeDeferred

                from contactcentre.edge.voice.sip import SipUas
                from contactcentre.edge.voice.sip_transport import SipTransport, source_limits

                uas = SipUas(sip_host, 0, limits=source_limits(srv.voice))  # the port: once it listens
                sip = SipTransport(cti.driver, reactor, host=sip_host, uas=uas)
                try:
                    sip_listening = reactor.listenUDP(sip_port, sip, interface=sip_host)
                except CannotListenError as exc:
                    raise ServeError(_cannot_listen("for SIP ", sip_host, sip_port, exc.socketError)) from None
        if srv.chat.enabled:
            chat = ChatChannel(centre)
            # An edge joining a centre only learns its chats: their windows are the edges' that hold them, and a
            # customer who resumes here is adopted (scaling.md).
            chat.restore(hold=cluster is None)
        chat_limit = srv.chat.max_frame_bytes
        live_hub = LiveHub(centre, web_auth)  # the supervisors' dashboards (/live), today rebuilt from the log
        await live_hub.start()

        async def route(ws: Any) -> None:
            path = ws.request.path.split("?", 1)[0]
            if path == "/chat" and chat is not None:
                ws.protocol.max_message_size = chat_limit  # a customer's frame limit, not the agents'
                await chat.handle(ws)
            elif path == "/live":
                await live_hub.handle(ws)
            else:
                await agents.handle(ws)

        def only_known_paths(conn: Any, request: Any) -> Any:
            if not getattr(conn, "admitted", True):
                return conn.respond(429, TOO_MANY_CONNECTIONS + "\n")
            path = request.path.split("?", 1)[0]
            if path in ("/agent", "/live") or (path == "/chat" and chat is not None):
                return None
            return conn.respond(404, "no such WebSocket endpoint (try /chat, /agent or /live)\n")

        try:
            # No permessage-deflate: chat and console frames are a few hundred bytes, where compressing costs
            # more CPU per frame than it saves, and each compressed socket keeps ~100 KiB of zlib state.
            wss = await ws_server.serve(
                route,
                host,
                ws_port,
                max_size=AGENT_MAX_FRAME,
                process_request=only_known_paths,
                compression=None,
                open_timeout=srv.limits.handshake_timeout_s,
                create_connection=counted_connection(PeerCount(srv.limits.max_connections_per_address)),
            )
        except OSError as exc:
            raise ServeError(_cannot_listen("for WebSockets ", host, ws_port, exc.strerror or exc)) from None
        real_ws_port = next(iter(wss.sockets)).getsockname()[1]
        pages_ = {b"chat": widget_resource(config, real_ws_port)} if chat is not None else {}
        pages_[b"agent"] = web_auth.guard(ConsolePage(config, real_ws_port), "agent")  # replaces the bare /agent
        # Counters run from this start on (Prometheus expects a reset at restart); gauges read live state.
        registry = CentreMetrics.attach(centre).registry
        pages_[b"metrics"] = MetricsResource(registry, token=srv.metrics_token)
        loop_lag = LoopLag(loop, registry, warn_s=srv.loop_lag_warn_s)
        loop_lag.start()
        api = Api(centre, web_auth=web_auth)
        site = DashboardSite(
            centre.driver,
            auth=web_auth,
            api=api.children(),
            pages_=pages_,
            ws_port=real_ws_port,
            max_connections_per_address=srv.limits.max_connections_per_address,
            request_timeout_s=srv.limits.handshake_timeout_s,
        )
        try:
            listening = reactor.listenTCP(http_port, site, interface=host)
        except CannotListenError as exc:
            raise ServeError(_cannot_listen("", host, http_port, exc.socketError)) from None
        real_smtp: int | None = None
        if srv.email.enabled:
            email = EmailChannel(centre)
            try:
                real_smtp = await email.start(host, smtp_port)
            except OSError as exc:
                raise ServeError(_cannot_listen("for SMTP ", host, smtp_port, exc.strerror or exc)) from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        real_http = listening.getHost().port
        info = ServerInfo(
            url=f"http://{_url_host(host)}:{real_http}/",
            host=host,
            http_port=real_http,
            smtp_port=real_smtp,
            ws_port=real_ws_port,
            database=centre.engine.url.render_as_string(hide_password=True),
            cti_port=cti_listening.getHost().port if cti_listening is not None else None,
            sip_port=sip_listening.getHost().port if sip_listening is not None else None,
            cti_host=cti_host if cti is not None else None,
            sip_host=sip_host if sip is not None else None,
            cti_token=cti_token,
        )
        instance.describe(http_port=real_http, ws_port=real_ws_port, smtp_port=real_smtp, cti_port=info.cti_port)
        # The agent WebSocket (another port) accepts the console's session only from the site's own pages.
        web_auth.add_origin(info.url)
        if host in ("127.0.0.1", "::1"):
            web_auth.add_origin(f"http://localhost:{real_http}/")
        if started is not None:
            extra = started(centre, info)
        if ready is not None:
            ready(info)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)

        async def step(what: str, fn: Callable[[], Any]) -> None:
            # One failing step must not keep the rest from running: above all the final commit.
            try:
                result = fn()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:
                log.exception("shutdown: %s failed; carrying on", what)

        if loop_lag is not None:
            loop_lag.stop()
        try:
            if extra is not None and hasattr(extra, "stop"):
                await step("stopping the demo traffic", extra.stop)
            if email is not None:
                await step("closing SMTP", email.stop)  # stop accepting mail first: whatever got a 250 is stored
            if listening is not None:
                await step("closing the web port", lambda: listening.stopListening().asFuture(loop))
            if chat is not None:
                await step("closing chats", chat.stop)
            await step("closing agent consoles", agents.stop)
            if live_hub is not None:
                await step("closing dashboards", live_hub.stop)
            if wss is not None:
                wss.close()
                await step("closing the WebSocket port", wss.wait_closed)
            if site is not None:
                await step("closing web connections", site.close_connections)
            if api is not None:
                await step("finishing API requests", api.drain)  # reads finish before the pool closes
            await step("finishing logins", web_auth.drain)
            if sip is not None:
                await step("hanging up SIP calls", sip.close)  # BYEs go out before the port closes
            if sip_listening is not None:
                await step("closing the SIP port", lambda: maybeDeferred(sip_listening.stopListening).asFuture(loop))
            if cti_listening is not None:
                await step("closing the CTI port", lambda: cti_listening.stopListening().asFuture(loop))
            if callbacks is not None:
                await step("closing the callback channel", callbacks.stop)
            if ivr is not None:
                await step("closing the IVR", ivr.stop)
            if voice is not None:
                await step("closing the voice channel", voice.stop)
            if cti is not None:
                await step("stopping the switch", cti.close)
        finally:
            router = centre.driver.router
            summary = ServeSummary(arrived=router.arrived, events_logged=0, refused=centre.driver.refused)
            try:
                if cluster is None:
                    await close_centre(centre)
                else:
                    from contactcentre.server.roles import close_edge

                    await close_edge(centre)  # type: ignore[arg-type]
            finally:
                instance.release()  # only now may another server take the database
    logged = centre.writer.committed if centre.writer is not None else 0
    return ServeSummary(summary.arrived, logged, summary.refused)


class _NoLock:
    """An edge takes no lock on the store: it never writes the log."""

    def describe(self, **ports: Any) -> None:
        pass

    def release(self) -> None:
        pass
