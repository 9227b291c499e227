"""The demo's people, through the server's real front doors.

``contactcentre demo`` starts the live server (``runtime.serve``) on a fresh database and then this: every
configured agent but the last ``agents_for_people`` (left for people to log in as) gets a simulated console on
``ws://…/agent`` (logs in, goes available, accepts offers after ``accept_delay_s`` — now and then rejects one —
chats with the customer, ends, sets a disposition, finishes wrap-up, takes breaks); customers arrive by
``[[demo.traffic]]`` entry, the first ``WARM_UP_ARRIVALS`` of each within seconds (the first from the regular
customer), then as Poisson streams: chat customers open ``ws://…/chat`` with the widget's protocol and talk
until the agent closes or their patience runs out; e-mail customers send a real mail to the SMTP port; voice
callers ring in on the simulated switch — every other one (the first) through the IVR, answering its questions
(``caller_key``) — and hang up when their patience runs out (callers the switch has no driver for are submitted
to the router directly).

Customers come from the demo's book (``demo/customers.py``), so screen-pop shows history as the demo runs.
Randomness comes from ``random.Random(seed)`` only (one child generator per stream); wall-clock timing decides
the exact instants, so a demo is seeded, not replayable — its event log is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contactcentre.demo.customers import BOOK_SIZE, REGULAR, TIER_SHARES, DemoCustomer, address_for, demo_customer
from contactcentre.events import ContactArrived, CustomerLeft
from contactcentre.loadgen.clients import JsonSocket, send_email

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig
    from contactcentre.config import DemoTraffic as TrafficEntry
    from contactcentre.server.centre import Centre, ServerInfo
    from contactcentre.telephony.ivr.menu import Menu

log = logging.getLogger(__name__)

PATIENCE_MEAN_S = 300.0
REJECT_SHARE = 0.05
BREAK_EVERY_MEAN_S = 15 * 60.0
BREAK_LENGTH_S = (60.0, 240.0)
BACK_AFTER_AWAY_S = (5.0, 20.0)
MIN_HANDLE_S = 5.0
# The first arrivals of every stream come this soon, one after the other, so that a newcomer sees every
# channel (and a call through the IVR and one dialled directly) within seconds, not after a Poisson wait of
# minutes at the demo's gentle rates; the streams are Poisson from then on.
WARM_UP_ARRIVALS = 2
WARM_UP_GAP_S = (1.0, 5.0)
DISPOSITIONS = ("resolved", "resolved", "resolved", "follow_up", "complaint")
AGENT_LINES = (
    "Hello, thanks for waiting. Let me look into that for you.",
    "I can see your account here. One moment please.",
    "That is sorted now. Is there anything else I can do?",
)
CUSTOMER_LINES = (
    "Hi, I have a question about my last invoice.",
    "My router keeps dropping the connection since yesterday.",
    "Can you tell me the status of my order?",
    "I would like to change my subscription.",
)


@dataclass
class _AgentBot:
    agent_id: str
    token: str
    sock: JsonSocket | None = None
    on_break: bool = False
    handling: dict[str, str] = field(default_factory=dict)  # contact id -> channel


class LiveDemo:
    def __init__(
        self,
        centre: Centre,
        info: ServerInfo,
        config: CentreConfig,
        tokens: dict[str, str],
        *,
        seed: int,
        rate_scale: float = 1.0,
    ) -> None:
        assert config.demo is not None
        self.centre = centre
        self.info = info
        self.config = config
        self.demo = config.demo
        self.loop = asyncio.get_running_loop()
        self.rate_scale = rate_scale
        master = random.Random(seed)
        self._arrival_rng = [random.Random(master.getrandbits(64)) for _ in self.demo.traffic]
        self._customer_rng = random.Random(master.getrandbits(64))
        self._agent_rng = random.Random(master.getrandbits(64))
        self._book_tiers = tuple(t for t in TIER_SHARES if t in config.tiers)
        self._ids = itertools.count(1)
        self._handle_s = {(t.queue, t.channel): t.handle_s for t in self.demo.traffic}
        self._agents = {aid: _AgentBot(aid, tok) for aid, tok in tokens.items()}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._chats: dict[str, JsonSocket] = {}
        self._arrived = [0] * len(self.demo.traffic)  # per stream, for the warm-up
        self._calls = 0  # callers alternate: through the IVR (the first), then dialling the queue
        self.running = False
        self.arrivals = 0

    # ------------------------------------------------------------------------------------------- control

    def start(self) -> None:
        self.running = True
        for bot in self._agents.values():
            self._spawn(self._agent_login(bot))
        for i, entry in enumerate(self.demo.traffic):
            self._schedule_arrival(i, entry)

    async def stop(self) -> None:
        self.running = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        socks = [b.sock for b in self._agents.values() if b.sock is not None] + list(self._chats.values())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------------------------------- helpers

    def _later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            if self.running:
                result = fn(*args)
                if asyncio.iscoroutine(result):
                    self._spawn(result)

        handle = self.loop.call_later(max(0.0, delay_s), fire)
        self._timers.add(handle)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("demo: %r", task.exception())

    def _ws(self, path: str) -> str:
        host = self.info.host if ":" not in self.info.host else f"[{self.info.host}]"
        return f"ws://{host}:{self.info.ws_port}{path}"

    def _handle_time(self, queue: str, channel: str) -> float:
        mean = self._handle_s.get((queue, channel)) or next(iter(self._handle_s.values()), 120.0)
        return max(MIN_HANDLE_S, self._agent_rng.expovariate(1 / mean))

    # -------------------------------------------------------------------------------------------- agents

    async def _agent_login(self, bot: _AgentBot) -> None:
        async def on_frame(frame: dict[str, Any]) -> None:
            await self._agent_frame(bot, frame)

        bot.sock = JsonSocket(self._ws("/agent"), on_frame, name=f"agent {bot.agent_id}")
        await bot.sock.open()
        await bot.sock.send({"type": "login", "token": bot.token})
        self._schedule_break(bot)

    def _schedule_break(self, bot: _AgentBot) -> None:
        self._later(self._agent_rng.expovariate(1 / BREAK_EVERY_MEAN_S), self._take_break, bot)

    async def _take_break(self, bot: _AgentBot) -> None:
        if bot.sock is None:
            return
        if not bot.handling:
            bot.on_break = True
            await bot.sock.send({"type": "state", "state": "away", "reason": "break"})
            self._later(self._agent_rng.uniform(*BREAK_LENGTH_S), self._end_break, bot)
        self._schedule_break(bot)

    async def _end_break(self, bot: _AgentBot) -> None:
        bot.on_break = False
        if bot.sock is not None:
            await bot.sock.send({"type": "state", "state": "available"})

    async def _agent_frame(self, bot: _AgentBot, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        sock = bot.sock
        assert sock is not None
        rng = self._agent_rng
        if kind == "welcome":
            await sock.send({"type": "state", "state": "available"})
        elif kind == "offer":
            delay = self.demo.accept_delay_s * rng.uniform(0.5, 1.5)
            answer = "reject" if rng.random() < REJECT_SHARE else "accept"
            self._later(delay, sock.send, {"type": answer, "offer_id": frame["offer_id"], "reason": "busy"})
        elif kind == "contact":
            cid, channel = frame["contact_id"], frame.get("channel", "chat")
            bot.handling[cid] = channel
            queue = frame.get("queue") or ""
            if channel in ("chat", "email"):
                self._later(
                    rng.uniform(2, 6), sock.send, {"type": "message", "contact_id": cid, "text": AGENT_LINES[0]}
                )
            self._later(self._handle_time(queue, channel), self._agent_ends, bot, cid)
        elif kind == "wrap_up":
            cid = frame["contact_id"]
            code = rng.choice(DISPOSITIONS)
            await sock.send({"type": "disposition", "contact_id": cid, "code": code})
            if frame.get("ends_ms") is None:  # manual wrap-up: the agent says when
                self._later(rng.uniform(3, 12), sock.send, {"type": "wrap_up_done", "contact_id": cid})
        elif kind in ("contact_closed", "customer_left"):
            bot.handling.pop(frame.get("contact_id", ""), None)
        elif kind == "state" and frame.get("state") == "away" and not bot.on_break:
            # the router put us away (a missed offer, a reconnect): come back
            self._later(rng.uniform(*BACK_AFTER_AWAY_S), sock.send, {"type": "state", "state": "available"})

    async def _agent_ends(self, bot: _AgentBot, cid: str) -> None:
        if bot.sock is None or cid not in bot.handling:
            return
        if bot.handling[cid] in ("chat", "email"):
            await bot.sock.send({"type": "message", "contact_id": cid, "text": AGENT_LINES[2]})
        await bot.sock.send({"type": "end", "contact_id": cid})

    # ----------------------------------------------------------------------------------------- customers

    def _schedule_arrival(self, i: int, entry: TrafficEntry) -> None:
        rng = self._arrival_rng[i]
        if self._arrived[i] < WARM_UP_ARRIVALS:
            gap_s = rng.uniform(*WARM_UP_GAP_S)
        else:
            gap_s = rng.expovariate(entry.per_hour * self.rate_scale / 3600)
        self._later(gap_s, self._arrive, i, entry)

    def _arrive(self, i: int, entry: TrafficEntry) -> None:
        self._arrived[i] += 1
        self._schedule_arrival(i, entry)
        rng = self._customer_rng
        drawn = rng.randrange(1, BOOK_SIZE + 1)  # drawn even when unused: the streams stay as seeded
        who = demo_customer(REGULAR if self._arrived[i] == 1 else drawn, self._book_tiers)
        patience_s = rng.expovariate(1 / PATIENCE_MEAN_S)
        line = rng.choice(CUSTOMER_LINES)
        self.arrivals += 1
        if entry.channel == "chat":
            self._spawn(self._chat(who, entry, patience_s, line))
        elif entry.channel == "email":
            self._spawn(self._email(who, entry, line))
        else:
            self._call(who, entry, patience_s)

    async def _email(self, who: DemoCustomer, entry: TrafficEntry, line: str) -> None:
        if self.info.smtp_port is None:
            return
        to = next(
            (a for a, q in self.config.server.email.queues_by_address.items() if q == entry.queue),
            self.config.server.email.address,
        )
        await self.loop.run_in_executor(
            None,
            lambda: send_email(
                self.info.host,
                self.info.smtp_port or 0,
                sender=who.email,
                sender_name=who.name,
                to=to,
                subject=line.split(".")[0][:60],
                body=f"{line}\n\nKind regards,\n{who.name}\n",
            ),
        )

    async def _chat(self, who: DemoCustomer, entry: TrafficEntry, patience_s: float, line: str) -> None:
        joined = asyncio.Event()
        done = asyncio.Event()

        async def on_frame(frame: dict[str, Any]) -> None:
            kind = frame.get("type")
            if kind == "agent_joined":
                joined.set()
            elif kind in ("closed", "offline"):
                done.set()

        sock = JsonSocket(self._ws("/chat"), on_frame, name=f"chat {who.id}")
        await sock.open()
        key = f"chat-{next(self._ids)}"
        self._chats[key] = sock
        try:
            await sock.send({"type": "hello", "name": who.name, "email": who.email, "topic": line[:60]})
            await sock.send({"type": "message", "text": line, "client_id": "1"})
            try:
                await asyncio.wait_for(joined.wait(), patience_s)
            except TimeoutError:
                await sock.send({"type": "close"})  # gave up waiting
                return
            await asyncio.wait_for(done.wait(), 3600)
        finally:
            self._chats.pop(key, None)
            await sock.close()

    def _call(self, who: DemoCustomer, entry: TrafficEntry, patience_s: float) -> None:
        voice = self.centre.channels.get("voice")
        if voice is not None and hasattr(voice, "driver"):
            self._ring_in(voice, who, entry, patience_s)
            return
        cid = f"call-{next(self._ids)}"
        tier = who.tier if who.tier in self.config.tiers else None
        self.centre.submit(
            ContactArrived(
                at_ms=self.centre.now_ms(),
                contact_id=cid,
                queue=entry.queue,
                channel=entry.channel,
                customer_id=who.id,
                tier=tier,
                address=address_for(who, entry.channel),
            )
        )

        def hang_up() -> None:
            if self.centre.router.contact_state(cid) in ("queued", "offered"):
                self.centre.submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=cid))

        self._later(patience_s, hang_up)

    def _ivr_caller(self, ivr: Any, voice: Any, call_id: str, number: str, queue: str) -> None:
        """The caller listens to each question of the IVR's menu and, a moment later, keys its answer
        (``caller_key``) over the switch, as the CTI link's GenerateDigits does."""
        from contactcentre.telephony.ivr import CollectDigits

        asked: dict[str, int] = {}  # node -> questions heard there (a callback asks two)

        def press(key: str) -> None:
            call = voice.switch.calls.get(call_id)
            if call is not None and number in call.connections:
                trunk = next(iter(call.connections))  # the caller's trunk: the call's first party
                try:
                    voice.driver.run(lambda now: voice.switch.generate_digits(call_id, trunk, key, now))
                except Exception as exc:
                    log.info("demo: keys for %s: %s", call_id, exc)

        def heard(cid: str, action: Any) -> None:
            if cid == call_id and isinstance(action, CollectDigits):
                key = caller_key(ivr.menus[number], action.node, queue, asked.get(action.node, 0))
                asked[action.node] = asked.get(action.node, 0) + 1
                if key is not None:
                    self._later(self._customer_rng.uniform(0.5, 2.0), press, key)
            elif cid == call_id and call_id not in ivr.calls and heard in ivr.listeners:
                ivr.listeners.remove(heard)  # the call has left the IVR

        ivr.listeners.append(heard)

    def _ring_in(self, voice: Any, who: DemoCustomer, entry: TrafficEntry, patience_s: float) -> None:
        """A call on a trunk of the simulated switch to the queue's number: the voice channel queues it,
        agents answer it on their phone through the agent protocol, the caller hangs up when out of patience."""
        number = self.config.queue_numbers()[entry.queue]
        ivr = self.centre.channels.get("ivr")
        self._calls += 1
        via_ivr = ivr is not None and self._calls % 2 == 1  # half the callers dial the IVR, the first of them
        if via_ivr:
            number = next(iter(ivr.menus))
        try:
            call_id = voice.driver.simulate_inbound(who.phone, number)
        except Exception as exc:  # all trunks busy: the caller hears busy and tries another day
            log.info("demo: call from %s not placed: %s", who.phone, exc)
            return
        if via_ivr:
            self._ivr_caller(ivr, voice, call_id, number, entry.queue)

        def hang_up() -> None:
            state = self.centre.router.contact_state(call_id)
            if state in ("queued", "offered") and call_id in voice.switch.calls:
                try:
                    voice.driver.run(lambda now: voice.switch.clear_call(call_id, now))
                except Exception as exc:
                    log.info("demo: hang-up of %s: %s", call_id, exc)

        self._later(patience_s, hang_up)


def caller_key(menu: Menu, node: str, queue: str, asked_before: int = 0) -> str | None:
    """The key a demo caller who wants ``queue`` presses at ``node``: the option that leads there; where none
    does (the menu of a closed centre), the option that asks for a callback, else the first option; at a
    callback's questions, 1 (call me on this number — the demo's callers never withhold it), then the first
    time offered. None: the caller says nothing (a node that asks nothing)."""
    from contactcentre.telephony.ivr.menu import CallbackNode, MenuNode, key_towards

    key = key_towards(menu, node, queue)
    if key is not None:
        return key
    here = menu.nodes.get(node)
    if isinstance(here, MenuNode) and here.options:
        callback = [k for k, target in sorted(here.options.items()) if isinstance(menu.nodes.get(target), CallbackNode)]
        return (callback or sorted(here.options))[0]
    if isinstance(here, CallbackNode):
        if here.confirm_prompt and asked_before == 0:
            return "1"
        return min(here.times) if here.times else None
    return None
