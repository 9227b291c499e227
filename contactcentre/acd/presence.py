"""Agents: login, logout, ready and away, skills, and the state they report (checked against the table).

Presence changes are the only moments the ready staffing changes, so they keep the EWT staffing counts up
to date; time in each state is accumulated for occupancy and ``least_occupied``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd.agent import (
    AGENT_TRANSITIONS,
    AWAY,
    HANDLING,
    LOGGED_OUT,
    READY,
    STAFFED,
    Agent,
)
from contactcentre.acd.calendar import day_number
from contactcentre.acd.contact import CONNECTED, HELD, Contact
from contactcentre.acd.contact import WRAP_UP as C_WRAP_UP
from contactcentre.acd.errors import IllegalTransition, RouterError, UnknownAgent
from contactcentre.config_base import MAX_LEVEL, MIN_LEVEL
from contactcentre.events import (
    AgentAway,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentReady,
    AgentSkillsChanged,
    AgentStateChanged,
)

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
else:
    _Base = object


class Presence(_Base):
    """Part of ``Router`` (a mixin over the router's state)."""

    def _go_away(self, a: Agent, reason: str) -> list[Contact]:
        self._set_presence(a, AWAY, reason)
        return self._cancel_offers(a, "agent_away")

    def _set_presence(self, a: Agent, presence: str, reason: str | None) -> None:
        if presence != READY:
            self._end_drain_by(a)
        self.staffing.leave(a)
        a.presence = presence
        a.away_reason = reason
        self.staffing.join(a)

    def _add_agent(self, agent_id: str, name: str, skills: dict[str, int], capacity: dict[str, int]) -> Agent:
        a = Agent(agent_id, name, len(self.agents), skills, capacity)
        self.agents[agent_id] = a
        self._serving.clear()
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
        if old in STAFFED:  # _count_time, inline: three state changes per contact
            elapsed = now - a.counted_since_ms
            a.staffed_ms += elapsed
            if old in HANDLING:
                a.handling_ms += elapsed
        a.counted_since_ms = now
        a.state = new
        a.state_reason = reason
        a.state_since_ms = now
        if AgentStateChanged in self._wants:
            self._emit(AgentStateChanged(at_ms=now, agent_id=a.id, state=new, previous=old, reason=reason))  # type: ignore[arg-type]

    def _new_day(self) -> None:
        """Local midnight passed: "today" starts again for every agent (contacts handled, occupancy), and
        the strategy orders built on those counters are re-sorted."""
        midnight = self._next_midnight
        self._day, self._next_midnight = day_number(self.now_ms, self._tz)
        for a in self.agents.values():
            self._count_time(a, a.state, midnight)
            a.handled_today = a.staffed_ms = a.handling_ms = 0
        self.avail.refresh_all(self.agents.values())

    def _count_time(self, a: Agent, old: str, now: int) -> None:
        elapsed = now - a.counted_since_ms
        a.counted_since_ms = now
        if old in STAFFED:
            a.staffed_ms += elapsed
            if old in HANDLING:
                a.handling_ms += elapsed

    def _on_login(self, ev: AgentLoggedIn) -> None:
        a = self.agents.get(ev.agent_id)
        if a is None and ev.skills is None:
            raise UnknownAgent(ev.agent_id)
        if ev.skills is not None:
            check_levels(ev.skills)
        if ev.capacity is not None:
            check_capacity(ev.capacity)
        allowed = a.must("login") if a is not None else AGENT_TRANSITIONS[(LOGGED_OUT, "login")]
        self._emit(ev)
        if a is None:
            cap = dict(ev.capacity or self.config.routing.default_capacity)
            a = self._add_agent(ev.agent_id, ev.agent_id, dict(ev.skills or {}), cap)
        elif ev.skills is not None or ev.capacity is not None:
            self._change_skills(a, ev.skills, ev.capacity)
        self._set_presence(a, AWAY if ev.away_reason else READY, ev.away_reason)
        a.state_since_ms = a.counted_since_ms = self.now_ms
        self._slot_freed(a, allowed)

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
            check_levels(ev.skills)
        if ev.capacity is not None:
            check_capacity(ev.capacity)
        self._emit(ev)
        self._change_skills(a, ev.skills, ev.capacity)
        self._settle(a, allowed)
        self.avail.relist(a, self.now_ms, moved=False)
        self._route_agent(a)

    def _change_skills(self, a: Agent, skills: dict[str, int] | None, capacity: dict[str, int] | None) -> None:
        """New skills or capacity; the agent keeps its place in the idle order (the caller relists it, which
        only moves it if the channels it can take changed)."""
        self._end_drain_by(a)
        self.staffing.leave(a)
        self._serving.clear()
        if skills is not None:
            for s in a.skills:
                self._skill_roster.get(s, {}).pop(a.id, None)
            self.avail.change_skills(a, skills)
            for s in a.skills:
                self._skill_roster.setdefault(s, {})[a.id] = a
        if capacity is not None:
            a.capacity = dict(capacity)
            a.total_capacity = sum(capacity.values())
            for ch in capacity:
                a.load.setdefault(ch, 0)
        self.staffing.join(a)


def check_levels(skills: dict[str, int]) -> None:
    for skill, level in skills.items():
        if not MIN_LEVEL <= level <= MAX_LEVEL:
            raise RouterError(f"skill {skill!r}: level {level} is outside {MIN_LEVEL}-{MAX_LEVEL}")


def check_capacity(capacity: dict[str, int]) -> None:
    for ch, n in capacity.items():
        if n < 0:
            raise RouterError(f"capacity for {ch!r} must be >= 0")
