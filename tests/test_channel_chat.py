"""The web chat channel end to end: real WebSockets on 127.0.0.1, a real centre on SQLite, the agent played by
submitting router inputs. Nothing sleeps: frames are awaited with a timeout, router events through futures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

import contactcentre.events as E
from contactcentre.config import CentreConfig, parse_config
from contactcentre.edge.chat.channel import MAX_TEXT, ChatChannel, ChatError, token_hash
from contactcentre.server.centre import Centre
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.server.signals import AgentTyping, CustomerPresence, CustomerTyping, Signal
from contactcentre.store.customers import create_customer
from contactcentre.store.schema import cases, interactions, messages

TIMEOUT = 10.0


def make_config(name: str = "Test Centre", limits: dict[str, Any] | None = None, **chat: Any) -> CentreConfig:
    return parse_config(
        {
            "name": name,
            "skills": {"general": "General"},
            "tiers": {"gold": {"priority": 3}},
            "queues": [
                {"name": "support", "skills": {"general": 1}, "channels": ["chat", "email"]},
                {"name": "sales", "skills": {"general": 1}, "channels": ["chat"], "label": "Orders & <offers>"},
            ],
            "agents": [
                {"id": "a1", "name": "Ada Lovelace", "skills": {"general": 5}, "capacity": {"chat": 1, "email": 1}},
                {"id": "a2", "name": "Alan Turing", "skills": {"general": 5}, "capacity": {"chat": 1, "email": 1}},
            ],
            "channels": {"chat": {"wrap_up_s": 0}},  # a freed agent takes the next chat at once
            "server": {"chat": chat, "limits": limits or {}},
        },
        "<test>",
    )


# ------------------------------------------------------------------------------------------------ harness


@dataclass
class Env:
    centre: Centre
    chat: ChatChannel
    url: str
    events: list[E.Event] = field(default_factory=list)
    waiters: list[tuple[Callable[[E.Event], bool], asyncio.Future[E.Event]]] = field(default_factory=list)

    def watch(self, batch: list[E.Event]) -> None:
        self.events.extend(batch)
        for ev in batch:
            for pred, fut in list(self.waiters):
                if not fut.done() and pred(ev):
                    fut.set_result(ev)
                    self.waiters.remove((pred, fut))

    async def event(self, pred: Callable[[E.Event], bool], since: int = 0) -> Any:
        """The first router/channel event (seen since event number ``since``, or still to come) matching ``pred``."""
        for ev in self.events[since:]:
            if pred(ev):
                return ev
        fut: asyncio.Future[E.Event] = asyncio.get_running_loop().create_future()
        self.waiters.append((pred, fut))
        return await asyncio.wait_for(fut, TIMEOUT)

    def submit(self, event_type: type[E.Event], **fields: Any) -> None:
        self.centre.submit(event_type(at_ms=self.centre.now_ms(), **fields))

    def login(self, agent_id: str, away: str | None = None) -> None:
        self.submit(E.AgentLoggedIn, agent_id=agent_id, away_reason=away)

    async def accept(self, contact_id: str, since: int = 0) -> str:
        """The agent the router offers ``contact_id`` to accepts it; returns that agent's id."""
        offer = await self.event(lambda ev: isinstance(ev, E.OfferMade) and ev.contact_id == contact_id, since)
        self.submit(E.OfferAccepted, offer_id=offer.offer_id, contact_id=contact_id, agent_id=offer.agent_id)
        return offer.agent_id

    async def rows(self, table: Any, *where: Any) -> list[dict[str, Any]]:
        def q(conn: Any) -> list[dict[str, Any]]:
            return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]

        return await self.centre.read(q)


@contextlib.asynccontextmanager
async def running(db: Path, config: CentreConfig | None = None, *, restore: bool = False) -> AsyncIterator[Env]:
    config = config or make_config()
    centre = await open_centre(config, f"sqlite:///{db}")
    env = Env(centre, None, "")  # type: ignore[arg-type]
    centre.subscribe(env.watch)
    env.chat = ChatChannel(centre)
    if restore:
        env.chat.restore()
    server = await serve(env.chat.handle, "127.0.0.1", 0, max_size=config.server.chat.max_frame_bytes)
    port = next(iter(server.sockets)).getsockname()[1]
    env.url = f"ws://127.0.0.1:{port}/chat"
    try:
        yield env
    finally:
        await env.chat.stop()
        server.close()
        await server.wait_closed()
        await close_centre(centre)


async def client(env: Env) -> ClientConnection:
    return await connect(env.url, proxy=None, open_timeout=TIMEOUT)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["type"] == kind, frame
    return frame


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; its close code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.close_code is not None
    return ws.close_code


async def hello(env: Env, **fields: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await client(env)
    await send(ws, type="hello", name="Ann", topic="My invoice", **fields)
    return ws, await recv(ws)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------- the chat


def test_a_chat_from_hello_to_the_agent_ending_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:

            def gold_customer(conn: Any) -> str:
                ids = [("email", "ann@example.com")]
                return create_customer(conn, env.centre.now_ms(), name="Ann", tier="gold", identities_=ids)

            customer_id = await env.centre.write(gold_customer)
            env.login("a1", away="break")  # logged in, so the chat waits for her rather than going offline
            ws, queued = await hello(env, email="Ann@Example.com")
            assert queued["type"] == "queued", queued
            cid = queued["contact_id"]
            assert queued["position"] == 1 and queued["ewt_s"] is None  # nobody ready: the wait is unknown
            assert len(queued["token"]) >= 40 and queued["case"].startswith("C-")
            arrived = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == cid)
            assert arrived.channel == "chat" and arrived.customer_id == customer_id and arrived.tier == "gold"
            assert arrived.subject == "My invoice" and arrived.address and arrived.address.startswith("v-")
            assert arrived.attributes == {"resume": token_hash(queued["token"])}  # never the token itself
            [case] = await env.rows(cases, cases.c.id == arrived.case_id)
            assert case["token"] == queued["case"] and case["customer_id"] == customer_id

            # A line while waiting is kept, and acknowledged only once it is in the store.
            await send(ws, type="message", text="Hello?", client_id="c-1")
            ack = await expect(ws, "ack")
            assert ack["client_id"] == "c-1" and ack["message_id"]
            [row] = await env.rows(messages, messages.c.message_id == ack["message_id"])
            assert row["interaction_id"] == cid and row["direction"] == "inbound" and row["body"] == "Hello?"
            assert row["case_id"] == arrived.case_id and row["channel"] == "chat"

            env.submit(E.AgentReady, agent_id="a1")
            assert await env.accept(cid) == "a1"
            assert (await expect(ws, "agent_joined"))["agent"] == "Ada Lovelace"

            # Customer → agent: the agent gateway hears typing as a signal (nothing logs it), lines as events.
            typing: list[tuple[str, str]] = []
            env.centre.on_signal(
                lambda sig: typing.append((sig.contact_id, sig.agent_id)) if isinstance(sig, CustomerTyping) else None
            )
            await send(ws, type="typing")
            await send(ws, type="message", text="My invoice is wrong", client_id="c-2")
            ack2 = await expect(ws, "ack")
            assert typing == [(cid, "a1")]
            got = await env.event(lambda ev: isinstance(ev, E.MessageReceived) and ev.message_id == ack2["message_id"])
            assert got.contact_id == cid and got.body == "My invoice is wrong"

            # Agent → customer.
            env.centre.signal(AgentTyping(cid, "a2"))  # not the agent handling it: nothing
            env.centre.signal(AgentTyping(cid, "a1"))  # the agent gateway's, from wherever the agent's console is
            assert (await expect(ws, "typing"))["from"] == "agent"
            mid = await env.chat.agent_message(cid, "a1", "Let me look <b>at</b> it")
            line = await expect(ws, "message")
            assert line == {
                "type": "message",
                "from": "agent",
                "agent": "Ada Lovelace",
                "text": "Let me look <b>at</b> it",
                "message_id": mid,
                "at_ms": line["at_ms"],
            }
            with pytest.raises(ChatError) as err:
                await env.chat.agent_message(cid, "a2", "not mine")
            assert err.value.code == "not_handling"
            with pytest.raises(ChatError):
                await env.chat.agent_message(cid, "a1", "x" * (MAX_TEXT + 1))

            # The transcript is in the store, in order, both ways.
            transcript = await env.rows(messages, messages.c.interaction_id == cid)
            assert [(r["direction"], r["body"]) for r in transcript] == [
                ("inbound", "Hello?"),
                ("inbound", "My invoice is wrong"),
                ("outbound", "Let me look <b>at</b> it"),
            ]
            assert transcript[-1]["author"] == "a1"

            env.submit(E.ContactEnded, contact_id=cid, agent_id="a1")
            assert (await expect(ws, "closed"))["reason"] == "ended"
            assert await closed_code(ws) == 1000
            with pytest.raises(ChatError):
                await env.chat.agent_message(cid, "a1", "too late")

    run(main())


def test_a_customer_resumes_on_another_nodes_channel_which_then_holds_the_chat(tmp_path: Path) -> None:
    """A customer whose node went away (or whose new socket reached another node) resumes there with the
    token they have: that node's channel builds the session from the router and the store, and the node that
    held it lets go when it hears the customer is back elsewhere (so its resume window cannot end the chat).
    Several channels on one centre stand for the nodes' channels on one log."""

    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            late = ChatChannel(env.centre)  # a node up before the chat: learns it from the log
            env.centre.channels["chat"] = env.chat
            servers, nodes = [], [late]
            try:
                env.login("a1")
                ws, queued = await hello(env, email="ann@example.com")
                cid, token = queued["contact_id"], queued["token"]
                assert await env.accept(cid) == "a1"
                await expect(ws, "agent_joined")
                first = await env.chat.agent_message(cid, "a1", "one")
                assert (await expect(ws, "message"))["message_id"] == first
                joined = ChatChannel(env.centre)  # a node started after it: learns it from the router
                nodes.append(joined)
                env.centre.channels["chat"] = env.chat
                joined.restore(hold=False)
                assert joined.sessions() == {}  # its window is the other node's to keep
                urls = []
                for channel in (joined, late):
                    server = await serve(channel.handle, "127.0.0.1", 0)
                    servers.append(server)
                    urls.append(f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/chat")

                await ws.close()  # the customer's node went away, or their network changed
                ws = await connect(urls[0], proxy=None, open_timeout=TIMEOUT)
                await send(ws, type="resume", token=token, last_message_id=first)
                resumed = await expect(ws, "resumed")
                assert (resumed["state"], resumed["agent"], resumed["case"]) == (
                    "with_agent",
                    "Ada Lovelace",
                    queued["case"],
                )
                assert joined.sessions() == {cid: "with_agent"}
                assert env.chat.sessions() == {}  # let go: the customer is back on another node

                second = await env.chat.agent_message(cid, "a1", "two")  # from the agent's node, no session there
                assert (await expect(ws, "message"))["message_id"] == second
                await send(ws, type="message", text="still here", client_id="c-1")
                assert (await expect(ws, "ack"))["client_id"] == "c-1"

                await ws.close()
                ws = await connect(urls[1], proxy=None, open_timeout=TIMEOUT)
                await send(ws, type="resume", token=token, last_message_id=second)
                resumed = await expect(ws, "resumed")
                assert resumed["state"] == "with_agent"
                line = await expect(ws, "message")  # what came after the last line it saw: the customer's own
                assert line["text"] == "still here"
                assert late.sessions() == {cid: "with_agent"} and joined.sessions() == {}
                assert env.centre.router.contact(cid).state == "connected"

                env.submit(E.ContactEnded, contact_id=cid, agent_id="a1")
                assert (await expect(ws, "closed"))["reason"] == "ended"
            finally:
                for server in servers:
                    server.close()
                    await server.wait_closed()
                for node in nodes:
                    await node.stop()

    run(main())


def test_an_agent_line_from_another_nodes_channel_reaches_the_customer_once(tmp_path: Path) -> None:
    """The agent's console may be served by another edge than the customer's socket: that edge's chat channel
    has no session of the chat, so it takes what the line carries from the store, and the channel holding the
    session delivers the line when it comes out of the log. Two channels on one centre stand for the two
    edges' channels on one log."""

    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1")
            ws, queued = await hello(env, email="ann@example.com")
            cid = queued["contact_id"]
            assert await env.accept(cid) == "a1"
            await expect(ws, "agent_joined")
            elsewhere = ChatChannel(env.centre)  # another edge's channel: no session, no socket of this chat
            env.centre.channels["chat"] = env.chat
            try:
                mid = await elsewhere.agent_message(cid, "a1", "From the other node")
                line = await expect(ws, "message")
                assert (line["from"], line["agent"], line["text"], line["message_id"]) == (
                    "agent",
                    "Ada Lovelace",
                    "From the other node",
                    mid,
                )
                # The session's own channel sends its agent's line itself, after the commit: once, not twice.
                mid2 = await env.chat.agent_message(cid, "a1", "And from here")
                assert (await expect(ws, "message"))["message_id"] == mid2
                await send(ws, type="message", text="thanks", client_id="c-1")
                assert (await expect(ws, "ack"))["client_id"] == "c-1"  # no second copy of either line before it
                arrived = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == cid)
                [row] = await env.rows(messages, messages.c.message_id == mid)
                assert row["direction"] == "outbound" and row["case_id"] == arrived.case_id
                sent = await env.event(lambda ev: isinstance(ev, E.MessageSent) and ev.message_id == mid)
                assert sent.address == arrived.address  # the visitor, as the session's own channel says it
                with pytest.raises(ChatError) as err:
                    await elsewhere.agent_message(cid, "a2", "not mine")
                assert err.value.code == "not_handling"
                env.submit(E.ContactEnded, contact_id=cid, agent_id="a1")
                assert (await expect(ws, "closed"))["reason"] == "ended"
                with pytest.raises(ChatError):
                    await elsewhere.agent_message(cid, "a1", "too late")
            finally:
                await elsewhere.stop()

    run(main())


def test_two_first_chats_from_one_new_address_at_once_are_one_customer(tmp_path: Path) -> None:
    # The customer and case rows of a hello are written in the writer's next commit, after the contact is
    # routed: a second hello from the same new address meanwhile must not mint a second customer.
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            (w1, q1), (w2, q2) = await asyncio.gather(
                hello(env, email="new@example.com"), hello(env, email="NEW@example.com")
            )
            assert q1["type"] == q2["type"] == "queued"
            a1 = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == q1["contact_id"])
            a2 = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == q2["contact_id"])
            assert a1.customer_id == a2.customer_id and a1.case_id != a2.case_id
            from contactcentre.store.schema import customers, identities

            [ident] = await env.rows(identities, identities.c.value == "new@example.com")
            assert ident["customer_id"] == a1.customer_id
            assert len(await env.rows(customers, customers.c.id == a1.customer_id)) == 1
            for q, a in ((q1, a1), (q2, a2)):
                [case] = await env.rows(cases, cases.c.id == a.case_id)
                assert case["token"] == q["case"] and case["customer_id"] == a.customer_id
            # an anonymous chat is a new customer with its visitor token as identity
            w3, q3 = await hello(env)
            a3 = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == q3["contact_id"])
            [ident3] = await env.rows(identities, identities.c.customer_id == a3.customer_id)
            assert ident3["kind"] == "chat" and ident3["value"] == a3.address
            for w in (w1, w2, w3):
                await w.close()

    run(main())


def test_an_address_taken_while_the_hello_was_routed_keeps_the_chat(tmp_path: Path) -> None:
    # The address reached the store another way (an e-mail) between the hello's look-up and its commit:
    # the chat keeps the customer it was routed with (without the identity), its case is stored, nothing fails.
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            from contactcentre.store.schema import customers, identities

            env.login("a1", away="break")
            real_read = env.centre.read
            taken: dict[str, str] = {}

            async def read_then_race(fn: Any, *args: Any) -> Any:
                got = await real_read(fn, *args)
                if fn.__name__ == "known_customer" and not taken:

                    def by_email(conn: Any) -> str:
                        ids = [("email", "race@example.com")]
                        return create_customer(conn, env.centre.now_ms(), name="Other", identities_=ids)

                    taken["id"] = await env.centre.write(by_email)
                return got

            env.centre.read = read_then_race  # type: ignore[method-assign]
            ws, queued = await hello(env, email="race@example.com")
            env.centre.read = real_read  # type: ignore[method-assign]
            assert queued["type"] == "queued" and queued["case"].startswith("C-")
            arrived = await env.event(
                lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == queued["contact_id"]
            )
            assert arrived.customer_id != taken["id"]
            [mine] = await env.rows(customers, customers.c.id == arrived.customer_id)
            assert mine["name"] == "Ann"
            assert await env.rows(identities, identities.c.customer_id == arrived.customer_id) == []
            [case] = await env.rows(cases, cases.c.id == arrived.case_id)
            assert case["token"] == queued["case"]
            await ws.close()

    run(main())


def test_a_hello_whose_staged_rows_fail_writes_them_on_their_own_before_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The staged unit is rolled back to its savepoint and the batch commits without it: the hello notices (no
    # case token) and writes the same rows in a transaction of its own, so the reply still names a stored case.
    import contactcentre.store.chats as chat_module

    real_open_case = chat_module.open_case
    calls: list[int] = []

    def open_case_failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bad moment")
        return real_open_case(*args, **kwargs)

    monkeypatch.setattr(chat_module, "open_case", open_case_failing_once)

    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            from contactcentre.store.schema import customers

            env.login("a1", away="break")
            ws, queued = await hello(env, email="once@example.com")
            assert queued["type"] == "queued" and queued["case"].startswith("C-"), queued
            arrived = await env.event(
                lambda ev: isinstance(ev, E.ContactArrived) and ev.contact_id == queued["contact_id"]
            )
            [case] = await env.rows(cases, cases.c.id == arrived.case_id)
            assert case["token"] == queued["case"] and case["customer_id"] == arrived.customer_id
            assert len(await env.rows(customers, customers.c.id == arrived.customer_id)) == 1
            assert len(calls) == 2
            await ws.close()

    run(main())


def test_queue_position_and_wait_estimate(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.chat.position_push_s = 0.0  # push position changes at once
            env.login("a1")
            ws1, q1 = await hello(env)
            assert (q1["position"], q1["ewt_s"]) == (1, 0)  # offered at once
            await env.accept(q1["contact_id"])
            await expect(ws1, "agent_joined")
            # a1 (chat capacity 1) is busy; default chat AHT is 420 s: (ahead + 1) × 420 / 1
            ws2, q2 = await hello(env)
            ws3, q3 = await hello(env)
            assert (q2["position"], q2["ewt_s"]) == (1, 420)
            assert (q3["position"], q3["ewt_s"]) == (2, 840)
            # a1 finishes; the second chat is offered, the third moves up.
            env.submit(E.ContactEnded, contact_id=q1["contact_id"], agent_id="a1")
            await expect(ws1, "closed")
            await env.accept(q2["contact_id"])
            await expect(ws2, "agent_joined")
            update = await expect(ws3, "position")
            assert update["position"] == 1
            for ws in (ws1, ws2, ws3):
                await ws.close()

    run(main())


def test_transfer_keeps_the_chat(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1")
            ws, q = await hello(env)
            cid = q["contact_id"]
            await env.accept(cid)
            await expect(ws, "agent_joined")
            env.login("a2")
            mark = len(env.events)
            env.submit(E.TransferRequested, contact_id=cid, agent_id="a1", to_agent_id="a2")
            await expect(ws, "transferred")
            await expect(ws, "position")
            assert await env.accept(cid, mark) == "a2"
            assert (await expect(ws, "agent_joined"))["agent"] == "Alan Turing"
            await env.chat.agent_message(cid, "a2", "Alan here")
            assert (await expect(ws, "message"))["text"] == "Alan here"
            await ws.close()

    run(main())


# -------------------------------------------------------------------------------------------- resuming


def test_resume_after_a_dropped_socket_resends_what_was_missed(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1")
            ws, q = await hello(env)
            cid, token = q["contact_id"], q["token"]
            await env.accept(cid)
            await expect(ws, "agent_joined")
            first = await env.chat.agent_message(cid, "a1", "one")
            assert (await expect(ws, "message"))["message_id"] == first
            presence: list[bool] = []
            gone = asyncio.get_running_loop().create_future()

            def on_presence(sig: Signal) -> None:
                if not isinstance(sig, CustomerPresence):
                    return
                assert (sig.contact_id, sig.agent_id) == (cid, "a1")
                presence.append(sig.connected)
                if not sig.connected and not gone.done():
                    gone.set_result(None)

            env.centre.on_signal(on_presence)
            await ws.close()
            await asyncio.wait_for(gone, TIMEOUT)  # the server noticed; the chat goes on without the socket
            assert not env.chat.connected(cid)
            assert env.centre.router.contact(cid).state == "connected"
            second = await env.chat.agent_message(cid, "a1", "two")
            third = await env.chat.agent_message(cid, "a1", "three")

            ws = await client(env)
            await send(ws, type="resume", token=token, last_message_id=first)
            resumed = await expect(ws, "resumed")
            assert resumed["state"] == "with_agent" and resumed["agent"] == "Ada Lovelace"
            assert resumed["contact_id"] == cid
            missed = [await expect(ws, "message"), await expect(ws, "message")]
            assert [(m["message_id"], m["text"], m["from"]) for m in missed] == [
                (second, "two", "agent"),
                (third, "three", "agent"),
            ]
            assert presence == [False, True]
            # The same socket carries on both ways.
            await send(ws, type="message", text="back again", client_id="c-9")
            await expect(ws, "ack")
            fourth = await env.chat.agent_message(cid, "a1", "welcome back")
            assert (await expect(ws, "message"))["message_id"] == fourth

            # A resume without last_message_id gets the whole transcript (a reloaded page).
            ws2 = await client(env)
            await send(ws2, type="resume", token=token)
            await expect(ws2, "resumed")
            texts = [(await expect(ws2, "message"))["text"] for _ in range(5)]
            assert texts == ["one", "two", "three", "back again", "welcome back"]
            assert await closed_code(ws) == 4000  # the older socket gave way
            await ws2.close()

    run(main())


def test_a_line_resent_after_a_lost_ack_is_stored_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            await send(ws, type="message", text="once", client_id="c-1")
            ack = await expect(ws, "ack")
            await send(ws, type="message", text="once", client_id="c-1")
            assert await expect(ws, "ack") == ack
            rows = await env.rows(messages, messages.c.interaction_id == q["contact_id"])
            assert [r["body"] for r in rows] == ["once"]
            await ws.close()

    run(main())


def test_a_line_resent_after_its_ack_was_forgotten_is_found_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contactcentre.edge.chat.channel as chat_module

    monkeypatch.setattr(chat_module, "MAX_CLIENT_IDS", 2)

    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            acks = []
            for n in (1, 2, 3):  # the third forgets the first's ack: the store answers for it from now on
                await send(ws, type="message", text=f"line {n}", client_id=f"c-{n}")
                acks.append(await expect(ws, "ack"))
            await send(ws, type="message", text="line 1", client_id="c-1")
            again = await expect(ws, "ack")
            assert (again["message_id"], again["at_ms"]) == (acks[0]["message_id"], acks[0]["at_ms"])
            rows = await env.rows(messages, messages.c.interaction_id == q["contact_id"])
            assert [r["body"] for r in rows] == ["line 1", "line 2", "line 3"]
            await ws.close()

    run(main())


def test_resume_with_an_unknown_token_is_an_error_and_the_socket_stays(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            ws = await client(env)
            await send(ws, type="resume", token="not-a-token", last_message_id="cm-x")
            assert (await expect(ws, "error"))["code"] == "unknown_session"
            await send(ws, type="hello", name="Ann", topic="t")
            assert (await recv(ws))["type"] == "queued"
            await ws.close()

    run(main())


# ------------------------------------------------------------------------------------------- leaving


def test_close_while_waiting_abandons_the_contact(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            cid = q["contact_id"]
            await send(ws, type="close")
            assert (await expect(ws, "closed"))["reason"] == "customer"
            assert await closed_code(ws) == 1000
            await env.event(lambda ev: isinstance(ev, E.CustomerLeft) and ev.contact_id == cid)
            await env.event(lambda ev: isinstance(ev, E.ContactAbandoned) and ev.contact_id == cid)
            await env.centre.commit()
            [row] = await env.rows(interactions, interactions.c.id == cid)
            assert row["outcome"] == "abandoned"
            ws = await client(env)  # the token is spent
            await send(ws, type="resume", token=q["token"])
            assert (await expect(ws, "error"))["code"] == "unknown_session"
            await ws.close()

    run(main())


def test_a_customer_not_back_within_the_window_has_left(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite", make_config(resume_window_s=0.2)) as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            cid = q["contact_id"]
            await ws.close()  # dropped, not closed by the protocol
            abandoned = await env.event(lambda ev: isinstance(ev, E.ContactAbandoned) and ev.contact_id == cid)
            left = next(ev for ev in env.events if isinstance(ev, E.CustomerLeft) and ev.contact_id == cid)
            assert abandoned.at_ms - left.at_ms >= 0
            assert left.at_ms - q_arrival(env, cid).at_ms >= 150  # not at the drop: after the window
            ws = await client(env)
            await send(ws, type="resume", token=q["token"])
            assert (await expect(ws, "error"))["code"] == "unknown_session"
            await ws.close()

    run(main())


def test_a_silent_chat_whose_socket_went_away_leaves_after_the_grace_not_the_window(tmp_path: Path) -> None:
    config = make_config(resume_window_s=300, limits={"silent_chat_grace_s": 0.2})

    async def main() -> None:
        async with running(tmp_path / "s.sqlite", config) as env:
            env.login("a1", away="break")  # nobody takes them: both wait
            talker, t = await hello(env, text="my invoice is wrong", client_id="c1")
            assert (await expect(talker, "ack"))["client_id"] == "c1"
            silent, q = await hello(env)
            await talker.close()
            await silent.close()
            cid = q["contact_id"]
            await env.event(lambda ev: isinstance(ev, E.ContactAbandoned) and ev.contact_id == cid)
            assert env.centre.router.contact(t["contact_id"]).state == "queued"  # it keeps its place
            assert env.chat.sessions()[t["contact_id"]] == "waiting"
            ws = await client(env)
            await send(ws, type="resume", token=t["token"])
            assert (await expect(ws, "resumed"))["state"] == "waiting"
            await ws.close()

    run(main())


def test_a_flood_of_hellos_from_one_address_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    config = make_config(limits={"new_chats_burst": 2, "new_chats_per_minute": 0.01})

    async def main() -> None:
        async with running(tmp_path / "s.sqlite", config) as env:
            env.login("a1", away="break")
            first = [await hello(env) for _ in range(2)]
            assert [q["type"] for _, q in first] == ["queued", "queued"]
            ws, refused = await hello(env, client_id="h3")
            assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
            assert refused["client_id"] == "h3"
            await send(ws, type="ping")  # the socket stays
            await expect(ws, "pong")
            assert len(env.centre.router.contact_list()) == 2
            await env.centre.commit()
            assert len(await env.rows(cases)) == 2 and len(await env.rows(interactions)) == 2
            for w, _ in first:
                await w.close()
            await ws.close()

    run(main())


def q_arrival(env: Env, cid: str) -> E.ContactArrived:
    return next(ev for ev in env.events if isinstance(ev, E.ContactArrived) and ev.contact_id == cid)


# ------------------------------------------------------------------------------------------- offline


def test_offline_when_nobody_can_answer_leaves_a_message_on_a_case(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:  # no agent logged in
            ws, offline = await hello(env, email="bob@example.com", text="Please call me back", client_id="c-1")
            assert offline["type"] == "offline" and offline["reason"] == "no_agents"
            assert offline["case"].startswith("C-")
            first = await expect(ws, "ack")
            assert first["client_id"] == "c-1"
            await send(ws, type="message", text="My number is 555", client_id="c-2")
            second = await expect(ws, "ack")

            mail = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.channel == "email")
            assert mail.queue == "support" and mail.address == "bob@example.com"
            assert mail.subject == "My invoice"
            assert env.centre.router.contact(mail.contact_id).state == "queued"  # waits for an e-mail agent
            assert not any(isinstance(ev, E.ContactArrived) and ev.channel == "chat" for ev in env.events)
            [case] = await env.rows(cases, cases.c.token == offline["case"])
            assert mail.case_id == case["id"]
            rows = await env.rows(messages, messages.c.case_id == case["id"])
            assert [(r["body"], r["interaction_id"], r["channel"]) for r in rows] == [
                ("Please call me back", mail.contact_id, "chat"),
                ("My number is 555", mail.contact_id, "chat"),
            ]
            assert {r["message_id"] for r in rows} == {first["message_id"], second["message_id"]}
            assert len([ev for ev in env.events if isinstance(ev, E.ContactArrived)]) == 1
            await ws.close()

    run(main())


def test_a_chat_the_router_refuses_becomes_an_offline_message(tmp_path: Path) -> None:
    config = parse_config(
        {
            **msgspec.to_builtins(make_config()),
            "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["chat", "email"], "max_depth": 1}],
        },
        "<test>",
    )

    async def main() -> None:
        async with running(tmp_path / "s.sqlite", config) as env:
            env.login("a1", away="break")
            ws1, q1 = await hello(env)
            assert q1["type"] == "queued"
            ws2, offline = await hello(env)  # the queue is full
            assert (offline["type"], offline["reason"]) == ("offline", "queue_full")
            await send(ws2, type="message", text="for later", client_id="c-1")
            await expect(ws2, "ack")
            mail = await env.event(lambda ev: isinstance(ev, E.ContactArrived) and ev.channel == "email")
            failed = await env.event(lambda ev: isinstance(ev, E.ContactFailed))
            assert mail.case_id == q_arrival(env, failed.contact_id).case_id
            # the offline session resumes too, with its lines
            await ws2.close()
            ws2 = await client(env)
            await send(ws2, type="resume", token=offline["token"])
            assert (await expect(ws2, "resumed"))["state"] == "offline"
            assert (await expect(ws2, "message"))["text"] == "for later"
            for ws in (ws1, ws2):
                await ws.close()

    run(main())


# -------------------------------------------------------------------------------------------- limits


def test_an_oversized_frame_closes_with_1009_and_the_server_carries_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite", make_config(max_frame_bytes=1024)) as env:
            env.login("a1", away="break")
            ws, _ = await hello(env)
            await ws.send(json.dumps({"type": "message", "text": "x" * 2000}))
            assert await closed_code(ws) == 1009
            ws, q = await hello(env)
            assert q["type"] == "queued"
            await ws.close()

    run(main())


def test_json_nested_too_deeply_is_a_bad_request(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            ws = await client(env)
            await ws.send("[" * 5000 + "]" * 5000)  # deeper than the decoder's stack, within max_frame_bytes
            err = await expect(ws, "error")
            assert (err["code"], err["detail"]) == ("bad_request", "not JSON: JSON nested too deeply")
            await send(ws, type="ping")
            await expect(ws, "pong")
            await ws.close()

    run(main())


def test_a_database_outage_while_checking_a_resent_line_is_unavailable_not_internal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a session restored after a restart asks the store whether a line is a resend (one born in this
    # process knows every line it stored): an outage then is "unavailable", and the resend is kept after.
    import contactcentre.edge.chat.channel as chat_module

    db = tmp_path / "s.sqlite"
    stored_at = chat_module.line_stored_at
    asked: list[str] = []

    def counted(conn: Any, message_id: str) -> int | None:
        asked.append(message_id)
        return stored_at(conn, message_id)

    def outage(conn: Any, message_id: str) -> int | None:
        raise OperationalError("SELECT at_ms FROM messages", {}, Exception("database is locked"))

    async def first_run() -> str:
        async with running(db) as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            monkeypatch.setattr(chat_module, "line_stored_at", counted)
            await send(ws, type="message", text="before", client_id="c0")
            await expect(ws, "ack")
            await send(ws, type="message", text="before", client_id="c0")  # a resend: answered from memory
            await expect(ws, "ack")
            assert asked == []
        return str(q["token"])

    async def second_run(token: str) -> None:
        async with running(db, restore=True) as env:
            ws = await client(env)
            await send(ws, type="resume", token=token)
            await expect(ws, "resumed")
            await expect(ws, "message")
            await send(ws, type="message", text="before", client_id="c0")  # the ack was lost to the restart
            resent = await expect(ws, "ack")
            assert asked == [resent["message_id"]]
            monkeypatch.setattr(chat_module, "line_stored_at", outage)
            await send(ws, type="message", text="hello?", client_id="c1")
            err = await expect(ws, "error")
            assert (err["code"], err["client_id"]) == ("unavailable", "c1")
            monkeypatch.setattr(chat_module, "line_stored_at", stored_at)  # the database is back: the resend is kept
            await send(ws, type="message", text="hello?", client_id="c1")
            assert (await expect(ws, "ack"))["client_id"] == "c1"
            rows = await env.rows(messages, messages.c.body == "before")
            assert len(rows) == 1
            await ws.close()

    token = run(first_run())
    run(second_run(token))


def test_the_frame_limit_holds_on_a_server_started_with_a_larger_one(tmp_path: Path) -> None:
    async def main() -> None:
        config = make_config(max_frame_bytes=1024)
        centre = await open_centre(config, f"sqlite:///{tmp_path / 's.sqlite'}")
        chat = ChatChannel(centre)
        server = await serve(chat.handle, "127.0.0.1", 0, max_size=256 * 1024)  # the agents' limit
        port = next(iter(server.sockets)).getsockname()[1]
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/chat", proxy=None, open_timeout=TIMEOUT)
            await ws.send(json.dumps({"type": "hello", "name": "x" * 2000}))
            assert await closed_code(ws) == 1009
        finally:
            await chat.stop()
            server.close()
            await server.wait_closed()
            await close_centre(centre)

    run(main())


def test_bad_frames_get_errors_and_the_socket_stays(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite") as env:
            env.login("a1", away="break")
            ws = await client(env)
            for raw in ("{not json", "[1, 2]", '{"kind": "hello"}', b"\x00\x01", '{"type": "dance"}'):
                await ws.send(raw)
                error = await expect(ws, "error")
                assert error["code"] == "bad_request" and error["detail"], raw
            await send(ws, type="message", text="too early", client_id="c-0")
            assert (await expect(ws, "error"))["code"] == "no_session"
            await send(ws, type="hello", name=["Ann"])
            assert "name" in (await expect(ws, "error"))["detail"]
            await send(ws, type="hello", email="not an address")
            assert "email" in (await expect(ws, "error"))["detail"]
            await send(ws, type="hello", queue="nowhere")
            assert "queue" in (await expect(ws, "error"))["detail"]
            await send(ws, type="hello", name="Ann", topic="t", queue="sales")
            q = await expect(ws, "queued")
            assert q_arrival(env, q["contact_id"]).queue == "sales"
            await send(ws, type="message", client_id="c-1")
            error = await expect(ws, "error")
            assert (error["code"], error["client_id"]) == ("bad_request", "c-1")
            await send(ws, type="message", text="x" * (MAX_TEXT + 1), client_id="c-2")
            assert "4000" in (await expect(ws, "error"))["detail"]
            await send(ws, type="hello", name="Ann again")
            assert (await expect(ws, "error"))["code"] == "bad_request"
            await send(ws, type="message", text="still here", client_id="c-3")
            assert (await expect(ws, "ack"))["client_id"] == "c-3"
            await ws.close()

    run(main())


def test_rate_limit_drops_then_closes_with_1008(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "s.sqlite", make_config(max_messages_per_10s=3)) as env:
            env.login("a1", away="break")
            ws, _ = await hello(env)
            for i in (1, 2):
                await send(ws, type="message", text=f"line {i}", client_id=f"c-{i}")
                await expect(ws, "ack")
            await send(ws, type="message", text="one too many", client_id="c-3")
            assert (await expect(ws, "error"))["code"] == "rate_limited"
            for i in range(20):  # keep hammering: the server hangs up
                with contextlib.suppress(ConnectionClosed):
                    await send(ws, type="message", text="spam", client_id=f"s-{i}")
            assert await closed_code(ws) == 1008
            rows = await env.rows(messages)
            assert sorted(r["body"] for r in rows) == ["line 1", "line 2"]
            ws, q = await hello(env)  # others are served as before
            assert q["type"] == "queued"
            await ws.close()

    run(main())


# ------------------------------------------------------------------------------------------- restart


def test_a_waiting_chat_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"

    async def first_run() -> tuple[str, str]:
        async with running(db) as env:
            env.login("a1", away="break")
            ws, q = await hello(env)
            await send(ws, type="message", text="before the restart", client_id="c-1")
            await expect(ws, "ack")
            token, cid = q["token"], q["contact_id"]
        # leaving the block stopped the channel: the customer was told the server is going away
        assert await closed_code(ws) == 1001
        return token, cid

    async def second_run(token: str, cid: str) -> None:
        async with running(db, restore=True) as env:
            assert env.chat.sessions() == {cid: "waiting"}
            ws = await client(env)
            await send(ws, type="resume", token=token)
            resumed = await expect(ws, "resumed")
            assert (resumed["state"], resumed["contact_id"]) == ("waiting", cid)
            assert resumed["case"].startswith("C-")
            assert (await expect(ws, "message"))["text"] == "before the restart"
            env.submit(E.AgentReady, agent_id="a1")  # came back "disconnected" after the restart
            await env.accept(cid)
            assert (await expect(ws, "agent_joined"))["agent"] == "Ada Lovelace"
            await env.chat.agent_message(cid, "a1", "sorry for the wait")
            assert (await expect(ws, "message"))["text"] == "sorry for the wait"
            await ws.close()

    token, cid = run(first_run())
    run(second_run(token, cid))


# -------------------------------------------------------------------------------------------- widget


def test_widget_page_has_a_strict_policy_and_escapes_config_text(reactor_loop: object) -> None:
    from twisted.web.test.requesthelper import DummyRequest

    from contactcentre.edge.web.widget import widget_resource

    config = make_config(name='Evil <script>alert("x")</script> & Co')
    resource = widget_resource(config, 8123)

    def render(host: bytes) -> tuple[str, str]:
        request = DummyRequest([b""])
        request._serverName = host
        body = resource.render(request)
        [csp] = request.responseHeaders.getRawHeaders(b"content-security-policy")
        assert request.responseHeaders.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
        return body.decode(), csp.decode()

    body, csp = render(b"chat.example.com")
    assert "connect-src ws://chat.example.com:8123 wss://chat.example.com:8123;" in csp
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert "<script>alert" not in body and "Evil &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in body
    assert "Orders &amp; &lt;offers&gt;" in body  # a queue's label offered as a topic area
    assert '<script src="/static/chat.js" defer></script>' in body
    assert '<script src="/static/centre-time.js" defer></script>' in body  # times in the centre's zone
    assert body.count("<script") == body.count('<script src="/static/') == 2  # no inline script
    assert 'data-ws-port="8123"' in body
    # A Host header never writes into the policy.
    _, csp = render(b"evil.example; script-src *")
    assert "script-src *" not in csp and "connect-src ws://127.0.0.1:8123 " in csp
