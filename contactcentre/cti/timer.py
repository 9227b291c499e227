"""One ``callLater`` for a sans-I/O object's next deadline.

The switch, the SIP UAS and the IVR sessions keep their timers as data (``next_deadline()``); the adapter that
drives one of them on a reactor keeps exactly one delayed call armed for the earliest deadline and re-arms it
after every step. This is that delayed call, shared so that the three adapters cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class DeadlineTimer:
    """``arm(deadline)`` after each step; ``on_due(due)`` runs once the deadline it was armed for comes."""

    def __init__(self, clock: IReactorTime, now_ms: Callable[[], int], on_due: Callable[[int], None]) -> None:
        self.clock = clock
        self.now_ms = now_ms
        self.on_due = on_due
        self._call: IDelayedCall | None = None
        self._armed_for: int | None = None

    @property
    def armed_for(self) -> int | None:
        """The deadline the one armed ``callLater`` is for (``None``: nothing armed)."""
        return self._armed_for

    def arm(self, deadline: int | None) -> None:
        if deadline == self._armed_for and (deadline is None or self._call is not None):
            return
        self.cancel()
        self._armed_for = deadline
        if deadline is not None:
            delay = max(0, deadline - self.now_ms()) / 1000
            self._call = self.clock.callLater(delay, self._fire)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._armed_for = None

    def _fire(self) -> None:
        due = self._armed_for
        self._call = None
        self._armed_for = None
        assert due is not None
        self.on_due(due)
