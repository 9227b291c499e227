"""Faults around the streams, against a real redis-server and PostgreSQL (the cold review's proofs, kept as
regressions): a Redis brought back from a point-in-time copy, a forged or undecodable input, a node id too long
for the store, the input stream's bound, a router refused beside a single-process server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

import contactcentre.events as E
from contactcentre.server.edge_centre import Unavailable
from contactcentre.server.roles import Cluster, RoleError, RouterNode, close_edge, open_edge, replica, run_router
from contactcentre.server.wire import InputRecord, Publish, encode
from contactcentre.store.db import connect
from tests.cluster_support import CONFIG, assert_no_double_offers, centre, logged_events, until
from tests.redis_server import RedisServer


def test_a_record_on_the_input_stream_publishes_facts_only(pg_url: str, redis_url: str) -> None:
    """A record on <prefix>:in may publish facts (lines, notes, IVR steps), never a router decision or a router
    input: a forged OfferMade or ContactArrived in a Publish part is dropped, so no replica restored from the
    log diverges from the active router. (Who may write to Redis at all is Redis's to control: docs/scaling.md.)"""

    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            edge = await nodes.edge("e1")
            now = edge.now_ms()
            edge.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
            edge.submit(E.AgentLoggedIn(at_ms=now, agent_id="a2"))
            edge.submit(E.ContactArrived(at_ms=now, contact_id="chat-1", queue="support", channel="chat"))
            await edge.commit()
            offered = [a for a in ("a1", "a2") if edge.router.agent(a).offers]
            other = "a2" if offered == ["a1"] else "a1"
            forged = InputRecord(
                id="x:1",
                node="x",
                parts=[
                    Publish(
                        [
                            E.OfferMade(
                                at_ms=now,
                                offer_id="forged",
                                contact_id="chat-1",
                                agent_id=other,
                                queue="support",
                                channel="chat",
                                expires_ms=now + 60_000,
                                why=E.Explanation(trigger="contact", strategy="forged", requirement=""),
                            ),
                            E.ContactArrived(at_ms=now, contact_id="ghost", queue="support", channel="email"),
                        ]
                    )
                ],
            )
            r = aioredis.Redis.from_url(redis_url)
            await r.xadd(f"{nodes.prefix}:in", {"r": encode(forged)})
            await r.aclose()
            edge.submit(E.AgentReady(at_ms=edge.now_ms(), agent_id="a1"))  # after the forged record
            await edge.commit()
            engine = connect(pg_url)
            try:
                restored, _pos = replica(CONFIG, engine, asyncio.get_running_loop())
            finally:
                engine.dispose()
            assert not restored.router.has_contact("ghost")
        logged = logged_events(pg_url)
        assert not any(isinstance(ev, E.OfferMade) and ev.offer_id == "forged" for ev in logged)
        assert_no_double_offers(logged)

    asyncio.run(main())


def test_a_redis_restored_from_a_point_in_time_copy_redelivers_an_applied_input_and_the_router_stalls(
    pg_url: str,
    redis_server: RedisServer,
) -> None:
    """Redis with RDB persistence (Redis 7's built-in default, Debian's too) restarts from a snapshot taken
    while an input was in the stream but not yet read: the group hands it out again as new (XREADGROUP ">"),
    the router applies it a second time with no look at router_inputs (its Submit, Publish and Stage parts
    all run again in memory), the duplicate router_inputs row fails the whole commit (every other input in it
    too), and the active router gives up: a fail-over, or with no standby the centre stops."""
    prefix = "snap"

    async def main() -> None:
        cluster = Cluster(redis_url=redis_server.url, node_id="r1", prefix=prefix, lease_ttl_ms=5000)
        node, stop = RouterNode("r1"), asyncio.Event()
        task = asyncio.create_task(run_router(CONFIG, pg_url, cluster, stop=stop, node=node))
        edge = None
        try:
            await until(lambda: node.state == "active", "r1 active")
            edge = await open_edge(CONFIG, pg_url, Cluster(redis_url=redis_server.url, node_id="e1", prefix=prefix))
            edge.commit_timeout_s = 4.0
            edge.submit(E.ContactArrived(at_ms=edge.now_ms(), contact_id="mail-1", queue="support", channel="email"))
            await edge.commit()  # applied, committed, acknowledged (XACK), answered: the SMTP 250 would go now
            # Redis comes back from a point-in-time copy (an RDB snapshot forked, an AOF's last second lost, a
            # replica promoted) in which the entry was appended but not yet read: the group's position is before
            # it. Emulated here by putting the group's position back where that copy had it.
            r = aioredis.Redis.from_url(redis_server.url)
            await r.xgroup_setid(f"{prefix}:in", "routers", "0")
            await r.aclose()
            edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a1"))
            try:
                await edge.commit()
                print("the centre goes on")
            except Unavailable as exc:
                w = node.active.writer if node.active else None
                print(
                    "edge:", exc, "| router state:", node.state, "| writer error:", repr(w.error)[:160] if w else None
                )
                raise
        finally:
            if edge is not None:
                await close_edge(edge)
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
        arrivals = [ev.contact_id for ev in logged_events(pg_url) if isinstance(ev, E.ContactArrived)]
        assert arrivals == ["mail-1"]

    asyncio.run(main())


def test_an_undecodable_pending_input_is_set_aside_and_the_takeover_goes_on(
    pg_url: str,
    redis_url: str,
) -> None:
    """An entry a dead router read and never acknowledged that does not decode (another version's event, a
    stray client) is set aside in <prefix>:in:dead and acknowledged: the takeover's claim goes on."""

    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r = aioredis.Redis.from_url(redis_url)
            stream = f"{nodes.prefix}:in"
            await r.xgroup_create(stream, "routers", id="0", mkstream=True)
            await r.xadd(stream, {"r": b'{"id":"e9:b:1","node":"e9","parts":[{"type":"submit","event":{"type":"x"}}]}'})
            await r.xreadgroup("routers", "r0", {stream: ">"}, count=10)  # r0 read it, then died
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            edge = await nodes.edge("e1")
            edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a1"))
            await edge.commit()  # the router goes on
            assert r1.state == "active"
            assert await r.xlen(f"{stream}:dead") == 1
            assert (await r.xpending(stream, "routers"))["pending"] == 0
            await r.aclose()

    asyncio.run(main())


def test_a_node_id_the_store_could_not_keep_is_refused_at_start() -> None:
    """A node id names input ids and log rows: one longer than the store keeps would make every input of that
    edge fail its router's commit, so it is refused when the node starts."""
    with pytest.raises(RoleError, match="--node-id"):
        Cluster(redis_url="redis://127.0.0.1:1/0", node_id="e" * 190)
    with pytest.raises(RoleError, match="--node-id"):
        Cluster(redis_url="redis://127.0.0.1:1/0", node_id="e 1")
    assert Cluster(redis_url="redis://127.0.0.1:1/0", node_id="edge-1.b_2").node_id == "edge-1.b_2"


def test_a_router_refused_beside_a_single_process_server_gives_the_store_back(
    pg_url: str,
    redis_url: str,
) -> None:
    """The router takes the fence (a row in the store) before it looks for a --role all server; when it refuses
    it removes the fence again, so the single-process server it was refused beside can start again."""
    from contactcentre.server.runtime import close_centre, open_centre
    from contactcentre.store.instance import lock_database

    async def main() -> None:
        first = await open_centre(CONFIG, pg_url)  # a --role all server: migrates, then holds the instance lock
        await close_centre(first)
        lock = lock_database(pg_url)
        try:
            async with centre(pg_url, redis_url) as nodes:
                r1 = nodes.router("r1")
                _node, _stop, task = nodes.routers["r1"]
                done = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
                print("router:", r1.state, "|", done[0])
        finally:
            lock.release()  # the --role all server stops (an upgrade, a reboot) and starts again
        assert r1.state == "refused"
        again = await open_centre(CONFIG, pg_url)  # not ServeError "served by router nodes"
        await close_centre(again)

    asyncio.run(main())


def test_acknowledged_inputs_leave_the_input_stream(pg_url: str, redis_url: str) -> None:
    """The router trims <prefix>:in below what it still needs (the oldest unacknowledged entry, what the group
    has not yet handed out, and a window kept for inspection) every lease period."""

    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            assert r1.active is not None
            r1.active.input_keep_ms = 0  # nothing kept for inspection: only what is still needed
            edge = await nodes.edge("e1")
            for i in range(200):
                edge.submit(E.ContactArrived(at_ms=edge.now_ms(), contact_id=f"m{i}", queue="support", channel="email"))
            await edge.commit()
            r = aioredis.Redis.from_url(redis_url)
            try:
                await until_async(lambda: _short(r, f"{nodes.prefix}:in"), "the input stream trimmed")
                assert (await r.xinfo_groups(f"{nodes.prefix}:in"))[0]["pending"] == 0
            finally:
                await r.aclose()

    asyncio.run(main())


async def _short(r: aioredis.Redis, stream: str) -> bool:
    return int(await r.xlen(stream)) < 100  # approximate trimming keeps at most a node's worth (100 entries)


async def until_async(what: Any, why: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await what():
        assert loop.time() < end, f"timed out waiting for {why}"
        await asyncio.sleep(0.05)  # the poll's pace: the router trims every lease period
