"""One JSON-over-WebSocket layer for the customers' chat (docs/chat-protocol.md), the agents' consoles
(docs/protocol.md) and the supervisors' dashboards (docs/web.md; ``edge/web/live.py``, one frame, no state
machine): frames decoded and checked at the edge in one msgspec call (``codec``), one outbox per
connection (``outbox``), one rate limiter and one table of closes (``policy``). Each protocol's rules are
sans-I/O state machines beside its adapter (``edge/chat/protocol.py``, ``edge/agents/protocol.py``), which the
adapters' socket loops drive."""

from contactcentre.edge.frames.codec import FrameDecoder, FrameError, encode
from contactcentre.edge.frames.outbox import Lazy, Outbox
from contactcentre.edge.frames.policy import Close, Closes, FrameLimiter, Verdict

__all__ = ["Close", "Closes", "FrameDecoder", "FrameError", "FrameLimiter", "Lazy", "Outbox", "Verdict", "encode"]
