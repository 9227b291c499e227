"""A contact's interaction row as the edge asks for it: its case, the address it came from, whether it exists,
and what an offer's preview shows when the edge did not see the contact arrive (a restart)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from contactcentre.store.schema import interactions, messages


def contact_case(conn: Connection, contact_id: str) -> str | None:
    """The case a contact belongs to (None: none, or no such contact)."""
    return conn.execute(select(interactions.c.case_id).where(interactions.c.id == contact_id)).scalar_one_or_none()


def contact_address(conn: Connection, contact_id: str) -> str | None:
    """The identity a contact came from (its ANI, normalised), as its interaction row recorded it."""
    return conn.execute(select(interactions.c.address).where(interactions.c.id == contact_id)).scalar_one_or_none()


def contact_exists(conn: Connection, contact_id: str) -> bool:
    return conn.execute(select(interactions.c.id).where(interactions.c.id == contact_id)).first() is not None


@dataclass
class Preview:
    """A contact's subject, case and address, and its first inbound lines as ``(body, subject)``, oldest first."""

    subject: str | None = None
    case_id: str | None = None
    address: str | None = None
    lines: list[tuple[str | None, str | None]] = field(default_factory=list)


def contact_preview(conn: Connection, contact_id: str, lines: int) -> Preview:
    """What an offer previews of a contact: its row and its first ``lines`` inbound messages."""
    found = Preview()
    row = conn.execute(
        select(interactions.c.subject, interactions.c.case_id, interactions.c.address).where(
            interactions.c.id == contact_id
        )
    ).one_or_none()
    if row is not None:
        found.subject, found.case_id, found.address = row
    said = conn.execute(
        select(messages.c.body, messages.c.subject)
        .where(messages.c.interaction_id == contact_id, messages.c.direction == "inbound")
        .order_by(messages.c.at_ms, messages.c.id)
        .limit(lines)
    )
    found.lines = [(body, subject) for body, subject in said]
    return found
