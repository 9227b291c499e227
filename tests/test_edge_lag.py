"""The adapters against a router that lags them, as an edge node's replica router does (``tests/lagging.py``):
inputs reach the router a step of the loop after they are submitted, staged store work crosses an encoding,
and only ``await centre.commit()`` says the router has applied them. A chat from hello to close with the agent
on a real console, and an e-mail's intake, must come out as they do in one process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from contactcentre.edge.agents.gateway import AgentGateway
from contactcentre.edge.chat.channel import ChatChannel
from contactcentre.edge.email.channel import EmailChannel
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store import users
from contactcentre.store.privacy import audit_trail
from contactcentre.store.schema import cases, interactions, messages
from tests.lagging import lagging
from tests.test_agent_gateway import CONFIG, Console
from tests.test_channel_email import HOUR_MS, Sink, World, inbound, mail, make_config

TIMEOUT = 10.0


async def _recv(ws: Any, kind: str) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert frame["type"] == kind, frame
    return frame


def test_a_chat_with_an_agent_on_a_console_against_a_lagging_router(tmp_path: Path) -> None:
    async def main() -> None:
        centre = lagging(await open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}"))
        now = centre.now_ms()
        token = await centre.write(lambda c: users.add_user(c, "ann", "agent", now, agent_id="a1"))
        chat = ChatChannel(centre)
        gateway = AgentGateway(centre)
        try:
            async with (
                serve(chat.handle, "127.0.0.1", 0) as chat_server,
                serve(gateway.handle, "127.0.0.1", 0) as agent_server,
            ):
                chat_port = next(iter(chat_server.sockets)).getsockname()[1]
                agent_port = next(iter(agent_server.sockets)).getsockname()[1]
                console = Console(await connect(f"ws://127.0.0.1:{agent_port}/agent", proxy=None))
                customer = await connect(f"ws://127.0.0.1:{chat_port}/chat", proxy=None)
                try:
                    await console.send(type="login", token=token)
                    welcome = await console.recv()
                    # The login is applied before the welcome says where the agent is.
                    assert (welcome["type"], welcome["state"], welcome["reason"]) == ("welcome", "away", "not_ready")
                    await console.send(type="state", state="available")
                    ack = await console.expect("ack", **{"for": "state"})
                    assert ack["state"] == "available"  # the state the router has after the change

                    await customer.send(json.dumps({"type": "hello", "name": "Ann", "email": "ann@example.com"}))
                    queued = await _recv(customer, "queued")  # not "unavailable": the router had not answered yet
                    cid = queued["contact_id"]
                    assert queued["case"] and queued["case"].startswith("C-")  # read back: the op ran elsewhere
                    rows = await centre.read(
                        lambda c: (
                            c.execute(
                                select(cases.c.token)
                                .join(interactions, interactions.c.case_id == cases.c.id)
                                .where(interactions.c.id == cid)
                            )
                            .scalars()
                            .all()
                        )
                    )
                    assert rows == [queued["case"]]

                    offer = await console.expect("offer", contact_id=cid)
                    await console.send(type="accept", offer_id=offer["offer_id"])
                    await console.expect("ack", **{"for": "accept"})
                    assert (await _recv(customer, "agent_joined"))["agent"] == "a1"
                    await console.expect("contact", contact_id=cid)
                    pops = [f for f in console.frames if f["type"] == "screen_pop" and f.get("contact_id") == cid]
                    pop = pops[0] if pops else await console.expect("screen_pop", contact_id=cid)
                    assert pop["matched"] is True

                    await console.send(type="message", contact_id=cid, text="How can I help?")
                    sent = await console.expect("ack", **{"for": "message"})
                    line = await _recv(customer, "message")
                    assert (line["text"], line["message_id"]) == ("How can I help?", sent["message_id"])
                    await customer.send(json.dumps({"type": "message", "text": "My invoice", "client_id": "c1"}))
                    assert (await _recv(customer, "ack"))["client_id"] == "c1"
                    assert (await console.expect("message", contact_id=cid))["text"] == "My invoice"

                    await console.send(type="end", contact_id=cid)
                    await console.expect("ack", **{"for": "end"})
                    assert (await _recv(customer, "closed"))["reason"] == "ended"
                    await console.send(type="wrap_up_done", contact_id=cid)
                    await console.expect("contact_closed", contact_id=cid)

                    refused = centre.driver.refused
                    await console.send(type="logout")
                    await console.expect("ack", **{"for": "logout"})
                    assert await console.closed() == (1000, "logged out")
                    await centre.commit()
                    # Closing a console that logged out puts nobody away: nothing the router refuses.
                    assert centre.router.agent("a1").state == "logged_out" and centre.driver.refused == refused

                    # The screen-pop's audit record crossed the wire as data and was written by the router's writer.
                    customer_id = pop["customer"]["id"]
                    reads = await centre.read(audit_trail, customer_id)
                    assert [r["detail"]["what"] for r in reads if r["action"] == "customer.read"][:1] == ["screen-pop"]
                    transcript = await centre.read(
                        lambda c: c.execute(select(messages.c.body).where(messages.c.interaction_id == cid)).all()
                    )
                    assert [r.body for r in transcript] == ["How can I help?", "My invoice"]
                    assert centre.sent > 0  # everything above went through the lag
                finally:
                    await customer.close()
                    await console.close()
        finally:
            await chat.stop()
            await gateway.stop()
            await close_centre(centre)

    asyncio.run(main())


def test_a_new_mail_against_a_lagging_router_gets_its_due_time_and_promise(tmp_path: Path) -> None:
    """The case's first-response due time and the acknowledgement's promise come from the router's answer to
    the arrival (its SLA deadline), which a lagging router gives only once the mail is committed."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = Sink()
        from aiosmtpd.smtp import SMTP

        sink_server = await loop.create_server(lambda: SMTP(sink, hostname="sink.test", loop=loop), "127.0.0.1", 0)
        sink_port = sink_server.sockets[0].getsockname()[1]
        centre = lagging(await open_centre(make_config(sink_port), f"sqlite:///{tmp_path / 's.sqlite'}"))
        channel = EmailChannel(centre, retry_base_s=0.001)
        try:
            port = await channel.start("127.0.0.1", 0)
            w = World(centre, channel, port, sink)
            data, msgid = mail()
            code, reply, _ = await w.send(data)
            assert code == 250, reply
            msg = inbound(w, msgid)
            contact = w.rows(select(interactions).where(interactions.c.id == msg.interaction_id))[0]
            case = w.rows(select(cases).where(cases.c.id == msg.case_id))[0]
            assert f"[#{case.token}]" in reply
            assert case.first_response_due_ms == contact.started_ms + 4 * HOUR_MS  # the queue's e-mail target
            _, _, ack = await sink.next()
            assert "within 4 hours" in ack.get_content()
            assert centre.router.contact(contact.id).state == "queued"
            queued = [e for e in centre.router.contact_list() if e.channel == "email"]
            assert [c.id for c in queued] == [contact.id]
        finally:
            await channel.stop()
            await close_centre(centre)
            sink_server.close()
            await sink_server.wait_closed()

    asyncio.run(main())
