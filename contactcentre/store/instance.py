"""One running server per database. Two servers on one store would each replay the log into a router of their
own and route the same contacts side by side, so ``contactcentre serve`` holds a lock on its database for its
whole life and a second one is refused with a message naming the first.

SQLite: an OS lock (``flock``) on the database file itself, on a descriptor the server keeps open. The lock
belongs to the file (its inode), not to a name: a hard or symbolic link to the database finds it, and no
``rm`` can take it away. ``FILE.lock`` beside the database holds the running server's pid, host and ports
for the refusal message only; it locks nothing, and a missing or stale one changes nothing but the message.
The kernel drops the lock when the process ends, however it ends, so a crashed server never leaves the
database locked. PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection the
server keeps, whose ``application_name`` says the same.
"""

from __future__ import annotations

import contextlib
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

    def __init__(self, fd: int | None = None, conn: Connection | None = None, info: Path | None = None) -> None:
        self._fd = fd  # a descriptor of the SQLite database file, flocked
        self._info = info  # FILE.lock: the description, for a refused server's message
        self._conn = conn
        self.engine: Engine | None = None  # disposed at release when the lock made it (``lock_database``)

    def describe(self, **ports: Any) -> None:
        who = _who(ports)
        if self._fd is not None and self._info is not None:
            st = os.fstat(self._fd)
            _write_info(self._info, {**who, "device": st.st_dev, "inode": st.st_ino})
        if self._conn is not None:
            _set_application_name(self._conn, who)

    def release(self) -> None:
        if self._fd is not None:
            # The description goes first, while the lock still keeps any other server from writing its own.
            if self._info is not None and _read_info(self._info).get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    self._info.unlink()
            # Closing the descriptor drops the flock. It also drops every POSIX lock this process holds on the
            # file (POSIX locks belong to the process and the inode, and any close ends them), so it comes
            # last: ``serve`` releases after closing the store, when SQLite holds none.
            os.close(self._fd)
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
    # The lock is on the database file itself, so every name of it (a symbolic link to it or to its folder, a
    # hard link) finds the same lock, and deleting a file cannot lift it. Creating the file if it is missing
    # is what SQLite would do next anyway: an empty file is an empty database.
    #
    # Why this does not disturb SQLite, which locks the same file: SQLite uses POSIX record locks (fcntl),
    # flock is a separate kind, and on Linux the two never conflict (tests/test_store_instance.py checks
    # that SQLite, here and in another process, reads and writes while the flock is held). The one way they
    # meet: closing any descriptor of the file drops this process's POSIX locks on it, so the descriptor
    # stays open for the server's whole life and is closed only where SQLite holds none (a refusal, before
    # the store is opened; ``release``, after it is closed). On a network file system flock may be emulated
    # with POSIX locks and then it would conflict: docs/security.md says not to put the database there.
    real = database.resolve()
    info = real.with_name(real.name + ".lock")
    fd = os.open(real, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        st = os.fstat(fd)
        os.close(fd)
        raise DatabaseInUse(
            f"{database} is in use by another contactcentre serve ({_holder(st, info)}); stop it first"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    lock = InstanceLock(fd=fd, info=info)
    # The description is only for others' messages: an unwritable folder does not stop the server.
    with contextlib.suppress(OSError):
        lock.describe()
    return lock


def _write_info(path: Path, who: dict[str, Any]) -> None:
    # Written whole and renamed into place, so a refused server never reads half of it.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(who))
    os.replace(tmp, path)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        who = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return who if isinstance(who, dict) else {}


def _holder(st: os.stat_result, info: Path) -> str:
    """Who holds the flock on the database whose ``fstat`` is ``st``, for the refusal message.

    The kernel knows the holder's pid (``/proc/locks``, Linux); FILE.lock adds its host and ports, and is
    believed only when it names that pid and this database file (it may be stale, missing or another file's).
    For a hard link the holder's FILE.lock is beside the name it opened, found through its descriptors.
    """
    pid = _flock_holder(st)
    candidates = [info]
    if pid is not None:
        candidates += _holder_infos(pid, st)
    for path in candidates:
        who = _read_info(path)
        if who.get("inode") != st.st_ino or who.get("device") != st.st_dev:
            continue
        if pid is None or who.get("pid") == pid:
            return _describe(who)
    if pid is not None:
        return f"pid {pid} on {socket.gethostname()}; its {info.name} is missing or stale"
    return "a process that holds its lock"


def _flock_holder(st: os.stat_result) -> int | None:
    """The pid holding a flock on this inode, from ``/proc/locks`` (``1: FLOCK ADVISORY WRITE pid MAJ:MIN:INODE
    0 EOF``, device numbers in hex); None where there is no such file or no such line."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    same_inode: int | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" lines are waiters, not holders
            continue
        try:
            major, minor, inode = fields[5].split(":")
            pid = int(fields[4])
            if int(inode) != st.st_ino:
                continue
            if (int(major, 16), int(minor, 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
                return pid
        except ValueError:
            continue
        same_inode = pid  # some file systems report another device number here than stat does
    return same_inode


def _holder_infos(pid: int, st: os.stat_result) -> list[Path]:
    """FILE.lock beside each name under which process ``pid`` has this database open (readable only for
    one's own processes; otherwise none)."""
    found: list[Path] = []
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fds.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            other = os.stat(entry)
            if (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
                continue
            name = Path(os.readlink(entry))
        except OSError:
            continue
        if name.is_absolute():
            found.append(name.with_name(name.name + ".lock"))
    return found


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
