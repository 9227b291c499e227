"""Protocol clients for simulated people: a chat customer and an agent console over WebSocket, and an e-mail
customer over SMTP. They speak exactly what a browser widget, an agent console and a mail client speak
(docs/chat-protocol.md, docs/protocol.md), so the demo and the load generator exercise the real front doors.

Every client is driven by its owner through callbacks and ``loop.call_later``; nothing here sleeps or polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]


class JsonSocket:
    """A WebSocket that speaks JSON frames and hands every frame it receives to ``on_frame``."""

    def __init__(self, url: str, on_frame: Handler, *, name: str = "") -> None:
        self.url = url
        self.on_frame = on_frame
        self.name = name or url
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await connect(self.url, proxy=None, open_timeout=10, max_size=1024 * 1024)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"ws-read {self.name}")

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None or self.closed.is_set():
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("%s: not JSON: %.80r", self.name, raw)
                    continue
                try:
                    result = self.on_frame(frame)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("%s: handling %s failed", self.name, frame.get("type"))
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()


def send_email(
    host: str,
    port: int,
    *,
    sender: str,
    sender_name: str,
    to: str,
    subject: str,
    body: str,
    in_reply_to: str | None = None,
) -> str:
    """Send one mail with smtplib (blocking: run it in an executor); returns its Message-ID."""
    msg = EmailMessage()
    msg["From"] = f"{sender_name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.send_message(msg)
    return str(msg["Message-ID"])
