"""An edge started after a chat arrived knows which edge holds the chat's customer (its arrival names it)."""

from __future__ import annotations

import asyncio

import contactcentre.events as E
from tests.cluster_support import centre, until


def test_an_edge_started_later_knows_the_customers_edge(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            r1 = nodes.router("r1")
            await until(lambda: r1.state == "active", "r1 active")
            e1 = await nodes.edge("e1")
            now = e1.now_ms()
            e1.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
            e1.submit(E.ContactArrived(at_ms=now, contact_id="chat-1", queue="support", channel="chat"))
            await e1.commit()
            e2 = await nodes.edge("e2")  # a console's edge restarted (or added) after the hello
            await until(lambda: e2.router.has_contact("chat-1"), "e2's replica")
            assert e2._holders.get("chat-1") == "e1", "e2 will never tell its console that e1 died"

    asyncio.run(main())
