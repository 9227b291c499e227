"""The active router's lease and the fencing counter, on a real redis-server of the test's own
(tests/redis_server.py). Expiry is waited for by polling with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from contactcentre.server.lease import Lease, next_fence

KEY = "cc:lease"
DEADLINE_S = 10  # any one wait, on a slow shared CI machine


def run(test: Callable[[Any], Awaitable[None]], url: str) -> None:
    async def go() -> None:
        client = aioredis.from_url(url)
        try:
            await test(client)
        finally:
            await client.aclose()

    asyncio.run(go())


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {DEADLINE_S} s: {what}"
        await asyncio.sleep(0.01)


def test_one_node_holds_the_lease_at_a_time(redis_url: str) -> None:
    async def test(r: Any) -> None:
        a, b = Lease(r, KEY, "router-a", 30_000), Lease(r, KEY, "router-b", 30_000)
        assert await a.holder() is None
        assert await a.acquire()
        assert a.valid_until is not None
        assert not await b.acquire() and b.valid_until is None
        assert not await a.acquire()  # a holder renews; acquire is only for a free lease
        assert await b.holder() == "router-a"
        assert 29_000 < await r.pttl(KEY) <= 30_000

    run(test, redis_url)


def test_renew_extends_only_the_holders_lease(redis_url: str) -> None:
    async def test(r: Any) -> None:
        a, b = Lease(r, KEY, "router-a", 1_000), Lease(r, KEY, "router-b", 60_000)
        assert await a.acquire()
        await until(lambda: _pttl_below(r, 800), "the lease's time to run went down")
        before = a.valid_until
        assert await a.renew()
        assert await r.pttl(KEY) > 900 and a.valid_until is not None and before is not None
        assert a.valid_until > before
        assert not await b.renew()  # not b's: untouched, and b knows it holds nothing
        assert await r.pttl(KEY) <= 1_000 and await b.holder() == "router-a" and b.valid_until is None
        await r.script_flush()  # a restarted Redis has forgotten the script: it is loaded again
        assert await a.renew()

    run(test, redis_url)


async def _pttl_below(r: Any, ms: int) -> bool:
    return 0 < await r.pttl(KEY) < ms


def test_a_lease_not_renewed_expires_and_another_node_takes_it(redis_url: str) -> None:
    async def test(r: Any) -> None:
        a, b = Lease(r, KEY, "router-a", 150), Lease(r, KEY, "router-b", 150)
        assert await a.acquire()
        assert not await b.acquire()
        await until(b.acquire, "the standby took the expired lease")  # a stopped renewing (it "died")
        assert await a.holder() == "router-b"
        assert not await a.renew() and a.valid_until is None  # the old holder learns it lost the lease
        await a.release()  # and its late release does not free the successor's lease
        assert await r.get(KEY) == b"router-b"
        assert await b.renew()

    run(test, redis_url)


def test_only_the_holder_releases(redis_url: str) -> None:
    async def test(r: Any) -> None:
        a, b = Lease(r, KEY, "router-a", 30_000), Lease(r, KEY, "router-b", 30_000)
        assert await a.acquire()
        await b.release()
        assert await b.holder() == "router-a"
        await a.release()
        assert await a.holder() is None and a.valid_until is None
        assert await b.acquire()  # at once: no waiting for an expiry after a clean release

    run(test, redis_url)


def test_fencing_tokens_only_grow(redis_url: str) -> None:
    async def test(r: Any) -> None:
        assert [await next_fence(r, "cc:fence") for _ in range(3)] == [1, 2, 3]
        assert await next_fence(r, "cc:fence", above=10) == 11  # the store's token is ahead of Redis
        assert await next_fence(r, "cc:fence", above=5) == 12
        assert await next_fence(r, "cc:fence") == 13
        await r.flushall()  # Redis lost its data (restarted without persistence)
        assert await next_fence(r, "cc:fence") == 1  # why a router passes the store's token as the floor
        assert await next_fence(r, "cc:fence", above=13) == 14

    run(test, redis_url)


def test_a_lease_survives_nothing_of_a_redis_restart(redis_server: Any) -> None:
    """Redis runs without persistence: after a crash the lease is gone, the old holder's renewal fails (it
    must stop routing) and a standby can take it at once."""

    async def test(r: Any) -> None:
        a, b = Lease(r, KEY, "router-a", 30_000), Lease(r, KEY, "router-b", 30_000)
        assert await a.acquire()
        redis_server.kill()
        redis_server.start()

        async def renewed() -> bool:
            try:
                return await a.renew()
            except aioredis.ConnectionError:  # the pooled connection died with the server; the next one is new
                return await a.renew()

        assert not await renewed()
        assert await b.acquire() and await a.holder() == "router-b"

    run(test, redis_server.url)
