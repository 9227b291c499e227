"""Routing scenarios under a fake clock: each test is a small story with exact times."""

from __future__ import annotations

import pytest

from contactcentre import events as E
from contactcentre.acd import IllegalTransition, RouterError, StaleOffer, TimeWentBackwards, UnknownQueue
from tests.harness import Harness, agents

SUPPORT = [{"name": "support", "skills": {"general": 3}}]


def test_arrival_with_free_agent_is_offered_at_once_with_reasons() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 2})))
    h.login("a1", "a2")
    out = h.arrive("c1")
    types = [type(e) for e in out]
    assert types == [E.ContactArrived, E.ContactQueued, E.OfferMade, E.AgentStateChanged]
    offer = out[2]
    assert offer.agent_id == "a1"
    assert offer.expires_ms == h.now + 15_000
    assert offer.why.strategy == "longest_idle"
    assert offer.why.requirement == "general>=3"
    assert offer.why.filters == {"below_level": 1}  # a2 has general 2 < 3
    assert [c.id for c in offer.why.candidates] == ["a1"]
    assert out[1].ewt_ms == 0 and out[1].position == 1


def test_longest_idle_picks_agent_free_longest_and_rotates() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})))
    h.login("a1")
    h.at(1)
    h.login("a2")
    h.at(2)
    h.arrive("c1")
    assert h.offered_to("c1") == "a1"
    h.accept("c1")
    h.arrive("c2")
    assert h.offered_to("c2") == "a2"
    h.accept("c2")
    h.end("c1")
    h.at(20)  # a1 wrap-up (10 s) ends at 12 s
    h.end("c2")
    h.at(40)
    h.arrive("c3")
    assert h.offered_to("c3") == "a1"  # free since 12 s; a2 since 30 s
    assert h.offer_of("c3").why.tie_break == ""


def test_most_skilled_prefers_higher_level() -> None:
    q = [{"name": "support", "skills": {"general": 3}, "strategy": "most_skilled"}]
    h = Harness(queues=q, agents=agents(("a1", {"general": 4}), ("a2", {"general": 9}), ("a3", {"general": 6})))
    h.login("a1", "a2", "a3")
    h.arrive("c1")
    why = h.offer_of("c1").why
    assert h.offered_to("c1") == "a2"
    assert [c.id for c in why.candidates] == ["a2", "a3", "a1"]
    assert why.candidates[0].score[0] == -9


def test_round_robin_cycles_in_configuration_order() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "strategy": "round_robin"}]
    h = Harness(
        queues=q,
        agents=agents(("a1", {"general": 1}), ("a2", {"general": 1}), ("a3", {"general": 1})),
        channels={"chat": {"offer_timeout_s": 20, "wrap_up_s": 0}},
    )
    h.login("a3", "a1", "a2")  # login order must not matter
    got = []
    for i in range(5):
        h.arrive(f"c{i}", channel="chat")
        got.append(h.offered_to(f"c{i}"))
        h.accept(f"c{i}")
    assert got == ["a1", "a2", "a3", "a1", "a2"]


def test_fewest_handled_today() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "strategy": "fewest_handled"}]
    h = Harness(queues=q, agents=agents(("a1", {"general": 1}), ("a2", {"general": 1})))
    h.login("a1", "a2")
    h.arrive("c1")
    first = h.offered_to("c1")
    h.accept("c1")
    h.end("c1")
    h.at(60)  # wrap-up over; first has handled 1 and is now the longest idle? no: it was relisted last
    h.arrive("c2")
    h.accept("c2")
    h.end("c2")
    h.at(120)
    h.arrive("c3")
    handled = {a: h.router.agents[a].handled_today for a in ("a1", "a2")}
    assert handled[h.offered_to("c3")] == min(handled.values())
    assert first in ("a1", "a2")


def test_least_occupied_prefers_lower_load_for_chat() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "strategy": "least_occupied"}]
    h = Harness(queues=q, agents=agents(("a1", {"general": 1}), ("a2", {"general": 1}), capacity={"chat": 3}))
    h.login("a1", "a2")
    loads = []
    for i in range(4):
        h.arrive(f"c{i}", channel="chat")
        h.accept(f"c{i}")
        loads.append(sorted(a.total_load for a in h.router.agents.values()))
    assert loads == [[0, 1], [1, 1], [1, 2], [2, 2]]


def test_agent_freeing_takes_best_contact_across_queues() -> None:
    qs = [
        {"name": "support", "skills": {"general": 1}},
        {"name": "billing", "skills": {"billing": 1}, "priority": 1},
    ]
    h = Harness(queues=qs, agents=agents(("a1", {"general": 5, "billing": 5})))
    h.arrive("s1", queue="support")
    h.at(10)
    h.arrive("b1", queue="billing")  # priority 1 = 60 s of waiting: beats s1's 10 s head start
    h.at(20)
    h.arrive("s2", queue="support")
    h.login("a1")
    assert h.offered_to("b1") == "a1"
    why = h.offer_of("b1").why
    assert why.trigger == "agent"
    assert [c.id for c in why.candidates] == ["b1", "s1", "s2"]


def test_priority_aging_nothing_starves() -> None:
    qs = [
        {"name": "support", "skills": {"general": 1}},
        {"name": "vip", "skills": {"general": 1}, "priority": 2},
    ]
    h = Harness(queues=qs, agents=agents(("a1", {"general": 5})))
    h.arrive("low")  # waiting since 0
    h.at(121)  # two priority points are worth 120 s: a VIP arriving now ranks behind "low"
    h.arrive("vip1", queue="vip")
    h.login("a1")
    assert h.offered_to("low") == "a1"


def test_reject_keeps_place_and_goes_to_next_agent() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    h.arrive("c2")
    h.reject("c1")
    # a1 is still available but won't get c1 straight back; it takes c2, and c1 keeps the head of the queue
    assert h.offered_to("c2") == "a1"
    assert h.router.waiting_contacts()[0].id == "c1"
    assert h.agent_state("a1") == "reserved"
    h.accept("c2")
    h.end("c2")
    h.at(30)  # wrap-up ends at 10 s; c1's exclusion (one offer timeout, 15 s) ended at 15 s
    assert h.offered_to("c1") == "a1"


def test_offer_timeout_requeues_and_sets_agent_away() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    assert h.router.next_deadline() == h.now + 15_000
    h.at(16)
    exp = h.of(E.OfferExpired)
    assert len(exp) == 1 and exp[0].at_ms == h.start + 15_000  # fired at its deadline, not when noticed
    assert h.agent_state("a1") == "away"
    assert h.router.agents["a1"].away_reason == "missed_offer"
    assert h.state("c1") == "queued"
    h.login("a2")
    assert h.offered_to("c1") == "a2"


def test_stale_accept_after_expiry_is_refused_without_change() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    offer = h.offer_of("c1")
    h.at(20)
    before = h.router.census()
    with pytest.raises(StaleOffer):
        h.send(E.OfferAccepted, offer_id=offer.offer_id, contact_id="c1", agent_id="a1")
    assert h.router.census() == before


def test_voice_is_exclusive_and_chat_fills_capacity() -> None:
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5}), capacity={"voice": 1, "chat": 2}),
        routing={"offers_per_agent": 2, "drain_for_exclusive": False},
    )
    h.login("a1")
    h.arrive("ch1", channel="chat")
    h.arrive("ch2", channel="chat")
    h.arrive("v1", channel="voice")
    h.arrive("ch3", channel="chat")
    a = h.router.agents["a1"]
    assert {o.contact.id for o in a.offers.values()} == {"ch1", "ch2"}
    assert h.state("v1") == "queued" and h.state("ch3") == "queued"
    h.accept("ch1")
    h.accept("ch2")
    h.end("ch1")  # chat wrap-up is 0: closes at once; voice must wait for ch2 too (exclusive)
    assert h.state("v1") == "queued"
    assert h.offered_to("ch3") == "a1"


def test_sla_warn_and_breach_at_exact_deadlines_per_tier() -> None:
    tiers = {"gold": {"answer_s": 20, "answer_target": 0.9, "priority": 2}, "silver": {"answer_s": 30}}
    h = Harness(queues=SUPPORT, tiers=tiers, agents=agents(("a1", {"general": 5})))
    h.arrive("g", tier="gold")
    h.arrive("s", tier="silver")
    q = {e.contact_id: e for e in h.of(E.ContactQueued)}
    assert q["g"].sla_deadline_ms == h.start + 20_000 and q["g"].priority == 2
    assert q["s"].sla_deadline_ms == h.start + 30_000
    h.at(100)
    warned = {e.contact_id: e.at_ms - h.start for e in h.of(E.SlaWarned)}
    breached = {e.contact_id: (e.at_ms - h.start, e.deadline_ms - h.start) for e in h.of(E.SlaBreached)}
    assert warned == {"g": 16_000, "s": 24_000}
    assert breached == {"g": (20_001, 20_000), "s": (30_001, 30_000)}  # breached = not answered by the deadline


def test_answered_at_the_deadline_is_in_time_for_router_and_stats_alike() -> None:
    from contactcentre.acd.stats import LiveStats

    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})), channels={"voice": {"offer_timeout_s": 60}})
    h.arrive("c1")
    h.at(19)
    h.login("a1")
    h.at(20)  # the SLA deadline, to the millisecond
    h.accept("c1")
    h.at(60)
    assert not h.of(E.SlaBreached)
    stats = LiveStats()
    stats.apply_all(h.log)
    q = stats.snapshot(h.now)["queues"]["support"]
    assert (q["sl_answered"], q["sla_breaches"]) == (1.0, 0)


def test_max_wait_counts_from_entering_the_queue_after_a_move() -> None:
    qs = [
        {"name": "a", "skills": {"general": 1}, "overflow": [{"after_s": 30, "move_to": "b"}]},
        {"name": "b", "skills": {"general": 1}, "max_wait_s": 10},
    ]
    h = Harness(queues=qs, agents=[])
    h.arrive("c1", queue="a")
    h.at(100)
    times = [e.at_ms for e in h.log]
    assert times == sorted(times), "events out of time order"
    left = [e for e in h.of(E.ContactOverflowed) if e.left]
    assert [(e.queue, e.at_ms - h.start) for e in left] == [("b", 40_000)]


def test_no_timer_outlives_its_contact() -> None:
    qs = [
        {"name": "a", "skills": {"general": 1}, "overflow": [{"after_s": 5, "move_to": "b"}]},
        {"name": "b", "skills": {"general": 1}},
    ]
    h = Harness(queues=qs, agents=agents(("am", {"general": 5})), routing={"preferred_agent_timeout_s": 40})
    h.login("am")
    h.send(E.AgentAway, agent_id="am", reason="lunch")
    h.arrive("c1", queue="a", preferred_agent_id="am")
    h.at(6)
    h.send(E.CustomerLeft, contact_id="c1")
    assert h.router.contacts == {} and h.router.next_deadline() is None


def test_fewest_handled_starts_again_at_midnight() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "strategy": "fewest_handled"}]
    h = Harness(start_ms=1_795_392_000_000, queues=q, agents=agents(("a1", {"general": 1}), ("a2", {"general": 1})))
    h.login("a1", "a2")
    h.arrive("c0")
    h.accept("c0")  # a1
    h.arrive("c1")
    h.accept("c1")  # a2, a long call
    h.end("c0")
    h.at(30)
    h.arrive("c2")
    assert h.offered_to("c2") == "a1"
    h.accept("c2")
    h.end("c2")
    h.at(300)
    h.end("c1")  # yesterday: a1 handled two and has been idle since 40 s; a2 handled one, idle since 310 s
    h.at(86_400 + 3600)  # the next day: both have handled nothing *today*, so the longest idle gets it
    h.arrive("next-day")
    assert h.offered_to("next-day") == "a1"
    assert [c.score[0] for c in h.offer_of("next-day").why.candidates] == [0, 0]


def test_new_skills_keep_an_agents_place_in_the_idle_order() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})))
    h.login("a1")
    h.at(60)
    h.login("a2")
    h.at(120)
    h.send(E.AgentSkillsChanged, agent_id="a1", skills={"general": 5, "billing": 2})
    h.arrive("c1")
    assert h.offered_to("c1") == "a1"


def test_sla_timers_stop_when_answered() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    h.accept("c1")
    h.at(100)
    assert not h.of(E.SlaWarned) and not h.of(E.SlaBreached)


def test_overflow_relax_then_add_skill_then_leave() -> None:
    q = [
        {
            "name": "support",
            "skills": {"general": 5},
            "overflow": [
                {"after_s": 10, "relax": {"general": 2}},
                {"after_s": 20, "add_skill": {"supervisor": 1}},
                {"after_s": 60, "leave": True, "leave_to": "voicemail"},
            ],
        }
    ]
    h = Harness(queues=q, agents=agents(("junior", {"general": 2}), ("boss", {"supervisor": 3})))
    h.login("junior")
    h.arrive("c1")
    h.arrive("c2")
    h.arrive("c3")
    h.at(9)
    assert not h.of(E.OfferMade)
    h.at(10)
    assert h.offered_to("c1") == "junior"
    assert h.offer_of("c1").why.step == 1 and h.offer_of("c1").why.requirement == "general>=2"
    h.accept("c1")
    h.login("boss")
    h.at(20)
    assert h.offered_to("c2") == "boss"
    assert h.offer_of("c2").why.requirement == "general>=2 | supervisor>=1"
    h.accept("c2")
    h.at(61)
    left = [e for e in h.of(E.ContactOverflowed) if e.left]
    assert [(e.contact_id, e.at_ms - h.start, e.actions) for e in left] == [("c3", 60_000, ["leave to voicemail"])]
    assert h.state("c3") == "finished"
    assert h.router.census()["overflowed"] == 1


def test_overflow_add_queue_and_move_keep_age() -> None:
    qs = [
        {
            "name": "billing",
            "skills": {"billing": 3},
            "overflow": [{"after_s": 30, "add_queues": ["support"]}],
        },
        {"name": "support", "skills": {"general": 1}},
        {"name": "spanish", "skills": {"spanish": 3}, "overflow": [{"after_s": 40, "move_to": "support"}]},
    ]
    h = Harness(queues=qs, agents=agents(("gen", {"general": 4})))
    h.arrive("b1", queue="billing")
    h.at(5)
    h.arrive("sp1", queue="spanish")
    h.at(10)
    h.arrive("s1", queue="support")
    h.login("gen")
    assert h.offered_to("s1") == "gen"
    h.accept("s1")
    h.at(50)
    moved = [e for e in h.of(E.ContactOverflowed) if e.to_queue]
    assert [(e.contact_id, e.to_queue, e.at_ms - h.start) for e in moved] == [("sp1", "support", 45_000)]
    requeued = [e for e in h.of(E.ContactQueued) if e.contact_id == "sp1"][-1]
    assert requeued.queue == "support" and requeued.via == "overflow:spanish"
    assert requeued.waiting_since_ms == h.start + 5_000
    h.end("s1")
    h.at(70)  # wrap-up over: b1 (waiting since 0, now eligible via support) beats sp1 (since 5 s)
    assert h.offered_to("b1") == "gen"


def test_max_wait_during_offer_waits_for_the_offer() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "max_wait_s": 10}]
    h = Harness(queues=q, agents=agents(("a1", {"general": 1})))
    h.arrive("c1")
    h.at(9)
    h.login("a1")
    h.at(12)  # max wait at 10 s while ringing: nothing yet
    assert h.state("c1") == "offered"
    h.reject("c1")
    assert h.state("c1") == "finished"
    ev = h.of(E.ContactOverflowed)[-1]
    assert ev.left and ev.actions == ["max wait"]


def test_max_depth_refuses_or_redirects() -> None:
    qs = [
        {"name": "support", "skills": {"general": 1}, "max_depth": 1, "when_full": "backup"},
        {"name": "backup", "skills": {"general": 1}, "max_depth": 1},
    ]
    h = Harness(queues=qs, agents=[])
    h.arrive("c1")
    h.arrive("c2")
    h.arrive("c3")
    assert [e.queue for e in h.of(E.ContactQueued)] == ["support", "backup"]
    assert h.of(E.ContactQueued)[1].via == "full:support"
    failed = h.of(E.ContactFailed)
    assert [(e.contact_id, e.reason) for e in failed] == [("c3", "queue_full")]


def test_closed_queue_refuses_or_redirects_by_calendar() -> None:
    cal = {"weekdays": {"timezone": "UTC", "mon": ["09:00-17:00"]}}
    qs = [
        {"name": "day", "skills": {"general": 1}, "hours": "weekdays", "when_closed": "night"},
        {"name": "night", "skills": {"general": 1}},
        {"name": "strict", "skills": {"general": 1}, "hours": "weekdays", "when_closed": "refuse"},
    ]
    monday_8am = 1_795_392_000_000 + 8 * 3_600_000  # 2026-11-23 is a Monday
    h = Harness(start_ms=monday_8am, queues=qs, calendars=cal, agents=[])
    h.arrive("c1", queue="day")
    h.arrive("c2", queue="strict")
    assert h.of(E.ContactQueued)[0].queue == "night"
    assert h.of(E.ContactFailed)[0].reason == "closed"
    h.at(3600)  # 09:00: open
    h.arrive("c3", queue="day")
    assert h.of(E.ContactQueued)[-1].queue == "day"


def test_email_sla_in_business_hours_for_bronze() -> None:
    cal = {"office": {"timezone": "UTC", "mon": ["09:00-17:00"], "tue": ["09:00-17:00"]}}
    tiers = {"bronze": {"email_response_s": 8 * 3600, "hours": "office"}}
    monday_4pm = 1_795_392_000_000 + 16 * 3_600_000
    h = Harness(start_ms=monday_4pm, queues=SUPPORT, calendars=cal, tiers=tiers, agents=[])
    h.arrive("m1", channel="email", tier="bronze")
    # 1 h left on Monday, 7 h on Tuesday from 09:00 → Tuesday 16:00
    assert h.of(E.ContactQueued)[0].sla_deadline_ms == monday_4pm + 24 * 3_600_000


def test_account_manager_gets_gold_customer_first_then_anyone() -> None:
    tiers = {"gold": {"priority": 2, "answer_s": 20, "account_manager": True, "preferred_agent_timeout_s": 10}}
    h = Harness(queues=SUPPORT, tiers=tiers, agents=agents(("am", {"general": 5}), ("other", {"general": 5})))
    h.login("am", "other")
    h.arrive("busy")  # goes to "am" (longest idle)
    assert h.offered_to("busy") == "am"
    h.accept("busy")
    h.arrive("g1", tier="gold", preferred_agent_id="am")
    assert h.state("g1") == "queued"  # waits for its account manager although "other" is free
    assert h.of(E.ContactQueued)[-1].ewt_ms is not None
    h.at(10)
    assert h.offered_to("g1") == "other"


def test_preferred_agent_gets_it_when_free() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})))
    h.login("a1", "a2")
    h.arrive("c1", preferred_agent_id="a2")
    assert h.offered_to("c1") == "a2"
    assert h.offer_of("c1").why.strategy == "preferred_agent"


def test_transfer_to_queue_agent_and_external() -> None:
    qs = [{"name": "support", "skills": {"general": 1}}, {"name": "billing", "skills": {"billing": 1}}]
    h = Harness(queues=qs, agents=agents(("a1", {"general": 5}), ("b1", {"billing": 5}), ("a2", {"general": 5})))
    h.login("a1", "b1")
    h.arrive("c1")
    h.accept("c1")
    h.at(30)
    h.send(E.TransferRequested, contact_id="c1", agent_id="a1", to_queue="billing")
    assert h.offered_to("c1") == "b1"
    assert h.of(E.ContactTransferred)[0].talk_ms == 30_000
    assert h.agent_state("a1") == "available"  # released without wrap-up
    h.accept("c1")
    h.login("a2")
    h.send(E.TransferRequested, contact_id="c1", agent_id="b1", to_agent_id="a2")
    assert h.offered_to("c1") == "a2"
    h.accept("c1")
    h.send(E.TransferRequested, contact_id="c1", agent_id="a2", to_external="+3120555")
    assert h.state("c1") == "finished"
    assert h.router.census()["transferred"] == 1
    with pytest.raises(UnknownQueue):
        h.arrive("c9", queue="nope")


def test_hold_time_and_wrap_up_timing() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    h.at(2)
    h.accept("c1")
    h.at(12)
    h.send(E.ContactHeld, contact_id="c1", agent_id="a1")
    h.at(17)
    h.send(E.ContactRetrieved, contact_id="c1", agent_id="a1")
    h.at(30)
    h.send(E.DispositionSet, contact_id="c1", agent_id="a1", code="resolved")
    h.end("c1")
    assert h.agent_state("a1") == "wrap_up"
    h.at(45)
    closed = h.of(E.ContactClosed)[0]
    assert (closed.wait_ms, closed.talk_ms, closed.hold_ms, closed.wrap_ms) == (2000, 23_000, 5000, 10_000)
    assert closed.disposition == "resolved"
    assert h.agent_state("a1") == "available"


def test_manual_wrap_up_ends_by_agent() -> None:
    h = Harness(
        queues=SUPPORT,
        agents=agents(("a1", {"general": 5})),
        channels={"voice": {"wrap_up_s": "manual"}},
    )
    h.login("a1")
    h.arrive("c1")
    h.accept("c1")
    h.end("c1")
    h.at(3600)
    assert h.agent_state("a1") == "wrap_up"
    assert h.of(E.WrapUpStarted)[0].ends_ms is None
    h.send(E.WrapUpEnded, contact_id="c1", agent_id="a1")
    assert h.agent_state("a1") == "available"


def test_customer_hangs_up_while_waiting_ringing_and_talking() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.arrive("w")
    h.at(7)
    h.send(E.CustomerLeft, contact_id="w")
    ab = h.of(E.ContactAbandoned)[0]
    assert ab.wait_ms == 7000
    h.login("a1")
    h.arrive("r")
    h.send(E.CustomerLeft, contact_id="r")
    assert h.of(E.OfferCancelled)[0].reason == "customer_left"
    assert h.agent_state("a1") == "available"
    h.arrive("t")
    h.accept("t")
    h.send(E.CustomerLeft, contact_id="t")
    assert h.of(E.WrapUpStarted)[-1].by == "customer"
    assert h.router.census()["abandoned"] == 2


def test_agent_away_withdraws_offer_and_logout_refused_while_busy() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    h.send(E.AgentAway, agent_id="a1", reason="lunch")
    assert h.of(E.OfferCancelled)[0].reason == "agent_away"
    assert h.agent_state("a1") == "away" and h.state("c1") == "queued"
    h.login("a2")
    h.accept("c1")
    with pytest.raises(IllegalTransition, match="still handling c1"):
        h.send(E.AgentLoggedOut, agent_id="a2")
    h.send(E.AgentAway, agent_id="a2", reason="meeting")
    assert h.agent_state("a2") == "busy"  # away takes effect after the work
    h.end("c1")
    h.at(60)
    assert h.agent_state("a2") == "away"
    h.send(E.AgentLoggedOut, agent_id="a2")
    assert h.agent_state("a2") == "logged_out"


def test_refused_inputs_change_nothing_and_timers_are_not_lost() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.login("a1")
    h.arrive("c1")
    h.now = h.start + 20_000  # the offer expired at 15 s, but nobody advanced the clock
    with pytest.raises(RouterError):
        h.arrive("c1b", queue="nope")
    out = h.router.advance(h.now)  # the expiry is handed over now, not lost
    assert [type(e) for e in out][:1] == [E.OfferExpired]
    with pytest.raises(TimeWentBackwards):
        h.router.handle(E.AgentReady(at_ms=h.start, agent_id="a1"))
    with pytest.raises(IllegalTransition):
        h.send(E.ContactEnded, contact_id="c1", agent_id="a1")


def test_ewt_is_position_and_staffing_aware() -> None:
    h = Harness(
        queues=SUPPORT,
        agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})),
        channels={"voice": {"default_aht_s": 100}},
    )
    h.login("a1", "a2")
    for i in range(4):
        h.arrive(f"c{i}")
    q = {e.contact_id: e for e in h.of(E.ContactQueued)}
    assert q["c0"].ewt_ms == 0 and q["c1"].ewt_ms == 0
    assert q["c2"].ewt_ms == 50_000  # 1 ahead? no: first in line, 2 servers: 1 × 100 s / 2
    assert q["c3"].ewt_ms == 100_000 and q["c3"].position == 2


def test_no_agents_staffed_means_unknown_ewt() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 5})))
    h.arrive("c1")
    assert h.of(E.ContactQueued)[0].ewt_ms is None


def test_multi_queue_agent_skill_change_routes_waiting_work() -> None:
    h = Harness(queues=SUPPORT, agents=agents(("a1", {"general": 1})))
    h.login("a1")
    h.arrive("c1")
    assert h.state("c1") == "queued"
    h.send(E.AgentSkillsChanged, agent_id="a1", skills={"general": 4})
    assert h.offered_to("c1") == "a1"


def test_blended_agent_drains_chats_so_a_waiting_call_is_not_starved() -> None:
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5}), capacity={"voice": 1, "chat": 2}),
    )
    h.login("a1")
    h.arrive("chat1", channel="chat")
    h.accept("chat1")
    h.at(5)
    h.arrive("call", channel="voice")  # can't be offered: a1 holds a chat, and voice is exclusive
    h.at(6)
    h.arrive("chat2", channel="chat")  # a1 has room for it, but holds back: the call ranks first
    assert h.state("chat2") == "queued"
    assert h.router.eligible(h.router.contacts["chat2"], h.router.agents["a1"]) is False
    h.end("chat1")  # chat wrap-up is 0: a1 is free, and its next contact is the call
    assert h.offered_to("call") == "a1"
    h.accept("call")
    h.end("call")
    h.at(60)
    assert h.offered_to("chat2") == "a1"


def test_agent_held_back_for_a_call_takes_chats_again_when_the_call_is_gone() -> None:
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5}), capacity={"voice": 1, "chat": 2}),
    )
    h.login("a1")
    h.arrive("chat1", channel="chat")
    h.accept("chat1")
    h.arrive("call", channel="voice")
    h.arrive("chat2", channel="chat")
    why_filters = [e for e in h.log if isinstance(e, E.OfferMade) and e.contact_id == "chat2"]
    assert not why_filters
    h.send(E.CustomerLeft, contact_id="call")  # the caller gives up: nothing to drain for any more
    assert h.offered_to("chat2") == "a1"


def test_draining_can_be_switched_off() -> None:
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5}), capacity={"voice": 1, "chat": 2}),
        routing={"priority_weight_s": 60, "drain_for_exclusive": False},
    )
    h.login("a1")
    h.arrive("chat1", channel="chat")
    h.accept("chat1")
    h.arrive("call", channel="voice")
    h.arrive("chat2", channel="chat")
    assert h.offered_to("chat2") == "a1"


def test_customer_data_hook_sets_tier_and_account_manager() -> None:
    from contactcentre.acd import CustomerDirectory, Router

    tiers = {"gold": {"priority": 2, "answer_s": 20, "account_manager": True, "preferred_agent_timeout_s": 30}}
    h = Harness(queues=SUPPORT, tiers=tiers, agents=agents(("am", {"general": 5}), ("other", {"general": 5})))
    h.router = Router(h.cfg, start_ms=h.start, hooks=CustomerDirectory({"cust-1": ("gold", "am")}))
    h.login("other", "am")  # "other" has been idle longer
    h.arrive("c1", customer_id="cust-1")  # the caller's ANI resolved to cust-1 by the edge
    queued = h.of(E.ContactQueued)[-1]
    assert (queued.tier, queued.priority, queued.sla_deadline_ms) == ("gold", 2, h.now + 20_000)
    assert h.offered_to("c1") == "am"
    h.arrive("c2", customer_id="unknown")
    assert h.offered_to("c2") == "other"


def test_max_wait_does_not_throw_out_an_email() -> None:
    """An e-mail waits for its answer under its SLA; only live contacts "leave to voicemail"."""
    q = [{"name": "support", "skills": {"general": 1}, "max_wait_s": 10, "channels": ["voice", "email"]}]
    h = Harness(queues=q, agents=[])
    h.arrive("call", channel="voice")
    h.arrive("mail", channel="email")
    h.at(3600)
    assert [e.contact_id for e in h.of(E.ContactOverflowed) if e.left] == ["call"]
    assert h.router.contacts["mail"].state == "queued"


def test_an_email_backlog_neither_fills_a_queue_nor_is_refused_by_it() -> None:
    q = [{"name": "support", "skills": {"general": 1}, "max_depth": 2, "channels": ["voice", "email"]}]
    h = Harness(queues=q, agents=[])
    for i in range(5):
        h.arrive(f"mail{i}", channel="email")
    h.arrive("call1", channel="voice")
    h.arrive("call2", channel="voice")
    h.arrive("call3", channel="voice")
    failed = [e.contact_id for e in h.of(E.ContactFailed)]
    assert failed == ["call3"]
