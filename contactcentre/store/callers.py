"""Who is calling: a phone number's customer with their tier, and their cases' tokens and statuses (what the
IVR's case-status hook can name), each found in the store by the number's phone identity."""

from __future__ import annotations

from sqlalchemy import Connection, select

from contactcentre.store.customers import find_customer, surviving_id
from contactcentre.store.schema import cases, customers


def customer_tier(conn: Connection, customer_id: str) -> str | None:
    """A customer's tier (None: none, or no such customer)."""
    return conn.execute(select(customers.c.tier).where(customers.c.id == customer_id)).scalar_one_or_none()


def phone_cases(conn: Connection, address: str, limit: int) -> tuple[str | None, list[tuple[str, str]]]:
    """The customer (merges followed) whose phone identity ``address`` (normalised) is, and their ``limit``
    most recently updated cases as ``(token, status)``, newest first; ``(None, [])`` for a stranger."""
    found = find_customer(conn, "phone", address)
    customer_id = surviving_id(conn, found) if found is not None else None
    if customer_id is None:
        return None, []
    rows = conn.execute(
        select(cases.c.token, cases.c.status)
        .where(cases.c.customer_id == customer_id)
        .order_by(cases.c.updated_ms.desc())
        .limit(limit)
    ).all()
    return customer_id, [(token, status) for token, status in rows]
