"""Per-client caps (``[server.limits]``) on a real ``contactcentre serve``: one address cannot
take every socket, hold a connection open by trickling headers, or fill a queue with silent chats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server_proc import Server, T, server_config, start_server


def limited_server(tmp_path: Path, **limits: object) -> Server:
    """contactcentre/data/default.toml with ``[server.limits]`` set to ``limits``."""
    config = server_config(tmp_path, 9)  # nothing is mailed here: the smarthost port is never used
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in limits.items())
    config.write_text(config.read_text(encoding="utf-8") + f"\n[server.limits]\n{table}", encoding="utf-8")
    return start_server(config, tmp_path / "s.sqlite")


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Server]:
    server = limited_server(tmp_path, max_connections_per_address=3, handshake_timeout_s=1.0)
    try:
        yield server
    finally:
        server.stop()


def test_one_address_gets_at_most_its_websocket_connections_and_a_clear_429(capped: Server) -> None:
    async def main() -> None:
        url = capped.ws("/chat")
        held = [await connect(url, proxy=None, open_timeout=T) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, proxy=None, open_timeout=T)
        assert refused.value.response.status_code == 429
        assert b"too many connections" in refused.value.response.body
        await held.pop().close()  # a closed socket gives its place back
        held.append(await connect(url, proxy=None, open_timeout=T))
        await held[-1].send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(held[-1].recv(), T)) == {"type": "pong"}
        for ws in held:
            await ws.close()

    asyncio.run(main())


def _http_get(port: int) -> bytes:
    return f"GET /static/none HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), T)  # until the server closes


def test_one_address_gets_at_most_its_web_connections_and_a_clear_429(capped: Server) -> None:
    async def main() -> None:
        port = capped.http_port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader)
        assert answer.startswith(b"HTTP/1.1 429 ") and b"too many connections" in answer
        writer.close()
        _, w = held.pop()  # a closed connection gives its place back
        w.close()
        await w.wait_closed()
        for _ in range(100):  # the server sees the close a moment later: poll, with a bound
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_http_get(port))
            status = (await asyncio.wait_for(reader.readline(), T)).split()[1]
            writer.close()
            if status != b"429":
                break
        assert status == b"404"
        for _, w in held:
            w.close()

    asyncio.run(main())


def test_request_headers_trickling_in_are_cut_off_at_the_deadline(capped: Server) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", capped.http_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = b""
        # A header line whenever the last one was written: Twisted's idle timeout would restart each time.
        while not reader.at_eof() and loop.time() - started < T:
            writer.write(b"X-Slow: 1\r\n")
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.2)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert loop.time() - started < 5  # handshake_timeout_s is 1 s
        writer.close()

    asyncio.run(main())


async def _trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes
) -> tuple[bytes, float]:
    """Send ``trickle`` a byte at a time (one whenever a 0.2 s read comes back empty) until the server closes;
    what it answered and how long that took. Bounded by ``T``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = b""
    i = 0
    while not reader.at_eof() and loop.time() - started < T:
        if i < len(trickle):
            writer.write(trickle[i : i + 1])
            i += 1
        with contextlib.suppress(TimeoutError):
            answer += await asyncio.wait_for(reader.read(4096), 0.2)
    return answer, loop.time() - started


def test_a_request_body_trickling_in_is_cut_off_at_the_deadline(capped: Server) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", capped.http_port)
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        answer, took = await _trickle_until_closed(reader, writer, b"a" * 100000)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert reader.at_eof() and took < 5  # handshake_timeout_s is 1 s, counted from the connection
        writer.close()

    asyncio.run(main())


def test_a_request_line_trickling_in_on_a_kept_alive_connection_is_cut_off_at_the_deadline(capped: Server) -> None:
    async def main() -> None:
        port = capped.http_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_http_get(port))
        assert (await asyncio.wait_for(reader.readline(), T)).split()[1] == b"404"
        while (await asyncio.wait_for(reader.readline(), T)) != b"\r\n":  # the rest of its head
            pass
        # The connection is kept alive; the next request line comes a byte at a time, never a whole line.
        answer, took = await _trickle_until_closed(reader, writer, _http_get(port))
        assert b"HTTP/1.1 408 " in answer, answer
        assert reader.at_eof() and took < 5  # 1 s from the first byte of that request
        writer.close()

    asyncio.run(main())


FD_LIMIT = 128  # file descriptors the server process may have: enough to start, soon used up by clients

LOW_FD_LAUNCHER = [
    sys.executable,
    "-c",
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
    "runpy.run_module('contactcentre.cli', run_name='__main__', alter_sys=True)",
]


def _stderr_so_far(server: Server, wait_s: float = 0.0) -> str:
    """What the server has written to stderr up to now (waiting at most ``wait_s`` for more)."""
    assert server.proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(server.proc.stderr, selectors.EVENT_READ)
        while sel.select(timeout=wait_s):
            chunk = os.read(server.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            server.stderr.append(chunk)
            wait_s = 0.0
    return b"".join(server.stderr).decode(errors="replace")


def test_out_of_file_descriptors_the_server_backs_off_quietly_and_serves_again(tmp_path: Path) -> None:
    config = server_config(tmp_path, 9)
    limits = "\n[server.limits]\nmax_connections_per_address = 100000\nhandshake_timeout_s = 300\n"
    config.write_text(config.read_text(encoding="utf-8") + limits, encoding="utf-8")
    server = start_server(config, tmp_path / "s.sqlite", launcher=LOW_FD_LAUNCHER)
    clients: list[socket.socket] = []
    try:
        # Idle sockets (no handshake) until the server has no descriptor left to accept with.
        err = ""
        for _ in range(3 * FD_LIMIT):
            try:
                clients.append(socket.create_connection(("127.0.0.1", server.ws_port), timeout=2))
            except OSError:  # the listen backlog is full: the server stopped accepting, as it must when out
                break  # of descriptors (on a loaded machine before its warning is read here); wait for it below
            if "out of file descriptors" in (err := _stderr_so_far(server)) or "out of system resource" in err:
                break
        deadline = time.monotonic() + T
        while "out of file descriptors" not in err and "out of system resource" not in err:
            assert time.monotonic() < deadline, err[-2000:]
            err = _stderr_so_far(server, wait_s=0.5)
        for c in clients:
            c.close()

        async def chat_again() -> dict[str, object]:
            async with connect(server.ws("/chat"), proxy=None, open_timeout=T) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                return json.loads(await asyncio.wait_for(ws.recv(), T))

        assert asyncio.run(chat_again()) == {"type": "pong"}  # accepting again once sockets closed
    finally:
        for c in clients:
            c.close()
        code, err = server.stop()
    assert code == 0
    assert err.count("out of file descriptors") == 1, err[-3000:]  # one line, not one per failed accept
    assert "Traceback" not in err and "out of system resource" not in err


def test_one_address_gets_at_most_its_smtp_sessions_and_a_421(capped: Server) -> None:
    async def main() -> None:
        port = capped.smtp_port
        held = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await asyncio.wait_for(reader.readline(), T)).startswith(b"220 ")
            held.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader)
        assert answer.startswith(b"421 ") and b"too many connections" in answer, answer
        writer.close()
        _, w = held.pop()
        w.write(b"QUIT\r\n")  # a session that ends gives its place back
        await w.drain()
        w.close()
        for _ in range(100):  # the server sees the end a moment later: poll, with a bound
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            greeting = await asyncio.wait_for(reader.readline(), T)
            writer.close()
            if not greeting.startswith(b"421 "):
                break
        assert greeting.startswith(b"220 ")
        for _, w in held:
            w.close()

    asyncio.run(main())


def test_the_benchmarks_servers_lift_the_caps_for_the_load_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load generator is one address standing for thousands of people (docs/loadgen.md)."""
    from contactcentre.config import load_config
    from tests.server_proc import REPO

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import live_latency
    import sip_calls

    for config in (live_latency.write_config(tmp_path, 2, 3), sip_calls.write_config(tmp_path, 10)):
        limits = load_config(config).server.limits
        assert limits.max_connections_per_address >= 10_000 and limits.new_chats_burst >= 10_000
