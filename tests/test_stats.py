"""Live statistics from events: each named variant on a sequence small enough to check by hand."""

from __future__ import annotations

import pytest

from contactcentre import events as E
from contactcentre.acd.stats import LiveStats
from tests.harness import Harness, agents

T0 = 1_000_000


def queued(cid: str, at: int, tier: str | None = None, deadline: int | None = None) -> E.ContactQueued:
    return E.ContactQueued(
        at_ms=T0 + at,
        contact_id=cid,
        queue="q",
        channel="voice",
        priority=0,
        tier=tier,
        sla_deadline_ms=T0 + (deadline if deadline is not None else at + 20_000),
    )


def connected(cid: str, at: int, wait: int, tier: str | None = None) -> E.ContactConnected:
    return E.ContactConnected(
        at_ms=T0 + at, contact_id=cid, agent_id="a", queue="q", channel="voice", wait_ms=wait, tier=tier
    )


def abandoned(cid: str, at: int, wait: int) -> E.ContactAbandoned:
    return E.ContactAbandoned(at_ms=T0 + at, contact_id=cid, queue="q", channel="voice", wait_ms=wait)


def test_service_level_variants_by_hand() -> None:
    s = LiveStats(short_abandon_ms=5_000)
    s.apply_all(
        [
            queued("fast", 0),
            connected("fast", 10_000, 10_000),  # answered within 20 s
            queued("slow", 0),
            connected("slow", 30_000, 30_000),  # answered late
            queued("short", 0),
            abandoned("short", 3_000, 3_000),  # short abandon, within T
            queued("gave_up", 0),
            abandoned("gave_up", 40_000, 40_000),  # abandoned after T
            queued("waiting", 50_000),
        ]
    )
    m = s.snapshot(T0 + 60_000)["queues"]["q"]
    assert (m["offered"], m["answered"], m["abandoned"], m["waiting"]) == (5, 2, 2, 1)
    assert m["sl_answered"] == pytest.approx(1 / 2)
    assert m["sl_offered"] == pytest.approx(1 / 4)  # 1 within / (2 answered + 2 abandoned)
    assert m["sl_offered_excl_short"] == pytest.approx(1 / 3)
    assert m["sl_asterisk2"] == pytest.approx(2 / 4)  # (1 answered + 1 abandoned within T) / 4
    assert m["asa_s"] == pytest.approx(20.0)
    assert m["abandon_rate"] == pytest.approx(0.5)
    assert m["longest_wait_s"] == pytest.approx(10.0)


def test_tier_deadlines_decide_within_not_one_global_threshold() -> None:
    s = LiveStats()
    s.apply_all(
        [
            queued("g", 0, "gold", deadline=20_000),
            connected("g", 25_000, 25_000, "gold"),
            queued("b", 0, "bronze", deadline=60_000),
            connected("b", 25_000, 25_000, "bronze"),
        ]
    )
    snap = s.snapshot(T0 + 30_000)
    assert snap["tiers"]["gold"]["sl_answered"] == 0.0
    assert snap["tiers"]["bronze"]["sl_answered"] == 1.0
    assert snap["total"]["sl_answered"] == 0.5


def test_stats_from_a_router_run_match_the_run() -> None:
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5}), ("a2", {"general": 5})),
    )
    h.login("a1", "a2")
    for i in range(3):
        h.arrive(f"c{i}")
    h.at(4)
    h.accept("c0")
    h.accept("c1")
    h.at(30)
    h.send(E.CustomerLeft, contact_id="c2")
    h.end("c0")
    h.at(60)
    s = LiveStats()
    s.apply_all(h.log)
    snap = s.snapshot(h.now, {"support": h.router.serving_agents("support")})
    q = snap["queues"]["support"]
    assert (q["answered"], q["abandoned"], q["handled"]) == (2, 1, 1)
    assert q["asa_s"] == pytest.approx(4.0)
    assert q["aht_s"] == pytest.approx(26 + 10)  # talk 26 s + wrap-up 10 s
    assert snap["agents"]["busy"] == 1 and snap["agents"]["available"] == 1
    # a1 staffed 60 s: busy 4-30 s, wrap 30-40 s; a2 staffed 60 s, busy from 4 s
    assert q["occupancy"] == pytest.approx((36 + 56) / 120)
