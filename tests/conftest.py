"""Shared test set-up: Hypothesis profiles and a router harness driven by a fake clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.browser import chromium, live_server, new_page  # noqa: F401  (browser-test fixtures, tests/browser.py)
from tests.pg_proxy import pg_proxy  # noqa: F401  (a TCP proxy to PostgreSQL that a test can cut, tests/pg_proxy.py)
from tests.redis_server import redis_server, redis_url  # noqa: F401  (a redis-server per test, tests/redis_server.py)

# CI runs the long profile (the stateful router test then covers >= 100,000 steps); locally "dev" is quick.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# ------------------------------------------------------------------------------------------------- databases
# Store tests run on both databases the project supports. PostgreSQL is the server on 127.0.0.1 (override with
# CONTACTCENTRE_TEST_POSTGRES); each test gets a database of its own, dropped afterwards. Without a server the
# PostgreSQL half is skipped on a developer's machine and fails under CI=true, where .ci/run starts one.

POSTGRES_ADMIN_URL = os.environ.get("CONTACTCENTRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_admin():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    from contactcentre.store.db import resolve_url

    return create_engine(resolve_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[object]:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    engine = _postgres_admin()
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have it; .ci/run starts it)")
        pytest.skip(message)
    yield engine
    engine.dispose()


def fresh_postgres_database(admin) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    """Create an empty database; returns its URL and a function that drops it."""
    from sqlalchemy import text

    name = f"cc_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    url, drop = fresh_postgres_database(admin)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def store(database_url: str) -> Iterator[object]:
    """An engine on a database migrated to head (SQLite and PostgreSQL)."""
    from contactcentre.store.db import open_store

    engine = open_store(database_url)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------------------------- the reactor
# Twisted's asyncio reactor can be installed once per process, on one loop: tests that need twisted.web (or
# anything else on the reactor) run their coroutines on this session loop with run_until_complete.


@pytest.fixture(scope="session")
def reactor_loop() -> Iterator[object]:
    import asyncio

    from contactcentre.server.runtime import install_reactor

    loop = asyncio.new_event_loop()
    install_reactor(loop)
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


# ------------------------------------------------------------------------------------------------- markers
# A fast core run: `pytest -m "not browser and not e2e"` leaves out the tests that drive Chromium and those that
# start `contactcentre serve` (or a benchmark) in another process. Marked here, from what a test uses, so a new
# test cannot forget its marker.

_E2E_SIGNS = ("tests.server_proc", "start_server(", "running_live_server", '"benchmarks/', "benchmarks/")
_module_is_e2e: dict[str, bool] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "new_page" in fixtures or "chromium" in fixtures:
            item.add_marker(pytest.mark.browser)
        path = str(item.path)
        if path not in _module_is_e2e:
            text = Path(path).read_text(encoding="utf-8")
            _module_is_e2e[path] = any(sign in text for sign in _E2E_SIGNS)
        if _module_is_e2e[path] or "live_server" in fixtures:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def pg_url(postgres_admin: Any) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (the nodes of a many-process centre share it), dropped after."""
    url, drop = fresh_postgres_database(postgres_admin)
    yield url
    drop()
