"""Duplicate customers: which pairs are proposed, and what a merge moves, combines, records and refuses."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Connection, Engine, insert, select, update

from contactcentre.store import dedupe
from contactcentre.store.cases import get_case, open_case
from contactcentre.store.customers import create_customer, find_customer, get_customer, surviving_id
from contactcentre.store.dedupe import DuplicatePair, MergeError, MergeResult, find_duplicates, merge_customers
from contactcentre.store.schema import audit_log, customers, identities, interactions

T0 = 1_700_000_000_000


def _customer(conn: Connection, cid: str, name: str | None, *idents: tuple[str, str], **fields: object) -> str:
    return create_customer(conn, T0, customer_id=cid, name=name, identities_=idents, **fields)


def _seed_variants(conn: Connection) -> None:
    # One person each, entered twice in the ways that really happen.
    _customer(conn, "jan-1", "Jan de Vries", ("email", "jan.devries@example.nl"))
    _customer(conn, "jan-2", "jan de Vries", ("email", "jandevries@example.nl"), ("phone", "+31 20 555 0101"))
    _customer(conn, "anna-1", "Anna Bakker", ("email", "anna.bakker+shop@gmail.com"))
    _customer(conn, "anna-2", "Anna Bakker", ("email", "annabakker@googlemail.com"))
    _customer(conn, "piet-1", "Pieter Jansen", ("phone", "+31 6 12345678"))
    _customer(conn, "piet-2", None, ("phone", "+32 612 34 56 78"))  # an inbound call, region guessed wrong
    _customer(conn, "mar-1", "Marieke van den Berg", ("email", "m.vandenberg@example.com"))
    _customer(conn, "mar-2", "Marieke van der Berg", ("email", "mvandenberg@example.com"))
    _customer(conn, "kees-1", "Kees Smit", ("email", "kees@smit.example"), account_manager_id="am-7")
    _customer(conn, "kees-2", "Smit, Kees", ("email", "k.smit@werk.example"), account_manager_id="am-7")
    # Different people: a common name with nothing else in common but the tier, and a couple sharing a
    # Gmail mailbox.
    _customer(conn, "jj-1", "Jan Jansen", ("email", "jan.jansen@a.example"), ("phone", "+31 20 111 1111"), tier="gold")
    _customer(conn, "jj-2", "Jan Jansen", ("email", "janjansen1@b.example"), ("phone", "+31 20 222 2222"), tier="gold")
    _customer(conn, "tom", "Tom Visser", ("email", "t.visser@gmail.com"))
    _customer(conn, "truus", "Truus Visser", ("email", "tvisser@gmail.com"))
    # Not live: a customer already merged and one erased are never proposed.
    _customer(conn, "jan-old", "Jan de Vries", ("email", "jan_devries@example.nl"))
    _customer(conn, "anna-gone", "Anna Bakker", ("email", "a.n.n.a.bakker@gmail.com"))
    conn.execute(update(customers).where(customers.c.id == "jan-old").values(merged_into="jan-1"))
    conn.execute(update(customers).where(customers.c.id == "anna-gone").values(erased_ms=T0))


def test_realistic_variants_are_found_and_different_people_are_not(store: Engine) -> None:
    with store.begin() as conn:
        _seed_variants(conn)
        pairs = find_duplicates(conn)
    by_pair = {(p.a, p.b): p for p in pairs}
    assert set(by_pair) == {
        ("jan-1", "jan-2"),
        ("anna-1", "anna-2"),
        ("piet-1", "piet-2"),
        ("mar-1", "mar-2"),
        ("kees-1", "kees-2"),
    }
    assert by_pair["jan-1", "jan-2"].reasons == [
        "same name 'Jan de Vries'",
        "e-mail jan.devries@example.nl ≈ jandevries@example.nl",
    ]
    assert "e-mail anna.bakker+shop@gmail.com and annabakker@googlemail.com are one Gmail mailbox" in (
        by_pair["anna-1", "anna-2"].reasons
    )
    assert by_pair["piet-1", "piet-2"].reasons == [
        "phone +31612345678 and +32612345678: same national number 612345678"
    ]
    assert (
        by_pair["mar-1", "mar-2"].reasons[0] == "similar names 'Marieke van den Berg' ≈ 'Marieke van der Berg' (0.95)"
    )
    assert by_pair["kees-1", "kees-2"].reasons == [
        "same name 'Kees Smit' / 'Smit, Kees'",
        "same account manager 'am-7'",
    ]
    # Most certain first: one Gmail mailbox and one name beats a shared account manager.
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    assert pairs[0] == by_pair["anna-1", "anna-2"]
    assert pairs[-1] == by_pair["kees-1", "kees-2"]
    assert all(0 < p.score <= 1 and p.a < p.b for p in pairs)


def test_limit_and_name_threshold(store: Engine) -> None:
    with store.begin() as conn:
        _seed_variants(conn)
        everything = find_duplicates(conn)
        assert find_duplicates(conn, limit=2) == everything[:2]
        strict = find_duplicates(conn, min_name_score=0.99)
    assert {(p.a, p.b) for p in strict} == {(p.a, p.b) for p in everything} - {("mar-1", "mar-2")}


def test_phone_digits_and_mailbox_names_at_other_providers(store: Engine) -> None:
    with store.begin() as conn:
        # A UK mobile (10-digit national number) and a Dutch one sharing the last nine digits.
        _customer(conn, "uk", "Sam Taylor", ("phone", "+44 7612 345678"))
        _customer(conn, "nl", "Sam Taylor", ("phone", "+31 6 12345678"))
        _customer(conn, "mb-1", "Rosa Kuipers", ("email", "rosa.kuipers@ziggo.example"))
        _customer(conn, "mb-2", "Rosa Kuipers", ("email", "rosakuipers@kpn.example"))
        # A short or generic mailbox name at two providers says nothing.
        _customer(conn, "info-1", "Bas Mol", ("email", "info@one.example"))
        _customer(conn, "info-2", "Bas Mol", ("email", "info@two.example"))
        pairs = {(p.a, p.b): p for p in find_duplicates(conn)}
    assert set(pairs) == {("nl", "uk"), ("mb-1", "mb-2")}
    assert pairs["nl", "uk"].reasons[1] == "phone +31612345678 and +447612345678 end in the same 9 digits"
    assert pairs["mb-1", "mb-2"].reasons[1] == (
        "e-mail rosa.kuipers@ziggo.example and rosakuipers@kpn.example: same mailbox name at another provider"
    )


def test_blocking_never_compares_a_crowd_of_namesakes(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[tuple[str, str]] = []
    real = dedupe._judge

    def counting(a: dedupe._Customer, b: dedupe._Customer, min_name_score: float) -> DuplicatePair | None:
        judged.append((a.id, b.id))
        return real(a, b, min_name_score)

    monkeypatch.setattr(dedupe, "_judge", counting)
    with store.begin() as conn:
        conn.execute(
            insert(customers),
            [
                {"id": f"jj-{i:03}", "name": "Jan Jansen", "name_key": "jan jansen", "tier": "standard"}
                | {"consent_email": False, "consent_sms": False, "consent_calls": False, "do_not_call": False}
                | {"created_ms": T0, "updated_ms": T0}
                for i in range(300)
            ],
        )
        conn.execute(
            insert(identities),
            [
                {"customer_id": f"jj-{i:03}", "kind": "email", "value": f"jan{i:03}@example.nl", "verified": False}
                | {"created_ms": T0}
                for i in range(300)
            ],
        )
        assert find_duplicates(conn) == []
    assert judged == []


# ---------------------------------------------------------------------------------------------------- merging


def _audit(conn: Connection, action: str) -> list[dict[str, object]]:
    rows = conn.execute(select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)).mappings()
    return [dict(r) for r in rows]


def test_merge_moves_identities_cases_and_interactions(store: Engine) -> None:
    with store.begin() as conn:
        _customer(conn, "c-a", "Jan de Vries", ("email", "jan.devries@example.nl"), lifetime_value=100.0)
        conn.execute(update(customers).where(customers.c.id == "c-a").values(notes="Prefers e-mail"))
        _customer(
            conn,
            "c-b",
            "J. de Vries",
            ("email", "jandevries@example.nl"),
            ("phone", "06 12345678"),
            tier="gold",
            lifetime_value=250.0,
            value_segment="high",
            language="nl",
            account_manager_id="am-3",
            notes="Customer since 2019",
        )
        case_b, _ = open_case(conn, T0, customer_id="c-b", subject="Invoice")
        case_a, _ = open_case(conn, T0, customer_id="c-a", subject="Delivery")
        conn.execute(
            insert(interactions),
            [
                {"id": "i-1", "customer_id": "c-b", "case_id": case_b, "channel": "voice", "started_ms": T0},
                {"id": "i-2", "customer_id": "c-b", "case_id": case_b, "channel": "email", "started_ms": T0 + 1},
                {"id": "i-3", "customer_id": "c-a", "case_id": case_a, "channel": "chat", "started_ms": T0 + 2},
            ],
        )
        result = merge_customers(conn, "c-a", "c-b", T0 + 1000, actor="sup-1")
    assert result == MergeResult("c-a", "c-b", identities=2, cases=1, interactions=2, pointers=0)

    with store.connect() as conn:
        assert find_customer(conn, "email", "jandevries@example.nl") == "c-a"
        assert find_customer(conn, "phone", "+31612345678") == "c-a"
        assert get_case(conn, case_b)["customer_id"] == "c-a"  # type: ignore[index]
        owners = conn.execute(select(interactions.c.id, interactions.c.customer_id).order_by(interactions.c.id))
        assert owners.all() == [("i-1", "c-a"), ("i-2", "c-a"), ("i-3", "c-a")]
        survivor, merged = get_customer(conn, "c-a"), get_customer(conn, "c-b")
        assert survivor is not None and merged is not None
        assert survivor["name"] == "Jan de Vries"  # the survivor's own name wins
        assert (survivor["tier"], survivor["value_segment"], survivor["language"]) == ("gold", "high", "nl")
        assert survivor["account_manager_id"] == "am-3"
        assert survivor["lifetime_value"] == 250.0
        assert survivor["notes"] == "Prefers e-mail\n[from c-b] Customer since 2019"
        assert survivor["updated_ms"] == T0 + 1000 and survivor["merged_into"] is None
        assert (merged["merged_into"], merged["updated_ms"]) == ("c-a", T0 + 1000)
        assert surviving_id(conn, "c-b") == "c-a"
        [entry] = _audit(conn, "customer.merge")
    assert (entry["actor"], entry["customer_id"], entry["at_ms"]) == ("sup-1", "c-a", T0 + 1000)
    detail = json.loads(str(entry["detail"]))
    assert detail == {"merged_id": "c-b", "identities": 2, "cases": 1, "interactions": 2, "pointers": 0}
    assert not any(s in str(entry["detail"]) for s in ("Vries", "@", "+31", "2019", "am-3"))


def test_merged_customer_fills_a_nameless_survivor(store: Engine) -> None:
    with store.begin() as conn:
        _customer(conn, "caller", None, ("phone", "+31 20 555 0199"), lifetime_value=None)
        _customer(conn, "known", "Ria Mulder", ("email", "ria@example.nl"), lifetime_value=40.0)
        merge_customers(conn, "caller", "known", T0 + 5)
        survivor = get_customer(conn, "caller")
        assert survivor is not None
        assert (survivor["name"], survivor["name_key"], survivor["lifetime_value"]) == (
            "Ria Mulder",
            "mulder ria",
            40.0,
        )
        assert find_customer(conn, "email", "ria@example.nl") == "caller"
        assert _audit(conn, "customer.merge")[0]["actor"] == "system"


def test_merge_combines_consents_the_privacy_safe_way(store: Engine) -> None:
    with store.begin() as conn:
        _customer(conn, "s", "Eva Dekker", consent_email=True, consent_sms=True, consent_calls=False, do_not_call=False)
        _customer(conn, "m", "Eva Dekker", consent_email=True, consent_sms=False, consent_calls=True, do_not_call=True)
        merge_customers(conn, "s", "m", T0 + 1)
        survivor = get_customer(conn, "s")
    assert survivor is not None
    # A consent survives only where both records hold it; a do-not-call request from either record stands.
    assert survivor["consent_email"] is True
    assert survivor["consent_sms"] is False
    assert survivor["consent_calls"] is False
    assert survivor["do_not_call"] is True


def test_merge_refuses_bad_requests_and_changes_nothing(store: Engine) -> None:
    with store.begin() as conn:
        _customer(conn, "a", "Ann Smit", ("email", "ann@example.nl"))
        _customer(conn, "b", "Ann Smit", ("email", "a.smit@example.nl"))
        _customer(conn, "c", "Ann Smit", ("email", "annsmit@example.nl"))
        _customer(conn, "gone", "Ann Smit")
        conn.execute(update(customers).where(customers.c.id == "gone").values(erased_ms=T0))
        merge_customers(conn, "a", "c", T0 + 1)

    cases = [
        ("a", "a", "cannot merge customer a with itself"),
        ("a", "nobody", "customer to merge nobody: no such customer"),
        ("nobody", "a", "survivor nobody: no such customer"),
        ("b", "c", "customer to merge c was already merged into a; its records are with a"),
        ("c", "b", "survivor c was already merged into a; its records are with a"),
        ("a", "gone", "customer to merge gone was erased"),
        ("gone", "b", "survivor gone was erased"),
    ]
    for survivor, merged, message in cases:
        with store.begin() as conn, pytest.raises(MergeError) as raised:
            merge_customers(conn, survivor, merged, T0 + 2)
        assert str(raised.value).startswith(message)
    with store.connect() as conn:
        assert find_customer(conn, "email", "a.smit@example.nl") == "b"
        assert len(_audit(conn, "customer.merge")) == 1
        assert get_customer(conn, "b")["merged_into"] is None  # type: ignore[index]


def test_merging_a_survivor_re_points_earlier_merges(store: Engine) -> None:
    with store.begin() as conn:
        for cid in ("a", "b", "c"):
            _customer(conn, cid, "Lotte Bos", ("email", f"lotte.{cid}@example.nl"))
        merge_customers(conn, "b", "c", T0 + 1)
        result = merge_customers(conn, "a", "b", T0 + 2)
        assert result.pointers == 1 and result.identities == 2
        assert get_customer(conn, "c")["merged_into"] == "a"  # type: ignore[index]
        assert find_customer(conn, "email", "lotte.c@example.nl") == "a"
        assert find_duplicates(conn) == []
