"""The append-only event log: every event the runtime saw, in order, in one SQLite (or other SQL) table.

Writing is group-committed off the routing path. ``EventLogWriter.append`` only puts events on a list;
a background task commits what is pending once 500 events wait or 50 ms after the first of them, whichever
comes first, in one transaction on a single writer thread. Nothing polls: the task sleeps on an
``asyncio.Event`` set by ``append`` (batch full), by a ``loop.call_later`` timer (deadline) or by ``flush``.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit is durable against a crash of the process and
cheap; a power cut may lose the last few commits, never corrupt the file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)

from contactcentre.events import Event, decode, encode

log = logging.getLogger(__name__)

metadata = MetaData()

events_table = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("contact_id", String(128), nullable=True),
    Column("agent_id", String(128), nullable=True),
    Column("payload", Text, nullable=False),
    Index("ix_events_contact_id", "contact_id"),
    Index("ix_events_agent_id", "agent_id"),
)


def _url(url_or_path: str | Path) -> str:
    text = str(url_or_path)
    return text if "://" in text else f"sqlite:///{text}"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_engine_for(url_or_path: str | Path) -> Engine:
    """An engine for a database URL or a plain file path (SQLite), with the log's schema created."""
    engine = create_engine(_url(url_or_path))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    return engine


def _row(ev: Event) -> dict[str, Any]:
    agent_id = getattr(ev, "agent_id", None)
    return {
        "at_ms": ev.at_ms,
        "type": ev.__struct_config__.tag,
        "contact_id": getattr(ev, "contact_id", None),
        "agent_id": agent_id,
        "payload": encode(ev).decode(),
    }


class EventLogWriter:
    """Group-committing writer of events; create it inside the running loop.

    ``append`` never waits and never touches the database. ``flush()`` returns once everything appended
    before it is committed; ``close()`` flushes, stops the task and releases the database.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        max_delay_s: float = 0.05,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.loop = loop or asyncio.get_running_loop()
        self.appended = 0  # events handed to append() so far
        self.committed = 0  # events committed so far
        self.commits = 0
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._deadline: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closing = False
        self._error: BaseException | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog")
        self._task = self.loop.create_task(self._run(), name="eventlog-writer")

    # ------------------------------------------------------------------------------------------ callers

    def append(self, events: Iterable[Event]) -> None:
        if self._closing:
            raise RuntimeError("the event log writer is closed")
        pending = self._pending
        before = len(pending)
        pending.extend(events)
        added = len(pending) - before
        if not added:
            return
        self.appended += added
        if len(pending) >= self.batch_size:
            self._wake.set()
        elif before == 0 and self._deadline is None:
            self._deadline = self.loop.call_later(self.max_delay_s, self._wake.set)

    async def flush(self) -> None:
        """Wait until every event appended so far is committed (re-raises a failed commit)."""
        if self._error is not None:
            raise self._error
        if self.committed >= self.appended:
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append((self.appended, fut))
        self._wake.set()
        await fut

    async def close(self) -> None:
        if self._closing:  # closed, or closing: wait for that
            await self._task
            return
        self._closing = True
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
            batch, self._pending = self._pending, []
            if batch and self._error is None:
                try:
                    await self.loop.run_in_executor(self._thread, self._write, batch)
                except Exception as exc:
                    log.exception("event log: a commit of %d events failed; logging stops", len(batch))
                    self._error = exc
                else:
                    self.committed += len(batch)
                    self.commits += 1
            self._settle_waiters()
            if self._pending:
                if len(self._pending) >= self.batch_size or self._closing or self._waiters:
                    self._wake.set()
                elif self._deadline is None:
                    self._deadline = self.loop.call_later(self.max_delay_s, self._wake.set)
            elif self._closing:
                return

    def _settle_waiters(self) -> None:
        keep = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self._error is not None:
                fut.set_exception(self._error)
            elif self.committed >= target:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def _write(self, batch: list[Event]) -> None:
        rows = [_row(ev) for ev in batch]
        with self.engine.begin() as conn:
            conn.execute(insert(events_table), rows)


def read_events(url_or_path: str | Path) -> list[Event]:
    """Every logged event, in the order it was logged (for tests and small tools)."""
    engine = create_engine(_url(url_or_path))
    try:
        with engine.connect() as conn:
            payloads = conn.execute(select(events_table.c.payload).order_by(events_table.c.id)).scalars()
            return [decode(p) for p in payloads]
    finally:
        engine.dispose()
