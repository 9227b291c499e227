"""Live queue statistics, computed from the event stream alone.

``LiveStats`` is a consumer of events: feed it the router's output (or a stored log) and ask for a snapshot.
It never looks inside the router, so the dashboard, the simulator and a replay of yesterday's log all compute
the same numbers the same way. Definitions (docs/queueing.md; every variant named):

* ``offered``: contacts that entered the queue (arrivals, transfers in, overflow moves in).
* ``resolved``: contacts whose wait in this queue ended: ``answered + abandoned + overflowed``.
* ``sl_answered`` = answered within T / answered.
* ``sl_offered`` = answered within T / resolved (abandons count against; contacts still waiting don't yet).
* ``sl_offered_excl_short`` = answered within T / (resolved − abandons within ``short_abandon_s``).
* ``sl_asterisk2`` = (answered within T + abandoned within T) / (answered + abandoned), Asterisk's SL2.
* "within T" means at or before the contact's own SLA deadline (its tier's target, in business hours where
  the policy says so), as announced in ``contact.queued``.
* ``callbacks``: calls that left the queue for a callback (virtual hold) — not in ``resolved``, so neither
  answered nor abandoned (Amazon Connect leaves them out of the abandon rate too); the callback is counted
  on the ``callback`` channel from then on, with the wait and SLA deadline it had as a call.
  ``withdrawn``: callbacks cancelled while waiting, also not in ``resolved``.
* ``asa_s``: mean wait of answered contacts. ``aht_s``: mean talk + hold + wrap-up of closed contacts.
* ``abandon_rate`` = abandoned / resolved. ``longest_wait_s``: the oldest contact still waiting (queued or
  being offered). ``occupancy`` = time busy or in wrap-up / time staffed (available, reserved, busy, wrap-up)
  of the agents serving the queue; ringing (reserved) counts as staffed, not as handling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from contactcentre.acd.agent import HANDLING, STAFFED
from contactcentre.events import (
    AGENT_STATES,
    AgentStateChanged,
    ContactAbandoned,
    ContactCallbackQueued,
    ContactClosed,
    ContactConnected,
    ContactFailed,
    ContactOverflowed,
    ContactQueued,
    ContactTransferred,
    ContactWithdrawn,
    Event,
    SlaBreached,
)

BucketKey = tuple[str, str, str]  # queue, channel, tier ("-" when none)

_FIELDS = (
    "offered",
    "answered",
    "answered_within",
    "abandoned",
    "abandoned_within",
    "abandoned_short",
    "overflowed",
    "transferred",
    "transferred_out",
    "failed",
    "callbacks",
    "withdrawn",
    "sla_breaches",
    "wait_answered_ms",
    "handled",
    "talk_ms",
    "hold_ms",
    "wrap_ms",
)


class Tally:
    __slots__ = _FIELDS

    def __init__(self) -> None:
        for f in _FIELDS:
            setattr(self, f, 0)

    def add(self, other: Tally) -> None:
        for f in _FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))


class _Waiting:
    __slots__ = ("deadline_ms", "key", "since_ms")

    def __init__(self, key: BucketKey, since_ms: int, deadline_ms: int | None) -> None:
        self.key = key
        self.since_ms = since_ms
        self.deadline_ms = deadline_ms


class _AgentClock:
    __slots__ = ("since_ms", "state", "totals")

    def __init__(self) -> None:
        self.state = "logged_out"
        self.since_ms = 0
        self.totals = dict.fromkeys(AGENT_STATES, 0)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


class LiveStats:
    def __init__(self, short_abandon_ms: int = 5000) -> None:
        self.short_abandon_ms = short_abandon_ms
        self.buckets: dict[BucketKey, Tally] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._agents: dict[str, _AgentClock] = {}
        self._on: dict[type, Callable[[Any], None]] = {
            ContactQueued: self._queued,
            ContactConnected: self._connected,
            ContactAbandoned: self._abandoned,
            ContactOverflowed: self._overflowed,
            ContactTransferred: self._transferred,
            ContactFailed: self._failed,
            ContactCallbackQueued: self._callback,
            ContactWithdrawn: self._withdrawn,
            ContactClosed: self._closed,
            SlaBreached: self._breached,
            AgentStateChanged: self._agent_state,
        }

    def apply(self, event: Event) -> None:
        fn = self._on.get(type(event))
        if fn is not None:
            fn(event)

    def apply_all(self, events: Iterable[Event]) -> None:
        on = self._on
        for ev in events:
            fn = on.get(type(ev))
            if fn is not None:
                fn(ev)

    def _tally(self, queue: str, channel: str, tier: str | None) -> Tally:
        key = (queue, channel, tier or "-")
        t = self.buckets.get(key)
        if t is None:
            t = self.buckets[key] = Tally()
        return t

    # -------------------------------------------------------------------------------------------- events

    def _queued(self, ev: ContactQueued) -> None:
        self._tally(ev.queue, ev.channel, ev.tier).offered += 1
        since = ev.waiting_since_ms if ev.waiting_since_ms is not None else ev.at_ms
        key = (ev.queue, ev.channel, ev.tier or "-")
        self._waiting[ev.contact_id] = _Waiting(key, since, ev.sla_deadline_ms)

    def _within(self, contact_id: str, at_ms: int) -> bool:
        w = self._waiting.pop(contact_id, None)
        return w is not None and w.deadline_ms is not None and at_ms <= w.deadline_ms

    def _connected(self, ev: ContactConnected) -> None:
        t = self._tally(ev.queue, ev.channel, ev.tier)
        t.answered += 1
        t.wait_answered_ms += ev.wait_ms
        if self._within(ev.contact_id, ev.at_ms):
            t.answered_within += 1

    def _abandoned(self, ev: ContactAbandoned) -> None:
        t = self._tally(ev.queue, ev.channel, ev.tier)
        t.abandoned += 1
        if ev.wait_ms <= self.short_abandon_ms:
            t.abandoned_short += 1
        if self._within(ev.contact_id, ev.at_ms):
            t.abandoned_within += 1

    def _overflowed(self, ev: ContactOverflowed) -> None:
        if ev.left or ev.to_queue is not None:
            self._waiting.pop(ev.contact_id, None)
            self._tally(ev.queue, ev.channel, ev.tier).overflowed += 1

    def _transferred(self, ev: ContactTransferred) -> None:
        t = self._tally(ev.queue, ev.channel, ev.tier)
        t.transferred += 1
        if ev.to_external is not None:
            t.transferred_out += 1

    def _failed(self, ev: ContactFailed) -> None:
        self._tally(ev.queue, ev.channel, ev.tier).failed += 1

    def _callback(self, ev: ContactCallbackQueued) -> None:
        # Virtual hold: the call leaves the voice figures without an outcome (neither answered nor abandoned,
        # so not in ``resolved``); the ``contact.queued`` that follows counts it on the callback channel.
        if ev.via == "virtual_hold":
            w = self._waiting.pop(ev.contact_id, None)
            if w is not None:
                self._tally(*w.key).callbacks += 1

    def _withdrawn(self, ev: ContactWithdrawn) -> None:
        self._waiting.pop(ev.contact_id, None)
        self._tally(ev.queue, ev.channel, ev.tier).withdrawn += 1

    def _closed(self, ev: ContactClosed) -> None:
        t = self._tally(ev.queue, ev.channel, ev.tier)
        t.handled += 1
        t.talk_ms += ev.talk_ms
        t.hold_ms += ev.hold_ms
        t.wrap_ms += ev.wrap_ms

    def _breached(self, ev: SlaBreached) -> None:
        self._tally(ev.queue, ev.channel, ev.tier).sla_breaches += 1

    def _agent_state(self, ev: AgentStateChanged) -> None:
        clock = self._agents.get(ev.agent_id)
        if clock is None:
            clock = self._agents[ev.agent_id] = _AgentClock()
        clock.totals[clock.state] += ev.at_ms - clock.since_ms if clock.state != "logged_out" else 0
        clock.state = ev.state
        clock.since_ms = ev.at_ms

    # ------------------------------------------------------------------------------------------ snapshot

    def agent_times(self, now_ms: int) -> dict[str, dict[str, int]]:
        """Milliseconds each agent has spent in each state, up to ``now_ms``."""
        out = {}
        for aid, clock in self._agents.items():
            totals = dict(clock.totals)
            if clock.state != "logged_out":
                totals[clock.state] += now_ms - clock.since_ms
            out[aid] = totals
        return out

    def snapshot(self, now_ms: int, serving: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
        """All metrics at ``now_ms``: ``total``, and per ``queues``, ``channels``, ``tiers`` and ``buckets``
        (queue/channel/tier). ``serving`` maps a queue to the agents who serve it, for its occupancy."""
        waiting: dict[BucketKey, list[int]] = {}
        for w in self._waiting.values():
            waiting.setdefault(w.key, []).append(w.since_ms)
        keys = set(self.buckets) | set(waiting)
        groups: dict[str, dict[str, tuple[Tally, list[int]]]] = {"queues": {}, "channels": {}, "tiers": {}}
        total = (Tally(), [])
        buckets = {}
        for key in sorted(keys):
            t = self.buckets.get(key) or Tally()
            since = waiting.get(key, [])
            buckets["/".join(key)] = _metrics(t, since, now_ms)
            total[0].add(t)
            total[1].extend(since)
            for group, name in zip(("queues", "channels", "tiers"), key, strict=True):
                acc = groups[group].setdefault(name, (Tally(), []))
                acc[0].add(t)
                acc[1].extend(since)
        times = self.agent_times(now_ms)
        out: dict[str, Any] = {"at_ms": now_ms, "total": _metrics(*total, now_ms)}
        out["total"]["occupancy"] = _occupancy(times.values())
        for group, accs in groups.items():
            out[group] = {name: _metrics(t, since, now_ms) for name, (t, since) in sorted(accs.items())}
        if serving is not None:
            for q, agents in serving.items():
                m = out["queues"].setdefault(q, _metrics(Tally(), [], now_ms))
                ids = list(agents)
                m["occupancy"] = _occupancy(times[a] for a in ids if a in times)
                m["agents"] = _states(self._agents[a].state for a in ids if a in self._agents)
        out["buckets"] = buckets
        out["agents"] = _states(c.state for c in self._agents.values())
        return out


def _occupancy(times: Iterable[Mapping[str, int]]) -> float | None:
    staffed = handling = 0
    for t in times:
        staffed += sum(t[s] for s in STAFFED)
        handling += sum(t[s] for s in HANDLING)
    return _ratio(handling, staffed)


def _states(states: Iterable[str]) -> dict[str, int]:
    out = dict.fromkeys(AGENT_STATES, 0)
    for s in states:
        out[s] += 1
    return out


def _metrics(t: Tally, waiting_since: list[int], now_ms: int) -> dict[str, Any]:
    resolved = t.answered + t.abandoned + t.overflowed
    return {
        "offered": t.offered,
        "answered": t.answered,
        "abandoned": t.abandoned,
        "abandoned_short": t.abandoned_short,
        "overflowed": t.overflowed,
        "transferred": t.transferred,
        "transferred_out": t.transferred_out,
        "failed": t.failed,
        "callbacks": t.callbacks,
        "withdrawn": t.withdrawn,
        "handled": t.handled,
        "sla_breaches": t.sla_breaches,
        "waiting": len(waiting_since),
        "longest_wait_s": (now_ms - min(waiting_since)) / 1000 if waiting_since else 0.0,
        "sl_answered": _ratio(t.answered_within, t.answered),
        "sl_offered": _ratio(t.answered_within, resolved),
        "sl_offered_excl_short": _ratio(t.answered_within, resolved - t.abandoned_short),
        "sl_asterisk2": _ratio(t.answered_within + t.abandoned_within, t.answered + t.abandoned),
        "asa_s": _ratio(t.wait_answered_ms / 1000, t.answered),
        "aht_s": _ratio((t.talk_ms + t.hold_ms + t.wrap_ms) / 1000, t.handled),
        "abandon_rate": _ratio(t.abandoned, resolved),
    }
