"""Users, passwords and API tokens in the store, and ``contactcentre user`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from contactcentre.cli.users import add_parser, run
from contactcentre.store.schema import api_tokens, users
from contactcentre.store.users import (
    User,
    UserError,
    add_user,
    check_password,
    hash_password,
    new_token,
    revoke_tokens,
    user_for_password,
    user_for_token,
)

T0 = 1_790_000_000_000


# ------------------------------------------------------------------------------------------------- store


def test_a_token_authenticates_its_user_until_revoked(store: Engine) -> None:
    with store.begin() as conn:
        token = add_user(conn, "alice", "agent", T0, display_name="Alice")
        sup = add_user(conn, "sue", "supervisor", T0, agent_id="a9")
    assert re.fullmatch(r"cc_[A-Za-z0-9_-]{43}", token), token  # the format `user add --help` states
    with store.connect() as conn:
        assert user_for_token(conn, token) == User("alice", "agent", "alice", "Alice")  # an agent is its agent
        assert user_for_token(conn, sup) == User("sue", "supervisor", "a9", None)
        assert user_for_token(conn, token + "x") is None
        assert user_for_token(conn, "") is None
        assert user_for_token(conn, "cc_" + "x" * 300) is None
        # Only the token's hash is kept.
        stored = conn.execute(select(api_tokens.c.token_hash)).scalars().all()
        assert token not in stored and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in stored)
    with store.begin() as conn:
        second = new_token(conn, "alice", T0 + 1)
        assert revoke_tokens(conn, "alice", T0 + 2) == 2
        assert revoke_tokens(conn, "alice", T0 + 3) == 0  # nothing left to revoke
        third = new_token(conn, "alice", T0 + 4)
    with store.connect() as conn:
        assert user_for_token(conn, token) is None and user_for_token(conn, second) is None
        assert user_for_token(conn, third) is not None
        assert user_for_token(conn, sup) is not None  # someone else's revocation leaves sue alone


def test_passwords_are_scrypt_hashed_and_checked(store: Engine) -> None:
    with store.begin() as conn:
        add_user(conn, "alice", "agent", T0, password="correct horse")
        add_user(conn, "svc", "admin", T0)  # token only
    with store.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.id == "alice")).scalar_one()
        assert stored.startswith("scrypt$") and "correct horse" not in stored
        assert user_for_password(conn, "alice", "correct horse") == User("alice", "agent", "alice", None)
        assert user_for_password(conn, "alice", "Correct horse") is None
        assert user_for_password(conn, "nobody", "correct horse") is None
        assert user_for_password(conn, "svc", "") is None  # no password: no password login at all
    assert hash_password("x") != hash_password("x")  # salted
    assert not check_password("x", "md5$abc") and not check_password("x", "scrypt$garbage")


def test_names_roles_and_duplicates_are_checked(store: Engine) -> None:
    with store.begin() as conn:
        add_user(conn, "alice", "agent", T0)
    for bad in ("", " alice", "al ice", "../etc", "-dash", "x" * 129, "ali\nce", "émile"):
        with store.begin() as conn, pytest.raises(UserError, match="user name"):
            add_user(conn, bad, "agent", T0)
    with store.begin() as conn, pytest.raises(UserError, match="role"):
        add_user(conn, "bob", "root", T0)
    with store.begin() as conn, pytest.raises(UserError, match="exists already"):
        add_user(conn, "alice", "supervisor", T0)
    with store.begin() as conn:
        add_user(conn, "a.b_c-d@example.com", "admin", T0)  # what a name may look like
        assert conn.execute(select(users.c.id).order_by(users.c.id)).scalars().all() == [
            "a.b_c-d@example.com",
            "alice",
        ]


def test_roles_are_ordered() -> None:
    agent, sup, admin = (User("u", r, None, None) for r in ("agent", "supervisor", "admin"))
    assert agent.may("agent") and not agent.may("supervisor") and not agent.may("admin")
    assert sup.may("agent") and sup.may("supervisor") and not sup.may("admin")
    assert admin.may("agent") and admin.may("supervisor") and admin.may("admin")


# --------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contactcentre")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


def user(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    code = run(_parser().parse_args(["user", *argv, "--database-url", url]))
    out, err = capsys.readouterr()
    return code, out, err


def _url(store: Engine) -> str:
    return store.url.render_as_string(hide_password=False)


def _printed(label: str, out: str) -> str:
    m = re.search(rf"{label}.*: (\S+)$", out, re.MULTILINE)
    assert m, out
    return m.group(1)


def test_user_add_prints_a_working_token_and_password_once(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(store)
    code, out, err = user(capsys, url, "add", "alice", "--role", "agent", "--agent-id", "a1", "--random-password")
    assert code == 0, err
    assert "created agent alice (agent a1)" in out
    token, password = _printed("API token", out), _printed("password", out)
    with store.connect() as conn:
        assert user_for_token(conn, token) == User("alice", "agent", "a1", None)
        assert user_for_password(conn, "alice", password) is not None
        assert password not in (conn.execute(select(users.c.password_hash)).scalar_one() or "")

    code, out, _ = user(capsys, url, "add", "sue", "--role", "supervisor", "--display-name", "Sue Smith")
    assert code == 0 and "password" not in out  # a token-only user
    with store.connect() as conn:
        assert user_for_token(conn, _printed("API token", out)) == User("sue", "supervisor", None, "Sue Smith")


def test_user_add_reads_a_password_from_stdin(
    store: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(store)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass phrase\n"))
    code, out, err = user(capsys, url, "add", "bob", "--role", "admin", "--password-stdin")
    assert code == 0 and "s3cret" not in out, err
    with store.connect() as conn:
        assert user_for_password(conn, "bob", "s3cret pass phrase") == User("bob", "admin", None, None)

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = user(capsys, url, "add", "carl", "--role", "agent", "--password-stdin")
    assert code == 2 and "at least 8 characters" in err


def test_user_add_refusals(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(store)
    assert user(capsys, url, "add", "alice", "--role", "agent")[0] == 0
    code, out, err = user(capsys, url, "add", "alice", "--role", "supervisor")
    assert (code, out) == (1, "") and err.strip() == "contactcentre user add: user 'alice' exists already"
    code, _, err = user(capsys, url, "add", "bad name", "--role", "agent")
    assert code == 2 and "user name 'bad name'" in err and len(err.strip().splitlines()) == 1
    # A bad role is argparse's to refuse (exit 2); run() refuses one too when called directly.
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["user", "add", "x", "--role", "root"])
    assert exc.value.code == 2
    capsys.readouterr()
    ns = argparse.Namespace(
        command="user",
        user_command="add",
        name="x",
        role="root",
        agent_id=None,
        display_name=None,
        password_stdin=False,
        random_password=False,
        database_url=url,
    )
    assert run(ns) == 2 and "role 'root'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one password source at most
        _parser().parse_args(["user", "add", "x", "--role", "agent", "--password-stdin", "--random-password"])


def test_user_token_list_disable_enable(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(store)
    first = _printed("API token", user(capsys, url, "add", "alice", "--role", "agent", "--random-password")[1])
    user(capsys, url, "add", "sue", "--role", "supervisor", "--display-name", "Sue")

    code, out, _ = user(capsys, url, "token", "alice")
    second = _printed("API token for alice", out)
    assert code == 0 and second != first
    with store.connect() as conn:
        assert user_for_token(conn, first) is not None and user_for_token(conn, second) is not None
    code, _, err = user(capsys, url, "token", "nobody")
    assert (code, err) == (1, "contactcentre user token: no user 'nobody'\n")

    code, out, _ = user(capsys, url, "list")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == "2 users"
    assert lines[0].split()[:6] == ["alice", "agent", "agent", "alice", "tokens", "2"] and "password" in lines[0]
    assert "no password" in lines[1] and lines[1].endswith("Sue")

    code, out, _ = user(capsys, url, "disable", "alice")
    assert code == 0 and out == "disabled alice; 2 tokens revoked, web sessions ended\n"
    with store.connect() as conn:
        assert user_for_token(conn, first) is None and user_for_token(conn, second) is None
        assert user_for_password(conn, "alice", "anything") is None
    code, out, _ = user(capsys, url, "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows["alice"]["disabled"] is True and rows["alice"]["tokens"] == 0 and rows["sue"]["tokens"] == 1

    code, _, err = user(capsys, url, "token", "alice")
    assert code == 1 and "disabled" in err  # no new tokens for a disabled user
    assert user(capsys, url, "disable", "nobody")[0] == 1

    code, out, _ = user(capsys, url, "enable", "alice")
    assert code == 0 and "enabled alice" in out
    with store.connect() as conn:
        assert user_for_token(conn, first) is None  # revoked tokens stay revoked
    code, out, _ = user(capsys, url, "token", "alice")
    with store.connect() as conn:
        assert code == 0 and user_for_token(conn, _printed("API token", out)) is not None


def test_user_token_revoke_old_rotates_the_tokens(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(store)
    first = _printed("API token", user(capsys, url, "add", "alice", "--role", "agent")[1])
    second = _printed("API token for alice", user(capsys, url, "token", "alice")[1])
    code, out, _ = user(capsys, url, "token", "alice", "--revoke-old")
    third = _printed("API token for alice", out)
    assert code == 0 and out.endswith("\n2 old tokens revoked\n")
    with store.connect() as conn:
        assert user_for_token(conn, first) is None and user_for_token(conn, second) is None
        assert user_for_token(conn, third) is not None


def test_user_needs_a_migrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'none.sqlite'}"
    code, _, err = user(capsys, url, "list")
    assert code == 2 and "contactcentre migrate" in err
    assert not (tmp_path / "none.sqlite").exists()  # nothing created behind the operator's back
    code, _, err = user(capsys, "notadriver://x", "list")
    assert code == 2 and err.startswith("contactcentre user list: ")


def test_user_password_sets_a_new_one_and_ends_the_users_web_sessions(
    store: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from contactcentre.store.sessions import create_session, find_session

    url = _url(store)
    with store.begin() as conn:
        token = add_user(conn, "dora", "agent", T0, password="old pass phrase")
        session = create_session(conn, "dora", T0, max_ms=3_600_000)
    monkeypatch.setattr("sys.stdin", io.StringIO("new pass phrase\n"))
    code, out, err = user(capsys, url, "password", "dora", "--password-stdin")
    assert code == 0, err
    assert out.strip() == "new password for dora; 1 web session ended"
    with store.connect() as conn:
        assert user_for_password(conn, "dora", "new pass phrase") is not None
        assert user_for_password(conn, "dora", "old pass phrase") is None
        assert find_session(conn, session, T0 + 1, 3_600_000) is None  # logged out everywhere
        assert user_for_token(conn, token) is not None  # tokens are not passwords: they stay

    code, out, err = user(capsys, url, "password", "dora", "--random-password")
    assert code == 0, err
    with store.connect() as conn:
        assert user_for_password(conn, "dora", _printed("password", out)) is not None

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = user(capsys, url, "password", "dora", "--password-stdin")
    assert code == 2 and "at least 8 characters" in err
    code, _, err = user(capsys, url, "password", "nobody", "--random-password")
    assert code == 1 and err.strip() == "contactcentre user password: no user 'nobody'"
    with pytest.raises(SystemExit):  # one of the two ways to give it is required
        _parser().parse_args(["user", "password", "dora"])
