"""Starting the nodes of a many-process centre: an edge's centre (``open_edge``) and a router node
(``run_router``: standby, takeover, active). ``docs/scaling.md`` tells the whole story; ``runtime.serve``
wires an edge's front doors around ``open_edge``.

A many-process centre keeps its store on PostgreSQL: SQLite is one machine's file, and its lock would let only
one process in anyway. Both functions refuse it with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contactcentre.acd import LiveStats, Router
from contactcentre.config import CentreConfig
from contactcentre.events import decode
from contactcentre.server.bus import EdgeHeartbeat, OutputFollower, Streams, connect_redis
from contactcentre.server.clock import LoopClock
from contactcentre.server.driver import FollowerDriver
from contactcentre.server.edge_centre import COMMIT_TIMEOUT_S

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from contactcentre.server.edge_centre import EdgeCentre
    from contactcentre.server.router_node import ActiveRouter
    from contactcentre.store.db import Engine

log = logging.getLogger(__name__)

LEASE_TTL_MS = 2000  # a dead router's lease lapses after this; its standby asks every quarter of it
EDGE_TTL_MS = 3000  # an edge whose heartbeat is this old is dead: the router ends the calls it held
REPLAY_CHUNK = 10_000
ROUTER_COMMIT_DELAY_S = 0.002
TAKEOVER_RETRY_S = 0.5  # a takeover the store (or Redis) failed is tried again this often, the lease kept


class RoleError(Exception):
    """A node cannot start (SQLite given, the database or Redis unreachable); the message says why."""


NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # it names keys, input ids and log rows: kept short


@dataclass
class Cluster:
    """Where a node finds the others: Redis, the key prefix, its own name."""

    redis_url: str
    node_id: str
    prefix: str = "cc"
    lease_ttl_ms: int = LEASE_TTL_MS
    # An edge answers "try again" when the router's word on an input has not come back in this long
    # (``EdgeCentre.commit``): the longest a person waits on a router fail-over or a Redis or PostgreSQL outage.
    commit_timeout_s: float = COMMIT_TIMEOUT_S
    # An edge that runs the switch (the CTI link, SIP, the IVR, callbacks). One edge of a centre does: a call
    # and the agent's phone that takes it must be on one switch, and callbacks are dialled once.
    voice: bool = False

    def __post_init__(self) -> None:
        for what, value in (("--node-id", self.node_id), ("--redis-prefix", self.prefix)):
            if not NODE_ID.fullmatch(value):
                raise RoleError(
                    f"{what} {value!r}: 1 to 64 letters, digits, '.', '_' or '-', the first a letter or digit"
                )

    @property
    def streams(self) -> Streams:
        return Streams(self.prefix)


def open_store_for_nodes(database_url: Any) -> Engine:
    """The shared store, migrated: PostgreSQL only."""
    from contactcentre.store.db import DatabaseError, check_current, connect, is_empty, migrate

    try:
        engine = connect(database_url)
    except DatabaseError as exc:
        raise RoleError(str(exc)) from None
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise RoleError(
            "--role router and --role edge share one store between processes and machines: that needs"
            f" PostgreSQL (--database-url postgresql://...), not {engine.dialect.name}. For one process on"
            " an embedded SQLite file use --role all (the default)."
        )
    try:
        if is_empty(engine):
            migrate(engine)
        check_current(engine)
    except Exception as exc:
        engine.dispose()
        raise RoleError(f"database {engine.url.render_as_string(hide_password=True)}: {exc}") from None
    return engine


def replica(config: CentreConfig, engine: Engine, loop: asyncio.AbstractEventLoop) -> tuple[FollowerDriver, int]:
    """A router restored from the store's log (as at a restart) and the last event id it holds."""
    from contactcentre.store.eventlog import first_logged_ms
    from contactcentre.store.fence import events_after, last_event_id

    with engine.connect() as conn:
        first = first_logged_ms(conn)
        end = last_event_id(conn)
    clock = LoopClock(loop)
    router = Router(config, start_ms=first if first is not None else clock.now_ms())
    stats = LiveStats(short_abandon_ms=round(config.routing.short_abandon_s * 1000))
    driver = FollowerDriver(router, clock, loop, stats=stats)
    pos = 0
    while pos < end:
        with engine.connect() as conn:
            rows = events_after(conn, pos, min(end, pos + REPLAY_CHUNK))
        if not rows:
            break
        driver.replay([decode(p) for _id, p in rows])
        pos = rows[-1][0]
    if router.now_ms > clock.now_ms():
        driver.clock = LoopClock(loop, not_before_ms=router.now_ms)
    return driver, pos


async def open_edge(config: CentreConfig, database_url: Any, cluster: Cluster) -> EdgeCentre:
    """An edge's centre: a replica restored from the store, following the output stream."""
    from contactcentre.server.edge_centre import EdgeCentre

    loop = asyncio.get_running_loop()
    engine = open_store_for_nodes(database_url)
    redis = connect_redis(cluster.redis_url)
    try:
        await redis.ping()
    except Exception as exc:
        engine.dispose()
        await redis.aclose()
        raise RoleError(f"Redis at {cluster.redis_url} cannot be reached: {exc}") from None
    driver, pos = replica(config, engine, loop)  # start-up: the loop serves nothing yet
    centre = EdgeCentre(
        config, engine, driver, redis, cluster.streams, cluster.node_id, commit_timeout_s=cluster.commit_timeout_s
    )
    follower = OutputFollower(
        redis, cluster.streams, driver, engine, pos, on_record=centre.answered, on_filled=centre.filled
    )
    centre.learn_holders()
    centre.follower = follower
    centre.heartbeat = EdgeHeartbeat(redis, cluster.streams, cluster.node_id, EDGE_TTL_MS)
    centre.tasks = [
        loop.create_task(follower.run(), name="edge-follower"),
        loop.create_task(centre.heartbeat.run(), name="edge-heartbeat"),
        loop.create_task(centre.hear_signals(), name="edge-signals"),
        loop.create_task(centre.watch_edges(gone_ms=EDGE_TTL_MS), name="edge-watch"),
    ]
    return centre


async def close_edge(centre: EdgeCentre) -> None:
    if centre.follower is not None:
        centre.follower.stop()
    if centre.heartbeat is not None:
        await centre.heartbeat.end()
    for task in centre.tasks:
        task.cancel()
    await asyncio.gather(*centre.tasks, return_exceptions=True)
    centre.close()
    await centre.redis.aclose()
    centre.engine.dispose()


# --------------------------------------------------------------------------------------------- router


def _stored_fence(engine: Engine) -> int:
    from contactcentre.store.fence import fence_holder

    with engine.connect() as conn:
        held = fence_holder(conn)
    return 0 if held is None else held[0]


def _single_process_owner(database_url: Any) -> str | None:
    """The message naming a ``--role all`` server that holds the store, or None."""
    from contactcentre.store.instance import DatabaseInUse, lock_database

    try:
        lock_database(database_url).release()
    except DatabaseInUse as exc:
        return str(exc)
    return None


@dataclass
class RouterNode:
    """What ``run_router`` reports as it goes (tests and the benchmark watch it)."""

    node_id: str
    state: str = "starting"  # starting | standby | active | stopped | lost
    fence: int | None = None
    active: ActiveRouter | None = None
    follower: OutputFollower | None = None
    holder: str | None = None  # state "lost": the node that holds the lease (or the fence) now
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, state: str) -> None:
        self.state = state
        self.changed.set()
        self.changed = asyncio.Event()


async def run_router(
    config: CentreConfig,
    database_url: Any,
    cluster: Cluster,
    *,
    stop: asyncio.Event | None = None,
    node: RouterNode | None = None,
    on_state: Callable[[RouterNode], None] | None = None,
) -> RouterNode:
    """Run a router node until ``stop`` (or until it loses the lease: ``node.state == "lost"``)."""
    from redis.exceptions import RedisError

    from contactcentre.server.centre import Centre
    from contactcentre.server.lease import Lease, next_fence
    from contactcentre.server.router_node import ActiveDriver, ActiveRouter, Recorder
    from contactcentre.store.db import DriverFailure
    from contactcentre.store.fence import release_fence, take_fence
    from contactcentre.store.writer import StoreWriter

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    node = node or RouterNode(cluster.node_id)

    def state(s: str) -> None:
        node.set(s)
        log.warning("router %s: %s", cluster.node_id, s)
        if on_state is not None:
            on_state(node)

    engine = open_store_for_nodes(database_url)
    redis: Redis = connect_redis(cluster.redis_url)
    streams = cluster.streams
    holding: asyncio.Task[None] | None = None
    try:
        try:
            await redis.ping()
        except Exception as exc:
            raise RoleError(f"Redis at {cluster.redis_url} cannot be reached: {exc}") from None
        driver, pos = replica(config, engine, loop)  # start-up: the loop serves nothing yet
        follower = OutputFollower(redis, streams, driver, engine, pos)
        node.follower = follower
        following = loop.create_task(follower.run(), name="standby-follower")
        lease = Lease(redis, streams.lease, cluster.node_id, cluster.lease_ttl_ms)
        state("standby")
        won = False
        while not stop.is_set():
            pause_s = cluster.lease_ttl_ms / 4000
            try:
                won = await lease.acquire()
                if not won:
                    # Asked again just after the holder's lease runs out (if it is not renewed by then): a dead
                    # router's successor comes within ttl of its last renewal, not ttl + ttl / 4.
                    left_ms = await redis.pttl(streams.lease)
                    if left_ms >= 0:
                        pause_s = min(pause_s, left_ms / 1000 + 0.002)
            except Exception as exc:
                log.warning("router %s: asking for the lease failed: %s", cluster.node_id, exc)
            if won:
                break
            with contextlib.suppress(TimeoutError):  # the lease's rhythm
                await asyncio.wait_for(stop.wait(), pause_s)
        # From the lease won, it is renewed during the takeover too (stopping the follower, reading the store,
        # opening the writer and catching up can outlast what is left of it on a loaded machine); the active
        # router's own renewal follows on.
        lost_lease = asyncio.Event()
        if won:
            holding = loop.create_task(_hold(lease, cluster.lease_ttl_ms, lost_lease), name="takeover-lease")
        follower.stop()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        if not won:
            state("stopped")
            return node
        # Takeover. The fence goes into the store first: from then on the old router cannot commit.

        def fence(token: int, now: int) -> None:
            with engine.begin() as conn:
                take_fence(conn, token, cluster.node_id, now)

        while True:
            try:
                held = await loop.run_in_executor(None, _stored_fence, engine)
                token = await next_fence(redis, streams.fence, above=held)  # a Redis that lost its data starts over
                await loop.run_in_executor(None, fence, token, driver.clock.now_ms())
                # A ``--role all`` server on this store routes by itself (it holds the store's instance lock and
                # does not look at the lease): never route beside it. (It refuses to start once the fence is taken,
                # so one of the two always sees the other.)
                owner = await loop.run_in_executor(None, _single_process_owner, database_url)
                if owner is not None:

                    def unfence(token: int = token) -> None:  # the store stays that server's: it can start again
                        with engine.begin() as conn:
                            release_fence(conn, token)

                    await loop.run_in_executor(None, unfence)
                    state("refused")
                    raise RoleError(f"cannot take over: {owner}")
                await follower.fill()  # what the old router committed and this replica had not seen
                # Every hop of a contact waits for this writer's commit (outputs are published once durable), so
                # it does not hold a lone record back for company: a commit under way gathers what comes anyway.
                writer = StoreWriter(engine, loop=loop, fence=token, max_delay_s=ROUTER_COMMIT_DELAY_S)
                break
            except (DriverFailure, RedisError, OSError) as exc:
                # PostgreSQL (or Redis) failed mid-takeover: the lease is kept (``holding``) and the takeover
                # tried again from the start with a new token, until it goes through or the lease is lost.
                if lost_lease.is_set() or stop.is_set():
                    if lost_lease.is_set():
                        with contextlib.suppress(Exception):
                            node.holder = await lease.holder()
                    state("lost" if lost_lease.is_set() else "stopped")
                    return node
                log.warning("router %s: the takeover failed (%s); trying again", cluster.node_id, exc)
                await asyncio.sleep(TAKEOVER_RETRY_S)  # a reconnection pace
        node.fence = token
        router = driver.router
        clock = LoopClock(loop, not_before_ms=router.now_ms)
        active_driver = ActiveDriver(router, clock, loop, stats=driver.stats, writer=writer)
        active_driver.decisions.extend(driver.decisions)
        active_driver.outcomes.update(driver.outcomes)
        centre = Centre(config, engine, active_driver, writer)
        recorder = Recorder(writer, token)
        active_driver.tap = recorder
        active = ActiveRouter(
            centre, redis, streams, cluster.node_id, lease, recorder, lease_ttl_ms=cluster.lease_ttl_ms
        )
        node.active = active
        active_driver.catch_up()  # what fell due since the old router's last word, each at its own instant
        assert holding is not None
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        if lost_lease.is_set():
            active.give_up()  # another router won the lease meanwhile: it takes a fence above ours
        else:
            state("active")
        try:
            if not lost_lease.is_set():
                await active.run(stop)
        finally:
            active_driver.close()
            try:
                await writer.close()
            except Exception as exc:  # fenced: a newer router owns the store; nothing of ours is promised
                log.error("router %s: the last commit failed: %s", cluster.node_id, exc)
            centre.close()
            if active.lost.is_set():
                node.holder = active.holder
                if node.holder is None:
                    with contextlib.suppress(Exception):
                        node.holder = await lease.holder()
                state("lost")
            else:
                try:
                    await lease.release()
                except Exception as exc:
                    log.warning("router %s: releasing the lease failed: %s", cluster.node_id, exc)
                state("stopped")
        return node
    finally:
        if holding is not None:
            holding.cancel()
        await redis.aclose()
        engine.dispose()


async def _hold(lease: Any, ttl_ms: int, lost: asyncio.Event) -> None:
    """Renew ``lease`` every ``ttl / 3`` until cancelled; set ``lost`` and return if it is someone else's."""
    while True:
        await asyncio.sleep(ttl_ms / 3000)  # the lease's rhythm
        try:
            if not await lease.renew():
                lost.set()
                return
        except Exception as exc:  # Redis unreachable: try again; the lease runs out if it stays so
            log.warning("router %s: renewing the lease failed: %s", lease.node_id, exc)
