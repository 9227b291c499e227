"""The one wiring place: the loop, the reactor, the store, the router, the web site and the traffic.

``RouterDriver`` is the live counterpart of the simulator's event heap. It feeds the pure router, fans its
output out (event log, live statistics, subscribers) and keeps exactly one ``loop.call_at`` armed for the
router's next deadline. Nothing in it sleeps or polls, and nothing on the routing path waits for the database.

``run_demo`` builds a whole live centre on one asyncio loop: Twisted's asyncio reactor is installed on that
loop before anything else from ``twisted.internet`` is imported, and the web site is served by it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.acd import Router, RouterError
from contactcentre.acd.stats import LiveStats
from contactcentre.acd.strategies import score_words
from contactcentre.clock import Clock, LoopClock
from contactcentre.config import CentreConfig
from contactcentre.events import (
    AgentLoggedIn,
    AgentSkillsChanged,
    Event,
    OfferAccepted,
    OfferCancelled,
    OfferExpired,
    OfferMade,
    OfferRejected,
)

if TYPE_CHECKING:
    from contactcentre.centre import Centre
    from contactcentre.store.writer import StoreWriter

log = logging.getLogger(__name__)

Subscriber = Callable[[list[Event]], None]

_OUTCOMES: dict[type, str] = {
    OfferAccepted: "accepted",
    OfferRejected: "rejected",
    OfferExpired: "expired",
    OfferCancelled: "cancelled",
}


class RouterDriver:
    """Drives a ``Router`` on an asyncio loop.

    ``submit(event)`` hands one input (stamped by the caller with ``clock.now_ms()``) to the router and
    dispatches what came out: to the event log, to ``LiveStats``, to the recent-decision list and to every
    subscriber, in that order. A refused input (``RouterError``) is logged and dropped. Subscribers may
    submit from their callback; such inputs are handled after the current dispatch finishes, so every
    subscriber sees every batch in order.
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
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None
        self._inbox: deque[Event] = deque()
        self._outbox: deque[list[Event]] = deque()  # published during a dispatch
        self._dispatching = False
        self._serving: dict[str, list[str]] | None = None
        self._live_cache_ms = live_cache_ms
        self._live_cached: tuple[int, bytes] | None = None

    # -------------------------------------------------------------------------------------------- inputs

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(events)`` with every batch the router produces; returns an unsubscribe function."""
        self.subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

        return unsubscribe

    def submit(self, event: Event) -> None:
        if self.closed:
            log.debug("driver closed; dropped %s", type(event).__name__)
            return
        self._inbox.append(event)
        if not self._dispatching:  # else a subscriber submitted from its callback: handled after this batch
            self._run(None)

    def publish(self, events: list[Event]) -> None:
        """Log and fan out facts that are not router inputs (chat lines, e-mail replies). Published while a
        batch is being dispatched, they follow that batch."""
        if not events or self.closed:
            return
        self._outbox.append(events)
        if not self._dispatching:
            self._run(None)

    def _on_deadline(self) -> None:
        self._timer = None
        self._armed_for = None
        if not self.closed:
            self._run(self.clock.now_ms())

    def _run(self, advance_to: int | None) -> None:
        self._dispatching = True
        try:
            if advance_to is not None and advance_to >= self.router.now_ms:
                self._dispatch(self.router.advance(advance_to))
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
                    log.info("refused %s: %s", type(ev).__name__, exc)
                    continue
                self.handled += 1
                self._dispatch(out)
        finally:
            self._dispatching = False
            self._rearm()

    def _rearm(self) -> None:
        """Keep exactly one ``call_at`` armed, for the router's next deadline."""
        if self.closed:
            return
        deadline = self.router.next_deadline()
        if deadline == self._armed_for and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = deadline
        if deadline is None:
            return
        loop_time = getattr(self.clock, "loop_time", None)
        if loop_time is not None:
            when = loop_time(deadline)
        else:  # any other clock: measure the distance from now
            when = self.loop.time() + max(0, deadline - self.clock.now_ms()) / 1000
        self._timer = self.loop.call_at(when, self._on_deadline)

    # ------------------------------------------------------------------------------------------- fan-out

    def _dispatch(self, out: list[Event]) -> None:
        if not out:
            return
        self.emitted += len(out)
        if self.writer is not None:
            self.writer.append(out)
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
            elif kind is AgentSkillsChanged or kind is AgentLoggedIn:
                self._serving = None
        for fn in list(self.subscribers):
            try:
                fn(out)
            except Exception:
                log.exception("subscriber %r failed", fn)

    def close(self) -> None:
        """Stop: disarm the timer and refuse further inputs. (The writer is closed by its owner.)"""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = None

    # -------------------------------------------------------------------------------------------- views

    def serving(self) -> dict[str, list[str]]:
        """Agents whose skills meet each queue's base requirement (cached until skills change)."""
        if self._serving is None:
            self._serving = {q.name: self.router.agents_serving(q.name) for q in self.router.config.queues}
        return self._serving

    def agent_rows(self) -> list[dict[str, Any]]:
        rows = []
        for a in self.router.agents.values():
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


# ------------------------------------------------------------------------------------------------ reactor


def install_reactor(loop: asyncio.AbstractEventLoop) -> Any:
    """Install Twisted's asyncio reactor on ``loop`` (once per process) and return it.

    This must run before anything imports ``twisted.internet.reactor``; importing it first would install
    Twisted's default (epoll) reactor, which knows nothing of the asyncio loop.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor

    if getattr(reactor, "_asyncioEventloop", None) is not loop:
        raise RuntimeError(
            "a Twisted reactor was installed before the runtime could install the asyncio reactor on its loop"
        )
    return reactor


_twisted_logging_started = False


def _route_twisted_logging() -> None:
    """Send Twisted's log events (e.g. errors while rendering a page) to Python logging."""
    global _twisted_logging_started
    if _twisted_logging_started:
        return
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    _twisted_logging_started = True


# --------------------------------------------------------------------------------------------------- demo


class DemoError(Exception):
    """The demo cannot start (database path unusable, port taken); the message says why."""


@dataclass(frozen=True)
class DemoInfo:
    url: str
    host: str
    port: int
    database_path: Path


@dataclass(frozen=True)
class DemoSummary:
    arrived: int
    events_logged: int
    refused: int


_SQLITE_MAGIC = b"SQLite format 3\x00"


def fresh_database(path: str | Path) -> Path:
    """Remove a previous demo database (and its WAL files) so the run starts from nothing.

    Refuses to delete anything that is not an SQLite database, so a mistyped ``--database`` cannot destroy
    an unrelated file."""
    path = Path(path)
    if path.is_dir():
        raise DemoError(f"{path}: is a directory, not a database file")
    if path.exists():
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise DemoError(f"{path}: exists and is not an SQLite database; not overwriting it")
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    if not path.parent.is_dir():
        raise DemoError(f"{path}: directory {path.parent} does not exist")
    return path


async def run_demo(
    config: CentreConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_path: str | Path = "contactcentre-demo.sqlite",
    seed: int | None = None,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    *,
    ready: Callable[[DemoInfo], None] | None = None,
    stop: asyncio.Event | None = None,
) -> DemoSummary:
    """Run a live demo centre until SIGINT/SIGTERM, ``duration_s`` or ``stop`` is set.

    ``ready`` is called once the site listens (with the real port when ``port`` is 0).
    """
    loop = asyncio.get_running_loop()
    reactor = install_reactor(loop)  # before any other twisted.internet import (web, simulator)
    from twisted.internet.error import CannotListenError

    from contactcentre.store.db import DatabaseError, open_store
    from contactcentre.store.writer import StoreWriter
    from contactcentre.web import DashboardSite
    from simulator.demo_customers import seed_demo_customers
    from simulator.demo_traffic import DemoTraffic

    if config.demo is None or not config.demo.traffic:
        raise DemoError("the configuration has no [demo] section with [[demo.traffic]] entries")
    if rate_scale <= 0:
        raise DemoError(f"--rate-scale must be > 0, not {rate_scale}")
    _route_twisted_logging()
    db = fresh_database(database_path)
    try:
        engine = open_store(db)  # a fresh file, migrated to the current schema
    except DatabaseError as exc:
        raise DemoError(str(exc)) from None
    clock = LoopClock(loop)
    with engine.begin() as conn:  # the demo's customers, so contacts land on them and screen-pop shows them
        seed_demo_customers(conn, clock.now_ms(), tuple(config.tiers))
    writer = StoreWriter(engine, loop=loop)
    router = Router(config, start_ms=clock.now_ms())
    stats = LiveStats(short_abandon_ms=round(config.routing.short_abandon_s * 1000))
    driver = RouterDriver(router, clock, loop, stats=stats, writer=writer)
    site = DashboardSite(driver)
    traffic: DemoTraffic | None = None
    listening = None
    stop = stop or asyncio.Event()
    signals: list[int] = []
    timeout: asyncio.TimerHandle | None = None
    try:
        try:
            listening = reactor.listenTCP(port, site, interface=host)
        except CannotListenError as exc:
            raise DemoError(f"cannot listen on {host}:{port}: {exc.socketError}") from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
                pass
        if duration_s is not None:
            timeout = loop.call_later(duration_s, stop.set)
        traffic = DemoTraffic(driver, config, seed=config.demo.seed if seed is None else seed, rate_scale=rate_scale)
        traffic.start()
        real_port = listening.getHost().port
        if ready is not None:
            ready(DemoInfo(f"http://{_url_host(host)}:{real_port}/", host, real_port, db))
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if timeout is not None:
            timeout.cancel()
        if traffic is not None:
            traffic.stop()
        if listening is not None:
            await listening.stopListening().asFuture(loop)
        await site.close_connections()
        driver.close()
        await writer.close()
    return DemoSummary(arrived=router.arrived, events_logged=writer.committed, refused=driver.refused)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -------------------------------------------------------------------------------------------------- serve


class ServeError(Exception):
    """The server cannot start (database unusable, port taken); the message says why."""


async def open_centre(
    config: CentreConfig,
    database_url: str | Path | None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    create_if_empty: bool = True,
) -> Centre:
    """Open the store, restore the router from its log and return the running centre (no adapters).

    The log's inputs are replayed into a fresh router at their own times (``centre.replay_log``), then the
    router is advanced to now (offers that expired while the server was down fall through, SLA timers fire)
    and every agent who was ready is put away as ``disconnected`` until their console comes back. Contacts
    that were waiting keep their place; contacts an agent was handling stay theirs.
    """
    from sqlalchemy import inspect

    from contactcentre.centre import Centre, disconnected_agents, first_logged_ms, replay_log
    from contactcentre.store.db import DatabaseError, check_current, connect, migrate
    from contactcentre.store.writer import StoreWriter

    loop = loop or asyncio.get_running_loop()
    try:
        engine = connect(database_url)
    except DatabaseError as exc:
        raise ServeError(str(exc)) from None
    try:
        if create_if_empty and not inspect(engine).get_table_names():
            migrate(engine)
        check_current(engine)
        with engine.connect() as conn:
            first = first_logged_ms(conn)
    except DatabaseError as exc:
        engine.dispose()
        raise ServeError(str(exc)) from None
    except Exception as exc:
        engine.dispose()
        raise ServeError(f"database {engine.url.render_as_string(hide_password=True)}: {exc}") from None
    clock = LoopClock(loop)
    router = Router(config, start_ms=first if first is not None else clock.now_ms())
    stats = LiveStats(short_abandon_ms=round(config.routing.short_abandon_s * 1000))
    replayed = replay_log(engine, router, stats)
    if router.now_ms > clock.now_ms():  # the wall clock went back since the log was written
        log.warning("restore: the log ends %d ms in the future; the clock starts there", router.now_ms - clock.now_ms())
        clock = LoopClock(loop, not_before_ms=router.now_ms)
    writer = StoreWriter(engine, loop=loop)
    driver = RouterDriver(router, clock, loop, stats=stats, writer=writer)
    centre = Centre(config, engine, driver, writer)
    driver._run(clock.now_ms())  # what fell due while the server was down
    for ev in disconnected_agents(router, clock.now_ms()):
        driver.submit(ev)
    if replayed:
        waiting = sum(1 for c in router.contacts.values() if c.state == "queued")
        log.warning("restore: %d logged inputs replayed; %d contacts waiting", replayed, waiting)
    return centre


async def close_centre(centre: Centre) -> None:
    """Stop the router, commit everything pending, release the database."""
    centre.driver.close()
    try:
        await centre.writer.close()
    finally:
        centre.close()
        centre.engine.dispose()
