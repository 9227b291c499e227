"""Which agent gets a contact, and which contact a freed agent takes — with the reasons written down.

Each strategy is a sort key over eligible agents, smaller is better, with idle order as the last tie-break.
Scores in explanations are these keys:

* ``longest_idle`` (default): ``[idle_since_ms]`` — the agent whose load changed longest ago. For an agent
  on one exclusive channel that is the time its last contact closed.
* ``most_skilled`` (best fit): ``[-sum of levels in the required skills, idle_since_ms]``.
* ``least_occupied``: ``[load ‰ of capacity now, occupancy ‰ today, idle_since_ms]``.
* ``round_robin``: ``[places after the queue's last chosen agent in configuration order, idle_since_ms]``.
* ``fewest_handled``: ``[contacts handled today, idle_since_ms]``.

The lists walked here hold only agents that can take the contact's channel now (see ``availability``), kept
in each strategy's order, so the walk stops after the first few that qualify: the cost follows the agents
looked at, not the size of the floor.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from contactcentre.acd.availability import ANY_SKILL, ORDER_KEYS
from contactcentre.events import Candidate, Explanation

if TYPE_CHECKING:
    from contactcentre.acd.agent import Agent
    from contactcentre.acd.availability import Availability
    from contactcentre.acd.contact import Contact
    from contactcentre.acd.waiting import WaitIndex

Req = tuple[tuple[str, int], ...]

TOP = 3  # candidates kept in an explanation

# The ``why`` of every offer a router built with ``explain=False`` makes: nobody asked for the reasons, so
# none were written down. The choice itself is the same (see ``choose_agent``).
UNEXPLAINED = Explanation(trigger="contact", strategy="", requirement="")


def _score(strategy: str, a: Agent, req: Req, cursor: int, n: int) -> list[int]:
    """The strategy's key for ``a`` serving ``req`` (without the idle-order tie-break)."""
    if strategy == "most_skilled":
        skills = a.skills
        return [-sum(skills.get(s, 0) for s, _ in req)]
    if strategy == "round_robin":
        return [(a.ordinal - cursor - 1) % n if n else 0]
    if strategy == "longest_idle":
        return []
    return list(ORDER_KEYS[strategy](a, ANY_SKILL))


_AGENT = itemgetter(-1)
_FIRST_KEY = itemgetter(0)
_KEY_THEN_IDLE = itemgetter(0, 1)  # (strategy key, listing sequence): never the agent itself


def _walk(
    strategy: str, avail: Availability, channel: str, req: Req, cursor: int
) -> Iterator[tuple[Agent | None, int]]:
    """Agents that can take ``channel`` and hold ``req``'s skills, best-first by ``strategy`` as far as the
    index orders them, each with a bound: the best score any agent not yet met could still reach.

    ``most_skilled`` over several skills reads each skill's level-ordered list in turn (Fagin's threshold
    algorithm): an agent not yet met has, in every skill, at most the level where that list's reading stands,
    so the sum of those levels bounds the rest of the walk. (``None`` marks an agent met again in another
    list: nothing to score, only the bound moved.)

    The two common walks (the idle order, and one sorted list from its start) are iterators built in C
    (``zip``/``map``), not generators: a generator resumes a Python frame for every agent it yields."""
    if strategy == "longest_idle" or strategy not in avail.orders():
        return zip(avail.pool(channel, req).values(), repeat(0))
    if strategy == "most_skilled" and len(req) > 1:
        return _walk_threshold(avail, channel, req)
    _, entries = avail.sorted_pool(strategy, channel, req)
    if strategy != "round_robin":
        return zip(map(_AGENT, entries), map(_FIRST_KEY, entries), strict=True)
    return _walk_round(entries, cursor)


def _walk_threshold(avail: Availability, channel: str, req: Req) -> Iterator[tuple[Agent | None, int]]:
    lists = [avail.sorted_list("most_skilled", channel, s) for s, _ in req]
    levels = [0] * len(lists)
    pos = [0] * len(lists)
    seen: set[str] = set()
    while True:
        for i, lst in enumerate(lists):
            if pos[i] >= len(lst):
                return  # every agent holding all the skills has been met in this list already
            e = lst[pos[i]]
            pos[i] += 1
            levels[i] = -e[0]
            a = e[-1]
            bound = -sum(levels)
            if a.id in seen:
                yield None, bound
            else:
                seen.add(a.id)
                yield a, bound


def _walk_round(entries: list[tuple[Any, ...]], cursor: int) -> Iterator[tuple[Agent | None, int]]:
    n = len(entries)
    start = bisect_left(entries, (cursor + 1,))  # after the last chosen
    for j in range(start, start + n):
        e = entries[j - n] if j >= n else entries[j]
        yield e[-1], e[0]


def choose_agent(
    contact: Contact,
    strategy: str,
    avail: Availability,
    *,
    step: int,
    cursor: int = -1,
    agent_count: int = 0,
    blocked: Callable[[Agent], bool] | None = None,
    explain: bool = True,
) -> tuple[Agent | None, Explanation | None]:
    """The best agent that can take ``contact`` now, or ``(None, None)``. ``blocked`` vetoes agents that
    hold back for other work (see ``blending``); they are counted as ``held_back_for_exclusive``. Only an
    agent draining for such work (``draining_for`` set) can be held back, so only those are asked about.

    The walk meets agents in the strategy's order, so it can stop after the first ``TOP`` that qualify; only
    ``most_skilled`` over several skills walks on while an agent further down could still score better.
    ``explain=False`` walks exactly the same agents and picks the same one; it only skips writing the
    explanation (``UNEXPLAINED`` stands in for it).
    """
    rejected = contact.rejected_by
    idle_order = strategy == "longest_idle"  # its key is the idle order alone: nothing to score
    indexed = idle_order or strategy in avail.orders()
    found: list[tuple[list[int], int, Agent]] = []  # (key, idle order, agent); an agent may meet several reqs
    considered = below = offered_before = held_back = 0
    for req in contact.reqs:
        bounded = strategy == "most_skilled" and len(req) > 1
        got = 0
        best: list[list[int]] = []  # the TOP best keys so far (for the most_skilled bound)
        for a, bound in _walk(strategy, avail, contact.channel, req, cursor):
            if bounded and len(best) >= TOP and [bound] > best[TOP - 1]:
                break
            if a is None:
                continue
            considered += 1
            if a.id in rejected:
                offered_before += 1
                continue
            if not a.meets(req):
                below += 1
                continue
            if a.draining_for is not None and blocked is not None and blocked(a):
                held_back += 1
                continue
            key = [] if idle_order else _score(strategy, a, req, cursor, agent_count)
            found.append((key, a.listing_seq, a))
            got += 1
            if bounded:
                best.append(key)
                best.sort()
            elif indexed and got >= TOP:
                break
    if not found:
        return None, None
    found.sort(key=_KEY_THEN_IDLE)
    if len(contact.reqs) > 1:
        seen: set[str] = set()
        found = [f for f in found if not (f[2].id in seen or seen.add(f[2].id))]  # type: ignore[func-returns-value]
    best_agent = found[0][2]
    if not explain:
        return best_agent, UNEXPLAINED
    filters: dict[str, int] = {}
    if below:
        filters["below_level"] = below
    if offered_before:
        filters["offered_before"] = offered_before
    if held_back:
        filters["held_back_for_exclusive"] = held_back
    tie = ""
    if strategy != "longest_idle" and len(found) > 1 and found[0][0] == found[1][0]:
        tie = "longest idle"
    return best_agent, Explanation(
        trigger="contact",
        strategy=strategy,
        requirement=contact.reqs_text,
        step=step,
        considered=considered,
        filters=filters,
        candidates=[Candidate(id=a.id, score=[*k, a.idle_since_ms]) for k, _, a in found[:TOP]],
        tie_break=tie,
    )


AGENT_PULL = "priority_then_wait"


def choose_contact(
    agent: Agent, channels: tuple[str, ...], waiting: WaitIndex, explain: bool = True
) -> tuple[Contact | None, Explanation | None]:
    """The best waiting contact ``agent`` may take on any of ``channels``: lowest rank across every group
    it serves, i.e. highest priority first, then longest waiting, across all queues. (``explain=False``:
    the same contact, with ``UNEXPLAINED`` for the reasons.)"""
    heads: list[Contact] = []
    offered_before = groups = 0
    aid = agent.id
    for ch in channels:
        for g in waiting.groups_for(agent, ch):
            groups += 1
            taken = 0
            for c in g.contacts:
                if aid in c.rejected_by:
                    offered_before += 1
                    continue
                heads.append(c)
                taken += 1
                if taken == TOP:  # the best few of each group are enough to name the runners-up
                    break
    if not heads:
        return None, None
    heads.sort(key=lambda c: c.rank)
    best = heads[0]
    if not explain:
        return best, UNEXPLAINED
    filters = {"offered_before": offered_before} if offered_before else {}
    return best, Explanation(
        trigger="agent",
        strategy=AGENT_PULL,
        requirement=best.reqs_text,
        step=best.step,
        considered=groups,
        filters=filters,
        candidates=[Candidate(id=c.id, score=[c.rank[0], c.rank[1]]) for c in heads[:TOP]],
        tie_break="arrival order" if len(heads) > 1 and heads[0].rank[0] == heads[1].rank[0] else "",
    )


_SCORE_PARTS: dict[str, tuple[str, ...]] = {
    "most_skilled": ("skill sum",),
    "least_occupied": ("load ‰", "occupancy today ‰"),
    "round_robin": ("places after last chosen",),
    "fewest_handled": ("handled today",),
}


def score_words(why: Explanation, score: list[int], at_ms: int) -> str:
    """A strategy's sort key in words (the layouts above): e.g. ``skill sum 12 · idle 40 s``."""
    if why.trigger == "agent":  # an agent pulled work: [waiting since − priority × weight, arrival number]
        if len(score) != 2:
            return ""
        return f"priority-weighted wait {(at_ms - score[0]) / 1000:.0f} s · arrival #{score[1]}"
    parts = []
    for label, value in zip(_SCORE_PARTS.get(why.strategy, ()), score[:-1], strict=False):
        parts.append(f"{label} {-value if label == 'skill sum' else value}")
    if score and score[-1] > 0:
        parts.append(f"idle {(at_ms - score[-1]) / 1000:.0f} s")
    return " · ".join(parts)
