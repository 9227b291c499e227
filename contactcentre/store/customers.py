"""Customers and their identities: create, look up by identity, attach identities.

Functions take a SQLAlchemy ``Connection`` inside the caller's transaction, so that a channel adapter can
identify a sender, open a case and log its message in one commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from contactcentre.store.db import insert_unless_taken
from contactcentre.store.identity import DEFAULT_REGION, name_key, normalise
from contactcentre.store.schema import customers, identities


class IdentityTaken(Exception):
    """The identity already belongs to another customer (merge them instead)."""

    def __init__(self, kind: str, value: str, owner: str) -> None:
        super().__init__(f"{kind} {value} already belongs to customer {owner}")
        self.kind, self.value, self.owner = kind, value, owner


class UnknownCustomer(LookupError):
    pass


# Built once and run from bind parameters (building a Core construct costs more than running it): the ones a
# chat's hello runs.
_INSERT_CUSTOMER = insert(customers)
_OWNER = select(identities.c.customer_id).where(
    identities.c.kind == bindparam("kind"), identities.c.value == bindparam("value")
)
_CUSTOMER = select(customers).where(customers.c.id == bindparam("id"))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


CUSTOMER_FIELDS = (
    "name",
    "tier",
    "lifetime_value",
    "value_segment",
    "account_manager_id",
    "language",
    "consent_email",
    "consent_sms",
    "consent_calls",
    "do_not_call",
    "notes",
)


def create_customer(
    conn: Connection,
    now_ms: int,
    *,
    customer_id: str | None = None,
    identities_: Iterable[tuple[str, str]] = (),
    region: str | None = DEFAULT_REGION,
    **fields: Any,
) -> str:
    """Insert a customer with its identities (``(kind, value)`` pairs, normalised here)."""
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"unknown customer fields: {', '.join(sorted(unknown))}")
    cid = customer_id or new_id("cus")
    row = {
        "id": cid,
        "created_ms": now_ms,
        "updated_ms": now_ms,
        "consent_email": False,
        "consent_sms": False,
        "consent_calls": False,
        "do_not_call": False,
        **fields,
    }
    row["name_key"] = name_key(row.get("name"))
    conn.execute(_INSERT_CUSTOMER, [row])
    for kind, value in identities_:
        add_identity(conn, cid, kind, value, now_ms, region=region)
    return cid


def update_customer(conn: Connection, customer_id: str, now_ms: int, **fields: Any) -> None:
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"unknown customer fields: {', '.join(sorted(unknown))}")
    values = {**fields, "updated_ms": now_ms}
    if "name" in fields:
        values["name_key"] = name_key(fields["name"])
    done = conn.execute(update(customers).where(customers.c.id == customer_id).values(values))
    if done.rowcount == 0:
        raise UnknownCustomer(customer_id)


def add_identity(
    conn: Connection,
    customer_id: str,
    kind: str,
    value: str,
    now_ms: int,
    *,
    verified: bool = False,
    region: str | None = DEFAULT_REGION,
) -> str:
    """Attach an identity; returns its normalised value. Already this customer's: nothing changes."""
    norm = normalise(kind, value, region)
    row = {"customer_id": customer_id, "kind": kind, "value": norm, "verified": verified, "created_ms": now_ms}
    if insert_unless_taken(conn, identities, ["kind", "value"], row):  # the insert is the check: one statement
        return norm
    owner = conn.execute(_OWNER, {"kind": kind, "value": norm}).scalar_one_or_none()
    if owner == customer_id:
        return norm
    raise IdentityTaken(kind, norm, owner or "?")


def surviving_id(conn: Connection, customer_id: str) -> str | None:
    """Follow merge pointers to the customer that now holds ``customer_id``'s history."""
    seen: set[str] = set()
    current: str | None = customer_id
    while current is not None and current not in seen:
        seen.add(current)
        row = conn.execute(select(customers.c.merged_into).where(customers.c.id == current)).one_or_none()
        if row is None:
            return None
        if row.merged_into is None:
            return current
        current = row.merged_into
    return None


def find_customer(conn: Connection, kind: str, value: str, region: str | None = DEFAULT_REGION) -> str | None:
    """The customer owning an identity, or None. ``value`` is normalised first."""
    norm = normalise(kind, value, region)
    return conn.execute(_OWNER, {"kind": kind, "value": norm}).scalar_one_or_none()


def identify(
    conn: Connection,
    kind: str,
    value: str,
    now_ms: int,
    *,
    name: str | None = None,
    region: str | None = DEFAULT_REGION,
) -> tuple[str, bool]:
    """The customer owning an identity, creating one if nobody does; returns ``(customer_id, created)``."""
    found = find_customer(conn, kind, value, region)
    if found is not None:
        return found, False
    return create_customer(conn, now_ms, name=name, identities_=[(kind, value)], region=region), True


def get_customer(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(_CUSTOMER, {"id": customer_id}).mappings().one_or_none()
    return dict(row) if row is not None else None


def seed_customers(
    conn: Connection, now_ms: int, people: list[dict[str, Any]], identities_: list[tuple[str, str, str]]
) -> None:
    """Bulk-insert customers (``id`` and ``CUSTOMER_FIELDS``) and their verified identities ``(customer_id,
    kind, value)``, already normalised: a made-up book written at once into an empty store (two statements)."""
    conn.execute(
        insert(customers),
        [{**p, "name_key": name_key(p.get("name")), "created_ms": now_ms, "updated_ms": now_ms} for p in people],
    )
    conn.execute(
        insert(identities),
        [
            {"customer_id": cid, "kind": kind, "value": value, "verified": True, "created_ms": now_ms}
            for cid, kind, value in identities_
        ],
    )
