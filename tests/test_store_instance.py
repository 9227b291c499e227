"""One running server per database: a second ``contactcentre serve`` on the same store is refused with a
message naming the first (contactcentre/store/instance.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
