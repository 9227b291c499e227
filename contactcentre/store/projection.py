"""From events to rows: each contact's lifecycle folded into its ``interactions`` row, messages into
``messages``, every event into ``events``.

The fold works on a batch: a contact that arrived in the batch becomes one INSERT with its final values; a
contact that arrived in an earlier batch gets one UPDATE, grouped with other contacts that changed the same
columns so that the writer issues few ``executemany`` statements however large the batch. Columns that
must keep their first value (``answered_ms``: a transfer answers the contact again) and the outcome a close
sets only when nothing more specific happened are merged with ``COALESCE`` in SQL for rows written earlier,
and in Python for rows of this batch. Each agent's leg of a transferred contact is folded from the log on
reading (``contact_legs``), not kept in rows of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from contactcentre.events import (
    CallbackAttemptEnded,
    CallbackCancelled,
    CallbackScheduled,
    CaseNoteAdded,
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConferenced,
    ContactConnected,
    ContactFailed,
    ContactHeld,
    ContactOverflowed,
    ContactQueued,
    ContactRetrieved,
    ContactTransferred,
    ContactWithdrawn,
    DispositionSet,
    Event,
    MessageReceived,
    MessageSent,
    OfferExpired,
    OfferRejected,
    WrapUpStarted,
    decode,
    encode,
)
from contactcentre.store.schema import events, interactions, messages

# Columns whose first value wins over later ones. ``wait_ms`` is the customer's wait for the first answer: a
# transfer queues the contact again, and the next agent's (often zero) wait is that leg's, not the customer's.
FIRST_WINS = frozenset({"answered_ms", "wait_ms", "outcome_if_unset"})
OUTBOUND_CHANNELS = frozenset({"outbound", "callback"})


def event_row(ev: Event) -> dict[str, Any]:
    return {
        "at_ms": ev.at_ms,
        "type": ev.__struct_config__.tag,
        "contact_id": getattr(ev, "contact_id", None),
        "agent_id": getattr(ev, "agent_id", None),
        "payload": encode(ev).decode(),
    }


def _changes(ev: Event) -> dict[str, Any] | None:
    """The columns of the contact's interaction row that this event sets (None: it sets none)."""
    if isinstance(ev, ContactQueued):
        return {"queue": ev.queue, "tier": ev.tier}
    if isinstance(ev, ContactConnected):
        return {"answered_ms": ev.at_ms, "agent_id": ev.agent_id, "queue": ev.queue, "wait_ms": ev.wait_ms}
    if isinstance(ev, ContactAbandoned):
        return {"ended_ms": ev.at_ms, "wait_ms": ev.wait_ms, "outcome": "abandoned"}
    if isinstance(ev, ContactFailed):
        return {"ended_ms": ev.at_ms, "outcome": "failed"}
    if isinstance(ev, ContactOverflowed):
        if not ev.left:
            return {"queue": ev.to_queue} if ev.to_queue else None
        return {"ended_ms": ev.at_ms, "wait_ms": ev.wait_ms, "outcome": "overflowed"}
    if isinstance(ev, ContactTransferred):
        if ev.to_external is None:
            return None
        # The contact ends here: its last agent's talk is the one this event reports (hold is not on it).
        return {"ended_ms": ev.at_ms, "agent_id": ev.agent_id, "outcome": "transferred", "talk_ms": ev.talk_ms}
    if isinstance(ev, ContactClosed):
        return {
            "ended_ms": ev.at_ms,
            "agent_id": ev.agent_id,
            "queue": ev.queue,
            "wait_ms": ev.wait_ms,
            "talk_ms": ev.talk_ms,
            "hold_ms": ev.hold_ms,
            "wrap_ms": ev.wrap_ms,
            "handle_ms": ev.talk_ms + ev.hold_ms + ev.wrap_ms,
            "disposition": ev.disposition,
            "outcome_if_unset": "handled",
        }
    if isinstance(ev, DispositionSet):
        return {"disposition": ev.code}
    if isinstance(ev, ContactWithdrawn):
        return {"ended_ms": ev.at_ms, "wait_ms": ev.wait_ms, "outcome": "withdrawn"}
    if isinstance(ev, CallbackCancelled):  # still scheduled (a waiting one is withdrawn just after)
        return {"ended_ms": ev.at_ms, "outcome": "withdrawn"}
    if isinstance(ev, CallbackAttemptEnded) and ev.outcome != "answered":
        # Set before the wrap-up closes the attempt, so that "handled" does not hide that nobody picked up.
        return {"outcome": ev.outcome}
    return None


def _arrival_row(ev: ContactArrived) -> dict[str, Any]:
    return {
        "id": ev.contact_id,
        "case_id": ev.case_id,
        "customer_id": ev.customer_id,
        "channel": ev.channel,
        "direction": "outbound" if ev.channel in OUTBOUND_CHANNELS else "inbound",
        "address": ev.address,
        "subject": ev.subject,
        "queue": ev.queue,
        "tier": ev.tier,
        "started_ms": ev.at_ms,
    }


def _scheduled_row(ev: CallbackScheduled) -> dict[str, Any]:
    """A scheduled callback never has a ``contact.arrived``: its row starts when it falls due, so that
    screen-pop and the case show the callback to come (each retry is a row of its own)."""
    return {
        "id": ev.contact_id,
        "customer_id": ev.customer_id,
        "channel": "callback",
        "direction": "outbound",
        "address": ev.number,
        "queue": ev.queue,
        "tier": ev.tier,
        "started_ms": ev.due_ms,
    }


def _note_row(ev: CaseNoteAdded) -> dict[str, Any]:
    # Channel "note" keeps it out of everything that reads a conversation back to the customer (chat resume,
    # e-mail threading and delivery), which all select their own channel's lines.
    return {
        "case_id": ev.case_id,
        "interaction_id": ev.contact_id,
        "channel": "note",
        "direction": "outbound",
        "author": ev.agent_id,
        "at_ms": ev.at_ms,
        "body": ev.text,
    }


def _message_row(ev: MessageReceived | MessageSent) -> dict[str, Any]:
    inbound = isinstance(ev, MessageReceived)
    return {
        "case_id": ev.case_id,
        "interaction_id": ev.contact_id,
        "channel": ev.channel,
        "direction": "inbound" if inbound else "outbound",
        "author": (ev.address or ev.author) if isinstance(ev, MessageReceived) else ev.agent_id,
        "at_ms": ev.at_ms,
        "message_id": ev.message_id,
        "in_reply_to": ev.in_reply_to,
        "references": " ".join(ev.references) or None,
        "subject": ev.subject,
        "body": ev.body,
        "recipient": None if inbound else ev.address,
        # an outbound e-mail is queued for the smarthost; the e-mail channel records what became of it
        "delivery": "queued" if not inbound and ev.channel == "email" else None,
    }


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for col, value in changes.items():
        if col in FIRST_WINS and into.get(col) is not None:
            continue
        if value is None and col in ("tier", "disposition"):
            continue  # a later event that does not know the tier or code must not erase it
        into[col] = value


@dataclass
class Batch:
    """What one commit writes."""

    events: list[dict[str, Any]] = field(default_factory=list)
    arrivals: dict[str, dict[str, Any]] = field(default_factory=dict)  # contact id -> full row
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # contact id -> changed columns
    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ev: Event) -> None:
        self.events.append(event_row(ev))
        if isinstance(ev, ContactArrived | CallbackScheduled):
            self.arrivals[ev.contact_id] = _arrival_row(ev) if isinstance(ev, ContactArrived) else _scheduled_row(ev)
            self.updates.pop(ev.contact_id, None)
            return
        if isinstance(ev, MessageReceived | MessageSent):
            self.messages.append(_message_row(ev))
            return
        if isinstance(ev, CaseNoteAdded):
            self.messages.append(_note_row(ev))
            return
        changes = _changes(ev)
        if changes is None:
            return
        cid = ev.contact_id  # type: ignore[attr-defined]
        row = self.arrivals.get(cid)
        if row is None:
            row = self.updates.setdefault(cid, {})
        _merge(row, changes)


def fold(evs: Iterable[Event]) -> Batch:
    batch = Batch()
    for ev in evs:
        batch.add(ev)
    return batch


# The statements, built once: a Core construct built per call costs its construction and cache key each time.
INSERT_EVENTS = insert(events)
INSERT_MESSAGES = insert(messages)
_INSERT_INTERACTIONS = {
    # A restart may replay events already stored; the interaction row that exists is the truth.
    "sqlite": sqlite.insert(interactions).on_conflict_do_nothing(index_elements=["id"]),
    "postgresql": postgresql.insert(interactions).on_conflict_do_nothing(index_elements=["id"]),
}


def _insert_ignoring_duplicates(conn: Connection) -> Any:
    stmt = _INSERT_INTERACTIONS.get(conn.dialect.name)  # not .get(name, insert(...)): that builds one per call
    return stmt if stmt is not None else insert(interactions)


def write(conn: Connection, batch: Batch) -> None:
    """Write one folded batch inside the caller's transaction."""
    if batch.events:
        conn.execute(INSERT_EVENTS, batch.events)
    if batch.arrivals:
        rows = []
        for row in batch.arrivals.values():
            row = dict(row)
            fallback = row.pop("outcome_if_unset", None)
            if row.get("outcome") is None and fallback is not None:
                row["outcome"] = fallback
            rows.append(row)
        # executemany needs one set of keys
        keys = set().union(*(r.keys() for r in rows))
        conn.execute(_insert_ignoring_duplicates(conn), [{k: r.get(k) for k in keys} for r in rows])
    if batch.updates:
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for cid, changes in batch.updates.items():
            groups.setdefault(frozenset(changes), []).append({"_cid": cid, **{f"_{k}": v for k, v in changes.items()}})
        for cols, params in groups.items():
            conn.execute(_update_statement(cols), params)
    if batch.messages:
        conn.execute(INSERT_MESSAGES, batch.messages)


_UPDATES: dict[frozenset[str], Any] = {}


def _update_statement(cols: frozenset[str]) -> Any:
    stmt = _UPDATES.get(cols)
    if stmt is not None:
        return stmt
    values: dict[str, Any] = {}
    for col in cols:
        param = bindparam(f"_{col}")
        if col == "outcome_if_unset":
            values["outcome"] = func.coalesce(interactions.c.outcome, param)
        elif col in FIRST_WINS:
            values[col] = func.coalesce(interactions.c[col], param)
        elif col in ("tier", "disposition"):
            values[col] = func.coalesce(param, interactions.c[col])
        else:
            values[col] = param
    stmt = update(interactions).where(interactions.c.id == bindparam("_cid")).values(values)
    _UPDATES[cols] = stmt
    return stmt


# ------------------------------------------------------------------------------------------------- legs

# The events a leg is folded from (read back from the log by type).
LEG_EVENTS = (
    "offer.expired",
    "offer.rejected",
    "contact.connected",
    "contact.held",
    "contact.retrieved",
    "contact.conferenced",
    "contact.transferred",
    "wrap_up.started",
    "contact.closed",
)


def fold_legs(evs: Iterable[Event]) -> list[dict[str, Any]]:
    """Each agent's part in one contact, in order, from its events: the offers it let ring out or turned down
    (``no_answer``, ``rejected``), and every time an agent had it (``handled``, or ``transferred`` on to the
    next leg), with that agent's own talk and hold time and whoever it conferenced in.

    The interaction row is the customer's whole contact (its final outcome and last agent); a transfer keeps
    the contact id, so this is where the agents before the last one show."""
    legs: list[dict[str, Any]] = []
    open_leg: dict[str, Any] | None = None
    held_since: int | None = None

    def stop_hold(at_ms: int) -> None:
        nonlocal held_since
        if open_leg is not None and held_since is not None:
            open_leg["hold_ms"] += at_ms - held_since
        held_since = None

    for ev in evs:
        if isinstance(ev, OfferExpired | OfferRejected):
            outcome = "no_answer" if isinstance(ev, OfferExpired) else "rejected"
            legs.append({"agent_id": ev.agent_id, "outcome": outcome, "offered_until_ms": ev.at_ms})
        elif isinstance(ev, ContactConnected):
            open_leg = {
                "agent_id": ev.agent_id,
                "queue": ev.queue,
                "answered_ms": ev.at_ms,
                "wait_ms": ev.wait_ms,
                "ended_ms": None,
                "talk_ms": None,
                "hold_ms": 0,
                "wrap_ms": None,
                "conferenced": [],
                "outcome": None,
            }
            held_since = None
            legs.append(open_leg)
        elif open_leg is None:
            continue
        elif isinstance(ev, ContactHeld):
            held_since = ev.at_ms
        elif isinstance(ev, ContactRetrieved):
            stop_hold(ev.at_ms)
        elif isinstance(ev, ContactConferenced):
            open_leg["conferenced"].extend(ev.parties)
        elif isinstance(ev, ContactTransferred):
            stop_hold(ev.at_ms)
            target = ev.to_agent_id or ev.to_queue or ev.to_external
            kind = "agent" if ev.to_agent_id else "queue" if ev.to_queue else "external"
            open_leg.update(ended_ms=ev.at_ms, talk_ms=ev.talk_ms, outcome="transferred", to=f"{kind}:{target}")
            open_leg = None
        elif isinstance(ev, WrapUpStarted):
            stop_hold(ev.at_ms)
            open_leg["ended_ms"] = ev.at_ms
        elif isinstance(ev, ContactClosed):
            open_leg.update(talk_ms=ev.talk_ms, hold_ms=ev.hold_ms, wrap_ms=ev.wrap_ms, outcome="handled")
            open_leg["disposition"] = ev.disposition
            open_leg = None
    return legs


def contact_legs(conn: Connection, contact_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """``fold_legs`` for each contact, from the logged events (one indexed read per contact)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cid in dict.fromkeys(contact_ids):
        payloads = conn.execute(
            select(events.c.payload)
            .where(events.c.contact_id == cid, events.c.type.in_(LEG_EVENTS))
            .order_by(events.c.id)
        ).scalars()
        out[cid] = fold_legs(decode(p) for p in payloads)
    return out


def handled_any(conn: Connection, agent_id: str, contact_ids: Iterable[str]) -> bool:
    """Whether ``agent_id`` ever answered (was connected to) one of these contacts, from the logged events:
    what lets an agent read a contact's legs and its case afterwards (``docs/web.md``, "Who reads what")."""
    ids = list(dict.fromkeys(contact_ids))
    if not ids:
        return False
    found = conn.execute(
        select(events.c.id)
        .where(events.c.agent_id == agent_id, events.c.contact_id.in_(ids), events.c.type == "contact.connected")
        .limit(1)
    ).first()
    return found is not None
