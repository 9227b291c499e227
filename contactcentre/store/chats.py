"""A web chat's rows: who a hello's address belongs to, the customer and case a hello makes (written with the
contact's arrival), a chat's lines read back for a resume, the rows a restart restores sessions from, and
whether a resent line is stored already."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from contactcentre.store.cases import open_case
from contactcentre.store.customers import (
    IdentityTaken,
    add_identity,
    create_customer,
    find_customer,
    get_customer,
    identify,
)
from contactcentre.store.schema import cases, interactions, messages

log = logging.getLogger("contactcentre.edge.chat.channel")  # its lines read as the chat channel's


class Opened(NamedTuple):
    customer_id: str
    tier: str | None
    case_id: str
    case_token: str | None


def identify_and_open_case(
    conn: Connection,
    now_ms: int,
    name: str | None,
    email: str | None,
    visitor: str,
    topic: str | None,
    queue: str | None,
) -> Opened:
    if email is not None:
        customer_id, _ = identify(conn, "email", email, now_ms, name=name)
    else:
        customer_id, _ = identify(conn, "chat", visitor, now_ms, name=name)
    row = get_customer(conn, customer_id)
    case_id, case_token = open_case(conn, now_ms, customer_id=customer_id, subject=topic, queue=queue)
    return Opened(customer_id, row.get("tier") if row else None, case_id, case_token)


def known_customer(conn: Connection, email: str) -> tuple[str, str | None] | None:
    """The customer who owns an e-mail address, with their tier; None for an address nobody has."""
    customer_id = find_customer(conn, "email", email)
    if customer_id is None:
        return None
    row = get_customer(conn, customer_id)
    return customer_id, row.get("tier") if row else None


def write_hello_rows(
    conn: Connection,
    *,
    now_ms: int,
    customer_id: str,
    new_customer: bool,
    name: str | None,
    email: str | None,
    visitor: str,
    case_id: str,
    topic: str | None,
    queue: str | None,
) -> str:
    """The rows a hello makes (a new customer, the case), written in the store writer's transaction just
    before the contact's arrival (the ``HelloRows`` store op), so nothing waits for a transaction of its own
    before the chat is routed. Ids are minted by the chat; the case token is chosen here, where it can be
    checked for uniqueness, and returned."""
    if new_customer:
        kind, value = ("email", email) if email is not None else ("chat", visitor)
        create_customer(conn, now_ms, customer_id=customer_id, name=name)
        try:  # add_identity checks the owner before it inserts: nothing failed in the transaction if it raises
            add_identity(conn, customer_id, kind, value, now_ms)
        except IdentityTaken:
            # The address reached the store another way since the hello looked it up (an e-mail, another
            # server): this chat keeps the customer it was routed with, and the duplicate finder pairs them.
            log.info("chat: %s was taken meanwhile; customer %s kept apart", kind, customer_id)
    _, token = open_case(conn, now_ms, customer_id=customer_id, subject=topic, queue=queue, case_id=case_id)
    return token


def case_token(conn: Connection, case_id: str) -> str | None:
    """The token of a case (None: no such case), for a hello whose rows another process wrote."""
    return conn.execute(select(cases.c.token).where(cases.c.id == case_id)).scalar_one_or_none()


def lines_after(conn: Connection, contact_ids: list[str], last_message_id: str | None) -> list[dict[str, Any]]:
    m = messages.c
    query = select(m.id, m.direction, m.author, m.at_ms, m.message_id, m.body).where(
        m.interaction_id.in_(contact_ids),
        m.channel != "note",  # never an agent's case note
    )
    if last_message_id is not None:
        after = conn.execute(
            select(m.id).where(m.interaction_id.in_(contact_ids), m.message_id == last_message_id).limit(1)
        ).scalar_one_or_none()
        if after is not None:  # an id we never stored for this chat: send the whole transcript
            query = query.where(m.id > after)
    return [dict(r) for r in conn.execute(query.order_by(m.id)).mappings()]


def restore_rows(conn: Connection, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    i = interactions.c
    for start in range(0, len(contact_ids), 500):
        chunk = contact_ids[start : start + 500]
        rows = conn.execute(
            select(i.id, i.case_id, i.customer_id, i.address, i.subject, i.queue, i.tier, cases.c.token)
            .select_from(interactions.outerjoin(cases, cases.c.id == i.case_id))
            .where(i.id.in_(chunk))
        ).mappings()
        out.update({r["id"]: dict(r) for r in rows})
    return out


def line_stored_at(conn: Connection, message_id: str) -> int | None:
    """When the line with this ``message_id`` was stored (None: it is not)."""
    return conn.execute(select(messages.c.at_ms).where(messages.c.message_id == message_id)).scalar()
