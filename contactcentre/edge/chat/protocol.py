"""The customer chat protocol (docs/chat-protocol.md) without the socket: its frames as msgspec Structs, and
its rules as two small state machines that take decoded frames, router events and the time, and say what to
send, what to do and when to close. ``contactcentre.edge.chat.channel`` is the I/O around them (the socket, the
store, the router).

* ``ChatConnection`` is one socket: the rate limit, which frame a socket may send in which state (a second
  ``hello``, a ``message`` before any chat), errors in the protocol's shape (``_FRAME_RULES``).
* ``session_step`` is one chat's life as the customer sees it: the router's events move it between
  ``waiting``, ``with_agent`` and ``closed`` and say which frame tells the customer (``TRANSITIONS``).
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from contactcentre.edge.frames.codec import FrameDecoder, FrameError
from contactcentre.edge.frames.policy import Close, Closes, FrameLimiter, Verdict
from contactcentre.events import (
    ContactAbandoned,
    ContactClosed,
    ContactConnected,
    ContactOverflowed,
    ContactQueued,
    ContactTransferred,
    WrapUpStarted,
    clean_text,
)

MAX_TEXT = 4000  # characters in one chat line, either way
MAX_NAME = 200
MAX_EMAIL = 320
MAX_TOPIC = 500
MAX_ID = 200  # client ids, tokens, message ids
RATE_WINDOW_S = 10.0  # ``max_messages_per_10s``: a burst of that many, then that many per ten seconds
ABUSE_WINDOW_S = 60.0
ABUSE_STRIKES = 10  # frames refused for the rate within a minute before the socket is closed (1008)
MAX_OUTBOX = 500  # frames waiting for a slow socket before it is dropped (the customer can resume)

# Session states, as the customer sees them in ``resumed``.
NEW = "new"  # hello in progress
WAITING = "waiting"
WITH_AGENT = "with_agent"
OFFLINE = "offline"
CLOSED = "closed"

# ------------------------------------------------------------------------------------------ frames in

Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Name = Annotated[str, Meta(max_length=MAX_NAME)]
Email = Annotated[str, Meta(max_length=MAX_EMAIL)]
Topic = Annotated[str, Meta(max_length=MAX_TOPIC)]
Id = Annotated[str, Meta(max_length=MAX_ID)]


def _clean(value: str | None) -> str | None:
    """A client's string as the channel keeps it: no lone surrogate or NUL (they must never reach the store),
    stripped, blank as absent."""
    if value is None:
        return None
    return clean_text(value).strip() or None


def _required(name: str, value: str) -> str:
    cleaned = _clean(value)
    if cleaned is None:
        raise ValueError(f"{name}: must not be empty")
    return cleaned


class Inbound(Struct, tag_field="type"):
    """A frame a customer sends. Fields they do not know are ignored (clients may be newer)."""


class Hello(Inbound, tag="hello"):
    name: Name | None = None
    email: Email | None = None
    topic: Topic | None = None
    queue: Name | None = None
    text: Text | None = None
    client_id: Id | None = None

    def __post_init__(self) -> None:
        self.name, self.email, self.topic = _clean(self.name), _clean(self.email), _clean(self.topic)
        self.queue, self.text, self.client_id = _clean(self.queue), _clean(self.text), _clean(self.client_id)


class Say(Inbound, tag="message"):
    text: Text
    client_id: Id | None = None

    def __post_init__(self) -> None:
        self.client_id = _clean(self.client_id)
        self.text = _required("text", self.text)


class Typing(Inbound, tag="typing"):
    pass


class Resume(Inbound, tag="resume"):
    token: Id
    last_message_id: Id | None = None

    def __post_init__(self) -> None:
        self.token = _required("token", self.token)
        self.last_message_id = _clean(self.last_message_id)


class Leave(Inbound, tag="close"):
    pass


class Ping(Inbound, tag="ping"):
    pass


Frame = Hello | Say | Typing | Resume | Leave | Ping
decoder: FrameDecoder[Frame] = FrameDecoder(Frame)

# ----------------------------------------------------------------------------------------- frames out


class Outbound(Struct, tag_field="type"):
    """A frame the server sends. ``UNSET`` fields are left out of the frame; None is sent as null."""


class Queued(Outbound, tag="queued"):
    contact_id: str | None
    token: str | UnsetType = UNSET
    case: str | UnsetType | None = UNSET
    position: int | None = None
    ewt_s: int | None = None


class Offline(Outbound, tag="offline"):
    case: str | None
    token: str
    reason: str


class Ack(Outbound, tag="ack"):
    client_id: str | None
    message_id: str
    at_ms: int


class Line(Outbound, tag="message"):
    from_: str = msgspec.field(name="from")
    text: str
    message_id: str
    at_ms: int
    agent: str | UnsetType = UNSET  # an agent's line: their display name


class AgentTyping(Outbound, tag="typing"):
    from_: str = msgspec.field(default="agent", name="from")


class Position(Outbound, tag="position"):
    position: int | None
    ewt_s: int | None


class AgentJoined(Outbound, tag="agent_joined"):
    agent: str


class Transferred(Outbound, tag="transferred"):
    pass


class Closed(Outbound, tag="closed"):
    reason: str | None


class Resumed(Outbound, tag="resumed"):
    state: str
    case: str | None
    contact_id: str | UnsetType = UNSET
    position: int | UnsetType | None = UNSET  # these two when waiting
    ewt_s: int | UnsetType | None = UNSET
    agent: str | UnsetType = UNSET  # when with an agent


class Error(Outbound, tag="error"):
    code: str
    detail: str | UnsetType = UNSET
    client_id: str | UnsetType = UNSET


class Pong(Outbound, tag="pong"):
    pass


PONG = Pong()
AGENT_TYPING = AgentTyping()
TRANSFERRED = Transferred()


def error(code: str, detail: str = "", client_id: str | None = None) -> Error:
    return Error(code, detail or UNSET, UNSET if client_id is None else client_id)


def ewt_s(ewt_ms: int | None) -> int | None:
    return None if ewt_ms is None else round(ewt_ms / 1000)


# ------------------------------------------------------------------------------------ the connection


class Step(NamedTuple):
    """What one frame from the customer comes to: a frame to send at once, a frame for the channel to carry
    out (it needs the store or the router), and a close."""

    reply: Outbound | None = None
    do: Frame | None = None
    close: Close | None = None


_NOTHING = Step()
_CLOSE_ABUSED = Step(close=Closes.CHAT_RATE_ABUSED.value)

# (frame, does the socket have a chat?) -> the error it gets, or None: the channel carries it out. ``typing``
# and ``ping`` are answered here; ``close`` is the channel's whether or not there is a chat.
_FRAME_RULES: dict[tuple[type[Inbound], bool], tuple[str, str] | None] = {
    (Hello, False): None,
    (Hello, True): ("bad_request", "this socket already has a chat"),
    (Say, False): ("no_session", "say hello (or resume) first"),
    (Say, True): None,
    (Resume, False): None,
    (Resume, True): ("bad_request", "this socket already has a chat"),
    (Leave, False): None,
    (Leave, True): None,
}


class ChatConnection:
    """One customer socket's rules: ``receive`` takes a decoded frame, the time and the state of the socket's
    chat (``None``: no chat on this socket yet)."""

    __slots__ = ("limiter", "rate")

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.limiter = FrameLimiter(
            rate / RATE_WINDOW_S, rate, now, max_strikes=ABUSE_STRIKES, strike_window_s=ABUSE_WINDOW_S
        )

    def receive(self, frame: Frame | FrameError, now: float, state: str | None) -> Step:
        kind = type(frame)
        verdict = self.limiter.admit(now)
        if verdict is Verdict.CLOSE:
            return _CLOSE_ABUSED
        if verdict is Verdict.REFUSE:
            if kind is Typing:  # typing is dropped quietly
                return _NOTHING
            detail = f"at most {self.rate} frames in {RATE_WINDOW_S:g} s; dropped"
            # the client id says which line was dropped, so the widget knows what to send again
            client_id = getattr(frame, "client_id", None)
            return Step(error("rate_limited", detail, client_id if isinstance(client_id, str) else None))
        if kind is FrameError:
            assert isinstance(frame, FrameError)
            return Step(error("bad_request", frame.detail, frame.client_id))
        if kind is Ping:
            return Step(PONG)
        if kind is Typing:
            return Step(do=frame) if state == WITH_AGENT else _NOTHING  # nobody to tell otherwise
        assert not isinstance(frame, FrameError)
        refused = _FRAME_RULES[kind, state is not None]
        if refused is not None:
            return Step(error(*refused, getattr(frame, "client_id", None)))
        if kind is Say and state == CLOSED:
            return Step(error("closed", "this chat has ended", frame.client_id))  # type: ignore[union-attr]
        return Step(do=frame)


# --------------------------------------------------------------------------------------- the session

# What a router event is to a chat, as the customer sees it.
QUEUED = "queued"  # (again) in a queue: the hello's answer, or a new place
CONNECTED = "connected"
TRANSFERRED_IN = "transferred"  # passed to another queue or agent: waits again
ENDS = "ends"  # the chat is over (the reason says how)

# What the customer is sent on the way.
SEND_QUEUED = "queued"  # the hello's answer (the channel has its token and case)
SEND_POSITION = "position"
SEND_AGENT_JOINED = "agent_joined"
SEND_TRANSFERRED = "transferred"
SEND_CLOSED = "closed"  # ``closed {reason}``, then close 1000

_LIVE = (NEW, WAITING, WITH_AGENT, OFFLINE)

# (state, what happened) -> (next state, what the customer is sent). A closed chat hears nothing more.
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (NEW, QUEUED): (WAITING, SEND_QUEUED),
    **{(s, QUEUED): (WAITING, SEND_POSITION) for s in (WAITING, WITH_AGENT, OFFLINE)},
    **{(s, CONNECTED): (WITH_AGENT, SEND_AGENT_JOINED) for s in _LIVE},
    **{(s, TRANSFERRED_IN): (WAITING, SEND_TRANSFERRED) for s in _LIVE},
    **{(s, ENDS): (CLOSED, SEND_CLOSED) for s in _LIVE},
}


class Change(NamedTuple):
    """A chat's step on a router event: its next state, what to send (``SEND_*``) and, when it ends, why."""

    state: str
    send: str
    reason: str | None = None


def happened(ev: Any) -> tuple[str, str | None] | None:
    """A router event as the chat sees it (``QUEUED``, ``CONNECTED``, …) and, for an end, its reason; None
    for events that do not move a chat."""
    kind = type(ev)
    if kind is ContactQueued:
        return QUEUED, None
    if kind is ContactConnected:
        return CONNECTED, None
    if kind is ContactTransferred:
        return (ENDS, "transferred") if ev.to_external is not None else (TRANSFERRED_IN, None)
    if kind is WrapUpStarted:
        return ENDS, "ended" if ev.by == "agent" else "customer"
    if kind is ContactAbandoned:
        return ENDS, "abandoned"
    if kind is ContactOverflowed:
        return (ENDS, "overflowed") if ev.left else None
    if kind is ContactClosed:
        return ENDS, "ended"
    return None


def session_step(state: str, ev: Any) -> Change | None:
    """Where a chat in ``state`` goes on router event ``ev``; None: nowhere, nothing is sent."""
    what = happened(ev)
    if what is None:
        return None
    step = TRANSITIONS.get((state, what[0]))
    return None if step is None else Change(step[0], step[1], what[1])


__all__ = [
    "CLOSED",
    "MAX_EMAIL",
    "MAX_ID",
    "MAX_NAME",
    "MAX_OUTBOX",
    "MAX_TEXT",
    "MAX_TOPIC",
    "NEW",
    "OFFLINE",
    "TRANSITIONS",
    "WAITING",
    "WITH_AGENT",
    "ChatConnection",
    "Hello",
    "Leave",
    "Ping",
    "Resume",
    "Say",
    "Step",
    "Typing",
    "decoder",
    "session_step",
]
