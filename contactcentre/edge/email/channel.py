"""The e-mail channel: customers' mail in over SMTP (aiosmtpd on the centre's loop), agents' replies and
acknowledgements out through a smarthost.

Inbound, one SMTP transaction becomes one contact. The message is parsed and checked first, in a worker process
with a time budget so that no mail can hold the event loop every channel runs on (anything malformed, too complex
or too slow to read gets a 5xx and nothing is stored; a header section past ``max_header_bytes`` is refused
before that, and one client address holds at most all workers but one), the sender is identified, the mail is
threaded into a case of that customer's (In-Reply-To / References against stored Message-IDs, then a
``[#C-XXXXXX]`` token in the subject, else a new case), and then the stored message, the contact's arrival, the
case's due time and the auto-acknowledgement are committed in one transaction before the client hears ``250``. A
client that loses our answer retries with the same Message-ID; that is recognised and answered ``250`` without a
second contact (a mail without a Message-ID is given one derived from its envelope and its bytes, so its retry is
recognised too).

Outbound, a message is first logged as ``MessageSent`` (the store records it ``delivery='queued'``), then
handed to the smarthost from a thread; the outcome lands in ``messages.delivery`` (``sent`` or, after
``send_attempts`` tries or a permanent refusal, ``failed``). Messages still queued when the server stopped are
sent when it starts again, with their original Message-ID, so a duplicate is recognisable as one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import email
import email.policy
import email.utils
import functools
import hashlib
import logging
import math
import multiprocessing
import re
import smtplib
import weakref
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email import errors as email_errors
from email.headerregistry import Address
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pebble import ProcessExpired, ProcessPool

from contactcentre.edge.limits import TOO_MANY_CONNECTIONS, address_key, capped
from contactcentre.events import (
    ContactArrived,
    ContactFailed,
    ContactQueued,
    Event,
    MessageReceived,
    MessageSent,
    clean_text,
)
from contactcentre.store import cases as case_store
from contactcentre.store import customers as customer_store
from contactcentre.store.identity import IdentityError, mailbox, normalise_email
from contactcentre.store.mail import (
    Intake,
    mail_intake,
    queued_mail,
    record_delivery,
    reply_context,
)
from contactcentre.store.ops import CaseTouched, FirstResponse

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre

log = logging.getLogger(__name__)

T = TypeVar("T")

TEMPLATES = Path(__file__).with_name("templates")
SYSTEM_AGENT = "system"  # agent_id of the centre's own messages (acknowledgements)

# Outbound retries only bridge a smarthost hiccup; the smarthost itself queues for days.
RETRY_BASE_S = 30.0
RETRY_MAX_S = 3600.0
SEND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
WORKER_START_S = 30.0  # for a parsing worker to start (import the channel's modules) on a busy machine
MAX_RECIPIENTS = 100  # per SMTP transaction; each is kept in memory until DATA ends
# A transaction that read before writing fails at once on SQLite when another committed in between (its WAL
# snapshot is stale; busy_timeout does not apply), and two first mails of one new sender race for one identity
# on PostgreSQL: the work runs again.

MAX_ID = 500  # characters in a Message-ID we keep (the column holds 998)
MAX_REFERENCES = 50
MAX_NAME = 120  # a display name longer than this is not a name
MAX_SUBJECT = 998
MAX_PARTS = 500  # the defaults of server.email.max_parts and max_depth, for parse_inbound called alone
MAX_DEPTH = 20
# The highest max_depth the configuration accepts: the parser recurses once per level and its stack ends near
# 1000 levels, so every mail it cannot read for nesting lies past the cap and gets the cap's 552.
MAX_DEPTH_LIMIT = 100

# Structural defects: the parser had to guess where parts begin or end, so what we would store is a guess.
# Lesser defects (bad base64 padding, raw 8-bit headers) are repaired by the parser and accepted: refusing a
# customer's mail over them helps nobody.
FATAL_DEFECTS: tuple[type[email_errors.MessageDefect], ...] = (
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
    email_errors.MissingHeaderBodySeparatorDefect,
    email_errors.FirstHeaderLineIsContinuationDefect,
    email_errors.InvalidMultipartContentTransferEncodingDefect,
)
AUTOMATIC_SENDERS = frozenset({"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply"})
AUTOMATIC_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autorespond-Original", "X-Auto-Response-Suppress")
# RFC 3834 section 2: list software's return paths; never answered automatically.
_AUTOMATIC_LOCAL = re.compile(r"^(?:owner-.*|.*-request|.*-bounces?(?:\+.*)?|bounces?(?:[+=-].*)?)$")

_MSG_ID = re.compile(r"<([^<>\s]+)>")
_VALID_ID = re.compile(r"^[\x21-\x3b\x3d\x3f-\x7e]+$")  # printable ASCII without < > and space
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg|antw|sv|vs|tr|rif)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.I)
_LINE_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class EmailError(Exception):
    """An agent's reply cannot be sent (no such e-mail contact, nothing to send); the message says why."""


class Rejected(Exception):
    """An inbound message we refuse: ``reply`` is the SMTP reply line (code, enhanced code, reason)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


# --------------------------------------------------------------------------------------------- text tools


def clean_line(text: str | None, limit: int = MAX_SUBJECT) -> str | None:
    """A header value as one line (no CR/LF may reach an outbound header), or None when empty."""
    if text is None:
        return None
    text = " ".join(_LINE_CONTROL.sub(" ", clean_text(str(text))).split())
    return text[:limit] or None


def clean_subject(subject: str | None) -> str | None:
    """The matter a subject names: reply prefixes (``Re: AW: Fwd:``) and case tokens removed."""
    if not subject:
        return None
    text = case_store.TOKEN_IN_SUBJECT.sub(" ", _REPLY_PREFIX.sub("", subject))
    return " ".join(text.split()) or None


def reply_subject(subject: str | None, token: str | None) -> str:
    """``Re: Invoice question [#C-7QK2ZP]``: our subjects carry the case token, so a reply finds its case."""
    base = f"Re: {subject or 'your message'}"
    return f"{base} [#{token}]" if token else base


class _HtmlText(HTMLParser):
    BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "table", "ul", "ol", "blockquote", "pre", "hr", "section", "article"}
        | {"header", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "dd", "dt"}
    )
    HIDDEN = frozenset({"script", "style", "head", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCK:
            self.parts.append("\n- " if tag == "li" else "\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK:  # <br/>: one line break, not two
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCK and tag != "li":  # the next item starts its own line
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text from an HTML body: tags dropped, blocks on their own lines, scripts and styles gone."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # html.parser copes with nearly anything; for the rest, the tags go by brute force
        text = re.sub(r"<[^>]*>", " ", html)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October")
_MONTHS += ("November", "December")


def _duration(ms: int) -> str:
    minutes = max(1, math.ceil(ms / 60_000))
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def promise_text(now_ms: int, deadline_ms: int, tz: dt.tzinfo) -> str:
    """What the acknowledgement promises, from the contact's SLA deadline: ``within 1 hour (by 14:32 CEST)``
    when the clock runs straight through to a deadline under a day away, else the local day and time
    (``by Monday 6 July at 09:00 CEST``: a deadline in office hours can lie beyond a weekend)."""
    due = dt.datetime.fromtimestamp(deadline_ms / 1000, tz)
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz)
    clock = f"{due:%H:%M} {due.tzname()}".rstrip()
    day = f"{_WEEKDAYS[due.weekday()]} {due.day} {_MONTHS[due.month - 1]}"
    left = deadline_ms - now_ms
    if left <= 0:
        return "as soon as we can"
    if left <= 24 * 3_600_000:
        return f"within {_duration(left)} (by {clock if due.date() == now.date() else f'{day}, {clock}'})"
    return f"by {day} at {clock}"


# ------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Inbound:
    """A parsed, checked and cleaned inbound e-mail: every string is safe to log and to store."""

    from_addr: str  # normalised (lower case)
    name: str | None
    subject: str | None
    message_id: str  # without angle brackets; derived from the content when the message had none (_derived_id)
    given_id: bool  # the Message-ID came with the message (only then do our replies refer to it)
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    body: str
    attachments: int
    automatic: bool  # an auto-reply, bounce or list mail: never acknowledged (mail loops)
    recipients: tuple[str, ...]  # envelope RCPT TO, then To/Cc, lower case
    return_path: str | None = None  # the envelope sender (MAIL FROM), normalised: where an acknowledgement goes

    def thread_ids(self) -> list[str]:
        """Message-IDs this mail answers, nearest first."""
        out = list(self.in_reply_to)
        out.extend(r for r in reversed(self.references) if r not in out)
        return out


def _ids(raw: str | None) -> list[str]:
    if not raw:
        return []
    found = _MSG_ID.findall(raw)
    if not found and len(raw.split()) == 1:
        found = [raw.strip()]
    return [i for i in found if len(i) <= MAX_ID and _VALID_ID.match(i)]


def _raw_header(msg: EmailMessage, name: str) -> str | None:
    # The raw value: message-id headers are read by our own rule, not the header parser's (which can split
    # a malformed id in odd places).
    lname = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == lname:
            return clean_line(str(value), 4000)
    return None


def _return_path(mail_from: str | None) -> str | None:
    """The envelope sender as an address we could answer, or None (the null sender ``<>``, or garbage)."""
    try:
        return normalise_email(clean_text((mail_from or "").strip().strip("<>")))
    except IdentityError:
        return None


def _automatic_address(address: str, own: str) -> bool:
    local = address.partition("@")[0]
    return address == own or local in AUTOMATIC_SENDERS or bool(_AUTOMATIC_LOCAL.match(local))


def _is_automatic(msg: EmailMessage, return_path: str | None, sender: str, own: str) -> bool:
    """RFC 3834: mail that must never be answered automatically (a bounce, an auto-reply, list or bulk mail,
    mail from a daemon or from ourselves)."""
    if return_path is None:  # a bounce (RFC 5321 null reverse-path), or no address to answer
        return True
    auto = clean_line(_raw_header(msg, "Auto-Submitted"))
    if auto and auto.lower() != "no":
        return True
    precedence = clean_line(_raw_header(msg, "Precedence"))
    if precedence and precedence.lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(_raw_header(msg, h) is not None for h in AUTOMATIC_HEADERS):
        return True
    if any(key.lower().startswith("list-") for key in msg):  # List-Id, List-Unsubscribe, ... (RFC 2369)
        return True
    return _automatic_address(sender, own) or _automatic_address(return_path, own)


def _body(msg: EmailMessage) -> tuple[str, int]:
    """The text body (plain preferred, else HTML made text) and the number of parts left out."""
    part = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if part is not None:
        try:
            content = part.get_content()
        except LookupError as exc:
            raise Rejected(f"554 5.6.0 Cannot decode the message body: {exc}") from None
        if not isinstance(content, str):
            content = ""
        text = html_to_text(content) if part.get_content_subtype() == "html" else content
    left_out = 0
    for p in msg.walk():
        if p is part or p.is_multipart():
            continue
        # the HTML twin of a plain body is the same text, not an attachment
        if p.get_content_disposition() == "attachment" or p.get_filename() or p.get_content_maintype() != "text":
            left_out += 1
    return clean_text(text).strip(), left_out


def _derived_id(data: bytes, mail_from: str | None, recipients: Sequence[str], domain: str) -> str:
    """A Message-ID for a mail that came without one, the same for every delivery of that mail: a client that
    retries (it lost our 250) sends the same envelope and the same bytes, and so is recognised as a retry.
    The whole message counts (every header and the body): two mails that differ only in their subject, or
    any other header, are two mails, and neither may be dropped as the other's retry."""
    digest = hashlib.sha256()
    for value in (mail_from or "", *sorted(r.lower() for r in recipients)):
        digest.update(value.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(hashlib.sha256(data).digest())
    return f"{digest.hexdigest()[:40]}.no-message-id@{domain}"


def header_section_too_big(data: bytes, limit: int) -> bool:
    """Whether the message's header section (up to the first empty line) is longer than ``limit`` bytes.

    Looks at no more than the first ``limit`` + 4 bytes and decodes nothing, so it runs on the event loop
    before any parsing: a header section of megabytes (300,000 encoded words in one Subject) keeps a parser
    busy for its whole time budget, and no customer's mail has one."""
    if len(data) <= limit:
        return False
    window = data[: limit + 4]
    ends = [i for i in (window.find(b"\n\r\n"), window.find(b"\n\n")) if i >= 0]
    return not ends or min(ends) + 1 > limit


def _check_structure(msg: EmailMessage, max_parts: int, max_depth: int) -> None:
    """Refuse a mail of more parts or deeper nesting than a customer's mail has (iteratively: the library's
    own walk recurses, and a deep mail would exhaust the stack)."""
    parts = 0
    stack: list[tuple[Any, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > max_parts:
            raise Rejected(f"552 5.3.4 The message has more than {max_parts} parts")
        if depth > max_depth:
            raise Rejected(f"552 5.3.4 The message nests parts more than {max_depth} deep")
        if part.is_multipart():
            stack.extend((p, depth + 1) for p in part.get_payload())


def parse_inbound(
    data: bytes,
    mail_from: str | None,
    recipients: Sequence[str] = (),
    *,
    own_address: str = "",
    domain: str = "localhost",
    max_parts: int = MAX_PARTS,
    max_depth: int = MAX_DEPTH,
) -> Inbound:
    """Parse and check one message as received over SMTP; raises ``Rejected`` with the SMTP reply.

    CPU-bound (a big HTML body or thousands of parts take seconds): the channel runs it in a worker process."""
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except RecursionError:
        # The parser recurses once per nesting level and runs out of stack near 1000 levels, far past any
        # max_depth the configuration allows (at most MAX_DEPTH_LIMIT): this is nesting past the cap.
        raise Rejected(f"552 5.3.4 The message nests parts more than {max_depth} deep") from None
    except Exception as exc:  # the sender learns that, not which of our internals gave up
        log.info("e-mail: the parser failed: %s: %s", type(exc).__name__, exc)
        raise Rejected("554 5.6.0 Cannot parse the message") from None
    assert isinstance(msg, EmailMessage)
    _check_structure(msg, max_parts, max_depth)
    fatal = sorted(
        {type(d).__name__ for p in msg.walk() for d in p.defects if isinstance(d, FATAL_DEFECTS)}
        | {type(d).__name__ for d in msg.defects if isinstance(d, FATAL_DEFECTS)}
    )
    if fatal:
        raise Rejected(f"554 5.6.0 Malformed message ({', '.join(fatal)})")

    try:
        header = msg["From"]
        addresses = list(getattr(header, "addresses", ())) if header is not None else []
    except Exception:
        addresses = []
    if not addresses or not addresses[0].addr_spec or "@" not in addresses[0].addr_spec:
        raise Rejected("550 5.1.7 The message has no usable From address")
    first = addresses[0]
    try:
        sender = normalise_email(clean_text(first.addr_spec))
    except IdentityError:
        raise Rejected("550 5.1.7 The From address is not an e-mail address") from None
    name = clean_line(first.display_name, MAX_NAME)

    try:
        subject = clean_line(msg["Subject"])
    except Exception:
        subject = clean_line(_raw_header(msg, "Subject"))
    try:
        body, attachments = _body(msg)
    except Rejected:
        raise
    except Exception as exc:
        log.info("e-mail: reading the body failed: %s: %s", type(exc).__name__, exc)
        raise Rejected("554 5.6.0 Cannot read the message body") from None
    if attachments:
        note = f"[{attachments} attachment{'s' if attachments != 1 else ''} not kept]"
        body = f"{body}\n\n{note}" if body else note

    return_path = _return_path(mail_from)
    ids = _ids(_raw_header(msg, "Message-ID"))
    given = bool(ids)
    message_id = ids[0] if ids else _derived_id(data, mail_from, recipients, domain)
    rcpts = [r.strip().strip("<>").lower() for r in recipients]
    for name_ in ("To", "Cc"):
        with contextlib.suppress(Exception):
            h = msg[name_]
            rcpts.extend(a.addr_spec.lower() for a in getattr(h, "addresses", ()) if a.addr_spec)
    return Inbound(
        from_addr=sender,
        name=name,
        subject=subject,
        message_id=message_id,
        given_id=given,
        in_reply_to=tuple(_ids(_raw_header(msg, "In-Reply-To")))[:MAX_REFERENCES],
        references=tuple(_ids(_raw_header(msg, "References"))[-MAX_REFERENCES:]),
        body=body,
        attachments=attachments,
        automatic=_is_automatic(msg, return_path, sender, own_address.lower()),
        recipients=tuple(clean_text(r) for r in dict.fromkeys(rcpts) if r),
        return_path=return_path,
    )


def _warm_up() -> None:
    """A first task for the parsing pool: pebble starts its workers with the first task."""


def _worker_started(started: Any) -> None:
    """Each parsing worker's initializer: tells the server it is up (``_start_pool``)."""
    started.release()


def _start_pool(pool: ProcessPool, started: Any, workers: int, timeout_s: float) -> None:
    """Start the pool's workers and wait until each is up. A worker still being spawned when the pool stops
    (a server stopped right after its start) would die reading the pool's semaphores, gone by then."""
    pool.schedule(_warm_up)
    for _ in range(workers):
        if not started.acquire(timeout=timeout_s):
            log.warning("e-mail: a parsing worker did not start within %.0f s", timeout_s)
            return


def _stop_pool(pool: ProcessPool, timeout_s: float) -> None:
    pool.stop()
    pool.join(timeout_s)


# ------------------------------------------------------------------------------------------- threading


def chain(references: Iterable[str], parent: str | None) -> tuple[str, ...]:
    """The References of a reply: the parent's references and the parent, first one kept when trimmed
    (RFC 5322 3.6.4)."""
    out = list(dict.fromkeys([*references, *([parent] if parent else [])]))
    if len(out) > MAX_REFERENCES:
        out = [out[0], *out[-(MAX_REFERENCES - 1) :]]
    return tuple(out)


# ---------------------------------------------------------------------------------------------- outbound


@dataclass(frozen=True)
class Outgoing:
    """One outbound e-mail as logged: enough to compose it again identically after a restart."""

    message_id: str
    recipient: str
    subject: str
    body: str
    at_ms: int
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    automatic: bool = False


def _permanent(exc: BaseException) -> bool:
    """A refusal that trying again will not change (5xx), or a message that cannot be composed."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):  # e.g. an address that needs SMTPUTF8
        return True
    return isinstance(exc, ValueError | TypeError | UnicodeError)


# ------------------------------------------------------------------------------------------------ channel


@dataclass
class _Watch:
    """What the centre's event stream said about a contact we submitted (seen synchronously on submit in one
    process; on an edge node, by the time the commit returns)."""

    queued: bool = False
    failed: bool = False
    deadline_ms: int | None = None


class _Slots:
    """At most ``limit`` holders at a time per key (a client address), first come first served; a key that
    nobody holds or waits for is forgotten, so the map is as large as the set of clients being served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._users: collections.Counter[str] = collections.Counter()  # holding or waiting, per key
        self._holding: collections.Counter[str] = collections.Counter()

    def held(self, key: str) -> int:
        """How many hold a slot of ``key`` now (tests and tools)."""
        return self._holding[key]

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> Any:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(self.limit)
        self._users[key] += 1
        try:
            async with gate:
                self._holding[key] += 1
                try:
                    yield
                finally:
                    self._holding[key] -= 1
                    if not self._holding[key]:
                        del self._holding[key]
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._gates[key]


class _Handler:
    """aiosmtpd's handler: hands the message to the channel."""

    def __init__(self, channel: EmailChannel) -> None:
        self._channel = channel

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = session.peer
        host = peer[0] if isinstance(peer, tuple) and peer else str(peer or "")
        return await self._channel._on_data(envelope, address_key(host))

    async def handle_exception(self, error: Exception) -> str:
        log.error("e-mail: SMTP session failed", exc_info=error)
        return "451 4.3.0 Local error; please try again later"


class EmailChannel:
    """The e-mail channel adapter. ``retry_base_s`` (doubling per attempt, at most ``retry_max_s``) spaces
    outbound retries; ``stop_timeout_s`` bounds how long ``stop`` waits for work in progress."""

    def __init__(
        self,
        centre: Centre,
        *,
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.centre = centre
        cfg = centre.config
        self.settings = cfg.server.email
        self.address = self.settings.address
        self.domain = self.address.rpartition("@")[2] or "localhost"
        self._email_queues = frozenset(q.name for q in cfg.queues if "email" in q.channels)
        default = self.settings.queue or cfg.first_queue_for("email")
        if default is None:
            raise ValueError("the e-mail channel needs a queue that serves email; the configuration has none")
        self._default_queue = default
        self._by_address = {a.lower(): q for a, q in self.settings.queues_by_address.items()}
        self._tz = zoneinfo.ZoneInfo(cfg.timezone)
        env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=False,  # plain-text mail: HTML escaping would only garble names like "O'Brien & Co"
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._ack_template = env.get_template("ack_email.txt")  # now, so a missing file fails at start-up
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._send_timeout_s = send_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._loop = centre.loop
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="email-send")
        self._parsers: ProcessPool | None = None  # started with the SMTP port
        # Fairness: mails from one client address may hold at most parse_workers - 1 of the workers (all of a
        # single one), so a client sending slow mails cannot make everyone else's wait for them. Behind an MTA
        # every mail comes from its address and still has all workers but one.
        workers = self.settings.parse_workers
        self._parse_slots = _Slots(workers - 1 if workers > 1 else 1)
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._stopping = False
        self._receiving: set[asyncio.Task[str]] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        # (Message-ID, sender) of mail being stored now, and of mail whose commit failed but whose records the
        # writer may hold for a retry: a client retrying it waits for them, then asks the store whether they are in.
        self._storing: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._held: set[tuple[str, str]] = set()
        self._watching: dict[str, _Watch] = {}
        self._outcomes: collections.OrderedDict[str, str] = collections.OrderedDict()
        # envelope sender's mailbox (identity.mailbox: no +tag) -> when we last acknowledged (ms), oldest first
        self._acked: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._unsubscribe: Callable[[], None] | None = centre.subscribe(self._on_events)
        centre.channels["email"] = self

    # ---------------------------------------------------------------------------------------- lifecycle

    async def start(self, host: str, port: int) -> int:
        """Listen for SMTP on ``host:port`` (0: a free port) and resend what a previous run left queued;
        returns the bound port."""
        limit = self.settings.max_message_bytes
        loop = self._loop

        def session() -> SMTP:
            smtp = SMTP(
                _Handler(self),
                data_size_limit=limit,
                enable_SMTPUTF8=True,
                hostname=self.domain,  # else aiosmtpd asks DNS for our name on every connection
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        if self._stopping:
            raise RuntimeError("this e-mail channel was stopped; make a new one")
        # Processes, not threads: parsing is pure Python and a thread would hold the GIL, stalling the loop
        # just the same. pebble's pool replaces a worker that overran its task's timeout (the standard
        # library's pool cannot stop one task). Spawned, not forked: the server has threads by now.
        spawn = multiprocessing.get_context("spawn")
        started = spawn.Semaphore(0)
        workers = self.settings.parse_workers
        self._parsers = ProcessPool(workers, initializer=_worker_started, initargs=(started,), context=spawn)
        await loop.run_in_executor(None, _start_pool, self._parsers, started, workers, WORKER_START_S)
        self._server = await loop.create_server(self._capped(session), host, port)
        bound = self._server.sockets[0].getsockname()[1]
        try:
            leftover = await self.centre.read(queued_mail)
        except Exception:
            log.exception("e-mail: cannot read the messages a previous run left queued")
            leftover = []
        for row in leftover:
            if not row.recipient:
                await self._record(row.message_id, "failed", row.attempts)
                continue
            out = Outgoing(
                message_id=row.message_id,
                recipient=row.recipient,
                subject=row.subject or "",
                body=row.body or "",
                at_ms=row.at_ms,
                in_reply_to=row.in_reply_to,
                references=tuple((row.references or "").split()),
                automatic=row.author == SYSTEM_AGENT,
            )
            self._schedule(out, row.attempts)
        if leftover:
            log.info("e-mail: %d messages left queued by a previous run are being sent", len(leftover))
        log.info("e-mail: SMTP on %s:%d", host, bound)
        return bound

    def _capped(self, session: Callable[[], SMTP]) -> Callable[[], asyncio.Protocol]:
        """At most ``[server.limits] max_connections_per_address`` SMTP sessions from one address: one more is
        told 421 (try later, as RFC 5321 has it) and closed before a session is made for it."""
        limit = self.centre.config.server.limits.max_connections_per_address
        return capped(session, limit, f"421 {self.domain} {TOO_MANY_CONNECTIONS}\r\n".encode())

    async def stop(self) -> None:
        """Stop accepting mail, let messages being stored and sent finish (bounded by ``stop_timeout_s``),
        close. Retries not yet due stay queued in the store and go out at the next start."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self._drain(self._receiving)
        for smtp in list(self._sessions):
            if smtp.transport is not None:
                smtp.transport.close()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        await self._drain(self._sending)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._parsers is not None:  # nothing is being received any more: no parse is wanted
            await self._loop.run_in_executor(None, _stop_pool, self._parsers, self._stop_timeout_s)
            self._parsers = None
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), self._stop_timeout_s)
            self._server = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.centre.channels.get("email") is self:
            del self.centre.channels["email"]
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

    async def _drain(self, tasks: set[Any]) -> None:
        pending = set(tasks)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=self._stop_timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("e-mail: %d tasks still running after %.0f s were cancelled", len(late), self._stop_timeout_s)
            await asyncio.gather(*late, return_exceptions=True)

    # ------------------------------------------------------------------------------------- event stream

    def _on_events(self, events: list[Event]) -> None:
        watching = self._watching
        if not watching:
            return
        for ev in events:
            kind = type(ev)
            if kind is ContactQueued:
                w = watching.get(ev.contact_id)  # type: ignore[attr-defined]
                if w is not None and not w.queued:
                    w.queued = True
                    w.deadline_ms = ev.sla_deadline_ms  # type: ignore[attr-defined]
            elif kind is ContactFailed:
                w = watching.get(ev.contact_id)  # type: ignore[attr-defined]
                if w is not None:
                    w.failed = True

    # ------------------------------------------------------------------------------------------ inbound

    async def _on_data(self, envelope: Envelope, client: str = "") -> str:
        if self._stopping:
            return "421 4.3.2 Service shutting down; please try again later"
        data = envelope.original_content or b""
        task = self._loop.create_task(self._receive(data, envelope.mail_from, tuple(envelope.rcpt_tos), client))
        self._receiving.add(task)
        task.add_done_callback(self._receiving.discard)
        # Shielded: a client that hangs up mid-store must not cut a store in half; it retries, and the
        # retry is recognised as a duplicate.
        return await asyncio.shield(task)

    async def _parse(self, data: bytes, mail_from: str | None, rcpts: tuple[str, ...], client: str = "") -> Inbound:
        """``parse_inbound`` in a worker process, within ``parse_timeout_s``, once the client's address has a
        parse slot (``_parse_slots``); raises ``Rejected``."""
        settings = self.settings
        if header_section_too_big(data, settings.max_header_bytes):
            raise Rejected(f"552 5.3.4 The message's header section is larger than {settings.max_header_bytes} bytes")
        async with self._parse_slots.hold(client):
            return await self._parse_now(data, mail_from, rcpts)

    async def _parse_now(self, data: bytes, mail_from: str | None, rcpts: tuple[str, ...]) -> Inbound:
        if self._parsers is None:
            raise Rejected("421 4.3.2 Service shutting down; please try again later")
        settings = self.settings
        kw = {"own_address": self.address, "domain": self.domain}
        kw |= {"max_parts": settings.max_parts, "max_depth": settings.max_depth}
        job = self._parsers.schedule(parse_inbound, (data, mail_from, rcpts), kw, timeout=settings.parse_timeout_s)
        try:
            return await asyncio.wrap_future(job)
        except FutureTimeout:  # the worker was killed and is being replaced
            raise Rejected(f"554 5.6.0 The message could not be read within {settings.parse_timeout_s:g} s") from None
        except ProcessExpired as exc:  # the worker died on it (e.g. out of memory); the log says how
            log.warning("e-mail: a parsing worker died on a message: %s", exc)
            raise Rejected("554 5.6.0 Cannot parse the message") from None
        except asyncio.CancelledError:
            job.cancel()  # stops the worker too
            raise

    async def _receive(self, data: bytes, mail_from: str | None, rcpts: tuple[str, ...], client: str = "") -> str:
        try:
            mail = await self._parse(data, mail_from, rcpts, client)
        except Rejected as r:
            log.info("e-mail from %r refused: %s", mail_from, r.reply)
            return r.reply
        except Exception:
            log.exception("e-mail: parsing failed")
            return "554 5.6.0 Cannot parse the message"
        key = (mail.message_id, mail.from_addr)
        other = self._storing.get(key)
        if other is not None:  # the client gave up on us and sent it again while we are storing it
            reply = await asyncio.shield(other)
            return "250 2.0.0 OK: already received" if reply.startswith("250") else reply
        if key in self._held:
            try:
                await self.centre.commit()
            except Exception:
                return "451 4.3.0 The message store is unavailable; please try again later"
            self._held.discard(key)
            # Whether the held records reached the log is the store's to say, not the commit's: on an edge node
            # an input Redis did not take is given up, not held, and commit() no longer waits for it. The intake
            # below finds the message if it was logged ("already received") and stores it again if it was not.
        current = asyncio.current_task()
        assert current is not None
        self._storing[key] = current  # type: ignore[assignment]
        try:
            return await self._store(mail, key)
        except Exception:
            log.exception("e-mail: storing a message from %s failed", mail.from_addr)
            return "451 4.3.0 The message could not be stored; please try again later"
        finally:
            self._storing.pop(key, None)

    def _address_queue(self, mail: Inbound) -> str:
        for rcpt in mail.recipients:
            queue = self._by_address.get(rcpt)
            if queue is not None:
                return queue
        return self._default_queue

    async def _store(self, mail: Inbound, key: tuple[str, str]) -> str:
        centre = self.centre
        await centre.room()
        try:
            now = centre.now_ms()
            since = now - int(self.settings.ack_once_per_s * 1000)
            intake = functools.partial(mail_intake, new_subject=clean_subject(mail.subject), ack_author=SYSTEM_AGENT)
            got = await self.centre.write(intake, mail, now, self._address_queue(mail), self._email_queues, since)
        except IdentityError:
            return "550 5.1.7 The From address is not an e-mail address"
        if got.duplicate:
            return "250 2.0.0 OK: already received"
        assert got.case_id is not None and got.queue is not None
        if self._stopping:
            return "421 4.3.2 Service shutting down; please try again later"

        contact_id = customer_store.new_id("email")
        now = centre.now_ms()
        tier = got.tier if got.tier in centre.config.tiers else None
        watch = _Watch()
        self._watching[contact_id] = watch
        ack: Outgoing | None = None
        try:
            with centre.atomic():
                if centre.driver.closed:  # the centre is shutting down: nothing would be written
                    return "421 4.3.2 Service shutting down; please try again later"
                centre.publish(
                    [
                        MessageReceived(
                            at_ms=now,
                            contact_id=contact_id,
                            message_id=mail.message_id,
                            channel="email",
                            body=mail.body,
                            case_id=got.case_id,
                            address=mail.from_addr,
                            subject=mail.subject,
                            in_reply_to=mail.in_reply_to[0] if mail.in_reply_to else None,
                            references=list(mail.references),
                        )
                    ]
                )
                refusal = centre.submit(
                    ContactArrived(
                        at_ms=now,
                        contact_id=contact_id,
                        queue=got.queue,
                        channel="email",
                        customer_id=got.customer_id,
                        tier=tier,
                        case_id=got.case_id,
                        address=mail.from_addr,
                        subject=mail.subject,
                    )
                )
                if refusal is not None:
                    log.error("e-mail: the router refused contact %s; its message is kept in the case", contact_id)
                # ``watch`` is filled by this channel's subscriber as the router answers the arrival (queued with
                # its SLA deadline, or failed): at once in one process, so the case's due time and the
                # acknowledgement's promise go in this group. On an edge node the router's answer comes back
                # with the commit: they then go in a group of their own after it, before the 250.
                answered = refusal is not None or watch.queued or watch.failed
                if answered:
                    ack = self._touch_and_acknowledge(mail, got, contact_id, now, watch)
            try:
                await centre.commit()
                if not answered:
                    with centre.atomic():
                        ack = self._touch_and_acknowledge(mail, got, contact_id, now, watch)
                    await centre.commit()
            except Exception:
                log.exception("e-mail: committing a message from %s failed", mail.from_addr)
                self._held.add(key)
                return "451 4.3.0 The message store is unavailable; please try again later"
        finally:
            self._watching.pop(contact_id, None)
        if ack is not None:
            self._schedule(ack, 0)
        return f"250 2.0.0 OK: case [#{got.token}]"

    def _touch_and_acknowledge(
        self, mail: Inbound, got: Intake, contact_id: str, now: int, watch: _Watch
    ) -> Outgoing | None:
        """Stage the case's update (re-opened, its first-response due time from the contact's SLA deadline) and
        log the acknowledgement if one is owed (inside the caller's atomic block); returns the acknowledgement."""
        assert got.case_id is not None
        if watch.failed:
            log.warning("e-mail: contact %s could not be queued; its message is kept in the case", contact_id)
        self.centre.stage(CaseTouched(got.case_id, now, watch.deadline_ms))
        if not self._acknowledge(mail, got, now):
            return None
        ack = self._acknowledgement(mail, got, now, watch.deadline_ms)
        self._log_sent(ack, contact_id, SYSTEM_AGENT, got.case_id)
        box = mailbox(ack.recipient)  # ann+1@ and ann+2@ are ann@'s mailbox: one memory
        self._acked[box] = now
        self._acked.move_to_end(box)
        return ack

    def _acknowledge(self, mail: Inbound, got: Intake, now_ms: int) -> bool:
        """RFC 3834: acknowledge a new (or reopened) case, never automatic mail, and one sender at most once per
        ``ack_once_per_s``: the store remembers across restarts, ``_acked`` covers mails being stored at once
        and a sender naming several customers. A sender is a mailbox: its ``+tag`` sub-addresses are it."""
        if not self.settings.auto_acknowledge or not (got.new_case or got.reopened) or mail.automatic:
            return False
        if got.acknowledged or mail.return_path is None:
            return False
        period_ms = int(self.settings.ack_once_per_s * 1000)
        while self._acked and next(iter(self._acked.values())) <= now_ms - period_ms:
            self._acked.popitem(last=False)  # in time order: the oldest go first
        return mailbox(mail.return_path) not in self._acked

    def _acknowledgement(self, mail: Inbound, got: Intake, now_ms: int, deadline_ms: int | None) -> Outgoing:
        promise = promise_text(now_ms, deadline_ms, self._tz) if deadline_ms is not None else None
        body = self._ack_template.render(
            name=got.customer_name or mail.name,
            subject=got.case_subject,
            token=got.token,
            promise=promise,
            centre=self.centre.config.name,
        )
        assert mail.return_path is not None
        return Outgoing(
            message_id=self._new_message_id(),
            recipient=mail.return_path,  # RFC 3834 section 4: the envelope sender, not a From anyone can write
            subject=reply_subject(got.case_subject, got.token),
            body=body,
            at_ms=now_ms,
            in_reply_to=mail.message_id if mail.given_id else None,
            references=chain(mail.references, mail.message_id) if mail.given_id else (),
            automatic=True,
        )

    def _new_message_id(self) -> str:
        return email.utils.make_msgid(domain=self.domain)[1:-1]

    def _log_sent(self, out: Outgoing, contact_id: str, agent_id: str, case_id: str | None) -> None:
        """Publish the ``MessageSent`` (inside the caller's atomic block); raise if it would not be logged."""
        # Asked before, not seen in the event stream after: on an edge node the log's answer comes later.
        if self.centre.driver.closed:
            raise EmailError("the centre is shutting down; the message was not logged")
        self.centre.publish(
            [
                MessageSent(
                    at_ms=out.at_ms,
                    contact_id=contact_id,
                    message_id=out.message_id,
                    channel="email",
                    agent_id=agent_id,
                    body=out.body,
                    case_id=case_id,
                    address=out.recipient,
                    subject=out.subject,
                    in_reply_to=out.in_reply_to,
                    references=list(out.references),
                )
            ]
        )

    # ----------------------------------------------------------------------------------------- outbound

    async def agent_message(self, contact_id: str, agent_id: str, text: str) -> str:
        """Send an agent's reply to the customer of an e-mail contact; returns its Message-ID (no brackets).

        The reply is logged (and committed) before this returns; delivery to the smarthost follows."""
        if self._stopping:
            raise EmailError("the e-mail channel is stopped")
        body = clean_text(text).strip()
        if not body:
            raise EmailError("the reply is empty")
        ctx = await self.centre.read(reply_context, contact_id, clean_subject)
        if ctx is None:
            raise EmailError(f"no contact {contact_id!r} in the store")
        if ctx.channel != "email":
            raise EmailError(f"contact {contact_id!r} is a {ctx.channel} contact, not an e-mail")
        try:
            recipient = normalise_email(ctx.address or "")
        except IdentityError:
            raise EmailError(f"contact {contact_id!r} has no e-mail address to reply to") from None
        now = self.centre.now_ms()
        out = Outgoing(
            message_id=self._new_message_id(),
            recipient=recipient,
            subject=reply_subject(ctx.subject, ctx.token),
            body=body,
            at_ms=now,
            in_reply_to=ctx.last_id,
            references=chain(ctx.last_references, ctx.last_id),
        )
        with self.centre.atomic():
            self._log_sent(out, contact_id, agent_id, ctx.case_id)
            if ctx.case_id is not None:
                self.centre.stage(FirstResponse(ctx.case_id, now))
        await self.centre.commit()
        self._schedule(out, 0)  # stopped meanwhile: it stays queued and goes out at the next start
        return out.message_id

    async def wait_delivery(self, message_id: str) -> str:
        """Wait until an outbound message is settled: ``sent`` or ``failed`` (for tests and tools)."""
        done = self._outcomes.get(message_id)
        if done is not None:
            return done
        fut: asyncio.Future[str] = self._loop.create_future()
        self._waiters.setdefault(message_id, []).append(fut)
        return await fut

    def _settled(self, message_id: str, state: str) -> None:
        self._outcomes[message_id] = state
        while len(self._outcomes) > 1000:
            self._outcomes.popitem(last=False)
        for fut in self._waiters.pop(message_id, ()):
            if not fut.done():
                fut.set_result(state)

    def _schedule(self, out: Outgoing, attempts: int, delay_s: float = 0.0) -> None:
        if self._stopping:
            return
        if delay_s > 0:
            self._retries[out.message_id] = self._loop.call_later(delay_s, self._launch, out, attempts)
        else:
            self._launch(out, attempts)

    def _launch(self, out: Outgoing, attempts: int) -> None:
        self._retries.pop(out.message_id, None)
        if self._stopping:
            return
        task = self._loop.create_task(self._deliver(out, attempts), name=f"email-send {out.message_id}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def compose(self, out: Outgoing) -> EmailMessage:
        """The e-mail as it goes to the smarthost."""
        msg = EmailMessage()
        msg["From"] = Address(display_name=self.centre.config.name, addr_spec=self.address)
        msg["To"] = out.recipient
        msg["Subject"] = out.subject
        msg["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(out.at_ms / 1000, self._tz))
        msg["Message-ID"] = f"<{out.message_id}>"
        if out.in_reply_to:
            msg["In-Reply-To"] = f"<{out.in_reply_to}>"
        if out.references:
            msg["References"] = " ".join(f"<{r}>" for r in out.references)
        if out.automatic:  # RFC 3834: other responders must not answer this one
            msg["Auto-Submitted"] = "auto-replied"
            msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(out.body)
        return msg

    def _send(self, msg: EmailMessage, recipient: str) -> None:
        host, port = self.settings.smarthost, self.settings.smarthost_port
        with smtplib.SMTP(host, port, local_hostname=self.domain, timeout=self._send_timeout_s) as smtp:
            smtp.send_message(msg, from_addr=self.address, to_addrs=[recipient])

    async def _deliver(self, out: Outgoing, attempts: int) -> None:
        error: BaseException | None = None
        try:
            msg = self.compose(out)
            await self._loop.run_in_executor(self._pool, self._send, msg, out.recipient)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._stopping and isinstance(exc, RuntimeError):  # the pool is shut: not an attempt
                return
            error = exc
        attempts += 1
        if error is None:
            state = "sent"
        elif _permanent(error) or attempts >= self.settings.send_attempts:
            state = "failed"
        else:
            state = "queued"
        if error is not None:
            log.warning(
                "e-mail %s to %s: attempt %d failed (%s: %s)%s",
                out.message_id,
                out.recipient,
                attempts,
                type(error).__name__,
                error,
                "; giving up" if state == "failed" else "",
            )
        await self._record(out.message_id, state, attempts)
        if state == "queued":
            delay = min(self._retry_max_s, self._retry_base_s * 2 ** (attempts - 1))
            self._schedule(out, attempts, delay)
        else:
            self._settled(out.message_id, state)

    async def _record(self, message_id: str, state: str, attempts: int) -> None:
        try:
            await self.centre.write(record_delivery, message_id, state, attempts)
        except Exception:  # the send happened; at worst a restart sends it again under the same Message-ID
            log.exception("e-mail %s: cannot record delivery %s", message_id, state)


__all__ = [
    "EmailChannel",
    "EmailError",
    "Inbound",
    "Outgoing",
    "Rejected",
    "chain",
    "clean_subject",
    "clean_text",
    "header_section_too_big",
    "html_to_text",
    "parse_inbound",
    "promise_text",
    "reply_subject",
]
