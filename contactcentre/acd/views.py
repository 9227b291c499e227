"""The router's read side: what the edge may know of its state, as plain frozen values.

Adapters, the web site, metrics and the simulator ask the router here and get msgspec structs, strings and
numbers back — never the router's own ``Contact`` / ``Agent`` / ``Offer`` objects, which only the router may
change and which an adapter in another process could not reach. Decisions that follow from routing state
("can anyone answer a chat in this queue now", "would this agent be offered that contact at once", "would
the router take this input") are answered here too, so that no adapter re-derives the router's rules.

A view is a snapshot: it does not follow the router. Ask again after ``submit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.acd.agent import LOGGED_OUT, READY, Agent
from contactcentre.acd.contact import CONNECTED, HELD, OFFERED, QUEUED, WITH_AGENT, WRAP_UP, Contact
from contactcentre.acd.errors import RouterError, TimeWentBackwards
from contactcentre.acd.ewt import WaitSituation
from contactcentre.acd.offers import Offer

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
    from contactcentre.events import Event
else:
    _Base = object


class OfferView(msgspec.Struct, frozen=True):
    """An open offer: which contact rings at which agent, until when."""

    id: str
    contact_id: str
    agent_id: str
    expires_ms: int


class ContactView(msgspec.Struct, frozen=True):
    """A contact in the centre now (waiting, offered, with an agent or in wrap-up)."""

    id: str
    channel: str
    queue: str
    state: str
    seq: int  # arrival order in the centre (ties between equal waiting times)
    customer_id: str | None
    tier: str | None
    priority: int
    attributes: dict[str, str]
    agent_id: str | None  # the agent it is offered to or handled by
    offer: OfferView | None  # the offer ringing now, if any
    waiting_since_ms: int
    sla_deadline_ms: int | None
    connected_ms: int  # 0 until an agent accepts it
    wrap_up_ends_ms: int | None  # in wrap-up with a timer: when it ends
    disposition: str | None
    callback_number: str | None  # a callback: the number to dial
    attempt: int  # a callback: its dialling attempt (1-based)
    position: int | None  # queued: 1 = next among the contacts waiting for the same agents

    @property
    def waiting(self) -> bool:
        """Queued or ringing at an agent: the customer has not been answered yet."""
        return self.state == QUEUED or self.state == OFFERED

    @property
    def handling(self) -> bool:
        """Connected to its agent or on hold: a conversation is open."""
        return self.state == CONNECTED or self.state == HELD

    @property
    def with_agent(self) -> bool:
        """Holds an agent's capacity (offered, connected, held, wrap-up)."""
        return self.state in WITH_AGENT

    @property
    def offered_to(self) -> str | None:
        return self.offer.agent_id if self.offer is not None else None


class AgentStatus(msgspec.Struct, frozen=True):
    """Where an agent stands, without its load and work: what an agent's console shows after every batch about
    the agent (a whole ``AgentView`` copies its skills, capacity, load, work and offers each time)."""

    state: str
    state_reason: str | None
    state_since_ms: int
    presence: str
    away_reason: str | None


class AgentView(msgspec.Struct, frozen=True):
    """An agent as the router has it now: presence (what it chose), state (what follows), load and work."""

    id: str
    name: str
    state: str
    state_reason: str | None
    state_since_ms: int
    presence: str
    away_reason: str | None
    skills: dict[str, int]
    capacity: dict[str, int]
    load: dict[str, int]  # offers + work, per channel
    work: tuple[str, ...]  # contacts it handles (connected, held or wrapping up)
    handling: tuple[str, ...]  # the ones of ``work`` connected or held
    offers: tuple[OfferView, ...]
    handled_today: int

    @property
    def logged_in(self) -> bool:
        return self.presence != LOGGED_OUT

    @property
    def ready(self) -> bool:
        return self.presence == READY

    def offer_of(self, contact_id: str) -> OfferView | None:
        """Its open offer of ``contact_id``, if any."""
        return next((o for o in self.offers if o.contact_id == contact_id), None)


class QueueView(msgspec.Struct, frozen=True):
    name: str
    channels: tuple[str, ...]
    priority: int
    sla_threshold_s: float | None  # the base SLA (the queue's first channel's): the staffing hint's target
    sla_target: float | None


class QueueLoad(msgspec.Struct, frozen=True):
    """A queue's load now, in one pass over the centre (the API's queue list)."""

    name: str
    waiting: dict[str, int]  # queued contacts per channel
    oldest_waiting_since_ms: int | None
    offered: int
    with_agents: int  # connected, held or in wrap-up
    ewt_ms: dict[str, int | None]  # what a contact arriving now at the queue's priority would be told
    agents_serving: int
    agents_ready: int


class Waiting(msgspec.Struct, frozen=True):
    """Contacts of one queue and channel not yet answered, and since when the oldest of them has waited."""

    count: int
    oldest_since_ms: int


class WaitEstimate(msgspec.Struct, frozen=True):
    position: int  # 1 = next
    ewt_ms: int | None  # None: nobody who may take it is ready


class _Checked(Exception):
    """Raised at the input's echo by ``check``: everything before it found the input acceptable."""


def _stop_at_echo(event: Any) -> None:
    raise _Checked


def offer_view(o: Offer) -> OfferView:
    return OfferView(o.id, o.contact.id, o.agent.id, o.expires_ms)


def contact_view(c: Contact) -> ContactView:
    o = c.offer
    return ContactView(
        id=c.id,
        channel=c.channel,
        queue=c.queue,
        state=c.state,
        seq=c.seq,
        customer_id=c.customer_id,
        tier=c.tier,
        priority=c.priority,
        attributes=dict(c.attributes),
        agent_id=c.agent_id,
        offer=offer_view(o) if o is not None else None,
        waiting_since_ms=c.waiting_since_ms,
        sla_deadline_ms=c.sla_deadline_ms,
        connected_ms=c.connected_ms,
        wrap_up_ends_ms=c.wrap_timer.due_ms if c.state == WRAP_UP and c.wrap_timer is not None else None,
        disposition=c.disposition,
        callback_number=c.callback_number,
        attempt=c.attempt,
        position=c.group.position(c) + 1 if c.state == QUEUED and c.group is not None else None,
    )


def agent_view(a: Agent) -> AgentView:
    return AgentView(
        id=a.id,
        name=a.name,
        state=a.state,
        state_reason=a.state_reason,
        state_since_ms=a.state_since_ms,
        presence=a.presence,
        away_reason=a.away_reason,
        skills=dict(a.skills),
        capacity=dict(a.capacity),
        load=dict(a.load),
        work=tuple(a.work),
        handling=tuple(cid for cid, c in a.work.items() if c.state == CONNECTED or c.state == HELD),
        offers=tuple(offer_view(o) for o in a.offers.values()),
        handled_today=a.handled_today,
    )


class Reads(_Base):
    """Part of ``Router``: its public read methods."""

    # ------------------------------------------------------------------------------------------ contacts

    def contact(self, contact_id: str) -> ContactView | None:
        """The contact, if it is in the centre now (finished contacts are only counted)."""
        c = self.contacts.get(contact_id)
        return contact_view(c) if c is not None else None

    def contact_state(self, contact_id: str) -> str | None:
        """Its state, or None once it has left the centre (the cheap question the simulator asks often)."""
        c = self.contacts.get(contact_id)
        return c.state if c is not None else None

    def has_contact(self, contact_id: str) -> bool:
        return contact_id in self.contacts

    def contact_list(self) -> list[ContactView]:
        """Every contact in the centre now, in arrival order."""
        return [contact_view(c) for c in self.contacts.values()]

    def waiting_counts(self, *, ringing_too: bool = False) -> dict[tuple[str, str], Waiting]:
        """Per (queue, channel) with someone waiting: how many and the oldest's ``waiting_since_ms``; queued
        contacts, and those ringing at an agent too with ``ringing_too``. One pass, no view per contact: the
        consoles' queue figures and every metrics scrape ask this, and an e-mail backlog can be thousands."""
        states = (QUEUED, OFFERED) if ringing_too else (QUEUED,)
        acc: dict[tuple[str, str], list[int]] = {}
        for c in self.contacts.values():
            if c.state in states:
                row = acc.get((c.queue, c.channel))
                if row is None:
                    acc[(c.queue, c.channel)] = [1, c.waiting_since_ms]
                else:
                    row[0] += 1
                    if c.waiting_since_ms < row[1]:
                        row[1] = c.waiting_since_ms
        return {key: Waiting(n, since) for key, (n, since) in acc.items()}

    def handler_of(self, contact_id: str) -> str | None:
        """The agent handling the contact (connected, held or wrapping up), or None (waiting, ringing, gone)."""
        c = self.contacts.get(contact_id)
        if c is None or c.agent_id is None:
            return None
        return c.agent_id if contact_id in self.agents[c.agent_id].work else None

    def offer_open(self, offer_id: str) -> bool:
        return offer_id in self.offers

    def open_offers(self) -> list[OfferView]:
        return [offer_view(o) for o in self.offers.values()]

    def wait_estimate(self, contact_id: str) -> WaitEstimate | None:
        """Position and EWT of a queued contact now, as the router computes them when it queues one; None if
        it is not waiting in a queue, or waits for one named agent (no position among others)."""
        c = self.contacts.get(contact_id)
        if c is None or c.state != QUEUED or c.group is None or c.preferred_agent_id is not None:
            return None
        ahead = c.group.position(c)
        servers = self.staffing.servers(c.channel, c.reqs)
        ewt = self.estimator.estimate(WaitSituation(c.queue, c.channel, ahead, servers, c.priority))
        return WaitEstimate(ahead + 1, ewt)

    # -------------------------------------------------------------------------------------------- agents

    def agent(self, agent_id: str) -> AgentView | None:
        a = self.agents.get(agent_id)
        return agent_view(a) if a is not None else None

    def agent_status(self, agent_id: str) -> AgentStatus | None:
        a = self.agents.get(agent_id)
        if a is None:
            return None
        return AgentStatus(a.state, a.state_reason, a.state_since_ms, a.presence, a.away_reason)

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self.agents

    def agent_list(self) -> list[AgentView]:
        """Every agent the router knows (configured, or logged in with skills), in the order it learned them."""
        return [agent_view(a) for a in self.agents.values()]

    def agent_states(self) -> dict[str, str]:
        """Agent id → state, without building a view of each (metrics ask this on every scrape)."""
        return {a.id: a.state for a in self.agents.values()}

    def may_take_now(self, agent_id: str, contact_id: str) -> bool:
        """Would the router offer ``contact_id`` to this agent at once, if it were open to it (a transfer to a
        named agent): logged in, not excluded by a rejection, with room on the contact's channel."""
        a = self.agents.get(agent_id)
        c = self.contacts.get(contact_id)
        if a is None or c is None or a.presence == LOGGED_OUT or agent_id in c.rejected_by:
            return False
        return self.avail.can_take(a, c.channel)

    # -------------------------------------------------------------------------------------------- queues

    def queue(self, name: str) -> QueueView | None:
        plan = self.queues.get(name)
        if plan is None:
            return None
        slas = list(plan.sla_by_channel.values())
        return QueueView(
            name=plan.name,
            channels=tuple(sorted(plan.channels)),
            priority=plan.priority,
            sla_threshold_s=slas[0].threshold_s if slas else None,
            sla_target=slas[0].target if slas else None,
        )

    def queue_list(self) -> list[QueueView]:
        return [v for name in self.queues if (v := self.queue(name)) is not None]

    def serves(self, queue: str, channel: str) -> bool:
        """Does ``queue`` exist and take contacts on ``channel``?"""
        plan = self.queues.get(queue)
        return plan is not None and channel in plan.channels

    def offline_reason(self, queue: str | None, channel: str, now_ms: int) -> str | None:
        """Why nobody can answer a ``channel`` contact in ``queue`` now (``closed``, ``no_agents``), or None if
        someone could: the queue (or where it sends contacts while closed) is open and an agent who may serve
        it with capacity on the channel is logged in (ready, busy or away — the contact may wait for them)."""
        plan = self.queues.get(queue) if queue is not None else None
        if plan is None:
            return "no_agents"
        seen: set[str] = set()
        while not plan.hours.always_open and not plan.hours.is_open(now_ms):
            if plan.when_closed in ("accept", "refuse") or plan.when_closed in seen:
                return "closed"  # a contact that waits for the morning is an offline message
            seen.add(plan.name)
            plan = self.queues[plan.when_closed]
        agents = self.agents
        for agent_id in self._serving_ids(plan.name):
            a = agents[agent_id]
            if a.presence != LOGGED_OUT and a.capacity.get(channel, 0) > 0:
                return None
        return "no_agents"

    def queue_loads(self) -> list[QueueLoad]:
        """Each configured queue's load now; the EWT per channel is what a contact arriving now at the
        queue's own priority would be told: everyone waiting on the channel is ahead of it, and the servers
        are the ready serving agents' capacity on the channel."""
        now = self.now_ms
        waiting: dict[tuple[str, str], int] = {}
        oldest: dict[str, int] = {}
        offered: dict[str, int] = {}
        handling: dict[str, int] = {}
        for c in self.contacts.values():
            if c.state == QUEUED:
                waiting[c.queue, c.channel] = waiting.get((c.queue, c.channel), 0) + 1
                if c.waiting_since_ms < oldest.get(c.queue, now + 1):
                    oldest[c.queue] = c.waiting_since_ms
            elif c.state == OFFERED:
                offered[c.queue] = offered.get(c.queue, 0) + 1
            elif c.state in WITH_AGENT:
                handling[c.queue] = handling.get(c.queue, 0) + 1
        out = []
        for q in self.config.queues:
            plan = self.queues[q.name]
            serving = [self.agents[a] for a in self._serving_ids(q.name)]
            ready = [a for a in serving if a.presence == READY]
            ewt: dict[str, int | None] = {}
            for ch in q.channels:
                servers = sum(a.capacity.get(ch, 0) for a in ready)
                ewt[ch] = self.estimator.estimate(
                    WaitSituation(q.name, ch, waiting.get((q.name, ch), 0), servers, plan.priority)
                )
            out.append(
                QueueLoad(
                    name=q.name,
                    waiting={ch: n for (name, ch), n in waiting.items() if name == q.name},
                    oldest_waiting_since_ms=oldest.get(q.name),
                    offered=offered.get(q.name, 0),
                    with_agents=handling.get(q.name, 0),
                    ewt_ms=ewt,
                    agents_serving=len(serving),
                    agents_ready=len(ready),
                )
            )
        return out

    # ----------------------------------------------------------------------------------------- inputs

    def check(self, event: Event) -> RouterError | None:
        """Would ``handle(event)`` refuse it, and why — without applying it.

        Checked against the state now (timers due by ``event.at_ms`` not yet fired). Every input handler
        checks everything before it changes anything, and its first change is to echo the input; so the real
        handler runs here up to that echo and stops: the rules checked are the handler's own."""
        handler = self._dispatch.get(type(event))
        if handler is None:
            return RouterError(f"the router does not take {type(event).__name__} events")
        if event.at_ms < self.now_ms:
            return TimeWentBackwards(event.at_ms, self.now_ms)
        emit = self._emit
        self._emit = _stop_at_echo
        try:
            handler(event)
        except _Checked:
            return None
        except RouterError as exc:
            return exc
        finally:
            self._emit = emit
        return None  # taken without a change (a customer leaving a contact already in wrap-up)
