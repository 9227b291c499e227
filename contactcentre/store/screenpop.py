"""Screen-pop: what an agent sees the moment a contact is offered, found by ANI, e-mail address or chat token.

One indexed path, three small queries (round trips, not query plans, are what a pop costs on PostgreSQL),
each answered from an index without scanning a customer's history:

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
from sqlalchemy import Connection, and_, bindparam, func, select

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
    """The window's contact, complaint and abandon counts as scalar subqueries on the customer row, so the
    first query answers them too (one round trip fewer; on PostgreSQL each costs more than the query)."""
    since = bindparam("since")
    window = and_(interactions.c.customer_id == customers.c.id, interactions.c.started_ms >= since)

    def count(*where: Any) -> Any:
        return select(func.count()).select_from(interactions).where(window, *where).scalar_subquery()

    return [
        count().label("contacts"),
        count(interactions.c.disposition.in_(COMPLAINT_DISPOSITIONS)).label("complaints"),
        count(interactions.c.outcome == "abandoned").label("abandoned"),
    ]


def _identity_query() -> Any:
    return (
        select(*_CARD, *_signal_counts())
        .select_from(identities.join(customers, customers.c.id == identities.c.customer_id))
        .where(identities.c.kind == bindparam("kind"), identities.c.value == bindparam("value"))
    )


def _customer_query() -> Any:
    return select(*_CARD, *_signal_counts()).where(customers.c.id == bindparam("customer_id"))


def _cases_query() -> Any:
    per_case = (
        select(func.count())
        .select_from(interactions)
        .where(interactions.c.case_id == cases.c.id)
        .scalar_subquery()
        .label("interactions")
    )
    return (
        select(
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
            per_case,
        )
        .where(cases.c.customer_id == bindparam("customer_id"), cases.c.status.in_(OPEN_CASE_STATUSES))
        .order_by(cases.c.priority.desc(), cases.c.created_ms)
    )


def _recent_query() -> Any:
    return (
        select(
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
        )
        .where(interactions.c.customer_id == bindparam("customer_id"))
        .order_by(interactions.c.started_ms.desc())
        .limit(bindparam("limit"))
    )


# Built once: compiled-statement caching then makes each call a cache hit.
_Q_IDENTITY = _identity_query()
_Q_CUSTOMER = _customer_query()
_Q_CASES = _cases_query()
_Q_RECENT = _recent_query()


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
    row = conn.execute(_Q_IDENTITY, {"kind": kind, "value": norm, "since": since}).one_or_none()
    if row is None:
        return ScreenPop(matched=False, kind=kind, value=norm)
    return _pop(conn, row, kind, norm, now_ms, limit)


def screen_pop_customer(conn: Connection, customer_id: str, now_ms: int, *, limit: int = 10) -> ScreenPop:
    """The same view for a known customer id (a CRM link, a case page), following merges."""
    from contactcentre.store.customers import surviving_id

    survivor = surviving_id(conn, customer_id)
    since = now_ms - SIGNAL_WINDOW_DAYS * DAY_MS
    row = conn.execute(_Q_CUSTOMER, {"customer_id": survivor, "since": since}).one_or_none() if survivor else None
    if row is None:
        return ScreenPop(matched=False, kind="customer", value=customer_id)
    return _pop(conn, row, "customer", customer_id, now_ms, limit)


def _pop(conn: Connection, row: Any, kind: str, value: str, now_ms: int, limit: int) -> ScreenPop:
    card = CustomerCard(*row[: len(_CARD)])
    contacts, complaints, abandoned = row[len(_CARD) :]
    params = {"customer_id": card.id}
    open_cases = []
    for c in conn.execute(_Q_CASES, params):
        due = [d for d in (c.first_response_due_ms, c.resolution_due_ms) if d is not None]
        open_cases.append(CaseSummary(*c, overdue=any(d < now_ms for d in due)))
    recent = [InteractionSummary(*r) for r in conn.execute(_Q_RECENT, {**params, "limit": limit})]
    return ScreenPop(
        matched=True,
        kind=kind,
        value=value,
        customer=card,
        open_cases=open_cases,
        recent=recent,
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
