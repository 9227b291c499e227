"""``GET /agent``: the agent console — one page (Jinja2, autoescaped) whose script, ``console.js``, speaks the
agent protocol (docs/protocol.md) to ``ws://<the page's host>:<ws_port>/agent``, logged in by the page's web
session (the gateway reads the ``cc_session`` cookie at the handshake).

What the page needs from the configuration (away reasons, disposition codes, canned responses, the ws URL) is
rendered into ``data-`` attributes and one JSON data block; everything the customer wrote reaches the page only
through the WebSocket and is put in with ``textContent``. The policy allows no inline script or style, and the
one WebSocket origin the console talks to.

Import this only after the runtime has installed the asyncio reactor (it imports twisted.web).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment
from twisted.web.server import Request

from contactcentre.config import CentreConfig
from contactcentre.edge.web import _Node, make_environment
from contactcentre.edge.web.widget import _HOST
from contactcentre.store.users import User

# Reasons an agent may choose when going away. Fixed: reports group by them, so they are not free text. The
# router's own reasons (missed_offer, disconnected) are shown when it sets them but cannot be chosen.
AWAY_REASONS = ("break", "lunch", "meeting", "training", "coaching", "not_ready")


def console_csp(host: bytes, ws_port: int) -> bytes:
    """The page's policy: own scripts and styles, the agent WebSocket on ``host``, forms to this site only."""
    ws = b"ws://%s:%d wss://%s:%d" % (host, ws_port, host, ws_port)
    return (
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src " + ws + b"; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def console_settings(config: CentreConfig) -> dict[str, Any]:
    """What the console's script reads from the page: controlled lists and ready-made answers."""
    return {
        "away_reasons": list(AWAY_REASONS),
        "dispositions": list(config.dispositions.codes),
        "canned": [{"name": c.name, "text": c.text, "channel": c.channel} for c in config.canned],
        "queues": [q.name for q in config.queues],
        "agents": [a.id for a in config.agents],
    }


class ConsolePage(_Node):
    """The console. The runtime mounts it behind ``WebAuth.guard(..., "agent")``, which sets ``cc_user``."""

    isLeaf = True

    def __init__(self, config: CentreConfig, ws_port: int, env: Environment | None = None) -> None:
        super().__init__()
        self.config = config
        self.ws_port = ws_port
        self.env = env or make_environment()
        self.settings = console_settings(config)
        host = (config.server.host or "127.0.0.1").encode("ascii", "replace")
        host = b"[%s]" % host if b":" in host else host
        self.fallback_host = host if _HOST.match(host) and host not in (b"0.0.0.0", b"[::]") else b"127.0.0.1"

    def render_GET(self, request: Request) -> bytes:
        user: User = request.cc_user  # type: ignore[attr-defined]
        csrf: str = getattr(request, "cc_csrf", "")
        host = request.getRequestHostname() or b""
        if not _HOST.match(host):  # never let a Host header write into the policy or the page
            host = self.fallback_host
        scheme = "wss" if request.isSecure() else "ws"
        ws_url = f"{scheme}://{host.decode('ascii')}:{self.ws_port}/agent"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")  # the logout form's Origin/Referer check
        request.setHeader(b"content-security-policy", console_csp(host, self.ws_port))
        page = self.env.get_template("console.html").render(
            user=user,
            csrf=csrf,
            ws_url=ws_url,
            centre=self.config.name,
            settings=self.settings,
            timezone=self.config.timezone,  # the page shows times in the centre's zone (centre-time.js)
        )
        return page.encode("utf-8")


__all__ = ["AWAY_REASONS", "ConsolePage", "console_csp", "console_settings"]
