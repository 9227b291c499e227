"""The router's node of a many-process centre (``serve --role router``): a standby that becomes the active
router when it wins the lease, and the active router's work on the streams (``docs/scaling.md``).

Standby: a replica restored from the store follows the output stream (``bus.OutputFollower``) and asks for
the lease every ``ttl / 4``. Takeover: it takes the next fencing token (``cc:fence``), writes it into the
store (after which the old router's commits are refused: ``store/fence.py``), reads what the store holds
past its replica (the old router's last commits, which it may not have published), and only then opens its
writer with the token and arms its timers (what fell due meanwhile fires, each at its own instant). Then it
claims the inputs the old router left unacknowledged (those already in the store are answered as duplicates,
not applied again) and serves the input stream.

Active: each input record is applied in one store transaction (with a row naming the record, so a retry
is known); its output record is published once that transaction is committed, then the input acknowledged.
The lease is renewed every ``ttl / 3``; a router that cannot renew it in time stops routing at once (its
writer would be refused anyway) and the process exits, to come back as a standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.acd import RouterError
from contactcentre.events import ContactArrived, CustomerLeft, Event
from contactcentre.server.bus import BLOCK_MS, GROUP, OUTPUT_KEEP, Streams
from contactcentre.server.driver import RouterDriver
from contactcentre.server.wire import (
    Advance,
    Handle,
    InputRecord,
    Op,
    OutputRecord,
    Publish,
    Stage,
    Submit,
    decode_input,
    encode,
)
from contactcentre.store.db import DriverFailure
from contactcentre.store.fence import Fenced, applied_inputs

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from contactcentre.server.centre import Centre
    from contactcentre.server.lease import Lease
    from contactcentre.store.writer import StoreWriter

log = logging.getLogger(__name__)
STORE_RETRY_S = 0.5  # a failed commit is tried again this often while the store is down (publish)

EDGE_ATTRIBUTE = "edge"  # a call's ContactArrived names the edge whose switch holds it (attributes["edge"])
SWITCHED = frozenset({"voice", "callback"})  # channels whose contacts live on an edge's switch connection
EDGE_GONE_MS = 3000  # an edge's heartbeat missing this long: it died (its key lives 3 s, renewed every second)
INPUT_KEEP_MS = 10 * 60_000  # acknowledged inputs kept this long in Redis, for a person to look at
DEAD_KEEP = 10_000  # undecodable inputs kept aside for a person to look at
TAKEN_KEEP = 100_000  # ids of records taken, remembered so a late claim does not take one twice


class ActiveDriver(RouterDriver):
    """``RouterDriver`` whose timer runs are committed whole: a deadline's events are one output record, and a
    record is published only once all of it is durable."""

    def _on_deadline(self, due: int) -> None:
        assert self.writer is not None
        with self.writer.atomic():
            super()._on_deadline(due)

    def catch_up(self) -> None:
        assert self.writer is not None
        with self.writer.atomic():
            super().catch_up()


class Recorder:
    """The driver's ``Tap``: what the router did for one input record (``begin`` .. ``end``) or for one run of
    its timers (closed at ``idle``) becomes one ``OutputRecord``, queued until its transaction is committed."""

    def __init__(self, writer: StoreWriter, fence: int) -> None:
        self.writer = writer
        self.fence = fence
        self.ready: deque[tuple[int, OutputRecord, str | None]] = deque()  # (writer seq, record, input entry)
        self.wake = asyncio.Event()
        self._ops: list[Op] = []
        self._events: list[Event] = []
        self._first: int | None = None
        self._unit: tuple[InputRecord, str] | None = None
        self._refused: str | None = None

    # The Tap protocol (server/driver.py).
    def advanced(self, to_ms: int) -> None:
        self._ops.append(Advance(to_ms))

    def handled(self, event: Event) -> None:
        self._ops.append(Handle(event))

    def refused(self, event: Event, error: RouterError) -> None:
        if self._unit is not None and self._refused is None:
            self._refused = str(error)

    def dispatched(self, events: list[Event]) -> None:
        if self._first is None:  # the writer has these already: they are its last ones
            self._first = self.writer.last_event_id - len(events) + 1
        self._events.extend(events)

    def idle(self) -> None:
        if self._unit is None and (self._ops or self._events):
            self._close(None, None)

    def begin(self, record: InputRecord, entry: str) -> None:
        self.idle()  # nothing of a timer run is left unrecorded before the input's own record starts
        self._unit = (record, entry)
        self._first = self.writer.last_event_id + 1

    def end(self) -> None:
        unit, self._unit = self._unit, None
        assert unit is not None
        self._close(*unit)

    def duplicate(self, record: InputRecord, entry: str) -> None:
        """The record's input is in the store already: answered, not applied again."""
        self.idle()
        last = self.writer.last_event_id
        out = OutputRecord(
            fence=self.fence, first_id=last + 1, last_id=last, input_id=record.id, node=record.node, duplicate=True
        )
        self._push(out, entry)

    def _close(self, record: InputRecord | None, entry: str | None) -> None:
        last = self.writer.last_event_id
        first = self._first if self._first is not None else last + 1
        out = OutputRecord(
            fence=self.fence,
            first_id=first,
            last_id=last,
            ops=self._ops,
            events=self._events,
            input_id=record.id if record is not None else None,
            node=record.node if record is not None else None,
            refused=self._refused,
        )
        self._ops, self._events, self._first, self._refused = [], [], None, None
        self._push(out, entry)

    def _push(self, out: OutputRecord, entry: str | None) -> None:
        self.ready.append((self.writer.appended, out, entry))
        self.wake.set()


class ActiveRouter:
    """The active router's three jobs: take inputs from the stream, publish outputs once committed, keep the
    lease. ``run`` returns when told to stop; ``lost`` is set if the lease (or the fence) was lost."""

    def __init__(
        self,
        centre: Centre,
        redis: Redis,
        streams: Streams,
        node_id: str,
        lease: Lease,
        recorder: Recorder,
        *,
        lease_ttl_ms: int,
    ) -> None:
        self.centre = centre
        self.driver = centre.driver
        self.writer = centre.writer
        self.redis = redis
        self.streams = streams
        self.node_id = node_id
        self.lease = lease
        self.recorder = recorder
        self.lease_ttl_ms = lease_ttl_ms
        self.lost = asyncio.Event()
        self.holder: str | None = None  # who holds the lease (or the fence) once this router lost it
        self._stopping = False
        # Ids of the records this router took, newest last (bounded): a record it took that is still waiting
        # for its commit when ``claim`` comes round again is not taken twice.
        self._taken: dict[str, None] = {}
        self._claimed_at: float | None = None  # loop time of the last claim (None: not yet, at the takeover)
        self.active_since_ms = int(time.time() * 1000)  # a Redis entry id's time: older ones are looked up
        self.dead = f"{streams.inputs}:dead"
        self.input_keep_ms = INPUT_KEEP_MS
        # Edges that have held calls, and since when (loop time) each of those has been missing its heartbeat.
        self._call_edges: set[str] = {
            c.attributes[EDGE_ATTRIBUTE]
            for c in self.driver.router.contact_list()
            if c.channel in SWITCHED and EDGE_ATTRIBUTE in c.attributes
        }
        self._missing: dict[str, float] = {}
        self.edge_gone_ms = EDGE_GONE_MS
        self.driver.subscribe(self._note_calls)

    # ------------------------------------------------------------------------------------------- inputs

    def restamp(self, event: Event) -> Event:
        """An input at the router's time (never before its last one): edges' clocks never send it back."""
        now = max(self.centre.clock.now_ms(), self.driver.router.now_ms)
        return event if event.at_ms == now else msgspec.structs.replace(event, at_ms=now)

    def take(self, record: InputRecord, entry: str) -> None:
        """Apply one input record in one transaction, and queue its output record."""
        rec = self.recorder
        rec.begin(record, entry)
        centre = self.centre
        with self.writer.atomic():
            for part in record.parts:
                if type(part) is Submit:
                    centre.submit(self.restamp(part.event))
                elif type(part) is Publish:
                    facts = [self.restamp(ev) for ev in part.events if type(ev).FACT]
                    if len(facts) != len(part.events):  # a router input or a router decision, from outside
                        log.warning("router: input %s published events that are not facts; dropped", record.id)
                    centre.publish(facts)
                elif type(part) is Stage:
                    centre.stage(part.op)
            self._taken[record.id] = None
            if len(self._taken) > TAKEN_KEEP:
                del self._taken[next(iter(self._taken))]
            self.writer.mark_input(record.id, self.driver.router.now_ms)
        rec.end()

    async def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(self.streams.inputs, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, min_idle_ms: int = 0) -> int:
        """Take over what the group's consumers (a dead router) were given and did not acknowledge for
        ``min_idle_ms``: records already in the store are answered as duplicates, the others applied. At the
        takeover everything pending is claimed; afterwards, every lease period, what a router that lost the
        lease took after it had (before it noticed) is. Returns how many were claimed."""
        claimed: list[tuple[str, InputRecord]] = []
        start = "0-0"
        while True:
            got = await self.redis.xautoclaim(
                self.streams.inputs, GROUP, self.node_id, min_idle_time=min_idle_ms, start_id=start, count=1000
            )
            start, entries = got[0], got[1]
            for entry_id, fields in entries:
                if not fields:  # a deleted entry comes back without its fields
                    continue
                record = await self._decoded(entry_id, fields)
                if record is not None and record.id not in self._taken:  # else ours, waiting for its commit
                    claimed.append((_text(entry_id), record))
            if _text(start) == "0-0":
                break
        if not claimed:
            return 0
        ids = [r.id for _e, r in claimed]
        done = await self.centre.read(applied_inputs, ids)
        for entry, record in claimed:
            if record.id in done:
                self.recorder.duplicate(record, entry)
            else:
                self.take(record, entry)
        log.warning("router: claimed %d unacknowledged inputs (%d already applied)", len(claimed), len(done))
        return len(claimed)

    async def consume(self) -> None:
        from redis.exceptions import RedisError, ResponseError

        loop = asyncio.get_running_loop()
        self._claimed_at = None
        while not self._stopping:
            try:
                await self.centre.room()
                if self._claimed_at is None:  # the takeover: the group made if missing, everything pending claimed
                    await self._ensure_group()
                    await self.claim()
                    self._claimed_at = loop.time()
                elif (loop.time() - self._claimed_at) * 1000 >= self.lease_ttl_ms:
                    self._claimed_at = loop.time()
                    await self.claim(min_idle_ms=self.lease_ttl_ms)
                    await self._trim_inputs()
                got = await self.redis.xreadgroup(
                    GROUP, self.node_id, {self.streams.inputs: ">"}, count=500, block=BLOCK_MS
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis came back without its data (a restart without persistence): the stream and the group
                # are gone, and with them whatever was not yet read. The edges retry what they were not answered.
                log.warning("router: the input stream's group is gone (%s); creating it again", exc)
                try:
                    await self._ensure_group()
                except (RedisError, OSError):
                    await asyncio.sleep(0.2)  # a reconnection pace
                continue
            except (RedisError, OSError) as exc:
                log.warning("router: reading inputs failed (%s); retrying", exc)
                await asyncio.sleep(0.2)  # a reconnection pace
                continue
            except DriverFailure as exc:
                # The store is down: the writer, far behind, refuses more (``room``), or a claim could not look up
                # what was applied. Inputs wait in the stream until it is back.
                log.warning("router: the store failed (%s); taking no inputs for now", exc)
                await asyncio.sleep(0.2)  # a reconnection pace
                continue
            for _stream, entries in got or ():
                batch = await self._prepared(entries)
                if batch is None:
                    return  # stopping: what was read stays pending, and the next router claims it
                done, batch = batch
                for entry, record in batch:
                    if self._stopping:
                        return  # the rest stays pending: the next router claims it
                    if record.id in done:
                        self.recorder.duplicate(record, entry)
                    else:
                        self.take(record, entry)

    async def _prepared(self, entries: Any) -> tuple[set[str], list[tuple[str, InputRecord]]] | None:
        """A read's entries decoded, and which of them were applied before. An entry older than this router's
        takeover that the group hands out as new was handed out before (a Redis brought back from a
        point-in-time copy forgets acknowledgements): looked up in the store. The store or Redis failing here
        is waited out, in place: these entries are pending for this router, and taking later ones first would
        put them out of order. None: the router stops meanwhile."""
        from redis.exceptions import RedisError

        while not self._stopping:
            try:
                batch: list[tuple[str, InputRecord]] = []
                for entry_id, fields in entries:
                    record = await self._decoded(entry_id, fields)
                    if record is not None:
                        batch.append((_text(entry_id), record))
                old = [r.id for e, r in batch if r.id in self._taken or _entry_ms(e) < self.active_since_ms]
                done = set(old) & set(self._taken)
                if len(done) < len(old):
                    done |= await self.centre.read(applied_inputs, [i for i in old if i not in done])
                return done, batch
            except (DriverFailure, RedisError, OSError) as exc:
                log.warning("router: looking inputs up failed (%s); again", exc)
                await asyncio.sleep(0.2)  # a reconnection pace
        return None

    async def _trim_inputs(self) -> None:
        """Drop the inputs nobody needs any more: below the oldest one still unacknowledged, below what the
        group has not yet handed out, and older than ``input_keep_ms`` (kept for a person to look at)."""
        stream = self.streams.inputs
        floor = f"{int(time.time() * 1000) - self.input_keep_ms}-0"
        keep = [floor]
        for group in await self.redis.xinfo_groups(stream):
            if _text(group["name"]) == GROUP:
                keep.append(_text(group["last-delivered-id"]))
        pending = await self.redis.xpending(stream, GROUP)
        if pending["pending"]:
            keep.append(_text(pending["min"]))
        await self.redis.xtrim(stream, minid=min(keep, key=_entry_key), approximate=True)

    async def _decoded(self, entry_id: Any, fields: dict[bytes, bytes]) -> InputRecord | None:
        """The entry's record; one that cannot be decoded (a newer edge's, or not ours at all) is set aside in
        ``<prefix>:in:dead`` and acknowledged, so it cannot stop every router that tries it."""
        try:
            return decode_input(fields[b"r"])
        except Exception as exc:
            log.error("router: input %s cannot be decoded (%s); set aside in %s", entry_id, exc, self.dead)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self.dead, {k: v for k, v in fields.items()}, maxlen=DEAD_KEEP, approximate=True)
            pipe.xack(self.streams.inputs, GROUP, entry_id)
            await pipe.execute()
            return None

    # ------------------------------------------------------------------------------------------ outputs

    async def publish(self) -> None:
        """Output records go out in order, each once its transaction is committed; then its input is
        acknowledged. Redis down: they wait (in order) and go when it is back."""
        from redis.exceptions import RedisError

        ready, writer = self.recorder.ready, self.writer
        failing = False  # the store is failing commits: said once, not at every look
        tried = 0.0  # loop time of the last retry asked of the writer
        while True:
            if not ready:
                if self._stopping:
                    return
                self.recorder.wake.clear()
                await self.recorder.wake.wait()
                continue
            try:
                await writer.durable(ready[0][0])  # raises Fenced when a newer router took over
            except Fenced:
                raise
            except Exception as exc:
                # The store failed the commit (PostgreSQL down): the writer holds the records and tries them
                # again, backing off (store/writer.py). Nothing is published meanwhile, so nothing unwritten is
                # answered; the edges tell people to try again. Giving up here would hand the lease to a standby
                # that cannot take over without the store either.
                now = asyncio.get_running_loop().time()
                if not failing:
                    log.warning("router: the store failed a commit (%s); holding the outputs until it is back", exc)
                    failing, tried = True, now
                elif now - tried >= STORE_RETRY_S:
                    # Sooner than the writer's own back-off (up to a minute): every edge waits on this commit,
                    # and the edges' "try again" answers go on until the store is back and it is through.
                    tried = now
                    writer.retry()
                await asyncio.sleep(0.2)  # the pace of looking at the writer again, not a wait for a test
                continue
            if failing:
                log.warning("router: the store is back; publishing")
                failing = False
            batch = []
            while ready and ready[0][0] <= writer.committed:
                batch.append(ready.popleft())
            while True:
                pipe = self.redis.pipeline(transaction=False)
                acks = []
                for _seq, out, entry in batch:
                    pipe.xadd(self.streams.outputs, {"r": encode(out)}, maxlen=OUTPUT_KEEP, approximate=True)
                    if entry is not None:
                        acks.append(entry)
                if acks:
                    pipe.xack(self.streams.inputs, GROUP, *acks)
                try:
                    await pipe.execute()
                    break
                except (RedisError, OSError) as exc:
                    log.warning("router: publishing %d outputs failed (%s); retrying", len(batch), exc)
                    await asyncio.sleep(0.2)  # a reconnection pace

    # -------------------------------------------------------------------------------------------- lease

    async def keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        every = self.lease_ttl_ms / 3000
        renewed = loop.time()
        while not self._stopping:
            await asyncio.sleep(every)  # the renewal period: the lease's own rhythm
            try:
                # Bounded: a renewal stuck in a partition that drops packets must not outlive the lease unnoticed.
                ok: bool | None = await asyncio.wait_for(self.lease.renew(), every)
            except Exception as exc:
                log.warning("router: renewing the lease failed: %s", exc)
                ok = None
            if ok:
                renewed = loop.time()
                try:
                    await self.reap()
                except Exception as exc:  # Redis trouble: the next round tries again
                    log.warning("router: looking for lost edges failed: %s", exc)
                continue
            if ok is False or (loop.time() - renewed) * 1000 >= self.lease_ttl_ms:
                self.holder = await self._holder()
                log.error("router: the lease is lost (held by %s); routing stops", self.holder)
                self.give_up()
                return

    def _note_calls(self, batch: list[Event]) -> None:
        """Which edges hold calls (a subscriber to the router's output): only those are checked for life."""
        for ev in batch:
            if type(ev) is ContactArrived and ev.channel in SWITCHED:
                edge = ev.attributes.get(EDGE_ATTRIBUTE)
                if edge is not None:
                    self._call_edges.add(edge)

    async def reap(self) -> int:
        """End the calls of edges that died: a call lives on its edge's switch (the simulated one, or the
        connection to a real one), so when the edge's heartbeat has been gone for ``EDGE_GONE_MS`` (one missed
        renewal is not a death: a restarted Redis forgets every key until each edge renews its own) its callers
        are gone. Each is logged as the customer leaving, with the reason ``edge_lost``. Returns how many were
        ended."""
        if not self._call_edges:
            return 0
        edges = sorted(self._call_edges)
        pipe = self.redis.pipeline(transaction=False)
        for e in edges:
            pipe.exists(self.streams.node(e))
        found = await pipe.execute()
        now_s = asyncio.get_running_loop().time()
        dead = []
        for edge, present in zip(edges, found, strict=True):
            if present:
                self._missing.pop(edge, None)
            elif now_s - self._missing.setdefault(edge, now_s) >= self.edge_gone_ms / 1000:
                dead.append(edge)
        if not dead:
            return 0
        by_edge: dict[str, list[str]] = {e: [] for e in dead}
        for c in self.driver.router.contact_list():  # only when an edge died: a view per contact costs
            edge = c.attributes.get(EDGE_ATTRIBUTE)
            if edge in by_edge and c.channel in SWITCHED and (c.waiting or c.handling):
                by_edge[edge].append(c.id)
        ended = 0
        for edge, calls in by_edge.items():
            self._call_edges.discard(edge)
            self._missing.pop(edge, None)
            if not calls:
                continue
            log.warning("router: edge %s is gone; ending its %d calls", edge, len(calls))
            with self.writer.atomic():
                for contact_id in calls:
                    now = max(self.centre.clock.now_ms(), self.driver.router.now_ms)
                    if self.centre.submit(CustomerLeft(at_ms=now, contact_id=contact_id, reason="edge_lost")) is None:
                        ended += 1
        return ended

    async def _holder(self) -> str | None:
        try:
            return await self.lease.holder()
        except Exception:
            return "?"

    def give_up(self) -> None:
        """Stop routing at once: the lease (or the fence) is someone else's."""
        self._stopping = True
        self.driver.close()
        self.lost.set()

    # ---------------------------------------------------------------------------------------------- run

    async def run(self, stop: asyncio.Event) -> None:
        # The lease is kept from the start: the takeover's claim can take longer than what is left of it.
        tasks = [
            asyncio.create_task(self.consume(), name="router-inputs"),
            asyncio.create_task(self.publish(), name="router-outputs"),
            asyncio.create_task(self.keep_lease(), name="router-lease"),
        ]
        stopped = asyncio.create_task(stop.wait())
        lost = asyncio.create_task(self.lost.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopped, lost], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in tasks and t.exception() is not None:
                    exc = t.exception()
                    log.error("router: %s failed: %r", t.get_name(), exc)
                    if isinstance(exc, Fenced) and self.holder is None:
                        self.holder = exc.holder  # the router that took the fence: the one to name
                    self.give_up()
        finally:
            self._stopping = True
            self.recorder.wake.set()
            for t in (tasks[0], tasks[2], stopped, lost):
                t.cancel()
            if not self.lost.is_set():
                # A clean stop: what was applied is committed and published before the lease goes.
                try:
                    async with asyncio.timeout(10):
                        await tasks[1]
                except Exception:
                    log.exception("router: publishing the last outputs failed")
            else:
                tasks[1].cancel()
            await asyncio.gather(*tasks, stopped, lost, return_exceptions=True)


def _entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def _entry_ms(entry: str) -> int:
    """The time part of a Redis stream entry id (``<ms>-<seq>``)."""
    return int(entry.split("-", 1)[0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
