"""The callback channel: asks for callbacks, and when an agent takes one, dials the customer.

Asking (``request``; the IVR runner, the agent protocol and the REST API call it, and the voice queue's
virtual-hold offer) checks the customer first — a known customer marked do-not-call is never called, and
calling needs the customer's call consent unless the customer asked for this call themselves (IVR, virtual
hold) — then picks the due time inside the calling window (``[callbacks] window``) in the customer's local
time: the time zone of their number (``phonenumbers``; where a number spans several zones, the window must
be open in all of them), else the centre's. A request outside the window moves to the next opening. A caller
waiting in a queue becomes a callback in place (``CallbackRequested``); anything else is scheduled
(``CallbackScheduled``) and the router queues it when due.

Dialling: the router offers a callback contact like any other. When the agent accepts (``ContactConnected``
on the ``callback`` channel) the switch dials the number from the agent's extension. The far end answering is
the conversation; the agent or the customer hanging up ends it (wrap-up follows, as for a call). No answer,
busy, or a call the switch refuses ends the attempt at once with that disposition; it is scheduled again
``retry_after_s`` later (inside the window, consent checked again) up to ``max_attempts``, then it has failed.
Every attempt's end is published as ``CallbackAttemptEnded``.

Hold, retrieve and hang-up on a callback call are the voice channel's own operations on the dialled call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import phonenumbers
from phonenumbers import timezone as pn_timezone

from contactcentre.config import parse_range
from contactcentre.events import (
    CallbackAttemptEnded,
    CallbackRequested,
    CallbackScheduled,
    ContactConnected,
    ContactEnded,
    ContactHeld,
    ContactQueued,
    ContactRetrieved,
    CustomerLeft,
    DispositionSet,
    Event,
    OfferAccepted,
)
from contactcentre.store.customers import find_customer, get_customer
from contactcentre.store.identity import IdentityError, normalise_phone
from contactcentre.telephony.events import (
    ConnectionCleared,
    DigitsGenerated,
    Established,
    Failed,
    Held,
    Retrieved,
    SwitchEvent,
)
from contactcentre.telephony.switch import SwitchError

if TYPE_CHECKING:
    from contactcentre.edge.voice.channel import VoiceChannel
    from contactcentre.server.centre import Centre
    from contactcentre.store.db import Connection

log = logging.getLogger(__name__)

CHANNEL = "callback"
ACCEPT_DIGIT = "1"  # the caller's key that takes a virtual-hold offer
RETRY_MARK = "~a"  # a retry's contact id: the first attempt's id + "~a" + attempt number
DAY_MS = 86_400_000


class CallbackError(Exception):
    """A callback that cannot be asked for or carried out; ``code`` is machine-readable: ``bad_number``,
    ``bad_queue``, ``do_not_call``, ``no_consent``, ``outside_window``, ``not_waiting``, ``refused``,
    ``unknown_contact``, ``no_text``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------- calling window


def number_zones(number: str, fallback: str) -> tuple[str, ...]:
    """The time zones an E.164 number may be in (``fallback`` when the number says nothing)."""
    try:
        zones = pn_timezone.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        zones = ()
    known = tuple(z for z in zones if z in zoneinfo.available_timezones())
    return known or (fallback,)


def _next_open_in(zone: zoneinfo.ZoneInfo, start_min: int, end_min: int, at_ms: int) -> int:
    """The first instant at or after ``at_ms`` whose local time in ``zone`` lies in [start, end)."""
    local = dt.datetime.fromtimestamp(at_ms / 1000, zone)
    minute = local.hour * 60 + local.minute
    if start_min <= minute < end_min:
        return at_ms
    day = local.date() if minute < start_min else local.date() + dt.timedelta(days=1)
    opening = dt.datetime.combine(day, dt.time(start_min // 60, start_min % 60), zone)
    return int(opening.timestamp() * 1000)


def window_start(at_ms: int, zones: Iterable[str], window: str) -> int:
    """The first instant at or after ``at_ms`` inside ``window`` (``"09:00-20:00"``) in every one of ``zones``."""
    rng = parse_range(window)
    if rng is None:
        raise ValueError(f"{window!r} is not a range like '09:00-20:00'")
    start_min, end_min = rng
    tzs = [zoneinfo.ZoneInfo(z) for z in zones]
    t = at_ms
    for _ in range(len(tzs) * 8 + 8):  # zones whose windows never overlap would loop forever
        later = max(_next_open_in(z, start_min, end_min, t) for z in tzs)
        if later == t:
            return t
        t = later
    raise ValueError(f"the window {window} is never open in all of {', '.join(zones)} at once")


# -------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _Customer:
    customer_id: str | None
    tier: str | None
    do_not_call: bool
    consent_calls: bool


def _look_up(conn: Connection, number: str, customer_id: str | None) -> _Customer:
    cid = customer_id or find_customer(conn, "phone", number)
    row = get_customer(conn, cid) if cid is not None else None
    if row is None:
        return _Customer(customer_id, None, False, False)
    return _Customer(row["id"], row.get("tier"), bool(row["do_not_call"]), bool(row["consent_calls"]))


# ------------------------------------------------------------------------------------------ the channel


@dataclass
class _Dial:
    """One dialling attempt: the switch call made for a callback contact."""

    call_id: str
    contact_id: str
    agent_id: str
    extension: str
    answered: bool = False
    over: bool = False  # the attempt's end is decided (router told); later switch events change nothing


@dataclass(frozen=True)
class Requested:
    """What ``request`` did: the callback's contact id and when it is due (now for virtual hold)."""

    contact_id: str
    due_ms: int
    virtual_hold: bool


class CallbackChannel:
    """Registered as ``centre.channels["callback"]``; dials through the voice channel's switch."""

    def __init__(self, centre: Centre, voice: VoiceChannel, *, new_id: Callable[[], str] | None = None) -> None:
        self.centre = centre
        self.voice = voice
        self.driver = voice.driver
        self.switch = voice.switch
        self.config = centre.config.callbacks
        self._new_id = new_id or (lambda: f"cb-{uuid.uuid4().hex[:16]}")
        self._retry_ms = round(self.config.retry_after_s * 1000)
        self.dials: dict[str, _Dial] = {}  # switch call id -> attempt
        self._dial_of: dict[str, _Dial] = {}  # contact id -> its live attempt
        self.offered: set[str] = set()  # voice contacts offered a callback while they wait
        self._tasks: set[asyncio.Task[Any]] = set()
        self._offer_after = {
            q.name: round(q.callback_offer_after_s * 1000)
            for q in centre.config.queues
            if q.callback_offer_after_s is not None and CHANNEL in q.channels
        }
        self._unsubscribe = [self.driver.subscribe(self._on_switch), centre.subscribe(self._on_centre)]
        centre.channels[CHANNEL] = self

    # ------------------------------------------------------------------------------------- lifecycle

    def restore(self) -> None:
        """After a restart no dialled call survives. Callbacks the router restored as being handled were
        ringing the customer or talking when the server stopped; the log does not say which (the answer is
        the switch's, not a router input), and either way the customer's request is not yet met: the attempt
        ends as ``interrupted`` and another is scheduled while attempts are left. Queued and scheduled
        callbacks simply wait on."""
        for c in self.centre.router.contact_list():
            if c.channel == CHANNEL and c.handling and c.id not in self._dial_of:
                assert c.agent_id is not None
                lost = _Dial("", c.id, c.agent_id, self.voice.extension(c.agent_id))
                self._attempt_over(lost, "interrupted", retry=True)

    async def settle(self) -> None:
        """Wait for the checks and retries under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for fn in self._unsubscribe:
            fn()
        self._unsubscribe = []
        await self.settle()
        if self.centre.channels.get(CHANNEL) is self:
            del self.centre.channels[CHANNEL]

    # ---------------------------------------------------------------------------------------- asking

    async def request(
        self,
        *,
        number: str,
        queue: str | None = None,
        contact_id: str | None = None,
        callback_id: str | None = None,
        customer_id: str | None = None,
        at_ms: int | None = None,
        priority: int = 0,
        attributes: dict[str, str] | None = None,
        by_customer: bool = False,
        attempt: int = 1,
    ) -> Requested:
        """Ask for a callback to ``number``. With ``contact_id`` of a call waiting in a queue: virtual hold
        (the call's place is kept; the window must be open now). Otherwise a callback to ``queue`` at
        ``at_ms`` (default now), moved to the next opening of the calling window, under ``callback_id``
        (default: a new id). ``by_customer``: the customer asked for this call themselves, which stands
        for their consent to it."""
        try:
            e164 = normalise_phone(number)
        except IdentityError as exc:
            raise CallbackError("bad_number", str(exc)) from None
        router = self.centre.router
        waiting = router.contact(contact_id) if contact_id is not None else None
        if contact_id is not None:
            if waiting is None or waiting.channel != "voice" or waiting.state != "queued":
                raise CallbackError("not_waiting", f"{contact_id!r} is not a call waiting in a queue")
            queue = waiting.queue
            customer_id = customer_id or waiting.customer_id
        if queue is None or not router.serves(queue, CHANNEL):
            raise CallbackError("bad_queue", f"no queue {queue!r} that takes callbacks")
        who = await self.centre.read(_look_up, e164, customer_id)
        if who.do_not_call:
            raise CallbackError("do_not_call", f"customer {who.customer_id} must not be called (do-not-call)")
        if not (who.consent_calls or by_customer):
            raise CallbackError("no_consent", f"no consent on record to call {who.customer_id or e164}")
        zones = number_zones(e164, self.centre.config.timezone)
        now = self.centre.now_ms()
        try:
            due = window_start(max(at_ms or now, now), zones, self.config.window)
        except ValueError as exc:  # a number in zones whose windows never meet
            raise CallbackError("outside_window", str(exc)) from None
        if waiting is not None:
            if due != now:
                raise CallbackError("outside_window", f"{e164} may not be called now (window {self.config.window})")
            self._submit_checked(CallbackRequested(at_ms=now, contact_id=waiting.id, number=e164))
            return Requested(waiting.id, now, True)
        tier = who.tier if who.tier in self.centre.config.tiers else None
        cid = callback_id or self._new_id()
        self._submit_checked(
            CallbackScheduled(
                at_ms=now,
                contact_id=cid,
                queue=queue,
                due_ms=due,
                number=e164,
                customer_id=who.customer_id,
                tier=tier,
                priority=priority,
                attempt=attempt,
                attributes=dict(attributes or {}),
            )
        )
        return Requested(cid, due, False)

    def _submit_checked(self, ev: Event) -> None:
        refusal = self.centre.submit(ev)
        if refusal is not None:
            raise CallbackError("refused", f"the router refused it: {refusal}")

    # ------------------------------------------------------------------------------ agents' actions

    async def agent_message(self, contact_id: str, agent_id: str, text: str) -> str:
        raise CallbackError("no_text", "a callback is a phone call: talk to the customer")

    async def answer(self, contact_id: str, agent_id: str) -> None:
        """The agent takes the callback offered to it; the switch then dials the customer from its phone."""
        self.centre.driver.catch_up()
        c = self.centre.router.contact(contact_id)
        o = c.offer if c is not None else None
        if c is None or c.state != "offered" or o is None or o.agent_id != agent_id:
            raise CallbackError("stale_offer", f"no open offer of {contact_id!r} to {agent_id!r}")
        self._agent_input(OfferAccepted(at_ms=self.centre.now_ms(), offer_id=o.id, contact_id=c.id, agent_id=agent_id))

    async def hold(self, contact_id: str, agent_id: str) -> None:
        await self.voice.hold(self._call_of(contact_id), agent_id)

    async def retrieve(self, contact_id: str, agent_id: str) -> None:
        await self.voice.retrieve(self._call_of(contact_id), agent_id)

    async def hang_up(self, contact_id: str, agent_id: str) -> None:
        d = self._dial_of.get(contact_id)
        if d is None or d.call_id not in self.switch.calls:  # nothing on the line (the dial failed): just end
            self._agent_input(ContactEnded(at_ms=self.centre.now_ms(), contact_id=contact_id, agent_id=agent_id))
            return
        await self.voice.hang_up(d.call_id, agent_id)

    def _agent_input(self, ev: Event) -> None:
        """An agent's phone action that is a router input here (no call on the switch to operate)."""
        refusal = self.centre.submit(ev)
        if refusal is not None:
            raise CallbackError("refused", str(refusal))

    def _call_of(self, contact_id: str) -> str:
        d = self._dial_of.get(contact_id)
        if d is None:
            raise CallbackError("unknown_contact", f"no call is dialled for callback {contact_id!r}")
        return d.call_id

    # ---------------------------------------------------------------------------------- router → switch

    def _on_centre(self, events: list[Event]) -> None:
        for ev in events:
            if self.offered and getattr(ev, "contact_id", None) in self.offered:
                c = self.centre.router.contact(ev.contact_id)  # type: ignore[attr-defined]
                if c is None or c.channel != "voice" or not c.waiting:
                    self.offered.discard(ev.contact_id)  # type: ignore[attr-defined]
            try:
                if isinstance(ev, ContactConnected) and ev.channel == CHANNEL:
                    self._dial(ev.contact_id, ev.agent_id)
                elif isinstance(ev, ContactQueued) and ev.channel == "voice":
                    self._maybe_offer(ev)
                elif isinstance(ev, (ContactEnded, ContactHeld, ContactRetrieved)) and ev.contact_id in self._dial_of:
                    self._follow(ev)
            except Exception:
                log.exception("callback: handling %s of %s failed", type(ev).__name__, getattr(ev, "contact_id", "?"))

    def _dial(self, contact_id: str, agent_id: str) -> None:
        c = self.centre.router.contact(contact_id)
        if c is None or c.callback_number is None:
            return
        ext = self.voice.extension(agent_id)
        try:
            out = self.driver.run(
                lambda now: self.switch.make_call(ext, c.callback_number, now, {"contact_id": contact_id})  # type: ignore[arg-type]
            )
        except SwitchError as exc:
            log.warning("callback: cannot dial %s for %s: %s", c.callback_number, contact_id, exc.message)
            d = _Dial("", contact_id, agent_id, ext)
            outcome = "failed" if exc.code == "invalid_number" else f"not_dialled_{exc.code}"
            self._attempt_over(d, outcome, retry=exc.code != "invalid_number")
            return
        d = _Dial(out[0].call_id, contact_id, agent_id, ext)
        self.dials[d.call_id] = d
        self._dial_of[contact_id] = d
        log.info("callback: %s dials %s for %s (attempt %d)", ext, c.callback_number, contact_id, c.attempt)

    def _follow(self, ev: Event) -> None:
        """The router heard of a hold, retrieve or end through another path (the agent's console): the phone
        follows, so the switch and the router agree."""
        d = self._dial_of[ev.contact_id]  # type: ignore[attr-defined]
        call = self.switch.calls.get(d.call_id)
        conn = call.connections.get(d.extension) if call is not None else None
        if conn is None:
            return
        if isinstance(ev, ContactEnded):
            d.over = True
            self._try(lambda now: self.switch.clear_connection(d.call_id, d.extension, now))
        elif isinstance(ev, ContactHeld) and conn.state == "connected":
            self._try(lambda now: self.switch.hold(d.call_id, d.extension, now))
        elif isinstance(ev, ContactRetrieved) and conn.state == "held":
            self._try(lambda now: self.switch.retrieve(d.call_id, d.extension, now))

    # ---------------------------------------------------------------------------------- switch → router

    def _on_switch(self, events: list[SwitchEvent]) -> None:
        for ev in events:
            try:
                if isinstance(ev, DigitsGenerated):
                    self._digits(ev)
                    continue
                d = self.dials.get(ev.call_id)
                if d is not None:
                    self._dial_event(d, ev)
            except Exception:
                log.exception("callback: handling %s of %s failed", type(ev).__name__, ev.call_id)

    def _dial_event(self, d: _Dial, ev: SwitchEvent) -> None:
        kind = type(ev)
        at_phone = ev.device == d.extension
        if not d.over:
            if kind is Established and not at_phone:
                d.answered = True
                log.info("callback: the customer of %s answered", d.contact_id)
                self._publish_end(d, "answered")
            elif kind is Failed and not at_phone:
                self._attempt_over(d, "no_answer", retry=True)
            elif kind is ConnectionCleared and not at_phone:
                if d.answered:
                    d.over = True
                    self.centre.submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=d.contact_id))
                else:  # the far end turned the call down before answering
                    self._attempt_over(d, "busy", retry=True)
            elif kind is ConnectionCleared and at_phone:
                if d.answered:
                    d.over = True
                    self._submit_if(d, ContactEnded)
                else:  # the agent gave up while the customer's phone rang: nobody was reached, try again
                    self._attempt_over(d, "no_answer", retry=True)
            elif kind is Held and at_phone:
                self._submit_if(d, ContactHeld)
            elif kind is Retrieved and at_phone:
                self._submit_if(d, ContactRetrieved)
        if not ev.parties:  # the call is over on the switch
            self.dials.pop(d.call_id, None)
            if self._dial_of.get(d.contact_id) is d:
                del self._dial_of[d.contact_id]

    def _submit_if(self, d: _Dial, cls: type[Event]) -> None:
        """The agent's phone did it: tell the router, if the router would take it (the contact is still this
        agent's, in a state that allows the step) — else the phone only caught up with what it knows."""
        ev = cls(at_ms=self.centre.now_ms(), contact_id=d.contact_id, agent_id=d.agent_id)  # type: ignore[call-arg]
        if self.centre.router.check(ev) is None:
            self.centre.submit(ev)

    def _attempt_over(self, d: _Dial, outcome: str, *, retry: bool) -> None:
        """An attempt that reached nobody: it ends now with ``outcome`` as its disposition (the agent's
        wrap-up follows), and another attempt is scheduled while attempts are left."""
        d.over = True
        now = self.centre.now_ms()
        c = self.centre.router.contact(d.contact_id)
        if c is None or not c.handling:
            return
        self.centre.submit(DispositionSet(at_ms=now, contact_id=c.id, agent_id=d.agent_id, code=outcome))
        self.centre.submit(ContactEnded(at_ms=now, contact_id=c.id, agent_id=d.agent_id))
        if d.call_id in self.switch.calls:
            self._try(lambda now: self.switch.clear_call(d.call_id, now))
        if not retry or c.attempt >= self.config.max_attempts:
            log.info("callback: %s failed after %d attempt(s) (%s)", c.id, c.attempt, outcome)
            self._publish_end(d, outcome, attempt=c.attempt)
            return
        root = c.id.split(RETRY_MARK)[0]
        retry_id = f"{root}{RETRY_MARK}{c.attempt + 1}"
        number = c.callback_number
        assert number is not None
        task = self.centre.loop.create_task(
            self._retry(
                d,
                outcome,
                c.attempt,
                dict(
                    number=number,
                    queue=c.queue,
                    callback_id=retry_id,
                    customer_id=c.customer_id,
                    at_ms=now + self._retry_ms,
                    attributes=dict(c.attributes),
                    by_customer=True,  # the customer's own request stands until they withdraw consent
                    attempt=c.attempt + 1,
                ),
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry(self, d: _Dial, outcome: str, attempt: int, args: dict[str, Any]) -> None:
        try:
            got = await self.request(**args)
        except CallbackError as exc:  # do-not-call since, the queue gone: the callback ends here
            log.info("callback: no retry of %s: %s", d.contact_id, exc)
            self._publish_end(d, outcome, attempt=attempt)
            return
        self._publish_end(d, outcome, attempt=attempt, retry=(got.contact_id, got.due_ms))

    def _publish_end(
        self, d: _Dial, outcome: str, *, attempt: int | None = None, retry: tuple[str, int] | None = None
    ) -> None:
        if attempt is None:
            c = self.centre.router.contact(d.contact_id)
            attempt = c.attempt if c is not None else 1
        self.centre.publish(
            [
                CallbackAttemptEnded(
                    at_ms=self.centre.now_ms(),
                    contact_id=d.contact_id,
                    agent_id=d.agent_id,
                    attempt=attempt,
                    outcome=outcome,
                    retry_contact_id=retry[0] if retry else None,
                    retry_ms=retry[1] if retry else None,
                )
            ]
        )

    def _try(self, op: Callable[[int], list[SwitchEvent]]) -> None:
        try:
            self.driver.run(op)
        except SwitchError as exc:
            log.warning("callback: the switch refused an operation: %s (%s)", exc.message, exc.code)

    # ----------------------------------------------------------------------------------- virtual hold

    def _maybe_offer(self, ev: ContactQueued) -> None:
        limit = self._offer_after.get(ev.queue)
        if limit is None or ev.ewt_ms is None or ev.ewt_ms <= limit or ev.contact_id in self.offered:
            return
        self.offered.add(ev.contact_id)
        # The offer itself is a prompt the caller hears; the IVR's prompts are not played in a queue yet.
        log.info(
            "callback: %s waits ~%d s in %s: offered a callback (press %s)",
            ev.contact_id,
            ev.ewt_ms // 1000,
            ev.queue,
            ACCEPT_DIGIT,
        )

    def _digits(self, ev: DigitsGenerated) -> None:
        if ev.call_id not in self.offered or not ev.digits.startswith(ACCEPT_DIGIT):
            return
        call = self.voice.calls.get(ev.call_id)
        if call is None or ev.device != call.caller:
            return
        task = self.centre.loop.create_task(self._take_offer(ev.call_id, ev.ani))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_offer(self, call_id: str, ani: str) -> None:
        try:
            await self.request(number=ani, contact_id=call_id, by_customer=True)
        except CallbackError as exc:
            log.info("callback: %s stays on the line: %s", call_id, exc)
            return
        self.offered.discard(call_id)
        log.info("callback: %s will be called back; goodbye", call_id)
        if call_id in self.switch.calls:
            self._try(lambda now: self.switch.clear_call(call_id, now))


__all__ = ["CallbackChannel", "CallbackError", "Requested", "number_zones", "window_start"]
