"""An e-mail's rows: a received mail's sender identified and its thread found (by In-Reply-To / References,
else a case token in the subject) or a case opened; a case touched by a mail or first answered; what a reply
threads onto; the delivery state of a sent mail; the mails still queued for delivery after a restart."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, select, update

from contactcentre.store import cases as cases_
from contactcentre.store import customers as customers_
from contactcentre.store.schema import cases, customers, interactions, messages

log = logging.getLogger("contactcentre.edge.email.channel")  # its lines read as the e-mail channel's


class Mail(Protocol):
    """What intake reads of a received mail (``edge.email.channel.Inbound``)."""

    @property
    def message_id(self) -> str: ...
    @property
    def from_addr(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def automatic(self) -> bool: ...
    @property
    def return_path(self) -> str | None: ...

    def thread_ids(self) -> list[str]: ...


@dataclass(frozen=True)
class Intake:
    duplicate: bool
    customer_id: str | None = None
    customer_name: str | None = None
    tier: str | None = None
    case_id: str | None = None
    token: str | None = None
    case_subject: str | None = None
    queue: str | None = None
    new_case: bool = False
    reopened: bool = False
    acknowledged: bool = False  # the envelope sender had an acknowledgement within ack_once_per_s


def mail_intake(
    conn: Connection,
    mail: Mail,
    now_ms: int,
    address_queue: str,
    email_queues: frozenset[str],
    ack_since_ms: int,
    *,
    new_subject: str | None,
    ack_author: str,
) -> Intake:
    """Identify the sender and find (or open, with ``new_subject``) the case; in one transaction of its own.
    ``acknowledged``: ``ack_author`` acknowledged a mail to the envelope sender since ``ack_since_ms``."""
    got = _intake_case(conn, mail, now_ms, address_queue, email_queues, new_subject)
    if got.duplicate or mail.automatic or mail.return_path is None or not (got.new_case or got.reopened):
        return got
    recent = cases_.acknowledged_since(conn, mail.return_path, ack_author, ack_since_ms)
    return dataclasses.replace(got, acknowledged=recent)


def _intake_case(
    conn: Connection, mail: Mail, now_ms: int, address_queue: str, email_queues: frozenset[str], subject: str | None
) -> Intake:
    seen = conn.execute(
        select(messages.c.id)
        .where(
            messages.c.message_id == mail.message_id,
            messages.c.direction == "inbound",
            messages.c.channel == "email",
            messages.c.author == mail.from_addr,
        )
        .limit(1)
    ).first()
    if seen is not None:
        return Intake(duplicate=True)
    customer_id, _ = customers_.identify(conn, "email", mail.from_addr, now_ms, name=mail.name)
    customer_id = customers_.surviving_id(conn, customer_id) or customer_id
    person = conn.execute(select(customers.c.name, customers.c.tier).where(customers.c.id == customer_id)).first()

    case = _threaded_case(conn, mail)
    if case is not None and not _owns(conn, customer_id, case):
        # A case token (or a Message-ID) is no key: whoever is not the case's customer starts a case of their
        # own, and hears nothing of the other one (its subject is in the acknowledgement).
        log.info("e-mail from %s names case %s of another customer: a new case", mail.from_addr, case["token"])
        case = None
    if case is not None:
        queue = case["queue"] if case["queue"] in email_queues else address_queue
        return Intake(
            duplicate=False,
            customer_id=customer_id,
            customer_name=person.name if person else None,
            tier=person.tier if person else None,
            case_id=case["id"],
            token=case["token"],
            case_subject=case["subject"],
            queue=queue,
            reopened=case["status"] in ("pending", "solved"),
        )
    case_id, token = cases_.open_case(conn, now_ms, customer_id=customer_id, subject=subject, queue=address_queue)
    return Intake(
        duplicate=False,
        customer_id=customer_id,
        customer_name=person.name if person else None,
        tier=person.tier if person else None,
        case_id=case_id,
        token=token,
        case_subject=subject,
        queue=address_queue,
        new_case=True,
    )


def _threaded_case(conn: Connection, mail: Mail) -> Any:
    """The open case a mail answers: by In-Reply-To / References, else by a case token in its subject."""
    case = None
    wanted = mail.thread_ids()
    if wanted:
        rows = conn.execute(
            select(messages.c.message_id, messages.c.case_id).where(
                messages.c.message_id.in_(wanted), messages.c.case_id.is_not(None)
            )
        ).all()
        by_id = {r.message_id: r.case_id for r in rows}
        for mid in wanted:
            if mid in by_id:
                case = conn.execute(select(cases).where(cases.c.id == by_id[mid])).mappings().first()
                break
    if case is None or case["status"] == "closed":
        # a closed case stays closed: its token is passed over and a new case starts
        tokens = cases_.TOKEN_IN_SUBJECT.findall(mail.subject or "")
        if not tokens:
            return None
        found = {
            r["token"]: r
            for r in conn.execute(select(cases).where(cases.c.token.in_(tokens), cases.c.status != "closed")).mappings()
        }
        case = next((found[t] for t in tokens if t in found), None)
    return case


def _owns(conn: Connection, customer_id: str, case: Any) -> bool:
    """Whether the case belongs to this customer (any of their addresses, or a customer merged into them)."""
    owner = case["customer_id"]
    return owner is not None and customers_.surviving_id(conn, owner) == customer_id


def case_touched(case_id: str, now_ms: int, due_ms: int | None, conn: Connection) -> None:
    # Runs inside the writer's transaction, beside the stored message: guarded UPDATEs that cannot raise on
    # data (cases.set_status raises on a transition it refuses, which would fail everyone's commit).
    conn.execute(
        update(cases)
        .where(cases.c.id == case_id, cases.c.status.in_(("pending", "solved")))
        .values(status="open", updated_ms=now_ms)
    )
    conn.execute(update(cases).where(cases.c.id == case_id).values(updated_ms=now_ms))
    if due_ms is not None:
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id, cases.c.first_response_due_ms.is_(None))
            .values(first_response_due_ms=due_ms)
        )


def first_response(case_id: str, now_ms: int, conn: Connection) -> None:
    conn.execute(
        update(cases)
        .where(cases.c.id == case_id, cases.c.first_response_ms.is_(None))
        .values(first_response_ms=now_ms, updated_ms=now_ms)
    )


@dataclass(frozen=True)
class ReplyContext:
    channel: str
    address: str | None
    case_id: str | None
    token: str | None
    subject: str | None
    last_id: str | None
    last_references: tuple[str, ...]


def reply_context(
    conn: Connection, contact_id: str, clean_subject: Callable[[str | None], str | None]
) -> ReplyContext | None:
    it = conn.execute(
        select(interactions.c.channel, interactions.c.address, interactions.c.case_id, interactions.c.subject).where(
            interactions.c.id == contact_id
        )
    ).first()
    if it is None:
        return None
    token, subject, last_id, refs = None, clean_subject(it.subject), None, ()
    if it.case_id is not None:
        case = conn.execute(select(cases.c.token, cases.c.subject).where(cases.c.id == it.case_id)).first()
        if case is not None:
            token, subject = case.token, case.subject or subject
        last = conn.execute(
            select(messages.c.message_id, messages.c.references, messages.c.in_reply_to)
            .where(
                messages.c.case_id == it.case_id,
                messages.c.direction == "inbound",
                messages.c.channel == "email",
                messages.c.message_id.is_not(None),
            )
            .order_by(messages.c.at_ms.desc(), messages.c.id.desc())
            .limit(1)
        ).first()
        if last is not None:
            # RFC 5322 3.6.4: the parent's References, or failing those its In-Reply-To
            last_id = last.message_id
            refs = tuple((last.references or "").split()) or ((last.in_reply_to,) if last.in_reply_to else ())
    return ReplyContext(it.channel, it.address, it.case_id, token, subject, last_id, refs)


def record_delivery(conn: Connection, message_id: str, state: str, attempts: int) -> None:
    conn.execute(
        update(messages)
        .where(messages.c.message_id == message_id, messages.c.direction == "outbound", messages.c.channel == "email")
        .values(delivery=state, attempts=attempts)
    )


def queued_mail(conn: Connection) -> list[Any]:
    return list(
        conn.execute(
            select(
                messages.c.message_id,
                messages.c.recipient,
                messages.c.subject,
                messages.c.body,
                messages.c.in_reply_to,
                messages.c.references,
                messages.c.at_ms,
                messages.c.author,
                messages.c.attempts,
            )
            .where(messages.c.delivery == "queued", messages.c.channel == "email", messages.c.direction == "outbound")
            .order_by(messages.c.id)
        ).all()
    )
