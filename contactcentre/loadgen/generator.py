"""The live load generator: simulated customers and agents against a running server, through its real front
doors (docs/loadgen.md).

Customers arrive as Poisson streams taken from a scenario file (the same files ``contactcentre simulate``
reads): chat customers open ``ws://TARGET:WS_PORT/chat`` and say ``hello``; e-mail customers send a real mail
to the SMTP port; callers are placed on the simulated switch over its CTI link (``SimulateInbound`` to the
queue's number, ``ClearCall`` when their patience runs out). Agents log in on ``/agent`` with tokens from
``--tokens`` (written by ``--prepare``), go available, accept every offer after ``--accept-delay``, handle for
the drawn handle time, end, set a disposition and finish wrap-up.

Latency is measured at the load generator: *arrival → offer* is the instant the ``offer`` frame was read off
the agent's socket minus the instant the customer's first frame (chat ``hello``) was handed to the socket,
the instant the SMTP session for the mail was opened (e-mail), or the instant ``SimulateInbound`` was sent (a
call). Both clocks are this process's ``time.perf_counter``. The run is bounded in time (``--duration``) and
count (``--max-contacts``) and only goes to loopback unless ``--allow-host`` names the target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import random
import socket
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from contactcentre.config import ConfigError, load_config
from contactcentre.loadgen.clients import CtiClient, CtiError, JsonSocket, send_email
from contactcentre.simulation.engine import sampler
from contactcentre.simulation.scenario import Arrivals, LoadedScenario, load_scenario

CHANNELS = ("chat", "email", "voice")  # what the generator can place (voice needs --cti-port; else skipped)


RESUME_GIVE_UP_S = 60.0  # a chat customer without a patience limit retries a vanished server this long
PICKING_UP_S = 10.0  # a caller whose patience ends while an agent's phone picks up waits this much longer
MAX_EARLY = 100_000  # call ids remembered as answered before their SimulateInbound answer came


class TargetRefused(ValueError):
    """The target is not loopback and was not named with ``--allow-host``."""


def check_target(host: str, allow_hosts: list[str]) -> None:
    """Refuse anything but loopback unless the exact host name is allowed: a load generator must not be
    pointed at someone else's server by a typo."""
    if host in allow_hosts or host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise TargetRefused(f"target {host!r} is not loopback; name it with --allow-host {host} to load it")


@dataclass
class ContactRecord:
    """What one simulated customer saw, in ``perf_counter`` seconds."""

    n: int
    channel: str
    queue: str
    sent: float
    contact_id: str | None = None
    tag: str | None = None  # e-mail: the subject tag that finds its offer
    queued_at: float | None = None
    connect_s: float | None = None  # chat: the WebSocket handshake, before the latency clock starts
    answered_at: float | None = None
    outcome: str = "waiting"  # waiting | answered | abandoned | offline | error


@dataclass
class OfferRecord:
    received: float
    accepted: float | None = None
    channel: str = ""
    tag: str | None = None


@dataclass
class Stats:
    contacts: list[ContactRecord] = field(default_factory=list)
    offers: dict[str, OfferRecord] = field(default_factory=dict)  # contact id -> first offer
    errors: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    resumed: int = 0  # chat sockets reconnected and resumed after the server went away

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def quantiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of seconds, in milliseconds (nearest-rank)."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))] * 1000, 3)

    return {"n": len(v), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(v[-1] * 1000, 3)}


def _ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port or a comma-separated list of ports: {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports are 1-65535: {text!r}")
    return ports


class LoadGen:
    def __init__(
        self,
        loaded: LoadedScenario,
        *,
        host: str,
        ws_port: int,
        smtp_port: int | None,
        tokens: dict[str, str],
        rate: float | None,
        duration_s: float,
        seed: int,
        accept_delay_s: float = 0.0,
        handle_scale: float = 1.0,
        max_contacts: int = 100_000,
        max_concurrency: int = 2_000,
        email_to: dict[str, str] | None = None,
        cti_port: int | None = None,
        cti_token: str = "",
        dial: dict[str, str] | None = None,
        http_port: int | None = None,
        progress: TextIO | None = None,
        more_ws_ports: Sequence[int] = (),
    ) -> None:
        self.loaded = loaded
        self.host = host
        self.ws_port = ws_port
        # Several edges of one centre (docs/scaling.md): each new connection goes to the next port in turn,
        # as a load balancer in front of them would send it.
        self._ws_ports = itertools.cycle([ws_port, *more_ws_ports])
        self.smtp_port = smtp_port
        self.tokens = tokens
        self.duration_s = duration_s
        self.accept_delay_s = accept_delay_s
        self.handle_scale = handle_scale
        self.max_contacts = max_contacts
        self.slots = asyncio.Semaphore(max_concurrency)
        self.email_to = email_to or {}
        self.cti_port = cti_port
        self.cti_token = cti_token
        self.http_port = http_port
        self.server_figures: dict[str, Any] | None = None  # the server's own, read at the end (--http-port)
        self.dial = dial or {}  # queue -> its number on the switch
        self.cti: CtiClient | None = None
        self._calls: dict[str, tuple[ContactRecord, asyncio.Event]] = {}  # call id -> the caller waiting
        self._connected_early: set[str] = set()  # calls an agent had before SimulateInbound's answer came
        self._accepted_calls: set[str] = set()  # calls an agent accepted (the phone is picking up)
        self.progress = progress
        master = random.Random(seed)
        self.streams: list[tuple[Arrivals, float, random.Random]] = []
        total = sum(a.per_hour or max(a.curve or [0.0]) for a in loaded.scenario.arrivals)
        for a in loaded.scenario.arrivals:
            per_s = (a.per_hour or max(a.curve or [0.0])) / 3600
            if rate is not None:  # --rate keeps the scenario's mix and scales its total
                per_s = rate * (a.per_hour or max(a.curve or [0.0])) / total
            self.streams.append((a, per_s, random.Random(master.getrandbits(64))))
        self.agent_rng = random.Random(master.getrandbits(64))
        self._handle = {
            (a.queue, a.channel): sampler(a.handle_time, random.Random(master.getrandbits(64)))
            for a in loaded.scenario.arrivals
        }
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._agents: list[JsonSocket] = []
        self._stopping = False
        self.started = 0.0
        self.last_placed = 0.0
        self._mail: dict[str, ContactRecord] = {}  # subject tag -> the mail's record
        self._mail_by_contact: dict[str, ContactRecord] = {}  # offered mails' contact ids -> their records

    # ------------------------------------------------------------------------------------------ control

    def _ws(self, path: str) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"ws://{host}:{next(self._ws_ports)}{path}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> dict[str, Any]:
        await asyncio.gather(*(self._agent_login(aid, tok) for aid, tok in self.tokens.items()))
        if self.cti_port is not None and any(a.channel == "voice" for a, _, _ in self.streams):
            await self._cti_connect()
            self._spawn(self._cti_reconnect())
        self.started = time.perf_counter()
        end = self.started + self.duration_s
        ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            await asyncio.gather(*(self._arrivals(i, end) for i in range(len(self.streams))))
            # let contacts in flight be offered and answered, up to their patience, bounded
            drain_until = time.perf_counter() + min(30.0, max(2.0, self.duration_s / 2))
            while self._open() and time.perf_counter() < drain_until:
                await asyncio.sleep(0.05)
            if self.http_port is not None:
                self.server_figures = await self._server_figures()
        finally:
            self._stopping = True
            ticker.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(*(s.close() for s in self._agents), return_exceptions=True)
            if self.cti is not None:
                await self.cti.close()
            if self.progress is not None:
                self._line(final=True)
        return self.report()

    async def _server_figures(self) -> dict[str, Any] | None:
        """The server's own SL, ASA and abandon share over all queues since it started today (``GET
        /api/queues`` with an agent's token): what a supervisor's dashboard shows for the run."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        url = f"http://{host}:{self.http_port}/api/queues"
        token = next(iter(self.tokens.values()))

        def get() -> dict[str, Any]:
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        try:
            body = await asyncio.get_running_loop().run_in_executor(None, get)
        except (OSError, ValueError) as exc:
            self.stats.error(f"server_figures:{type(exc).__name__}")
            return None
        return server_figures([q.get("today") or {} for q in body.get("queues", [])])

    def _open(self) -> int:
        return sum(1 for c in self.stats.contacts if c.outcome == "waiting")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._line()

    def _line(self, final: bool = False) -> None:
        assert self.progress is not None
        s = self.stats
        t = time.perf_counter() - self.started
        answered = sum(1 for c in s.contacts if c.outcome == "answered")
        print(
            f"\rloadgen {t:6.1f} s  sent {len(s.contacts)}  offered {len(s.offers)}  answered {answered}  "
            f"waiting {self._open()}  errors {sum(s.errors.values())}",
            end="\n" if final else "",
            file=self.progress,
            flush=True,
        )

    # ------------------------------------------------------------------------------------------- agents

    async def _agent_login(self, agent_id: str, token: str) -> None:
        ready = asyncio.Event()
        sock: JsonSocket

        async def on_frame(frame: dict[str, Any]) -> None:
            kind = frame.get("type")
            if kind == "welcome":
                await sock.send({"type": "state", "state": "available"})
            elif kind == "ack" and frame.get("for") == "state":
                ready.set()
            elif kind == "offer":
                self._offer(sock, frame)
            elif kind == "contact":
                cid = frame["contact_id"]
                if frame.get("channel") == "voice":
                    self._call_answered(cid)
                elif (mail := self._mail_by_contact.pop(cid, None)) is not None and mail.outcome == "waiting":
                    mail.outcome, mail.answered_at = "answered", time.perf_counter()  # the agent has the mail
                draw = self._handle.get((frame.get("queue") or "", frame.get("channel") or ""))
                handle_s = (draw() / 1000 if draw else 1.0) * self.handle_scale
                self._later(handle_s, self._finish, sock, cid)
            elif kind == "wrap_up" and frame.get("ends_ms") is None:  # manual wrap-up: the agent says when
                await sock.send({"type": "wrap_up_done", "contact_id": frame["contact_id"]})
            elif kind == "state" and frame.get("state") == "away" and not self._stopping:
                await sock.send({"type": "state", "state": "available"})
            elif kind == "error":
                self.stats.error(f"agent:{frame.get('code')}")

        sock = JsonSocket(self._ws("/agent"), on_frame, name=f"loadgen agent {agent_id}")
        await sock.open()
        self._agents.append(sock)
        await sock.send({"type": "login", "token": token})
        try:
            await asyncio.wait_for(ready.wait(), 10)
        except TimeoutError:
            raise RuntimeError(f"agent {agent_id} did not become available (is its token right?)") from None
        self._spawn(self._relogin(agent_id, token, sock))

    async def _relogin(self, agent_id: str, token: str, sock: JsonSocket) -> None:
        """A server restart drops every console: log in again, as a console does, until the run ends."""
        await sock.closed.wait()
        while not self._stopping:
            try:
                await self._agent_login(agent_id, token)
                return
            except (OSError, RuntimeError, TimeoutError):
                await asyncio.sleep(0.2)

    async def _finish(self, sock: JsonSocket, cid: str) -> None:
        # the disposition goes first: with no wrap-up time the contact closes on ``end``
        await sock.send({"type": "disposition", "contact_id": cid, "code": "resolved"})
        await sock.send({"type": "end", "contact_id": cid})

    def _offer(self, sock: JsonSocket, frame: dict[str, Any]) -> None:
        now = time.perf_counter()
        cid = frame.get("contact_id", "")
        subject = ((frame.get("preview") or {}).get("subject")) or ""
        rec = self.stats.offers.get(cid)
        if rec is None:
            tag = subject.split()[0] if subject.startswith("LG-") else None
            rec = self.stats.offers[cid] = OfferRecord(received=now, channel=frame.get("channel", ""), tag=tag)
            mail = self._mail.get(tag or "")
            if mail is not None:
                mail.contact_id = cid
                self._mail_by_contact[cid] = mail

        async def accept() -> None:
            if rec.accepted is None:
                rec.accepted = time.perf_counter()
            if frame.get("channel") == "voice":
                self._accepted_calls.add(cid)
            await sock.send({"type": "accept", "offer_id": frame["offer_id"]})

        if self.accept_delay_s > 0:
            self._later(self.accept_delay_s, accept)
        else:
            self._spawn(accept())

    def _later(self, delay_s: float, fn: Any, *args: Any) -> None:
        def fire() -> None:
            if not self._stopping:
                self._spawn(fn(*args))

        asyncio.get_running_loop().call_later(max(0.0, delay_s), fire)

    # ---------------------------------------------------------------------------------------- customers

    async def _arrivals(self, i: int, end: float) -> None:
        entry, per_s, rng = self.streams[i]
        patience = sampler(entry.patience, rng) if entry.patience is not None else None
        at = time.perf_counter()
        while True:
            at += rng.expovariate(per_s)
            if at >= end or len(self.stats.contacts) >= self.max_contacts:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if entry.channel not in CHANNELS or (entry.channel == "voice" and self.cti is None):
                self.stats.skipped[entry.channel] = self.stats.skipped.get(entry.channel, 0) + 1
                continue
            patience_s = patience() / 1000 if patience is not None else None
            n = next(self._ids)
            rec = ContactRecord(n, entry.channel, entry.queue, sent=time.perf_counter())
            self.last_placed = rec.sent
            self.stats.contacts.append(rec)
            if entry.channel == "chat":
                self._spawn(self._chat(rec, patience_s))
            elif entry.channel == "voice":
                self._spawn(self._call(rec, patience_s))
            else:
                self._spawn(self._email(rec))

    async def _chat(self, rec: ContactRecord, patience_s: float | None) -> None:
        joined = asyncio.Event()
        token: list[str] = []

        def on_frame(frame: dict[str, Any]) -> None:
            kind = frame.get("type")
            if kind == "queued":
                rec.contact_id = frame.get("contact_id")
                rec.queued_at = time.perf_counter()
                token[:] = [frame["token"]]
            elif kind == "agent_joined" and rec.outcome == "waiting":
                rec.answered_at = time.perf_counter()
                rec.outcome = "answered"
                joined.set()
            elif kind == "resumed" and rec.outcome == "waiting":
                state = frame.get("state")
                if state == "with_agent":  # an agent joined while the socket was away
                    rec.answered_at, rec.outcome = time.perf_counter(), "answered"
                    joined.set()
                elif state == "closed":  # the chat ended meanwhile (the server counted the customer gone)
                    rec.outcome = "abandoned"
                    joined.set()
            elif kind == "offline" and rec.outcome == "waiting":
                rec.outcome = "offline"
                joined.set()
            elif kind == "error":
                self.stats.error(f"chat:{frame.get('code')}")
                if frame.get("code") == "unknown_session" and rec.outcome == "waiting":
                    rec.outcome = "disconnected"
                    joined.set()

        deadline: float | None = None
        async with self.slots:
            sock = JsonSocket(self._ws("/chat"), on_frame, name=f"loadgen chat {rec.n}")
            try:
                await sock.open()
                now = time.perf_counter()
                rec.connect_s, rec.sent = now - rec.sent, now  # the latency clock starts when the customer can speak
                deadline = None if patience_s is None else now + patience_s
                await sock.send({"type": "hello", "name": f"Load {rec.n}", "email": f"load{rec.n}@example.com"})
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.perf_counter())
                    waiters = [asyncio.ensure_future(joined.wait()), asyncio.ensure_future(sock.closed.wait())]
                    try:
                        await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waiters:
                            w.cancel()
                    if rec.outcome != "waiting":
                        break
                    if not sock.closed.is_set():
                        rec.outcome = "abandoned"  # patience ran out
                        await sock.send({"type": "close"})
                        break
                    # The server went away (a crash, a restart): the widget reconnects and resumes its chat.
                    again = await self._resume(token[0], on_frame, rec, deadline) if token else None
                    if again is None:
                        rec.outcome = "disconnected"
                        break
                    await sock.close()
                    sock = again
            except (OSError, TimeoutError) as exc:  # before the hello: the customer never reached the server
                refused = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
                rec.outcome = "refused" if refused else "error"
                self.stats.error(f"chat:{type(exc).__name__}")
            finally:
                await sock.close()

    async def _resume(self, token: str, on_frame: Any, rec: ContactRecord, deadline: float | None) -> JsonSocket | None:
        """Reconnect with growing pauses (as the widget does) until the customer's patience runs out, or
        ``RESUME_GIVE_UP_S`` for a customer without a limit; then ``resume``. None: the server never came back."""
        give_up = deadline if deadline is not None else time.perf_counter() + RESUME_GIVE_UP_S
        pause = 0.1
        while not self._stopping and time.perf_counter() < give_up:
            sock = JsonSocket(self._ws("/chat"), on_frame, name=f"loadgen chat {rec.n} (resumed)")
            try:
                await sock.open()
            except (OSError, TimeoutError):
                await asyncio.sleep(min(pause, max(0.0, give_up - time.perf_counter())))
                pause = min(pause * 2, 2.0)
                continue
            self.stats.resumed += 1
            await sock.send({"type": "resume", "token": token})
            return sock
        return None

    async def _cti_connect(self) -> None:
        assert self.cti_port is not None
        cti = CtiClient(self.host, self.cti_port, self.cti_token, on_event=self._cti_event)
        await cti.open()
        # The queues' numbers are watched so a call the server clears unanswered (queue full or closed, sent
        # out of the centre) is known; once an agent's phone takes a call it leaves the queue and the watch.
        for number in sorted({self.dial[a.queue] for a, _, _ in self.streams if a.channel == "voice"}):
            await cti.request("MonitorStart", device=number)
        self.cti = cti

    def _cti_event(self, ev: dict[str, Any]) -> None:
        if ev.get("event") not in ("ConnectionCleared", "Failed"):
            return
        got = self._calls.get(str(ev.get("call_id")))
        if got is not None and got[0].outcome == "waiting":
            got[0].outcome = "offline"  # the server let the call go unanswered
            got[1].set()

    async def _cti_reconnect(self) -> None:
        """A server restart drops the CTI link (and the switch's calls with it): connect again for new calls."""
        while not self._stopping:
            assert self.cti is not None
            await self.cti.closed.wait()
            for rec, answered in list(self._calls.values()):
                if rec.outcome == "waiting":
                    rec.outcome = "disconnected"
                    answered.set()
            while not self._stopping:
                try:
                    await self._cti_connect()
                    break
                except (OSError, CtiError):
                    await asyncio.sleep(0.2)

    def _call_answered(self, call_id: str) -> None:
        got = self._calls.get(call_id)
        if got is None:  # the agent was quicker than SimulateInbound's answer to us (or a console re-sent it)
            if len(self._connected_early) < MAX_EARLY:
                self._connected_early.add(call_id)
            return
        rec, answered = got
        if rec.outcome == "waiting":
            rec.answered_at, rec.outcome = time.perf_counter(), "answered"
        answered.set()

    async def _call(self, rec: ContactRecord, patience_s: float | None) -> None:
        number = self.dial[rec.queue]
        cti = self.cti
        assert cti is not None
        async with self.slots:
            rec.sent = time.perf_counter()
            try:
                got = await cti.request(
                    "SimulateInbound", ani=f"+3120{rec.n % 10_000_000:07d}", dnis=number, attached_data={}
                )
            except CtiError as exc:  # no_trunk: every line busy, the caller hears a busy tone
                rec.outcome = "refused" if exc.code in ("no_trunk", "busy") else "error"
                self.stats.error(f"voice:{exc.code}")
                return
            except OSError as exc:
                rec.outcome = "refused"
                self.stats.error(f"voice:{type(exc).__name__}")
                return
            rec.contact_id = call_id = got["call_id"]
            rec.queued_at = time.perf_counter()
            answered = asyncio.Event()
            self._calls[call_id] = (rec, answered)
            try:
                if call_id in self._connected_early:
                    self._connected_early.discard(call_id)
                    self._call_answered(call_id)
                try:
                    await asyncio.wait_for(answered.wait(), patience_s)
                except TimeoutError:
                    if call_id in self._accepted_calls:  # the phone is picking up: the caller hears it answer
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(answered.wait(), PICKING_UP_S)
                    if rec.outcome == "waiting":
                        rec.outcome = "abandoned"
                        with contextlib.suppress(CtiError, OSError):
                            await cti.request("ClearCall", call_id=call_id)  # the caller hangs up
            finally:
                del self._calls[call_id]
                self._connected_early.discard(call_id)
                self._accepted_calls.discard(call_id)

    async def _email(self, rec: ContactRecord) -> None:
        if self.smtp_port is None:
            rec.outcome = "error"
            self.stats.error("email:no --smtp-port")
            return
        rec.tag = f"LG-{rec.n}"
        self._mail[rec.tag] = rec
        to = self.email_to.get(rec.queue, f"{rec.queue}@example.com")
        loop = asyncio.get_running_loop()
        async with self.slots:
            rec.sent = time.perf_counter()
            try:
                await loop.run_in_executor(
                    None,
                    lambda: send_email(
                        self.host,
                        self.smtp_port or 0,
                        sender=f"load{rec.n}@example.com",
                        sender_name=f"Load {rec.n}",
                        to=to,
                        subject=f"{rec.tag} load test",
                        body="A message from the load generator.\n",
                    ),
                )
                rec.queued_at = time.perf_counter()  # 250: stored by the server
            except Exception as exc:  # smtplib's errors are not all OSError
                rec.outcome = "refused" if isinstance(exc, ConnectionRefusedError) else "error"
                self.stats.error(f"email:{type(exc).__name__}")

    # ------------------------------------------------------------------------------------------- report

    def report(self) -> dict[str, Any]:
        s = self.stats
        by_tag = {o.tag: (cid, o) for cid, o in s.offers.items() if o.tag}
        to_offer: dict[str, list[float]] = {}
        offer_to_accept: list[float] = []
        waits: list[tuple[ContactRecord, float | None]] = []
        for c in s.contacts:
            offer = s.offers.get(c.contact_id or "") if c.channel in ("chat", "voice") else None
            if c.channel == "email" and c.tag in by_tag:
                c.contact_id, offer = by_tag[c.tag]
            if offer is not None:
                to_offer.setdefault(c.channel, []).append(offer.received - c.sent)
                if offer.accepted is not None:
                    offer_to_accept.append(offer.accepted - offer.received)
            waits.append((c, c.answered_at - c.sent if c.answered_at is not None else None))
        elapsed = self.duration_s
        outcomes: dict[str, int] = {}
        for c in s.contacts:
            outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
        threshold_s = self.loaded.threshold_ms / 1000
        answered_waits = [w for _, w in waits if w is not None]
        n = len(s.contacts)
        return {
            "sent": n,
            "outcomes": outcomes,
            "accounted": sum(outcomes.values()),
            "answered_by_channel": {
                ch: sum(1 for c in s.contacts if c.channel == ch and c.outcome == "answered") for ch in CHANNELS
            },
            "waiting_by_channel": {
                ch: sum(1 for c in s.contacts if c.channel == ch and c.outcome == "waiting") for ch in CHANNELS
            },
            "skipped_channels": s.skipped,
            "chat_resumed": s.resumed,
            "errors": s.errors,
            "throughput_per_s": {
                ch: sum(1 for c in s.contacts if c.channel == ch) / elapsed
                for ch in sorted({c.channel for c in s.contacts})
            },
            "answered_per_s": outcomes.get("answered", 0) / elapsed,
            # placing can fall behind the schedule when the generator is short of CPU: this is what it managed
            "placed_per_s": n / max(elapsed, self.last_placed - self.started) if n else 0.0,
            # time.perf_counter() as arrivals began (after the agents' logins): CLOCK_MONOTONIC on Linux, so
            # another process on the machine can time the server from there (benchmarks/live_latency.py)
            "arrivals_started_perf_s": self.started,
            "chat_connect_ms": quantiles_ms([c.connect_s for c in s.contacts if c.connect_s is not None]),
            "arrival_to_offer_ms": {ch: quantiles_ms(v) for ch, v in sorted(to_offer.items())},
            "arrival_to_offer_ms_all": quantiles_ms([x for v in to_offer.values() for x in v]),
            "offer_to_accept_ms": quantiles_ms(offer_to_accept),
            "live": {
                "offered": n,
                "answered": outcomes.get("answered", 0),
                "abandoned": outcomes.get("abandoned", 0),
                "service_level_offered": (sum(1 for w in answered_waits if w <= threshold_s) / n) if n else None,
                "asa_s": (sum(answered_waits) / len(answered_waits)) if answered_waits else None,
                "p_abandon": (outcomes.get("abandoned", 0) / n) if n else None,
                "threshold_s": threshold_s,
            },
        }


# ------------------------------------------------------------------------------------------------ the gap


def server_figures(queues: list[dict[str, Any]]) -> dict[str, Any]:
    """All queues' figures (``/api/queues`` ``today``) as one: counts summed, ratios weighted by what they are
    ratios of (SL and abandon share over resolved contacts, ASA over answered ones)."""

    def total(key: str) -> float:
        return sum(q.get(key) or 0 for q in queues)

    answered, abandoned = total("answered"), total("abandoned")
    resolved = answered + abandoned + total("overflowed")

    def weighted(key: str, weight: str | None) -> float | None:
        parts = [(q.get(key), (q.get("answered") or 0) if weight == "answered" else _resolved(q)) for q in queues]
        den = sum(w for v, w in parts if v is not None)
        return sum(v * w for v, w in parts if v is not None) / den if den else None

    return {
        "offered": int(total("offered")),
        "answered": int(answered),
        "abandoned": int(abandoned),
        "service_level_offered": weighted("sl_offered", None),
        "asa_s": weighted("asa_s", "answered"),
        "p_abandon": abandoned / resolved if resolved else None,
    }


def _resolved(q: dict[str, Any]) -> int:
    return (q.get("answered") or 0) + (q.get("abandoned") or 0) + (q.get("overflowed") or 0)


def simulated(loaded: LoadedScenario, *, rate: float | None, seed: int, calls: int) -> dict[str, Any]:
    """The discrete-event simulator on the same scenario, rates, seed and number of contacts."""
    import tomllib

    from contactcentre.simulation.engine import simulate
    from contactcentre.simulation.scenario import parse_scenario

    data = tomllib.loads(Path(loaded.scenario.source).read_text(encoding="utf-8"))
    total = sum(a.per_hour or max(a.curve or [0.0]) for a in loaded.scenario.arrivals)
    for a in data.get("arrivals", []):
        if rate is not None:
            a["per_hour"] = rate * 3600 * (a.get("per_hour") or max(a.get("curve") or [0.0])) / total
            a.pop("curve", None)
    sim = data.setdefault("simulation", {})
    sim.pop("duration_s", None)
    sim["calls"] = max(1, calls)
    sim["warmup_fraction"] = 0.0  # the live run measures from its first contact, so the simulation does too
    again = parse_scenario(data, loaded.scenario.source)
    return simulate(again, seed=seed).to_json()


def gap(live: dict[str, Any], sim: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("service_level_offered", "asa_s", "p_abandon"):
        a, b = live.get(key), sim.get(key)
        out[key] = None if a is None or b is None else round(a - b, 6)
    return out


# -------------------------------------------------------------------------------------------------- prepare


def queue_numbers(loaded: LoadedScenario, config_path: Path | None, dial: list[str]) -> dict[str, str]:
    """Each scenario queue's number on the switch: ``--dial QUEUE=NUMBER``, else the centre configuration's
    (``--config``), else 2001, 2002, ... in the order the scenario names its queues (the server's default when
    its configuration lists the same queues in the same order)."""
    numbers: dict[str, str] = {}
    if config_path is not None:
        numbers.update(load_config(config_path).queue_numbers())
    else:
        numbers.update({q["name"]: str(2001 + i) for i, q in enumerate(loaded.scenario.queues)})
    for item in dial:
        queue, sep, number = item.partition("=")
        if not sep or not queue or not number.strip():
            raise ConfigError(f"--dial {item!r}: expected QUEUE=NUMBER")
        numbers[queue] = number.strip()
    for a in loaded.scenario.arrivals:
        if a.channel == "voice" and a.queue not in numbers:
            raise ConfigError(f"calls to queue {a.queue!r}: no number on the switch; pass --dial {a.queue}=NUMBER")
    return numbers


def prepare(config_path: Path, database_url: str, tokens_path: Path) -> int:
    """Create an agent user with a token for every agent of the centre configuration, in the server's store
    (before the server starts, or beside it), and write ``{agent_id: token}`` to ``tokens_path``."""
    from contactcentre.store.db import open_store
    from contactcentre.store.users import add_user

    config = load_config(config_path)
    engine = open_store(database_url)
    tokens: dict[str, str] = {}
    try:
        with engine.begin() as conn:
            for agent in config.agents:
                tokens[agent.id] = add_user(conn, f"loadgen-{agent.id}", "agent", 0, agent_id=agent.id)
    finally:
        engine.dispose()
    tokens_path.write_text(json.dumps(tokens, indent=1), encoding="utf-8")
    return len(tokens)


# ------------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "loadgen",
        help="drive a running server with simulated customers and agents through its real protocols",
        description="Live load generator (docs/loadgen.md). First --prepare the agents' tokens, then run.",
    )
    p.add_argument("--target", default="127.0.0.1", help="the server's host (loopback unless --allow-host)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="allow this non-loopback host")
    p.add_argument("--scenario", type=Path, help="a scenario file, as for `contactcentre simulate`")
    p.add_argument("--tokens", type=Path, help="JSON {agent_id: token} (written by --prepare)")
    p.add_argument(
        "--ws-port",
        type=_ports,
        default=[8081],
        help="the server's WebSocket port (default 8081); several, comma-separated (the edges of one centre):"
        " connections are spread over them in turn",
    )
    p.add_argument("--smtp-port", type=int, default=2525, help="the server's SMTP port (default 2525)")
    p.add_argument("--rate", type=float, default=None, help="contacts per second in all (the scenario's mix)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals (then a bounded drain)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--accept-delay", type=float, default=0.0, metavar="S", help="agents accept after S seconds")
    p.add_argument("--handle-scale", type=float, default=1.0, help="multiply the scenario's handle times")
    p.add_argument("--max-contacts", type=int, default=100_000, help="stop placing contacts after this many")
    p.add_argument("--max-concurrency", type=int, default=2_000, help="open customer connections at most")
    p.add_argument(
        "--email-to",
        action="append",
        default=[],
        metavar="QUEUE=ADDRESS",
        help="mail a queue's e-mail contacts to this address (repeatable; default QUEUE@example.com)",
    )
    p.add_argument(
        "--cti-port",
        type=int,
        default=None,
        help="place the scenario's calls on this CTI link (the port `serve` and `demo` print); without it, calls "
        "are skipped",
    )
    p.add_argument(
        "--cti-token", default=None, help="the CTI link's token (default: [server.voice] cti_token of --config)"
    )
    p.add_argument(
        "--http-port", type=int, default=None, help="read the server's own SL/ASA/abandon from its /api/queues"
    )
    p.add_argument(
        "--dial",
        action="append",
        default=[],
        metavar="QUEUE=NUMBER",
        help="a queue's number on the switch (default: from --config, else 2001, 2002, ... in scenario order)",
    )
    p.add_argument("--no-simulate", action="store_true", help="skip the discrete-event comparison")
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here (default: stdout)")
    p.add_argument(
        "--contacts", type=Path, default=None, help="write one JSON line per contact (id, channel, outcome) here"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--prepare", action="store_true", help="create agent users and write --tokens, then exit")
    p.add_argument(
        "--config", type=Path, help="the server's centre configuration (--prepare; the queues' numbers for calls)"
    )
    p.add_argument("--database-url", help="with --prepare: the server's store")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if args.tokens is None:
        print("loadgen: --tokens FILE is required", file=err)
        return 2
    if args.prepare:
        if args.config is None or args.database_url is None:
            print("loadgen --prepare needs --config and --database-url", file=err)
            return 2
        n = prepare(args.config, args.database_url, args.tokens)
        print(f"loadgen: {n} agent tokens written to {args.tokens}", file=err)
        return 0
    try:
        check_target(args.target, args.allow_host)
    except TargetRefused as exc:
        print(f"loadgen: {exc}", file=err)
        return 2
    if args.scenario is None:
        print("loadgen: --scenario FILE is required", file=err)
        return 2
    if args.duration <= 0 or (args.rate is not None and args.rate <= 0):
        print("loadgen: --duration and --rate must be > 0", file=err)
        return 2
    try:
        loaded = load_scenario(args.scenario)
        tokens = json.loads(args.tokens.read_text(encoding="utf-8"))
    except ConfigError as exc:
        print(f"loadgen: {exc}", file=err)
        return 2
    except (OSError, ValueError) as exc:
        print(f"loadgen: {args.tokens}: {exc}", file=err)
        return 2
    if not isinstance(tokens, dict) or not tokens:
        print(f"loadgen: {args.tokens}: expected a JSON object {{agent_id: token}}", file=err)
        return 2
    email_to = dict(item.split("=", 1) for item in args.email_to if "=" in item)
    try:
        dial = queue_numbers(loaded, args.config, args.dial)
    except ConfigError as exc:
        print(f"loadgen: {exc}", file=err)
        return 2
    cti_token = args.cti_token or (load_config(args.config).server.voice.cti_token if args.config else None)
    if args.cti_port is not None and not cti_token:
        print("loadgen: --cti-port needs --cti-token (or [server.voice] cti_token in --config)", file=err)
        return 2
    seed = args.seed if args.seed is not None else loaded.scenario.simulation.seed
    try:
        socket.getaddrinfo(args.target, args.ws_port[0])
    except OSError as exc:
        print(f"loadgen: cannot resolve {args.target}: {exc}", file=err)
        return 2
    gen = LoadGen(
        loaded,
        host=args.target,
        ws_port=args.ws_port[0],
        more_ws_ports=args.ws_port[1:],
        smtp_port=args.smtp_port,
        tokens=tokens,
        rate=args.rate,
        duration_s=args.duration,
        seed=seed,
        accept_delay_s=args.accept_delay,
        handle_scale=args.handle_scale,
        max_contacts=args.max_contacts,
        max_concurrency=args.max_concurrency,
        email_to=email_to,
        cti_port=args.cti_port,
        cti_token=cti_token,
        dial=dial,
        http_port=args.http_port,
        progress=None if args.quiet else err,
    )
    try:
        result = asyncio.run(gen.run())
    except (OSError, RuntimeError) as exc:
        print(f"loadgen: {exc}", file=err)
        return 1
    if args.contacts is not None:
        with args.contacts.open("w", encoding="utf-8") as f:
            for c in gen.stats.contacts:
                row = {"n": c.n, "channel": c.channel, "queue": c.queue, "contact_id": c.contact_id}
                row.update(tag=c.tag, outcome=c.outcome, acknowledged=c.queued_at is not None)
                f.write(json.dumps(row) + "\n")
    result["seed"] = seed
    result["server"] = gen.server_figures
    result["rate"] = args.rate
    result["duration_s"] = args.duration
    if not args.no_simulate:
        sim = simulated(loaded, rate=args.rate, seed=seed, calls=result["sent"])
        keys = ("offered", "answered", "abandoned", "service_level_offered", "asa_s", "p_abandon")
        result["simulated"] = {k: sim.get(k) for k in keys}
        result["live_minus_simulated"] = gap(result["live"], sim)
        if gen.server_figures is not None:
            result["server_minus_simulated"] = gap(gen.server_figures, sim)
    text = json.dumps(result, indent=1)
    if args.report is not None:
        args.report.write_text(text + "\n", encoding="utf-8")
    else:
        print(text, file=out)
    return 0
