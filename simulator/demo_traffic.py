"""Seeded simulated traffic for ``contactcentre demo``: customers who arrive and lose patience, agents who
answer, talk, wrap up and take breaks — all as input events submitted to the live runtime.

Every delay is a ``loop.call_later``; the router itself never sleeps. Randomness comes only from
``random.Random(seed)``: one child generator per arrival stream, one for customers, one for agents, so the
arrival sequence does not depend on how the agents happen to react. (Wall-clock timing still decides the
exact instants, so a live demo is seeded, not replayable; its event log is.)

Customers: Poisson arrivals per ``[[demo.traffic]]`` entry at ``per_hour × rate_scale``; each contact is
a customer from the demo's book (``demo_customers``: tier gold 10 %, silver 30 %, bronze 60 %, of those the
configuration defines; the phone number, address or chat token of the contact's channel); a patience drawn
from an exponential with a mean of 300 s, after which a customer still not connected leaves (e-mail
customers do not hang up).

Agents: every configured agent logs in at the start. An offer is answered after ``accept_delay_s`` (jittered
±50 %), accepted 95 % of the time and rejected otherwise; handling lasts an exponential time with the
entry's ``handle_s`` mean; wrap-up ends by the router's own timer, or by the agent after a short while on
channels with ``wrap_up_s = "manual"``. Now and then an agent takes a short break. An agent the router put
away (a missed offer) comes back after a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from contactcentre.clock import Clock
from contactcentre.config import CentreConfig
from contactcentre.config import DemoTraffic as TrafficEntry
from contactcentre.events import (
    AgentAway,
    AgentLoggedIn,
    AgentReady,
    AgentStateChanged,
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConnected,
    ContactEnded,
    ContactFailed,
    ContactOverflowed,
    ContactTransferred,
    CustomerLeft,
    Event,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
    WrapUpEnded,
    WrapUpStarted,
)
from simulator.demo_customers import BOOK_SIZE, TIER_SHARES, address_for, demo_customer

log = logging.getLogger(__name__)

PATIENCE_MEAN_S = 300.0
REJECT_SHARE = 0.05
MANUAL_WRAP_MEAN_S = 20.0
BREAK_EVERY_MEAN_S = 15 * 60.0  # per agent
BREAK_LENGTH_S = (60.0, 240.0)
BACK_AFTER_AWAY_S = (5.0, 20.0)  # an agent the router put away (missed offer) comes back
MIN_HANDLE_S = 5.0
PATIENT_CHANNELS = ("voice", "chat")  # e-mail customers wait for the answer


class Centre(Protocol):
    """What the traffic needs from the runtime (``RouterDriver``)."""

    clock: Clock
    loop: asyncio.AbstractEventLoop

    def submit(self, event: Event) -> None: ...

    def subscribe(self, fn: Callable[[list[Event]], None]) -> Callable[[], None]: ...


@dataclass
class _Customer:
    entry: TrafficEntry
    patience: asyncio.TimerHandle | None = None


@dataclass
class _Agent:
    id: str
    on_break: bool = False
    offers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # offer id -> pending answer


class DemoTraffic:
    def __init__(
        self,
        centre: Centre,
        config: CentreConfig,
        *,
        seed: int,
        rate_scale: float = 1.0,
    ) -> None:
        if config.demo is None:
            raise ValueError("the configuration has no [demo] section")
        self.centre = centre
        self.config = config
        self.loop = centre.loop
        self.clock = centre.clock
        self.demo = config.demo
        self.rate_scale = rate_scale
        master = random.Random(seed)
        self._arrival_rng = [random.Random(master.getrandbits(64)) for _ in self.demo.traffic]
        self._customer_rng = random.Random(master.getrandbits(64))
        self._agent_rng = random.Random(master.getrandbits(64))
        self._book_tiers = tuple(t for t in TIER_SHARES if t in config.tiers)
        self._ids = itertools.count(1)
        self._customers: dict[str, _Customer] = {}  # waiting or being handled
        self._handling: dict[str, asyncio.TimerHandle] = {}  # contact id -> end of handling / wrap-up
        self._agents = {a.id: _Agent(a.id) for a in config.agents}
        self._timers: set[asyncio.TimerHandle] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.running = False
        self.arrivals = 0

    # ------------------------------------------------------------------------------------------- control

    def start(self) -> None:
        self.running = True
        self._unsubscribe = self.centre.subscribe(self._on_events)
        for agent_id in self._agents:
            self._submit(AgentLoggedIn, agent_id=agent_id)
            self._schedule_break(agent_id)
        for i, entry in enumerate(self.demo.traffic):
            self._schedule_arrival(i, entry)

    def stop(self) -> None:
        """Stop every pending arrival and reaction; the centre is left as it is."""
        self.running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # ------------------------------------------------------------------------------------------- helpers

    def _later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        def fire() -> None:
            self._timers.discard(handle)
            if self.running:
                fn(*args)

        handle = self.loop.call_later(max(0.0, delay_s), fire)
        self._timers.add(handle)
        return handle

    def _cancel(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None:
            handle.cancel()
            self._timers.discard(handle)

    def _submit(self, cls: type[Event], **fields: Any) -> None:
        self.centre.submit(cls(at_ms=self.clock.now_ms(), **fields))

    # ------------------------------------------------------------------------------------------ customers

    def _schedule_arrival(self, i: int, entry: TrafficEntry) -> None:
        rate_per_s = entry.per_hour * self.rate_scale / 3600
        self._later(self._arrival_rng[i].expovariate(rate_per_s), self._arrive, i, entry)

    def _arrive(self, i: int, entry: TrafficEntry) -> None:
        self._schedule_arrival(i, entry)
        rng = self._customer_rng
        contact_id = f"c{next(self._ids)}"
        who = demo_customer(rng.randrange(1, BOOK_SIZE + 1), self._book_tiers)
        tier = who.tier if who.tier in self.config.tiers else None
        patience_s = rng.expovariate(1 / PATIENCE_MEAN_S)
        customer = _Customer(entry)
        self._customers[contact_id] = customer
        if entry.channel in PATIENT_CHANNELS:
            customer.patience = self._later(patience_s, self._lose_patience, contact_id)
        self.arrivals += 1
        self._submit(
            ContactArrived,
            contact_id=contact_id,
            queue=entry.queue,
            channel=entry.channel,
            customer_id=who.id,
            tier=tier,
            address=address_for(who, entry.channel),
        )

    def _lose_patience(self, contact_id: str) -> None:
        customer = self._customers.get(contact_id)
        if customer is not None and customer.patience is not None:
            customer.patience = None
            self._submit(CustomerLeft, contact_id=contact_id)

    def _forget(self, contact_id: str) -> None:
        customer = self._customers.pop(contact_id, None)
        if customer is not None:
            self._cancel(customer.patience)
        self._cancel(self._handling.pop(contact_id, None))

    # --------------------------------------------------------------------------------------------- agents

    def _schedule_break(self, agent_id: str) -> None:
        self._later(self._agent_rng.expovariate(1 / BREAK_EVERY_MEAN_S), self._take_break, agent_id)

    def _take_break(self, agent_id: str) -> None:
        self._agents[agent_id].on_break = True
        self._submit(AgentAway, agent_id=agent_id, reason="break")
        self._later(self._agent_rng.uniform(*BREAK_LENGTH_S), self._end_break, agent_id)

    def _end_break(self, agent_id: str) -> None:
        self._agents[agent_id].on_break = False
        self._submit(AgentReady, agent_id=agent_id)
        self._schedule_break(agent_id)

    def _answer(self, offer: OfferMade, accept: bool) -> None:
        agent = self._agents.get(offer.agent_id)
        if agent is not None:
            agent.offers.pop(offer.offer_id, None)
        ids = {"offer_id": offer.offer_id, "contact_id": offer.contact_id, "agent_id": offer.agent_id}
        if accept:
            self._submit(OfferAccepted, **ids)
        else:
            self._submit(OfferRejected, reason="busy with something else", **ids)

    def _end_contact(self, contact_id: str, agent_id: str) -> None:
        self._handling.pop(contact_id, None)
        self._submit(ContactEnded, contact_id=contact_id, agent_id=agent_id)

    def _end_wrap_up(self, contact_id: str, agent_id: str) -> None:
        self._handling.pop(contact_id, None)
        self._submit(WrapUpEnded, contact_id=contact_id, agent_id=agent_id)

    # --------------------------------------------------------------------------------------- the reaction

    def _on_events(self, events: list[Event]) -> None:
        rng = self._agent_rng
        for ev in events:
            if isinstance(ev, OfferMade):
                agent = self._agents.get(ev.agent_id)
                if agent is not None:
                    delay = self.demo.accept_delay_s * rng.uniform(0.5, 1.5)
                    accept = rng.random() >= REJECT_SHARE
                    agent.offers[ev.offer_id] = self._later(delay, self._answer, ev, accept)
            elif isinstance(ev, OfferExpired | OfferCancelled | OfferRejected):
                agent = self._agents.get(ev.agent_id)
                if agent is not None:
                    self._cancel(agent.offers.pop(ev.offer_id, None))
            elif isinstance(ev, ContactConnected):
                customer = self._customers.get(ev.contact_id)
                if customer is not None:
                    self._cancel(customer.patience)
                    customer.patience = None
                    talk_s = max(MIN_HANDLE_S, rng.expovariate(1 / customer.entry.handle_s))
                    self._handling[ev.contact_id] = self._later(talk_s, self._end_contact, ev.contact_id, ev.agent_id)
            elif isinstance(ev, WrapUpStarted):
                if ev.ends_ms is None and ev.contact_id in self._customers:  # wrap_up_s = "manual"
                    wrap_s = rng.expovariate(1 / MANUAL_WRAP_MEAN_S)
                    self._handling[ev.contact_id] = self._later(wrap_s, self._end_wrap_up, ev.contact_id, ev.agent_id)
            elif isinstance(ev, ContactClosed | ContactAbandoned | ContactFailed):
                self._forget(ev.contact_id)
            elif isinstance(ev, ContactOverflowed):
                if ev.left:
                    self._forget(ev.contact_id)
            elif isinstance(ev, ContactTransferred):
                if ev.to_external is not None:
                    self._forget(ev.contact_id)
            elif isinstance(ev, AgentStateChanged):
                agent = self._agents.get(ev.agent_id)
                if agent is not None and ev.state == "away" and ev.reason != "break" and not agent.on_break:
                    self._later(rng.uniform(*BACK_AFTER_AWAY_S), self._come_back, agent.id)

    def _come_back(self, agent_id: str) -> None:
        if not self._agents[agent_id].on_break:
            self._submit(AgentReady, agent_id=agent_id)
