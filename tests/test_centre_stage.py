"""``Centre.stage``: rows that ride in the store writer's transaction with the events (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, select

import contactcentre.events as E
from contactcentre.config import parse_config
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.customers import create_customer
from contactcentre.store.schema import customers, interactions

CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["chat"]}],
        "agents": [{"id": "a1", "skills": {"general": 5}, "capacity": {"chat": 1}}],
    },
    "<test>",
)


def test_a_staged_row_is_committed_with_the_event_and_a_failing_one_is_rolled_back_alone(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        centre = await open_centre(CONFIG, database_url)
        try:
            now = centre.now_ms()

            def good(conn: Connection) -> None:
                create_customer(conn, now, customer_id="cus-good", name="Good")

            def bad(conn: Connection) -> None:
                create_customer(conn, now, customer_id="cus-bad", name="Bad")
                raise ValueError("a broken row")

            with centre.atomic():
                centre.stage(good)
                centre.stage(bad)
                centre.submit(
                    E.ContactArrived(
                        at_ms=now, contact_id="chat-1", queue="support", channel="chat", customer_id="cus-good"
                    )
                )
            await centre.commit()

            def rows(conn: Connection) -> tuple[list[Any], list[Any]]:
                return (
                    list(conn.execute(select(customers.c.id).order_by(customers.c.id)).scalars()),
                    list(conn.execute(select(interactions.c.id, interactions.c.customer_id)).all()),
                )

            ids, contacts = await centre.read(rows)
            assert ids == ["cus-good"]  # the bad unit's insert went back to its savepoint
            assert [tuple(c) for c in contacts] == [("chat-1", "cus-good")]  # the event was committed all the same
            assert centre.writer.error is None
        finally:
            await close_centre(centre)

    asyncio.run(main())
    assert "a staged write failed" in caplog.text and "a broken row" in caplog.text


def test_a_database_in_trouble_fails_the_commit_and_the_retry_writes_the_staged_rows(database_url: str) -> None:
    from sqlalchemy.exc import OperationalError

    async def main() -> None:
        centre = await open_centre(CONFIG, database_url)
        try:
            now = centre.now_ms()
            tries: list[int] = []

            def flaky(conn: Connection) -> None:
                tries.append(1)
                if len(tries) == 1:
                    raise OperationalError("INSERT", {}, Exception("the database went away"))
                create_customer(conn, now, customer_id="cus-late", name="Late")

            centre.stage(flaky)
            with pytest.raises(OperationalError):
                await centre.commit()  # not swallowed: the whole batch waits for the database
            centre.writer.retry()
            await centre.commit()
            ids = await centre.read(lambda conn: list(conn.execute(select(customers.c.id)).scalars()))
            assert ids == ["cus-late"] and len(tries) == 2
        finally:
            await close_centre(centre)

    asyncio.run(main())
