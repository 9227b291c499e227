"""The web console: twisted.web resources, Jinja2 templates (autoescaped), plain JS and CSS.

Import this only after the runtime has installed the asyncio reactor.

Routes: ``/`` the supervisor dashboard (live over the ``/live`` WebSocket, ``edge/web/live.py``), ``/wallboard`` the
same figures for a big screen, ``GET /api/live`` the live figures as JSON, ``/static/…`` its script and style
sheet, ``/login``, ``/logout`` and ``/agent`` (``edge/web/auth.py``, ``docs/web.md``). Everything else is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import WrappingFactory
from twisted.web import pages
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from contactcentre.edge.limits import TOO_MANY_CONNECTIONS, PeerCount

if TYPE_CHECKING:
    from contactcentre.edge.web.auth import WebAuth
    from contactcentre.server.driver import RouterDriver

STATIC_DIR = Path(__file__).resolve().parent / "static"

_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _common_headers(request: Request) -> None:
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


# ----------------------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def fmt_secs(value: float | None) -> str:
    if value is None:
        return "–"
    s = round(value)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"


def fmt_time(at_ms: int, timezone: str = "UTC") -> str:
    return datetime.fromtimestamp(at_ms / 1000, ZoneInfo(timezone)).strftime("%H:%M:%S")


def fmt_counts(counts: dict[str, int]) -> str:
    """``{"available": 3, "busy": 0}`` → ``available 3`` (zeros left out)."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v) or "–"


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("contactcentre.edge.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=fmt_pct, secs=fmt_secs, hms=fmt_time, counts=fmt_counts)
    return env


# ------------------------------------------------------------------------------------------ resources


class _Node(Resource):
    """A resource that answers GET and HEAD only, and whose unknown children are 404s."""

    def getChild(self, path: bytes, request: Request) -> Any:
        return pages.notFound()

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return pages.errorPage(405, "Method Not Allowed", "Only GET and HEAD are served here.").render(request)
        return super().render(request)


class Dashboard(_Node):
    """The supervisor's dashboard; with ``template="wallboard.html"`` the wall-board (the same live feed)."""

    def __init__(
        self, driver: RouterDriver, env: Environment, ws_port: int | None = None, template: str = "dashboard.html"
    ) -> None:
        super().__init__()
        self.driver = driver
        self.template = env.get_template(template)
        self.ws_port = ws_port  # the live updates' WebSocket (edge/web/live.py); None: the page shows its first render

    def render_GET(self, request: Request) -> bytes:
        from contactcentre.edge.web.live import live_ws_url

        live = self.driver.live()
        _common_headers(request)
        # Its logout form posts: with no-referrer the browser would send "Origin: null", which CSRF refuses.
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        ws_url, csp = live_ws_url(request, self.ws_port, _CSP)
        request.setHeader(b"content-security-policy", csp)
        request.setHeader(b"cache-control", b"no-store")
        user, csrf = getattr(request, "cc_user", None), getattr(request, "cc_csrf", "")  # set by auth.guard
        page = self.template.render(live=live, queues=queue_rows(live), user=user, csrf=csrf, ws_url=ws_url)
        return page.encode("utf-8")


class LiveApi(_Node):
    def __init__(self, driver: RouterDriver) -> None:
        super().__init__()
        self.driver = driver

    def render_GET(self, request: Request) -> bytes:
        _common_headers(request)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return self.driver.live_json()


_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8"}


class StaticFile(_Node):
    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        _common_headers(request)
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


def static_files(directory: Path = STATIC_DIR) -> Resource:
    """The dashboard's script and style sheet, read once at start-up; no listings, nothing else."""
    node = _Node()
    for f in sorted(directory.iterdir()):
        if f.is_file() and f.suffix in _TYPES:
            node.putChild(f.name.encode(), StaticFile(f.read_bytes(), _TYPES[f.suffix]))
    return node


def queue_rows(live: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configured queue, in configuration order, with its figures."""
    figures = live["snapshot"]["queues"]
    return [{**q, "m": figures.get(q["name"], {})} for q in live["queues"]]


def build_root(
    driver: RouterDriver,
    *,
    auth: WebAuth,
    api: dict[bytes, Resource] | None = None,
    pages_: dict[bytes, Resource] | None = None,
    ws_port: int | None = None,
) -> Resource:
    """The site's tree; ``api`` adds resources under ``/api/``, ``pages_`` at the top (``/chat``).

    The dashboard and ``/api/live`` need a supervisor's session (``auth``), which also serves ``/login``,
    ``/logout`` and ``/agent``; static files and the customers' ``/chat`` are public."""
    env = make_environment()
    root = _Node()
    root.putChild(b"", auth.guard(Dashboard(driver, env, ws_port), "supervisor"))
    root.putChild(b"wallboard", auth.guard(Dashboard(driver, env, ws_port, "wallboard.html"), "supervisor"))
    for name, resource in auth.resources().items():
        root.putChild(name, resource)
    from contactcentre.edge.web.admin import AdminPage  # imports web.auth, which imports this module

    root.putChild(b"admin", auth.guard(AdminPage(auth, env), "admin"))
    api_node = _Node()
    api_node.putChild(b"live", auth.guard(LiveApi(driver), "supervisor", api=True))
    for name, resource in (api or {}).items():
        api_node.putChild(name, resource)
    root.putChild(b"api", api_node)
    root.putChild(b"static", static_files())
    for name, resource in (pages_ or {}).items():
        root.putChild(name, resource)
    return root


class _RequestDeadlineChannel(HTTPChannel):
    """HTTP whose whole request (request line, headers and body) must arrive within ``request_timeout_s`` of
    its first byte (or of the connection, for the first one), however slowly it trickles in: Twisted's own
    timeout restarts with every byte, so a header line or a body byte every few seconds would hold the
    connection for ever. The clock starts at the first byte rather than at the first complete line, since a
    request line sent a byte at a time is never a line until its end. Too slow: 408, then close."""

    request_timeout_s = 10.0
    _request_deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._await_request()

    def dataReceived(self, data: bytes) -> None:
        # Bytes while no request is being read nor handled start the next request on a kept-alive connection.
        # (Bytes that come while one is handled are buffered by Twisted and fed back here once it is done.)
        if data and self._request_deadline is None and not self._handlingRequest:
            self._await_request()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._request_in()  # the body is in: what happens next is ours, not the client's, to hurry
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._request_in()
        super().connectionLost(reason)

    def _await_request(self) -> None:
        self._request_deadline = self.callLater(self.request_timeout_s, self._request_too_slow)

    def _request_in(self) -> None:
        if self._request_deadline is not None:
            if self._request_deadline.active():
                self._request_deadline.cancel()
            self._request_deadline = None

    def _request_too_slow(self) -> None:
        self._request_deadline = None
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


class _TooManyConnections(Protocol):
    """The answer to one connection over an address's cap: a 429 and the connection closed."""

    def connectionMade(self) -> None:
        body = (TOO_MANY_CONNECTIONS + "\n").encode()
        head = (
            "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.loseConnection()


class DashboardSite(WrappingFactory):
    """The site, wrapped so that open connections (browsers keep them alive) can be closed at shutdown, with
    at most ``max_connections_per_address`` open from one address and a deadline for each whole request."""

    def __init__(
        self,
        driver: RouterDriver,
        *,
        auth: WebAuth,
        api: dict[bytes, Resource] | None = None,
        pages_: dict[bytes, Resource] | None = None,
        ws_port: int | None = None,
        max_connections_per_address: int = 100,
        request_timeout_s: float = 10.0,
    ) -> None:
        site = Site(build_root(driver, auth=auth, api=api, pages_=pages_, ws_port=ws_port), logPath=None)
        site.displayTracebacks = False
        # Plain HTTP only (no TLS, so no HTTP/2 to negotiate): the channel is HTTP/1.1's, with its deadline.
        site.protocol = type("HTTPChannel", (_RequestDeadlineChannel,), {"request_timeout_s": request_timeout_s})
        super().__init__(site)
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._peers = PeerCount(max_connections_per_address)
        self._peer_of: dict[Any, str] = {}

    def buildProtocol(self, addr: Any) -> Any:
        host = str(getattr(addr, "host", ""))
        if not self._peers.acquire(host):
            return _TooManyConnections()
        p = super().buildProtocol(addr)
        self._peer_of[p] = host
        return p

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        host = self._peer_of.pop(p, None)
        if host is not None:
            self._peers.release(host)
        if not self.protocols:
            for fut in self._idle_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._idle_waiters.clear()

    async def close_connections(self, timeout_s: float = 2.0) -> None:
        """Abort every open connection and wait (up to ``timeout_s``) until they are all gone."""
        if not self.protocols:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        for p in list(self.protocols):
            p.transport.abortConnection()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout_s)


__all__ = ["DashboardSite", "build_root", "make_environment"]
