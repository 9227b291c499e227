"""A token bucket, the one rate limit the adapters share (agents' frames, SIP INVITEs per source address).

Time is whatever the caller passes in (seconds, any origin), so tests drive it with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` takes a second on average, ``burst`` at once; ``tokens`` and ``at`` are its state."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def level(self, now: float) -> float:
        """The tokens there would be at ``now`` (without taking one)."""
        return min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)

    def take(self, now: float) -> bool:
        self.tokens = self.level(now)
        self.at = max(self.at, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
