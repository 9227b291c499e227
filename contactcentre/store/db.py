"""Which database, how to connect to it, and bringing its schema to the current version.

The embedded default is one SQLite file in WAL mode with ``synchronous=NORMAL``: readers never block the
writer, a commit survives a crash of the process, a power cut may lose the last commits but never corrupts
the file. PostgreSQL is chosen by URL (``--database-url`` or ``CONTACTCENTRE_DATABASE_URL``); a bare
``postgresql://`` URL is given the psycopg 3 driver that the project installs.

The schema is only ever created by the Alembic migrations (``contactcentre migrate``), never by
``create_all``, so that every database, new or old, reaches the same head the same way.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Connection and Engine are also the names modules outside the store give the store's handles in type hints.
from sqlalchemy import Connection, Engine, create_engine, event, inspect, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

ENV_VAR = "CONTACTCENTRE_DATABASE_URL"
DEFAULT_DATABASE = "contactcentre.sqlite"
MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(Exception):
    """The database URL is unusable or the database is not at a version this program can use."""


# What the database layer raises, named here so that nothing outside the store imports SQLAlchemy:
StoreFailure = SQLAlchemyError  # anything the store's library raised (a CLI reports it and exits)
DriverFailure = DBAPIError  # the database itself failed the statement (an outage, a lock): not a bug of ours
LOST_RACE = (IntegrityError, OperationalError)  # a transaction worth running again from the start


def resolve_url(url_or_path: str | Path | None = None, env: dict[str, str] | None = None) -> str:
    """The SQLAlchemy URL to use: the argument, else ``$CONTACTCENTRE_DATABASE_URL``, else the default
    SQLite file. A plain path means an SQLite file."""
    env = os.environ if env is None else env
    text = str(url_or_path) if url_or_path not in (None, "") else env.get(ENV_VAR) or DEFAULT_DATABASE
    if "://" not in text:
        return f"sqlite:///{text}"
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise DatabaseError(f"database URL {text!r} is not a URL: {exc}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite opens a transaction only at the first write, so a SAVEPOINT taken before it ends up outside
    # any transaction and its release commits everything (the caller's rollback then undoes nothing). Let
    # SQLAlchemy's "begin" event issue BEGIN instead (the recipe in SQLAlchemy's pysqlite notes).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A second process (``contactcentre customers erase`` beside a running server) waits for the
        # writer's lock instead of failing at once.
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A writer that reads first cannot wait for a lock another connection took meanwhile (SQLite fails it
    # at once, busy_timeout or not); connections marked ``sqlite_immediate`` take the write lock up front.
    # A ``reader`` (``sqlite_autocommit``) issues no BEGIN: each of its statements is a transaction of its own.
    options = conn.get_execution_options()
    if options.get("sqlite_autocommit"):
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_immediate") else "BEGIN")


def connect(url_or_path: str | Path | None = None) -> Engine:
    """An engine for the database (nothing is created or migrated; see ``migrate``)."""
    url = resolve_url(url_or_path)
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise DatabaseError(f"database URL {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def insert_unless_taken(conn: Connection, table: Any, unique: list[str], row: dict[str, Any]) -> bool:
    """Insert ``row`` unless another row holds its values of the ``unique`` columns; whether it was inserted.
    One statement (``ON CONFLICT DO NOTHING``) rather than a look-up before the insert, and a conflict on any
    other constraint still raises."""
    stmt = _insert_unless_taken(conn.dialect.name, table, tuple(unique))
    return conn.execute(stmt, row).first() is not None


def one_of(column: Any, values: Any) -> Any:
    """``column IN (…)`` of fixed values, each its own bound parameter, for a statement built once: ``in_`` of a
    plain list is an "expanding" parameter, rendered into the SQL again at every execution."""
    values = list(values)
    return column.in_([literal(v, column.type) for v in values]) if values else column.in_(values)


@functools.lru_cache(maxsize=64)
def _insert_unless_taken(dialect: str, table: Any, unique: tuple[str, ...]) -> Any:
    """The statement, built once (its values come as parameters): building a Core construct costs more than
    running it from the compiled cache."""
    dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert  # the two we support
    stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=list(unique))
    # RETURNING says whether a row went in (psycopg gives no rowcount for it)
    return stmt.returning(table.c[unique[0]])


def insert_many_unless_taken(conn: Connection, table: Any, unique: list[str], rows: list[dict[str, Any]]) -> None:
    """``insert_unless_taken`` for many rows in one statement (an executemany), without saying which went in."""
    if rows:
        conn.execute(_insert_many_unless_taken(conn.dialect.name, table, tuple(unique)), rows)


@functools.lru_cache(maxsize=64)
def _insert_many_unless_taken(dialect: str, table: Any, unique: tuple[str, ...]) -> Any:
    dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(unique))


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN (see ``_sqlite_begin``)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


def reader(engine: Engine) -> Connection:
    """A connection for read-only work such as screen-pop (use it as a context manager).

    It runs in autocommit: under READ COMMITTED every statement has its own snapshot anyway, so on PostgreSQL
    a transaction adds nothing but the BEGIN and ROLLBACK round trips, and psycopg keeps its prepared
    statements (it clears them at every ROLLBACK). SQLite reads the same way: its driver is in autocommit
    (``_sqlite_pragmas``) and no BEGIN is issued (``_sqlite_begin``), so each statement sees the newest
    commit, as on PostgreSQL. Reads that must agree with each other are one statement (``screenpop``,
    ``transcripts``)."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    elif engine.dialect.name == "sqlite":
        conn = conn.execution_options(sqlite_autocommit=True)
    return conn


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the database to ``revision`` (default: the newest); returns the revision it is at."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()  # type: ignore[arg-type]
    assert head is not None
    return head


def is_empty(engine: Engine) -> bool:
    """No table at all: a database nobody has migrated yet."""
    return not inspect(engine).get_table_names()


def check_current(engine: Engine) -> None:
    """Refuse a database that is not at the migrations' head, saying what to run."""
    at = current_revision(engine)
    head = head_revision()
    if at == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if at is None and not inspect(engine).get_table_names():
        raise DatabaseError(f"{where}: the database is empty; run `contactcentre migrate` first")
    raise DatabaseError(
        f"{where}: schema is at {at or 'no version'}, this program needs {head}; run `contactcentre migrate`"
    )


def open_store(url_or_path: str | Path | None = None, *, upgrade: bool = True) -> Engine:
    """Connect and make sure the schema is current (migrating it when ``upgrade``)."""
    engine = connect(url_or_path)
    path = engine.url.database
    if not upgrade and engine.dialect.name == "sqlite" and path and path != ":memory:" and not Path(path).exists():
        engine.dispose()
        raise DatabaseError(f"{path}: no such database; run `contactcentre migrate` to create it")
    try:
        if upgrade:
            migrate(engine)
        else:
            check_current(engine)
    except BaseException:
        engine.dispose()  # the caller never gets the engine: close its pooled connection here
        raise
    return engine
