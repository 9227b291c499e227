"""Timers as data: a heap of deadlines that the caller drives with ``next_deadline()`` and ``advance()``.

Nothing here sleeps or polls. Cancelling marks a timer dead; dead timers are dropped when they reach the top.
Timers due at the same instant fire in the order they were set, so runs are deterministic.
"""

from __future__ import annotations

import heapq
from typing import Any

# Timer kinds, in the words of the domain.
OFFER_EXPIRY = "offer_expiry"
SLA_WARN = "sla_warn"
SLA_BREACH = "sla_breach"
OVERFLOW_STEP = "overflow_step"
MAX_WAIT = "max_wait"
PREFERRED_END = "preferred_end"
REOFFER = "reoffer"
WRAP_UP_END = "wrap_up_end"
CALLBACK_DUE = "callback_due"


class Timer:
    __slots__ = ("cancelled", "due_ms", "kind", "seq", "target")

    def __init__(self, due_ms: int, seq: int, kind: str, target: Any) -> None:
        self.due_ms = due_ms
        self.seq = seq
        self.kind = kind
        self.target = target
        self.cancelled = False

    def __repr__(self) -> str:
        return f"Timer({self.kind}@{self.due_ms}{' cancelled' if self.cancelled else ''})"


class TimerHeap:
    """The heap holds ``(due_ms, seq, timer)``: tuples compare in C, and ``seq`` is unique, so the timer
    itself is never compared (a ``Timer.__lt__`` in Python cost a call per comparison, several per push)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Timer]] = []
        self._seq = 0
        self.live = 0

    def set(self, due_ms: int, kind: str, target: Any) -> Timer:
        self._seq += 1
        t = Timer(due_ms, self._seq, kind, target)
        heapq.heappush(self._heap, (due_ms, self._seq, t))
        self.live += 1
        return t

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None and not timer.cancelled:
            timer.cancelled = True
            self.live -= 1

    def next_due(self) -> int | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def peek_due(self) -> int | None:
        """The top of the heap's deadline, cancelled or not: a cheap lower bound for ``next_due``."""
        heap = self._heap
        return heap[0][0] if heap else None

    def pop_due(self, now_ms: int) -> Timer | None:
        """The earliest live timer due at or before ``now_ms``, removed; ``None`` if none is due."""
        heap = self._heap
        while heap:
            due, _, top = heap[0]
            if top.cancelled:
                heapq.heappop(heap)
                continue
            if due > now_ms:
                return None
            heapq.heappop(heap)
            top.cancelled = True  # fired: cancelling it later is a no-op
            self.live -= 1
            return top
        return None

    def pending(self) -> list[Timer]:
        """Every live timer, in no particular order (for tests and checks)."""
        return [t for _, _, t in self._heap if not t.cancelled]

    def __len__(self) -> int:
        return self.live
