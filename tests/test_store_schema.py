"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from contactcentre.store.db import DatabaseError, check_current, connect, current_revision, head_revision, migrate
from contactcentre.store.schema import metadata

TABLES = {"customers", "identities", "cases", "interactions", "messages", "events", "users", "audit_log"}


def test_migrate_builds_the_declared_schema_on_an_empty_database(database_url: str) -> None:
    engine = connect(database_url)
    try:
        with pytest.raises(DatabaseError, match="contactcentre migrate"):
            check_current(engine)
        assert migrate(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == [], f"schema.py and the migrations disagree: {diff}"
        check_current(engine)
        assert migrate(engine) == head_revision()  # a second run is a no-op
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(store: Engine) -> None:
    from alembic import command

    from contactcentre.store.db import _alembic_config

    command.downgrade(_alembic_config(store), "base")
    assert current_revision(store) is None
    assert not TABLES & set(inspect(store).get_table_names())
    migrate(store)
    assert current_revision(store) == head_revision()


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    engine = connect(tmp_path / "x.sqlite")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_a_savepoint_does_not_commit_the_outer_transaction(database_url: str) -> None:
    """pysqlite's own transaction handling would commit at the savepoint's release; ours must not."""
    from sqlalchemy import func, insert, select

    from contactcentre.store.db import open_store
    from contactcentre.store.schema import audit_log

    engine = open_store(database_url)
    try:
        with engine.connect() as conn:
            with conn.begin() as outer:
                with conn.begin_nested():
                    conn.execute(insert(audit_log), [{"at_ms": 1, "actor": "t", "action": "test"}])
                outer.rollback()
            assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 0
    finally:
        engine.dispose()


def test_an_old_database_upgrades_with_its_data(database_url: str) -> None:
    from sqlalchemy import select

    from contactcentre.store import customers
    from contactcentre.store.schema import customers as customers_table

    engine = connect(database_url)
    try:
        assert migrate(engine, "0001") == "0001"
        with engine.begin() as conn:
            customers.create_customer(conn, 1, customer_id="old-1", name="Ada", identities_=[("chat", "t-1")])
        with pytest.raises(DatabaseError, match="needs"):
            check_current(engine)
        assert migrate(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(select(customers_table.c.name)).scalars().all() == ["Ada"]
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("customers")}
        assert "ix_customers_merged_into" in indexes
    finally:
        engine.dispose()


def test_a_taken_case_token_or_identity_is_found_by_the_insert_itself(
    store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # open_case and add_identity insert first (ON CONFLICT DO NOTHING) instead of looking up first: a token
    # another case holds is passed over, an address another customer holds is refused, one's own is kept.
    from contactcentre.store import cases as case_store
    from contactcentre.store.customers import IdentityTaken, add_identity, create_customer

    with store.begin() as conn:
        ann = create_customer(conn, 1, name="Ann", identities_=[("email", "ann@example.com")])
        bob = create_customer(conn, 1, name="Bob")
        _, first = case_store.open_case(conn, 1, customer_id=ann)
        minted = iter([first, first, "C-FRESH1"])
        monkeypatch.setattr(case_store, "new_token", lambda: next(minted))
        case_id, token = case_store.open_case(conn, 2, customer_id=bob)
        assert token == "C-FRESH1" and case_store.get_case(conn, case_id)["customer_id"] == bob  # type: ignore[index]
        assert add_identity(conn, ann, "email", "ANN@example.com", 3) == "ann@example.com"
        with pytest.raises(IdentityTaken) as taken:
            add_identity(conn, bob, "email", "ann@example.com", 3)
        assert taken.value.owner == ann
        assert add_identity(conn, bob, "email", "bob@example.com", 3) == "bob@example.com"
        monkeypatch.setattr(case_store, "new_token", lambda: first)
        with pytest.raises(case_store.CaseError):
            case_store.open_case(conn, 4, customer_id=bob)
