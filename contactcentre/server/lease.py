"""The active router's lease in Redis, and the fencing counter that goes with it.

One key holds the node id of the router that may route: taken with ``SET key node NX PX ttl`` (only if nobody
holds it), kept by renewing it well before it expires (the router node calls ``renew`` every ``ttl/3``;
nothing here sleeps or loops), given up with ``release``. A router that dies stops renewing, the key expires,
and a standby's ``acquire`` succeeds.

The lease alone cannot stop an old leader that was paused (a GC pause, a stopped VM, a partition) from
writing after its lease ran out: that is the fence's job. Each takeover takes a new token from
``next_fence`` (an ``INCR``, so tokens only grow) and stores it in the store (``store.fence.take_fence``),
which then refuses any commit made with an older one.

``renew`` and ``release`` are Lua scripts because each is a read and a write that must be one step: a plain
``GET`` then ``PEXPIRE``/``DEL`` could act on a key that expired in between and was taken by another router,
extending or deleting the successor's lease. Redis runs a script atomically. ``next_fence`` with a floor is
one for the same reason.
"""

from __future__ import annotations

import time
from typing import Any

# Extend the lease only if this node still holds it (else 0: the lease was lost).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Delete the lease only if this node still holds it: never a successor's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """A lease on ``key`` for ``node_id``, over a ``redis.asyncio`` client.

    ``valid_until`` is the ``time.monotonic()`` instant up to which this node may believe it holds the lease:
    the moment the last successful ``acquire``/``renew`` was *sent*, plus ``ttl_ms`` (Redis's clock started no
    earlier), or None when it does not hold it as far as it knows."""

    def __init__(self, redis: Any, key: str, node_id: str, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.redis = redis
        self.key = key
        self.node_id = node_id
        self.ttl_ms = ttl_ms
        self.valid_until: float | None = None
        # register_script sends EVALSHA and loads the script again if the server lost it (a Redis restart).
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (this node included: a holder renews instead)."""
        sent = time.monotonic()
        taken = bool(await self.redis.set(self.key, self.node_id, nx=True, px=self.ttl_ms))
        if taken:
            self.valid_until = sent + self.ttl_ms / 1000
        return taken

    async def renew(self) -> bool:
        """Extend the lease to ``ttl_ms`` from now if this node still holds it; False: it is lost (expired, or
        another node holds it), and this node must stop acting as the holder. A Redis that cannot be reached
        raises (``redis.ConnectionError``, ``TimeoutError``): the caller tries again at its next renewal, and
        stops acting as the holder once ``valid_until`` has passed."""
        sent = time.monotonic()
        kept = bool(await self._renew(keys=[self.key], args=[self.node_id, self.ttl_ms]))
        self.valid_until = sent + self.ttl_ms / 1000 if kept else None
        return kept

    async def release(self) -> None:
        """Give the lease up (a clean shutdown: the standby need not wait for it to expire); a lease another
        node holds by now is left alone."""
        self.valid_until = None
        await self._release(keys=[self.key], args=[self.node_id])

    async def holder(self) -> str | None:
        """The node id holding the lease, or None."""
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


async def next_fence(redis: Any, key: str, above: int = 0) -> int:
    """A fencing token greater than every one handed out before on ``key`` (``INCR``), and than ``above``.

    Pass the token the store holds (``store.fence.fence_holder``) as ``above``: a Redis that lost its data (a
    restart without persistence) starts counting from 1 again, and a token not above the store's would only be
    refused by ``take_fence``."""
    if above <= 0:
        return int(await redis.incr(key))
    return int(await redis.eval(_INCR_ABOVE, 1, key, above))


# INCR, but never to a value at or below ARGV[1]: one step, so two routers taking over at once still get
# different tokens.
_INCR_ABOVE = """
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v <= floor then
    v = floor + 1
    redis.call('SET', KEYS[1], v)
end
return v
"""
