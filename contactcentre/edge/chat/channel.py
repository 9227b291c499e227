"""The web chat channel: customers on a WebSocket (``/chat``), speaking the JSON protocol of
``docs/chat-protocol.md``.

A customer's chat is a *session*: a contact in the router (or, when nobody can answer, an offline message on a
case), a secret resume token, and at most one socket at a time. Sockets come and go — a phone changing
network, a reloaded page — and the session outlives them for ``resume_window_s``; only an explicit ``close``,
the router (the agent ended, the contact overflowed out) or a socket gone for longer than the window ends it.
Every line is logged as ``MessageReceived``/``MessageSent`` (the store writer projects them into
``messages``), so a resumed socket gets whatever it missed from the store, and nothing lives only here.

The adapter makes no routing decisions: it submits router inputs, publishes chat lines and follows the
router's output. Timers are ``loop.call_later`` handles; nothing polls.

What the agent gateway uses: ``agent_message`` (an agent's line). The rest goes between them as the centre's
signals (``server/signals.py``), so the customer's socket and the agent's console may be on different nodes:
the channel signals ``CustomerTyping`` and ``CustomerPresence`` (the customer's socket went away or came back)
and shows ``AgentTyping`` to a chat whose session it holds. Chat lines themselves reach the gateway as
``MessageReceived`` events, and an agent's line reaches the customer from the log too when the channel that
logged it (the agent's node) does not hold the chat's session (the customer's node does).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from contactcentre.edge.chat.protocol import (
    AGENT_TYPING,
    CLOSED,
    MAX_EMAIL,
    MAX_ID,
    MAX_NAME,
    MAX_OUTBOX,
    MAX_TEXT,
    MAX_TOPIC,
    NEW,
    OFFLINE,
    SEND_AGENT_JOINED,
    SEND_CLOSED,
    SEND_POSITION,
    SEND_QUEUED,
    SEND_TRANSFERRED,
    TRANSFERRED,
    WAITING,
    WITH_AGENT,
    Ack,
    AgentJoined,
    ChatConnection,
    Closed,
    Hello,
    Leave,
    Line,
    Offline,
    Outbound,
    Position,
    Queued,
    Resume,
    Resumed,
    Say,
    Typing,
    decoder,
    error,
    ewt_s,
    session_step,
)
from contactcentre.edge.frames import Close, Closes, Outbox
from contactcentre.edge.limits import AddressBuckets
from contactcentre.events import (
    AgentStateChanged,
    ContactAbandoned,
    ContactArrived,
    ContactFailed,
    ContactQueued,
    CustomerLeft,
    Event,
    MessageReceived,
    MessageSent,
    OfferMade,
)
from contactcentre.server.signals import AgentTyping, CustomerPresence, CustomerTyping, Signal
from contactcentre.store.chats import (
    Opened,
    case_token,
    identify_and_open_case,
    known_customer,
    line_stored_at,
    lines_after,
    restore_rows,
)
from contactcentre.store.customers import new_id
from contactcentre.store.db import DriverFailure
from contactcentre.store.identity import IdentityError, normalise_email
from contactcentre.store.ops import HelloRows

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from contactcentre.acd import ContactView
    from contactcentre.server.centre import Centre

log = logging.getLogger(__name__)

MAX_CLIENT_IDS = 200  # remembered per session, so a line re-sent after a lost ack is stored once
MAX_RESUMABLE = 50_000  # live chats held by other nodes, remembered for a resume here

# Router contact states in which a chat is still the customer's to resume.
_LIVE_CONTACT_STATES = frozenset({"queued", "offered", "connected", "held"})
GIVEN_UP_KEEP = 10_000  # chats told to try again whose arrival may still be applied, remembered


class ChatError(Exception):
    """An agent's chat action that cannot be done; ``code`` is one of ``unknown_contact``, ``not_handling``,
    ``bad_request``, ``closed``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _BadRequest(Exception):
    pass


def token_hash(token: str) -> str:
    """What the log keeps of a resume token (the token itself stays with the customer)."""
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------------------------------- connections


class _Conn:
    """One customer socket: its outbox (one pump task sends the frames in the order they were queued) and its
    frame rules (``ChatConnection``). While a hello or a resume is being made durable the outbox is *held*,
    so the reply goes out before anything the router said in the meantime (an agent may accept during the
    commit)."""

    def __init__(self, ws: ServerConnection, loop: asyncio.AbstractEventLoop, rate: int) -> None:
        self.ws = ws
        peer = getattr(ws, "remote_address", None)
        self.address = str(peer[0]) if peer else ""  # the peer's IP address: the unit of the per-address caps
        self.session: _Session | None = None
        self.outbox = Outbox(ws, limit=MAX_OUTBOX, too_slow=Closes.CHAT_TOO_SLOW, name="chat")
        self.rules = ChatConnection(rate, loop.time())
        self.send = self.outbox.send
        self.close = self.outbox.close
        self.hold = self.outbox.hold

    @property
    def closing(self) -> bool:
        return self.outbox.closing

    @property
    def held(self) -> bool:
        return self.outbox.held

    def release(self, front: Iterable[Outbound | Close] = (), skip_ids: frozenset[str] = frozenset()) -> None:
        """Send ``front`` first, then what was queued while held, minus lines ``front`` already carries."""
        self.outbox.release(front, (lambda f: type(f) is Line and f.message_id in skip_ids) if skip_ids else None)


# ---------------------------------------------------------------------------------------------- sessions


@dataclass(eq=False)
class _Session:
    token_hash: str
    customer_id: str | None
    case_id: str | None
    case_token: str | None
    visitor: str  # the chat visitor token: the address of the chat contact
    queue: str | None
    tier: str | None
    name: str | None = None
    email: str | None = None
    topic: str | None = None
    contact_id: str | None = None  # the chat contact in the router
    mail_contact_id: str | None = None  # the offline message's e-mail-like contact
    state: str = NEW
    reason: str | None = None  # why it closed
    agent_id: str | None = None
    position: int | None = None
    ewt_ms: int | None = None
    conn: _Conn | None = None
    timer: asyncio.TimerHandle | None = None
    hello_token: str | None = None  # the resume token for the queued reply, sent when the router queues it
    hello_frame: Queued | None = None  # that reply, held in the outbox until the hello is committed
    failed: str | None = None  # the router refused to queue it (queue closed or full)
    said: bool = False  # the customer has sent a line: a dropped socket gets the whole resume window
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # client_id -> (message_id, at_ms)
    # ``acked`` holds every line this session stored: true for a session born here until a line is forgotten
    # (MAX_CLIENT_IDS) or a commit fails (the line may be stored yet); false for one restored after a restart.
    # While it holds, a line whose id is not there (nor ``sending``) is new without asking the store.
    acked_all: bool = True
    sending: set[str] = field(default_factory=set)  # client ids of lines logged and not yet committed

    def send(self, frame: Outbound) -> None:
        if self.conn is not None:
            self.conn.send(frame)

    def interaction_ids(self) -> list[str]:
        return [i for i in (self.contact_id, self.mail_contact_id) if i is not None]


# ---------------------------------------------------------------------------------------------- channel


class ChatChannel:
    """The chat adapter: ``handle`` serves one customer socket; ``agent_message`` carries an agent's line."""

    position_push_s = 2.0  # position/EWT updates are coalesced: at most one push per session this often

    def __init__(self, centre: Centre) -> None:
        self.centre = centre
        self.config = centre.config.server.chat
        cfg = centre.config
        self.queue: str | None = self.config.queue or cfg.first_queue_for("chat")
        self.offline_queue: str | None = self.config.offline_queue or cfg.first_queue_for("email")
        self.window_s = self.config.resume_window_s
        limits = centre.config.server.limits
        # A silent chat's queue place is not kept longer than its resume window either.
        self.silent_grace_s = min(limits.silent_chat_grace_s, self.window_s)
        self._hellos = AddressBuckets(limits.new_chats_per_minute / 60, limits.new_chats_burst)
        self.loop = centre.loop
        self._agent_names = {a.id: a.name or a.id for a in cfg.agents}
        self._chat_queues = {q.name for q in cfg.queues if "chat" in q.channels}
        self._by_token: dict[str, _Session] = {}
        self._by_contact: dict[str, _Session] = {}  # chat contact id -> session (router events)
        self._delivering: set[str] = set()  # agents' lines ``agent_message`` sends itself once committed
        # Live chats whose session another node holds (token hash -> contact id, oldest first): a customer whose
        # node went away resumes here with the token they have (``_adopt``).
        self._resumable: dict[str, str] = {}
        self._given_up: dict[str, None] = {}  # chats whose customer was told to try again (``_give_up``)
        # address -> (customer id, tier) minted by a hello whose rows are not committed yet: a second first
        # chat from the same new address meanwhile gets the same customer
        self._minting: dict[str, tuple[str, str | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._conns: set[_Conn] = set()
        self._push_timer: asyncio.TimerHandle | None = None
        self._stopped = False
        centre.channels["chat"] = self
        self._unsubscribe = centre.subscribe(self._on_events)
        self._unlisten = centre.on_signal(self._on_signal)

    # ------------------------------------------------------------------------------------------ restore

    def restore(self, *, hold: bool = True) -> None:
        """Rebuild the sessions of chats the router still holds after a restart (waiting, offered, with an
        agent), so that their customers can resume with the token they have. Each gets the resume window
        from now; a customer who does not come back within it has left.

        ``hold=False``: a node joining a centre whose other nodes serve these chats only learns them, so a
        customer may resume here (``_adopt``); their windows are the other nodes' to keep."""
        live = [
            c
            for c in self.centre.router.contact_list()
            if c.channel == "chat" and c.state in _LIVE_CONTACT_STATES and c.attributes.get("resume")
        ]
        if not hold:
            self._resumable.update((c.attributes["resume"], c.id) for c in live)
            return
        if not live:
            return
        # start-up, before any socket: a blocking read is fine
        rows = self.centre.read_now(restore_rows, [c.id for c in live])
        for c in live:
            s = _restored(c, rows.get(c.id, {}))
            self._register(s)
            self._arm(s, self._gone)
        log.info("chat: %d sessions restored", len(live))

    async def _adopt(self, th: str) -> _Session | None:
        """The session of a live chat this channel has not held (its socket was served by another node, which
        went away, or the customer's new socket reached this one), built from the router's contact and the
        store as ``restore`` builds one; None if there is no such live chat."""
        cid = self._resumable.get(th)
        c = self.centre.router.contact(cid) if cid is not None else None
        if c is None or c.state not in _LIVE_CONTACT_STATES or c.attributes.get("resume") != th:
            self._resumable.pop(th, None)
            return None
        row = (await self.centre.read(restore_rows, [c.id])).get(c.id, {})
        s = self._by_token.get(th)  # another resume with the token got here first
        if s is None:
            s = _restored(c, row)
            self._register(s)
        self._resumable.pop(th, None)
        return s

    # ------------------------------------------------------------------------------------------ sockets

    async def handle(self, ws: ServerConnection) -> None:
        """Serve one customer socket until it closes. Nothing a customer sends raises out of here."""
        if self._stopped:
            await ws.close(1001, "server going away")
            return
        self._limit_frames(ws)
        conn = _Conn(ws, self.loop, self.config.max_messages_per_10s)
        self._conns.add(conn)
        pump = self.loop.create_task(conn.outbox.run(), name="chat-pump")
        decode, receive, loop = decoder.decode, conn.rules.receive, self.loop
        try:
            while not conn.closing:
                try:
                    raw = await ws.recv()
                except ConnectionClosed:  # includes 1009: websockets closed it for a frame over max_size
                    break
                s = conn.session
                step = receive(decode(raw), loop.time(), None if s is None else s.state)
                if step.reply is not None:
                    conn.send(step.reply)
                if step.close is not None:
                    conn.close(*step.close)
                if step.do is None:
                    continue
                try:
                    await self._on_frame(conn, step.do)
                except Exception:
                    log.exception("chat: a frame failed")
                    if conn.held:
                        conn.release()
                    conn.send(error("internal", "the server could not handle that frame"))
        finally:
            self._conns.discard(conn)
            self._detach(conn)
            conn.outbox.finish()
            try:
                await pump
            except asyncio.CancelledError:
                pump.cancel()
                raise

    def _limit_frames(self, ws: ServerConnection) -> None:
        """A customer's frames are limited to ``max_frame_bytes`` whatever the server was started with (one
        port serves agents too, with a larger limit): websockets then closes with 1009."""
        protocol = getattr(ws, "protocol", None)
        current = getattr(protocol, "max_message_size", 0)
        limit = self.config.max_frame_bytes
        if protocol is not None and (current is None or current > limit):
            protocol.max_message_size = limit

    async def stop(self) -> None:
        """Tell every connected customer that the server is going away (close 1001) and stop. Sessions
        are not ended: the router and the log keep the chats, and ``restore`` brings them back."""
        self._stopped = True
        self._unsubscribe()
        self._unlisten()
        for task in list(self._background):
            task.cancel()
        if self._push_timer is not None:
            self._push_timer.cancel()
            self._push_timer = None
        for s in list(self._by_token.values()):
            if s.timer is not None:
                s.timer.cancel()
                s.timer = None
        conns = list(self._conns)
        for conn in conns:
            conn.outbox.drop()
        await asyncio.gather(*(c.ws.close(1001, "server going away") for c in conns), return_exceptions=True)
        self._by_token.clear()
        self._by_contact.clear()

    # ------------------------------------------------------------------------------------------- frames

    async def _on_frame(self, conn: _Conn, f: Hello | Say | Typing | Resume | Leave) -> None:
        """Carry out a frame the connection's rules passed (``ChatConnection``): they need the store or the router."""
        kind = type(f)
        if kind is Say:
            assert isinstance(f, Say) and conn.session is not None
            await self._line(conn, conn.session, f.text, f.client_id)
        elif kind is Hello:
            assert isinstance(f, Hello)
            try:
                await self._hello(conn, f)
            except _BadRequest as exc:
                conn.send(error("bad_request", str(exc), f.client_id))
        elif kind is Typing:
            self._typing(conn)
        elif kind is Resume:
            assert isinstance(f, Resume)
            await self._resume(conn, f)
        elif kind is Leave:
            await self._close(conn)

    # ------------------------------------------------------------------------------------------- hello

    async def _hello(self, conn: _Conn, f: Hello) -> None:
        name, email, topic, asked = f.name, f.email, f.topic, f.queue
        if asked is not None and asked not in self._chat_queues:
            raise _BadRequest(f"queue: no chat queue {asked!r}")
        queue = asked or self.queue
        first, client_id = f.text, f.client_id
        if email is not None:
            try:
                email = normalise_email(email)
            except IdentityError as exc:
                raise _BadRequest(f"email: {exc}") from None
        if not self._hellos.take(conn.address, self.loop.time()):
            # Before anything is stored or queued: a flood of hellos from one address makes no customers,
            # cases or queue places.
            per_minute = self.centre.config.server.limits.new_chats_per_minute
            conn.send(
                error(
                    "rate_limited", f"too many new chats from your address (at most {per_minute:g} a minute)", client_id
                )
            )
            return
        await self.centre.room()
        centre = self.centre
        visitor = "v-" + secrets.token_urlsafe(18)
        token = secrets.token_urlsafe(32)
        offline_reason = self._offline_reason(queue)
        rows: HelloRows | None = None  # when someone can answer: the rows staged with the arrival
        try:
            if offline_reason is not None:
                opened = await self._open(name, email, visitor, topic, self.offline_queue)
            else:
                # Someone can answer: route first. The customer (when new) and the case are written in the
                # writer's next commit with the arrival, not in a transaction of their own the chat would wait for.
                known = await self._customer_for(email)
                rows = HelloRows(
                    now_ms=centre.now_ms(),
                    customer_id=known[0] if known is not None else new_id("cus"),
                    new_customer=known is None,
                    name=name,
                    email=email,
                    visitor=visitor,
                    case_id=new_id("case"),
                    topic=topic,
                    queue=queue,
                )
                if known is None and email is not None:
                    self._minting[email] = (rows.customer_id, None)
                # the case token is chosen when the case is written
                opened = Opened(rows.customer_id, known[1] if known is not None else None, rows.case_id, None)
        except Exception:
            log.exception("chat: could not identify the customer or open a case")
            conn.send(error("unavailable", "the chat is unavailable; try again shortly", client_id))
            return
        tier = opened.tier if opened.tier in centre.config.tiers else None
        s = _Session(
            token_hash=token_hash(token),
            customer_id=opened.customer_id,
            case_id=opened.case_id,
            case_token=opened.case_token,
            visitor=visitor,
            queue=queue,
            tier=tier,
            name=name,
            email=email,
            topic=topic,
        )
        if rows is None:
            assert offline_reason is not None
            await self._go_offline(conn, s, token, offline_reason, first, client_id)
            return
        assert queue is not None
        s.contact_id = new_id("chat")
        self._register(s)
        conn.hold()  # the reply goes out after the commit, and before what the router says meanwhile
        self._attach(s, conn)
        s.hello_token = token
        with centre.atomic():
            centre.stage(rows)  # before the arrival: its interaction row names the customer
            refusal = centre.submit(
                ContactArrived(
                    at_ms=centre.now_ms(),
                    contact_id=s.contact_id,
                    queue=queue,
                    channel="chat",
                    customer_id=s.customer_id,
                    tier=tier,
                    case_id=s.case_id,
                    address=visitor,
                    subject=topic,
                    attributes={"resume": s.token_hash},
                )
            )
        # The router refused the arrival outright. Its answer, not the session's state: what the router does
        # with the arrival reaches the session when it is applied, which on an edge node is after the commit.
        if refusal is not None:
            self._forget_minted_after_commit(email, rows)
            self._forget(s)
            conn.session = None
            conn.release()
            conn.send(error("unavailable", "the chat is unavailable; try again shortly", client_id))
            return
        try:
            await centre.commit()
        except Exception:  # the store is failing: take the chat back rather than promise what is not kept
            log.exception("chat: committing a chat arrival failed")
            if self.centre.router.has_contact(s.contact_id):
                centre.submit(CustomerLeft(at_ms=centre.now_ms(), contact_id=s.contact_id))
            else:  # on an edge the arrival may still be applied: withdrawn then (``_on_events``)
                self._give_up(s.contact_id)
            self._forget(s)
            conn.session = s.conn = None
            conn.outbox.items.clear()
            conn.release([error("unavailable", "the chat could not be stored; try again shortly", client_id)])
            return
        finally:
            self._minted(email, rows)
        if rows.token is None:
            # They failed where they ran (logged), or ran in another process: the store has the case, or it is
            # written on its own before answering.
            try:
                rows.token = await centre.read(case_token, rows.case_id)
                if rows.token is None:
                    await centre.write(rows)
            except Exception:
                log.exception("chat: could not store the customer or case of %s", s.contact_id)
        s.case_token = rows.token
        if s.hello_frame is not None:  # still held: the pump has not encoded it
            s.hello_frame.case = rows.token
            s.hello_frame = None
        if s.failed is not None:  # queue closed or full: the customer may leave a message instead
            self._by_contact.pop(s.contact_id, None)
            conn.release()
            await self._go_offline(conn, s, token, s.failed, first, client_id, registered=True)
            return
        conn.release()
        if first is not None:
            await self._line(conn, s, first, client_id)

    def _forget_minted_after_commit(self, email: str | None, rows: HelloRows) -> None:
        """The rows are staged but nobody awaits their commit (the arrival was refused): until it, a hello from
        the same address must still find the minted customer."""
        if email is None:
            return
        upto = self.centre.log_position()

        async def later() -> None:
            with contextlib.suppress(Exception):  # a failed commit: the store has no such customer either way
                await self.centre.commit(upto=upto)
            self._minted(email, rows)

        self._background.add(task := self.loop.create_task(later()))
        task.add_done_callback(self._background.discard)

    def _minted(self, email: str | None, rows: HelloRows) -> None:
        """The hello's rows are committed (or failed): the store answers for the address from now on."""
        if email is not None and self._minting.get(email, ("",))[0] == rows.customer_id:
            del self._minting[email]

    async def _customer_for(self, email: str | None) -> tuple[str, str | None] | None:
        """Who an address belongs to (customer id, tier): a hello still being committed, or the store.
        A chat without an address is a new customer."""
        if email is None:
            return None
        known = self._minting.get(email)
        if known is None:
            known = await self.centre.read(known_customer, email)
        # a hello from the same new address may have minted one while this one read
        return known if known is not None else self._minting.get(email)

    async def _open(
        self, name: str | None, email: str | None, visitor: str, topic: str | None, queue: str | None
    ) -> Opened:
        # Centre.write runs it again if it lost a race (two first chats from one new address at once).
        return await self.centre.write(identify_and_open_case, self.centre.now_ms(), name, email, visitor, topic, queue)

    def _offline_reason(self, queue: str | None) -> str | None:
        """Why nobody can answer a chat in ``queue`` now (``closed``, ``no_agents``), or None if someone could
        (the router's answer: ``Router.offline_reason``)."""
        return self.centre.router.offline_reason(queue, "chat", self.centre.now_ms())

    async def _go_offline(
        self,
        conn: _Conn,
        s: _Session,
        token: str,
        reason: str,
        first: str | None,
        client_id: str | None,
        *,
        registered: bool = False,
    ) -> None:
        s.state = OFFLINE
        if not registered:
            self._register(s)
            self._attach(s, conn)
        conn.send(Offline(s.case_token, token, reason))
        if first is not None:
            await self._line(conn, s, first, client_id)

    # ----------------------------------------------------------------------------------------- messages

    async def _line(self, conn: _Conn, s: _Session, text: str, client_id: str | None) -> None:
        """Log a customer line and ack it once it is durable."""
        if s.state == CLOSED:
            conn.send(error("closed", "this chat has ended", client_id))
            return
        if client_id is not None and client_id in s.acked:  # a retry after a lost ack: stored already
            message_id, at_ms = s.acked[client_id]
            conn.send(Ack(client_id, message_id, at_ms))
            return
        await self.centre.room()
        centre = self.centre
        message_id = new_id("cm") if client_id is None else _line_id(s.token_hash, client_id)
        if client_id is not None and (not s.acked_all or client_id in s.sending):
            # The ack may have been lost to a restart (the in-memory ``acked`` with it): a line is known by
            # an id derived from the session and the client's id, so the store answers for it.
            try:
                stored = await centre.read(line_stored_at, message_id)
            except DriverFailure as exc:  # the database is failing (an outage, a lock): not a bug of ours
                log.warning("chat: looking up a resent line failed: %s", exc.orig)
                conn.send(error("unavailable", "the line could not be stored; send it again", client_id))
                return
            if stored is not None:
                s.acked[client_id] = (message_id, stored)
                conn.send(Ack(client_id, message_id, stored))
                return
        at_ms = centre.now_ms()
        s.said = True
        if client_id is not None:
            s.sending.add(client_id)
        if s.state == OFFLINE:
            self._offline_line(s, text, message_id, at_ms)
        else:
            assert s.contact_id is not None
            centre.publish(
                [
                    MessageReceived(
                        at_ms=at_ms,
                        contact_id=s.contact_id,
                        message_id=message_id,
                        channel="chat",
                        body=text,
                        author=s.name or "customer",
                        case_id=s.case_id,
                        address=s.visitor,
                    )
                ]
            )
        try:
            await centre.commit()
        except Exception:
            log.exception("chat: committing a customer line failed")
            s.acked_all = False  # the writer may store the line yet
            conn.send(error("unavailable", "the line could not be stored; send it again", client_id))
            return
        finally:
            if client_id is not None:
                s.sending.discard(client_id)
        if client_id is not None:
            if len(s.acked) >= MAX_CLIENT_IDS:
                s.acked.pop(next(iter(s.acked)))
                s.acked_all = False
            s.acked[client_id] = (message_id, at_ms)
        conn.send(Ack(client_id, message_id, at_ms))

    def _offline_line(self, s: _Session, text: str, message_id: str, at_ms: int) -> None:
        """A line left while nobody could answer: on the case, under an e-mail-like contact that the first
        line queues, so an agent answers it later (by e-mail when the customer gave an address)."""
        centre = self.centre
        arrival = None
        if s.mail_contact_id is None:
            s.mail_contact_id = new_id("chat")
            if self.offline_queue is not None:
                arrival = ContactArrived(
                    at_ms=at_ms,
                    contact_id=s.mail_contact_id,
                    queue=self.offline_queue,
                    channel="email",
                    customer_id=s.customer_id,
                    tier=s.tier,
                    case_id=s.case_id,
                    address=s.email,
                    subject=s.topic or "Chat message left offline",
                    attributes={"via": "chat"},
                )
        line = MessageReceived(
            at_ms=at_ms,
            contact_id=s.mail_contact_id,
            message_id=message_id,
            # typed in the chat: the e-mail channel must not thread its reply onto it as a Message-ID
            channel="chat",
            body=text,
            author=s.name or "customer",
            case_id=s.case_id,
            address=s.email or s.visitor,
            subject=s.topic,
        )
        with centre.atomic():
            if arrival is not None:
                centre.submit(arrival)
            centre.publish([line])

    def _typing(self, conn: _Conn) -> None:
        s = conn.session
        if s is None or s.state != WITH_AGENT or s.contact_id is None or s.agent_id is None:
            return  # nobody to tell
        self.centre.signal(CustomerTyping(s.contact_id, s.agent_id))

    # ------------------------------------------------------------------------------------------- resume

    async def _resume(self, conn: _Conn, f: Resume) -> None:
        last = f.last_message_id
        th = token_hash(f.token)
        s = self._by_token.get(th)
        if s is None and th in self._resumable:
            try:
                s = await self._adopt(th)
            except Exception:
                log.exception("chat: reading a chat to resume it failed")
                conn.send(error("unavailable", "could not read the conversation; resume again"))
                return
        if s is None:
            conn.send(error("unknown_session", "no chat with that token (it ended, or the window passed)"))
            return
        old = s.conn
        if old is not None:
            old.session = None
            old.close(*Closes.CHAT_RESUMED_ELSEWHERE.value)
        self._disarm(s)
        was_closed = s.state == CLOSED
        conn.hold()
        self._attach(s, conn)
        try:
            lines = await self.centre.read(lines_after, s.interaction_ids(), last) if s.interaction_ids() else []
        except Exception:
            log.exception("chat: reading a transcript for a resume failed")
            lines = None
        if lines is None:
            conn.release([error("unavailable", "could not read the conversation; resume again")])
            return
        reply = Resumed(s.state, s.case_token)
        if s.contact_id is not None:
            reply.contact_id = s.contact_id
        if s.state == WAITING:
            reply.position = s.position
            reply.ewt_s = ewt_s(s.ewt_ms)
        elif s.state == WITH_AGENT and s.agent_id is not None:
            reply.agent = self._agent_names.get(s.agent_id, s.agent_id)
        front: list[Outbound | Close] = [reply]
        names = self._agent_names
        for r in lines:
            line = Line("customer", r["body"], r["message_id"], r["at_ms"])
            if r["direction"] == "outbound":
                line.from_, line.agent = "agent", names.get(r["author"], r["author"])
            front.append(line)
        if was_closed:
            front.append(Closed(s.reason))
            front.append(Closes.CHAT_ENDED.value)
            self._forget(s)  # everything is delivered: the token has served its last purpose
        conn.release(front, frozenset(r["message_id"] for r in lines))
        if not was_closed and s.conn is conn:  # (not if the socket went again during the read)
            self._presence(s, True)

    # -------------------------------------------------------------------------------------------- close

    async def _close(self, conn: _Conn) -> None:
        s = conn.session
        if s is None:
            conn.close(*Closes.BYE.value)
            return
        contact_live = s.state in (WAITING, WITH_AGENT)
        s.state, s.reason = CLOSED, "customer"
        if contact_live and s.contact_id is not None:
            self.centre.submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=s.contact_id))
            with contextlib.suppress(Exception):  # the router has it; the log catches up
                await self.centre.commit()
        conn.send(Closed("customer"))
        conn.close(*Closes.CHAT_ENDED.value)
        self._forget(s)

    # ------------------------------------------------------------------------------------------- agents

    async def agent_message(self, contact_id: str, agent_id: str, text: str) -> str:
        """An agent's line to the customer of chat ``contact_id``: logged (``MessageSent``), made durable,
        then delivered if the customer's socket is there (else it comes with their resume). Returns the
        message id. Raises ``ChatError`` if the contact is not a live chat this agent handles."""
        c = self.centre.router.contact(contact_id)
        if c is None or c.channel != "chat":
            raise ChatError("unknown_contact", f"no live chat {contact_id}")
        if c.agent_id != agent_id or c.state not in ("connected", "held", "wrap_up"):
            raise ChatError("not_handling", f"{agent_id} is not handling chat {contact_id}")
        s = self._by_contact.get(contact_id)
        if (s is not None and s.state == CLOSED) or c.state == "wrap_up":
            raise ChatError("closed", "the chat has ended")
        if not isinstance(text, str) or not text.strip():
            raise ChatError("bad_request", "empty message")
        if len(text) > MAX_TEXT:
            raise ChatError("bad_request", f"a chat line has at most {MAX_TEXT} characters")
        centre = self.centre
        if s is not None:
            case_id, visitor = s.case_id, s.visitor
        else:
            # The customer's session is on another node (its socket is served there; the router says the chat
            # is live): what the line carries is read from the chat's row, and that node's channel delivers it
            # when the line comes out of the log (``_on_events``).
            row = (await centre.read(restore_rows, [contact_id])).get(contact_id)
            if row is None:
                raise ChatError("unknown_contact", f"no live chat {contact_id}")
            case_id, visitor = row["case_id"], row["address"] or ""
        message_id = new_id("cm")
        at_ms = centre.now_ms()
        if s is not None:
            self._delivering.add(message_id)  # sent below once durable, not by the subscriber
        try:
            centre.publish(
                [
                    MessageSent(
                        at_ms=at_ms,
                        contact_id=contact_id,
                        message_id=message_id,
                        channel="chat",
                        agent_id=agent_id,
                        body=text,
                        case_id=case_id,
                        address=visitor,
                    )
                ]
            )
            await centre.commit()
        finally:
            self._delivering.discard(message_id)
        if s is not None:
            s.send(Line("agent", text, message_id, at_ms, self._agent_names.get(agent_id, agent_id)))
        return message_id

    def _elsewhere(self, ev: ContactArrived) -> None:
        """A chat that arrived through another node's channel: resumable here."""
        th = ev.attributes.get("resume")
        if ev.channel == "chat" and th:
            self._resumable[th] = ev.contact_id
            if len(self._resumable) > MAX_RESUMABLE:  # ended chats are dropped when asked for; the oldest go too
                self._resumable.pop(next(iter(self._resumable)))

    def _on_signal(self, signal: Signal) -> None:
        kind = type(signal)
        if kind is AgentTyping:
            self.agent_typing(signal.contact_id, signal.agent_id)
        elif kind is CustomerPresence and signal.connected:  # type: ignore[attr-defined]
            s = self._by_contact.get(signal.contact_id)
            if s is not None and s.conn is None and s.state != CLOSED and s.contact_id is not None:
                # Its customer is back on another node's socket: that node holds the chat now, and this one
                # must not end it when its resume window runs out here.
                self._forget(s)
                self._resumable[s.token_hash] = s.contact_id

    def agent_typing(self, contact_id: str, agent_id: str) -> None:
        """The agent handling ``contact_id`` is typing (``AgentTyping``): the customer sees it if the chat's
        session is here (nothing is logged)."""
        s = self._by_contact.get(contact_id)
        if s is not None and s.state == WITH_AGENT and s.agent_id == agent_id:
            s.send(AGENT_TYPING)

    # ------------------------------------------------------------------------------------ router output

    def _give_up(self, contact_id: str) -> None:
        """Remember a chat whose customer was told to try again before its arrival was answered (bounded: an
        answer comes within the edge's commit timeout or never)."""
        given_up = self._given_up
        given_up[contact_id] = None
        while len(given_up) > GIVEN_UP_KEEP:
            del given_up[next(iter(given_up))]

    def _on_events(self, events: list[Event]) -> None:
        by_contact = self._by_contact
        push = False
        for ev in events:
            kind = type(ev)
            if kind is OfferMade or kind is ContactAbandoned or kind is AgentStateChanged:
                push = True  # a place ahead freed up, or the staffing changed: positions and EWTs move
            cid = getattr(ev, "contact_id", None)
            s = by_contact.get(cid) if cid is not None else None
            if s is None:
                if kind is ContactArrived:
                    if self._given_up.pop(cid, None) is not None:  # type: ignore[arg-type]
                        # Its customer was told to try again, and the arrival was applied after all (an edge
                        # whose router answered too late): the contact is withdrawn, not left to an agent.
                        self.centre.submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=cid))  # type: ignore[arg-type]
                    else:
                        self._elsewhere(ev)  # type: ignore[arg-type]
                continue
            if kind is MessageSent:
                self._agent_line(s, ev)  # type: ignore[arg-type]
                continue
            if kind is ContactFailed:
                s.failed = ev.reason  # type: ignore[attr-defined]
                continue
            change = session_step(s.state, ev)
            if change is None:
                continue
            send = change.send
            if send == SEND_CLOSED:
                self._finish(s, change.reason or "ended")
            elif send in (SEND_QUEUED, SEND_POSITION):
                self._queued(s, ev)  # type: ignore[arg-type]
            elif send == SEND_AGENT_JOINED:
                s.state, s.agent_id = change.state, ev.agent_id  # type: ignore[attr-defined]
                s.send(AgentJoined(self._agent_names.get(s.agent_id, s.agent_id)))
            elif send == SEND_TRANSFERRED:
                s.state, s.agent_id = change.state, None
                s.send(TRANSFERRED)
        if push and self._push_timer is None and by_contact:
            self._push_timer = self.loop.call_later(self.position_push_s, self._push_positions)

    def _agent_line(self, s: _Session, ev: MessageSent) -> None:
        """An agent's line on a chat whose session is here, from an agent served by another node (its
        ``agent_message`` ran there): logged and durable by the time another node's line comes out of the log.
        A line this channel's own ``agent_message`` is sending is delivered by it, after its commit."""
        if ev.channel != "chat" or ev.message_id in self._delivering or s.state == CLOSED:
            return
        s.send(Line("agent", ev.body, ev.message_id, ev.at_ms, self._agent_names.get(ev.agent_id, ev.agent_id)))

    def _queued(self, s: _Session, ev: ContactQueued) -> None:
        s.position, s.ewt_ms = ev.position, ev.ewt_ms
        if s.state == NEW:
            s.state = WAITING
            token, s.hello_token = s.hello_token, None  # it is the customer's secret: keep it no longer than needed
            if token is None:
                s.send(Queued(s.contact_id, position=ev.position, ewt_s=ewt_s(ev.ewt_ms)))
                return
            frame = Queued(s.contact_id, token, None, ev.position, ewt_s(ev.ewt_ms))
            s.hello_frame = frame  # the case token is filled in once the hello is committed
            s.send(frame)
        elif s.state != CLOSED:
            s.state = WAITING
            s.send(Position(ev.position, ewt_s(ev.ewt_ms)))

    def _push_positions(self) -> None:
        self._push_timer = None
        router = self.centre.router
        for s in list(self._by_contact.values()):
            if s.state != WAITING or s.conn is None or s.contact_id is None:
                continue
            now = router.wait_estimate(s.contact_id)
            if now is None or (now.position, now.ewt_ms) == (s.position, s.ewt_ms):
                continue
            s.position, s.ewt_ms = now.position, now.ewt_ms
            s.send(Position(s.position, ewt_s(s.ewt_ms)))

    def _finish(self, s: _Session, reason: str) -> None:
        """The router finished the chat: tell the customer (if there) and keep the session for the window,
        so a customer who was away gets the last lines and the ending on resume."""
        if s.state == CLOSED:
            return
        s.state, s.reason = CLOSED, reason
        if s.conn is not None:
            s.conn.send(Closed(reason))
            s.conn.close(*Closes.CHAT_ENDED.value)
        self._arm(s, self._forget)

    # ---------------------------------------------------------------------------------------- bookkeeping

    def _register(self, s: _Session) -> None:
        self._by_token[s.token_hash] = s
        if s.contact_id is not None:
            self._by_contact[s.contact_id] = s

    def _forget(self, s: _Session) -> None:
        self._disarm(s)
        if self._by_token.get(s.token_hash) is s:
            del self._by_token[s.token_hash]
        if s.contact_id is not None and self._by_contact.get(s.contact_id) is s:
            del self._by_contact[s.contact_id]

    def _attach(self, s: _Session, conn: _Conn) -> None:
        s.conn = conn
        conn.session = s

    def _detach(self, conn: _Conn) -> None:
        """A socket ended. Its session waits for a resume for the window; then the customer has left."""
        s = conn.session
        conn.session = None
        if s is None or s.conn is not conn:
            return
        s.conn = None
        if self._stopped or self._by_token.get(s.token_hash) is not s:
            return
        if s.state == CLOSED:
            if s.timer is None:
                self._arm(s, self._forget)
            return
        # A chat that never said a line and has nobody yet is let go after a short grace: held for the whole
        # window, silent hellos from one place would fill the queue ahead of real customers.
        silent = not s.said and s.state in (NEW, WAITING)
        self._arm(s, self._gone, self.silent_grace_s if silent else None)
        self._presence(s, False)

    def _arm(self, s: _Session, then: Callable[[_Session], None], after_s: float | None = None) -> None:
        self._disarm(s)
        s.timer = self.loop.call_later(self.window_s if after_s is None else after_s, then, s)

    @staticmethod
    def _disarm(s: _Session) -> None:
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None

    def _gone(self, s: _Session) -> None:
        """Not back within the resume window: the customer has left."""
        s.timer = None
        if s.conn is not None:
            return
        live = s.state in (WAITING, WITH_AGENT, NEW)
        s.state, s.reason = CLOSED, "timeout"
        self._forget(s)
        if live and s.contact_id is not None and self.centre.router.has_contact(s.contact_id):
            self.centre.submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=s.contact_id))

    def _presence(self, s: _Session, connected: bool) -> None:
        if s.contact_id is None or s.state not in (WAITING, WITH_AGENT):
            return
        self.centre.signal(CustomerPresence(s.contact_id, s.agent_id, connected, self.centre.node_id))

    # ------------------------------------------------------------------------------------------- views

    def sessions(self) -> dict[str, str]:
        """Chat contact id -> session state, for the dashboard and tests."""
        return {cid: s.state for cid, s in self._by_contact.items()}

    def connected(self, contact_id: str) -> bool:
        """Is the customer of this chat on a socket right now?"""
        s = self._by_contact.get(contact_id)
        return s is not None and s.conn is not None


def _restored(c: ContactView, row: dict[str, Any]) -> _Session:
    """The session of a live chat from the router's contact and its row in the store (``restore_rows``)."""
    return _Session(
        token_hash=c.attributes["resume"],
        customer_id=c.customer_id,
        case_id=row.get("case_id"),
        case_token=row.get("token"),
        visitor=row.get("address") or "",
        queue=c.queue,
        tier=c.tier,
        topic=row.get("subject"),
        contact_id=c.id,
        state=WAITING if c.state == "queued" or c.state == "offered" else WITH_AGENT,
        agent_id=c.agent_id if c.state in ("connected", "held") else None,
        said=True,  # not known here: it keeps the whole window
        acked_all=False,  # the acks sent elsewhere (or before a restart) are the store's to tell
    )


def _line_id(token_hash_: str, client_id: str) -> str:
    return "cm-" + hashlib.sha256(f"{token_hash_}:{client_id}".encode()).hexdigest()[:16]


__all__ = ["MAX_EMAIL", "MAX_ID", "MAX_NAME", "MAX_TEXT", "MAX_TOPIC", "ChatChannel", "ChatError", "token_hash"]
