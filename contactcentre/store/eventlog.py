"""The event log read back: every logged event's payload in log order (a restart replays them), the first
logged time, the events since a moment (a dashboard rebuilt), the events of a few types (IVR statistics).

Payloads are returned as stored (JSON text); callers decode them with ``contactcentre.events.decode``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, select

from contactcentre.store.schema import events


def logged_payloads(conn: Connection, chunk: int = 10_000) -> Iterator[str]:
    """Every logged event's payload, oldest first, fetched ``chunk`` rows at a time."""
    result = conn.execution_options(yield_per=chunk).execute(select(events.c.payload).order_by(events.c.id))
    yield from result.scalars()


def first_logged_ms(conn: Connection) -> int | None:
    """When the log begins (None: nothing logged yet)."""
    return conn.execute(select(events.c.at_ms).order_by(events.c.id).limit(1)).scalar_one_or_none()


def payloads_since(conn: Connection, since_ms: int) -> list[str]:
    """The payloads of the events at or after ``since_ms``, in log order."""
    rows = conn.execute(select(events.c.payload).where(events.c.at_ms >= since_ms).order_by(events.c.id))
    return list(rows.scalars())


def payloads_of_types(
    conn: Connection, types: Iterable[str], since_ms: int | None = None, until_ms: int | None = None
) -> list[str]:
    """The payloads of the events of these ``types`` (their tags), in log order; ``since_ms`` / ``until_ms``
    bound ``at_ms``."""
    q = select(events.c.payload).where(events.c.type.in_(list(types)))
    if since_ms is not None:
        q = q.where(events.c.at_ms >= since_ms)
    if until_ms is not None:
        q = q.where(events.c.at_ms < until_ms)
    return list(conn.execute(q.order_by(events.c.id)).scalars())
