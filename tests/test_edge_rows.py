"""An edge's own rows (StoreOp.AT_EDGE) hold the records after them; a record its caller was told to try again
about, or made before the edge closed, never leaves (it is known not to have been applied)."""

from __future__ import annotations

import asyncio

import pytest

from contactcentre.server.centre import Unavailable
from contactcentre.store.ops import HelloRows, ReadRecords
from tests.cluster_support import centre, until


def _hello() -> HelloRows:
    return HelloRows(
        now_ms=1,
        customer_id="cus-x",
        new_customer=True,
        name=None,
        email=None,
        visitor="v-x",
        case_id="case-x",
        topic=None,
        queue="sales",
    )


def test_a_record_given_up_before_it_left_the_edge_is_not_handed_over(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            edge = await nodes.edge("e1")
            edge.commit_timeout_s = 0.3
            gate = asyncio.Event()

            async def slow_write(fn, *args, **kw):  # PostgreSQL slow or cut at the edge
                await gate.wait()

            edge.write = slow_write  # type: ignore[method-assign]
            edge.stage(_hello())  # a chat's hello rows: written here first
            edge.stage(ReadRecords(reads=[("cus-y", 1, "agent", "x")]))  # unrelated: no rows of its own here
            await asyncio.sleep(0.05)
            n_early = await edge.redis.xlen(edge.streams.inputs)
            with pytest.raises(Unavailable):
                await edge.commit()  # both callers are told to try again
            gate.set()
            await until(lambda: not edge._queue, "queue drained")
            await asyncio.sleep(0.1)
            n_late = await edge.redis.xlen(edge.streams.inputs)
            assert n_early == 0  # (a) head-of-line: the unrelated record waited on PostgreSQL
            assert n_late == 0, "records already answered Unavailable were handed over (and will be applied)"

    asyncio.run(main())


def test_records_leave_after_the_edge_closed(pg_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with centre(pg_url, redis_url) as nodes:
            edge = await nodes.edge("e2")
            gate = asyncio.Event()
            sent: list[int] = []

            async def slow_write(fn, *args, **kw):
                await gate.wait()

            edge.write = slow_write  # type: ignore[method-assign]
            edge.stage(_hello())
            await asyncio.sleep(0.05)
            edge.close()  # the edge stops: every answer failed "the edge is stopping"
            gate.set()
            await until(lambda: not edge._queue, "queue drained")
            await asyncio.sleep(0.1)
            sent.append(await edge.redis.xlen(edge.streams.inputs))
            assert sent[0] == 0

    asyncio.run(main())
