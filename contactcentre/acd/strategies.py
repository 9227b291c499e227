"""Which agent gets a contact, and which contact a freed agent takes — with the reasons written down.

Each strategy is a sort key over eligible agents, smaller is better, with idle order as the last tie-break.
Scores in explanations are these keys:

* ``longest_idle`` (default): ``[idle_since_ms]`` — the agent whose load changed longest ago. For an agent
  on one exclusive channel that is the time its last contact closed.
* ``most_skilled`` (best fit): ``[-sum of levels in the required skills, idle_since_ms]``.
* ``least_occupied``: ``[load ‰ of capacity now, occupancy ‰ today, idle_since_ms]``.
* ``round_robin``: ``[places after the queue's last chosen agent in configuration order, idle_since_ms]``.
* ``fewest_handled``: ``[contacts handled today, idle_since_ms]``.

The lists walked here hold only agents that can take the contact's channel now (see ``availability``), in
idle order, and the walk stops as soon as nothing better is possible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from contactcentre.events import Candidate, Explanation

if TYPE_CHECKING:
    from contactcentre.acd.agent import Agent
    from contactcentre.acd.availability import Availability
    from contactcentre.acd.contact import Contact
    from contactcentre.acd.waiting import WaitIndex

TOP = 3  # candidates kept in an explanation

KeyFn = Callable[["Agent", tuple[tuple[str, int], ...], int, int], list[int]]


def _longest_idle(a: Agent, req: tuple[tuple[str, int], ...], cursor: int, n: int) -> list[int]:
    return []


def _most_skilled(a: Agent, req: tuple[tuple[str, int], ...], cursor: int, n: int) -> list[int]:
    skills = a.skills
    return [-sum(skills.get(s, 0) for s, _ in req)]


def _least_occupied(a: Agent, req: tuple[tuple[str, int], ...], cursor: int, n: int) -> list[int]:
    load = a.total_load * 1000 // a.total_capacity if a.total_capacity else 0
    occ = a.handling_ms * 1000 // a.staffed_ms if a.staffed_ms else 0
    return [load, occ]


def _round_robin(a: Agent, req: tuple[tuple[str, int], ...], cursor: int, n: int) -> list[int]:
    return [(a.ordinal - cursor - 1) % n if n else 0]


def _fewest_handled(a: Agent, req: tuple[tuple[str, int], ...], cursor: int, n: int) -> list[int]:
    return [a.handled_today]


KEYS: dict[str, KeyFn] = {
    "longest_idle": _longest_idle,
    "most_skilled": _most_skilled,
    "least_occupied": _least_occupied,
    "round_robin": _round_robin,
    "fewest_handled": _fewest_handled,
}


def _floor(strategy: str, req: tuple[tuple[str, int], ...]) -> list[int]:
    """The best key any agent could have: once the walk has that many of them, it can stop."""
    if strategy == "most_skilled":
        return [-10 * len(req)]
    if strategy == "least_occupied":
        return [0, 0]
    if strategy in ("round_robin", "fewest_handled"):
        return [0]
    return []


def choose_agent(
    contact: Contact,
    strategy: str,
    avail: Availability,
    *,
    step: int,
    cursor: int = -1,
    agent_count: int = 0,
) -> tuple[Agent | None, Explanation | None]:
    """The best agent that can take ``contact`` now, or ``(None, None)``."""
    keyf = KEYS[strategy]
    rejected = contact.rejected_by
    many = len(contact.reqs) > 1
    seen: set[str] = set()
    found: list[tuple[list[int], int, Agent]] = []  # (key, walk order, agent)
    considered = below = offered_before = 0
    for req in contact.reqs:
        floor = _floor(strategy, req)
        at_floor = 0
        for a in avail.pool(contact.channel, req).values():
            if many:
                if a.id in seen:
                    continue
                seen.add(a.id)
            considered += 1
            if a.id in rejected:
                offered_before += 1
                continue
            if not a.meets(req):
                below += 1
                continue
            key = keyf(a, req, cursor, agent_count)
            key.append(a.idle_since_ms)
            found.append((key, considered, a))
            if key[:-1] == floor:
                at_floor += 1
                if at_floor >= TOP:
                    break
    if not found:
        return None, None
    found.sort(key=lambda f: (f[0], f[1]))
    best = found[0][2]
    filters: dict[str, int] = {}
    if below:
        filters["below_level"] = below
    if offered_before:
        filters["offered_before"] = offered_before
    tie = ""
    if strategy != "longest_idle" and len(found) > 1 and found[0][0][:-1] == found[1][0][:-1]:
        tie = "longest idle" if found[0][0][-1] != found[1][0][-1] else "listed first"
    return best, Explanation(
        trigger="contact",
        strategy=strategy,
        requirement=contact.reqs_text,
        step=step,
        considered=considered,
        filters=filters,
        candidates=[Candidate(id=a.id, score=k) for k, _, a in found[:TOP]],
        tie_break=tie,
    )


AGENT_PULL = "priority_then_wait"


def choose_contact(
    agent: Agent, channels: tuple[str, ...], waiting: WaitIndex
) -> tuple[Contact | None, Explanation | None]:
    """The best waiting contact ``agent`` may take on any of ``channels``: lowest rank across every group
    it serves, i.e. highest priority first, then longest waiting, across all queues."""
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
