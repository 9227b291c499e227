"""Users (agents, supervisors, admins), their passwords and their API tokens.

Passwords are hashed with scrypt (the standard library's, n=2**14, r=8, p=1, a random 16-byte salt), stored as
``scrypt$n$r$p$salt$hash``; checks compare in constant time. API tokens are 32 random bytes shown once at
creation; only their SHA-256 is stored (a token has full entropy, so a slow hash would only slow every
request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from contactcentre.store.schema import ROLES, api_tokens, users

_SCRYPT = (2**14, 8, 1)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    role: str
    agent_id: str | None
    display_name: str | None

    def may(self, role: str) -> bool:
        """Roles are ordered: an admin may do what a supervisor may, a supervisor what an agent may."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str) -> str:
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


MIN_PASSWORD = 8  # characters, for every password set by `contactcentre user` or the /admin page


def check_new_password(password: str) -> None:
    """A password someone chose: long enough, or ``UserError``."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")


def token_hash(token: str) -> str:
    """What the table keeps of a token (and what identifies a token-opened socket, ``edge/web/sockets.py``)."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(
    conn: Connection,
    name: str,
    role: str,
    now_ms: int,
    *,
    agent_id: str | None = None,
    display_name: str | None = None,
    password: str | None = None,
) -> str:
    """Create a user with a first API token; returns the token (shown once, never stored)."""
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: letters, digits and . _ @ - only, at most 128")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if conn.execute(select(users.c.id).where(users.c.id == name)).first() is not None:
        raise UserError(f"user {name!r} exists already")
    conn.execute(
        insert(users),
        [
            {
                "id": name,
                "display_name": display_name,
                "role": role,
                "agent_id": agent_id if agent_id is not None else (name if role == "agent" else None),
                "password_hash": hash_password(password) if password else None,
                "disabled": False,
                "created_ms": now_ms,
            }
        ],
    )
    return new_token(conn, name, now_ms)


def new_token(conn: Connection, user_id: str, now_ms: int) -> str:
    token = "cc_" + secrets.token_urlsafe(32)
    conn.execute(insert(api_tokens), [{"user_id": user_id, "token_hash": token_hash(token), "created_ms": now_ms}])
    return token


def revoke_tokens(conn: Connection, user_id: str, now_ms: int) -> int:
    done = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
    )
    return done.rowcount


_BY_TOKEN = (
    select(users.c.id, users.c.role, users.c.agent_id, users.c.display_name)
    .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
    .where(api_tokens.c.revoked_ms.is_(None), users.c.disabled.is_(False))
)


def user_for_token(conn: Connection, token: str) -> User | None:
    """The enabled user a live token belongs to, or None."""
    if not token or len(token) > 200:
        return None
    row = conn.execute(_BY_TOKEN.where(api_tokens.c.token_hash == token_hash(token))).one_or_none()
    return User(*row) if row is not None else None


def live_tokens(conn: Connection, hashes: Iterable[str]) -> set[str]:
    """Those of the token hashes whose token is live (not revoked, its user enabled)."""
    wanted = list(dict.fromkeys(hashes))
    if not wanted:
        return set()
    rows = conn.execute(
        select(api_tokens.c.token_hash)
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(api_tokens.c.token_hash.in_(wanted), api_tokens.c.revoked_ms.is_(None), users.c.disabled.is_(False))
    )
    return set(rows.scalars())


def user_for_password(conn: Connection, name: str, password: str) -> User | None:
    row = conn.execute(
        select(users.c.id, users.c.role, users.c.agent_id, users.c.display_name, users.c.password_hash).where(
            users.c.id == name, users.c.disabled.is_(False)
        )
    ).one_or_none()
    if row is None or not check_password(password, row.password_hash):
        return None
    return User(row.id, row.role, row.agent_id, row.display_name)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user with its number of live tokens, by name."""
    live = (
        select(func.count())
        .select_from(api_tokens)
        .where(api_tokens.c.user_id == users.c.id, api_tokens.c.revoked_ms.is_(None))
        .scalar_subquery()
        .label("tokens")
    )
    rows = conn.execute(
        select(
            users.c.id,
            users.c.role,
            users.c.agent_id,
            users.c.display_name,
            users.c.disabled,
            (users.c.password_hash.is_not(None)).label("has_password"),
            users.c.created_ms,
            live,
        ).order_by(users.c.id)
    ).mappings()
    return [{**r, "disabled": bool(r["disabled"]), "has_password": bool(r["has_password"])} for r in rows]


def set_disabled(conn: Connection, name: str, disabled: bool, now_ms: int) -> int | None:
    """Disable (revoking every token, returning how many, and ending every web session) or enable a user; None
    if there is no such user. Sessions are revoked, not just hidden while the user is disabled, so enabling the
    user again brings none of them back (a stolen cookie stays worthless)."""
    from contactcentre.store.sessions import revoke_user_sessions  # sessions.py imports User from here

    done = conn.execute(update(users).where(users.c.id == name).values(disabled=disabled))
    if done.rowcount == 0:
        return None
    if not disabled:
        return 0
    revoke_user_sessions(conn, name, now_ms)
    return revoke_tokens(conn, name, now_ms)


def reset_password(conn: Connection, name: str, password: str, now_ms: int) -> int | None:
    """Give a user a new password and end its web sessions (returns how many); None if there is no such user.

    Its API tokens stay: a reset is for a forgotten or exposed password, and tokens are revoked on their own
    (``user disable``)."""
    from contactcentre.store.sessions import revoke_user_sessions  # sessions.py imports this module

    check_new_password(password)
    done = conn.execute(update(users).where(users.c.id == name).values(password_hash=hash_password(password)))
    if done.rowcount == 0:
        return None
    return revoke_user_sessions(conn, name, now_ms)


# ------------------------------------------------------------------------------------ login and second factor


@dataclass(frozen=True)
class Credentials:
    """What a login checks: the user, its password hash and its TOTP state (secret, last step used)."""

    user: User
    password_hash: str | None
    totp_secret: str | None
    totp_last_step: int | None


def credentials(conn: Connection, name: str) -> Credentials | None:
    """The enabled user called ``name`` with what a login needs, or None."""
    if not name or len(name) > 128:
        return None
    row = conn.execute(
        select(
            users.c.id,
            users.c.role,
            users.c.agent_id,
            users.c.display_name,
            users.c.password_hash,
            users.c.totp_secret,
            users.c.totp_last_step,
        ).where(users.c.id == name, users.c.disabled.is_(False))
    ).one_or_none()
    if row is None:
        return None
    user = User(row.id, row.role, row.agent_id, row.display_name)
    return Credentials(user, row.password_hash, row.totp_secret, row.totp_last_step)


def set_totp_secret(conn: Connection, name: str, secret: str | None) -> bool:
    """Enrol (a new base32 secret) or remove a user's second factor; False if there is no such user."""
    done = conn.execute(update(users).where(users.c.id == name).values(totp_secret=secret, totp_last_step=None))
    return done.rowcount == 1


def use_totp_step(conn: Connection, name: str, step: int) -> bool:
    """Record that a code for ``step`` was accepted; False if that step (or a later one) was used already.

    One conditional UPDATE, so two logins racing with the same code cannot both win."""
    done = conn.execute(
        update(users)
        .where(users.c.id == name, (users.c.totp_last_step.is_(None)) | (users.c.totp_last_step < step))
        .values(totp_last_step=step)
    )
    return done.rowcount == 1


def admin_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user, by name, with what an administrator checks (never a hash or a secret)."""
    rows = conn.execute(
        select(
            users.c.id,
            users.c.display_name,
            users.c.role,
            users.c.agent_id,
            users.c.disabled,
            users.c.password_hash.is_not(None).label("has_password"),
            users.c.totp_secret.is_not(None).label("totp"),
        ).order_by(users.c.id)
    ).mappings()
    return [
        {**r, "disabled": bool(r["disabled"]), "has_password": bool(r["has_password"]), "totp": bool(r["totp"])}
        for r in rows
    ]


def user_row(conn: Connection, name: str) -> Any:
    """A user's ``id`` and ``disabled`` (None: no such user)."""
    return conn.execute(select(users.c.id, users.c.disabled).where(users.c.id == name)).one_or_none()


def user_agent_id(conn: Connection, name: str) -> str | None:
    """The agent a user is (None: not an agent)."""
    return conn.execute(select(users.c.agent_id).where(users.c.id == name)).scalar_one()
