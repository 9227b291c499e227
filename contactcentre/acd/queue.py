"""A queue's routing plan: its configuration resolved once into the integers and tuples the router uses.

Also the SLA policy of a contact — one semantics for every channel: a threshold measured from when the
contact started waiting, optionally only in a calendar's open hours, with a pre-breach warning. A voice
answer target (Gold 20 s) and an e-mail first-response target (Bronze 24 business hours) are the same thing
with different numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contactcentre.acd.calendar import BusinessCalendar
from contactcentre.acd.waiting import Req, Reqs
from contactcentre.config_base import ALWAYS_OPEN

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig, OverflowStep, SlaConfig, TierConfig

# Channels whose contacts wait for an answer rather than on the line: no max wait, no depth limit.
DEFERRED_CHANNELS = frozenset({"email"})
# Channels whose customer is not on the line while the contact waits: the queue's maximum wait and "leave"
# overflow steps (to voicemail) do not apply — a callback promised is kept.
OFF_LINE_CHANNELS = DEFERRED_CHANNELS | {"callback"}


def as_req(skills: Mapping[str, int]) -> Req:
    return tuple(sorted(skills.items()))


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    threshold_ms: int
    warn_ms: int
    target: float
    calendar: BusinessCalendar

    def deadlines(self, since_ms: int) -> tuple[int, int]:
        """(warn at, breach at) for a contact waiting since ``since_ms``."""
        cal = self.calendar
        return cal.add(since_ms, self.warn_ms), cal.add(since_ms, self.threshold_ms)


@dataclass(frozen=True, slots=True)
class StepPlan:
    index: int  # 1-based, as reported
    after_ms: int
    relax: Mapping[str, int]
    drop: frozenset[str]
    alternatives: tuple[Req, ...]  # from add_skill and add_queues
    move_to: str | None
    raise_priority: int
    leave: bool
    leave_to: str | None
    actions: tuple[str, ...]  # what the step does, in words, for the event log

    def widen(self, reqs: Reqs) -> Reqs:
        out: list[Req] = []
        for r in (*reqs, *self.alternatives):
            r2 = tuple((s, min(lvl, self.relax[s]) if s in self.relax else lvl) for s, lvl in r if s not in self.drop)
            if r2 not in out:
                out.append(r2)
        return tuple(out)


@dataclass(slots=True)
class QueuePlan:
    name: str
    channels: frozenset[str]
    reqs: Reqs
    strategy: str
    priority: int
    hours: BusinessCalendar
    when_closed: str
    max_depth: int | None
    when_full: str
    max_wait_ms: int | None
    max_wait_action: str
    steps: tuple[StepPlan, ...]
    sla_by_channel: dict[str, SlaConfig]
    depth: int = 0  # contacts queued or offered from this queue
    _sla_cache: dict[tuple[str, str | None], SlaPolicy] = field(default_factory=dict)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def build_plans(cfg: CentreConfig, calendars: Mapping[str, BusinessCalendar]) -> dict[str, QueuePlan]:
    base = {q.name: as_req(q.skills) for q in cfg.queues}
    plans: dict[str, QueuePlan] = {}
    for q in cfg.queues:
        sla_by_channel: dict[str, SlaConfig] = {}
        for ch in q.channels:
            sla_by_channel[ch] = q.sla_by_channel.get(ch) or q.sla or cfg.channel(ch).sla
        plans[q.name] = QueuePlan(
            name=q.name,
            channels=frozenset(q.channels),
            reqs=(base[q.name],),
            strategy=q.strategy or cfg.routing.strategy,
            priority=q.priority,
            hours=calendars[q.hours],
            when_closed=q.when_closed,
            max_depth=q.max_depth,
            when_full=q.when_full,
            max_wait_ms=_ms(q.max_wait_s) if q.max_wait_s is not None else None,
            max_wait_action=q.max_wait_action,
            steps=tuple(_step(i, s, base) for i, s in enumerate(q.overflow, 1)),
            sla_by_channel=sla_by_channel,
        )
    return plans


def _step(index: int, s: OverflowStep, base: Mapping[str, Req]) -> StepPlan:
    alts = [((skill, lvl),) for skill, lvl in sorted(s.add_skill.items())] + [base[q] for q in s.add_queues]
    actions: list[str] = []
    actions += [f"relax {k}>={v}" for k, v in sorted(s.relax.items())]
    actions += [f"drop {k}" for k in s.drop_skills]
    actions += [f"add skill {k}>={v}" for k, v in sorted(s.add_skill.items())]
    actions += [f"add queue {q}" for q in s.add_queues]
    if s.raise_priority:
        actions.append(f"raise priority {s.raise_priority:+d}")
    if s.move_to:
        actions.append(f"move to {s.move_to}")
    if s.leave:
        actions.append(f"leave to {s.leave_to or 'overflow'}")
    return StepPlan(
        index=index,
        after_ms=_ms(s.after_s),
        relax=dict(s.relax),
        drop=frozenset(s.drop_skills),
        alternatives=tuple(alts),
        move_to=s.move_to,
        raise_priority=s.raise_priority,
        leave=s.leave,
        leave_to=s.leave_to,
        actions=tuple(actions),
    )


def sla_policy(
    plan: QueuePlan,
    channel: str,
    tier_name: str | None,
    tier: TierConfig | None,
    calendars: Mapping[str, BusinessCalendar],
) -> SlaPolicy:
    """The SLA for a contact on ``channel`` in ``plan``'s queue: the tier's target where the tier has one
    for this kind of channel (answer for voice/chat/callback, first response for e-mail), else the queue's."""
    key = (channel, tier_name)
    got = plan._sla_cache.get(key)
    if got is not None:
        return got
    base = plan.sla_by_channel[channel]
    threshold_s, target, warn_s, hours = base.threshold_s, base.target, base.warn_s, base.hours
    if tier is not None:
        if channel == "email":
            if tier.email_response_s is not None:
                threshold_s, target, warn_s = tier.email_response_s, tier.email_target, None
        elif tier.answer_s is not None:
            threshold_s, warn_s = tier.answer_s, None
            if tier.answer_target is not None:
                target = tier.answer_target
        if tier.hours is not None:
            hours = tier.hours
    threshold = _ms(threshold_s)
    warn = _ms(warn_s) if warn_s is not None else threshold * 4 // 5
    policy = SlaPolicy(threshold, warn, target, calendars[hours or ALWAYS_OPEN])
    plan._sla_cache[key] = policy
    return policy
