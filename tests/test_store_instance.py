"""One running server per database: a second ``contactcentre serve`` on the same store is refused with a
message naming the first (contactcentre/store/instance.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contactcentre.store.db import connect
from contactcentre.store.instance import DatabaseInUse, lock_instance
from tests.server_proc import REPO, T, server_config, start_server


def test_a_second_server_on_the_same_sqlite_file_is_refused_naming_the_first(tmp_path: Path) -> None:
    config = server_config(tmp_path, 9)
    db = tmp_path / "s.sqlite"
    first = start_server(config, db)
    try:
        cmd = [sys.executable, "-m", "contactcentre.cli", "serve", "--config", str(config), "--database-url", str(db)]
        cmd += ["--http-port", "0", "--smtp-port", "0", "--ws-port", "0", "--cti-port", "0", "--sip-port", "0"]
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=T, stdin=subprocess.DEVNULL)
        err = second.stderr.decode()
        assert second.returncode != 0 and "contactcentre serve: " not in second.stdout.decode()
        assert f"{db} is in use by another contactcentre serve (pid {first.proc.pid} on " in err, err
        assert f"http_port {first.http_port}" in err and f"ws_port {first.ws_port}" in err
    finally:
        code, _ = first.stop()
    assert code == 0
    again = start_server(config, db)  # the lock went with the first server
    again.stop()


def test_the_lock_is_released_with_the_server_and_a_crash_leaves_none(tmp_path: Path) -> None:
    engine = connect(tmp_path / "s.sqlite")
    try:
        lock = lock_instance(engine)
        lock.describe(http_port=8080)
        try:
            lock_instance(engine)
            raise AssertionError("a second lock was granted")
        except DatabaseInUse as exc:
            assert "http_port 8080" in str(exc)
        lock.release()
        lock_instance(engine).release()
    finally:
        engine.dispose()


def test_a_second_server_on_the_same_postgresql_database_is_refused(postgres_admin: object) -> None:
    from tests.conftest import fresh_postgres_database

    url, drop = fresh_postgres_database(postgres_admin)
    one, two = connect(url), connect(url)
    try:
        lock = lock_instance(one)
        lock.describe(http_port=8080, ws_port=8081)
        try:
            lock_instance(two)
            raise AssertionError("a second lock was granted")
        except DatabaseInUse as exc:
            assert "in use by another contactcentre serve (contactcentre pid " in str(exc)
            assert "http 8080 ws 8081" in str(exc)
        lock.release()
        lock_instance(two).release()
    finally:
        one.dispose()
        two.dispose()
        drop()  # type: ignore[operator]


def test_a_symbolic_link_to_the_database_finds_the_same_lock(tmp_path: Path) -> None:
    """Two names of one SQLite file are one database: a second server given a symbolic link to the file, or to
    its folder, would otherwise lock a FILE.lock of its own and route the same contacts beside the first."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "centre.sqlite"
    (tmp_path / "link.sqlite").symlink_to(db)
    (tmp_path / "folder").symlink_to(tmp_path / "data")
    first = lock_instance(connect(db))
    try:
        for other in (tmp_path / "link.sqlite", tmp_path / "folder" / "centre.sqlite"):
            try:
                lock_instance(connect(other)).release()
            except DatabaseInUse:
                continue
            raise AssertionError(f"{other} was locked beside {db}")
    finally:
        first.release()
    lock_instance(connect(tmp_path / "link.sqlite")).release()  # free again once the first lets go


def _second_serve(config: Path, db: Path) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "contactcentre.cli", "serve", "--config", str(config), "--database-url", str(db)]
    cmd += ["--http-port", "0", "--smtp-port", "0", "--ws-port", "0", "--cti-port", "0", "--sip-port", "0"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=T, stdin=subprocess.DEVNULL)


def test_neither_a_hard_link_nor_a_deleted_lock_file_lets_a_second_server_start(tmp_path: Path) -> None:
    """The lock is on the database file itself: a hard link to it is the same file, and FILE.lock is only the
    first server's description, so deleting it lifts nothing (before, either let a second server run)."""
    config = server_config(tmp_path, 9)
    db = tmp_path / "s.sqlite"
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "hard.sqlite"
    first = start_server(config, db)
    try:
        os.link(db, link)
        second = _second_serve(config, link)
        err = second.stderr.decode()
        assert second.returncode != 0 and "contactcentre serve: " not in second.stdout.decode(), err
        # The first server's FILE.lock is beside the name it opened; the refusal still finds it.
        assert f"{link} is in use by another contactcentre serve (pid {first.proc.pid} on " in err, err
        assert f"http_port {first.http_port}" in err, err
        (tmp_path / "s.sqlite.lock").unlink()
        third = _second_serve(config, db)
        err = third.stderr.decode()
        assert third.returncode != 0 and "contactcentre serve: " not in third.stdout.decode(), err
        assert f"{db} is in use by another contactcentre serve (pid {first.proc.pid} on " in err, err
        assert "s.sqlite.lock is missing" in err, err
    finally:
        code, _ = first.stop()
    assert code == 0


def test_a_hard_link_or_a_removed_lock_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    link = tmp_path / "hard.sqlite"
    db.touch()
    first = lock_instance(connect(db))
    first.describe(http_port=8080)
    try:
        os.link(db, link)
        with pytest.raises(DatabaseInUse, match=rf"pid {os.getpid()} on .*http_port 8080"):
            lock_instance(connect(link))
        (tmp_path / "s.sqlite.lock").unlink()
        with pytest.raises(DatabaseInUse, match=rf"pid {os.getpid()} on .*s\.sqlite\.lock is missing"):
            lock_instance(connect(db))
    finally:
        first.release()
    lock_instance(connect(link)).release()  # free again once the first lets go


def test_a_stale_lock_file_is_only_information(tmp_path: Path) -> None:
    """A FILE.lock left by a crashed server (another pid) neither locks nor is believed; the holder's own is
    removed when it lets go."""
    db = tmp_path / "s.sqlite"
    info = tmp_path / "s.sqlite.lock"
    info.write_text(json.dumps({"pid": 1, "host": "elsewhere", "http_port": 1}))
    first = lock_instance(connect(db))  # the stale file does not stop it
    try:
        info.write_text(json.dumps({"pid": 1, "host": "elsewhere", "http_port": 1}))
        with pytest.raises(DatabaseInUse) as refused:
            lock_instance(connect(db))
        assert f"pid {os.getpid()} on " in str(refused.value) and "elsewhere" not in str(refused.value)
        first.describe(http_port=8080)
        assert json.loads(info.read_text())["pid"] == os.getpid()
    finally:
        first.release()
    assert not info.exists()


def test_sqlite_reads_and_writes_while_the_server_lock_is_held(tmp_path: Path) -> None:
    """flock (the server lock) and SQLite's own POSIX fcntl locks are independent on Linux: with the lock held,
    SQLite in this process and in another one (a command-line tool beside a live server) reads and writes."""
    db = tmp_path / "s.sqlite"
    engine = connect(db)
    lock = lock_instance(engine)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        script = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); c.execute('INSERT INTO t VALUES (2)');"
            " c.commit(); print(sum(x for (x,) in c.execute('SELECT x FROM t')))"
        )
        other = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, timeout=T)
        assert other.returncode == 0 and other.stdout.strip() == b"3", other.stderr
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
            assert conn.exec_driver_sql("SELECT sum(x) FROM t").scalar() == 6
        with pytest.raises(DatabaseInUse):
            lock_instance(connect(db))
        with engine.connect() as conn:  # a refusal closed a descriptor of the file: SQLite is unaffected
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3
    finally:
        lock.release()
        engine.dispose()


def test_a_port_already_taken_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    config = server_config(tmp_path, 9)
    db = tmp_path / "s.sqlite"
    start_server(config, db).stop()  # a migrated store
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "contactcentre.cli", "serve", "--config", str(config), "--database-url", str(db)]
        cmd += ["--http-port", str(port), "--smtp-port", "0", "--ws-port", "0", "--cti-port", "0", "--sip-port", "0"]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=T, stdin=subprocess.DEVNULL)
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "0 picks a free one" in err, err
