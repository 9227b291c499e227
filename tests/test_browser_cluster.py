"""One centre in four processes, driven through the browser as an operator would try it (docs/scaling.md): two
routers and two edges (``contactcentre serve --role router|edge``) on a fresh PostgreSQL database and a
redis-server of the test's own; the chat widget (``/chat``) on edge 1 and the agent console (``/agent``) on
edge 2; the active router killed mid-conversation (the chat goes on), then the customer's edge.

What the widget can and cannot do when its edge dies: it keeps its resume token in ``sessionStorage``, which
belongs to one tab *and one origin* (scheme, host, port). Two edges on one machine are two origins
(``127.0.0.1:P1`` and ``127.0.0.1:P2``), so the widget on a dead edge only retries that edge, and the widget
opened on the other edge knows no chat (the pre-chat form). An operator puts one address in front of the edges
(a reverse proxy or a load balancer: the same origin whichever edge answers); this test cannot run one, so it
plays what the widget would find behind it: the token and last line id, carried into edge 2's origin, and a
reload — the widget then resumes on edge 2 by itself."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

import contactcentre.events as E
from tests.browser import T_MS, LiveServer, _add_users, login, open_chat
from tests.cluster_support import RouterProc, assert_no_double_offers, logged_events
from tests.server_proc import Server, Sink, server_config, start_server

STORE_KEY = "contactcentre.chat"  # the widget's sessionStorage key (contactcentre/edge/web/static/chat.js)


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def _until(what: Callable[[], Any], why: str, timeout_s: float = T_MS / 1000) -> None:
    """Poll another process's printed state with a deadline (not a browser wait: nothing to ``expect`` on)."""
    end = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < end, f"timed out waiting for {why}"
        time.sleep(0.02)  # the poll's pace, bounded by the deadline


def test_the_widget_and_the_console_on_two_edges_survive_the_router_and_the_customers_edge(
    tmp_path: Path, sink: Sink, pg_url: str, redis_url: str, new_page: Callable[[], Any]
) -> None:
    config = server_config(tmp_path, sink.port)
    passwords, tokens = _add_users(pg_url)  # type: ignore[arg-type]  (open_store takes a URL as well)
    prefix = f"br{uuid.uuid4().hex[:6]}"
    routers: list[RouterProc] = []
    edges: list[Server] = []
    try:
        common = {"config": config, "database_url": pg_url, "redis_url": redis_url, "prefix": prefix, "logs": tmp_path}
        routers.append(RouterProc("r1", ttl_ms=1000, **common))
        _until(lambda: routers[0].state == "active", "r1 active")
        routers.append(RouterProc("r2", ttl_ms=1000, **common))
        _until(lambda: routers[1].state == "standby", "r2 standby")
        node = ["--redis-url", redis_url, "--redis-prefix", prefix]
        for name in ("e1", "e2"):
            edges.append(start_server(config, pg_url, extra=["--role", "edge", "--node-id", name, *node], voice=False))
        e1, e2 = (LiveServer(e, sink, Path(pg_url), config, passwords, tokens) for e in edges)
        _conversation(e1, e2, routers, new_page)
    finally:
        for server in edges:
            if server.proc.poll() is None:
                code, err = server.stop()
                assert code == 0 and "Traceback" not in err, err
        for r in routers:
            r.stop()
    logged = logged_events(pg_url)
    texts = [ev.body for ev in logged if isinstance(ev, E.MessageReceived | E.MessageSent) and ev.channel == "chat"]
    for text in ("my router blinks red", "Let me look.", "still here after the router died", "Noted.", "and now?"):
        assert texts.count(text) == 1, (text, texts)
    assert sum(isinstance(ev, E.ContactArrived) and ev.channel == "chat" for ev in logged) == 1
    assert_no_double_offers(logged)


def _conversation(e1: LiveServer, e2: LiveServer, routers: list[RouterProc], new_page: Callable[[], Any]) -> None:
    agent = new_page()
    login(agent, e2, "ada")  # the console on edge 2
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)

    customer = new_page()
    open_chat(customer, e1, text="my router blinks red")  # the widget on edge 1
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    agent.keyboard.press("a")
    pane = agent.locator(".pane[data-channel='chat']")
    heard = pane.locator(".transcript .from-customer .text")
    expect(heard.last).to_have_text("my router blinks red", timeout=T_MS)
    _agent_says(pane, "Let me look.")
    said = customer.locator("#log li.agent .body")
    expect(said.last).to_have_text("Let me look.", timeout=T_MS)

    # The active router dies mid-conversation: the widget's next line waits for the standby's takeover (the
    # edge acknowledges only what a router committed), and both ways go on.
    routers[0].kill9()
    _customer_says(customer, "still here after the router died")
    expect(heard.last).to_have_text("still here after the router died", timeout=T_MS)
    assert routers[1].state == "active"
    _agent_says(pane, "Noted.")
    expect(said.last).to_have_text("Noted.", timeout=T_MS)
    carried = customer.evaluate(f"sessionStorage.getItem({STORE_KEY!r})")
    assert carried and "token" in carried

    # The customer's edge dies. The widget says so and retries that edge: its page and its WebSocket belong
    # to edge 1's address, and nothing tells it of edge 2.
    e1.server.kill9()
    expect(customer.locator("#status")).to_have_text("Connection lost; reconnecting…", timeout=T_MS)

    # The widget opened on edge 2 (another origin) has no token: a fresh pre-chat form, not the chat.
    elsewhere = new_page()
    elsewhere.goto(e2.url("/chat"))
    expect(elsewhere.locator("#prechat")).to_be_visible(timeout=T_MS)
    assert elsewhere.evaluate(f"sessionStorage.getItem({STORE_KEY!r})") is None

    # Behind one address for both edges the reloaded widget would find its token: put it there and reload.
    # It resumes on edge 2 with the whole conversation, each line once, and the chat goes on.
    elsewhere.evaluate(f"sessionStorage.setItem({STORE_KEY!r}, {carried!r})")
    elsewhere.reload()
    expect(elsewhere.locator("#status")).to_have_text("Chatting with Ada Lovelace", timeout=T_MS)
    lines = elsewhere.locator("#log li .body")
    expect(lines).to_have_text(
        ["my router blinks red", "Let me look.", "still here after the router died", "Noted."], timeout=T_MS
    )
    _customer_says(elsewhere, "and now?")
    expect(heard.last).to_have_text("and now?", timeout=T_MS)
    _agent_says(pane, "Still here.")
    expect(elsewhere.locator("#log li.agent .body").last).to_have_text("Still here.", timeout=T_MS)
    expect(heard).to_have_count(3, timeout=T_MS)

    pane.locator("button.end").click()
    expect(elsewhere.locator("#log li.notice").last).to_have_text("The agent ended the chat.", timeout=T_MS)


def _customer_says(page: Any, text: str) -> None:
    """Send a line from the widget and wait for its acknowledgement (the line loses its 'sending' mark)."""
    before = page.locator("#log li.customer").count()
    page.fill("#text", text)
    page.click("#compose button[type=submit]")
    mine = page.locator("#log li.customer")
    expect(mine).to_have_count(before + 1, timeout=T_MS)
    expect(mine.last).not_to_have_class(re.compile(r"\bsending\b"), timeout=T_MS)
    expect(mine.last.locator(".body")).to_have_text(text, timeout=T_MS)


def _agent_says(pane: Any, text: str) -> None:
    box = pane.locator("textarea.compose-text")
    box.fill(text)
    box.press("Enter")
    expect(pane.locator(".transcript .from-agent .text").last).to_have_text(text, timeout=T_MS)


def test_the_console_hears_that_the_customers_edge_died(
    tmp_path: Path, sink: Sink, pg_url: str, redis_url: str, new_page: Callable[[], Any]
) -> None:
    config = server_config(tmp_path, sink.port)
    passwords, tokens = _add_users(pg_url)  # type: ignore[arg-type]
    prefix = f"br{uuid.uuid4().hex[:6]}"
    router = RouterProc(
        "r1", config=config, database_url=pg_url, redis_url=redis_url, prefix=prefix, ttl_ms=1000, logs=tmp_path
    )
    edges: list[Server] = []
    try:
        _until(lambda: router.state == "active", "r1 active")
        node = ["--redis-url", redis_url, "--redis-prefix", prefix]
        for name in ("e1", "e2"):
            edges.append(start_server(config, pg_url, extra=["--role", "edge", "--node-id", name, *node], voice=False))
        e1, e2 = (LiveServer(e, sink, Path(pg_url), config, passwords, tokens) for e in edges)
        agent = new_page()
        login(agent, e2, "ada")
        expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)
        agent.click("#go-available")
        expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
        customer = new_page()
        open_chat(customer, e1, text="hello")
        expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
        agent.keyboard.press("a")
        pane = agent.locator(".pane[data-channel='chat']")
        expect(pane.locator(".transcript .from-customer .text").last).to_have_text("hello", timeout=T_MS)
        e1.server.kill9()
        # An edge's heartbeat lapses after 3 s (docs/scaling.md): well within this test's deadline.
        expect(pane.locator(".pane-presence")).to_have_text(re.compile("customer disconnected"), timeout=10_000)
    finally:
        for server in edges:
            if server.proc.poll() is None:
                server.stop()
        router.stop()
