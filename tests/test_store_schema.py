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
