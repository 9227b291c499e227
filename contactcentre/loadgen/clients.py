"""Protocol clients for simulated people: a chat customer and an agent console over WebSocket, an e-mail
customer over SMTP, and callers on the simulated switch's CTI link. They speak exactly what a browser widget,
an agent console, a mail client and a CTI client speak (docs/chat-protocol.md, docs/protocol.md, docs/cti.md),
so the demo and the load generator exercise the real front doors.

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

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode  # objects become dicts, as json.loads makes them


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
        """Connect; a server that goes away during the opening handshake raises ``ConnectionResetError`` (an
        ``OSError``, like a refused connection), not websockets' own exceptions."""
        try:
            # No permessage-deflate offer: the server takes none, and building and parsing the offer costs the
            # load generator's CPU (it shares the machine with the server it measures) on every connection.
            self.ws = await connect(self.url, proxy=None, open_timeout=10, max_size=1024 * 1024, compression=None)
        except WebSocketException as exc:
            raise ConnectionResetError(f"{self.name}: the opening handshake failed: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"ws-read {self.name}")

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None or self.closed.is_set():
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(_encode(frame).decode())  # str: a text frame

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
                    frame = _decode(raw)
                except msgspec.DecodeError:
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


class CtiError(RuntimeError):
    """A CTI request answered ``ok: false``; ``code`` is the switch's error code (docs/cti.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class CtiClient:
    """One CTI link connection (JSON lines over TCP): ``open`` connects and authenticates with ``token``,
    ``request`` sends a request and returns its response. Events (only for devices it monitors) go to
    ``on_event``; ``closed`` is set when the server goes away."""

    def __init__(
        self, host: str, port: int, token: str, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.host, self.port, self.token = host, port, token
        self.on_event = on_event
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader), name="cti-read")
        await self.request("Authenticate", token=self.token)  # the server closes a link that does not

    async def request(self, name: str, **fields: Any) -> dict[str, Any]:
        if self._writer is None or self.closed.is_set():
            raise ConnectionResetError("the CTI link is closed")
        self._ids += 1
        invoke = self._ids
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[invoke] = fut
        self._writer.write(json.dumps({"request": name, "invoke_id": invoke, **fields}).encode() + b"\n")
        try:
            response = await fut
        finally:
            self._pending.pop(invoke, None)
        if not response.get("ok"):
            error = response.get("error") or {}
            raise CtiError(str(error.get("code")), str(error.get("message")))
        return response

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("cti: not JSON: %.80r", line)
                    continue
                fut = self._pending.get(msg.get("invoke_id")) if "response" in msg else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif "event" in msg and self.on_event is not None:
                    self.on_event(msg)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionResetError("the CTI link closed"))


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
