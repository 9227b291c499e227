"""The agent protocol end to end: a live centre on SQLite, the gateway on a real WebSocket on 127.0.0.1, consoles
speaking JSON frames. Channels are fakes that record agents' messages and log them as ``MessageSent``.

Nothing sleeps: frames are awaited with a deadline, router states through a centre subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

import contactcentre.events as E
from contactcentre.config import DispositionsConfig, TranscriptConfig, parse_config
from contactcentre.edge.agents.gateway import AgentGateway
from contactcentre.server.centre import Centre
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.server.signals import AgentTyping, CustomerPresence, CustomerTyping, Signal
from contactcentre.store import cases, customers, users
from contactcentre.store.privacy import audit_trail

TIMEOUT = 5.0

CONFIG = parse_config(
    {
        "skills": {"general": "General", "sales": "Sales"},
        "channels": {
            "chat": {"offer_timeout_s": 60, "wrap_up_s": "manual"},
            "email": {"offer_timeout_s": 60, "wrap_up_s": 0},
            "voice": {"offer_timeout_s": 1, "wrap_up_s": 30},
        },
        "queues": [
            {"name": "support", "skills": {"general": 1}, "channels": ["chat", "email", "voice"]},
            {"name": "sales", "skills": {"sales": 1}, "channels": ["chat", "email", "voice"]},
        ],
        "agents": [
            {"id": "a1", "skills": {"general": 5}},
            {"id": "a2", "skills": {"general": 5}},
            {"id": "a3", "skills": {"sales": 5}},
        ],
    },
    "<test>",
)
USERS = {"a1": "ann", "a2": "bob", "a3": "cat"}


class FakeChannel:
    """A channel adapter: records agents' lines and logs each as ``MessageSent``, as a real one does."""

    def __init__(self, centre: Centre, channel: E.Channel) -> None:
        self.centre = centre
        self.channel = channel
        self.calls: list[tuple[str, str, str]] = []
        self.typing: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        centre.on_signal(self._on_signal)

    def _on_signal(self, signal: Signal) -> None:
        """An agent typing on one of this channel's contacts (a chat channel shows it to its customer)."""
        c = self.centre.router.contact(signal.contact_id)
        if isinstance(signal, AgentTyping) and c is not None and c.channel == self.channel:
            self.typing.append((signal.contact_id, signal.agent_id))

    async def agent_message(self, contact_id: str, agent_id: str, text: str) -> str:
        if self.fail is not None:
            raise self.fail
        self.calls.append((contact_id, agent_id, text))
        message_id = f"{self.channel}-out-{len(self.calls)}"
        self.centre.publish(
            [
                E.MessageSent(
                    at_ms=self.centre.now_ms(),
                    contact_id=contact_id,
                    message_id=message_id,
                    channel=self.channel,
                    agent_id=agent_id,
                    body=text,
                )
            ]
        )
        return message_id


class Console:
    """One agent console: JSON frames over a client WebSocket, every wait bounded."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # everything received, in order

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        """The next frame but ``queues`` frames (kept in ``frames``): those come on a timer of their own, between
        any two frames, so tests that read frames in order look at them with ``expect`` only."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            self.frames.append(frame)
            if frame["type"] != "queues":
                return frame

    async def expect(self, type_: str, **match: Any) -> dict[str, Any]:
        """The next frame of ``type_`` whose fields equal ``match`` (frames in between are kept in ``frames``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.0, deadline - loop.time()))
            frame = json.loads(raw)
            self.frames.append(frame)
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def closed(self) -> tuple[int | None, str | None]:
        """Read until the server closes; the close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.recv()
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Env:
    centre: Centre
    gateway: AgentGateway
    url: str
    tokens: dict[str, str]
    chat: FakeChannel
    email: FakeChannel
    consoles: list[Console] = field(default_factory=list)

    async def connect(self) -> Console:
        console = Console(await connect(self.url, proxy=None, open_timeout=TIMEOUT))
        self.consoles.append(console)
        return console

    async def login(self, agent_id: str) -> tuple[Console, dict[str, Any]]:
        console = await self.connect()
        await console.send(type="login", token=self.tokens[agent_id])
        welcome = await console.recv()
        assert welcome["type"] == "welcome", welcome
        return console, welcome

    async def ready(self, agent_id: str) -> Console:
        console, _ = await self.login(agent_id)
        await console.send(type="state", state="available")
        await console.expect("ack", **{"for": "state"})
        return console

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until ``condition()`` holds after some batch of the centre's events."""
        if condition():
            return
        done = asyncio.get_running_loop().create_future()

        def check(_batch: list[E.Event]) -> None:
            if not done.done() and condition():
                done.set_result(None)

        unsubscribe = self.centre.subscribe(check)
        try:
            await asyncio.wait_for(done, TIMEOUT)
        finally:
            unsubscribe()

    def arrive(self, contact_id: str, channel: E.Channel = "chat", queue: str = "support", **fields: Any) -> None:
        self.centre.submit(
            E.ContactArrived(at_ms=self.centre.now_ms(), contact_id=contact_id, queue=queue, channel=channel, **fields)
        )

    def customer_says(self, contact_id: str, text: str, message_id: str, channel: E.Channel = "chat") -> None:
        self.centre.publish(
            [
                E.MessageReceived(
                    at_ms=self.centre.now_ms(), contact_id=contact_id, message_id=message_id, channel=channel, body=text
                )
            ]
        )

    def agent(self, agent_id: str) -> Any:
        return self.centre.router.agent(agent_id)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, config: Any = CONFIG, **options: Any) -> AsyncIterator[Env]:
    centre = await open_centre(config, f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        now = centre.now_ms()
        tokens = {}
        for agent_id, name in USERS.items():
            tokens[agent_id] = await centre.write(
                lambda c, n=name, a=agent_id: users.add_user(c, n, "agent", now, agent_id=a)
            )
        chat, email = FakeChannel(centre, "chat"), FakeChannel(centre, "email")
        centre.channels.update(chat=chat, email=email)
        gateway = AgentGateway(centre, **options)
        async with serve(gateway.handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            env = Env(centre, gateway, f"ws://127.0.0.1:{port}/agent", tokens, chat, email)
            try:
                yield env
            finally:
                for console in env.consoles:
                    await console.close()
                await gateway.stop()
    finally:
        await close_centre(centre)


def run(tmp_path: Path, body: Callable[[Env], Any], *, config: Any = CONFIG, **options: Any) -> None:
    async def main() -> None:
        async with running(tmp_path, config=config, **options) as env:
            await body(env)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------------- login


def test_login_welcomes_the_agent_not_ready_and_state_changes_follow(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console, welcome = await env.login("a1")
        assert welcome["protocol"] == 1
        assert welcome["agent_id"] == "a1"
        assert welcome["user"] == {"id": "ann", "role": "agent", "display_name": None}
        assert (welcome["state"], welcome["reason"], welcome["presence"]) == ("away", "not_ready", "away")
        assert welcome["work"] == [] and welcome["offers"] == []
        assert env.agent("a1").state == "away"
        assert env.gateway.connected_agents() == ["a1"]

        await console.send(type="state", state="available", ref=7)
        state = await console.recv()  # what changed comes first, the ack after it
        assert state["type"] == "state" and state["state"] == "available" and state["presence"] == "ready"
        ack = await console.recv()
        assert ack == {"type": "ack", "for": "state", "ref": 7, **{k: state[k] for k in state if k != "type"}}
        assert env.agent("a1").state == "available"

        await console.send(type="state", state="away", reason="lunch")
        state = await console.recv()
        assert (state["type"], state["state"], state["reason"]) == ("state", "away", "lunch")
        assert (await console.recv())["type"] == "ack"
        assert env.agent("a1").away_reason == "lunch"

        await console.send(type="state", state="asleep")
        err = await console.recv()
        assert (err["type"], err["code"], err["for"]) == ("error", "bad_field", "state")

        await console.send(type="ping", ref="p1")
        pong = await console.recv()
        assert pong["type"] == "ack" and pong["ref"] == "p1" and isinstance(pong["server_ms"], int)

        await console.send(type="logout")
        assert (await console.expect("ack", **{"for": "logout"}))["type"] == "ack"
        assert await console.closed() == (1000, "logged out")
        await env.until(lambda: env.agent("a1").state == "logged_out")
        assert env.gateway.connected_agents() == []

    run(tmp_path, body)


def test_login_refusals_close_the_connection(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        now = env.centre.now_ms()
        stranger = await env.centre.write(lambda c: users.add_user(c, "zed", "agent", now, agent_id="zz"))
        boss = await env.centre.write(lambda c: users.add_user(c, "boss", "supervisor", now))
        boss_agent = await env.centre.write(lambda c: users.add_user(c, "sue", "supervisor", now, agent_id="a2"))

        async def refused(first: dict[str, Any] | None) -> tuple[str, int | None]:
            console = await env.connect()
            if first is not None:
                await console.send(**first)
            err = await console.recv()
            assert err["type"] == "error", err
            code, _ = await console.closed()
            return err["code"], code

        assert await refused({"type": "login", "token": "cc_not-a-token"}) == ("unauthorized", 1008)
        assert await refused({"type": "login"}) == ("unauthorized", 1008)
        assert await refused({"type": "login", "token": stranger}) == ("unknown_agent", 1008)
        assert await refused({"type": "login", "token": boss}) == ("not_an_agent", 1008)
        assert await refused({"type": "state", "state": "available"}) == ("login_required", 1008)
        assert await refused(None) == ("login_timeout", 1008)  # says nothing at all

        console = await env.connect()  # a supervisor with an agent id works as that agent
        await console.send(type="login", token=boss_agent)
        welcome = await console.recv()
        assert (welcome["type"], welcome["agent_id"], welcome["user"]["role"]) == ("welcome", "a2", "supervisor")

    run(tmp_path, body, login_timeout_s=0.2)


def test_a_second_console_replaces_the_first(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        first = await env.ready("a1")
        env.arrive("chat-1")
        offer = await first.expect("offer")

        second, welcome = await env.login("a1")
        assert await first.closed() == (4000, "replaced")
        # The agent carries on as it was: still ready, the open offer listed and sent again.
        assert welcome["state"] == "reserved" and welcome["presence"] == "ready"
        assert welcome["offers"] == [offer["offer_id"]]
        again = await second.expect("offer")
        assert again["offer_id"] == offer["offer_id"] and again["why"] == offer["why"]
        assert env.agent("a1").presence == "ready"
        assert env.gateway.connected_agents() == ["a1"]
        await second.send(type="accept", offer_id=offer["offer_id"])
        assert (await second.expect("contact"))["contact_id"] == "chat-1"

    run(tmp_path, body)


def test_stop_closes_every_console_going_away(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console, _ = await env.login("a1")
        await env.gateway.stop()
        assert (await console.closed())[0] == 1001

    run(tmp_path, body)


# --------------------------------------------------------------------------------------------------- offers


def test_offer_carries_why_preview_and_screen_pop_and_the_read_is_audited(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        centre = env.centre
        now = centre.now_ms()
        jo = await centre.write(
            lambda c: customers.create_customer(c, now, name="Jo Bloggs", tier="gold", identities_=[("chat", "tok-jo")])
        )
        console = await env.ready("a1")
        # The chat channel logs the first line right after the arrival, in the same step of the loop.
        env.arrive("chat-1", customer_id=jo, subject="Router broken", address="tok-jo")
        env.customer_says("chat-1", "My router blinks red\n\nsince Monday", "in-1")

        offer = await console.expect("offer")
        assert offer["contact_id"] == "chat-1" and offer["channel"] == "chat" and offer["queue"] == "support"
        assert offer["customer_id"] == jo
        # since when the customer has waited: the console's offer card counts it up
        assert offer["waiting_since_ms"] == env.centre.router.contact("chat-1").waiting_since_ms > 0
        assert offer["expires_ms"] == next(o for o in env.agent("a1").offers if o.id == offer["offer_id"]).expires_ms
        assert offer["why"]["trigger"] == "contact" and offer["why"]["strategy"] == "longest_idle"
        assert offer["why"]["candidates"][0]["id"] == "a1"
        assert offer["preview"] == {"subject": "Router broken", "lines": ["My router blinks red", "since Monday"]}

        pop = await console.expect("screen_pop")
        assert pop["contact_id"] == "chat-1" and pop["offer_id"] == offer["offer_id"]
        assert pop["matched"] is True
        assert pop["customer"]["name"] == "Jo Bloggs" and pop["customer"]["tier"] == "gold"
        assert pop["signals"]["risk"] in ("low", "medium", "high")

        await centre.commit()
        trail = await centre.read(audit_trail, jo)
        assert [(t["action"], t["actor"], t["detail"]) for t in trail] == [
            ("customer.read", "ann", {"what": "screen-pop"})
        ]

    run(tmp_path, body)


def test_accept_brings_the_contact_with_its_transcript_and_lines_flow_both_ways(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        env.arrive("chat-1", subject="Hello")
        env.customer_says("chat-1", "first line", "in-1")
        offer = await console.expect("offer")

        # A line that comes as the contact connects lands both in the store and in the stream: the console
        # must see it once.
        def on_connect(batch: list[E.Event]) -> None:
            if any(isinstance(ev, E.ContactConnected) for ev in batch):
                env.customer_says("chat-1", "are you there?", "in-2")

        unsubscribe = env.centre.subscribe(on_connect)
        await console.send(type="accept", offer_id=offer["offer_id"], ref="acc")
        contact = await console.expect("contact")
        unsubscribe()
        assert contact["contact_id"] == "chat-1" and contact["channel"] == "chat" and contact["state"] == "connected"
        assert contact["subject"] == "Hello" and contact["case_id"] is None
        assert [(m["from"], m["text"]) for m in contact["transcript"]] == [
            ("customer", "first line"),
            ("customer", "are you there?"),
        ]
        ack = await console.expect("ack", ref="acc")
        assert ack["for"] == "accept" and ack["contact_id"] == "chat-1"
        assert env.agent("a1").state == "busy"

        await console.send(type="message", contact_id="chat-1", text="Hi, I'm Ann.")
        ack = await console.expect("ack", **{"for": "message"})
        assert ack["message_id"] == "chat-out-1"
        assert env.chat.calls == [("chat-1", "a1", "Hi, I'm Ann.")]

        env.customer_says("chat-1", "Great, thanks", "in-3")
        line = await console.expect("message")
        assert {k: line[k] for k in ("contact_id", "from", "text", "message_id")} == {
            "contact_id": "chat-1",
            "from": "customer",
            "text": "Great, thanks",
            "message_id": "in-3",
        }
        assert isinstance(line["at_ms"], int)
        seen = [f for f in console.frames if f["type"] == "message"]
        assert [f["message_id"] for f in seen] == ["in-3"]  # in-2 came in the transcript only; own lines not echoed

    run(tmp_path, body)


def test_reject_sends_the_contact_to_another_agent(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ann = await env.ready("a1")
        bob = await env.ready("a2")  # ann has been idle longer: she is offered first
        env.arrive("chat-1")
        offer = await ann.expect("offer")
        await ann.send(type="reject", offer_id=offer["offer_id"], reason="on a break soon")
        assert (await ann.expect("ack", **{"for": "reject"}))["offer_id"] == offer["offer_id"]
        second = await bob.expect("offer", contact_id="chat-1")
        assert second["offer_id"] != offer["offer_id"]

        await ann.send(type="accept", offer_id=offer["offer_id"])
        err = await ann.expect("error")
        assert (err["code"], err["for"]) == ("stale_offer", "accept")
        await bob.send(type="accept", offer_id=offer["offer_id"])  # someone else's offer
        assert (await bob.expect("error"))["code"] == "stale_offer"
        assert not any(f["type"] == "offer_gone" for f in ann.frames)  # a rejection is answered by its ack

    run(tmp_path, body)


def test_an_unanswered_offer_expires_and_the_agent_is_put_away(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        env.arrive("call-1", channel="voice")
        offer = await console.expect("offer")
        gone = await console.expect("offer_gone")  # the voice offer rings for one second
        assert gone == {
            "type": "offer_gone",
            "offer_id": offer["offer_id"],
            "contact_id": "call-1",
            "reason": "expired",
        }
        state = await console.expect("state")
        assert (state["state"], state["reason"]) == ("away", "missed_offer")
        assert env.centre.router.contact("call-1").state == "queued"  # it keeps its place in the queue

    run(tmp_path, body)


def test_an_offer_withdrawn_when_the_customer_leaves(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        env.arrive("chat-1")
        offer = await console.expect("offer")
        env.centre.submit(E.CustomerLeft(at_ms=env.centre.now_ms(), contact_id="chat-1"))
        gone = await console.expect("offer_gone")
        assert (gone["offer_id"], gone["reason"]) == (offer["offer_id"], "customer_left")

    run(tmp_path, body)


# ------------------------------------------------------------------------------------------------- handling


async def _handling(env: Env, console: Console, contact_id: str, **arrival: Any) -> dict[str, Any]:
    env.arrive(contact_id, **arrival)
    offer = await console.expect("offer", contact_id=contact_id)
    await console.send(type="accept", offer_id=offer["offer_id"])
    contact = await console.expect("contact", contact_id=contact_id)
    await console.expect("ack", **{"for": "accept"})
    # the screen-pop is read once the arrival is committed: let it come before what the test looks at next
    if not any(f["type"] == "screen_pop" and f.get("contact_id") == contact_id for f in console.frames):
        await console.expect("screen_pop", contact_id=contact_id)
    return contact


def test_hold_end_wrap_up_disposition_and_close(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        await _handling(env, console, "chat-1")

        await console.send(type="hold", contact_id="chat-1")
        assert (await console.recv()) == {"type": "contact_state", "contact_id": "chat-1", "state": "held"}
        assert (await console.recv())["for"] == "hold"
        await console.send(type="hold", contact_id="chat-1")
        err = await console.recv()
        assert err["code"] == "refused" and "held" in err["detail"]
        await console.send(type="retrieve", contact_id="chat-1")
        assert (await console.expect("contact_state"))["state"] == "connected"
        await console.expect("ack", **{"for": "retrieve"})

        await console.send(type="logout")
        err = await console.expect("error")
        assert err["code"] == "refused" and "chat-1" in err["detail"]
        await console.send(type="wrap_up_done", contact_id="chat-1")
        assert (await console.expect("error"))["code"] == "refused"  # not in wrap-up yet

        await console.send(type="end", contact_id="chat-1")
        wrap = await console.expect("wrap_up")
        assert wrap == {"type": "wrap_up", "contact_id": "chat-1", "ends_ms": None, "by": "agent"}  # manual
        assert (await console.expect("state"))["state"] == "wrap_up"
        await console.expect("ack", **{"for": "end"})

        await console.send(type="message", contact_id="chat-1", text="one more thing")
        assert (await console.expect("error"))["code"] == "refused"  # handling has ended
        await console.send(type="disposition", contact_id="chat-1", code="resolved")
        assert (await console.expect("ack", **{"for": "disposition"}))["code"] == "resolved"
        await console.send(type="wrap_up_done", contact_id="chat-1")
        closed = await console.expect("contact_closed")
        assert (closed["contact_id"], closed["disposition"]) == ("chat-1", "resolved")
        assert (await console.expect("state"))["state"] == "available"
        await console.expect("ack", **{"for": "wrap_up_done"})
        assert not env.centre.router.has_contact("chat-1")

    run(tmp_path, body)


def test_a_wrap_up_closed_with_a_disposition_moves_the_case_as_configured(tmp_path: Path) -> None:
    # A case stayed "new" after its chat was wrapped up "resolved": [dispositions] case_status maps codes to
    # the case's status, applied when the wrap-up closes (along the case's transitions: closed stays closed).
    config = msgspec.structs.replace(
        CONFIG, dispositions=DispositionsConfig(case_status={"resolved": "solved", "follow_up": "pending"})
    )

    async def body(env: Env) -> None:
        centre = env.centre
        now = centre.now_ms()
        ids = {}
        for name in ("solved", "untouched", "closed"):
            ids[name], _ = await centre.write(lambda c: cases.open_case(c, now, customer_id=None))
        await centre.write(lambda c: cases.set_status(c, ids["closed"], "closed", now))
        console = await env.ready("a1")
        for contact_id, case, code in (
            ("chat-1", "solved", "resolved"),
            ("chat-2", "untouched", "sale"),  # not in the map: the case is left as it is
            ("chat-3", "closed", "follow_up"),  # closed -> pending is no transition: stays closed
        ):
            await _handling(env, console, contact_id, case_id=ids[case])
            await console.send(type="end", contact_id=contact_id)
            await console.send(type="disposition", contact_id=contact_id, code=code)
            await console.send(type="wrap_up_done", contact_id=contact_id)
            await console.expect("contact_closed", contact_id=contact_id)
        await centre.commit()
        status = {name: (await centre.read(cases.get_case, case_id))["status"] for name, case_id in ids.items()}
        assert status == {"solved": "solved", "untouched": "new", "closed": "closed"}

    run(tmp_path, body, config=config)


def test_the_console_is_told_how_many_wait_in_its_own_queues(tmp_path: Path) -> None:
    # An agent could not see its queues: the gateway pushes per queue the agent serves how many wait and since
    # when the oldest has, on change and at most every queues_every_s; not for queues it does not serve.
    async def body(env: Env) -> None:
        ann, _ = await env.login("a1")  # general: serves support, not sales (logged in away: nothing offered)
        first = await ann.expect("queues")
        assert first == {"type": "queues", "queues": [{"queue": "support", "waiting": 0, "oldest_since_ms": None}]}
        cat, _ = await env.login("a3")  # sales only
        assert (await cat.expect("queues"))["queues"] == [{"queue": "sales", "waiting": 0, "oldest_since_ms": None}]

        env.arrive("chat-1")
        env.arrive("chat-2", queue="sales")
        env.arrive("chat-3")
        since = env.centre.router.contact("chat-1").waiting_since_ms
        frame = await ann.expect("queues")
        assert frame["queues"] == [{"queue": "support", "waiting": 2, "oldest_since_ms": since}]
        assert (await cat.expect("queues"))["queues"][0]["waiting"] == 1
        # the sales contact goes: Ann's figures did not change, so she is sent nothing; Cat is
        env.centre.submit(E.CustomerLeft(at_ms=env.centre.now_ms(), contact_id="chat-2"))
        assert (await cat.expect("queues"))["queues"][0]["waiting"] == 0
        await ann.send(type="state", state="available")  # takes chat-1: one waits, since chat-3 came
        frame = await ann.expect("queues")
        later = env.centre.router.contact("chat-3").waiting_since_ms
        assert frame["queues"] == [{"queue": "support", "waiting": 1, "oldest_since_ms": later}]
        assert sum(f["type"] == "queues" for f in ann.frames) == 3

    run(tmp_path, body, queues_every_s=0.02)


def test_the_consoles_queues_follow_a_skills_change(tmp_path: Path) -> None:
    # The queues an agent serves were fixed at login: after a supervisor (or /admin) gave Ann the sales skill
    # her console went on showing support only until she reconnected.
    from contactcentre.server.agent_actions import change_skills

    async def body(env: Env) -> None:
        ann, _ = await env.login("a1")  # general: serves support only
        assert [q["queue"] for q in (await ann.expect("queues"))["queues"]] == ["support"]
        await change_skills(env.centre, "a1", {"general": 5, "sales": 5}, None)
        assert [q["queue"] for q in (await ann.expect("queues"))["queues"]] == ["support", "sales"]
        await change_skills(env.centre, "a1", {"sales": 5}, None)
        assert [q["queue"] for q in (await ann.expect("queues"))["queues"]] == ["sales"]

    run(tmp_path, body, queues_every_s=0.02)


def test_the_customer_leaving_a_connected_chat(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        await _handling(env, console, "chat-1")
        env.centre.submit(E.CustomerLeft(at_ms=env.centre.now_ms(), contact_id="chat-1"))
        assert (await console.recv()) == {"type": "customer_left", "contact_id": "chat-1"}
        wrap = await console.recv()
        assert (wrap["type"], wrap["by"]) == ("wrap_up", "customer")

    run(tmp_path, body)


def test_transfer_to_a_queue(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ann = await env.ready("a1")
        cat = await env.ready("a3")  # sales
        await _handling(env, ann, "chat-1")

        await ann.send(type="transfer", contact_id="chat-1", to_queue="nowhere")
        assert (await ann.expect("error"))["code"] == "refused"
        await ann.send(type="transfer", contact_id="chat-1", to_queue="sales", to_agent="a3")
        assert (await ann.expect("error"))["code"] == "bad_field"
        await ann.send(type="transfer", contact_id="chat-1", to_agent="a1")
        assert (await ann.expect("error"))["code"] == "refused"

        await ann.send(type="transfer", contact_id="chat-1", to_queue="sales")
        moved = await ann.expect("transferred")
        assert moved == {
            "type": "transferred",
            "contact_id": "chat-1",
            "to_queue": "sales",
            "to_agent": None,
            "to_external": None,
        }
        await ann.expect("ack", **{"for": "transfer"})
        offer = await cat.expect("offer", contact_id="chat-1")
        assert offer["queue"] == "sales"
        await ann.send(type="message", contact_id="chat-1", text="still there?")
        assert (await ann.expect("error"))["code"] == "not_your_contact"

    run(tmp_path, body)


def test_email_reply_and_preview(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        now = env.centre.now_ms()
        jo = await env.centre.write(
            lambda c: customers.create_customer(c, now, name="Jo Bloggs", identities_=[("email", "jo@example.com")])
        )
        console = await env.ready("a1")
        # Not identified at arrival: the screen-pop finds the customer by the address the mail came from.
        env.arrive("mail-1", channel="email", subject="Invoice 42", case_id="case-1", address="Jo@Example.com")
        env.customer_says(
            "mail-1", "Hello,\n\nthe invoice is wrong.\n> quoted earlier mail\nRegards, Jo", "<m1@x>", "email"
        )
        offer = await console.expect("offer")
        assert offer["preview"] == {
            "subject": "Invoice 42",
            "lines": ["Hello,", "the invoice is wrong.", "Regards, Jo"],
        }
        pop = await console.expect("screen_pop")
        assert (pop["matched"], pop["kind"], pop["customer"]["id"]) == (True, "email", jo)
        await console.send(type="accept", offer_id=offer["offer_id"])
        contact = await console.expect("contact")
        assert contact["case_id"] == "case-1" and contact["transcript"][0]["message_id"] == "<m1@x>"
        await console.send(type="reply", contact_id="mail-1", text="Dear Jo, corrected.")
        ack = await console.expect("ack", **{"for": "reply"})
        assert ack["message_id"] == "email-out-1"
        assert env.email.calls == [("mail-1", "a1", "Dear Jo, corrected.")]
        await console.send(type="end", contact_id="mail-1")
        closed = await console.expect("contact_closed")  # e-mail has no wrap-up here
        assert closed["contact_id"] == "mail-1"
        await console.expect("ack", **{"for": "end"})
        # wrap_up_s = 0: straight to contact_closed, no wrap_up frame that the console would show for nothing
        assert [f for f in console.frames if f["type"] == "wrap_up"] == []

    run(tmp_path, body)


# ------------------------------------------------------------------------------------- long transcripts

SMALL_TRANSCRIPTS = msgspec.structs.replace(
    CONFIG,
    server=msgspec.structs.replace(CONFIG.server, transcripts=TranscriptConfig(body_chars=100, messages=3)),
)


def test_transcripts_cut_long_bodies_and_page_older_messages(tmp_path: Path) -> None:
    mails = [f"mail {i} " + "x" * 1000 for i in range(5)]

    async def body(env: Env) -> None:
        ann = await env.ready("a1")
        bob = await env.ready("a2")
        env.arrive("mail-1", channel="email", subject="Big attachments", case_id="case-1")
        for i, text in enumerate(mails):
            env.customer_says("mail-1", text, f"<m{i}@x>", "email")
        offer = await ann.expect("offer", contact_id="mail-1")
        await ann.send(type="accept", offer_id=offer["offer_id"])
        contact = await ann.expect("contact", contact_id="mail-1")
        # The newest three, each cut to 100 characters with its full length, and a cursor to the older ones.
        lines = contact["transcript"]
        assert [m["message_id"] for m in lines] == ["<m2@x>", "<m3@x>", "<m4@x>"]
        assert all(
            m["text"] == mails[i + 2][:100] and m["truncated"] and m["length"] == 1007 for i, m in enumerate(lines)
        )
        assert contact["transcript_before"]
        await ann.send(type="transcript", contact_id="mail-1", before=contact["transcript_before"])
        older = await ann.expect("ack", **{"for": "transcript"})
        assert [m["message_id"] for m in older["transcript"]] == ["<m0@x>", "<m1@x>"]
        assert older["transcript_before"] is None

        # The whole text on request, by a transcript line's id or a live line's message_id.
        await ann.send(type="message_text", contact_id="mail-1", id=lines[0]["id"])
        whole = await ann.expect("ack", **{"for": "message_text"})
        assert (whole["text"], whole["message_id"]) == (mails[2], "<m2@x>")
        env.customer_says("mail-1", "late " + "y" * 500, "<m5@x>", "email")
        live = await ann.expect("message", message_id="<m5@x>")
        assert (len(live["text"]), live["truncated"], live["length"]) == (100, True, 505)
        await ann.send(type="message_text", contact_id="mail-1", message_id="<m5@x>")
        assert (await ann.expect("ack", **{"for": "message_text"}))["text"] == "late " + "y" * 500

        # Only the agent handling the contact, and only messages of its conversation.
        await bob.send(type="message_text", contact_id="mail-1", id=lines[0]["id"])
        assert (await bob.expect("error"))["code"] == "not_your_contact"
        await bob.send(type="transcript", contact_id="mail-1", before=contact["transcript_before"])
        assert (await bob.expect("error"))["code"] == "not_your_contact"
        env.arrive("mail-2", channel="email", subject="Other", case_id="case-2")
        env.customer_says("mail-2", "someone else's mail", "<other@x>", "email")
        offer = await bob.expect("offer", contact_id="mail-2")
        await env.centre.commit()
        await ann.send(type="message_text", contact_id="mail-1", message_id="<other@x>")
        assert (await ann.expect("error"))["code"] == "not_found"
        for bad in ({"before": "yesterday"}, {"before": ""}):
            await ann.send(type="transcript", contact_id="mail-1", **bad)
            assert (await ann.expect("error", **{"for": "transcript"}))["code"] == "bad_field"
        for bad in ({}, {"id": "7"}, {"id": True}, {"id": 2**70}, {"id": 1, "message_id": "<m0@x>"}):
            await ann.send(type="message_text", contact_id="mail-1", **bad)
            assert (await ann.expect("error", **{"for": "message_text"}))["code"] == "bad_field"

    run(tmp_path, body, config=SMALL_TRANSCRIPTS)


# -------------------------------------------------------------------------------------------------- errors


def test_bad_frames_are_answered_and_the_connection_stays(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ann = await env.ready("a1")
        bob = await env.ready("a2")
        await _handling(env, ann, "chat-1")

        await bob.send(type="message", contact_id="chat-1", text="hi")
        err = await bob.expect("error")
        assert (err["code"], err["for"]) == ("not_your_contact", "message")
        await bob.send(type="end", contact_id="chat-1")
        assert (await bob.expect("error"))["code"] == "not_your_contact"

        await ann.ws.send("{not json")
        assert (await ann.expect("error"))["code"] == "bad_json"
        await ann.ws.send("[" * 100_000 + "]" * 100_000)  # deeper than any decoder's stack: bad input, not a bug
        err = await ann.expect("error")
        assert (err["code"], err["detail"]) == ("bad_json", "not JSON: JSON nested too deeply")
        await ann.ws.send("[1, 2]")
        assert (await ann.expect("error"))["code"] == "bad_frame"
        await ann.ws.send(b'{"type": "ping"}')
        assert (await ann.expect("error"))["code"] == "bad_frame"
        await ann.send(type="dance", ref=3)
        err = await ann.expect("error")
        assert (err["code"], err["ref"]) == ("unknown_type", 3)
        await ann.send(type="message", contact_id="chat-1")
        err = await ann.expect("error")
        assert err["code"] == "bad_field" and "text" in err["detail"]
        await ann.send(type="accept")
        assert (await ann.expect("error"))["code"] == "bad_field"
        await ann.send(type="login", token=env.tokens["a1"])
        assert (await ann.expect("error"))["code"] == "already_logged_in"
        await ann.send(type="ping", ref={"no": "objects"})
        assert (await ann.expect("error"))["code"] == "bad_field"

        env.arrive("call-1", channel="voice", queue="support")  # bob is free: the call is his
        offer = await bob.expect("offer", contact_id="call-1")
        await bob.send(type="accept", offer_id=offer["offer_id"])
        await bob.expect("contact", contact_id="call-1")
        await bob.send(type="message", contact_id="call-1", text="hello?")
        assert (await bob.expect("error"))["code"] == "channel_unavailable"  # no text on a phone call

        await ann.send(type="ping", ref="still here")
        assert (await ann.expect("ack"))["ref"] == "still here"

    run(tmp_path, body)


def test_rate_limit(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console, _ = await env.login("a1")
        for n in range(3):
            await console.send(type="ping", ref=n)
        answers = [await console.recv() for _ in range(3)]
        assert [(a["type"], a.get("code")) for a in answers] == [
            ("ack", None),
            ("ack", None),
            ("error", "rate_limited"),
        ]

    run(tmp_path, body, rate_per_s=0.001, burst=2)


# ----------------------------------------------------------------------------------------- disconnections


def test_disconnect_puts_a_ready_agent_away_and_a_reconnect_gets_its_work_back(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        now = env.centre.now_ms()
        jo = await env.centre.write(lambda c: customers.create_customer(c, now, name="Jo Bloggs"))
        bob = await env.ready("a2")
        await bob.close()
        await env.until(lambda: env.agent("a2").state == "away")
        assert env.agent("a2").away_reason == "disconnected"

        ann = await env.ready("a1")
        await _handling(env, ann, "chat-1", customer_id=jo, subject="Help")
        await ann.send(type="message", contact_id="chat-1", text="Hello Jo")
        await ann.expect("ack", **{"for": "message"})
        await ann.close()
        await env.until(lambda: env.agent("a1").presence == "away")
        assert env.agent("a1").state == "busy"  # the chat stays hers
        assert env.centre.router.contact("chat-1").agent_id == "a1"
        env.arrive("chat-2")  # nobody ready: it waits
        assert env.centre.router.contact("chat-2").state == "queued"

        again, welcome = await env.login("a1")
        assert (welcome["state"], welcome["presence"], welcome["away_reason"]) == ("busy", "away", "disconnected")
        assert welcome["work"] == [
            {
                "contact_id": "chat-1",
                "channel": "chat",
                "queue": "support",
                "state": "connected",
                "customer_id": jo,
                "tier": None,
            }
        ]
        contact = await again.expect("contact")
        assert contact["contact_id"] == "chat-1" and contact["subject"] == "Help"
        assert [(m["from"], m["text"]) for m in contact["transcript"]] == [("agent", "Hello Jo")]
        assert contact["transcript"][0]["agent_id"] == "a1"
        pop = await again.expect("screen_pop", contact_id="chat-1")
        assert pop["customer"]["name"] == "Jo Bloggs" and pop["offer_id"] is None

        await again.send(type="state", state="available")
        offer = await again.expect("offer")
        assert offer["contact_id"] == "chat-2"

    run(tmp_path, body)


def test_after_a_restart_the_preview_comes_from_the_store(tmp_path: Path) -> None:
    async def main() -> None:
        centre = await open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}")
        try:
            at = centre.now_ms()
            centre.submit(
                E.ContactArrived(at_ms=at, contact_id="mail-1", queue="support", channel="email", subject="Refund")
            )
            centre.publish(
                [
                    E.MessageReceived(
                        at_ms=at, contact_id="mail-1", message_id="m1", channel="email", body="Please refund"
                    )
                ]
            )
        finally:
            await close_centre(centre)

        async with running(tmp_path) as env:  # the same database: mail-1 waits in the restored router
            assert env.centre.router.contact("mail-1").state == "queued"
            console = await env.ready("a1")  # mail-1 is offered at once: before the ack of "available"
            offer = next(f for f in console.frames if f["type"] == "offer")
            assert offer["contact_id"] == "mail-1"
            assert offer["preview"] == {"subject": "Refund", "lines": ["Please refund"]}
            assert offer["why"]["trigger"] == "agent"  # a1 became ready and pulled the waiting mail
            assert offer["why"]["candidates"][0]["id"] == "mail-1"

    asyncio.run(main())


def test_transfer_to_an_agent(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ann = await env.ready("a1")
        await _handling(env, ann, "chat-1")
        bob, _ = await env.login("a2")  # logged in, not ready: a named transfer still reaches him
        await ann.send(type="transfer", contact_id="chat-1", to_agent="a3")
        assert (await ann.expect("error"))["code"] == "refused"  # cat is not logged in
        await ann.send(type="transfer", contact_id="chat-1", to_agent="a2")
        assert (await ann.expect("transferred"))["to_agent"] == "a2"
        await bob.send(type="state", state="available")
        offer = await bob.expect("offer", contact_id="chat-1")
        await bob.send(type="accept", offer_id=offer["offer_id"])
        contact = await bob.expect("contact", contact_id="chat-1")
        assert contact["state"] == "connected"

    run(tmp_path, body)


class Gone(Exception):
    code = "closed"


def test_typing_presence_and_a_failing_channel(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        console = await env.ready("a1")
        await _handling(env, console, "chat-1")
        await console.send(type="typing", contact_id="chat-1")
        await console.expect("ack", **{"for": "typing"})
        assert env.chat.typing == [("chat-1", "a1")]

        assert env.email.typing == []
        env.centre.signal(CustomerTyping("chat-1", "a1"))  # what the chat channel signals, from any node
        assert await console.recv() == {"type": "typing", "contact_id": "chat-1"}
        env.centre.signal(CustomerPresence("chat-1", "a1", connected=False))
        assert await console.recv() == {"type": "customer_presence", "contact_id": "chat-1", "connected": False}
        env.centre.signal(CustomerTyping("chat-9", "a1"))  # not hers: nothing
        env.centre.signal(CustomerPresence("chat-1", None, connected=True))

        env.chat.fail = Gone("the customer has left")
        await console.send(type="message", contact_id="chat-1", text="hello?")
        err = await console.recv()
        assert (err["type"], err["code"], err["reason"], err["detail"]) == (
            "error",
            "channel_error",
            "closed",
            "the customer has left",
        )

    run(tmp_path, body)


# --------------------------------------------------------------------------------------------- voice calls

VOICE_CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "channels": {"voice": {"offer_timeout_s": 120, "wrap_up_s": "manual"}},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["chat", "voice"]}],
        "agents": [{"id": "a1", "skills": {"general": 5}}, {"id": "a2", "skills": {"general": 5}}],
    },
    "<test>",
)


def test_voice_commands_operate_the_phone(tmp_path: Path) -> None:
    """answer, hold, retrieve, consult, conference, transfer and hang_up on a call on the simulated switch:
    the console's commands move the call, and the switch's events bring the router along."""
    from twisted.internet import task

    from contactcentre.edge.voice.channel import VoiceChannel
    from contactcentre.telephony import Switch, SwitchConfig
    from contactcentre.telephony.driver import SwitchDriver

    async def body(env: Env) -> None:
        c = env.centre
        switch = Switch(
            SwitchConfig(extensions=("a1", "a2", "a3"), queues=("q-support",), ring_timeout_ms=600_000),
            start_ms=c.now_ms(),
        )
        voice = VoiceChannel(c, SwitchDriver(switch, task.Clock(), now_ms=c.now_ms))
        try:
            ann, bob = await env.ready("a1"), await env.ready("a2")
            call = voice.driver.simulate_inbound("+31201234567", "q-support")
            await voice.settle()
            first = env.centre.router.contact(call).offer.agent_id
            me, other = (ann, bob) if first == "a1" else (bob, ann)
            second = "a2" if first == "a1" else "a1"
            await me.expect("offer", contact_id=call)

            await other.send(type="answer", contact_id=call)
            err = await other.expect("error", **{"for": "answer"})
            assert err["code"] == "stale_offer"
            await me.send(type="answer", contact_id=call, ref=1)
            await me.expect("contact", contact_id=call)
            await me.expect("ack", ref=1)
            assert switch.calls[call].connections[first].state == "connected"

            await me.send(type="hold", contact_id=call)
            await me.expect("contact_state", contact_id=call, state="held")
            await me.expect("ack", **{"for": "hold"})
            await me.send(type="retrieve", contact_id=call)
            await me.expect("contact_state", contact_id=call, state="connected")
            await me.send(type="callback", contact_id=call, at_ms="soon")
            assert (await me.expect("error", **{"for": "callback"}))["code"] == "bad_field"
            await me.send(type="callback", contact_id=call, customer_asked=True)
            assert (await me.expect("error", **{"for": "callback"}))["code"] == "channel_unavailable"

            await me.send(type="consult", contact_id=call, to_agent=second)
            ack = await me.expect("ack", **{"for": "consult"})
            consultation = ack["consultation_id"]
            assert switch.calls[consultation].connections[second].state == "alerting"
            voice.driver.run(lambda now: switch.answer(consultation, second, now))
            await me.send(type="conference", contact_id=call)
            await me.expect("ack", **{"for": "conference"})
            await env.until(lambda: any(isinstance(e, E.ContactConferenced) for e in seen))
            assert switch.calls[call].state == "conferenced"
            await other.send(type="hang_up", contact_id=call)  # not theirs in the router: a party only
            assert (await other.expect("error", **{"for": "hang_up"}))["code"] == "not_your_contact"
            voice.driver.run(lambda now: switch.clear_connection(call, second, now))  # the colleague leaves

            await me.send(type="transfer", contact_id=call, to_agent="nobody")
            assert (await me.expect("error", **{"for": "transfer"}))["code"] == "refused"
            await me.send(type="transfer", contact_id=call, to_agent=second)
            await me.expect("transferred", contact_id=call, to_agent=second)
            await other.expect("offer", contact_id=call)
            await other.send(type="answer", contact_id=call)
            await other.expect("ack", **{"for": "answer"})
            await other.send(type="hang_up", contact_id=call)
            await other.expect("wrap_up", contact_id=call, by="agent")
            assert call not in switch.calls and env.centre.router.contact(call).state == "wrap_up"

        finally:
            await voice.stop()

    seen: list[E.Event] = []

    async def with_log(env: Env) -> None:
        env.centre.subscribe(seen.extend)
        await body(env)

    run(tmp_path, with_log, config=VOICE_CONFIG)


def test_a_case_note_is_stored_for_colleagues_and_never_shown_to_the_customer(tmp_path: Path) -> None:
    from sqlalchemy import select

    from contactcentre.store.chats import lines_after
    from contactcentre.store.schema import messages

    async def body(env: Env) -> None:
        console = await env.ready("a1")
        env.arrive("chat-1", case_id="C-NOTE01")
        await _handling(env, console, "chat-1")
        await console.send(type="note", contact_id="chat-1", text="  ")
        assert (await console.expect("error"))["code"] == "bad_field"
        await console.send(type="note", contact_id="chat-2", text="not mine")
        assert (await console.expect("error"))["code"] == "not_your_contact"
        await console.send(type="note", contact_id="chat-1", text="Customer asked for a refund; see invoice 42.")
        ack = await console.expect("ack", **{"for": "note"})
        assert ack["case_id"] == "C-NOTE01"
        await console.send(type="end", contact_id="chat-1")
        await console.expect("wrap_up")
        await console.send(type="note", contact_id="chat-1", text="Refund approved.")  # wrap-up is for this too
        await console.expect("ack", **{"for": "note"})

        def read(conn: Any) -> Any:
            rows = conn.execute(select(messages).where(messages.c.channel == "note").order_by(messages.c.id)).all()
            return rows, lines_after(conn, ["chat-1"], None)

        notes, customer_lines = await env.centre.read(read)
        assert [(n.case_id, n.interaction_id, n.author, n.body) for n in notes] == [
            ("C-NOTE01", "chat-1", "a1", "Customer asked for a refund; see invoice 42."),
            ("C-NOTE01", "chat-1", "a1", "Refund approved."),
        ]
        assert all("refund" not in line["body"].lower() for line in customer_lines)  # a resume never replays it

    run(tmp_path, body)


def test_a_contact_seen_arriving_on_no_case_with_nothing_said_gets_its_empty_transcript_without_a_read(
    tmp_path: Path,
) -> None:
    from sqlalchemy import event

    async def body(env: Env) -> None:
        console = await env.ready("a1")
        reads: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if "FROM messages" in statement:
                reads.append(statement)

        event.listen(env.centre.engine, "before_cursor_execute", count)
        env.arrive("call-1", subject="Billing")  # no case, no line: what a phone call is
        offer = await console.expect("offer")
        await console.send(type="accept", offer_id=offer["offer_id"])
        contact = await console.expect("contact")
        assert (contact["case_id"], contact["subject"], contact["transcript"]) == (None, "Billing", [])
        assert contact["transcript_before"] is None and reads == []
        await console.send(type="note", contact_id="call-1", text="called about an invoice")
        await console.expect("ack", **{"for": "note"})
        # A note was logged on it: from now on its transcript is the store's to tell (a reconnect shows it).
        await console.close()
        await env.until(lambda: env.agent("a1").presence == "away")
        again, _ = await env.login("a1")
        contact = await again.expect("contact")
        assert [m["text"] for m in contact["transcript"]] == ["called about an invoice"] and reads != []

    run(tmp_path, body)
