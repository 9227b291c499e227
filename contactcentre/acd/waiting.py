"""Waiting contacts, grouped by what they need, indexed by skill so a freed agent finds its work fast.

Contacts that need the same thing (channel, skill requirement, preferred agent) compete for the same agents,
so they share a ``WaitGroup`` kept in service order: ``rank = (waiting_since − priority × weight, arrival
sequence)``. Everyone ages at the same rate, so that key never changes while a contact waits; priority aging
costs nothing, and a contact that returns from a rejected offer slots back into its old place.

An agent with free capacity looks only at the groups indexed under its own skills (and the groups reserved
for it), and compares their heads: the work is proportional to the number of groups it could serve, not to
the number of contacts waiting.
"""

from __future__ import annotations

import functools
from bisect import bisect_left, insort
from collections.abc import Iterator
from operator import attrgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contactcentre.acd.agent import Agent
    from contactcentre.acd.contact import Contact

Req = tuple[tuple[str, int], ...]  # all of these skills at these minimum levels
Reqs = tuple[Req, ...]  # any one of these (overflow widens by adding alternatives)
GroupKey = tuple[str, Reqs, str | None]

_rank = attrgetter("rank")


@functools.lru_cache(maxsize=4096)
def reqs_text(reqs: Reqs) -> str:
    def one(r: Req) -> str:
        return "+".join(f"{s}>={lvl}" for s, lvl in r) or "any"

    return " | ".join(one(r) for r in reqs)


class WaitGroup:
    __slots__ = ("channel", "contacts", "key", "preferred", "reqs", "slots")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.channel, self.reqs, self.preferred = key
        self.contacts: list[Contact] = []
        self.slots: list[dict[GroupKey, WaitGroup]] = []  # the index entries it sits in while non-empty

    def admits(self, agent: Agent) -> bool:
        if self.preferred is not None:
            return agent.id == self.preferred  # a named agent bypasses the skill requirement
        return any(agent.meets(r) for r in self.reqs)

    def position(self, contact: Contact) -> int:
        """How many contacts of this group are served before ``contact``."""
        return bisect_left(self.contacts, contact.rank, key=_rank)

    def __repr__(self) -> str:
        return f"WaitGroup({self.channel} {self.preferred or reqs_text(self.reqs)} n={len(self.contacts)})"


class WaitIndex:
    def __init__(self) -> None:
        self.groups: dict[GroupKey, WaitGroup] = {}
        self._by_skill: dict[tuple[str, str], dict[GroupKey, WaitGroup]] = {}
        self._open: dict[str, dict[GroupKey, WaitGroup]] = {}  # groups anyone on the channel may serve
        self._by_preferred: dict[str, dict[GroupKey, WaitGroup]] = {}
        self.count = 0
        self._per_channel: dict[str, int] = {}

    def _slots(self, g: WaitGroup) -> Iterator[dict[GroupKey, WaitGroup]]:
        if g.preferred is not None:
            yield self._by_preferred.setdefault(g.preferred, {})
            return
        seen: set[str] = set()
        for r in g.reqs:
            if not r:
                yield self._open.setdefault(g.channel, {})
            for skill, _ in r:
                if skill not in seen:
                    seen.add(skill)
                    yield self._by_skill.setdefault((g.channel, skill), {})

    def add(self, contact: Contact) -> WaitGroup:
        key: GroupKey = (contact.channel, contact.reqs, contact.preferred_agent_id)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = WaitGroup(key)
            g.slots = list(self._slots(g))
        if not g.contacts:
            for slot in g.slots:
                slot[key] = g
        insort(g.contacts, contact, key=_rank)
        contact.group = g
        self.count += 1
        self._per_channel[contact.channel] = self._per_channel.get(contact.channel, 0) + 1
        return g

    def ahead_of(self, contact: Contact) -> int:
        """How many waiting contacts of ``contact``'s group (same channel, requirement and preferred agent)
        are served before it, whether it is in the index yet or not."""
        g = contact.group or self.groups.get((contact.channel, contact.reqs, contact.preferred_agent_id))
        return 0 if g is None else bisect_left(g.contacts, contact.rank, key=_rank)

    def remove(self, contact: Contact) -> None:
        g = contact.group
        assert g is not None, contact
        lst = g.contacts
        i = bisect_left(lst, contact.rank, key=_rank)
        assert lst[i] is contact, (contact, lst[i])
        del lst[i]
        contact.group = None
        self.count -= 1
        self._per_channel[contact.channel] -= 1
        if not lst:  # an empty group leaves the index (so walks never meet it) but is kept for reuse
            for slot in g.slots:
                slot.pop(g.key, None)

    def groups_for(self, agent: Agent, channel: str) -> Iterator[WaitGroup]:
        """Non-empty groups on ``channel`` that ``agent`` may serve (each once)."""
        seen: set[GroupKey] = set()
        pref = self._by_preferred.get(agent.id)
        if pref:
            for g in pref.values():
                if g.channel == channel:
                    yield g
        for g in self._open.get(channel, {}).values():
            seen.add(g.key)
            yield g
        by_skill = self._by_skill
        for skill in agent.skills:
            slot = by_skill.get((channel, skill))
            if not slot:
                continue
            for key, g in slot.items():
                if key in seen:
                    continue
                seen.add(key)
                if g.admits(agent):
                    yield g

    def count_on(self, channels: tuple[str, ...]) -> int:
        """Contacts waiting on any of ``channels``."""
        per = self._per_channel
        return sum(per.get(ch, 0) for ch in channels)

    def preferred_groups(self, agent_id: str) -> list[WaitGroup]:
        return list(self._by_preferred.get(agent_id, {}).values())

    def __iter__(self) -> Iterator[WaitGroup]:
        return iter(self.groups.values())
