"""Importing customers from CSV: what a good file creates, how every kind of bad row is reported, dry runs,
updates by id, and files that are not what they should be."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, func, select, update

from contactcentre.store.customers import create_customer, find_customer, get_customer
from contactcentre.store.importer import COLUMNS, ImportReport, import_customers_csv
from contactcentre.store.schema import audit_log, customers, identities

T0 = 1_700_000_000_000
DATA = Path(__file__).with_name("data")


def _count(conn: Connection, table: object) -> int:
    return conn.execute(select(func.count()).select_from(table)).scalar_one()  # type: ignore[arg-type]


def _import(store: Engine, text: str, **kwargs: object) -> ImportReport:
    with store.begin() as conn:
        return import_customers_csv(conn, io.StringIO(text), T0, source_name="test.csv", **kwargs)  # type: ignore[arg-type]


def test_a_good_file(store: Engine) -> None:
    with store.begin() as conn:
        report = import_customers_csv(conn, DATA / "customers_good.csv", T0, actor="admin-1")
    assert report.ok, report.text()
    assert (report.rows_read, report.created, report.updated, report.skipped) == (4, 4, 0, 0)
    assert report.text() == f"{DATA / 'customers_good.csv'}: 4 rows read; 4 created, 0 updated, 0 skipped"

    with store.connect() as conn:
        jan = get_customer(conn, "CRM-1001")
        assert jan is not None
        assert (jan["name"], jan["name_key"], jan["tier"], jan["lifetime_value"]) == (
            "Jan de Vries",
            "de jan vries",
            "gold",
            1250.5,
        )
        assert (jan["value_segment"], jan["account_manager_id"], jan["language"], jan["notes"]) == (
            "high",
            "am-3",
            "nl",
            "Prefers mornings",
        )
        assert (jan["consent_email"], jan["consent_sms"], jan["consent_calls"], jan["do_not_call"]) == (
            True,
            False,
            True,
            False,
        )
        assert find_customer(conn, "phone", "+31201234567") == "CRM-1001"
        assert find_customer(conn, "phone", "06-12345678") == "CRM-1001"
        assert find_customer(conn, "email", "jan.devries@example.nl") == "CRM-1001"
        anna = get_customer(conn, "CRM-1002")
        assert anna is not None and anna["name"] == "Bakker, Anna" and anna["consent_calls"] is False
        assert find_customer(conn, "phone", "+32470123456") == "CRM-1002"
        # A row without an id gets a minted one; a quoted note keeps its line break and quotes.
        pieter = find_customer(conn, "chat", "web-7f3a9c")
        assert pieter is not None and pieter.startswith("cus-")
        assert find_customer(conn, "email", "p.jansen@example.org") == pieter
        assert get_customer(conn, pieter)["notes"] == 'Called about "the invoice"\ntwice'  # type: ignore[index]
        nameless = get_customer(conn, "CRM-1004")
        assert nameless is not None and nameless["name"] is None and nameless["do_not_call"] is True
        assert find_customer(conn, "phone", "+31307654321") == "CRM-1004"
        [audit] = conn.execute(select(audit_log).where(audit_log.c.action == "customer.import")).mappings().all()
    assert (audit["actor"], audit["at_ms"], audit["customer_id"]) == ("admin-1", T0, None)
    assert json.loads(audit["detail"]) == {"rows": 4, "created": 4, "updated": 0, "skipped": 0, "errors": 0}


def _seed_existing(conn: Connection) -> None:
    create_customer(conn, T0, customer_id="EXIST-1", name="Jan de Vries", identities_=[("phone", "020 123 4567")])
    create_customer(conn, T0, customer_id="ERASED-1")
    create_customer(conn, T0, customer_id="MERGED-1", name="J. de Vries")
    conn.execute(update(customers).where(customers.c.id == "ERASED-1").values(erased_ms=T0))
    conn.execute(update(customers).where(customers.c.id == "MERGED-1").values(merged_into="EXIST-1"))


BAD_FILE = "\n".join(
    [
        "id,name,phone,email,tier,lifetime_value,consent_email,fax",  # 1
        "B-1,Good Person,+31 20 555 0001,good@example.nl,gold,10,yes,020-5550002",  # 2
        "B-2,Bad Phone,12,bad.phone@example.nl,,,,",  # 3
        "B-3,Bad Mail,+31 20 555 0003,not-an-email,,,,",  # 4
        "B-4,Bad Number,,,,12abc,,",  # 5
        "B-5,Bad Bool,,,,,maybe,",  # 6
        ",,,,gold,,,",  # 7
        "B-1,Duplicate Id,+31 20 555 0007,,,,,",  # 8
        "B-8,Taken,020 123 4567,,,,,",  # 9
        "B-9,Twice In File,+31205550001,,,,,",  # 10
        'B-10,Ambiguous,,x@example.nl,,"1,234",,',  # 11
        "B-11,de Vries, Jan,+31 20 555 0011,dv@example.nl,gold,5,yes,020-5550012",  # 12
        f"B-12,Long Tier,,,{'x' * 40},,,",  # 13
        "ERASED-1,Back Again,,,,,,",  # 14
        "MERGED-1,Old Record,,,,,,",  # 15
        "B-15,Many Faults,+31 20 555 0015;123,also@bad,,-,nope,",  # 16
        'B-16,Last Good One,,last@example.nl,,"1.234,50",no,',  # 17
    ]
)


def test_every_kind_of_bad_row_is_reported_and_skipped_whole(store: Engine) -> None:
    with store.begin() as conn:
        _seed_existing(conn)
    report = _import(store, BAD_FILE)
    assert (report.rows_read, report.created, report.updated, report.skipped) == (16, 2, 0, 14)
    text = report.text()
    assert text.startswith("test.csv: 16 rows read; 2 created, 0 updated, 14 skipped\n17 errors:\n")
    expected = [
        "  row 3, phone: '12' is not",
        "  row 4, email: 'not-an-email' is not an e-mail address",
        "  row 5, lifetime_value: '12abc' is not a number",
        "  row 6, consent_email: 'maybe' is not yes/no (yes, no, true, false, 1, 0 or empty)",
        "  row 7: neither a name nor a phone, e-mail or chat token",
        "  row 8, id: id B-1 is also on row 2",
        "  row 9, phone: phone +31201234567 already belongs to customer EXIST-1",
        "  row 10, phone: phone +31205550001 is also on row 2",
        "  row 11, lifetime_value: '1,234' is ambiguous (a thousands separator or a decimal point?)",
        "  row 12: 9 cells but the header has 8 columns (a comma inside a value that is not quoted?)",
        "  row 13, tier: longer than 32 characters",
        "  row 14, id: customer ERASED-1 was erased; its data must not be imported again",
        "  row 15, id: customer MERGED-1 was merged into EXIST-1; use that id",
        "  row 16, phone: '123' is not",
        "  row 16, email: 'also@bad' is not an e-mail address",
        "  row 16, lifetime_value: '-' is not a number",
        "  row 16, consent_email: 'nope' is not yes/no",
    ]
    lines = text.splitlines()
    errors = lines[2 : 2 + len(expected)]
    assert len(errors) == len(expected)
    for line, start in zip(errors, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert lines[2 + len(expected) :] == ["1 warning:", "  column H: unknown column 'fax' ignored"]
    assert [(row, column) for row, column, _ in report.errors][:2] == [(3, "phone"), (4, "email")]

    with store.connect() as conn:
        ids = set(conn.execute(select(customers.c.id)).scalars())
        assert ids == {"EXIST-1", "ERASED-1", "MERGED-1", "B-1", "B-16"}
        assert get_customer(conn, "B-16")["lifetime_value"] == 1234.5  # type: ignore[index]
        # Nothing of a skipped row was written, not even its valid phone number.
        assert find_customer(conn, "phone", "+31205550003") is None
        assert find_customer(conn, "phone", "+31205550015") is None
        assert find_customer(conn, "phone", "+31201234567") == "EXIST-1"
        erased = get_customer(conn, "ERASED-1")
        assert erased is not None and erased["name"] is None


def test_dry_run_validates_and_writes_nothing(store: Engine) -> None:
    with store.begin() as conn:
        _seed_existing(conn)
        before = {t.name: _count(conn, t) for t in (customers, identities, audit_log)}
    dry = _import(store, BAD_FILE, dry_run=True)
    assert dry.dry_run and (dry.created, dry.updated, dry.skipped) == (2, 0, 14)
    assert dry.text().startswith(
        "test.csv: 16 rows read; 2 would be created, 0 would be updated, 14 skipped\nDry run: nothing was written.\n"
    )
    with store.connect() as conn:
        assert {t.name: _count(conn, t) for t in (customers, identities, audit_log)} == before
    real = _import(store, BAD_FILE)
    assert (real.created, real.updated, real.skipped, real.errors) == (
        dry.created,
        dry.updated,
        dry.skipped,
        dry.errors,
    )


def test_an_existing_id_updates_that_customer(store: Engine) -> None:
    with store.begin() as conn:
        create_customer(
            conn,
            T0,
            customer_id="EXIST-1",
            name="Jan de Vries",
            tier="silver",
            consent_email=True,
            notes="old note",
            identities_=[("phone", "020 123 4567")],
        )
        create_customer(conn, T0, customer_id="EXIST-2", name="Els Hoek", identities_=[("email", "els@example.nl")])
    report = _import(
        store,
        "id,name,tier,phone,email,consent_email,consent_sms,notes\n"
        "EXIST-1,,gold,+31 20 123 4567,jan@example.nl,,yes,new note\n"
        "EXIST-2,,platinum,,,,,\n"  # an existing customer needs neither a name nor an identity on its row
        "NEW-1,Nieuwe Klant,,,nieuw@example.nl,,,\n",
    )
    assert report.ok, report.text()
    assert (report.rows_read, report.created, report.updated) == (3, 1, 2)
    with store.connect() as conn:
        jan = get_customer(conn, "EXIST-1")
        assert jan is not None
        # Empty cells keep what is stored; filled ones replace it.
        assert (jan["name"], jan["tier"], jan["consent_email"], jan["consent_sms"], jan["notes"]) == (
            "Jan de Vries",
            "gold",
            True,
            True,
            "new note",
        )
        assert jan["created_ms"] == T0 and jan["updated_ms"] == T0
        assert find_customer(conn, "email", "jan@example.nl") == "EXIST-1"
        assert find_customer(conn, "phone", "+31201234567") == "EXIST-1"
        assert get_customer(conn, "EXIST-2")["tier"] == "platinum"  # type: ignore[index]
        assert find_customer(conn, "email", "nieuw@example.nl") == "NEW-1"


def test_bom_semicolons_dutch_headers_and_numbers(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + "Name;Phone;E-mail;Lifetime value;Do not call;Consent SMS\r\n"
        "de Vries, Jan;06 12345678;jan@example.nl;1.234,50;ja;nee\r\n"
        "\r\n"
        "Müller, José;+49 30 1234567;jose@example.de;12,5;;\r\n".encode()
    )
    with store.begin() as conn:
        report = import_customers_csv(conn, path, T0)
        assert report.ok and report.source == str(path) and report.created == 2, report.text()
        jan = get_customer(conn, find_customer(conn, "email", "jan@example.nl") or "")
        jose = get_customer(conn, find_customer(conn, "phone", "+49301234567") or "")
    assert jan is not None and jose is not None
    assert (jan["name"], jan["lifetime_value"], jan["do_not_call"], jan["consent_sms"]) == (
        "de Vries, Jan",
        1234.5,
        True,
        False,
    )
    assert (jose["name"], jose["name_key"], jose["lifetime_value"]) == ("Müller, José", "jose muller", 12.5)


def test_a_stream_with_a_bom_tabs_and_windows_1252(store: Engine) -> None:
    with store.begin() as conn:
        tsv = import_customers_csv(conn, io.StringIO("\ufeffname\temail\nAnn Smit\tann@example.nl\n"), T0)
        legacy = import_customers_csv(conn, io.BytesIO("name,email\nJosé Müller,jm@example.es\n".encode("cp1252")), T0)
        assert tsv.ok and tsv.created == 1 and find_customer(conn, "email", "ann@example.nl") is not None
        assert legacy.created == 1 and legacy.warnings == [
            "the file is not UTF-8; it was read as Windows-1252 (Excel's 'CSV')"
        ]
        assert get_customer(conn, find_customer(conn, "email", "jm@example.es") or "")["name"] == "José Müller"  # type: ignore[index]


# A UTF-8 export in which two rows were pasted in from a Latin-1 source: their bytes are not UTF-8.
MIXED = (
    b"name,email,notes\n"
    + "José Müller,jm@example.es,\n".encode()
    + b"Ren\xe9 Dupont,rd@example.fr,\n"
    + b'Ann Smit,ann@example.nl,"two lines,\nthe second caf\xe9"\n'
    + "Zoë Kaya,zk@example.tr,\n".encode()
)


def test_rows_that_are_not_utf8_are_reported_by_row_and_column_and_not_imported(store: Engine) -> None:
    with store.begin() as conn:
        report = import_customers_csv(conn, io.BytesIO(MIXED), T0, source_name="mixed.csv")
        names = set(conn.execute(select(customers.c.name)).scalars())
    assert names == {"José Müller", "Zoë Kaya"}  # the good rows, not re-read as Windows-1252
    assert (report.rows_read, report.created, report.skipped, report.warnings) == (4, 2, 2, [])
    advice = "save the file as CSV UTF-8); the row was not imported"
    assert report.errors == [
        (3, "name", f"not valid UTF-8 (byte 0xE9 at character 4; {advice}"),
        (4, "notes", f"not valid UTF-8 (byte 0xE9 at character 26; {advice}"),  # row 4 spans two lines
    ]


def test_text_already_patched_with_replacement_characters_is_reported(store: Engine) -> None:
    # What a stream opened with errors="replace" hands over: the loss must not be stored silently.
    patched = MIXED.decode("utf-8", "replace")
    report = _import(store, patched)
    assert report.created == 2 and [(row, col) for row, col, _ in report.errors] == [(3, "name"), (4, "notes")]
    assert "U+FFFD" in report.errors[0][2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "the file contains NUL bytes: it is not a CSV text file"),
        (b"", "the file is empty"),
        (b"\n \n", "the file is empty"),
        (b"\x81\x8d\x8f\x90\x9d", "the file is not text in UTF-8 or Windows-1252"),
        (b"Jan de Vries,+31 20 123 4567\nAnn Smit,ann@example.nl\n", "row 1: no header row"),
        (b'{"customers": [{"name": "Jan"}]}', "row 1: no header row"),
        (b'name,email\n"Jan,jan@example.nl\n' + b"x" * 200_000 + b"\n", "the file cannot be read as CSV"),
    ],
)
def test_files_that_are_not_customer_csv_give_one_clear_error(
    store: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    with store.begin() as conn:
        report = import_customers_csv(conn, path, T0, source_name="upload.csv")
        assert _count(conn, customers) == 0
    assert len(report.errors) == 1 and report.rows_read == 0 and report.created == 0 and report.warnings == []
    lines = report.text().splitlines()
    assert lines[0] == "upload.csv: 0 rows read; 0 created, 0 updated, 0 skipped"
    assert lines[1] == "1 error:" and lines[2].startswith(f"  {message}") and len(lines) == 3


def test_a_missing_file_is_reported_not_raised(store: Engine, tmp_path: Path) -> None:
    with store.begin() as conn:
        report = import_customers_csv(conn, tmp_path / "nope.csv", T0)
    assert [m for _, _, m in report.errors] == ["cannot be read: No such file or directory"]


def test_unknown_and_repeated_columns_are_warned_about_once(store: Engine) -> None:
    report = _import(store, "name,Fax,email,fax,Name\nA Jansen,1,a@example.nl,2,X\nB Jansen,3,b@example.nl,4,Y\n")
    assert report.ok and report.created == 2
    assert report.warnings == [
        "column B: unknown column 'Fax' ignored",
        "column D: unknown column 'fax' ignored",
        "column E: second 'name' column ignored",
    ]


def test_the_import_is_part_of_the_callers_transaction(store: Engine) -> None:
    with store.connect() as conn:
        trans = conn.begin()
        report = import_customers_csv(conn, DATA / "customers_good.csv", T0)
        assert report.created == 4 and _count(conn, customers) == 4
        trans.rollback()
    with store.connect() as conn:
        assert (_count(conn, customers), _count(conn, identities), _count(conn, audit_log)) == (0, 0, 0)


def test_a_row_the_database_refuses_leaves_nothing_behind(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from contactcentre.store import importer
    from contactcentre.store.customers import IdentityTaken

    real = importer.add_identity

    def racing(conn: Connection, customer_id: str, kind: str, value: str, now_ms: int, **kw: object) -> str:
        if value == "b@example.nl":  # another writer took it between validation and writing
            raise IdentityTaken(kind, value, "cus-elsewhere")
        return real(conn, customer_id, kind, value, now_ms, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(importer, "add_identity", racing)
    report = _import(store, "id,name,phone,email\nA,Ann,020 555 0001,a@example.nl\nB,Bob,020 555 0002,b@example.nl\n")
    assert (report.created, report.skipped) == (1, 1)
    assert report.errors == [(3, "", "not imported: email b@example.nl already belongs to customer cus-elsewhere")]
    with store.connect() as conn:
        assert set(conn.execute(select(customers.c.id)).scalars()) == {"A"}
        assert find_customer(conn, "phone", "+31205550002") is None
        [detail] = conn.execute(select(audit_log.c.detail)).scalars()
    assert json.loads(detail) == {"rows": 2, "created": 1, "updated": 0, "skipped": 1, "errors": 1}


# ------------------------------------------------------------------------------------------------- property

_cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["yes", "0", "", "+31 20 123 4567", "020-5550001;x", "a@b.nl", "1,234", "1.234,5", "EXIST-1", '"']),
)


@st.composite
def _csv_like(draw: st.DrawFn) -> str:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(st.lists(st.sampled_from([*COLUMNS, "fax", "", "E-mail", "Name"]), min_size=1, max_size=7))
    rows = draw(st.lists(st.lists(_cells, max_size=9), max_size=6))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):  # and now break the quoting somewhere
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(['"', delimiter, "\n", "\ufeff", "\x00"])) + text[cut:]
    return text


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), _csv_like()), dry_run=st.booleans())
def test_import_never_raises_on_any_text(store: Engine, text: str, dry_run: bool) -> None:
    with store.connect() as conn:
        trans = conn.begin()
        try:
            create_customer(conn, T0, customer_id="EXIST-1", name="Jan", identities_=[("phone", "+31201234567")])
            report = import_customers_csv(conn, io.StringIO(text), T0, dry_run=dry_run)
            assert report.rows_read == report.created + report.updated + report.skipped
            assert report.text().startswith("<file>: ")
            assert report.skipped <= len(report.errors)
        finally:
            trans.rollback()
