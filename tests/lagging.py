"""A centre whose router lags its adapters, as an edge node's replica does: for testing adapters in one process
against what they meet on an edge.

An edge node sends its inputs to the active router and learns what the router did only when the output comes
back; ``await centre.commit()`` returns once it has. ``lagging(centre)`` gives a ``Centre`` the same shape:

* ``submit`` answers at once only with the router's dry-run refusal (``router.check``, while none of this
  centre's own inputs is still on its way: a later input may depend on an earlier one), and otherwise hands the
  input over on a later step of the loop — reads of the router right after it see the state before it;
* ``publish`` and ``stage`` go the same way, in order, a ``with atomic():`` block as one group;
* a staged store op crosses a "wire": it is encoded when it leaves (``encode_op``, which seals an op that
  gathers) and the writer runs the decoded copy, so an adapter's own object is never run here;
* ``commit`` hands everything over first, so subscribers have seen the router's answer when it returns.

Everything else is the real centre (one router, one writer), so the adapters' behaviour can be checked end to
end with the same assertions as in one process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from contactcentre.events import Event
from contactcentre.server.centre import Centre
from contactcentre.store.ops import StoreOp, decode_op, encode_op

log = logging.getLogger(__name__)


class LaggingCentre(Centre):
    _groups: list[list[tuple[str, Any]]]
    _depth: int
    _armed: bool
    sent: int  # records handed over (for tests that count them)

    def _queue(self, kind: str, item: Any) -> None:
        if self._depth and self._groups:
            self._groups[-1].append((kind, item))
        else:
            self._groups.append([(kind, item)])
        if not self._armed:
            self._armed = True
            self.loop.call_soon(self._hand_over)

    def submit(self, event: Event) -> Any:
        if self.driver.closed:
            return None
        if not self._groups:  # the replica is as far as this node's own inputs: its answer stands
            refusal = self.router.check(event)
            if refusal is not None:
                log.info("refused %s: %s", type(event).__name__, refusal)
                return refusal
        self._queue("submit", event)
        return None

    def publish(self, events: Iterable[Event]) -> None:
        events = list(events)
        if events and not self.driver.closed:
            self._queue("publish", events)

    def stage(self, work: Any) -> None:
        assert isinstance(work, StoreOp), f"only store ops cross the wire, not {work!r}"
        if self.writer._closing:  # what the writer's own stage raises: an edge refuses what it can send no more
            raise RuntimeError("the store writer is closed")
        self._queue("stage", work)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        if self._depth == 0:
            self._groups.append([])
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._groups and not self._groups[-1]:
                self._groups.pop()

    def _hand_over(self) -> None:
        """What the router does when the records arrive: each group applied in one transaction of its writer."""
        self._armed = False
        if self._depth:  # inside an atomic block (it cannot await): once it is over
            self._armed = True
            self.loop.call_soon(self._hand_over)
            return
        groups, self._groups = self._groups, []
        for group in groups:
            with self.writer.atomic():
                for kind, item in group:
                    self.sent += 1
                    if kind == "submit":
                        self.driver.submit(item)
                    elif kind == "publish":
                        self.driver.publish(item)
                    else:
                        self.writer.stage(decode_op(encode_op(item)))

    async def commit(self, upto: int | None = None) -> None:
        self._hand_over()
        await super().commit()

    def log_position(self) -> int:
        return self.writer.appended + sum(len(g) for g in self._groups)


def lagging(centre: Centre) -> LaggingCentre:
    """The same centre, its router now lagging its adapters (build the adapters after this)."""
    centre.__class__ = LaggingCentre
    assert isinstance(centre, LaggingCentre)
    centre._groups, centre._depth, centre._armed, centre.sent = [], 0, False, 0
    return centre
