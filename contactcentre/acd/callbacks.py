"""Callbacks: virtual hold for a caller waiting in a queue, and callbacks scheduled for a time.

Virtual hold (``CallbackRequested``): a queued voice contact becomes a ``callback`` contact *in place*. Its
rank (waiting since − priority × weight, arrival number) does not change, so it is served exactly where the
caller would have been; its wait clock and SLA clock run on. From then on it is offered under the callback
channel's settings (exclusive, offer timeout), the caller hanging up is not an abandon, and the queue's
maximum wait and ``leave`` steps no longer apply (nobody is on the line to send to voicemail). It stops
counting towards the queue's depth limit, which is for callers on the line.

Scheduled callbacks (``CallbackScheduled``) are data on the timer heap until ``due_ms``; then the callback
arrives in its queue as a new ``callback`` contact (waiting from ``due_ms``, with the callback channel's SLA).
``CallbackCancelled`` withdraws one that is scheduled, or waiting and not yet with an agent.

Both are router inputs, so the log replays them: a restart restores scheduled callbacks and their places.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd import timers as T
from contactcentre.acd.contact import OFFERED, QUEUED, Contact
from contactcentre.acd.errors import DuplicateContact, RouterError, UnknownContact, UnknownQueue
from contactcentre.acd.ewt import WaitSituation
from contactcentre.events import (
    CallbackCancelled,
    CallbackRequested,
    CallbackScheduled,
    ContactArrived,
    ContactCallbackQueued,
    ContactQueued,
    ContactWithdrawn,
    OfferCancelled,
)

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
    from contactcentre.acd.timers import Timer
else:
    _Base = object

CALLBACK = "callback"
MAX_NUMBER = 64


class Callbacks(_Base):
    """Part of ``Router`` (a mixin over the router's state): ``self.scheduled`` holds callbacks not yet due."""

    scheduled: dict[str, tuple[CallbackScheduled, Timer]]

    def _check_number(self, number: str) -> None:
        if not number or len(number) > MAX_NUMBER:
            raise RouterError(f"a callback needs a number of 1 to {MAX_NUMBER} characters")

    def _on_callback_requested(self, ev: CallbackRequested) -> None:
        c = self._contact(ev.contact_id)
        self._check_number(ev.number)
        if c.channel != "voice" or c.state != QUEUED:
            raise RouterError(f"only a waiting call can become a callback ({c.id!r} is {c.channel}, {c.state})")
        plan = self.queues[c.queue]
        if CALLBACK not in plan.channels:
            raise RouterError(f"queue {c.queue!r} does not serve callbacks")
        self._emit(ev)
        self.waiting.remove(c)
        self._end_drain_of(c)
        for t in c.timers:
            if t.kind == T.MAX_WAIT:
                self.timers.cancel(t)
        c.timers = [t for t in c.timers if t.kind != T.MAX_WAIT]
        plan.depth -= 1  # off the line: no longer takes a caller's place in the depth limit
        c.channel = CALLBACK
        c.callback_number = ev.number
        c.attempt = 1
        group = self.waiting.add(c)  # same rank: same place among everyone the same agents serve
        now = self.now_ms
        if ContactCallbackQueued in self._wants:
            self._emit(
                ContactCallbackQueued(
                    at_ms=now,
                    contact_id=c.id,
                    queue=c.queue,
                    via="virtual_hold",
                    waiting_since_ms=c.waiting_since_ms,
                    attempt=1,
                    customer_id=c.customer_id,
                    tier=c.tier,
                )
            )
        # Its place among everyone the same agents serve: the callbacks and the calls still on the line.
        ahead = group.position(c)
        voice = self.waiting.groups.get(("voice", c.reqs, c.preferred_agent_id))
        if voice is not None:
            ahead += voice.position(c)
        agent, why = self._find_agent(c)
        if ContactQueued in self._wants:
            self._emit(
                ContactQueued(
                    at_ms=now,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=CALLBACK,
                    priority=c.priority,
                    tier=c.tier,
                    position=ahead + 1,
                    ewt_ms=0 if agent is not None else self._ewt(c, ahead),
                    sla_deadline_ms=c.sla_deadline_ms,
                    via="virtual_hold",
                    waiting_since_ms=c.waiting_since_ms,
                )
            )
        if agent is not None:
            assert why is not None
            self._offer(c, agent, why)
        elif self._drain_enabled and self._exclusive.get(CALLBACK, False):
            self._find_drainer(c)

    def _on_callback_scheduled(self, ev: CallbackScheduled) -> None:
        if ev.contact_id in self.contacts or ev.contact_id in self.scheduled:
            raise DuplicateContact(ev.contact_id)
        self._check_number(ev.number)
        plan = self.queues.get(ev.queue)
        if plan is None:
            raise UnknownQueue(ev.queue)
        if CALLBACK not in plan.channels:
            raise RouterError(f"queue {ev.queue!r} does not serve callbacks")
        if ev.attempt < 1:
            raise RouterError("a callback's attempt counts from 1")
        self._emit(ev)
        timer = self.timers.set(ev.due_ms, T.CALLBACK_DUE, ev.contact_id)
        self.scheduled[ev.contact_id] = (ev, timer)
        if ev.due_ms <= self.now_ms:  # due already: it arrives now
            self.timers.cancel(timer)
            self._fire_callback_due(ev.contact_id)

    def _fire_callback_due(self, contact_id: str) -> None:
        ev, _ = self.scheduled.pop(contact_id)
        arrival = ContactArrived(
            at_ms=self.now_ms,
            contact_id=ev.contact_id,
            queue=ev.queue,
            channel=CALLBACK,
            customer_id=ev.customer_id,
            tier=ev.tier,
            priority=ev.priority,
            attributes=ev.attributes,
            address=ev.number,
        )

        def announce(c: Contact) -> None:
            c.callback_number = ev.number
            c.attempt = ev.attempt
            if ContactCallbackQueued in self._wants:
                self._emit(
                    ContactCallbackQueued(
                        at_ms=self.now_ms,
                        contact_id=c.id,
                        queue=ev.queue,
                        via="scheduled",
                        waiting_since_ms=self.now_ms,
                        attempt=ev.attempt,
                        customer_id=ev.customer_id,
                        tier=c.tier,
                    )
                )

        try:
            self._admit(arrival, emit=False, before=announce)
        except RouterError as exc:  # checked when scheduled; only a contact id reused since can land here
            if ContactWithdrawn in self._wants:
                self._emit(
                    ContactWithdrawn(
                        at_ms=self.now_ms,
                        contact_id=ev.contact_id,
                        queue=ev.queue,
                        channel=CALLBACK,
                        wait_ms=0,
                        reason=f"refused: {exc}",
                        tier=ev.tier,
                    )
                )

    def _on_callback_cancelled(self, ev: CallbackCancelled) -> None:
        got = self.scheduled.get(ev.contact_id)
        if got is not None:
            self._emit(ev)
            del self.scheduled[ev.contact_id]
            self.timers.cancel(got[1])
            return
        c = self.contacts.get(ev.contact_id)
        if c is None:
            raise UnknownContact(ev.contact_id)
        if c.channel != CALLBACK or c.state not in (QUEUED, OFFERED):
            raise RouterError(f"only a callback not yet with an agent can be cancelled ({c.id!r} is {c.state})")
        allowed = None
        o = c.offer
        if o is not None:
            allowed = o.agent.must("cancel")
        self._emit(ev)
        if o is not None:
            assert allowed is not None
            a = o.agent
            if OfferCancelled in self._wants:
                self._emit(
                    OfferCancelled(at_ms=self.now_ms, offer_id=o.id, contact_id=c.id, agent_id=a.id, reason="withdrawn")
                )
            self._close_offer(o, "cancel")
        self.waiting.remove(c)
        self._end_drain_of(c)
        c.step_to("withdraw")
        self._leave_queue(c)
        if ContactWithdrawn in self._wants:
            self._emit(
                ContactWithdrawn(
                    at_ms=self.now_ms,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=c.channel,
                    wait_ms=self.now_ms - c.waiting_since_ms,
                    reason=ev.reason,
                    tier=c.tier,
                )
            )
        self._finish(c)
        if o is not None:
            assert allowed is not None
            self._slot_freed(o.agent, allowed)

    def _ewt(self, c: Contact, ahead: int) -> int | None:
        return self.estimator.estimate(WaitSituation(c.queue, c.channel, ahead, self._servers(c), c.priority))
