"""The CTI link over ``StringTransport`` with time from ``task.Clock``: requests and responses with invoke ids,
monitored events, errors that keep the connection, the ring timer driven by the clock, and the client helper."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from contactcentre.config import parse_config
from contactcentre.edge.cti.link import CtiClient, CtiProtocol, CtiRequestError, CtiServer
from contactcentre.telephony import Switch, SwitchConfig

RING_S = 20
CUSTOMER = "+31201234567"
TOKEN = "cti-test-token-0123456789"


class Peer:
    """One client connection: write lines, read what the server sent since last time."""

    def __init__(self, server: CtiServer, *, login: bool = True) -> None:
        self.proto: CtiProtocol = server.buildProtocol(None)  # type: ignore[arg-type]
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        if login:
            [ok] = self.send("Authenticate", invoke_id=0, token=TOKEN)
            assert ok == {"response": "Authenticate", "invoke_id": 0, "ok": True, "protocol": 1}

    def send_raw(self, data: bytes) -> list[dict[str, Any]]:
        self.proto.dataReceived(data)
        return self.read()

    def send(self, request: str, invoke_id: int | str | None = 1, **fields: Any) -> list[dict[str, Any]]:
        body = {"request": request, "invoke_id": invoke_id, **fields}
        return self.send_raw(msgspec.json.encode(body) + b"\n")

    def read(self) -> list[dict[str, Any]]:
        data = self.transport.value()
        self.transport.clear()
        return [msgspec.json.decode(line) for line in data.split(b"\n") if line]


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(1_000)  # the switch's time is the clock's seconds in ms: start away from zero
    return c


@pytest.fixture
def server(clock: task.Clock) -> CtiServer:
    sw = Switch(
        SwitchConfig(extensions=("1001", "1002", "1003"), queues=("5000",), trunks=2, ring_timeout_ms=RING_S * 1000),
        start_ms=round(clock.seconds() * 1000),
    )
    return CtiServer(sw, clock, token=TOKEN, max_line=4096)


def names(lines: list[dict[str, Any]]) -> list[str]:
    return [m.get("event") or f"response:{m['response']}" for m in lines]


def test_request_response_echoes_the_invoke_id(server: CtiServer) -> None:
    p = Peer(server)
    [resp] = p.send("MonitorStart", invoke_id=7, device="1001")
    assert resp == {"response": "MonitorStart", "invoke_id": 7, "ok": True, "device": "1001"}
    [resp] = p.send("MonitorStart", invoke_id="abc", device="1002")
    assert resp["invoke_id"] == "abc" and resp["ok"] is True


def test_monitored_events_come_before_the_response(server: CtiServer, clock: task.Clock) -> None:
    agent, other, everything = Peer(server), Peer(server), Peer(server)
    agent.send("MonitorStart", device="1001")
    other.send("MonitorStart", device="1003")
    everything.send("MonitorStart")  # no device: all of them

    call_id = server.simulate_inbound(CUSTOMER, "1001", {"account": "A-17"})
    lines = agent.read()
    assert names(lines) == ["Delivered"]  # the trunk's Originated came before 1001 was in the call
    d = lines[0]
    assert d["call_id"] == call_id and d["device"] == "1001" and d["ani"] == CUSTOMER and d["dnis"] == "1001"
    assert d["attached_data"] == {"account": "A-17"} and d["at_ms"] == 1_000_000 and d["calling_device"] == "T1"
    assert other.read() == []
    assert names(everything.read()) == ["Originated", "Delivered"]

    clock.advance(2)
    lines = agent.send("AnswerCall", invoke_id=3, call_id=call_id, device="1001")
    assert names(lines) == ["Established", "response:AnswerCall"]
    assert lines[0]["at_ms"] == 1_002_000
    assert lines[1] == {"response": "AnswerCall", "invoke_id": 3, "ok": True, "call_id": call_id}

    assert names(agent.send("HoldCall", call_id=call_id, device="1001")) == ["Held", "response:HoldCall"]
    assert names(agent.send("RetrieveCall", call_id=call_id, device="1001")) == ["Retrieved", "response:RetrieveCall"]
    lines = agent.send("SetAttachedData", call_id=call_id, data={"note": "vip"})
    assert names(lines) == ["AttachedDataChanged", "response:SetAttachedData"]
    assert lines[0]["attached_data"] == {"account": "A-17", "note": "vip"}

    # Blind transfer to 1003: its monitor starts seeing the call, with the data that travelled along.
    lines = agent.send("TransferCall", invoke_id=9, call_id=call_id, device="1001", to="1003")
    assert names(lines) == ["Transferred", "response:TransferCall"]  # 1001 is out: the rest is not its business
    assert names(other.read()) == ["Transferred", "Delivered"]
    lines = other.send("AnswerCall", call_id=call_id, device="1003")
    assert names(lines) == ["Established", "response:AnswerCall"]
    assert lines[0]["attached_data"] == {"account": "A-17", "note": "vip"}
    assert agent.read() == []  # 1001 left the call: its monitor hears no more of it

    everything.read()
    lines = other.send("ClearConnection", call_id=call_id, device="1003")
    assert names(lines) == ["ConnectionCleared", "response:ClearConnection"]
    assert [m["device"] for m in everything.read()] == ["1003", "T1"]  # the caller is cleared with it

    p = Peer(server)
    [err] = p.send("MonitorStop", device="1001")
    assert err["ok"] is True
    assert agent.send("MonitorStop", device="1001")[0]["ok"] is True
    server.simulate_inbound(CUSTOMER, "1001")
    assert agent.read() == []


def test_make_call_consultative_transfer_and_conference(server: CtiServer) -> None:
    a = Peer(server)
    a.send("MonitorStart", device="1001")
    [*_, resp] = a.send("MakeCall", invoke_id=1, **{"from": "1001", "to": "1002"})
    assert resp["ok"] and resp["call_id"] == "call-1"
    a.send("AnswerCall", call_id="call-1", device="1002")
    lines = a.send("ConsultationCall", invoke_id=2, call_id="call-1", device="1001", to="1003")
    assert names(lines) == ["Held", "Originated", "Delivered", "response:ConsultationCall"]
    assert lines[-1]["held_call_id"] == "call-1" and lines[-1]["active_call_id"] == "call-2"
    a.send("AnswerCall", call_id="call-2", device="1003")
    lines = a.send("ConferenceCall", invoke_id=3, held_call_id="call-1", active_call_id="call-2")
    assert names(lines) == ["Conferenced", "response:ConferenceCall"]
    assert sorted(lines[0]["parties"]) == ["1001", "1002", "1003"]
    assert server.switch.calls["call-1"].state == "conferenced"

    # Consultative transfer on the wire: a second call, consult from 1001, complete.
    server.switch.clear_call("call-1", server.driver.now_ms())
    a.read()
    cid = server.simulate_inbound(CUSTOMER, "1001")
    a.send("AnswerCall", call_id=cid, device="1001")
    active = a.send("ConsultationCall", call_id=cid, device="1001", to="1002")[-1]["active_call_id"]
    a.send("AnswerCall", call_id=active, device="1002")
    lines = a.send("TransferCall", invoke_id=4, held_call_id=cid, active_call_id=active)
    assert names(lines) == ["Transferred", "response:TransferCall"]
    assert lines[0]["secondary_call_id"] == active and lines[0]["to_device"] == "1002"
    [snap] = a.send("SnapshotCall", call_id=cid)
    assert snap["call"]["state"] == "connected"
    assert [c["device"] for c in snap["call"]["connections"]] == ["T1", "1002"]
    [snap] = a.send("SnapshotDevice", device="1002")
    assert snap["calls"] == [{"call_id": cid, "state": "connected"}]


@pytest.mark.parametrize(
    ("line", "code", "response"),
    [
        (b"{not json\n", "bad_json", "error"),
        (b"\xff\xfe{}\n", "bad_json", "error"),
        (b"[1, 2]\n", "bad_request", "error"),
        (b'{"invoke_id": 4}\n', "bad_request", "error"),
        (b'{"request": "Dance", "invoke_id": 4}\n', "unknown_request", "Dance"),
        (b'{"request": "AnswerCall", "invoke_id": 4, "call_id": 5, "device": "1001"}\n', "bad_request", "AnswerCall"),
        (b'{"request": "AnswerCall", "invoke_id": 4, "device": "1001"}\n', "bad_request", "AnswerCall"),
        (b'{"request": "AnswerCall", "invoke_id": 4, "call_id": "call-42", "device": "1001"}\n', "unknown_call", None),
        (b'{"request": "MonitorStart", "invoke_id": 4, "device": "9999"}\n', "unknown_device", None),
        (b'{"request": "MakeCall", "invoke_id": 4, "from": "1001", "to": "abc"}\n', "invalid_number", None),
        (b'{"request": "TransferCall", "invoke_id": 4, "call_id": "call-1"}\n', "bad_request", None),
        (b'{"request": "TransferCall", "invoke_id": 4, "held_call_id": "call-1"}\n', "bad_request", None),
        (b'{"request": "SetAttachedData", "invoke_id": 4, "call_id": "x", "data": {"a": 1}}\n', "bad_request", None),
        (b'{"request": "HoldCall", "invoke_id": true, "call_id": "x", "device": "1001"}\n', "bad_request", None),
    ],
)
def test_errors_answer_and_keep_the_connection(server: CtiServer, line: bytes, code: str, response: str | None) -> None:
    p = Peer(server)
    [err] = p.send_raw(line)
    assert err["ok"] is False and err["error"]["code"] == code and err["error"]["message"]
    if response is not None:
        assert err["response"] == response
    if b'"invoke_id": 4' in line:
        assert err["invoke_id"] == 4
    assert not p.transport.disconnecting
    [ok] = p.send("MonitorStart", invoke_id=5, device="1001")  # still talking
    assert ok["ok"] and ok["invoke_id"] == 5


def test_crlf_lines_and_blank_lines_are_fine(server: CtiServer) -> None:
    p = Peer(server)
    lines = p.send_raw(b'\r\n\n{"request": "MonitorStart", "invoke_id": 1, "device": "1001"}\r\n')
    assert [(m["response"], m["ok"]) for m in lines] == [("MonitorStart", True)]


def test_oversized_line_is_answered_and_dropped_the_connection_stays(server: CtiServer) -> None:
    p = Peer(server)
    big = b'{"request": "MonitorStart", "pad": "' + b"x" * 5000 + b'"}'
    # In pieces, its end arriving later, with a good request right behind it.
    lines = p.send_raw(big[:4500])
    assert [(m["ok"], m["error"]["code"]) for m in lines] == [(False, "line_too_long")]
    lines = p.send_raw(big[4500:] + b'\n{"request": "MonitorStart", "invoke_id": 8, "device": "1001"}\n')
    assert [(m["response"], m["invoke_id"], m["ok"]) for m in lines] == [("MonitorStart", 8, True)]
    # Whole, in one write, followed by another request in the same write.
    lines = p.send_raw(big + b'\n{"request": "MonitorStart", "invoke_id": 9, "device": "1002"}\n')
    assert [m.get("error", {}).get("code") for m in lines] == ["line_too_long", None]
    assert lines[1]["invoke_id"] == 9
    assert not p.transport.disconnecting
    assert p.proto.monitors == {"1001", "1002"}


def test_a_refused_operation_leaves_the_switch_alone(server: CtiServer) -> None:
    p = Peer(server)
    cid = server.simulate_inbound(CUSTOMER, "1001")
    before = server.switch.snapshot()
    [err] = p.send("HoldCall", call_id=cid, device="1001")  # ringing: cannot hold yet
    assert err["error"]["code"] == "invalid_state" and "'hold'" in err["error"]["message"]
    assert server.switch.snapshot() == before


def test_ring_timer_fires_on_the_clock(server: CtiServer, clock: task.Clock) -> None:
    p = Peer(server)
    p.send("MonitorStart", device="1001")
    cid = server.simulate_inbound(CUSTOMER, "1001")
    p.read()
    assert server.driver.armed_for == 1_000_000 + RING_S * 1000
    assert len(clock.getDelayedCalls()) == 1  # one callLater for the switch, however many calls ring
    clock.advance(RING_S - 1)
    assert p.read() == []
    clock.advance(1)
    lines = p.read()
    assert names(lines) == ["Failed"]  # then the trunk is cleared, in a call 1001 is no longer part of
    assert lines[0]["cause"] == "no_answer" and lines[0]["at_ms"] == 1_000_000 + RING_S * 1000
    assert cid not in server.switch.calls
    assert clock.getDelayedCalls() == [] and server.driver.armed_for is None


def test_answering_disarms_and_new_calls_rearm_one_timer(server: CtiServer, clock: task.Clock) -> None:
    p = Peer(server)
    first = server.simulate_inbound(CUSTOMER, "1001")
    clock.advance(5)
    server.simulate_inbound("+31999", "1002")
    assert len(clock.getDelayedCalls()) == 1 and server.driver.armed_for == 1_000_000 + RING_S * 1000
    p.send("AnswerCall", call_id=first, device="1001")
    assert len(clock.getDelayedCalls()) == 1 and server.driver.armed_for == 1_005_000 + RING_S * 1000
    clock.advance(RING_S)
    assert [c.state for c in server.switch.connections_of("1001")] == ["connected"]
    assert server.switch.connections_of("1002") == [] and clock.getDelayedCalls() == []


def test_timer_events_reach_monitors_even_when_the_request_is_refused(clock: task.Clock) -> None:
    """Time from the centre's clock (``now_ms``): a request can find a ring timer due before the reactor's
    callLater has run; the timer fires first and its events go out even though the request is refused."""
    now = [1_000_000]
    sw = Switch(SwitchConfig(extensions=("1001",), ring_timeout_ms=RING_S * 1000), start_ms=now[0])
    server = CtiServer(sw, clock, token=TOKEN, now_ms=lambda: now[0])
    p = Peer(server)
    p.send("MonitorStart", device="1001")
    cid = server.simulate_inbound(CUSTOMER, "1001")
    p.read()
    now[0] += RING_S * 1000
    lines = p.send("AnswerCall", call_id=cid, device="1001")
    assert names(lines) == ["Failed", "response:AnswerCall"]
    assert lines[-1]["error"]["code"] == "unknown_call"
    assert server.driver.armed_for is None and clock.getDelayedCalls() == []


def test_simulate_inbound_on_the_wire_and_when_switched_off(clock: task.Clock) -> None:
    sw = Switch(SwitchConfig(extensions=("1001",), queues=("5000",), trunks=1), start_ms=1_000_000)
    p = Peer(CtiServer(sw, clock, token=TOKEN))
    [resp] = p.send("SimulateInbound", ani=CUSTOMER, dnis="5000", attached_data={"lang": "nl"})
    assert resp["ok"] and sw.calls[resp["call_id"]].state == "queued"
    [err] = p.send("SimulateInbound", ani=CUSTOMER, dnis="5000")
    assert err["error"]["code"] == "no_trunk"
    p2 = Peer(CtiServer(Switch(SwitchConfig(extensions=("1001",))), clock, token=TOKEN, allow_simulation=False))
    [err] = p2.send("SimulateInbound", ani=CUSTOMER, dnis="1001")
    assert err["error"]["code"] == "not_allowed"


def test_a_subscriber_may_operate_from_its_callback(server: CtiServer) -> None:
    """An ACD bridge routes a queued call the moment it is queued; every subscriber still sees one order."""
    seen: list[str] = []

    def route(events: list[Any]) -> None:
        for ev in events:
            if type(ev).__name__ == "Queued":
                server.driver.run(lambda now, ev=ev: server.switch.deflect(ev.call_id, ev.device, "1002", now))

    server.driver.subscribe(route)
    server.driver.subscribe(lambda events: seen.extend(type(e).__name__ for e in events))
    p = Peer(server)
    p.send("MonitorStart")
    server.simulate_inbound(CUSTOMER, "5000")
    assert seen == ["Originated", "Queued", "Diverted", "Delivered"]
    assert names(p.read()) == seen


def test_client_helper_round_trip(server: CtiServer) -> None:
    """``CtiClient`` against the server, bytes pumped by hand between two StringTransports."""
    got: list[dict[str, Any]] = []
    client = CtiClient(on_event=got.append)
    ct = StringTransport()
    client.makeConnection(ct)
    peer = Peer(server, login=False)

    def pump() -> None:
        while ct.value() or peer.transport.value():
            up, ct_data = ct.value(), None
            ct.clear()
            if up:
                peer.proto.dataReceived(up)
            ct_data = peer.transport.value()
            peer.transport.clear()
            if ct_data:
                client.dataReceived(ct_data)

    results: list[Any] = []
    client.authenticate(TOKEN).addCallback(results.append)
    client.request("MonitorStart", device="1001").addCallback(results.append)
    client.request("MakeCall", from_="1001", to="1002").addCallback(results.append)
    failures: list[Any] = []
    client.request("AnswerCall", call_id="nope", device="1001").addErrback(failures.append)
    pump()
    assert [r["response"] for r in results] == ["Authenticate", "MonitorStart", "MakeCall"]
    assert results[2]["call_id"] == "call-1"
    assert [e["event"] for e in got] == ["Originated", "Delivered"] and client.events == got
    [f] = failures
    assert isinstance(f.value, CtiRequestError) and f.value.code == "unknown_call"


def test_generate_digits_on_the_wire(clock: task.Clock) -> None:
    """The caller's trunk presses keys in an IVR call: a monitor on the IVR number sees ``DigitsGenerated``."""
    sw = Switch(SwitchConfig(extensions=("1001",), queues=("5000",), ivrs=("3000",), trunks=2), start_ms=1_000_000)
    p = Peer(CtiServer(sw, clock, token=TOKEN))
    p.send("MonitorStart", device="3000")
    lines = p.send("SimulateInbound", ani=CUSTOMER, dnis="3000")
    assert names(lines) == ["Delivered", "Established", "response:SimulateInbound"]  # Originated: before it joined
    cid = lines[-1]["call_id"]
    lines = p.send("GenerateDigits", invoke_id=7, call_id=cid, device="T1", digits="42#")
    assert names(lines) == ["DigitsGenerated", "response:GenerateDigits"]
    assert lines[0]["digits"] == "42#" and lines[0]["device"] == "T1" and lines[0]["number"] == CUSTOMER
    assert lines[1] == {"response": "GenerateDigits", "invoke_id": 7, "ok": True, "call_id": cid}
    for fields, code in (
        ({"call_id": cid, "device": "T1", "digits": "9x"}, "bad_request"),
        ({"call_id": cid, "device": "T1"}, "bad_request"),
        ({"call_id": cid, "device": "T1", "digits": 5}, "bad_request"),
        ({"call_id": cid, "device": "1001", "digits": "1"}, "not_in_call"),
        ({"call_id": "call-99", "device": "T1", "digits": "1"}, "unknown_call"),
    ):
        [err] = p.send("GenerateDigits", **fields)
        assert err["error"]["code"] == code, fields


# ------------------------------------------------------------------------------------- authentication


def closed(p: Peer) -> bool:
    return bool(p.transport.disconnecting)


def test_a_browsers_cross_origin_post_is_closed_unread_and_dials_nothing(server: CtiServer) -> None:
    """A web page's ``fetch(POST)`` to the CTI port: the request line is not JSON, so the connection closes
    without a byte back and the JSON line in the body is never executed."""
    body = b'{"request": "MakeCall", "invoke_id": 1, "from": "1001", "to": "+31209999999"}\n'
    post = b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8082\r\nContent-Type: text/plain\r\nOrigin: http://evil.example\r\n"
    p = Peer(server, login=False)
    p.proto.dataReceived(post + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert closed(p) and p.transport.value() == b""
    assert server.switch.calls == {} and server.driver.switch.connections_of("1001") == []


@pytest.mark.parametrize(
    "first",
    [
        {"request": "MakeCall", "from": "1001", "to": "1002"},  # no login at all
        {"request": "Authenticate", "token": "wrong-token-0123456789"},
        {"request": "Authenticate", "token": TOKEN[:-1]},
        {"request": "Authenticate"},
        {"request": "Authenticate", "token": 5},
    ],
)
def test_a_first_line_that_is_not_a_login_with_the_token_is_refused_and_closed(
    server: CtiServer, first: dict[str, Any]
) -> None:
    p = Peer(server, login=False)
    then = {"request": "MakeCall", "invoke_id": 2, "from": "1001", "to": "1002"}  # pipelined behind it
    lines = p.send_raw(msgspec.json.encode({**first, "invoke_id": 1}) + b"\n" + msgspec.json.encode(then) + b"\n")
    assert lines == [
        {
            "response": "Authenticate",
            "invoke_id": 1,
            "ok": False,
            "error": {"code": "unauthorized", "message": "the first line must be Authenticate with the server's token"},
        }
    ]
    assert closed(p) and server.switch.calls == {}
    assert p.send("Authenticate", token=TOKEN) == [] and p.send("MakeCall", to="1002", **{"from": "1001"}) == []
    assert server.switch.calls == {}  # a refused connection reads nothing more, not even a second try


def test_a_connection_that_does_not_log_in_in_time_is_closed(server: CtiServer, clock: task.Clock) -> None:
    quiet, prompt = Peer(server, login=False), Peer(server, login=False)
    assert quiet.send_raw(b"\r\n\n") == [] and not closed(quiet)  # blank lines are nothing, before or after
    clock.advance(server.login_timeout_s - 1)
    prompt.send("Authenticate", token=TOKEN)
    assert not closed(quiet)
    clock.advance(1)
    assert closed(quiet) and quiet.read()[0]["error"]["code"] == "unauthorized"
    assert not closed(prompt) and clock.getDelayedCalls() == []  # the login cancelled its timer
    assert prompt.send("MakeCall", to="1002", **{"from": "1001"})[-1]["ok"] is True


def test_an_oversized_first_line_closes_the_connection(server: CtiServer) -> None:
    p = Peer(server, login=False)
    p.proto.dataReceived(b'{"request": "Authenticate", "token": "' + b"x" * 5000)
    assert closed(p) and p.transport.value() == b""


def test_the_server_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        CtiServer(Switch(SwitchConfig(extensions=("1001",))), task.Clock(), token="")


def test_serve_puts_the_cti_link_and_sip_on_addresses_of_their_own(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    """``[server] cti_host`` / ``sip_host``: the web site on one address, call control on another."""
    from contactcentre.server.runtime import serve

    server = {"host": "127.0.0.1", "cti_host": "127.0.0.2", "sip_host": "127.0.0.3", "email": {"enabled": False}}
    server["voice"] = {"cti_token": TOKEN, "sip_trusted": ["127.0.0.1"]}  # a bare OPTIONS gets its answer
    queues = [{"name": "support", "channels": ["voice"]}]
    cfg = parse_config({"queues": queues, "agents": [{"id": "a1"}], "server": server}, "<test>")
    loop = reactor_loop

    async def login(host: str, port: int) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(json.dumps({"request": "Authenticate", "invoke_id": 1, "token": TOKEN}).encode() + b"\n")
        try:
            return json.loads(await asyncio.wait_for(reader.readline(), 30))
        finally:
            writer.close()

    def options(host: str, port: int) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(30)
            udp.bind(("127.0.0.1", 0))
            me = udp.getsockname()[1]
            udp.sendto(
                f"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-o\r\n"
                f"From: <sip:t@127.0.0.1>;tag=t\r\nTo: <sip:{host}>\r\nCall-ID: o@t\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n".encode(),
                (host, port),
            )
            return udp.recv(4096)

    async def main() -> tuple[Any, dict[str, Any], bytes, BaseException | None]:
        stop = asyncio.Event()
        ready: asyncio.Future[Any] = loop.create_future()
        ports = {"http_port": 0, "ws_port": 0, "cti_port": 0, "sip_port": 0}
        task = loop.create_task(serve(cfg, tmp_path / "s.sqlite", **ports, ready=ready.set_result, stop=stop))
        try:
            info = await asyncio.wait_for(ready, 30)
            ok = await login("127.0.0.2", info.cti_port)
            answer = await loop.run_in_executor(None, options, "127.0.0.3", info.sip_port)
            refused: BaseException | None = None
            try:
                await login("127.0.0.1", info.cti_port)
            except OSError as exc:
                refused = exc
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return info, ok, answer, refused

    info, ok, answer, refused = loop.run_until_complete(main())
    assert (info.host, info.cti_host, info.sip_host, info.cti_token) == ("127.0.0.1", "127.0.0.2", "127.0.0.3", TOKEN)
    assert ok["ok"] is True and answer.startswith(b"SIP/2.0 200 ")
    assert isinstance(refused, ConnectionRefusedError)  # not on the web site's address


def test_json_nested_too_deep_is_bad_input_before_and_after_the_login(server: CtiServer) -> None:
    """``[[[[…`` within the line limit overflows the decoder's stack (RecursionError). Before the login it is a
    first line that is not a login (closed, no answer); after it, ``bad_json`` and the link carries on, as
    every other front door treats it (``limits.decode_json``), not an exception out of ``dataReceived``."""
    deep = b"[" * 4000 + b"\n"  # within this server's 4096-byte line limit
    stranger = Peer(server, login=False)
    stranger.proto.dataReceived(deep)
    assert closed(stranger) and stranger.transport.value() == b""
    p = Peer(server)
    [answer] = p.send_raw(deep)
    assert answer["ok"] is False and answer["error"]["code"] == "bad_json" and not closed(p)
    assert p.send("MakeCall", to="1002", **{"from": "1001"})[-1]["ok"] is True
