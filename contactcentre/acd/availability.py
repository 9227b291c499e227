"""Agents able to take one more contact now, per (channel, skill), in idle order.

An agent is listed under a channel while it can take one more contact there (logged in, ready, below its
capacity and its open-offer limit, and no exclusive work in hand). It is listed again at the back whenever
its load changes, so each list iterates longest-idle first: Python dicts keep insertion order, which makes
the default strategy a walk to the first agent that meets the levels, with no sorting and no scan of the
whole floor.
"""

from __future__ import annotations

from collections.abc import Mapping

from contactcentre.acd.agent import READY, Agent

ANY_SKILL = ""


class Availability:
    def __init__(self, exclusive: Mapping[str, bool], offers_per_agent: int) -> None:
        self._exclusive = dict(exclusive)
        self._offers_per_agent = offers_per_agent
        self._lists: dict[tuple[str, str], dict[str, Agent]] = {}

    def can_take(self, agent: Agent, channel: str) -> bool:
        if agent.presence != READY or agent.exclusive_load:
            return False
        if agent.capacity.get(channel, 0) <= agent.load.get(channel, 0):
            return False
        if len(agent.offers) >= self._offers_per_agent:
            return False
        return not (self._exclusive.get(channel, False) and agent.total_load)

    def relist(self, agent: Agent, now_ms: int, *, moved: bool) -> None:
        """Bring the lists up to date for ``agent``. ``moved``: its load changed, so it goes to the back."""
        want = tuple(ch for ch in agent.capacity if self.can_take(agent, ch))
        had = agent.listed
        if not moved and want == had:
            return
        lists = self._lists
        aid = agent.id
        for ch in had:
            lists[(ch, ANY_SKILL)].pop(aid, None)
            for skill in agent.skills:
                lst = lists.get((ch, skill))
                if lst is not None:
                    lst.pop(aid, None)
        for ch in want:
            lists.setdefault((ch, ANY_SKILL), {})[aid] = agent
            for skill in agent.skills:
                lists.setdefault((ch, skill), {})[aid] = agent
        if moved or want != had:
            agent.idle_since_ms = now_ms
        agent.listed = want

    def unlist(self, agent: Agent) -> None:
        """Remove ``agent`` everywhere (before its skills change)."""
        for ch in agent.listed:
            self._lists[(ch, ANY_SKILL)].pop(agent.id, None)
            for skill in agent.skills:
                lst = self._lists.get((ch, skill))
                if lst is not None:
                    lst.pop(agent.id, None)
        agent.listed = ()

    def pool(self, channel: str, req: tuple[tuple[str, int], ...]) -> dict[str, Agent]:
        """The smallest list that contains every agent able to meet ``req`` on ``channel``."""
        lists = self._lists
        if not req:
            return lists.get((channel, ANY_SKILL), {})
        best: dict[str, Agent] | None = None
        for skill, _ in req:
            lst = lists.get((channel, skill))
            if not lst:
                return {}
            if best is None or len(lst) < len(best):
                best = lst
        return best or {}

    def count(self, channel: str) -> int:
        return len(self._lists.get((channel, ANY_SKILL), {}))
