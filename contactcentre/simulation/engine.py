"""The discrete-event simulator: customers, agents and a virtual clock around the production router.

There is no model of routing here. Customers arrive (Poisson, constant or by a 15-minute curve), wait with
a patience, and leave if still waiting when it runs out; agents log in for their shifts, accept offers after
a delay, and finish after a handle time; everything else — which agent, which contact, offers, wrap-up,
overflow, SLA timers — is ``contactcentre.acd.Router`` deciding exactly as it does live. The engine is a
heap of timed events plus the router's own ``next_deadline()``; the same seed gives the same run, to the
last digit.

Measurement follows docs/queueing.md: the first ``warmup_fraction`` of arrivals is left out; "waited" means a
queue time above zero; "within T" means answered with a wait of at most the threshold; the queue time of
an abandoned contact is the time it waited before leaving.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contactcentre.acd import HANDLING, STAFFED, Router
from contactcentre.events import (
    AgentAway,
    AgentLoggedIn,
    AgentReady,
    AgentStateChanged,
    ContactAbandoned,
    ContactArrived,
    ContactConnected,
    ContactEnded,
    ContactFailed,
    ContactOverflowed,
    ContactQueued,
    CustomerLeft,
    Event,
    OfferAccepted,
    OfferMade,
)
from contactcentre.simulation.scenario import Dist, LoadedScenario

INTERVAL_MS = 15 * 60 * 1000

# The router's derived events that ``Simulation.run`` acts on.
_READS = frozenset({OfferMade, ContactConnected, AgentStateChanged, ContactAbandoned, ContactOverflowed, ContactFailed})

# kinds of world events on the heap
_ARRIVE, _PATIENCE, _ACCEPT, _END, _SHIFT_ON, _SHIFT_OFF, _BACK = range(7)


def sampler(d: Dist, rng: random.Random) -> Callable[[], int]:
    """A function drawing durations in integer milliseconds from ``d``."""
    mean_ms = d.mean_s * 1000
    if d.distribution == "fixed":
        value = round(mean_ms)
        return lambda: value
    if d.distribution == "lognormal":
        assert d.sd_s is not None
        sigma2 = math.log(1 + (d.sd_s / d.mean_s) ** 2)
        mu, sigma = math.log(mean_ms) - sigma2 / 2, math.sqrt(sigma2)
        lognorm = rng.lognormvariate
        return lambda: round(lognorm(mu, sigma))
    lambd = 1 / mean_ms
    return lambda: round(_expo(rng, lambd))


def _pick_expovariate() -> Callable[[random.Random, float], float]:
    """``Random.expovariate`` itself, or the same formula inline when this Python's is that formula: it is
    drawn twice per contact, and inline it costs one Python call instead of two. The same seed gives the
    same draws either way (the check below compares them)."""
    rnd, log = random.Random.random, math.log

    def inline(r: random.Random, lambd: float) -> float:
        return -log(1.0 - rnd(r)) / lambd

    a, b = random.Random(12345), random.Random(12345)
    same = all(inline(a, x) == b.expovariate(x) for x in (0.5, 1.0, 3e-6, 7.25) for _ in range(50))
    return inline if same else random.Random.expovariate


_expo = _pick_expovariate()


@dataclass
class Tally:
    """Outcomes of the measured arrivals (after warm-up)."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    other: int = 0  # overflowed out of the centre, refused
    still_waiting: int = 0  # nobody served them before the run ran out of events (e.g. no agent left)
    waited: int = 0
    answered_within: int = 0
    wait_ms_all: int = 0
    wait_ms_answered: int = 0
    waits: array = field(default_factory=lambda: array("q"))

    def metrics(self, threshold_ms: int) -> dict[str, Any]:
        n, a = self.offered, self.answered
        waits = sorted(self.waits)
        return {
            "offered": n,
            "answered": a,
            "abandoned": self.abandoned,
            "overflowed_or_refused": self.other,
            "still_waiting": self.still_waiting,
            "p_wait": self.waited / n if n else None,
            "p_abandon": self.abandoned / n if n else None,
            "mean_wait_s": self.wait_ms_all / n / 1000 if n else None,
            "asa_s": self.wait_ms_answered / a / 1000 if a else None,
            "service_level_offered": self.answered_within / n if n else None,
            "service_level_answered": self.answered_within / a if a else None,
            "wait_p90_s": _quantile(waits, 0.90),
            "wait_p99_s": _quantile(waits, 0.99),
            "threshold_s": threshold_ms / 1000,
        }


def _occupancy(accs: Any) -> float | None:
    """Busy and wrap-up time over staffed time, summed over agents."""
    staffed = handling = 0
    for s, h in accs:
        staffed += s
        handling += h
    return handling / staffed if staffed else None


def _quantile(sorted_ms: list[int], p: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, math.ceil(p * len(sorted_ms)) - 1)] / 1000


@dataclass
class Interval:
    """One 15-minute interval of simulated time, for the day charts."""

    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    waiting_area_ms: int = 0  # ∫ contacts waiting dt


@dataclass
class SimResult:
    total: Tally
    queues: dict[str, Tally]
    occupancy: float | None
    threshold_ms: int
    arrivals: int
    measured_from_ms: int
    measured_to_ms: int
    wall_s: float
    events: int
    intervals: list[Interval]
    seed: int
    queue_occupancy: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = self.total.metrics(self.threshold_ms)
        out["occupancy"] = self.occupancy
        out["queues"] = {
            name: {**t.metrics(self.threshold_ms), "occupancy": self.queue_occupancy.get(name)}
            for name, t in self.queues.items()
        }
        out["contacts_per_second"] = self.arrivals / self.wall_s if self.wall_s > 0 else None
        out["arrivals_simulated"] = self.arrivals
        out["simulated_hours"] = (self.measured_to_ms - self.measured_from_ms) / 3_600_000
        out["router_events"] = self.events
        out["wall_s"] = self.wall_s
        out["seed"] = self.seed
        return out


class Simulation:
    def __init__(
        self,
        loaded: LoadedScenario,
        *,
        seed: int | None = None,
        calls: int | None = None,
        timeline: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        sc = loaded.scenario
        sim = sc.simulation
        self.loaded = loaded
        self.seed = sim.seed if seed is None else seed
        self.calls = calls if calls is not None else sim.calls
        self.duration_ms = None if self.calls is not None else round((sim.duration_s or 0) * 1000)
        self.threshold_ms = loaded.threshold_ms
        self.timeline = timeline
        self.progress = progress
        rng = random.Random(self.seed)
        self.rng = rng
        # The lean router: the same decisions as the live one, but no explanations and only the events this
        # engine reads below (the queue-length timeline of the report needs ContactQueued too).
        wanted = _READS | {ContactQueued} if timeline else _READS
        self.router = Router(loaded.centre, start_ms=loaded.start_ms, explain=False, events=wanted)
        self.start_ms = loaded.start_ms
        self.streams = sc.arrivals
        self.handle = [sampler(a.handle_time, rng) for a in sc.arrivals]
        self.patience = [sampler(a.patience, rng) if a.patience else None for a in sc.arrivals]
        self.accept: dict[str, Callable[[], int]] = {}
        self.back_after_ms: dict[str, int] = {}
        for group, ids in loaded.agent_groups:
            draw = sampler(group.accept_delay, rng)
            for aid in ids:
                self.accept[aid] = draw
                self.back_after_ms[aid] = round(group.back_after_missed_s * 1000)
        if self.calls is not None:
            self.warmup_n = int(self.calls * sim.warmup_fraction)
            self.warmup_ms: int | None = None
        else:
            self.warmup_n = 0
            self.warmup_ms = self.start_ms + round((self.duration_ms or 0) * sim.warmup_fraction)

    # ------------------------------------------------------------------------------------------ arrivals

    def _next_arrival(self, i: int, after_ms: int) -> int:
        """The next arrival of stream ``i`` after ``after_ms`` (piecewise-constant rate: memoryless, so a
        draw that crosses into another 15-minute interval restarts at its boundary with the new rate)."""
        a = self.streams[i]
        rng = self.rng
        if a.curve is None:
            assert a.per_hour is not None
            return after_ms + max(1, round(_expo(rng, a.per_hour / 3_600_000)))
        curve = a.curve
        t = after_ms
        for _ in range(100_000):
            k = ((t - self.start_ms) // INTERVAL_MS) % len(curve)
            boundary = self.start_ms + ((t - self.start_ms) // INTERVAL_MS + 1) * INTERVAL_MS
            rate = curve[k] / 3_600_000
            if rate > 0:
                nxt = t + max(1, round(_expo(rng, rate)))
                if nxt < boundary:
                    return nxt
            t = boundary
        raise RuntimeError("arrival curve never produces an arrival")

    # ------------------------------------------------------------------------------------------- running

    def run(self) -> SimResult:
        router = self.router
        start = self.start_ms
        heap: list[tuple[int, int, int, Any]] = []
        seq = 0
        push = heapq.heappush
        pop = heapq.heappop
        for i in range(len(self.streams)):
            seq += 1
            push(heap, (self._next_arrival(i, start), seq, _ARRIVE, i))
        for group, ids in self.loaded.agent_groups:
            for aid in ids:
                if group.shifts:
                    for s, e in group.shifts:
                        seq += 2
                        push(heap, (start + round(s * 1000), seq - 1, _SHIFT_ON, aid))
                        push(heap, (start + round(e * 1000), seq, _SHIFT_OFF, aid))
                else:
                    seq += 1
                    push(heap, (start, seq, _SHIFT_ON, aid))

        calls = self.calls
        end_arrivals = None if self.duration_ms is None else start + self.duration_ms
        warmup_n = self.warmup_n
        warmup_ms = self.warmup_ms
        measure_from: int | None = start if warmup_n == 0 and warmup_ms is None else None
        stop_ms = math.inf  # when arrivals stop: the end of the measured window
        arrivals = 0
        logged_in: set[str] = set()
        # contact id -> [stream, arrival ms, measured?]
        contacts: dict[str, list[Any]] = {}
        total = Tally()
        queues = {q.name: Tally() for q in self.loaded.centre.queues}
        stream_queue = [queues[a.queue] for a in self.streams]
        threshold = self.threshold_ms
        handle, patience, accept = self.handle, self.patience, self.accept
        agent_state: dict[str, tuple[str, int]] = {}
        occ: dict[str, list[int]] = {}  # agent -> [staffed ms, handling ms] inside the measured window
        intervals: list[Interval] = []
        waiting_now = 0
        last_change = start
        timeline = self.timeline
        events = 0
        progress = self.progress
        next_progress = 0
        wall0 = time.perf_counter()

        def interval(at_ms: int) -> Interval:
            k = (at_ms - start) // INTERVAL_MS
            while len(intervals) <= k:
                intervals.append(Interval())
            return intervals[k]

        def waiting_changed(at_ms: int, delta: int) -> None:
            nonlocal waiting_now, last_change
            t = last_change
            while t < at_ms:  # spread the area over the intervals it spans
                nxt = min(at_ms, start + ((t - start) // INTERVAL_MS + 1) * INTERVAL_MS)
                interval(t).waiting_area_ms += waiting_now * (nxt - t)
                t = nxt
            last_change = at_ms
            waiting_now += delta

        def account(aid: str, at_ms: int, new_state: str | None) -> None:
            """Add the agent's time in its current state to the measured window (inline in the loop below,
            for the state changes; this is for the end of the run)."""
            old = agent_state.get(aid)
            if old is not None and measure_from is not None:
                state, since = old
                lo, hi = max(since, measure_from), min(at_ms, stop_ms)
                if hi > lo and state in STAFFED:
                    acc = occ.get(aid)
                    if acc is None:
                        acc = occ[aid] = [0, 0]
                    acc[0] += hi - lo
                    if state in HANDLING:
                        acc[1] += hi - lo
            if new_state is not None:
                agent_state[aid] = (new_state, at_ms)

        def finish(cid: str, outcome: int, wait_ms: int) -> list[Any] | None:
            """Record the contact's outcome (0 answered, 1 abandoned, 2 other, 3 still waiting at the end);
            returns its record."""
            info = contacts.pop(cid, None)
            if info is None or not info[2]:
                return info
            stream = info[0]
            qt = stream_queue[stream]
            for t in (total, qt):
                t.waits.append(wait_ms)
                t.wait_ms_all += wait_ms
                if wait_ms > 0:
                    t.waited += 1
                if outcome == 0:
                    t.answered += 1
                    t.wait_ms_answered += wait_ms
                    if wait_ms <= threshold:
                        t.answered_within += 1
                elif outcome == 1:
                    t.abandoned += 1
                elif outcome == 2:
                    t.other += 1
                else:
                    t.still_waiting += 1
            if timeline:
                iv = interval(info[1])
                if outcome == 0:
                    iv.answered += 1
                    if wait_ms <= threshold:
                        iv.answered_within += 1
                elif outcome == 1:
                    iv.abandoned += 1
            return info

        pending: list[Event] = []  # inputs due now (zero delays), handled before the clock moves
        while True:
            if pending:
                ev = pending.pop()
                out = router.handle(ev)
            else:
                deadline = router.next_deadline()
                if heap and (deadline is None or heap[0][0] <= deadline):
                    t, _, kind, data = pop(heap)
                    if kind == _ARRIVE:
                        if (calls is not None and arrivals >= calls) or (
                            end_arrivals is not None and t >= end_arrivals
                        ):
                            if stop_ms == math.inf:
                                stop_ms = t if end_arrivals is None else end_arrivals
                            continue
                        stream = self.streams[data]
                        arrivals += 1
                        cid = f"c{arrivals}"
                        measured = arrivals > warmup_n if warmup_ms is None else t >= warmup_ms
                        if measured and measure_from is None:
                            measure_from = t
                        contacts[cid] = [data, t, measured]
                        if measured:
                            total.offered += 1
                            stream_queue[data].offered += 1
                            if timeline:
                                interval(t).offered += 1
                        seq += 1
                        push(heap, (self._next_arrival(data, t), seq, _ARRIVE, data))
                        p = patience[data]
                        if p is not None:
                            seq += 1
                            push(heap, (t + p(), seq, _PATIENCE, cid))
                        out = router.handle(
                            ContactArrived(
                                at_ms=t,
                                contact_id=cid,
                                queue=stream.queue,
                                channel=stream.channel,
                                tier=stream.tier,
                                priority=stream.priority,
                            )
                        )
                        if progress is not None and arrivals >= next_progress:
                            next_progress = arrivals + 20_000
                            progress(arrivals / calls if calls else (t - start) / (self.duration_ms or 1))
                    elif kind == _PATIENCE:
                        state = router.contact_state(data)
                        if state != "queued" and state != "offered":
                            continue
                        out = router.handle(CustomerLeft(at_ms=t, contact_id=data))
                    elif kind == _ACCEPT:
                        if not router.offer_open(data.offer_id):
                            continue  # withdrawn meanwhile (the customer left)
                        out = router.handle(
                            OfferAccepted(
                                at_ms=t,
                                offer_id=data.offer_id,
                                contact_id=data.contact_id,
                                agent_id=data.agent_id,
                            )
                        )
                    elif kind == _END:
                        cid, aid = data
                        out = router.handle(ContactEnded(at_ms=t, contact_id=cid, agent_id=aid))
                    elif kind == _SHIFT_ON:
                        if data in logged_in:
                            out = router.handle(AgentReady(at_ms=t, agent_id=data))
                        else:
                            logged_in.add(data)
                            out = router.handle(AgentLoggedIn(at_ms=t, agent_id=data))
                    elif kind == _SHIFT_OFF:  # stop taking work; finish what is in hand
                        out = router.handle(AgentAway(at_ms=t, agent_id=data, reason="off_shift"))
                    else:  # _BACK: an agent the router set away for a missed offer picks up again
                        a = router.agent(data)
                        if a is None or a.presence != "away" or a.away_reason != "missed_offer":
                            continue
                        out = router.handle(AgentReady(at_ms=t, agent_id=data))
                elif deadline is not None:
                    out = router.advance(deadline)
                else:
                    break
            events += len(out)
            for ev in out:
                kind = type(ev)
                if kind is AgentStateChanged:  # the most frequent: three per contact
                    aid = ev.agent_id
                    old = agent_state.get(aid)
                    if old is not None and measure_from is not None:  # account(), inline
                        state, since = old
                        lo = since if since > measure_from else measure_from
                        hi = ev.at_ms if ev.at_ms < stop_ms else stop_ms
                        if hi > lo and state in STAFFED:
                            acc = occ.get(aid)
                            if acc is None:
                                acc = occ[aid] = [0, 0]
                            acc[0] += hi - lo
                            if state in HANDLING:
                                acc[1] += hi - lo
                    agent_state[aid] = (ev.state, ev.at_ms)
                    if ev.reason == "missed_offer":
                        seq += 1
                        push(heap, (ev.at_ms + self.back_after_ms[aid], seq, _BACK, aid))
                elif kind is OfferMade:
                    delay = accept[ev.agent_id]()
                    if delay <= 0:
                        pending.append(
                            OfferAccepted(
                                at_ms=ev.at_ms,
                                offer_id=ev.offer_id,
                                contact_id=ev.contact_id,
                                agent_id=ev.agent_id,
                            )
                        )
                    else:
                        seq += 1
                        push(heap, (ev.at_ms + delay, seq, _ACCEPT, ev))
                elif kind is ContactConnected:
                    info = finish(ev.contact_id, 0, ev.wait_ms)
                    assert info is not None
                    seq += 1
                    push(heap, (ev.at_ms + handle[info[0]](), seq, _END, (ev.contact_id, ev.agent_id)))
                    if timeline:
                        waiting_changed(ev.at_ms, -1)
                elif kind is ContactQueued:
                    if timeline:
                        waiting_changed(ev.at_ms, +1)
                elif kind is ContactAbandoned:
                    finish(ev.contact_id, 1, ev.wait_ms)
                    if timeline:
                        waiting_changed(ev.at_ms, -1)
                elif kind is ContactOverflowed:
                    if ev.left:
                        finish(ev.contact_id, 2, ev.wait_ms)
                    if timeline and (ev.left or ev.to_queue):
                        waiting_changed(ev.at_ms, -1)
                elif kind is ContactFailed:
                    finish(ev.contact_id, 2, 0)
        if stop_ms == math.inf:
            stop_ms = router.now_ms
        for cid in list(contacts):  # waiting when the world ran out of events: their wait so far counts
            finish(cid, 3, router.now_ms - contacts[cid][1])
        for aid in list(agent_state):
            account(aid, stop_ms, None)
        wall = time.perf_counter() - wall0
        if progress is not None:
            progress(1.0)
        return SimResult(
            total=total,
            queues=queues,
            occupancy=_occupancy(occ.values()),
            queue_occupancy={q: _occupancy(occ[a] for a in router.serving_agents(q) if a in occ) for q in queues},
            threshold_ms=threshold,
            arrivals=arrivals,
            measured_from_ms=measure_from if measure_from is not None else start,
            measured_to_ms=int(stop_ms),
            wall_s=wall,
            events=events,
            intervals=intervals,
            seed=self.seed,
        )


def simulate(loaded: LoadedScenario, **kw: Any) -> SimResult:
    return Simulation(loaded, **kw).run()
