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
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec

from contactcentre.acd import RouterError
from contactcentre.events import Event
from contactcentre.server.centre import Centre
from contactcentre.server.wire import InputRecord, OutputRecord, Part, Publish, Stage, Submit, encode
from contactcentre.store.ops import StoreOp

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from contactcentre.config import CentreConfig
    from contactcentre.server.bus import OutputFollower, Streams
    from contactcentre.server.driver import FollowerDriver
    from contactcentre.store.db import Engine

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 10.0  # an edge gives up waiting for the router's word after this: "try again"
MAX_OUTSTANDING = 20_000  # inputs handed over and not yet answered before intake waits (``room``)


class Unavailable(Exception):
    """The router's answer could not be had (Redis or the router down): nothing may be promised."""


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
        self.commit_timeout_s = commit_timeout_s
        self._boot = f"{os.getpid():x}{self.clock.now_ms():x}"  # ids stay unique across restarts of the node
        self._counter = itertools.count(1)
        self._sent = 0  # records handed over so far (``log_position``)
        # input id -> (number, answer): its output record, or None when it came from the store (``filled``)
        self._answers: dict[str, tuple[int, asyncio.Future[OutputRecord | None]]] = {}
        self._group: list[Part] | None = None  # inside ``atomic()``: the parts of the record being built
        self._depth = 0
        self._queue: list[tuple[str, bytes]] = []  # encoded records not yet sent to Redis
        self._flushing = False
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
        if not isinstance(work, StoreOp):
            raise TypeError(f"an edge stages only named store operations (store/ops.py), not {work!r}")
        if self.closed:
            raise RuntimeError("the centre is closed")
        self._part(Stage(work))

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

    def _part(self, part: Part) -> None:
        if self._group is not None:
            self._group.append(part)
        else:
            self._send([part])

    def _send(self, parts: list[Part]) -> None:
        n = next(self._counter)
        rid = f"{self.node_id}:{self._boot}:{n}"
        record = InputRecord(id=rid, node=self.node_id, parts=parts)
        self._sent += 1
        self._answers[rid] = (self._sent, self.loop.create_future())
        if len(self._answers) >= MAX_OUTSTANDING:
            self._room.clear()
        self._queue.append((rid, encode(record)))
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self.loop.create_task(self._flush(), name="edge-send")

    async def _flush(self) -> None:
        """Send what this loop turn handed over in one round trip (a pipeline of XADDs)."""
        from redis.exceptions import RedisError

        try:
            while self._queue:
                batch, self._queue = self._queue, []
                pipe = self.redis.pipeline(transaction=False)
                for _rid, data in batch:
                    pipe.xadd(self.streams.inputs, {"r": data})
                try:
                    await pipe.execute()
                except (RedisError, OSError) as exc:
                    # Whether Redis kept them cannot be known: their answers fail, and the people waiting are
                    # told to try again. (Had they arrived, the router applies them all the same.)
                    log.warning("edge: %d inputs could not be handed to Redis: %s", len(batch), exc)
                    for rid, _data in batch:
                        self._fail(rid, Unavailable(f"the router could not be reached: {exc}"))
        finally:
            self._flushing = False

    def _fail(self, rid: str, exc: BaseException) -> None:
        got = self._answers.pop(rid, None)
        if got is not None and not got[1].done():
            got[1].set_exception(exc)
            got[1].exception()  # retrieved: nobody may be waiting for this one
        self._check_room()

    def answered(self, record: OutputRecord) -> None:
        """An output record came back (``OutputFollower.on_record``): the input it answers is durable."""
        if record.node != self.node_id or record.input_id is None:
            return
        got = self._answers.pop(record.input_id, None)
        if got is not None and not got[1].done():
            got[1].set_result(record)
        self._check_room()

    def filled(self, input_ids: list[str]) -> None:
        """Inputs whose output records never came (a gap the follower filled from the store): their events are
        in the store and the replica, so they are durable all the same (``OutputFollower.on_filled``)."""
        for rid in input_ids:
            got = self._answers.pop(rid, None)
            if got is not None and not got[1].done():
                got[1].set_result(None)
        self._check_room()

    def _check_room(self) -> None:
        if not self._room.is_set() and len(self._answers) < MAX_OUTSTANDING // 2:
            self._room.set()

    # -------------------------------------------------------------------------------------------- store

    async def commit(self, upto: int | None = None) -> None:
        """Return once everything handed over so far (or up to ``log_position()`` ``upto``) is durable."""
        limit = self._sent if upto is None else upto
        waiting = [fut for n, fut in self._answers.values() if n <= limit]
        if not waiting:
            return
        try:
            async with asyncio.timeout(self.commit_timeout_s):
                for fut in waiting:
                    await asyncio.shield(fut)
        except TimeoutError:
            # What is still unanswered is given up (its waiters are told to try again): an input Redis lost
            # (restarted without its data) is never answered, and left here it would fail every later commit.
            # Answered after all, the answer is ignored (a retried arrival is then refused: already in the centre).
            for rid, (n, fut) in list(self._answers.items()):
                if n <= limit and not fut.done():
                    self._fail(rid, Unavailable(f"the router did not answer within {self.commit_timeout_s:g} s"))
            raise Unavailable(f"the router did not answer within {self.commit_timeout_s:g} s") from None

    def log_position(self) -> int:
        return self._sent

    async def room(self) -> None:
        await self._room.wait()

    def close(self) -> None:
        self.closed = True
        for rid in list(self._answers):
            self._fail(rid, Unavailable("the edge is stopping"))
        super().close()
