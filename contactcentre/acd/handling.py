"""Handling a connected contact: hold, the end of handling, wrap-up, disposition, transfers, hang-ups.

Wrap-up keeps the contact's capacity slot (after-contact work is work). It ends by the channel's timer or,
for ``wrap_up_s = "manual"``, by the agent. Transfers inside the centre put the contact back in a queue —
for a named agent, a queue only that agent may take from for a while — so offers, timeouts and fallbacks
are the same code as for any other contact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd import timers as T
from contactcentre.acd.agent import LOGGED_OUT, Agent
from contactcentre.acd.contact import CONNECTED, HELD, OFFERED, QUEUED, Contact
from contactcentre.acd.contact import WRAP_UP as C_WRAP_UP
from contactcentre.acd.errors import IllegalTransition, RouterError, UnknownQueue
from contactcentre.events import (
    ContactAbandoned,
    ContactClosed,
    ContactEnded,
    ContactHeld,
    ContactRetrieved,
    ContactTransferred,
    CustomerLeft,
    DispositionSet,
    OfferCancelled,
    TransferRequested,
    WrapUpEnded,
    WrapUpExpired,
    WrapUpStarted,
)

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
else:
    _Base = object


class Handling(_Base):
    """Part of ``Router`` (a mixin over the router's state)."""

    def _on_customer_left(self, ev: CustomerLeft) -> None:
        c = self._contact(ev.contact_id)
        state = c.state
        if state == C_WRAP_UP:
            return  # the agent had already finished: nothing changes, nothing to log
        if c.channel == "callback" and state in (QUEUED, OFFERED):
            return  # virtual hold: the caller hangs up after asking to be called back; that is no abandon
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
            if OfferCancelled in self._wants:
                self._emit(
                    OfferCancelled(
                        at_ms=self.now_ms, offer_id=o.id, contact_id=c.id, agent_id=a.id, reason="customer_left"
                    )
                )
            self._close_offer(o, "cancel")
            self._abandon(c)
            self._slot_freed(a, allowed)
        else:
            self._abandon(c)

    def _abandon(self, c: Contact) -> None:
        if c.group is not None:
            self.waiting.remove(c)
            self._end_drain_of(c)
        c.step_to("abandon")
        self._leave_queue(c)
        if ContactAbandoned in self._wants:
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
            raise IllegalTransition("contact", c.id, c.state, action, f"agent {agent_id!r} is not handling it")
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
        if WrapUpStarted in self._wants:
            self._emit(WrapUpStarted(at_ms=now, contact_id=c.id, agent_id=a.id, by=by, ends_ms=ends))  # type: ignore[arg-type]
        if wrap == 0:
            self._close(c, a)
            return self._slot_freed(a, allowed)
        if ends is not None:
            c.wrap_timer = self.timers.set(ends, T.WRAP_UP_END, c)
        self._settle(a, allowed)

    def _close(self, c: Contact, a: Agent) -> None:
        now = self.now_ms
        c.step_to("close")
        del a.work[c.id]
        a.wrapping -= 1
        self._load(a, c.channel, -1)
        a.handled_today += 1
        closed = ContactClosed(
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
        if ContactClosed in self._wants:
            self._emit(closed)
        self.estimator.observe(closed)  # built even when nobody reads it: the wait estimate learns from it
        self._finish(c)

    def _on_wrap_done(self, ev: WrapUpEnded) -> None:
        c, a = self._handling(ev.contact_id, ev.agent_id, "close")
        c.must("close")
        allowed = a.must("wrap_done")
        self._emit(ev)
        self.timers.cancel(c.wrap_timer)
        self._close(c, a)
        self._slot_freed(a, allowed)

    def _fire_wrap_end(self, c: Contact) -> None:
        a = self.agents[c.agent_id]  # type: ignore[index]
        allowed = a.must("wrap_expire")
        if WrapUpExpired in self._wants:
            self._emit(WrapUpExpired(at_ms=self.now_ms, contact_id=c.id, agent_id=a.id))
        self._close(c, a)
        self._slot_freed(a, allowed)

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
        a.handled_today += 1
        c.agent_id = None
        c.transfers += 1
        if ContactTransferred in self._wants:
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
