"""Ready capacity per (channel, requirement): the ``c`` of the wait estimate, kept up to date as agents come,
go and change skills, instead of recounted over the floor after every change."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from contactcentre.acd.agent import READY, Agent

Req = tuple[tuple[str, int], ...]
Key = tuple[str, tuple[Req, ...]]


class Staffing:
    def __init__(self, roster: Callable[[Req], Iterable[Agent]]) -> None:
        self._roster = roster  # every agent that could meet a requirement (by its rarest skill)
        self._totals: dict[Key, int] = {}
        self._by_skill: dict[str, dict[Key, None]] = {}  # "" indexes requirements anyone meets

    def servers(self, channel: str, reqs: tuple[Req, ...]) -> int:
        """Capacity on ``channel`` of the ready agents who meet any of ``reqs``."""
        key = (channel, reqs)
        got = self._totals.get(key)
        if got is not None:
            return got
        seen: set[str] = set()
        total = 0
        for req in reqs:
            for a in self._roster(req):
                if a.id not in seen and a.presence == READY and a.meets(req):
                    seen.add(a.id)
                    total += a.capacity.get(channel, 0)
        self._totals[key] = total
        for req in reqs:
            for skill in [s for s, _ in req] or [""]:
                self._by_skill.setdefault(skill, {})[key] = None
        return total

    def _adjust(self, a: Agent, sign: int) -> None:
        if a.presence != READY:
            return
        keys: dict[Key, None] = dict(self._by_skill.get("", {}))
        for skill in a.skills:
            keys.update(self._by_skill.get(skill, {}))
        for key in keys:
            channel, reqs = key
            if any(a.meets(r) for r in reqs):
                self._totals[key] += sign * a.capacity.get(channel, 0)

    def leave(self, agent: Agent) -> None:
        """Call before the agent's presence, skills or capacity change..."""
        self._adjust(agent, -1)

    def join(self, agent: Agent) -> None:
        """...and after."""
        self._adjust(agent, +1)
