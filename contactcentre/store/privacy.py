"""A customer's personal data: export it (access and portability), erase it, and record who looked at it.

**Scope.** A customer is reached through merge pointers: asking about a merged-away id means asking about
the customer that survived it, and the survivor's data includes every customer merged into it (their
tombstone rows still hold the names they were created with, and a late event may still carry their id).
What belongs to that group of customer ids:

* cases whose ``customer_id`` is in the group, and cases without a customer that one of the group's
  interactions belongs to (an e-mail threaded into a case before the sender was identified);
* interactions whose ``customer_id`` is in the group or whose case is one of those cases, and contacts whose
  logged arrival names a customer of the group (an arrival whose interaction row the writer has not made);
* messages of those cases or interactions; events of those contacts.

**Erasure** anonymises rather than deletes, so that service levels, handle times and volumes computed later
still count the contact: every column listed in ``schema.PERSONAL_COLUMNS`` is cleared, identities are
deleted, logged event payloads lose their ``PERSONAL`` fields. Times, channels, queues, agents, outcomes,
dispositions, tier and value segment stay. All of it happens in the caller's transaction with set-based
UPDATEs; only event payloads are rewritten in Python (one decode and encode per personal event). The reads
come first, so on SQLite the write lock is held only for the short burst of UPDATEs at the end.

**Audit.** Every export, erasure and read of customer data is logged in ``audit_log`` with ids, counts and
short codes only, never personal data, so the log survives erasure unchanged and can prove it happened.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from contactcentre.events import EVENT_TYPES, Event, decode, encode
from contactcentre.store.customers import UnknownCustomer, surviving_id
from contactcentre.store.schema import (
    PERSONAL_COLUMNS,
    audit_log,
    cases,
    customers,
    events,
    identities,
    interactions,
    messages,
)

EXPORT_FORMAT = "contactcentre.customer-export/1"
REDACTED = "[erased]"

# The tables whose personal columns erasure handles; a table added to PERSONAL_COLUMNS must be handled here
# too (a test compares the two).
HANDLED_TABLES = frozenset({"customers", "identities", "cases", "interactions", "messages", "events"})


class PrivacyError(Exception):
    """Erasure or export cannot be done safely (merge pointers in a cycle, an event payload that does not
    decode); nothing has been changed by the failing call."""


@dataclass(frozen=True)
class ErasureReport:
    """What one ``erase_customer`` call changed: rows per table (not rows found: a second erasure of the same
    customer changes nothing and reports zeros)."""

    requested_id: str
    customer_id: str  # the survivor actually erased (differs from requested_id when that was merged away)
    merged_ids: tuple[str, ...]  # customers merged into it, erased with it
    at_ms: int
    customers: int
    identities: int
    cases: int
    interactions: int
    messages: int
    events: int
    audit_redacted: int  # audit entries that held personal data against the rules (should stay 0)

    def counts(self) -> dict[str, int]:
        return {
            "customers": self.customers,
            "identities": self.identities,
            "cases": self.cases,
            "interactions": self.interactions,
            "messages": self.messages,
            "events": self.events,
            "audit_redacted": self.audit_redacted,
        }

    @property
    def nothing_left(self) -> bool:
        """True when there was nothing personal left to erase (an earlier erasure did it all)."""
        return not any(self.counts().values())


# ------------------------------------------------------------------------------------------- event payloads


def _blank_factory(cls: type[Event], name: str, t: msgspec.inspect.Type) -> Callable[[Any], Any]:
    """How erasure empties ``cls.name``: a function of the field's value to its blank."""
    if isinstance(t, msgspec.inspect.UnionType) and any(isinstance(m, msgspec.inspect.NoneType) for m in t.types):
        if name in cls.PRESENCE_KEPT:
            if not any(isinstance(m, msgspec.inspect.StrType) for m in t.types):
                raise TypeError(f"{cls.__name__}.{name} is in PRESENCE_KEPT but is not an optional string")
            return lambda value: None if value is None else ""
        return lambda value: None
    if isinstance(t, msgspec.inspect.StrType):
        return lambda value: ""
    if isinstance(t, msgspec.inspect.DictType):
        return lambda value: {}
    if isinstance(t, msgspec.inspect.ListType):
        return lambda value: []
    raise TypeError(f"{cls.__name__}.{name} is listed in PERSONAL but its type {t!r} has no empty value")


def _blanks(cls: type[Event]) -> dict[str, Callable[[Any], Any]]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    types = {f.name: f.type for f in info.fields}
    unknown = set(cls.PERSONAL) - set(types)
    if unknown:
        raise TypeError(f"{cls.__name__}.PERSONAL names fields it does not have: {sorted(unknown)}")
    if set(cls.PRESENCE_KEPT) - set(cls.PERSONAL):
        raise TypeError(f"{cls.__name__}.PRESENCE_KEPT names fields that are not PERSONAL")
    return {name: _blank_factory(cls, name, types[name]) for name in cls.PERSONAL}


# Computed at import so that a PERSONAL field erasure could not blank fails at once, not during an erasure.
BLANKS: dict[type[Event], dict[str, Callable[[Any], Any]]] = {cls: _blanks(cls) for cls in EVENT_TYPES if cls.PERSONAL}

# Event types that name a customer; their payloads are searched for the customer's ids.
_CUSTOMER_TAGS = tuple(
    cls.__struct_config__.tag  # type: ignore[misc]
    for cls in EVENT_TYPES
    if "customer_id" in cls.__struct_fields__
)


def blank_personal(ev: Event) -> Event:
    """The event with every ``PERSONAL`` field replaced by the empty value of its type (the same object when
    it has none), so that the encoded payload omits them and still decodes; a set ``PRESENCE_KEPT`` field
    becomes "" so that what its presence means (the contact left the centre) survives."""
    blanks = BLANKS.get(type(ev))
    if not blanks:
        return ev
    return msgspec.structs.replace(ev, **{name: make(getattr(ev, name)) for name, make in blanks.items()})


def _decode_row(row_id: int, payload: str) -> Event:
    try:
        return decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # Leaving it would keep whatever personal data it holds; guessing its fields could keep some too.
        raise PrivacyError(f"event row {row_id} does not decode ({exc}); repair or remove it, then retry") from None


# ------------------------------------------------------------------------------------------------- scope


def _merged_into(conn: Connection, customer_id: str) -> list[str]:
    """Every customer merged into ``customer_id``, directly or through other merged customers."""
    found: list[str] = []
    seen = {customer_id}
    frontier = [customer_id]
    while frontier:
        rows = conn.execute(select(customers.c.id).where(customers.c.merged_into.in_(frontier))).scalars().all()
        frontier = [r for r in rows if r not in seen]
        seen.update(frontier)
        found.extend(frontier)
    return sorted(found)


def _like_literal(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


@dataclass(frozen=True)
class _Scope:
    requested_id: str
    customer_id: str
    merged_ids: tuple[str, ...]
    orphan_contacts: tuple[str, ...]  # contacts known only from a logged arrival naming the customer

    @property
    def ids(self) -> list[str]:
        return [self.customer_id, *self.merged_ids]

    def case_filter(self) -> ColumnElement[bool]:
        unowned_but_ours = and_(
            cases.c.customer_id.is_(None),
            cases.c.id.in_(select(interactions.c.case_id).where(interactions.c.customer_id.in_(self.ids))),
        )
        return or_(cases.c.customer_id.in_(self.ids), unowned_but_ours)

    def case_ids(self) -> Select[Any]:
        return select(cases.c.id).where(self.case_filter())

    def interaction_filter(self) -> ColumnElement[bool]:
        clauses = [interactions.c.customer_id.in_(self.ids), interactions.c.case_id.in_(self.case_ids())]
        if self.orphan_contacts:
            clauses.append(interactions.c.id.in_(self.orphan_contacts))
        return or_(*clauses)

    def contact_ids(self) -> Select[Any]:
        return select(interactions.c.id).where(self.interaction_filter())

    def _contact_filter(self, column: Any) -> ColumnElement[bool]:
        clause = column.in_(self.contact_ids())
        if self.orphan_contacts:
            clause = or_(clause, column.in_(self.orphan_contacts))
        return clause

    def message_filter(self) -> ColumnElement[bool]:
        return or_(messages.c.case_id.in_(self.case_ids()), self._contact_filter(messages.c.interaction_id))

    def event_filter(self) -> ColumnElement[bool]:
        return self._contact_filter(events.c.contact_id)


def _survivor(conn: Connection, customer_id: str, *, lock: bool) -> str:
    for _ in range(3):
        survivor = surviving_id(conn, customer_id)
        if survivor is None:
            if conn.execute(select(customers.c.id).where(customers.c.id == customer_id)).first() is None:
                raise UnknownCustomer(f"no customer with id {customer_id!r}")
            raise PrivacyError(f"customer {customer_id!r}: its merge pointers form a cycle")
        if not lock:
            return survivor
        # dedupe.merge_customers locks both customers' rows; holding the survivor's means no merge into it
        # (nor of it) can slip in between reading the group and erasing it. SQLite's writer lock does the same.
        pointer = conn.execute(
            select(customers.c.merged_into).where(customers.c.id == survivor).with_for_update()
        ).scalar_one()
        if pointer is None:
            return survivor
    raise PrivacyError(f"customer {customer_id!r} keeps being merged; try again")


def _scope(conn: Connection, customer_id: str, *, lock: bool = False) -> _Scope:
    survivor = _survivor(conn, customer_id, lock=lock)
    merged = _merged_into(conn, survivor)
    ids = [survivor, *merged]
    orphans: set[str] = set()
    if _CUSTOMER_TAGS:
        # A prefilter in SQL (payloads are compact JSON written by events.encode); the decode decides. It scans
        # the arrivals, which only export and erasure, both rare, ever do.
        patterns = [
            events.c.payload.like(f'%"customer_id":{_like_literal(msgspec.json.encode(i).decode())}%', escape="/")
            for i in ids
        ]
        rows = conn.execute(
            select(events.c.id, events.c.contact_id, events.c.payload).where(
                events.c.type.in_(_CUSTOMER_TAGS), events.c.contact_id.is_not(None), or_(*patterns)
            )
        )
        wanted = set(ids)
        for row in rows:
            if getattr(_decode_row(row.id, row.payload), "customer_id", None) in wanted:
                orphans.add(row.contact_id)
        if orphans:
            known = conn.execute(
                select(interactions.c.id).where(interactions.c.id.in_(orphans), interactions.c.customer_id.in_(ids))
            ).scalars()
            orphans.difference_update(known)
    return _Scope(customer_id, survivor, tuple(merged), tuple(sorted(orphans)))


# ------------------------------------------------------------------------------------------------- audit


def _dump(detail: Any) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def _audit(conn: Connection, now_ms: int, actor: str, action: str, customer_id: str, detail: dict[str, Any]) -> None:
    conn.execute(
        insert(audit_log).values(
            at_ms=now_ms,
            actor=actor,
            action=action,
            customer_id=customer_id,
            detail=_dump(detail),
        )
    )


def audit_event(conn: Connection, now_ms: int, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Record an event that concerns no one customer (a login, a logout) in the audit log."""
    conn.execute(
        insert(audit_log).values(at_ms=now_ms, actor=actor[:128] or "-", action=action, detail=json.dumps(detail))
    )


def _audit_dict(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    if out.get("detail"):
        with contextlib.suppress(ValueError):  # written by something else as plain text: shown as it is
            out["detail"] = json.loads(out["detail"])
    return out


def record_read(conn: Connection, customer_id: str, now_ms: int, *, actor: str, what: str = "screen-pop") -> None:
    """Log that ``actor`` was shown the customer's data (a screen-pop, a case view). ``what`` is a short code
    or an id (``"case:case-1a2b"``), never the data shown."""
    # One INSERT and no look-ups: this runs on every screen-pop.
    _audit(conn, now_ms, actor, "customer.read", customer_id, {"what": what})


def record_reads(conn: Connection, reads: Iterable[tuple[str, int, str, str]]) -> None:
    """Log reads of customers' data, ``(customer_id, at_ms, actor, what)`` each, in one statement however many
    there are: a screen-pop comes with every offer, and its record rides with the offers' commit (the
    ``ReadRecords`` store op) rather than one INSERT (and one savepoint) each."""
    rows = [
        {"at_ms": at_ms, "actor": actor, "action": "customer.read", "customer_id": cid, "detail": _dump({"what": what})}
        for cid, at_ms, actor, what in reads
    ]
    if rows:
        conn.execute(insert(audit_log), rows)


def audit_trail(conn: Connection, customer_id: str) -> list[dict[str, Any]]:
    """Audit entries about the customer and about customers merged into it, oldest first; ``detail`` is
    decoded."""
    ids = [customer_id, *_merged_into(conn, customer_id)]
    rows = conn.execute(
        select(audit_log).where(audit_log.c.customer_id.in_(ids)).order_by(audit_log.c.at_ms, audit_log.c.id)
    )
    return [_audit_dict(r) for r in rows]


# ------------------------------------------------------------------------------------------------- export


def _rows(conn: Connection, stmt: Select[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(stmt).mappings()]


def export_customer(conn: Connection, customer_id: str, now_ms: int, *, actor: str) -> dict[str, Any]:
    """Everything the store holds about the customer, as plain JSON-ready values; logs ``customer.export``.

    A merged-away id exports the customer it was merged into (``customer_id`` then differs from
    ``requested_id`` and ``note`` says so); ``merged_customers`` lists the tombstone rows of customers merged
    into it. Event payloads are decoded to objects."""
    scope = _scope(conn, customer_id)
    ids = scope.ids
    customer = _rows(conn, select(customers).where(customers.c.id == scope.customer_id))[0]
    merged = _rows(conn, select(customers).where(customers.c.id.in_(scope.merged_ids)).order_by(customers.c.id))
    idents = _rows(
        conn, select(identities).where(identities.c.customer_id.in_(ids)).order_by(identities.c.kind, identities.c.id)
    )
    case_rows = _rows(conn, select(cases).where(scope.case_filter()).order_by(cases.c.created_ms, cases.c.id))
    inter_rows = _rows(
        conn,
        select(interactions).where(scope.interaction_filter()).order_by(interactions.c.started_ms, interactions.c.id),
    )
    message_rows = _rows(conn, select(messages).where(scope.message_filter()).order_by(messages.c.at_ms, messages.c.id))
    event_rows = _rows(conn, select(events).where(scope.event_filter()).order_by(events.c.id))
    for row in event_rows:
        # Shown as stored when it is not JSON: an export must not fail on the row it most needs to show.
        with contextlib.suppress(msgspec.DecodeError):
            row["payload"] = msgspec.json.decode(row["payload"])
    audit = [
        _audit_dict(r)
        for r in conn.execute(
            select(audit_log).where(audit_log.c.customer_id.in_(ids)).order_by(audit_log.c.at_ms, audit_log.c.id)
        )
    ]
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_ms": now_ms,
        "requested_id": customer_id,
        "customer_id": scope.customer_id,
        "customer": customer,
        "merged_customers": merged,
        "identities": idents,
        "cases": case_rows,
        "interactions": inter_rows,
        "messages": message_rows,
        "events": event_rows,
        "audit": audit,
    }
    if scope.customer_id != customer_id:
        export["note"] = f"customer {customer_id} was merged into {scope.customer_id}; this is {scope.customer_id}"
    counts = {k: len(export[k]) for k in ("identities", "cases", "interactions", "messages", "events")}
    _audit(
        conn,
        now_ms,
        actor,
        "customer.export",
        scope.customer_id,
        {"requested_id": customer_id, "merged_ids": list(scope.merged_ids), "counts": counts},
    )
    return export


def export_customer_json(conn: Connection, customer_id: str, now_ms: int, *, actor: str) -> str:
    """``export_customer`` as indented JSON with sorted keys (two exports of the same data are identical)."""
    return json.dumps(export_customer(conn, customer_id, now_ms, actor=actor), indent=2, sort_keys=True) + "\n"


# -------------------------------------------------------------------------------------------------- erase


def _blank_value(column: Any) -> Any:
    # NOT NULL text (messages.body) becomes empty; everything else NULL.
    return None if column.nullable else ""


def _has_value(column: Any) -> ColumnElement[bool]:
    return column.is_not(None) if column.nullable else and_(column.is_not(None), column != "")


def _personal_strings(conn: Connection, scope: _Scope) -> list[str]:
    """The customer's own words for itself (names, notes, identities, addresses used), to keep them out of
    the audit log. Read before erasure clears them."""
    ids = scope.ids
    found: set[str] = set()
    for row in conn.execute(select(customers.c.name, customers.c.notes).where(customers.c.id.in_(ids))):
        found.update(v for v in row if v)
        if row.name:
            found.update(re.split(r"[\s\-,.]+", row.name))
    found.update(conn.execute(select(identities.c.value).where(identities.c.customer_id.in_(ids))).scalars())
    found.update(
        v
        for v in conn.execute(select(interactions.c.address).where(scope.interaction_filter()).distinct()).scalars()
        if v
    )
    # Shorter strings identify nobody and would shred ids and codes ("case:…" for a Mr Case).
    return sorted((s for s in found if len(s) >= 5), key=len, reverse=True)


def _redact_text(text: str, needles: Sequence[str]) -> str:
    for needle in needles:
        # Whole words only: a customer called Marie must not turn "mariendal" into "[erased]ndal".
        text = re.sub(rf"(?<!\w){re.escape(needle)}(?!\w)", REDACTED, text, flags=re.IGNORECASE)
    return text


def _redact(value: Any, needles: Sequence[str]) -> Any:
    """``value`` (decoded JSON) with the needles cut out of its strings; keys are left alone."""
    if isinstance(value, str):
        return _redact_text(value, needles)
    if isinstance(value, list):
        return [_redact(v, needles) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, needles) for k, v in value.items()}
    return value


def _redact_audit(conn: Connection, ids: Sequence[str], needles: Sequence[str]) -> int:
    """Audit entries hold ids and codes only; one that does not (a caller put a name into ``what``) loses
    the personal words rather than keeping them past an erasure. Returns how many entries changed."""
    if not needles:
        return 0
    changed = []
    rows = conn.execute(
        select(audit_log.c.id, audit_log.c.detail).where(
            audit_log.c.customer_id.in_(ids), audit_log.c.detail.is_not(None)
        )
    )
    for row in rows:
        try:
            redacted = _dump(_redact(json.loads(row.detail), needles))
            if json.loads(redacted) == json.loads(row.detail):
                continue
        except ValueError:
            redacted = _redact_text(row.detail, needles)
            if redacted == row.detail:
                continue
        changed.append({"_id": row.id, "_detail": redacted})
    if changed:
        conn.execute(
            update(audit_log).where(audit_log.c.id == bindparam("_id")).values(detail=bindparam("_detail")), changed
        )
    return len(changed)


def erase_customer(conn: Connection, customer_id: str, now_ms: int, *, actor: str, reason: str = "") -> ErasureReport:
    """Anonymise the customer (and every customer merged into it) everywhere, keeping what statistics need.

    Customer row: personal columns and ``lifetime_value`` (a person's exact spending, and the segment keeps
    the statistic) cleared, consents withdrawn, ``erased_ms`` set; id, tier, value segment, times and merge
    pointer stay. Identities: deleted, so a new contact from the same address is a new customer. Cases,
    interactions, messages: personal columns cleared; an outbound message keeps its author (the agent's
    id, which the logged event keeps too) so per-agent counts stay. Events: personal fields blanked.

    Raises ``UnknownCustomer`` for an id the store never had. Running it again changes nothing and returns a
    report whose ``nothing_left`` is true. ``reason`` goes into the audit entry; ids and counts only."""
    scope = _scope(conn, customer_id, lock=True)
    ids = scope.ids
    needles = _personal_strings(conn, scope)

    # Payload rewrites are prepared before any write (see the module docstring on SQLite's lock).
    payload_updates = []
    for row in conn.execute(select(events.c.id, events.c.payload).where(scope.event_filter())):
        ev = _decode_row(row.id, row.payload)
        blanked = blank_personal(ev)
        if blanked != ev:
            payload_updates.append({"_id": row.id, "_payload": encode(blanked).decode()})

    personal = [customers.c[name] for name in PERSONAL_COLUMNS["customers"]]
    consents = [customers.c.consent_email, customers.c.consent_sms, customers.c.consent_calls]
    customer_values: dict[str, Any] = {c.name: _blank_value(c) for c in personal}
    customer_values.update({c.name: False for c in consents})
    customer_values.update(
        lifetime_value=None, updated_ms=now_ms, erased_ms=func.coalesce(customers.c.erased_ms, now_ms)
    )
    customers_done = conn.execute(
        update(customers)
        .where(
            customers.c.id.in_(ids),
            or_(
                customers.c.erased_ms.is_(None),
                customers.c.lifetime_value.is_not(None),
                *[_has_value(c) for c in personal],
                *consents,
            ),
        )
        .values(customer_values)
    ).rowcount

    identities_done = conn.execute(delete(identities).where(identities.c.customer_id.in_(ids))).rowcount

    # The scope's filters look only at ids, which erasure keeps, so the order of these UPDATEs is free.
    done: dict[str, int] = {}
    for table, where in (
        (interactions, scope.interaction_filter()),
        (cases, scope.case_filter()),
    ):
        cols = [table.c[name] for name in PERSONAL_COLUMNS[table.name]]
        done[table.name] = conn.execute(
            update(table)
            .where(where, or_(*[_has_value(c) for c in cols]))
            .values({c.name: _blank_value(c) for c in cols})
        ).rowcount

    inbound = messages.c.direction == "inbound"
    message_cols = [messages.c[name] for name in PERSONAL_COLUMNS["messages"] if name != "author"]
    message_values: dict[str, Any] = {c.name: _blank_value(c) for c in message_cols}
    if "author" in PERSONAL_COLUMNS["messages"]:
        # Inbound authors are the customer (address, visitor name); outbound ones the agent.
        message_values["author"] = case((inbound, None), else_=messages.c.author)
    messages_done = conn.execute(
        update(messages)
        .where(
            scope.message_filter(),
            or_(*[_has_value(c) for c in message_cols], and_(inbound, messages.c.author.is_not(None))),
        )
        .values(message_values)
    ).rowcount

    if payload_updates:
        conn.execute(
            update(events).where(events.c.id == bindparam("_id")).values(payload=bindparam("_payload")),
            payload_updates,
        )

    audit_redacted = _redact_audit(conn, ids, needles)
    report = ErasureReport(
        requested_id=customer_id,
        customer_id=scope.customer_id,
        merged_ids=scope.merged_ids,
        at_ms=now_ms,
        customers=customers_done,
        identities=identities_done,
        cases=done["cases"],
        interactions=done["interactions"],
        messages=messages_done,
        events=len(payload_updates),
        audit_redacted=audit_redacted,
    )
    detail = {k: v for k, v in asdict(report).items() if k not in ("customer_id", "at_ms")}
    detail["merged_ids"] = list(scope.merged_ids)
    detail["reason"] = _redact_text(reason, needles)
    _audit(conn, now_ms, actor, "customer.erase", scope.customer_id, detail)
    return report


__all__ = [
    "EXPORT_FORMAT",
    "ErasureReport",
    "PrivacyError",
    "UnknownCustomer",
    "audit_trail",
    "blank_personal",
    "erase_customer",
    "export_customer",
    "export_customer_json",
    "record_read",
]
