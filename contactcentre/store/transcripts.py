"""Conversations read back a page at a time, with long bodies cut: the agent protocol's transcripts and the
REST API's case view.

A case can gather many large e-mails; sent whole, twenty mails of 9 MB made a 180 MB frame. So a page holds
the newest ``limit`` messages older than a cursor, oldest first, but no more than fit ``page_chars``
characters of bodies (a character can be four bytes of UTF-8, and many messages each cut to ``body_chars`` still
made a page of 125 MiB); each body is cut to ``body_chars`` characters in SQL (``substr``), and bodies are read
only for the messages a page keeps, so a long body never even leaves the database for a page. A cut message
says so (``truncated``, with the full ``length`` in characters); ``message_text`` reads one message whole.

The cursor is ``"AT_MS.ID"`` of the oldest message of a page (the order is ``at_ms`` then the row id); the
next page is everything strictly older. It names a position, not a row, so it stays valid while new messages
arrive.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)

from contactcentre.store.schema import interactions, messages

_CURSOR = re.compile(r"(\d{1,15})\.(\d{1,18})")


class BadCursor(ValueError):
    """A ``before`` cursor that is not one a page gave out."""


@dataclass
class Page:
    """One page of a conversation: ``messages`` oldest first; ``before`` is the cursor of the page of older
    messages, None when there are none."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    before: str | None = None
    case_id: str | None = None  # the contact's case (``contact_page``)
    subject: str | None = None  # the contact's subject (``contact_page``)


def parse_cursor(text: str) -> tuple[int, int]:
    found = _CURSOR.fullmatch(text)
    if found is None:
        raise BadCursor(f"{text[:40]!r} is not a cursor (AT_MS.ID, as a page's 'before' gives it)")
    return int(found.group(1)), int(found.group(2))


def _cursor(row: dict[str, Any]) -> str:
    return f"{row['at_ms']}.{row['id']}"


# What a transcript shows of each message (besides its full ``length`` and whether the body was ``truncated``);
# the REST API's reference describes the same columns.
MESSAGE_COLUMNS = [
    messages.c.id,
    messages.c.case_id,
    messages.c.interaction_id,
    messages.c.channel,
    messages.c.direction,
    messages.c.author,
    messages.c.at_ms,
    messages.c.message_id,
    messages.c.subject,
    messages.c.body,
    messages.c.recipient,
    messages.c.delivery,
]


def message_row_schema() -> dict[str, Any]:
    """The JSON schema of a transcript's message (``MESSAGE_COLUMNS``) without ``length`` and ``truncated``."""
    from contactcentre.store.rowschema import column_schema

    return column_schema(MESSAGE_COLUMNS)


def _columns(body_chars: int | None) -> list[Any]:
    """The message columns; the body cut to ``body_chars`` characters (None: whole) and its full length."""
    cut = func.substr(messages.c.body, 1, body_chars).label("body") if body_chars is not None else messages.c.body
    return [cut if c is messages.c.body else c for c in MESSAGE_COLUMNS] + [
        func.length(messages.c.body).label("length")
    ]


def _older_than(before: str | None) -> ColumnElement[bool] | None:
    if before is None:
        return None
    at_ms, row_id = parse_cursor(before)
    return or_(messages.c.at_ms < at_ms, and_(messages.c.at_ms == at_ms, messages.c.id < row_id))


def _newest(conn: Connection, where: ColumnElement[bool], limit: int, before: str | None) -> list[Any]:
    """Up to ``limit + 1`` rows matching ``where`` older than ``before``, newest first (one more than a page,
    to know whether there is an older page)."""
    clauses = [where]
    older = _older_than(before)
    if older is not None:
        clauses.append(older)
    stmt = select(*_heads()).where(*clauses).order_by(messages.c.at_ms.desc(), messages.c.id.desc())
    return list(conn.execute(stmt.limit(limit + 1)).mappings())


def _heads() -> list[Any]:
    """Every column of a page's messages but the body, and the body's length: what choosing a page needs."""
    length = func.length(messages.c.body, type_=Integer())
    return [c for c in MESSAGE_COLUMNS if c is not messages.c.body] + [length.label("length")]


def _page(conn: Connection, found: dict[int, Any], limit: int, body_chars: int, page_chars: int | None) -> Page:
    """The newest ``limit`` of ``found`` (message heads), oldest first, and no more of them than fit
    ``page_chars`` characters of (cut) bodies — always at least one — with their bodies read for them alone
    (a head that came with its short body, ``inline``, needs no second read)."""
    rows = sorted(found.values(), key=lambda r: (r["at_ms"], r["id"]))
    kept = rows[-limit:]
    if page_chars is not None:
        room, first = page_chars, len(kept)
        while first > 0:
            cost = min(kept[first - 1]["length"] or 0, body_chars)
            if cost > room and first < len(kept):  # does not fit beside the newer ones: it opens the next page
                break
            room -= cost
            first -= 1
        kept = kept[first:]
    bodies = {r["id"]: r["body"] for r in kept if r.get("inline")}
    bodies.update(_bodies(conn, [r["id"] for r in kept if not r.get("inline")], body_chars))
    out = []
    for r in kept:
        m = {k: v for k, v in r.items() if k not in _PAGE_ONLY}
        m["body"] = bodies.get(m["id"], "")
        m["truncated"] = (m["length"] or 0) > body_chars
        out.append(m)
    return Page(out, _cursor(out[0]) if len(rows) > len(kept) and out else None)


def _bodies(conn: Connection, ids: list[int], body_chars: int) -> dict[int, str]:
    """The bodies of these messages, each cut to ``body_chars`` characters in SQL."""
    if not ids:
        return {}
    cut = func.substr(messages.c.body, 1, body_chars)
    return {row[0]: row[1] for row in conn.execute(select(messages.c.id, cut).where(messages.c.id.in_(ids)))}


def contact_page(
    conn: Connection,
    contact_id: str,
    *,
    limit: int,
    body_chars: int,
    before: str | None = None,
    page_chars: int | None = None,
) -> Page:
    """The newest ``limit`` messages (older than ``before``, within ``page_chars`` characters of bodies) of the
    interaction and of its case (an e-mail thread spans interactions), with the interaction's case and subject.
    Raises ``BadCursor``.

    One statement for a conversation of short lines (a new chat's, say): the interaction's row and both probes
    (two indexed probes rather than an OR the planner may scan for) as the parts of a UNION ALL, each message's
    body with it when it is at most ``INLINE_CHARS`` long. Only longer bodies the page keeps take a second
    read, so a long body never leaves the database for a page that does not show it."""
    params: dict[str, Any] = {"contact_id": contact_id, "limit": limit + 1, "body_chars": body_chars}
    if before is not None:
        params["before_at_ms"], params["before_id"] = parse_cursor(before)
    case_id = subject = None
    found: dict[int, Any] = {}
    for r in conn.execute(_contact_page_query(before is not None), params).mappings():
        if r["part"] == 0:
            case_id, subject = r["contact_case_id"], r["contact_subject"]
        else:
            found.setdefault(r["id"], {k: v for k, v in r.items() if k not in _PART_COLUMNS})
    page = _page(conn, found, limit, body_chars, page_chars)
    page.case_id, page.subject = case_id, subject
    return page


INLINE_CHARS = 2_000  # a body at most this long comes with its head (see ``contact_page``)
_PART_COLUMNS = frozenset({"part", "contact_case_id", "contact_subject"})
_PAGE_ONLY = frozenset({"inline"})


@functools.cache
def _contact_page_query(paged: bool) -> Any:
    """``contact_page``'s statement, built once (with and without a cursor): building it costs more than
    running it from the compiled cache."""
    contact_id = bindparam("contact_id", type_=interactions.c.id.type)
    body_chars = bindparam("body_chars", type_=Integer())
    limit = bindparam("limit", type_=Integer())
    older = None
    if paged:
        at_ms, row_id = bindparam("before_at_ms", type_=BigInteger()), bindparam("before_id", type_=BigInteger())
        older = or_(messages.c.at_ms < at_ms, and_(messages.c.at_ms == at_ms, messages.c.id < row_id))
    own_case = select(interactions.c.case_id).where(interactions.c.id == contact_id).scalar_subquery()
    probes = [
        _probe(messages.c.interaction_id == contact_id, older, limit, body_chars),
        _probe(messages.c.case_id == own_case, older, limit, body_chars),
    ]
    row = select(
        literal(0, Integer()).label("part"),
        interactions.c.case_id.label("contact_case_id"),
        interactions.c.subject.label("contact_subject"),
        *[cast(null(), c.type).label(c.name) for c in _head_columns(body_chars)],
    ).where(interactions.c.id == contact_id)
    return union_all(row, *(select(p) for p in probes))


def _head_columns(body_chars: Any) -> list[Any]:
    """A head (``_heads``), its body cut to ``body_chars`` when it is short, and whether it was (``inline``)."""
    short = func.coalesce(func.length(messages.c.body), 0) <= INLINE_CHARS
    cut = func.substr(messages.c.body, 1, body_chars, type_=messages.c.body.type)
    return [
        *_heads(),
        case((short, cut), else_=null()).label("body"),
        case((short, literal(1, Integer())), else_=literal(0, Integer())).label("inline"),
    ]


def _probe(where: ColumnElement[bool], older: ColumnElement[bool] | None, limit: Any, body_chars: Any) -> Any:
    """Up to ``limit`` heads matching ``where`` older than ``older``, newest first, as one part of a UNION ALL
    (a subquery: SQLite takes no ORDER BY or LIMIT on a part itself)."""
    clauses = [where] if older is None else [where, older]
    return (
        select(
            literal(1, Integer()).label("part"),
            cast(null(), interactions.c.case_id.type).label("contact_case_id"),
            cast(null(), interactions.c.subject.type).label("contact_subject"),
            *_head_columns(body_chars),
        )
        .where(*clauses)
        .order_by(messages.c.at_ms.desc(), messages.c.id.desc())
        .limit(limit)
        .subquery()
    )


def case_page(
    conn: Connection,
    case_id: str,
    interaction_ids: list[str],
    *,
    limit: int,
    body_chars: int,
    before: str | None = None,
    page_chars: int | None = None,
) -> Page:
    """The newest ``limit`` messages (older than ``before``, within ``page_chars`` characters of bodies) of the
    case and of its interactions (a chat line may carry only its contact's id). Raises ``BadCursor``."""
    where = messages.c.case_id == case_id
    if interaction_ids:
        where = or_(where, messages.c.interaction_id.in_(interaction_ids))
    found = {r["id"]: r for r in _newest(conn, where, limit, before)}
    return _page(conn, found, limit, body_chars, page_chars)


def message_text(
    conn: Connection,
    *,
    contact_id: str | None = None,
    case_id: str | None = None,
    row_id: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any] | None:
    """One message whole (``id``, ``interaction_id``, ``at_ms``, ``body``…), by its row id or its channel
    ``message_id``, if it belongs to the conversation a page of ``contact_id`` (its interaction and its case)
    or of ``case_id`` (the case and its interactions) shows; None otherwise, so nobody reads a message of a
    conversation they may not see by guessing its id."""
    if contact_id is not None:
        own_case = select(interactions.c.case_id).where(interactions.c.id == contact_id).scalar_subquery()
        scope = or_(messages.c.interaction_id == contact_id, messages.c.case_id == own_case)
    elif case_id is not None:
        its_contacts = select(interactions.c.id).where(interactions.c.case_id == case_id)
        scope = or_(messages.c.case_id == case_id, messages.c.interaction_id.in_(its_contacts))
    else:
        raise TypeError("message_text needs contact_id or case_id")
    if row_id is not None:
        which = messages.c.id == row_id
    elif message_id is not None:
        which = messages.c.message_id == message_id
    else:
        raise TypeError("message_text needs row_id or message_id")
    row = (
        conn.execute(select(*_columns(None)).where(scope, which).order_by(messages.c.id).limit(1))
        .mappings()
        .one_or_none()
    )
    return None if row is None else {**row, "truncated": False}


__all__ = [
    "MESSAGE_COLUMNS",
    "BadCursor",
    "Page",
    "case_page",
    "contact_page",
    "message_row_schema",
    "message_text",
    "parse_cursor",
]
