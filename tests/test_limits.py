"""Per-client caps (``[server.limits]``, docs/security.md) on a real ``contactcentre serve``: one address cannot
take every socket, hold a connection open by trickling headers, or fill a queue with silent chats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server_proc import T, Server, server_config, start_server


def limited_server(tmp_path: Path, **limits: object) -> Server:
    """config/default.toml with ``[server.limits]`` set to ``limits``."""
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
