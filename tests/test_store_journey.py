"""One customer, three channels, one history: the store end to end, the way the edge will use it
(SQLite and PostgreSQL).

A caller rings from her mobile, later writes from her e-mail address, later opens a web chat: the edge
knows each identity only by itself, so three customers appear. Duplicate detection pairs them, a merge
joins them, and from then on screen-pop by any of the three shows one customer with every interaction,
its cases and outcomes; the merge is in the audit log.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, select

import contactcentre.events as E
from contactcentre.store import cases, customers
from contactcentre.store.dedupe import find_duplicates, merge_customers
from contactcentre.store.schema import audit_log
from contactcentre.store.screenpop import screen_pop
from contactcentre.store.writer import StoreWriter

T0 = 1_790_000_000_000
MIN = 60_000


def _served(cid: str, customer: str, channel: str, at: int, case_id: str, address: str) -> list[E.Event]:
    return [
        E.ContactArrived(
            at_ms=at,
            contact_id=cid,
            queue="support",
            channel=channel,  # type: ignore[arg-type]
            customer_id=customer,
            case_id=case_id,
            address=address,
        ),
        E.ContactConnected(
            at_ms=at + MIN,
            contact_id=cid,
            agent_id="a7",
            queue="support",
            channel=channel,  # type: ignore[arg-type]
            wait_ms=MIN,
        ),
        E.ContactClosed(
            at_ms=at + 10 * MIN,
            contact_id=cid,
            agent_id="a7",
            queue="support",
            channel=channel,  # type: ignore[arg-type]
            wait_ms=MIN,
            talk_ms=8 * MIN,
            hold_ms=0,
            wrap_ms=MIN,
            disposition="resolved",
        ),
    ]


def test_phone_email_and_chat_show_one_merged_history(store: Engine) -> None:
    # What the edge does on each first contact: identify (or create) the customer, open a case. The caller
    # is known only by her number; the e-mail by its address and signature name; the chat visitor filled in
    # the pre-chat form with her name and a tagged address of the same mailbox.
    contacts = [
        ("v1", "voice", "phone", "06 1234 5678", None),
        ("e1", "email", "email", "Marieke Jansen <m.jansen@example.nl>", "Marieke Jansen"),
        ("c1", "chat", "chat", "visitor-5f2a", "Marieke  jansen"),
    ]
    events: list[E.Event] = []
    ids = []
    with store.begin() as conn:
        for n, (cid, channel, kind, value, name) in enumerate(contacts):
            customer, created = customers.identify(conn, kind, value, T0, name=name)
            assert created
            ids.append(customer)
            case_id, _ = cases.open_case(conn, T0, customer_id=customer, subject=f"question {n}")
            assert customers.find_customer(conn, kind, value) == customer
            events += _served(cid, customer, channel, T0 + n * 60 * MIN, case_id, value)
        customers.add_identity(conn, ids[2], "email", "M.Jansen+chat@example.nl", T0)

    async def log() -> None:
        w = StoreWriter(store, max_delay_s=0)
        await w.write(events)
        await w.close()

    asyncio.run(log())
    now = T0 + 4 * 60 * MIN
    with store.connect() as conn:
        before = screen_pop(conn, "email", "m.jansen@example.nl", now)
    assert before.matched and [i.id for i in before.recent] == ["e1"]

    with store.begin() as conn:
        # Detection suggests what evidence supports (same name, same mailbox); the anonymous caller is
        # joined by the agent who recognised her on the phone: a merge is a person's decision.
        pairs = {frozenset((p.a, p.b)): p for p in find_duplicates(conn)}
        assert set(pairs) == {frozenset(ids[1:])}
        assert pairs[frozenset(ids[1:])].reasons
        survivor = ids[0]
        for other in ids[1:]:
            merge_customers(conn, survivor, other, now, actor="supervisor-1")

    with store.connect() as conn:
        pops = [
            screen_pop(conn, "phone", "+31612345678", now),
            screen_pop(conn, "email", "M.Jansen@example.nl", now),
            screen_pop(conn, "chat", "visitor-5f2a", now),
        ]
        audit = conn.execute(select(audit_log).where(audit_log.c.action == "customer.merge")).mappings().all()
    for pop in pops:
        assert pop.matched and pop.customer is not None and pop.customer.id == survivor
        assert pop.customer.name == "Marieke Jansen"  # the anonymous caller's record learnt her name
        assert [i.id for i in pop.recent] == ["c1", "e1", "v1"]
        assert {i.channel for i in pop.recent} == {"voice", "email", "chat"}
        assert all(i.outcome == "handled" and i.disposition == "resolved" for i in pop.recent)
        assert len(pop.open_cases) == 3
        assert pop.signals is not None and pop.signals.contacts == 3
    assert len(audit) == 2 and {a["actor"] for a in audit} == {"supervisor-1"}
    assert all(a["customer_id"] == survivor for a in audit)
