"""One centre in four processes, tried as an operator would (docs/scaling.md): two routers and two edges
(``contactcentre serve --role router|edge``) on a fresh PostgreSQL database and a redis-server of the test's
own; the chat widget's protocol on one edge and an agent console on the other; the active router killed
mid-conversation, then the customer's edge: the chat goes on, every line once."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

import contactcentre.events as E
from tests.cluster_support import RouterProc, assert_no_double_offers, logged_events
from tests.conftest import fresh_postgres_database
from tests.server_proc import Server, Sink, T, add_users, agent_console, next_frame, server_config, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink() -> Any:
    s = Sink()
    yield s
    s.close()


def test_a_chat_goes_on_when_the_active_router_and_then_the_customers_edge_die(
    tmp_path: Path, sink: Sink, postgres_admin: Any, redis_url: str
) -> None:
    url, drop = fresh_postgres_database(postgres_admin)
    config = server_config(tmp_path, sink.port)
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    node = ["--redis-url", redis_url, "--redis-prefix", prefix]
    routers: list[RouterProc] = []
    edges: list[Server] = []
    try:
        tokens = add_users(url)  # type: ignore[arg-type]
        common = {"config": config, "database_url": url, "redis_url": redis_url, "prefix": prefix, "logs": tmp_path}
        routers.append(RouterProc("r1", ttl_ms=1000, **common))
        _wait(lambda: routers[0].state == "active", "r1 active")
        routers.append(RouterProc("r2", ttl_ms=1000, **common))
        _wait(lambda: routers[1].state == "standby", "r2 standby")
        for name in ("e1", "e2"):
            edges.append(start_server(config, url, extra=["--role", "edge", "--node-id", name, *node], voice=False))
        asyncio.run(_conversation(edges, routers, tokens))
    finally:
        for server in edges:
            if server.proc.poll() is None:
                server.stop()
        for r in routers:
            r.stop()
    logged = logged_events(url)
    drop()
    lines = [ev for ev in logged if isinstance(ev, E.MessageReceived | E.MessageSent) and ev.channel == "chat"]
    texts = [ev.body for ev in lines]
    for text in ("my router blinks red", "Let me look.", "still here after the router died", "Noted.", "and now?"):
        assert texts.count(text) == 1, (text, texts)
    assert sum(isinstance(ev, E.ContactArrived) and ev.channel == "chat" for ev in logged) == 1
    assert_no_double_offers(logged)


async def _conversation(edges: list[Server], routers: list[RouterProc], tokens: dict[str, str]) -> None:
    e1, e2 = edges
    agent = await agent_console(e2, tokens["ada"])  # the console on e2
    await agent.send(json.dumps({"type": "state", "state": "available"}))
    await next_frame(agent, "state", state="available")

    customer = await connect(e1.ws("/chat"), proxy=None)  # the widget on e1
    await customer.send(json.dumps({"type": "hello", "name": "Ann", "email": "ann@example.com", "topic": "Router"}))
    queued = await next_frame(customer, "queued")
    chat_token = queued["token"]
    await customer.send(json.dumps({"type": "message", "text": "my router blinks red", "client_id": "c1"}))
    await next_frame(customer, "ack", client_id="c1")
    offer = await next_frame(agent, "offer", channel="chat")
    contact_id = offer["contact_id"]
    await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
    await next_frame(customer, "agent_joined")
    await agent.send(json.dumps({"type": "message", "contact_id": contact_id, "text": "Let me look."}))
    assert (await next_frame(customer, "message", **{"from": "agent"}))["text"] == "Let me look."

    # The active router dies mid-conversation; the standby takes over and the chat goes on.
    routers[0].kill9()
    await asyncio.get_running_loop().run_in_executor(None, _wait, lambda: routers[1].state == "active", "r2 active")
    await customer.send(json.dumps({"type": "message", "text": "still here after the router died", "client_id": "c2"}))
    await next_frame(customer, "ack", client_id="c2")
    heard = await next_frame(agent, "message", contact_id=contact_id)
    assert heard["text"] == "still here after the router died"
    await agent.send(json.dumps({"type": "message", "contact_id": contact_id, "text": "Noted."}))
    assert (await next_frame(customer, "message", **{"from": "agent"}))["text"] == "Noted."

    # The customer's edge dies; the widget resumes on the other edge with its token.
    e1.kill9()
    resumed = await connect(e2.ws("/chat"), proxy=None)
    await resumed.send(json.dumps({"type": "resume", "token": chat_token}))
    frame = await next_frame(resumed, "resumed")
    assert frame["state"] == "with_agent", frame
    await resumed.send(json.dumps({"type": "message", "text": "and now?", "client_id": "c3"}))
    await next_frame(resumed, "ack", client_id="c3")
    heard = await next_frame(agent, "message", contact_id=contact_id)
    assert heard["text"] == "and now?"
    await agent.send(json.dumps({"type": "end", "contact_id": contact_id}))
    await next_frame(resumed, "closed")
    await resumed.close()
    await agent.close()


def _wait(what: Any, why: str) -> None:
    import time

    end = time.monotonic() + T
    while not what():
        assert time.monotonic() < end, f"timed out waiting for {why}"
        time.sleep(0.02)  # polling another process's printed state, bounded by the deadline
