"""Cases: one matter of one customer, grouping its interactions across channels, with SLA due times.

Status moves along ``CASE_TRANSITIONS``; a reply from the customer re-opens a pending or solved case, a
closed case stays closed (a new message starts a new case that refers to it in its subject).
"""

from __future__ import annotations

import functools
import re
import secrets
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from contactcentre.store.customers import new_id
from contactcentre.store.db import insert_unless_taken, one_of
from contactcentre.store.identity import mailbox
from contactcentre.store.schema import cases, interactions, messages

CASE_TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"open", "pending", "solved", "closed"}),
    "open": frozenset({"pending", "solved", "closed"}),
    "pending": frozenset({"open", "solved", "closed"}),
    "solved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}

_TOKEN_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: tokens are read aloud on the phone
TOKEN_IN_SUBJECT = re.compile(r"\[#(C-[2-9A-HJ-NP-Z]{6})\]")


class CaseError(Exception):
    pass


def new_token() -> str:
    return "C-" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))


def open_case(
    conn: Connection,
    now_ms: int,
    *,
    customer_id: str | None,
    subject: str | None = None,
    category: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    owner_id: str | None = None,
    first_response_due_ms: int | None = None,
    resolution_due_ms: int | None = None,
    case_id: str | None = None,
) -> tuple[str, str]:
    """Create a case (with ``case_id`` if given: a caller that routes the contact before the row is written);
    returns ``(case_id, token)``."""
    case_id = case_id or new_id("case")
    row = {
        "id": case_id,
        "customer_id": customer_id,
        "subject": subject,
        "category": category,
        "status": "new",
        "priority": priority,
        "queue": queue,
        "owner_id": owner_id,
        "created_ms": now_ms,
        "updated_ms": now_ms,
        "first_response_due_ms": first_response_due_ms,
        "resolution_due_ms": resolution_due_ms,
    }
    for _ in range(20):  # a token another case holds is passed over: the insert is the check
        token = new_token()
        if insert_unless_taken(conn, cases, ["token"], {**row, "token": token}):
            return case_id, token
    # 32**6 ≈ 10**9 tokens; twenty collisions in a row means something else is wrong
    raise CaseError("could not mint a unique case token")


def set_status(conn: Connection, case_id: str, status: str, now_ms: int) -> None:
    current = conn.execute(select(cases.c.status).where(cases.c.id == case_id)).scalar_one_or_none()
    if current is None:
        raise CaseError(f"no case {case_id}")
    if status == current:
        return
    if status not in CASE_TRANSITIONS[current]:
        raise CaseError(f"case {case_id}: cannot go from {current} to {status}")
    values: dict[str, Any] = {"status": status, "updated_ms": now_ms}
    if status == "closed":
        values["closed_ms"] = now_ms
    conn.execute(update(cases).where(cases.c.id == case_id).values(values))


def status_from_disposition(conn: Connection, interaction_id: str, status: str, now_ms: int) -> None:
    """Move the case of an interaction to ``status`` because its wrap-up closed with a disposition that says so
    (``[dispositions] case_status``). Only along ``CASE_TRANSITIONS``: a closed case stays closed, and a
    status the case cannot go to from where it is leaves it alone. A guarded UPDATE rather than ``set_status``,
    which raises: this runs in the store writer's shared transaction, where a refusal is not an error."""
    conn.execute(_status_move(status), {"interaction_id": interaction_id, "now_ms": now_ms})


@functools.cache
def _status_move(status: str) -> Any:
    # One statement (the case found by a subquery), built once per status: this runs in the store writer for
    # every wrap-up closed with such a code.
    case_id = select(interactions.c.case_id).where(interactions.c.id == bindparam("interaction_id")).scalar_subquery()
    from_statuses = [old for old, to in CASE_TRANSITIONS.items() if status in to]
    values: dict[str, Any] = {"status": status, "updated_ms": bindparam("now_ms")}
    if status == "closed":
        values["closed_ms"] = bindparam("now_ms")
    return update(cases).where(cases.c.id == case_id, one_of(cases.c.status, from_statuses)).values(values)


def case_by_token(conn: Connection, subject: str) -> str | None:
    """The case whose token appears in an e-mail subject (``Re: Invoice [#C-7QK2ZP]``), if any."""
    m = TOKEN_IN_SUBJECT.search(subject or "")
    if m is None:
        return None
    return conn.execute(select(cases.c.id).where(cases.c.token == m.group(1))).scalar_one_or_none()


def get_case(conn: Connection, case_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(cases).where(cases.c.id == case_id)).mappings().one_or_none()
    return dict(row) if row is not None else None


def case_contact_ids(conn: Connection, case_id: str) -> list[str]:
    """The ids of the case's interactions (its contacts), oldest first: who may read the case depends on them."""
    rows = conn.execute(
        select(interactions.c.id)
        .where(interactions.c.case_id == case_id)
        .order_by(interactions.c.started_ms, interactions.c.id)
    )
    return [r[0] for r in rows]


def acknowledged_since(conn: Connection, recipient: str, author: str, since_ms: int) -> bool:
    """Whether ``author`` (the centre's own agent id) sent ``recipient``'s mailbox a message after ``since_ms``:
    the e-mail channel's once-per-period memory of acknowledgements (RFC 3834), per envelope sender whatever
    ``From:`` the mails named. Found by equality on the address and on its mailbox (``ann+1@d`` → ``ann@d``,
    ``identity.mailbox``), so that index ``messages (recipient, at_ms)`` serves it on any database and collation
    (a LIKE for the mailbox's other tags could not use it, and would scan every message). The channel's own
    memory folds every tag into its mailbox; after a restart, a tag never seen before may get one more."""
    box = mailbox(recipient)
    found = conn.execute(
        select(messages.c.id)
        .where(
            messages.c.recipient.in_(sorted({recipient, box})),
            messages.c.at_ms > since_ms,
            messages.c.direction == "outbound",
            messages.c.author == author,
        )
        .limit(1)
    ).first()
    return found is not None
