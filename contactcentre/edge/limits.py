"""Per-client caps shared by the front doors (``[server.limits]``, ``LimitsConfig`` in ``config.py``): a token
bucket, the same per address, a count of open connections per address, the decoding of a client's JSON frame
that survives any depth, and a connection cap for a plain asyncio port (``capped``). Apart from that last one,
pure bookkeeping: the caller passes the time and says what to refuse."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

# Buckets of addresses that have gone quiet are dropped once this many are kept, so a spread of addresses
# cannot grow the table without bound.
MAX_TRACKED_ADDRESSES = 10_000


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names (an IPv4-mapped IPv6 address as its IPv4 address), or None if it names none."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical_ip(host: str) -> str:
    """One spelling per address (``2001:DB8:0::9`` is ``2001:db8::9``; ``::ffff:192.0.2.9`` is ``192.0.2.9``),
    so that a configured address matches the peer however either is written; not an address: as it is."""
    ip = _ip(host)
    return host if ip is None else str(ip)


@functools.lru_cache(maxsize=MAX_TRACKED_ADDRESSES)  # parsed once per peer, not at each connect, hello and close
def address_key(host: str) -> str:
    """The unit the caps count by: an IPv4 address, or an IPv6 address's /64 network, since one subscriber
    is given a whole /64 and could otherwise take a fresh address for every connection."""
    ip = _ip(host)
    if ip is None:
        return host  # not an IP address (a Unix socket, a test double): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class TokenBucket:
    """``rate`` takes a second on average, ``burst`` at once; ``tokens`` and ``at`` are its state. Time is
    whatever the caller passes in (seconds, any origin), so tests drive it with a fake clock. The one rate
    limit of the front doors: both WebSocket protocols' frames (``edge.frames.FrameLimiter``), chat hellos per
    address, SIP INVITEs per source."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def new(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket that starts full."""
        return cls(rate, burst, burst, now)

    def level(self, now: float) -> float:
        """The tokens there would be at ``now`` (without taking one)."""
        return min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)

    def is_full(self, now: float) -> bool:
        """As good as new: forgetting this bucket and making a new one later changes nothing."""
        return self.level(now) >= self.burst

    def take(self, now: float) -> bool:
        self.tokens = self.level(now)
        self.at = max(self.at, now)  # a clock that steps back never mints tokens
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class AddressBuckets:
    """One token bucket per address, e.g. chat hellos: ``take(address, now)`` is False when that address has
    used up its burst and not yet earned another."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, address: str, now: float) -> bool:
        key = address_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_ADDRESSES:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket.new(self.rate, self.burst, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        # A full bucket is what a new address gets anyway: forgetting it changes nothing.
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
        # Still too many (a spread of addresses, all busy): the oldest go, so memory stays bounded.
        while len(self._buckets) >= MAX_TRACKED_ADDRESSES:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class PeerCount:
    """Open connections per address on one port: ``acquire`` is False (and counts nothing) when the address
    already has ``limit`` open; every successful ``acquire`` is matched by one ``release``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        key = address_key(address)
        n = self._open.get(key, 0)
        if n >= self.limit:
            return False
        self._open[key] = n + 1
        return True

    def release(self, address: str) -> None:
        key = address_key(address)
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)

    def open(self, address: str) -> int:
        return self._open.get(address_key(address), 0)


_decode = msgspec.json.Decoder().decode


def decode_json(raw: str | bytes) -> Any:
    """A client's JSON frame. JSON nested deeper than the decoder's stack (``[[[[…``, 100,000 deep) raises
    ``RecursionError``, which is the client's malformed input, not a bug: it becomes ``msgspec.DecodeError``
    like any other bad JSON, for the front door to answer as such."""
    try:
        return _decode(raw)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None


TOO_MANY_CONNECTIONS = "too many connections from your address; close some and try again"


class _CappedProtocol(asyncio.Protocol):
    """Stands in front of an asyncio protocol: a connection within its address's cap is handed to a protocol
    made for it, one over the cap gets ``refusal`` and is closed before any protocol is made for it."""

    def __init__(self, factory: Callable[[], Any], peers: PeerCount, refusal: bytes) -> None:
        self._factory = factory
        self._peers = peers
        self._refusal = refusal
        self._host = ""
        self._inner: Any = None

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self._host = str(peer[0]) if peer else ""
        if not self._peers.acquire(self._host):
            transport.write(self._refusal)
            transport.close()
            return
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._peers.release(self._host)
            self._inner.connection_lost(exc)


def capped(factory: Callable[[], Any], limit: int, refusal: bytes) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` that allows at most ``limit`` open connections per
    address; one more is sent ``refusal`` and closed."""
    peers = PeerCount(limit)
    return lambda: _CappedProtocol(factory, peers, refusal)


__all__ = [
    "TOO_MANY_CONNECTIONS",
    "AddressBuckets",
    "PeerCount",
    "TokenBucket",
    "address_key",
    "canonical_ip",
    "capped",
    "decode_json",
]
