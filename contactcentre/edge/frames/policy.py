"""The rules a socket is held to, in one place for both protocols: how fast a client may send (a token bucket,
and how many refused frames end the connection) and every way a connection is closed (code and reason).
Pure bookkeeping: the caller passes the time."""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

from contactcentre.edge.limits import TokenBucket


class Close(NamedTuple):
    """A WebSocket close: code and reason (RFC 6455 leaves 4000-4999 to applications)."""

    code: int
    reason: str


class Closes(enum.Enum):
    """Every close the WebSocket protocols make. The reasons are part of the wire format (docs/chat-protocol.md,
    docs/protocol.md, docs/web.md's dashboard): clients were written from them. The dashboard's share the
    console's wire values (so they are aliases of those members)."""

    CHAT_ENDED = Close(1000, "chat ended")  # chat: the chat is over (after a ``closed`` frame)
    BYE = Close(1000, "bye")  # chat: ``close`` on a socket without a chat
    LOGGED_OUT = Close(1000, "logged out")  # agent: the ack of a logout has been sent
    CHAT_GOING_AWAY = Close(1001, "server going away")
    AGENT_GOING_AWAY = Close(1001, "server shutting down")
    CHAT_RATE_ABUSED = Close(1008, "rate limit exceeded")
    AGENT_RATE_ABUSED = Close(1008, "rate limit")
    REVOKED = Close(1008, "revoked")  # agent: the login that opened the console ended
    INTERNAL = Close(1011, "internal error")
    CHAT_TOO_SLOW = Close(1013, "too slow; resume")
    CHAT_RESUMED_ELSEWHERE = Close(4000, "resumed on another connection")
    AGENT_REPLACED = Close(4000, "replaced")
    AGENT_TOO_SLOW = Close(4001, "too slow: frames not read")
    DASHBOARD_GOING_AWAY = Close(1001, "server shutting down")
    DASHBOARD_TOO_SLOW = Close(4001, "too slow: frames not read")

    @property
    def code(self) -> int:
        return self.value.code

    @property
    def reason(self) -> str:
        return self.value.reason


def refused_login(code: str) -> Close:
    """A login refused or ended (an agent's console, a supervisor's dashboard; also the dashboard's rate limit):
    1008 with the error code as the reason."""
    return Close(1008, code)


class Verdict(enum.Enum):
    ADMIT = "admit"
    REFUSE = "refuse"  # drop the frame (and say so, unless it is one that is dropped quietly)
    CLOSE = "close"  # refused once too often: close the connection


class FrameLimiter:
    """The per-connection rate limit of both protocols: a token bucket (``rate_per_s`` sustained, ``burst`` at
    once) and strikes, the frames it refused. ``max_strikes`` refused within ``strike_window_s`` (or, with no
    window, in a row: an admitted frame forgives them) close the connection."""

    __slots__ = ("bucket", "max_strikes", "strike_window_s", "strikes")

    def __init__(
        self, rate_per_s: float, burst: float, now: float, *, max_strikes: int, strike_window_s: float | None
    ) -> None:
        self.bucket = TokenBucket.new(rate_per_s, float(burst), now)
        self.max_strikes = max_strikes
        self.strike_window_s = strike_window_s
        self.strikes: deque[float] = deque()

    def admit(self, now: float) -> Verdict:
        strikes = self.strikes
        if self.bucket.take(now):
            if self.strike_window_s is None:
                strikes.clear()
            return Verdict.ADMIT
        if self.strike_window_s is not None:
            while strikes and strikes[0] <= now - self.strike_window_s:
                strikes.popleft()
        strikes.append(now)
        return Verdict.CLOSE if len(strikes) >= self.max_strikes else Verdict.REFUSE


__all__ = ["Close", "Closes", "FrameLimiter", "Verdict", "refused_login"]
