"""A real Redis for tests: Debian's ``redis-server`` started on a free port of its own, one per test.

Fixtures (through tests/conftest.py; nothing to import for them):

* ``redis_server``: a ``RedisServer`` just started, empty, without persistence (``--save '' --appendonly
  no``), stopped after the test. ``url`` is its ``redis://`` URL; ``kill()`` (SIGKILL) and ``start()`` again on
  the same port stand in for a Redis crash and restart (it comes back empty).
* ``redis_url``: that server's URL, for tests that need nothing else.

The binary is /usr/bin/redis-server (Debian package ``redis-server``; override with CONTACTCENTRE_REDIS_SERVER).
Without it the tests fail under CI=true (.ci/run installs it) and are skipped elsewhere. Waiting for a server
to answer is a poll with a deadline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server", "redis_url"]

REDIS_SERVER = Path(os.environ.get("CONTACTCENTRE_REDIS_SERVER", "/usr/bin/redis-server"))
START_S = 15  # how long a server may take to answer on a slow, shared CI machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port``, its log in ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def start(self) -> None:
        """Start the server on ``port`` and return once it answers PING."""
        import redis

        assert self.proc is None or self.proc.poll() is not None, "already running"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots and no append-only file: a restart comes back empty
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self.workdir),
            "logfile": str(self.log),
        }
        self.proc = subprocess.Popen(
            [str(REDIS_SERVER), *(part for name, value in options.items() for part in (f"--{name}", value))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + START_S
        try:
            while True:
                if self.proc.poll() is not None:
                    log = self.log.read_text(errors="replace") if self.log.exists() else ""
                    raise RuntimeError(f"redis-server on port {self.port} exited ({self.proc.returncode}): {log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server on port {self.port} did not answer within {START_S} s")
                time.sleep(0.01)  # the server's start-up, polled; not a test waiting
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: whatever it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=START_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=START_S)
            except subprocess.TimeoutExpired:
                self.kill()


def _require_binary() -> None:
    if REDIS_SERVER.exists():
        return
    message = f"{REDIS_SERVER} not found (Debian package redis-server)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must have it (.ci/run installs it)")
    pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    _require_binary()
    server = None
    for _ in range(5):  # a port found free can be taken before the server binds it: try another
        server = RedisServer(tmp_path)
        try:
            server.start()
            break
        except RuntimeError:
            server.stop()
            server = None
    if server is None:
        pytest.fail("could not start redis-server on a free port (see the redis-*.log files in the test's tmp_path)")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
