"""The agent protocol: one WebSocket per agent console, JSON frames both ways (``docs/protocol.md``).

The gateway is an adapter like the channels: it translates frames into router inputs (``centre.submit``) and
the centre's event stream into frames, and holds no routing decisions. What it adds is what a console needs
around them:

* **who**: the browser console's web session (the ``cc_session`` cookie sent with the handshake, from the site's
  own pages only) or else a first frame with an API token; a second console of the same agent replaces the first;
  the console lasts only as long as that login (logout, a disabled user, a revoked token close it: edge/web/sockets.py);
* **checking before submitting**: every command is checked against the router's read side first
  (``Router.check`` and its views) and answered with an ``error`` frame the agent can act on (a refusal the
  checks missed is still caught: ``submit`` returns it);
* **order**: every connection has one outgoing queue, filled in the order the centre's events happened.
  Frames that need the database (a contact's transcript, an offer's preview after a restart) are tasks
  started at once and sent in their place, so a console sees ``offer`` before ``offer_gone`` and
  ``contact`` before that contact's next ``message``; frames queued behind such a task wait for it (one
  group commit and one indexed read), never for each other;
* **no database on the offer path**: an offer is sent at once with a preview taken from the contact's
  arrival and first lines, remembered from the event stream; the customer's screen-pop follows in its own
  ``screen_pop`` frame when the read returns, and that read is recorded in the audit log.

A console that goes away leaves its agent away ("disconnected") if it was ready, so nothing more is offered to
a screen nobody looks at; the contacts it was handling stay its own until it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.exceptions import ConnectionClosed

from contactcentre.acd import score_words
from contactcentre.edge.agents import protocol as frames
from contactcentre.edge.agents.protocol import (
    BURST,
    MAX_BACKLOG,
    MAX_TEXT,
    PROTOCOL,
    RATE_PER_S,
    AgentConnection,
    Command,
    error_frame,
)
from contactcentre.edge.frames import Closes, Lazy, Outbox, encode
from contactcentre.edge.frames.policy import refused_login
from contactcentre.events import (
    AgentAway,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentReady,
    CaseNoteAdded,
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConnected,
    ContactFailed,
    ContactHeld,
    ContactOverflowed,
    ContactRetrieved,
    ContactTransferred,
    DispositionSet,
    Event,
    MessageReceived,
    MessageSent,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
    WrapUpEnded,
    WrapUpStarted,
)
from contactcentre.reporting.agent_queues import QUEUES_EVERY_S, QueueFigures
from contactcentre.server.contact_actions import ActionError, ContactActions
from contactcentre.server.signals import AgentTyping, CustomerPresence, CustomerTyping, Signal
from contactcentre.store.contacts import Preview, contact_case, contact_preview
from contactcentre.store.ops import ReadRecords
from contactcentre.store.screenpop import ScreenPop, screen_pop, screen_pop_customer
from contactcentre.store.transcripts import (
    BadCursor,
    Page,
    contact_page,
    message_text,
    parse_cursor,
)
from contactcentre.store.users import User, user_for_token

if TYPE_CHECKING:
    from contactcentre.acd import AgentStatus, AgentView, ContactView
    from contactcentre.edge.web.auth import WebAuth
    from contactcentre.server.centre import Centre

log = logging.getLogger(__name__)

LOGIN_TIMEOUT_S = 5.0
PREVIEW_LINES = 5
PREVIEW_CHARS = 500
MAX_KNOWN = 50_000  # contacts whose arrival and first lines are remembered for previews (oldest forgotten first)

_IDENTITY_KIND = {"voice": "phone", "callback": "phone", "outbound": "phone", "email": "email", "chat": "chat"}

Frame = dict[str, Any]


class ProtocolError(Exception):
    """A frame the gateway does not carry out; becomes an ``error`` frame and the connection stays."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra  # more fields for the error frame


class _Known:
    """What the arrival and the first customer lines said about a contact: an offer's preview without a
    database read. ``complete`` is false when lines came before (or without) the arrival."""

    __slots__ = ("address", "case_id", "chars", "complete", "lines", "said", "subject")

    def __init__(self) -> None:
        self.subject: str | None = None
        self.case_id: str | None = None
        self.address: str | None = None
        self.lines: list[str] = []
        self.chars = 0
        self.complete = False
        self.said = False  # a line or a note was logged on the contact: its transcript is the store's to tell

    def add_text(self, text: str) -> None:
        for line in text.splitlines():
            if len(self.lines) >= PREVIEW_LINES or self.chars >= PREVIEW_CHARS:
                return
            line = line.strip()
            if not line or line.startswith(">"):  # quoted text of an earlier mail says nothing new
                continue
            line = line[: PREVIEW_CHARS - self.chars]
            self.lines.append(line)
            self.chars += len(line)

    def preview(self) -> Frame:
        return {"subject": self.subject, "lines": list(self.lines)}


class _Dedupe(Lazy):
    """A live message frame that is not sent if the contact's transcript already carried it."""

    __slots__ = ("contact_id", "frame_", "message_id", "seen")

    def __init__(self, seen: dict[str, set[str]], contact_id: str, message_id: str, frame: Frame) -> None:
        self.seen, self.contact_id, self.message_id, self.frame_ = seen, contact_id, message_id, frame

    def frame(self) -> Frame | None:
        seen = self.seen.get(self.contact_id)
        return None if seen is not None and self.message_id in seen else self.frame_


class _Session:
    """One logged-in console: its outbox (frames, tasks that make one, ``_Dedupe``s, in the order the
    centre's events happened) and its frame rules (``AgentConnection``)."""

    def __init__(self, gateway: AgentGateway, ws: Any, user: User, agent_id: str, rules: AgentConnection) -> None:
        self.gateway = gateway
        self.ws = ws
        self.user = user
        self.agent_id = agent_id
        self.rules = rules
        self.outbox = Outbox(ws, limit=gateway.max_backlog, too_slow=Closes.AGENT_TOO_SLOW, name=f"agent {agent_id}")
        self.push = self.outbox.send
        self.last_state: tuple[Any, ...] | None = None
        self.seen: dict[str, set[str]] = {}  # contact id -> message ids its transcript frame carried
        self.writer: asyncio.Task[None] | None = None
        self.logged_out = False  # the console logged its agent out (the router may not have applied it yet)
        self.unregister: Callable[[], None] = lambda: None  # from the gateway's LiveSockets, when it has one

    @property
    def closed(self) -> bool:
        return self.outbox.closing

    def drop(self) -> None:
        """Forget what is queued (the connection is over or not worth serving any more)."""
        self.rules.ended()
        self.outbox.drop()

    async def close(self, code: int, reason: str) -> None:
        self.drop()
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)


class AgentGateway:
    """Serves agent consoles on ``handle(ws)`` (the runtime routes ``/agent`` here)."""

    def __init__(
        self,
        centre: Centre,
        *,
        login_timeout_s: float = LOGIN_TIMEOUT_S,
        rate_per_s: float = RATE_PER_S,
        burst: int = BURST,
        max_backlog: int = MAX_BACKLOG,
        web_auth: WebAuth | None = None,
        queues_every_s: float = QUEUES_EVERY_S,
    ) -> None:
        self.centre = centre
        self.web_auth = web_auth  # None: API tokens only (no web site, e.g. a load-generator's test server)
        # The controlled list agents pick a wrap-up outcome from; empty: any code is taken.
        self.dispositions = frozenset(centre.config.dispositions.codes)
        self.transcripts = centre.config.server.transcripts  # how much of a conversation one frame carries
        self.login_timeout_s = login_timeout_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_backlog = max_backlog
        self._sessions: dict[str, _Session] = {}
        self._connections: set[Any] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._known: dict[str, _Known] = {}
        self._reads: ReadRecords | None = None  # reads of customers' data staged for the next commit
        self._stopping = False
        self._commands: dict[str, Callable[[_Session, Any], Awaitable[Frame | None]]] = {
            "ping": self._cmd_ping,
            "state": self._cmd_state,
            "logout": self._cmd_logout,
            "accept": self._cmd_accept,
            "answer": self._cmd_answer,
            "reject": self._cmd_reject,
            "message": self._cmd_message,
            "reply": self._cmd_message,  # an e-mail reply is an agent message on an e-mail contact
            "hold": self._cmd_hold,
            "retrieve": self._cmd_retrieve,
            "transfer": self._cmd_transfer,
            "consult": self._cmd_consult,
            "complete_transfer": self._cmd_complete_transfer,
            "conference": self._cmd_conference,
            "end": self._cmd_end,
            "hang_up": self._cmd_end,  # a call's word for it
            "callback": self._cmd_callback,
            "disposition": self._cmd_disposition,
            "wrap_up_done": self._cmd_wrap_up_done,
            "typing": self._cmd_typing,
            "note": self._cmd_note,
            "transcript": self._cmd_transcript,
            "message_text": self._cmd_message_text,
        }
        self.actions = ContactActions(centre)
        self.queue_figures = QueueFigures(centre, lambda: self._sessions, queues_every_s)
        self._unsubscribe = centre.subscribe(self._on_events)
        self._unlisten = centre.on_signal(self._on_signal)

    # ----------------------------------------------------------------------------------------- public

    def connected_agents(self) -> list[str]:
        """Agent ids with a console logged in now."""
        return sorted(self._sessions)

    def _on_signal(self, signal: Signal) -> None:
        """A channel's signal (``server/signals.py``), for the console of the agent it names if it is here."""
        if type(signal) is CustomerTyping:
            self.customer_typing(signal.contact_id, signal.agent_id)
        elif type(signal) is CustomerPresence:
            self.customer_presence(signal.contact_id, signal.agent_id, signal.connected)

    def customer_typing(self, contact_id: str, agent_id: str) -> None:
        """The customer of ``contact_id`` is typing (the chat channel's ``CustomerTyping``)."""
        s = self._sessions.get(agent_id)
        if s is not None and self.centre.router.handler_of(contact_id) == s.agent_id:
            s.push({"type": "typing", "contact_id": contact_id})

    def customer_presence(self, contact_id: str, agent_id: str | None, connected: bool) -> None:
        """The customer's connection went away or came back (the chat channel's ``CustomerPresence``)."""
        s = self._sessions.get(agent_id) if agent_id is not None else None
        if s is not None and self.centre.router.handler_of(contact_id) == s.agent_id:
            s.push({"type": "customer_presence", "contact_id": contact_id, "connected": connected})

    async def handle(self, ws: Any) -> None:
        """Serve one console connection until it closes."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._connections.add(ws)
        session: _Session | None = None
        try:
            if self._stopping:
                await ws.close(*Closes.AGENT_GOING_AWAY.value)
                return
            session = await self._login(ws)
            if session is None:
                return
            decode, receive, loop = frames.decoder.decode, session.rules.receive, self.centre.loop
            async for raw in ws:
                step = receive(decode(raw), loop.time())  # after a logout, a replacement: nothing is carried out
                for frame in step.send:
                    session.push(frame)
                if step.close is not None:
                    await session.close(*step.close)
                elif step.command is not None:
                    assert step.answer is not None
                    await self._on_frame(session, step.command, step.answer)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("agent connection failed")
            with contextlib.suppress(Exception):
                await ws.close(*Closes.INTERNAL.value)
        finally:
            self._connections.discard(ws)
            if session is not None:
                await self._ended(session)
            if task is not None:
                self._handlers.discard(task)

    async def stop(self) -> None:
        """Close every console (1001) and wait for their handlers to finish."""
        self._stopping = True
        self._unsubscribe()
        self._unlisten()
        self.queue_figures.stop()
        for s in list(self._sessions.values()):
            s.drop()
        closing = [self._close_quietly(ws, *Closes.AGENT_GOING_AWAY.value) for ws in list(self._connections)]
        if closing:
            await asyncio.gather(*closing)
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        background = list(self._background)
        for t in background:
            t.cancel()
        if background:
            await asyncio.gather(*background, return_exceptions=True)

    # -------------------------------------------------------------------------------------------- login

    async def _login(self, ws: Any) -> _Session | None:
        session_id = None
        if self.web_auth is not None:
            # Here, not at the top: twisted.web must wait for the runtime's reactor (edge/web/widget.py says why).
            from contactcentre.edge.web.auth import session_cookie

            session_id = session_cookie(_header(ws, "Cookie"))
        token = None
        checked_at = self.centre.loop.time()  # a login ended while it is checked closes the socket at once
        if session_id is not None:
            user = await self._session_login(ws, session_id)
        else:
            user, token, checked_at = await self._token_login(ws)
        if user is None:
            return None
        return await self._start(ws, user, session_id=session_id, token=token, checked_at=checked_at)

    async def _session_login(self, ws: Any, session_id: str) -> User | None:
        """The browser console: the page's web session, sent as a cookie with the handshake. No login frame."""
        assert self.web_auth is not None
        # A cookie goes with every request the browser makes, whichever site's page opens the socket: only the
        # site's own pages may use it (cross-site WebSocket hijacking).
        if not self.web_auth.allowed_origin(_header(ws, "Origin")):
            await self._refuse(ws, "bad_origin", "a web session is only accepted from the site's own pages (Origin)")
            return None
        user = await self.web_auth.session_user(session_id)
        if user is None:
            await self._refuse(ws, "unauthorized", "the web session has expired or was ended; log in again")
            return None
        return user

    async def _token_login(self, ws: Any) -> tuple[User | None, str | None, float]:
        """The user of the login frame's API token, the token, and when its check began (``LiveSockets.add``)."""
        centre = self.centre
        try:
            raw = await asyncio.wait_for(ws.recv(), self.login_timeout_s)
        except TimeoutError:
            await self._refuse(ws, "login_timeout", f"no login frame within {self.login_timeout_s:g} s")
            return None, None, 0.0
        step = AgentConnection().login_frame(frames.decoder.decode(raw))
        token = step.token
        if token is None:
            for refusal in step.send:
                await self._refuse(ws, refusal["code"], refusal["detail"])
            return None, None, 0.0
        checked_at = centre.loop.time()
        user = await centre.read(user_for_token, token)
        if user is None:
            await self._refuse(ws, "unauthorized", "unknown, revoked or disabled token")
            return None, None, 0.0
        return user, token, checked_at

    async def _start(
        self,
        ws: Any,
        user: User,
        *,
        session_id: str | None = None,
        token: str | None = None,
        checked_at: float | None = None,
    ) -> _Session | None:
        centre = self.centre
        agent_id = user.agent_id
        if not agent_id:
            await self._refuse(ws, "not_an_agent", f"user {user.id!r} ({user.role}) has no agent id")
            return None
        router = centre.router
        agent = router.agent(agent_id)
        if agent is None:
            await self._refuse(ws, "unknown_agent", f"agent {agent_id!r} is not in the centre's configuration")
            return None
        if not agent.logged_in and not self._stopping:
            # Logged in but not ready: the agent chooses when work may come (an offer to someone still
            # putting a headset on would ring out and put them away as missed). The welcome shows the agent
            # as the router has it once the login is applied, which on an edge node is when the commit returns.
            self.centre.submit(AgentLoggedIn(at_ms=centre.now_ms(), agent_id=agent_id, away_reason="not_ready"))
            with contextlib.suppress(Exception):  # the router has it; the log catches up
                await centre.commit()
        if self._stopping:
            await self._close_quietly(ws, *Closes.AGENT_GOING_AWAY.value)
            return None
        # Nothing below awaits until the session is registered: no event for this agent can fall between
        # the welcome's snapshot and the first pushed frame.
        agent = self._agent_now(agent_id)
        old = self._sessions.pop(agent_id, None)
        if old is not None:
            log.info("agent %s: a new console replaces the old one", agent_id)
            self._spawn(old.close(*Closes.AGENT_REPLACED.value))
        rules = AgentConnection(self.rate_per_s, self.burst)
        rules.logged_in(agent_id, centre.loop.time())
        s = _Session(self, ws, user, agent_id, rules)
        self._sessions[agent_id] = s
        if self.web_auth is not None:  # ending the login (disabled, logged out) ends this console at once
            s.unregister = self.web_auth.sockets.add(
                user.id, functools.partial(self._revoked, s), session_id=session_id, token=token, checked_at=checked_at
            )
        s.last_state = _state_key(agent)
        work = [c for c in map(router.contact, agent.work) if c is not None]
        s.push(
            {
                "type": "welcome",
                "protocol": PROTOCOL,
                "agent_id": agent_id,
                "user": {"id": user.id, "role": user.role, "display_name": user.display_name},
                **_state_fields(agent),
                "work": [_work_entry(c) for c in work],
                "offers": [o.id for o in agent.offers],
                "server_ms": centre.now_ms(),
                "limits": {"rate_per_s": self.rate_per_s, "burst": self.burst, "max_text": MAX_TEXT},
                "dispositions": sorted(self.dispositions),
            }
        )
        for c in work:  # a console that comes back gets its contacts with their transcripts again
            s.push(self._task(self._contact_frame(s, c.id, _work_entry(c))))
        decisions = {d.offer_id: d for d in centre.driver.decisions if d.agent_id == agent_id}
        offered = [(o, router.contact(o.contact_id)) for o in agent.offers]
        for o, c in offered:
            fields = _offer_fields(o.id, c, o.expires_ms, decisions.get(o.id))
            s.push(self._task(self._offer_frame(fields, o.contact_id)))
        for c in [*work, *(c for _, c in offered if c is not None)]:
            self._spawn(self._screen_pop(s, c.id, c.offer.id if c.offer is not None else None))
        s.writer = self._task(s.outbox.run())
        self.queue_figures.welcome(agent_id)
        log.info("agent %s: console connected (user %s)", agent_id, user.id)
        return s

    async def _refuse(self, ws: Any, code: str, detail: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(error_frame(code, detail)), text=True)
        await self._close_quietly(ws, *refused_login(code))

    @staticmethod
    async def _close_quietly(ws: Any, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)

    async def _ended(self, s: _Session) -> None:
        s.drop()
        if s.writer is not None:
            s.writer.cancel()
            await asyncio.wait([s.writer])
        self._detach(s)

    def _detach(self, s: _Session) -> None:
        """The console is gone: if it was the agent's current one, nothing more is offered to the agent."""
        s.unregister()
        if self._sessions.get(s.agent_id) is not s:
            return  # replaced by a newer console (which carries on with the agent as it is), or detached already
        del self._sessions[s.agent_id]
        agent = self.centre.router.agent(s.agent_id)
        if agent is not None and agent.ready and not s.logged_out and not self.centre.driver.closed:
            # Offers to this agent fall through (contacts keep their place); its work stays its own.
            self.centre.submit(AgentAway(at_ms=self.centre.now_ms(), agent_id=s.agent_id, reason="disconnected"))
        log.info("agent %s: console disconnected", s.agent_id)

    def _revoked(self, s: _Session, why: str) -> None:
        """The login that opened this console has ended (user disabled, logged out, token revoked): the
        console goes at once, as a disconnect does, before its closing handshake: nothing more is sent to it,
        nothing it sends is carried out, and the agent is put away so no offer rings on it meanwhile."""
        s.drop()
        self._detach(s)
        log.info("agent %s: console closed, %s", s.agent_id, why)
        self._spawn(self._refuse(s.ws, "revoked", why))

    # ----------------------------------------------------------------------------------------- commands

    async def _on_frame(self, s: _Session, command: Command, answer: Frame) -> None:
        """Carry out one command; answer ``ack`` (after the frames it caused) or ``error``."""
        try:
            extra = await self._commands[answer["for"]](s, command)
            s.push({"type": "ack", **answer, **(extra or {})})
            step = s.rules.acked(command)
            if step.close is not None:
                s.outbox.close(*step.close)
        except ProtocolError as exc:
            s.push(error_frame(exc.code, exc.detail, answer, **exc.extra))
        except Exception:
            log.exception("agent %s: %s failed", s.agent_id, answer.get("for"))
            s.push(error_frame("internal", "the server failed to carry this out", answer))

    def _submit(self, event: Event) -> None:
        """Hand one input to the router; a refusal the checks before missed still becomes an error frame."""
        if self.centre.driver.closed:
            raise ProtocolError("unavailable", "the server is shutting down")
        refusal = self.centre.submit(event)
        if refusal is not None:
            raise ProtocolError("refused", f"the router refused {type(event).__name__}: {refusal}")

    def _check(self, event: Event) -> None:
        """The router's own rules answer whether it would take the input (nothing is applied)."""
        refusal = self.centre.router.check(event)
        if refusal is not None:
            raise ProtocolError("refused", str(refusal))

    def _agent(self, s: _Session) -> AgentView:
        return self._agent_now(s.agent_id)

    def _agent_now(self, agent_id: str) -> AgentView:
        a = self.centre.router.agent(agent_id)
        assert a is not None  # the router forgets no agent, and a console is only opened for a known one
        return a

    def _own(self, s: _Session, frame: frames.OnContact) -> ContactView:
        """The contact a command is about, if this agent is handling it (connected, held or wrapping up)."""
        cid = frame.contact_id
        c = self.centre.router.contact(cid)
        if c is None or self.centre.router.handler_of(cid) != s.agent_id:
            raise ProtocolError("not_your_contact", f"you are not handling contact {cid!r}")
        return c

    async def _cmd_ping(self, s: _Session, frame: frames.Ping) -> Frame | None:
        return {"server_ms": self.centre.now_ms()}

    async def _cmd_state(self, s: _Session, frame: frames.SetState) -> Frame | None:
        want = frame.state
        a = self._agent(s)
        now = self.centre.now_ms()
        event: Event
        if want == "available":
            if not a.logged_in:  # logged out by a supervisor meanwhile: "available" logs in again
                event = AgentLoggedIn(at_ms=now, agent_id=a.id)
            else:
                event = AgentReady(at_ms=now, agent_id=a.id)
                self._check(event)
        elif want == "away":
            reason = frame.reason or "break"
            if not a.logged_in:
                event = AgentLoggedIn(at_ms=now, agent_id=a.id, away_reason=reason)
            else:
                event = AgentAway(at_ms=now, agent_id=a.id, reason=reason)
                self._check(event)
        else:
            raise ProtocolError("bad_field", f"state: 'available' or 'away', not {want!r}")
        self._submit(event)
        # Answered once the change is in the log, with the state the router has then (on an edge node its copy
        # here has applied the change only by then; the ``state`` frame its event makes came before).
        await self.centre.commit()
        return _state_fields(self._agent(s))

    async def _cmd_logout(self, s: _Session, frame: frames.Logout) -> Frame | None:
        a = self._agent(s)
        if a.handling:
            busy = ", ".join(a.handling)
            raise ProtocolError("refused", f"you are still handling {busy}: end or transfer it first")
        if a.logged_in:
            event = AgentLoggedOut(at_ms=self.centre.now_ms(), agent_id=a.id)
            self._check(event)
            self._submit(event)
            # The console closes after the ack; its agent is not put away then (``_detach``), whatever the
            # router's copy on an edge node says before it has applied the logout.
            s.logged_out = True
        return None

    def _open_offer(self, s: _Session, frame: frames.Accept | frames.Answer | frames.Reject) -> tuple[str, str]:
        oid = frame.offer_id
        o = next((o for o in self._agent(s).offers if o.id == oid), None)
        if o is None:
            raise ProtocolError("stale_offer", f"offer {oid!r} is not open for you (expired, withdrawn or answered)")
        cid = frame.contact_id
        if cid is not None and cid != o.contact_id:
            raise ProtocolError("bad_field", f"offer {oid!r} is for contact {o.contact_id!r}, not {cid!r}")
        return oid, o.contact_id

    async def _act(self, fn: Callable[..., Awaitable[Frame]], *args: Any, **kw: Any) -> Frame:
        """One of the shared contact actions (``contact_actions``), its refusal as an error frame."""
        try:
            return await fn(*args, **kw)
        except ActionError as exc:
            # Over the socket a contact the agent does not have is not the agent's, whether or not it exists.
            code = "not_your_contact" if exc.code == "not_found" else exc.code
            extra = {"reason": exc.reason} if exc.reason is not None else {}
            raise ProtocolError(code, exc.detail, **extra) from None

    async def _cmd_accept(self, s: _Session, frame: frames.Accept | frames.Answer) -> Frame | None:
        oid, cid = self._open_offer(s, frame)
        return await self._act(self.actions.answer, cid, s.agent_id, oid)

    async def _cmd_answer(self, s: _Session, frame: frames.Answer) -> Frame | None:
        """``accept`` by contact id (a ringing call), or by ``offer_id`` like ``accept``."""
        if frame.offer_id is not None:
            return await self._cmd_accept(s, frame)
        return await self._act(self.actions.answer, frame.contact_id, s.agent_id)

    async def _cmd_reject(self, s: _Session, frame: frames.Reject) -> Frame | None:
        oid, cid = self._open_offer(s, frame)
        reason = frame.reason or ""
        now = self.centre.now_ms()
        self._submit(OfferRejected(at_ms=now, offer_id=oid, contact_id=cid, agent_id=s.agent_id, reason=reason))
        return {"offer_id": oid, "contact_id": cid}

    async def _cmd_message(self, s: _Session, frame: frames.Message) -> Frame | None:
        c = self._own(s, frame)
        if not c.handling:
            raise ProtocolError("refused", f"contact {c.id!r} is {c.state}: handling has ended")
        text = frame.text
        if not text.strip():
            raise ProtocolError("bad_field", "text: empty")
        adapter = self.centre.channels.get(c.channel)
        if adapter is None:
            raise ProtocolError("channel_unavailable", f"no {c.channel} channel takes agents' messages here")
        try:
            message_id = await adapter.agent_message(c.id, s.agent_id, text)
        except Exception as exc:  # the adapter's word on why (the customer left, the mailbox is gone)
            log.warning("agent %s: %s message on %s failed: %s", s.agent_id, c.channel, c.id, exc)
            raise _channel_error(exc) from None
        return {"contact_id": c.id, "message_id": message_id}

    async def _cmd_note(self, s: _Session, frame: frames.Note) -> Frame | None:
        """A note on the contact's case for colleagues (while handling it or in wrap-up); acknowledged once
        it is stored. Customers never see it."""
        c = self._own(s, frame)
        text = frame.text
        if not text.strip():
            raise ProtocolError("bad_field", "text: empty")
        case_id = await self.centre.read(contact_case, c.id)
        self.centre.publish(
            [
                CaseNoteAdded(
                    at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=s.agent_id, text=text, case_id=case_id
                )
            ]
        )
        await self.centre.commit()
        return {"contact_id": c.id, "case_id": case_id}

    async def _cmd_hold(self, s: _Session, frame: frames.Hold) -> Frame | None:
        return await self._act(self.actions.hold, frame.contact_id, s.agent_id)

    async def _cmd_retrieve(self, s: _Session, frame: frames.Retrieve) -> Frame | None:
        return await self._act(self.actions.retrieve, frame.contact_id, s.agent_id)

    async def _cmd_transfer(self, s: _Session, frame: frames.Transfer) -> Frame | None:
        return await self._act(self.actions.transfer, frame.contact_id, s.agent_id, **_targets(frame))

    async def _cmd_consult(self, s: _Session, frame: frames.Consult) -> Frame | None:
        return await self._act(self.actions.consult, frame.contact_id, s.agent_id, **_targets(frame))

    async def _cmd_complete_transfer(self, s: _Session, frame: frames.CompleteTransfer) -> Frame | None:
        return await self._act(self.actions.complete_transfer, frame.contact_id, s.agent_id)

    async def _cmd_conference(self, s: _Session, frame: frames.Conference) -> Frame | None:
        return await self._act(self.actions.conference, frame.contact_id, s.agent_id)

    async def _cmd_callback(self, s: _Session, frame: frames.Callback) -> Frame | None:
        return await self._act(
            self.actions.callback,
            frame.contact_id,
            s.agent_id,
            at_ms=frame.at_ms,
            number=frame.number,
            queue=frame.queue,
            customer_asked=frame.customer_asked,
        )

    async def _cmd_end(self, s: _Session, frame: frames.End) -> Frame | None:
        return await self._act(self.actions.hang_up, frame.contact_id, s.agent_id)

    async def _cmd_disposition(self, s: _Session, frame: frames.Disposition) -> Frame | None:
        c = self._own(s, frame)
        code = frame.code
        if not code.strip():
            raise ProtocolError("bad_field", "code: empty")
        if self.dispositions and code not in self.dispositions:
            raise ProtocolError(
                "bad_field", f"code: {code!r} is not a disposition code of this centre", codes=sorted(self.dispositions)
            )
        self._submit(DispositionSet(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=s.agent_id, code=code))
        return {"contact_id": c.id, "code": code}

    async def _cmd_wrap_up_done(self, s: _Session, frame: frames.WrapUpDone) -> Frame | None:
        c = self._own(s, frame)
        event = WrapUpEnded(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=s.agent_id)
        self._check(event)
        self._submit(event)
        return {"contact_id": c.id}

    async def _cmd_typing(self, s: _Session, frame: frames.Typing) -> Frame | None:
        c = self._own(s, frame)
        if c.handling:  # the channel holding the contact's customer shows it; those without typing (e-mail) do not
            self.centre.signal(AgentTyping(c.id, s.agent_id))
        return {"contact_id": c.id}

    # ------------------------------------------------------------------------------------------- events

    def _on_events(self, batch: list[Event]) -> None:
        """Everything the centre logs passes here, in order; the frames for connected agents are queued."""
        touched: dict[str, _Session] = {}
        self.queue_figures.changed()
        for ev in batch:
            if isinstance(ev, ContactArrived):
                self._remember(ev)
                continue
            if isinstance(ev, MessageReceived | MessageSent):
                self._message(ev)
                continue
            if isinstance(ev, CaseNoteAdded) and (noted := self._known.get(ev.contact_id)) is not None:
                noted.said = True
            if isinstance(ev, ContactAbandoned | ContactFailed) or (isinstance(ev, ContactOverflowed) and ev.left):
                self._known.pop(ev.contact_id, None)
                continue
            if isinstance(ev, ContactClosed) or (isinstance(ev, ContactTransferred) and ev.to_external is not None):
                self._known.pop(ev.contact_id, None)
            agent_id = getattr(ev, "agent_id", None)
            s = self._sessions.get(agent_id) if agent_id is not None else None
            if s is not None:
                touched[s.agent_id] = s
                self._to_agent(s, ev)
        # One state frame per batch and agent, and only when it changed: the console shows where the agent
        # ended up, and presence changes that leave the state alone (away while busy) are shown too.
        router = self.centre.router
        for s in touched.values():
            agent = router.agent_status(s.agent_id)
            if agent is None:
                continue
            key = _state_key(agent)
            if key != s.last_state:
                s.last_state = key
                s.push({"type": "state", **_state_fields(agent)})

    def _to_agent(self, s: _Session, ev: Event) -> None:
        """The frames one event about this agent makes."""
        router = self.centre.router
        match ev:
            case OfferMade():
                fields = _offer_fields(ev.offer_id, router.contact(ev.contact_id), ev.expires_ms, ev)
                fields.update(contact_id=ev.contact_id, queue=ev.queue, channel=ev.channel)
                s.push(self._task(self._offer_frame(fields, ev.contact_id)))
                self._spawn(self._screen_pop(s, ev.contact_id, ev.offer_id, self.centre.log_position()))
            case OfferExpired():
                s.push(_offer_gone(ev.offer_id, ev.contact_id, "expired"))
            case OfferCancelled():
                s.push(_offer_gone(ev.offer_id, ev.contact_id, ev.reason))
            case ContactConnected():
                c = router.contact(ev.contact_id)
                entry: Frame = {
                    "contact_id": ev.contact_id,
                    "channel": ev.channel,
                    "queue": ev.queue,
                    "state": "connected",
                    "customer_id": c.customer_id if c is not None else None,
                    "tier": ev.tier,
                    "wait_ms": ev.wait_ms,
                }
                s.push(self._task(self._contact_frame(s, ev.contact_id, entry)))
            case ContactHeld() | ContactRetrieved():
                state = "held" if isinstance(ev, ContactHeld) else "connected"
                s.push({"type": "contact_state", "contact_id": ev.contact_id, "state": state})
            case WrapUpStarted():
                if ev.by == "customer":
                    s.push({"type": "customer_left", "contact_id": ev.contact_id})
                if not _no_wrap_up(ev):
                    s.push({"type": "wrap_up", "contact_id": ev.contact_id, "ends_ms": ev.ends_ms, "by": ev.by})
            case ContactClosed():
                s.seen.pop(ev.contact_id, None)
                s.push(
                    {
                        "type": "contact_closed",
                        "contact_id": ev.contact_id,
                        "disposition": ev.disposition,
                        "talk_ms": ev.talk_ms,
                        "hold_ms": ev.hold_ms,
                        "wrap_ms": ev.wrap_ms,
                    }
                )
            case ContactTransferred():
                s.seen.pop(ev.contact_id, None)
                s.push(
                    {
                        "type": "transferred",
                        "contact_id": ev.contact_id,
                        "to_queue": ev.to_queue,
                        "to_agent": ev.to_agent_id,
                        "to_external": ev.to_external,
                    }
                )
            case _:
                pass  # the agent's own inputs echoed (their ack said so), wrap-up timers (closed follows)

    def _remember(self, ev: ContactArrived) -> None:
        known = self._known.get(ev.contact_id)
        if known is None:
            known = self._known[ev.contact_id] = _Known()
            if len(self._known) > MAX_KNOWN:
                self._known.pop(next(iter(self._known)))
        known.subject = ev.subject
        known.case_id = ev.case_id
        known.address = ev.address
        known.complete = True

    def _message(self, ev: MessageReceived | MessageSent) -> None:
        inbound = type(ev) is MessageReceived
        if not inbound and (known := self._known.get(ev.contact_id)) is not None:
            known.said = True
        if inbound:
            known = self._known.get(ev.contact_id)
            if known is None and not self.centre.router.has_contact(ev.contact_id):
                # lines that came before their contact's arrival (or without one): kept for the preview
                known = self._known[ev.contact_id] = _Known()
                if len(self._known) > MAX_KNOWN:
                    self._known.pop(next(iter(self._known)))
            if known is not None:
                known.said = True
                if known.subject is None and ev.subject:
                    known.subject = ev.subject
                known.add_text(ev.body)
        agent_id = self.centre.router.handler_of(ev.contact_id)
        s = self._sessions.get(agent_id) if agent_id is not None else None
        if s is None:
            return  # lines that come while a contact waits or rings are in its transcript later
        if not inbound and ev.agent_id == s.agent_id:
            return  # the agent's own line: its ack carried the message id
        frame = {
            "type": "message",
            **_message_fields(ev.contact_id, ev.message_id, ev.body, ev.at_ms, ev.subject, inbound),
        }
        _cut(frame, self.transcripts.body_chars)
        if not inbound:
            frame["agent_id"] = ev.agent_id
        s.push(_Dedupe(s.seen, ev.contact_id, ev.message_id, frame) if ev.message_id else frame)

    # ------------------------------------------------------------------------------------ slow frames

    def _task(self, coro: Any) -> asyncio.Task[Any]:
        return self.centre.loop.create_task(coro)

    def _spawn(self, coro: Any) -> None:
        """A background task the gateway keeps a reference to and cancels at stop."""
        task = self.centre.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent gateway task failed", exc_info=task.exception())

    async def _offer_frame(self, fields: Frame, contact_id: str) -> Frame:
        # Made once the current step of the loop is over, so lines an adapter published right after the
        # contact's arrival (an e-mail's body) are in the preview.
        known = self._known.get(contact_id)
        if known is not None and known.complete:
            preview = known.preview()
        else:  # arrived before a restart: the store has it
            try:
                await self.centre.commit()
                known = _preview_known(await self.centre.read(contact_preview, contact_id, PREVIEW_LINES))
                preview = known.preview()
            except Exception:
                log.exception("preview of %s", contact_id)
                preview = {"subject": None, "lines": []}
        return {"type": "offer", **fields, "preview": preview}

    async def _contact_frame(self, s: _Session, contact_id: str, entry: Frame) -> Frame:
        frame: Frame = {"type": "contact", **entry}
        known = self._known.get(contact_id)
        if known is not None and known.complete and known.case_id is None and not known.said:
            # Seen arriving here, on no case, and nothing logged on it since (a phone call, say): its
            # transcript is empty, and the arrival said its subject. No store read for what is known.
            s.seen[contact_id] = set()
            frame.update(case_id=None, subject=known.subject, transcript=[], transcript_before=None)
            return frame
        try:
            await self.centre.commit()  # the lines logged so far are in the store before it is read
            page, transcript = await self._transcript_page(contact_id, None)
        except Exception:
            log.exception("transcript of %s", contact_id)
            frame.update(case_id=None, subject=None, transcript=[], transcript_error="the store is unavailable")
            return frame
        s.seen[contact_id] = {m["message_id"] for m in transcript if m.get("message_id")}
        frame.update(case_id=page.case_id, subject=page.subject, transcript=transcript, transcript_before=page.before)
        customer_id = entry.get("customer_id")
        if customer_id and transcript:
            self._audit(customer_id, s.user.id, f"interaction:{contact_id}")
        return frame

    # ------------------------------------------------------------------------- transcripts in parts

    async def _transcript_page(self, contact_id: str, before: str | None) -> tuple[Page, list[Frame]]:
        """A page of the contact's transcript (``server.transcripts``: the newest N, bodies cut) and its lines
        as frames carry them."""
        t = self.transcripts
        read = functools.partial(
            contact_page, limit=t.messages, body_chars=t.body_chars, before=before, page_chars=t.page_chars
        )
        page = await self.centre.read(read, contact_id)
        return page, [_transcript_line(m) for m in page.messages]

    async def _cmd_transcript(self, s: _Session, frame: frames.Transcript) -> Frame | None:
        """The page of the transcript before ``before`` (the cursor a ``contact`` frame or a page gave)."""
        c = self._own(s, frame)
        before = frame.before
        try:
            parse_cursor(before)
        except BadCursor as exc:
            raise ProtocolError("bad_field", f"before: {exc}") from None
        page, lines = await self._transcript_page(c.id, before)
        if c.customer_id and lines:
            self._audit(c.customer_id, s.user.id, f"interaction:{c.id}")
        return {"contact_id": c.id, "transcript": lines, "transcript_before": page.before}

    async def _cmd_message_text(self, s: _Session, frame: frames.MessageText) -> Frame | None:
        """One message of the contact's transcript whole, by its ``id`` (a transcript line's) or its
        ``message_id`` (a live ``message`` frame's): the text a ``truncated`` line was cut from."""
        c = self._own(s, frame)
        row_id, message_id = frame.id, frame.message_id
        await self.centre.commit()  # a line that came just now is in the store before it is read
        read = functools.partial(message_text, contact_id=c.id, row_id=row_id, message_id=message_id)
        row = await self.centre.read(read)
        if row is None:
            raise ProtocolError("not_found", "no such message in this contact's transcript")
        if c.customer_id:
            self._audit(c.customer_id, s.user.id, f"interaction:{c.id}")
        return {"contact_id": c.id, "id": row["id"], "message_id": row["message_id"], "text": row["body"] or ""}

    async def _screen_pop(self, s: _Session, contact_id: str, offer_id: str | None, logged: int | None = None) -> None:
        c = self.centre.router.contact(contact_id)
        if c is None:
            return
        now = self.centre.now_ms()
        known = self._known.get(contact_id)
        kind = _IDENTITY_KIND.get(c.channel)
        try:
            # A chat's new customer is written in the commit that carries its arrival, after the offer: wait
            # for that commit (``logged``: the log's position at the offer), not for whatever came later.
            if logged is not None:
                await self.centre.commit(upto=logged)
            if c.customer_id:
                pop = await self.centre.read(screen_pop_customer, c.customer_id, now)
            elif known is not None and known.address and kind:
                pop = await self.centre.read(screen_pop, kind, known.address, now)
            else:
                pop = ScreenPop(matched=False, kind="none", value="")
        except Exception:
            log.exception("screen-pop for %s", contact_id)
            pop = None
        # Shown only to the agent who still has the contact (offered or handling): nobody else sees it, so no
        # read is recorded for them.
        c = self.centre.router.contact(contact_id)
        if s.closed or c is None or c.agent_id != s.agent_id or self._sessions.get(s.agent_id) is not s:
            return
        frame: Frame = {"type": "screen_pop", "contact_id": contact_id, "offer_id": offer_id}
        if pop is None:
            frame.update(matched=False, error="the store is unavailable")
        else:
            frame.update(msgspec.to_builtins(pop))
            if pop.customer is not None:
                self._audit(pop.customer.id, s.user.id, "screen-pop")
        s.push(frame)

    def _audit(self, customer_id: str, actor: str, what: str) -> None:
        """Record that ``actor`` was shown the customer's data, in the store writer's next commit.

        The writer's transaction rather than one of its own (``centre.write``): a screen-pop comes with every
        offer, and a commit per offer on the reader pool would compete with the group-committing writer. The
        reads until that commit are one batch, written in one statement."""
        now = self.centre.now_ms()
        if self._reads is not None and self._reads.add(customer_id, now, actor=actor, what=what):
            return  # rides with the batch already staged for the next commit (or not yet sealed for the wire)
        self._reads = None
        try:
            # a failure is logged with the batch's customers and actors
            self.centre.stage(reads := ReadRecords([(customer_id, now, actor, what)]))
        except RuntimeError:  # the writer is closed: the server is stopping and showed nothing more
            log.warning("audit of a read of customer %s not recorded: the store writer is closed", customer_id)
            return
        self._reads = reads


# ------------------------------------------------------------------------------------------------ helpers


def _header(ws: Any, name: str) -> str | None:
    """A header of the connection's opening handshake (None for a connection without one, as in some tests)."""
    request = getattr(ws, "request", None)
    return request.headers.get(name) if request is not None else None


def _channel_error(exc: Exception) -> ProtocolError:
    """A channel adapter's failure as the console sees it, with the adapter's own code (the chat channel's
    ``closed``, the voice channel's ``not_in_call``, …) as the reason."""
    reason = getattr(exc, "code", None)
    extra = {"reason": reason} if isinstance(reason, str) else {}
    return ProtocolError("channel_error", str(exc) or type(exc).__name__, **extra)


def _targets(frame: frames.Transfer) -> dict[str, str | None]:
    """A transfer's or consultation's target fields (exactly one is checked by the action)."""
    return {"to_queue": frame.to_queue, "to_agent": frame.to_agent, "to_external": frame.to_external}


def _state_key(agent: AgentView | AgentStatus) -> tuple[Any, ...]:
    return (agent.state, agent.state_reason, agent.presence, agent.away_reason)


def _state_fields(agent: AgentView | AgentStatus) -> Frame:
    return {
        "state": agent.state,
        "reason": agent.state_reason,
        "since_ms": agent.state_since_ms,
        "presence": agent.presence,
        "away_reason": agent.away_reason,
    }


def _work_entry(c: ContactView) -> Frame:
    entry: Frame = {
        "contact_id": c.id,
        "channel": c.channel,
        "queue": c.queue,
        "state": c.state,
        "customer_id": c.customer_id,
        "tier": c.tier,
    }
    if c.state == "wrap_up":
        entry["wrap_up_ends_ms"] = c.wrap_up_ends_ms
    return entry


def _offer_fields(offer_id: str, c: ContactView | None, expires_ms: int, ev: OfferMade | None) -> Frame:
    """An offer frame but its preview; ``ev`` (the decision, for its explanation) may be gone after a restart."""
    return {
        "offer_id": offer_id,
        "contact_id": c.id if c is not None else None,
        "channel": c.channel if c is not None else None,
        "queue": c.queue if c is not None else None,
        "customer_id": c.customer_id if c is not None else None,
        "tier": c.tier if c is not None else None,
        "waiting_since_ms": _waiting_since(c),
        "expires_ms": expires_ms,
        "why": explain(ev) if ev is not None else None,
    }


def _no_wrap_up(ev: WrapUpStarted) -> bool:
    """A wrap-up that ends the moment it starts: the channel has none (``wrap_up_s = 0``), and the router closes
    the contact in the same step. The console is told ``contact_closed`` only (docs/protocol.md)."""
    return ev.ends_ms == ev.at_ms


def _waiting_since(c: ContactView | None) -> int | None:
    """Since when the customer has waited in the queue (the console's offer card counts it up)."""
    return c.waiting_since_ms if c is not None else None


def _offer_gone(offer_id: str, contact_id: str, reason: str) -> Frame:
    return {"type": "offer_gone", "offer_id": offer_id, "contact_id": contact_id, "reason": reason}


def _message_fields(
    contact_id: str, message_id: str | None, text: str, at_ms: int, subject: str | None, inbound: bool
) -> Frame:
    """One line of a conversation, as transcripts and ``message`` frames carry it."""
    frame: Frame = {
        "contact_id": contact_id,
        "from": "customer" if inbound else "agent",
        "text": text,
        "message_id": message_id,
        "at_ms": at_ms,
    }
    if subject:
        frame["subject"] = subject
    return frame


def explain(ev: OfferMade) -> Frame:
    """Why the offer went to this agent, as the dashboard's decision list shows it."""
    why = ev.why
    return {
        "trigger": why.trigger,
        "strategy": why.strategy,
        "requirement": why.requirement,
        "step": why.step,
        "considered": why.considered,
        "filters": dict(why.filters),
        "tie_break": why.tie_break,
        "candidates": [
            {"id": c.id, "score": list(c.score), "note": c.note or score_words(why, c.score, ev.at_ms)}
            for c in why.candidates
        ],
    }


def _preview_known(found: Preview) -> _Known:
    """A stored contact (``store.contacts.contact_preview``) as what the gateway knows of it."""
    known = _Known()
    known.subject, known.case_id, known.address = found.subject, found.case_id, found.address
    for body, subject in found.lines:
        if known.subject is None and subject:
            known.subject = subject
        known.add_text(body or "")
    known.complete = True
    return known


def _transcript_line(m: dict[str, Any]) -> Frame:
    """A stored message (``store.transcripts``) as a transcript line: ``id`` to ask for it whole, and
    ``truncated`` with the full ``length`` when its text was cut."""
    inbound = m["direction"] == "inbound"
    line = _message_fields(m["interaction_id"], m["message_id"], m["body"] or "", m["at_ms"], m["subject"], inbound)
    if not inbound:
        line["agent_id"] = m["author"]
    line["id"] = m["id"]
    if m["truncated"]:
        line.update(truncated=True, length=m["length"])
    return line


def _cut(frame: Frame, body_chars: int) -> None:
    """A live line's text cut as a transcript's would be (its ``message_id`` fetches it whole)."""
    text = frame["text"]
    if len(text) > body_chars:
        frame.update(text=text[:body_chars], truncated=True, length=len(text))
