"""Web login over real HTTP on 127.0.0.1 (twisted.web on the session loop) with a real store, SQLite and
PostgreSQL: passwords, sessions and their cookie, expiry on a fake clock, restart, CSRF and Origin, roles per
route, TOTP, login throttling and the audit log; plus the pieces as tables (throttle, redirect targets)."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgspec
import pyotp
import pytest
from sqlalchemy import Engine, inspect, select

from contactcentre.cli import main
from contactcentre.config import AuthConfig, ServerConfig, parse_config
from contactcentre.edge.web.auth import Throttle, WebAuth, csrf_token, origin_of, safe_next, session_cookie
from contactcentre.server.centre import Centre
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.db import connect, current_revision, head_revision, migrate, open_store
from contactcentre.store.schema import audit_log, users, web_sessions
from contactcentre.store.users import add_user, new_token, revoke_tokens, set_disabled, set_totp_secret

CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["chat"]}],
        "agents": [{"id": "a1", "skills": {"general": 5}}],
    },
    "<test>",
)
PASSWORD = "correct horse battery"
SECRET = pyotp.random_base32()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def set_cookies(self) -> dict[str, str]:
        """Set-Cookie headers by cookie name, each as it was sent."""
        return {h.split("=", 1)[0]: h for h in self.headers.get_all("set-cookie") or []}

    def field(self, name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', self.text)
        assert m, f"no {name} field in {self.text}"
        return m.group(1)


@dataclass
class Browser:
    """A cookie jar (name → value, as a browser keeps them for 127.0.0.1) and the site's origin."""

    site: Site
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.site.port}"

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        hdrs = {"Host": f"127.0.0.1:{self.site.port}"}
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            hdrs.setdefault("Origin", self.origin)
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        reply = self.site.call(method, path, body, hdrs)
        for name, header in reply.set_cookies().items():
            value = header.split(";", 1)[0].split("=", 1)[1]
            if "Max-Age=0" in header or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def login(self, name: str, password: str = PASSWORD, next_path: str = "") -> Reply:
        form = self.get("/login" + (f"?next={next_path}" if next_path else ""))
        assert form.status == 200
        return self.request(
            "POST",
            "/login",
            {
                "csrf_token": form.field("csrf_token"),
                "next": form.field("next"),
                "username": name,
                "password": password,
            },
        )

    def code(self, page: Reply, code: str) -> Reply:
        return self.request(
            "POST",
            "/login",
            {"csrf_token": page.field("csrf_token"), "pending": page.field("pending"), "code": code, "next": ""},
        )

    def session(self) -> str:
        return self.cookies["cc_session"]


@dataclass
class Site:
    loop: asyncio.AbstractEventLoop
    database_url: str
    clock: list[int]
    server_config: ServerConfig
    centre: Centre | None = None
    auth: WebAuth | None = None
    port: int = 0
    _listening: Any = None
    _factory: Any = None

    def now(self) -> int:
        return self.clock[0]

    def advance(self, seconds: float) -> None:
        self.clock[0] += round(seconds * 1000)

    def start(self) -> None:
        from twisted.internet import reactor

        from contactcentre.edge.web import DashboardSite
        from contactcentre.edge.web.api import Api

        self.centre = self.loop.run_until_complete(open_centre(CONFIG, self.database_url, loop=self.loop))
        self.auth = WebAuth(self.centre, server=self.server_config, now_ms=self.now)
        api = Api(self.centre, web_auth=self.auth)
        self._factory = DashboardSite(self.centre.driver, auth=self.auth, api=api.children())
        self._listening = reactor.listenTCP(0, self._factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port

    def stop(self) -> None:
        assert self.centre is not None and self.auth is not None
        self.loop.run_until_complete(self._listening.stopListening().asFuture(self.loop))
        self.loop.run_until_complete(self._factory.close_connections())
        self.loop.run_until_complete(self.auth.drain())
        self.loop.run_until_complete(close_centre(self.centre))
        self.centre = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        def go() -> Reply:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return Reply(resp.status, resp.headers, resp.read())
            finally:
                conn.close()

        return self.loop.run_until_complete(self.loop.run_in_executor(None, go))

    def write(self, fn: Any, *args: Any) -> Any:
        assert self.centre is not None
        return self.loop.run_until_complete(self.centre.write(fn, *args))

    def audit(self) -> list[tuple[str, str, dict[str, Any]]]:
        assert self.centre is not None
        with self.centre.engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings().all()
        return [(r["actor"], r["action"], json.loads(r["detail"] or "{}")) for r in rows]

    def browser(self) -> Browser:
        return Browser(self)


def _people(conn: Any, now: int) -> None:
    add_user(conn, "ann", "agent", now, agent_id="a1", password=PASSWORD, display_name="Ann <b>Agent</b>")
    add_user(conn, "sue", "supervisor", now, password=PASSWORD)
    add_user(conn, "root", "admin", now, password=PASSWORD)
    add_user(conn, "tok", "agent", now)  # token only: no password, so no web login


def _make_site(loop: asyncio.AbstractEventLoop, database_url: str, **auth: Any) -> Iterator[Site]:
    from contactcentre.store.db import open_store

    open_store(database_url).dispose()  # migrated before the centre opens it
    clock = [0]
    server = msgspec.structs.replace(CONFIG.server, auth=AuthConfig(**auth))
    site = Site(loop, database_url, clock, server)
    site.start()
    assert site.centre is not None
    clock[0] = site.centre.now_ms()
    site.write(_people, clock[0])
    try:
        yield site
    finally:
        if site.centre is not None:
            site.stop()


@pytest.fixture
def site(reactor_loop: asyncio.AbstractEventLoop, database_url: str) -> Iterator[Site]:
    yield from _make_site(reactor_loop, database_url)


@pytest.fixture
def sqlite_site(reactor_loop: asyncio.AbstractEventLoop, tmp_path: Any) -> Iterator[Any]:
    """``sqlite_site(**auth_settings)``: SQLite only, for behaviour that does not depend on the database."""
    started: list[Iterator[Site]] = []

    def make(**auth: Any) -> Site:
        gen = _make_site(reactor_loop, f"sqlite:///{tmp_path / f'web{len(started)}.sqlite'}", **auth)
        started.append(gen)
        return next(gen)

    yield make
    for gen in started:
        gen.close()


def _no_token(page: Reply) -> str:
    return re.sub(r'value="[^"]{30,}"', 'value="…"', page.text)


# ------------------------------------------------------------------------------------------- logging in


def test_login_sets_a_strict_http_only_cookie_and_opens_the_dashboard(site: Site) -> None:
    b = site.browser()
    reply = b.login("sue")
    assert reply.status == 303 and reply.location == "/"
    cookie = reply.set_cookies()["cc_session"]
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP on 127.0.0.1: a Secure cookie would never come back
    assert len(b.session()) >= 43  # 256 bits, url-safe base64
    page = b.get("/")
    assert page.status == 200 and "text/html" in page.headers["content-type"]
    assert page.field("csrf_token") == csrf_token(b.session())  # the dashboard's logout form
    assert page.headers["referrer-policy"] == "same-origin"  # else the form would post "Origin: null"
    live = b.get("/api/live")
    assert live.status == 200 and json.loads(live.body)["queues"][0]["name"] == "support"
    with site.centre.engine.connect() as conn:  # type: ignore[union-attr]
        stored = conn.execute(select(web_sessions.c.session_hash)).scalars().all()
    assert b.session() not in stored and len(stored) == 1  # only its hash is kept


def test_secure_cookies_setting_marks_the_cookie_secure(sqlite_site: Any) -> None:
    s: Site = sqlite_site()
    assert s.auth is not None
    s.auth.secure_cookies = True
    cookie = s.browser().login("sue").set_cookies()["cc_session"]
    assert "secure" in {f.strip().lower() for f in cookie.split(";")}


def test_wrong_password_and_unknown_user_get_the_same_answer(site: Site) -> None:
    b = site.browser()
    wrong = b.login("sue", "not the password")
    unknown = b.login("nobody", "not the password")
    no_password_user = b.login("tok", "anything at all")
    assert wrong.status == unknown.status == no_password_user.status == 200
    assert "cc_session" not in b.cookies
    assert "Unknown user or wrong password." in wrong.text
    assert _no_token(wrong).replace("sue", "X") == _no_token(unknown).replace("nobody", "X")
    assert [a for _, a, _ in site.audit()] == ["login.failure"] * 3


def test_roles_per_route(site: Site) -> None:
    anon = site.browser()
    r = anon.get("/")
    assert r.status == 303 and r.location == "/login?next=/"
    r = anon.get("/api/live")
    assert r.status == 401 and json.loads(r.body)["error"] == "unauthorized"
    assert anon.get("/agent").status == 303
    assert anon.get("/static/dashboard.css").status == 200  # public
    assert anon.get("/api/live/extra").status == 404

    agent = site.browser()
    r = agent.login("ann")
    assert r.status == 303 and r.location == "/agent"
    page = agent.get("/agent")
    assert page.status == 200 and "Ann &lt;b&gt;Agent&lt;/b&gt;" in page.text  # autoescaped
    assert csrf_token(agent.session()) in page.text
    r = agent.get("/")
    assert r.status == 403 and "supervisor" in r.text and "ann" in r.text
    r = agent.get("/api/live")
    assert r.status == 403 and json.loads(r.body)["error"] == "forbidden"

    admin = site.browser()
    assert admin.login("root").location == "/"
    assert admin.get("/").status == 200 and admin.get("/agent").status == 200


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(site: Site) -> None:
    b = site.browser()
    assert b.login("sue", next_path="/agent").location == "/agent"
    b2 = site.browser()
    assert b2.login("sue", next_path="//evil.example/x").location == "/"


def test_logout_ends_the_session(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    session = b.session()
    r = b.request("POST", "/logout", {"csrf_token": csrf_token(session)})
    assert r.status == 303 and r.location == "/login" and "cc_session" not in b.cookies
    b.cookies["cc_session"] = session  # a copy kept by an attacker is worthless now
    assert b.get("/").status == 303
    assert site.audit()[-1][:2] == ("sue", "logout")


def test_disabling_a_user_ends_their_sessions(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    site.write(set_disabled, "sue", True, site.now())
    assert b.get("/").status == 303


def test_enabling_a_user_again_brings_no_old_session_back(site: Site) -> None:
    """Disabling revokes the sessions in the store (not just hides them behind the user's flag)."""
    b = site.browser()
    b.login("sue")
    site.write(set_disabled, "sue", True, site.now())
    site.write(set_disabled, "sue", False, site.now())
    assert b.get("/").status == 303
    assert b.login("sue").status == 303 and b.get("/").status == 200  # a new login works


def test_the_recheck_closes_sockets_whose_login_ended_outside_the_server(site: Site) -> None:
    """What another process changes (a token revoked, a user disabled) and a session's absolute expiry are
    found by ``LiveSockets.recheck``; idle time does not end a socket's session, and live logins stay."""
    assert site.auth is not None and site.centre is not None
    sockets, closed = site.auth.sockets, []
    b = site.browser()
    b.login("sue")
    tokens = {name: site.write(new_token, name, site.now()) for name in ("tok", "ann")}
    sockets.add("sue", lambda why: closed.append(("sue", why)), session_id=b.session())
    sockets.add("tok", lambda why: closed.append(("tok", why)), token=tokens["tok"])
    sockets.add("ann", lambda why: closed.append(("ann", why)), token=tokens["ann"])

    def recheck() -> int:
        return site.loop.run_until_complete(sockets.recheck())

    site.advance(3 * 3600)  # idle for hours: an open socket is its user at work
    assert recheck() == 0 and closed == []
    site.write(revoke_tokens, "tok", site.now())
    assert recheck() == 1 and [c[0] for c in closed] == ["tok"]
    site.advance(12 * 3600)  # past the session's absolute limit
    assert recheck() == 1 and [c[0] for c in closed] == ["tok", "sue"]
    assert recheck() == 0  # closed once; ann's token is live
    sockets.stop()


def test_a_password_reset_closes_the_sockets_of_the_users_sessions_not_of_its_tokens(site: Site) -> None:
    assert site.auth is not None
    sockets, closed = site.auth.sockets, []
    b = site.browser()
    b.login("sue")
    token = site.write(new_token, "sue", site.now())
    sockets.add("sue", lambda why: closed.append(("session", why)), session_id=b.session())
    sockets.add("sue", lambda why: closed.append(("token", why)), token=token)
    sockets.add("root", lambda why: closed.append(("root", why)), session_id="another")
    assert sockets.end_user_sessions("sue", "password reset") == 1
    assert closed == [("session", "password reset")]
    sockets.stop()


def test_a_login_ended_while_a_socket_checked_it_closes_that_socket_at_once(site: Site) -> None:
    """The race a logout or a disable can win: the socket's login is read from the store, the login ends
    meanwhile (nothing is registered yet to close), then the socket registers. It closes at once, not at the
    next recheck; a socket whose check began after the end is a new login and stays."""
    assert site.auth is not None and site.centre is not None
    sockets, closed = site.auth.sockets, []
    b = site.browser()
    b.login("sue")
    checked = sockets.checking()
    sockets.end_session(b.session(), "logged out")  # while the socket's check awaits the store
    sockets.end_user("ann", "disabled")
    sockets.add("sue", lambda why: closed.append(("sue", why)), session_id=b.session(), checked_at=checked)
    sockets.add("ann", lambda why: closed.append(("ann", why)), token="cc_x", checked_at=checked)
    site.loop.run_until_complete(asyncio.sleep(0))  # the closes are called soon, not inside add()
    assert sorted(c[0] for c in closed) == ["ann", "sue"]
    later = sockets.checking()
    sockets.add("ann", lambda why: closed.append(("ann again", why)), token="cc_y", checked_at=later + 1)
    site.loop.run_until_complete(asyncio.sleep(0))
    assert len(closed) == 2
    sockets.stop()


def test_login_rotates_the_session_id(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    first = b.session()
    b.login("root")  # e.g. a session id planted by someone else is replaced, and ended
    assert b.session() != first
    b.cookies["cc_session"] = first
    assert b.get("/").status == 303


def test_a_session_survives_a_restart_of_the_server(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    site.restart()
    assert b.get("/").status == 200


def test_sessions_expire_when_idle_and_at_their_absolute_limit(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    site.advance(29 * 60)
    assert b.get("/api/live").status == 200  # not idle long enough; and this touches it
    site.advance(29 * 60)
    assert b.get("/api/live").status == 200
    site.advance(30 * 60 + 1)
    assert b.get("/api/live").status == 401  # idle for the whole 30 minutes

    b.login("sue")
    for _ in range(11 * 3 + 2):  # busy all day, a request every 20 minutes ...
        site.advance(20 * 60)
        assert b.get("/api/live").status == 200
    site.advance(20 * 60)
    assert b.get("/api/live").status == 401  # ... yet 12 hours after login the session ends


# ------------------------------------------------------------------------------------------- CSRF, Origin


def test_unsafe_methods_need_the_csrf_token_and_the_sites_origin(site: Site) -> None:
    b = site.browser()
    b.login("sue")
    token = csrf_token(b.session())
    assert b.request("POST", "/logout", {}).status == 403
    assert b.request("POST", "/logout", {"csrf_token": "0" * 64}).status == 403
    evil = {"Origin": "http://evil.example"}
    assert b.request("POST", "/logout", {"csrf_token": token}, headers=evil).status == 403
    assert b.request("POST", "/logout", {"csrf_token": token}, headers={"Origin": "null"}).status == 403
    assert (
        b.request("POST", "/logout", {"csrf_token": token}, headers={"Origin": None, "Referer": "http://evil.example/"})
    ).status == 403
    assert b.get("/").status == 200  # none of those logged out
    # The header form (what scripts send) works, as does a same-origin Referer without Origin.
    r = b.request(
        "POST", "/logout", {}, headers={"X-CSRF-Token": token, "Origin": None, "Referer": f"{b.origin}/agent"}
    )
    assert r.status == 303 and b.get("/").status == 303


def test_the_rest_api_takes_the_session_with_csrf_on_unsafe_methods(site: Site) -> None:
    b = site.browser()
    assert b.get("/api/me").status == 401  # anonymous
    b.login("ann")
    me = b.get("/api/me")
    assert me.status == 200 and json.loads(me.body)["agent_id"] == "a1"
    body = json.dumps({"state": "away", "reason": "break"}).encode()
    plain = {"Content-Type": "application/json"}
    token = csrf_token(b.session())
    # A cross-site form or script riding on the cookie: no token, or the wrong origin.
    cookie_only = {**plain, "Cookie": f"cc_session={b.session()}"}
    assert site.call("POST", "/api/agents/a1/state", body, cookie_only).status == 403
    evil = {**plain, "Cookie": f"cc_session={b.session()}", "X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert site.call("POST", "/api/agents/a1/state", body, evil).status == 403
    ok = {**plain, "Cookie": f"cc_session={b.session()}", "X-CSRF-Token": token, "Origin": b.origin}
    r = site.call("POST", "/api/agents/a1/state", body, ok)
    assert r.status in (200, 409), r.body  # past authentication: the router's word on the change
    assert b.get("/api/queues").status == 200
    b.request("POST", "/logout", {"csrf_token": token})
    assert b.get("/api/me").status == 401


def test_bad_login_input_gets_a_clear_answer(site: Site) -> None:
    b = site.browser()
    form = b.get("/login")
    token = form.field("csrf_token")
    # Credentials in the query string are not read (they would sit in logs and history).
    r = b.request("POST", f"/login?username=sue&password={PASSWORD.replace(' ', '+')}", {"csrf_token": token})
    assert r.status == 200 and "Unknown user or wrong password." in r.text and "cc_session" not in b.cookies
    token = r.field("csrf_token")
    body = f"csrf_token={token}&username=%ff%fe&password=x".encode()
    hdrs = {"Content-Type": "application/x-www-form-urlencoded", "Origin": b.origin, "Cookie": f"cc_login={token}"}
    r = site.call("POST", "/login", body, {**hdrs, "Host": f"127.0.0.1:{site.port}"})
    assert r.status == 400 and "UTF-8" in r.text
    big = b"csrf_token=x&username=" + b"a" * 20_000
    r = site.call("POST", "/login", big, {**hdrs, "Host": f"127.0.0.1:{site.port}"})
    assert r.status == 413
    assert b.get("/login/extra").status == 404 and b.request("PUT", "/login").status == 405
    assert b.login("sue").status == 303  # and the server carries on


def test_the_login_form_has_its_own_csrf_check(site: Site) -> None:
    b = site.browser()
    b.get("/login")
    r = b.request("POST", "/login", {"csrf_token": "forged", "username": "sue", "password": PASSWORD})
    assert r.status == 403 and "cc_session" not in b.cookies
    form = b.get("/login")
    r = b.request(
        "POST",
        "/login",
        {"csrf_token": form.field("csrf_token"), "username": "sue", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status == 403 and "cc_session" not in b.cookies


def test_allowed_origins_for_the_websocket_handshake(site: Site) -> None:
    assert site.auth is not None
    assert not site.auth.allowed_origin(f"http://127.0.0.1:{site.port}")  # no request: only known origins
    site.auth.add_origin(f"http://127.0.0.1:{site.port}/")
    assert site.auth.allowed_origin(f"http://127.0.0.1:{site.port}")
    assert not site.auth.allowed_origin("http://127.0.0.1:1")
    assert not site.auth.allowed_origin("null") and not site.auth.allowed_origin(None)
    b = site.browser()
    b.login("ann")
    sid = session_cookie(f"other=1; cc_session={b.session()}")
    user = site.loop.run_until_complete(site.auth.session_user(sid))
    assert user is not None and user.id == "ann" and user.agent_id == "a1"
    assert site.loop.run_until_complete(site.auth.session_user("forged")) is None
    assert session_cookie(None) is None and session_cookie('bad"cookie') is None


def test_authenticate_accepts_a_bearer_token_without_csrf(site: Site) -> None:
    """The hook the REST API can call: a bearer token or a session, with the role checked."""
    from twisted.web.test.requesthelper import DummyRequest

    assert site.auth is not None
    token = site.write(lambda conn: add_user(conn, "bot", "supervisor", site.now()))
    req = DummyRequest([b""])
    req.method = b"POST"
    req.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
    user = site.loop.run_until_complete(site.auth.authenticate(req, "supervisor"))
    assert user.id == "bot"
    req2 = DummyRequest([b""])
    req2.requestHeaders.addRawHeader(b"authorization", b"Bearer cc_nonsense")
    from contactcentre.edge.web.auth import AuthError

    with pytest.raises(AuthError) as err:
        site.loop.run_until_complete(site.auth.authenticate(req2))
    assert err.value.status == 401


# ------------------------------------------------------------------------------------------------- TOTP


def test_totp_is_asked_for_checked_and_not_accepted_twice(site: Site) -> None:
    site.write(set_totp_secret, "sue", SECRET)
    totp = pyotp.TOTP(SECRET)
    b = site.browser()
    page = b.login("sue")
    assert page.status == 200 and "cc_session" not in b.cookies and page.field("pending")
    wrong = b.code(page, "000000" if totp.at(site.now() / 1000) != "000000" else "111111")
    assert wrong.status == 200 and "wrong or was used" in wrong.text and "cc_session" not in b.cookies
    code = totp.at(site.now() / 1000)
    ok = b.code(wrong, code)
    assert ok.status == 303 and ok.location == "/" and b.get("/").status == 200

    again = site.browser()
    page = again.login("sue")
    replayed = again.code(page, code)  # the same code, still inside its 30 s window
    assert replayed.status == 200 and "cc_session" not in again.cookies
    site.advance(30)
    ok = again.code(replayed, totp.at(site.now() / 1000))
    assert ok.status == 303

    actions = [(actor, action, d.get("reason") or d.get("how")) for actor, action, d in site.audit()]
    assert actions == [
        ("sue", "login.totp_failure", "wrong"),
        ("sue", "login.success", "password+totp"),
        ("sue", "login.totp_failure", "replayed"),
        ("sue", "login.success", "password+totp"),
    ]


def test_a_pending_totp_step_expires(site: Site) -> None:
    site.write(set_totp_secret, "root", SECRET)
    b = site.browser()
    page = b.login("root")
    site.advance(6 * 60)
    r = b.code(page, pyotp.TOTP(SECRET).at(site.now() / 1000))
    assert r.status == 200 and "took too long" in r.text and "cc_session" not in b.cookies


def test_require_totp_refuses_supervisors_without_a_second_factor(sqlite_site: Any) -> None:
    s: Site = sqlite_site(require_totp=True)
    b = s.browser()
    r = b.login("sue")
    assert r.status == 403 and "contactcentre user totp sue" in r.text and "cc_session" not in b.cookies
    assert s.browser().login("ann").status == 303  # agents are not asked
    s.write(set_totp_secret, "sue", SECRET)
    page = b.login("sue")
    assert b.code(page, pyotp.TOTP(SECRET).at(s.now() / 1000)).status == 303


# ------------------------------------------------------------------------------------------- throttling


def test_failed_logins_lock_the_user_out_with_back_off(sqlite_site: Any) -> None:
    s: Site = sqlite_site(max_failures_per_user=3, lockout_s=30, lockout_max_s=100)
    b = s.browser()
    for _ in range(3):
        assert b.login("sue", "guess").status == 200
    locked = b.login("sue")  # even the right password
    assert locked.status == 429 and locked.headers["retry-after"] == "30" and "cc_session" not in b.cookies
    # An unknown name is locked the same way: the answer does not tell which names exist.
    for _ in range(3):
        b.login("nobody", "guess")
    assert _no_token(b.login("nobody", "guess")) == _no_token(locked)
    s.advance(30)
    for _ in range(3):
        b.login("sue", "guess")
    assert b.login("sue").headers["retry-after"] == "60"  # doubled
    s.advance(60)
    assert b.login("sue").status == 303
    assert ("sue", "login.failure", {"reason": "locked", "address": "127.0.0.1"}) in s.audit()


def test_failed_logins_lock_the_address_out(sqlite_site: Any) -> None:
    b = sqlite_site(max_failures_per_address=4).browser()
    for name in ("a", "b", "c", "d"):
        assert b.login(name, "guess").status == 200
    assert b.login("sue").status == 429


def test_the_addresses_of_one_ipv6_slash_64_are_one_address(sqlite_site: Any, monkeypatch: Any) -> None:
    """A client with an IPv6 /64 (one subscriber's) takes a fresh address for every guess: the address limit
    counts its /64, as every other per-address cap does (docs/security.md, "What one client means")."""
    import contactcentre.edge.web.auth as web_auth

    b = sqlite_site(max_failures_per_address=4).browser()
    hosts = (f"2001:db8:1:2::{n:x}" for n in itertools.count(1))
    monkeypatch.setattr(web_auth, "_address", lambda request: next(hosts))
    for name in ("a", "b", "c", "d"):
        assert b.login(name, "guess").status == 200
    assert b.login("sue").status == 429


def test_successful_logins_do_not_lock_the_address_out(sqlite_site: Any) -> None:
    """An office behind one NAT address: more good logins than the address's failure limit all get in, and
    failures between them still count towards it."""
    s: Site = sqlite_site(max_failures_per_address=3)
    b = s.browser()
    for _ in range(5):
        assert b.login("sue").status == 303
    assert b.login("x", "guess").status == 200
    assert b.login("y", "guess").status == 200
    assert b.login("ann").status == 303  # 2 failures, then a success that does not make it 3
    assert b.login("z", "guess").status == 200
    assert b.login("sue").status == 429  # the third failure locked the address


def test_a_right_password_takes_back_a_lockout_its_own_strike_completed() -> None:
    """Attempts are struck before the check (parallel guesses cannot overtake the limit); ``forgive`` undoes
    one strike, lifting the lockout it completed, so the next failure is the one that locks."""
    t = Throttle(2, 1_000, 8_000)
    t.strike("k", 0)
    t.strike("k", 1)  # an attempt in flight, struck before its check: locked
    assert t.retry_after_ms("k", 1) == 1_000
    t.forgive("k")  # it was right
    assert t.retry_after_ms("k", 2) == 0
    t.strike("k", 3)  # the next failure locks, for the first lockout's time, not the doubled one
    assert t.retry_after_ms("k", 3) == 1_000
    t.forgive("unknown")  # nothing to take back
    assert t.retry_after_ms("unknown", 3) == 0


THROTTLE_STEPS = [
    # (ms since start, action, retry_after_ms afterwards)
    (0, "strike", 0),
    (1, "strike", 1_000),  # second strike: locked 1 s
    (501, "check", 500),
    (1_001, "strike", 0),
    (1_002, "strike", 2_000),  # second lockout in a row: doubled
    (3_002, "strike", 0),
    (3_003, "strike", 3_000),  # capped at max
    (3_003 + 3_000 + 10_001, "strike", 0),  # left alone longer than forget_ms: starts afresh
    (3_003 + 3_000 + 10_002, "strike", 1_000),
    (20_000, "clear", 0),
]


def test_throttle_as_a_table() -> None:
    t = Throttle(2, 1_000, 3_000, forget_ms=10_000)
    for at, action, wait in THROTTLE_STEPS:
        if action == "strike":
            t.strike("k", at)
        elif action == "clear":
            t.clear("k")
        assert t.retry_after_ms("k", at) == wait, (at, action)
    assert t.retry_after_ms("other", 0) == 0


def test_throttle_memory_is_bounded_but_keeps_locked_keys() -> None:
    t = Throttle(1, 1_000, 1_000, max_keys=2)
    t.strike("a", 0)
    t.strike("b", 0)
    t.strike("c", 0)  # all locked: nobody is forgotten
    assert t.retry_after_ms("a", 0) == 1_000
    t.strike("d", 5_000)  # a, b and c have served their time: the oldest go
    assert t.retry_after_ms("d", 5_000) == 1_000 and len(t._keys) == 2


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/", "/"),
        ("/agent?x=1", "/agent?x=1"),
        ("//evil.example/", None),
        ("/\\evil.example", None),
        ("https://evil.example/", None),
        ("agent", None),
        ("/a\nb", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_next(target: str | None, safe: str | None) -> None:
    assert safe_next(target) == safe


def test_origin_of() -> None:
    assert origin_of("HTTP://Example.com:8080/x?y") == "http://example.com:8080"
    assert origin_of("javascript:alert(1)") is None and origin_of("/relative") is None


# ------------------------------------------------------------------------------------ migration and CLI


def test_migration_0004_up_and_down(database_url: str) -> None:
    engine: Engine = connect(database_url)
    try:
        migrate(engine, "0003")
        assert "web_sessions" not in inspect(engine).get_table_names()
        assert migrate(engine) == head_revision()
        assert "web_sessions" in inspect(engine).get_table_names()
        assert {"totp_secret", "totp_last_step"} <= {c["name"] for c in inspect(engine).get_columns("users")}
        from alembic import command

        from contactcentre.store.db import _alembic_config

        command.downgrade(_alembic_config(engine), "0003")
        assert current_revision(engine) == "0003"
        assert "web_sessions" not in inspect(engine).get_table_names()
        assert "totp_secret" not in {c["name"] for c in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()


def test_user_totp_command_enrols_and_removes(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = open_store(database_url)
    try:
        with engine.begin() as conn:
            add_user(conn, "sue", "supervisor", 1)
        assert main(["user", "totp", "sue", "--database-url", database_url]) == 0
        out = capsys.readouterr().out
        uri = re.search(r"otpauth://totp/\S+", out)
        assert uri and "issuer=contactcentre" in uri.group(0)
        parsed = pyotp.parse_uri(uri.group(0))
        with engine.connect() as conn:
            stored = conn.execute(select(users.c.totp_secret).where(users.c.id == "sue")).scalar_one()
        assert stored == parsed.secret
        assert main(["user", "totp", "nobody", "--database-url", database_url]) == 1
        assert main(["user", "totp", "sue", "--remove", "--database-url", database_url]) == 0
        with engine.connect() as conn:
            assert conn.execute(select(users.c.totp_secret).where(users.c.id == "sue")).scalar_one() is None
    finally:
        engine.dispose()
