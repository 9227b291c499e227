"""The agent console's own queues: how many contacts wait and since when the oldest has waited, in each queue
the agent serves (the ``queues`` frame, docs/protocol.md).

Figures come from the router's public reads (``waiting_contacts``, ``served_queues``), computed once for
every console at most every ``every_s`` seconds after the centre's events changed something, and sent to a
console only when its queues' figures differ from what it was last sent. The frame carries since when the
oldest contact has waited, not for how long, so the console counts the longest wait up itself and nothing is
sent while the queues stand still.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre

QUEUES_EVERY_S = 1.0  # at most one queues frame a second per console: figures a person reads, not a feed

Frame = dict[str, Any]


class QueueFigures:
    """Pushes ``queues`` frames to the consoles ``sessions()`` returns (agent id -> an object with ``push``)."""

    def __init__(self, centre: Centre, sessions: Callable[[], Mapping[str, Any]], every_s: float = QUEUES_EVERY_S):
        self.centre = centre
        self.sessions = sessions
        self.every_s = every_s
        self._welcomed: set[str] = set()  # agents whose console has logged in (their queues are asked each round)
        self._sent: dict[str, list[Frame]] = {}  # agent id -> the figures its console was last sent
        self._timer: asyncio.TimerHandle | None = None

    def welcome(self, agent_id: str) -> None:
        """A console logged in: it gets its queues' figures with the next round (within ``every_s``)."""
        self._welcomed.add(agent_id)
        self._sent.pop(agent_id, None)
        self.changed()

    def changed(self) -> None:
        """The centre's events may have changed who waits: one round after ``every_s``, however many come."""
        if self._timer is None and self.sessions():
            self._timer = self.centre.loop.call_later(self.every_s, self._round)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _round(self) -> None:
        self._timer = None
        sessions = self.sessions()
        for gone in self._sent.keys() - sessions.keys():
            self._sent.pop(gone, None)
            self._welcomed.discard(gone)
        if not sessions:
            return
        figures = self._figures()
        router = self.centre.router
        for agent_id, s in sessions.items():
            if agent_id not in self._welcomed:
                continue
            # Asked each round: a skills change (the dashboard, /admin) changes the queues an agent serves.
            queues = router.served_queues(agent_id)
            rows = [figures.get(q) or {"queue": q, "waiting": 0, "oldest_since_ms": None} for q in queues]
            if self._sent.get(agent_id) != rows:
                self._sent[agent_id] = rows
                s.push({"type": "queues", "queues": rows})

    def _figures(self) -> dict[str, Frame]:
        """Per queue with someone waiting: how many, and since when the oldest has waited."""
        out: dict[str, Frame] = {}
        for (queue, _channel), w in self.centre.router.waiting_counts().items():
            row = out.get(queue)
            if row is None:
                out[queue] = {"queue": queue, "waiting": w.count, "oldest_since_ms": w.oldest_since_ms}
            else:
                row["waiting"] += w.count
                row["oldest_since_ms"] = min(row["oldest_since_ms"], w.oldest_since_ms)
        return out
