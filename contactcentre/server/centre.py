"""The live centre as the adapters see it: one object that channels, the agent gateway and the web API hold.

It joins the router (through its ``RouterDriver``), the store (the writer for everything that is logged, a
small thread pool for reads and for the few writes that are not events) and the clock. Adapters never touch
the router's state or the database directly; they

* ``submit`` router inputs (a contact arrived, an agent accepted) — synchronous, never waiting; it returns
  the router's refusal, if it refused;
* ask ``router``'s read methods (``contact``, ``agent``, ``check``, …): frozen values, never its objects;
* ``publish`` facts that are not router inputs (a chat line, an e-mail reply) — logged and fanned out to
  every subscriber exactly like the router's output, so the one event vocabulary carries them too;
* ``subscribe`` to that stream (the chat channel waits for ``MessageSent`` to its customer, the agent
  gateway for ``OfferMade`` to its agent);
* ``signal`` what is not kept (typing, a customer's socket gone or back: ``server/signals.py``) to whichever
  adapter listens (``on_signal``), never calling another adapter directly;
* ``await commit()`` before acknowledging anything they promised to keep (SMTP ``250``, a chat ack);
* ``with atomic():`` around what must be committed together (a stored e-mail and its contact);
* ``await read(fn)`` / ``await write(fn)`` for queries and for rows that are not events (customers, cases).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from contactcentre.config import CentreConfig
from contactcentre.events import AgentAway, ContactClosed, Event, decode, is_input
from contactcentre.server.handoff import Handoff
from contactcentre.store.db import LOST_RACE, reader, write_transaction
from contactcentre.store.eventlog import logged_payloads
from contactcentre.store.ops import CaseStatusFromDisposition

if TYPE_CHECKING:
    from contactcentre.acd import LiveStats, Router, RouterError
    from contactcentre.server.driver import RouterDriver
    from contactcentre.server.signals import Signal
    from contactcentre.store.db import Connection, Engine
    from contactcentre.store.writer import StoreWriter

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_ATTEMPTS = 5
Subscriber = Callable[[list[Event]], None]


class Unavailable(Exception):
    """What an adapter was to promise cannot be made durable now (on an edge: Redis or the router is down, or
    did not answer in time). The person is told to try again (SMTP 451, chat ``unavailable``, HTTP 503)."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a running server listens (what ``serve`` reports once everything is up)."""

    url: str  # the web site (dashboard, /api, /chat widget)
    host: str
    http_port: int
    smtp_port: int | None
    ws_port: int
    database: str
    cti_port: int | None = None  # the simulated switch's CTI link, when calls are taken
    sip_port: int | None = None  # the SIP front door (UDP), when calls are taken and it is on
    cti_host: str | None = None  # where the CTI link listens ([server] cti_host, default host)
    sip_host: str | None = None
    cti_token: str | None = None  # the CTI link's secret (configured, or this run's random one)


class Centre:
    def __init__(
        self,
        config: CentreConfig,
        engine: Engine,
        driver: RouterDriver,
        writer: StoreWriter,
        *,
        readers: int = 4,
        moves_cases: bool = True,
    ) -> None:
        self.config = config
        self.engine = engine
        self.driver = driver
        self.writer = writer
        self.loop = driver.loop
        self.clock = driver.clock
        self._batch_reader = threading.local()  # a reader thread's connection for the batch it runs
        self._readers = Handoff(self.loop, readers, "store-read", around_batch=self._reading_batch)
        # channel name -> adapter with ``async agent_message(contact_id, agent_id, text) -> str``
        self.channels: dict[str, Any] = {}
        # This node's name in a many-process centre (``EdgeCentre``); None when one process is the whole centre.
        self.node_id: str | None = None
        self._signal_listeners: list[Callable[[Signal], None]] = []
        self._case_status = dict(config.dispositions.case_status)
        if self._case_status and moves_cases:  # on the node that writes the log (not an edge: it would twice)
            driver.subscribe(self._dispositions_move_cases)

    # --------------------------------------------------------------------------------------------- router

    @property
    def router(self) -> Router:
        return self.driver.router

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def submit(self, event: Event) -> RouterError | None:
        """Hand one router input over (stamp it with ``now_ms()``); a refused input is logged and dropped, and
        its refusal returned (see ``RouterDriver.submit``)."""
        return self.driver.submit(event)

    def publish(self, events: Iterable[Event]) -> None:
        """Log facts that are not router inputs and fan them out to every subscriber."""
        self.driver.publish(list(events))

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        return self.driver.subscribe(fn)

    def signal(self, signal: Signal) -> None:
        """Hand a signal (``server/signals.py``: nothing logs or keeps it) to every listener, at once."""
        for fn in list(self._signal_listeners):
            try:
                fn(signal)
            except Exception:
                log.exception("signal listener %r failed", fn)

    def on_signal(self, fn: Callable[[Signal], None]) -> Callable[[], None]:
        """Call ``fn(signal)`` with every signal; returns the function that stops it."""
        self._signal_listeners.append(fn)

        def stop() -> None:
            if fn in self._signal_listeners:
                self._signal_listeners.remove(fn)

        return stop

    def _dispositions_move_cases(self, batch: list[Event]) -> None:
        """A wrap-up closed with a code of ``[dispositions] case_status``: its case moves to that status, in
        the commit after the closing event (whose interaction row names the case)."""
        for ev in batch:
            if isinstance(ev, ContactClosed) and ev.disposition in self._case_status:
                status = self._case_status[ev.disposition]
                self.stage(CaseStatusFromDisposition(interaction_id=ev.contact_id, status=status, now_ms=ev.at_ms))

    # ---------------------------------------------------------------------------------------------- store

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """What is submitted or published inside the block is committed in one transaction (no awaits)."""
        with self.writer.atomic():
            yield

    def stage(self, work: Callable[[Connection], None]) -> None:
        """Queue ``work(connection)`` for the store writer's next commit, in order with what is submitted and
        published (rows that go with an event, without a transaction of their own). It shares the writer's
        transaction with other adapters' records: when it raises, the writer runs the commit again with each
        unit in a savepoint of its own, so what it raises is logged and rolled back alone (one bad row never
        holds up everyone's events). A database in trouble (a lost connection, a deadlock, a lock timeout:
        ``OperationalError``) fails the whole commit instead, which the writer then retries with this work in
        it. Raises ``RuntimeError`` once the writer is closed.

        Adapters stage store ops (``store/ops.py``: data an edge node encodes for the router's writer, at the
        moment the record leaves, so an op that gathers takes no more once sent); the router's side may stage any
        callable."""
        self.writer.stage(work)

    async def commit(self, upto: int | None = None) -> None:
        """Return once everything logged so far (or up to ``log_position()`` ``upto``) is durable."""
        if upto is None:
            await self.writer.flush()
        else:
            await self.writer.durable(upto)

    def log_position(self) -> int:
        """The position of the last record handed to the store: ``commit(upto=...)`` waits for it and no more
        (a reader that needs what was logged by now, without forcing a commit for what comes later)."""
        return self.writer.appended

    async def room(self) -> None:
        """Back-pressure for intake: wait while the store writer is far behind."""
        await self.writer.room()

    @contextlib.contextmanager
    def _reading_batch(self) -> Iterator[None]:
        """The reads of one batch share a connection (opened by the first): checking one out of the pool and
        back costs about as much as a short read."""
        try:
            yield
        finally:
            self._drop_batch_reader()

    def _drop_batch_reader(self) -> None:
        conn = getattr(self._batch_reader, "conn", None)
        self._batch_reader.conn = None
        if conn is not None:
            conn.close()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on a read connection in the reader pool."""

        def run() -> T:
            conn = getattr(self._batch_reader, "conn", None)
            if conn is None:
                conn = self._batch_reader.conn = reader(self.engine)
            try:
                return fn(conn, *args)
            except BaseException:  # the next read of the batch gets a fresh connection, whatever state this is in
                self._drop_batch_reader()
                raise

        return await self._readers.run(run)

    def read_now(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on a read connection, blocking the caller: for start-up only (an adapter
        restoring its sessions before any socket is open), never on the loop while it serves."""
        with reader(self.engine) as conn:
            return fn(conn, *args)

    async def write(self, fn: Callable[..., T], *args: Any, attempts: int = WRITE_ATTEMPTS) -> T:
        """``fn(connection, *args)`` in a transaction of its own (customers, cases, users: not events).

        A transaction that lost a race is run again, up to ``attempts`` times: two first contacts from one new
        address at once (the second's insert of the identity conflicts, and on its next run it finds it), or a
        lock the database gave up waiting for. ``fn`` must therefore be safe to run again, which a whole
        transaction rolled back is."""

        def run() -> T:
            with write_transaction(self.engine) as conn:
                return fn(conn, *args)

        for attempt in range(1, attempts + 1):
            try:
                return await self._readers.run(run)
            except LOST_RACE as exc:
                if attempt == attempts:
                    raise
                log.info("store: a write lost a race (%s); running it again", type(exc).__name__)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._readers.close()


# ------------------------------------------------------------------------------------------------ restore


def replay_log(engine: Engine, router: Router, stats: LiveStats | None = None, *, chunk: int = 10_000) -> int:
    """Bring a fresh router to where the logged one was: feed it every logged input, in order, at its own
    time. The router is deterministic, so its state (waiting contacts with their places, open offers,
    agents, timers) is the logged one's. What it says is dropped — that is in the log already — except that
    ``stats`` (if given) re-learns the day from the logged events. Returns the number of inputs replayed."""
    from contactcentre.acd import RouterError

    replayed = 0
    with engine.connect() as conn:
        for payload in logged_payloads(conn, chunk):
            ev = decode(payload)
            if stats is not None:
                stats.apply(ev)
            if not is_input(ev):
                continue
            try:
                router.handle(ev)
            except RouterError as exc:  # a config change since the log was written: say so, carry on
                log.warning("restore: the logged %s is refused now: %s", type(ev).__name__, exc)
            replayed += 1
    return replayed


def disconnected_agents(router: Router, now_ms: int) -> list[Event]:
    """After a restart no agent is connected: each one logged in and not away is put away, so the router
    offers nothing to a console that is not there (their offers fall through; contacts keep their place).
    An agent who reconnects says ``ready`` again; contacts they were handling stay theirs."""
    out: list[Event] = []
    for a in router.agent_list():
        if a.ready:
            out.append(AgentAway(at_ms=now_ms, agent_id=a.id, reason="disconnected"))
    return out
