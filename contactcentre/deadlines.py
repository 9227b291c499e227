"""The one deadline driver: exactly one delayed call armed for a sans-I/O object's next deadline.

The router, the switch, the SIP UAS and the IVR sessions keep their timers as data (``next_deadline()``);
whoever drives one of them live keeps one delayed call armed for the earliest deadline and re-arms it after
every step. This class is that delayed call, for all of them, so the drivers cannot drift apart. Where the
call is scheduled is the only difference, and it is passed in:

* ``on_reactor(clock, now_ms)`` — a Twisted ``IReactorTime`` (the asyncio reactor live, ``task.Clock`` in
  tests): the switch, SIP and the IVR;
* ``on_loop(loop, clock)`` — the asyncio loop's ``call_at``, at the loop instant the centre's clock maps the
  deadline to (``LoopClock.loop_time``), so the router's timers fire when the clock reads their deadline
  rather than a rounding later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime


class Handle(Protocol):
    def cancel(self) -> None: ...


#: schedule(deadline_ms, fire) -> a handle whose ``cancel()`` stops ``fire`` from running
Schedule = Callable[[int, Callable[[], None]], Handle]


def on_reactor(clock: IReactorTime, now_ms: Callable[[], int]) -> Schedule:
    def schedule(deadline: int, fire: Callable[[], None]) -> Handle:
        return clock.callLater(max(0, deadline - now_ms()) / 1000, fire)

    return schedule


def on_loop(loop: asyncio.AbstractEventLoop, clock: object) -> Schedule:
    def schedule(deadline: int, fire: Callable[[], None]) -> Handle:
        loop_time = getattr(clock, "loop_time", None)
        if loop_time is not None:
            return loop.call_at(loop_time(deadline), fire)
        # any other clock: measure the distance from now
        return loop.call_at(loop.time() + max(0, deadline - clock.now_ms()) / 1000, fire)  # type: ignore[attr-defined]

    return schedule


class DeadlineTimer:
    """``arm(deadline)`` after each step; ``on_due(due)`` runs once the deadline it was armed for comes."""

    def __init__(self, schedule: Schedule, on_due: Callable[[int], None]) -> None:
        self.schedule = schedule
        self.on_due = on_due
        self._call: Handle | None = None
        self._armed_for: int | None = None

    @property
    def armed_for(self) -> int | None:
        """The deadline the one armed call is for (``None``: nothing armed)."""
        return self._armed_for

    def arm(self, deadline: int | None) -> None:
        if deadline == self._armed_for and (deadline is None or self._call is not None):
            return
        self.cancel()
        self._armed_for = deadline
        if deadline is not None:
            self._call = self.schedule(deadline, self._fire)

    def cancel(self) -> None:
        if self._call is not None:
            # a Twisted DelayedCall that already ran refuses cancel(); an asyncio handle does not mind
            active = getattr(self._call, "active", None)
            if active is None or active():
                self._call.cancel()
        self._call = None
        self._armed_for = None

    def _fire(self) -> None:
        due = self._armed_for
        self._call = None
        self._armed_for = None
        assert due is not None
        self.on_due(due)
