"""Prometheus metrics for one centre, on a registry of its own (never the process-global one, so tests and
several centres in one process don't collide). ``docs/metrics.md`` lists every metric and what it means.

Two sources, as the design asks:

* **counters and histograms** are fed by the event stream (``observe`` is a centre subscriber): the same
  events the store logs and ``LiveStats`` counts, so the figures agree with the dashboard and with a replay;
* **gauges** (contacts waiting, longest wait, agents by state, store writer backlog) are read from the live
  router, driver and writer when Prometheus scrapes: no polling loop, and never stale.

Label values are bounded: configured queue and tier names (an unconfigured tier is ``other``, none is
``none``), the five channels, and small fixed vocabularies (outcomes, overflow results, transfer targets,
failure reasons). Contact, customer, agent and offer ids never become labels.

Scrape-time reads happen on the loop thread (twisted.web renders there), the only thread that touches the
router, so no lock is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contactcentre.events import (
    AGENT_STATES,
    CHANNELS,
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConnected,
    ContactFailed,
    ContactOverflowed,
    ContactQueued,
    ContactTransferred,
    ContactWithdrawn,
    Event,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
    SlaBreached,
    SlaWarned,
)

if TYPE_CHECKING:
    from contactcentre.acd import Router
    from contactcentre.config import CentreConfig
    from contactcentre.server.centre import Centre
    from contactcentre.server.driver import RouterDriver
    from contactcentre.store.writer import StoreWriter

PREFIX = "contactcentre"

# Buckets, in seconds. Waits run from seconds (voice, chat) to hours (e-mail's first-response targets), so one
# set spans both, and it contains every default SLA threshold (20 s, 30 s; 1 h, 4 h, 24 h): the share answered
# within a threshold is then read exactly from one bucket, with no interpolation.
WAIT_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400, 28800,
                86400, 172800)  # fmt: skip
# Queue entry → offer: 0 is its own bucket (an agent was free at once, the usual case when staffed well).
OFFER_LATENCY_BUCKETS = (0, 1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
# Offer → accept: an agent's reaction, bounded by the channel's offer timeout (15 s voice … 120 s e-mail).
OFFER_ACCEPT_BUCKETS = (0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 60, 120, 300)
# Talk + hold + wrap-up: minutes for voice and chat, up to hours for an e-mail left open.
HANDLE_BUCKETS = (30, 60, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, 3600, 7200, 14400)
# |actual − estimated wait|, with the sign as the label ``direction`` (``late``: waited longer than told;
# ``early``: no longer). Not one histogram with negative buckets: prometheus-client then drops ``_sum`` (the
# OpenMetrics rule, as a signed sum is no counter), and the mean bias would be lost. Split by sign, both sums
# only grow, and bias = (sum late − sum early) / count, mean absolute error = (sum late + sum early) / count.
EWT_ERROR_BUCKETS = (0, 10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 14400, 86400)

# How late the event loop ran a timer: every channel is served by that one loop, so any lateness here is
# lateness for every call, chat and console. The watchdog promises under 50 ms; seconds mean a stall.
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LOOP_LAG_INTERVAL_S = 0.1
LOOP_LAG_LOG_EVERY_S = 60.0  # at most one warning line a minute about late ticks

NO_TIER = "none"
OTHER = "other"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Visit:
    """What is remembered of a contact between its queue entry and its answer: no more than the metrics need,
    and dropped when it is answered, abandoned or leaves."""

    queue: str
    channel: str
    tier: str
    queued_ms: int
    ewt_ms: int | None
    deadline_ms: int | None
    ready_ms: int | None  # when it last became free to be offered (queue entry or an offer falling through)


@dataclass(slots=True)
class _OpenOffer:
    at_ms: int | None  # None: made before these metrics started (see ``_adopt``)
    queue: str
    channel: str


class CentreMetrics:
    """The centre's metrics: ``observe(events)`` for every published batch, ``registry`` to expose.

    ``router`` (with ``now_ms``) adds the live gauges; ``driver`` and ``writer`` add their counters. All are
    optional so a stored log can be turned into metrics alone (tests, offline analysis)."""

    def __init__(
        self,
        config: CentreConfig,
        *,
        router: Router | None = None,
        now_ms: Callable[[], int] | None = None,
        driver: RouterDriver | None = None,
        writer: StoreWriter | None = None,
    ) -> None:
        if router is not None and now_ms is None:
            raise ValueError("the live gauges need now_ms (the centre's clock) along with the router")
        self.registry = CollectorRegistry(auto_describe=True)
        self._queues = frozenset(q.name for q in config.queues)
        self._tiers = frozenset(config.tiers)
        self._visits: dict[str, _Visit] = {}
        self._offers: dict[str, _OpenOffer] = {}
        # (metric, label values) -> its child: prometheus_client's labels() checks and converts the values and
        # takes a lock on every call, a few per event; the values are bounded (unknown ones count as OTHER)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._unsubscribe: Callable[[], None] | None = None
        r = self.registry
        qct = ("queue", "channel", "tier")
        qc = ("queue", "channel")

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=r)

        self.arrived = counter("contacts_arrived", "Contacts that reached the centre (calls, chat sessions, mails)", qc)
        self.offered = counter("contacts_offered", "Queue entries: arrivals, transfers in and overflow moves in", qct)
        self.answered = counter("contacts_answered", "Contacts connected to an agent", qct)
        self.answered_within = counter(
            "contacts_answered_within_sla", "Contacts connected at or before their SLA deadline", qct
        )
        self.abandoned = counter("contacts_abandoned", "Contacts whose customer left while waiting", qct)
        self.failed = counter("contacts_failed", "Contacts that could not be queued", (*qc, "reason"))
        self.overflows = counter(
            "overflows",
            "Overflow steps fired (result: widened in place, moved to a queue, left the centre)",
            (*qc, "result"),
        )
        self.transfers = counter(
            "transfers", "Transfers by agents, by target (queue, agent, external)", (*qc, "target")
        )
        self.sla_warnings = counter("sla_warnings", "Contacts that reached their SLA warning time waiting", qct)
        self.sla_breaches = counter("sla_breaches", "Contacts still waiting at their SLA deadline", qct)
        self.offers_made = counter("offers_made", "Offers (reservations) made to agents", qc)
        self.offer_outcomes = counter(
            "offer_outcomes",
            "How offers ended: accepted, rejected, expired (ring-no-answer), cancelled",
            (*qc, "outcome"),
        )
        self.messages_received = counter("messages_received", "Customer messages (chat lines, e-mails)", ("channel",))
        self.messages_sent = counter(
            "messages_sent", "Agent messages to customers (chat lines, e-mail replies)", ("channel",)
        )

        # Histograms carry no tier: each label set costs ~25 series, and the per-tier service level is already
        # exact from the counters (answered within SLA / answered).
        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=r)

        self.wait = histogram(
            "wait_seconds", "Time waited in the centre until answered or abandoned", (*qc, "outcome"), WAIT_BUCKETS
        )
        self.offer_latency = histogram(
            "offer_latency_seconds",
            "Queue entry (or an offer falling through) to the next offer",
            qc,
            OFFER_LATENCY_BUCKETS,
        )
        self.offer_accept = histogram("offer_accept_seconds", "Offer made to offer accepted", qc, OFFER_ACCEPT_BUCKETS)
        self.handle = histogram(
            "handle_seconds", "Handle time (talk + hold + wrap-up) of closed contacts", qc, HANDLE_BUCKETS
        )
        self.ewt_error = histogram(
            "ewt_error_seconds",
            "How far the actual wait was from the estimate given at queue entry (direction: late, early)",
            (*qc, "outcome", "direction"),
            EWT_ERROR_BUCKETS,
        )
        self._zero_series(config)
        if router is not None and now_ms is not None:
            self._adopt(router)
            r.register(LiveCollector(router, now_ms, driver=driver, writer=writer))
        self._on: dict[type, Callable[[Any], None]] = {
            ContactArrived: self._arrived,
            ContactQueued: self._queued,
            ContactFailed: self._failed,
            ContactConnected: self._connected,
            ContactAbandoned: self._abandoned,
            ContactOverflowed: self._overflowed,
            ContactTransferred: self._transferred,
            ContactClosed: self._closed,
            SlaWarned: self._warned,
            SlaBreached: self._breached,
            OfferMade: self._offer_made,
            OfferAccepted: self._offer_accepted,
            OfferRejected: self._offer_fell_through,
            OfferExpired: self._offer_fell_through,
            OfferCancelled: self._offer_fell_through,
            MessageReceived: self._message_received,
            MessageSent: self._message_sent,
            # A cancelled callback ends without an answer or abandon: its visit must not be kept forever.
            ContactWithdrawn: lambda ev: self._visits.pop(ev.contact_id, None),
        }

    @classmethod
    def attach(cls, centre: Centre) -> CentreMetrics:
        """Metrics for a running centre: subscribed to its events, gauges read from its router and writer."""
        m = cls(centre.config, router=centre.router, now_ms=centre.now_ms, driver=centre.driver, writer=centre.writer)
        m._unsubscribe = centre.subscribe(m.observe)
        return m

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _adopt(self, router: Router) -> None:
        """Take over the contacts already waiting and the offers already open (a server restored from its log
        starts its metrics after the replay), so that their SLA and offer outcomes are still counted. When
        they were queued or offered is not known here: no estimate, latency or reaction time is observed."""
        for c in router.contact_list():  # one pass: a view per contact is built once
            if c.state in _WAITING:
                q, ch, t = self._queue(c.queue), self._channel(c.channel), self._tier(c.tier)
                self._visits[c.id] = _Visit(q, ch, t, c.waiting_since_ms, None, c.sla_deadline_ms, None)
            if c.offer is not None:
                self._offers[c.offer.id] = _OpenOffer(None, self._queue(c.queue), self._channel(c.channel))

    def _zero_series(self, config: CentreConfig) -> None:
        # Every configured queue/channel (and tier) pair exists from the start at 0, so that rate() and
        # ratios see a counter from its first scrape rather than from its first increment.
        tiers = (*sorted(config.tiers), NO_TIER)
        for q in config.queues:
            for ch in q.channels:
                self.arrived.labels(q.name, ch)
                self.offers_made.labels(q.name, ch)
                for t in tiers:
                    for c in (self.offered, self.answered, self.answered_within, self.abandoned, self.sla_breaches):
                        c.labels(q.name, ch, t)

    # ------------------------------------------------------------------------------------------ labels

    def _queue(self, name: str) -> str:
        return name if name in self._queues else OTHER

    @staticmethod
    def _channel(name: str) -> str:
        return name if name in CHANNELS else OTHER

    def _tier(self, tier: str | None) -> str:
        if tier is None:
            return NO_TIER
        return tier if tier in self._tiers else OTHER

    def _qc(self, ev: Any) -> tuple[str, str]:
        return self._queue(ev.queue), self._channel(ev.channel)

    def _qct(self, ev: Any) -> tuple[str, str, str]:
        return self._queue(ev.queue), self._channel(ev.channel), self._tier(ev.tier)

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # ------------------------------------------------------------------------------------------ events

    def observe(self, events: Iterable[Event]) -> None:
        """Count one batch of events (a centre subscriber: called with everything the centre publishes)."""
        on = self._on
        for ev in events:
            fn = on.get(type(ev))
            if fn is not None:
                fn(ev)

    def _arrived(self, ev: ContactArrived) -> None:
        self._child(self.arrived, *self._qc(ev)).inc()

    def _queued(self, ev: ContactQueued) -> None:
        q, ch, t = self._qct(ev)
        self._child(self.offered, q, ch, t).inc()
        # A new estimate for each queue entry (a transfer or an overflow move is told a new wait there).
        self._visits[ev.contact_id] = _Visit(q, ch, t, ev.at_ms, ev.ewt_ms, ev.sla_deadline_ms, ev.at_ms)

    def _failed(self, ev: ContactFailed) -> None:
        # Reasons are the router's own small vocabulary (closed, queue_full), not free text.
        self._child(self.failed, *self._qc(ev), ev.reason).inc()

    def _connected(self, ev: ContactConnected) -> None:
        labels = self._qct(ev)
        self._child(self.answered, *labels).inc()
        self._child(self.wait, *labels[:2], "answered").observe(ev.wait_ms / 1000)
        visit = self._visits.pop(ev.contact_id, None)
        if visit is None:  # waiting since before this process subscribed (a restart): nothing to compare
            return
        if visit.deadline_ms is not None and ev.at_ms <= visit.deadline_ms:
            self._child(self.answered_within, *labels).inc()
        self._ewt_error(visit, ev.at_ms, "answered")

    def _abandoned(self, ev: ContactAbandoned) -> None:
        labels = self._qct(ev)
        self._child(self.abandoned, *labels).inc()
        self._child(self.wait, *labels[:2], "abandoned").observe(ev.wait_ms / 1000)
        visit = self._visits.pop(ev.contact_id, None)
        if visit is not None:
            self._ewt_error(visit, ev.at_ms, "abandoned")

    def _ewt_error(self, visit: _Visit, at_ms: int, outcome: str) -> None:
        if visit.ewt_ms is None:  # nobody was staffed to serve it: no wait was promised
            return
        actual = at_ms - visit.queued_ms  # measured from the estimate's moment, as the estimate was
        error_s = (actual - visit.ewt_ms) / 1000
        direction = "late" if error_s > 0 else "early"
        self._child(self.ewt_error, visit.queue, visit.channel, outcome, direction).observe(abs(error_s))

    def _overflowed(self, ev: ContactOverflowed) -> None:
        if ev.to_queue is not None:
            result = "moved"  # a ContactQueued for the new queue follows and starts a new visit
        elif ev.left:
            result = "left"
            self._visits.pop(ev.contact_id, None)
        else:
            result = "widened"
        self._child(self.overflows, *self._qc(ev), result).inc()

    def _transferred(self, ev: ContactTransferred) -> None:
        if ev.to_external is not None:
            target = "external"
        elif ev.to_agent_id is not None:
            target = "agent"
        else:
            target = "queue"
        self._child(self.transfers, *self._qc(ev), target).inc()

    def _closed(self, ev: ContactClosed) -> None:
        self._child(self.handle, *self._qc(ev)).observe((ev.talk_ms + ev.hold_ms + ev.wrap_ms) / 1000)

    def _warned(self, ev: SlaWarned) -> None:
        self._child(self.sla_warnings, *self._qct(ev)).inc()

    def _breached(self, ev: SlaBreached) -> None:
        self._child(self.sla_breaches, *self._qct(ev)).inc()

    def _offer_made(self, ev: OfferMade) -> None:
        q, ch = self._qc(ev)
        self._child(self.offers_made, q, ch).inc()
        self._offers[ev.offer_id] = _OpenOffer(ev.at_ms, q, ch)
        visit = self._visits.get(ev.contact_id)
        if visit is not None and visit.ready_ms is not None:
            self._child(self.offer_latency, q, ch).observe((ev.at_ms - visit.ready_ms) / 1000)
            visit.ready_ms = None

    def _offer_accepted(self, ev: OfferAccepted) -> None:
        offer = self._offers.pop(ev.offer_id, None)
        if offer is None:
            return
        self._child(self.offer_outcomes, offer.queue, offer.channel, "accepted").inc()
        if offer.at_ms is not None:
            self._child(self.offer_accept, offer.queue, offer.channel).observe((ev.at_ms - offer.at_ms) / 1000)

    def _offer_fell_through(self, ev: OfferRejected | OfferExpired | OfferCancelled) -> None:
        offer = self._offers.pop(ev.offer_id, None)
        if offer is None:
            return
        outcome = _FELL_THROUGH[type(ev)]
        self._child(self.offer_outcomes, offer.queue, offer.channel, outcome).inc()
        visit = self._visits.get(ev.contact_id)
        if visit is not None:  # back to waiting: the next offer's latency counts from here
            visit.ready_ms = ev.at_ms

    def _message_received(self, ev: MessageReceived) -> None:
        self._child(self.messages_received, self._channel(ev.channel)).inc()

    def _message_sent(self, ev: MessageSent) -> None:
        self._child(self.messages_sent, self._channel(ev.channel)).inc()


class _Timers(Protocol):
    """What ``LoopLag`` needs of an event loop (a test passes a fake clock)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...


class LoopLag:
    """The event-loop watchdog: one timer, re-armed every ``interval_s``, that records how late it fired
    (``contactcentre_event_loop_lag_seconds``) and logs a warning when that is over ``warn_s``. A late timer
    means some callback held the loop, and with it every channel, for that long. The first late tick is logged
    at once; further ones within ``LOOP_LAG_LOG_EVERY_S`` are counted and logged as one line when that has
    passed (a busy machine would otherwise fill the log with a line every 100 ms)."""

    def __init__(
        self, loop: _Timers, registry: CollectorRegistry, *, warn_s: float, interval_s: float = LOOP_LAG_INTERVAL_S
    ) -> None:
        self.lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the server's event loop ran a timer due every 100 ms (a stall delays every channel)",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self._loop = loop
        self._warn_s = warn_s
        self._interval_s = interval_s
        self._due = 0.0
        self._handle: Any = None
        self._logged_at: float | None = None  # when the last warning line was written
        self._held: list[float] = []  # late ticks since then, not yet logged

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self._due = self._loop.time() + self._interval_s
        self._handle = self._loop.call_later(self._interval_s, self._fired)

    def _fired(self) -> None:
        late = max(0.0, self._loop.time() - self._due)
        self.lag.observe(late)
        if late > self._warn_s:
            self._held.append(late)
        now = self._loop.time()
        if self._held and (self._logged_at is None or now - self._logged_at >= LOOP_LAG_LOG_EVERY_S):
            if len(self._held) == 1:
                log.warning("the event loop ran %.0f ms late: every channel waited that long", self._held[0] * 1000)
            else:
                log.warning(
                    "the event loop ran late %d times in the last %.0f s, at worst %.0f ms: every channel waited",
                    len(self._held),
                    now - (self._logged_at or now),
                    max(self._held) * 1000,
                )
            self._logged_at, self._held = now, []
        self._arm()


_FELL_THROUGH: dict[type, str] = {OfferRejected: "rejected", OfferExpired: "expired", OfferCancelled: "cancelled"}

# Contact states that count as waiting (LiveStats' definition: queued, or being offered to an agent).
_WAITING = frozenset({"queued", "offered"})


class LiveCollector(Collector):
    """Gauges read from live state when Prometheus scrapes (and the driver's and writer's own counters)."""

    def __init__(
        self,
        router: Router,
        now_ms: Callable[[], int],
        *,
        driver: RouterDriver | None = None,
        writer: StoreWriter | None = None,
    ) -> None:
        self.router = router
        self.now_ms = now_ms
        self.driver = driver
        self.writer = writer

    def describe(self) -> Iterator[Metric]:
        # The names alone, so that registering checks for clashes without reading live state.
        yield from self._families().values()

    def _families(self) -> dict[str, Metric]:
        fam: dict[str, Metric] = {
            "waiting": GaugeMetricFamily(
                f"{PREFIX}_contacts_waiting",
                "Contacts waiting now (queued or being offered)",
                labels=["queue", "channel"],
            ),
            "longest": GaugeMetricFamily(
                f"{PREFIX}_longest_wait_seconds", "Age of the oldest contact waiting now", labels=["queue", "channel"]
            ),
            "agents": GaugeMetricFamily(f"{PREFIX}_agents", "Agents by state", labels=["state"]),
            "queue_agents": GaugeMetricFamily(
                f"{PREFIX}_queue_agents",
                "Agents whose skills meet the queue's base requirement, by state (an agent counts in every queue it "
                "serves)",
                labels=["queue", "state"],
            ),
        }
        if self.driver is not None:
            fam["inputs"] = CounterMetricFamily(
                f"{PREFIX}_router_inputs", "Inputs handed to the router, by result", labels=["result"]
            )
            fam["emitted"] = CounterMetricFamily(f"{PREFIX}_events", "Events dispatched by the router driver")
        if self.writer is not None:
            fam["committed"] = CounterMetricFamily(f"{PREFIX}_store_events_committed", "Records committed to the store")
            fam["commits"] = CounterMetricFamily(f"{PREFIX}_store_commits", "Store transactions committed")
            fam["pending"] = GaugeMetricFamily(
                f"{PREFIX}_store_pending_events", "Records handed to the store writer and not yet committed"
            )
        return fam

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        router = self.router
        now = self.now_ms()
        oldest: dict[tuple[str, str], int] = {}
        count: dict[tuple[str, str], int] = {}
        for q in router.config.queues:
            for ch in q.channels:
                count[(q.name, ch)] = 0
        for key, w in router.waiting_counts(ringing_too=True).items():
            count[key] = w.count
            oldest[key] = w.oldest_since_ms
        for (queue, channel), n in sorted(count.items()):
            fam["waiting"].add_metric([queue, channel], n)
            since = oldest.get((queue, channel))
            fam["longest"].add_metric([queue, channel], max(0, now - since) / 1000 if since is not None else 0.0)
        states = dict.fromkeys(AGENT_STATES, 0)
        agent_states = router.agent_states()
        for state in agent_states.values():
            states[state] += 1
        for state, n in states.items():
            fam["agents"].add_metric([state], n)
        for q in router.config.queues:
            per = dict.fromkeys(AGENT_STATES, 0)
            for aid in router.serving_agents(q.name):
                per[agent_states[aid]] += 1
            for state, n in per.items():
                fam["queue_agents"].add_metric([q.name, state], n)
        if self.driver is not None:
            fam["inputs"].add_metric(["handled"], self.driver.handled)
            fam["inputs"].add_metric(["refused"], self.driver.refused)
            fam["emitted"].add_metric([], self.driver.emitted)
        if self.writer is not None:
            fam["committed"].add_metric([], self.writer.committed)
            fam["commits"].add_metric([], self.writer.commits)
            fam["pending"].add_metric([], self.writer.pending)
        yield from fam.values()


__all__ = ["CentreMetrics", "LiveCollector", "LoopLag"]
