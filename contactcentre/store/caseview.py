"""A case as the REST API shows it: the case, its interactions with their legs and a page of its messages;
one of its messages whole; the JSON schema of an interaction row for the API's reference."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from contactcentre.store.cases import case_contact_ids, get_case
from contactcentre.store.projection import contact_legs
from contactcentre.store.rowschema import column_schema
from contactcentre.store.schema import interactions
from contactcentre.store.transcripts import case_page, message_text

CASE_INTERACTION_COLUMNS = [
    interactions.c.id,
    interactions.c.channel,
    interactions.c.direction,
    interactions.c.customer_id,
    interactions.c.queue,
    interactions.c.agent_id,
    interactions.c.subject,
    interactions.c.started_ms,
    interactions.c.answered_ms,
    interactions.c.ended_ms,
    interactions.c.wait_ms,
    interactions.c.handle_ms,
    interactions.c.disposition,
    interactions.c.outcome,
]


def case_with_transcript(
    conn: Connection,
    case_id: str,
    *,
    limit: int,
    body_chars: int,
    before: str | None = None,
    page_chars: int | None = None,
) -> dict[str, Any] | None:
    """A case, its interactions (each with its agents' legs) and a page of its messages (``case_page``), as
    ``GET /api/cases/ID`` shows it; None for no such case. Raises ``BadCursor``."""
    case = get_case(conn, case_id)
    if case is None:
        return None
    inter = [
        dict(r)
        for r in conn.execute(
            select(*CASE_INTERACTION_COLUMNS)
            .where(interactions.c.case_id == case_id)
            .order_by(interactions.c.started_ms, interactions.c.id)
        ).mappings()
    ]
    ids = [i["id"] for i in inter]
    # a chat line may carry only its contact's id; the contact carries the case
    found = case_page(conn, case_id, ids, limit=limit, body_chars=body_chars, before=before, page_chars=page_chars)
    legs = contact_legs(conn, ids)
    for i in inter:
        i["legs"] = legs[i["id"]]
    return {"case": case, "interactions": inter, "messages": found.messages, "messages_before": found.before}


def case_message(conn: Connection, case_id: str, row_id: int) -> tuple[str | None, list[str], dict[str, Any]] | None:
    """The case's customer, its contacts and one message of the case whole, or None (no such case, or not its
    message)."""
    case = get_case(conn, case_id)
    if case is None:
        return None
    row = message_text(conn, case_id=case_id, row_id=row_id)
    return None if row is None else (case["customer_id"], case_contact_ids(conn, case_id), row)


def interaction_row_schema() -> dict[str, Any]:
    """The JSON schema of one of ``case_with_transcript``'s interactions (without its ``legs``)."""
    return column_schema(CASE_INTERACTION_COLUMNS)
