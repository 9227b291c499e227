"""The live server end to end, as a newcomer would try it: ``contactcentre serve`` in its own process, a mail
sent with smtplib, a chat from a stock WebSocket client, an agent console speaking docs/protocol.md, replies
arriving at a real SMTP sink (the smarthost), and a kill -9 in the middle that loses no accepted contact."""

from __future__ import annotations

import asyncio
import json
import smtplib
import sqlite3
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from contactcentre.store.customers import create_customer
from contactcentre.store.db import open_store
from tests.server_proc import Server, Sink, T, add_users, agent_console, next_frame, server_config, start_server


@pytest.fixture
def sink() -> Any:
    s = Sink()
    yield s
    s.close()


def _mail(port: int, *, sender: str, subject: str, body: str, message_id: str) -> None:
    msg = EmailMessage()
    msg["From"] = f"Marieke Jansen <{sender}>"
    msg["To"] = "support@centre.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=T) as smtp:
        smtp.send_message(msg)


def _api(server: Server, path: str, token: str) -> Any:
    req = urllib.request.Request(server.url + path.lstrip("/"), headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=T) as resp:
        return json.loads(resp.read())


def test_mail_and_chat_reach_an_agent_and_the_answers_reach_the_customers(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "store.sqlite"
    tokens = add_users(db)
    server = start_server(server_config(tmp_path, sink.port), db)
    try:
        asyncio.run(_conversation(server, tokens, sink))
        queues = _api(server, "/api/queues", tokens["boss"])
        assert {q["name"] for q in queues["queues"]} >= {"support", "billing"}
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        lines = conn.execute(
            "select channel, direction, body from messages where channel = 'chat' order by id"
        ).fetchall()
        assert ("chat", "inbound", "my router blinks red") in lines
        assert ("chat", "outbound", "Let me look at that.") in lines  # the transcript is in the store
        (delivery,) = conn.execute(
            "select delivery from messages where channel = 'email' and direction = 'outbound' and body like '%reset%'"
        ).fetchone()
        assert delivery == "sent"


async def _conversation(server: Server, tokens: dict[str, str], sink: Sink) -> None:
    loop = asyncio.get_running_loop()
    agent = await agent_console(server, tokens["ada"])
    await agent.send(json.dumps({"type": "state", "state": "available"}))
    await next_frame(agent, "state", state="available")

    # 1. A customer e-mails with a stock client.
    await loop.run_in_executor(
        None,
        lambda: _mail(
            server.smtp_port,
            sender="m.jansen@example.nl",
            subject="Internet down",
            body="Since this morning nothing works.",
            message_id="<first-mail@example.nl>",
        ),
    )
    ack = await loop.run_in_executor(None, lambda: sink.wait_for(lambda m: "[#C-" in str(m["Subject"])))
    assert ack["In-Reply-To"] == "<first-mail@example.nl>"

    offer = await next_frame(agent, "offer", channel="email")
    assert offer["why"]["strategy"] and offer["why"]["candidates"]
    await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
    pop = await next_frame(agent, "screen_pop", contact_id=offer["contact_id"])
    assert pop["matched"] and pop["customer"]["name"] == "Marieke Jansen"
    contact = await next_frame(agent, "contact", contact_id=offer["contact_id"])
    assert any("nothing works" in line["text"] for line in contact["transcript"])
    await agent.send(
        json.dumps({"type": "message", "contact_id": offer["contact_id"], "text": "Please reset the router."})
    )
    await next_frame(agent, "ack", contact_id=offer["contact_id"])
    reply = await loop.run_in_executor(None, lambda: sink.wait_for(lambda m: "reset the router" in m.get_content()))
    assert reply["In-Reply-To"] == "<first-mail@example.nl>"
    assert "<first-mail@example.nl>" in str(reply["References"])
    assert reply["To"] == "m.jansen@example.nl" or "m.jansen@example.nl" in str(reply["To"])
    await agent.send(json.dumps({"type": "end", "contact_id": offer["contact_id"]}))
    await next_frame(agent, "ack", contact_id=offer["contact_id"])

    # 2. Another customer opens a chat from a stock WebSocket client.
    customer = await connect(server.ws("/chat"), proxy=None)
    await customer.send(json.dumps({"type": "hello", "name": "Ann", "email": "ann@example.com", "topic": "Router"}))
    queued = await next_frame(customer, "queued")
    assert queued["position"] >= 1 and queued["token"]
    await customer.send(json.dumps({"type": "message", "text": "my router blinks red", "client_id": "c1"}))
    await next_frame(customer, "ack", client_id="c1")
    offer = await next_frame(agent, "offer", channel="chat")
    await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
    await next_frame(customer, "agent_joined")
    await agent.send(json.dumps({"type": "message", "contact_id": offer["contact_id"], "text": "Let me look at that."}))
    line = await next_frame(customer, "message", **{"from": "agent"})
    assert line["text"] == "Let me look at that."
    await customer.send(json.dumps({"type": "message", "text": "thanks!", "client_id": "c2"}))
    heard = await next_frame(agent, "message", contact_id=offer["contact_id"])
    assert heard["text"] == "thanks!"
    await agent.send(json.dumps({"type": "end", "contact_id": offer["contact_id"]}))
    await next_frame(customer, "closed")
    await customer.close()
    await agent.close()


def test_kill_9_loses_no_accepted_contact(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "store.sqlite"
    tokens = add_users(db)
    config = server_config(tmp_path, sink.port)
    server = start_server(config, db)
    try:
        chat_token = asyncio.run(_leave_work_waiting(server, tokens["ada"]))
    finally:
        server.kill9()  # no shutdown, no flush: only what was acknowledged must survive
    server = start_server(config, db)
    try:
        waiting = _api(server, "/api/contacts?state=queued", tokens["boss"])["contacts"]
        assert {c["channel"] for c in waiting} == {"email", "chat"}, waiting
        asyncio.run(_resume_and_take(server, tokens["ada"], chat_token))
    finally:
        code, err = server.stop()
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("select count(*) from messages where body = 'still there?'").fetchone()
    assert n == 1


async def _leave_work_waiting(server: Server, token: str) -> str:
    """A mail (250 received) and a chat (queued, message acknowledged); the agent is logged in, not ready."""
    loop = asyncio.get_running_loop()
    agent = await agent_console(
        server, token
    )  # logged in away ("not_ready"): the chat queues rather than going offline
    await loop.run_in_executor(
        None,
        lambda: _mail(
            server.smtp_port,
            sender="k9@example.org",
            subject="Before the crash",
            body="Please keep this.",
            message_id="<k9@example.org>",
        ),
    )
    customer = await connect(server.ws("/chat"), proxy=None)
    await customer.send(json.dumps({"type": "hello", "name": "Kim", "email": "kim@example.org", "topic": "Crash"}))
    frame = await next_frame(customer, "queued")
    await customer.send(json.dumps({"type": "message", "text": "still there?", "client_id": "k1"}))
    await next_frame(customer, "ack", client_id="k1")
    # The sockets go (a dropped chat waits for its customer to resume; the agent is away), then the kill.
    await customer.close()
    await agent.close()
    return str(frame["token"])


async def _first(ws: ClientConnection, types: set[str]) -> dict[str, Any]:
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") in types:
            return frame


async def _resume_and_take(server: Server, token: str, chat_token: str) -> None:
    # The customer comes back with the resume token and, not sure the last line arrived, sends it again:
    # it is recognised by its client id (the ack before the crash may have been lost), not stored twice.
    customer = await connect(server.ws("/chat"), proxy=None)
    await customer.send(json.dumps({"type": "resume", "token": chat_token}))
    await next_frame(customer, "resumed")
    await customer.send(json.dumps({"type": "message", "text": "still there?", "client_id": "k1"}))
    again = await next_frame(customer, "ack", client_id="k1")
    assert again["message_id"].startswith("cm-")
    await customer.close()
    agent = await agent_console(server, token)
    await agent.send(json.dumps({"type": "state", "state": "available"}))
    channels = set()
    for _ in range(2):
        offer = await next_frame(agent, "offer")
        channels.add(offer["channel"])
        await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
        contact = await next_frame(agent, "contact", contact_id=offer["contact_id"])
        texts = " ".join(line["text"] for line in contact["transcript"])
        assert "Please keep this." in texts or "still there?" in texts
    assert "email" in channels
    await agent.close()


def test_broken_input_gets_an_error_and_the_server_stays_up(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "store.sqlite"
    add_users(db)
    server = start_server(server_config(tmp_path, sink.port), db)
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=T) as smtp:
            broken = b"From: <x@example.org>\r\nContent-Type: multipart/mixed\r\n\r\n--no boundary at all\r\n"
            with pytest.raises(smtplib.SMTPDataError) as err:
                smtp.sendmail("x@example.org", ["support@centre.example"], broken)
            assert 500 <= err.value.smtp_code < 600
            with pytest.raises(smtplib.SMTPDataError) as err:
                smtp.sendmail("x@example.org", ["support@centre.example"], b"\x00\xff garbage \xfe")
            assert 500 <= err.value.smtp_code < 600

        async def chat_abuse() -> None:
            ws = await connect(server.ws("/chat"), proxy=None, max_size=None)
            await ws.send("{not json")
            assert (await next_frame(ws, "error"))["code"] == "bad_request"
            await ws.send(json.dumps({"type": "no_such_thing"}))
            await next_frame(ws, "error")
            await ws.send("x" * 1_000_000)  # far over the frame limit: the server closes this socket
            with pytest.raises(Exception):  # noqa: B017 — ConnectionClosed of some kind
                await asyncio.wait_for(ws.recv(), T)
            await asyncio.wait_for(ws.wait_closed(), T)
            ws2 = await connect(server.ws("/chat"), proxy=None)  # and serves the next customer
            await ws2.send(json.dumps({"type": "hello", "name": "Ok", "topic": "fine"}))
            await _first(ws2, {"queued", "offline"})
            await ws2.close()
            bad = await connect(server.ws("/agent"), proxy=None)
            await bad.send(json.dumps({"type": "login", "token": "cc_wrong"}))
            assert (await next_frame(bad, "error"))["code"] == "unauthorized"
            await bad.close()
            await ws.close()

        asyncio.run(chat_abuse())
        _mail(server.smtp_port, sender="fine@example.org", subject="Still up?", body="yes", message_id="<ok@x>")
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_a_call_on_the_switch_rings_an_agent_who_answers_and_hangs_up(tmp_path: Path, sink: Sink) -> None:
    """A call placed on a trunk through the CTI link (as a softphone or load generator would) is queued
    with the caller's tier, offered over the agent protocol, answered on the phone (the switch's Established
    is what accepts the offer), and hung up: wrap-up follows and the interaction is in the store."""
    db = tmp_path / "store.sqlite"
    tokens = add_users(db)
    engine = open_store(db)
    with engine.begin() as conn:
        create_customer(conn, 0, name="Gold Caller", tier="gold", identities_=[("phone", "+31 20 555 0101")])
    engine.dispose()
    server = start_server(server_config(tmp_path, sink.port), db)
    try:
        asyncio.run(_call(server, tokens["ada"]))
    finally:
        code, err = server.stop()
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "select address, tier, outcome, answered_ms is not null, agent_id from interactions where channel='voice'"
        ).fetchall()
    assert row == [("+31205550101", "gold", "handled", 1, "ada")]  # and no call from the web page


async def _cti_refuses_a_web_page(server: Server) -> None:
    """What a cross-origin ``fetch(POST)`` from a page in the agent's browser sends to the CTI port: the
    connection is closed without an answer and the JSON line in the body is not executed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.cti_port)
    body = json.dumps({"request": "SimulateInbound", "invoke_id": 1, "ani": "+31209999999", "dnis": "2001"})
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Length: {len(body) + 1}"
    writer.write(f"{head}\r\n\r\n{body}\n".encode())
    assert await asyncio.wait_for(reader.read(), T) == b""  # closed by the server, nothing said
    writer.close()


async def _call(server: Server, token: str) -> None:
    agent = await agent_console(server, token)
    await agent.send(json.dumps({"type": "state", "state": "available"}))
    await next_frame(agent, "state", state="available")
    await _cti_refuses_a_web_page(server)  # had it dialled, its call would be the agent's first offer
    reader, writer = await asyncio.open_connection("127.0.0.1", server.cti_port)
    try:
        login = {"request": "Authenticate", "invoke_id": 0, "token": server.cti_token}
        request = {"request": "SimulateInbound", "invoke_id": 1, "ani": "+31205550101", "dnis": "2001"}  # support
        writer.write(json.dumps(login).encode() + b"\n" + json.dumps(request).encode() + b"\n")
        await writer.drain()
        while True:
            answer = json.loads(await asyncio.wait_for(reader.readline(), T))
            if answer.get("invoke_id") == 1:
                break
        assert answer["ok"], answer
        offer = await next_frame(agent, "offer", channel="voice")
        assert offer["contact_id"] == answer["call_id"] and offer["queue"] == "support"
        await agent.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
        contact = await next_frame(agent, "contact", contact_id=offer["contact_id"])
        assert contact["channel"] == "voice" and contact["tier"] == "gold"
        pop = await next_frame(agent, "screen_pop", contact_id=offer["contact_id"])
        assert pop["customer"]["name"] == "Gold Caller"
        await agent.send(json.dumps({"type": "end", "contact_id": offer["contact_id"]}))
        await next_frame(agent, "wrap_up", contact_id=offer["contact_id"])
        await agent.send(json.dumps({"type": "disposition", "contact_id": offer["contact_id"], "code": "resolved"}))
        await next_frame(agent, "ack", contact_id=offer["contact_id"])
        await agent.send(json.dumps({"type": "wrap_up_done", "contact_id": offer["contact_id"]}))
        await next_frame(agent, "contact_closed", contact_id=offer["contact_id"])
    finally:
        writer.close()
        await writer.wait_closed()
        await agent.close()
