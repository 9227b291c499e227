"""In Chromium: logging in as an agent and as a supervisor, roles, logging out, and the customers' chat widget
showing a stored script-injection attempt as text (docs/web.md, docs/chat-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from playwright.sync_api import expect
from websockets.asyncio.client import connect

from tests.browser import T_MS, LiveServer, login, logout, open_chat, start_async, watch

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def test_an_agent_logs_in_is_refused_the_dashboard_and_logs_out(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    login(page, live_server, "ada")
    expect(page).to_have_url(live_server.url("/agent"))
    expect(page.locator("body")).to_contain_text("ada")

    response = page.goto(live_server.url("/"))
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text(re.compile("forbidden|not allowed", re.I))

    page.goto(live_server.url("/agent"))
    logout(page)
    # the session is gone: the console sends the browser back to the login page
    page.goto(live_server.url("/agent"))
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)agent$"))
    assert not [c for c in page.context.cookies() if c["name"] == "cc_session"]


def test_a_supervisor_logs_in_to_the_dashboard(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    login(page, live_server, "boss")
    expect(page).to_have_url(live_server.url("/"))
    expect(page).to_have_title(re.compile("dashboard"))
    # the page's script runs under the strict CSP and reaches the live figures
    expect(page.locator("#status")).not_to_have_text(re.compile("need JavaScript"), timeout=T_MS)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "cc_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    logout(page)


def test_anonymous_visitors_are_sent_to_the_login_page(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    page.goto(live_server.url("/"))
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)$"))
    page.goto(live_server.url("/agent"))
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)agent$"))

    # a wrong password keeps the visitor on the login page with an error, and lets nobody in
    login(page, live_server, "boss", "not the password", next_path="/agent")
    expect(page.locator("#error")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))
    # the right one, on the form that came back, goes on to the page asked for
    page.fill("#username", "boss")
    page.fill("#password", live_server.passwords["boss"])
    page.click("#login button[type=submit]")
    expect(page).to_have_url(live_server.url("/agent"))


def test_a_script_in_a_chat_message_is_shown_as_text(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    open_chat(page, live_server, name="<b>Mallory</b>", text=XSS)
    line = page.locator("#log li.customer .body").last
    expect(line).to_have_text(XSS)
    assert line.inner_text() == XSS
    assert page.locator("#log img, #log script, #log b").count() == 0

    # the server stored it: a reloaded widget asks for the whole transcript and shows it again, as text
    page.reload()
    expect(page.locator("#log li.customer .body")).to_have_count(1)
    expect(page.locator("#log li.customer .body")).to_have_text(XSS)
    assert page.locator("#log img, #log script, #log b").count() == 0
    assert watch(page).dialogs == []


async def _agent_answers_with_markup(live: LiveServer, ready: threading.Event) -> dict[str, Any]:
    """Agent ada on the agent protocol (docs/protocol.md): takes the chat, answers with markup, ends it."""
    async with asyncio.timeout(T_MS / 1000 * 2), connect(live.server.ws("/agent"), proxy=None) as ws:

        async def frame(want: str, **match: Any) -> dict[str, Any]:
            while True:
                f = json.loads(await ws.recv())
                if f.get("type") == want and all(f.get(k) == v for k, v in match.items()):
                    return f

        await ws.send(json.dumps({"type": "login", "token": live.tokens["ada"]}))
        await frame("welcome")
        await ws.send(json.dumps({"type": "state", "state": "available"}))
        await frame("state", state="available")
        ready.set()
        offer = await frame("offer", channel="chat")
        await ws.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
        contact = offer["contact_id"]
        await ws.send(json.dumps({"type": "message", "contact_id": contact, "text": XSS}))
        heard = await frame("message", contact_id=contact)
        await ws.send(json.dumps({"type": "end", "contact_id": contact}))
        await frame("ack", contact_id=contact)
        return heard


def test_an_agents_answer_with_markup_is_shown_as_text_in_the_widget(live_server: LiveServer, new_page: Any) -> None:
    ready = threading.Event()
    agent = start_async(_agent_answers_with_markup(live_server, ready))
    assert ready.wait(T_MS / 1000), agent.exception(timeout=0) if agent.done() else "the agent did not log in"
    page = new_page()
    open_chat(page, live_server)
    expect(page.locator("#log li.notice").first).to_contain_text("joined the chat")
    expect(page.locator("#log li.agent .body")).to_have_text(XSS)
    assert page.locator("#log img, #log script").count() == 0
    page.fill("#text", f"thanks {XSS}")
    page.keyboard.press("Enter")  # the widget sends on Enter
    expect(page.locator("#log li.notice").last).to_have_text("The agent ended the chat.")
    heard = agent.result(timeout=T_MS / 1000)
    assert heard["text"] == f"thanks {XSS}"  # the customer's text reached the agent as typed, markup and all
    assert watch(page).dialogs == []


def test_the_page_watch_sees_dialogs_script_errors_and_csp_violations(live_server: LiveServer, new_page: Any) -> None:
    """The XSS tests above rely on these listeners: an alert that did fire would be seen."""
    page = new_page()
    page.goto(live_server.url("/login"))
    page.evaluate("alert('x')")
    assert watch(page).dialogs == ["alert: x"]
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "1";
                                 document.body.append(s); }""")
    with page.expect_event("pageerror"):
        page.evaluate("setTimeout(() => { throw new Error('boom'); })")
    assert len(watch(page).errors) == 2 and "boom" in watch(page).errors[1]
    watch(page).allow_errors = True  # else the fixture fails the test for them
