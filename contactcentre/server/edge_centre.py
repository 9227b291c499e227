"""The centre as an edge node's adapters see it (``serve --role edge``): the same methods as ``Centre``, with
the router in another process.

* ``router`` is a replica (``FollowerDriver``) kept where the active router is by its output stream
  (``bus.OutputFollower``): reads are local and synchronous, as in one process.
* ``submit`` asks the replica's ``check`` for the refusal a person is told at once, then hands the input
  over; ``publish`` and ``stage`` hand over facts and named store operations; ``atomic()`` makes one
  ``InputRecord`` of what it encloses, which the router applies in one transaction.
* ``commit()`` returns once the output records of everything handed over so far have come back: the router
  publishes them after its commit, so what they carry is durable (and in the replica). It raises
  ``Unavailable`` when that cannot be known in time (Redis or the router down): the adapter answers "try
  again" and promises nothing.
* ``read`` / ``write`` run on this node's own database connections (customers, cases, users, sessions:
  rows that are not events), as ``Centre`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.acd import RouterError
from contactcentre.events import ContactArrived, Event
from contactcentre.server.centre import Centre, Unavailable
from contactcentre.server.signals import CustomerPresence, Signal, decode_signal, encode_signal
from contactcentre.server.wire import InputRecord, OutputRecord, Part, Publish, Stage, Submit, encode
from contactcentre.store.ops import StoreOp

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from contactcentre.config import CentreConfig
    from contactcentre.server.bus import EdgeHeartbeat, OutputFollower, Streams
    from contactcentre.server.driver import FollowerDriver
    from contactcentre.store.db import Engine

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 10.0  # an edge gives up waiting for the router's word after this: "try again"
HOLDERS_KEEP = 100_000  # chats whose customer's edge is remembered (the newest)
MAX_OUTSTANDING = 20_000  # inputs handed over and not yet answered before intake waits (``room``)

__all__ = ["EdgeCentre", "Unavailable"]


class EdgeCentre(Centre):
    def __init__(
        self,
        config: CentreConfig,
        engine: Engine,
        driver: FollowerDriver,
        redis: Redis,
        streams: Streams,
        node_id: str,
        *,
        readers: int = 4,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
    ) -> None:
        # No writer here: the router's writer logs what this node hands over.
        super().__init__(config, engine, driver, None, readers=readers, moves_cases=False)  # type: ignore[arg-type]
        self.redis = redis
        self.streams = streams
        self.node_id = node_id
        self.follower: OutputFollower | None = None  # set by the wiring once the replica follows the stream
        self.heartbeat: EdgeHeartbeat | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.commit_timeout_s = commit_timeout_s
        self._boot = f"{os.getpid():x}{self.clock.now_ms():x}"  # ids stay unique across restarts of the node
        self._counter = itertools.count(1)
        self._sent = 0  # records handed over so far (``log_position``)
        self._answers: dict[str, tuple[int, None]] = {}  # unanswered input id -> its number, in the order sent
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (commit's limit, tie, future): a heap
        self._group: list[Part | _AtEdge] | None = None  # inside ``atomic()``: the parts of the record being built
        self._depth = 0
        self._queue: deque[_Outgoing] = deque()  # records not yet sent to Redis, in the order made
        self._flushing = False
        self._running: set[asyncio.Task[None]] = set()
        self._holders: dict[str, str] = {}  # chat contact id -> the edge holding its customer's socket
        self._here: list[tuple[_Outgoing, list[StoreOp]]] = []  # rows to write here, of this loop turn
        self._signals: list[bytes] = []  # encoded signals for the other nodes, sent at the end of this turn
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    # ------------------------------------------------------------------------------------------- inputs

    def submit(self, event: Event) -> RouterError | None:
        """Hand ``event`` to the active router; the refusal the replica predicts, or None. The router has the
        last word: a refusal that only it sees (another edge's input came first) is logged there."""
        if self.closed:
            return None
        router = self.driver.router
        if type(event) is ContactArrived and "edge" not in event.attributes:
            # The edge a contact came to, in its arrival: its calls die with this edge (the router ends them),
            # its chat's customer is on this edge's socket (every edge's ``_holders``, even one started later).
            event = msgspec.structs.replace(event, attributes={**event.attributes, "edge": self.node_id})
        if event.at_ms < router.now_ms:  # this node's clock is a little behind the router's: check at its time
            event = msgspec.structs.replace(event, at_ms=router.now_ms)
        try:
            refusal = router.check(event)
        except RouterError as exc:
            refusal = exc
        if refusal is not None:
            log.info("refused %s: %s", type(event).__name__, refusal)
            return refusal
        self._part(Submit(event))
        return None

    def publish(self, events: Iterable[Event]) -> None:
        evs = list(events)
        if evs and not self.closed:
            self._part(Publish(evs))

    def stage(self, work: Callable[..., None]) -> None:
        """A named store operation, committed with the record it is staged in. One that writes rows which are
        not events (``StoreOp.AT_EDGE``: a chat's new customer and case) is written here instead, in a
        transaction of its own just before its record is handed over — as an e-mail's intake is — so the
        router's commit, which every hop of a contact waits for, does not carry it (and what it chose, the
        case token, is known here at once)."""
        if not isinstance(work, StoreOp):
            raise TypeError(f"an edge stages only named store operations (store/ops.py), not {work!r}")
        if self.closed:
            raise RuntimeError("the centre is closed")
        self._part(_AtEdge(work) if work.AT_EDGE else Stage(work))

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        if self._depth == 0:
            self._group = []
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                group, self._group = self._group, None
                if group:
                    self._send(group)

    def _part(self, part: Part | _AtEdge) -> None:
        if self._group is not None:
            self._group.append(part)
        else:
            self._send([part])

    def _send(self, parts: list[Part | _AtEdge]) -> None:
        n = next(self._counter)
        rid = f"{self.node_id}:{self._boot}:{n}"
        here = [p.op for p in parts if type(p) is _AtEdge]
        wire: list[Part] = [p for p in parts if type(p) is not _AtEdge]  # type: ignore[misc]
        record = InputRecord(id=rid, node=self.node_id, parts=wire)
        self._sent += 1
        self._answers[rid] = (self._sent, None)
        if len(self._answers) >= MAX_OUTSTANDING:
            self._room.clear()
        # Encoded when it leaves: an op that gathers (audit reads) gathers till then. Records leave in the order
        # they were made; one with rows to write here first waits for them, and the ones after it with it.
        entry = _Outgoing(record, ready=not here)
        self._queue.append(entry)
        if here:
            self._here.append((entry, here))
            if len(self._here) == 1:  # what this loop turn hands over is written in one transaction
                self.loop.call_soon(self._start_here)
        elif not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._start_flush)

    def _start_here(self) -> None:
        batch, self._here = self._here, []
        self._keep(self.loop.create_task(self._write_here(batch), name="edge-rows"))

    async def _write_here(self, batch: list[tuple[_Outgoing, list[StoreOp]]]) -> None:
        """The rows this node writes itself, of every record of one loop turn, in one transaction (one commit
        for all of them, as the router's writer groups its own); when that fails, each record's rows in one of
        their own, so one bad row costs its own record's rows only — as in one process, whose failure is then
        logged and the record goes on without them."""

        def run(conn: Any, ops: list[StoreOp]) -> None:  # the store's connection: what every op is called with
            for op in ops:
                op(conn)

        try:
            await self.write(run, [op for _entry, ops in batch for op in ops])
        except Exception:
            for _entry, ops in batch:
                try:
                    await self.write(run, ops)
                except Exception:
                    log.exception("edge: writing %r failed; its record goes on without it", ops)
        for entry, _ops in batch:
            entry.ready = True
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._keep(self.loop.create_task(self._flush(), name="edge-send"))

    def _keep(self, task: asyncio.Task[None]) -> None:
        """The loop holds its tasks weakly: each is kept here until it is done."""
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _flush(self) -> None:
        """Send what this loop turn handed over in one round trip (a pipeline of XADDs)."""
        from redis.exceptions import RedisError

        try:
            while self._queue and self._queue[0].ready:
                batch = []
                while self._queue and self._queue[0].ready:
                    record = self._queue.popleft().record
                    # One its caller was told to try again about (a timeout, while its rows were being written
                    # here), or made before the edge closed, never leaves: it is known not to have been applied.
                    if record.id in self._answers and not self.closed:
                        batch.append(record)
                if not batch:
                    continue
                pipe = self.redis.pipeline(transaction=False)
                for record in batch:
                    pipe.xadd(self.streams.inputs, {"r": encode(_sealed(record))})
                try:
                    await pipe.execute()
                except (RedisError, OSError) as exc:
                    # Whether Redis kept them cannot be known: their answers fail, and the people waiting are
                    # told to try again. (Had they arrived, the router applies them all the same.)
                    log.warning("edge: %d inputs could not be handed to Redis: %s", len(batch), exc)
                    for record in batch:
                        self._fail(record.id, Unavailable(f"the router could not be reached: {exc}"))
        finally:
            self._flushing = False

    # ------------------------------------------------------------------------------------------ signals

    def signal(self, signal: Signal) -> None:
        """To this node's listeners at once, and to the other nodes' over Redis (``PUBLISH``): the customer's
        socket and the agent's console may be on different edges. Nothing keeps a signal (signals.py)."""
        self._heard(signal)
        super().signal(signal)
        if self.closed:
            return
        self._signals.append(encode_signal(signal))
        if len(self._signals) == 1:
            self.loop.call_soon(self._start_signals)

    def _start_signals(self) -> None:
        self._keep(self.loop.create_task(self._send_signals(), name="edge-signals"))

    async def _send_signals(self) -> None:
        from redis.exceptions import RedisError

        batch, self._signals = self._signals, []
        pipe = self.redis.pipeline(transaction=False)
        for data in batch:
            pipe.publish(self.streams.signals, self.node_id.encode() + b" " + data)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:  # an indicator on a screen is late or missed: nothing more
            log.info("edge: %d signals not sent: %s", len(batch), exc)

    async def hear_signals(self) -> None:
        """Hand the other nodes' signals to this node's listeners (a task for the node's life)."""
        from redis.exceptions import RedisError

        mine = self.node_id.encode() + b" "
        while not self.closed:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.streams.signals)
                async for message in pubsub.listen():
                    data = message.get("data")
                    if not isinstance(data, bytes) or data.startswith(mine):
                        continue
                    try:
                        signal = decode_signal(data.split(b" ", 1)[1])
                    except Exception:
                        log.warning("edge: an undecodable signal was dropped")
                        continue
                    self._heard(signal)
                    super().signal(signal)
            except (RedisError, OSError) as exc:
                log.info("edge: listening for signals failed (%s); again", exc)
                await asyncio.sleep(0.5)  # a reconnection pace
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # ------------------------------------------------------------------------------- customers' edges

    def _heard(self, signal: Signal) -> None:
        if type(signal) is CustomerPresence and signal.connected and signal.node is not None:
            self._hold(signal.contact_id, signal.node)

    def learn_holders(self) -> None:
        """At start: the edge each live chat's customer came to, from the replica (its arrival names it; a
        resume elsewhere since then is heard only as it happens)."""
        for c in self.driver.router.contact_list():
            edge = c.attributes.get("edge")
            if c.channel == "chat" and edge is not None:
                self._hold(c.id, edge)

    def _hold(self, contact_id: str, node: str) -> None:
        holders = self._holders
        holders.pop(contact_id, None)
        holders[contact_id] = node
        while len(holders) > HOLDERS_KEEP:
            del holders[next(iter(holders))]

    async def watch_edges(self, every_s: float = 1.0, gone_ms: int = 3000) -> None:
        """A customer whose edge died went with it, and that edge cannot say so: when the heartbeat of an edge
        holding chat sockets has been gone ``gone_ms`` (a task for the node's life), this node's listeners hear
        ``CustomerPresence(connected=False)`` for each live chat it held (an agent's console here shows the
        customer gone; they may come back on another edge, which then says so)."""
        from redis.exceptions import RedisError

        missing: dict[str, float] = {}
        while not self.closed:
            await asyncio.sleep(every_s)  # the heartbeats' own rhythm
            nodes = sorted(set(self._holders.values()) - {self.node_id})
            if not nodes:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for node in nodes:
                    pipe.exists(self.streams.node(node))
                found = await pipe.execute()
            except (RedisError, OSError):
                continue  # Redis down: nobody's heartbeat can be told, so nobody is declared dead
            now = self.loop.time()
            for node, present in zip(nodes, found, strict=True):
                if present:
                    missing.pop(node, None)
                elif (now - missing.setdefault(node, now)) * 1000 >= gone_ms:
                    missing.pop(node, None)
                    self._edge_gone(node)

    def _edge_gone(self, node: str) -> None:
        gone = [cid for cid, held in self._holders.items() if held == node]
        for cid in gone:
            del self._holders[cid]
            c = self.driver.router.contact(cid)
            if c is not None and (c.waiting or c.handling):
                super().signal(CustomerPresence(cid, c.agent_id, False, node))
        log.warning("edge: edge %s is gone; %d chats were on it", node, len(gone))

    def _fail(self, rid: str, exc: BaseException) -> None:
        got = self._answers.pop(rid, None)
        if got is not None:
            self._wake_waiters((got[0], exc))
        self._check_room()

    def answered(self, record: OutputRecord) -> None:
        """An output record came back (``OutputFollower.on_record``): the input it answers is durable."""
        if record.node is not None:
            for ev in record.events:  # a chat's socket is on the edge its hello came to (until it resumes elsewhere)
                if type(ev) is ContactArrived and ev.channel == "chat":
                    self._hold(ev.contact_id, record.node)
        if record.node != self.node_id or record.input_id is None:
            return
        if self._answers.pop(record.input_id, None) is not None:
            if record.refused is not None:  # foreseen by nobody: another node's input changed things first
                log.info("edge: the router refused input %s: %s", record.input_id, record.refused)
            self._wake_waiters()
        self._check_room()

    def filled(self, input_ids: list[str]) -> None:
        """Inputs whose output records never came (a gap the follower filled from the store): their events are
        in the store and the replica, so they are durable all the same (``OutputFollower.on_filled``)."""
        if any([self._answers.pop(rid, None) is not None for rid in input_ids]):
            self._wake_waiters()
        self._check_room()

    def _check_room(self) -> None:
        if not self._room.is_set() and len(self._answers) < MAX_OUTSTANDING // 2:
            self._room.set()

    # -------------------------------------------------------------------------------------------- store

    async def commit(self, upto: int | None = None) -> None:
        """Return once everything handed over so far (or up to ``log_position()`` ``upto``) is durable."""
        limit = self._sent if upto is None else upto
        if limit <= self._answered_upto():
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        heapq.heappush(self._waiters, (limit, next(self._counter), fut))
        try:
            async with asyncio.timeout(self.commit_timeout_s):
                await fut
        except TimeoutError:
            # What is still unanswered is given up (its waiters are told to try again): an input Redis lost
            # (restarted without its data) is never answered, and left here it would fail every later commit.
            # Answered after all, the answer is ignored (a retried arrival is then refused: already in the centre).
            for rid, (n, _answer) in list(self._answers.items()):
                if n <= limit:
                    self._fail(rid, Unavailable(f"the router did not answer within {self.commit_timeout_s:g} s"))
            raise Unavailable(f"the router did not answer within {self.commit_timeout_s:g} s") from None

    def _answered_upto(self) -> int:
        """Every record numbered up to this has been answered (or given up)."""
        for n, _answer in self._answers.values():  # in the order handed over: the first is the oldest
            return n - 1
        return self._sent

    def _wake_waiters(self, failed: tuple[int, BaseException] | None = None) -> None:
        done = self._answered_upto()
        waiters = self._waiters
        if failed is not None:  # every commit that covers a failed record fails with it
            n, exc = failed
            keep = []
            for w in waiters:
                if w[0] >= n and not w[2].done():
                    w[2].set_exception(exc)
                else:
                    keep.append(w)
            heapq.heapify(keep)
            self._waiters = waiters = keep
        while waiters and waiters[0][0] <= done:
            _limit, _i, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def log_position(self) -> int:
        return self._sent

    async def room(self) -> None:
        await self._room.wait()

    def close(self) -> None:
        self.closed = True
        for rid in list(self._answers):
            self._fail(rid, Unavailable("the edge is stopping"))
        super().close()


def _sealed(record: InputRecord) -> InputRecord:
    """The record as it leaves: each op as it stands now (an op that gathers stops gathering: ``sealed``)."""
    if not any(type(p) is Stage for p in record.parts):
        return record
    parts: list[Part] = [Stage(p.op.sealed()) if type(p) is Stage else p for p in record.parts]
    return InputRecord(id=record.id, node=record.node, parts=parts)


class _AtEdge:
    """A staged op this node writes itself (``StoreOp.AT_EDGE``), before its record leaves."""

    __slots__ = ("op",)

    def __init__(self, op: StoreOp) -> None:
        self.op = op


class _Outgoing:
    """A record waiting to be handed over; ``ready`` once the rows it writes here are written."""

    __slots__ = ("ready", "record")

    def __init__(self, record: InputRecord, *, ready: bool) -> None:
        self.record = record
        self.ready = ready
