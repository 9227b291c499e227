"""The agent protocol's connection rules without a socket (contactcentre/edge/agents/protocol.py): the login, the
rate limit, the answers to frames that do not decode, and the commands as Structs (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contactcentre.edge.agents import protocol as A
from contactcentre.edge.agents.protocol import ENDED, LIVE, LOGIN, AgentConnection, decoder
from contactcentre.edge.frames.policy import Close, Closes
from contactcentre.store.schema import messages


def frame(raw: dict[str, Any] | str) -> Any:
    return decoder.decode(raw if isinstance(raw, str) else json.dumps(raw))


def live(rate: float = 20.0, burst: int = 40) -> AgentConnection:
    conn = AgentConnection(rate, burst)
    conn.logged_in("a1", 0.0)
    return conn


# ------------------------------------------------------------------------------------------------ login

# (first frame) -> (error code, or the token to check)
LOGIN_TABLE = [
    ({"type": "login", "token": "cc_x"}, "token cc_x"),
    ({"type": "login"}, "unauthorized"),
    ({"type": "login", "token": ""}, "unauthorized"),
    ({"type": "login", "token": 5}, "unauthorized"),
    ({"type": "state", "state": "available"}, "login_required"),
    ({"type": "accept"}, "login_required"),  # a command, even a malformed one, is not a login
    ({"type": "dance"}, "login_required"),
    ("{not json", "bad_json"),
    ("[1]", "bad_frame"),
]


@pytest.mark.parametrize(("first", "outcome"), LOGIN_TABLE)
def test_the_first_frame_must_be_a_login_with_a_token(first: Any, outcome: str) -> None:
    step = AgentConnection().login_frame(frame(first))
    if outcome.startswith("token "):
        assert step.token == outcome[len("token ") :] and not step.send and step.close is None
    else:
        assert step.token is None
        assert [f["code"] for f in step.send] == [outcome]
        assert step.close == Close(1008, outcome)


# ----------------------------------------------------------------------------------------- logged in


def test_a_command_is_handed_on_with_the_ref_and_for_its_answer_repeats() -> None:
    step = live().receive(frame({"type": "accept", "offer_id": "o1", "ref": 7}), 0.0)
    assert step.command == A.Accept(offer_id="o1", ref=7)
    assert step.answer == {"ref": 7, "for": "accept"}
    step = live().receive(frame({"type": "hang_up", "contact_id": "call-1"}), 0.0)
    assert type(step.command) is A.HangUp and isinstance(step.command, A.End) and step.answer == {"for": "hang_up"}


# (frame) -> (error code, ref and for repeated, a word the detail holds)
ERROR_TABLE = [
    ("{not json", "bad_json", {}, "not JSON"),
    ("[1, 2]", "bad_frame", {}, "object"),
    ({"type": "dance", "ref": 3}, "unknown_type", {"ref": 3, "for": "dance"}, "no command 'dance' in protocol 1"),
    ({"type": "message", "contact_id": "chat-1"}, "bad_field", {"for": "message"}, "text: required"),
    ({"type": "accept", "ref": "r"}, "bad_field", {"ref": "r", "for": "accept"}, "offer_id: required"),
    ({"type": "ping", "ref": {"no": "objects"}}, "bad_field", {"for": "ping"}, "ref: must be"),
    ({"type": "ping", "ref": "x" * 129}, "bad_field", {"for": "ping"}, "ref: at most 128 characters"),
    ({"type": "callback", "contact_id": "c", "at_ms": -1}, "bad_field", {"for": "callback"}, "at_ms"),
    ({"type": "callback", "contact_id": "c", "customer_asked": 1}, "bad_field", {"for": "callback"}, "true or false"),
    ({"type": "message_text", "contact_id": "c"}, "bad_field", {"for": "message_text"}, "exactly one"),
    ({"type": "message_text", "contact_id": "c", "id": 2**70}, "bad_field", {"for": "message_text"}, "id"),
    ({"type": "message_text", "contact_id": "c", "id": True}, "bad_field", {"for": "message_text"}, "id"),
    ({"type": "answer"}, "bad_field", {"for": "answer"}, "contact_id"),
    ({"type": "login", "token": "t", "ref": 1}, "already_logged_in", {"ref": 1, "for": "login"}, "a1"),
]


@pytest.mark.parametrize(("raw", "code", "answer", "word"), ERROR_TABLE)
def test_a_frame_that_is_not_carried_out_gets_one_error_and_the_connection_stays(
    raw: Any, code: str, answer: dict[str, Any], word: str
) -> None:
    conn = live()
    step = conn.receive(frame(raw), 0.0)
    assert step.command is None and step.close is None and conn.state == LIVE
    [error] = step.send
    assert {k: error[k] for k in ("type", "code")} == {"type": "error", "code": code}
    assert {k: v for k, v in error.items() if k in ("ref", "for")} == answer
    assert word in error["detail"]


def test_strings_are_cleaned_before_the_gateway_sees_them() -> None:
    step = live().receive(frame({"type": "message", "contact_id": "chat-1", "text": "a\x00b\r\nc"}), 0.0)
    assert step.command == A.Message(contact_id="chat-1", text="ab\nc")


def test_rate_limited_commands_get_errors_and_more_than_fifty_in_a_row_close_the_connection() -> None:
    conn = live(rate=0.001, burst=2)
    ping = frame({"type": "ping", "ref": 1})
    assert [conn.receive(ping, 0.0).command is not None for _ in range(2)] == [True, True]
    refused = [conn.receive(ping, 0.0) for _ in range(A.MAX_REFUSED_IN_A_ROW)]
    assert all(s.send[0]["code"] == "rate_limited" and s.close is None for s in refused)
    assert refused[0].send[0] == {
        "type": "error",
        "code": "rate_limited",
        "detail": "more than 0.001 frames a second; frame dropped",
        "ref": 1,  # which command was dropped
        "for": "ping",
    }
    last = conn.receive(ping, 0.0)
    assert last.close == Closes.AGENT_RATE_ABUSED.value == (1008, "rate limit") and not last.send
    assert conn.state == ENDED
    assert conn.receive(ping, 10_000.0) == A.Step()  # only the closing handshake is left


def test_a_logout_closes_after_its_ack_and_nothing_after_it_is_carried_out() -> None:
    conn = live()
    step = conn.receive(frame({"type": "logout"}), 0.0)
    assert step.command is not None
    assert conn.acked(step.command).close == Closes.LOGGED_OUT.value == (1000, "logged out")
    assert conn.state == ENDED
    assert conn.receive(frame({"type": "ping"}), 0.0) == A.Step()
    assert conn.acked(A.Ping()).close is None


def test_connection_states() -> None:
    conn = AgentConnection()
    assert conn.state == LOGIN
    assert conn.receive(frame({"type": "ping"}), 0.0) == A.Step()  # nothing before the login
    conn.logged_in("a1", 0.0)
    assert conn.state == LIVE and conn.login_frame(frame({"type": "login", "token": "t"})) == A.Step()
    conn.ended()
    assert conn.state == ENDED


def test_the_longest_message_id_is_the_stores() -> None:
    assert messages.c.message_id.type.length == A.MAX_MESSAGE_ID
