"""The customer chat protocol's rules without a socket (contactcentre/edge/chat/protocol.py): what a frame comes to
in each state of the socket's chat, the chat's transitions on router events, and the frames as clients see
them (docs/chat-protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contactcentre import events as E
from contactcentre.edge.chat.protocol import (
    CLOSED,
    NEW,
    OFFLINE,
    SEND_AGENT_JOINED,
    SEND_CLOSED,
    SEND_POSITION,
    SEND_QUEUED,
    SEND_TRANSFERRED,
    TRANSITIONS,
    WAITING,
    WITH_AGENT,
    Ack,
    AgentJoined,
    ChatConnection,
    Closed,
    Hello,
    Leave,
    Line,
    Offline,
    Ping,
    Position,
    Queued,
    Resume,
    Resumed,
    Say,
    Typing,
    decoder,
    error,
    session_step,
)
from contactcentre.edge.frames import FrameError, encode
from contactcentre.edge.frames.policy import Closes


def wire(frame: Any) -> dict[str, Any]:
    return json.loads(encode(frame))


def frame(raw: dict[str, Any]) -> Any:
    return decoder.decode(json.dumps(raw))


# --------------------------------------------------------------------------------------------- decoding


def test_frames_decode_cleaned_and_blank_fields_are_absent() -> None:
    hello = frame({"type": "hello", "name": "  Ann\x00 ", "email": " ", "queue": None, "text": "hi", "x": 1})
    assert hello == Hello(name="Ann", email=None, queue=None, text="hi")
    assert frame({"type": "message", "text": " a line ", "client_id": "c-1"}) == Say("a line", "c-1")
    assert frame({"type": "resume", "token": "t"}) == Resume("t")
    assert [type(frame({"type": t})) for t in ("typing", "close", "ping")] == [Typing, Leave, Ping]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ({"type": "hello", "name": ["Ann"]}, "name: must be a string"),
        ({"type": "hello", "topic": "x" * 501}, "topic: at most 500 characters"),
        ({"type": "message", "client_id": "c-1"}, "text: required"),
        ({"type": "message", "text": "   "}, "text: must not be empty"),
        ({"type": "message", "text": "x" * 4001}, "text: at most 4000 characters"),
        ({"type": "resume"}, "token: required"),
        ({"type": "dance"}, "type: 'dance' is not a frame of this protocol"),
    ],
)
def test_a_wrong_field_is_one_bad_request_naming_it(raw: dict[str, Any], detail: str) -> None:
    step = ChatConnection(20, 0.0).receive(frame(raw), 0.0, None)
    assert step.reply == error("bad_request", detail, raw.get("client_id"))
    assert step.do is None and step.close is None  # the socket stays


# ----------------------------------------------------------------------------------- the connection

HELLO, SAY, RESUME, LEAVE = Hello(), Say("hi", "c-1"), Resume("t"), Leave()

# (frame, the socket's chat state) -> ("do": the channel carries it out | an error code | "pong" | None)
FRAME_TABLE = [
    (HELLO, None, "do"),
    (HELLO, WAITING, "bad_request"),
    (SAY, None, "no_session"),
    (SAY, NEW, "do"),
    (SAY, WAITING, "do"),
    (SAY, WITH_AGENT, "do"),
    (SAY, OFFLINE, "do"),
    (SAY, CLOSED, "closed"),
    (RESUME, None, "do"),
    (RESUME, WITH_AGENT, "bad_request"),
    (LEAVE, None, "do"),
    (LEAVE, WAITING, "do"),
    (Typing(), WAITING, None),  # nobody to tell yet
    (Typing(), WITH_AGENT, "do"),
    (Ping(), None, "pong"),
    (Ping(), CLOSED, "pong"),
]


@pytest.mark.parametrize(("sent", "state", "outcome"), FRAME_TABLE)
def test_what_a_frame_comes_to_in_each_state(sent: Any, state: str | None, outcome: str | None) -> None:
    step = ChatConnection(20, 0.0).receive(sent, 0.0, state)
    if outcome == "do":
        assert step.do is sent and step.reply is None
    elif outcome == "pong":
        assert wire(step.reply) == {"type": "pong"}
    elif outcome is None:
        assert step == (None, None, None)
    else:
        assert step.do is None and wire(step.reply)["code"] == outcome
        if isinstance(sent, Say):
            assert wire(step.reply)["client_id"] == "c-1"


def test_the_rate_limit_drops_with_an_error_typing_quietly_and_closes_after_ten_refusals() -> None:
    conn = ChatConnection(3, 0.0)
    assert all(conn.receive(SAY, 0.0, WAITING).do is SAY for _ in range(3))
    refused = conn.receive(SAY, 0.1, WAITING)
    assert refused.do is None and wire(refused.reply) == {
        "type": "error",
        "code": "rate_limited",
        "detail": "at most 3 frames in 10 s; dropped",
        "client_id": "c-1",  # which line was dropped: the widget sends it again
    }
    assert conn.receive(Typing(), 0.1, WITH_AGENT) == (None, None, None)  # quietly
    unread = conn.receive(FrameError("json", "not JSON: x"), 0.1, WAITING).reply
    assert wire(unread) == {k: v for k, v in wire(refused.reply).items() if k != "client_id"}
    steps = [conn.receive(SAY, 0.2, WAITING) for _ in range(7)]
    assert [s.close for s in steps] == [None] * 6 + [Closes.CHAT_RATE_ABUSED.value]
    assert Closes.CHAT_RATE_ABUSED.value == (1008, "rate limit exceeded")


def test_the_bucket_refills_at_the_configured_rate() -> None:
    conn = ChatConnection(2, 0.0)
    assert [conn.receive(SAY, 0.0, WAITING).do for _ in range(3)] == [SAY, SAY, None]
    assert conn.receive(SAY, 4.9, WAITING).do is None  # 2 in 10 s: one back after 5 s
    assert conn.receive(SAY, 10.0, WAITING).do is SAY


# -------------------------------------------------------------------------------------- the session

_C = {"at_ms": 1, "contact_id": "c", "queue": "q"}
_CH = {**_C, "channel": "chat"}
EVENTS = {
    "queued": E.ContactQueued(**_CH, priority=1, position=2, ewt_ms=60_000),
    "connected": E.ContactConnected(**_CH, agent_id="a1", wait_ms=5),
    "transferred": E.ContactTransferred(**_C, agent_id="a1", to_queue="q2"),
    "transferred out": E.ContactTransferred(**_C, agent_id="a1", to_external="+44"),
    "ended by agent": E.WrapUpStarted(at_ms=1, contact_id="c", agent_id="a1", ends_ms=2, by="agent"),
    "ended by customer": E.WrapUpStarted(at_ms=1, contact_id="c", agent_id="a1", ends_ms=2, by="customer"),
    "abandoned": E.ContactAbandoned(**_CH, wait_ms=5),
    "overflowed out": E.ContactOverflowed(**_C, step=0, actions=(), left=True),
    "overflowed on": E.ContactOverflowed(**_C, step=0, actions=(), left=False),
    "closed": E.ContactClosed(**_CH, agent_id="a1", wait_ms=5, talk_ms=1, hold_ms=0, wrap_ms=1),
}

# (state, event) -> (next state, what the customer is sent, why it ended) — every row of docs/chat-protocol.md
SESSION_TABLE = [
    (NEW, "queued", WAITING, SEND_QUEUED, None),
    (WAITING, "queued", WAITING, SEND_POSITION, None),
    (WITH_AGENT, "queued", WAITING, SEND_POSITION, None),
    (WAITING, "connected", WITH_AGENT, SEND_AGENT_JOINED, None),
    (WITH_AGENT, "transferred", WAITING, SEND_TRANSFERRED, None),
    (WITH_AGENT, "transferred out", CLOSED, SEND_CLOSED, "transferred"),
    (WITH_AGENT, "ended by agent", CLOSED, SEND_CLOSED, "ended"),
    (WITH_AGENT, "ended by customer", CLOSED, SEND_CLOSED, "customer"),
    (WAITING, "abandoned", CLOSED, SEND_CLOSED, "abandoned"),
    (WAITING, "overflowed out", CLOSED, SEND_CLOSED, "overflowed"),
    (WITH_AGENT, "closed", CLOSED, SEND_CLOSED, "ended"),
]


@pytest.mark.parametrize(("state", "event", "after", "send", "reason"), SESSION_TABLE)
def test_a_chat_moves_on_router_events(state: str, event: str, after: str, send: str, reason: str | None) -> None:
    change = session_step(state, EVENTS[event])
    assert change is not None and (change.state, change.send, change.reason) == (after, send, reason)


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_a_closed_chat_hears_nothing_more(event: str) -> None:
    assert session_step(CLOSED, EVENTS[event]) is None


def test_an_overflow_within_the_centre_does_not_move_a_chat() -> None:
    assert session_step(WAITING, EVENTS["overflowed on"]) is None
    assert all(state != CLOSED for state, _ in TRANSITIONS)


# -------------------------------------------------------------------------------------- on the wire


def test_frames_out_are_exactly_as_documented() -> None:
    assert wire(Queued("chat-1", "tok", None, 2, 840)) == {
        "type": "queued",
        "contact_id": "chat-1",
        "token": "tok",
        "case": None,
        "position": 2,
        "ewt_s": 840,
    }
    assert wire(Offline("C-7", "tok", "no_agents")) == {
        "type": "offline",
        "case": "C-7",
        "token": "tok",
        "reason": "no_agents",
    }
    assert wire(Ack(None, "cm-1", 5)) == {"type": "ack", "client_id": None, "message_id": "cm-1", "at_ms": 5}
    assert wire(Line("customer", "hi", "cm-1", 5)) == {
        "type": "message",
        "from": "customer",
        "text": "hi",
        "message_id": "cm-1",
        "at_ms": 5,
    }
    assert wire(Line("agent", "hi", "cm-2", 6, "Ada")) == {
        "type": "message",
        "from": "agent",
        "text": "hi",
        "message_id": "cm-2",
        "at_ms": 6,
        "agent": "Ada",
    }
    assert wire(Position(3, None)) == {"type": "position", "position": 3, "ewt_s": None}
    assert wire(AgentJoined("Ada")) == {"type": "agent_joined", "agent": "Ada"}
    assert wire(Closed("ended")) == {"type": "closed", "reason": "ended"}
    assert wire(Resumed("offline", "C-7")) == {"type": "resumed", "state": "offline", "case": "C-7"}
    waiting = Resumed("waiting", "C-7", "chat-1", None, None)
    assert wire(waiting) == {
        "type": "resumed",
        "state": "waiting",
        "case": "C-7",
        "contact_id": "chat-1",
        "position": None,
        "ewt_s": None,
    }
    assert wire(error("closed")) == {"type": "error", "code": "closed"}
    assert wire(error("bad_request", "text: required", "c-1")) == {
        "type": "error",
        "code": "bad_request",
        "detail": "text: required",
        "client_id": "c-1",
    }
