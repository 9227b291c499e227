"""In Chromium: times on the agent console and the customers' chat widget are the centre's, with the zone
named (docs/web.md "Times"), whatever zone the browser is in. The centre (contactcentre/data/default.toml) keeps
Europe/Amsterdam; the agent's browser is in New York and the customer's in Tokyo."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from tests.browser import T_MS, LiveServer, login, open_chat

CENTRE = ZoneInfo("Europe/Amsterdam")


def _in_zone(page: Any, zone: str) -> None:
    """Put the page's browser in ``zone`` (Chromium's own emulation, as a laptop abroad would be)."""
    page.context.new_cdp_session(page).send("Emulation.setTimezoneOverride", {"timezoneId": zone})


def _centre_clocks(before: float, after: float) -> set[str]:
    """What a clock on the centre's wall could have read between two instants: ``14:05 CET``."""
    return {
        f"{datetime.fromtimestamp(t, CENTRE):%H:%M} {datetime.fromtimestamp(t, CENTRE).tzname()}"
        for t in (before, after)
    }


def test_the_console_and_the_widget_show_the_centres_time_and_name_its_zone(
    live_server: LiveServer, new_page: Any
) -> None:
    agent = new_page()
    _in_zone(agent, "America/New_York")
    login(agent, live_server, "ada")
    assert agent.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "America/New_York"
    expect(agent.locator("#conn")).to_have_text("connected", timeout=T_MS)
    agent.click("#go-available")
    expect(agent.locator("#state")).to_have_attribute("data-state", "available", timeout=T_MS)

    customer = new_page()
    _in_zone(customer, "Asia/Tokyo")
    before = time.time()
    open_chat(customer, live_server, name="Cleo", text="what time is it there?")
    agent.locator("#offers .offer button.accept").click()
    line = agent.locator(".pane[data-channel='chat'] .transcript .from-customer .meta").last
    expect(line).to_have_text(re.compile(r"^Cleo · \d\d:\d\d \w+$"), timeout=T_MS)  # the customer by name
    after = time.time()
    assert customer.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "Asia/Tokyo"

    seen = line.inner_text().removeprefix("Cleo · ")
    assert seen in _centre_clocks(before, after), (seen, _centre_clocks(before, after))
    own = customer.locator("#log li.customer .meta").last
    expect(own).to_have_text(re.compile(r" · \d\d:\d\d \w+$"))
    assert own.inner_text().rsplit(" · ", 1)[1] in _centre_clocks(before, after)


def test_the_customers_own_line_takes_the_time_the_centre_stored_it_at(live_server: LiveServer, new_page: Any) -> None:
    # Under `demo --at` (or with a browser whose clock is off) the customer's own line showed the browser's
    # time beside the centre's: the line is re-stamped with the ack's at_ms. The server's ack is rewritten
    # here to a time no browser clock shows: 2001-02-03 12:34 UTC, 13:34 in the centre's zone.
    customer = new_page()
    stored_at = int(datetime(2001, 2, 3, 12, 34, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)

    def shift_acks(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_server(message: Any) -> None:
            frame = json.loads(message)
            if frame.get("type") == "ack" and "at_ms" in frame:
                frame["at_ms"] = stored_at
            ws.send(json.dumps(frame))

        server.on_message(from_server)

    customer.route_web_socket("**/chat", shift_acks)
    open_chat(customer, live_server, name="Cleo", text="what time is it there?")
    expect(customer.locator("#log li.customer .meta").last).to_have_text("You · 13:34 CET", timeout=T_MS)
