"""A small seeded world around the router: customers who arrive, wait and give up; agents who answer, talk,
hold, transfer and take breaks. It produces a realistic, repeatable input sequence for golden and replay
tests. (The full discrete-event simulator lives in ``contactcentre/simulation/``; this stays small on purpose.)"""

from __future__ import annotations

import heapq
import random
from typing import Any

from contactcentre import events as E
from contactcentre.acd import Router, RouterError
from contactcentre.config import CentreConfig

START_MS = 1_795_424_400_000  # Monday 2026-11-23 09:00 Europe/Amsterdam


def run_world(
    config: CentreConfig, seed: int, contacts: int = 80, router_options: dict[str, Any] | None = None
) -> tuple[list[E.Event], int]:
    """``router_options`` (e.g. ``explain=False``, ``events=...``) go to the ``Router``; the world reacts to
    OfferMade, ContactConnected and WrapUpStarted, so a lean router must still say those."""
    rng = random.Random(seed)
    router = Router(config, start_ms=START_MS, **(router_options or {}))
    log: list[E.Event] = []
    heap: list[tuple[int, int, Any]] = []
    seq = 0

    def at(t: int, ev: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, ev))

    queues = [(q.name, ch) for q in config.queues for ch in q.channels if ch in ("voice", "chat", "email")]
    tiers = [None, None, "bronze", "silver", "gold"]
    agent_ids = [a.id for a in config.agents]
    for i, aid in enumerate(agent_ids):
        at(START_MS + i * 5_000, lambda t, aid=aid: E.AgentLoggedIn(at_ms=t, agent_id=aid))
    t = START_MS
    for n in range(contacts):
        t += round(rng.expovariate(1 / 20_000))
        q, ch = rng.choice(queues)
        tier = rng.choice(tiers)
        pref = rng.choice(agent_ids) if tier == "gold" and rng.random() < 0.5 else None
        cid = f"c{n}"
        at(
            t,
            lambda t, cid=cid, q=q, ch=ch, tier=tier, pref=pref: E.ContactArrived(
                at_ms=t,
                contact_id=cid,
                queue=q,
                channel=ch,
                tier=tier,
                preferred_agent_id=pref,
                customer_id=f"cust{rng.randrange(40)}",
            ),
        )
        at(t + round(rng.expovariate(1 / 150_000)), ("patience", cid))
    for _ in range(6):
        aid = rng.choice(agent_ids)
        t_break = START_MS + rng.randrange(60_000, 1_800_000)
        at(t_break, lambda t, aid=aid: E.AgentAway(at_ms=t, agent_id=aid, reason="break"))
        at(t_break + rng.randrange(60_000, 600_000), lambda t, aid=aid: E.AgentReady(at_ms=t, agent_id=aid))

    def react(out: list[E.Event]) -> None:
        for ev in out:
            if isinstance(ev, E.OfferMade):
                r = rng.random()
                delay = rng.randrange(500, 6_000)
                if r < 0.85:
                    at(
                        ev.at_ms + delay,
                        lambda t, ev=ev: E.OfferAccepted(
                            at_ms=t, offer_id=ev.offer_id, contact_id=ev.contact_id, agent_id=ev.agent_id
                        ),
                    )
                elif r < 0.92:
                    at(
                        ev.at_ms + delay,
                        lambda t, ev=ev: E.OfferRejected(
                            at_ms=t, offer_id=ev.offer_id, contact_id=ev.contact_id, agent_id=ev.agent_id
                        ),
                    )
            elif isinstance(ev, E.ContactConnected):
                talk = round(rng.expovariate(1 / 120_000))
                cid, aid = ev.contact_id, ev.agent_id
                r = rng.random()
                if r < 0.15:
                    hold_at = ev.at_ms + talk // 3
                    at(
                        hold_at,
                        lambda t, cid=cid, aid=aid: E.ContactHeld(at_ms=t, contact_id=cid, agent_id=aid),
                    )
                    at(
                        hold_at + rng.randrange(5_000, 40_000),
                        lambda t, cid=cid, aid=aid: E.ContactRetrieved(at_ms=t, contact_id=cid, agent_id=aid),
                    )
                if r > 0.93:
                    q = rng.choice(queues)[0]
                    at(
                        ev.at_ms + talk,
                        lambda t, cid=cid, aid=aid, q=q: E.TransferRequested(
                            at_ms=t, contact_id=cid, agent_id=aid, to_queue=q
                        ),
                    )
                else:
                    if rng.random() < 0.5:
                        at(
                            ev.at_ms + talk // 2,
                            lambda t, cid=cid, aid=aid: E.DispositionSet(
                                at_ms=t,
                                contact_id=cid,
                                agent_id=aid,
                                code=rng.choice(["resolved", "follow_up"]),
                            ),
                        )
                    at(
                        ev.at_ms + talk + 50_000,
                        lambda t, cid=cid, aid=aid: E.ContactEnded(at_ms=t, contact_id=cid, agent_id=aid),
                    )
            elif isinstance(ev, E.WrapUpStarted) and ev.ends_ms is None:
                cid, aid = ev.contact_id, ev.agent_id
                at(
                    ev.at_ms + rng.randrange(5_000, 60_000),
                    lambda t, cid=cid, aid=aid: E.WrapUpEnded(at_ms=t, contact_id=cid, agent_id=aid),
                )

    end = START_MS
    while heap or router.next_deadline() is not None:
        deadline = router.next_deadline()
        if heap and (deadline is None or heap[0][0] < deadline):
            t, _, item = heapq.heappop(heap)
            if isinstance(item, tuple):  # a customer's patience runs out: leaves only if still waiting
                c = router.contacts.get(item[1])
                if c is None or c.state not in ("queued", "offered"):
                    continue
                item = lambda t, cid=item[1]: E.CustomerLeft(at_ms=t, contact_id=cid)  # noqa: E731
            try:
                out = router.handle(item(t))
            except RouterError:  # a race the world didn't check (e.g. holding a call that ended)
                out = router.advance(t)
        else:
            assert deadline is not None
            t = deadline
            out = router.advance(deadline)
        end = t
        log += out
        react(out)
    return log, end


def replay(config: CentreConfig, log: list[E.Event], end_ms: int) -> list[E.Event]:
    """Feed the inputs of ``log`` to a fresh router; return everything it says."""
    router = Router(config, start_ms=START_MS)
    out: list[E.Event] = []
    for ev in log:
        if E.is_input(ev):
            out += router.handle(ev)
    out += router.advance(end_ms)
    return out
