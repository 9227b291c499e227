"""Signals: what one adapter tells another that is not kept — a customer typing, an agent typing, a
customer's chat socket gone or back.

They are not events: nothing logs, replays or counts them, and a lost one costs an indicator on a screen for a
few seconds. Sending them through the router and the store would cost a logged row and a round trip through
the router per keystroke burst, for nothing anyone reads later. So they go beside the event stream: an adapter
calls ``centre.signal(...)`` and every adapter that listens (``centre.on_signal``) gets it — in one process at
once; on an edge node the centre also sends it to the other nodes (the customer's socket and the agent's
console may be served by different nodes), which hand it to their own listeners, and nothing keeps it.

Each listener ignores what is not for it: the chat channel shows an agent's typing to a chat whose session it
holds, the agent gateway shows a customer's typing or presence to the console of the agent handling the
contact, if that console is here.
"""

from __future__ import annotations

import msgspec


class Signal(msgspec.Struct, tag_field="signal", frozen=True, omit_defaults=True):
    """Base of the signals: all are about one contact."""

    contact_id: str


class CustomerTyping(Signal, tag="customer.typing"):
    """The customer of a chat is typing (to ``agent_id``, who handles it)."""

    agent_id: str


class AgentTyping(Signal, tag="agent.typing"):
    """The agent handling a contact is typing to its customer."""

    agent_id: str


class CustomerPresence(Signal, tag="customer.presence"):
    """The customer's socket went away (``connected`` false) or came back; ``agent_id`` handles the contact.
    ``node``: the edge holding the socket (a centre of many nodes), so that the others know whose death takes
    the customer with it (``EdgeCentre.watch_edges``)."""

    agent_id: str | None = None
    connected: bool = True
    node: str | None = None


AnySignal = CustomerTyping | AgentTyping | CustomerPresence  # the tagged union, for msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnySignal)


def encode_signal(signal: Signal) -> bytes:
    return _encoder.encode(signal)


def decode_signal(data: bytes | str) -> Signal:
    return _decoder.decode(data)


__all__ = [
    "AgentTyping",
    "AnySignal",
    "CustomerPresence",
    "CustomerTyping",
    "Signal",
    "decode_signal",
    "encode_signal",
]
