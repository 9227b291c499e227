"""Agents able to take one more contact now, per (channel, skill), kept in each strategy's order.

An agent is listed under a channel while it can take one more contact there (logged in, ready, below its
capacity and its open-offer limit, and no exclusive work in hand). It is listed again at the back whenever
its load changes, so the plain lists iterate longest-idle first: Python dicts keep insertion order, which
makes the default strategy a walk to the first agent that meets the levels, with no sorting and no scan of
the whole floor.

The other strategies get sorted lists of their own per (channel, skill), only for the strategies some queue
uses, holding ``(key..., listing sequence, agent)``: the listing sequence is the idle order, so it breaks ties
exactly as the plain lists do. Keys are recomputed whenever an agent is relisted (after every change of its
load, state or skills), so a walk in list order meets agents best-first and stops after the first few that
qualify. A key that changes with the calendar (contacts handled *today*) is refreshed by ``refresh_all``
when the day rolls over.

A sorted list is kept only for a (strategy, channel, skill) that some walk reads: the ones the queues'
requirements name are opened up front (``open_lists``), any other (a skill an arrival adds) the first time
a walk asks for it, built from the plain list with each agent's key as it was last filed. Keeping a list
for every skill of every agent cost two dozen sorted inserts each time an agent moved.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from contactcentre.acd.agent import READY, Agent

ANY_SKILL = ""

# Sort keys of the ordered strategies: smaller first. (``longest_idle`` needs none: it is the idle order.)
ORDER_KEYS: dict[str, Callable[[Agent, str], tuple[int, ...]]] = {
    "most_skilled": lambda a, skill: (-a.skills.get(skill, 0),),
    "least_occupied": lambda a, skill: (
        a.total_load * 1000 // a.total_capacity if a.total_capacity else 0,
        a.handling_ms * 1000 // a.staffed_ms if a.staffed_ms else 0,
    ),
    "round_robin": lambda a, skill: (a.ordinal,),
    "fewest_handled": lambda a, skill: (a.handled_today,),
}


class Availability:
    def __init__(self, exclusive: Mapping[str, bool], offers_per_agent: int, orders: Iterable[str] = ()) -> None:
        self._exclusive = dict(exclusive)
        self._offers_per_agent = offers_per_agent
        self._lists: dict[tuple[str, str], dict[str, Agent]] = {}
        self._orders = tuple(sorted(o for o in set(orders) if o in ORDER_KEYS))
        self._sorted: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}  # the lists kept, by key
        self._by_skill = self._orders.index("most_skilled") if "most_skilled" in self._orders else -1
        self._keyfs = tuple(ORDER_KEYS[o] for o in self._orders)
        self._open: dict[tuple[str, str], dict[str, list[tuple[Any, ...]]]] = {}  # (order, channel) -> skill -> list
        self._seq = 0
        # Per agent, while its skills and channels stay the same: the plain lists it is in, and the kept
        # sorted lists it is filed into (with the number of lists kept when that was worked out) — an agent
        # is relisted two or three times per contact, and working these out again was most of the cost.
        self._plain_of: dict[str, dict[str, list[dict[str, Agent]]]] = {}  # agent -> channel -> plain lists
        # agent -> (lists kept when worked out, channel -> [(order's index, skill, sorted list)])
        self._filing: dict[str, tuple[int, dict[str, list[tuple[int, str, list[tuple[Any, ...]]]]]]] = {}
        # per agent: the entries it has in sorted lists, to find them again when it moves
        self._entries: dict[str, list[tuple[list[tuple[Any, ...]], tuple[Any, ...]]]] = {}
        self._signatures: dict[str, tuple[tuple[int, ...], ...]] = {}

    def can_take(self, agent: Agent, channel: str) -> bool:
        if agent.presence != READY or agent.exclusive_load:
            return False
        if agent.capacity.get(channel, 0) <= agent.load.get(channel, 0):
            return False
        if len(agent.offers) >= self._offers_per_agent:
            return False
        return not (self._exclusive.get(channel, False) and agent.total_load)

    def takeable(self, agent: Agent) -> tuple[str, ...]:
        """The channels ``agent`` can take one more contact on now: ``can_take`` for each of its channels,
        with the checks that do not depend on the channel made once."""
        if agent.presence != READY or agent.exclusive_load or len(agent.offers) >= self._offers_per_agent:
            return ()
        load = agent.load
        busy = agent.total_load
        exclusive = self._exclusive
        out: tuple[str, ...] = ()
        for ch, cap in agent.capacity.items():
            if cap > load[ch] and not (
                busy and exclusive[ch]
            ):  # load has every capacity channel; exclusive every channel
                out += (ch,)
        return out

    def relist(self, agent: Agent, now_ms: int, *, moved: bool) -> None:
        """Bring the lists up to date for ``agent``. ``moved``: its load changed, so it goes to the back."""
        want = self.takeable(agent)
        if not moved and want == agent.listed:
            if want and self._orders:
                self._resort(agent, want)
            return
        if agent.listed or self._orders:
            self.unlist(agent)
        aid = agent.id
        per = self._plain_of.get(aid)
        if per is None:
            per = self._plain_of[aid] = {}
        for ch in want:
            plain = per.get(ch)
            if plain is None:
                lists = self._lists
                plain = per[ch] = [lists.setdefault((ch, skill), {}) for skill in (ANY_SKILL, *agent.skills)]
            for d in plain:
                d[aid] = agent
        agent.idle_since_ms = now_ms
        agent.listed = want
        self._seq += 1
        agent.listing_seq = self._seq
        if self._orders:
            self._insert_sorted(agent, want)

    def change_skills(self, agent: Agent, skills: dict[str, int]) -> None:
        """Give ``agent`` new skills without moving it in the idle order: it leaves the lists of skills it
        lost, joins those of skills it gained (at the back: they have no record of it), and keeps its place
        everywhere else."""
        lists = self._lists
        old = agent.skills
        self._plain_of.pop(agent.id, None)  # its lists change here, in place
        self._filing.pop(agent.id, None)
        for ch in agent.listed:
            for skill in old:
                if skill not in skills:
                    lists[(ch, skill)].pop(agent.id, None)
            for skill in skills:
                if skill not in old:
                    lists.setdefault((ch, skill), {})[agent.id] = agent
        for lst, entry in self._entries.pop(agent.id, ()):
            del lst[bisect_left(lst, entry)]
        agent.skills = dict(skills)
        if agent.listed and self._orders:
            self._insert_sorted(agent, agent.listed)

    def unlist(self, agent: Agent) -> None:
        """Remove ``agent`` everywhere (before its skills change, or when it can take nothing)."""
        aid = agent.id
        per = self._plain_of.get(aid) or {}
        for ch in agent.listed:
            plain = per.get(ch)
            if plain is not None:
                for d in plain:
                    d.pop(aid, None)
                continue
            self._lists[(ch, ANY_SKILL)].pop(aid, None)
            for skill in agent.skills:
                lst = self._lists.get((ch, skill))
                if lst is not None:
                    lst.pop(aid, None)
        agent.listed = ()
        for lst, entry in self._entries.pop(agent.id, ()):
            del lst[bisect_left(lst, entry)]

    def _insert_sorted(self, agent: Agent, channels: tuple[str, ...]) -> None:
        signature = self._signatures[agent.id] = self._signature(agent)
        entries = self._entries.setdefault(agent.id, [])
        seq = agent.listing_seq
        skills = agent.skills
        got = self._filing.get(agent.id)
        if got is None or got[0] != len(self._sorted):  # lists are only ever added: their number dates them
            got = self._filing[agent.id] = (len(self._sorted), {})
        per = got[1]
        by_skill = self._by_skill
        for ch in channels:
            targets = per.get(ch)
            if targets is None:
                targets = per[ch] = self._filing_targets(skills, ch)
            for i, skill, lst in targets:
                # ORDER_KEYS["most_skilled"] is the one key that reads the skill; the others are the
                # signature's, computed just now
                entry = (-skills.get(skill, 0), seq, agent) if i == by_skill else (*signature[i], seq, agent)
                insort(lst, entry)
                entries.append((lst, entry))

    def _filing_targets(self, skills: dict[str, int], channel: str) -> list[tuple[int, str, list[tuple[Any, ...]]]]:
        """The kept sorted lists on ``channel`` an agent with ``skills`` belongs in, as (order's index, skill,
        list)."""
        out = []
        for i, order in enumerate(self._orders):
            kept = self._open.get((order, channel))
            if not kept:
                continue
            # walk the shorter side: a few kept lists on a small centre, a few of the agent's skills among
            # hundreds kept on a large one
            if len(kept) <= len(skills):
                out += [(i, k, lst) for k, lst in kept.items() if k == ANY_SKILL or k in skills]
            else:
                out += [(i, k, kept[k]) for k in (ANY_SKILL, *skills) if k in kept]
        return out

    def open_lists(self, wanted: Iterable[tuple[str, str, str]]) -> None:
        """Keep the sorted lists for these (order, channel, skill) from now on (those of orders not in use
        are ignored)."""
        for order, channel, skill in wanted:
            if order in self._orders:
                self._list(order, channel, skill)

    def _list(self, order: str, channel: str, skill: str) -> list[tuple[Any, ...]]:
        """The kept sorted list, opened now if it was not kept: every agent listed on (channel, skill), keyed
        as when it was last filed (``_signatures``; a skill level only changes by a refiling), so the list
        is the one that filing every agent into it all along would have built."""
        got = self._sorted.get((order, channel, skill))
        if got is not None:
            return got
        i = self._orders.index(order)
        by_skill = order == "most_skilled"  # the one key that depends on the skill
        lst: list[tuple[Any, ...]] = []
        kept: list[tuple[tuple[Any, ...], Agent]] = []
        for a in self._lists.get((channel, skill), {}).values():
            key = (-a.skills.get(skill, 0),) if by_skill else self._signatures[a.id][i]
            entry = (*key, a.listing_seq, a)
            lst.append(entry)
            kept.append((entry, a))
        lst.sort(key=lambda e: e[:-1])  # the listing sequence is unique: agents themselves never compare
        for entry, a in kept:
            self._entries.setdefault(a.id, []).append((lst, entry))
        self._sorted[(order, channel, skill)] = lst
        self._open.setdefault((order, channel), {})[skill] = lst
        return lst

    def _signature(self, agent: Agent) -> tuple[tuple[int, ...], ...]:
        # Keys that move without a relist-with-move depend on the agent alone (load, occupancy, handled);
        # skill levels only change through unlist + relist.
        return tuple([f(agent, ANY_SKILL) for f in self._keyfs])

    def _resort(self, agent: Agent, channels: tuple[str, ...]) -> None:
        """Same lists, but a key may have changed (occupancy, handled count): move the entries if so."""
        if self._signatures.get(agent.id) == self._signature(agent):
            return
        for lst, entry in self._entries.pop(agent.id, ()):
            del lst[bisect_left(lst, entry)]
        self._insert_sorted(agent, channels)

    def refresh_all(self, agents: Iterable[Agent]) -> None:
        """Recompute every sorted key (e.g. at midnight, when "handled today" starts again from zero)."""
        if not self._orders:
            return
        for a in agents:
            if a.listed:
                for lst, entry in self._entries.pop(a.id, ()):
                    del lst[bisect_left(lst, entry)]
                self._insert_sorted(a, a.listed)

    def pool(self, channel: str, req: tuple[tuple[str, int], ...]) -> dict[str, Agent]:
        """The smallest idle-ordered list that holds every agent able to meet ``req`` on ``channel``."""
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

    def sorted_pool(
        self, order: str, channel: str, req: tuple[tuple[str, int], ...]
    ) -> tuple[str, list[tuple[Any, ...]]]:
        """Like ``pool`` but in ``order``'s sort order: (the skill whose list it is, entries
        ``(key..., listing sequence, agent)``)."""
        if order not in self._orders:
            raise KeyError(order)
        if not req:
            return ANY_SKILL, self._list(order, channel, ANY_SKILL)
        # The sorted list of a skill holds the same agents as its plain list: pick by the plain lengths, so
        # only the list walked needs to be kept.
        lists = self._lists
        best = -1
        best_skill = ANY_SKILL
        for skill, _ in req:
            n = len(lists.get((channel, skill), ()))
            if not n:
                return skill, []
            if best < 0 or n < best:
                best, best_skill = n, skill
        return best_skill, self._list(order, channel, best_skill)

    def sorted_list(self, order: str, channel: str, skill: str) -> list[tuple[Any, ...]]:
        """One (channel, skill) list in ``order``'s sort order."""
        return self._list(order, channel, skill)

    def count(self, channel: str) -> int:
        """How many agents could take one more contact on ``channel`` now (dashboards, benchmarks)."""
        return len(self._lists.get((channel, ANY_SKILL), {}))

    def orders(self) -> tuple[str, ...]:
        return self._orders
