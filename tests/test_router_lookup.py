"""A store failure in the router's look-up of inputs older than its takeover is waited out: routing goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.exc import DBAPIError

import contactcentre.events as E
import contactcentre.server.router_node as rn
from tests.cluster_support import centre, until


def test_a_store_blip_in_the_backlog_lookup_does_not_end_routing(
    pg_url: str, redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = rn.applied_inputs

    def flaky(conn, ids):  # PostgreSQL fails this one statement (a restart, a lock timeout)
        calls["n"] += 1
        if calls["n"] == 1:
            raise DBAPIError("SELECT router_inputs", {}, Exception("server closed the connection"))
        return real(conn, ids)

    monkeypatch.setattr(rn, "applied_inputs", flaky)

    states: list[str] = []

    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            edge = await nodes.edge("e1")
            # Handed over while no router is active (a fail-over): older than the next takeover.
            assert edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a1")) is None
            await until(lambda: edge.log_position() == 1, "sent")
            await asyncio.sleep(0.05)
            r1 = nodes.router("r1")
            await until(lambda: calls["n"] >= 1, "looked up")
            await asyncio.sleep(0.5)
            states.append(r1.state)

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    failed = [r.getMessage() for r in caplog.records if "router-inputs failed" in r.getMessage()]
    assert not failed, "one failed look-up ended the active router's consume task (it gave up its lease)"
