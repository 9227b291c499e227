"""The store writer: group commit, awaitable durability, back-pressure, failure; and the projection of
events into interactions and messages (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

import contactcentre.events as E
from contactcentre.store import projection
from contactcentre.store.schema import interactions, messages
from contactcentre.store.writer import StoreWriter, read_events

GOLDEN = Path(__file__).parent / "golden" / "default_seed7.jsonl"
T0 = 1_700_000_000_000


def golden_events() -> list[E.Event]:
    return [E.decode(line) for line in GOLDEN.read_bytes().splitlines() if line.strip()]


def interaction_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(select(interactions)).mappings()}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------------- projection


def test_a_contacts_lifecycle_becomes_one_interaction_row(store: Engine) -> None:
    evs: list[E.Event] = [
        E.ContactArrived(
            at_ms=T0,
            contact_id="c1",
            queue="sales",
            channel="voice",
            customer_id="cus-1",
            tier="gold",
            address="+31201234567",
            case_id="case-1",
        ),
        E.ContactQueued(at_ms=T0, contact_id="c1", queue="sales", channel="voice", priority=0, tier="gold"),
        E.ContactConnected(
            at_ms=T0 + 7_000, contact_id="c1", agent_id="a1", queue="sales", channel="voice", wait_ms=7000
        ),
        E.DispositionSet(at_ms=T0 + 60_000, contact_id="c1", agent_id="a1", code="sale"),
        E.ContactClosed(
            at_ms=T0 + 90_000,
            contact_id="c1",
            agent_id="a1",
            queue="sales",
            channel="voice",
            wait_ms=7000,
            talk_ms=60_000,
            hold_ms=3_000,
            wrap_ms=20_000,
            tier="gold",
        ),
        E.ContactArrived(at_ms=T0 + 1, contact_id="c2", queue="sales", channel="chat", customer_id="cus-1"),
        E.ContactAbandoned(at_ms=T0 + 5_000, contact_id="c2", queue="sales", channel="chat", wait_ms=4_999),
        E.MessageReceived(
            at_ms=T0 + 2,
            contact_id="c2",
            message_id="m1",
            channel="chat",
            body="hello",
            address="tok-9",
            case_id="case-1",
        ),
    ]

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0.001)
        await w.write(evs[:3])  # the UPDATE path: c1 arrived in an earlier commit
        await w.write(evs[3:])
        await w.close()

    run(go())
    rows = interaction_rows(store)
    c1 = rows["c1"]
    assert c1["customer_id"] == "cus-1" and c1["case_id"] == "case-1" and c1["address"] == "+31201234567"
    assert (c1["started_ms"], c1["answered_ms"], c1["ended_ms"]) == (T0, T0 + 7_000, T0 + 90_000)
    assert (c1["wait_ms"], c1["talk_ms"], c1["hold_ms"], c1["wrap_ms"], c1["handle_ms"]) == (
        7000,
        60_000,
        3_000,
        20_000,
        83_000,
    )
    assert (c1["agent_id"], c1["disposition"], c1["outcome"], c1["direction"]) == ("a1", "sale", "handled", "inbound")
    c2 = rows["c2"]
    assert (c2["outcome"], c2["wait_ms"], c2["answered_ms"], c2["channel"]) == ("abandoned", 4_999, None, "chat")
    with store.connect() as conn:
        msg = conn.execute(select(messages)).mappings().one()
    assert (msg["interaction_id"], msg["direction"], msg["author"], msg["body"]) == ("c2", "inbound", "tok-9", "hello")
    assert read_events(store) == evs


def _fold_in_batches(engine: Engine, evs: list[E.Event], cuts: list[int]) -> None:
    with engine.begin() as conn:
        start = 0
        for cut in [*cuts, len(evs)]:
            projection.write(conn, projection.fold(evs[start:cut]))
            start = cut


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_projection_does_not_depend_on_where_batches_split(tmp_path: Path, seed: int) -> None:
    """The real router's log (the golden day) gives the same interaction rows in one batch or in many."""
    from contactcentre.store.db import open_store

    evs = golden_events()
    one, many = open_store(tmp_path / "one.sqlite"), open_store(tmp_path / "many.sqlite")
    try:
        _fold_in_batches(one, evs, [])
        rng = random.Random(seed)
        _fold_in_batches(many, evs, sorted(rng.sample(range(1, len(evs)), 60)))
        a, b = interaction_rows(one), interaction_rows(many)
        assert a == b
        arrived = [ev for ev in evs if isinstance(ev, E.ContactArrived)]
        assert set(a) == {ev.contact_id for ev in arrived}
        closed = {ev.contact_id: ev for ev in evs if isinstance(ev, E.ContactClosed)}
        abandoned = {ev.contact_id for ev in evs if isinstance(ev, E.ContactAbandoned)}
        transferred = {ev.contact_id for ev in evs if isinstance(ev, E.ContactTransferred)}
        for cid, row in a.items():
            if cid in abandoned:  # answered only if an agent answered and then passed it on
                assert row["outcome"] == "abandoned"
                assert (row["answered_ms"] is None) is (cid not in transferred)
            if cid in closed and cid not in abandoned:
                last = closed[cid]
                assert row["handle_ms"] == last.talk_ms + last.hold_ms + last.wrap_ms
                assert row["outcome"] in ("handled", "transferred")
        assert sum(r["outcome"] == "abandoned" for r in a.values()) == len(abandoned)
    finally:
        one.dispose()
        many.dispose()


def test_a_replayed_arrival_does_not_duplicate_or_overwrite(store: Engine) -> None:
    arrived = E.ContactArrived(at_ms=T0, contact_id="c1", queue="q", channel="email", subject="first")

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0.001)
        await w.write([arrived])
        await w.write([E.ContactArrived(at_ms=T0 + 5, contact_id="c1", queue="q", channel="email", subject="again")])
        await w.close()

    run(go())
    rows = interaction_rows(store)
    assert len(rows) == 1 and rows["c1"]["subject"] == "first"


# ------------------------------------------------------------------------------------------ group commit


def arrivals(n: int, start: int = 0) -> list[E.Event]:
    return [
        E.ContactArrived(at_ms=T0 + i, contact_id=f"c{i}", queue="support", channel="chat")
        for i in range(start, start + n)
    ]


def test_group_commit_by_size_and_by_deadline(store: Engine) -> None:
    async def go() -> StoreWriter:
        w = StoreWriter(store, batch_size=500, max_delay_s=0.05)
        w.append(arrivals(1200))  # more than a batch: committed at once, without the deadline
        w.append(arrivals(3, 1200))
        await w.flush()
        assert w.committed == 1203 and w.commits <= 2
        seq = w.append(arrivals(1, 1203))
        assert seq == 1204
        assert w._deadline is not None  # a lone event waits at most max_delay_s, on a timer
        assert 0 < w._deadline.when() - asyncio.get_running_loop().time() <= 0.05
        await w.close()
        return w

    w = run(go())
    assert w.committed == 1204 and w.pending == 0
    assert len(read_events(store)) == 1204


def test_write_waits_for_its_own_commit_and_wakes_the_writer(store: Engine) -> None:
    async def go() -> None:
        w = StoreWriter(store, batch_size=10_000, max_delay_s=3600)  # the deadline would never come
        w.append(arrivals(5))
        await asyncio.wait_for(w.write(arrivals(1, 5)), timeout=30)
        assert w.committed == 6
        with store.connect() as conn:  # committed means visible to another connection
            assert conn.execute(select(func.count()).select_from(interactions)).scalar() == 6
        await w.close()

    run(go())


def test_back_pressure_holds_intake_until_the_writer_catches_up(store: Engine) -> None:
    gate = threading.Event()

    def hold(conn: Connection) -> None:
        gate.wait(30)

    async def go() -> None:
        w = StoreWriter(store, batch_size=10, max_pending=20, max_delay_s=0)
        w.append([hold])
        for _ in range(5):
            await asyncio.sleep(0)  # let the writer take the blocking batch
        w.append(arrivals(25))  # the routing path is never refused ...
        assert w.congested
        waiting = asyncio.ensure_future(w.room())  # ... but intake waits
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, timeout=30)
        assert not w.congested
        await w.close()
        assert w.committed == 26

    run(go())


def test_a_failed_commit_holds_the_records_and_retry_writes_them_in_order(store: Engine) -> None:
    broken = {"on": True}

    def flaky(conn: Connection) -> None:
        if broken["on"]:
            raise RuntimeError("database went away")
        conn.execute(text("select 1"))

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0)
        with pytest.raises(RuntimeError, match="went away"):
            await w.write([*arrivals(3), flaky])
        assert w.committed == 0 and w.pending == 4
        w.append(arrivals(2, 3))  # accepted and held behind the failed batch
        broken["on"] = False
        w.retry()
        await asyncio.wait_for(w.flush(), timeout=30)
        await w.close()

    run(go())
    assert [ev.contact_id for ev in read_events(store)] == ["c0", "c1", "c2", "c3", "c4"]  # type: ignore[attr-defined]


def test_close_commits_everything_pending(store: Engine) -> None:
    async def go() -> None:
        w = StoreWriter(store, batch_size=10_000, max_delay_s=3600)
        w.append(arrivals(777))
        await w.close()

    run(go())
    assert len(interaction_rows(store)) == 777


def test_a_backlog_is_committed_in_bounded_transactions(store: Engine) -> None:
    from contactcentre.store.writer import MAX_BATCHES_PER_COMMIT

    sizes: list[int] = []

    class Counting(StoreWriter):
        def _commit(self, records: list[Any]) -> None:
            sizes.append(len(records))
            super()._commit(records)

    async def go() -> None:
        w = Counting(store, batch_size=100, max_delay_s=0)
        first = w.append(arrivals(1))
        w.append(arrivals(2_499, 1))  # a backlog behind the first record
        await w.durable(first)
        await w.close()

    run(go())
    assert sum(sizes) == 2_500 and max(sizes) <= 100 * MAX_BATCHES_PER_COMMIT and len(sizes) >= 3


def test_an_atomic_group_is_never_split_by_the_commit_bound(store: Engine) -> None:
    sizes: list[int] = []

    class Counting(StoreWriter):
        def _commit(self, records: list[Any]) -> None:
            sizes.append(len(records))
            super()._commit(records)

    async def go() -> None:
        w = Counting(store, batch_size=100, max_delay_s=0)
        w.append(arrivals(990))
        with w.atomic():  # straddles the 1,000-record bound
            w.append(arrivals(10, 990))
            with w.atomic():
                w.append(arrivals(5, 1000))
            w.append(arrivals(5, 1005))
        w.append(arrivals(500, 1010))
        await w.close()

    run(go())
    assert sizes[0] == 1010 and sum(sizes) == 1510


def test_unstorable_text_costs_a_character_not_the_writer(store: Engine) -> None:
    """A lone surrogate (no encoder takes it) or a NUL (PostgreSQL refuses it) from a client must not stop
    the writer for everyone: the batch is written with its strings cleaned."""
    bad = [
        E.ContactArrived(at_ms=T0, contact_id="c-bad", queue="q", channel="chat", subject="x\ud800y"),
        E.MessageReceived(at_ms=T0, contact_id="c-bad", message_id="m1", channel="chat", body="a\x00b\ud83d"),
    ]

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0)
        await w.write([*bad, *arrivals(2)])
        await w.close()

    run(go())
    with store.connect() as conn:
        assert conn.execute(select(messages.c.body)).scalar() == "ab?"
        rows = interaction_rows(store)
    assert set(rows) == {"c-bad", "c0", "c1"} and rows["c-bad"]["subject"] == "x?y"


def test_a_failed_commit_is_retried_by_itself(store: Engine) -> None:
    broken = {"on": True}
    attempts: list[int] = []

    def flaky(conn: Connection) -> None:
        attempts.append(1)
        if broken["on"]:
            broken["on"] = False
            raise RuntimeError("database restarting")

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=0, retry_after_s=0.01)
        with pytest.raises(RuntimeError):
            await w.write([*arrivals(2), flaky])
        deadline = asyncio.get_running_loop().time() + 30
        while w.committed < 3:  # nobody calls retry(): the writer does, after its back-off (polled, bounded)
            assert asyncio.get_running_loop().time() < deadline, "the writer did not retry"
            await asyncio.sleep(0.01)
        await w.close()

    run(go())
    assert len(attempts) == 2 and len(interaction_rows(store)) == 2


def test_staged_work_runs_without_savepoints_until_one_fails_and_the_log_is_one_insert_a_commit(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Savepoints cost two statements a unit on every commit: the writer takes them only for a commit in which
    a staged unit failed, run again from the start; the events of a commit go in with one INSERT however the
    staged work splits them."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0] + " " + statement.split()[2 if statement.startswith("INSERT") else 1])

    runs: list[str] = []

    def good(conn: Connection) -> None:
        runs.append("good")
        conn.execute(text("INSERT INTO audit_log (at_ms, actor, action) VALUES (1, 'u', 'good')"))

    def bad(conn: Connection) -> None:
        runs.append("bad")
        conn.execute(text("INSERT INTO audit_log (at_ms, actor, action) VALUES (1, 'u', 'bad')"))
        raise ValueError("a broken row")

    async def go() -> None:
        w = StoreWriter(store, max_delay_s=3600)
        event.listen(store, "before_cursor_execute", seen)
        try:
            w.append(arrivals(2))
            w.stage(good)
            w.append(arrivals(2, 2))
            await w.flush()
            assert not any(s.startswith(("SAVEPOINT", "RELEASE")) for s in statements)
            assert statements.count("INSERT events") == 1 and runs == ["good"]
            statements.clear()
            w.stage(good)
            w.stage(bad)
            w.append(arrivals(1, 4))
            await w.flush()
        finally:
            event.remove(store, "before_cursor_execute", seen)
        assert w.error is None and w.committed == 8  # records: 5 events, 3 staged units
        await w.close()

    run(go())
    assert runs == ["good", "good", "bad", "good", "bad"]  # the failed commit, then once more isolated
    assert "a staged write failed" in caplog.text and "a broken row" in caplog.text
    assert any(s.startswith("SAVEPOINT") for s in statements)
    with store.connect() as conn:
        actions = list(conn.execute(text("SELECT action FROM audit_log ORDER BY id")).scalars())
    assert actions == ["good", "good"] and len(read_events(store)) == 5
