"""The REST API for consoles and integrations: live queues and contacts, screen-pop, cases, agent state.

Mounted by the runtime under ``/api/`` (beside ``/api/live``)::

    GET  /api/openapi.json          this API's OpenAPI 3.1 document (edge/web/openapi.py)         anyone
    GET  /api/me                    the caller                                              agent+
    GET  /api/queues                live figures per queue (waiting, longest wait, EWT, …)  agent+
    GET  /api/contacts              live contacts (?state=a,b&queue=&channel=&agent=&limit=) agent: own only
    GET  /api/customers/{id}        screen-pop (?limit=), audited                            agent+
    GET  /api/cases/{id}            the case, its interactions and a page of its transcript  supervisor+, or an
                                    (?limit=&before=, bodies cut), audited                   agent who holds or
                                                                                             answered a contact
                                                                                             of it (may_read)
    GET  /api/cases/{id}/messages/{message id}  one message of the case whole, audited      as the case
    GET  /api/agents/{id}/state     the agent's state                                        self or supervisor+
    POST /api/agents/{id}/state     {"state": "available"|"away"|"logged_out", "reason": …}  self or supervisor+
    POST /api/agents/{id}/skills    {"skills": {"billing": 5}, "capacity": {"chat": 3}}      supervisor+
    POST /api/contacts/{id}/ACTION  answer {"offer_id"?} | hold | retrieve | hang_up | complete_transfer |
                                    conference ({} or no body) | transfer, consult {"to_queue"|"to_agent"|
                                    "to_external": …} | callback {"at_ms"?, "number"?, "queue"?,
                                    "customer_asked"?}                       own contact, or supervisor+ (for
                                                                             the agent who has it)
    GET  /api/contacts/{id}/legs    each agent's part in the contact, from the log          supervisor+, or an
                                                                                             agent who holds or
                                                                                             answered it (same)

Every answer is JSON; an error is ``{"error": code, "detail": text}`` with its HTTP status (a contact
action's refusal may add ``reason``, the channel's own code; codes and statuses are ``contact_actions``'s:
400 ``bad_field``/``bad_request``, 403 ``not_your_contact``, 404 ``not_found``, 409 ``refused``, ``stale_offer``,
``not_voice``, ``channel_error``). Callers
authenticate with ``Authorization: Bearer cc_…`` (``contactcentre user add`` / ``user token``).

Handlers are coroutines on the centre's loop (the reactor's): ``render`` starts one and returns
``NOT_DONE_YET``; a client that leaves early is noticed through ``notifyFinish`` and simply not answered.
Reads of live state come straight from the router (no database); store reads go through ``Centre.read``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from twisted.internet.defer import CancelledError as DeferredCancelled
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from contactcentre.acd import CONTACT_STATES, AgentView, ContactView
from contactcentre.edge.web.auth import AuthError, WebAuth
from contactcentre.events import CHANNELS, AgentAway, AgentLoggedOut, AgentReady, Channel, Event
from contactcentre.server.agent_actions import AgentChangeRefused, change_skills
from contactcentre.server.centre import Centre, Unavailable
from contactcentre.server.contact_actions import ActionError, ContactActions
from contactcentre.store.caseview import case_message, case_with_transcript
from contactcentre.store.contacts import contact_exists
from contactcentre.store.db import DriverFailure
from contactcentre.store.privacy import record_read
from contactcentre.store.projection import contact_legs, handled_any
from contactcentre.store.screenpop import screen_pop_customer
from contactcentre.store.transcripts import BadCursor, parse_cursor
from contactcentre.store.users import User, user_for_token

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
TOKEN_TTL_S = 5.0
TOKEN_CACHE_SIZE = 1024
CONTACTS_LIMIT = 1000
CONTACTS_LIMIT_MAX = 10_000
_ID_MAX = 128  # the longest id any table holds; longer ones cannot exist

_REALM = b'Bearer realm="contactcentre"'


class ApiError(Exception):
    """An answer other than 200: raised anywhere in a handler, rendered as ``{"error", "detail"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[bytes, bytes] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason  # a channel's own code behind a channel_error (the switch's "busy", …)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


Handler = Callable[[Request, User], Awaitable[Any]]


class StateChange(msgspec.Struct, forbid_unknown_fields=True):
    state: Literal["available", "away", "logged_out"]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


_Short = Annotated[str, msgspec.Meta(min_length=1, max_length=_ID_MAX)]


class SkillsChange(msgspec.Struct, forbid_unknown_fields=True):
    """A supervisor's change of an agent's skills (levels 1-10) and/or channel capacity (0-50 each)."""

    skills: dict[_Short, Annotated[int, msgspec.Meta(ge=1, le=10)]] | None = None
    capacity: dict[Channel, Annotated[int, msgspec.Meta(ge=0, le=50)]] | None = None


class NoParameters(msgspec.Struct, forbid_unknown_fields=True):
    """hold, retrieve, hang_up, complete_transfer, conference: an empty object (or no body)."""


class AnswerBody(msgspec.Struct, forbid_unknown_fields=True):
    offer_id: _Short | None = None


class TargetBody(msgspec.Struct, forbid_unknown_fields=True):
    """transfer, consult: exactly one target."""

    to_queue: _Short | None = None
    to_agent: _Short | None = None
    to_external: _Short | None = None


class CallbackBody(msgspec.Struct, forbid_unknown_fields=True):
    """callback: all optional (the number the contact came from, its queue, now)."""

    at_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    queue: _Short | None = None
    customer_asked: bool = False


# action -> (body type, what it needs of the contact: "offer" to answer it, "work" for the rest)
CONTACT_ACTIONS: dict[str, tuple[type[Any], str]] = {
    "answer": (AnswerBody, "offer"),
    "hold": (NoParameters, "work"),
    "retrieve": (NoParameters, "work"),
    "transfer": (TargetBody, "work"),
    "consult": (TargetBody, "work"),
    "complete_transfer": (NoParameters, "work"),
    "conference": (NoParameters, "work"),
    "hang_up": (NoParameters, "work"),
    "callback": (CallbackBody, "work"),
}


# ------------------------------------------------------------------------------------------------- the API


class Api:
    """Shared by every resource of the API: the centre, the token cache, the requests in flight."""

    def __init__(
        self,
        centre: Centre,
        *,
        token_ttl_s: float = TOKEN_TTL_S,
        token_cache_size: int = TOKEN_CACHE_SIZE,
        max_body: int = MAX_BODY,
        web_auth: WebAuth | None = None,
    ) -> None:
        self.centre = centre
        self.web_auth = web_auth  # browser sessions (cookie + CSRF) besides bearer tokens, when the site has logins
        self.loop = centre.loop
        self.token_ttl_s = token_ttl_s
        self.token_cache_size = token_cache_size
        self.max_body = max_body
        # sha256(token) -> (valid until, loop time; user). Only tokens that were valid are kept, so a flood of
        # bad tokens cannot push good ones out; a token revoked in another process (the CLI) lives on for
        # token_ttl_s, one disabled on this server's /admin not at all (the cache is dropped).
        self._tokens: dict[bytes, tuple[float, User]] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self.actions = ContactActions(centre)
        if web_auth is not None:  # a user disabled on this server loses the API at once, not after the cache
            web_auth.sockets.on_user_ended.append(lambda _user_id: self.forget_tokens())

    def children(self) -> dict[bytes, Resource]:
        from contactcentre.edge.web.openapi import OpenApiDocument  # it describes this module: imported once both exist

        return {
            b"openapi.json": OpenApiDocument(),
            b"me": _Endpoint(self, GET=("agent", self.me)),
            b"queues": _Endpoint(self, GET=("agent", self.queues)),
            b"contacts": _ContactsEndpoint(self, GET=("agent", self.contacts)),
            b"customers": _Collection(self, lambda cid: _Endpoint(self, GET=("agent", self._bind(self.customer, cid)))),
            b"cases": _Collection(self, lambda cid: _CaseNode(self, cid)),
            b"agents": _Collection(self, lambda aid: _AgentNode(self, aid)),
        }

    @staticmethod
    def _bind(fn: Callable[[Request, User, str], Awaitable[Any]], ident: str) -> Handler:
        async def handler(request: Request, user: User) -> Any:
            return await fn(request, user, ident)

        return handler

    def forget_tokens(self) -> None:
        """Drop the token cache (after disabling a user in-process, say)."""
        self._tokens.clear()

    async def drain(self) -> None:
        """Wait for the requests in flight (before closing the centre under them)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -------------------------------------------------------------------------------------------- serving

    def serve(self, request: Request, role: str, handler: Handler) -> Any:
        """Run ``handler`` as a coroutine for a user of at least ``role``; answer when it is done."""
        gone = False

        def lost(_: Failure) -> None:  # the client went away: there is no one to answer
            nonlocal gone
            gone = True

        request.notifyFinish().addErrback(lost)
        fut = asyncio.ensure_future(self._run(request, role, handler), loop=self.loop)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

        def answer(result: tuple[int, bytes, dict[bytes, bytes]]) -> None:
            if gone:
                return
            try:
                _send(request, *result)
            except Exception:  # the connection broke while writing: nothing more to do for it
                log.warning("API %s: could not send the answer", _describe(request), exc_info=True)

        def crashed(failure: Failure) -> None:
            if failure.check(asyncio.CancelledError, DeferredCancelled):
                return  # the loop is shutting down
            log.error("API %s failed", _describe(request), exc_info=failure.value)
            answer(_error(ApiError(500, "internal_error", "see the server log")))

        Deferred.fromFuture(fut).addCallbacks(answer, crashed)
        return NOT_DONE_YET

    async def _run(self, request: Request, role: str, handler: Handler) -> tuple[int, bytes, dict[bytes, bytes]]:
        try:
            user = await self.authenticate(request)
            if not user.may(role):
                raise ApiError(403, "forbidden", f"this needs the {role} role; {user.id} is {user.role}")
            result = await handler(request, user)
            return 200, msgspec.json.encode(result), {}
        except ApiError as exc:
            return _error(exc)
        except (Unavailable, DriverFailure) as exc:  # the store or (on an edge) the router cannot answer now
            log.warning("API %s: unavailable: %s", _describe(request), exc)
            return _error(ApiError(503, "unavailable", "the centre cannot do this now; try again shortly"))
        except Exception:
            log.exception("API %s failed", _describe(request))
            return _error(ApiError(500, "internal_error", "see the server log"))

    async def authenticate(self, request: Request) -> User:
        header = request.getHeader(b"authorization")
        if not header and self.web_auth is not None:
            try:  # a page of the site calling with its session cookie (and its CSRF token on unsafe methods)
                return await self.web_auth.authenticate(request)
            except AuthError as exc:
                headers = exc.headers if exc.status != 401 else {**exc.headers, b"www-authenticate": _REALM}
                raise ApiError(exc.status, exc.code, exc.detail, headers) from None
        if not header:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", {b"www-authenticate": _REALM})
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        invalid = {b"www-authenticate": _REALM + b', error="invalid_token"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", invalid)
        token = token.strip()
        key = hashlib.sha256(token.encode()).digest()
        now = self.loop.time()
        cached = self._tokens.get(key)
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._tokens[key]
        user = await self.centre.read(user_for_token, token)
        if user is None:
            raise ApiError(401, "unauthorized", "the token is not valid (revoked, or the user is disabled)", invalid)
        if self.token_cache_size > 0 and self.token_ttl_s > 0:
            while len(self._tokens) >= self.token_cache_size:  # evict the oldest entry
                del self._tokens[next(iter(self._tokens))]
            self._tokens[key] = (now + self.token_ttl_s, user)
        return user

    # ------------------------------------------------------------------------------------------- handlers

    async def me(self, request: Request, user: User) -> Any:
        return {"id": user.id, "role": user.role, "agent_id": user.agent_id, "display_name": user.display_name}

    async def queues(self, request: Request, user: User) -> Any:
        centre = self.centre
        driver = centre.driver
        router = centre.router
        now = centre.now_ms()
        snapshot = driver.stats.snapshot(now, serving=driver.serving())["queues"]
        loads = {q.name: q for q in router.queue_loads()}
        rows = []
        for q in router.config.queues:
            load = loads[q.name]
            oldest = load.oldest_waiting_since_ms
            rows.append(
                {
                    "name": q.name,
                    "description": q.description,
                    "channels": list(q.channels),
                    "waiting": sum(load.waiting.values()),
                    "waiting_by_channel": load.waiting,
                    "longest_wait_s": (now - oldest) / 1000 if oldest is not None else 0.0,
                    "offered": load.offered,
                    "with_agents": load.with_agents,
                    "ewt_s": {ch: None if ms is None else ms / 1000 for ch, ms in load.ewt_ms.items()},
                    "agents_serving": load.agents_serving,
                    "agents_ready": load.agents_ready,
                    "today": snapshot.get(q.name, {}),
                }
            )
        return {"at_ms": now, "queues": rows}

    async def contacts(self, request: Request, user: User) -> Any:
        router = self.centre.router
        now = self.centre.now_ms()
        states = _arg_list(request, b"state")
        bad = [s for s in states if s not in CONTACT_STATES]
        if bad:
            raise ApiError(400, "bad_request", f"state {bad[0]!r}: one of {', '.join(CONTACT_STATES)}")
        queue = _arg(request, b"queue")
        if queue is not None and router.queue(queue) is None:
            raise ApiError(400, "bad_request", f"queue {queue!r}: no such queue")
        channel = _arg(request, b"channel")
        if channel is not None and channel not in CHANNELS:
            raise ApiError(400, "bad_request", f"channel {channel!r}: one of {', '.join(CHANNELS)}")
        agent = _arg(request, b"agent")
        if not user.may("supervisor"):
            # An agent sees its own work only (offered to it, connected, wrap-up), never the queue at large.
            if user.agent_id is None:
                raise ApiError(403, "forbidden", f"{user.id} is not linked to an agent")
            if agent is not None and agent != user.agent_id:
                raise ApiError(403, "forbidden", "agents see their own contacts only")
            agent = user.agent_id
        limit = _arg_int(request, b"limit", CONTACTS_LIMIT, 1, CONTACTS_LIMIT_MAX)
        wanted = set(states)
        found = [
            c
            for c in router.contact_list()
            if (not wanted or c.state in wanted)
            and (queue is None or c.queue == queue)
            and (channel is None or c.channel == channel)
            and (agent is None or c.agent_id == agent)
        ]
        found.sort(key=lambda c: (c.waiting_since_ms, c.seq))
        return {
            "at_ms": now,
            "total": len(found),
            "truncated": len(found) > limit,
            "contacts": [_contact_row(c, now) for c in found[:limit]],
        }

    async def customer(self, request: Request, user: User, customer_id: str) -> Any:
        centre = self.centre
        limit = _arg_int(request, b"limit", 10, 1, 100)
        now = centre.now_ms()
        pop = await centre.read(lambda conn: screen_pop_customer(conn, customer_id, now, limit=limit))
        if not pop.matched or pop.customer is None:
            raise _not_found(f"no customer {customer_id!r}")
        survivor = pop.customer.id  # a merged-away id shows (and audits) the customer it was merged into
        # Logged before the data leaves: a read that cannot be audited is not answered.
        await centre.write(lambda conn: record_read(conn, survivor, now, actor=user.id, what="api:screen-pop"))
        return pop

    async def may_read(self, user: User, contact_ids: list[str]) -> bool:
        """The one rule for reading what happened on contacts (``GET /api/contacts/{id}/legs``) and their case
        (``GET /api/cases/{id}``: transcript, internal notes): supervisors and admins read all of it; an agent
        reads it when one of the contacts is theirs now (offered to them or in their hands) or was (they
        answered it once). An offer an agent let ring out or turned down gives no access. Callers commit
        first, so the log has the contacts' events so far."""
        if user.may("supervisor"):
            return True
        agent_id = user.agent_id
        if agent_id is None:
            return False
        router = self.centre.router
        if any(c is not None and c.agent_id == agent_id for c in map(router.contact, contact_ids)):
            return True
        return await self.centre.read(handled_any, agent_id, contact_ids)

    async def case(self, request: Request, user: User, case_id: str) -> Any:
        centre = self.centre
        now = centre.now_ms()
        await centre.commit()  # the case's newest contacts and lines are in the store before it is read
        found = await centre.read(self._transcript_page(request), case_id)
        if found is None:
            raise _not_found(f"no case {case_id!r}")
        if not await self.may_read(user, [i["id"] for i in found["interactions"]]):
            raise ApiError(403, "forbidden", "agents read the cases of contacts they hold or have answered only")
        customer_id = found["case"]["customer_id"]
        if customer_id is not None:  # the audit log is per customer; a case of nobody reveals nobody's data
            await centre.write(lambda conn: record_read(conn, customer_id, now, actor=user.id, what=f"case:{case_id}"))
        return found

    def _transcript_page(self, request: Request) -> Callable[..., dict[str, Any] | None]:
        """The case with the page of its messages that ``?limit=`` and ``?before=`` ask for
        (``server.transcripts``), as a store read of a case id."""
        t = self.centre.config.server.transcripts
        limit = _arg_int(request, b"limit", t.messages, 1, t.max_page)
        before = _arg(request, b"before")
        if before is not None:
            try:
                parse_cursor(before)
            except BadCursor as exc:
                raise ApiError(400, "bad_request", f"before: {exc}") from None
        return functools.partial(
            case_with_transcript, limit=limit, body_chars=t.body_chars, before=before, page_chars=t.page_chars
        )

    async def case_message(self, request: Request, user: User, case_id: str, message: str) -> Any:
        """``GET /api/cases/{id}/messages/{message id}``: the whole text a page's ``truncated`` message was cut
        from; read and audited as the case is."""
        if not (message.isascii() and message.isdigit()) or len(message) > 18:
            raise _not_found(f"no message {message!r} in case {case_id!r}")
        centre = self.centre
        now = centre.now_ms()
        await centre.commit()  # as for the case: its newest contacts are in the store before the rule is checked
        found = await centre.read(case_message, case_id, int(message))
        if found is None:
            raise _not_found(f"no message {message!r} in case {case_id!r}")
        customer_id, contact_ids, row = found
        if not await self.may_read(user, contact_ids):
            raise ApiError(403, "forbidden", "agents read the cases of contacts they hold or have answered only")
        if customer_id is not None:
            await centre.write(lambda conn: record_read(conn, customer_id, now, actor=user.id, what=f"case:{case_id}"))
        return row

    async def contact_action(self, request: Request, user: User, contact_id: str, action: str) -> Any:
        """``POST /api/contacts/{id}/{action}``: an agent on its own contact, a supervisor on any (acting for
        the agent who has it). Checked and carried out by ``contact_actions``; answered once it is logged."""
        body_type, needs = CONTACT_ACTIONS[action]
        body = _decode_body(request, body_type, self.max_body, empty_ok=True)
        actions = self.actions
        centre = self.centre
        try:
            c = actions.contact(contact_id)
            if user.may("supervisor"):
                agent_id = actions.acting_agent(c)
            else:
                agent_id = user.agent_id
                a = centre.router.agent(agent_id) if agent_id is not None else None
                offered = c.offered_to == agent_id
                if a is None or not (c.id in a.work or (needs == "offer" and offered)):
                    raise ActionError("not_your_contact", f"contact {contact_id!r} is not yours")
            fn = getattr(actions, action)
            result = await fn(c.id, agent_id, **msgspec.structs.asdict(body))
        except ActionError as exc:
            raise ApiError(exc.status, exc.code, exc.detail, reason=exc.reason) from None
        await centre.commit()
        now_c = centre.router.contact(contact_id)
        return {
            "action": action,
            "agent_id": agent_id,
            **result,
            "state": now_c.state if now_c is not None else None,
            "handled_by": now_c.agent_id if now_c is not None else None,
        }

    async def contact_legs(self, request: Request, user: User, contact_id: str) -> Any:
        """``GET /api/contacts/{id}/legs``: each agent's part in the contact, live or finished, from the log."""
        await self.centre.commit()
        legs = (await self.centre.read(contact_legs, [contact_id]))[contact_id]
        if not legs and not self.centre.router.has_contact(contact_id):
            found = await self.centre.read(contact_exists, contact_id)
            if not found:
                raise _not_found(f"no contact {contact_id!r}")
        if not await self.may_read(user, [contact_id]):
            raise ApiError(403, "forbidden", "agents read the legs of contacts they hold or have answered only")
        return {"contact_id": contact_id, "legs": legs}

    def _agent_for(self, user: User, agent_id: str) -> AgentView:
        if not user.may("supervisor") and user.agent_id != agent_id:
            # Checked before existence, so an agent cannot probe which agent ids exist.
            raise ApiError(403, "forbidden", "agents may see and change their own state only")
        a = self.centre.router.agent(agent_id)
        if a is None:
            raise _not_found(f"no agent {agent_id!r}")
        return a

    async def agent_state(self, request: Request, user: User, agent_id: str) -> Any:
        return _agent_row(self._agent_for(user, agent_id))

    async def set_agent_state(self, request: Request, user: User, agent_id: str) -> Any:
        change = _decode_body(request, StateChange, self.max_body)
        a = self._agent_for(user, agent_id)
        centre = self.centre
        now = centre.now_ms()
        event: Event
        if change.state == "available":
            event = AgentReady(at_ms=now, agent_id=a.id)
        elif change.state == "away":
            event = AgentAway(at_ms=now, agent_id=a.id, reason=change.reason or "break")
        else:
            if not a.logged_in:  # already there: asking twice is not a conflict
                return _agent_row(a)
            event = AgentLoggedOut(at_ms=now, agent_id=a.id)
        if isinstance(event, AgentLoggedOut) and a.handling:
            busy = ", ".join(a.handling)
            raise ApiError(409, "conflict", f"agent {a.id!r} is still handling {busy}; end it first")
        # Asked first so that a change the agent's state does not allow is answered without being logged as
        # refused: a person asked, not the router's input stream.
        refusal = centre.router.check(event)
        if refusal is not None:
            hint = "; log in first" if not a.logged_in else ""
            raise ApiError(409, "conflict", f"{refusal}{hint}")
        if centre.driver.closed:
            raise ApiError(503, "unavailable", "the centre is shutting down")
        refusal = centre.submit(event)
        if refusal is not None:
            raise ApiError(409, "conflict", f"the router refused the change: {refusal}")
        await centre.commit()  # answered once the change is in the log
        return _agent_row(self._agent_for(user, agent_id))

    async def set_agent_skills(self, request: Request, user: User, agent_id: str) -> Any:
        change = _decode_body(request, SkillsChange, self.max_body)
        if change.skills is None and change.capacity is None:
            raise ApiError(400, "bad_request", "give skills and/or capacity")
        a = self._agent_for(user, agent_id)
        try:
            await change_skills(self.centre, a.id, change.skills, change.capacity)
        except AgentChangeRefused as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        return _agent_row(self._agent_for(user, agent_id))


# -------------------------------------------------------------------------------------------- resources


class _Endpoint(Resource):
    """One URL: a handler and a minimum role per method; HEAD is GET without the body."""

    def __init__(self, api: Api, **methods: tuple[str, Handler]) -> None:
        super().__init__()
        self.api = api
        self.methods = {m.encode(): h for m, h in methods.items()}

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()

    def render(self, request: Request) -> Any:
        method = b"GET" if request.method == b"HEAD" else request.method
        entry = self.methods.get(method)
        if entry is None:
            allow = sorted(self.methods) + ([b"HEAD"] if b"GET" in self.methods else [])
            exc = ApiError(
                405, "method_not_allowed", f"use {b', '.join(allow).decode()}", {b"allow": b", ".join(allow)}
            )
            _send(request, *_error(exc))
            return NOT_DONE_YET
        role, handler = entry
        return self.api.serve(request, role, handler)


class _ContactsEndpoint(_Endpoint):
    """``/api/contacts``, and under it ``/api/contacts/{id}/{action}`` and ``/api/contacts/{id}/legs``."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        try:
            ident = path.decode("utf-8")
        except UnicodeDecodeError:
            return _NotFound()
        if not ident or len(ident) > _ID_MAX:
            return _NotFound()
        return _ContactNode(self.api, ident)


class _ContactNode(Resource):
    def __init__(self, api: Api, contact_id: str) -> None:
        super().__init__()
        self.api = api
        self.contact_id = contact_id

    def getChild(self, path: bytes, request: Request) -> Resource:
        api, cid = self.api, self.contact_id
        name = path.decode("ascii", "replace")
        if name == "legs":
            return _Endpoint(api, GET=("agent", api._bind(api.contact_legs, cid)))
        if name not in CONTACT_ACTIONS:
            return _NotFound()

        async def act(request: Request, user: User) -> Any:
            return await api.contact_action(request, user, cid, name)

        return _Endpoint(api, POST=("agent", act))

    def render(self, request: Request) -> Any:
        return _NotFound().render(request)


class _CaseNode(_Endpoint):
    """``/api/cases/{id}``, and under it ``/api/cases/{id}/messages/{message id}``."""

    def __init__(self, api: Api, case_id: str) -> None:
        super().__init__(api, GET=("agent", api._bind(api.case, case_id)))
        self.case_id = case_id

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path != b"messages":
            return _NotFound()
        api, case_id = self.api, self.case_id

        def message(mid: str) -> Resource:
            async def read(request: Request, user: User) -> Any:
                return await api.case_message(request, user, case_id, mid)

            return _Endpoint(api, GET=("agent", read))

        return _Collection(api, message)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> Any:
        _send(request, *_error(_not_found("no such resource")))
        return NOT_DONE_YET


class _Collection(Resource):
    """``/api/things/{id}``: the child is made per id; the collection itself lists nothing."""

    def __init__(self, api: Api, child: Callable[[str], Resource]) -> None:
        super().__init__()
        self.api = api
        self.child = child

    def getChild(self, path: bytes, request: Request) -> Resource:
        try:
            ident = path.decode("utf-8")
        except UnicodeDecodeError:
            return _NotFound()
        if not ident or len(ident) > _ID_MAX:
            return _NotFound()
        return self.child(ident)

    def render(self, request: Request) -> Any:
        return _NotFound().render(request)


class _AgentNode(Resource):
    def __init__(self, api: Api, agent_id: str) -> None:
        super().__init__()
        self.api = api
        self.agent_id = agent_id

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"state":
            api, aid = self.api, self.agent_id
            return _Endpoint(
                api,
                GET=("agent", api._bind(api.agent_state, aid)),
                POST=("agent", api._bind(api.set_agent_state, aid)),
            )
        if path == b"skills":
            return _Endpoint(self.api, POST=("supervisor", self.api._bind(self.api.set_agent_skills, self.agent_id)))
        return _NotFound()

    def render(self, request: Request) -> Any:
        return _NotFound().render(request)


def api_children(centre: Centre, **options: Any) -> dict[bytes, Resource]:
    """The API's resources, to be mounted under ``/api/`` (``options``: see ``Api``)."""
    return Api(centre, **options).children()


# -------------------------------------------------------------------------------------------- rendering


def _error(exc: ApiError) -> tuple[int, bytes, dict[bytes, bytes]]:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    if exc.reason is not None:
        body["reason"] = exc.reason
    return exc.status, msgspec.json.encode(body), exc.headers


def _send(request: Request, status: int, body: bytes, headers: dict[bytes, bytes]) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    for name, value in headers.items():
        request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _describe(request: Request) -> str:
    return f"{request.method.decode('ascii', 'replace')} {request.path.decode('ascii', 'replace')}"


# ------------------------------------------------------------------------------------------------ input


def _arg(request: Request, name: bytes) -> str | None:
    values = request.args.get(name) if request.args else None
    if not values or not values[0]:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"{name.decode()}: not UTF-8") from None


def _arg_list(request: Request, name: bytes) -> list[str]:
    """``?state=queued,offered`` and ``?state=queued&state=offered`` alike."""
    out: list[str] = []
    for raw in (request.args or {}).get(name, []):
        try:
            out.extend(v for v in raw.decode("utf-8").split(",") if v)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", f"{name.decode()}: not UTF-8") from None
    return out


def _arg_int(request: Request, name: bytes, default: int, low: int, high: int) -> int:
    text = _arg(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name.decode()}: not a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name.decode()}: between {low} and {high}")
    return value


def _decode_body(request: Request, kind: type[Any], limit: int, *, empty_ok: bool = False) -> Any:
    declared = request.getHeader(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body may be {limit} bytes at most")
    content = request.content
    if content is None and empty_ok:
        return msgspec.json.decode(b"{}", type=kind)
    if content is None:
        raise ApiError(400, "bad_json", "send a JSON body")
    content.seek(0)
    body = content.read(limit + 1)  # chunked bodies declare no length: read one byte past the limit
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"the body may be {limit} bytes at most")
    if empty_ok and not body.strip():
        body = b"{}"  # an action without parameters may come without a body
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None


# ------------------------------------------------------------------------------------------------ views


def _contact_row(c: ContactView, now_ms: int) -> dict[str, Any]:
    return {
        "id": c.id,
        "channel": c.channel,
        "queue": c.queue,
        "state": c.state,
        "customer_id": c.customer_id,
        "tier": c.tier,
        "priority": c.priority,
        "waiting_since_ms": c.waiting_since_ms,
        "wait_s": (now_ms - c.waiting_since_ms) / 1000 if c.waiting else None,
        "agent_id": c.agent_id,
        "offer_expires_ms": c.offer.expires_ms if c.offer is not None else None,
        "connected_ms": c.connected_ms or None,
        "sla_deadline_ms": c.sla_deadline_ms,
        # As ContactQueued counts it: 1 = next among the contacts waiting for the same agents.
        "position": c.position,
    }


def _agent_row(a: AgentView) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "state": a.state,
        "reason": a.state_reason,
        # What the agent chose; differs from ``state`` while work is open (away takes effect when it ends).
        "presence": a.presence,
        "away_reason": a.away_reason,
        "since_ms": a.state_since_ms,
        "load": {ch: n for ch, n in a.load.items() if n},
    }


__all__ = ["MAX_BODY", "Api", "ApiError", "api_children"]
