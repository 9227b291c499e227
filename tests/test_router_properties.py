"""Property test over random histories: the router's invariants hold after every step.

Random sequences of arrivals, logins, state changes, accepts, rejects, timeouts, hang-ups, transfers, holds,
skill changes and clock advances — including inputs the router must refuse. After each step:

* no agent is over capacity, holds anything beside exclusive work, or has more open offers than allowed;
* no double booking: every offer and every piece of work is held by exactly one agent, and agrees with it;
* every contact is in exactly one state, and the event stream alone reconstructs that state;
* conservation: arrived = answered + abandoned + waiting + offered + transferred/overflowed out + failed;
* no contact waits while an agent that may take it is able to;
* agents' reported states follow the transition table and the event stream, and a refused input changes
  nothing at all;
* a lean twin — a router built with ``explain=False`` and only a random few derived event types — fed the
  same inputs makes the same offers (contact, agent, time), ends in the same state, refuses the same inputs,
  and says exactly the full router's events of the types it builds (its explanations left blank).

In CI (``CI`` set) the machine runs at least ``MIN_CI_STEPS`` steps in total, which the test asserts.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from contactcentre import events as E
from contactcentre.acd import UNEXPLAINED, Router, RouterError, strategies
from contactcentre.acd import router as router_module
from contactcentre.acd.agent import AGENT_TRANSITIONS, READY
from contactcentre.acd.contact import CONTACT_STATES, OFFERED, QUEUED, WITH_AGENT
from contactcentre.acd.router import ALL_EVENTS
from contactcentre.acd.stats import LiveStats
from contactcentre.config import parse_config

MIN_CI_STEPS = 100_000
CI = bool(os.environ.get("CI"))
EXAMPLES = int(os.environ.get("ROUTER_PROPERTY_EXAMPLES", 2000 if CI else 150))
STEPS = 100

AGENT_IDS = ["a1", "a2", "a3", "a4", "a5"]
QUEUES = ["support", "billing", "vip"]
CHANNELS = ["voice", "chat", "email"]

CONFIG: dict[str, Any] = {
    "timezone": "UTC",
    "skills": {"general": "", "billing": "", "supervisor": ""},
    "routing": {"priority_weight_s": 30, "offers_per_agent": 2, "away_after_reject": False},
    "channels": {
        "voice": {"exclusive": True, "offer_timeout_s": 10, "wrap_up_s": 5},
        "chat": {"offer_timeout_s": 15, "wrap_up_s": 0},
        "email": {"offer_timeout_s": 20, "wrap_up_s": "manual"},
    },
    "tiers": {
        "gold": {"priority": 2, "answer_s": 20, "account_manager": True, "preferred_agent_timeout_s": 15},
        "silver": {"priority": 1, "answer_s": 30},
    },
    "queues": [
        {
            "name": "support",
            "skills": {"general": 4},
            "max_wait_s": 60,  # billing moves contacts here after 90 s: max wait counts from the move
            "overflow": [
                {"after_s": 20, "relax": {"general": 1}},
                {"after_s": 60, "add_skill": {"supervisor": 1}},
            ],
        },
        {
            "name": "billing",
            "skills": {"billing": 3},
            "strategy": "most_skilled",
            "max_depth": 6,
            "when_full": "support",
            "overflow": [{"after_s": 30, "add_queues": ["support"]}, {"after_s": 90, "move_to": "support"}],
        },
        {
            "name": "vip",
            "skills": {"general": 6},
            "priority": 2,
            "strategy": "least_occupied",
            "max_depth": 3,
            "overflow": [{"after_s": 45, "leave": True}],
        },
    ],
    "agents": [
        {"id": "a1", "skills": {"general": 7}, "capacity": {"voice": 1, "chat": 2, "email": 2}},
        {"id": "a2", "skills": {"general": 3, "billing": 5}, "capacity": {"voice": 1, "chat": 3}},
        {"id": "a3", "skills": {"billing": 8}, "capacity": {"chat": 2, "email": 3}},
        {"id": "a4", "skills": {"supervisor": 5}, "capacity": {"voice": 1, "chat": 1, "email": 1}},
        {"id": "a5", "skills": {"general": 9, "billing": 1}, "capacity": {"voice": 1}},
    ],
}

steps_taken = 0

# Derived event types a lean router may be asked for (OfferMade it is always asked for: the offers compared).
DERIVED = sorted(
    (t for t in ALL_EVENTS if not t.INPUT and t not in (E.Event, E.OfferMade) and t.__module__ == E.__name__),
    key=lambda t: t.__name__,
)


def _unexplained(ev: E.Event) -> E.Event:
    return msgspec.structs.replace(ev, why=UNEXPLAINED) if type(ev) is E.OfferMade else ev


def _shadow_apply(shadow: dict[str, str], ev: E.Event) -> None:
    """Contact states as the event stream alone tells them."""
    t = type(ev)
    if t is E.ContactQueued:
        shadow[ev.contact_id] = QUEUED
    elif t is E.OfferMade:
        shadow[ev.contact_id] = OFFERED
    elif t in (E.OfferExpired, E.OfferRejected, E.OfferCancelled):
        shadow[ev.contact_id] = QUEUED
    elif t is E.ContactConnected or t is E.ContactRetrieved:
        shadow[ev.contact_id] = "connected"
    elif t is E.ContactHeld:
        shadow[ev.contact_id] = "held"
    elif t is E.WrapUpStarted:
        shadow[ev.contact_id] = "wrap_up"
    elif t is E.ContactClosed:
        shadow[ev.contact_id] = "closed"
    elif t is E.ContactAbandoned:
        shadow[ev.contact_id] = "abandoned"
    elif t is E.ContactFailed:
        shadow[ev.contact_id] = "failed"
    elif t is E.ContactOverflowed:
        if ev.left:
            shadow[ev.contact_id] = "overflowed"
    elif t is E.ContactTransferred:
        shadow[ev.contact_id] = "transferred" if ev.to_external else QUEUED


class RouterMachine(RuleBasedStateMachine):
    @initialize(
        offers_per_agent=st.sampled_from([1, 2]),
        strategy=st.sampled_from(["longest_idle", "most_skilled", "least_occupied", "round_robin", "fewest_handled"]),
        lean_reads=st.sets(st.sampled_from(DERIVED), max_size=4),
    )
    def setup(self, offers_per_agent: int, strategy: str, lean_reads: set[type[E.Event]]) -> None:
        cfg = dict(CONFIG)
        cfg["routing"] = {**CONFIG["routing"], "offers_per_agent": offers_per_agent, "strategy": strategy}
        cfg["queues"] = [
            {k: v for k, v in q.items() if k != "strategy"} if q["name"] == "support" else q for q in CONFIG["queues"]
        ]
        self.config = parse_config(cfg)
        self.router = Router(self.config, start_ms=0)
        self.lean_reads = {E.OfferMade, *lean_reads}
        self.lean = Router(self.config, start_ms=0, explain=False, events=self.lean_reads)
        brute_force_choice.agents = self.router.agents.values  # type: ignore[attr-defined]
        self.now = 0
        self.n = 0
        self.log: list[E.Event] = []
        self.shadow: dict[str, str] = {}
        self.agent_states = dict.fromkeys(AGENT_IDS, "logged_out")
        self.stats = LiveStats()
        self.connected_events = 0

    # ------------------------------------------------------------------------------------------- driving

    def _fingerprint(self, r: Router | None = None) -> Any:
        r = r or self.router
        timers = sorted((t.due_ms, t.kind, getattr(t.target, "id", "")) for t in r.timers.pending())
        return (
            timers,
            r.now_ms,
            sorted(
                (
                    c.id,
                    c.state,
                    c.queue,
                    c.agent_id,
                    c.rank,
                    c.reqs,
                    sorted(c.rejected_by),
                    c.preferred_agent_id,
                    c.sla_deadline_ms,
                    c.drained_by.id if c.drained_by else None,
                    c.pending_exit is not None,
                )
                for c in r.contacts.values()
            ),
            sorted(
                (a.id, a.state, a.presence, tuple(sorted(a.load.items())), tuple(a.offers)) for a in r.agents.values()
            ),
            sorted(r.offers),
            r.arrived,
            sorted(r.finished.items()),
            r.waiting.count,
        )

    def send(self, ev: E.Event) -> None:
        global steps_taken
        steps_taken += 1
        before = self._fingerprint()
        predicted = self.router.check(ev)
        assert self._fingerprint() == before, "check() changed the router's state"
        # check() answers for the state now; handle() first fires the timers due by the input's time
        deadline = self.router.next_deadline()
        comparable = deadline is None or deadline > ev.at_ms
        try:
            out = self.router.handle(ev)
        except RouterError as exc:
            assert self._fingerprint() == before, "a refused input changed the router's state"
            assert not comparable or str(predicted) == str(exc), (predicted, exc)
            out = self.router.advance(self.now)  # timers due before the refused input are handed over
            self._lean_agrees(lambda: self.lean.handle(ev), out, refused=str(exc))
        else:
            assert not comparable or predicted is None, (ev, predicted)
            self._lean_agrees(lambda: self.lean.handle(ev), out)
        self._take(out)

    def _lean_agrees(self, step: Any, full: list[E.Event], refused: str | None = None) -> None:
        """Apply the same step to the lean twin: same refusal, same offers, the same events of the types it
        builds, the same state afterwards."""
        brute_force_choice.agents = self.lean.agents.values  # type: ignore[attr-defined]
        try:
            lean = step()
        except RouterError as exc:
            assert refused == str(exc), (refused, exc)
            lean = self.lean.advance(self.now)
        else:
            assert refused is None, f"the lean router took what the full one refused: {refused}"
        finally:
            brute_force_choice.agents = self.router.agents.values  # type: ignore[attr-defined]
        offers = [(e.contact_id, e.agent_id, e.at_ms) for e in full if type(e) is E.OfferMade]
        assert [(e.contact_id, e.agent_id, e.at_ms) for e in lean if type(e) is E.OfferMade] == offers
        expected = [_unexplained(e) for e in full if type(e) in self.lean_reads or E.is_input(e)]
        assert E.encode_lines(lean) == E.encode_lines(expected)
        assert all(e.why is UNEXPLAINED for e in lean if type(e) is E.OfferMade)
        assert self._fingerprint(self.lean) == self._fingerprint(), "the lean router's state parted"

    def _take(self, out: list[E.Event]) -> None:
        for ev in out:
            if self.log:
                assert ev.at_ms >= self.log[-1].at_ms, "events out of time order"
            self.log.append(ev)
            _shadow_apply(self.shadow, ev)
            self.stats.apply(ev)
            if type(ev) is E.ContactConnected:
                self.connected_events += 1
            if type(ev) is E.AgentStateChanged:
                assert ev.previous == self.agent_states[ev.agent_id], (ev, self.agent_states[ev.agent_id])
                self.agent_states[ev.agent_id] = ev.state

    def _pick(self, data: st.DataObject, items: list[Any]) -> Any:
        return data.draw(st.sampled_from(sorted(items))) if items else None

    # ---------------------------------------------------------------------------------------------- rules

    @rule(ms=st.integers(0, 40_000))
    def advance_clock(self, ms: int) -> None:
        global steps_taken
        steps_taken += 1
        self.now += ms
        out = self.router.advance(self.now)
        self._lean_agrees(lambda: self.lean.advance(self.now), out)
        self._take(out)

    @rule(
        queue=st.sampled_from(QUEUES),
        channel=st.sampled_from(CHANNELS),
        tier=st.sampled_from([None, "gold", "silver"]),
        preferred=st.sampled_from([None, None, "a1", "a3"]),
        skills=st.sampled_from([{}, {}, {"billing": 2}, {"general": 3}]),
    )
    def arrive(self, queue: str, channel: str, tier: str | None, preferred: str | None, skills: dict[str, int]) -> None:
        self.n += 1
        self.send(
            E.ContactArrived(
                at_ms=self.now,
                contact_id=f"c{self.n}",
                queue=queue,
                channel=channel,
                tier=tier,
                preferred_agent_id=preferred,
                skills=skills,
            )
        )

    @rule(agent=st.sampled_from(AGENT_IDS), away=st.booleans())
    def login(self, agent: str, away: bool) -> None:
        self.send(E.AgentLoggedIn(at_ms=self.now, agent_id=agent, away_reason="lunch" if away else None))

    @rule(agent=st.sampled_from(AGENT_IDS))
    def logout(self, agent: str) -> None:
        self.send(E.AgentLoggedOut(at_ms=self.now, agent_id=agent))

    @rule(agent=st.sampled_from(AGENT_IDS))
    def ready(self, agent: str) -> None:
        self.send(E.AgentReady(at_ms=self.now, agent_id=agent))

    @rule(agent=st.sampled_from(AGENT_IDS), reason=st.sampled_from(["break", "training"]))
    def away(self, agent: str, reason: str) -> None:
        self.send(E.AgentAway(at_ms=self.now, agent_id=agent, reason=reason))

    @rule(data=st.data(), accept=st.booleans())
    def answer_offer(self, data: st.DataObject, accept: bool) -> None:
        oid = self._pick(data, list(self.router.offers))
        if oid is None:
            return
        o = self.router.offers[oid]
        cls = E.OfferAccepted if accept else E.OfferRejected
        self.send(cls(at_ms=self.now, offer_id=oid, contact_id=o.contact.id, agent_id=o.agent.id))

    @rule(data=st.data())
    def stale_or_wrong_offer(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(AGENT_IDS))
        oid = data.draw(st.sampled_from(["o1", "o2", "o7", *sorted(self.router.offers)]))
        cid = self._pick(data, list(self.router.contacts)) or "c0"
        self.send(E.OfferAccepted(at_ms=self.now, offer_id=oid, contact_id=cid, agent_id=agent))

    @rule(data=st.data())
    def customer_leaves(self, data: st.DataObject) -> None:
        cid = self._pick(data, list(self.router.contacts))
        if cid is not None:
            self.send(E.CustomerLeft(at_ms=self.now, contact_id=cid))

    @rule(data=st.data(), action=st.sampled_from(["end", "hold", "retrieve", "wrap", "disposition"]))
    def agent_works(self, data: st.DataObject, action: str) -> None:
        cid = self._pick(data, [c.id for c in self.router.contacts.values() if c.agent_id])
        if cid is None:
            return
        c = self.router.contacts[cid]
        agent = data.draw(st.sampled_from([c.agent_id, c.agent_id, "a4"]))
        cls = {
            "end": E.ContactEnded,
            "hold": E.ContactHeld,
            "retrieve": E.ContactRetrieved,
            "wrap": E.WrapUpEnded,
        }.get(action)
        if cls is None:
            self.send(E.DispositionSet(at_ms=self.now, contact_id=cid, agent_id=agent, code="done"))
        else:
            self.send(cls(at_ms=self.now, contact_id=cid, agent_id=agent))

    @rule(data=st.data(), kind=st.sampled_from(["queue", "agent", "external", "bad"]))
    def transfer(self, data: st.DataObject, kind: str) -> None:
        cid = self._pick(data, [c.id for c in self.router.contacts.values() if c.state in ("connected", "held")])
        if cid is None:
            return
        c = self.router.contacts[cid]
        kw: dict[str, Any] = {}
        if kind == "queue":
            kw["to_queue"] = data.draw(st.sampled_from(QUEUES))
        elif kind == "agent":
            kw["to_agent_id"] = data.draw(st.sampled_from(AGENT_IDS))
        elif kind == "external":
            kw["to_external"] = "+31205550100"
        self.send(E.TransferRequested(at_ms=self.now, contact_id=cid, agent_id=c.agent_id, **kw))

    @rule(agent=st.sampled_from(AGENT_IDS), general=st.integers(1, 10), billing=st.integers(0, 10))
    def change_skills(self, agent: str, general: int, billing: int) -> None:
        skills = {"general": general, **({"billing": billing} if billing else {})}
        self.send(E.AgentSkillsChanged(at_ms=self.now, agent_id=agent, skills=skills))

    # ------------------------------------------------------------------------------------------ invariants

    @invariant()
    def capacity_and_no_double_booking(self) -> None:
        r = self.router
        if not hasattr(self, "router"):
            return
        held: Counter[str] = Counter()
        exclusive = {ch for ch, c in self.config.channels.items() if c.exclusive}
        limit = self.config.routing.offers_per_agent
        for a in r.agents.values():
            per_channel: Counter[str] = Counter()
            for oid, o in a.offers.items():
                assert o.agent is a and r.offers[oid] is o and o.contact.state == OFFERED
                assert o.contact.offer is o and o.contact.agent_id == a.id
                per_channel[o.contact.channel] += 1
                held[o.contact.id] += 1
            for cid, c in a.work.items():
                assert c.agent_id == a.id and c.state in ("connected", "held", "wrap_up"), c
                per_channel[c.channel] += 1
                held[cid] += 1
            assert len(a.offers) <= limit
            for ch, n in per_channel.items():
                assert n <= a.capacity.get(ch, 0), f"{a.id} over capacity on {ch}: {n}"
                assert a.load.get(ch, 0) == n
            assert a.total_load == sum(per_channel.values())
            if any(per_channel[ch] for ch in exclusive):
                assert a.total_load == 1, f"{a.id} holds something beside exclusive work: {per_channel}"
            assert a.state == a.derive_state()
            assert a.state == self.agent_states[a.id]
        for c in r.contacts.values():
            expected = 1 if c.state in WITH_AGENT else 0
            assert held[c.id] == expected, f"{c} held by {held[c.id]} agents"

    @invariant()
    def one_state_each_and_the_log_agrees(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        in_groups = Counter(c.id for g in r.waiting for c in g.contacts)
        for c in r.contacts.values():
            assert c.state in CONTACT_STATES
            assert in_groups[c.id] == (1 if c.state == QUEUED else 0), c
            assert (c.group is not None) == (c.state == QUEUED)
            assert self.shadow.get(c.id) == c.state, (c, self.shadow.get(c.id))
        assert sum(in_groups.values()) == r.waiting.count

    @invariant()
    def conservation(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        census = r.census()
        assert sum(census.values()) == r.arrived
        answered = sum(census[s] for s in ("connected", "held", "wrap_up", "closed"))
        outs = sum(census[s] for s in ("transferred", "overflowed", "failed"))
        assert r.arrived == answered + census["abandoned"] + census["queued"] + census["offered"] + outs
        snap = self.stats.snapshot(self.now)["total"]
        assert snap["waiting"] == census["queued"] + census["offered"]
        assert snap["answered"] == self.connected_events

    @invariant()
    def nobody_waits_beside_an_able_agent(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        for c in r.contacts.values():
            if c.state != QUEUED:
                continue
            for a in r.agents.values():
                assert not r.eligible(c, a), f"{c} waits although {a} may take it"

    @invariant()
    def availability_lists_agree(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        for a in r.agents.values():
            assert set(a.listed) == {ch for ch in a.capacity if r.can_take(a, ch)}, a
        assert sum(1 for _ in r.offers) == sum(len(a.offers) for a in r.agents.values())

    @invariant()
    def no_timer_outlives_what_it_is_for(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        for t in r.timers.pending():
            assert t.due_ms > r.now_ms, t  # everything due has fired
            target = t.target
            if type(target).__name__ == "Offer":
                assert r.offers.get(target.id) is target, t
            else:
                assert r.contacts.get(target.id) is target, t

    @invariant()
    def drains_pair_up(self) -> None:
        """An agent drains for at most one waiting exclusive contact, which knows it, and vice versa."""
        if not hasattr(self, "router"):
            return
        r = self.router
        for a in r.agents.values():
            x = a.draining_for
            if x is not None:
                assert x.drained_by is a and x.state == QUEUED and x.channel == "voice", (a, x)
                assert a.total_load > 0 and a.presence == READY, a
        for c in r.contacts.values():
            if c.drained_by is not None:
                assert c.drained_by.draining_for is c

    @invariant()
    def staffing_counts_agree(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        for (channel, reqs), total in r.staffing._totals.items():
            brute = sum(
                a.capacity.get(channel, 0)
                for a in r.agents.values()
                if a.presence == READY and any(a.meets(q) for q in reqs)
            )
            assert total == brute, (channel, reqs, total, brute)

    def teardown(self) -> None:
        if not hasattr(self, "router"):
            return
        for ev in self.log:
            if type(ev) is E.AgentStateChanged:
                assert any(ev.state in targets for (s, _), targets in AGENT_TRANSITIONS.items() if s == ev.previous), ev


def brute_force_choice(contact: Any, strategy: str, avail: Any, **kw: Any) -> tuple[Any, Any]:
    """The oracle: score every agent on the floor the slow, obvious way, and check the indexed walk agrees."""
    got = strategies.choose_agent(contact, strategy, avail, **kw)
    cursor, n, blocked = kw.get("cursor", -1), kw.get("agent_count", 0), kw.get("blocked")
    best = None
    for a in brute_force_choice.agents():  # type: ignore[attr-defined]
        if a.id in contact.rejected_by or not avail.can_take(a, contact.channel):
            continue
        keys = [strategies._score(strategy, a, r, cursor, n) for r in contact.reqs if a.meets(r)]
        if keys and not (blocked and blocked(a)):
            cand = (min(keys), a.listing_seq, a.id)
            best = cand if best is None or cand < best else best
    assert (got[0].id if got[0] else None) == (best[2] if best else None), (contact, strategy, got, best)
    return got


def test_router_invariants_hold_over_random_histories(monkeypatch: Any) -> None:
    global steps_taken
    steps_taken = 0
    monkeypatch.setattr(router_module, "choose_agent", brute_force_choice)
    run_state_machine_as_test(
        RouterMachine, settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None)
    )
    print(f"router property test: {EXAMPLES} histories, {steps_taken} steps")
    if CI:
        assert steps_taken >= MIN_CI_STEPS, f"only {steps_taken} steps ran; CI promises {MIN_CI_STEPS}"
