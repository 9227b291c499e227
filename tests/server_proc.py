"""A real ``contactcentre serve`` in a subprocess, and a local SMTP sink standing in for the smarthost, for
end-to-end tests over real sockets. Waiting is by reading the server's output or by polling with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope
from websockets.asyncio.client import ClientConnection, connect

from contactcentre.config import DEFAULT_CONFIG_PATH
from contactcentre.store.db import open_store
from contactcentre.store.users import add_user

REPO = Path(__file__).resolve().parent.parent
T = 30  # seconds any single step may take on a slow CI machine
READY = re.compile(
    r"contactcentre serve: (http://127\.0\.0\.1:(\d+)/) · smtp://127\.0\.0\.1:(\d+) · "
    r"ws://127\.0\.0\.1:(\d+)/chat and /agent · store (.+) \(Ctrl-C to stop\)"
)
CTI = re.compile(r"CTI link \(simulated switch, docs/cti\.md\): tcp://127\.0\.0\.1:(\d+) token (\S+)")
SIP = re.compile(r"SIP front door \(docs/sip\.md\): sip:\S+@127\.0\.0\.1:(\d+) \(UDP\)")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    http_port: int
    smtp_port: int
    ws_port: int
    cti_port: int
    sip_port: int
    cti_token: str
    stderr: list[bytes] = field(default_factory=list)

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.ws_port}{path}"

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (b"".join(self.stderr) + err).decode(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)


def start_server(
    config: Path,
    database: Path | str,
    *,
    timeout: float = 30,
    launcher: list[str] | None = None,
    extra: list[str] | None = None,
    voice: bool = True,
) -> Server:
    """``contactcentre serve`` on free ports; ``launcher`` runs the command line instead of ``python -m
    contactcentre.cli`` (it gets ``serve …`` as its arguments); ``extra`` arguments go after the ports (an edge
    node's ``--role edge …``); ``voice`` False: the server takes no calls (no CTI or SIP line to wait for)."""
    cmd = [*(launcher or [sys.executable, "-m", "contactcentre.cli"]), "serve", "--config", str(config)]
    cmd += ["--database-url", str(database), "--http-port", "0", "--smtp-port", "0", "--ws-port", "0"]
    cmd += ["--cti-port", "0", "--sip-port", "0", *(extra or [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    out = b""
    errs: list[bytes] = []
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(key.fd, 65536)  # type: ignore[arg-type]
            if key.fileobj is proc.stderr:
                errs.append(chunk)
                continue
            out += chunk
            text = out.decode(errors="replace")
            m, c, s = READY.search(text), CTI.search(text), SIP.search(text)
            if m and not voice:
                sel.close()
                return Server(proc, m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), 0, 0, "", errs)
            if m and c and s:
                sel.close()
                ports = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(c.group(1)), int(s.group(1))
                return Server(proc, m.group(1), *ports, c.group(2), errs)
        if proc.poll() is not None:
            break
    proc.kill()
    rest_out, rest_err = proc.communicate()
    raise AssertionError(f"server did not start: {(out + rest_out).decode()} {(b''.join(errs) + rest_err).decode()}")


class Sink:
    """An SMTP server on its own thread and loop that keeps what it receives (the smarthost)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._arrived = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
                msg = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[arg-type]
                with sink._arrived:
                    sink.messages.append(msg)  # type: ignore[arg-type]
                    sink.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
                    sink._arrived.notify_all()
                return "250 OK"

        self._server = self._loop.run_until_complete(self._loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", 0))
        started.set()
        self._loop.run_forever()

    def wait_for(self, predicate: Any, timeout: float = 30) -> EmailMessage:
        """The first received message for which ``predicate(msg)`` holds (waits on a condition, no sleeps)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [m["Subject"] for m in self.messages]
                    raise AssertionError(f"no such message within {timeout} s; got {subjects}")
                self._arrived.wait(left)

    def close(self) -> None:
        def shut() -> None:
            assert self._server is not None
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shut)
        self._thread.join(10)
        self._loop.close()


# ------------------------------------------------------------------------------------ configuration and people


def server_config(tmp_path: Path, smarthost_port: int) -> Path:
    """contactcentre/data/default.toml with replies going to the SMTP sink on ``smarthost_port`` and a known address."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    edited = re.sub(r"(?m)^(\s*)smarthost_port = \d+", rf"\g<1>smarthost_port = {smarthost_port}", text)
    edited = re.sub(r'(?m)^(\s*)address = "[^"]*"', r'\g<1>address = "support@centre.example"', edited)
    assert edited.count(f"smarthost_port = {smarthost_port}") == 1 and "support@centre.example" in edited
    text = edited
    path = tmp_path / "centre.toml"
    path.write_text(text, encoding="utf-8")
    return path


def add_users(db: Path) -> dict[str, str]:
    """Agent ``ada`` and supervisor ``boss`` in the store; their API tokens by name."""
    engine = open_store(db)
    try:
        with engine.begin() as conn:
            return {
                "ada": add_user(conn, "ada", "agent", 0, agent_id="ada"),
                "boss": add_user(conn, "boss", "supervisor", 0),
            }
    finally:
        engine.dispose()


async def next_frame(ws: ClientConnection, want: str, **match: Any) -> dict[str, Any]:
    """The next frame of type ``want`` (and matching fields), skipping others; fails after T seconds."""

    async def find() -> dict[str, Any]:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == want and all(frame.get(k) == v for k, v in match.items()):
                return frame

    return await asyncio.wait_for(find(), T)


async def agent_console(server: Server, token: str) -> ClientConnection:
    """An agent protocol connection, logged in with ``token`` (the welcome frame read)."""
    ws = await connect(server.ws("/agent"), proxy=None)
    await ws.send(json.dumps({"type": "login", "token": token}))
    await next_frame(ws, "welcome")
    return ws
