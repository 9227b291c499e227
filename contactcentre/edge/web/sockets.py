"""The open WebSockets each credential opened (agent consoles, supervisors' dashboards), so that ending the
credential ends them at once: a disabled user, a logged-out or revoked session, a revoked token must not keep
working through a socket that was opened while they were good.

A socket is registered with its user and the credential that opened it (the SHA-256 of its web session or of
its API token, as the store keeps them) and a ``close(why)`` of its adapter, which sends an ``error`` frame
(``revoked``) and closes with 1008. The server's own paths end credentials directly: ``end_session`` (logout,
a login replacing the browser's old session), ``end_user`` (``/admin`` disabling a user). A change made in
another process (``contactcentre user disable``, a token revoked in the database) is found by ``recheck``:
one store read for every open socket's credential, every ``[server.auth] socket_recheck_s``, on one timer armed
only while a socket is open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contactcentre.store.sessions import live_sessions, session_hash
from contactcentre.store.users import live_tokens, token_hash

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre

log = logging.getLogger(__name__)

Close = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class _Open:
    user_id: str
    session: str | None  # SHA-256 of the web session that opened it, or None
    token: str | None  # SHA-256 of the API token that opened it, or None
    close: Close


class LiveSockets:
    """Open sockets by credential. ``now_ms``: the clock sessions expire on (WebAuth's)."""

    def __init__(self, centre: Centre, recheck_s: float, now_ms: Callable[[], int]) -> None:
        self.centre = centre
        self.recheck_s = recheck_s
        self.now_ms = now_ms
        self.on_user_ended: list[Callable[[str], None]] = []  # e.g. the REST API forgets its cached tokens
        self._open: set[_Open] = set()
        # Logins ended here lately (loop time): a socket whose login was checked before one of these ended, and
        # which registers only after, is closed at once instead of at the next recheck.
        self._ended_users: dict[str, float] = {}
        self._ended_sessions: dict[str, float] = {}
        self._ended_user_sessions: dict[str, float] = {}  # a password reset: the user's sessions, not its tokens
        self._timer: asyncio.TimerHandle | None = None
        self._checking: asyncio.Task[int] | None = None

    def checking(self) -> float:
        """Call before checking a socket's login; pass the result to ``add`` as ``checked_at``."""
        return self.centre.loop.time()

    def add(
        self,
        user_id: str,
        close: Close,
        *,
        session_id: str | None = None,
        token: str | None = None,
        checked_at: float | None = None,
    ) -> Callable[[], None]:
        """Register a socket opened by ``session_id`` or ``token``; returns what unregisters it (call it when
        the socket ends for any reason). ``checked_at`` (``checking()``, taken before the login was checked):
        a login ended here while the check awaited the store closes the socket at once, not at the recheck."""
        entry = _Open(
            user_id,
            session_hash(session_id) if session_id else None,
            token_hash(token) if token else None,
            close,
        )
        if checked_at is not None and self._ended_since(entry, checked_at):
            self.centre.loop.call_soon(self._end, [entry], "your login was ended while this connection opened")
        self._open.add(entry)
        self._arm()
        return lambda: self._open.discard(entry)

    def _ended_since(self, entry: _Open, checked_at: float) -> bool:
        horizon = self.centre.loop.time() - 2 * self.recheck_s  # older ones are the recheck's
        for ended in (self._ended_users, self._ended_sessions, self._ended_user_sessions):
            for key in [k for k, at in ended.items() if at < horizon]:
                del ended[key]
        times = [self._ended_users.get(entry.user_id)]
        if entry.session is not None:
            times += [self._ended_sessions.get(entry.session), self._ended_user_sessions.get(entry.user_id)]
        return any(at is not None and at >= checked_at for at in times)

    def end_user(self, user_id: str, why: str) -> int:
        """Close every socket of ``user_id`` (disabled), whatever opened it; returns how many."""
        for fn in self.on_user_ended:
            fn(user_id)
        self._ended_users[user_id] = self.centre.loop.time()
        return self._end([o for o in self._open if o.user_id == user_id], why)

    def end_user_sessions(self, user_id: str, why: str) -> int:
        """Close the sockets ``user_id``'s web sessions opened (a password reset ends the sessions; the user's
        API tokens, and the sockets they opened, stay); returns how many."""
        self._ended_user_sessions[user_id] = self.centre.loop.time()
        return self._end([o for o in self._open if o.user_id == user_id and o.session is not None], why)

    def end_session(self, session_id: str, why: str) -> int:
        """Close the sockets that web session opened (logged out, replaced); returns how many."""
        h = session_hash(session_id)
        self._ended_sessions[h] = self.centre.loop.time()
        return self._end([o for o in self._open if o.session == h], why)

    async def recheck(self) -> int:
        """Close the sockets whose credential has ended meanwhile (outside this server too); returns how many."""
        if not self._open:
            return 0
        entries = list(self._open)
        sessions = [o.session for o in entries if o.session is not None]
        tokens = [o.token for o in entries if o.token is not None]
        now = self.now_ms()
        live = await self.centre.read(live_sessions, sessions, now) if sessions else set()
        if tokens:
            live |= await self.centre.read(live_tokens, tokens)
        gone = [o for o in entries if o in self._open and (o.session or o.token) not in live]
        return self._end(gone, "your login was ended (user disabled, logged out, token revoked or session expired)")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._checking is not None:
            self._checking.cancel()

    def _end(self, entries: list[_Open], why: str) -> int:
        for o in entries:
            self._open.discard(o)
            try:
                o.close(why)
            except Exception:  # one adapter's failure must not keep the others' sockets open
                log.exception("closing a socket of %s failed", o.user_id)
        if entries:
            log.info("closed %d socket(s): %s", len(entries), why)
        return len(entries)

    def _arm(self) -> None:
        if self._timer is None and self._checking is None:
            self._timer = self.centre.loop.call_later(self.recheck_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._open:
            return  # armed again by the next socket
        self._checking = self.centre.loop.create_task(self.recheck())
        self._checking.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Task[int]) -> None:
        self._checking = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("checking the open sockets' logins failed; trying again", exc_info=task.exception())
        if self._open and not task.cancelled():
            self._arm()


__all__ = ["LiveSockets"]
