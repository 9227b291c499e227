"""The router: a sans-I/O, deterministic automatic contact distributor.

Feed it input events (``handle``), let time pass (``advance``), and it returns what followed: the input
itself, then queued / offered / connected / SLA / agent-state events. It never reads a clock, never sleeps
and never touches a socket; the live server and the simulator drive the same object::

    out = router.handle(ContactArrived(at_ms=now, contact_id="c1", queue="support", channel="chat"))
    deadline = router.next_deadline()     # earliest offer expiry / SLA warning / overflow step, or None
    out += router.advance(deadline)       # fires everything due at or before it, each at its own instant

An input the router refuses raises a ``RouterError`` and changes nothing. Timer events that fell due before
a refused input are not lost: they come out with the next call.

Invariants (checked by the property tests): no agent holds more than its capacity, or anything beside
exclusive work; every contact is in exactly one state; arrived = finished + in the centre; and no contact
waits while an agent that may take it can.
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from contactcentre.acd import timers as T
from contactcentre.acd.agent import (
    AGENT_TRANSITIONS,
    AVAILABLE,
    AWAY,
    BUSY,
    LOGGED_OUT,
    READY,
    RESERVED,
    WRAP_UP,
    Agent,
)
from contactcentre.acd.availability import Availability
from contactcentre.acd.calendar import BusinessCalendar, day_number
from contactcentre.acd.contact import CONNECTED, HELD, OFFERED, QUEUED, TERMINAL, Contact
from contactcentre.acd.contact import WRAP_UP as C_WRAP_UP
from contactcentre.acd.errors import (
    DuplicateContact,
    IllegalTransition,
    RouterError,
    StaleOffer,
    TimeWentBackwards,
    UnknownAgent,
    UnknownContact,
    UnknownQueue,
)
from contactcentre.acd.ewt import PositionAht, WaitEstimator, WaitSituation
from contactcentre.acd.offer import Offer
from contactcentre.acd.queue import QueuePlan, StepPlan, as_req, build_plans, sla_policy
from contactcentre.acd.staffing import Staffing
from contactcentre.acd.strategies import choose_agent, choose_contact
from contactcentre.acd.timers import TimerHeap
from contactcentre.acd.waiting import WaitIndex, reqs_text
from contactcentre.config import ALWAYS_OPEN, MAX_LEVEL, MIN_LEVEL, CentreConfig, QueueConfig
from contactcentre.events import (
    AgentAway,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentReady,
    AgentSkillsChanged,
    AgentStateChanged,
    Candidate,
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConnected,
    ContactEnded,
    ContactFailed,
    ContactHeld,
    ContactOverflowed,
    ContactQueued,
    ContactRetrieved,
    ContactTransferred,
    CustomerLeft,
    DispositionSet,
    Event,
    Explanation,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
    SlaBreached,
    SlaWarned,
    TransferRequested,
    WrapUpEnded,
    WrapUpExpired,
    WrapUpStarted,
)

_STAFFED = (AVAILABLE, RESERVED, BUSY, WRAP_UP)
_HANDLING = (BUSY, WRAP_UP)


class ArrivalAdjust(NamedTuple):
    """What a routing hook adds to an arrival from customer data: a tier, extra priority, a preferred agent
    (e.g. the account manager), extra required skills."""

    tier: str | None = None
    priority: int = 0
    preferred_agent_id: str | None = None
    skills: dict[str, int] | None = None


class RoutingHooks(Protocol):
    """Customer-data routing (ANI lookup, CRM fields). Pure and deterministic: replay calls it again."""

    def on_arrival(self, event: ContactArrived, queue: QueueConfig) -> ArrivalAdjust | None: ...


class CustomerDirectory:
    """A ready hook over an in-memory directory: customer id → (tier, account manager agent id)."""

    def __init__(self, customers: dict[str, tuple[str | None, str | None]]) -> None:
        self._customers = customers

    def on_arrival(self, event: ContactArrived, queue: QueueConfig) -> ArrivalAdjust | None:
        got = self._customers.get(event.customer_id or "")
        if got is None:
            return None
        tier, manager = got
        return ArrivalAdjust(tier=tier, preferred_agent_id=manager)


class Router:
    def __init__(
        self,
        config: CentreConfig,
        *,
        start_ms: int = 0,
        estimator: WaitEstimator | None = None,
        hooks: RoutingHooks | None = None,
    ) -> None:
        self.config = config
        self.now_ms = start_ms
        r = config.routing
        self._weight_ms = round(r.priority_weight_s * 1000)
        self._pref_ms = round(r.preferred_agent_timeout_s * 1000)
        self._transfer_pref_ms = round(r.transfer_agent_timeout_s * 1000)
        self._away_after_missed = r.away_after_missed_offer
        self._away_after_reject = r.away_after_reject
        channels = {ch: config.channel(ch) for ch in ("voice", "chat", "email", "callback", "outbound")}
        channels.update(config.channels)
        self._exclusive = {ch: c.exclusive for ch, c in channels.items()}
        self._exclusive_channels = tuple(ch for ch, x in self._exclusive.items() if x)
        self._drain = r.drain_for_exclusive
        self._drained: dict[str, Agent] = {}  # held back for exclusive work (see _drains_for)
        self._recheck: dict[str, Agent] = {}
        self._offer_ms = {ch: round(c.offer_timeout_s * 1000) for ch, c in channels.items()}
        self._wrap_ms: dict[str, int | None] = {
            ch: None if c.wrap_up_s == "manual" else round(c.wrap_up_s * 1000) for ch, c in channels.items()
        }
        self.calendars: dict[str, BusinessCalendar] = {ALWAYS_OPEN: BusinessCalendar(ALWAYS_OPEN, None)}
        for name, cal in config.calendars.items():
            self.calendars[name] = BusinessCalendar(name, cal)
        self.queues: dict[str, QueuePlan] = build_plans(config, self.calendars)
        self._queue_cfg = {q.name: q for q in config.queues}
        self.estimator: WaitEstimator = estimator or PositionAht(
            {ch: round(c.default_aht_s * 1000) for ch, c in channels.items()}
        )
        self.hooks = hooks
        strategies = {r.strategy, *(q.strategy for q in config.queues if q.strategy)}
        self.avail = Availability(self._exclusive, r.offers_per_agent, strategies)
        self.waiting = WaitIndex()
        self.timers = TimerHeap()
        self.agents: dict[str, Agent] = {}
        self._skill_roster: dict[str, dict[str, Agent]] = {}
        for a in config.agents:
            self._add_agent(a.id, a.name, dict(a.skills), dict(a.capacity or r.default_capacity))
        self.contacts: dict[str, Contact] = {}  # in the centre now; finished ones are only counted
        self.offers: dict[str, Offer] = {}
        self.arrived = 0
        self.finished: Counter[str] = Counter()
        self._seq = 0
        self._offer_seq = 0
        self._rr: dict[str, int] = {}
        self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._day, self._next_midnight = day_number(start_ms, self._tz)
        self.staffing = Staffing(self._roster)
        self._out: list[Event] = []
        self._dispatch: dict[type, Callable[[Event], None]] = {
            ContactArrived: self._on_arrived,  # type: ignore[dict-item]
            CustomerLeft: self._on_customer_left,  # type: ignore[dict-item]
            AgentLoggedIn: self._on_login,  # type: ignore[dict-item]
            AgentLoggedOut: self._on_logout,  # type: ignore[dict-item]
            AgentReady: self._on_ready,  # type: ignore[dict-item]
            AgentAway: self._on_away,  # type: ignore[dict-item]
            AgentSkillsChanged: self._on_skills,  # type: ignore[dict-item]
            OfferAccepted: self._on_accept,  # type: ignore[dict-item]
            OfferRejected: self._on_reject,  # type: ignore[dict-item]
            ContactHeld: self._on_hold,  # type: ignore[dict-item]
            ContactRetrieved: self._on_retrieve,  # type: ignore[dict-item]
            ContactEnded: self._on_end,  # type: ignore[dict-item]
            TransferRequested: self._on_transfer,  # type: ignore[dict-item]
            WrapUpEnded: self._on_wrap_done,  # type: ignore[dict-item]
            DispositionSet: self._on_disposition,  # type: ignore[dict-item]
        }
        self._fire_kind: dict[str, Callable[[object], None]] = {
            T.OFFER_EXPIRY: self._fire_offer_expiry,  # type: ignore[dict-item]
            T.SLA_WARN: self._fire_sla_warn,  # type: ignore[dict-item]
            T.SLA_BREACH: self._fire_sla_breach,  # type: ignore[dict-item]
            T.OVERFLOW_STEP: self._fire_overflow_step,  # type: ignore[dict-item]
            T.MAX_WAIT: self._fire_max_wait,  # type: ignore[dict-item]
            T.PREFERRED_END: self._fire_preferred_end,  # type: ignore[dict-item]
            T.REOFFER: self._fire_reoffer,  # type: ignore[dict-item]
            T.WRAP_UP_END: self._fire_wrap_end,  # type: ignore[dict-item]
        }

    # ------------------------------------------------------------------------------------------ public API

    def handle(self, event: Event) -> list[Event]:
        """Apply one input event at ``event.at_ms`` (after firing every timer due by then)."""
        handler = self._dispatch.get(type(event))
        if handler is None:
            raise RouterError(f"the router does not take {type(event).__name__} events")
        if event.at_ms < self.now_ms:
            raise TimeWentBackwards(event.at_ms, self.now_ms)
        self._fire_due(event.at_ms)
        handler(event)
        self._recheck_drained()
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> int | None:
        """When ``advance`` next has something to do, or ``None`` if nothing is scheduled."""
        return self.timers.next_due()

    def advance(self, now_ms: int) -> list[Event]:
        """Fire every timer due at or before ``now_ms``, each at its own deadline, in order."""
        if now_ms < self.now_ms:
            raise TimeWentBackwards(now_ms, self.now_ms)
        self._fire_due(now_ms)
        out, self._out = self._out, []
        return out

    def census(self) -> Counter[str]:
        """Contacts by state, finished ones included: the sum is every contact that ever arrived."""
        c = Counter(x.state for x in self.contacts.values())
        c.update(self.finished)
        return c

    def waiting_contacts(self, queue: str | None = None) -> list[Contact]:
        """Queued contacts in service order (best first), optionally of one queue."""
        out = [c for g in self.waiting for c in g.contacts if queue is None or c.queue == queue]
        out.sort(key=lambda c: c.rank)
        return out

    def eligible(self, contact: Contact, agent: Agent) -> bool:
        """May ``agent`` take ``contact`` right now? (The definition the invariants are checked against.)"""
        if contact.state != QUEUED or agent.id in contact.rejected_by:
            return False
        if not self.avail.can_take(agent, contact.channel):
            return False
        if (
            self._drain
            and not self._exclusive.get(contact.channel, False)
            and self._drains_for(agent, contact.rank)
        ):
            return False
        if contact.preferred_agent_id is not None:
            return agent.id == contact.preferred_agent_id
        return any(agent.meets(r) for r in contact.reqs)

    def can_take(self, agent: Agent, channel: str) -> bool:
        return self.avail.can_take(agent, channel)

    def agents_serving(self, queue: str) -> list[str]:
        """Agents whose skills meet the queue's base requirement (for per-queue occupancy)."""
        reqs = self.queues[queue].reqs
        return [a.id for a in self.agents.values() if any(a.meets(r) for r in reqs)]

    # -------------------------------------------------------------------------------------------- timers

    def _fire_due(self, now_ms: int) -> None:
        pop = self.timers.pop_due
        fire = self._fire_kind
        while (t := pop(now_ms)) is not None:
            self.now_ms = t.due_ms
            fire[t.kind](t.target)
            self._recheck_drained()
        self.now_ms = now_ms

    def _emit(self, event: Event) -> None:
        self._out.append(event)
        if type(event) is ContactClosed:
            self.estimator.observe(event)

    # ----------------------------------------------------------------------------------------- contacts

    def _contact(self, contact_id: str) -> Contact:
        c = self.contacts.get(contact_id)
        if c is None:
            raise UnknownContact(contact_id)
        return c

    def _agent(self, agent_id: str) -> Agent:
        a = self.agents.get(agent_id)
        if a is None:
            raise UnknownAgent(agent_id)
        return a

    def _on_arrived(self, ev: ContactArrived) -> None:
        if ev.contact_id in self.contacts:
            raise DuplicateContact(ev.contact_id)
        plan = self.queues.get(ev.queue)
        if plan is None:
            raise UnknownQueue(ev.queue)
        if ev.channel not in plan.channels:
            raise RouterError(f"queue {ev.queue!r} does not serve {ev.channel!r}")
        adjust = self.hooks.on_arrival(ev, self._queue_cfg[ev.queue]) if self.hooks else None
        tier = ev.tier or (adjust.tier if adjust else None)
        if tier is not None and tier not in self.config.tiers:
            raise RouterError(f"unknown tier {tier!r}")
        extra = dict(adjust.skills or {}) if adjust else {}
        extra.update(ev.skills)
        _check_levels(extra)
        self._emit(ev)
        self._seq += 1
        self.arrived += 1
        c = Contact(ev.contact_id, ev.channel, ev.queue, self._seq)
        c.customer_id = ev.customer_id
        c.tier = tier
        c.attributes = ev.attributes
        tier_cfg = self.config.tiers.get(tier) if tier else None
        c.bonus = ev.priority + (adjust.priority if adjust else 0) + (tier_cfg.priority if tier_cfg else 0)
        c.extra = as_req(extra)
        preferred = ev.preferred_agent_id or (adjust.preferred_agent_id if adjust else None)
        if preferred is not None and preferred in self.agents:
            c.preferred_agent_id = preferred
            if tier_cfg is not None and tier_cfg.account_manager:
                c.preferred_ms = round(tier_cfg.preferred_agent_timeout_s * 1000)
            else:
                c.preferred_ms = self._pref_ms
        self.contacts[c.id] = c
        now = self.now_ms

        via = None
        if not plan.hours.always_open and not plan.hours.is_open(now) and plan.when_closed != "accept":
            if plan.when_closed == "refuse":
                return self._fail(c, plan, "closed")
            via, plan = f"closed:{plan.name}", self.queues[plan.when_closed]
        if plan.max_depth is not None and plan.depth >= plan.max_depth:
            if plan.when_full == "refuse":
                return self._fail(c, plan, "queue_full")
            via, plan = f"full:{plan.name}", self.queues[plan.when_full]
            if plan.max_depth is not None and plan.depth >= plan.max_depth:
                return self._fail(c, plan, "queue_full")
        c.step_to("queue")
        self._enter_queue(c, plan, since=now, via=via, new_sla=True)

    def _fail(self, c: Contact, plan: QueuePlan, reason: str) -> None:
        c.step_to("fail")
        self._emit(
            ContactFailed(
                at_ms=self.now_ms,
                contact_id=c.id,
                queue=plan.name,
                channel=c.channel,
                reason=reason,
                tier=c.tier,
            )
        )
        self._finish(c)

    def _set_reqs(self, c: Contact, plan: QueuePlan) -> None:
        reqs = plan.reqs
        if c.extra:
            reqs = tuple(as_req({**dict(r), **dict(c.extra)}) for r in reqs)
        c.reqs = reqs
        c.reqs_text = reqs_text(reqs)

    def _rerank(self, c: Contact, plan: QueuePlan) -> None:
        c.priority = plan.priority + c.bonus
        c.key = c.waiting_since_ms - c.priority * self._weight_ms
        c.rank = (c.key, c.seq)

    def _enter_queue(
        self, c: Contact, plan: QueuePlan, *, since: int, via: str | None, new_sla: bool
    ) -> None:
        """Put a contact (already in state ``queued``) into ``plan``'s queue and try to place it."""
        now = self.now_ms
        c.queue = plan.name
        c.waiting_since_ms = since
        c.step = 0
        c.pending_exit = None
        plan.depth += 1
        self._set_reqs(c, plan)
        self._rerank(c, plan)
        timers = self.timers
        if c.preferred_agent_id is not None:
            # With no window, the preferred agent gets it only if free right now; otherwise it waits for
            # that agent up to the window. A logged-out agent is not waited for.
            pa = self.agents[c.preferred_agent_id]
            if pa.presence == LOGGED_OUT or (c.preferred_ms <= 0 and not self.avail.can_take(pa, c.channel)):
                c.preferred_agent_id = None
            elif c.preferred_ms > 0:
                c.preferred_timer = timers.set(now + c.preferred_ms, T.PREFERRED_END, c)
        if new_sla:
            for t in c.sla_timers:
                timers.cancel(t)
            tier_cfg = self.config.tiers.get(c.tier) if c.tier else None
            policy = sla_policy(plan, c.channel, c.tier, tier_cfg, self.calendars)
            warn_at, breach_at = policy.deadlines(since)
            c.sla_deadline_ms = breach_at
            c.sla_timers = [timers.set(warn_at, T.SLA_WARN, c), timers.set(breach_at, T.SLA_BREACH, c)]
        if plan.steps:
            c.timers.append(timers.set(now + plan.steps[0].after_ms, T.OVERFLOW_STEP, c))
        if plan.max_wait_ms is not None:
            c.timers.append(timers.set(since + plan.max_wait_ms, T.MAX_WAIT, c))
        group = self.waiting.add(c)
        agent, why = self._find_agent(c)
        if agent is None:
            ewt = self.estimator.estimate(
                WaitSituation(plan.name, c.channel, group.position(c), self._servers(c), False, c.priority)
            )
        else:
            ewt = 0
        self._emit(
            ContactQueued(
                at_ms=now,
                contact_id=c.id,
                queue=plan.name,
                channel=c.channel,
                priority=c.priority,
                tier=c.tier,
                position=group.position(c) + 1,
                ewt_ms=ewt,
                sla_deadline_ms=c.sla_deadline_ms,
                via=via,
                waiting_since_ms=since if since != now else None,
            )
        )
        if agent is not None:
            assert why is not None
            self._offer(c, agent, why)

    def _find_agent(self, c: Contact) -> tuple[Agent | None, Explanation | None]:
        holds_back = self._holds_back_for(c)
        if c.preferred_agent_id is not None:
            a = self.agents[c.preferred_agent_id]
            if (
                a.id not in c.rejected_by
                and self.avail.can_take(a, c.channel)
                and not (holds_back and holds_back(a))
            ):
                return a, Explanation(
                    trigger="contact",
                    strategy="preferred_agent",
                    requirement=f"preferred:{a.id}",
                    step=c.step,
                    considered=1,
                    candidates=[Candidate(id=a.id, score=[a.idle_since_ms])],
                )
            return None, None
        plan = self.queues[c.queue]
        return choose_agent(
            c,
            plan.strategy,
            self.avail,
            step=c.step,
            cursor=self._rr.get(plan.name, -1),
            agent_count=len(self.agents),
            blocked=holds_back,
        )

    # Blending voice with chat: an agent on two chats can't take a call (voice is exclusive), and if it keeps
    # pulling new chats it never can, so calls starve behind a stream of chats. With ``drain_for_exclusive``
    # an agent holding work takes nothing new ranked after a waiting exclusive contact it could take once
    # free: it drains, and the call is its next contact. Agents held back this way are remembered and looked
    # at again when exclusive work stops waiting (answered elsewhere, abandoned), so nothing is left idle.

    def _drains_for(self, a: Agent, rank: tuple[int, int]) -> bool:
        """Does ``a`` hold back from work ranked ``rank`` for an exclusive contact that ranks before it?"""
        if not a.total_load or not self.waiting.count_on(self._exclusive_channels):
            return False
        aid = a.id
        for ch in self._exclusive_channels:
            if not a.capacity.get(ch, 0):
                continue
            for g in self.waiting.groups_for(a, ch):
                for x in g.contacts:
                    if aid in x.rejected_by:
                        continue
                    if x.rank < rank:
                        return True
                    break
        return False

    def _holds_back_for(self, c: Contact) -> Callable[[Agent], bool] | None:
        """The drain test for offers of ``c``, or ``None`` when it cannot apply (saves the walk its cost)."""
        if not self._drain or self._exclusive.get(c.channel, False):
            return None
        if not self.waiting.count_on(self._exclusive_channels):
            return None
        rank = c.rank

        def held(a: Agent) -> bool:
            if self._drains_for(a, rank):
                self._drained[a.id] = a
                return True
            return False

        return held

    def _release_drained(self) -> None:
        """Exclusive work stopped waiting: agents that held back for it may take other work again."""
        if self._drained:
            self._recheck.update(self._drained)
            self._drained.clear()

    def _recheck_drained(self) -> None:
        while self._recheck:
            _, a = self._recheck.popitem()
            self._route_agent(a)

    def _route_contact(self, c: Contact) -> None:
        if c.state != QUEUED:
            return
        agent, why = self._find_agent(c)
        if agent is not None:
            assert why is not None
            self._offer(c, agent, why)

    def _route_agent(self, a: Agent) -> None:
        """Give a freed agent the best waiting work it may take, until it can take no more."""
        avail = self.avail
        while True:
            channels = tuple(ch for ch in a.capacity if avail.can_take(a, ch))
            if not channels or not self.waiting.count:
                return
            c, why = choose_contact(a, channels, self.waiting)
            if c is None:
                return
            assert why is not None
            if self._drain and not self._exclusive.get(c.channel, False) and self._drains_for(a, c.rank):
                self._drained[a.id] = a
                return
            self._offer(c, a, why)

    def _servers(self, c: Contact) -> int:
        """Capacity on ``c``'s channel of the agents ready now who may serve it (for EWT)."""
        if c.preferred_agent_id is not None:
            a = self.agents[c.preferred_agent_id]
            return a.capacity.get(c.channel, 0) if a.presence == READY else 0
        return self.staffing.servers(c.channel, c.reqs)

    def _roster(self, req: tuple[tuple[str, int], ...]) -> Iterator[Agent]:
        if not req:
            return iter(self.agents.values())
        best: dict[str, Agent] | None = None
        for skill, _ in req:
            r = self._skill_roster.get(skill, {})
            if best is None or len(r) < len(best):
                best = r
        return iter((best or {}).values())

    # -------------------------------------------------------------------------------------------- offers

    def _offer(self, c: Contact, a: Agent, why: Explanation) -> None:
        allowed = a.must("offer")
        c.must("offer")
        now = self.now_ms
        self.waiting.remove(c)
        c.step_to("offer")
        self._offer_seq += 1
        oid = f"o{self._offer_seq}"
        ch = c.channel
        o = Offer(oid, c, a, now, now + self._offer_ms[ch])
        o.timer = self.timers.set(o.expires_ms, T.OFFER_EXPIRY, o)
        c.offer = o
        c.agent_id = a.id
        self.offers[oid] = o
        a.offers[oid] = o
        self._load(a, ch, +1)
        self._rr[c.queue] = a.ordinal
        if self._exclusive.get(ch, False):
            self._release_drained()
        self._emit(
            OfferMade(
                at_ms=now,
                offer_id=oid,
                contact_id=c.id,
                agent_id=a.id,
                queue=c.queue,
                channel=ch,
                expires_ms=o.expires_ms,
                why=why,
            )
        )
        self._settle(a, allowed)
        self.avail.relist(a, now, moved=True)

    def _load(self, a: Agent, channel: str, delta: int) -> None:
        a.load[channel] = a.load.get(channel, 0) + delta
        a.total_load += delta
        if self._exclusive.get(channel, False):
            a.exclusive_load += delta

    def _open_offer(self, offer_id: str, contact_id: str, agent_id: str) -> Offer:
        o = self.offers.get(offer_id)
        if o is None:
            raise StaleOffer(offer_id, "no such open offer (expired, cancelled or already answered)")
        if o.contact.id != contact_id or o.agent.id != agent_id:
            raise StaleOffer(offer_id, f"it is for contact {o.contact.id!r} and agent {o.agent.id!r}")
        return o

    def _close_offer(self, o: Offer, action: str) -> Contact:
        """Take an open offer off the books and put its contact back in the queue at its old place."""
        c, a = o.contact, o.agent
        self.timers.cancel(o.timer)
        del self.offers[o.id]
        del a.offers[o.id]
        self._load(a, c.channel, -1)
        c.offer = None
        c.agent_id = None
        c.step_to(action)
        if c.preferred_agent_id == a.id:  # the preferred agent had its chance: open it to everyone
            self.timers.cancel(c.preferred_timer)
            c.preferred_timer = None
            c.preferred_agent_id = None
        self.waiting.add(c)
        return c

    def _exclude(self, c: Contact, agent_id: str) -> None:
        """Don't offer ``c`` straight back to an agent that just turned it down, for one offer timeout."""
        c.rejected_by.add(agent_id)
        self.timers.cancel(c.exclusion_timer)
        c.exclusion_timer = self.timers.set(self.now_ms + self._offer_ms[c.channel], T.REOFFER, c)

    def _back_in_queue(self, c: Contact) -> None:
        """A contact is waiting again after an offer fell through: carry out an overflow exit that fired
        meanwhile, or look for another agent."""
        if c.pending_exit is not None:
            (exit_, actions), c.pending_exit = c.pending_exit, None
            if exit_ == "leave":
                return self._overflow_out(c, actions)
            return self._move(c, self.queues[exit_], actions)
        self._route_contact(c)

    def _on_accept(self, ev: OfferAccepted) -> None:
        o = self._open_offer(ev.offer_id, ev.contact_id, ev.agent_id)
        c, a = o.contact, o.agent
        allowed = a.must("accept")
        c.must("accept")
        self._emit(ev)
        now = self.now_ms
        self.timers.cancel(o.timer)
        del self.offers[o.id]
        del a.offers[o.id]
        c.offer = None
        c.step_to("accept")
        c.connected_ms = now
        c.held_ms = 0
        a.work[c.id] = c
        a.active += 1
        self._leave_queue(c)
        self._emit(
            ContactConnected(
                at_ms=now,
                contact_id=c.id,
                agent_id=a.id,
                queue=c.queue,
                channel=c.channel,
                wait_ms=now - c.waiting_since_ms,
                tier=c.tier,
            )
        )
        self._settle(a, allowed)
        self.avail.relist(a, now, moved=False)
        self._route_agent(a)

    def _leave_queue(self, c: Contact) -> None:
        """The contact stops waiting in its queue (answered, transferred out, finished): stop its clocks."""
        timers = self.timers
        for t in c.timers:
            timers.cancel(t)
        c.timers = []
        for t in c.sla_timers:
            timers.cancel(t)
        c.sla_timers = []
        timers.cancel(c.preferred_timer)
        c.preferred_timer = None
        timers.cancel(c.exclusion_timer)
        c.exclusion_timer = None
        c.rejected_by.clear()
        c.preferred_agent_id = None
        self.queues[c.queue].depth -= 1

    def _on_reject(self, ev: OfferRejected) -> None:
        o = self._open_offer(ev.offer_id, ev.contact_id, ev.agent_id)
        c, a = o.contact, o.agent
        allowed = a.must("reject")
        c.must("reject")
        self._emit(ev)
        self._close_offer(o, "reject")
        self._exclude(c, a.id)
        requeued = [c]
        if self._away_after_reject:
            requeued += self._go_away(a, "rejected_offer")
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        for x in requeued:
            self._back_in_queue(x)
        self._route_agent(a)

    def _fire_offer_expiry(self, o: Offer) -> None:
        c, a = o.contact, o.agent
        allowed = a.must("expire")
        self._emit(OfferExpired(at_ms=self.now_ms, offer_id=o.id, contact_id=c.id, agent_id=a.id))
        self._close_offer(o, "expire")
        self._exclude(c, a.id)
        requeued = [c]
        if self._away_after_missed:
            requeued += self._go_away(a, "missed_offer")
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        for x in requeued:
            self._back_in_queue(x)
        self._route_agent(a)

    def _cancel_offers(self, a: Agent, reason: str) -> list[Contact]:
        out = []
        for o in list(a.offers.values()):
            self._emit(
                OfferCancelled(
                    at_ms=self.now_ms, offer_id=o.id, contact_id=o.contact.id, agent_id=a.id, reason=reason
                )
            )
            out.append(self._close_offer(o, "cancel"))
        return out

    def _go_away(self, a: Agent, reason: str) -> list[Contact]:
        self._set_presence(a, AWAY, reason)
        return self._cancel_offers(a, "agent_away")

    def _set_presence(self, a: Agent, presence: str, reason: str | None) -> None:
        self.staffing.leave(a)
        a.presence = presence
        a.away_reason = reason
        self.staffing.join(a)

    # ------------------------------------------------------------------------------ customers and handling

    def _on_customer_left(self, ev: CustomerLeft) -> None:
        c = self._contact(ev.contact_id)
        state = c.state
        if state == C_WRAP_UP:
            return  # the agent had already finished: nothing changes, nothing to log
        if state in (CONNECTED, HELD):
            a = self.agents[c.agent_id]  # type: ignore[index]
            c.must("end")
            allowed = a.must("end")
            self._emit(ev)
            return self._end_handling(c, a, "customer", allowed)
        c.must("abandon")
        self._emit(ev)
        if state == OFFERED:
            o = c.offer
            assert o is not None
            a = o.agent
            allowed = a.must("cancel")
            self._emit(
                OfferCancelled(
                    at_ms=self.now_ms, offer_id=o.id, contact_id=c.id, agent_id=a.id, reason="customer_left"
                )
            )
            self._close_offer(o, "cancel")
            self._abandon(c)
            self._settle(a, allowed)
            self.avail.relist(a, self.now_ms, moved=True)
            self._route_agent(a)
        else:
            self._abandon(c)

    def _abandon(self, c: Contact) -> None:
        if c.group is not None:
            self.waiting.remove(c)
            if self._exclusive.get(c.channel, False):
                self._release_drained()
        c.step_to("abandon")
        self._leave_queue(c)
        self._emit(
            ContactAbandoned(
                at_ms=self.now_ms,
                contact_id=c.id,
                queue=c.queue,
                channel=c.channel,
                wait_ms=self.now_ms - c.waiting_since_ms,
                tier=c.tier,
            )
        )
        self._finish(c)

    def _finish(self, c: Contact) -> None:
        del self.contacts[c.id]
        self.finished[c.state] += 1
        self.timers.cancel(c.wrap_timer)

    def _handling(self, contact_id: str, agent_id: str, action: str) -> tuple[Contact, Agent]:
        """The contact and agent of an agent's action on its own work; refuses anyone else's."""
        c = self._contact(contact_id)
        a = self._agent(agent_id)
        if c.agent_id != agent_id or c.id not in a.work:
            raise IllegalTransition(
                "contact", c.id, c.state, action, f"agent {agent_id!r} is not handling it"
            )
        return c, a

    def _on_end(self, ev: ContactEnded) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "end")
        c.must("end")
        allowed = a.must("end")
        self._emit(ev)
        self._end_handling(c, a, "agent", allowed)

    def _stop_hold(self, c: Contact) -> None:
        if c.state == HELD:
            c.held_ms += self.now_ms - c.hold_started_ms

    def _end_handling(self, c: Contact, a: Agent, by: str, allowed: tuple[str, ...]) -> None:
        now = self.now_ms
        self._stop_hold(c)
        c.step_to("end")
        c.ended_ms = now
        a.active -= 1
        a.wrapping += 1
        wrap = self._wrap_ms.get(c.channel, 0)
        ends = None if wrap is None else now + wrap
        self._emit(WrapUpStarted(at_ms=now, contact_id=c.id, agent_id=a.id, by=by, ends_ms=ends))  # type: ignore[arg-type]
        if wrap == 0:
            self._close(c, a)
        elif ends is not None:
            c.wrap_timer = self.timers.set(ends, T.WRAP_UP_END, c)
        self._settle(a, allowed)
        if wrap == 0:
            self.avail.relist(a, now, moved=True)
            self._route_agent(a)

    def _close(self, c: Contact, a: Agent) -> None:
        now = self.now_ms
        c.step_to("close")
        del a.work[c.id]
        a.wrapping -= 1
        self._load(a, c.channel, -1)
        self._count_handled(a)
        self._emit(
            ContactClosed(
                at_ms=now,
                contact_id=c.id,
                agent_id=a.id,
                queue=c.queue,
                channel=c.channel,
                wait_ms=c.connected_ms - c.waiting_since_ms,
                talk_ms=c.ended_ms - c.connected_ms - c.held_ms,
                hold_ms=c.held_ms,
                wrap_ms=now - c.ended_ms,
                tier=c.tier,
                disposition=c.disposition,
            )
        )
        self._finish(c)

    def _on_wrap_done(self, ev: WrapUpEnded) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "close")
        c.must("close")
        allowed = a.must("wrap_done")
        self._emit(ev)
        self.timers.cancel(c.wrap_timer)
        self._close(c, a)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        self._route_agent(a)

    def _fire_wrap_end(self, c: Contact) -> None:
        a = self.agents[c.agent_id]  # type: ignore[index]
        allowed = a.must("wrap_expire")
        self._emit(WrapUpExpired(at_ms=self.now_ms, contact_id=c.id, agent_id=a.id))
        self._close(c, a)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        self._route_agent(a)

    def _on_hold(self, ev: ContactHeld) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "hold")
        c.must("hold")
        allowed = a.must("hold")
        self._emit(ev)
        c.step_to("hold")
        c.hold_started_ms = self.now_ms
        self._settle(a, allowed)

    def _on_retrieve(self, ev: ContactRetrieved) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "retrieve")
        c.must("retrieve")
        allowed = a.must("retrieve")
        self._emit(ev)
        self._stop_hold(c)
        c.step_to("retrieve")
        self._settle(a, allowed)

    def _on_disposition(self, ev: DispositionSet) -> None:
        c, _ = self._handling(ev.contact_id, ev.agent_id, "set_disposition")
        if not ev.code:
            raise RouterError("a disposition code must not be empty")
        self._emit(ev)
        c.disposition = ev.code

    def _on_transfer(self, ev: TransferRequested) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "transfer")
        targets = [t for t in (ev.to_queue, ev.to_agent_id, ev.to_external) if t is not None]
        if len(targets) != 1:
            raise RouterError("a transfer needs exactly one of to_queue, to_agent_id, to_external")
        if ev.to_external is not None:
            c.must("transfer_out")
        else:
            c.must("transfer")
        plan = self.queues[c.queue]
        target_agent = None
        if ev.to_queue is not None:
            plan = self.queues.get(ev.to_queue)  # type: ignore[assignment]
            if plan is None:
                raise UnknownQueue(ev.to_queue)
            if c.channel not in plan.channels:
                raise RouterError(f"queue {ev.to_queue!r} does not serve {c.channel!r}")
        if ev.to_agent_id is not None:
            target_agent = self._agent(ev.to_agent_id)
            if target_agent is a:
                raise RouterError("an agent cannot transfer a contact to itself")
            if target_agent.presence == LOGGED_OUT:
                raise RouterError(f"agent {target_agent.id!r} is not logged in")
        allowed = a.must("transfer")
        self._emit(ev)
        now = self.now_ms
        self._stop_hold(c)
        talk = now - c.connected_ms - c.held_ms
        del a.work[c.id]
        a.active -= 1
        self._load(a, c.channel, -1)
        self._count_handled(a)
        c.agent_id = None
        c.transfers += 1
        self._emit(
            ContactTransferred(
                at_ms=now,
                contact_id=c.id,
                agent_id=a.id,
                queue=c.queue,
                to_queue=ev.to_queue,
                to_agent_id=ev.to_agent_id,
                to_external=ev.to_external,
                channel=c.channel,
                tier=c.tier,
                talk_ms=talk,
            )
        )
        self._settle(a, allowed)  # the transferring agent is free before anyone is routed
        self.avail.relist(a, now, moved=True)
        if ev.to_external is not None:
            c.step_to("transfer_out")
            self._finish(c)
        else:
            c.step_to("transfer")
            if target_agent is not None:
                c.preferred_agent_id = target_agent.id
                c.preferred_ms = self._transfer_pref_ms
            self._exclude(c, a.id)  # not straight back to the agent who passed it on
            self._enter_queue(c, plan, since=now, via="transfer", new_sla=True)
        self._route_agent(a)

    # ------------------------------------------------------------------------------------- timers: contacts

    def _fire_sla_warn(self, c: Contact) -> None:
        if c.state in (QUEUED, OFFERED):
            self._emit(
                SlaWarned(
                    at_ms=self.now_ms,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=c.channel,
                    deadline_ms=c.sla_deadline_ms or self.now_ms,
                    tier=c.tier,
                )
            )

    def _fire_sla_breach(self, c: Contact) -> None:
        if c.state in (QUEUED, OFFERED):
            self._emit(
                SlaBreached(
                    at_ms=self.now_ms,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=c.channel,
                    deadline_ms=self.now_ms,
                    tier=c.tier,
                )
            )

    def _fire_overflow_step(self, c: Contact) -> None:
        plan = self.queues[c.queue]
        step = plan.steps[c.step]
        c.step += 1
        if c.step < len(plan.steps):
            nxt = plan.steps[c.step]
            c.timers.append(self.timers.set(self.now_ms + nxt.after_ms - step.after_ms, T.OVERFLOW_STEP, c))
        self._apply_step(c, plan, step)

    def _apply_step(self, c: Contact, plan: QueuePlan, step: StepPlan) -> None:
        actions = list(step.actions)
        if step.leave or step.move_to:
            exit_ = "leave" if step.leave else step.move_to
            if c.state == OFFERED:
                c.pending_exit = (exit_, actions)  # don't snatch a ringing offer; act if it falls through
                return
            if step.leave:
                return self._overflow_out(c, actions)
            return self._move(c, self.queues[step.move_to], actions)  # type: ignore[index]
        queued = c.state == QUEUED
        if queued:
            self.waiting.remove(c)
        c.reqs = step.widen(c.reqs)
        c.reqs_text = reqs_text(c.reqs)
        c.bonus += step.raise_priority
        self._rerank(c, plan)
        self._emit(
            ContactOverflowed(
                at_ms=self.now_ms,
                contact_id=c.id,
                queue=c.queue,
                step=step.index,
                actions=actions,
                wait_ms=self.now_ms - c.waiting_since_ms,
                channel=c.channel,
                tier=c.tier,
            )
        )
        if queued:
            self.waiting.add(c)
            self._route_contact(c)

    def _fire_max_wait(self, c: Contact) -> None:
        plan = self.queues[c.queue]
        action = plan.max_wait_action
        if c.state == OFFERED:
            c.pending_exit = (
                action,
                ["max wait"] if action == "leave" else ["max wait", f"move to {action}"],
            )
            return
        if action == "leave":
            return self._overflow_out(c, ["max wait"])
        self._move(c, self.queues[action], ["max wait", f"move to {action}"])

    def _overflow_out(self, c: Contact, actions: list[str]) -> None:
        self.waiting.remove(c)
        if self._exclusive.get(c.channel, False):
            self._release_drained()
        c.step_to("overflow_out")
        self._leave_queue(c)
        self._emit(
            ContactOverflowed(
                at_ms=self.now_ms,
                contact_id=c.id,
                queue=c.queue,
                step=c.step,
                actions=actions,
                left=True,
                wait_ms=self.now_ms - c.waiting_since_ms,
                channel=c.channel,
                tier=c.tier,
            )
        )
        self._finish(c)

    def _move(self, c: Contact, target: QueuePlan, actions: list[str]) -> None:
        """Overflow to another queue: the contact keeps its age (and its SLA clock) there."""
        self.waiting.remove(c)
        c.step_to("move")
        for t in c.timers:
            self.timers.cancel(t)
        c.timers = []
        self.queues[c.queue].depth -= 1
        self._emit(
            ContactOverflowed(
                at_ms=self.now_ms,
                contact_id=c.id,
                queue=c.queue,
                step=c.step,
                actions=actions,
                to_queue=target.name,
                wait_ms=self.now_ms - c.waiting_since_ms,
                channel=c.channel,
                tier=c.tier,
            )
        )
        self._enter_queue(c, target, since=c.waiting_since_ms, via=f"overflow:{c.queue}", new_sla=False)

    def _fire_preferred_end(self, c: Contact) -> None:
        c.preferred_timer = None
        self._open_to_all(c)

    def _open_to_all(self, c: Contact) -> None:
        """The preferred-agent window closed: any eligible agent may take the contact now."""
        if c.preferred_agent_id is None:
            return
        self.timers.cancel(c.preferred_timer)
        c.preferred_timer = None
        if c.state == QUEUED:
            self.waiting.remove(c)
            c.preferred_agent_id = None
            self.waiting.add(c)
            self._route_contact(c)
        else:
            c.preferred_agent_id = None

    def _fire_reoffer(self, c: Contact) -> None:
        c.exclusion_timer = None
        c.rejected_by.clear()
        self._route_contact(c)

    # ----------------------------------------------------------------------------------------------- agents

    def _add_agent(self, agent_id: str, name: str, skills: dict[str, int], capacity: dict[str, int]) -> Agent:
        a = Agent(agent_id, name, len(self.agents), skills, capacity)
        self.agents[agent_id] = a
        for s in skills:
            self._skill_roster.setdefault(s, {})[agent_id] = a
        return a

    def _settle(self, a: Agent, allowed: tuple[str, ...]) -> None:
        """Recompute the agent's state after an action, check it against the table, report a change."""
        new = a.derive_state()
        if new not in allowed:
            raise AssertionError(f"agent {a.id}: {a.state} -> {new} is not in the transition table {allowed}")
        reason = a.away_reason if new == AWAY else None
        old = a.state
        if new == old and reason == a.state_reason:
            return
        now = self.now_ms
        self._count_time(a, old, now)
        a.state = new
        a.state_reason = reason
        a.state_since_ms = now
        self._emit(AgentStateChanged(at_ms=now, agent_id=a.id, state=new, previous=old, reason=reason))  # type: ignore[arg-type]

    def _today(self) -> int:
        if self.now_ms >= self._next_midnight:
            self._day, self._next_midnight = day_number(self.now_ms, self._tz)
        return self._day

    def _count_time(self, a: Agent, old: str, now: int) -> None:
        today = self._today()
        if a.day != today:
            a.day, a.handled_today, a.staffed_ms, a.handling_ms = today, 0, 0, 0
        elapsed = now - a.state_since_ms
        if old in _STAFFED:
            a.staffed_ms += elapsed
            if old in _HANDLING:
                a.handling_ms += elapsed

    def _count_handled(self, a: Agent) -> None:
        today = self._today()
        if a.day != today:
            a.day, a.handled_today, a.staffed_ms, a.handling_ms = today, 0, 0, 0
        a.handled_today += 1

    def _on_login(self, ev: AgentLoggedIn) -> None:
        a = self.agents.get(ev.agent_id)
        if a is None and ev.skills is None:
            raise UnknownAgent(ev.agent_id)
        if ev.skills is not None:
            _check_levels(ev.skills)
        if ev.capacity is not None:
            _check_capacity(ev.capacity)
        allowed = a.must("login") if a is not None else AGENT_TRANSITIONS[(LOGGED_OUT, "login")]
        self._emit(ev)
        if a is None:
            cap = dict(ev.capacity or self.config.routing.default_capacity)
            a = self._add_agent(ev.agent_id, ev.agent_id, dict(ev.skills or {}), cap)
        elif ev.skills is not None or ev.capacity is not None:
            self._change_skills(a, ev.skills, ev.capacity)
        self._set_presence(a, AWAY if ev.away_reason else READY, ev.away_reason)
        a.state_since_ms = self.now_ms
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        self._route_agent(a)

    def _on_logout(self, ev: AgentLoggedOut) -> None:
        a = self._agent(ev.agent_id)
        if a.active:
            busy = ", ".join(cid for cid, c in a.work.items() if c.state in (CONNECTED, HELD))
            raise IllegalTransition("agent", a.id, a.state, "logout", f"still handling {busy}")
        allowed = a.must("logout")
        self._emit(ev)
        requeued = self._cancel_offers(a, "agent_logged_out")
        for c in [c for c in a.work.values() if c.state == C_WRAP_UP]:
            self.timers.cancel(c.wrap_timer)
            self._close(c, a)
        self._set_presence(a, LOGGED_OUT, None)
        self._settle(a, allowed)
        self.avail.unlist(a)
        for x in requeued:
            self._back_in_queue(x)
        for g in self.waiting.preferred_groups(a.id):
            for c in list(g.contacts):
                self._open_to_all(c)

    def _on_ready(self, ev: AgentReady) -> None:
        a = self._agent(ev.agent_id)
        allowed = a.must("ready")
        self._emit(ev)
        self._set_presence(a, READY, None)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=False)
        self._route_agent(a)

    def _on_away(self, ev: AgentAway) -> None:
        a = self._agent(ev.agent_id)
        allowed = a.must("away")
        self._emit(ev)
        requeued = self._go_away(a, ev.reason)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=False)
        for x in requeued:
            self._back_in_queue(x)

    def _on_skills(self, ev: AgentSkillsChanged) -> None:
        a = self._agent(ev.agent_id)
        allowed = a.must("skills")
        if ev.skills is not None:
            _check_levels(ev.skills)
        if ev.capacity is not None:
            _check_capacity(ev.capacity)
        self._emit(ev)
        self._change_skills(a, ev.skills, ev.capacity)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=False)
        self._route_agent(a)

    def _change_skills(
        self, a: Agent, skills: dict[str, int] | None, capacity: dict[str, int] | None
    ) -> None:
        self.avail.unlist(a)
        self.staffing.leave(a)
        if skills is not None:
            for s in a.skills:
                self._skill_roster.get(s, {}).pop(a.id, None)
            a.skills = dict(skills)
            for s in a.skills:
                self._skill_roster.setdefault(s, {})[a.id] = a
        if capacity is not None:
            a.capacity = dict(capacity)
            a.total_capacity = sum(capacity.values())
            for ch in capacity:
                a.load.setdefault(ch, 0)
        self.staffing.join(a)


def _check_levels(skills: dict[str, int]) -> None:
    for skill, level in skills.items():
        if not MIN_LEVEL <= level <= MAX_LEVEL:
            raise RouterError(f"skill {skill!r}: level {level} is outside {MIN_LEVEL}-{MAX_LEVEL}")


def _check_capacity(capacity: dict[str, int]) -> None:
    for ch, n in capacity.items():
        if n < 0:
            raise RouterError(f"capacity for {ch!r} must be >= 0")


__all__ = ["TERMINAL", "ArrivalAdjust", "CustomerDirectory", "Router", "RoutingHooks"]
