"""Web console sessions, kept in the database so that they survive a restart and can be revoked.

A session id is 32 random bytes (256 bits) handed to the browser once, in its cookie; the table keeps only its
SHA-256 (like API tokens: the id has full entropy, so a slow hash would only slow every request). A session
ends at the first of: its absolute expiry, ``idle_ms`` without a request, logout or revocation (disabling its
user revokes all of them, so enabling the user again brings none back).

``last_seen_ms`` is written at most once per ``TOUCH_MS``, so a dashboard polling every second does not turn
every read into a write; idle expiry is therefore exact to within that interval.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from contactcentre.store.schema import users, web_sessions
from contactcentre.store.users import User

TOUCH_MS = 60_000
MAX_ID_LENGTH = 100  # a real id is 43 characters; anything much longer is not worth hashing


@dataclass(frozen=True)
class Session:
    user: User
    created_ms: int
    expires_ms: int


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create_session(conn: Connection, user_id: str, now_ms: int, *, max_ms: int, address: str | None = None) -> str:
    """A new session for ``user_id``; returns its id (for the cookie; only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        insert(web_sessions),
        [
            {
                "session_hash": session_hash(session_id),
                "user_id": user_id,
                "created_ms": now_ms,
                "last_seen_ms": now_ms,
                "expires_ms": now_ms + max_ms,
                "address": address[:64] if address else None,
            }
        ],
    )
    return session_id


_LIVE = (
    select(
        web_sessions.c.id,
        web_sessions.c.created_ms,
        web_sessions.c.expires_ms,
        web_sessions.c.last_seen_ms,
        users.c.id.label("user_id"),
        users.c.role,
        users.c.agent_id,
        users.c.display_name,
    )
    .select_from(web_sessions.join(users, users.c.id == web_sessions.c.user_id))
    .where(web_sessions.c.revoked_ms.is_(None), users.c.disabled.is_(False))
)


def find_session(conn: Connection, session_id: str, now_ms: int, idle_ms: int) -> tuple[Session, bool] | None:
    """The live session with this id and whether its ``last_seen_ms`` should be touched, or None."""
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return None
    row = conn.execute(_LIVE.where(web_sessions.c.session_hash == session_hash(session_id))).one_or_none()
    if row is None or now_ms >= row.expires_ms or now_ms >= row.last_seen_ms + idle_ms:
        return None
    session = Session(User(row.user_id, row.role, row.agent_id, row.display_name), row.created_ms, row.expires_ms)
    return session, now_ms - row.last_seen_ms >= TOUCH_MS


def live_sessions(conn: Connection, hashes: Iterable[str], now_ms: int) -> set[str]:
    """Those of the session hashes whose session is live: not revoked, before its absolute expiry, its user
    enabled. Idle expiry is left out: a session's open WebSocket is its user at work, not idle."""
    wanted = list(dict.fromkeys(hashes))
    if not wanted:
        return set()
    rows = conn.execute(
        select(web_sessions.c.session_hash)
        .select_from(web_sessions.join(users, users.c.id == web_sessions.c.user_id))
        .where(
            web_sessions.c.session_hash.in_(wanted),
            web_sessions.c.revoked_ms.is_(None),
            web_sessions.c.expires_ms > now_ms,
            users.c.disabled.is_(False),
        )
    )
    return set(rows.scalars())


def touch_session(conn: Connection, session_id: str, now_ms: int) -> None:
    conn.execute(
        update(web_sessions)
        .where(web_sessions.c.session_hash == session_hash(session_id), web_sessions.c.last_seen_ms < now_ms)
        .values(last_seen_ms=now_ms)
    )


def revoke_session(conn: Connection, session_id: str, now_ms: int) -> str | None:
    """End one session (logout, rotation); returns its user's id if it was live."""
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return None
    h = session_hash(session_id)
    user_id = conn.execute(
        select(web_sessions.c.user_id).where(web_sessions.c.session_hash == h, web_sessions.c.revoked_ms.is_(None))
    ).scalar_one_or_none()
    if user_id is not None:
        conn.execute(update(web_sessions).where(web_sessions.c.session_hash == h).values(revoked_ms=now_ms))
    return user_id


def revoke_user_sessions(conn: Connection, user_id: str, now_ms: int) -> int:
    """End every session of a user (a stolen laptop, a password change); returns how many."""
    done = conn.execute(
        update(web_sessions)
        .where(web_sessions.c.user_id == user_id, web_sessions.c.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
    )
    return done.rowcount


def purge_sessions(conn: Connection, now_ms: int, *, keep_ms: int = 7 * 24 * 3600 * 1000) -> int:
    """Delete sessions that ended more than ``keep_ms`` ago (housekeeping); returns how many."""
    done = conn.execute(
        delete(web_sessions).where(
            (web_sessions.c.expires_ms < now_ms - keep_ms) | (web_sessions.c.revoked_ms < now_ms - keep_ms)
        )
    )
    return done.rowcount


__all__ = [
    "Session",
    "create_session",
    "find_session",
    "live_sessions",
    "purge_sessions",
    "revoke_session",
    "revoke_user_sessions",
    "session_hash",
    "touch_session",
]
