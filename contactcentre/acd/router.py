"""The router: a sans-I/O, deterministic automatic contact distributor.

Feed it input events (``handle``), let time pass (``advance``), and it returns what followed: the input
itself, then queued / offered / connected / SLA / agent-state events. It never reads a clock, never sleeps
and never touches a socket; the live server and the simulator drive the same object::

    out = router.handle(ContactArrived(at_ms=now, contact_id="c1", queue="support", channel="chat"))
    deadline = router.next_deadline()     # earliest offer expiry / SLA warning / overflow step, or None
    out += router.advance(deadline)       # fires everything due at or before it, each at its own instant

An input the router refuses raises a ``RouterError`` and changes nothing. Timer events that fell due before
a refused input are not lost: they come out with the next call.

What comes out costs only when somebody reads it. By default a router writes the full log: every derived
event, and with every offer its explanation (``OfferMade.why``) — the live server, the store and replay
need all of it. A caller that reads less says so: ``explain=False`` skips writing the reasons (every
``why`` is then ``UNEXPLAINED``), and ``events={OfferMade, ...}`` names the derived event types it reads;
the others are never built (accepted inputs are always echoed). Either way the router runs the same code
to the same decisions — only the writing-down is skipped — so the full log of one router and the lean
output of another fed the same inputs agree event for event (``tests/test_golden.py`` and
``tests/test_router_properties.py`` check it).

Invariants (checked by the property tests): no agent holds more than its capacity, or anything beside
exclusive work; every contact is in exactly one state; arrived = finished + in the centre; and no contact
waits while an agent that may take it can.
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from contactcentre.acd import timers as T
from contactcentre.acd.agent import LOGGED_OUT, READY, Agent
from contactcentre.acd.availability import Availability
from contactcentre.acd.blending import Blending
from contactcentre.acd.calendar import BusinessCalendar, day_number
from contactcentre.acd.callbacks import Callbacks
from contactcentre.acd.contact import QUEUED, Contact
from contactcentre.acd.errors import (
    DuplicateContact,
    RouterError,
    TimeWentBackwards,
    UnknownAgent,
    UnknownContact,
    UnknownQueue,
)
from contactcentre.acd.ewt import PositionAht, WaitEstimator, WaitSituation
from contactcentre.acd.handling import Handling
from contactcentre.acd.offers import Offer, Offers
from contactcentre.acd.overflow import Overflow
from contactcentre.acd.presence import Presence, check_levels
from contactcentre.acd.queue import OFF_LINE_CHANNELS, QueuePlan, as_req, build_plans, sla_policy
from contactcentre.acd.staffing import Staffing
from contactcentre.acd.strategies import UNEXPLAINED, choose_agent, choose_contact
from contactcentre.acd.timers import TimerHeap
from contactcentre.acd.views import ContactView, Reads, contact_view
from contactcentre.acd.waiting import WaitIndex, reqs_text
from contactcentre.config_base import ALWAYS_OPEN
from contactcentre.events import (
    CHANNELS,
    AgentAway,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentReady,
    AgentSkillsChanged,
    CallbackCancelled,
    CallbackRequested,
    CallbackScheduled,
    Candidate,
    ContactArrived,
    ContactEnded,
    ContactFailed,
    ContactHeld,
    ContactQueued,
    ContactRetrieved,
    CustomerLeft,
    DispositionSet,
    Event,
    Explanation,
    OfferAccepted,
    OfferRejected,
    TransferRequested,
    WrapUpEnded,
)

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig, QueueConfig


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


def _event_types(cls: type[Event]) -> set[type[Event]]:
    out = {cls}
    for sub in cls.__subclasses__():
        out |= _event_types(sub)
    return out


ALL_EVENTS: frozenset[type[Event]] = frozenset(_event_types(Event))


class Router(Offers, Handling, Overflow, Presence, Blending, Callbacks, Reads):
    def __init__(
        self,
        config: CentreConfig,
        *,
        start_ms: int = 0,
        estimator: WaitEstimator | None = None,
        hooks: RoutingHooks | None = None,
        explain: bool = True,
        events: Iterable[type[Event]] | None = None,
    ) -> None:
        """``explain``: write each offer's reasons (``OfferMade.why``). ``events``: the derived event types
        the caller reads (``None``: all of them, the full log); the others are not built. Neither changes
        a decision."""
        self.config = config
        self._explain = explain
        if events is None:
            self._wants = ALL_EVENTS
        else:
            self._wants = frozenset(events)
            strangers = [t for t in self._wants if not (isinstance(t, type) and issubclass(t, Event))]
            if strangers:
                raise TypeError(f"not event types: {strangers!r}")
        self.now_ms = start_ms
        r = config.routing
        self._weight_ms = round(r.priority_weight_s * 1000)
        self._pref_ms = round(r.preferred_agent_timeout_s * 1000)
        self._transfer_pref_ms = round(r.transfer_agent_timeout_s * 1000)
        self._away_after_missed = r.away_after_missed_offer
        self._away_after_reject = r.away_after_reject
        channels = {ch: config.channel(ch) for ch in CHANNELS}
        self._exclusive = {ch: c.exclusive for ch, c in channels.items()}
        self._exclusive_channels = tuple(ch for ch, x in self._exclusive.items() if x)
        self._concurrent_channels = tuple(ch for ch, x in self._exclusive.items() if not x)
        self._drain_enabled = r.drain_for_exclusive
        self._recheck: dict[str, Agent] = {}  # agents whose drain ended this step (see blending)
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
        self.avail.open_lists(
            (plan.strategy, ch, skill)
            for plan in self.queues.values()
            for ch in plan.channels
            for req in (*plan.reqs, *(alt for step in plan.steps for alt in step.alternatives))
            for skill in ([s for s, _ in req] or [""])  # "": the list of every agent on the channel
        )
        self.waiting = WaitIndex()
        self.timers = TimerHeap()
        self.agents: dict[str, Agent] = {}
        self._serving: dict[str, list[str]] = {}  # queue -> serving_agents, until an agent or its skills change
        self._skill_roster: dict[str, dict[str, Agent]] = {}
        for a in config.agents:
            self._add_agent(a.id, a.name, dict(a.skills), dict(a.capacity or r.default_capacity))
        self.contacts: dict[str, Contact] = {}  # in the centre now; finished ones are only counted
        self.offers: dict[str, Offer] = {}
        self.scheduled = {}  # callbacks not yet due: contact id -> (their input, their timer)
        self.arrived = 0
        self.finished: Counter[str] = Counter()
        self._seq = 0
        self._offer_seq = 0
        self._rr: dict[str, int] = {}
        self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._day, self._next_midnight = day_number(start_ms, self._tz)
        self.staffing = Staffing(self._roster)
        self._out: list[Event] = []
        self._emit: Callable[[Event], None] = self._out.append
        self._dispatch: dict[type, Callable[[Any], None]] = {
            ContactArrived: self._on_arrived,
            CustomerLeft: self._on_customer_left,
            AgentLoggedIn: self._on_login,
            AgentLoggedOut: self._on_logout,
            AgentReady: self._on_ready,
            AgentAway: self._on_away,
            AgentSkillsChanged: self._on_skills,
            OfferAccepted: self._on_accept,
            OfferRejected: self._on_reject,
            ContactHeld: self._on_hold,
            ContactRetrieved: self._on_retrieve,
            ContactEnded: self._on_end,
            TransferRequested: self._on_transfer,
            WrapUpEnded: self._on_wrap_done,
            DispositionSet: self._on_disposition,
            CallbackRequested: self._on_callback_requested,
            CallbackScheduled: self._on_callback_scheduled,
            CallbackCancelled: self._on_callback_cancelled,
        }
        self._fire_kind: dict[str, Callable[[Any], None]] = {
            T.OFFER_EXPIRY: self._fire_offer_expiry,
            T.SLA_WARN: self._fire_sla_warn,
            T.SLA_BREACH: self._fire_sla_breach,
            T.OVERFLOW_STEP: self._fire_overflow_step,
            T.MAX_WAIT: self._fire_max_wait,
            T.PREFERRED_END: self._fire_preferred_end,
            T.REOFFER: self._fire_reoffer,
            T.WRAP_UP_END: self._fire_wrap_end,
            T.CALLBACK_DUE: self._fire_callback_due,
        }

    # ------------------------------------------------------------------------------------------ public API

    def handle(self, event: Event) -> list[Event]:
        """Apply one input event at ``event.at_ms`` (after firing every timer due by then)."""
        handler = self._dispatch.get(type(event))
        if handler is None:
            raise RouterError(f"the router does not take {type(event).__name__} events")
        at = event.at_ms
        if at < self.now_ms:
            raise TimeWentBackwards(at, self.now_ms)
        due = self.timers.peek_due()
        if due is not None and due <= at:
            self._fire_due(at)
        else:
            self.now_ms = at
            if at >= self._next_midnight:
                self._new_day()
        handler(event)
        if self._recheck:
            self._recheck_drained()
        out = self._out  # _take_output, inline: three handle() calls per contact in a simulation
        self._out = []
        self._emit = self._out.append
        return out

    def next_deadline(self) -> int | None:
        """When ``advance`` next has something to do, or ``None`` if nothing is scheduled."""
        return self.timers.next_due()

    def advance(self, now_ms: int) -> list[Event]:
        """Fire every timer due at or before ``now_ms``, each at its own deadline, in order."""
        if now_ms < self.now_ms:
            raise TimeWentBackwards(now_ms, self.now_ms)
        self._fire_due(now_ms)
        return self._take_output()

    def census(self) -> Counter[str]:
        """Contacts by state, finished ones included: the sum is every contact that ever arrived."""
        c = Counter(x.state for x in self.contacts.values())
        c.update(self.finished)
        return c

    def waiting_contacts(self, queue: str | None = None) -> list[ContactView]:
        """Queued contacts in service order (best first), optionally of one queue."""
        out = [c for g in self.waiting for c in g.contacts if queue is None or c.queue == queue]
        out.sort(key=lambda c: c.rank)
        return [contact_view(c) for c in out]

    def eligible(self, contact: Contact, agent: Agent) -> bool:
        """May ``agent`` take ``contact`` right now? (The definition the invariants are checked against.)"""
        if contact.state != QUEUED or agent.id in contact.rejected_by:
            return False
        if not self.avail.can_take(agent, contact.channel):
            return False
        if self._held_back(agent, contact):
            return False
        if contact.preferred_agent_id is not None:
            return agent.id == contact.preferred_agent_id
        return any(agent.meets(r) for r in contact.reqs)

    def can_take(self, agent: Agent, channel: str) -> bool:
        return self.avail.can_take(agent, channel)

    def serving_agents(self, queue: str) -> list[str]:
        """Agents whose skills meet the queue's base requirement (for per-queue occupancy)."""
        return list(self._serving_ids(queue))

    def _serving_ids(self, queue: str) -> list[str]:
        got = self._serving.get(queue)
        if got is None:
            reqs = self.queues[queue].reqs
            got = self._serving[queue] = [a.id for a in self.agents.values() if any(a.meets(r) for r in reqs)]
        return got

    def served_queues(self, agent_id: str) -> list[str]:
        """Queues whose base requirement the agent's skills meet, in configuration order (``serving_agents``
        seen from the agent: the console's own queues)."""
        a = self.agents[agent_id]
        return [name for name, plan in self.queues.items() if any(a.meets(r) for r in plan.reqs)]

    # -------------------------------------------------------------------------------------------- timers

    def _fire_due(self, now_ms: int) -> None:
        pop = self.timers.pop_due
        fire = self._fire_kind
        while (t := pop(now_ms)) is not None:
            if t.due_ms > self.now_ms:  # a timer set in the past fires now: the clock never goes back
                self.now_ms = t.due_ms
                if self.now_ms >= self._next_midnight:
                    self._new_day()
            fire[t.kind](t.target)
            if self._recheck:
                self._recheck_drained()
        self.now_ms = now_ms
        if now_ms >= self._next_midnight:
            self._new_day()

    def _take_output(self) -> list[Event]:
        """Hand over what was emitted and start a new list (``_emit`` is that list's bound ``append``: the
        router emits a dozen events per contact, and a bound method call is the cheapest way to do it)."""
        out = self._out
        self._out = []
        self._emit = self._out.append
        return out

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
        self._admit(ev, emit=True)

    def _admit(self, ev: ContactArrived, *, emit: bool, before: Callable[[Contact], None] | None = None) -> None:
        """A contact enters the centre: ``ev`` is an arrival input (``emit``: echo it) or one the router made
        itself (a scheduled callback falling due); ``before`` runs on the new contact before it is queued."""
        if ev.contact_id in self.contacts:
            raise DuplicateContact(ev.contact_id)
        plan = self.queues.get(ev.queue)
        if plan is None:
            raise UnknownQueue(ev.queue)
        if ev.channel not in plan.channels:
            raise RouterError(f"queue {ev.queue!r} does not serve {ev.channel!r}")
        adjust = self.hooks.on_arrival(ev, self._queue_cfg[ev.queue]) if self.hooks else None
        tier = ev.tier or (adjust.tier if adjust else None)  # a tier the config lacks gets no tier policy:
        # customer data from another system must never cost a customer their place in the queue
        extra = dict(adjust.skills or {}) if adjust else {}
        if ev.skills:
            extra.update(ev.skills)
        if extra:
            check_levels(extra)
        if emit:
            self._emit(ev)
        self._seq += 1
        self.arrived += 1
        c = Contact(ev.contact_id, ev.channel, ev.queue, self._seq)
        c.customer_id = ev.customer_id
        c.tier = tier
        c.attributes = ev.attributes
        tier_cfg = self.config.tiers.get(tier) if tier else None
        c.bonus = ev.priority + (adjust.priority if adjust else 0) + (tier_cfg.priority if tier_cfg else 0)
        if extra:
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
        if before is not None:
            before(c)

        via = None
        if not plan.hours.always_open and not plan.hours.is_open(now) and plan.when_closed != "accept":
            if plan.when_closed == "refuse":
                return self._fail(c, plan, "closed")
            via, plan = f"closed:{plan.name}", self.queues[plan.when_closed]
        # A queue's depth limit is for contacts waiting live; an e-mail backlog is answered under its SLA,
        # never refused because callers are waiting (nor does it make callers wait outside).
        live = c.channel not in OFF_LINE_CHANNELS
        if live and plan.max_depth is not None and plan.depth >= plan.max_depth:
            if plan.when_full == "refuse":
                return self._fail(c, plan, "queue_full")
            via, plan = f"full:{plan.name}", self.queues[plan.when_full]
            if plan.max_depth is not None and plan.depth >= plan.max_depth:
                return self._fail(c, plan, "queue_full")
        c.step_to("queue")
        self._enter_queue(c, plan, since=now, via=via, new_sla=True)

    def _fail(self, c: Contact, plan: QueuePlan, reason: str) -> None:
        c.step_to("fail")
        if ContactFailed in self._wants:
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

    def _enter_queue(self, c: Contact, plan: QueuePlan, *, since: int, via: str | None, new_sla: bool) -> None:
        """Put a contact (already in state ``queued``) into ``plan``'s queue and try to place it."""
        now = self.now_ms
        c.queue = plan.name
        c.waiting_since_ms = since
        c.step = 0
        c.pending_exit = None
        plan.depth += c.channel not in OFF_LINE_CHANNELS
        self._set_reqs(c, plan)
        self._rerank(c, plan)
        timers = self.timers
        if c.preferred_timer is not None:
            timers.cancel(c.preferred_timer)
            c.preferred_timer = None
        if c.preferred_agent_id is not None:
            # With no window, the preferred agent gets it only if free right now; otherwise it waits for
            # that agent up to the window. A logged-out agent is not waited for.
            pa = self.agents[c.preferred_agent_id]
            if pa.presence == LOGGED_OUT or (c.preferred_ms <= 0 and not self.avail.can_take(pa, c.channel)):
                c.preferred_agent_id = None
            elif c.preferred_ms > 0:
                c.preferred_timer = timers.set(now + c.preferred_ms, T.PREFERRED_END, c)
        if new_sla:
            if c.sla_timer is not None:
                timers.cancel(c.sla_timer)
            policy = plan._sla_cache.get((c.channel, c.tier))  # sla_policy's own cache, read first
            if policy is None:
                tier_cfg = self.config.tiers.get(c.tier) if c.tier else None
                policy = sla_policy(plan, c.channel, c.tier, tier_cfg, self.calendars)
            if policy.calendar.always_open:
                warn_at, c.sla_deadline_ms = since + policy.warn_ms, since + policy.threshold_ms
            else:
                warn_at, c.sla_deadline_ms = policy.deadlines(since)
            c.sla_timer = timers.set(warn_at, T.SLA_WARN, c)  # the warning sets the breach timer
        if plan.steps:
            c.timers.append(timers.set(now + plan.steps[0].after_ms, T.OVERFLOW_STEP, c))
        # Per queue visit, like the overflow steps. Only for contacts that wait live: an e-mail (a deferred
        # contact) waits for its answer under its SLA, it cannot "leave to voicemail".
        if plan.max_wait_ms is not None and c.channel not in OFF_LINE_CHANNELS:
            c.timers.append(timers.set(now + plan.max_wait_ms, T.MAX_WAIT, c))
        # Choosing an agent reads no waiting contact, so a contact offered at once never enters the wait index
        # (no insert and removal around the offer); one nobody can take joins it before anything else runs.
        agent, why = self._find_agent(c)
        if agent is None:
            self.waiting.add(c)
        if ContactQueued in self._wants:  # the wait estimate is only ever told in this event
            ahead = self.waiting.ahead_of(c)
            if agent is None:
                ewt = self.estimator.estimate(WaitSituation(plan.name, c.channel, ahead, self._servers(c), c.priority))
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
                    position=ahead + 1,
                    ewt_ms=ewt,
                    sla_deadline_ms=c.sla_deadline_ms,
                    via=via,
                    waiting_since_ms=since if since != now else None,
                )
            )
        if agent is not None:
            assert why is not None
            self._offer(c, agent, why)
        elif self._drain_enabled and self._exclusive.get(c.channel, False):
            self._find_drainer(c)

    def _find_agent(self, c: Contact) -> tuple[Agent | None, Explanation | None]:
        if c.preferred_agent_id is not None:
            a = self.agents[c.preferred_agent_id]
            if a.id not in c.rejected_by and self.avail.can_take(a, c.channel) and not self._held_back(a, c):
                if not self._explain:
                    return a, UNEXPLAINED
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
            blocked=(lambda a: self._held_back(a, c)) if self._drain_enabled else None,
            explain=self._explain,
        )

    def _route_contact(self, c: Contact) -> None:
        if c.state != QUEUED:
            return
        agent, why = self._find_agent(c)
        if agent is not None:
            assert why is not None
            self._offer(c, agent, why)
        elif self._drain_enabled and c.drained_by is None and self._exclusive.get(c.channel, False):
            self._find_drainer(c)

    def _slot_freed(self, a: Agent, allowed: tuple[str, ...]) -> None:
        """The agent's load dropped (a contact closed, an offer fell through) or it just logged in: report
        its state, put it at the back of the idle order, and give it its next contact."""
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        self._route_agent(a)

    def _route_agent(self, a: Agent) -> None:
        """Give a freed agent the best waiting work it may take, until it can take no more."""
        avail = self.avail
        waiting = self.waiting
        while True:
            if not waiting.count:
                return
            channels = avail.takeable(a)
            if not channels:
                return
            c, why = choose_contact(a, channels, waiting, self._explain)
            if c is None:
                return
            assert why is not None
            if self._held_back(a, c):
                return
            if self._drain_enabled and a.draining_for is None and not self._exclusive.get(c.channel, False):
                x = self._drain_target(a, c.rank)
                if x is not None:
                    self._start_drain(a, x)
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


__all__ = ["ArrivalAdjust", "CustomerDirectory", "Router", "RoutingHooks"]
