"""The store's commands as an operator uses them: migrate, import, duplicates, merge, screen-pop, export,
erase (SQLite and PostgreSQL), and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from contactcentre.cli import main
from contactcentre.store.db import connect
from contactcentre.store.schema import audit_log

CSV = """id,name,phone,email,chat_token,tier,lifetime_value,do_not_call,consent_email
crm-1,Ann de Vries,020 123 4567,ann@example.com,,gold,12500,no,yes
crm-2,Ann de Vries,,ann+shop@example.com,tok-ann,silver,80,yes,no
crm-3,Bob Bakker,+31 6 1111 2222,bob@example.org,,bronze,15,no,no
crm-4,Broken Row,not a number,,,,,,
"""


def cc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_operator_workflow(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--database-url", database_url)
    code, _, err = cc(capsys, "screen-pop", "--phone", "0201234567", *db)
    assert code == 2 and "contactcentre migrate" in err

    code, out, _ = cc(capsys, "migrate", *db)
    assert code == 0 and "schema at revision" in out
    assert cc(capsys, "migrate", *db)[0] == 0  # again: nothing to do

    csv = tmp_path / "customers.csv"
    csv.write_text(CSV, encoding="utf-8")
    code, out, _ = cc(capsys, "customers", "import", str(csv), "--dry-run", *db)
    assert code == 1 and "not a number" in out  # the report names the bad row ...
    code, _, _ = cc(capsys, "screen-pop", "--phone", "0201234567", *db)
    assert code == 1  # ... and a dry run wrote nothing
    code, out, _ = cc(capsys, "customers", "import", str(csv), "--actor", "ops-1", *db)
    assert code == 1 and "row 5" in out  # row 5 as a spreadsheet counts it (header = row 1)

    code, out, _ = cc(capsys, "customers", "duplicates", "--json", *db)
    pairs = json.loads(out)
    assert code == 0 and {frozenset((p["a"], p["b"])) for p in pairs} == {frozenset(("crm-1", "crm-2"))}

    assert cc(capsys, "customers", "merge", "crm-1", "crm-1", *db)[0] == 1
    code, out, _ = cc(capsys, "customers", "merge", "crm-1", "crm-2", "--actor", "sup-1", *db)
    assert code == 0 and "merged crm-2 into crm-1" in out

    code, out, _ = cc(capsys, "screen-pop", "--chat", "tok-ann", "--actor", "agent-7", *db)
    assert code == 0 and "Ann de Vries" in out and "[crm-1]" in out and "DO NOT CALL" in out
    code, out, _ = cc(capsys, "screen-pop", "--email", "ANN@example.com", "--json", *db)
    pop = json.loads(out)
    assert code == 0 and pop["customer"]["id"] == "crm-1" and pop["customer"]["tier"] == "gold"

    export = tmp_path / "crm-1.json"
    code, out, _ = cc(capsys, "customers", "export", "crm-1", "-o", str(export), *db)
    assert code == 0
    exported = json.loads(export.read_text(encoding="utf-8"))
    assert "tok-ann" in json.dumps(exported) and "ann@example.com" in json.dumps(exported)

    code, _, err = cc(capsys, "customers", "erase", "crm-1", "--reason", "request 17", *db)
    assert code == 2 and "--yes" in err
    code, out, _ = cc(capsys, "customers", "erase", "crm-1", "--reason", "request 17", "--yes", *db)
    assert code == 0
    for kind, value in (("--phone", "0201234567"), ("--email", "ann@example.com"), ("--chat", "tok-ann")):
        assert cc(capsys, "screen-pop", kind, value, *db)[0] == 1
    assert cc(capsys, "customers", "erase", "nobody", "--reason", "x", "--yes", *db)[0] == 1

    engine = connect(database_url)
    try:
        with engine.connect() as conn:
            actions = dict(conn.execute(select(audit_log.c.action, func.count()).group_by(audit_log.c.action)).all())
    finally:
        engine.dispose()
    assert actions["customer.merge"] == 1 and actions["customer.erase"] == 1 and actions["customer.export"] == 1
    assert actions["customer.read"] >= 2 and actions["customer.import"] >= 1


def test_a_bad_database_url_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cc(capsys, "migrate", "--database-url", "nosuchdb://x/y")
    assert code == 2 and "nosuchdb" in err and "Traceback" not in err
    code, _, err = cc(capsys, "screen-pop", "--chat", "t", "--database-url", str(tmp_path / "missing.sqlite"))
    assert code == 2 and "no such database" in err and not (tmp_path / "missing.sqlite").exists()
    code, _, err = cc(capsys, "migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 1 and "database error" in err and "Traceback" not in err


def test_import_reports_a_row_that_is_not_utf8(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ("--database-url", database_url)
    assert cc(capsys, "migrate", *db)[0] == 0
    csv = tmp_path / "mixed.csv"
    csv.write_bytes("name,email\nJosé Müller,jm@example.es\n".encode() + b"Ren\xe9 Dupont,rd@example.fr\n")
    code, out, _ = cc(capsys, "customers", "import", str(csv), *db)
    assert code == 1
    assert "1 created, 0 updated, 1 skipped" in out
    assert "row 3, name: not valid UTF-8 (byte 0xE9 at character 4" in out
    code, out, _ = cc(capsys, "screen-pop", "--email", "jm@example.es", *db)
    assert code == 0 and "José Müller" in out
    assert cc(capsys, "screen-pop", "--email", "rd@example.fr", *db)[0] == 1  # nothing of the bad row


def test_screen_pop_prints_times_in_the_centres_zone_and_names_it(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from contactcentre.config import DEFAULT_CONFIG_PATH
    from contactcentre.store import cases, customers

    due = 1_796_648_700_000  # 2026-12-07 13:05 UTC
    with store.begin() as conn:
        ann = customers.create_customer(conn, due - 86_400_000, name="Ann", identities_=[("phone", "020 123 4567")])
        cases.open_case(conn, due - 86_400_000, customer_id=ann, subject="Router", resolution_due_ms=due)
    db = ("--database-url", store.url.render_as_string(hide_password=False))

    code, out, err = cc(capsys, "screen-pop", "--phone", "0201234567", *db)  # the shipped default.toml: Amsterdam
    assert code == 0, err
    assert "due 2026-12-07 14:05 CET" in out, out
    new_york = tmp_path / "ny.toml"
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    new_york.write_text(text.replace('timezone = "Europe/Amsterdam"', 'timezone = "America/New_York"', 1), "utf-8")
    code, out, err = cc(capsys, "screen-pop", "--phone", "0201234567", "--config", str(new_york), *db)
    assert code == 0, err
    assert "due 2026-12-07 08:05 EST" in out, out

    new_york.write_text('timezone = "Mars/Olympus"\n', "utf-8")
    code, out, err = cc(capsys, "screen-pop", "--phone", "0201234567", "--config", str(new_york), *db)
    assert (code, out) == (2, "") and "Mars/Olympus" in err and len(err.strip().splitlines()) == 1
