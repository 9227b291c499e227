"""One running server per database. Two servers on one store would each replay the log into a router of their
own and route the same contacts side by side, so ``contactcentre serve`` holds a lock on its database for its
whole life and a second one is refused with a message naming the first.

SQLite: an OS lock (``flock``) on ``FILE.lock`` beside the database file, which holds the running server's
pid, host and ports. The kernel drops the lock when the process ends, however it ends, so a crashed server
never leaves the database locked (the file itself stays; it is only a place to lock). PostgreSQL: a
session-level advisory lock (``pg_try_advisory_lock``) on a connection the server keeps, whose
``application_name`` says the same.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from contactcentre.store.db import DatabaseError, connect

# The advisory lock's key: any fixed 64-bit number; this one spells "ccserve" in ASCII.
ADVISORY_KEY = 0x63_63_73_65_72_76_65


class DatabaseInUse(DatabaseError):
    """Another server holds this database; the message names it."""


def _who(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), **(extra or {})}


def _describe(who: dict[str, Any]) -> str:
    ports = ", ".join(f"{k} {v}" for k, v in who.items() if k.endswith("_port") and v is not None)
    return f"pid {who.get('pid', '?')} on {who.get('host', '?')}" + (f", {ports}" if ports else "")


class InstanceLock:
    """The lock a server holds on its database; ``describe`` records where it listens, ``release`` ends it."""

    def __init__(self, fd: int | None = None, conn: Connection | None = None) -> None:
        self._fd = fd
        self._conn = conn
        self.engine: Engine | None = None  # disposed at release when the lock made it (``lock_database``)

    def describe(self, **ports: Any) -> None:
        who = _who(ports)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(who).encode(), 0)
        if self._conn is not None:
            _set_application_name(self._conn, who)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._conn is not None:
            # The connection goes back to the pool, its session (and a session lock) alive: unlock first.
            try:
                self._conn.execute(select(func.pg_advisory_unlock(ADVISORY_KEY)))
                self._conn.close()
            except Exception:
                self._conn.invalidate()  # the session ends, and with it the lock
            self._conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def lock_database(url_or_path: str | Path | None) -> InstanceLock:
    """``lock_instance`` on an engine of its own, which the lock keeps (and disposes of) until its release."""
    engine = connect(url_or_path)
    try:
        lock = lock_instance(engine)
    except BaseException:
        engine.dispose()
        raise
    lock.engine = engine
    return lock


def lock_instance(engine: Engine) -> InstanceLock:
    """Take the database's server lock, or raise ``DatabaseInUse`` naming the server that has it."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return InstanceLock()  # a private database: nobody else can reach it
        return _lock_file(Path(path))
    if engine.dialect.name == "postgresql":
        return _lock_advisory(engine)
    return InstanceLock()


def _lock_file(database: Path) -> InstanceLock:
    if not database.parent.is_dir():
        return InstanceLock()  # opening the database fails next, with its own message
    # Beside the file itself, however it was named: a symbolic link to the database (or to its folder) is the
    # same database and must find the same lock.
    real = database.resolve()
    lock_path = real.with_name(real.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            who = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            who = {}
        os.close(fd)
        raise DatabaseInUse(
            f"{database} is in use by another contactcentre serve ({_describe(who)}); stop it first"
        ) from None
    lock = InstanceLock(fd=fd)
    lock.describe()
    return lock


def _lock_advisory(engine: Engine) -> InstanceLock:
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not conn.execute(select(func.pg_try_advisory_lock(ADVISORY_KEY))).scalar():
            holder = _advisory_holder(conn)
            raise DatabaseInUse(
                f"database {engine.url.database} is in use by another contactcentre serve"
                f" ({holder or 'a session that holds its lock'}); stop it first"
            )
        lock = InstanceLock(conn=conn)
        lock.describe()
        return lock
    except BaseException:
        conn.close()
        raise


def _set_application_name(conn: Connection, who: dict[str, Any]) -> None:
    # At most 63 bytes survive in application_name: the short form.
    ports = " ".join(f"{k.removesuffix('_port')} {v}" for k, v in who.items() if k.endswith("_port") and v)
    name = f"contactcentre pid {who['pid']}@{who['host']} {ports}".strip()
    conn.execute(select(func.set_config("application_name", name.encode()[:63].decode(errors="ignore"), False)))


def _advisory_holder(conn: Connection) -> str | None:
    """The application name (and client address) of the session holding the server lock, if visible."""
    row = conn.execute(
        text(
            "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
        ),
        {"key": ADVISORY_KEY},
    ).first()
    if row is None:
        return None
    name, addr = row
    return f"{name}" + (f" from {addr}" if addr else "")


__all__ = ["ADVISORY_KEY", "DatabaseInUse", "InstanceLock", "lock_database", "lock_instance"]
