"""Ending a login ends its live sockets, end to end: ``contactcentre serve`` in its own process, logins over
HTTP, the agent console (``/agent``) and the dashboard (``/live``) over real WebSockets. Disabling a user on
``/admin``, logging out, or ``contactcentre user disable`` from another process closes that user's sockets
with 1008 (at once on this server; at the next recheck from the CLI), puts the agent away so nothing more is
offered, and enabling the user again brings no old session back."""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from contactcentre.cli import main
from contactcentre.edge.web.auth import csrf_token
from contactcentre.store.db import open_store
from contactcentre.store.users import add_user
from tests.server_proc import Server, Sink, T, next_frame, server_config, start_server

PASSWORD = "correct horse battery"
RECHECK_S = 0.2


@dataclass
class Running:
    server: Server
    tokens: dict[str, str]  # API tokens by user name
    database_url: str


@pytest.fixture
def running(tmp_path: Path) -> Any:
    """A server whose config rechecks open sockets' logins every RECHECK_S, with users ada (agent), boss
    (supervisor) and root (admin), all with PASSWORD."""
    sink = Sink()
    config = server_config(tmp_path, sink.port)
    text = config.read_text(encoding="utf-8")
    auth = f"  [server.auth]\n  socket_recheck_s = {RECHECK_S}\n\n[dispositions]"
    config.write_text(text.replace("[dispositions]", auth, 1), encoding="utf-8")
    db = tmp_path / "store.sqlite"
    engine = open_store(db)
    with engine.begin() as conn:
        tokens = {
            "ada": add_user(conn, "ada", "agent", 0, agent_id="ada", password=PASSWORD),
            "boss": add_user(conn, "boss", "supervisor", 0, password=PASSWORD),
            "root": add_user(conn, "root", "admin", 0, password=PASSWORD),
        }
    engine.dispose()
    server = start_server(config, db)
    try:
        yield Running(server, tokens, f"sqlite:///{db}")
    finally:
        code, err = server.stop()
        sink.close()
    assert code == 0, err
    assert "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------ helpers


def _origin(server: Server) -> str:
    return server.url.rstrip("/")


def _http(server: Server, method: str, path: str, *, form: dict[str, str] | None = None, **headers: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=T)
    try:
        body = urlencode(form).encode() if form is not None else None
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        if form is not None:
            hdrs |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": _origin(server)}
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


def _cookie(headers: Any, name: str) -> str:
    for h in headers.get_all("set-cookie") or []:
        if h.startswith(name + "="):
            return h.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie in {headers}")


def _login(server: Server, name: str) -> str:
    """A web session for ``name`` (the login form, its CSRF cookie, the post)."""
    _status, headers, page = _http(server, "GET", "/login")
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m is not None, page
    form = {"csrf_token": m.group(1), "next": "", "username": name, "password": PASSWORD}
    status, headers, _ = _http(server, "POST", "/login", form=form, Cookie=f"cc_login={_cookie(headers, 'cc_login')}")
    assert status == 303, (status, headers)
    return _cookie(headers, "cc_session")


def _post(server: Server, session: str, path: str, **fields: str) -> int:
    form = {"csrf_token": csrf_token(session), **fields}
    return _http(server, "POST", path, form=form, Cookie=f"cc_session={session}")[0]


def _api(server: Server, path: str, token: str) -> tuple[int, Any]:
    status, _headers, body = _http(server, "GET", path, Authorization=f"Bearer {token}")
    return status, json.loads(body)


async def _socket(server: Server, path: str, session: str) -> ClientConnection:
    """The console or the dashboard as the site's page opens it: its session cookie and the site's Origin."""
    return await connect(
        server.ws(path), proxy=None, origin=_origin(server), additional_headers={"Cookie": f"cc_session={session}"}
    )


async def _closed_with(ws: ClientConnection, code: int = 1008) -> dict[str, Any]:
    """The ``error`` frame before the socket's close (``code``); fails after T seconds."""

    async def read() -> dict[str, Any]:
        error: dict[str, Any] = {}
        try:
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "error":
                    error = frame
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == code, exc
            return error

    return await asyncio.wait_for(read(), T)


async def _in_thread(fn: Any, *args: Any, **kw: Any) -> Any:
    """A blocking call (HTTP, the CLI) off the loop, so the sockets keep being read meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kw))


# ------------------------------------------------------------------------------------------------ tests


def test_disabling_on_admin_closes_the_users_sockets_at_once_and_enabling_brings_no_session_back(
    running: Running,
) -> None:
    server, tokens = running.server, running.tokens
    ada, root = _login(server, "ada"), _login(server, "root")

    async def run() -> None:
        console = await _socket(server, "/agent", ada)
        await next_frame(console, "welcome")
        await console.send(json.dumps({"type": "state", "state": "available"}))
        await next_frame(console, "state", state="available")
        assert await _in_thread(_post, server, root, "/admin", user="ada", action="disable") == 303
        error = await _closed_with(console)
        assert error["code"] == "revoked" and "disabled" in error["detail"]

    asyncio.run(run())
    # Put away as a disconnect does: nothing more is offered to the agent.
    status, state = _api(server, "/api/agents/ada/state", tokens["boss"])
    assert status == 200 and state["presence"] == "away" and state["away_reason"] == "disconnected", state
    # Her token works no more on the REST API, at once (not after the token cache's lifetime).
    assert _api(server, "/api/me", tokens["ada"])[0] == 401

    assert _post(server, root, "/admin", user="ada", action="enable") == 303
    assert _http(server, "GET", "/agent", Cookie=f"cc_session={ada}")[0] == 303  # to /login: the session is over

    async def old_session() -> None:
        console = await _socket(server, "/agent", ada)
        assert (await _closed_with(console))["code"] == "unauthorized"

    asyncio.run(old_session())


def test_logging_out_closes_the_sockets_that_session_opened(running: Running) -> None:
    server = running.server
    ada, boss = _login(server, "ada"), _login(server, "boss")

    async def run() -> None:
        console = await _socket(server, "/agent", ada)
        await next_frame(console, "welcome")
        dashboard = await _socket(server, "/live", boss)
        assert json.loads(await asyncio.wait_for(dashboard.recv(), T))["queues"]  # the first snapshot
        assert await _in_thread(_post, server, boss, "/logout") == 303
        assert (await _closed_with(dashboard))["code"] == "revoked"
        await console.send(json.dumps({"type": "ping"}))
        await next_frame(console, "ack")  # another user's logout leaves the console alone
        assert await _in_thread(_post, server, ada, "/logout") == 303
        assert (await _closed_with(console))["detail"] == "logged out"

    asyncio.run(run())


def test_disabling_from_the_cli_closes_the_running_servers_sockets(running: Running) -> None:
    """``contactcentre user disable`` runs in another process: the server finds it at its next recheck of
    the open sockets' logins (``socket_recheck_s``), for token and session sockets alike."""
    server, tokens = running.server, running.tokens
    boss = _login(server, "boss")

    async def run() -> None:
        console = await connect(server.ws("/agent"), proxy=None)
        await console.send(json.dumps({"type": "login", "token": tokens["ada"]}))
        await next_frame(console, "welcome")
        dashboard = await _socket(server, "/live", boss)
        await asyncio.wait_for(dashboard.recv(), T)
        db = running.database_url
        assert await _in_thread(main, ["user", "disable", "ada", "--database-url", db]) == 0
        assert (await _closed_with(console))["code"] == "revoked"
        assert await _in_thread(main, ["user", "disable", "boss", "--database-url", db]) == 0
        assert (await _closed_with(dashboard))["code"] == "revoked"

    asyncio.run(run())
    status, state = _api(server, "/api/agents/ada/state", tokens["root"])
    assert status == 200 and state["presence"] == "away", state
