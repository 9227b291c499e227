"""Routing decision cost of ``acd.Router`` as the floor grows (issue: "Benchmark benchmarks/routing.py").

Run::

    .venv/bin/python benchmarks/routing.py            # full run: 100, 1,000, 3,000, 10,000 agents
    .venv/bin/python benchmarks/routing.py --quick    # smoke run: up to 3,000 agents, few decisions
    .venv/bin/python benchmarks/routing.py --profile  # cProfile of the measured phases at the largest size

It prints figures and asserts nothing about time. Every centre and every input stream comes from a seeded
``random.Random``, so two runs feed the router exactly the same events (only the timings differ).

The centre: 500 skills whose popularity is Zipf-like (a few common skills, a long tail of rare ones);
500 queues, queue ``qNNN`` requiring skill ``sNNN`` at a minimum level 1-5, 15 % of them also a second,
popularity-drawn skill at level 1-3; every queue serves voice, chat and email. Agents hold 3-8 skills drawn
by popularity at levels 1-10 and one of four capacity profiles (voice 1 / chat 3 / email 5 / blended
voice 1 + chat 3 + email 5). Arrivals pick a (queue, channel) pair in proportion to the staff serving it
(each agent is one unit of demand spread over its queues, weighted by a channel mix of voice 50 %, chat 30 %,
email 20 %), so common skills carry most of the traffic, and a priority (0, sometimes 1 or 2). Voice has
manual wrap-up (ended with ``WrapUpEnded``), chat and e-mail none.

Scenario A, "agent frees up under load": every agent is at capacity and 5,000 contacts wait. One agent
finishes a contact (``ContactEnded`` for chat/e-mail, ``WrapUpEnded`` after voice) and the router pulls the
best waiting contact across every queue the agent serves; the offer is accepted so the floor stays full and
an arrival keeps about 5,000 waiting. The timed call is the ``handle()`` that frees the agent. The refill
arrivals are timed apart: in the first half of the run nobody's presence changes, in the second half one
busy agent goes away and comes back between decisions (which is when the wait estimate of a queued contact
has to recount the staff).

Scenario B, "contact arrives with idle agents": about 30 % of agents are busy, everyone has already handled
one or two contacts (mid-day state: occupancy and handled counts are non-zero), and ``handle(ContactArrived)``
chooses an agent by the queue's strategy. Each strategy gets its own centre. One contact ends before each
arrival so the busy share stays put.

Timings are ``time.perf_counter_ns`` around the whole ``handle()`` call (validation, the decision, building
the output events). Due timers (SLA warnings) are fired with ``advance()`` before each timed call and are not
in the figures. "considered" is ``OfferMade.why.considered`` (so only calls that made an offer): agents
walked for a contact-triggered decision, wait groups compared for an agent-triggered one; "pool" is how many
agents could take that channel at all. ``--gc-off`` keeps the collector off while measuring, to tell its
pauses from routing cost. The maxima are mostly the process being preempted on a shared 2-core machine (they
stay with the collector off), so read p50-p99.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import io
import math
import pstats
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import load_average, pct

from contactcentre import events as E
from contactcentre.acd import Router
from contactcentre.config import STRATEGIES, parse_config

N_SKILLS = 500
N_QUEUES = 500
ZIPF_S = 1.0
TWO_SKILL_SHARE = 0.15
CHANNEL_MIX = {"voice": 0.5, "chat": 0.3, "email": 0.2}
PROFILES: list[tuple[dict[str, int], float]] = [
    ({"voice": 1}, 0.40),
    ({"chat": 3}, 0.25),
    ({"email": 5}, 0.15),
    ({"voice": 1, "chat": 3, "email": 5}, 0.20),
]
PRIORITIES = ((0, 0.80), (1, 0.15), (2, 0.05))
START_MS = 1_767_254_400_000 + 8 * 3_600_000  # 2026-01-01 08:00 UTC: hours before "today" rolls over
GOAL_P99_US = 1000.0
# p99 ∝ N^k between 1,000 and 10,000 agents. A scan of the floor (or of a per-skill list) gives k ≈ 1; we call
# growth sub-linear at k ≤ 0.9, and flag k > 0.5 (faster than √N: the decision walks part of the floor).
SUBLINEAR_EXPONENT = 0.9
SQRT_EXPONENT = 0.5


# ------------------------------------------------------------------------------------------------ centre


@dataclass
class Centre:
    """A generated centre: the config dict and what the drivers need to pick realistic inputs."""

    n_agents: int
    config: dict[str, Any]
    agent_ids: list[str]
    capacity: dict[str, dict[str, int]]
    serves: dict[str, list[str]]  # agent -> queues it meets the requirement of
    pairs: list[tuple[str, str]]  # (queue, channel) served by at least one agent
    cum_weights: list[float]
    queue_skills: dict[str, dict[str, int]]

    def pick_pair(self, rng: random.Random) -> tuple[str, str]:
        i = bisect.bisect(self.cum_weights, rng.random() * self.cum_weights[-1])
        return self.pairs[min(i, len(self.pairs) - 1)]


def _weighted(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    x = rng.random() * sum(w for _, w in table)
    for value, w in table:
        x -= w
        if x < 0:
            return value
    return table[-1][0]


def build_centre(n_agents: int, seed: int, strategy: str | None = None, demand_by: str = "staff") -> Centre:
    """The same queues for every size; the first ``n`` agents of one seeded stream, so sizes nest.

    ``demand_by="skill"`` is a stress variant: traffic follows the popularity of a queue's first skill
    whatever its staffing, so a popular queue that also needs a second skill is swamped.
    """
    qrng = random.Random(seed)
    skills = [f"s{i:03d}" for i in range(N_SKILLS)]
    popularity = [1.0 / (i + 1) ** ZIPF_S for i in range(N_SKILLS)]
    cum_pop = list(_accumulate(popularity))

    def popular_skill(rng: random.Random) -> str:
        return skills[bisect.bisect(cum_pop, rng.random() * cum_pop[-1])]

    queue_skills: dict[str, dict[str, int]] = {}
    queues_by_skill: dict[str, list[str]] = {}
    for i in range(N_QUEUES):
        name = f"q{i:03d}"
        req = {skills[i % N_SKILLS]: qrng.randint(1, 5)}
        if qrng.random() < TWO_SKILL_SHARE:
            while (extra := popular_skill(qrng)) in req:
                pass
            req[extra] = qrng.randint(1, 3)
        queue_skills[name] = req
        for s in req:
            queues_by_skill.setdefault(s, []).append(name)

    def served(agent_skills: dict[str, int]) -> list[str]:
        cands = {q for s in agent_skills for q in queues_by_skill.get(s, ())}
        return sorted(q for q in cands if all(agent_skills.get(s, 0) >= lvl for s, lvl in queue_skills[q].items()))

    arng = random.Random(seed * 7919 + 1)
    agents: list[dict[str, Any]] = []
    serves: dict[str, list[str]] = {}
    capacity: dict[str, dict[str, int]] = {}
    for i in range(n_agents):
        aid = f"a{i:05d}"
        while True:  # an agent that meets no queue's requirement would never be routed to: draw again
            n = arng.randint(3, 8)
            mine: dict[str, int] = {}
            while len(mine) < n:
                mine.setdefault(popular_skill(arng), arng.randint(1, 10))
            got = served(mine)
            if got:
                break
        cap = dict(_weighted(arng, PROFILES))
        agents.append({"id": aid, "skills": mine, "capacity": cap})
        serves[aid] = got
        capacity[aid] = cap

    # Demand follows staffing, as in a planned centre: each agent stands for one unit of demand spread
    # over the queues it serves, on its channels (weighted by the channel mix). Popular skills therefore
    # carry most of the traffic, and no queue gets more work than its staff could ever see.
    demand: dict[tuple[str, str], float] = {}
    for aid, qs in serves.items():
        for ch in capacity[aid]:
            for q in qs:
                demand[(q, ch)] = demand.get((q, ch), 0.0) + CHANNEL_MIX[ch] / len(qs)
    if demand_by == "skill":
        demand = {(q, ch): popularity[int(q[1:]) % N_SKILLS] * CHANNEL_MIX[ch] for q, ch in demand}
    pairs = sorted(demand)
    cum_weights = list(_accumulate(demand[p] for p in pairs))

    config: dict[str, Any] = {
        "name": f"bench-{n_agents}",
        "skills": dict.fromkeys(skills, ""),
        "channels": {
            "voice": {"wrap_up_s": "manual"},
            "chat": {"wrap_up_s": 0},
            "email": {"wrap_up_s": 0},
        },
        "routing": {"priority_weight_s": 60},
        "queues": [
            {"name": q, "skills": req, **({"strategy": strategy} if strategy else {})}
            for q, req in queue_skills.items()
        ],
        "agents": agents,
    }
    return Centre(n_agents, config, [a["id"] for a in agents], capacity, serves, pairs, cum_weights, queue_skills)


def _accumulate(values: Any) -> Any:
    total = 0.0
    for v in values:
        total += v
        yield total


# ------------------------------------------------------------------------------------------------ samples


@dataclass
class Samples:
    """Timings (ns) of one kind of ``handle()`` call, with what the decision looked at."""

    label: str
    ns: list[int] = field(default_factory=list)
    considered: list[int] = field(default_factory=list)
    pool: list[int] = field(default_factory=list)
    no_offer: int = 0

    def add(self, ns: int, out: list[E.Event], pool: int | None = None) -> None:
        self.ns.append(ns)
        offer = next((e for e in out if type(e) is E.OfferMade), None)
        if offer is None:
            self.no_offer += 1
            return
        self.considered.append(offer.why.considered)  # type: ignore[attr-defined]
        if pool is not None:
            self.pool.append(pool)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile, in microseconds."""
        return pct(sorted(self.ns), p) / 1000

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self.ns),
            "p50": self.pct(50),
            "p90": self.pct(90),
            "p99": self.pct(99),
            "max": max(self.ns) / 1000 if self.ns else math.nan,
            "mean_considered": _mean(self.considered),
            "max_considered": max(self.considered, default=0),
            "mean_pool": _mean(self.pool),
            "no_offer": self.no_offer,
        }


def _mean(xs: list[int]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


# ------------------------------------------------------------------------------------------------- floor


class Floor:
    """Drives one router: sends inputs, accepts every offer at once, tracks contacts being handled."""

    def __init__(self, centre: Centre, seed: int) -> None:
        self.centre = centre
        self.rng = random.Random(seed)
        t0 = time.perf_counter()
        self.router = Router(parse_config(centre.config, f"<bench {centre.n_agents}>"), start_ms=START_MS)
        self.build_s = time.perf_counter() - t0
        self.now = START_MS
        self.seq = 0
        self.active: list[tuple[str, str, str]] = []  # (contact, agent, channel) connected now
        self.where: dict[str, int] = {}
        self.agent_load: dict[str, int] = {}
        self.timer_events = 0
        self.inputs = 0

    # time
    def tick(self, ms: int) -> None:
        self.now += ms
        self.timer_events += len(self.router.advance(self.now))

    # inputs
    def send(self, ev: E.Event, pulls: Samples | None = None) -> list[E.Event]:
        out = self.router.handle(ev)
        self.inputs += 1
        self.absorb(out, pulls)
        return out

    def timed(self, ev: E.Event) -> tuple[int, list[E.Event]]:
        handle = self.router.handle
        t0 = time.perf_counter_ns()
        out = handle(ev)
        t1 = time.perf_counter_ns()
        self.inputs += 1
        return t1 - t0, out

    def absorb(self, out: list[E.Event], pulls: Samples | None = None) -> None:
        """Accept every offer in ``out`` (and in what the accepts return). With ``pulls``, time the accepts
        that made another offer (a multi-capacity agent pulling more work)."""
        pending = deque(e for e in out if type(e) is E.OfferMade)
        self._note(out)
        while pending:
            o: Any = pending.popleft()
            acc = E.OfferAccepted(at_ms=self.now, offer_id=o.offer_id, contact_id=o.contact_id, agent_id=o.agent_id)
            if pulls is None:
                got = self.router.handle(acc)
                self.inputs += 1
            else:
                ns, got = self.timed(acc)
                if any(type(e) is E.OfferMade for e in got):
                    pulls.add(ns, got)
            self._note(got)
            pending.extend(e for e in got if type(e) is E.OfferMade)

    def _note(self, out: list[E.Event]) -> None:
        for e in out:
            if type(e) is E.ContactConnected:
                self.where[e.contact_id] = len(self.active)
                self.active.append((e.contact_id, e.agent_id, e.channel))
                self.agent_load[e.agent_id] = self.agent_load.get(e.agent_id, 0) + 1

    def arrival(self, queue: str, channel: str, preferred: str | None = None) -> E.ContactArrived:
        self.seq += 1
        prio = _weighted(self.rng, PRIORITIES)
        return E.ContactArrived(
            at_ms=self.now,
            contact_id=f"c{self.seq}",
            queue=queue,
            channel=channel,  # type: ignore[arg-type]
            priority=prio,
            preferred_agent_id=preferred,
        )

    def popular_arrival(self) -> E.ContactArrived:
        return self.arrival(*self.centre.pick_pair(self.rng))

    def take_active(self, i: int | None = None) -> tuple[str, str, str]:
        """Remove (a random, or the ``i``-th) connected contact from the books and return it."""
        if i is None:
            i = self.rng.randrange(len(self.active))
        item = self.active[i]
        last = self.active.pop()
        if i < len(self.active):  # fill the hole with the last one
            self.active[i] = last
            self.where[last[0]] = i
        del self.where[item[0]]
        self.agent_load[item[1]] -= 1
        return item

    def end_events(self, cid: str, aid: str, ch: str) -> list[E.Event]:
        """What ends handling and frees capacity: voice needs a manual wrap-up end, the others don't."""
        ended = E.ContactEnded(at_ms=self.now, contact_id=cid, agent_id=aid)
        if ch == "voice":
            return [ended, E.WrapUpEnded(at_ms=self.now, contact_id=cid, agent_id=aid)]
        return [ended]

    def end(self, item: tuple[str, str, str]) -> None:
        for ev in self.end_events(*item):
            self.send(ev)

    # views of the router (read only)
    def free_agents(self) -> int:
        r = self.router
        return sum(1 for a in r.agents.values() if any(r.can_take(a, ch) for ch in a.capacity))

    def busy_agents(self) -> int:
        return sum(1 for n in self.agent_load.values() if n > 0)


def login_all(f: Floor) -> None:
    for aid in f.centre.agent_ids:
        f.send(E.AgentLoggedIn(at_ms=f.now, agent_id=aid))
    f.tick(1)


# --------------------------------------------------------------------------------------------- scenarios


def scenario_a(
    centre: Centre, seed: int, decisions: int, waiting: int, profile: cProfile.Profile | None
) -> tuple[dict[str, Samples], dict[str, Any]]:
    f = Floor(centre, seed)
    rng = f.rng
    t0 = time.perf_counter()
    login_all(f)
    # 1. Fill every agent to capacity: while an agent can take a channel, send a contact of a queue it
    #    serves on that channel (the router may give it to another free agent: each send fills one slot).
    r = f.router
    for aid in centre.agent_ids:
        a = r.agents[aid]
        while True:
            chans = [ch for ch in a.capacity if r.can_take(a, ch)]
            if not chans:
                break
            f.send(f.arrival(rng.choice(centre.serves[aid]), rng.choice(chans)))
        f.tick(rng.randint(0, 3))
    # 2. Then the backlog.
    while r.waiting.count < waiting:
        f.send(f.popular_arrival())
        f.tick(rng.randint(0, 2))
    setup_s = time.perf_counter() - t0
    facts = {
        "setup_s": setup_s,
        "build_s": f.build_s,
        "free_after_fill": f.free_agents(),
        "handling": len(f.active),
        "waiting_start": r.waiting.count,
        "groups_start": len(r.waiting.groups),
    }

    freeup = Samples("A free-up")
    pulls = Samples("A accept+pull")
    arrivals = Samples("A arrival")
    after_change = Samples("A arrival after a staffing change")
    watch = _quiesce()
    if profile:
        profile.enable()
    for step in range(decisions):
        f.tick(rng.randint(20, 200))
        item = f.take_active()
        evs = f.end_events(*item)
        for ev in evs[:-1]:  # a voice call's ContactEnded: into wrap-up, no decision
            f.send(ev)
        ns, out = f.timed(evs[-1])
        freeup.add(ns, out)
        f.absorb(out, pulls)
        # In the second half, a busy agent flips its presence at every step (away for a break, back
        # ready): ordinary floor life, and it changes the staffing that a queued arrival's wait estimate
        # is computed from. The first half has no presence changes at all.
        changing = step >= decisions // 2
        if changing:
            aid = f.active[rng.randrange(len(f.active))][1]
            f.send(E.AgentAway(at_ms=f.now, agent_id=aid, reason="break"))
            f.send(E.AgentReady(at_ms=f.now, agent_id=aid))
        while r.waiting.count < waiting:
            ns, out = f.timed(f.popular_arrival())
            (after_change if changing else arrivals).add(ns, out)
            f.absorb(out, pulls)
    if profile:
        profile.disable()
    facts["gc"] = _release(watch)
    facts.update(
        waiting_end=r.waiting.count,
        groups_end=len(r.waiting.groups),
        free_end=f.free_agents(),
        timer_events=f.timer_events,
        sim_s=(f.now - START_MS) / 1000,
    )
    return {"freeup": freeup, "pulls": pulls, "arrivals": arrivals, "after_change": after_change}, facts


def scenario_b(
    centre: Centre, seed: int, decisions: int, busy_share: float, profile: cProfile.Profile | None
) -> tuple[Samples, dict[str, Any]]:
    f = Floor(centre, seed)
    rng = f.rng
    r = f.router
    t0 = time.perf_counter()
    login_all(f)
    # 1. Mid-day history, cheaply: every agent handles one or two contacts offered to it by name (a
    #    preferred agent is an O(1) decision), for varying times, so occupancy and handled counts are > 0.
    order = list(centre.agent_ids)
    for rnd in range(2):
        rng.shuffle(order)
        batch = order if rnd == 0 else order[: len(order) // 2]
        for aid in batch:
            ch = rng.choice(list(centre.capacity[aid]))
            f.send(f.arrival(rng.choice(centre.serves[aid]), ch, preferred=aid))
            f.tick(rng.randint(0, 5))
        while f.active:
            f.tick(rng.randint(0, 10))
            f.end(f.take_active())
    # 2. Bring the floor to ``busy_share`` of agents handling something.
    target = round(busy_share * centre.n_agents)
    guard = 0
    while f.busy_agents() < target and guard < 5 * centre.n_agents:
        f.send(f.popular_arrival())
        f.tick(rng.randint(0, 5))
        guard += 1
    setup_s = time.perf_counter() - t0
    facts: dict[str, Any] = {
        "setup_s": setup_s,
        "build_s": f.build_s,
        "busy_start": f.busy_agents(),
        "waiting_start": r.waiting.count,
    }
    s = Samples("B arrival")
    watch = _quiesce()
    if profile:
        profile.enable()
    for _ in range(decisions):
        f.tick(rng.randint(50, 400))
        f.end(f.take_active())
        ev = f.popular_arrival()
        pool = r.avail.count(ev.channel)
        ns, out = f.timed(ev)
        s.add(ns, out, pool)
        f.absorb(out)
    if profile:
        profile.disable()
    facts["gc"] = _release(watch)
    facts.update(busy_end=f.busy_agents(), waiting_end=r.waiting.count, timer_events=f.timer_events)
    return s, facts


class GcWatch:
    """Counts the collections the cyclic garbage collector ran, per generation, while installed."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.runs[info["generation"]] += 1

    def close(self) -> str:
        gc.callbacks.remove(self)
        return "/".join(map(str, self.runs))


GC_OFF = False  # --gc-off: keep the collector disabled while measuring


def _quiesce() -> GcWatch:
    """Before a measured phase: collect, then freeze the set-up objects out of the collector's way."""
    gc.collect()
    gc.freeze()
    if GC_OFF:
        gc.disable()
    return GcWatch()


def _release(watch: GcWatch) -> str:
    """After a measured phase: how many gen0/gen1/gen2 collections ran; unfreeze so the next phase starts
    from a clean heap."""
    runs = watch.close()
    gc.enable()
    gc.unfreeze()
    gc.collect()
    return runs


# ----------------------------------------------------------------------------------------------- reports

HEADER = (
    f"{'agents':>7} {'calls':>6} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>8} "
    f"{'considered':>10} {'max':>6} {'pool':>7} {'no offer':>8}"
)


def row(n: int, s: Samples) -> str:
    m = s.summary()
    pool = f"{m['mean_pool']:7.0f}" if s.pool else f"{'-':>7}"
    considered = f"{m['mean_considered']:10.1f} {m['max_considered']:>6}" if s.considered else f"{'-':>10} {'-':>6}"
    return (
        f"{n:>7,} {m['n']:>6} {m['p50']:8.1f} {m['p90']:8.1f} {m['p99']:8.1f} {m['max']:8.1f} "
        f"{considered} {pool} {m['no_offer']:>8}"
    )


def growth(by_size: dict[int, Samples]) -> tuple[float, float, str]:
    """(p99 growth factor smallest→largest, exponent k of p99 ∝ N^k over the last decade, its span)."""
    sizes = sorted(by_size)
    lo, hi = sizes[0], sizes[-1]
    factor = by_size[hi].pct(99) / by_size[lo].pct(99)
    base = max((n for n in sizes if n <= hi / 10), default=lo)
    if base == hi:
        return factor, math.nan, "-"
    k = math.log(by_size[hi].pct(99) / by_size[base].pct(99)) / math.log(hi / base)
    return factor, k, f"{base:,}→{hi:,}"


def verdict(by_size: dict[int, Samples]) -> tuple[bool, bool, str]:
    sizes = sorted(by_size)
    lo, hi = sizes[0], sizes[-1]
    p99 = by_size[hi].pct(99)
    factor, k, span = growth(by_size)
    fast = p99 <= GOAL_P99_US
    sub = not (k > SUBLINEAR_EXPONENT) if len(sizes) > 1 else True
    c_lo, c_hi = _mean(by_size[lo].considered), _mean(by_size[hi].considered)
    considered = f"; mean considered ×{c_hi / c_lo:.1f}" if c_lo == c_lo and c_hi == c_hi else ""
    text = (
        f"p99 at {hi:,} = {p99:.0f} µs {'≤' if fast else '>'} {GOAL_P99_US:.0f} µs; from {lo:,} to {hi:,} "
        f"agents (×{hi / lo:.0f}): p99 ×{factor:.2f}{considered}; p99 ∝ N^k with k = {k:.2f} over {span} "
        f"→ {'sub-linear' if sub else 'NOT sub-linear'}"
    )
    return fast, sub, text


def enough(by_size: dict[int, Samples], minimum: int = 20) -> bool:
    """Whether every size has enough calls of this kind for a p99 worth printing."""
    return all(len(s.ns) >= minimum for s in by_size.values())


def print_table(title: str, by_size: dict[int, Samples], note: str = "") -> None:
    print(f"\n{title}")
    if note:
        print(f"  {note}")
    if not enough(by_size, 1):
        counts = ", ".join(f"{n:,}: {len(s.ns)}" for n, s in sorted(by_size.items()))
        print(f"  (too few such calls to report: {counts})")
        return
    print("  " + HEADER)
    for n in sorted(by_size):
        print("  " + row(n, by_size[n]))
    if len(by_size) > 1 and enough(by_size):
        print("  " + verdict(by_size)[2])


def print_profile(title: str, prof: cProfile.Profile, top: int) -> None:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.strip_dirs().sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile: {title} (sorted by own time; cProfile inflates absolute times) ---")
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    print("\n".join(lines[max(0, start - 2) :]))


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 100, 1,000 and 3,000 agents, few decisions")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 100,1000,10000")
    ap.add_argument("--decisions", type=int, help="measured free-ups per size (scenario A)")
    ap.add_argument("--arrivals", type=int, help="measured arrivals per size and strategy (scenario B)")
    ap.add_argument("--waiting", type=int, help="contacts kept waiting in scenario A (default 5,000)")
    ap.add_argument("--busy", type=float, default=0.3, help="share of busy agents in scenario B")
    ap.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    ap.add_argument("--scenarios", default="AB", help="A, B or AB")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument(
        "--demand",
        choices=("staff", "skill"),
        default="staff",
        help="traffic per queue follows its staff (default) or its skill's popularity (stress variant)",
    )
    ap.add_argument("--gc-off", action="store_true", help="disable the collector while measuring")
    ap.add_argument("--profile", action="store_true", help="profile the measured phases at the largest size")
    ap.add_argument("--top", type=int, default=18, help="functions shown per profile")
    args = ap.parse_args(argv)
    global GC_OFF
    GC_OFF = args.gc_off

    quick = args.quick
    sizes = args.sizes or ([100, 1000, 3000] if quick else [100, 1000, 3000, 10000])
    if args.profile and not args.sizes:
        sizes = sizes[-1:]
    decisions = args.decisions or (200 if quick else 3000)
    arrivals = args.arrivals or (150 if quick else 2000)
    waiting = args.waiting or (1000 if quick else 5000)
    for s in args.strategies:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r} (known: {', '.join(STRATEGIES)})")

    print(
        f"routing benchmark — Python {sys.version.split()[0]}, seed {args.seed}{' (quick)' if quick else ''},"
        f" demand by {args.demand}; load average {load_average()} at start (other processes skew the tails)"
    )
    print(
        f"centre: {N_SKILLS} skills (Zipf s={ZIPF_S}), {N_QUEUES} queues ({TWO_SKILL_SHARE:.0%} need two "
        f"skills), agents with 3-8 skills; capacity profiles voice 1 / chat 3 / email 5 / blended"
    )
    print(
        "timing: perf_counter_ns around each router.handle(); gc.collect() then gc.freeze() after each "
        f"set-up (collector {'DISABLED' if GC_OFF else 'stays enabled'} while measuring), gc.unfreeze() + "
        "gc.collect() after each phase"
    )
    if args.profile:
        print("profiling: cProfile is on during the measured phases, so the timings below are inflated")
    wall0 = time.perf_counter()
    profiles: list[tuple[str, cProfile.Profile]] = []

    def prof(label: str, n: int) -> cProfile.Profile | None:
        if not args.profile or n != sizes[-1]:
            return None
        p = cProfile.Profile()
        profiles.append((label, p))
        return p

    results: dict[str, dict[int, Samples]] = {}  # decisions: what the goal is about
    other: dict[str, dict[int, Samples]] = {}  # other handle() calls on the routing path

    if "A" in args.scenarios:
        a_free: dict[int, Samples] = {}
        a_pull: dict[int, Samples] = {}
        a_arr: dict[int, Samples] = {}
        a_chg: dict[int, Samples] = {}
        facts_a: dict[int, dict[str, Any]] = {}
        for n in sizes:
            centre = build_centre(n, args.seed, demand_by=args.demand)
            got, facts = scenario_a(centre, args.seed + n, decisions, waiting, prof(f"A, {n:,} agents", n))
            a_free[n], a_pull[n], a_arr[n] = got["freeup"], got["pulls"], got["arrivals"]
            a_chg[n] = got["after_change"]
            facts_a[n] = facts
            del centre, got
            gc.collect()
        print(f"\n=== Scenario A: agent frees up under load ({waiting:,} waiting, every agent at capacity) ===")
        for n in sizes:
            fa = facts_a[n]
            print(
                f"  {n:>6,} agents: set-up {fa['setup_s']:.1f} s (router {fa['build_s']:.2f} s); "
                f"{fa['handling']:,} contacts in hand, {fa['free_after_fill']} agents with room after fill; "
                f"waiting {fa['waiting_start']:,}→{fa['waiting_end']:,} in {fa['groups_start']}→"
                f"{fa['groups_end']} groups; {fa['timer_events']:,} timer events fired outside the timings "
                f"over {fa['sim_s']:.0f} simulated s; gc runs gen0/1/2 while measuring {fa['gc']}"
            )
        print_table(
            "A1. ContactEnded (chat/email) or WrapUpEnded (voice) that frees an agent, who pulls the best "
            "waiting contact",
            a_free,
            "considered = wait groups compared (agent-triggered); no offer = nothing waiting it may take",
        )
        print_table(
            "A2. OfferAccepted after which a multi-capacity agent pulls more work (also a decision)",
            a_pull,
        )
        print_table(
            "A3. ContactArrived to refill the backlog, first half: no presence changes (queued; offered only "
            "when a matching agent is free)",
            a_arr,
        )
        print_table(
            "A4. The same, second half: one agent goes away and comes back between decisions",
            a_chg,
            "a queued arrival's ContactQueued carries an EWT, computed from the staffed capacity for its requirement",
        )
        results["A1 free-up (pull)"] = a_free
        results["A2 accept+pull"] = a_pull
        other["A3 arrival, steady"] = a_arr
        other["A4 arrival, staff moves"] = a_chg

    if "B" in args.scenarios:
        print(
            f"\n=== Scenario B: contact arrives with idle agents (~{args.busy:.0%} of agents busy, everyone "
            f"has handled 1-2 contacts today) ==="
        )
        for strategy in args.strategies:
            by_size: dict[int, Samples] = {}
            notes = []
            for n in sizes:
                centre = build_centre(n, args.seed, strategy, args.demand)
                s, facts = scenario_b(centre, args.seed + n, arrivals, args.busy, prof(f"B {strategy}, {n:,}", n))
                by_size[n] = s
                notes.append(
                    f"{n:>6,} agents: set-up {facts['setup_s']:.1f} s, busy {facts['busy_start']}→"
                    f"{facts['busy_end']}, waiting {facts['waiting_start']}→{facts['waiting_end']}, "
                    f"gc runs gen0/1/2 while measuring {facts['gc']}"
                )
                del centre
                gc.collect()
            print_table(
                f"B. ContactArrived, strategy {strategy}",
                by_size,
                "\n  ".join(["considered = agents walked; pool = agents able to take that channel now", *notes]),
            )
            results[f"B {strategy}"] = by_size

    print(f"\n=== Summary at {sizes[-1]:,} agents (goal: p99 ≤ {GOAL_P99_US:.0f} µs, sub-linear growth) ===")
    slow: list[str] = []
    linear: list[str] = []
    steep: list[str] = []
    for group, table in (("decisions", results), ("other calls", other)):
        if not table:
            continue
        print(f"  {group}:")
        for label, by_size in table.items():
            if not enough(by_size):
                counts = ", ".join(f"{n:,}: {len(s.ns)}" for n, s in sorted(by_size.items()))
                print(f"    {label:<24} too few calls to judge ({counts})")
                continue
            fast, sub, _ = verdict(by_size)
            factor, k, _span = growth(by_size)
            if group == "decisions":
                slow += [] if fast else [label]
                linear += [] if sub else [label]
                if k > SQRT_EXPONENT:
                    steep.append(label)
            print(
                f"    {label:<24} p50 {by_size[sizes[-1]].pct(50):7.1f} µs  "
                f"p99 {by_size[sizes[-1]].pct(99):7.1f} µs  growth ×{factor:6.2f}  k={k:5.2f}  "
                f"{'ok' if fast else 'SLOW'} / {'sub-linear' if sub else 'NOT sub-linear'}"
            )
    if sizes[-1] < 10_000:
        print(f"  (largest size run is {sizes[-1]:,} agents, not 10,000: the verdict is indicative only)")
    if steep:
        print(f"  note: k > {SQRT_EXPONENT} (grows faster than √N) for {', '.join(steep)}")
    goal = not slow and not linear
    detail = []
    if slow:
        detail.append(f"p99 > {GOAL_P99_US:.0f} µs for {', '.join(slow)}")
    if linear:
        detail.append(f"k > {SUBLINEAR_EXPONENT} for {', '.join(linear)}")
    print(
        f"GOAL {'MET' if goal else 'NOT MET'} at {sizes[-1]:,} agents (decisions: p99 ≤ {GOAL_P99_US:.0f} µs "
        f"and k ≤ {SUBLINEAR_EXPONENT}, k = exponent of p99 ∝ N^k over the last decade of sizes)"
        + (": " + "; ".join(detail) if detail else "")
    )
    print(f"wall time {time.perf_counter() - wall0:.0f} s; load average {load_average()} at the end")
    for label, p in profiles:
        print_profile(label, p, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
