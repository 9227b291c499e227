"""``SwitchDriver``: runs the pure ``Switch`` on a Twisted clock, the way ``RouterDriver`` runs the router.

It stamps operations with the clock's time, hands the events they caused to every subscriber (the CTI link's
connections, later the runtime's ACD bridge) and keeps exactly one ``callLater`` armed for the switch's next
deadline. The clock is any ``IReactorTime``: the reactor in the server, ``twisted.internet.task.Clock`` in
tests. Nothing here imports the global reactor.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from contactcentre.deadlines import DeadlineTimer, on_reactor
from contactcentre.telephony.events import SwitchEvent
from contactcentre.telephony.switch import Switch, SwitchError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

log = logging.getLogger(__name__)

Subscriber = Callable[[list[SwitchEvent]], None]


class SwitchDriver:
    """Drives a ``Switch`` on a Twisted clock.

    ``run(op)`` calls ``op(now_ms)`` (a switch operation), dispatches the events and returns them; a refusal
    (``SwitchError``) is raised after the timer events it carries have been dispatched. Subscribers may run
    operations from their callback (an ACD bridge deflecting a call the moment it is queued): the events of
    such a nested operation reach every subscriber after the batch being dispatched, so all see one order.

    ``now_ms`` defaults to the clock's seconds in milliseconds; the server passes the centre's clock.
    """

    def __init__(self, switch: Switch, clock: IReactorTime, *, now_ms: Callable[[], int] | None = None) -> None:
        self.switch = switch
        self.clock = clock
        self._now_ms = now_ms
        self.subscribers: list[Subscriber] = []
        self.closed = False
        self._timer = DeadlineTimer(on_reactor(clock, self.now_ms), self._on_deadline)
        self._outbox: deque[list[SwitchEvent]] = deque()
        self._dispatching = False

    def now_ms(self) -> int:
        now = self._now_ms() if self._now_ms is not None else round(self.clock.seconds() * 1000)
        return max(now, self.switch.now_ms)  # a float clock a rounding error short must not go back

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(events)`` with every batch of switch events; returns an unsubscribe function."""
        self.subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

        return unsubscribe

    def run(self, op: Callable[[int], list[SwitchEvent]]) -> list[SwitchEvent]:
        """Apply one switch operation now: ``driver.run(lambda now: switch.answer(call_id, device, now))``."""
        if self.closed:
            raise SwitchError("closed", "the switch is shut down")
        try:
            out = op(self.now_ms())
        except SwitchError as exc:
            self._publish(exc.fired)
            raise
        self._publish(out)
        return out

    def simulate_inbound(self, ani: str, dnis: str, attached: Mapping[str, str] | None = None) -> str:
        """The trunk side: a call from ``ani`` to ``dnis`` arrives now. Returns its call id."""
        events = self.run(lambda now: self.switch.inbound(ani, dnis, now, attached))
        return events[-1].call_id

    def _publish(self, events: list[SwitchEvent]) -> None:
        if events:
            self._outbox.append(events)
        if self._dispatching:
            return  # a subscriber's nested operation: the outer loop delivers it after the current batch
        self._dispatching = True
        try:
            while self._outbox:
                batch = self._outbox.popleft()
                for fn in list(self.subscribers):
                    try:
                        fn(batch)
                    except Exception:
                        log.exception("switch subscriber %r failed", fn)
        finally:
            self._dispatching = False
            self._rearm()

    def _on_deadline(self, due: int) -> None:
        if not self.closed:
            self._publish(self.switch.advance(max(self.now_ms(), due)))

    def _rearm(self) -> None:
        """Keep exactly one ``callLater`` armed, for the switch's next deadline."""
        if not self.closed:
            self._timer.arm(self.switch.next_deadline())

    @property
    def armed_for(self) -> int | None:
        """The deadline the one armed ``callLater`` is for (``None``: nothing armed)."""
        return self._timer.armed_for

    def close(self) -> None:
        self.closed = True
        self._timer.cancel()
