"""Offers (reservations) as the router makes and settles them: accept, reject, ring-no-answer, withdrawal.

A rejected or expired offer puts the contact back at its old place in the queue (its rank never changed) and
keeps it from going straight back to the same agent for one offer timeout. Ring-no-answer sets the agent
away ("missed_offer") when configured, like Asterisk's autopause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd import timers as T
from contactcentre.acd.agent import Agent
from contactcentre.acd.contact import Contact
from contactcentre.acd.errors import StaleOffer
from contactcentre.acd.queue import OFF_LINE_CHANNELS
from contactcentre.events import (
    ContactConnected,
    Explanation,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
)

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
    from contactcentre.acd.timers import Timer
else:
    _Base = object


class Offer:
    """One contact held for one agent until accepted, rejected, expired or withdrawn."""

    __slots__ = ("agent", "contact", "expires_ms", "id", "timer")

    def __init__(self, offer_id: str, contact: Contact, agent: Agent, expires_ms: int) -> None:
        self.id = offer_id
        self.contact = contact
        self.agent = agent
        self.expires_ms = expires_ms
        self.timer: Timer | None = None

    def __repr__(self) -> str:
        return f"Offer({self.id} {self.contact.id}->{self.agent.id} until {self.expires_ms})"


class Offers(_Base):
    """Part of ``Router`` (a mixin over the router's state)."""

    def _offer(self, c: Contact, a: Agent, why: Explanation) -> None:
        allowed = a.must("offer")
        c.must("offer")
        now = self.now_ms
        if c.group is not None:  # not yet in the wait index when offered on arrival (``_enter_queue``)
            self.waiting.remove(c)
        c.step_to("offer")
        self._offer_seq += 1
        oid = f"o{self._offer_seq}"
        ch = c.channel
        o = Offer(oid, c, a, now + self._offer_ms[ch])
        o.timer = self.timers.set(o.expires_ms, T.OFFER_EXPIRY, o)
        c.offer = o
        c.agent_id = a.id
        self.offers[oid] = o
        a.offers[oid] = o
        self._load(a, ch, +1)
        self._rr[c.queue] = a.ordinal
        if c.drained_by is not None:
            self._end_drain_of(c)
        if a.draining_for is not None and self._exclusive.get(ch, False):
            self._end_drain_by(a)  # it has exclusive work now; another agent may drain for its call
        if OfferMade in self._wants:
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

    def _drop_offer(self, o: Offer) -> None:
        """The offer is no longer open (answered, fallen through, withdrawn): off the books and its timer."""
        self.timers.cancel(o.timer)
        del self.offers[o.id]
        del o.agent.offers[o.id]
        o.contact.offer = None

    def _close_offer(self, o: Offer, action: str) -> Contact:
        """Take an open offer off the books and put its contact back in the queue at its old place."""
        c, a = o.contact, o.agent
        self._drop_offer(o)
        self._load(a, c.channel, -1)
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
            (where, actions), c.pending_exit = c.pending_exit, None
            return self._exit(c, where, actions)
        self._route_contact(c)

    def _on_accept(self, ev: OfferAccepted) -> None:
        o = self._open_offer(ev.offer_id, ev.contact_id, ev.agent_id)
        c, a = o.contact, o.agent
        allowed = a.must("accept")
        c.must("accept")
        self._emit(ev)
        now = self.now_ms
        self._drop_offer(o)  # the capacity it held passes to the contact now in hand
        c.step_to("accept")
        c.connected_ms = now
        c.held_ms = 0
        a.work[c.id] = c
        a.active += 1
        self._leave_queue(c)
        if ContactConnected in self._wants:
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
        if c.timers:
            for t in c.timers:
                timers.cancel(t)
            c.timers = []
        if c.sla_timer is not None:
            timers.cancel(c.sla_timer)
            c.sla_timer = None
        if c.preferred_timer is not None:
            timers.cancel(c.preferred_timer)
            c.preferred_timer = None
        if c.exclusion_timer is not None:
            timers.cancel(c.exclusion_timer)
            c.exclusion_timer = None
        if c.rejected_by:
            c.rejected_by.clear()
        c.preferred_agent_id = None
        self.queues[c.queue].depth -= c.channel not in OFF_LINE_CHANNELS

    def _on_reject(self, ev: OfferRejected) -> None:
        o = self._open_offer(ev.offer_id, ev.contact_id, ev.agent_id)
        c, a = o.contact, o.agent
        allowed = a.must("reject")
        c.must("reject")
        self._emit(ev)
        self._fell_through(o, "reject", allowed, "rejected_offer" if self._away_after_reject else None)

    def _fire_offer_expiry(self, o: Offer) -> None:
        allowed = o.agent.must("expire")
        if OfferExpired in self._wants:
            self._emit(OfferExpired(at_ms=self.now_ms, offer_id=o.id, contact_id=o.contact.id, agent_id=o.agent.id))
        self._fell_through(o, "expire", allowed, "missed_offer" if self._away_after_missed else None)

    def _fell_through(self, o: Offer, action: str, allowed: tuple[str, ...], away: str | None) -> None:
        """A rejected or rung-out offer: the contact goes back to its place (not straight back to this
        agent), the agent goes away if the policy says so, and both look for their next match."""
        c, a = o.contact, o.agent
        self._close_offer(o, action)
        self._exclude(c, a.id)
        requeued = [c]
        if away is not None:
            requeued += self._go_away(a, away)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=True)
        for x in requeued:
            self._back_in_queue(x)
        self._route_agent(a)

    def _cancel_offers(self, a: Agent, reason: str) -> list[Contact]:
        out = []
        for o in list(a.offers.values()):
            if OfferCancelled in self._wants:
                self._emit(
                    OfferCancelled(
                        at_ms=self.now_ms, offer_id=o.id, contact_id=o.contact.id, agent_id=a.id, reason=reason
                    )
                )
            out.append(self._close_offer(o, "cancel"))
        return out
