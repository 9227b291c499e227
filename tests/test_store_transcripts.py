"""Transcripts a page at a time with long bodies cut (store/transcripts.py), on SQLite and PostgreSQL: the cut is
made in SQL, so both databases must cut by characters, not bytes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, insert

from contactcentre.store.schema import interactions, messages
from contactcentre.store.transcripts import BadCursor, case_page, contact_page, message_text, parse_cursor

T0 = 1_700_000_000_000
BODY = "héllo wörld " * 50  # 600 characters, more bytes: a cut by bytes would show


def _fill(store: Engine) -> list[int]:
    """Contact c1 on case k1 with five messages, two of them at the same millisecond; c2 on case k2."""
    with store.begin() as conn:
        conn.execute(
            insert(interactions),
            [
                {"id": "c1", "channel": "email", "direction": "inbound", "started_ms": T0, "case_id": "k1"},
                {"id": "c2", "channel": "email", "direction": "inbound", "started_ms": T0, "case_id": "k2"},
            ],
        )
        rows: list[dict[str, Any]] = [
            {"at_ms": T0 + at, "interaction_id": "c1", "case_id": "k1", "body": f"{i} {BODY}", "message_id": f"m{i}"}
            for i, at in enumerate((1, 2, 3, 3, 4))
        ]
        rows.append({"at_ms": T0 + 9, "interaction_id": "c2", "case_id": "k2", "body": "not yours", "message_id": "x"})
        for r in rows:
            r.update(channel="email", direction="inbound")
        return list(conn.execute(insert(messages).returning(messages.c.id), rows).scalars())


def test_pages_walk_back_through_equal_times_and_cut_by_characters(store: Engine) -> None:
    ids = _fill(store)
    with store.connect() as conn:
        seen: list[str] = []
        before = None
        for expected in (["m3", "m4"], ["m1", "m2"], ["m0"]):
            page = contact_page(conn, "c1", limit=2, body_chars=10, before=before)
            assert [m["message_id"] for m in page.messages] == expected
            assert all(m["body"] == m["body"][:2] + "héllo wö" and m["length"] == 602 for m in page.messages)
            assert all(m["truncated"] for m in page.messages) and page.case_id == "k1"
            seen += expected
            before = page.before
        assert before is None and sorted(seen) == ["m0", "m1", "m2", "m3", "m4"]
        whole = case_page(conn, "k1", ["c1"], limit=10, body_chars=1000)
        assert len(whole.messages) == 5 and whole.before is None and not any(m["truncated"] for m in whole.messages)
        assert message_text(conn, contact_id="c1", row_id=ids[0])["body"] == f"0 {BODY}"  # type: ignore[index]
        assert message_text(conn, case_id="k1", message_id="m4")["body"] == f"4 {BODY}"  # type: ignore[index]
        # A message of another conversation is not found through this one.
        assert message_text(conn, contact_id="c1", row_id=ids[5]) is None
        assert message_text(conn, case_id="k1", message_id="x") is None


@pytest.mark.parametrize("text", ["", "1", "1.", ".1", "a.b", "1.2.3", "-1.2", "1" * 16 + ".1", " 1.2"])
def test_a_cursor_that_no_page_gave_is_refused(text: str) -> None:
    with pytest.raises(BadCursor):
        parse_cursor(text)


def test_a_page_holds_no_more_bodies_than_page_chars_and_at_least_one_message(store: Engine) -> None:
    # 500 messages of 65,536 four-byte characters made a 125 MiB page: a page also stops at page_chars
    # characters of (cut) bodies, and the cursor leads on to the rest.
    _fill(store)
    with store.connect() as conn:
        pages, before = [], None
        while True:
            page = case_page(conn, "k1", ["c1"], limit=10, body_chars=10, before=before, page_chars=25)
            pages.append([m["message_id"] for m in page.messages])
            assert sum(len(m["body"]) for m in page.messages) <= 25
            if page.before is None:
                break
            before = page.before
        assert pages == [["m3", "m4"], ["m1", "m2"], ["m0"]]
        # a message longer than the page alone still comes, cut, on a page of its own
        alone = contact_page(conn, "c1", limit=10, body_chars=1000, page_chars=5)
        assert [m["message_id"] for m in alone.messages] == ["m4"] and alone.messages[0]["length"] == 602
        assert alone.before is not None


def test_a_contact_page_of_short_lines_is_one_statement_and_long_bodies_are_read_for_the_page_alone(
    store: Engine,
) -> None:
    from sqlalchemy import event

    from contactcentre.store.db import reader
    from contactcentre.store.transcripts import INLINE_CHARS

    _fill(store)
    long = "ü" * (INLINE_CHARS + 1)
    with store.begin() as conn:
        conn.execute(
            insert(messages).values(case_id="k1", channel="chat"),
            [
                {"at_ms": T0 + 5, "interaction_id": "c1", "body": long, "message_id": "long", "direction": "inbound"},
                {"at_ms": T0 + 6, "interaction_id": "c1", "body": "", "message_id": "none", "direction": "outbound"},
            ],
        )
    statements: list[str] = []
    event.listen(store, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with reader(store) as conn:  # as the server reads: no BEGIN
        short = contact_page(conn, "c1", limit=3, body_chars=5000, before=f"{T0 + 5}.0")
        assert [m["message_id"] for m in short.messages] == ["m2", "m3", "m4"] and len(statements) == 1
        assert short.messages[0]["body"] == f"2 {BODY}" and short.case_id == "k1"
        statements.clear()
        page = contact_page(conn, "c1", limit=3, body_chars=5000)
        assert [m["message_id"] for m in page.messages] == ["m4", "long", "none"] and len(statements) == 2
        assert [m["body"] for m in page.messages] == [f"4 {BODY}", long, ""]
        assert [m["truncated"] for m in page.messages] == [False, False, False]
        cut = contact_page(conn, "c1", limit=3, body_chars=10)
        assert cut.messages[1]["body"] == "ü" * 10 and cut.messages[1]["truncated"]
        assert set(cut.messages[0]) == set(page.messages[0]) and "inline" not in cut.messages[0]
    with reader(store) as conn:
        nobody = contact_page(conn, "nobody", limit=3, body_chars=10)
    assert (nobody.messages, nobody.case_id, nobody.before) == ([], None, None)
