"""Screen-pop: what an agent sees the moment a contact is offered, found by ANI, e-mail address or chat token.

One statement (round trips, not query plans, are what a pop costs on PostgreSQL), three parts of a UNION
ALL, each answered from an index without scanning a customer's history:

1. identity → customer: the unique ``(kind, value)`` index on ``identities``, joined to ``customers`` by key,
   with the recent signals (contacts, complaints, abandons in a window: a range of ``interactions
   (customer_id, started_ms)``) as scalar subqueries on the same row;
2. open cases: ``cases (customer_id, status)``, with each case's interaction count from ``interactions
   (case_id)`` (a case contacted again and again is a churn signal);
3. the last N interactions on every channel: ``interactions (customer_id, started_ms)`` read backwards.

Read it on ``db.reader(engine)``: on PostgreSQL that is an autocommit connection, which saves the BEGIN and
ROLLBACK round trips and keeps psycopg's prepared statements (it drops them at every ROLLBACK).

``benchmarks/store.py`` measures it at one million interactions (target p99 ≤ 5 ms).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from sqlalchemy import Connection, Integer, and_, bindparam, cast, func, literal, null, select, union_all

from contactcentre.store.db import one_of
from contactcentre.store.identity import DEFAULT_REGION, IdentityError, normalise
from contactcentre.store.schema import OPEN_CASE_STATUSES, cases, customers, identities, interactions

DAY_MS = 86_400_000
COMPLAINT_DISPOSITIONS = ("complaint",)
SIGNAL_WINDOW_DAYS = 30
REPEAT_CONTACTS = 3  # interactions on one open case from which the case counts as "contacted again and again"


class CustomerCard(msgspec.Struct, frozen=True):
    id: str
    name: str | None
    tier: str | None
    lifetime_value: float | None
    value_segment: str | None
    account_manager_id: str | None
    language: str | None
    consent_email: bool
    consent_sms: bool
    consent_calls: bool
    do_not_call: bool


class CaseSummary(msgspec.Struct, frozen=True):
    id: str
    token: str
    subject: str | None
    category: str | None
    status: str
    priority: int
    queue: str | None
    owner_id: str | None
    first_response_due_ms: int | None
    resolution_due_ms: int | None
    interactions: int
    overdue: bool


class InteractionSummary(msgspec.Struct, frozen=True):
    id: str
    channel: str
    direction: str
    started_ms: int
    case_id: str | None
    queue: str | None
    agent_id: str | None
    subject: str | None
    wait_ms: int | None
    handle_ms: int | None
    disposition: str | None
    outcome: str | None


class Signals(msgspec.Struct, frozen=True):
    """Churn-risk signals over the last ``window_days``; ``reasons`` says in words what raised ``risk``."""

    window_days: int
    contacts: int
    complaints: int
    abandoned: int
    repeat_case_contacts: int  # the most interactions on one open case
    risk: Literal["low", "medium", "high"]
    reasons: list[str]


class ScreenPop(msgspec.Struct, frozen=True):
    matched: bool
    kind: str
    value: str
    customer: CustomerCard | None = None
    open_cases: list[CaseSummary] = []
    recent: list[InteractionSummary] = []
    signals: Signals | None = None


_CARD = [
    customers.c.id,
    customers.c.name,
    customers.c.tier,
    customers.c.lifetime_value,
    customers.c.value_segment,
    customers.c.account_manager_id,
    customers.c.language,
    customers.c.consent_email,
    customers.c.consent_sms,
    customers.c.consent_calls,
    customers.c.do_not_call,
]


def _signal_counts() -> list[Any]:
    """The window's contact, complaint and abandon counts as scalar subqueries on the customer row."""
    since = bindparam("since")
    window = and_(interactions.c.customer_id == customers.c.id, interactions.c.started_ms >= since)

    def count(*where: Any) -> Any:
        return select(func.count()).select_from(interactions).where(window, *where).scalar_subquery()

    return [
        count().label("contacts"),
        count(one_of(interactions.c.disposition, COMPLAINT_DISPOSITIONS)).label("complaints"),
        count(interactions.c.outcome == "abandoned").label("abandoned"),
    ]


_CASE = [
    cases.c.id,
    cases.c.token,
    cases.c.subject,
    cases.c.category,
    cases.c.status,
    cases.c.priority,
    cases.c.queue,
    cases.c.owner_id,
    cases.c.first_response_due_ms,
    cases.c.resolution_due_ms,
]
_RECENT = [
    interactions.c.id,
    interactions.c.channel,
    interactions.c.direction,
    interactions.c.started_ms,
    interactions.c.case_id,
    interactions.c.queue,
    interactions.c.agent_id,
    interactions.c.subject,
    interactions.c.wait_ms,
    interactions.c.handle_ms,
    interactions.c.disposition,
    interactions.c.outcome,
]
# One statement answers a pop: the customer's row, their open cases and their recent interactions, as the
# three parts of a UNION ALL. Each part fills its own columns of one wide row (the others are typed NULLs, so
# PostgreSQL can match the parts' types) and says which part it is in ``part``.
_CARD_PART, _CASE_PART, _RECENT_PART = 0, 1, 2
_SLOTS: list[tuple[str, Any]] = (
    [(f"card_{c.name}", c.type) for c in _CARD]
    + [("contacts", Integer()), ("complaints", Integer()), ("abandoned", Integer())]
    + [(f"case_{c.name}", c.type) for c in _CASE]
    + [("case_interactions", Integer()), ("case_created_ms", cases.c.created_ms.type)]
    + [(f"recent_{c.name}", c.type) for c in _RECENT]
)
_CARD_AT = 1
_CASE_AT = _CARD_AT + len(_CARD) + 3
_RECENT_AT = _CASE_AT + len(_CASE) + 2


def _part(part: int, at: int, columns: list[Any]) -> list[Any]:
    """The wide row's columns with ``columns`` from slot ``at`` on and typed NULLs elsewhere."""
    out: list[Any] = [literal(part, Integer()).label("part")]
    for i, (name, type_) in enumerate(_SLOTS):
        j = i + 1 - at
        out.append(columns[j].label(name) if 0 <= j < len(columns) else cast(null(), type_).label(name))
    return out


def _pop_query(who: Any, card_from: Any) -> Any:
    """The pop of the customer whose id the scalar subquery ``who`` gives, with ``card_from`` the FROM (and
    WHERE) of their row."""
    card = card_from(select(*_part(_CARD_PART, _CARD_AT, [*_CARD, *_signal_counts()])))
    per_case = select(func.count()).select_from(interactions).where(interactions.c.case_id == cases.c.id)
    open_cases = (
        select(*_part(_CASE_PART, _CASE_AT, [*_CASE, per_case.scalar_subquery(), cases.c.created_ms]))
        .where(cases.c.customer_id == who, one_of(cases.c.status, OPEN_CASE_STATUSES))
        .subquery()
    )
    recent = (
        select(*_part(_RECENT_PART, _RECENT_AT, _RECENT))
        .where(interactions.c.customer_id == who)
        .order_by(interactions.c.started_ms.desc())
        .limit(bindparam("limit", type_=Integer()))
        .subquery()  # ORDER BY and LIMIT of one part of a compound select: a subquery on SQLite
    )
    return union_all(card, select(open_cases), select(recent))


def _identity_query() -> Any:
    who = select(identities.c.customer_id).where(_IDENTITY_MATCH).scalar_subquery()

    def card_from(q: Any) -> Any:
        return q.select_from(identities.join(customers, customers.c.id == identities.c.customer_id)).where(
            _IDENTITY_MATCH
        )

    return _pop_query(who, card_from)


def _customer_query() -> Any:
    # Merges are followed in SQL (``customers.surviving_id`` in one statement): the chain of merged_into
    # pointers from the given id, bounded so that a cycle ends; the survivor is the link that points nowhere.
    chain = (
        select(customers.c.id, customers.c.merged_into, literal(0, Integer()).label("depth"))
        .where(customers.c.id == bindparam("customer_id"))
        .cte("chain", recursive=True)
    )
    link = chain.alias()
    chain = chain.union_all(
        select(customers.c.id, customers.c.merged_into, link.c.depth + 1).where(
            customers.c.id == link.c.merged_into, link.c.depth < _MAX_MERGES
        )
    )
    who = select(chain.c.id).where(chain.c.merged_into.is_(None)).scalar_subquery()
    return _pop_query(who, lambda q: q.where(customers.c.id == who))


_IDENTITY_MATCH = and_(identities.c.kind == bindparam("kind"), identities.c.value == bindparam("value"))
_MAX_MERGES = 64

# Built once: compiled-statement caching then makes each call a cache hit.
_Q_IDENTITY = _identity_query()
_Q_CUSTOMER = _customer_query()


def screen_pop(
    conn: Connection,
    kind: str,
    value: str,
    now_ms: int,
    *,
    limit: int = 10,
    region: str | None = DEFAULT_REGION,
) -> ScreenPop:
    """Everything an agent needs about whoever is behind ``(kind, value)``; ``matched`` is False for a
    stranger (or a value that is not an identity of its kind)."""
    try:
        norm = normalise(kind, value, region)
    except IdentityError:
        return ScreenPop(matched=False, kind=kind, value=value)
    since = now_ms - SIGNAL_WINDOW_DAYS * DAY_MS
    rows = conn.execute(_Q_IDENTITY, {"kind": kind, "value": norm, "since": since, "limit": limit}).all()
    return _pop(rows, kind, norm, now_ms) or ScreenPop(matched=False, kind=kind, value=norm)


def screen_pop_customer(conn: Connection, customer_id: str, now_ms: int, *, limit: int = 10) -> ScreenPop:
    """The same view for a known customer id (a CRM link, a case page), following merges."""
    since = now_ms - SIGNAL_WINDOW_DAYS * DAY_MS
    rows = conn.execute(_Q_CUSTOMER, {"customer_id": customer_id, "since": since, "limit": limit}).all()
    return _pop(rows, "customer", customer_id, now_ms) or ScreenPop(matched=False, kind="customer", value=customer_id)


def _pop(rows: list[Any], kind: str, value: str, now_ms: int) -> ScreenPop | None:
    """The pop from the query's rows (None: no customer row, nobody to pop)."""
    card_rows = [r for r in rows if r.part == _CARD_PART]
    if not card_rows:
        return None
    row = card_rows[0]
    card = CustomerCard(*row[_CARD_AT : _CARD_AT + len(_CARD)])
    contacts, complaints, abandoned = row[_CARD_AT + len(_CARD) : _CASE_AT]
    open_cases = []
    # the order the parts' rows come in is the database's: sorted here (priority first, then the oldest)
    found = [r for r in rows if r.part == _CASE_PART]
    found.sort(key=lambda r: (-r[_CASE_AT + 5], r[_CASE_AT + len(_CASE) + 1]))
    for r in found:
        c = r[_CASE_AT : _CASE_AT + len(_CASE) + 1]
        due = [d for d in (c[8], c[9]) if d is not None]
        open_cases.append(CaseSummary(*c, overdue=any(d < now_ms for d in due)))
    recent = [r[_RECENT_AT : _RECENT_AT + len(_RECENT)] for r in rows if r.part == _RECENT_PART]
    recent.sort(key=lambda r: -r[3])  # newest first (a stable sort keeps the database's order of a tie)
    return ScreenPop(
        matched=True,
        kind=kind,
        value=value,
        customer=card,
        open_cases=open_cases,
        recent=[InteractionSummary(*r) for r in recent],
        signals=_signals(int(contacts), int(complaints), int(abandoned), open_cases),
    )


def _signals(contacts: int, complaints: int, abandoned: int, open_cases: list[CaseSummary]) -> Signals:
    repeat = max((c.interactions for c in open_cases), default=0)
    reasons = []
    score = 0
    if complaints:
        reasons.append(f"{complaints} complaint{'s' * (complaints != 1)} in {SIGNAL_WINDOW_DAYS} days")
        score += 2 if complaints > 1 else 1
    if repeat >= REPEAT_CONTACTS:
        reasons.append(f"{repeat} contacts on one open case")
        score += 1
    if abandoned >= 2:
        reasons.append(f"gave up waiting {abandoned} times in {SIGNAL_WINDOW_DAYS} days")
        score += 1
    if any(c.overdue for c in open_cases):
        reasons.append("an open case is past its due time")
        score += 1
    risk: Literal["low", "medium", "high"] = "high" if score >= 3 else "medium" if score >= 1 else "low"
    return Signals(SIGNAL_WINDOW_DAYS, contacts, complaints, abandoned, repeat, risk, reasons)
