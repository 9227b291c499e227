"""``GET /chat``: the customer's chat widget — a small page (Jinja2, autoescaped) whose script, ``chat.js``,
speaks the chat protocol (docs/chat-protocol.md) to ``ws://<the page's host>:<ws_port>/chat``.

The page is meant to be embedded (an ``<iframe>`` on the company's site), so unlike the console it may be
framed; everything else is as strict as the console: no inline script or style, the one WebSocket origin it
needs in ``connect-src``, nothing else.

Import this only after the runtime has installed the asyncio reactor (it imports twisted.web).
"""

from __future__ import annotations

import re

from jinja2 import Environment
from twisted.web.resource import Resource
from twisted.web.server import Request

from contactcentre.config import CentreConfig
from contactcentre.edge.chat.channel import MAX_EMAIL, MAX_NAME, MAX_TEXT, MAX_TOPIC
from contactcentre.edge.web import _common_headers, _Node, make_environment

# A host name or IP literal as it may appear in a CSP source; anything else in a Host header is not put there.
_HOST = re.compile(rb"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])$")


def _csp(host: bytes, ws_port: int, frame_ancestors: bytes) -> bytes:
    ws = b"ws://%s:%d wss://%s:%d" % (host, ws_port, host, ws_port)
    return (
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src " + ws + b"; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors " + frame_ancestors
    )


class ChatWidget(_Node):
    """The widget page. Rendered per request only for the host in the CSP; the rest is fixed at start-up."""

    isLeaf = True  # /chat/anything is the same page (an embedding site may add a path)

    def __init__(
        self,
        config: CentreConfig,
        ws_port: int,
        env: Environment | None = None,
        *,
        frame_ancestors: str = "*",
    ) -> None:
        super().__init__()
        self.config = config
        self.ws_port = ws_port
        host = (config.server.host or "127.0.0.1").encode("ascii", "replace")
        host = b"[%s]" % host if b":" in host else host
        self.fallback_host = host if _HOST.match(host) else b"127.0.0.1"
        self.frame_ancestors = frame_ancestors.encode("ascii")
        env = env or make_environment()
        cfg = config.server.chat
        default_queue = cfg.queue or config.first_queue_for("chat")
        # Customers see the queue's label (or name), never its description: that is written for the staff
        # ("First-line support for every channel") and says nothing a customer chooses by.
        queues = [
            {"name": q.name, "label": q.label or q.name.replace("_", " ").capitalize()}
            for q in config.queues
            if "chat" in q.channels
        ]
        self.page = (
            env.get_template("chat_widget.html")
            .render(
                centre=config.name,
                timezone=config.timezone,  # times in the centre's zone, named (centre-time.js)
                ws_port=ws_port,
                queues=queues if len(queues) > 1 else [],
                default_queue=default_queue or "",
                max_text=MAX_TEXT,
                max_name=MAX_NAME,
                max_email=MAX_EMAIL,
                max_topic=MAX_TOPIC,
            )
            .encode("utf-8")
        )

    def render_GET(self, request: Request) -> bytes:
        host = request.getRequestHostname() or b""
        if not _HOST.match(host):  # never let a Host header write into the policy
            host = self.fallback_host
        _common_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", _csp(host, self.ws_port, self.frame_ancestors))
        request.setHeader(b"cache-control", b"no-store")
        return self.page


def widget_resource(config: CentreConfig, ws_port: int) -> Resource:
    """``/chat``: the embeddable chat widget, talking to the customers' WebSocket on ``ws_port``."""
    return ChatWidget(config, ws_port)


__all__ = ["ChatWidget", "widget_resource"]
