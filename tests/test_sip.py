"""The SIP front door: messages, the dialog table, the user-agent server under chosen times, the UDP transport on
a ``task.Clock`` with the real switch, and a real SIPp calling a real server through queue and agent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import FakeDatagramTransport

from contactcentre.config import parse_config
from contactcentre.edge.voice.sip import (
    DIALOG_EVENTS,
    DIALOG_STATES,
    DIALOG_TRANSITIONS,
    ENDED,
    GIVE_UP_MS,
    KEEP_MS,
    PRUNE_SOURCES,
    TRYING,
    UNVERIFIED_GIVE_UP_MS,
    CallEnded,
    DigitReceived,
    HoldChanged,
    IncomingCall,
    Output,
    Send,
    SipStateError,
    SipUas,
    SourceLimits,
    dialog_step,
    source_key,
)
from contactcentre.edge.voice.sip_message import (
    Request,
    Response,
    SipError,
    dtmf_digit,
    parse,
    parse_sdp,
    serialise,
    tag_of,
)
from contactcentre.edge.voice.sip_transport import SipTransport, source_limits
from contactcentre.telephony import Switch, SwitchConfig, SwitchEvent
from contactcentre.telephony.driver import SwitchDriver
from contactcentre.telephony.events import DigitsGenerated
from tests.server_proc import Server, Sink, T, add_users, agent_console, next_frame, server_config, start_server

CALLER = ("127.0.0.1", 5062)
OFFER = (
    "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
)


def sip(
    method: str,
    cseq: int = 1,
    *,
    branch: str = "z9hG4bK-1",
    to_tag: str = "",
    body: str = "",
    ctype: str = "",
    call_id: str = "call-1@caller",
    uri: str = "sip:2001@127.0.0.1:5070",
    extra: str = "",
) -> bytes:
    """A request as a caller would send it."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}",
        'From: "Caller" <sip:+31205550101@127.0.0.1:5062>;tag=caller-tag',
        "To: <sip:2001@127.0.0.1:5070>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' and cseq == 0 else method}",
        "Contact: <sip:caller@127.0.0.1:5062>",
        "Max-Forwards: 70",
        *([f"Content-Type: {ctype}"] if ctype else []),
        *([extra] if extra else []),
        f"Content-Length: {len(body.encode())}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def invite(**kw: Any) -> bytes:
    direction = kw.pop("direction", "sendrecv")
    return sip("INVITE", body=OFFER.format(dir=direction), ctype="application/sdp", **kw)


def sent(out: list[Output]) -> list[Request | Response]:
    return [parse(o.data) for o in out if isinstance(o, Send)]


def statuses(out: list[Output]) -> list[int]:
    return [m.status for m in sent(out) if isinstance(m, Response)]


def others(out: list[Output]) -> list[Output]:
    return [o for o in out if not isinstance(o, Send)]


# ------------------------------------------------------------------------------------------------ messages


def test_a_request_survives_parse_and_serialise() -> None:
    msg = parse(invite())
    assert isinstance(msg, Request) and msg.method == "INVITE" and msg.uri == "sip:2001@127.0.0.1:5070"
    again = parse(serialise(msg))
    assert again == msg
    assert parse_sdp(msg.body).formats == ("0", "101")


def test_compact_headers_folding_and_bare_newlines_are_read() -> None:
    raw = (
        b"OPTIONS sip:2001@h SIP/2.0\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\n"
        b"f: <sip:a@h>;tag=1\n"
        b"t: <sip:2001@h>\n"
        b"i: abc\n"
        b"CSeq: 7\n"
        b"  OPTIONS\n"
        b"l: 0\n\n"
    )
    msg = parse(raw)
    assert msg.get("via") == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx"
    assert msg.get("Call-ID") == "abc" and msg.cseq() == (7, "OPTIONS") and tag_of(msg.get("From")) == "1"


def test_a_response_line_and_content_length_trim_the_body() -> None:
    raw = sip("INFO", 2, body="Signal=5\r\nextra", ctype="application/dtmf-relay").replace(
        b"Content-Length: 15", b"Content-Length: 8"
    )
    assert parse(raw).body == b"Signal=5"
    resp = parse(b"SIP/2.0 200 OK\r\n" + sip("BYE").split(b"\r\n", 1)[1])
    assert isinstance(resp, Response) and resp.status == 200 and resp.reason == "OK"


GARBAGE = [
    # (datagram, what the reason says, can a 400 be addressed)
    (b"hello world\r\n\r\n", "not a SIP request or status line", False),
    (b"\xff\xfe\x00INVITE", "not UTF-8", False),
    (sip("INVITE").replace(b"Call-ID: call-1@caller\r\n", b""), "no Call-ID", False),  # a response must echo it
    # A bad CSeq is the request's fault, not its address's: it is answered 400 (echoing the CSeq as it came).
    (sip("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "CSeq", True),
    (sip("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 4294967296 INVITE"), "below 2\\*\\*31", True),
    (sip("INVITE").replace(b"CSeq: 1 INVITE\r\n", b""), "no CSeq", True),
    (sip("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "is not the request's", True),
    (sip("INVITE").replace(b"Max-Forwards: 70", b"this is no header"), "not a header line", True),
    (sip("INVITE").replace(b"Content-Length: 0", b"Content-Length: 99"), "Content-Length", True),
    (sip("INVITE").replace(b"Content-Length: 0", b"Content-Length: -1"), "Content-Length", True),
    (sip("INVITE").replace(b"To: <sip:2001", b"To: sip:2001").replace(b"5070>", b"5070"), "", None),
    (sip("INVITE").replace(b"5062>;tag=caller", b"5062;tag=caller"), "unclosed", False),
    (sip("INVITE").replace(b"Via: SIP/2.0/UDP", b"Via: HTTP/1.1"), "top Via", False),  # no way back
    (sip("INVITE").split(b"\r\nVia:")[0] + b"\r\nCSeq: 1 INVITE\r\n\r\n", "no Via", False),
]


@pytest.mark.parametrize(("raw", "reason", "addressable"), GARBAGE)
def test_garbage_is_refused_with_a_reason(raw: bytes, reason: str, addressable: bool | None) -> None:
    if addressable is None:  # an addr-spec To without brackets is fine
        assert parse(raw)
        return
    with pytest.raises(SipError, match=reason) as err:
        parse(raw)
    assert (err.value.partial is not None) is addressable


@given(st.binary(max_size=2048))
def test_the_parser_raises_only_its_own_error_on_any_bytes(data: bytes) -> None:
    with contextlib.suppress(SipError):
        parse(data)


SEEDS = [
    invite(),
    sip("BYE", 2, to_tag="x"),
    sip("INFO", 2, to_tag="x", body="Signal=1", ctype="application/dtmf-relay"),
    sip("OPTIONS"),
    sip("CANCEL"),
]


@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 800), st.binary(max_size=6)), max_size=8))
def test_a_mangled_message_never_raises_out_of_the_uas(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for pos, chunk in edits:
        data[pos : pos + len(chunk)] = chunk
    uas = SipUas("127.0.0.1", 5070)
    out: list[Output] = []
    for what in (bytes(data), invite(), bytes(data)):
        out += uas.receive(what, CALLER, 0)
    for dialog in list(uas.dialogs):  # and whatever dialog it made can be answered, hung up and timed out
        out += uas.answer(dialog, 1) + uas.hangup(dialog, 2) + uas.advance(GIVE_UP_MS * 3)
    for o in out:
        if isinstance(o, Send):
            parse(o.data)  # whatever we send is well-formed SIP


@pytest.mark.parametrize(
    ("ctype", "body", "digit"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", "signal= #\r\n", "#"),
        ("application/dtmf-relay", "Signal=11\r\n", "#"),
        ("application/dtmf-relay", "Signal=d\r\n", "D"),
        ("application/dtmf", "*", "*"),
        ("application/dtmf-relay", "", None),
    ],
)
def test_dtmf_bodies(ctype: str, body: str, digit: str | None) -> None:
    assert dtmf_digit(ctype, body.encode()) == digit


@pytest.mark.parametrize("body", ["Duration=160", "Signal=55", "Signal=x", "Signal=\u00b2"])
def test_bad_dtmf_bodies(body: str) -> None:
    with pytest.raises(SipError):
        dtmf_digit("application/dtmf-relay", body.encode())


# --------------------------------------------------------------------------------------- the dialog table


@pytest.mark.parametrize(("state", "event"), sorted(DIALOG_TRANSITIONS))
def test_every_row_of_the_dialog_table(state: str, event: str) -> None:
    assert dialog_step(state, event) == DIALOG_TRANSITIONS[(state, event)]


def test_every_missing_pair_is_refused_naming_both() -> None:
    missing = [(s, e) for s in DIALOG_STATES for e in DIALOG_EVENTS if (s, e) not in DIALOG_TRANSITIONS]
    assert (ENDED, "bye") in missing and (TRYING, "ack") in missing
    for s, e in missing:
        with pytest.raises(SipStateError, match=f"{s!r} cannot take {e!r}"):
            dialog_step(s, e)


def test_every_state_is_reachable_and_every_state_can_end() -> None:
    graph: dict[str, set[str]] = {}
    for (s, _), t in DIALOG_TRANSITIONS.items():
        graph.setdefault(s, set()).add(t)

    def reach(start: str) -> set[str]:
        seen, todo = {start}, deque([start])
        while todo:
            for nxt in graph.get(todo.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reach(TRYING) == set(DIALOG_STATES)
    assert all(ENDED in reach(s) for s in DIALOG_STATES)


# ------------------------------------------------------------------------------------- the UAS, by hand


def new_call(uas: SipUas, now: int = 0, **kw: Any) -> tuple[IncomingCall, list[Output]]:
    out = uas.receive(invite(**kw), CALLER, now)
    assert statuses(out) == [100]
    (call,) = others(out)
    assert isinstance(call, IncomingCall)
    return call, out


def answered(uas: SipUas, now: int = 0) -> tuple[str, Response]:
    call, _ = new_call(uas, now)
    out = uas.answer(call.dialog, now)
    assert statuses(out) == [180, 200]
    ok = sent(out)[-1]
    assert isinstance(ok, Response)
    return call.dialog, ok


def test_an_invite_is_tried_rung_and_answered_with_sdp() -> None:
    uas = SipUas("127.0.0.1", 5070, media_port=4000)
    call, out = new_call(uas)
    assert (call.ani, call.dnis, call.sip_call_id) == ("+31205550101", "2001", "call-1@caller")
    trying = sent(out)[0]
    assert trying.get("To") == "<sip:2001@127.0.0.1:5070>"  # 100 carries no tag
    out = uas.answer(call.dialog, 0)
    ringing, ok = sent(out)
    assert tag_of(ringing.get("To")) == tag_of(ok.get("To")) == call.dialog
    assert ok.get("CSeq") == "1 INVITE" and ok.get("Via") == "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1"
    assert ok.get("Contact") == "<sip:127.0.0.1:5070>" and ok.get("Content-Type") == "application/sdp"
    body = ok.body.decode()
    assert "c=IN IP4 127.0.0.1" in body and "m=audio 4000 RTP/AVP 0" in body and "a=sendrecv" in body


def test_the_same_call_on_another_branch_is_a_loop() -> None:
    uas = SipUas("127.0.0.1", 5070)
    new_call(uas)
    assert statuses(uas.receive(invite(branch="z9hG4bK-other"), CALLER, 10)) == [482]


def test_a_retransmitted_invite_gets_the_last_answer_and_no_second_call() -> None:
    uas = SipUas("127.0.0.1", 5070)
    call, _ = new_call(uas)
    assert others(uas.receive(invite(), CALLER, 100)) == []
    assert statuses(uas.receive(invite(), CALLER, 100)) == [100]
    uas.answer(call.dialog, 200)
    again = uas.receive(invite(), CALLER, 300)
    assert statuses(again) == [200] and others(again) == []


def test_200_is_resent_until_the_ack_doubling_to_t2_then_the_call_is_given_up_with_a_bye() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    resent: list[int] = []
    now = 0
    while (due := uas.next_deadline()) is not None and due < GIVE_UP_MS:
        out = uas.advance(due)
        now = due
        if statuses(out) == [200]:
            resent.append(due)
    assert resent[:6] == [500, 1500, 3500, 7500, 11500, 15500]  # T1, 2·T1, 4·T1, then every T2 (4 s)
    assert all(b - a == 4000 for a, b in itertools.pairwise(resent[3:]))
    out = uas.advance(GIVE_UP_MS)
    assert now <= GIVE_UP_MS
    bye = [m for m in sent(out) if isinstance(m, Request)]
    assert [m.method for m in bye] == ["BYE"] and CallEnded(dialog, "no_ack") in others(out)


def test_the_ack_stops_the_200_and_a_caller_bye_ends_the_call_once() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    assert uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 100) == []
    assert uas.dialogs[dialog].state == "confirmed"
    assert uas.next_deadline() == KEEP_MS  # only forgetting the INVITE transaction is left
    out = uas.receive(sip("BYE", 2, to_tag=dialog, branch="z9hG4bK-bye"), CALLER, 200)
    assert statuses(out) == [200] and others(out) == [CallEnded(dialog, "bye")]
    again = uas.receive(sip("BYE", 2, to_tag=dialog, branch="z9hG4bK-bye"), CALLER, 700)
    assert statuses(again) == [200] and others(again) == []
    uas.advance(200 + KEEP_MS)
    assert dialog not in uas.dialogs and uas.next_deadline() is None


def test_cancel_before_the_answer_gets_200_and_the_invite_487() -> None:
    uas = SipUas("127.0.0.1", 5070)
    call, _ = new_call(uas)
    uas.ring(call.dialog, 10)
    out = uas.receive(sip("CANCEL"), CALLER, 20)
    ok, terminated = sent(out)
    assert (ok.status, ok.get("CSeq")) == (200, "1 CANCEL")  # type: ignore[union-attr]
    assert (terminated.status, terminated.get("CSeq")) == (487, "1 INVITE")  # type: ignore[union-attr]
    assert others(out) == [CallEnded(call.dialog, "cancel")]
    assert statuses(uas.receive(sip("CANCEL"), CALLER, 30)) == [200]  # retransmitted CANCEL
    assert statuses(uas.advance(520)) == [487]  # until the ACK
    assert uas.receive(sip("ACK", 1, to_tag=call.dialog), CALLER, 600) == []
    assert uas.dialogs[call.dialog].state == ENDED
    assert statuses(uas.advance(5000)) == []


def test_cancel_after_the_answer_changes_nothing_and_an_unknown_cancel_is_481() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    out = uas.receive(sip("CANCEL"), CALLER, 10)
    assert statuses(out) == [200] and others(out) == [] and uas.dialogs[dialog].state == "answered"
    assert statuses(uas.receive(sip("CANCEL", branch="z9hG4bK-nothing"), CALLER, 10)) == [481]


def test_our_bye_is_well_formed_resent_and_ends_on_its_200() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 100)
    (bye,) = sent(uas.hangup(dialog, 1000))
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.uri == "sip:caller@127.0.0.1:5062"
    assert tag_of(bye.get("From")) == dialog and tag_of(bye.get("To")) == "caller-tag"
    assert bye.get("CSeq") == "1 BYE" and bye.get("Call-ID") == "call-1@caller"
    assert [m.method for m in sent(uas.advance(1500)) if isinstance(m, Request)] == ["BYE"]
    assert uas.hangup(dialog, 1600) == []  # hanging up twice does nothing
    ok = f"SIP/2.0 200 OK\r\nVia: {bye.get('Via')}\r\nFrom: {bye.get('From')}\r\nTo: {bye.get('To')}\r\n"
    ok += "Call-ID: call-1@caller\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    assert uas.receive(ok.encode(), CALLER, 1700) == []
    assert uas.dialogs[dialog].state == ENDED and statuses(uas.advance(5000)) == []


def test_a_bye_nobody_answers_is_given_up() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 0)
    uas.hangup(dialog, 0)
    uas.advance(GIVE_UP_MS)
    assert uas.dialogs[dialog].state == ENDED


def test_hanging_up_before_the_ack_sends_the_bye_once_it_comes() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    assert sent(uas.hangup(dialog, 10)) == []
    out = uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 20)
    assert [m.method for m in sent(out) if isinstance(m, Request)] == ["BYE"]


def test_hanging_up_a_ringing_call_is_480_and_rejecting_one_is_the_status_given() -> None:
    uas = SipUas("127.0.0.1", 5070)
    call, _ = new_call(uas)
    uas.ring(call.dialog, 0)
    assert statuses(uas.hangup(call.dialog, 5)) == [480]
    other, _ = new_call(uas, call_id="call-2@caller", branch="z9hG4bK-2")
    assert statuses(uas.reject(other.dialog, 486, 5)) == [486]
    with pytest.raises(SipStateError):
        uas.reject(other.dialog, 404, 6)
    with pytest.raises(ValueError):
        uas.reject(other.dialog, 200, 6)


def test_dtmf_by_info_is_a_digit_and_bad_info_is_refused() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 0)

    def info(cseq: int, body: str, ctype: str = "application/dtmf-relay", to_tag: str = dialog) -> list[Output]:
        return uas.receive(
            sip("INFO", cseq, branch=f"z9hG4bK-i{cseq}", to_tag=to_tag, body=body, ctype=ctype), CALLER, 1
        )

    out = info(2, "Signal=5\r\nDuration=160\r\n")
    assert statuses(out) == [200] and others(out) == [DigitReceived(dialog, "5")]
    assert statuses(info(2, "Signal=5\r\n")) == [200]  # a retransmission: no second digit
    assert statuses(info(3, "Signal=9", to_tag="nobody")) == [481]
    assert statuses(info(4, "<xml/>", ctype="application/xml")) == [415]
    assert statuses(info(5, "Signal=Q")) == [400]
    out = info(6, "")
    assert statuses(out) == [200] and others(out) == []


def test_a_reinvite_holds_and_retrieves_with_mirrored_sdp() -> None:
    uas = SipUas("127.0.0.1", 5070)
    dialog, _ = answered(uas)
    uas.receive(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"), CALLER, 0)
    out = uas.receive(invite(cseq=2, to_tag=dialog, branch="z9hG4bK-hold", direction="sendonly"), CALLER, 10)
    (ok,) = sent(out)
    assert ok.status == 200 and b"a=recvonly" in ok.body and b"o=contactcentre 1 2 " in ok.body  # type: ignore[union-attr]
    assert others(out) == [HoldChanged(dialog, True)] and uas.dialogs[dialog].held
    assert statuses(uas.advance(510)) == [200]  # a re-INVITE's 200 is resent until its ACK too
    uas.receive(sip("ACK", 2, to_tag=dialog, branch="z9hG4bK-ack2"), CALLER, 600)
    out = uas.receive(invite(cseq=3, to_tag=dialog, branch="z9hG4bK-unhold"), CALLER, 700)
    assert b"a=sendrecv" in sent(out)[0].body and others(out) == [HoldChanged(dialog, False)]
    uas.receive(sip("ACK", 3, to_tag=dialog, branch="z9hG4bK-ack3"), CALLER, 800)
    old_style = invite(cseq=4, to_tag=dialog, branch="z9hG4bK-old")
    old_style = old_style.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0").replace(b"h: 160", b"h: 158")
    out = uas.receive(old_style, CALLER, 900)
    assert b"a=recvonly" in sent(out)[0].body and others(out) == [HoldChanged(dialog, True)]
    # A re-INVITE while the last is unacknowledged is 491; an old CSeq is 500.
    assert statuses(uas.receive(invite(cseq=5, to_tag=dialog, branch="z9hG4bK-x"), CALLER, 950)) == [491]
    assert statuses(uas.receive(invite(cseq=1, to_tag=dialog, branch="z9hG4bK-y"), CALLER, 960)) == [500]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (sip("OPTIONS"), 200),
        (sip("REGISTER"), 405),
        (sip("FROB"), 501),
        (sip("BYE", 2, to_tag="nobody"), 481),
        (sip("INVITE", extra="Require: 100rel"), 420),
        (sip("INVITE", body="hello", ctype="text/plain"), 415),
        (sip("INVITE", body="v=0\r\nm=video 1 RTP/AVP 31\r\n", ctype="application/sdp"), 488),
        (sip("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), 483),
        (sip("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK"), 400),
        (sip("INVITE").replace(b"<sip:caller@127.0.0.1:5062>", b"<mailto:x@y>"), 400),
    ],
)
def test_what_other_requests_get(raw: bytes, status: int) -> None:
    out = SipUas("127.0.0.1", 5070).receive(raw, CALLER, 0)
    assert statuses(out) == [status] and others(out) == []
    if status in (405, 501, 200):
        assert "BYE" in (sent(out)[0].get("Allow") or "")


@pytest.mark.parametrize(
    ("cseq", "answered"),
    [
        (b"CSeq: x INVITE\r\n", b"CSeq: 0 INVITE"),
        (b"CSeq: 99999999999 INVITE\r\n", b"CSeq: 0 INVITE"),
        (b"CSeq: 2147483648 INVITE\r\n", b"CSeq: 0 INVITE"),
        (b"CSeq: 7\r\n", b"CSeq: 7 INVITE"),
        (b"", b"CSeq: 0 INVITE"),
        (b"CSeq: 1 BYE\r\n", b"CSeq: 1 BYE"),  # readable: echoed as it came
    ],
)
def test_an_invite_with_a_bad_cseq_is_400_and_the_400_is_well_formed(cseq: bytes, answered: bytes) -> None:
    """docs/sip.md: a malformed request that can be addressed is answered 400; a bad CSeq does not stop that,
    and the 400 carries one the caller can match (its Via branch and method) and parse."""
    uas = SipUas("127.0.0.1", 5070)
    [out] = uas.receive(sip("INVITE").replace(b"CSeq: 1 INVITE\r\n", cseq), CALLER, 0)
    assert isinstance(out, Send) and out.addr == CALLER
    resp = parse(out.data)
    assert isinstance(resp, Response) and resp.status == 400 and f"CSeq: {resp.get('CSeq')}".encode() == answered
    assert resp.get("Via") == "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1" and "399" in (resp.get("Warning") or "")
    assert uas.dialogs == {} and uas.next_deadline() is None  # nothing kept


def test_unaddressable_garbage_and_oversize_datagrams_are_dropped() -> None:
    uas = SipUas("127.0.0.1", 5070)
    assert uas.receive(b"\x00" * 50, CALLER, 0) == []
    assert uas.receive(invite() + b"x" * 20_000, CALLER, 0) == []
    assert uas.receive(b"SIP/2.0 200 OK\r\n\r\n", CALLER, 0) == []
    assert uas.receive(sip("ACK").replace(b"CSeq: 1 ACK", b"CSeq: x"), CALLER, 0) == []  # never answer an ACK
    assert uas.receive(b"\r\n\r\n", CALLER, 0) == []  # keep-alive
    assert uas.dialogs == {}


# ------------------------------------------------------------------------------------- flood limits

LIMITS = SourceLimits(invites_per_s=1, invite_burst=3, calls=10, retry_after_s=5)


def nth_invite(n: int) -> bytes:
    return invite(call_id=f"flood-{n}@caller", branch=f"z9hG4bK-f{n}")


def test_an_invite_flood_from_one_source_gets_one_unrepeated_503_then_silence() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    out = [uas.receive(nth_invite(n), CALLER, 0) for n in range(20)]
    assert [statuses(o) for o in out[:4]] == [[100], [100], [100], [503]]
    assert sum(isinstance(x, IncomingCall) for o in out for x in o) == 3  # the burst: three calls, no more
    assert out[4:] == [[]] * 16 and uas.shed == 17  # the rest of the flood: dropped unanswered
    [busy] = sent(out[3])
    assert busy.get("Retry-After") == "5" and busy.get("CSeq") == "1 INVITE"
    [datagram] = out[3]
    assert isinstance(datagram, Send) and len(datagram.data) < len(nth_invite(3))  # smaller than its cause
    assert all(not isinstance(x, Send) or b" 503 " not in x.data for x in uas.advance(60_000))  # never resent
    later = uas.receive(nth_invite(3), CALLER, 60_000)  # tokens refilled, the quiet over: it may call again
    assert statuses(later) == [100] and isinstance(later[1], IncomingCall)


def test_the_quiet_period_ends_and_a_retransmitted_shed_invite_is_not_a_call() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    for n in range(3):
        uas.receive(nth_invite(n), CALLER, 0)
    assert statuses(uas.receive(nth_invite(3), CALLER, 0)) == [503]
    assert uas.receive(nth_invite(3), CALLER, 500) == []  # its retransmission: still quiet, no dialog
    # The bucket has refilled meanwhile (3 at once); the next refusal is still quiet until 5 s have passed.
    assert [statuses(uas.receive(nth_invite(n), CALLER, 4_999)) for n in range(4, 8)] == [[100]] * 3 + [[]]
    assert statuses(uas.receive(nth_invite(8), CALLER, 5_000)) == [503]
    assert len(uas.dialogs) == 6


def test_other_sources_and_trusted_ones_are_served_during_a_flood() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=dataclasses.replace(LIMITS, trusted=frozenset({"10.0.0.9"})))
    for n in range(10):
        uas.receive(nth_invite(n), CALLER, 0)
    assert statuses(uas.receive(nth_invite(10), ("127.0.0.2", 5062), 0)) == [100]
    assert [statuses(uas.receive(nth_invite(n), ("10.0.0.9", 5060), 0)) for n in range(20, 40)] == [[100]] * 20


@pytest.mark.parametrize(
    ("trusted", "source"),
    [("2001:DB8::9", "2001:db8::9"), ("2001:db8:0::9", "2001:db8::9"), ("192.0.2.9", "::ffff:192.0.2.9")],
)
def test_a_trusted_address_is_trusted_however_it_is_spelled(trusted: str, source: str) -> None:
    """``sip_trusted`` takes any spelling ``check-config`` accepts; the peer's address comes as the socket gives
    it (lower case, compressed, IPv4 mapped into IPv6 on a dual-stack socket). A carrier left under the limits
    would have its calls shed."""
    voice = parse_config({"server": {"voice": {"sip_trusted": [trusted]}}}, "<t>").server.voice
    uas = SipUas("127.0.0.1", 5070, limits=dataclasses.replace(source_limits(voice), invite_burst=3))
    assert [statuses(uas.receive(nth_invite(n), (source, 5060), 0)) for n in range(20)] == [[100]] * 20
    assert uas.shed == 0


def test_an_ipv6_source_is_its_slash_64_and_a_mapped_ipv4_address_is_itself() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7" and source_key("192.0.2.7") == "192.0.2.7"
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    out = [uas.receive(nth_invite(n), (f"2001:db8:1:2::{n + 1:x}", 5060), 0) for n in range(5)]
    assert [statuses(o) for o in out] == [[100], [100], [100], [503], []]  # new addresses, the same /64


def test_one_source_holds_at_most_its_calls_and_a_call_that_ends_frees_its_place() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=dataclasses.replace(LIMITS, invites_per_s=1000, calls=2))
    dialogs = [o.dialog for n in range(2) for o in uas.receive(nth_invite(n), CALLER, 0) if isinstance(o, IncomingCall)]
    assert statuses(uas.receive(nth_invite(2), CALLER, 100)) == [503]
    uas.reject(dialogs[0], 486, 200)  # the switch refused it: no trunk held any more
    assert statuses(uas.receive(nth_invite(3), CALLER, 300)) == [100]
    assert uas.receive(nth_invite(4), CALLER, 400) == []  # two calls again, and 503 was said


def test_sources_that_are_as_good_as_new_are_forgotten() -> None:
    """A flood from many (forged) addresses costs memory only while their buckets refill."""
    uas = SipUas("127.0.0.1", 5070, limits=dataclasses.replace(LIMITS, invites_per_s=10))
    for n in range(PRUNE_SOURCES):
        for o in uas.receive(nth_invite(n), (f"10.{n // 250}.{n % 250}.1", 5060), 0):
            if isinstance(o, IncomingCall) and n % 2:
                uas.reject(o.dialog, 486, 0)  # the odd ones end; the even ones still ring
    assert len(uas._sources) == PRUNE_SOURCES
    uas.receive(nth_invite(5_000), ("192.0.2.1", 5060), 1_000)  # a second later every bucket is full again
    assert len(uas._sources) == PRUNE_SOURCES // 2 + 1  # those with a call in progress, and the newcomer


def test_the_limits_come_from_server_voice() -> None:
    voice = parse_config({"server": {"voice": {"sip_calls_per_source": 3, "sip_trusted": ["10.1.1.1"]}}}, "<t>")
    limits = source_limits(voice.server.voice)
    assert limits == SourceLimits(
        invites_per_s=1.0, invite_burst=10, calls=3, retry_after_s=10, unacked=2, trusted=frozenset({"10.1.1.1"})
    )
    voice = parse_config({"server": {"voice": {"sip_unacked_per_source": 0}}}, "<t>")
    assert source_limits(voice.server.voice).unacked == 0


# ------------------------------------------------------------------- what a forged source can bounce


def mini(method: str, n: int) -> bytes:
    """The attacker's smallest well-formed request outside a call (the security review's ``options`` probe)."""
    return (
        f"{method} sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{n}\r\nFrom: <sip:a@b>;tag=1\r\n"
        f"To: <sip:a@b>\r\nCall-ID: {n}\r\nCSeq: 1 {method}\r\n\r\n"
    ).encode()


def no_hops(raw: bytes) -> bytes:
    return raw.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")


STRAYS = [
    ("OPTIONS", lambda n: sip("OPTIONS", branch=f"z9hG4bK-o{n}", call_id=f"o{n}"), 200),
    # 405 must carry Allow, which makes it larger than this small REGISTER: not sent (a phone's, with its
    # Expires, User-Agent and credentials, is larger)
    ("REGISTER", lambda n: sip("REGISTER", branch=f"z9hG4bK-r{n}", call_id=f"r{n}"), None),
    ("big REGISTER", lambda n: sip("REGISTER", branch=f"z9hG4bK-R{n}", call_id=f"R{n}", extra="X: " + "9" * 80), 405),
    ("unknown", lambda n: sip("FROB", branch=f"z9hG4bK-u{n}", call_id=f"u{n}"), 501),
    ("stray BYE", lambda n: sip("BYE", 2, to_tag="nobody", branch=f"z9hG4bK-b{n}", call_id=f"b{n}"), 481),
    ("stray CANCEL", lambda n: sip("CANCEL", branch=f"z9hG4bK-c{n}", call_id=f"c{n}"), 481),
    ("stray INFO", lambda n: sip("INFO", 2, to_tag="nobody", branch=f"z9hG4bK-i{n}", call_id=f"i{n}"), 481),
    ("stray re-INVITE", lambda n: invite(to_tag="nobody", branch=f"z9hG4bK-v{n}", call_id=f"v{n}"), 481),
    ("OPTIONS, no hops left", lambda n: no_hops(sip("OPTIONS", branch=f"z9hG4bK-l{n}")), 200),
    ("BYE, no hops left", lambda n: no_hops(sip("BYE", branch=f"z9hG4bK-m{n}")), 483),
    ("garbage", lambda n: sip("BYE", branch=f"z9hG4bK-g{n}").replace(b"CSeq: 1 BYE", b"CSeq: x"), 400),
    *[(f"bare {m}", lambda n, m=m: mini(m, n), None) for m in ("OPTIONS", "REGISTER", "FOO", "BYE", "CANCEL")],
]


@pytest.mark.parametrize(("make", "status"), [(m, s) for _, m, s in STRAYS], ids=[i for i, _, _ in STRAYS])
def test_requests_outside_a_call_from_an_unverified_source_share_its_bucket_and_get_no_larger_answer(
    make: Any, status: int | None
) -> None:
    """The security review's ``options`` probe: each answer was 1.4-1.8 times its request, with no limit. Now the first
    ``invite_burst`` are answered (if the answer, stripped to what RFC 3261 requires, is no larger than the
    request; the attacker's bare requests: not at all), the rest of the flood gets nothing back."""
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    outs = [uas.receive(make(n), CALLER, 0) for n in range(20)]
    answers = [o for out in outs for o in out if isinstance(o, Send)]
    if status is None:
        assert answers == []
    else:
        assert [statuses(out) for out in outs[:3]] == [[status]] * 3 and outs[3:] == [[]] * 17
    assert all(len(a.data) <= len(make(0)) for a in answers)
    assert uas.dialogs == {} and uas._answered == {}  # answered statelessly: nothing kept for a forged source
    assert statuses(uas.receive(nth_invite(0), CALLER, 0)) == [503]  # the same bucket: spent for new calls too


def test_a_remembered_answer_resent_to_an_unverified_source_costs_its_bucket() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    bad = sip("INVITE", body="hello", ctype="text/plain")  # 415, remembered for its retransmissions
    assert [statuses(uas.receive(bad, CALLER, 0)) for _ in range(6)] == [[415]] * 3 + [[]] * 3
    assert statuses(uas.receive(bad, CALLER, 1_000)) == [415]  # a token later: answered again


def acked_call(uas: SipUas, n: int = 99) -> str:
    """A call from CALLER answered and ACKed: the source has proven it receives at its address."""
    call = next(o for o in uas.receive(nth_invite(n), CALLER, 0) if isinstance(o, IncomingCall))
    uas.answer(call.dialog, 0)
    ack = sip("ACK", 1, to_tag=call.dialog, call_id=f"flood-{n}@caller", branch="z9hG4bK-a")
    assert uas.receive(ack, CALLER, 0) == []
    return call.dialog


def test_a_verified_source_gets_full_answers_outside_a_call() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    acked_call(uas)
    outs = [uas.receive(sip("OPTIONS", branch=f"z9hG4bK-o{n}", call_id=f"o{n}"), CALLER, 0) for n in range(20)]
    assert [statuses(o) for o in outs] == [[200]] * 20
    assert "application/sdp" in (sent(outs[0])[0].get("Accept") or "") and sent(outs[0])[0].get("Server")


def resends(uas: SipUas, until: int) -> tuple[dict[str, list[int]], list[Output]]:
    """Fire the timers up to ``until``: the times each dialog's final response was resent, and the rest."""
    times: dict[str, list[int]] = {}
    rest: list[Output] = []
    start = uas.now_ms
    while (due := uas.next_deadline()) is not None and due <= until:
        for o in uas.advance(due):
            if isinstance(o, Send) and isinstance(m := parse(o.data), Response):
                times.setdefault(tag_of(m.get("To")), []).append(due - start)
            else:
                rest.append(o)
    return times, rest


@pytest.mark.parametrize(
    ("verified", "calls", "finish", "resent", "byes"),
    [
        # RFC 3261 13.3.1.4 for a source that has ACKed before (and for trusted ones, and with no limits).
        # Then a BYE, itself sent 11 times unanswered.
        (True, 1, "answer", [[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]], 11),
        # Unverified: resent at T1, 3·T1, 7·T1, given up at 7.5 s with no BYE; only two at a time resent.
        (False, 1, "answer", [[500, 1500, 3500]], 0),
        (False, 3, "answer", [[500, 1500, 3500], [500, 1500, 3500], []], 0),
        (False, 3, "reject", [[500, 1500, 3500], [500, 1500, 3500], []], 0),
    ],
)
def test_what_an_unacked_final_response_costs(
    verified: bool, calls: int, finish: str, resent: list[list[int]], byes: int
) -> None:
    """The security review's ``amp`` probe: each INVITE never ACKed got 11 200s over 32 s and a BYE resent 11
    times more."""
    uas = SipUas("127.0.0.1", 5070, limits=dataclasses.replace(LIMITS, invite_burst=10))
    if verified:
        acked_call(uas)
        resends(uas, 10 * GIVE_UP_MS)  # that call's timers, out of the way
    t0 = uas.now_ms
    dialogs = [
        next(o for o in uas.receive(nth_invite(n), CALLER, t0) if isinstance(o, IncomingCall)).dialog
        for n in range(calls)
    ]
    for d in dialogs:
        out = uas.answer(d, t0) if finish == "answer" else uas.reject(d, 404, t0)
        assert statuses(out)[-1] == (200 if finish == "answer" else 404)
    times, rest = resends(uas, t0 + 2 * GIVE_UP_MS)
    assert [times.get(d, []) for d in dialogs] == resent
    assert sum(isinstance(m, Request) and m.method == "BYE" for m in sent(rest)) == byes
    if finish == "answer":
        ended = [o for o in rest if isinstance(o, CallEnded)]
        assert sorted(o.dialog for o in ended) == sorted(dialogs) and {o.why for o in ended} == {"no_ack"}
    assert all(d not in uas.dialogs or uas.dialogs[d].state == ENDED for d in dialogs)


def test_an_ack_within_the_short_schedule_confirms_the_call_and_the_source() -> None:
    uas = SipUas("127.0.0.1", 5070, limits=LIMITS)
    call = next(o for o in uas.receive(nth_invite(0), CALLER, 0) if isinstance(o, IncomingCall))
    uas.answer(call.dialog, 0)
    resends(uas, 1_000)
    ack = sip("ACK", 1, to_tag=call.dialog, call_id="flood-0@caller", branch="z9hG4bK-a")
    assert others(uas.receive(ack, CALLER, UNVERIFIED_GIVE_UP_MS - 1)) == []
    assert uas.dialogs[call.dialog].state == "confirmed" and uas.dialogs[call.dialog].pending is None
    assert uas._sources[source_key(CALLER[0])].confirmed


def test_a_burst_of_never_acked_invites_from_a_forged_source_bounces_at_most_three_times_its_bytes() -> None:
    """The bound docs/security.md states, with the default limits (a burst of 10), every call answered at
    once (a queue number), the attacker's INVITEs (the security review's ``amp`` probe): 100 and 200 for each (no 180
    before a 200 at once), two of the 200s resent three times, nothing after 7.5 s. Before: 180 too, 11 200s
    and 11 BYEs each, about 19 times."""
    voice = parse_config({}, "<t>").server.voice
    uas = SipUas("127.0.0.1", 5070, limits=source_limits(voice))
    got = sent_bytes = 0
    for n in range(voice.sip_invite_burst):
        data = nth_invite(n)
        sent_bytes += len(data)
        for o in uas.receive(data, CALLER, 0):
            if isinstance(o, IncomingCall):
                got += sum(len(x.data) for x in uas.answer(o.dialog, 0) if isinstance(x, Send))
            elif isinstance(o, Send):
                got += len(o.data)
    later: list[Output] = []
    while (due := uas.next_deadline()) is not None:
        later += uas.advance(due)
    assert statuses(later) == [200] * 6 and uas.now_ms <= KEEP_MS + UNVERIFIED_GIVE_UP_MS
    got += sum(len(o.data) for o in later if isinstance(o, Send))
    assert 1.5 < got / sent_bytes < 2.5, got / sent_bytes


# ---------------------------------------------------------------------------- the transport and the switch


class _Udp(FakeDatagramTransport):
    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 5070)


class Rig:
    def __init__(self, trunks: int = 2, limits: SourceLimits | None = None) -> None:
        self.clock = task.Clock()
        self.switch = Switch(SwitchConfig(extensions=("1001", "1002"), queues=("2001",), trunks=trunks))
        self.driver = SwitchDriver(self.switch, self.clock)
        self.events: list[SwitchEvent] = []
        self.driver.subscribe(self.events.extend)
        self.sip = SipTransport(self.driver, self.clock, uas=SipUas("127.0.0.1", 0, limits=limits))
        self.udp = _Udp()
        self.sip.makeConnection(self.udp)

    def send(self, data: bytes, addr: tuple[str, int] = CALLER) -> list[Request | Response]:
        before = len(self.udp.written)
        self.sip.datagramReceived(data, addr)
        return self.written(before)

    def written(self, since: int = 0) -> list[Request | Response]:
        return [parse(p) for p, _ in self.udp.written[since:]]


def codes(msgs: list[Request | Response]) -> list[int | str]:
    return [m.status if isinstance(m, Response) else m.method for m in msgs]


def test_a_call_to_a_queue_number_is_answered_and_queued_on_a_trunk() -> None:
    rig = Rig()
    out = rig.send(invite())
    assert codes(out) == [100, 180, 200]
    (call,) = rig.switch.calls.values()
    assert (call.ani, call.dnis, call.attached_data) == ("+31205550101", "2001", {"sip_call_id": "call-1@caller"})
    assert {d: c.state for d, c in call.connections.items()} == {"T1": "connected", "2001": "queued"}
    assert rig.sip.armed_for == 500  # one callLater, for the 200's first retransmission
    rig.clock.advance(0.5)
    assert codes(rig.written(3)) == [200]
    dialog = tag_of(out[-1].get("To"))
    rig.send(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"))
    assert rig.sip.armed_for == KEEP_MS


def test_a_caller_who_never_acks_is_hung_up_on_the_switch_and_by_bye() -> None:
    rig = Rig()
    rig.send(invite())
    rig.clock.advance(GIVE_UP_MS / 1000)
    assert codes(rig.written(3)).count(200) == 10  # at 0.5, 1.5, 3.5, 7.5 s, then every 4 s to 31.5 s; 32 s: BYE
    assert codes(rig.written())[-1] == "BYE"
    assert not rig.switch.calls and rig.sip.by_call == {}


def test_a_call_to_an_extension_rings_until_that_phone_answers_and_its_hangup_is_our_bye() -> None:
    rig = Rig()
    assert codes(rig.send(invite(uri="sip:1001@127.0.0.1"))) == [100, 180]
    (call_id,) = rig.switch.calls
    rig.driver.run(lambda now: rig.switch.answer(call_id, "1001", now))
    ok = rig.written()[-1]
    assert codes([ok]) == [200]
    dialog = tag_of(ok.get("To"))
    rig.send(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"))
    before = len(rig.udp.written)
    rig.driver.run(lambda now: rig.switch.clear_connection(call_id, "1001", now))
    (bye,) = rig.written(before)
    assert codes([bye]) == ["BYE"] and not rig.switch.calls


@pytest.mark.parametrize(
    ("uri", "status"),
    [("sip:9999@127.0.0.1", 404), ("sip:T1@127.0.0.1", 404), ("sip:127.0.0.1", 404)],
)
def test_unknown_numbers_are_404(uri: str, status: int) -> None:
    rig = Rig()
    assert codes(rig.send(invite(uri=uri))) == [100, status]
    assert not rig.switch.calls


def test_no_free_trunk_is_503_and_a_busy_extension_486() -> None:
    rig = Rig(trunks=1)
    rig.send(invite())
    assert codes(rig.send(invite(call_id="call-2@caller", branch="z9hG4bK-2"))) == [100, 503]
    rig = Rig()
    rig.send(invite(uri="sip:1001@h"))
    assert codes(rig.send(invite(uri="sip:1001@h", call_id="call-2@caller", branch="z9hG4bK-2"))) == [100, 486]


def test_digits_reach_the_switch_and_the_callers_bye_clears_the_trunk() -> None:
    rig = Rig()
    dialog = tag_of(rig.send(invite())[-1].get("To"))
    rig.send(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"))
    info = sip("INFO", 2, branch="z9hG4bK-i", to_tag=dialog, body="Signal=7\r\n", ctype="application/dtmf-relay")
    assert codes(rig.send(info)) == [200]
    assert [e.digits for e in rig.events if isinstance(e, DigitsGenerated)] == ["7"]  # type: ignore[attr-defined]
    assert codes(rig.send(sip("BYE", 3, branch="z9hG4bK-b", to_tag=dialog))) == [200]
    assert not rig.switch.calls and rig.sip.by_call == {}


def test_a_cancel_clears_the_call_on_the_switch() -> None:
    rig = Rig()
    rig.send(invite(uri="sip:1001@h"))
    assert codes(rig.send(sip("CANCEL", uri="sip:1001@h"))) == [200, 487]
    assert not rig.switch.calls


def test_garbage_gets_400_over_the_wire_and_the_transport_carries_on() -> None:
    rig = Rig()
    bad = sip("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    (resp,) = rig.send(bad)
    assert isinstance(resp, Response) and resp.status == 400 and "CSeq" in (resp.get("Warning") or "")
    assert codes(rig.send(invite())) == [100, 180, 200]


def test_a_flood_over_udp_leaves_trunks_for_others_and_its_503_is_sent_once() -> None:
    rig = Rig(trunks=4, limits=dataclasses.replace(LIMITS, invite_burst=100, invites_per_s=100, calls=2))
    flood = [codes(rig.send(nth_invite(n))) for n in range(50)]
    # An unverified source: no 180 right before the 200 (docs/sip.md).
    assert flood[:3] == [[100, 200], [100, 200], [503]] and flood[3:] == [[]] * 47
    assert len(rig.switch.calls) == 2  # two trunks of four: the rest are free for everyone else
    before = len(rig.udp.written)
    rig.clock.advance(GIVE_UP_MS / 1000)
    assert 503 not in codes(rig.written(before))  # the 200s are resent until ACKed (then given up); the 503 never
    assert codes(rig.send(invite(), ("127.0.0.2", 5062))) == [100, 200]


def test_closing_hangs_up_every_call() -> None:
    rig = Rig()
    dialog = tag_of(rig.send(invite())[-1].get("To"))
    rig.send(sip("ACK", 1, to_tag=dialog, branch="z9hG4bK-ack"))
    before = len(rig.udp.written)
    rig.sip.close()
    assert codes(rig.written(before)) == ["BYE"] and rig.clock.getDelayedCalls() == []


# ----------------------------------------------------------------------------------- SIPp, end to end

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sip"  # the scenarios docs/sip.md shows
SCENARIO = EXAMPLES / "caller.xml"


def _sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("the SIPp binary `sipp` is not installed: apt-get install -y sip-tester (see .ci/run)")
    return path


@pytest.mark.parametrize("number", ["2001", "3000"], ids=["queue", "ivr"])
def test_sipp_calls_in_presses_a_key_waits_in_the_queue_and_the_agent_hangs_up(tmp_path: Path, number: str) -> None:
    """A stock SIP client completes a call through the centre: INVITE answered by the IVR (3000, whose menu
    sends key 1 to the support queue) or straight by the support queue (2001), DTMF by INFO, hold and unhold by
    re-INVITE, offered to an agent over the agent protocol who answers and hangs up; the centre's BYE ends
    SIPp's call and SIPp reports success."""
    sipp = _sipp()
    db = tmp_path / "store.sqlite"
    tokens = add_users(db)
    sink = Sink()
    config = server_config(tmp_path, sink.port)
    text = config.read_text(encoding="utf-8")
    menu = (Path(__file__).parent / "sip" / "menu.toml").as_posix()
    text, n = re.subn(r"(?m)^(\s*)ivr = \{.*\}", rf'\g<1>ivr = {{ "3000" = "{menu}" }}', text)
    text, m = re.subn(r"(?m)^(\s*)ivr_ms_per_word = \d+", r"\g<1>ivr_ms_per_word = 0", text)
    assert n == 1 and m == 1, "contactcentre/data/default.toml no longer has [server.voice] ivr and ivr_ms_per_word"
    config.write_text(text, encoding="utf-8")
    server = start_server(config, db)
    try:
        sipp_code, sipp_out = asyncio.run(_call(server, tokens["ada"], sipp, tmp_path, number))
    finally:
        code, err = server.stop()
        sink.close()
    assert sipp_code == 0, sipp_out
    assert code == 0, err
    assert "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "select address, outcome, answered_ms is not null, agent_id from interactions where channel='voice'"
        ).fetchone()
    assert row == ("+31205550101", "handled", 1, "ada")


async def _call(server: Server, token: str, sipp: str, tmp: Path, number: str) -> tuple[int, str]:
    agent = await agent_console(server, token)
    await agent.send(json.dumps({"type": "state", "state": "available"}))
    await next_frame(agent, "state", state="available")
    log_file = tmp / "sipp_logs.log"
    cmd = [sipp, f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIO), "-m", "1", "-s", number]
    cmd += ["-i", "127.0.0.1", "-p", "0", "-nostdin", "-timeout", f"{3 * T}s", "-timeout_error"]
    cmd += ["-trace_logs", "-log_file", str(log_file), "-trace_err", "-error_file", str(tmp / "sipp_errors.log")]
    cmd += ["-trace_msg", "-message_file", str(tmp / "sipp_messages.log")]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        offer = await next_frame(agent, "offer", channel="voice")
        assert offer["queue"] == "support"
        await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
        await next_frame(agent, "contact", contact_id=offer["contact_id"])
        # The caller is still busy with its INFO and re-INVITEs: hang up only once it says it is done.
        deadline = asyncio.get_running_loop().time() + T
        while "ready for the agent" not in (log_file.read_text() if log_file.exists() else ""):
            assert asyncio.get_running_loop().time() < deadline, "SIPp never got through DTMF and hold"
            assert proc.returncode is None
            await asyncio.sleep(0.05)  # polling a file SIPp writes, with a deadline
        assert "a=recvonly then a=sendrecv" in log_file.read_text()
        await agent.send(json.dumps({"type": "end", "contact_id": offer["contact_id"]}))
        await next_frame(agent, "wrap_up", contact_id=offer["contact_id"])
        await agent.send(json.dumps({"type": "disposition", "contact_id": offer["contact_id"], "code": "resolved"}))
        await next_frame(agent, "ack", contact_id=offer["contact_id"])
        await agent.send(json.dumps({"type": "wrap_up_done", "contact_id": offer["contact_id"]}))
        await next_frame(agent, "contact_closed", contact_id=offer["contact_id"])
        out, _ = await asyncio.wait_for(proc.communicate(), T)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await agent.close()
    messages = tmp / "sipp_messages.log"
    text = out.decode(errors="replace") + (messages.read_text() if messages.exists() else "")
    return (-1 if proc.returncode is None else proc.returncode), text


def test_the_hang_up_example_leaves_an_abandoned_call(tmp_path: Path) -> None:
    """examples/sip/hang-up.xml, as docs/sip.md runs it (with a shorter -d): no agent is there, the caller
    waits in the support queue and hangs up; SIPp succeeds and the case store has the abandoned call."""
    sipp = _sipp()
    db = tmp_path / "store.sqlite"
    sink = Sink()
    server = start_server(server_config(tmp_path, sink.port), db)
    try:
        cmd = [sipp, f"127.0.0.1:{server.sip_port}", "-sf", str(EXAMPLES / "hang-up.xml"), "-s", "2001", "-m", "1"]
        cmd += ["-d", "300", "-i", "127.0.0.1", "-p", "0", "-nostdin", "-timeout", f"{T}s", "-timeout_error"]
        done = subprocess.run(cmd, capture_output=True, timeout=2 * T, check=False)
    finally:
        code, err = server.stop()
        sink.close()
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:]
    assert code == 0 and "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        row = conn.execute("select address, outcome from interactions where channel = 'voice'").fetchone()
    assert row == ("+31205550102", "abandoned")
