"""The store's one writer: events, interactions and messages group-committed off the routing path.

``append`` only puts events on a list and never waits, so the router's output can be handed over from the
routing path. A background task commits what is pending once ``batch_size`` events wait or ``max_delay_s``
after the first of them, whichever comes first, in one transaction on one writer thread. Nothing polls:
the task sleeps on an ``asyncio.Event`` set by ``append`` (batch full), by a ``loop.call_later`` timer
(deadline) or by a caller who needs durability.

Durability is awaitable per record: ``append`` returns a sequence number, ``await durable(seq)`` returns
once that record is committed (and raises if its commit failed). A channel that must not acknowledge before
its message is safe (an inbound e-mail before SMTP ``250``, a chat message before its ack) calls ``await
write(events)``, which wakes the writer at once instead of waiting for the deadline.

Back-pressure: the routing path is never refused (a dropped event would be a lost contact), but adapters
that take new work from outside ``await room()`` first; it waits while more than ``max_pending`` events are
uncommitted, so a slow database slows intake at the edge (SMTP, chat) instead of growing memory without
bound.

A failed commit stops the writer: the events stay in memory, every waiter gets the error, and nothing after
them is written out of order. ``retry()`` tries again (for a database that came back).

Event ids: the writer numbers the log itself (``events.id``), in append order, starting after the largest id
stored when it is created (or at ``first_event_id``), so a caller knows each event's id as soon as it has
appended it (``last_event_id``): a router says in what it publishes which log positions it holds. A retried
or re-run commit writes the same ids again, so the log is dense and in append order whatever failed. A commit
whose outcome was lost (the connection dropped during COMMIT) is looked for before it is tried again: if its
first event is stored under its id, it went through and is not written twice.

Fencing (one centre, several router processes): a writer built with ``fence=token`` checks that the store
still holds its fencing token as the first statement of every commit transaction (``fence.check_fence``). When
it does not, another router has taken over: the writer stops for good (no retry, further appends refused), and
every waiter gets ``Fenced``.

Staged work (``stage``: rows other adapters add to the shared transaction) must not take everyone's events
down with it when it fails, so each unit is isolated — but only when one has failed: a commit runs them plain
first, and if one raises, rolls the whole transaction back and runs it again with each unit in a savepoint of
its own (two statements a unit, on every commit, that almost never roll anything back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DataError, OperationalError

from contactcentre.events import Event, decode, scrub
from contactcentre.store import projection
from contactcentre.store.db import write_transaction
from contactcentre.store.fence import Fenced, check_fence, record_inputs
from contactcentre.store.fence import last_event_id as stored_last_event_id
from contactcentre.store.schema import events as events_table

log = logging.getLogger(__name__)

Work = Callable[[Connection], None]
MAX_BATCHES_PER_COMMIT = 10


class Staged:
    """A unit of work whose failure is its own (``StoreWriter.stage``): logged and rolled back alone."""

    __slots__ = ("work",)

    def __init__(self, work: Work) -> None:
        self.work = work

    def __repr__(self) -> str:
        return repr(self.work)


class InputMark:
    """A router input record applied (``StoreWriter.mark_input``): a row of ``router_inputs``, written in the
    same transaction as the record's events, with every other mark of the commit in one statement."""

    __slots__ = ("at_ms", "input_id", "last_event_id")

    def __init__(self, input_id: str, last_event_id: int, at_ms: int) -> None:
        self.input_id = input_id
        self.last_event_id = last_event_id
        self.at_ms = at_ms


class _StagedFailed(Exception):
    """A staged unit raised in a commit run without savepoints: the commit is run again, isolating each."""


class StoreWriter:
    """Group-committing writer; create it inside the running loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 1000,
        max_delay_s: float = 0.05,
        max_pending: int = 50_000,
        retry_after_s: float | None = 1.0,
        loop: asyncio.AbstractEventLoop | None = None,
        fence: int | None = None,
        first_event_id: int | None = None,
    ) -> None:
        """``fence``: the fencing token every commit checks (None: no check, one process owns the store).
        ``first_event_id``: the id of the first event appended (None: one past the largest stored, read here,
        synchronously: a writer is made at start-up or at a takeover, before anything is routed)."""
        if batch_size < 1 or max_delay_s < 0 or max_pending < batch_size:
            raise ValueError("need batch_size >= 1, max_delay_s >= 0 and max_pending >= batch_size")
        self.engine = engine
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.max_pending = max_pending
        self.loop = loop or asyncio.get_running_loop()
        self.fence = fence
        if first_event_id is None:
            with engine.connect() as conn:
                first_event_id = stored_last_event_id(conn) + 1
        self.last_event_id = first_event_id - 1  # the id of the last event appended so far
        self._committed_event_id = self.last_event_id  # ... and committed: the next commit numbers from here
        self._fenced = False
        self.appended = 0  # records handed to append() so far; a record's sequence number is its count
        self.committed = 0  # records committed so far
        self.commits = 0
        self._pending: list[Event | Work] = []
        self.retry_after_s = retry_after_s  # None: only retry() tries a failed batch again
        self._failures = 0
        self._in_doubt = False  # the last commit failed: it may have gone through all the same
        self._doubt_len = 0  # ... and held this many records
        self._retry_timer: asyncio.TimerHandle | None = None
        self._atomic_depth = 0
        self._unsplittable: list[tuple[int, int]] = []  # (first, last) record numbers of atomic groups
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._deadline: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closing = False
        self._error: BaseException | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._task = self.loop.create_task(self._run(), name="store-writer")

    # ------------------------------------------------------------------------------------------ callers

    @property
    def pending(self) -> int:
        return self.appended - self.committed

    @property
    def congested(self) -> bool:
        return self.pending > self.max_pending

    @property
    def error(self) -> BaseException | None:
        return self._error

    def append(self, records: Iterable[Event | Work]) -> int:
        """Queue events (and units of work: ``fn(connection)`` run in the same transaction, in order);
        returns the sequence number of the last record queued so far."""
        if self._fenced:
            raise self._error  # type: ignore[misc]
        if self._closing:
            raise RuntimeError("the store writer is closed")
        pending = self._pending
        before = len(pending)
        pending.extend(records)
        added = len(pending) - before
        if not added:
            return self.appended
        self.appended += added
        for i in range(before, len(pending)):
            if isinstance(pending[i], Event):
                self.last_event_id += 1
        if self.pending > self.max_pending:
            self._room.clear()
        if len(pending) >= self.batch_size:
            self._wake.set()
        elif before == 0 and self._deadline is None and self._error is None:
            self._deadline = self.loop.call_later(self.max_delay_s, self._wake.set)
        return self.appended

    def mark_input(self, input_id: str, at_ms: int) -> int:
        """Note that the router applied input record ``input_id`` (``store.fence.record_inputs``): committed with
        what was appended before it, so a router that takes over knows the record was applied exactly when its
        events are in the log. Marks do not split the commit's runs of events (each run is projected with
        statements of its own)."""
        return self.append([InputMark(input_id, self.last_event_id, at_ms)])  # type: ignore[list-item]

    def stage(self, work: Work) -> int:
        """Queue ``work(connection)`` like ``append``, but as a unit that fails alone: what it raises is logged
        and its writes rolled back, and the commit goes on without them. A database in trouble
        (``OperationalError``) fails the whole commit instead, which is then retried with the unit in it."""
        return self.append([Staged(work)])

    async def durable(self, seq: int) -> None:
        """Return once record number ``seq`` (from ``append``) is committed; re-raise a failed commit."""
        if self.committed >= seq:
            return
        if self._error is not None:
            raise self._error
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append((seq, fut))
        self._wake.set()  # someone is waiting: don't hold the batch for the deadline
        await fut

    async def write(self, records: Iterable[Event | Work]) -> None:
        """Append and wait until committed: for acknowledgements that promise the record is safe."""
        await self.durable(self.append(records))

    async def flush(self) -> None:
        """Wait until everything appended so far is committed."""
        await self.durable(self.appended)

    async def room(self) -> None:
        """Wait while the writer is more than ``max_pending`` records behind (back-pressure for intake)."""
        while self.pending > self.max_pending:
            if self._error is not None:
                raise self._error
            self._room.clear()
            await self._room.wait()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Everything appended inside the block is committed in one transaction (never split by the commit
        size bound): a stored e-mail and the contact it creates are both there after a crash, or neither.
        The block must not await: the writer commits only between the loop's steps."""
        start = self.appended + 1
        self._atomic_depth += 1
        try:
            yield
        finally:
            self._atomic_depth -= 1
            if self._atomic_depth == 0 and self.appended > start:
                self._unsplittable.append((start, self.appended))

    def _cut(self, size: int) -> int:
        """How many pending records the next commit takes: ``size``, moved past any group it would split."""
        base = self.committed
        self._unsplittable = [(a, b) for a, b in self._unsplittable if b > base]
        end = base + size
        for a, b in self._unsplittable:
            if a <= end < b:
                end = b
        return end - base

    def retry(self) -> None:
        """After a failed commit: try the held records again."""
        if self._error is None or self._fenced:
            return
        log.warning("store writer: retrying %d held records", len(self._pending))
        self._error = None
        self._wake.set()

    async def close(self) -> None:
        """Commit what is pending, stop the task and release the database (raises a failed commit)."""
        if self._closing:
            await asyncio.shield(self._task)
            return
        self._closing = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        if self._error is not None and not self._fenced:  # one last attempt for what a failed commit held
            self._error = None
        self._wake.set()
        try:
            await self._task
        finally:
            self._thread.shutdown(wait=True)
            self.engine.dispose()
        if self._error is not None:
            raise self._error

    # ---------------------------------------------------------------------------------------- the task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._pending and self._error is None:
                # Bounded, so a backlog becomes several commits and a caller awaiting an early record
                # (an SMTP 250) waits for one bounded transaction, not for the whole backlog.
                cap = self._cut(self.batch_size * MAX_BATCHES_PER_COMMIT)
                if self._in_doubt:
                    # The batch whose commit may have gone through is retried alone, exactly as it was: what
                    # came after it is a batch of its own, which its check must never vouch for.
                    cap = self._doubt_len
                batch, self._pending = self._pending[:cap], self._pending[cap:]
                try:
                    await self.loop.run_in_executor(self._thread, self._commit, batch)
                except Fenced as exc:
                    # Another router writes now: trying again could only fail again, or worse, so stop for good.
                    log.error("store writer: %s; stopping with %d records unwritten", exc, self.pending)
                    self._error = exc
                    self._fenced = True
                    self._pending[:0] = batch
                except Exception as exc:
                    log.exception("store writer: a commit of %d records failed; holding them", len(batch))
                    self._error = exc
                    self._in_doubt = True
                    self._doubt_len = len(batch)
                    self._pending[:0] = batch  # keep order: the failed batch goes first on retry
                    if self.retry_after_s is not None and not self._closing:
                        # A database that hiccuped (a restart, a full disk freed) is tried again, backing off.
                        delay = min(self.retry_after_s * 2 ** min(self._failures, 6), 60.0)
                        self._failures += 1
                        self._retry_timer = self.loop.call_later(delay, self.retry)
                else:
                    self.committed += len(batch)
                    self._committed_event_id += sum(1 for r in batch if isinstance(r, Event))
                    self.commits += 1
                    self._failures = 0
                    self._in_doubt = False
            self._settle_waiters()
            if self.pending <= self.max_pending or self._error is not None:
                self._room.set()
            if self._closing and (not self._pending or self._error is not None):
                return
            if self._pending and self._error is None:
                if len(self._pending) >= self.batch_size or self._closing or self._waiters:
                    self._wake.set()
                elif self._deadline is None:
                    self._deadline = self.loop.call_later(self.max_delay_s, self._wake.set)

    def _settle_waiters(self) -> None:
        keep = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self.committed >= target:
                fut.set_result(None)
            elif self._error is not None:
                fut.set_exception(self._error)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def _commit(self, records: list[Event | Work]) -> None:
        """One transaction: runs of events folded and written together, work items in their place.

        A staged unit that fails has the transaction run again with every unit isolated (see the module's
        doc). A string no database takes (a lone surrogate, a NUL for PostgreSQL) that slipped past an adapter
        would otherwise fail this commit and hold everyone's records: the batch is then written again with
        every event's strings cleaned, so one client's bad byte costs a character, not the centre."""
        if self._in_doubt and self._went_through(records):
            log.warning("store writer: the commit that failed had gone through; not writing it again")
            return
        try:
            try:
                self._transaction(records, isolate=False)
            except _StagedFailed:
                self._transaction(records, isolate=True)
        except (UnicodeError, ValueError, DataError) as exc:
            log.warning("store writer: unstorable text in a batch (%s); writing it cleaned", exc)
            self._transaction([scrub(r) if isinstance(r, Event) else r for r in records], isolate=True)

    def _went_through(self, records: list[Event | Work]) -> bool:
        """Whether the failed commit of ``records`` went through after all: its last event is stored, whole, under
        the id it was to have (one transaction wrote all of it or none). A batch without events cannot tell and
        is written again (its input marks are written unless taken). A fenced writer is refused here too: a
        successor's events at those ids must never vouch for ours."""
        logged = [r for r in records if isinstance(r, Event)]
        if not logged:
            return False
        last = logged[-1]
        with self.engine.connect() as conn:
            if self.fence is not None:
                check_fence(conn, self.fence)
            row = conn.execute(
                select(events_table.c.payload).where(events_table.c.id == self._committed_event_id + len(logged))
            ).first()
            conn.rollback()  # the fence check's row lock goes at once
        if row is None:
            return False
        return row.payload in (projection.event_row(last)["payload"], projection.event_row(scrub(last))["payload"])

    def _transaction(self, records: list[Event | Work], *, isolate: bool) -> None:
        with write_transaction(self.engine) as conn:
            if self.fence is not None:
                check_fence(conn, self.fence)  # first, so that its row lock orders us against a takeover
            logged: list[dict[str, Any]] = []  # every event's row, in order: one INSERT for the commit
            marks: list[InputMark] = []  # the router's input records applied: one INSERT for the commit
            later: list[Staged] = []  # staged work that may run anywhere in the commit: after the events
            run: list[Event] = []
            for rec in records:
                if isinstance(rec, Event):
                    run.append(rec)
                    continue
                if type(rec) is InputMark:
                    marks.append(rec)
                    continue
                if run:
                    self._project(conn, run, logged)
                    run = []
                if type(rec) is Staged:
                    if getattr(rec.work, "ANY_ORDER", False):
                        later.append(rec)  # it reads no row of this commit: no reason to split the events' run
                        continue
                    self._staged(conn, rec, isolate)
                else:
                    rec(conn)
            if run:
                self._project(conn, run, logged)
            if logged:
                # Numbered here, not in append(): a re-run of this commit (retry, savepoints, scrub) builds
                # its rows again and must give them the same ids. Only the loop moves _committed_event_id,
                # and not while this commit runs.
                first = self._committed_event_id + 1
                for i, row in enumerate(logged):
                    row["id"] = first + i
                conn.execute(projection.INSERT_EVENTS, logged)
            if marks:
                record_inputs(conn, [(m.input_id, m.last_event_id, m.at_ms) for m in marks])
            for rec in later:
                self._staged(conn, rec, isolate)

    @staticmethod
    def _project(conn: Connection, run: list[Event], logged: list[dict[str, Any]]) -> None:
        batch = projection.fold(run)
        logged.extend(batch.events)
        batch.events = []  # written once for the whole commit (nothing staged reads the log)
        projection.write(conn, batch)

    @staticmethod
    def _staged(conn: Connection, rec: Staged, isolate: bool) -> None:
        if not isolate:
            try:
                rec.work(conn)
            except OperationalError:
                raise
            except Exception as exc:
                raise _StagedFailed from exc
            return
        try:
            with conn.begin_nested():
                rec.work(conn)
        except OperationalError:
            raise
        except Exception:
            log.exception("store: a staged write failed and was rolled back (%r)", rec.work)


def read_events(engine: Engine) -> list[Event]:
    """Every logged event, in the order it was logged (for tests, replay and small tools)."""
    with engine.connect() as conn:
        payloads = conn.execute(select(events_table.c.payload).order_by(events_table.c.id)).scalars()
        return [decode(p) for p in payloads]
