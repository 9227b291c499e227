"""A TCP proxy between the nodes of a test and PostgreSQL, to take the database away without stopping the
machine's shared server: ``cut()`` closes every connection through it and refuses new ones (the port stops
listening), ``restore()`` listens again on the same port. It runs on a thread and loop of its own, so the
test's loop and the nodes' subprocesses see it as a real outage.

``url(database_url)`` is the same URL with the proxy's host and port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

__all__ = ["PgProxy", "pg_proxy"]

UPSTREAM = ("127.0.0.1", 5432)


class PgProxy:
    def __init__(self, upstream: tuple[str, int] = UPSTREAM) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections = 0  # accepted so far (a node reconnecting after a cut shows here)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)
        self._thread.start()
        self.restore()

    def url(self, database_url: str) -> str:
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def restore(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._call(self._listen())

    def cut(self) -> None:
        """Close every connection through the proxy and stop listening: new connections are refused."""
        self._call(self._cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()  # a reset, as a dead network or server gives
        self._open.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        pair = {client_w, server_w}
        self._open |= pair

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        finally:
            self._open -= pair


@pytest.fixture
def pg_proxy() -> Iterator[PgProxy]:
    proxy = PgProxy()
    try:
        yield proxy
    finally:
        proxy.close()
