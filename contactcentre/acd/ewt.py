"""Expected wait time (EWT) for a contact entering a queue: a separate, swappable estimator.

The default, ``PositionAht``, is the M/M/c answer for a caller who finds ``k`` contacts ahead of it and ``c``
busy servers: service completions arrive at rate ``c / AHT``, and it is served at the ``(k + 1)``-th, so

    EWT = (k + 1) × AHT / c

* position-aware: ``k`` counts the contacts that will be served first — same requirements, better rank
  (priority and age), so a Gold caller behind nobody is told a short wait while Bronze callers are not;
* staffing-aware: ``c`` is the capacity of the agents logged in, ready and eligible for this contact, busy or
  not (a chat agent with capacity 3 is 3 servers);
* AHT is learned per queue and channel (exponentially weighted, talk + hold + wrap-up), starting from the
  channel's ``default_aht_s``.

The router itself reports 0 when an agent takes the contact at once; the estimator returns ``None`` when
nobody eligible is staffed (the wait is unbounded, not zero). It ignores abandonment ahead (which shortens
waits) and agents already close to finishing (which the exponential assumption averages away); its
calibration is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from contactcentre.events import ContactClosed, Event


class WaitSituation(NamedTuple):
    queue: str
    channel: str
    ahead: int
    servers: int
    priority: int


class WaitEstimator(Protocol):
    name: str

    def estimate(self, s: WaitSituation) -> int | None: ...

    def observe(self, event: Event) -> None: ...


class PositionAht:
    name = "position_aht"

    def __init__(self, default_aht_ms: Mapping[str, int], alpha: float = 0.05) -> None:
        self._default = dict(default_aht_ms)
        self._alpha = alpha
        self._aht: dict[tuple[str, str], float] = {}

    def aht_ms(self, queue: str, channel: str) -> float:
        got = self._aht.get((queue, channel))
        return got if got is not None else float(self._default.get(channel, 180_000))

    def estimate(self, s: WaitSituation) -> int | None:
        if s.servers <= 0:
            return None
        return round((s.ahead + 1) * self.aht_ms(s.queue, s.channel) / s.servers)

    def observe(self, event: Event) -> None:
        if type(event) is ContactClosed:
            handle = event.talk_ms + event.hold_ms + event.wrap_ms
            key = (event.queue, event.channel)
            old = self._aht.get(key)
            self._aht[key] = float(handle) if old is None else old + self._alpha * (handle - old)
