"""Screen-pop: by ANI, e-mail address or chat token, one customer's cases, history and signals
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

import contactcentre.events as E
from contactcentre.store import cases, customers
from contactcentre.store.screenpop import screen_pop, screen_pop_customer
from contactcentre.store.writer import StoreWriter

T0 = 1_790_000_000_000
DAY = 86_400_000


def _contact(cid: str, customer: str, channel: str, at: int, *, case_id: str | None = None, **closing: object) -> list:
    evs: list[E.Event] = [
        E.ContactArrived(
            at_ms=at, contact_id=cid, queue="support", channel=channel, customer_id=customer, case_id=case_id
        )  # type: ignore[arg-type]
    ]
    if closing.get("abandon"):
        evs.append(
            E.ContactAbandoned(at_ms=at + 30_000, contact_id=cid, queue="support", channel=channel, wait_ms=30_000)
        )  # type: ignore[arg-type]
        return evs
    evs.append(
        E.ContactConnected(
            at_ms=at + 5_000, contact_id=cid, agent_id="a1", queue="support", channel=channel, wait_ms=5_000
        )
    )  # type: ignore[arg-type]
    evs.append(
        E.ContactClosed(
            at_ms=at + 300_000,
            contact_id=cid,
            agent_id="a1",
            queue="support",
            channel=channel,  # type: ignore[arg-type]
            wait_ms=5_000,
            talk_ms=240_000,
            hold_ms=0,
            wrap_ms=55_000,
            disposition=closing.get("disposition"),  # type: ignore[arg-type]
        )
    )
    return evs


def _log(engine: Engine, evs: list[E.Event]) -> None:
    async def go() -> None:
        w = StoreWriter(engine, max_delay_s=0)
        await w.write(evs)
        await w.close()

    asyncio.run(go())


def test_one_customer_by_phone_email_and_chat(store: Engine) -> None:
    with store.begin() as conn:
        ann = customers.create_customer(
            conn,
            T0,
            name="Ann de Vries",
            tier="gold",
            lifetime_value=12_500.0,
            do_not_call=True,
            consent_email=True,
            identities_=[("phone", "020 123 4567"), ("email", "Ann <ANN@example.com>"), ("chat", "tok-ann")],
        )
        bob = customers.create_customer(conn, T0, name="Bob", identities_=[("phone", "+31 6 11112222")])
        case_id, _token = cases.open_case(
            conn,
            T0,
            customer_id=ann,
            subject="Broken router",
            category="technical",
            queue="support",
            resolution_due_ms=T0 + 5 * DAY,
        )
        cases.open_case(conn, T0, customer_id=ann, subject="Old matter")
        done, _ = cases.open_case(conn, T0, customer_id=ann, subject="Solved matter")
        cases.set_status(conn, done, "closed", T0)
    evs = [
        *_contact("v1", ann, "voice", T0 + 1 * DAY, case_id=case_id),
        *_contact("e1", ann, "email", T0 + 2 * DAY, case_id=case_id, disposition="complaint"),
        *_contact("ch1", ann, "chat", T0 + 3 * DAY, case_id=case_id, abandon=True),
        *_contact("ch2", ann, "chat", T0 + 3 * DAY + 1000, abandon=True),
        *_contact("v9", bob, "voice", T0 + 3 * DAY),
    ]
    _log(store, evs)
    now = T0 + 4 * DAY
    with store.connect() as conn:
        pops = [
            screen_pop(conn, "phone", "+31201234567", now),
            screen_pop(conn, "phone", "0031 20 1234567", now),
            screen_pop(conn, "email", "ann@example.COM", now),
            screen_pop(conn, "chat", "tok-ann", now),
            screen_pop_customer(conn, ann, now),
        ]
        stranger = screen_pop(conn, "phone", "+44 20 7946 0000", now)
        nonsense = screen_pop(conn, "email", "not an address", now)
    assert not stranger.matched and stranger.customer is None and stranger.value == "+442079460000"
    assert not nonsense.matched
    first = pops[0]
    for pop in pops:
        assert pop.matched and pop.customer == first.customer
        assert pop.recent == first.recent and pop.open_cases == first.open_cases and pop.signals == first.signals
    card = first.customer
    assert card is not None and card.name == "Ann de Vries" and card.tier == "gold" and card.lifetime_value == 12_500.0
    assert card.do_not_call and card.consent_email and not card.consent_calls
    assert [i.id for i in first.recent] == ["ch2", "ch1", "e1", "v1"]  # newest first, every channel, not Bob's
    assert {i.channel for i in first.recent} == {"voice", "email", "chat"}
    assert [i.outcome for i in first.recent] == ["abandoned", "abandoned", "handled", "handled"]
    assert first.recent[2].disposition == "complaint" and first.recent[3].handle_ms == 295_000
    assert [c.subject for c in first.open_cases] == ["Broken router", "Old matter"]  # not the closed one
    broken = first.open_cases[0]
    assert broken.interactions == 3 and not broken.overdue and broken.token.startswith("C-")
    signals = first.signals
    assert signals is not None
    assert (signals.contacts, signals.complaints, signals.abandoned, signals.repeat_case_contacts) == (4, 1, 2, 3)
    assert signals.risk == "high" and len(signals.reasons) == 3
    later = T0 + 40 * DAY  # the window has moved on; the case is now overdue
    with store.connect() as conn:
        old = screen_pop(conn, "chat", "tok-ann", later)
    assert old.signals is not None and old.signals.contacts == 0 and old.signals.complaints == 0
    assert old.open_cases[0].overdue and old.signals.reasons == [
        "3 contacts on one open case",
        "an open case is past its due time",
    ]


def test_limit_and_a_customer_with_no_history(store: Engine) -> None:
    with store.begin() as conn:
        cid = customers.create_customer(conn, T0, name="Cleo", identities_=[("email", "cleo@example.org")])
    with store.connect() as conn:
        pop = screen_pop(conn, "email", "cleo@example.org", T0, limit=3)
    assert pop.matched and pop.recent == [] and pop.open_cases == []
    assert pop.signals is not None and pop.signals.risk == "low" and pop.signals.reasons == []
    _log(store, [ev for i in range(8) for ev in _contact(f"x{i}", cid, "email", T0 + i * 1000)])
    with store.connect() as conn:
        pop = screen_pop(conn, "email", "cleo@example.org", T0 + DAY, limit=3)
    assert [i.id for i in pop.recent] == ["x7", "x6", "x5"]
