"""Centre configuration: TOML in, typed and checked structs out.

Every problem is reported as one ``ConfigError`` that names the file, the key and what is wrong, e.g.
``contactcentre/data/default.toml: queues[1].skills.billing: level 11 is outside 1-10``. The structs are msgspec
``Struct``s, so unknown keys (typos) are errors too, not silently ignored.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import tomllib
import typing
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import msgspec

from contactcentre.config_base import (
    ALWAYS_OPEN,
    MAX_LEVEL,
    MIN_LEVEL,
    WEEKDAYS,
    CalendarConfig,
    ConfigError,
    _Strict,
    convert,
    parse_range,
)
from contactcentre.events import Channel
from contactcentre.telephony.ivr.menu import QueueNode, load_menu

Strategy = Literal["longest_idle", "most_skilled", "least_occupied", "round_robin", "fewest_handled"]
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)

# shipped inside the package (package data), so an installed centre finds it from any directory
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "data" / "default.toml"


class SlaConfig(_Strict):
    """Answer (or first-response) target: ``target`` share within ``threshold_s``. ``warn_s`` raises a
    pre-breach warning (default 80 % of the threshold). ``hours`` names a calendar whose open hours are the
    only time the clock runs (e.g. Bronze e-mail: 24 business hours)."""

    threshold_s: float = 20.0
    target: float = 0.8
    warn_s: float | None = None
    hours: str | None = None


class ChannelConfig(_Strict):
    """Per-channel behaviour. ``exclusive``: a contact on this channel is never held beside other work."""

    exclusive: bool = False
    offer_timeout_s: float = 20.0
    wrap_up_s: float | Literal["manual"] = 0.0
    default_aht_s: float = 180.0
    sla: SlaConfig = msgspec.field(default_factory=SlaConfig)


class OverflowStep(_Strict):
    """What changes after a contact has waited ``after_s`` in its queue. Steps accumulate in order.

    ``relax``: lower the minimum level of a required skill. ``drop_skills``: stop requiring a skill.
    ``add_skill``: also eligible for agents with this skill (an alternative, not an extra condition).
    ``add_queues``: also eligible for the agents of these queues. ``move_to``: the contact moves to that
    queue (keeping its age). ``raise_priority``: add to its priority. ``leave``: the contact leaves the
    centre (state ``overflowed``), e.g. to voicemail; ``leave_to`` names where.
    """

    after_s: float
    relax: dict[str, int] = {}
    drop_skills: list[str] = []
    add_skill: dict[str, int] = {}
    add_queues: list[str] = []
    move_to: str | None = None
    raise_priority: int = 0
    leave: bool = False
    leave_to: str | None = None


class QueueConfig(_Strict):
    name: str
    skills: dict[str, int] = {}
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["voice", "chat", "email"])
    strategy: Strategy | None = None
    priority: int = 0
    sla: SlaConfig | None = None
    sla_by_channel: dict[Channel, SlaConfig] = {}
    overflow: list[OverflowStep] = []
    max_wait_s: float | None = None
    max_wait_action: str = "leave"
    max_depth: int | None = None
    when_full: str = "refuse"
    hours: str = ALWAYS_OPEN
    when_closed: str = "accept"
    description: str = ""
    label: str = ""  # what customers see (the chat widget's topic areas); default: the name, capitalised
    number: str | None = None  # the queue's number on the switch (default 2001, 2002, ...: default_number)
    callback_offer_after_s: float | None = None  # virtual hold: offer a callback when the call's EWT exceeds this


class TierConfig(_Strict):
    """A customer tier (Gold/Silver/Bronze, docs/routing.md). Its targets override the queue's for its customers."""

    priority: int = 0
    answer_s: float | None = None
    answer_target: float | None = None
    email_response_s: float | None = None
    email_target: float = 1.0
    hours: str | None = None
    account_manager: bool = False
    preferred_agent_timeout_s: float = 0.0


class AgentConfig(_Strict):
    id: str
    name: str = ""
    skills: dict[str, int] = {}
    capacity: dict[Channel, int] | None = None
    team: str = ""
    extension: str | None = None  # the agent's phone on the switch (default 1001, 1002, ...: default_number)


class RoutingConfig(_Strict):
    """Centre-wide routing policy.

    ``priority_weight_s``: one priority point is worth this many seconds of waiting. Ordering by
    ``wait + priority × weight`` lets urgent work jump ahead while nothing starves (priority aging).
    ``drain_for_exclusive``: an agent holding work (chats) takes nothing new ranked after a waiting
    exclusive contact (a call) it could take once free, so calls are not starved by a stream of chats.
    """

    strategy: Strategy = "longest_idle"
    priority_weight_s: float = 60.0
    drain_for_exclusive: bool = True
    offers_per_agent: int = 1
    away_after_missed_offer: bool = True
    away_after_reject: bool = False
    short_abandon_s: float = 5.0
    preferred_agent_timeout_s: float = 30.0
    transfer_agent_timeout_s: float = 30.0
    default_capacity: dict[Channel, int] = msgspec.field(
        default_factory=lambda: {"voice": 1, "chat": 3, "email": 5, "callback": 1}
    )


class DemoTraffic(_Strict):
    queue: str
    channel: Channel = "chat"
    per_hour: float = 60.0
    handle_s: float = 120.0


class DemoConfig(_Strict):
    """Seeded simulated traffic for ``contactcentre demo``."""

    seed: int = 1
    accept_delay_s: float = 2.0
    traffic: list[DemoTraffic] = []
    # The last this many [[agents]] get a demo user but no simulated console, so a person who logs in as one
    # does not take over (and disconnect) a simulated agent's work; the banner says which they are.
    agents_for_people: int = 2


class EmailServerConfig(_Strict):
    """The e-mail channel: inbound SMTP on ``server.smtp_port``, outbound through a smarthost.

    ``queues_by_address`` routes by the address a customer wrote to (``billing@...`` → ``billing``);
    everything else goes to ``queue``. ``address`` is our From for acknowledgements and replies.

    Inbound mail is parsed in ``parse_workers`` worker processes, never on the server's event loop: a mail
    that takes longer than ``parse_timeout_s`` to read, or has more than ``max_parts`` MIME parts or parts
    nested deeper than ``max_depth``, is refused with a 5xx at DATA (its sender gets a bounce; nothing that
    was answered 250 is dropped) and the worker reading it is replaced. A header section longer than
    ``max_header_bytes`` is refused before any parsing, and mails from one client address hold at most
    ``parse_workers - 1`` workers at a time (when there are two or more), so one client cannot make the others'
    mail wait. ``ack_once_per_s``: one automatic
    acknowledgement per sender mailbox in this period at most (RFC 3834), so two responders cannot loop
    (``ann+1@`` and ``ann+2@`` are ``ann@``'s mailbox)."""

    enabled: bool = True
    queue: str | None = None  # default: the first queue that serves e-mail
    queues_by_address: dict[str, str] = {}
    address: str = "support@contactcentre.invalid"
    max_message_bytes: int = 10 * 1024 * 1024
    auto_acknowledge: bool = True
    smarthost: str = "127.0.0.1"
    smarthost_port: int = 25
    send_attempts: int = 5
    # The header section (to the first empty line), checked on the raw bytes before any parsing: no customer's
    # mail has megabytes of headers, and parsing those (300,000 encoded words) takes a worker seconds.
    max_header_bytes: int = 256 * 1024
    max_parts: int = 500  # MIME parts in one mail, the message itself included
    max_depth: int = 20  # multipart / message/rfc822 nesting levels; at most 100
    parse_timeout_s: float = 15.0  # CPU a mail may take to parse (a normal 10 MB HTML mail needs a few seconds)
    parse_workers: int = 2
    ack_once_per_s: float = 86400.0


class ChatServerConfig(_Strict):
    """The web chat: customers on ``ws://HOST:WS_PORT/chat``. ``offline_queue`` takes the offline messages
    (an e-mail-like contact) left when nobody can answer a chat."""

    enabled: bool = True
    queue: str | None = None  # default: the first queue that serves chat
    offline_queue: str | None = None  # default: the first queue that serves e-mail
    max_frame_bytes: int = 16 * 1024
    max_messages_per_10s: int = 20
    resume_window_s: float = 300.0


class VoiceServerConfig(_Strict):
    """The simulated switch and its CTI link (``docs/cti.md``) on ``server.cti_port``. Its ring-no-answer
    timer is a safety net behind the router's voice offer timeout (``ring_timeout_s`` default: that + 5 s)."""

    enabled: bool = True
    trunks: int = 30
    ring_timeout_s: float | None = None
    simulate_inbound: bool = True  # the CTI link's SimulateInbound request (a test trunk)
    ivr: dict[str, str] = {}  # IVR number -> menu file (docs/ivr.md), relative to this configuration file
    ivr_ms_per_word: int = 400  # no media: a prompt counts as played after this many ms per word
    sip: bool = True  # the SIP front door on ``server.sip_port``: calls from SIP phones onto the switch's trunks
    # The CTI link's secret: every connection's first line is {"request": "Authenticate", "token": ...}
    # (docs/cti.md), else it is closed. It gives full control of the switch. Unset: a random token for each
    # start, printed with the CTI port. At least 16 characters.
    cti_token: str | None = None
    cti_login_timeout_s: float = 10.0  # a CTI connection that has not authenticated by then is closed
    # SIP flood limits per source address (docs/sip.md): new calls a second on average and at once, calls held
    # at a time. Past them: one 503 with Retry-After (never resent), then silence for sip_retry_after_s.
    # sip_trusted: addresses exempt, e.g. a SIP proxy or a carrier's trunk that brings every call.
    # The same token bucket answers requests outside a call (OPTIONS, REGISTER, stray BYE …). A source that has
    # never ACKed one of our final responses may be forged: at most sip_unacked_per_source of its calls' final
    # responses are resent at a time (at 0.5, 1.5, 3.5 s; given up at 7.5 s, with no BYE); others go once.
    sip_invites_per_s: float = 1.0
    sip_invite_burst: int = 10
    sip_calls_per_source: int = 10
    sip_retry_after_s: int = 10
    sip_unacked_per_source: int = 2
    sip_trusted: list[str] = []


class AuthConfig(_Strict):
    """Web console login (``docs/web.md``): session lifetimes, login throttling, the second factor.

    ``require_totp``: supervisors and admins must have enrolled a TOTP second factor to log in (those who
    enrolled always need it). ``origins``: extra origins (``https://console.example.com``) accepted on
    unsafe requests and WebSocket handshakes besides the site's own, e.g. behind a reverse proxy.
    ``socket_recheck_s``: how often the server checks that the credentials of its open WebSockets (agent
    consoles, dashboards) are still live, for changes made outside it (``contactcentre user disable`` is
    another process); the server's own logout and ``/admin`` close those sockets at once."""

    session_idle_s: float = 30 * 60.0
    session_max_s: float = 12 * 3600.0
    require_totp: bool = False
    max_failures_per_user: int = 5
    max_failures_per_address: int = 20
    lockout_s: float = 30.0  # doubles with each lockout in a row, up to lockout_max_s
    lockout_max_s: float = 15 * 60.0
    origins: list[str] = []
    socket_recheck_s: float = 10.0


class TranscriptConfig(_Strict):
    """How much of a conversation one agent-protocol frame or REST answer carries (``docs/protocol.md``,
    ``docs/web.md``), so that a case of many large e-mails cannot make a frame or a response of hundreds of
    megabytes. ``body_chars``: each message body is cut to this many characters, flagged ``truncated`` (the
    whole text on request). ``messages``: a transcript carries the newest this many messages, with a cursor
    to page older ones. ``max_page``: the most messages a REST client may ask for in one page (``?limit=``).
    ``page_chars``: a page (a frame's transcript, a REST page) holds no more messages than fit this many
    characters of (cut) bodies, at least one; older ones come with the cursor. Counted in characters: a
    character is up to four bytes of UTF-8, so a page's bodies are at most 4 × ``page_chars`` bytes."""

    body_chars: int = 64 * 1024
    messages: int = 50
    max_page: int = 500
    page_chars: int = 1024 * 1024


class LimitsConfig(_Strict):
    """Per-client caps, so one address cannot starve everyone else of sockets, queue places or store rows. An
    "address" is the peer's IPv4 address, or its IPv6 /64 network: behind a reverse proxy or one office NAT
    every client has the same one, so raise the caps there.

    ``max_connections_per_address``: open connections from one address, counted on each port separately
    (WebSocket, web, SMTP); one more is refused (WebSocket and web: HTTP 429; SMTP: 421).
    ``handshake_timeout_s``: a whole HTTP request (request line, headers and body; timed from the connection,
    or from the request's first byte on a kept-alive connection), and a WebSocket's opening handshake, must
    arrive within this long, or the connection is closed (HTTP: after a 408).
    ``new_chats_per_minute`` and ``new_chats_burst``: a token bucket of chat hellos per address (the burst at
    once, then this many a minute); a hello beyond it is answered ``rate_limited`` and stores nothing.
    ``silent_chat_grace_s``: a waiting chat whose customer never sent a line and whose socket went away has
    left after this long, instead of holding its queue place for the whole ``chat.resume_window_s``."""

    max_connections_per_address: int = 100
    handshake_timeout_s: float = 10.0
    new_chats_per_minute: float = 12.0
    new_chats_burst: int = 10
    silent_chat_grace_s: float = 30.0


class ServerConfig(_Strict):
    """Where ``contactcentre serve`` listens (127.0.0.1 unless told otherwise; 0 picks a free port).

    ``secure_cookies``: mark the session cookie ``Secure`` even on plain HTTP requests, for a server behind a
    TLS-terminating proxy (the cookie is always ``Secure`` on a TLS connection). Leave it off for the demo on
    http://127.0.0.1: a browser would not send a ``Secure`` cookie back over plain HTTP."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    smtp_port: int = 2525
    ws_port: int = 8081
    cti_port: int = 8082
    sip_port: int = 5070  # the SIP front door (UDP, docs/sip.md); not 5060, to keep clear of a real PBX
    # The CTI link and the SIP front door listen on these addresses (default: ``host``): e.g. the web site on
    # a public address and the CTI link on the call-control network only.
    cti_host: str | None = None
    sip_host: str | None = None
    email: EmailServerConfig = msgspec.field(default_factory=EmailServerConfig)
    voice: VoiceServerConfig = msgspec.field(default_factory=VoiceServerConfig)
    chat: ChatServerConfig = msgspec.field(default_factory=ChatServerConfig)
    secure_cookies: bool = False
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    transcripts: TranscriptConfig = msgspec.field(default_factory=TranscriptConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    # Bearer token for GET /metrics; unset, only loopback clients may scrape (docs/metrics.md).
    metrics_token: str | None = None
    # The event loop serves every channel: a callback that holds it longer than this is logged as a warning
    # (each lateness is also in the contactcentre_event_loop_lag_seconds histogram, docs/metrics.md).
    loop_lag_warn_s: float = 0.05


def default_number(lead: int, index: int, count: int) -> str:
    """The switch number of the ``index``-th of ``count`` agents (``lead`` 1) or queues (``lead`` 2) that name
    none: the lead digit, then the place counted from 1, zero-padded to at least three digits and to as many as
    the largest place needs. Agents' and queues' defaults differ in their first digit, so they never collide
    at any size (1001…1999 and 2001…2999 up to 999 of each; 1,000 agents give 10001…11000)."""
    width = max(3, len(str(count)))
    return f"{lead}{index + 1:0{width}d}"


def _default_channels() -> dict[str, ChannelConfig]:
    return {
        "voice": ChannelConfig(exclusive=True, offer_timeout_s=15, wrap_up_s=30, default_aht_s=240),
        "chat": ChannelConfig(offer_timeout_s=30, wrap_up_s=10, default_aht_s=420),
        "email": ChannelConfig(
            offer_timeout_s=120,
            wrap_up_s=0,
            default_aht_s=360,
            sla=SlaConfig(threshold_s=4 * 3600, target=0.9),
        ),
        "callback": ChannelConfig(exclusive=True, offer_timeout_s=30, wrap_up_s=30, default_aht_s=240),
        "outbound": ChannelConfig(exclusive=True, offer_timeout_s=30, wrap_up_s=30, default_aht_s=240),
    }


class CallbacksConfig(_Strict):
    """Callbacks (``docs/routing.md``): dialled only inside ``window`` (local time of the customer's number,
    else of the centre); an unanswered or busy attempt is tried again ``retry_after_s`` later, up to
    ``max_attempts`` attempts in all."""

    window: str = "09:00-20:00"
    max_attempts: int = 3
    retry_after_s: float = 900.0


class DispositionsConfig(_Strict):
    """The controlled list of wrap-up disposition codes agents choose from (``docs/web.md``), and what a code
    does to the contact's case when the wrap-up closes with it (``case_status``: code -> the case's new status,
    e.g. ``{ resolved = "solved" }``). Default: no code moves a case, which then stays as it was (``new``)."""

    codes: list[str] = []
    case_status: dict[str, Literal["open", "pending", "solved", "closed"]] = {}


class CannedResponse(_Strict):
    """A ready-made answer an agent can insert: ``channel`` limits it to chat or e-mail (none: both)."""

    name: str
    text: str
    channel: Literal["chat", "email"] | None = None


CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # disposition codes: short, stable, safe in URLs and logs
MAX_CANNED_TEXT = 4000  # the chat widget's longest message


class CentreConfig(_Strict):
    name: str = "contactcentre"
    timezone: str = "UTC"
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    channels: dict[Channel, ChannelConfig] = msgspec.field(default_factory=_default_channels)
    skills: dict[str, str] = {}
    calendars: dict[str, CalendarConfig] = {}
    tiers: dict[str, TierConfig] = {}
    queues: list[QueueConfig] = []
    agents: list[AgentConfig] = []
    demo: DemoConfig | None = None
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    callbacks: CallbacksConfig = msgspec.field(default_factory=CallbacksConfig)
    dispositions: DispositionsConfig = msgspec.field(default_factory=DispositionsConfig)
    canned: list[CannedResponse] = []

    def queue(self, name: str) -> QueueConfig:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    def channel(self, name: str) -> ChannelConfig:
        return self.channels.get(name) or _default_channels()[name]

    def extensions(self) -> dict[str, str]:
        """Agent id -> extension on the switch: its own, else ``1`` and its place in the list (1001, 1002, …)."""
        return {a.id: a.extension or default_number(1, i, len(self.agents)) for i, a in enumerate(self.agents)}

    def queue_numbers(self) -> dict[str, str]:
        """Queue name -> its number on the switch: its own, else ``2`` and its place (2001, 2002, …)."""
        return {q.name: q.number or default_number(2, i, len(self.queues)) for i, q in enumerate(self.queues)}

    def first_queue_for(self, channel: str) -> str | None:
        return next((q.name for q in self.queues if channel in q.channels), None)


# ------------------------------------------------------------------------------------------------ loading


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> CentreConfig:
    """Read and check a centre configuration file."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse_config(data, source)


def parse_config(data: dict[str, Any], source: str = "<config>") -> CentreConfig:
    """Typed, checked configuration from already-parsed TOML data."""
    channels = data.get("channels")
    if isinstance(channels, dict):
        # A [channels.voice] table (and its sla) adjusts voice's defaults rather than replacing them wholesale.
        data = {**data, "channels": _merged(msgspec.to_builtins(_default_channels()), channels)}
    cfg = convert(data, CentreConfig, source)
    if cfg.server.voice.ivr:
        cfg.server.voice.ivr = {n: str(_menu_path(source, p)) for n, p in cfg.server.voice.ivr.items()}
    _check(cfg, source)
    return cfg


def _menu_path(source: str, name: str) -> Path:
    """An IVR menu file named relative to the configuration file, or else to the shipped ``contactcentre/data/``
    directory (so a copy of the demo configuration elsewhere still finds ``ivr/main.toml``)."""
    here = Path(source).parent if Path(source).is_file() else Path.cwd()
    first = here / name
    shipped = DEFAULT_CONFIG_PATH.parent / name
    return shipped if not first.exists() and shipped.exists() else first


def _check_sip_limits(voice: VoiceServerConfig, fail: Any) -> None:
    if voice.sip_invites_per_s <= 0:
        fail("server.voice.sip_invites_per_s", "must be > 0")
    for key in ("sip_invite_burst", "sip_calls_per_source", "sip_retry_after_s"):
        if getattr(voice, key) < 1:
            fail(f"server.voice.{key}", "must be at least 1")
    if voice.sip_unacked_per_source < 0:
        fail("server.voice.sip_unacked_per_source", "must be 0 or more")
    for i, address in enumerate(voice.sip_trusted):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail(f"server.voice.sip_trusted[{i}]", f"{address!r} is not an IP address")


def _check_ivr(cfg: CentreConfig, fail: Any) -> None:
    """Every IVR menu loads and fits this centre (its queues serve voice, its skills and calendars exist)."""
    voice = cfg.server.voice
    if voice.ivr_ms_per_word < 0:
        fail("server.voice.ivr_ms_per_word", "must be >= 0")
    for number, path in voice.ivr.items():
        try:
            menu = load_menu(path, cfg)
        except ConfigError as err:
            fail(f"server.voice.ivr.{number}", str(err))
        for name, node in menu.nodes.items():
            if isinstance(node, QueueNode) and "voice" not in cfg.queue(node.queue).channels:
                fail(f"server.voice.ivr.{number}", f"{path}: nodes.{name}.queue: {node.queue!r} does not serve voice")


def _check_dispositions_and_canned(cfg: CentreConfig, fail: Any) -> None:
    codes = cfg.dispositions.codes
    for i, code in enumerate(codes):
        if not CODE.fullmatch(code):
            fail(f"dispositions.codes[{i}]", f"{code!r}: lower-case letters, digits and _ . - (at most 64)")
        if codes.index(code) != i:
            fail(f"dispositions.codes[{i}]", f"{code!r} is listed more than once")
    for code in cfg.dispositions.case_status:
        if codes and code not in codes:  # a typo would silently never move a case
            fail(f"dispositions.case_status.{code}", f"{code!r} is not one of dispositions.codes")
        elif not CODE.fullmatch(code):
            fail(f"dispositions.case_status.{code}", f"{code!r}: lower-case letters, digits and _ . - (at most 64)")
    names = [c.name for c in cfg.canned]
    for i, c in enumerate(cfg.canned):
        key = f"canned[{i}]"
        if not c.name.strip() or len(c.name) > 64:
            fail(f"{key}.name", "must be 1-64 characters")
        if not c.text.strip():
            fail(f"{key}.text", "must not be empty")
        if len(c.text) > MAX_CANNED_TEXT:
            fail(f"{key}.text", f"{len(c.text)} characters; at most {MAX_CANNED_TEXT}")
        if names.index(c.name) != i:  # agents pick responses by name
            fail(f"{key}.name", f"{c.name!r} is defined more than once")


def _check_transcripts(cfg: CentreConfig, fail: Any) -> None:
    t = cfg.server.transcripts
    for key in ("body_chars", "messages", "max_page", "page_chars"):
        if getattr(t, key) < 1:
            fail(f"server.transcripts.{key}", "must be at least 1")


def _check_limits(limits: LimitsConfig, fail: Any) -> None:
    if limits.max_connections_per_address < 1:
        fail("server.limits.max_connections_per_address", "must be at least 1")
    if limits.new_chats_burst < 1 or limits.new_chats_per_minute <= 0:
        fail("server.limits", "new_chats_burst must be at least 1 and new_chats_per_minute > 0")
    for key in ("handshake_timeout_s", "silent_chat_grace_s"):
        if getattr(limits, key) <= 0:
            fail(f"server.limits.{key}", "must be > 0")


def _check(cfg: CentreConfig, source: str) -> None:
    def fail(key: str, problem: str) -> None:
        raise ConfigError(source, key, problem)

    _check_zone(cfg.timezone, "timezone", fail)
    token = cfg.server.metrics_token
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        fail("server.metrics_token", "must be at least 16 printable ASCII characters without spaces")
    queue_names = [q.name for q in cfg.queues]
    queues = set(queue_names)
    calendars = set(cfg.calendars) | {ALWAYS_OPEN}
    known_skills = set(cfg.skills)

    def skill_ok(key: str, skill: str) -> None:
        if known_skills and skill not in known_skills:
            fail(key, f"unknown skill {skill!r} (declare it under [skills])")

    def levels(key: str, skills: dict[str, int]) -> None:
        for skill, level in skills.items():
            skill_ok(f"{key}.{skill}", skill)
            if not MIN_LEVEL <= level <= MAX_LEVEL:
                fail(f"{key}.{skill}", f"level {level} is outside {MIN_LEVEL}-{MAX_LEVEL}")

    def calendar_ok(key: str, name: str | None) -> None:
        if name is not None and name not in calendars:
            fail(key, f"unknown calendar {name!r} (known: {', '.join(sorted(calendars))})")

    def sla_ok(key: str, sla: SlaConfig) -> None:
        if sla.threshold_s <= 0:
            fail(f"{key}.threshold_s", "must be > 0")
        if not 0 < sla.target <= 1:
            fail(f"{key}.target", f"{sla.target} is not a share in (0, 1]")
        if sla.warn_s is not None and not 0 < sla.warn_s <= sla.threshold_s:
            fail(f"{key}.warn_s", "must be > 0 and not after the threshold")
        calendar_ok(f"{key}.hours", sla.hours)

    r = cfg.routing
    if r.priority_weight_s <= 0:
        fail("routing.priority_weight_s", "must be > 0 (it is what keeps low priorities from starving)")
    if r.offers_per_agent < 1:
        fail("routing.offers_per_agent", "must be at least 1")
    for ch, n in r.default_capacity.items():
        if n < 0:
            fail(f"routing.default_capacity.{ch}", "must be >= 0")

    for ch, cc in cfg.channels.items():
        if cc.offer_timeout_s <= 0:
            fail(f"channels.{ch}.offer_timeout_s", "must be > 0")
        if cc.wrap_up_s != "manual" and cc.wrap_up_s < 0:
            fail(f"channels.{ch}.wrap_up_s", 'must be >= 0 or "manual"')
        if cc.default_aht_s <= 0:
            fail(f"channels.{ch}.default_aht_s", "must be > 0")
        sla_ok(f"channels.{ch}.sla", cc.sla)

    if parse_range(cfg.callbacks.window) is None:
        fail("callbacks.window", f'{cfg.callbacks.window!r} is not a range like "09:00-20:00"')
    if cfg.callbacks.max_attempts < 1:
        fail("callbacks.max_attempts", "must be >= 1")
    if cfg.callbacks.retry_after_s < 0:
        fail("callbacks.retry_after_s", "must be >= 0")
    for name, cal in cfg.calendars.items():
        key = f"calendars.{name}"
        _check_zone(cal.timezone, f"{key}.timezone", fail)
        for i, wd in enumerate(WEEKDAYS):
            for j, rng in enumerate(cal.day(i)):
                if parse_range(rng) is None:
                    fail(f"{key}.{wd}[{j}]", f'{rng!r} is not a range like "08:00-17:30"')
        if not any(cal.day(i) for i in range(7)):
            fail(key, "has no open hours on any weekday")
        for j, day in enumerate(cal.holidays):
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                fail(f"{key}.holidays[{j}]", f'{day!r} is not a date like "2026-12-25"')

    for name, tier in cfg.tiers.items():
        key = f"tiers.{name}"
        if tier.answer_s is not None and tier.answer_s <= 0:
            fail(f"{key}.answer_s", "must be > 0")
        if tier.answer_target is not None and not 0 < tier.answer_target <= 1:
            fail(f"{key}.answer_target", "is not a share in (0, 1]")
        if tier.email_response_s is not None and tier.email_response_s <= 0:
            fail(f"{key}.email_response_s", "must be > 0")
        if not 0 < tier.email_target <= 1:
            fail(f"{key}.email_target", "is not a share in (0, 1]")
        calendar_ok(f"{key}.hours", tier.hours)

    for i, q in enumerate(cfg.queues):
        key = f"queues[{i}]"
        if not q.name:
            fail(f"{key}.name", "must not be empty")
        if queue_names.index(q.name) != i:
            fail(f"{key}.name", f"queue {q.name!r} is defined more than once")
        levels(f"{key}.skills", q.skills)
        if not q.channels:
            fail(f"{key}.channels", "a queue must serve at least one channel")
        if q.sla:
            sla_ok(f"{key}.sla", q.sla)
        for ch, sla in q.sla_by_channel.items():
            sla_ok(f"{key}.sla_by_channel.{ch}", sla)
        calendar_ok(f"{key}.hours", q.hours)

        def serves_all(key: str, target: str, q: QueueConfig = q) -> None:
            missing = [ch for ch in q.channels if ch not in cfg.queue(target).channels]
            if missing:
                fail(key, f"queue {target!r} does not serve {', '.join(missing)}, which {q.name!r} does")

        for field, value, allowed in (
            ("max_wait_action", q.max_wait_action, ("leave",)),
            ("when_full", q.when_full, ("refuse",)),
            ("when_closed", q.when_closed, ("accept", "refuse")),
        ):
            if value not in allowed and value not in queues:
                fail(f"{key}.{field}", f"{value!r} is neither {' nor '.join(map(repr, allowed))} nor a queue")
            if value == q.name:
                fail(f"{key}.{field}", "a queue cannot overflow into itself")
            if value in queues:
                serves_all(f"{key}.{field}", value)
        if q.max_wait_s is not None and q.max_wait_s <= 0:
            fail(f"{key}.max_wait_s", "must be > 0")
        if q.max_depth is not None and q.max_depth < 1:
            fail(f"{key}.max_depth", "must be at least 1")
        last = 0.0
        for j, step in enumerate(q.overflow):
            sk = f"{key}.overflow[{j}]"
            if step.after_s < 0 or (j and step.after_s <= last):
                fail(f"{sk}.after_s", "steps must come in increasing order of after_s, from 0")
            last = step.after_s
            levels(f"{sk}.relax", step.relax)
            for skill in step.relax:
                if skill not in q.skills:
                    fail(f"{sk}.relax.{skill}", f"queue {q.name!r} does not require {skill!r}")
            for skill in step.drop_skills:
                skill_ok(f"{sk}.drop_skills", skill)
            levels(f"{sk}.add_skill", step.add_skill)
            for other in [*step.add_queues, *([step.move_to] if step.move_to else [])]:
                if other not in queues:
                    fail(sk, f"unknown queue {other!r}")
                if other == q.name:
                    fail(sk, "a queue cannot overflow into itself")
            if step.move_to:
                serves_all(f"{sk}.move_to", step.move_to)
            if step.leave and step.move_to:
                fail(sk, "a step cannot both leave and move_to")

    cycle = _exit_cycle(cfg)
    if cycle:
        fail("queues", f"waiting contacts would be moved round in a circle: {' -> '.join(cycle)}")

    agent_ids = [a.id for a in cfg.agents]
    for i, a in enumerate(cfg.agents):
        key = f"agents[{i}]"
        if not a.id:
            fail(f"{key}.id", "must not be empty")
        if agent_ids.index(a.id) != i:
            fail(f"{key}.id", f"agent {a.id!r} is defined more than once")
        levels(f"{key}.skills", a.skills)
        for ch, n in (a.capacity or {}).items():
            if n < 0:
                fail(f"{key}.capacity.{ch}", "must be >= 0")

    _check_dispositions_and_canned(cfg, fail)
    _check_transcripts(cfg, fail)

    if cfg.demo:
        for i, t in enumerate(cfg.demo.traffic):
            if t.queue not in queues:
                fail(f"demo.traffic[{i}].queue", f"unknown queue {t.queue!r}")
            if t.channel not in cfg.queue(t.queue).channels:
                fail(f"demo.traffic[{i}].channel", f"queue {t.queue!r} does not serve {t.channel}")
            if t.per_hour <= 0 or t.handle_s <= 0:
                fail(f"demo.traffic[{i}]", "per_hour and handle_s must be > 0")
        if not 0 <= cfg.demo.agents_for_people <= len(cfg.agents):
            fail("demo.agents_for_people", f"must be between 0 and the {len(cfg.agents)} agents")

    srv = cfg.server
    seen_numbers: dict[str, str] = {}
    numbered = [(f"agents[{i}].extension", n) for i, n in enumerate(cfg.extensions().values())]
    numbered += [(f"queues[{i}].number", n) for i, n in enumerate(cfg.queue_numbers().values())]
    numbered += [(f"server.voice.ivr.{n}", n) for n in srv.voice.ivr]
    for key, number in numbered:
        if not number or number.startswith("T"):
            fail(key, f"{number!r}: a switch number must not be empty or start with 'T' (trunks do)")
        if number in seen_numbers:
            fail(key, f"number {number!r} is already {seen_numbers[number]}")
        seen_numbers[number] = key
    if srv.voice.trunks < 1:
        fail("server.voice.trunks", "must be at least 1")
    token = srv.voice.cti_token
    if token is not None and (len(token) < 16 or not token.isprintable() or any(c.isspace() for c in token)):
        fail("server.voice.cti_token", "must be at least 16 printable characters without spaces")
    if srv.voice.cti_login_timeout_s <= 0:
        fail("server.voice.cti_login_timeout_s", "must be > 0")
    _check_sip_limits(srv.voice, fail)
    _check_ivr(cfg, fail)
    auth = srv.auth
    if not 60 <= auth.session_idle_s <= auth.session_max_s:
        fail("server.auth", "session_idle_s must be at least 60 and at most session_max_s")
    if auth.max_failures_per_user < 1 or auth.max_failures_per_address < 1:
        fail("server.auth", "max_failures_per_user and max_failures_per_address must be at least 1")
    if not 0 < auth.lockout_s <= auth.lockout_max_s:
        fail("server.auth", "lockout_s must be > 0 and at most lockout_max_s")
    if not 0 < auth.socket_recheck_s <= 3600:
        fail("server.auth", "socket_recheck_s must be > 0 and at most 3600")
    for i, origin in enumerate(auth.origins):
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            fail(f"server.auth.origins[{i}]", f"{origin!r} is not an origin like https://console.example.com")
    _check_limits(srv.limits, fail)
    if not srv.loop_lag_warn_s > 0:
        fail("server.loop_lag_warn_s", "must be > 0")
    for key in ("http_port", "smtp_port", "ws_port", "cti_port"):
        if not 0 <= getattr(srv, key) <= 65535:
            fail(f"server.{key}", f"{getattr(srv, key)} is not a port (0-65535; 0 picks a free one)")

    def serves(key: str, queue: str | None, channel: str) -> None:
        if queue is None:
            return
        if queue not in queues:
            fail(key, f"unknown queue {queue!r}")
        if channel not in cfg.queue(queue).channels:
            fail(key, f"queue {queue!r} does not serve {channel}")

    if srv.email.enabled and cfg.queues:
        serves("server.email.queue", srv.email.queue, "email")
        for address, q in srv.email.queues_by_address.items():
            serves(f"server.email.queues_by_address.{address}", q, "email")
        if srv.email.max_message_bytes < 1024:
            fail("server.email.max_message_bytes", "must be at least 1024")
        if srv.email.send_attempts < 1:
            fail("server.email.send_attempts", "must be at least 1")
        if srv.email.max_header_bytes < 1024:
            fail("server.email.max_header_bytes", "must be at least 1024")
        for key in ("max_parts", "max_depth", "parse_workers"):
            if getattr(srv.email, key) < 1:
                fail(f"server.email.{key}", "must be at least 1")
        if srv.email.max_depth > 100:  # edge.email.channel.MAX_DEPTH_LIMIT: the parser's stack ends near 1000 levels
            fail("server.email.max_depth", "must be at most 100")
        if not srv.email.parse_timeout_s > 0:
            fail("server.email.parse_timeout_s", "must be > 0")
        if srv.email.ack_once_per_s < 0:
            fail("server.email.ack_once_per_s", "must be >= 0")
    if srv.chat.enabled and cfg.queues:
        serves("server.chat.queue", srv.chat.queue, "chat")
        serves("server.chat.offline_queue", srv.chat.offline_queue, "email")
        if srv.chat.max_frame_bytes < 256:
            fail("server.chat.max_frame_bytes", "must be at least 256")
        if srv.chat.max_messages_per_10s < 1:
            fail("server.chat.max_messages_per_10s", "must be at least 1")


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` laid over ``defaults``, table by table."""
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _exit_cycle(cfg: CentreConfig) -> list[str] | None:
    """Queues that hand a waiting contact on to one another in a circle (max wait or overflow moves)."""
    edges: dict[str, set[str]] = {q.name: set() for q in cfg.queues}
    for q in cfg.queues:
        if q.max_wait_action in edges:
            edges[q.name].add(q.max_wait_action)
        for step in q.overflow:
            if step.move_to:
                edges[q.name].add(step.move_to)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(n: str, path: list[str]) -> list[str] | None:
        state[n] = 1
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                return [*path[path.index(m) :], m] if m in path else [n, m]
            if m not in state:
                found = visit(m, [*path, m])
                if found:
                    return found
        state[n] = 2
        return None

    for name in edges:
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def _check_zone(name: str, key: str, fail: Any) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        fail(key, f"unknown time zone {name!r}")
