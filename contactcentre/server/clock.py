"""Clocks: where "now" comes from, in integer epoch milliseconds.

The router never reads a clock; whoever feeds it does, through this protocol. The live runtime uses a
``LoopClock`` (the asyncio loop's monotonic time, anchored once to wall time, so it never jumps when the
system clock is adjusted); tests use a ``ManualClock`` they move by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now_ms(self) -> int:
        """The current time in milliseconds since the Unix epoch; never decreases."""
        ...


class LoopClock:
    """Epoch milliseconds derived from ``loop.time()``.

    The wall-clock anchor is taken once, at construction; after that the clock follows the loop's monotonic
    time, so it agrees with ``loop.call_at`` and cannot go backwards.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, not_before_ms: int | None = None, start_ms: int | None = None
    ) -> None:
        self.loop = loop
        self._anchor_loop = loop.time()
        # start_ms: a demo that pretends to run at another hour (``demo --at``); a server runs on wall time.
        self._anchor_ms = time.time_ns() // 1_000_000 if start_ms is None else start_ms
        if not_before_ms is not None and not_before_ms > self._anchor_ms:
            self._anchor_ms = not_before_ms  # never behind a restored log: the router refuses time going back

    def now_ms(self) -> int:
        return self._anchor_ms + int((self.loop.time() - self._anchor_loop) * 1000)

    def loop_time(self, at_ms: int) -> float:
        """The ``loop.time()`` value at which ``now_ms()`` reaches ``at_ms`` (plus half a millisecond, so
        a callback armed with ``loop.call_at`` for it does not see a clock a rounding error short)."""
        return self._anchor_loop + (at_ms - self._anchor_ms + 0.5) / 1000


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += ms
        return self._now

    def set(self, at_ms: int) -> None:
        if at_ms < self._now:
            raise ValueError(f"a clock cannot go backwards ({at_ms} < {self._now})")
        self._now = at_ms


def centre_time(at_ms: int, timezone: str) -> str:
    """An instant as people at the centre read it: its date and time in the centre's zone, the zone named
    (``2026-12-07 14:05 CET``). The CLI prints times this way, as the pages do (``edge/web/static/centre-time.js``)."""
    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(timezone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
