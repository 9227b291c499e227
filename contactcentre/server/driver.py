"""``RouterDriver``: the live counterpart of the simulator's event heap.

It feeds the pure router, fans its output out (store writer, live statistics, subscribers) and keeps exactly
one ``loop.call_at`` armed for the router's next deadline. Nothing in it sleeps or polls, and nothing on the
routing path waits for the database. The runtime builds one; the centre, the web site and the adapters use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from contactcentre.acd import LiveStats, Router, RouterError, score_words
from contactcentre.deadlines import DeadlineTimer, on_loop
from contactcentre.events import (
    Event,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
    is_input,
)
from contactcentre.server.clock import Clock
from contactcentre.server.wire import Advance

if TYPE_CHECKING:
    from contactcentre.store.writer import StoreWriter

log = logging.getLogger(__name__)

Subscriber = Callable[[list[Event]], None]

_OUTCOMES: dict[type, str] = {
    OfferAccepted: "accepted",
    OfferRejected: "rejected",
    OfferExpired: "expired",
    OfferCancelled: "cancelled",
}


class Tap(Protocol):
    """Told what the driver did, in order: enough for a replica to do the same (``server/wire.py``)."""

    def advanced(self, to_ms: int) -> None: ...
    def handled(self, event: Event) -> None: ...
    def refused(self, event: Event, error: RouterError) -> None: ...
    def dispatched(self, events: list[Event]) -> None: ...
    def idle(self) -> None:
        """The driver finished a run (of a submit, a publish or a deadline) and holds nothing more."""


class RouterDriver:
    """Drives a ``Router`` on an asyncio loop.

    ``submit(event)`` hands one input (stamped by the caller with ``clock.now_ms()``) to the router and
    dispatches what came out: to the event log, to ``LiveStats``, to the recent-decision list and to every
    subscriber, in that order. A refused input (``RouterError``) is logged, counted and dropped, and ``submit``
    returns the refusal, so a caller that answers a person says why. Subscribers may submit from their
    callback; such inputs are handled after the current dispatch finishes, so every subscriber sees every
    batch in order (their refusal is only logged: ``submit`` has returned by then).
    """

    def __init__(
        self,
        router: Router,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        *,
        stats: LiveStats | None = None,
        writer: StoreWriter | None = None,
        recent: int = 20,
        live_cache_ms: int = 250,
    ) -> None:
        self.router = router
        self.clock = clock
        self.loop = loop
        self.stats = stats if stats is not None else LiveStats()
        self.writer = writer
        self.subscribers: list[Subscriber] = []
        self.decisions: deque[OfferMade] = deque(maxlen=recent)
        self.outcomes: dict[str, str] = {}  # offer id -> outcome, for the offers in ``decisions``
        self.handled = 0  # inputs accepted
        self.refused = 0  # inputs the router refused
        self.emitted = 0  # events dispatched (inputs echoed + derived)
        self.closed = False
        self._deadline = DeadlineTimer(on_loop(loop, clock), self._on_deadline)
        self._inbox: deque[Event] = deque()
        self._outbox: deque[list[Event]] = deque()  # published during a dispatch
        self._dispatching = False
        self._live_cache_ms = live_cache_ms
        self._live_cached: tuple[int, bytes] | None = None
        # What the router did, as it did it (``Tap``): the router node of a many-process centre records it for
        # the replicas (server/router_node.py). None: nobody listens, and nothing is recorded.
        self.tap: Tap | None = None

    # -------------------------------------------------------------------------------------------- inputs

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(events)`` with every batch the router produces; returns an unsubscribe function."""
        self.subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

        return unsubscribe

    def submit(self, event: Event) -> RouterError | None:
        """Hand ``event`` to the router; the router's refusal of it, or None if it was taken (or dropped by a
        closed driver, or queued behind the batch a subscriber submitted it from)."""
        if self.closed:
            log.debug("driver closed; dropped %s", type(event).__name__)
            return None
        self._inbox.append(event)
        if not self._dispatching:  # else a subscriber submitted from its callback: handled after this batch
            return self._run(None, event)
        return None

    def catch_up(self) -> None:
        """Run whatever timers are due by now (an adapter about to act on router state it must not find
        stale: an offer past its deadline whose expiry the loop has not yet run)."""
        if not self.closed and not self._dispatching:
            self._run(self.clock.now_ms())

    def publish(self, events: list[Event]) -> None:
        """Log and fan out facts that are not router inputs (chat lines, e-mail replies). Published while a
        batch is being dispatched, they follow that batch."""
        if not events or self.closed:
            return
        self._outbox.append(events)
        if not self._dispatching:
            self._run(None)

    def _on_deadline(self, _due: int) -> None:
        if not self.closed:
            self._run(self.clock.now_ms())

    def _run(self, advance_to: int | None, submitted: Event | None = None) -> RouterError | None:
        """Advance, then handle the inbox; returns the refusal of ``submitted`` if the router refused it."""
        refusal = None
        self._dispatching = True
        try:
            if advance_to is not None and advance_to >= self.router.now_ms:
                out = self.router.advance(advance_to)
                if self.tap is not None:
                    self.tap.advanced(advance_to)
                self._dispatch(out)
            inbox = self._inbox
            while inbox or self._outbox:
                while self._outbox:
                    self._dispatch(self._outbox.popleft())
                if not inbox:
                    break
                ev = inbox.popleft()
                try:
                    out = self.router.handle(ev)
                except RouterError as exc:
                    self.refused += 1
                    if ev is submitted:
                        refusal = exc
                    log.info("refused %s: %s", type(ev).__name__, exc)
                    if self.tap is not None:
                        self.tap.refused(ev, exc)
                    continue
                self.handled += 1
                if self.tap is not None:
                    self.tap.handled(ev)
                self._dispatch(out)
        finally:
            self._dispatching = False
            self._rearm()
            if self.tap is not None:
                self.tap.idle()
        return refusal

    def _rearm(self) -> None:
        """Keep exactly one call armed, for the router's next deadline."""
        if not self.closed:
            self._deadline.arm(self.router.next_deadline())

    # ------------------------------------------------------------------------------------------- fan-out

    def _dispatch(self, out: list[Event]) -> None:
        if not out:
            return
        self.emitted += len(out)
        if self.writer is not None:
            self.writer.append(out)
        if self.tap is not None:
            self.tap.dispatched(out)
        self.stats.apply_all(out)
        outcomes = self.outcomes
        for ev in out:
            kind = type(ev)
            if kind is OfferMade:
                if len(self.decisions) == self.decisions.maxlen:
                    outcomes.pop(self.decisions[0].offer_id, None)
                self.decisions.append(ev)  # type: ignore[arg-type]
                outcomes[ev.offer_id] = "open"  # type: ignore[attr-defined]
            elif kind in _OUTCOMES:
                oid = ev.offer_id  # type: ignore[attr-defined]
                if oid in outcomes:
                    outcomes[oid] = _OUTCOMES[kind]
        for fn in list(self.subscribers):
            try:
                fn(out)
            except Exception:
                log.exception("subscriber %r failed", fn)

    def close(self) -> None:
        """Stop: disarm the timer and refuse further inputs. (The writer is closed by its owner.)"""
        self.closed = True
        self._deadline.cancel()

    # -------------------------------------------------------------------------------------------- views

    def serving(self) -> dict[str, list[str]]:
        """Agents whose skills meet each queue's base requirement (the router caches them until skills change)."""
        return {q.name: self.router.serving_agents(q.name) for q in self.router.config.queues}

    def agent_rows(self) -> list[dict[str, Any]]:
        rows = []
        for a in self.router.agent_list():
            rows.append(
                {
                    "id": a.id,
                    "name": a.name,
                    "state": a.state,
                    "reason": a.state_reason,
                    "since_ms": a.state_since_ms,
                    "load": {ch: n for ch, n in a.load.items() if n},
                    "capacity": {ch: n for ch, n in a.capacity.items() if n},
                    "skills": a.skills,
                    "handled_today": a.handled_today,
                }
            )
        return rows

    def decision_rows(self) -> list[dict[str, Any]]:
        """The latest offers, newest first, each with its explanation and what became of it."""
        out = []
        for ev in reversed(self.decisions):
            why = ev.why
            out.append(
                {
                    "at_ms": ev.at_ms,
                    "offer_id": ev.offer_id,
                    "contact_id": ev.contact_id,
                    "agent_id": ev.agent_id,
                    "queue": ev.queue,
                    "channel": ev.channel,
                    "expires_ms": ev.expires_ms,
                    "outcome": self.outcomes.get(ev.offer_id, "open"),
                    "why": {
                        "trigger": why.trigger,
                        "strategy": why.strategy,
                        "requirement": why.requirement,
                        "step": why.step,
                        "considered": why.considered,
                        "filters": why.filters,
                        "tie_break": why.tie_break,
                        "candidates": [
                            {
                                "id": c.id,
                                "score": c.score,
                                "note": c.note or score_words(why, c.score, ev.at_ms),
                            }
                            for c in why.candidates
                        ],
                    },
                }
            )
        return out

    def live(self, now_ms: int | None = None) -> dict[str, Any]:
        """Everything the dashboard shows, as plain data."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        cfg = self.router.config
        return {
            "at_ms": now,
            "centre": cfg.name,
            "timezone": cfg.timezone,
            "queues": [
                {"name": q.name, "description": q.description, "channels": list(q.channels)} for q in cfg.queues
            ],
            "snapshot": self.stats.snapshot(now, serving=self.serving()),
            "agents": self.agent_rows(),
            "decisions": self.decision_rows(),
            "counters": {
                "handled": self.handled,
                "refused": self.refused,
                "emitted": self.emitted,
                "logged": self.writer.committed if self.writer is not None else None,
            },
        }

    def live_json(self) -> bytes:
        """``live()`` as JSON, computed at most once per ``live_cache_ms`` however many dashboards poll."""
        now = self.clock.now_ms()
        cached = self._live_cached
        if cached is not None and 0 <= now - cached[0] < self._live_cache_ms:
            return cached[1]
        body = msgspec.json.encode(self.live(now))
        self._live_cached = (now, body)
        return body


class FollowerDriver(RouterDriver):
    """A replica of the active router, in another process (an edge, or the standby router).

    It never decides: it applies what the active router did (``apply``: the ``Handle`` and ``Advance``
    operations of an output record, ``server/wire.py``) to its own ``Router`` and fans the events the router
    sent out to its subscribers, exactly as ``RouterDriver`` does with its own output. Its router is then
    where the active one was after that record, so the adapters' reads (``router.contact``, ``check``) and the
    dashboards' views work on any node. It arms no deadline: the active router's timers arrive as ``Advance``.
    """

    def submit(self, event: Event) -> RouterError | None:
        raise RuntimeError("a replica takes no inputs: they go to the active router (EdgeCentre.submit)")

    def publish(self, events: list[Event]) -> None:
        raise RuntimeError("a replica publishes nothing: facts go to the active router (EdgeCentre.publish)")

    def catch_up(self) -> None:
        """Nothing to do: the replica's timers are the active router's, and they arrive as ``Advance``."""

    def _rearm(self) -> None:
        pass

    def apply(self, ops: list[Any], events: list[Event]) -> None:
        """Do what the active router did (``ops``), then fan out what it said (``events``)."""
        router = self.router
        for op in ops:
            if type(op) is Advance:
                if op.to_ms >= router.now_ms:
                    router.advance(op.to_ms)
                continue
            try:
                router.handle(op.event)
            except RouterError as exc:  # the replica has diverged (a different configuration?): say it loudly
                log.error("replica: the active router took %s but this replica refuses it: %s", op.event, exc)
                continue
            self.handled += 1
        if events:
            self._dispatch(events)

    def replay(self, events: list[Event]) -> None:
        """Events read back from the store's log (a gap in the stream): their inputs go to the router at their
        own time, as at a restart (``centre.replay_log``), and all of them to the subscribers."""
        router = self.router
        for ev in events:
            if is_input(ev):
                try:
                    router.handle(ev)
                except RouterError as exc:
                    log.warning("replica: the logged %s is refused now: %s", type(ev).__name__, exc)
        if events:
            self._dispatch(events)
