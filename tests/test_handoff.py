"""The store's hand-off to its threads (server/handoff.py): results, errors, order, cancellation and close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from contactcentre.server.handoff import Handoff


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
