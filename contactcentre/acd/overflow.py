"""Timers on waiting contacts: SLA warnings and breaches, overflow steps, maximum wait, preferred-agent
windows and re-offer exclusions — all as data on the router's timer heap, fired at their exact instant.

An overflow step that would take the contact away (``leave``, ``move_to``, max wait) never snatches an offer
that is ringing: it is carried out if the offer falls through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd import timers as T
from contactcentre.acd.contact import OFFERED, QUEUED, Contact
from contactcentre.acd.queue import OFF_LINE_CHANNELS, QueuePlan, StepPlan
from contactcentre.acd.waiting import reqs_text
from contactcentre.events import ContactOverflowed, SlaBreached, SlaWarned

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
else:
    _Base = object


class Overflow(_Base):
    """Part of ``Router`` (a mixin over the router's state)."""

    def _fire_sla_warn(self, c: Contact) -> None:
        deadline = c.sla_deadline_ms
        assert deadline is not None
        if SlaWarned in self._wants:
            self._emit(
                SlaWarned(
                    at_ms=self.now_ms,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=c.channel,
                    deadline_ms=deadline,
                    tier=c.tier,
                )
            )
        # Answered at the deadline itself is still in time (stats count wait <= T): breached is one ms later.
        c.sla_timer = self.timers.set(deadline + 1, T.SLA_BREACH, c)

    def _fire_sla_breach(self, c: Contact) -> None:
        c.sla_timer = None
        if c.state in (QUEUED, OFFERED) and SlaBreached in self._wants:
            self._emit(
                SlaBreached(
                    at_ms=self.now_ms,
                    contact_id=c.id,
                    queue=c.queue,
                    channel=c.channel,
                    deadline_ms=c.sla_deadline_ms or self.now_ms,
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
            return self._exit(c, "leave" if step.leave else step.move_to, actions)  # type: ignore[arg-type]
        queued = c.state == QUEUED
        if queued:
            self.waiting.remove(c)
        c.reqs = step.widen(c.reqs)
        c.reqs_text = reqs_text(c.reqs)
        c.bonus += step.raise_priority
        self._rerank(c, plan)
        if ContactOverflowed in self._wants:
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
        action = self.queues[c.queue].max_wait_action
        self._exit(c, action, ["max wait"] if action == "leave" else ["max wait", f"move to {action}"])

    def _exit(self, c: Contact, where: str, actions: list[str]) -> None:
        """Take a waiting contact out of its queue: ``leave`` the centre, or move to the queue ``where``.
        A ringing offer is not snatched: the exit is carried out if the offer falls through."""
        if where == "leave" and c.channel == "callback":
            return  # a callback promised is kept: nobody is on the line to send elsewhere
        if c.state == OFFERED:
            c.pending_exit = (where, actions)
        elif where == "leave":
            self._overflow_out(c, actions)
        else:
            self._move(c, self.queues[where], actions)

    def _overflow_out(self, c: Contact, actions: list[str]) -> None:
        self.waiting.remove(c)
        self._end_drain_of(c)
        c.step_to("overflow_out")
        self._leave_queue(c)
        if ContactOverflowed in self._wants:
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
        self._end_drain_of(c)
        c.step_to("move")
        for t in c.timers:
            self.timers.cancel(t)
        c.timers = []
        self.queues[c.queue].depth -= c.channel not in OFF_LINE_CHANNELS
        if ContactOverflowed in self._wants:
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
