"""The fence between an old and a new active router, the routers' applied inputs, the log read by id, and the
store writer's own numbering of the log (SQLite and PostgreSQL; the races on PostgreSQL, where writers run
concurrently)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

import contactcentre.events as E
from contactcentre.store.db import connect, open_store
from contactcentre.store.fence import (
    Fenced,
    applied_inputs,
    check_fence,
    events_after,
    fence_holder,
    last_event_id,
    record_input,
    take_fence,
)
from contactcentre.store.writer import StoreWriter
from tests.conftest import fresh_postgres_database

T0 = 1_700_000_000_000
DEADLINE_S = 30


def arrivals(n: int, start: int = 0, prefix: str = "c") -> list[E.Event]:
    return [
        E.ContactArrived(at_ms=T0 + i, contact_id=f"{prefix}{i}", queue="support", channel="chat")
        for i in range(start, start + n)
    ]


def logged(engine: Engine) -> list[tuple[int, str]]:
    """(id, contact id) of every logged event, in id order."""
    with engine.connect() as conn:
        return [(i, E.decode(p).contact_id) for i, p in events_after(conn, 0)]  # type: ignore[attr-defined]


def take(engine: Engine, token: int, holder: str, stale_after_ms: int = 1_000) -> None:
    with engine.begin() as conn:
        take_fence(conn, token, holder, T0 + token, stale_after_ms=stale_after_ms)


def second_engine(engine: Engine) -> Engine:
    """Another engine on the same database: another router process, with connections of its own."""
    return connect(engine.url.render_as_string(hide_password=False))


@pytest.fixture
def postgres_store(postgres_admin: Any) -> Iterator[Engine]:
    url, drop = fresh_postgres_database(postgres_admin)
    engine = open_store(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------------ the fence


def test_the_fence_only_moves_up(store: Engine) -> None:
    with store.connect() as conn:
        assert fence_holder(conn) is None
    take(store, 3, "router-a")  # the first takes the row
    with store.connect() as conn:
        assert fence_holder(conn) == (3, "router-a", T0 + 3)
    for token in (3, 2):
        with pytest.raises(Fenced, match=f"token is {token}, but router 'router-a' holds fencing token 3"):
            take(store, token, "router-b")
    take(store, 7, "router-b")
    with store.connect() as conn:
        assert fence_holder(conn) == (7, "router-b", T0 + 7)
    with pytest.raises(Fenced) as refused:
        take(store, 4, "router-a")
    assert (refused.value.token, refused.value.current, refused.value.holder) == (4, 7, "router-b")


def test_check_fence_passes_only_the_current_token(store: Engine) -> None:
    with store.begin() as conn, pytest.raises(Fenced, match="no router has taken the fence"):
        check_fence(conn, 1)
    take(store, 2, "router-a")
    with store.begin() as conn:
        check_fence(conn, 2)
    for stale in (1, 3):
        with store.begin() as conn, pytest.raises(Fenced, match="router 'router-a' holds fencing token 2"):
            check_fence(conn, stale)


def test_a_writer_with_the_old_token_is_refused_after_a_takeover(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The old leader's writer stops for good at its first commit after the takeover: its waiters get Fenced,
    nothing of it is stored, it takes no more records and does not retry; the new leader numbers on."""
    other = second_engine(store)
    take(store, 1, "router-a")

    async def go() -> None:
        old = StoreWriter(store, fence=1, max_delay_s=0, retry_after_s=0.01)
        await old.write(arrivals(3))
        take(other, 2, "router-b")
        doomed = old.append(arrivals(2, 3))
        with pytest.raises(Fenced, match="router 'router-b' holds fencing token 2"):
            await old.durable(doomed)
        assert isinstance(old.error, Fenced) and old.committed == 3
        with pytest.raises(Fenced):
            old.append(arrivals(1, 5))
        old.retry()  # nothing to retry: a fenced writer never writes again
        for _ in range(20):
            await asyncio.sleep(0)
        with pytest.raises(Fenced):
            await old.flush()
        with pytest.raises(Fenced):
            await old.close()
        assert old.committed == 3

        new = StoreWriter(other, fence=2, max_delay_s=0)
        assert new.last_event_id == 3
        await new.write(arrivals(2, 10))
        assert new.last_event_id == 5
        await new.close()

    with caplog.at_level(logging.ERROR, logger="contactcentre.store.writer"):
        asyncio.run(go())
    assert logged(store) == [(1, "c0"), (2, "c1"), (3, "c2"), (4, "c10"), (5, "c11")]
    assert sum("fenced" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_writer_without_a_fence_never_checks_it(store: Engine) -> None:
    take(store, 5, "router-b")  # a store some router fenced: a plain writer (one process) does not look

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0)
        await w.write(arrivals(1))
        await w.close()

    asyncio.run(go())
    assert logged(store) == [(1, "c0")]


def _lock_waiters(admin: Engine, database: str) -> int:
    with admin.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"),
            {"db": database},
        ).scalar_one()


def _until_waiting(admin: Engine, database: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while _lock_waiters(admin, database) < 1:
        assert time.monotonic() < deadline, "nobody came to wait on the fence's row lock"
        time.sleep(0.01)  # polled, with a deadline


def test_an_old_commit_that_meets_an_open_takeover_waits_for_it_and_fails(
    postgres_store: Engine, postgres_admin: Any
) -> None:
    """The new leader's take_fence is not committed yet when the old leader's commit begins: the old commit
    waits on the row and, once the takeover commits, fails. It never succeeds after the takeover."""
    store = postgres_store
    database = store.url.database
    take(store, 1, "router-a")
    other = second_engine(store)

    async def go() -> None:
        old = StoreWriter(store, fence=1, max_delay_s=0)
        await old.write(arrivals(2))
        with other.connect() as conn:
            takeover = conn.begin()
            take_fence(conn, 2, "router-b", T0)  # holds the fence's row until its commit
            doomed = asyncio.ensure_future(old.write(arrivals(2, 2)))
            await asyncio.to_thread(_until_waiting, postgres_admin, database)  # the old commit is open, waiting
            assert not doomed.done()
            takeover.commit()
        with pytest.raises(Fenced, match="router 'router-b'"):
            await asyncio.wait_for(doomed, DEADLINE_S)
        with pytest.raises(Fenced):
            await old.close()

    try:
        asyncio.run(go())
    finally:
        other.dispose()
    assert logged(store) == [(1, "c0"), (2, "c1")]


def test_a_takeover_that_meets_an_open_old_commit_waits_for_it_and_the_next_one_fails(
    postgres_store: Engine, postgres_admin: Any
) -> None:
    """The old leader's commit has checked its token and is still open when the new leader takes the fence:
    the takeover waits for it, so that commit (which came first) stays, the new leader numbers after it, and
    the old leader's next commit fails."""
    store = postgres_store
    database = store.url.database
    take(store, 1, "router-a")
    other = second_engine(store)
    inside, gate = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:  # a unit of work in the old leader's commit, after its check
        inside.set()
        assert gate.wait(DEADLINE_S)

    async def go() -> None:
        old = StoreWriter(store, fence=1, max_delay_s=0)
        w = old.append(arrivals(2))
        old.append([hold])
        first = asyncio.ensure_future(old.durable(w))
        assert await asyncio.to_thread(inside.wait, DEADLINE_S)
        # (stale_after_ms: however slow this machine, the open commit is not taken for a stalled one)
        takeover = asyncio.ensure_future(asyncio.to_thread(take, other, 2, "router-b", DEADLINE_S * 1000))
        await asyncio.to_thread(_until_waiting, postgres_admin, database)
        assert not takeover.done()
        gate.set()
        await asyncio.wait_for(first, DEADLINE_S)  # the open commit was first: it stays
        await asyncio.wait_for(takeover, DEADLINE_S)
        with pytest.raises(Fenced):
            await old.write(arrivals(1, 2))
        with pytest.raises(Fenced):
            await old.close()
        new = StoreWriter(other, fence=2, max_delay_s=0)  # made after the takeover committed
        assert new.last_event_id == 2
        await new.write(arrivals(1, 0, prefix="new"))
        await new.close()

    asyncio.run(go())
    assert logged(store) == [(1, "c0"), (2, "c1"), (3, "new0")]


def test_an_old_leader_stalled_inside_its_commit_does_not_hold_a_takeover_up(
    postgres_store: Engine, postgres_admin: Any
) -> None:
    """The old leader stops (a pause, a partition) in the middle of a commit that holds the fence's row: the
    takeover waits for the row only so long, then ends that session and goes through; the old commit is never
    stored (its writer fails, and is fenced when it tries again)."""
    store = postgres_store
    take(store, 1, "router-a")
    other = second_engine(store)
    inside, gate = threading.Event(), threading.Event()

    def stall(conn: Connection) -> None:
        inside.set()
        assert gate.wait(DEADLINE_S)

    async def go() -> None:
        old = StoreWriter(store, fence=1, max_delay_s=0, retry_after_s=0.01)
        seq = old.append([*arrivals(2), stall])
        stalled = asyncio.ensure_future(old.durable(seq))
        assert await asyncio.to_thread(inside.wait, DEADLINE_S)

        def takeover() -> None:
            with other.begin() as conn:
                take_fence(conn, 2, "router-b", T0 + 2, stale_after_ms=200)

        await asyncio.wait_for(asyncio.to_thread(takeover), DEADLINE_S / 2)  # the old leader is still stalled
        gate.set()  # the old leader wakes up and carries on with its commit
        with pytest.raises(OperationalError):  # the server ended its transaction and closed its connection
            await asyncio.wait_for(stalled, DEADLINE_S)
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not isinstance(old.error, Fenced):  # its own retry meets the new token
            assert asyncio.get_running_loop().time() < deadline, f"not fenced: {old.error!r}"
            await asyncio.sleep(0.01)
        with pytest.raises(Fenced):
            await old.close()

    try:
        asyncio.run(go())
    finally:
        other.dispose()
    assert logged(store) == []
    with store.connect() as conn:
        assert fence_holder(conn) == (2, "router-b", T0 + 2)


# ----------------------------------------------------------------------------------------- event numbering


def test_event_ids_are_dense_and_in_append_order_across_writers_and_failed_commits(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer numbers the log in append order and tells the caller at once (``last_event_id``); a commit
    retried after a failure, run again with savepoints after a staged unit failed, or run again with its text
    cleaned writes the same ids; the next writer numbers on from the largest stored id."""
    broken = {"flaky": True}
    expected: list[tuple[int, str]] = []

    def flaky(conn: Connection) -> None:
        if broken["flaky"]:
            broken["flaky"] = False
            raise RuntimeError("database restarting")

    def bad_unit(conn: Connection) -> None:
        raise ValueError("a broken row")

    def append(w: StoreWriter, evs: list[E.Event]) -> int:
        before = w.last_event_id
        seq = w.append(evs)
        assert w.last_event_id == before + len(evs)  # known as soon as appended
        expected.extend((before + 1 + i, ev.contact_id) for i, ev in enumerate(evs))  # type: ignore[attr-defined]
        return seq

    async def first() -> None:
        w = StoreWriter(store, max_delay_s=0, retry_after_s=0.01)
        assert w.last_event_id == 0
        append(w, arrivals(3))
        w.append([flaky])  # this commit fails once and is retried by the writer
        append(w, arrivals(2, 3))
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while w.committed < 6:
            assert asyncio.get_running_loop().time() < deadline, "the writer did not retry"
            await asyncio.sleep(0.01)
        append(w, arrivals(2, 5))
        w.stage(bad_unit)  # run again with savepoints
        append(w, arrivals(1, 7))
        await w.flush()
        bad = E.ContactArrived(at_ms=T0, contact_id="c-bad", queue="q", channel="chat", subject="x\ud800y")
        append(w, [*arrivals(1, 8), bad, *arrivals(1, 9)])  # run again with its text cleaned
        await w.flush()
        assert w.error is None
        await w.close()

    async def second() -> None:
        w = StoreWriter(store, max_delay_s=0)
        assert w.last_event_id == 11
        append(w, arrivals(3, 100))
        await w.close()

    asyncio.run(first())
    asyncio.run(second())
    assert logged(store) == expected
    assert [i for i, _ in expected] == list(range(1, 15))


def test_a_commit_whose_outcome_was_lost_is_not_written_twice(store: Engine) -> None:
    """The connection drops as COMMIT is sent: the writer cannot know it went through. Its retry finds the
    commit's first event stored under its id and counts the commit done instead of failing on the ids (or, with
    ids from the database, logging everything twice)."""
    lost = {"once": True}

    class LosingAcks(StoreWriter):
        def _commit(self, records: list[Any]) -> None:
            super()._commit(records)
            if lost["once"]:
                lost["once"] = False
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    async def go() -> None:
        w = LosingAcks(store, max_delay_s=0, retry_after_s=0.01)
        with pytest.raises(OperationalError):
            await w.write(arrivals(3))
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while w.committed < 3:
            assert asyncio.get_running_loop().time() < deadline, f"not retried: {w.error!r}"
            await asyncio.sleep(0.01)
        await w.write(arrivals(2, 3))
        await w.close()

    asyncio.run(go())
    assert logged(store) == [(1, "c0"), (2, "c1"), (3, "c2"), (4, "c3"), (5, "c4")]


def test_a_writer_given_its_first_event_id_numbers_from_there(store: Engine) -> None:
    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0, first_event_id=40)
        assert w.last_event_id == 39
        await w.write(arrivals(2))
        await w.close()

    asyncio.run(go())
    assert logged(store) == [(40, "c0"), (41, "c1")]


# ---------------------------------------------------------------------------------- inputs and the log read


def test_applied_inputs_are_found_and_recorded_once(store: Engine) -> None:
    ids = [f"edge-1:boot:{n}" for n in range(1_200)]  # more than one IN (...) chunk
    with store.begin() as conn:
        for n, input_id in enumerate(ids[::2]):
            record_input(conn, input_id, n + 1, T0 + n)
    with store.connect() as conn:
        assert applied_inputs(conn, []) == set()
        assert applied_inputs(conn, [*ids, "edge-2:boot:0", ids[0]]) == set(ids[::2])
    with pytest.raises(IntegrityError), store.begin() as conn:
        record_input(conn, ids[0], 99, T0)


def test_events_after_reads_the_log_by_id(store: Engine) -> None:
    with store.connect() as conn:
        assert last_event_id(conn) == 0 and events_after(conn, 0) == []

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0)
        await w.write(arrivals(5))
        await w.close()

    asyncio.run(go())
    with store.connect() as conn:
        assert last_event_id(conn) == 5
        assert [i for i, _ in events_after(conn, 0)] == [1, 2, 3, 4, 5]
        window = events_after(conn, 2, 4)
        assert [(i, E.decode(p)) for i, p in window] == [(3, arrivals(1, 2)[0]), (4, arrivals(1, 3)[0])]
        assert events_after(conn, 5) == [] and events_after(conn, 4, 4) == []


# ------------------------------------------------------------------ commits whose outcome was lost (in doubt)


class LosingAcks(StoreWriter):
    """The connection drops as COMMIT is sent, once: the commit went through, the writer cannot know."""

    lost = True

    def _commit(self, records: list[Any]) -> None:
        super()._commit(records)
        if self.lost:
            self.lost = False
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


class FailingOnce(StoreWriter):
    """The first commit fails before anything is written (the database restarting)."""

    failed = False

    def _commit(self, records: list[Any]) -> None:
        if not self.failed:
            self.failed = True
            raise OperationalError("BEGIN", {}, Exception("the database system is starting up"))
        super()._commit(records)


def test_a_commit_whose_outcome_was_lost_is_retried_alone_and_what_came_after_is_written(
    postgres_store: Engine,
) -> None:
    async def go() -> None:
        w = LosingAcks(postgres_store, max_delay_s=0, retry_after_s=None)
        with pytest.raises(OperationalError):
            await w.write(arrivals(3))  # c0..c2: stored, outcome lost
        seq = w.append(arrivals(2, 3))  # c3, c4 arrive while the failed batch is held
        w.retry()
        await w.durable(seq)  # the writer says c3 and c4 are durable (an SMTP 250, an output record)
        await w.write(arrivals(1, 5))  # c5
        await w.close()

    asyncio.run(go())
    assert logged(postgres_store) == [(1, "c0"), (2, "c1"), (3, "c2"), (4, "c3"), (5, "c4"), (6, "c5")]


def test_a_fenced_writer_whose_commit_failed_is_refused_not_vouched_for_by_its_successor(
    postgres_store: Engine,
) -> None:
    take(postgres_store, 1, "r1")

    async def go() -> None:
        old = FailingOnce(postgres_store, fence=1, max_delay_s=0, retry_after_s=None)
        seq = old.append([E.ContactArrived(at_ms=T0, contact_id="old-router's", queue="support", channel="chat")])
        with pytest.raises(OperationalError):
            await old.durable(seq)
        # r2 takes over and logs its first event: at the same instant and of the same type (both replicas of one
        # deterministic router fire the same timers at the same instants, or take the same kind of input).
        take(postgres_store, 2, "r2")
        other = second_engine(postgres_store)
        new = StoreWriter(other, fence=2, max_delay_s=0)
        await new.write([E.ContactArrived(at_ms=T0, contact_id="new-router's", queue="support", channel="chat")])
        await new.close()
        old.retry()
        with pytest.raises(Fenced):
            await old.durable(seq)  # must be refused: r1 may no longer write, and nothing of it was stored

    asyncio.run(go())


def test_a_commit_of_input_marks_only_whose_outcome_was_lost_is_written_again_harmlessly(
    postgres_store: Engine,
) -> None:
    async def go() -> None:
        w = LosingAcks(postgres_store, max_delay_s=0, retry_after_s=None)
        seq = w.mark_input("e1:boot:1", T0)  # a record the router refused: no events, one router_inputs row
        with pytest.raises(OperationalError):
            await w.durable(seq)
        seq2 = w.append(arrivals(1))
        w.retry()  # the mark, written again (unless taken), then the arrival
        await w.durable(seq2)
        assert w.committed >= seq2

    asyncio.run(go())
