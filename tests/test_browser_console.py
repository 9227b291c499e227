"""In Chromium: the agent console (/agent, docs/web.md "Console") against a real server. An agent logs in,
becomes available, takes a chat from the customers' widget, answers it, ends it and wraps it up with a code
from the controlled list; the customer's script-injection attempt shows as text in the console."""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import T_MS, LiveServer, login, open_chat, running_live_server, screenshot, watch

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def _stored(live: LiveServer, sql: str, *args: Any, want: Any = None) -> Any:
    """One value from the server's store, polled (with a deadline) until the group commit has written it (and,
    with ``want``, until it is that value)."""
    deadline = time.monotonic() + T_MS / 1000
    while True:
        with sqlite3.connect(f"file:{live.database}?mode=ro", uri=True) as db:
            row = db.execute(sql, args).fetchone()
        if row is not None and row[0] is not None and (want is None or row[0] == want):
            return row[0]
        assert time.monotonic() < deadline, f"not in the store{f' as {want!r}' if want else ''}: {sql} {args}"
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
    # why the router chose this agent, as a sentence (not "longest_idle, support>=1")
    expect(offer.locator(".offer-why")).to_have_text(
        re.compile(r"^Why you: you had waited longest for work; it needs \w+ at level \d+ or above\.$")
    )
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
    # the case's first-response deadline with its date (it may be days away) in the centre's zone
    due = re.compile(r"Invoice <b>42</b> is wrong · new · due \d{4}-\d\d-\d\d \d\d:\d\d \w+$")
    expect(agent.locator("#pop-cases li").first).to_have_text(due, timeout=T_MS)
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
    # e-mail has no wrap-up by default: the outcome is chosen with End, which closes the contact at once (and
    # the tab goes); the disposition moves the case as [dispositions.case_status] says (resolved: solved)
    contact_id = pane.get_attribute("data-contact-id")
    pane.locator("select.end-disposition").select_option("resolved")
    pane.locator("button.end").click()
    expect(agent.locator(".pane")).to_have_count(0, timeout=T_MS)
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
    case_status = "select c.status from cases c join interactions i on i.case_id = c.id where i.id = ?"
    assert _stored(live_server, case_status, contact_id, want="solved") == "solved"


def _short_transcripts(text: str) -> str:
    # Two messages per transcript page, bodies cut at 1,000 characters: the console's buttons show at once.
    for old, new in (("body_chars = 65536", "body_chars = 1000"), ("messages = 50 ", "messages = 2 ")):
        assert text.count(old) == 1, f"contactcentre/data/default.toml: expected the line with {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def short_transcripts_server(tmp_path: Path) -> Iterator[LiveServer]:
    with running_live_server(tmp_path, edit=_short_transcripts) as live:
        yield live


def test_a_long_mail_shows_cut_with_its_full_text_and_older_messages_on_request(
    short_transcripts_server: LiveServer, new_page: Any
) -> None:
    live = short_transcripts_server
    agent = new_page()
    login(agent, live, "grace")
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
    msg = EmailMessage()
    msg["From"] = "marieke@example.org"
    msg["To"] = "support@centre.example"
    msg["Subject"] = "The log you asked for"
    msg.set_content("Here it is:\n" + "0123456789" * 300 + "\nEND OF THE LOG\n")
    with smtplib.SMTP("127.0.0.1", live.server.smtp_port, timeout=T_MS / 1000) as smtp:
        smtp.send_message(msg)
    agent.locator("#offers .offer button.accept").click(timeout=T_MS)

    pane = agent.locator(".pane[data-channel='email']")
    line = pane.locator(".transcript .from-customer")
    expect(line.locator(".text")).to_contain_text("Here it is:", timeout=T_MS)
    expect(line.locator(".text")).not_to_contain_text("END OF THE LOG")
    line.locator("button.full-text").click()
    expect(line.locator(".text")).to_contain_text("END OF THE LOG", timeout=T_MS)
    expect(line.locator("button.full-text")).to_have_count(0)

    box = pane.locator("textarea.compose-text")
    box.fill("Thanks, we are looking at it.")
    box.press("Control+Enter")
    expect(box).to_have_value("", timeout=T_MS)
    # After a reload the transcript is the newest two messages (the centre's acknowledgement and the reply),
    # the mail one click away.
    agent.reload()
    pane = agent.locator(".pane[data-channel='email']")
    expect(pane.locator(".transcript .text").last).to_have_text("Thanks, we are looking at it.", timeout=T_MS)
    expect(pane.locator(".transcript .from-customer")).to_have_count(0)
    pane.locator("button.older-messages").click()
    expect(pane.locator(".transcript .from-customer .text")).to_contain_text("Here it is:", timeout=T_MS)
    expect(pane.locator("button.older-messages")).to_have_count(0)


def test_two_chats_at_once_in_tabs(live_server: LiveServer, new_page: Any) -> None:
    agent = new_page()
    login(agent, live_server, "ada")
    expect(agent.locator("#state")).to_have_text("Away — not ready", timeout=T_MS)
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
    expect(agent.locator("#state")).to_have_text("Available")
    # the buttons are actions, not the state: Go available is not green like the badge, and has nothing to do now
    expect(agent.locator("#go-available")).to_be_disabled()
    colours = agent.evaluate(
        "[getComputedStyle(document.getElementById('state')).backgroundColor,"
        " getComputedStyle(document.getElementById('go-available')).backgroundColor]"
    )
    assert colours[0] != colours[1], colours

    first, second = new_page(), new_page()
    open_chat(first, live_server, name="Cleo One", topic="First", email="cleo@example.com", text="first chat")
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    # no tab open yet: the side panel shows the ringing offer's customer, headed as the offer
    expect(agent.locator("#pop-heading")).to_have_text("Offered chat: not yet accepted")
    expect(agent.locator("#pop-name")).to_have_text("Cleo One", timeout=T_MS)
    agent.keyboard.press("a")
    expect(agent.locator(".tab")).to_have_count(1, timeout=T_MS)
    expect(agent.locator("#offers .offer")).to_have_count(0, timeout=T_MS)
    expect(agent.locator("#pop-heading")).to_have_text("Customer")
    open_chat(second, live_server, name="Dora Two", topic="Second", email="dora@example.com", text="second chat")
    # busy with one chat and capacity for more: the second is offered too; R would reject it, A takes it
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    # the side panel stays with the chat shown (tab 1) while the second rings: it never describes someone else
    expect(agent.locator("#pop-heading")).to_have_text("Customer")
    expect(agent.locator("#pop-name")).to_have_text("Cleo One")
    # the router says "reserved" (an offer rings); the agent reads what they are doing (it said "Reserved")
    expect(agent.locator("#state")).to_have_attribute("data-state", "reserved")
    expect(agent.locator("#state")).to_have_text("Busy — 1 chat · offer ringing")
    agent.locator("#offers .offer button.accept").click()
    expect(agent.locator(".tab")).to_have_count(2, timeout=T_MS)
    expect(agent.locator("#state")).to_have_text("Busy — 2 chats", timeout=T_MS)
    expect(agent.locator(".tab .tab-key")).to_have_text(["1", "2"])

    # Only the selected tab's conversation shows, with its one message box: the chat just accepted, and the
    # side panel follows it. (Both were shown stacked, tab 1 still marked selected and its customer beside.)
    panes = agent.locator(".pane")
    expect(agent.locator(".pane:visible")).to_have_count(1, timeout=T_MS)
    expect(agent.locator("textarea.compose-text:visible")).to_have_count(1)
    expect(panes.nth(0)).to_be_hidden()
    expect(panes.nth(1)).to_be_visible()
    expect(agent.locator(".tab").nth(1)).to_have_attribute("aria-selected", "true")
    expect(agent.locator(".tab").nth(0)).to_have_attribute("aria-selected", "false")
    expect(agent.locator("#pop-name")).to_have_text("Dora Two", timeout=T_MS)
    agent.keyboard.press("1")
    expect(agent.locator(".pane:visible")).to_have_count(1)
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


def test_own_queues_and_the_tab_heading_transcript_and_offer_card_naming_the_customer(
    live_server: LiveServer, new_page: Any
) -> None:
    # The tab and the heading said "chat chat-0897…", the transcript "customer": an agent with two chats could
    # not tell them apart. Now the customer's name and the channel, and the offer card says who and how long.
    agent = new_page()
    login(agent, live_server, "ada")
    # the agent's own queues (ada serves support and technical): how many wait and the longest wait
    support = agent.locator("#my-queues li[data-queue='support']")
    expect(agent.locator("#my-queues li")).to_have_count(2, timeout=T_MS)
    expect(support).to_have_text("support none waiting")
    customer = new_page()
    open_chat(customer, live_server, name="Cleo Customer", topic="Router", text="It blinks red")
    expect(support).to_have_text(re.compile(r"^support 1 waiting · longest \d+ s$"), timeout=T_MS)
    agent.click("#go-available")

    offer = agent.locator("#offers .offer")
    expect(offer.locator(".offer-customer")).to_have_text("Cleo Customer", timeout=T_MS)
    expect(offer.locator(".offer-channel")).to_have_text("chat")
    expect(offer.locator(".offer-waited")).to_have_text(re.compile(r"^waited (\d+ s|\d+:\d\d)$"))
    expect(support).to_have_text("support none waiting", timeout=T_MS)  # offered: no longer waiting
    offer.locator("button.accept").click()

    tab = agent.locator(".tab")
    expect(tab.locator(".tab-label")).to_have_text("Cleo Customer · chat", timeout=T_MS)
    contact_id = tab.get_attribute("data-contact-id")
    assert contact_id and contact_id not in tab.inner_text()
    expect(tab).to_have_attribute("title", contact_id)  # the id is still there for colleagues, on hover
    pane = agent.locator(".pane")
    expect(pane.locator(".pane-title")).to_have_text(re.compile(r"^Cleo Customer · chat"))
    expect(pane.locator(".transcript .from-customer .who").first).to_have_text("Cleo Customer", timeout=T_MS)
    customer.fill("#text", "Still there?")
    customer.keyboard.press("Enter")
    line = pane.locator(".transcript .from-customer").last
    expect(line.locator(".text")).to_have_text("Still there?", timeout=T_MS)
    expect(line.locator(".who")).to_have_text("Cleo Customer")


def test_the_disposition_moves_the_case_and_the_next_screen_pop_shows_it(
    live_server: LiveServer, new_page: Any
) -> None:
    # A case stayed "new" after its chat was wrapped up: the configuration's [dispositions.case_status] says
    # what each code does (follow_up: pending), and the customer's next contact shows the case so.
    agent = new_page()
    login(agent, live_server, "ada")
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
    customer = new_page()
    open_chat(customer, live_server, name="Cleo Customer", topic="Refund", text="Where is my refund?")
    agent.locator("#offers .offer button.accept").click()
    pane = agent.locator(".pane")
    expect(agent.locator("#pop-cases li")).to_have_text([re.compile(r"Refund · new$")], timeout=T_MS)
    contact_id = pane.get_attribute("data-contact-id")
    case_status = "select c.status from cases c join interactions i on i.case_id = c.id where i.id = ?"
    assert _stored(live_server, case_status, contact_id) == "new"

    pane.locator("button.end").click()
    wrap = pane.locator("form.wrapup")
    expect(wrap).to_be_visible(timeout=T_MS)
    wrap.locator("select.disposition").select_option("follow_up")
    wrap.locator("button.wrap-done").click()
    expect(agent.locator(".pane")).to_have_count(0, timeout=T_MS)
    assert _stored(live_server, case_status, contact_id, want="pending") == "pending"

    again = new_page()
    open_chat(again, live_server, name="Cleo Customer", topic="Refund again", text="Any news?")
    expect(agent.locator("#offers .offer")).to_have_count(1, timeout=T_MS)
    expect(agent.locator("#pop-cases")).to_contain_text("Refund · pending", timeout=T_MS)


def test_the_state_buttons_wait_until_the_server_has_logged_the_console_in(
    live_server: LiveServer, new_page: Any
) -> None:
    # A click on Available before the server's welcome went nowhere (and made a browser test flaky): the
    # buttons are disabled until the welcome arrives. The server's frames are held back here to show it.
    agent = new_page()
    held: list[Any] = []
    route: dict[str, Any] = {}

    def hold_frames(ws: Any) -> None:
        server = ws.connect_to_server()
        route["ws"] = ws

        def from_server(message: Any) -> None:
            if route.get("released"):
                ws.send(message)
            else:
                held.append(message)

        server.on_message(from_server)

    agent.route_web_socket("**/agent", hold_frames)
    login(agent, live_server, "grace")
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)  # the socket is open, no welcome yet
    expect(agent.locator("#go-available")).to_be_disabled()
    expect(agent.locator("#go-away")).to_be_disabled()

    route["released"] = True
    for message in held:
        route["ws"].send(message)
    expect(agent.locator("#go-available")).to_be_enabled(timeout=T_MS)
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)
