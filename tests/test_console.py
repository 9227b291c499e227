"""The agent console's server side: the gateway's web-session login at the WebSocket handshake (Origin and the
``cc_session`` cookie, docs/web.md "Console"), the controlled disposition list, and the ``/agent`` page (its
policy, the WebSocket URL and settings it carries, its role guard). Real WebSockets on 127.0.0.1, a real
store; the page through twisted.web on the session's reactor loop. The browser drives it in
tests/test_browser_console.py."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from contactcentre.config import parse_config
from contactcentre.edge.agents.gateway import AgentGateway
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store import users
from contactcentre.store.sessions import create_session
from tests.test_agent_gateway import CONFIG, TIMEOUT, Console, Env, FakeChannel

CODES = ["resolved", "follow_up", "spam"]
RAW = msgspec.to_builtins(CONFIG)
RAW.update(
    dispositions={"codes": CODES},
    canned=[
        {"name": "greeting", "channel": "chat", "text": "Hello <there>"},
        {"name": "closing", "text": "Bye"},
    ],
)
WEB_CONFIG = parse_config(RAW, "<test>")
SITE = "http://127.0.0.1:8080"


class WebEnv(Env):
    sessions: dict[str, str]

    async def session_console(self, user: str, *, origin: str | None = SITE, cookie: str | None = None) -> Console:
        headers = {}
        if origin is not None:
            headers["Origin"] = origin
        headers["Cookie"] = cookie if cookie is not None else f"theme=dark; cc_session={self.sessions[user]}"
        console = Console(
            await connect(self.url, proxy=None, open_timeout=TIMEOUT, additional_headers=headers, origin=None)
        )
        self.consoles.append(console)
        return console


@contextlib.asynccontextmanager
async def web_running(tmp_path: Path) -> AsyncIterator[WebEnv]:
    from contactcentre.edge.web.auth import WebAuth

    centre = await open_centre(WEB_CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        now = centre.now_ms()

        def people(conn: Any) -> dict[str, str]:
            tokens = {"a1": users.add_user(conn, "ann", "agent", now, agent_id="a1", password="pw-ann-123456")}
            users.add_user(conn, "sue", "supervisor", now, password="pw-sue-123456")
            users.add_user(conn, "gus", "agent", now, agent_id="a9", password="pw-gus-123456")  # not configured
            return tokens

        tokens = await centre.write(people)
        sessions = {}
        for name in ("ann", "sue", "gus"):
            sessions[name] = await centre.write(lambda c, n=name: create_session(c, n, now, max_ms=3_600_000))
        web_auth = WebAuth(centre)
        web_auth.add_origin(SITE + "/")
        chat, email = FakeChannel(centre, "chat"), FakeChannel(centre, "email")
        centre.channels.update(chat=chat, email=email)
        gateway = AgentGateway(centre, web_auth=web_auth)
        async with serve(gateway.handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            env = WebEnv(centre, gateway, f"ws://127.0.0.1:{port}/agent", tokens, chat, email)
            env.sessions = sessions
            try:
                yield env
            finally:
                for console in env.consoles:
                    await console.close()
                await gateway.stop()
    finally:
        await close_centre(centre)


def run(loop: asyncio.AbstractEventLoop, tmp_path: Path, body: Callable[[WebEnv], Any]) -> None:
    async def main() -> None:
        async with web_running(tmp_path) as env:
            await body(env)

    loop.run_until_complete(main())


# ------------------------------------------------------------------------------------- session login


def test_a_session_cookie_from_the_sites_page_logs_the_console_in_without_a_login_frame(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    async def body(env: WebEnv) -> None:
        console = await env.session_console("ann")
        welcome = await console.recv()  # sent at once: the handshake carried who it is
        assert welcome["type"] == "welcome" and welcome["agent_id"] == "a1"
        assert welcome["user"]["id"] == "ann" and welcome["state"] == "away" and welcome["reason"] == "not_ready"
        assert welcome["dispositions"] == sorted(CODES)
        await console.send(type="state", state="available", ref=1)
        assert (await console.expect("ack", ref=1))["state"] == "available"
        await console.send(type="login", token=env.tokens["a1"])  # a login frame as well changes nothing
        assert (await console.expect("error"))["code"] == "already_logged_in"

    run(reactor_loop, tmp_path, body)


def test_session_logins_refused(reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    cases = [
        # (user, origin, cookie, error code): each closes the connection with 1008
        ("ann", "http://evil.example", None, "bad_origin"),  # another site's page: cross-site hijacking
        ("ann", None, None, "bad_origin"),  # a cookie without an Origin is not a browser on our page
        ("ann", "null", None, "bad_origin"),
        ("ann", SITE, "cc_session=forged-or-expired", "unauthorized"),
        ("sue", SITE, None, "not_an_agent"),  # a supervisor without an agent id
        ("gus", SITE, None, "unknown_agent"),
    ]

    async def body(env: WebEnv) -> None:
        for user, origin, cookie, code in cases:
            console = await env.session_console(user, origin=origin, cookie=cookie)
            frame = await console.recv()
            assert (frame["type"], frame["code"]) == ("error", code), (user, origin, cookie, frame)
            assert (await console.closed())[0] == 1008
        assert env.gateway.connected_agents() == []
        # without a cookie the token login still works, whatever the origin (a token is its own secret)
        console, welcome = await env.login("a1")
        assert welcome["agent_id"] == "a1"

    run(reactor_loop, tmp_path, body)


def test_a_session_console_replaces_a_token_console_of_the_same_agent(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    async def body(env: WebEnv) -> None:
        old, _ = await env.login("a1")
        new = await env.session_console("ann")
        assert (await new.recv())["type"] == "welcome"
        assert (await old.closed())[0] == 4000

    run(reactor_loop, tmp_path, body)


# ------------------------------------------------------------------------------------ dispositions


def test_only_codes_from_the_controlled_list_are_taken(reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    async def body(env: WebEnv) -> None:
        console = await env.session_console("ann")
        await console.expect("welcome")
        await console.send(type="state", state="available")
        await console.expect("ack")
        env.arrive("chat-1")
        offer = await console.expect("offer", contact_id="chat-1")
        await console.send(type="accept", offer_id=offer["offer_id"])
        await console.expect("ack", **{"for": "accept"})
        await console.send(type="end", contact_id="chat-1")
        await console.expect("ack", **{"for": "end"})

        for code in ("made_up", "Resolved", "resolved "):
            await console.send(type="disposition", contact_id="chat-1", code=code, ref=code)
            err = await console.expect("error", ref=code)
            assert err["code"] == "bad_field" and repr(code) in err["detail"] and err["codes"] == sorted(CODES)
        assert env.centre.router.contact("chat-1").disposition is None
        await console.send(type="disposition", contact_id="chat-1", code="follow_up")
        assert (await console.expect("ack", **{"for": "disposition"}))["code"] == "follow_up"
        await console.send(type="wrap_up_done", contact_id="chat-1")
        closed = await console.expect("contact_closed")
        assert closed["disposition"] == "follow_up"

    run(reactor_loop, tmp_path, body)


# ------------------------------------------------------------------------------------------ the page


def _render(
    reactor_loop: asyncio.AbstractEventLoop, host: bytes, role: str = "agent", agent_id: str | None = "a1"
) -> tuple[Any, str]:
    from twisted.web.server import Request
    from twisted.web.test.requesthelper import DummyChannel

    from contactcentre.edge.web.console import ConsolePage
    from contactcentre.store.users import User

    page = ConsolePage(WEB_CONFIG, 8081)
    request = Request(DummyChannel())
    request.method, request.uri, request.path = b"GET", b"/agent", b"/agent"
    request.requestHeaders.setRawHeaders(b"host", [host + b":8080"])
    request.cc_user = User(id="ann", role=role, agent_id=agent_id, display_name="Ann <b>A</b>")
    request.cc_csrf = "c" * 64
    body = page.render_GET(request)
    return request, body.decode()


def test_the_page_carries_the_websocket_url_settings_and_a_strict_policy(
    reactor_loop: asyncio.AbstractEventLoop,
) -> None:
    request, text = _render(reactor_loop, b"127.0.0.1")
    csp = request.responseHeaders.getRawHeaders(b"content-security-policy")[0].decode()
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "'unsafe-inline'" not in csp
    assert "connect-src ws://127.0.0.1:8081 wss://127.0.0.1:8081;" in csp
    assert request.responseHeaders.getRawHeaders(b"referrer-policy") == [b"same-origin"]
    assert 'data-ws-url="ws://127.0.0.1:8081/agent"' in text
    assert "<b>A</b>" not in text and "Ann &lt;b&gt;A&lt;/b&gt;" in text  # autoescaped
    # no inline script: the only <script> without src is the JSON data block, which is not run
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", text, re.S)
    assert [attrs.strip() for attrs, _ in inline] == ['type="application/json" id="console-settings"']
    assert "style=" not in text
    settings = json.loads(html.unescape(inline[0][1]))
    assert settings["dispositions"] == CODES
    assert settings["canned"][0] == {"name": "greeting", "text": "Hello <there>", "channel": "chat"}
    assert "lunch" in settings["away_reasons"] and settings["queues"] == ["support", "sales"]
    assert "<there>" not in inline[0][1]  # tojson escapes markup even inside the data block

    # a Host header that is not a host name never reaches the policy or the page
    request, text = _render(reactor_loop, b"evil.example; script-src *")
    csp = request.responseHeaders.getRawHeaders(b"content-security-policy")[0].decode()
    assert "evil" not in csp and "evil" not in text and "ws://127.0.0.1:8081" in csp


def test_a_user_without_an_agent_id_gets_the_page_without_a_websocket(reactor_loop: asyncio.AbstractEventLoop) -> None:
    _, text = _render(reactor_loop, b"127.0.0.1", role="supervisor", agent_id=None)
    assert 'data-ws-url=""' in text
    assert "has no agent id" in text and 'href="/"' in text  # and the way to the dashboard
