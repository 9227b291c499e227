"""The REST API over real HTTP on 127.0.0.1, served by twisted.web on the session's asyncio loop: tokens and
roles, live queues and contacts, audited screen-pop and case reads, agent state changes and their refusals,
and the answers to malformed requests."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

import contactcentre.events as E
from contactcentre.config import TranscriptConfig, parse_config
from contactcentre.edge.web import api as api_module
from contactcentre.edge.web.api import Api
from contactcentre.server.centre import Centre
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.cases import open_case
from contactcentre.store.customers import create_customer
from contactcentre.store.schema import audit_log
from contactcentre.store.users import add_user, revoke_tokens, user_for_token
from contactcentre.store.writer import read_events

CONFIG = parse_config(
    {
        "skills": {"general": "General", "billing": "Billing"},
        "queues": [
            {"name": "support", "skills": {"general": 1}, "channels": ["email", "chat", "voice"]},
            {"name": "billing", "skills": {"billing": 1}, "channels": ["voice"]},
        ],
        "agents": [
            {"id": "a1", "skills": {"general": 5}, "capacity": {"email": 1, "voice": 1}},  # one e-mail at a time
            {"id": "a2", "skills": {"general": 5, "billing": 5}},
            {"id": "a3", "skills": {"general": 5}},
        ],
    },
    "<test>",
)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    loop: asyncio.AbstractEventLoop
    centre: Centre
    api: Api
    port: int
    factory: Any
    tokens: dict[str, str] = field(default_factory=dict)
    case_id: str = ""

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(
        self,
        method: str,
        path: str,
        who: str | None = None,
        *,
        body: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request from a thread (urllib blocks), while the loop serves it."""
        if who is not None:
            token = self.tokens[who]
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def go() -> Reply:
            try:
                with opener.open(req, timeout=30) as resp:
                    return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
            except urllib.error.HTTPError as exc:
                with exc:
                    return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

        return self.run(self.loop.run_in_executor(None, go))

    def post_state(self, who: str, agent: str, payload: Any) -> Reply:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.call(
            "POST", f"/api/agents/{agent}/state", who, body=body, headers={"Content-Type": "application/json"}
        )

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are (what urllib will not produce) and read the answer to the end."""

        async def go() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(data)
                return await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()

        return self.run(go())

    def audit(self) -> list[dict[str, Any]]:
        with self.centre.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()]


@pytest.fixture
def server(reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[Server]:
    from twisted.internet import reactor
    from twisted.protocols.policies import WrappingFactory
    from twisted.web.server import Site

    from contactcentre.edge.web import _Node

    loop = reactor_loop
    centre: Centre = loop.run_until_complete(open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}", loop=loop))
    api = Api(centre)
    root = _Node()
    api_node = _Node()
    for name, resource in api.children().items():
        api_node.putChild(name, resource)
    root.putChild(b"api", api_node)
    site = Site(root, logPath=None)
    site.displayTracebacks = False
    factory = _Tracking(WrappingFactory, site)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    srv = Server(loop, centre, api, port.getHost().port, factory)
    try:
        srv.run(_populate(srv))
        yield srv
    finally:
        loop.run_until_complete(port.stopListening().asFuture(loop))
        for p in list(factory.protocols):
            p.transport.abortConnection()
        loop.run_until_complete(api.drain())
        loop.run_until_complete(close_centre(centre))


def _Tracking(base: Any, site: Any) -> Any:
    """A WrappingFactory that says when the server has seen its last connection close."""

    class Tracking(base):  # type: ignore[misc, valid-type]
        idle: asyncio.Future[None] | None = None

        def unregisterProtocol(self, p: Any) -> None:
            super().unregisterProtocol(p)
            if not self.protocols and self.idle is not None and not self.idle.done():
                self.idle.set_result(None)

    return Tracking(site)


async def _populate(srv: Server) -> None:
    """Users for every role, a customer with an open case, an e-mail on that case and a waiting chat."""
    centre = srv.centre
    now = centre.now_ms()

    def people(conn: Any) -> None:
        srv.tokens["alice"] = add_user(conn, "alice", "agent", now, agent_id="a1")
        srv.tokens["bob"] = add_user(conn, "bob", "agent", now, agent_id="a2")
        srv.tokens["sue"] = add_user(conn, "sue", "supervisor", now)
        srv.tokens["root"] = add_user(conn, "root", "admin", now)
        create_customer(
            conn, now, customer_id="cus-ann", identities_=[("email", "ann@example.com")], name="Ann", tier="gold"
        )
        srv.case_id = open_case(conn, now, customer_id="cus-ann", subject="Invoice", queue="support")[0]

    await centre.write(people)
    centre.submit(
        E.ContactArrived(
            at_ms=now,
            contact_id="mail-1",
            queue="support",
            channel="email",
            customer_id="cus-ann",
            tier="gold",
            case_id=srv.case_id,
            address="ann@example.com",
            subject="Invoice",
        )
    )
    centre.publish(
        [
            E.MessageReceived(
                at_ms=now,
                contact_id="mail-1",
                message_id="m1@example.com",
                channel="email",
                body="Where is my invoice?",
                case_id=srv.case_id,
                address="ann@example.com",
                subject="Invoice",
            )
        ]
    )
    centre.submit(E.ContactArrived(at_ms=now + 1, contact_id="chat-1", queue="support", channel="chat"))
    centre.submit(E.ContactArrived(at_ms=now + 2, contact_id="call-1", queue="billing", channel="voice"))
    await centre.commit()


def _connect_a1(srv: Server) -> None:
    """a1 logs in and takes the oldest contact (mail-1); it stays connected."""
    c = srv.centre
    c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a1"))
    offer = next(iter(c.router.agent("a1").offers))
    c.submit(E.OfferAccepted(at_ms=c.now_ms(), offer_id=offer.id, contact_id=offer.contact_id, agent_id="a1"))


# ------------------------------------------------------------------------------------------------- auth


def test_a_bearer_token_is_required(server: Server) -> None:
    r = server.call("GET", "/api/queues")
    assert r.status == 401 and r.json["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer") and r.headers["content-type"] == "application/json"
    r = server.call("GET", "/api/queues", token="cc_not-a-token")
    assert r.status == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    r = server.call("GET", "/api/queues", headers={"Authorization": f"Basic {server.tokens['sue']}"})
    assert r.status == 401
    r = server.call("GET", "/api/me", "alice")
    assert r.status == 200 and r.json == {"id": "alice", "role": "agent", "agent_id": "a1", "display_name": None}
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"


def test_valid_tokens_are_cached_for_a_few_seconds(server: Server) -> None:
    assert server.call("GET", "/api/me", "bob").status == 200
    reads = []
    real_read = server.centre.read

    async def counting(fn: Any, *args: Any) -> Any:
        reads.append(fn)
        return await real_read(fn, *args)

    server.centre.read = counting  # type: ignore[method-assign]
    server.run(server.centre.write(lambda conn: revoke_tokens(conn, "bob", server.centre.now_ms())))
    # Within the cache's lifetime a revoked token still works, without a database read ...
    assert server.call("GET", "/api/me", "bob").status == 200 and user_for_token not in reads
    server.api.forget_tokens()
    # ... and once the cache forgets it, it is checked again and refused.
    assert server.call("GET", "/api/me", "bob").status == 401 and user_for_token in reads


def test_the_token_cache_is_bounded(server: Server) -> None:
    server.api.token_cache_size = 2
    for who in ("alice", "bob", "sue", "root"):
        assert server.call("GET", "/api/me", who).status == 200
    assert len(server.api._tokens) == 2


# ------------------------------------------------------------------------------------------- live views


def test_queues_show_live_figures(server: Server) -> None:
    r = server.call("GET", "/api/queues", "alice")
    assert r.status == 200
    queues = {q["name"]: q for q in r.json["queues"]}
    assert list(queues) == ["support", "billing"]
    support = queues["support"]
    assert support["waiting"] == 2 and support["waiting_by_channel"] == {"email": 1, "chat": 1}
    assert support["longest_wait_s"] >= 0 and support["offered"] == 0 and support["with_agents"] == 0
    assert support["agents_serving"] == 3 and support["agents_ready"] == 0
    assert support["ewt_s"] == {"email": None, "chat": None, "voice": None}  # nobody staffed: unbounded
    assert support["today"]["offered"] == 2 and support["today"]["answered"] == 0
    assert queues["billing"]["waiting"] == 1 and queues["billing"]["agents_serving"] == 1

    server.centre.submit(E.AgentLoggedIn(at_ms=server.centre.now_ms(), agent_id="a3", away_reason="break"))
    server.centre.submit(E.AgentLoggedIn(at_ms=server.centre.now_ms(), agent_id="a2", away_reason="break"))
    assert server.post_state("bob", "a2", {"state": "available"}).status == 200
    support = {q["name"]: q for q in server.call("GET", "/api/queues", "sue").json["queues"]}["support"]
    offered = sum(1 for c in server.centre.router.contact_list() if c.queue == "support" and c.state == "offered")
    assert offered >= 1 and support["offered"] == offered and support["waiting"] == 2 - offered
    assert support["agents_ready"] == 1  # a2; a3 is away
    assert support["ewt_s"]["email"] is not None and support["ewt_s"]["email"] > 0


def test_contacts_for_supervisors_and_for_agents(server: Server) -> None:
    _connect_a1(server)
    r = server.call("GET", "/api/contacts", "sue")
    assert r.status == 200 and r.json["total"] == 3 and not r.json["truncated"]
    rows = {c["id"]: c for c in r.json["contacts"]}
    assert rows["mail-1"]["state"] == "connected" and rows["mail-1"]["agent_id"] == "a1"
    assert rows["mail-1"]["customer_id"] == "cus-ann" and rows["mail-1"]["tier"] == "gold"
    assert rows["mail-1"]["connected_ms"] is not None and rows["mail-1"]["wait_s"] is None
    chat = rows["chat-1"]
    assert chat["state"] == "queued" and chat["position"] == 1 and chat["agent_id"] is None
    assert chat["sla_deadline_ms"] > chat["waiting_since_ms"] and chat["wait_s"] >= 0

    assert [c["id"] for c in server.call("GET", "/api/contacts?state=queued", "sue").json["contacts"]] == [
        "chat-1",
        "call-1",
    ]
    assert [c["id"] for c in server.call("GET", "/api/contacts?queue=billing", "root").json["contacts"]] == ["call-1"]
    got = server.call("GET", "/api/contacts?state=queued,connected&channel=chat", "sue").json
    assert [c["id"] for c in got["contacts"]] == ["chat-1"]
    got = server.call("GET", "/api/contacts?limit=1", "sue").json
    assert got["total"] == 3 and got["truncated"] and len(got["contacts"]) == 1
    for bad in ("state=lost", "queue=nope", "channel=fax", "limit=0", "limit=x"):
        r = server.call("GET", f"/api/contacts?{bad}", "sue")
        assert r.status == 400 and r.json["error"] == "bad_request", bad

    # An agent sees its own work only, and may not ask for anyone else's.
    r = server.call("GET", "/api/contacts", "alice")
    assert r.status == 200 and [c["id"] for c in r.json["contacts"]] == ["mail-1"]
    assert server.call("GET", "/api/contacts", "bob").json["contacts"] == []
    r = server.call("GET", "/api/contacts?agent=a1", "bob")
    assert r.status == 403 and r.json["error"] == "forbidden"


# ---------------------------------------------------------------------------------------- store reads


def test_customer_screen_pop_is_audited(server: Server) -> None:
    r = server.call("GET", "/api/customers/cus-ann", "alice")
    assert r.status == 200
    pop = r.json
    assert pop["matched"] and pop["customer"]["name"] == "Ann" and pop["customer"]["tier"] == "gold"
    assert [c["id"] for c in pop["open_cases"]] == [server.case_id]
    assert [i["id"] for i in pop["recent"]] == ["mail-1"]
    audit = server.audit()
    assert [(a["actor"], a["action"], a["customer_id"]) for a in audit] == [("alice", "customer.read", "cus-ann")]
    assert json.loads(audit[0]["detail"]) == {"what": "api:screen-pop"}

    r = server.call("GET", "/api/customers/cus-nobody", "alice")
    assert r.status == 404 and r.json == {"error": "not_found", "detail": "no customer 'cus-nobody'"}
    assert server.call("GET", "/api/customers/" + "x" * 200, "alice").status == 404
    assert server.call("GET", "/api/customers", "alice").status == 404
    assert len(server.audit()) == 1  # nothing shown, nothing logged


def test_case_with_its_transcript_is_audited(server: Server) -> None:
    r = server.call("GET", f"/api/cases/{server.case_id}", "sue")
    assert r.status == 200
    got = r.json
    assert got["case"]["id"] == server.case_id and got["case"]["subject"] == "Invoice"
    assert [i["id"] for i in got["interactions"]] == ["mail-1"]
    assert [(m["direction"], m["body"]) for m in got["messages"]] == [("inbound", "Where is my invoice?")]
    assert got["messages_before"] is None and got["messages"][0]["truncated"] is False
    audit = server.audit()
    assert [(a["actor"], a["customer_id"], json.loads(a["detail"])) for a in audit] == [
        ("sue", "cus-ann", {"what": f"case:{server.case_id}"})
    ]
    assert server.call("GET", "/api/cases/case-nope", "sue").status == 404


def test_agents_read_cases_and_legs_of_contacts_they_hold_or_answered_only(server: Server) -> None:
    """One rule for a case (transcript, internal notes) and a contact's legs: supervisors read all; an agent
    what is offered to them or in their hands now, or what they answered once; a turned-down offer is not."""
    c = server.centre
    case, legs = f"/api/cases/{server.case_id}", "/api/contacts/mail-1/legs"

    def status(path: str, who: str) -> int:
        return server.call("GET", path, who).status

    assert (status(case, "bob"), status(legs, "bob")) == (403, 403)  # never had mail-1
    assert server.call("GET", case, "bob").json["error"] == "forbidden"
    assert server.audit() == []  # refused before anything was shown, so nothing is logged as read
    c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a2"))
    offer = next(iter(c.router.agent("a2").offers))
    assert offer.contact_id == "mail-1"
    assert (status(case, "bob"), status(legs, "bob")) == (200, 200)  # offered to him now
    c.submit(E.OfferRejected(at_ms=c.now_ms(), offer_id=offer.id, contact_id="mail-1", agent_id="a2"))
    c.submit(E.AgentAway(at_ms=c.now_ms(), agent_id="a2", reason="break"))
    assert (status(case, "bob"), status(legs, "bob")) == (403, 403)  # turned down: not his
    _connect_a1(server)
    assert (status(case, "alice"), status(legs, "alice")) == (200, 200)  # in her hands
    assert (status(case, "sue"), status(legs, "root")) == (200, 200)
    assert status("/api/contacts/chat-1/legs", "alice") == 403  # waiting in the queue: nobody's yet


def test_a_case_transcript_comes_in_pages_with_long_bodies_cut(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    c = server.centre
    small = TranscriptConfig(body_chars=100, messages=2, max_page=3)
    monkeypatch.setattr(
        c,
        "config",
        msgspec.structs.replace(c.config, server=msgspec.structs.replace(c.config.server, transcripts=small)),
    )
    mails = [f"mail {i} " + "x" * 300 for i in range(4)]
    now = c.now_ms()
    c.publish(
        [
            E.MessageReceived(
                at_ms=now + 1 + i,
                contact_id="mail-1",
                message_id=f"m{i}@x",
                channel="email",
                body=text,
                case_id=server.case_id,
            )
            for i, text in enumerate(mails)
        ]
    )
    server.run(c.commit())
    url = f"/api/cases/{server.case_id}"
    first = server.call("GET", url, "sue").json
    assert [m["body"] for m in first["messages"]] == [mails[2][:100], mails[3][:100]]  # the newest, oldest first
    assert all(m["truncated"] and m["length"] == 307 for m in first["messages"])
    second = server.call("GET", f"{url}?before={first['messages_before']}", "sue").json
    assert [m["message_id"] for m in second["messages"]] == ["m0@x", "m1@x"]
    last = server.call("GET", f"{url}?before={second['messages_before']}", "sue").json
    assert [(m["body"], m["truncated"]) for m in last["messages"]] == [("Where is my invoice?", False)]
    assert last["messages_before"] is None
    assert len(server.call("GET", f"{url}?limit=3", "sue").json["messages"]) == 3
    for bad in ("limit=4", "limit=0", "before=yesterday", "before=1.2.3"):
        r = server.call("GET", f"{url}?{bad}", "sue")
        assert r.status == 400 and r.json["error"] == "bad_request", bad

    # The whole text of a cut message, read (and audited) as the case is; only a message of this case.
    # an agent who never had a contact of the case reads none of its messages either (one rule, as for the case)
    assert server.call("GET", f"{url}/messages/{first['messages'][0]['id']}", "bob").status == 403
    whole = server.call("GET", f"{url}/messages/{first['messages'][0]['id']}", "sue")
    assert whole.status == 200 and whole.json["body"] == mails[2] and whole.json["truncated"] is False
    assert json.loads(server.audit()[-1]["detail"]) == {"what": f"case:{server.case_id}"}
    other = server.run(c.write(lambda conn: open_case(conn, now, customer_id="cus-ann", subject="Other")[0]))
    assert server.call("GET", f"/api/cases/{other}/messages/{whole.json['id']}", "sue").status == 404
    for bad in ("x1", "999999", "1" * 40):
        assert server.call("GET", f"{url}/messages/{bad}", "sue").status == 404
    assert server.call("GET", f"/api/cases/case-nope/messages/{whole.json['id']}", "sue").status == 404


# ------------------------------------------------------------------------------------------ agent state


def test_agents_change_their_own_state(server: Server) -> None:
    c = server.centre
    c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a2", away_reason="break"))
    r = server.post_state("bob", "a2", {"state": "available"})
    a2 = c.router.agent("a2")
    assert r.status == 200 and a2.presence == "ready"
    assert a2.state == "reserved" and r.json["state"] == "reserved"  # offered billing's waiting call at once
    r = server.post_state("bob", "a2", {"state": "away", "reason": "lunch"})
    a2 = c.router.agent("a2")
    assert r.status == 200 and a2.state == "away" and a2.away_reason == "lunch"
    assert r.json["presence"] == "away" and r.json["away_reason"] == "lunch"
    assert c.router.contact("call-1").state == "queued"  # the offer went back
    r = server.call("GET", "/api/agents/a2/state", "bob")
    assert r.status == 200 and r.json["state"] == "away"
    r = server.post_state("bob", "a2", {"state": "logged_out"})
    assert r.status == 200 and c.router.agent("a2").state == "logged_out"
    assert server.post_state("bob", "a2", {"state": "logged_out"}).status == 200  # already: no conflict

    # The changes are in the log, stamped with the centre's clock.
    inputs = [
        type(ev).__name__
        for ev in read_events(c.engine)
        if isinstance(ev, (E.AgentReady, E.AgentAway, E.AgentLoggedOut)) and ev.agent_id == "a2"
    ]
    assert inputs == ["AgentReady", "AgentAway", "AgentLoggedOut"]  # committed before each answer


def test_only_supervisors_change_other_agents(server: Server) -> None:
    c = server.centre
    c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a3", away_reason="break"))
    r = server.post_state("alice", "a3", {"state": "available"})
    assert r.status == 403 and r.json["error"] == "forbidden" and c.router.agent("a3").state == "away"
    assert server.call("GET", "/api/agents/a3/state", "alice").status == 403
    assert server.post_state("alice", "nobody", {"state": "available"}).status == 403  # no probing for ids
    r = server.post_state("sue", "a3", {"state": "available"})
    assert r.status == 200 and c.router.agent("a3").presence == "ready"
    r = server.post_state("sue", "nobody", {"state": "available"})
    assert r.status == 404 and r.json["error"] == "not_found"


def test_refused_changes_are_conflicts(server: Server) -> None:
    refused = server.centre.driver.refused
    r = server.post_state("bob", "a2", {"state": "available"})  # logged out: must log in first
    assert r.status == 409 and r.json["error"] == "conflict"
    assert "logged_out" in r.json["detail"] and "log in first" in r.json["detail"]
    _connect_a1(server)
    r = server.post_state("alice", "a1", {"state": "logged_out"})
    assert r.status == 409 and "still handling mail-1" in r.json["detail"]
    assert server.centre.router.agent("a1").state == "busy"
    r = server.post_state("alice", "a1", {"state": "away", "reason": "training"})  # after the work is done
    assert r.status == 200 and r.json["state"] == "busy" and r.json["presence"] == "away"
    assert server.centre.driver.refused == refused  # refused here, never handed to the router


# ---------------------------------------------------------------------------------------- bad requests


def test_malformed_requests(server: Server) -> None:
    server.centre.submit(E.AgentLoggedIn(at_ms=server.centre.now_ms(), agent_id="a2", away_reason="break"))
    for body, code in (
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b'{"state": "asleep"}', "bad_request"),
        (b'{"state": "away", "reason": ""}', "bad_request"),
        (b'{"state": "away", "reason": "' + b"x" * 65 + b'"}', "bad_request"),
        (b'{"state": "away", "reasn": "typo"}', "bad_request"),
        (b"[]", "bad_request"),
    ):
        r = server.post_state("bob", "a2", body)
        assert r.status == 400 and r.json["error"] == code, (body, r.json)
    assert server.centre.router.agent("a2").away_reason == "break"

    big = json.dumps({"state": "away", "reason": "x" * (64 * 1024)}).encode()
    r = server.post_state("bob", "a2", big)
    assert r.status == 413 and r.json["error"] == "payload_too_large"
    # A chunked body declares no length: it is cut at the limit as it is read.
    chunk = b'{"state": "away", "reason": "' + b"x" * (64 * 1024) + b'"}'
    head = (
        b"POST /api/agents/a2/state HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Authorization: Bearer " + server.tokens["bob"].encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = server.raw(head + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"payload_too_large"' in answer

    r = server.call("POST", "/api/queues", "sue", body=b"{}")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD" and r.json["error"] == "method_not_allowed"
    r = server.call("DELETE", "/api/agents/a2/state", "sue")
    assert r.status == 405 and r.headers["allow"] == "GET, POST, HEAD"
    r = server.call("GET", "/api/queues/extra", "sue")
    assert r.status == 404 and r.json["error"] == "not_found"
    assert server.call("GET", "/api/agents/a2", "sue").status == 404
    assert server.call("GET", "/api/agents/a2/nope", "sue").status == 404
    r = server.call("HEAD", "/api/queues", "sue")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0


def test_server_errors_are_logged_not_shown(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    assert server.call("GET", "/api/me", "sue").status == 200  # the token is cached: no read for it

    async def broken(fn: Any, *args: Any) -> Any:
        raise RuntimeError("secret internals")

    server.centre.read = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="contactcentre.edge.web.api"):
        r = server.call("GET", "/api/customers/cus-ann", "sue")
    assert r.status == 500 and r.json == {"error": "internal_error", "detail": "see the server log"}
    assert b"secret" not in r.body and b"Traceback" not in r.body
    assert any(rec.exc_info and "secret internals" in str(rec.exc_info[1]) for rec in caplog.records)


def test_a_client_that_leaves_early_is_not_answered(
    server: Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.call("GET", "/api/me", "sue").status == 200  # cached token: the next read is the pop's
    answered: list[int] = []
    real_send = api_module._send

    def send(request: Any, status: int, *rest: Any) -> None:
        answered.append(status)
        real_send(request, status, *rest)

    monkeypatch.setattr(api_module, "_send", send)
    loop = server.loop
    entered: asyncio.Future[None] = loop.create_future()
    release: asyncio.Future[None] = loop.create_future()
    real_read = server.centre.read

    async def slow(fn: Any, *args: Any) -> Any:
        entered.set_result(None)
        await release
        return await real_read(fn, *args)

    server.centre.read = slow  # type: ignore[method-assign]

    async def leave() -> None:
        server.factory.idle = loop.create_future()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET /api/customers/cus-ann HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + server.tokens["sue"].encode()
            + b"\r\n\r\n"
        )
        await entered  # the request is being worked on ...
        writer.close()  # ... when the client goes
        await writer.wait_closed()
        await server.factory.idle  # the server has seen it go
        release.set_result(None)
        await server.api.drain()

    with caplog.at_level(logging.WARNING):
        server.run(leave())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert answered == []  # no attempt to write to a connection that is gone
    assert len(server.audit()) == 1  # the read went on (and was audited); only the answer was dropped
    server.centre.read = real_read  # type: ignore[method-assign]
    assert server.call("GET", "/api/queues", "sue").status == 200  # and the server carries on


# ------------------------------------------------------------------------------------------- voice actions


def test_voice_actions_on_a_call(server: Server) -> None:
    """answer, hold, retrieve, transfer and hang up a call on the simulated switch through the API; an agent
    acts on its own contacts, a supervisor on any (for the agent who has it); each leg is in the log."""
    from twisted.internet import task

    from contactcentre.edge.voice.channel import VoiceChannel
    from contactcentre.telephony import Switch, SwitchConfig
    from contactcentre.telephony.driver import SwitchDriver

    c = server.centre
    for cid in ("mail-1", "chat-1", "call-1"):  # the populated contacts would take the agents' capacity
        c.submit(E.CustomerLeft(at_ms=c.now_ms(), contact_id=cid))
    switch = Switch(
        SwitchConfig(extensions=("a1", "a2", "a3"), queues=("q-support", "q-billing"), ring_timeout_ms=600_000),
        start_ms=c.now_ms(),
    )
    voice = VoiceChannel(c, SwitchDriver(switch, task.Clock(), now_ms=c.now_ms))
    try:
        c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a1"))
        c.submit(E.AgentLoggedIn(at_ms=c.now_ms(), agent_id="a2", away_reason="break"))
        call = voice.driver.simulate_inbound("+31201234567", "q-support")
        server.run(voice.settle())
        assert c.router.contact(call).offer.agent_id == "a1"

        def post(who: str, action: str, payload: Any = None, cid: str = call) -> Reply:
            body = b"" if payload is None else json.dumps(payload).encode()
            return server.call("POST", f"/api/contacts/{cid}/{action}", who, body=body)

        r = post("bob", "answer")
        assert (r.status, r.json["error"]) == (403, "not_your_contact")
        r = post("alice", "answer")
        assert r.status == 200, r.body
        assert r.json["state"] == "connected" and r.json["agent_id"] == "a1" and r.json["contact_id"] == call
        assert switch.calls[call].connections["a1"].state == "connected"
        r = post("alice", "hold", {})
        assert (r.status, r.json["state"]) == (200, "held")
        r = post("alice", "hold")
        assert (r.status, r.json["error"]) == (409, "refused")
        assert post("alice", "retrieve").json["state"] == "connected"
        r = post("alice", "callback", {"customer_asked": True})  # no callback channel in this centre
        assert (r.status, r.json["error"]) == (409, "channel_unavailable")
        r = post("alice", "callback", {"at_ms": -1})
        assert (r.status, r.json["error"]) == (400, "bad_request")

        assert post("alice", "transfer", {"to_queue": "nope"}).json["error"] == "refused"
        r = post("alice", "transfer", {"to_queue": "billing", "to_agent": "a2"})
        assert (r.status, r.json["error"]) == (400, "bad_field")
        r = post("alice", "transfer", {"to": "a2"})
        assert (r.status, r.json["error"]) == (400, "bad_request")
        r = post("alice", "transfer", b"{not json".decode())
        assert r.status == 400
        r = post("alice", "conference")
        assert (r.status, r.json["error"]) == (409, "refused")
        assert post("alice", "hold", cid="nope").status == 404
        assert post("alice", "fly").status == 404
        r = server.call("GET", f"/api/contacts/{call}/hold", "alice")
        assert r.status == 405

        c.submit(E.AgentReady(at_ms=c.now_ms(), agent_id="a2"))
        r = post("alice", "transfer", {"to_agent": "a2"})
        assert r.status == 200 and r.json["state"] == "offered"
        assert switch.calls[call].connections["a2"].state == "alerting"
        r = post("alice", "hang_up")  # not alice's any more
        assert (r.status, r.json["error"]) == (403, "not_your_contact")
        r = post("sue", "answer")  # a supervisor answers for the agent it is offered to
        assert r.status == 200 and r.json["agent_id"] == "a2" and r.json["state"] == "connected"
        r = post("sue", "hang_up")
        assert r.status == 200 and r.json["state"] == "wrap_up" and call not in switch.calls

        r = server.call("GET", f"/api/contacts/{call}/legs", "sue")
        assert r.status == 200
        assert [(g["agent_id"], g["outcome"], g.get("to")) for g in r.json["legs"]] == [
            ("a1", "transferred", "agent:a2"),
            ("a2", None, None),  # wrapping up: closed when wrap-up ends
        ]
        assert r.json["legs"][0]["hold_ms"] >= 0 and r.json["legs"][1]["ended_ms"] is not None
        assert server.call("GET", f"/api/contacts/{call}/legs", "alice").status == 200  # she had a leg
        assert server.call("GET", "/api/contacts/nope/legs", "sue").status == 404
        assert c.driver.refused == 0
    finally:
        server.run(voice.stop())
