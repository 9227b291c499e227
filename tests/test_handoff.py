"""The store's hand-off to its threads (server/handoff.py): results, errors, order, cancellation and close."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contactcentre.config import parse_config
from contactcentre.server.handoff import Handoff
from contactcentre.server.runtime import close_centre, open_centre


def test_results_and_errors_come_back_to_their_callers() -> None:
    asyncio.run(_results_and_errors_come_back_to_their_callers())


async def _results_and_errors_come_back_to_their_callers() -> None:
    pool = Handoff(asyncio.get_running_loop(), 2, "t")
    try:

        def fail() -> int:
            raise ValueError("no")

        a, b, c = pool.run(lambda: 1), pool.run(fail), pool.run(lambda: threading.current_thread().name)
        assert await a == 1
        with pytest.raises(ValueError, match="no"):
            await b
        assert (await c).startswith("t_")  # on one of the pool's threads, not the loop's
    finally:
        pool.close()


def test_one_turn_is_one_batch_run_in_order() -> None:
    asyncio.run(_one_turn_is_one_batch_run_in_order())


async def _one_turn_is_one_batch_run_in_order() -> None:
    pool = Handoff(asyncio.get_running_loop(), 3, "t")
    seen: list[int] = []
    try:
        futs = [pool.run(lambda i=i: seen.append(i) or i) for i in range(20)]
        assert await asyncio.gather(*futs) == list(range(20))
        assert seen == list(range(20))  # handed over in one loop turn: one thread ran them, in order
    finally:
        pool.close()


def test_a_call_cancelled_before_it_ran_is_not_run() -> None:
    asyncio.run(_a_call_cancelled_before_it_ran_is_not_run())


async def _a_call_cancelled_before_it_ran_is_not_run() -> None:
    pool = Handoff(asyncio.get_running_loop(), 1, "t")
    gate = threading.Event()
    ran: list[str] = []
    try:
        first = pool.run(gate.wait)
        await asyncio.sleep(0)  # the first batch is on the queue; the thread waits in it
        second = pool.run(lambda: ran.append("second"))
        second.cancel()
        await asyncio.sleep(0)  # the second batch is on the queue, its call cancelled
        gate.set()
        assert await first is True
        third = pool.run(lambda: "third")
        assert await third == "third"  # after the second batch: the thread has looked at it by now
        assert ran == []
    finally:
        pool.close()


def test_close_finishes_the_work_handed_over_then_refuses_more() -> None:
    asyncio.run(_close_finishes_the_work_handed_over_then_refuses_more())


async def _close_finishes_the_work_handed_over_then_refuses_more() -> None:
    pool = Handoff(asyncio.get_running_loop(), 2, "t")
    done: list[int] = []
    pool.run(lambda: done.append(1))  # still in this turn's batch when close is called
    pool.close()
    assert done == [1]
    with pytest.raises(RuntimeError):
        pool.run(lambda: None)


def test_a_batch_runs_inside_one_around_batch() -> None:
    asyncio.run(_a_batch_runs_inside_one_around_batch())


async def _a_batch_runs_inside_one_around_batch() -> None:
    log: list[str] = []

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        log.append("enter")
        yield
        log.append("exit")

    pool = Handoff(asyncio.get_running_loop(), 2, "t", around_batch=around)
    try:
        futs = [pool.run(lambda i=i: log.append(f"call {i}")) for i in range(3)]
        await asyncio.gather(*futs)
        assert log == ["enter", "call 0", "call 1", "call 2", "exit"]
    finally:
        pool.close()


def test_a_centres_reads_of_one_turn_share_a_connection_and_a_failed_read_spoils_none(database_url: str) -> None:
    asyncio.run(_centre_reads(database_url))


async def _centre_reads(database_url: str) -> None:
    config = parse_config(
        {"skills": {"general": "General"}, "queues": [{"name": "q", "skills": {"general": 1}}]}, "<t>"
    )
    centre = await open_centre(config, database_url)
    try:
        used: list[Any] = []

        def one(conn: Any) -> int:
            used.append(conn)
            return int(conn.execute(text("SELECT 1")).scalar_one())

        def fail(conn: Any) -> None:
            used.append(conn)
            conn.execute(text("SELECT * FROM no_such_table"))

        # gather starts the three in one loop turn: one batch
        first, failed, after = await asyncio.gather(
            centre.read(one), centre.read(fail), centre.read(one), return_exceptions=True
        )
        assert first == 1 and after == 1
        assert isinstance(failed, DBAPIError)
        assert used[0] is used[1]  # one connection for the batch
        assert used[2] is not used[1]  # not the one a failed read left behind
        assert all(conn.closed for conn in used)  # back in the pool once the batch is done
    finally:
        await close_centre(centre)
