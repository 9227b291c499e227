"""Export, erasure and the audit trail of a customer's personal data, on SQLite and PostgreSQL.

The key test scans every text column of every table the database has (found by reflection, not listed by
hand) for the personal strings planted in the world below, before erasure (they must all be there, or the
test proves nothing) and after (none may be left).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import pytest
from sqlalchemy import Connection, Engine, MetaData, String, Table, func, insert, inspect, select, update

from contactcentre.events import (
    ContactAbandoned,
    ContactArrived,
    ContactClosed,
    ContactConnected,
    ContactQueued,
    ContactTransferred,
    Event,
    MessageReceived,
    MessageSent,
    TransferRequested,
    decode,
    encode,
)
from contactcentre.store.cases import open_case
from contactcentre.store.customers import UnknownCustomer, create_customer, find_customer
from contactcentre.store.privacy import (
    BLANKS,
    EXPORT_FORMAT,
    HANDLED_TABLES,
    PrivacyError,
    audit_trail,
    blank_personal,
    erase_customer,
    export_customer,
    export_customer_json,
    record_read,
)
from contactcentre.store.projection import fold_legs
from contactcentre.store.schema import (
    PERSONAL_COLUMNS,
    audit_log,
    customers,
    events,
    identities,
    interactions,
    messages,
    metadata,
    users,
)

T0 = 1_700_000_000_000
ERASE_AT = T0 + 86_400_000

NAME = "Zebedee Quixote-Marchbanks"
TOKEN = "visitor-tok-8f3e2a91"
EMAIL = "zebedee.q@example.org"
PHONE_E164 = "+31612345678"
MESSAGE_ID = "CAzeb-7781@mail.example.org"
OUTSIDE = "+31235550147"  # the number an agent transferred Zebedee's call to (his sister's)

# Lower case; a column value matches when it contains one, as it is or with spaces, dots, hyphens and
# brackets squeezed out (so "06 12345678" and "+31 (6) 123-456-78" are caught by the bare digits).
NEEDLES = (
    "zebedee",
    "quixote",
    "marchbanks",
    EMAIL,
    "zq.marchbanks@example.net",
    PHONE_E164,
    "31612345678",
    "612345678",
    TOKEN,
    "gwendolyn",  # the parrot, in notes and message bodies
    "parrot",
    "kerkstraat",
    "haarlem",
    "invoice 2023-884",
    MESSAGE_ID.lower(),
    "acc-99871",
    OUTSIDE,
)


def personal_hits(value: str) -> list[str]:
    lowered = value.lower()
    squeezed = re.sub(r"[\s.\-()]", "", lowered)
    return [n for n in NEEDLES if n in lowered or re.sub(r"[\s.\-()]", "", n) in squeezed]


# --------------------------------------------------------------------------------------------------- world


@dataclass
class World:
    zeb: str = "cus-zeb"
    dup: str = "cus-zeb-webshop"  # a duplicate of Zebedee, merged into cus-zeb
    olive: str = "cus-olive"  # unrelated; nothing of hers may change
    zeb_cases: set[str] = field(default_factory=set)
    zeb_contacts: set[str] = field(default_factory=set)
    zeb_messages: set[int] = field(default_factory=set)
    olive_case: str = ""


def log(conn: Connection, *evs: Event) -> None:
    conn.execute(
        insert(events),
        [
            {
                "at_ms": ev.at_ms,
                "type": ev.__struct_config__.tag,  # type: ignore[attr-defined]
                "contact_id": getattr(ev, "contact_id", None),
                "agent_id": getattr(ev, "agent_id", None),
                "payload": encode(ev).decode(),
            }
            for ev in evs
        ],
    )


def interaction(conn: Connection, contact_id: str, channel: str, started: int, **cols: Any) -> None:
    row: dict[str, Any] = {"id": contact_id, "channel": channel, "direction": "inbound", "started_ms": started}
    row.update(cols)
    conn.execute(insert(interactions).values(row))


def message(conn: Connection, **cols: Any) -> int:
    return conn.execute(insert(messages).values(cols).returning(messages.c.id)).scalar_one()


def handled(
    conn: Connection, cid: str, channel: str, start: int, *, agent: str, queue: str, wait: int, talk: int, **cols: Any
) -> None:
    """An interaction row of a handled contact and the router events that made it."""
    hold, wrap = 5_000, 30_000
    interaction(
        conn,
        cid,
        channel,
        start,
        queue=queue,
        agent_id=agent,
        answered_ms=start + wait,
        ended_ms=start + wait + talk + hold,
        wait_ms=wait,
        talk_ms=talk,
        hold_ms=hold,
        wrap_ms=wrap,
        handle_ms=talk + hold + wrap,
        outcome="handled",
        disposition="resolved",
        **cols,
    )
    log(
        conn,
        ContactQueued(at_ms=start, contact_id=cid, queue=queue, channel=channel, priority=0),  # type: ignore[arg-type]
        ContactConnected(
            at_ms=start + wait, contact_id=cid, agent_id=agent, queue=queue, channel=channel, wait_ms=wait
        ),  # type: ignore[arg-type]
        ContactClosed(
            at_ms=start + wait + talk + hold + wrap,
            contact_id=cid,
            agent_id=agent,
            queue=queue,
            channel=channel,  # type: ignore[arg-type]
            wait_ms=wait,
            talk_ms=talk,
            hold_ms=hold,
            wrap_ms=wrap,
            disposition="resolved",
        ),
    )


def build(conn: Connection) -> World:
    w = World()
    create_customer(
        conn,
        T0,
        customer_id=w.zeb,
        name=NAME,
        tier="gold",
        lifetime_value=12_345.5,
        value_segment="high",
        account_manager_id="am-olga",
        language="nl",
        consent_email=True,
        notes="Keeps a parrot called Gwendolyn; lives in Haarlem",
        identities_=[("phone", "+31 6 12345678"), ("email", "Zebedee.Q@Example.org"), ("chat", TOKEN)],
    )
    create_customer(
        conn,
        T0 + 1,
        customer_id=w.dup,
        name="Zebedee Q. Marchbanks",
        notes="imported from the webshop",
        identities_=[("email", "zq.marchbanks@example.net")],
    )
    # What a merge leaves: identities moved to the survivor, a pointer and an audit entry of ids.
    conn.execute(update(identities).where(identities.c.customer_id == w.dup).values(customer_id=w.zeb))
    conn.execute(update(customers).where(customers.c.id == w.dup).values(merged_into=w.zeb))
    conn.execute(
        insert(audit_log).values(
            at_ms=T0 + 2,
            actor="sup-1",
            action="customer.merge",
            customer_id=w.zeb,
            detail=json.dumps({"from": w.dup, "into": w.zeb}),
        )
    )
    invoice, token = open_case(conn, T0 + 10, customer_id=w.zeb, subject="Parrot insurance: invoice 2023-884")
    delivery, _ = open_case(conn, T0 + 11, customer_id=w.zeb, subject="Delivery to Kerkstraat 12, Haarlem")
    # Threaded before the sender was known: the case has no customer, only Zebedee's interaction links it.
    unowned, _ = open_case(conn, T0 + 12, customer_id=None, subject=f"Question from {EMAIL}")
    w.zeb_cases = {invoice, delivery, unowned}

    # Voice, handled, on the invoice case.
    start = T0 + 100_000
    arrived = ContactArrived(
        at_ms=start,
        contact_id="z-voice-1",
        queue="billing",
        channel="voice",
        customer_id=w.zeb,
        tier="gold",
        case_id=invoice,
        address=PHONE_E164,
        attributes={"name": NAME, "account": "ACC-99871"},
    )
    log(conn, arrived)
    # The agent passes the call to an outside number: a person's phone, in both the request and the outcome.
    at = start + 60_000
    log(
        conn,
        TransferRequested(at_ms=at, contact_id="z-voice-1", agent_id="agent-1", to_external=OUTSIDE),
        ContactTransferred(
            at_ms=at, contact_id="z-voice-1", agent_id="agent-1", queue="billing", to_external=OUTSIDE, talk_ms=40_000
        ),
    )
    handled(
        conn,
        "z-voice-1",
        "voice",
        start,
        agent="agent-1",
        queue="billing",
        wait=20_000,
        talk=180_000,
        customer_id=w.zeb,
        case_id=invoice,
        address=PHONE_E164,
        tier="gold",
    )

    # E-mail, handled, with the customer's message and the agent's reply.
    start = T0 + 1_000_000
    subject = f"Parrot insurance: invoice 2023-884 [#{token}]"
    log(
        conn,
        ContactArrived(
            at_ms=start,
            contact_id="z-email-1",
            queue="email",
            channel="email",
            customer_id=w.zeb,
            case_id=invoice,
            address=EMAIL,
            subject=subject,
            attributes={"name": NAME},
        ),
        MessageReceived(
            at_ms=start,
            contact_id="z-email-1",
            message_id=MESSAGE_ID,
            channel="email",
            body="Dear team, my parrot Gwendolyn ate invoice 2023-884. Zebedee Quixote-Marchbanks, +31 6 12345678",
            case_id=invoice,
            address=EMAIL,
            subject=subject,
        ),
        MessageSent(
            at_ms=start + 600_000,
            contact_id="z-email-1",
            message_id="reply-1@centre.example",
            channel="email",
            agent_id="agent-2",
            body="Dear Mr Marchbanks, the invoice is cancelled.",
            case_id=invoice,
            address=EMAIL,
            subject="Re: " + subject,
            in_reply_to=MESSAGE_ID,
            references=[MESSAGE_ID],
        ),
    )
    handled(
        conn,
        "z-email-1",
        "email",
        start,
        agent="agent-2",
        queue="email",
        wait=600_000,
        talk=120_000,
        customer_id=w.zeb,
        case_id=invoice,
        address=EMAIL,
        subject=subject,
    )
    w.zeb_messages.add(
        message(
            conn,
            case_id=invoice,
            interaction_id="z-email-1",
            channel="email",
            direction="inbound",
            author=EMAIL,
            at_ms=start,
            message_id=MESSAGE_ID,
            subject=subject,
            body="Dear team, my parrot Gwendolyn ate invoice 2023-884. Zebedee Quixote-Marchbanks, +31 6 12345678",
        )
    )
    w.zeb_messages.add(
        message(
            conn,
            case_id=invoice,
            interaction_id="z-email-1",
            channel="email",
            direction="outbound",
            author="agent-2",
            at_ms=start + 600_000,
            message_id="reply-1@centre.example",
            in_reply_to=MESSAGE_ID,
            references=MESSAGE_ID,
            subject="Re: " + subject,
            body="Dear Mr Marchbanks, the invoice is cancelled.",
        )
    )
    # A note on the case, attached to no interaction.
    w.zeb_messages.add(
        message(
            conn,
            case_id=invoice,
            channel="voice",
            direction="outbound",
            author="agent-1",
            at_ms=start + 700_000,
            body="Called Zebedee back on 06 12345678",
        )
    )

    # Chat, abandoned, on the delivery case.
    start = T0 + 2_000_000
    log(
        conn,
        ContactArrived(
            at_ms=start,
            contact_id="z-chat-1",
            queue="chat",
            channel="chat",
            customer_id=w.zeb,
            case_id=delivery,
            address=TOKEN,
            attributes={"name": "Zebedee"},
        ),
        MessageReceived(
            at_ms=start + 1_000,
            contact_id="z-chat-1",
            message_id="chat-1",
            channel="chat",
            body="Please deliver to Kerkstraat 12",
            author="Zebedee",
            address=TOKEN,
        ),
        ContactAbandoned(at_ms=start + 45_000, contact_id="z-chat-1", queue="chat", channel="chat", wait_ms=45_000),
    )
    interaction(
        conn,
        "z-chat-1",
        "chat",
        start,
        customer_id=w.zeb,
        case_id=delivery,
        address=TOKEN,
        queue="chat",
        ended_ms=start + 45_000,
        wait_ms=45_000,
        outcome="abandoned",
    )
    w.zeb_messages.add(
        message(
            conn,
            case_id=delivery,
            interaction_id="z-chat-1",
            channel="chat",
            direction="inbound",
            author="Zebedee",
            at_ms=start + 1_000,
            message_id="chat-1",
            body="Please deliver to Kerkstraat 12",
        )
    )

    # E-mail on the unowned case; an e-mail on the invoice case logged before the sender was identified.
    start = T0 + 3_000_000
    handled(
        conn,
        "z-email-2",
        "email",
        start,
        agent="agent-2",
        queue="email",
        wait=300_000,
        talk=60_000,
        customer_id=w.zeb,
        case_id=unowned,
        address=EMAIL,
        subject=f"Question from {EMAIL}",
    )
    w.zeb_messages.add(
        message(
            conn,
            case_id=unowned,
            interaction_id="z-email-2",
            channel="email",
            direction="inbound",
            author=EMAIL,
            at_ms=start,
            subject=f"Question from {EMAIL}",
            body="Is Zebedee's parrot insured?",
        )
    )
    handled(
        conn,
        "z-email-3",
        "email",
        start + 10_000,
        agent="agent-2",
        queue="email",
        wait=200_000,
        talk=30_000,
        case_id=invoice,
        address=EMAIL,
        subject="Re: Parrot insurance",
    )

    # A call logged under the merged-away id, with the number as dialled.
    start = T0 + 4_000_000
    log(
        conn,
        ContactArrived(
            at_ms=start,
            contact_id="z-voice-old",
            queue="sales",
            channel="voice",
            customer_id=w.dup,
            address="06-12345678",
        ),
    )
    handled(
        conn,
        "z-voice-old",
        "voice",
        start,
        agent="agent-1",
        queue="sales",
        wait=10_000,
        talk=90_000,
        customer_id=w.dup,
        address="06-12345678",
    )

    # An arrival whose interaction row was never written (only the log knows it is Zebedee's) and a message.
    start = T0 + 5_000_000
    log(
        conn,
        ContactArrived(
            at_ms=start,
            contact_id="z-orphan",
            queue="chat",
            channel="chat",
            customer_id=w.zeb,
            address=TOKEN,
            attributes={"name": NAME},
        ),
        MessageReceived(
            at_ms=start + 500,
            contact_id="z-orphan",
            message_id="chat-2",
            channel="chat",
            body="hello, Gwendolyn's owner again",
            address=TOKEN,
        ),
        ContactAbandoned(at_ms=start + 9_000, contact_id="z-orphan", queue="chat", channel="chat", wait_ms=9_000),
    )
    w.zeb_messages.add(
        message(
            conn,
            interaction_id="z-orphan",
            channel="chat",
            direction="inbound",
            author=TOKEN,
            at_ms=start + 500,
            message_id="chat-2",
            body="hello, Gwendolyn's owner again",
        )
    )
    w.zeb_contacts = {"z-voice-1", "z-email-1", "z-chat-1", "z-email-2", "z-email-3", "z-voice-old", "z-orphan"}

    # Olive: a customer of her own, with everything Zebedee has.
    create_customer(
        conn,
        T0 + 5,
        customer_id=w.olive,
        name="Olive Ordinary",
        tier="silver",
        lifetime_value=99.0,
        notes="Prefers e-mail",
        consent_email=True,
        identities_=[("phone", "020 765 4321"), ("email", "olive@example.com"), ("chat", "olive-tok-1")],
    )
    w.olive_case, _ = open_case(conn, T0 + 20, customer_id=w.olive, subject="Broken kettle")
    start = T0 + 1_500_000
    log(
        conn,
        ContactArrived(
            at_ms=start,
            contact_id="o-email-1",
            queue="email",
            channel="email",
            customer_id=w.olive,
            case_id=w.olive_case,
            address="olive@example.com",
            subject="Broken kettle",
        ),
        MessageReceived(
            at_ms=start,
            contact_id="o-email-1",
            message_id="olive-1@example.com",
            channel="email",
            body="My kettle is broken",
            case_id=w.olive_case,
            address="olive@example.com",
            subject="Broken kettle",
        ),
    )
    handled(
        conn,
        "o-email-1",
        "email",
        start,
        agent="agent-2",
        queue="email",
        wait=100_000,
        talk=50_000,
        customer_id=w.olive,
        case_id=w.olive_case,
        address="olive@example.com",
        subject="Broken kettle",
    )
    message(
        conn,
        case_id=w.olive_case,
        interaction_id="o-email-1",
        channel="email",
        direction="inbound",
        author="olive@example.com",
        at_ms=start,
        message_id="olive-1@example.com",
        subject="Broken kettle",
        body="My kettle is broken",
    )
    record_read(conn, w.olive, T0 + 30, actor="agent-2")

    # Staff, and the agents' own events: none of it is Zebedee's.
    conn.execute(insert(users).values(id="agent-1", display_name="Agatha Agent", role="agent", created_ms=T0))
    record_read(conn, w.zeb, T0 + 40, actor="agent-1")
    return w


@pytest.fixture
def world(store: Engine) -> World:
    with store.begin() as conn:
        return build(conn)


# ------------------------------------------------------------------------------------------------- helpers


def text_columns(engine: Engine) -> Iterator[tuple[str, str, str]]:
    """``(table, column, value)`` for every non-NULL value of every String/Text column the database has."""
    found = inspect(engine)
    reflected = MetaData()
    with engine.connect() as conn:
        for name in found.get_table_names():
            cols = [c["name"] for c in found.get_columns(name) if isinstance(c["type"], String)]
            if not cols:
                continue
            table = Table(name, reflected, autoload_with=conn)
            for row in conn.execute(select(*[table.c[c] for c in cols])):
                for col, value in zip(cols, row, strict=True):
                    if value is not None:
                        yield name, col, value


def leaks(engine: Engine) -> dict[str, list[str]]:
    """Personal strings found, by needle: where (``table.column``)."""
    out: dict[str, list[str]] = {}
    for table, col, value in text_columns(engine):
        for needle in personal_hits(value):
            out.setdefault(needle, []).append(f"{table}.{col}")
    return out


def snapshot(engine: Engine) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            t.name: {
                tuple(r[c.name] for c in t.primary_key.columns): dict(r) for r in conn.execute(select(t)).mappings()
            }
            for t in metadata.sorted_tables
        }


def statistics(engine: Engine) -> dict[str, Any]:
    """What reports are made of; erasure must not change any of it."""
    kept = [
        c
        for c in interactions.c
        if c.name not in PERSONAL_COLUMNS["interactions"]  # everything but address and subject
    ]
    with engine.connect() as conn:
        return {
            "interactions": [tuple(r) for r in conn.execute(select(*kept).order_by(interactions.c.id))],
            "totals": [
                tuple(r)
                for r in conn.execute(
                    select(
                        interactions.c.channel,
                        interactions.c.outcome,
                        func.count(),
                        func.sum(interactions.c.wait_ms),
                        func.sum(interactions.c.talk_ms),
                        func.sum(interactions.c.handle_ms),
                    )
                    .group_by(interactions.c.channel, interactions.c.outcome)
                    .order_by(interactions.c.channel, interactions.c.outcome)
                )
            ],
            "messages": [
                tuple(r)
                for r in conn.execute(
                    select(
                        messages.c.id,
                        messages.c.case_id,
                        messages.c.interaction_id,
                        messages.c.channel,
                        messages.c.direction,
                        messages.c.at_ms,
                    ).order_by(messages.c.id)
                )
            ],
            "events": [
                tuple(r)
                for r in conn.execute(
                    select(events.c.id, events.c.at_ms, events.c.type, events.c.contact_id, events.c.agent_id).order_by(
                        events.c.id
                    )
                )
            ],
            "customers": [
                tuple(r)
                for r in conn.execute(
                    select(
                        customers.c.id, customers.c.tier, customers.c.value_segment, customers.c.created_ms
                    ).order_by(customers.c.id)
                )
            ],
        }


def erase(store: Engine, customer_id: str, **kw: Any) -> Any:
    with store.begin() as conn:
        return erase_customer(conn, customer_id, ERASE_AT, actor=kw.pop("actor", "dpo-1"), **kw)


# -------------------------------------------------------------------------------------------------- erasure


def test_erasure_leaves_no_personal_string_in_any_text_column(store: Engine, world: World) -> None:
    scanned = {table for table, _, _ in text_columns(store)}
    assert set(PERSONAL_COLUMNS) | {"users", "audit_log"} <= scanned  # the reflection found the tables
    before = leaks(store)
    assert set(before) == set(NEEDLES), f"the world lacks {set(NEEDLES) - set(before)}: the scan would prove nothing"
    stats = statistics(store)
    rows = snapshot(store)

    report = erase(store, world.zeb, reason="GDPR art. 17 request, ticket 4411")

    assert leaks(store) == {}
    assert statistics(store) == stats

    # Nobody else's row changed: every difference is one of Zebedee's rows (or the new audit entry).
    after = snapshot(store)
    ours = {
        "customers": lambda r: r["id"] in (world.zeb, world.dup),
        "identities": lambda r: r["customer_id"] == world.zeb,
        "cases": lambda r: r["id"] in world.zeb_cases,
        "interactions": lambda r: r["id"] in world.zeb_contacts,
        "messages": lambda r: r["id"] in world.zeb_messages,
        "events": lambda r: r["contact_id"] in world.zeb_contacts,
        "audit_log": lambda r: r["customer_id"] == world.zeb and r["action"] == "customer.erase",
    }
    for table, old in rows.items():
        new = after[table]
        for key in old.keys() | new.keys():
            if old.get(key) != new.get(key):
                row = old.get(key) or new[key]
                assert table in ours and ours[table](row), f"{table} {key} changed: {old.get(key)} -> {new.get(key)}"
    olive = [r for r in after["identities"].values() if r["customer_id"] == world.olive]
    assert sorted(r["value"] for r in olive) == ["+31207654321", "olive-tok-1", "olive@example.com"]

    with store.connect() as conn:
        zeb = conn.execute(select(customers).where(customers.c.id == world.zeb)).mappings().one()
        dup = conn.execute(select(customers).where(customers.c.id == world.dup)).mappings().one()
        # The customer row keeps what statistics group by; its identities are gone, so a new contact from the
        # same address is a stranger.
        assert (zeb["tier"], zeb["value_segment"], zeb["created_ms"]) == ("gold", "high", T0)
        assert zeb["erased_ms"] == dup["erased_ms"] == ERASE_AT
        assert dup["merged_into"] == world.zeb
        for col in (*PERSONAL_COLUMNS["customers"], "lifetime_value"):
            assert zeb[col] is None and dup[col] is None, col
        assert not zeb["consent_email"]
        assert find_customer(conn, "phone", "+31 6 12345678") is None
        assert find_customer(conn, "email", "olive@example.com") == world.olive
        # An outbound message keeps the agent as its author, like the logged MessageSent keeps agent_id.
        authors = conn.execute(
            select(messages.c.direction, messages.c.author, messages.c.body).where(
                messages.c.id.in_(world.zeb_messages)
            )
        ).all()
        assert {(d, a) for d, a, _ in authors} == {("inbound", None), ("outbound", "agent-1"), ("outbound", "agent-2")}
        assert {b for _, _, b in authors} == {""}
        # Every logged event of Zebedee's still decodes, and only personal fields changed.
        for row in conn.execute(
            select(events.c.id, events.c.payload).where(events.c.contact_id.in_(world.zeb_contacts))
        ):
            ev = decode(row.payload)
            for name in type(ev).PERSONAL:
                assert not getattr(ev, name), (row.id, name)

    assert report.customer_id == report.requested_id == world.zeb
    assert report.merged_ids == (world.dup,)
    assert report.counts() == {
        "customers": 2,
        "identities": 4,
        "cases": 3,
        "interactions": 6,  # every row: the orphan has none
        "messages": 6,
        "events": 11,  # 5 arrivals, 3 messages received, 1 sent, 2 of a transfer to an outside number
        "audit_redacted": 0,
    }
    assert not report.nothing_left


def test_erasure_is_audited_with_ids_and_counts_only(store: Engine, world: World) -> None:
    with store.connect() as conn:
        earlier = audit_trail(conn, world.zeb)
    erase(store, world.zeb, actor="dpo-1", reason="GDPR art. 17 request, ticket 4411")
    with store.connect() as conn:
        trail = audit_trail(conn, world.zeb)
    # Entries written before the erasure held ids only and are kept as they were.
    assert trail[: len(earlier)] == earlier
    assert [e["action"] for e in earlier] == ["customer.merge", "customer.read"]
    last = trail[-1]
    assert (last["action"], last["actor"], last["at_ms"], last["customer_id"]) == (
        "customer.erase",
        "dpo-1",
        ERASE_AT,
        world.zeb,
    )
    assert last["detail"]["reason"] == "GDPR art. 17 request, ticket 4411"
    assert last["detail"]["merged_ids"] == [world.dup]
    assert last["detail"]["interactions"] == 6
    for entry in trail:
        assert personal_hits(json.dumps(entry)) == []


def test_erasing_twice_is_harmless(store: Engine, world: World) -> None:
    erase(store, world.zeb)
    rows = snapshot(store)
    again = erase(store, world.zeb)
    assert again.nothing_left
    assert set(again.counts().values()) == {0}
    after = snapshot(store)
    new_audit = after["audit_log"].keys() - rows["audit_log"].keys()
    assert [after["audit_log"][k]["action"] for k in new_audit] == ["customer.erase"]
    del after["audit_log"], rows["audit_log"]
    assert after == rows  # erased_ms keeps the first erasure's time too


def test_erasing_a_merged_away_id_erases_the_survivor(store: Engine, world: World) -> None:
    report = erase(store, world.dup)
    assert (report.requested_id, report.customer_id, report.merged_ids) == (world.dup, world.zeb, (world.dup,))
    assert leaks(store) == {}


def test_erasing_an_unknown_customer_is_refused(store: Engine, world: World) -> None:
    rows = snapshot(store)
    with pytest.raises(UnknownCustomer, match="no customer with id 'cus-nobody'"):
        erase(store, "cus-nobody")
    with store.begin() as conn, pytest.raises(UnknownCustomer):
        export_customer(conn, "cus-nobody", ERASE_AT, actor="dpo-1")
    assert snapshot(store) == rows


def test_an_event_that_does_not_decode_stops_the_erasure(store: Engine, world: World) -> None:
    with store.begin() as conn:
        conn.execute(
            insert(events).values(at_ms=T0, type="contact.future", contact_id="z-voice-1", payload='{"type":"x"}')
        )
    rows = snapshot(store)
    with pytest.raises(PrivacyError, match="does not decode"):
        erase(store, world.zeb)
    assert snapshot(store) == rows  # the caller's transaction rolled back; nothing half-erased


def test_merge_pointers_in_a_cycle_are_refused(store: Engine, world: World) -> None:
    with store.begin() as conn:
        conn.execute(update(customers).where(customers.c.id == world.zeb).values(merged_into=world.dup))
    with pytest.raises(PrivacyError, match="cycle"):
        erase(store, world.zeb)


def test_personal_data_put_into_the_audit_log_is_redacted(store: Engine, world: World) -> None:
    # Against the rules: a caller logging what was searched for, and an operator naming the customer.
    with store.begin() as conn:
        record_read(conn, world.zeb, T0 + 50, actor="agent-1", what=f"search:{NAME} {PHONE_E164}")
        record_read(conn, world.dup, T0 + 51, actor="agent-1", what="search:zq.marchbanks@example.net")
    report = erase(store, world.zeb, reason=f"letter from {NAME} <{EMAIL}>")
    assert report.audit_redacted == 2
    assert leaks(store) == {}
    with store.connect() as conn:
        trail = audit_trail(conn, world.zeb)
    whats = [e["detail"]["what"] for e in trail if e["action"] == "customer.read"]
    assert whats == ["screen-pop", "search:[erased] [erased]", "search:[erased]"]
    assert trail[-1]["detail"]["reason"] == "letter from [erased] <[erased]>"


# --------------------------------------------------------------------------------------------------- export


def test_export_contains_everything(store: Engine, world: World) -> None:
    with store.begin() as conn:
        text = export_customer_json(conn, world.zeb, ERASE_AT, actor="dpo-1")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"  # stable: sorted keys, fixed indent
    assert data["format"] == EXPORT_FORMAT
    assert data["customer_id"] == data["requested_id"] == world.zeb and "note" not in data
    assert data["customer"]["name"] == NAME and data["customer"]["notes"].startswith("Keeps a parrot")
    assert [c["id"] for c in data["merged_customers"]] == [world.dup]
    assert data["merged_customers"][0]["name"] == "Zebedee Q. Marchbanks"
    assert sorted((i["kind"], i["value"]) for i in data["identities"]) == [
        ("chat", TOKEN),
        ("email", EMAIL),
        ("email", "zq.marchbanks@example.net"),
        ("phone", PHONE_E164),
    ]
    assert {c["id"] for c in data["cases"]} == world.zeb_cases
    assert {i["id"] for i in data["interactions"]} == world.zeb_contacts - {"z-orphan"}
    assert {m["id"] for m in data["messages"]} == world.zeb_messages
    assert {e["contact_id"] for e in data["events"]} == world.zeb_contacts
    arrivals = [e["payload"] for e in data["events"] if e["type"] == "contact.arrived"]
    assert {"name": NAME, "account": "ACC-99871"} in [a.get("attributes") for a in arrivals]
    assert [a["action"] for a in data["audit"]] == ["customer.merge", "customer.read"]
    # Olive's data is not in it.
    assert "olive" not in text.lower() and "kettle" not in text.lower()

    with store.connect() as conn:
        trail = audit_trail(conn, world.zeb)
    assert trail[-1]["action"] == "customer.export" and trail[-1]["actor"] == "dpo-1"
    assert trail[-1]["detail"] == {
        "requested_id": world.zeb,
        "merged_ids": [world.dup],
        "counts": {"identities": 4, "cases": 3, "interactions": 6, "messages": 6, "events": 28},
    }
    assert personal_hits(json.dumps(trail[-1])) == []


def test_export_of_a_merged_away_id_exports_the_survivor_and_says_so(store: Engine, world: World) -> None:
    with store.begin() as conn:
        data = export_customer(conn, world.dup, ERASE_AT, actor="dpo-1")
    assert (data["requested_id"], data["customer_id"]) == (world.dup, world.zeb)
    assert world.dup in data["note"] and world.zeb in data["note"]
    assert data["customer"]["id"] == world.zeb
    assert "z-voice-old" in {i["id"] for i in data["interactions"]}


def test_export_after_erasure_shows_what_is_left(store: Engine, world: World) -> None:
    erase(store, world.zeb)
    with store.begin() as conn:
        text = export_customer_json(conn, world.zeb, ERASE_AT + 1, actor="dpo-1")
    data = json.loads(text)
    assert data["customer"]["erased_ms"] == ERASE_AT
    assert data["identities"] == []
    assert len(data["interactions"]) == 6
    assert personal_hits(text) == []


# ---------------------------------------------------------------------------------------------------- reads


def test_record_read_writes_one_entry_of_ids(store: Engine, world: World) -> None:
    with store.begin() as conn:
        before = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
        record_read(conn, world.zeb, T0 + 60, actor="agent-2", what="case-view")
        record_read(conn, world.dup, T0 + 55, actor="agent-1")
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == before + 2
    with store.connect() as conn:
        trail = audit_trail(conn, world.zeb)
        assert [(e["at_ms"], e["action"], e["customer_id"]) for e in trail] == [
            (T0 + 2, "customer.merge", world.zeb),
            (T0 + 40, "customer.read", world.zeb),
            (T0 + 55, "customer.read", world.dup),  # merged-away ids belong to the survivor's trail
            (T0 + 60, "customer.read", world.zeb),
        ]
        assert trail[-1]["actor"] == "agent-2" and trail[-1]["detail"] == {"what": "case-view"}
        assert personal_hits(json.dumps(trail)) == []
        assert [e["customer_id"] for e in audit_trail(conn, world.olive)] == [world.olive]
        assert audit_trail(conn, "cus-nobody") == []


# -------------------------------------------------------------------------------------------------- payloads


def test_blank_personal_empties_exactly_the_personal_fields() -> None:
    arrived = ContactArrived(
        at_ms=T0,
        contact_id="c1",
        queue="sales",
        channel="email",
        customer_id="cus-1",
        tier="gold",
        case_id="case-1",
        address=EMAIL,
        subject="My invoice",
        attributes={"name": NAME},
        skills={"dutch": 5},
    )
    blanked = blank_personal(arrived)
    assert isinstance(blanked, ContactArrived)
    assert (blanked.address, blanked.subject, blanked.attributes) == (None, None, {})
    assert msgspec.structs.replace(blanked, address=EMAIL, subject="My invoice", attributes={"name": NAME}) == arrived
    assert decode(encode(blanked)) == blanked
    assert NAME not in encode(blanked).decode()

    sent = MessageSent(
        at_ms=T0,
        contact_id="c1",
        message_id="m1",
        channel="email",
        agent_id="agent-1",
        body="hello",
        address=EMAIL,
        references=["m0"],
    )
    assert blank_personal(sent) == MessageSent(
        at_ms=T0, contact_id="c1", message_id="", channel="email", agent_id="agent-1"
    )

    closed = ContactClosed(
        at_ms=T0, contact_id="c1", agent_id="a", queue="q", channel="voice", wait_ms=1, talk_ms=2, hold_ms=3, wrap_ms=4
    )
    assert blank_personal(closed) is closed


def test_every_personal_field_and_table_is_handled() -> None:
    # A PERSONAL field erasure could not blank fails at import; here: every class that declares any is known.
    from contactcentre.events import EVENT_TYPES

    assert {cls for cls in EVENT_TYPES if cls.PERSONAL} == set(BLANKS)
    assert set(PERSONAL_COLUMNS) <= HANDLED_TABLES


def test_every_field_of_every_event_is_classified_personal_or_not() -> None:
    # A field added to an event must be marked PERSONAL (erasure blanks it) or NOT_PERSONAL before this passes.
    from contactcentre.events import EVENT_TYPES, classification_errors

    assert classification_errors(EVENT_TYPES) == []


def test_an_unclassified_or_doubly_classified_field_is_reported() -> None:
    from contactcentre.events import classification_errors

    class Probe(Event, tag="test.probe"):
        contact_id: str
        remark: str = ""
        code: str = ""
        PERSONAL: ClassVar[tuple[str, ...]] = ("code", "gone")
        NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("code",)

    assert classification_errors([Probe]) == [
        "Probe.remark: not classified (PERSONAL or NOT_PERSONAL)",
        "Probe.code: both PERSONAL and not",
        "Probe.gone: classified but no field",
    ]


def test_erasure_blanks_a_transfer_to_an_outside_number(store: Engine, world: World) -> None:
    with store.begin() as conn:
        erase_customer(conn, world.zeb, ERASE_AT, actor="dpo")
    with store.connect() as conn:
        payloads = conn.execute(
            select(events.c.payload).where(
                events.c.contact_id == "z-voice-1",
                events.c.type.in_(["contact.transfer_requested", "contact.transferred"]),
            )
        ).scalars()
        transfers = [decode(p) for p in payloads]
    assert len(transfers) == 2
    for ev in transfers:
        assert isinstance(ev, TransferRequested | ContactTransferred)
        # The number goes; that the call left the centre stays (the projection and statistics read it).
        assert ev.to_external == "" and ev.agent_id == "agent-1"
    connected = ContactConnected(
        at_ms=T0, contact_id="z-voice-1", agent_id="agent-1", queue="billing", channel="voice", wait_ms=0
    )
    legs = fold_legs([connected, transfers[1]])
    assert (legs[0]["outcome"], legs[0]["to"]) == ("transferred", "external:")
    assert blank_personal(TransferRequested(at_ms=1, contact_id="c", agent_id="a", to_queue="q")).to_external is None


def test_ids_with_like_wildcards_and_non_ascii_are_found_in_the_log(store: Engine) -> None:
    # CRM ids come as they come; the payload search must escape them and match the encoder's own spelling.
    odd = "crm_7%ü/x"
    with store.begin() as conn:
        create_customer(conn, T0, customer_id=odd, name=NAME)
        create_customer(conn, T0, customer_id="crmX7%ü/x", name="Olive Ordinary")  # what an unescaped _ matches
        log(
            conn,
            ContactArrived(at_ms=T0, contact_id="k1", queue="q", customer_id=odd, address=PHONE_E164),
            ContactArrived(at_ms=T0, contact_id="k2", queue="q", customer_id="crmX7%ü/x", address="+31207654321"),
        )
        data = export_customer(conn, odd, T0 + 1, actor="dpo-1")
        assert [e["contact_id"] for e in data["events"]] == ["k1"]
        assert erase_customer(conn, odd, T0 + 2, actor="dpo-1").events == 1
    assert leaks(store) == {}
    with store.connect() as conn:
        payload = conn.execute(select(events.c.payload).where(events.c.contact_id == "k2")).scalar_one()
    assert "+31207654321" in payload


def test_reads_gathered_until_a_commit_are_one_statement_and_a_written_batch_takes_no_more(store: Engine) -> None:
    from sqlalchemy import event

    from contactcentre.store.ops import ReadRecords
    from contactcentre.store.privacy import audit_trail

    reads = ReadRecords()
    assert reads.add("cus-1", 10, actor="ann", what="screen-pop")
    assert reads.add("cus-2", 11, actor="bob", what="interaction:chat-1")
    assert reads.add("cus-1", 12, actor="ann", what="interaction:chat-2")
    statements: list[str] = []
    event.listen(store, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with store.begin() as conn:
        reads(conn)
    assert [s.split()[0] for s in statements if not s.startswith("BEGIN")] == ["INSERT"]
    assert not reads.add("cus-1", 13, actor="ann", what="too late")  # the next batch takes it
    with store.connect() as conn:
        trail = [(r["actor"], r["action"], r["detail"]["what"], r["at_ms"]) for r in audit_trail(conn, "cus-1")]
    assert trail == [
        ("ann", "customer.read", "screen-pop", 10),
        ("ann", "customer.read", "interaction:chat-2", 12),
    ]
    with store.begin() as conn:  # the writer running a commit again (a retry) writes the same rows again
        reads(conn)
        assert len(audit_trail(conn, "cus-2")) == 2


def test_reads_sealed_for_another_process_travel_whole_and_take_no_more(store: Engine) -> None:
    from contactcentre.store.ops import ReadRecords, decode_op, encode_op
    from contactcentre.store.privacy import audit_trail

    reads = ReadRecords()
    assert reads.add("cus-1", 10, actor="ann", what="screen-pop")
    assert reads.add("cus-1", 11, actor="bob", what="interaction:chat-1")
    wire = encode_op(reads)
    assert not reads.add("cus-1", 12, actor="ann", what="after it left")  # the next batch takes it
    there = decode_op(wire)
    assert isinstance(there, ReadRecords) and not there.written
    with store.begin() as conn:
        there(conn)
    with store.connect() as conn:
        trail = [(r["actor"], r["detail"]["what"], r["at_ms"]) for r in audit_trail(conn, "cus-1")]
    assert trail == [("ann", "screen-pop", 10), ("bob", "interaction:chat-1", 11)]
