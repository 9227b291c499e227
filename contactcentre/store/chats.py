"""A web chat's rows: who a hello's address belongs to, the customer and case a hello makes (written with the
contact's arrival), a chat's lines read back for a resume, the rows a restart restores sessions from, and
whether a resent line is stored already."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass
class HelloRows:
    """The rows a hello makes (a new customer, the case), written in the store writer's transaction just before
    the contact's arrival, so nothing waits for a transaction of its own before the chat is routed.

    Ids are minted here; the case token is chosen in that transaction (where it can be checked for
    uniqueness) and read back once the hello is committed."""

    now_ms: int
    customer_id: str
    new_customer: bool
    name: str | None
    email: str | None
    visitor: str
    case_id: str
    topic: str | None
    queue: str | None
    token: str | None = None

    def __call__(self, conn: Connection) -> None:
        # Staged (Centre.stage): a failure is rolled back there and leaves ``token`` None, which the hello
        # notices after the commit. The writer may run a batch twice (a retry): the token is this run's.
        self.token = None
        if self.new_customer:
            self._customer(conn)
        _, self.token = open_case(
            conn,
            self.now_ms,
            customer_id=self.customer_id,
            subject=self.topic,
            queue=self.queue,
            case_id=self.case_id,
        )

    def _customer(self, conn: Connection) -> None:
        kind, value = ("email", self.email) if self.email is not None else ("chat", self.visitor)
        create_customer(conn, self.now_ms, customer_id=self.customer_id, name=self.name)
        try:  # add_identity checks the owner before it inserts: nothing failed in the transaction if it raises
            add_identity(conn, self.customer_id, kind, value, self.now_ms)
        except IdentityTaken:
            # The address reached the store another way since the hello looked it up (an e-mail, another
            # server): this chat keeps the customer it was routed with, and the duplicate finder pairs them.
            log.info("chat: %s was taken meanwhile; customer %s kept apart", kind, self.customer_id)


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
