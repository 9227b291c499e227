"""In Chromium: the customers' chat widget (/chat, docs/chat-protocol.md "The widget") as a newcomer meets it:
topic areas in the customers' words, and a chat that starts without a topic (the protocol's topic is optional)."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser import T_MS, LiveServer, watch


def test_the_widget_offers_customer_labels_and_starts_without_a_topic(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    page.goto(live_server.url("/chat"))
    # contactcentre/data/default.toml: the queues' labels, or their names; never the staff's description of a queue
    options = page.locator("#queue option")
    expect(options).to_have_text(["General questions", "Billing", "Technical", "Orders and new subscriptions"])
    assert "First-line support" not in page.content()
    expect(page.locator("label[for=topic]")).to_have_text("What is it about? (optional)")

    page.fill("#name", "Nina Newcomer")
    page.click("#prechat button[type=submit]")  # no topic, no e-mail
    expect(page.locator("#prechat-error")).to_be_hidden()
    expect(page.locator("#status")).to_have_text(re.compile(r"Waiting for an agent|Nobody is online"), timeout=T_MS)
    page.fill("#text", "My invoice is wrong")
    page.click("#compose button[type=submit]")
    expect(page.locator("#log li.customer:not(.sending)").last).to_be_visible(timeout=T_MS)
    assert watch(page).errors == []


def test_a_line_sent_after_a_reload_is_not_taken_for_an_earlier_one(live_server: LiveServer, new_page: Any) -> None:
    """A reloaded widget resumes its chat (the token is in sessionStorage) and numbers its lines afresh: their
    ``client_id``s must still be new to the chat, which keeps the ids it acknowledged to recognise a resent
    line (docs/chat-protocol.md). Were they "c-1", "c-2" again, the first line after the reload would be
    acknowledged as the chat's first line — never stored, never shown to the agent, and gone from the page."""
    page = new_page()
    page.goto(live_server.url("/chat"))
    page.fill("#name", "Rita Reload")
    page.click("#prechat button[type=submit]")
    expect(page.locator("#status")).to_have_text(re.compile(r"Waiting for an agent|Nobody is online"), timeout=T_MS)
    mine = page.locator("#log li.customer")
    page.fill("#text", "before the reload")
    page.click("#compose button[type=submit]")
    expect(page.locator("#log li.customer:not(.sending)")).to_have_count(1, timeout=T_MS)

    page.reload()
    expect(mine.locator(".body")).to_have_text(["before the reload"], timeout=T_MS)  # resumed: the transcript
    page.fill("#text", "after the reload")
    page.click("#compose button[type=submit]")
    expect(page.locator("#log li.customer:not(.sending) .body")).to_have_text(
        ["before the reload", "after the reload"], timeout=T_MS
    )
    page.reload()  # what the server stored, in order, each once
    expect(mine.locator(".body")).to_have_text(["before the reload", "after the reload"], timeout=T_MS)
    assert watch(page).errors == []
