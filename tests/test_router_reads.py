"""The router's read side (``contactcentre/acd/views.py``): plain frozen values, and the questions the edge asks."""

from __future__ import annotations

import msgspec
import pytest

from contactcentre import events as E
from contactcentre.acd import AgentStatus, AgentView, ContactView, IllegalTransition, StaleOffer, UnknownContact
from tests.harness import Harness, agents

SUPPORT = [{"name": "support", "skills": {"general": 3}, "channels": ["voice", "chat", "email", "callback"]}]
OFFICE = {"timezone": "UTC", "mon": ["09:00-17:00"]}  # the harness starts on Thursday 1 January 1970


def _floor(**kw: object) -> Harness:
    return Harness(
        queues=SUPPORT,
        agents=agents(("a1", {"general": 5}), ("a2", {"general": 5}), capacity={"voice": 1, "chat": 2}),
        **kw,
    )


def test_views_are_frozen_snapshots_that_follow_nothing() -> None:
    h = _floor()
    h.login("a1")
    h.arrive("c1", channel="chat", customer_id="cu1", attributes={"topic": "x"})
    c = h.router.contact("c1")
    a = h.router.agent("a1")
    assert isinstance(c, ContactView) and isinstance(a, AgentView)
    with pytest.raises(AttributeError):
        c.state = "closed"  # type: ignore[misc]
    assert (c.state, c.offered_to, c.agent_id, c.customer_id, c.attributes) == (
        "offered",
        "a1",
        "a1",
        "cu1",
        {"topic": "x"},
    )
    assert c.waiting and not c.handling and c.with_agent
    assert a.offers == (c.offer,) and a.offer_of("c1") == c.offer and a.state == "reserved" and a.ready
    h.accept("c1")
    assert h.router.contact("c1").handling and c.state == "offered"  # the old view is what it was
    a = h.router.agent("a1")
    assert a.work == ("c1",) and a.handling == ("c1",) and a.load == {"voice": 0, "chat": 1} and not a.offers
    assert h.router.handler_of("c1") == "a1"
    # Plain data: they encode as they are, with no router object inside.
    assert msgspec.json.decode(msgspec.json.encode(a))["work"] == ["c1"]
    h.end("c1")  # chat: no wrap-up here, the contact closes and leaves the centre
    assert h.router.contact("c1") is None and h.router.contact_state("c1") is None and not h.router.has_contact("c1")


def test_agent_status_is_the_agent_views_state_fields_alone() -> None:
    h = _floor()
    assert h.router.agent_status("nobody") is None
    for step in (lambda: None, lambda: h.login("a1"), lambda: h.arrive("c1", channel="chat")):
        step()
        a, st = h.router.agent("a1"), h.router.agent_status("a1")
        assert isinstance(st, AgentStatus) and a is not None
        assert st == AgentStatus(a.state, a.state_reason, a.state_since_ms, a.presence, a.away_reason)
    assert h.router.agent_status("a1").state == "reserved"


def test_a_queued_contact_has_its_position_and_wait_estimate() -> None:
    h = _floor()
    h.login("a1")
    for cid in ("c1", "c2", "c3"):
        h.arrive(cid)  # voice: a1 takes one, the others wait behind it
    assert [c.position for c in h.router.contact_list()] == [None, 1, 2]
    est = h.router.wait_estimate("c3")
    assert est is not None and est.position == 2 and est.ewt_ms is not None and est.ewt_ms > 0
    assert h.router.wait_estimate("c1") is None  # ringing, not waiting in the queue
    assert h.router.wait_estimate("nobody") is None
    assert [c.id for c in h.router.waiting_contacts()] == ["c2", "c3"]


def test_check_says_what_handle_would_refuse_and_changes_nothing() -> None:
    h = _floor()
    h.login("a1")
    h.arrive("c1")
    o = h.offer_of("c1")
    accept = E.OfferAccepted(at_ms=h.now, offer_id=o.offer_id, contact_id="c1", agent_id="a1")
    assert h.router.check(accept) is None
    assert h.router.contact("c1").state == "offered" and h.router.check(accept) is None  # nothing applied
    wrong = E.OfferAccepted(at_ms=h.now, offer_id="o99", contact_id="c1", agent_id="a1")
    assert isinstance(h.router.check(wrong), StaleOffer)
    assert isinstance(h.router.check(E.AgentLoggedIn(at_ms=h.now, agent_id="a1")), IllegalTransition)
    assert isinstance(h.router.check(E.CustomerLeft(at_ms=h.now, contact_id="c9")), UnknownContact)
    assert h.router.check(E.ContactArrived(at_ms=h.now - 1, contact_id="c2", queue="support", channel="voice"))
    assert h.router.arrived == 1 and len(h.router.contact_list()) == 1
    h.accept("c1")


def test_may_take_now_is_the_router_s_own_rule() -> None:
    h = _floor()
    h.login("a1", "a2")
    h.arrive("c1")
    taker = h.offered_to("c1")
    other = "a2" if taker == "a1" else "a1"
    assert h.router.may_take_now(other, "c1")
    assert not h.router.may_take_now(taker, "c1")  # its one voice slot rings with c1
    h.send(E.AgentLoggedOut, agent_id=other)
    assert not h.router.may_take_now(other, "c1") and not h.router.may_take_now("nobody", "c1")


def test_offline_reason_follows_hours_and_logged_in_capacity() -> None:
    h = _floor()
    assert h.router.offline_reason("support", "chat", h.now) == "no_agents"
    h.login("a1", away_reason="break")
    assert h.router.offline_reason("support", "chat", h.now) is None  # away, but a chat may wait for them
    assert h.router.offline_reason("support", "email", h.now) == "no_agents"  # no e-mail capacity
    assert h.router.offline_reason("nowhere", "chat", h.now) == "no_agents"
    assert h.router.offline_reason(None, "chat", h.now) == "no_agents"
    closed = Harness(
        calendars={"office": OFFICE},
        queues=[{"name": "support", "skills": {"general": 3}, "hours": "office", "when_closed": "accept"}],
        agents=agents(("a1", {"general": 5})),
    )
    closed.login("a1")
    assert closed.router.offline_reason("support", "chat", closed.now) == "closed"


def test_queue_loads_and_agents_serving_follow_skill_changes() -> None:
    h = _floor()
    h.login("a1")
    h.arrive("c1")
    h.arrive("c2")
    (load,) = h.router.queue_loads()
    assert (load.waiting, load.offered, load.with_agents, load.agents_serving, load.agents_ready) == (
        {"voice": 1},
        1,
        0,
        2,
        1,
    )
    h.accept("c1")
    (load,) = h.router.queue_loads()
    assert (load.offered, load.with_agents) == (0, 1)
    assert load.ewt_ms["voice"] is not None and load.ewt_ms["email"] is None  # nobody ready takes e-mail
    assert h.router.serving_agents("support") == ["a1", "a2"]
    h.send(E.AgentSkillsChanged, agent_id="a2", skills={"general": 1})
    assert h.router.serving_agents("support") == ["a1"] and h.router.served_queues("a2") == []
    assert [q.name for q in h.router.queue_list()] == ["support"] and h.router.serves("support", "chat")
    assert not h.router.serves("support", "sms") and h.router.queue("nowhere") is None


def test_waiting_counts_agree_with_the_contacts_one_by_one() -> None:
    """The aggregate the consoles' queue figures and every metrics scrape read, against the views it replaced."""
    h = _floor()
    h.login("a1")
    for i, channel in enumerate(["voice", "chat", "email", "email", "voice", "chat", "chat"]):
        h.at(i + 1)  # distinct waiting_since_ms, so "oldest" is tested
        h.arrive(f"c{i}", channel=channel)

    def by_hand(states: tuple[str, ...]) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for c in h.router.contact_list():
            if c.state in states:
                n, since = out.get((c.queue, c.channel), (0, c.waiting_since_ms))
                out[(c.queue, c.channel)] = (n + 1, min(since, c.waiting_since_ms))
        return out

    got = {k: (w.count, w.oldest_since_ms) for k, w in h.router.waiting_counts().items()}
    assert got == by_hand(("queued",)) and got
    assert sum(n for n, _ in got.values()) == len(h.router.waiting_contacts())
    ringing = {k: (w.count, w.oldest_since_ms) for k, w in h.router.waiting_counts(ringing_too=True).items()}
    assert ringing == by_hand(("queued", "offered")) and ringing != got  # a1 has an offer ringing
