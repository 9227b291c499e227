"""One JSON-over-WebSocket layer for the customers' chat (docs/chat-protocol.md) and the agents' consoles
(docs/protocol.md): frames decoded and checked at the edge in one msgspec call (``codec``), one outbox per
connection (``outbox``), one rate limiter and one table of closes (``policy``); and each protocol's rules
as sans-I/O state machines (``chat``, ``agent``) that the adapters' socket loops drive."""

from contactcentre.wsframes.codec import FrameDecoder, FrameError, encode
from contactcentre.wsframes.outbox import Lazy, Outbox
from contactcentre.wsframes.policy import Close, Closes, FrameLimiter, Verdict

__all__ = ["Close", "Closes", "FrameDecoder", "FrameError", "FrameLimiter", "Lazy", "Outbox", "Verdict", "encode"]
