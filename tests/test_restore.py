"""A restarted server picks up where the log ends: waiting contacts keep their place, agents who were ready
are away ("disconnected") until their console comes back, and nothing is logged twice."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

import contactcentre.events as E
from contactcentre.config import parse_config
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.writer import read_events

CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["email", "chat", "voice"]}],
        "agents": [{"id": "a1", "skills": {"general": 5}}, {"id": "a2", "skills": {"general": 5}}],
    },
    "<test>",
)


def test_restart_restores_waiting_contacts_and_open_work(store: Engine) -> None:
    url = store.url.render_as_string(hide_password=False)
    store.dispose()

    async def first_run() -> None:
        centre = await open_centre(CONFIG, url)
        now = centre.now_ms()
        centre.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
        centre.submit(E.ContactArrived(at_ms=now, contact_id="mail-1", queue="support", channel="email"))
        offer = next(c for c in centre.router.contact_list() if c.id == "mail-1")
        assert offer.state == "offered"
        offer_id = centre.router.agent("a1").offers[0].id
        centre.submit(E.OfferAccepted(at_ms=now, offer_id=offer_id, contact_id="mail-1", agent_id="a1"))
        centre.submit(E.ContactArrived(at_ms=now, contact_id="chat-1", queue="support", channel="chat"))
        centre.submit(E.ContactArrived(at_ms=now + 1, contact_id="call-1", queue="support", channel="voice"))
        await centre.commit()
        # No close_centre: the process "dies" here with everything committed (what kill -9 leaves).
        centre.driver.close()
        await centre.writer.close()
        centre.close()

    async def second_run() -> tuple[dict[str, str], dict[str, str], int]:
        centre = await open_centre(CONFIG, url)
        try:
            contacts = {c.id: c.state for c in centre.router.contact_list()}
            agents = {a.id: a.state for a in centre.router.agent_list()}
            assert centre.router.agent("a1").presence == "away"
            return contacts, agents, centre.router.arrived
        finally:
            await close_centre(centre)

    asyncio.run(first_run())
    logged_before = len(_events(url))
    contacts, agents, arrived = asyncio.run(second_run())
    assert arrived == 3
    assert contacts["mail-1"] == "connected"  # still a1's
    assert {contacts["chat-1"], contacts["call-1"]} == {"queued"}  # a1's offers fell through: back in line
    assert agents == {"a1": "busy", "a2": "logged_out"}, agents  # busy with mail-1; away for anything new
    logged = _events(url)
    new = logged[logged_before:]
    assert not any(isinstance(ev, E.ContactArrived) for ev in new)  # nothing replayed into the log twice
    assert any(isinstance(ev, E.AgentAway) and ev.reason == "disconnected" for ev in new)


def _events(url: str) -> list[E.Event]:
    from contactcentre.store.db import connect

    engine = connect(url)
    try:
        return read_events(engine)
    finally:
        engine.dispose()
