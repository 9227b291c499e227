"""In Chromium: the agent console (/agent, docs/web.md "Console") against a real server. An agent logs in,
becomes available, takes a chat from the customers' widget, answers it, ends it and wraps it up with a code
from the controlled list; the customer's script-injection attempt shows as text in the console."""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from email.message import EmailMessage
from typing import Any

from playwright.sync_api import expect

from tests.browser import T_MS, LiveServer, login, open_chat, screenshot, watch

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def _stored(live: LiveServer, sql: str, *args: Any) -> Any:
    """One value from the server's store, polled (with a deadline) until the group commit has written it."""
    deadline = time.monotonic() + T_MS / 1000
    while True:
        with sqlite3.connect(f"file:{live.database}?mode=ro", uri=True) as db:
            row = db.execute(sql, args).fetchone()
        if row is not None and row[0] is not None:
            return row[0]
        assert time.monotonic() < deadline, f"not in the store: {sql} {args}"
        time.sleep(0.05)  # a poll of another process's database, bounded by the deadline


def test_an_agent_takes_a_chat_from_the_widget_and_wraps_it_up(live_server: LiveServer, new_page: Any) -> None:
    agent = new_page()
    login(agent, live_server, "ada")
    expect(agent).to_have_url(live_server.url("/agent"))
    # the console's WebSocket logged in with the page's session: no token anywhere in the page
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)
    expect(agent.locator("#state")).to_have_attribute("data-state", "away")
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)

    customer = new_page()
    open_chat(customer, live_server, name="Cleo Customer", topic="My router blinks", text=XSS)

    offer = agent.locator("#offers .offer")
    expect(offer).to_have_count(1, timeout=T_MS)
    expect(offer.locator(".offer-channel")).to_have_text("chat")
    expect(offer.locator(".countdown")).to_have_text(re.compile(r"\d"))  # counting down to expires_ms
    expect(agent.locator("#state")).to_have_attribute("data-state", "reserved")
    agent.keyboard.press("a")  # the keyboard shortcut accepts the oldest offer
    expect(offer).to_have_count(0, timeout=T_MS)

    pane = agent.locator(".pane[data-channel='chat']")
    expect(pane).to_be_visible(timeout=T_MS)
    pane_id = pane.get_attribute("data-contact-id")
    expect(agent.locator("#state")).to_have_attribute("data-state", "busy", timeout=T_MS)
    line = pane.locator(".transcript .from-customer .text").last
    expect(line).to_have_text(XSS, timeout=T_MS)  # the customer's markup, shown as text
    assert pane.locator(".transcript img, .transcript script").count() == 0
    expect(agent.locator("#pop-name")).to_have_text("Cleo Customer", timeout=T_MS)  # the screen-pop

    # a canned response goes into the reply, the agent adds to it and sends with Enter
    pane.locator("select.canned").select_option("greeting")
    box = pane.locator("textarea.compose-text")
    expect(box).to_have_value(re.compile("^Hello, thank you"))
    box.press("End")
    box.type(" I'm Ada.")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(pane.locator(".transcript .from-agent .text").last).to_have_text(re.compile("I'm Ada\\.$"))
    expect(customer.locator("#log li.agent .body").last).to_have_text(re.compile("I'm Ada\\.$"), timeout=T_MS)

    customer.fill("#text", "Thanks, that helped")
    customer.keyboard.press("Enter")
    expect(pane.locator(".transcript .from-customer .text").last).to_have_text("Thanks, that helped", timeout=T_MS)
    agent.set_viewport_size({"width": 1280, "height": 800})
    screenshot(agent, "console")

    pane.locator("button.end").click()
    wrap = pane.locator("form.wrapup")
    expect(wrap).to_be_visible(timeout=T_MS)
    expect(agent.locator("#state")).to_have_attribute("data-state", "wrap_up", timeout=T_MS)
    expect(wrap.locator(".wrap-timer")).to_have_text(re.compile(r"\d"))
    expect(customer.locator("#log li.notice").last).to_have_text("The agent ended the chat.", timeout=T_MS)
    # only codes from the controlled list are offered
    codes = wrap.locator("select.disposition option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
    assert "resolved" in codes and "spam" in codes
    # a case note in wrap-up: stored for colleagues, shown as text, never sent to the customer
    pane.locator("textarea.note-text").fill("Wanted <b>a refund</b>; told them about invoice 42.")
    pane.locator("button.add-note").click()
    expect(pane.locator("ol.notes li").last).to_have_text("Wanted <b>a refund</b>; told them about invoice 42.")
    note = "select body from messages where channel = 'note' and interaction_id = ?"
    assert _stored(live_server, note, pane_id) == "Wanted <b>a refund</b>; told them about invoice 42."
    expect(customer.locator("#log")).not_to_contain_text("refund")
    wrap.locator("select.disposition").select_option("resolved")
    wrap.locator("button.wrap-done").click()
    expect(agent.locator(".pane")).to_have_count(0, timeout=T_MS)
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
    expect(agent.locator("#notice")).to_be_hidden()
    assert _stored(live_server, "select disposition from interactions where id = ?", pane_id) == "resolved"

    assert watch(agent).dialogs == [] and watch(customer).dialogs == []


def test_an_agent_reads_an_email_and_replies_with_a_canned_response(live_server: LiveServer, new_page: Any) -> None:
    agent = new_page()
    login(agent, live_server, "grace")
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)  # a click before that is dropped
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)

    msg = EmailMessage()
    msg["From"] = "Marieke Jansen <marieke@example.org>"
    msg["To"] = "support@centre.example"
    msg["Subject"] = "Invoice <b>42</b> is wrong"
    msg["Message-ID"] = "<inv-42@example.org>"
    msg.set_content("Hello,\n\nthe invoice counts the router twice.\n")
    with smtplib.SMTP("127.0.0.1", live_server.server.smtp_port, timeout=T_MS / 1000) as smtp:
        smtp.send_message(msg)

    offer = agent.locator("#offers .offer")
    expect(offer.locator(".offer-subject")).to_have_text("Invoice <b>42</b> is wrong", timeout=T_MS)
    expect(offer.locator(".offer-lines li")).to_have_text(["Hello,", "the invoice counts the router twice."])
    offer.locator("button.accept").click()

    pane = agent.locator(".pane[data-channel='email']")
    expect(pane.locator(".transcript .from-customer .subject")).to_have_text("Invoice <b>42</b> is wrong", timeout=T_MS)
    expect(pane.locator(".transcript .from-customer .text")).to_contain_text("counts the router twice")
    # only the canned responses for e-mail (and for both channels) are offered
    names = pane.locator("select.canned option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
    assert "email_received" in names and "closing" in names and "greeting" not in names
    pane.locator("select.canned").select_option("email_received")
    box = pane.locator("textarea.compose-text")
    box.press("End")
    box.type("the router is on the invoice once now.")
    box.press("Control+Enter")
    expect(box).to_have_value("", timeout=T_MS)
    reply = live_server.sink.wait_for(lambda m: "once now" in m.get_body().get_content())
    assert reply["To"].endswith("marieke@example.org>") or reply["To"] == "marieke@example.org"
    assert reply["In-Reply-To"] == "<inv-42@example.org>"
    # e-mail has no wrap-up by default: End closes the contact at once and the tab goes
    pane.locator("button.end").click()
    expect(agent.locator(".pane")).to_have_count(0, timeout=T_MS)
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)


def test_two_chats_at_once_in_tabs(live_server: LiveServer, new_page: Any) -> None:
    agent = new_page()
    login(agent, live_server, "ada")
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)  # a click before that is dropped
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)

    first, second = new_page(), new_page()
    open_chat(first, live_server, name="Cleo One", topic="First", email="cleo@example.com", text="first chat")
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    agent.keyboard.press("a")
    expect(agent.locator(".tab")).to_have_count(1, timeout=T_MS)
    expect(agent.locator("#offers .offer")).to_have_count(0, timeout=T_MS)
    open_chat(second, live_server, name="Dora Two", topic="Second", email="dora@example.com", text="second chat")
    # busy with one chat and capacity for more: the second is offered too; R would reject it, A takes it
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    expect(agent.locator("#pop-name")).to_have_text("Dora Two", timeout=T_MS)  # the ringing offer's customer
    agent.locator("#offers .offer button.accept").click()
    expect(agent.locator(".tab")).to_have_count(2, timeout=T_MS)
    expect(agent.locator(".tab .tab-key")).to_have_text(["1", "2"])

    panes = agent.locator(".pane")
    agent.keyboard.press("1")
    expect(panes.nth(0)).to_be_visible()
    expect(panes.nth(1)).to_be_hidden()
    expect(agent.locator("#pop-name")).to_have_text("Cleo One", timeout=T_MS)
    # a line on the hidden chat marks its tab; showing it clears the mark
    second.fill("#text", "are you there?")
    second.keyboard.press("Enter")
    expect(agent.locator(".tab").nth(1).locator(".tab-badge")).to_be_visible(timeout=T_MS)
    agent.keyboard.press("2")
    expect(panes.nth(1)).to_be_visible()
    expect(agent.locator(".tab").nth(1).locator(".tab-badge")).to_be_hidden()
    expect(panes.nth(1).locator(".transcript .from-customer .text").last).to_have_text("are you there?")
    box = panes.nth(1).locator("textarea.compose-text")
    box.fill("Yes, Dora.")
    box.press("Enter")
    expect(second.locator("#log li.agent .body").last).to_have_text("Yes, Dora.", timeout=T_MS)
    expect(first.locator("#log li.agent")).to_have_count(0)  # each customer hears only their own chat
