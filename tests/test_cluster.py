"""One centre in several nodes over Redis and PostgreSQL (docs/scaling.md), in one test process: a router node
(standby, then active), edges whose centre is a replica of it, a second router taking over.

Real redis-server (a private one per test, ``redis_url``) and a fresh PostgreSQL database. Waiting is on the
nodes' own events or by polling with a deadline, never by sleeping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import contactcentre.events as E
from contactcentre.server.bus import OutputFollower, Streams
from contactcentre.server.roles import Cluster, RoleError, open_edge, run_router
from contactcentre.server.wire import decode_output
from tests.cluster_support import CONFIG, Nodes, assert_no_double_offers, centre, logged_events, until


def test_an_edge_routes_through_the_router_and_reads_its_replica(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            edge = await nodes.edge("e1")
            now = edge.now_ms()
            assert edge.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1")) is None
            edge.submit(E.ContactArrived(at_ms=now, contact_id="chat-1", queue="support", channel="chat"))
            await edge.commit()
            # The replica is where the router is: the offer it made is readable here.
            assert edge.router.contact("chat-1").state == "offered"
            offer = edge.router.agent("a1").offers[0]
            # A refusal the replica foresees is answered at once, and nothing is sent.
            refusal = edge.submit(E.OfferAccepted(at_ms=now, offer_id="nope", contact_id="chat-1", agent_id="a1"))
            assert refusal is not None
            edge.submit(E.OfferAccepted(at_ms=now, offer_id=offer.id, contact_id="chat-1", agent_id="a1"))
            await edge.commit()
            assert edge.router.contact("chat-1").state == "connected"
            # A second edge started now restores the same state from the store and the stream.
            edge2 = await nodes.edge("e2")
            await until(lambda: edge2.router.has_contact("chat-1"), "e2's replica")
            assert edge2.router.contact("chat-1").state == "connected"

        logged = logged_events(pg_url)
        arrivals = [ev for ev in logged if isinstance(ev, E.ContactArrived)]
        assert [ev.contact_id for ev in arrivals] == ["chat-1"]

    asyncio.run(main())


def test_a_standby_takes_over_when_the_active_router_dies(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            r2 = nodes.router("r2")
            await until(lambda: r2.state == "standby", "r2 standby")
            edge = await nodes.edge("e1")
            now = edge.now_ms()
            edge.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
            for i in range(5):
                edge.submit(E.ContactArrived(at_ms=now, contact_id=f"mail-{i}", queue="support", channel="email"))
            await edge.commit()
            assert edge.router.contact("mail-0").state == "offered"
            await until(lambda: r2.follower is not None and r2.follower.pos >= 6, "r2 warm")

            nodes.crash("r1")
            loop = asyncio.get_running_loop()
            died = loop.time()
            await until(lambda: r2.state == "active", "r2 takes over")
            assert loop.time() - died < 3.0
            # The new router goes on: an agent logs in on the edge and is offered what waits.
            edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a2"))
            await edge.commit()
            assert edge.router.agent("a2").offers

        logged = logged_events(pg_url)
        arrived = [ev.contact_id for ev in logged if isinstance(ev, E.ContactArrived)]
        assert sorted(arrived) == [f"mail-{i}" for i in range(5)]  # each once
        assert_no_double_offers(logged)

    asyncio.run(main())


def test_an_edge_answers_inputs_whose_output_records_were_lost(pg_url: str, redis_url: str) -> None:
    """An input applied and committed whose output record the edge never reads (Redis restarted without its
    data, a router that died between commit and publish) is answered when the edge fills the gap from the store,
    not left to time out as "try again"."""

    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            edge = await nodes.edge("e1")
            edge.commit_timeout_s = 5.0
            stopped = edge.follower
            assert stopped is not None
            stopped.stop()
            following = edge.tasks[0]  # open_edge's first task follows the output stream
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a1"))
            first = edge.log_position()
            outputs = f"{nodes.prefix}:out"

            async def published() -> bool:
                entries = await edge.redis.xrange(outputs)
                return any(decode_output(f[b"r"]).node == "e1" for _id, f in entries)

            loop = asyncio.get_running_loop()
            end = loop.time() + 20
            while not await published():
                assert loop.time() < end, "the router did not publish"
                await asyncio.sleep(0.01)  # the poll's pace
            await edge.redis.xtrim(outputs, maxlen=0)  # the record is lost
            follower = OutputFollower(
                edge.redis,
                Streams(nodes.prefix),
                edge.driver,
                edge.engine,
                stopped.pos,
                on_record=edge.answered,
                on_filled=edge.filled,
            )
            edge.follower = follower
            edge.tasks[0] = loop.create_task(follower.run())
            edge.submit(E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id="a2"))
            await edge.commit(first)  # answered from the store: no Unavailable after 5 s
            await edge.commit()
            assert follower.gaps == 1
            assert edge.router.agent("a1").logged_in and edge.router.agent("a2").logged_in

    asyncio.run(main())


def test_router_and_edge_refuse_sqlite(tmp_path: Any) -> None:
    async def main() -> None:
        cluster = Cluster(redis_url="redis://127.0.0.1:1/0", node_id="x")
        with pytest.raises(RoleError, match="PostgreSQL"):
            await open_edge(CONFIG, tmp_path / "c.sqlite", cluster)
        with pytest.raises(RoleError, match="PostgreSQL"):
            await run_router(CONFIG, tmp_path / "c.sqlite", cluster)

    asyncio.run(main())


def test_no_single_process_server_routes_beside_router_nodes(pg_url: str, redis_url: str) -> None:
    """``--role all`` and ``--role router`` on one store: whichever comes second refuses, naming the other."""
    from contactcentre.server.runtime import ServeError, open_centre
    from contactcentre.store.instance import lock_database

    async def main() -> None:
        # A --role all server holds the store: a router that wins the lease does not route beside it.
        held = lock_database(pg_url)
        try:
            nodes = Nodes(pg_url, redis_url)
            with pytest.raises(RoleError, match=r"cannot take over.*pid"):
                await run_router(CONFIG, pg_url, nodes.cluster("r1"))
        finally:
            held.release()
        # A router routes this store: a --role all server refuses it, naming the router.
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            with pytest.raises(ServeError, match=r"served by router nodes.*r1.*--role router"):
                await open_centre(CONFIG, pg_url)

    asyncio.run(main())


def test_the_calls_of_a_dead_edge_are_ended_and_logged_as_such(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            edge = await nodes.edge("e1")
            other = await nodes.edge("e2")
            now = edge.now_ms()
            edge.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
            for i, node in enumerate(("e1", "e1", "e2")):
                edge.submit(
                    E.ContactArrived(
                        at_ms=now, contact_id=f"call-{i}", queue="support", channel="voice", attributes={"edge": node}
                    )
                )
            await edge.commit()
            assert r1.active is not None
            r1.active.edge_gone_ms = 300  # dead once missing this long (3 s in service)
            # e2 dies: its heartbeat stops and its key expires (here: goes at once).
            assert other.heartbeat is not None
            other.heartbeat.stop()
            await other.redis.delete(nodes.cluster("e2").streams.node("e2"))
            await until(lambda: not edge.router.has_contact("call-2"), "call-2 ended")
            assert edge.router.has_contact("call-0") and edge.router.has_contact("call-1")

        left = [ev for ev in logged_events(pg_url) if isinstance(ev, E.CustomerLeft)]
        assert [(ev.contact_id, ev.reason) for ev in left] == [("call-2", "edge_lost")]

    asyncio.run(main())
