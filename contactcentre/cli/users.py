"""The ``contactcentre user`` command: who may use the console and the API.

    contactcentre user add NAME --role {agent,supervisor,admin} [--agent-id ID] [--display-name TEXT]
                               [--password-stdin | --random-password] [--database-url URL]
    contactcentre user token NAME [--revoke-old]  a new API token (the old ones stay valid unless revoked)
    contactcentre user list [--json]
    contactcentre user disable NAME      no more logins; every token and web session revoked
    contactcentre user enable NAME       logins again (tokens and sessions stay revoked: ``user token``)
    contactcentre user totp NAME [--remove]  enrol a TOTP second factor (prints the otpauth:// URI once)
    contactcentre user password NAME (--password-stdin | --random-password)  a new password; ends its sessions

Tokens and generated passwords are printed once and never stored (only their hashes are). The database must
be migrated (``contactcentre migrate``). A running server closes the WebSockets (consoles, dashboards) of a
revoked token or a disabled user's logins at its next check, ``[server.auth] socket_recheck_s``. Exit codes:
0 done, 1 refused (exists, unknown, disabled) or a database error, 2 bad arguments or an unusable database.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from typing import TYPE_CHECKING, Any

from contactcentre.cli.store import add_database_argument, now_ms, store_failed
from contactcentre.store.db import DatabaseError
from contactcentre.store.users import (
    MIN_PASSWORD,
    ROLES,
    UserError,
    check_new_password,
    list_users,
    set_disabled,
    user_agent_id,
    user_row,
)

if TYPE_CHECKING:
    from contactcentre.store.db import Connection

# What `user add` and `user token` print (store.users.new_token makes them), so scripts know what to expect.
TOKEN_FORMAT = (
    "one line, 'cc_' and 43 URL-safe base64 characters (A-Z a-z 0-9 - _), sent as 'Authorization: Bearer "
    "TOKEN' to the REST API and in the agent protocol's login frame; printed once, only its hash is stored"
)

__all__ = ["MIN_PASSWORD", "add_parser", "run"]


def add_parser(sub: Any) -> None:
    user = sub.add_parser(
        "user",
        help="add, list or disable console and API users; issue API tokens; reset passwords",
        description="Manage the users of the console and the REST API.",
    )
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    add = usub.add_parser(
        "add",
        help="create a user and print its first API token",
        description=f"Create a user and print its first API token: {TOKEN_FORMAT}.",
    )
    add.add_argument("name", metavar="NAME", help="login name: letters, digits and . _ @ -")
    add.add_argument("--role", required=True, choices=ROLES, help="agent < supervisor < admin")
    add.add_argument("--agent-id", default=None, metavar="ID", help="the router's agent id (agents: default NAME)")
    add.add_argument("--display-name", default=None, metavar="TEXT", help="the name pages show (default NAME)")
    pw = add.add_mutually_exclusive_group()
    pw.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    pw.add_argument("--random-password", action="store_true", help="generate a password and print it once")
    add_database_argument(add)

    tok = usub.add_parser(
        "token",
        help="issue a new API token for a user (printed once)",
        description=f"Issue a new API token: {TOKEN_FORMAT}. Older tokens stay valid.",
    )
    tok.add_argument("name", metavar="NAME")
    tok.add_argument("--revoke-old", action="store_true", help="revoke the user's other tokens (rotation)")
    add_database_argument(tok)

    lst = usub.add_parser("list", help="list users")
    lst.add_argument("--json", action="store_true", help="print JSON")
    add_database_argument(lst)

    dis = usub.add_parser("disable", help="disable a user and revoke all its tokens and web sessions")
    dis.add_argument("name", metavar="NAME")
    add_database_argument(dis)

    ena = usub.add_parser("enable", help="enable a disabled user again (issue a token with `user token`)")
    ena.add_argument("name", metavar="NAME")
    add_database_argument(ena)

    totp = usub.add_parser("totp", help="enrol a TOTP second factor for web logins (replaces an old one)")
    totp.add_argument("name", metavar="NAME")
    totp.add_argument("--remove", action="store_true", help="remove the second factor instead")
    add_database_argument(totp)

    pwd = usub.add_parser("password", help="set a new password (a forgotten one); the user's web sessions end")
    pwd.add_argument("name", metavar="NAME")
    new = pwd.add_mutually_exclusive_group(required=True)
    new.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    new.add_argument("--random-password", action="store_true", help="generate a password and print it once")
    add_database_argument(pwd)


class _Refused(Exception):
    """The action cannot be done; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run(args: argparse.Namespace) -> int:
    from contactcentre.store.db import StoreFailure, open_store

    action = args.user_command
    prog = f"contactcentre user {action}"
    try:
        password = _password(args) if action in ("add", "password") else None
    except _Refused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    try:
        engine = open_store(args.database_url, upgrade=False)
    except (DatabaseError, StoreFailure) as exc:
        return store_failed(prog, exc)
    try:
        with engine.begin() as conn:
            if action == "add":
                _add(conn, args, password)
            elif action == "token":
                _token(conn, args.name, args.revoke_old)
            elif action == "list":
                _list(conn, args.json)
            elif action in ("disable", "enable"):
                _set_disabled(conn, args.name, action == "disable")
            elif action == "totp":
                _totp(conn, args.name, args.remove)
            elif action == "password" and password is not None:  # the arguments require one of the two
                _reset_password(conn, args.name, password)
            else:
                raise AssertionError(action)
    except _Refused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except StoreFailure as exc:
        return store_failed(prog, exc)
    finally:
        engine.dispose()
    return 0


def _password(args: argparse.Namespace) -> tuple[str, bool] | None:
    """``(password, generated)``, or None for a token-only user (a service, an integration)."""
    if getattr(args, "random_password", False):
        return secrets.token_urlsafe(18), True
    if not getattr(args, "password_stdin", False):
        return None
    if sys.stdin is None:
        raise _Refused("--password-stdin: there is no standard input", 2)
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise _Refused("the passwords differ", 2)
    else:
        first = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    try:
        check_new_password(first)
    except UserError as exc:
        raise _Refused(str(exc), 2) from None
    return first, False


def _add(conn: Connection, args: argparse.Namespace, password: tuple[str, bool] | None) -> None:
    from contactcentre.store.users import UserError, add_user

    if user_row(conn, args.name) is not None:
        raise _Refused(f"user {args.name!r} exists already")
    try:
        token = add_user(
            conn,
            args.name,
            args.role,
            now_ms(),
            agent_id=args.agent_id,
            display_name=args.display_name,
            password=password[0] if password else None,
        )
    except UserError as exc:  # a bad name or role: existence was checked above
        raise _Refused(str(exc), 2) from None
    agent_id = user_agent_id(conn, args.name)
    print(f"created {args.role} {args.name}" + (f" (agent {agent_id})" if agent_id else ""))
    print(f"API token (shown once): {token}")
    if password is not None and password[1]:
        print(f"password (shown once): {password[0]}")


def _token(conn: Connection, name: str, revoke_old: bool) -> None:
    from contactcentre.store.users import new_token, revoke_tokens

    row = user_row(conn, name)
    if row is None:
        raise _Refused(f"no user {name!r}")
    if row.disabled:
        raise _Refused(f"user {name!r} is disabled; `contactcentre user enable {name}` first")
    now = now_ms()
    revoked = revoke_tokens(conn, name, now) if revoke_old else None  # in the same transaction as the new one
    print(f"API token for {name} (shown once): {new_token(conn, name, now)}")
    if revoked is not None:
        print(f"{revoked} old token{'s' * (revoked != 1)} revoked")


def _list(conn: Connection, as_json: bool) -> None:
    rows = list_users(conn)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(
            f"{r['id']:<24} {r['role']:<10} agent {r['agent_id'] or '-':<12} tokens {r['tokens']:<3}"
            f" {'password' if r['has_password'] else 'no password':<11}"
            f"{'  DISABLED' if r['disabled'] else ''}  {r['display_name'] or ''}".rstrip()
        )
    print(f"{len(rows)} user{'s' * (len(rows) != 1)}")


def _totp(conn: Connection, name: str, remove: bool) -> None:
    import pyotp

    from contactcentre.store.users import set_totp_secret

    secret = None if remove else pyotp.random_base32()
    if not set_totp_secret(conn, name, secret):
        raise _Refused(f"no user {name!r}")
    if secret is None:
        print(f"removed the second factor of {name}")
        return
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="contactcentre")
    print(f"TOTP second factor for {name} (shown once; add it to an authenticator app):")
    print(f"  {uri}")
    print(f"  key: {secret}")


def _reset_password(conn: Connection, name: str, password: tuple[str, bool]) -> None:
    from contactcentre.store.users import reset_password

    ended = reset_password(conn, name, password[0], now_ms())
    if ended is None:
        raise _Refused(f"no user {name!r}")
    print(f"new password for {name}; {ended} web session{'s' * (ended != 1)} ended")
    if password[1]:
        print(f"password (shown once): {password[0]}")


def _set_disabled(conn: Connection, name: str, disabled: bool) -> None:
    revoked = set_disabled(conn, name, disabled, now_ms())
    if revoked is None:
        raise _Refused(f"no user {name!r}")
    if disabled:
        print(f"disabled {name}; {revoked} token{'s' * (revoked != 1)} revoked, web sessions ended")
    else:
        print(f"enabled {name}; issue a token with `contactcentre user token {name}`")
