"""The streams between the nodes of one centre, on Redis (``docs/scaling.md``).

* ``<prefix>:in`` — inputs, edges to the active router: one entry per ``InputRecord``, read by the routers'
  consumer group, acknowledged (XACK) once the router's output for it is published, so what a dead router
  had taken but not finished is claimed by its successor.
* ``<prefix>:out`` — outputs, the active router to everyone: one entry per ``OutputRecord``, published only
  after its events are committed. Every node reads all of it from where it is (no group): each record is
  a step its replica must take.
* ``<prefix>:lease`` and ``<prefix>:fence`` — the active router's lease and the fencing-token counter
  (``server/lease.py``).

An output record names the event-log ids it holds, so a reader that missed records (the stream is trimmed
to its last ``OUTPUT_KEEP`` entries, and a router that dies between its commit and its publish leaves a
gap) reads the missing events from the store instead (``OutputFollower``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contactcentre.events import decode
from contactcentre.server.wire import OutputRecord, decode_output

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from contactcentre.server.driver import FollowerDriver
    from contactcentre.store.db import Engine

log = logging.getLogger(__name__)

GROUP = "routers"  # the consumer group of the input stream: every router is in it, one reads at a time
OUTPUT_KEEP = 100_000  # output records kept in Redis (about a minute at 1,500 contacts/s); older: the store
BLOCK_MS = 1000  # a blocking read returns at least this often, so a stopping reader notices


@dataclass(frozen=True)
class Streams:
    """The Redis keys of one centre (several centres can share a Redis under different prefixes)."""

    prefix: str = "cc"

    @property
    def inputs(self) -> str:
        return f"{self.prefix}:in"

    @property
    def outputs(self) -> str:
        return f"{self.prefix}:out"

    @property
    def lease(self) -> str:
        return f"{self.prefix}:lease"

    @property
    def fence(self) -> str:
        return f"{self.prefix}:fence"

    @property
    def signals(self) -> str:
        """The pub/sub channel of signals between edges (server/signals.py): nothing keeps them."""
        return f"{self.prefix}:signals"

    def node(self, node_id: str) -> str:
        """An edge's heartbeat key: present while the edge lives (``EdgeHeartbeat``)."""
        return f"{self.prefix}:node:{node_id}"


def connect_redis(url: str, **kwargs: Any) -> Redis:
    """A client for ``url`` (hiredis parses replies when it is installed)."""
    from redis.asyncio import Redis

    # Bounded: a call stuck in a network that drops packets must fail, not hang (a blocking read waits
    # BLOCK_MS on the server, well inside this).
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("socket_timeout", 10)
    kwargs.setdefault("socket_keepalive", True)
    return Redis.from_url(url, **kwargs)


class OutputFollower:
    """Keeps a replica (``FollowerDriver``) where the active router is: reads ``<prefix>:out`` and applies each
    record past ``pos`` (the last event id the replica has), filling gaps from the store's log.

    ``on_record(record)`` is called after each record is applied (an edge resolves the commits its inputs
    wait for). ``run`` reads until ``stop``; a lost Redis connection is retried, the replica staying where it
    was meanwhile."""

    def __init__(
        self,
        redis: Redis,
        streams: Streams,
        driver: FollowerDriver,
        engine: Engine,
        pos: int,
        *,
        on_record: Callable[[OutputRecord], None] | None = None,
        on_filled: Callable[[list[str]], None] | None = None,
        retry_s: float = 0.5,
    ) -> None:
        self.redis = redis
        self.streams = streams
        self.driver = driver
        self.engine = engine
        self.pos = pos  # the last event id applied
        self.on_record = on_record
        self.on_filled = on_filled  # the ids of the inputs a gap filled from the store held (their records were lost)
        self.last_entry = "0"  # the stream entry read last: everything retained is looked at once
        self.gaps = 0  # gaps filled from the store
        self.fence = 0  # the highest fencing token heard from
        self._failing = False  # the last read failed: its warning was logged once, not at every retry
        self._retry_s = retry_s
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        from redis.exceptions import RedisError

        while not self._stopping:
            try:
                got = await self.redis.xread({self.streams.outputs: self.last_entry}, count=500, block=BLOCK_MS)
            except (RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("follower: reading %s failed (%s); retrying", self.streams.outputs, exc)
                self._failing = True
                await asyncio.sleep(self._retry_s)  # a reconnection pace, not a wait for a test
                continue
            self._failing = False
            if self._stopping:
                return  # the standby became the active router meanwhile: the store has these, not this read
            try:
                for _stream, entries in got or ():
                    for entry_id, fields in entries:
                        try:
                            record = decode_output(fields[b"r"])
                        except Exception:
                            log.exception("follower: an undecodable output record %s was skipped", entry_id)
                            self.last_entry = entry_id
                            continue
                        await self.take(record)
                        self.last_entry = entry_id
            except Exception as exc:  # the store could not fill a gap (PostgreSQL down): read it again later
                log.warning("follower: applying %s failed (%s); retrying", self.streams.outputs, exc)
                await asyncio.sleep(self._retry_s)

    async def take(self, record: OutputRecord) -> None:
        """Apply one record (after the missing ones, read from the store, when it skips ahead). A record of a
        router older than one already heard from (a lower fencing token) comes late: what it held that was
        committed is in the store, and read from there when the newer router's records skip ahead of it."""
        if record.fence < self.fence:
            log.info("follower: a late record of fence %d (now %d) is ignored", record.fence, self.fence)
            return
        self.fence = record.fence
        if record.first_id > self.pos + 1:
            await self.fill(record.first_id - 1)
        if record.last_id >= record.first_id and record.last_id <= self.pos:
            pass  # its events came from the store already (a gap filled past it)
        else:
            self.driver.apply(record.ops, record.events)
            self.pos = max(self.pos, record.last_id)
        if self.on_record is not None:
            self.on_record(record)

    async def fill(self, upto: int | None = None) -> int:
        """Read the log's events after ``pos`` (up to ``upto``) from the store and replay them; returns how many."""
        from contactcentre.store.fence import events_after, inputs_logged_between

        def read() -> tuple[list[tuple[int, str]], list[str]]:
            with self.engine.connect() as conn:
                rows = events_after(conn, self.pos, upto)
                inputs = inputs_logged_between(conn, self.pos, rows[-1][0]) if rows and self.on_filled else []
                return rows, inputs

        rows, inputs = await asyncio.get_running_loop().run_in_executor(None, read)
        if rows:
            self.gaps += 1
            log.info("follower: %d events %d..%d read from the store", len(rows), rows[0][0], rows[-1][0])
            self.driver.replay([decode(payload) for _id, payload in rows])
            self.pos = rows[-1][0]
            if inputs and self.on_filled is not None:
                self.on_filled(inputs)
        return len(rows)


class EdgeHeartbeat:
    """An edge says it is alive: ``<prefix>:node:<id>`` with an expiry, renewed three times per ``ttl_ms``.

    The active router ends the calls of an edge whose key has expired (its simulated switch, and the calls on
    it, died with it: ``router_node.ActiveRouter.reap``)."""

    def __init__(self, redis: Redis, streams: Streams, node_id: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = streams.node(node_id)
        self.ttl_ms = ttl_ms
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        from redis.exceptions import RedisError

        while not self._stopping:
            try:
                await self.redis.set(self.key, "1", px=self.ttl_ms)
            except (RedisError, OSError) as exc:
                log.warning("edge: the heartbeat failed (%s)", exc)
            await asyncio.sleep(self.ttl_ms / 3000)  # the heartbeat's own rhythm

    async def end(self) -> None:
        """A clean stop: the key goes at once (its calls were ended by the edge itself)."""
        from redis.exceptions import RedisError

        self._stopping = True
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key)
