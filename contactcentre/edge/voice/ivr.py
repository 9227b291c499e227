"""The IVR runner: one ``IvrSession`` per call at an IVR number of the simulated switch.

The switch answers a call to an IVR number at once (``Established`` at that number); the runner then walks
the caller through the number's menu (``contactcentre.telephony.ivr``), which is pure: this module is the adapter that
feeds it and carries out what it says.

switch → session
    ``Established`` at an IVR number → ``start``. ``DigitsGenerated`` by any other party of the call →
    ``dtmf``, key by key. The caller's side clearing (or the IVR's leg taken away by anyone else) →
    ``hangup``: the caller abandoned in the IVR, which is not a queue abandon (no contact exists yet).

session → switch and centre
    ``Play``: there is no media, so a prompt ends after an estimate (``ms_per_word`` × its words; 0 ends it
    at once) and the runner reports ``prompt_done``. ``Enqueue``: the IVR's results become the call's attached
    data (``contactcentre.telephony.ivr.handoff``) and the IVR blind-transfers the call to the queue's number, where the
    voice bridge turns it into a ``ContactArrived`` with the IVR's skills and priority and the ANI look-up's
    tier. ``Hangup`` (and the end of a ``Handoff``, as there is no voicemail system to take the call): the IVR
    clears its leg, so the call ends. ``RequestCallback``: ``centre.channels["callback"].request(...)`` when
    that channel exists. Every session fact is published as an ``Ivr*`` event (``contactcentre.events``),
    so containment statistics per node can be rebuilt from the log (``contactcentre.reporting.ivr_stats``).

Timers are data: each session says when it next needs the clock (``next_deadline``), and so does each
playing prompt; one ``callLater`` is armed for the earliest of them all, on any ``IReactorTime`` (the reactor,
or ``task.Clock`` in tests).

Self-service hooks run inside the pure session and cannot wait for the database, so what they need is read
ahead: when a call starts, the caller's customer record and cases are read through ``centre.read`` (the
routing path never waits on it). ``case_status`` answers from that read — only the caller's own cases, as the
keypad form of a case token is ambiguous across a whole store; if the read has not come back by the time the
caller has keyed a case number (or failed), the hook fails and the menu's ``otherwise`` branch takes the
call, as for any broken back-end. ``opening_hours`` describes the calendar of the menu's first ``hours`` node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from contactcentre.config import WEEKDAYS, CalendarConfig
from contactcentre.deadlines import DeadlineTimer, on_reactor
from contactcentre.events import Event, IvrFinished, IvrInputFailed, IvrNodeEntered, IvrNodeExited, IvrStarted
from contactcentre.reporting.ivr_stats import IvrStats
from contactcentre.store.callers import phone_cases
from contactcentre.store.identity import IdentityError, normalise_phone
from contactcentre.telephony.events import (
    ConnectionCleared,
    DigitsGenerated,
    Established,
    Failed,
    SwitchEvent,
    Transferred,
)
from contactcentre.telephony.ivr import actions as A
from contactcentre.telephony.ivr.handoff import attached_data
from contactcentre.telephony.ivr.hooks import keypad_digits
from contactcentre.telephony.ivr.menu import HoursNode, Menu, SelfServiceNode
from contactcentre.telephony.ivr.session import IvrError, IvrSession
from contactcentre.telephony.switch import SwitchError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from contactcentre.server.centre import Centre
    from contactcentre.store.db import Connection
    from contactcentre.telephony.driver import SwitchDriver

log = logging.getLogger(__name__)

CHANNEL = "ivr"  # registered as centre.channels["ivr"]; not a contact channel
DEFAULT_MS_PER_WORD = 400  # about 150 words a minute, a calm prompt voice
MAX_CASES = 200  # the caller's most recently updated cases the case-status hook can name

ActionListener = Callable[[str, A.IvrAction], None]


@dataclass(frozen=True)
class CallerRecord:
    """What the store knows about a caller's number: read once, when the call starts."""

    customer_id: str | None = None
    case_status: dict[str, str] = field(default_factory=dict)  # keypad form of a case token -> its status


def read_caller(conn: Connection, ani: str) -> CallerRecord:
    """The customer whose phone identity ``ani`` is, and the status of each of their cases by keypad digits
    (for two cases with the same digits, the more recently updated one)."""
    try:
        address = normalise_phone(ani)
    except IdentityError:  # withheld, an internal extension: nobody to look up
        return CallerRecord()
    customer_id, rows = phone_cases(conn, address, MAX_CASES)
    if customer_id is None:
        return CallerRecord()
    status: dict[str, str] = {}
    for token, st in rows:
        status.setdefault(keypad_digits(token), st)
    return CallerRecord(customer_id, status)


def hours_text(cal: CalendarConfig | None) -> str:
    """Opening hours in words for the ``opening_hours`` prompt: ``Monday to Friday 08:00-18:00``."""
    if cal is None:
        return "day and night, every day"
    names = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    parts: list[str] = []
    day = 0
    while day < len(WEEKDAYS):
        hours = cal.day(day)
        last = day
        while last + 1 < len(WEEKDAYS) and cal.day(last + 1) == hours:
            last += 1
        if hours:
            span = names[day] if last == day else f"{names[day]} to {names[last]}"
            parts.append(f"{span} {' and '.join(hours)}")
        day = last + 1
    return ", ".join(parts) or "closed"


@dataclass
class _Live:
    """One call in the IVR."""

    call_id: str
    number: str  # the IVR number (its device on the switch)
    session: IvrSession
    caller: CallerRecord | None = None  # None until the store has answered
    prompt: tuple[int, int] | None = None  # (seq, ends at ms) of the prompt playing
    published: int = 0  # session facts already published


class IvrRunner:
    """Runs the menus of the switch's IVR numbers; ``menus`` maps each IVR number to its checked menu."""

    def __init__(
        self,
        centre: Centre,
        switch_driver: SwitchDriver,
        menus: Mapping[str, Menu],
        *,
        clock: IReactorTime,
        queue_number: Callable[[str], str],
        ms_per_word: int = DEFAULT_MS_PER_WORD,
    ) -> None:
        if ms_per_word < 0:
            raise ValueError("ms_per_word must be >= 0")
        self.centre = centre
        self.driver = switch_driver
        self.switch = switch_driver.switch
        self.menus = dict(menus)
        self.clock = clock
        self.queue_number = queue_number
        self.ms_per_word = ms_per_word
        self.calls: dict[str, _Live] = {}  # call id -> the call while it is in the IVR
        self.stats = IvrStats()  # since this runner started; the log holds every day (``stats_from_store``)
        # Told every action (a media server, the demo's callers). A listener must not operate the switch from
        # the callback: the runner is in the middle of that call's step; schedule it instead.
        self.listeners: list[ActionListener] = []
        self._timer = DeadlineTimer(on_reactor(clock, switch_driver.now_ms), self._on_deadline)
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # caller look-ups and callback requests under way
        self._unsubscribe = switch_driver.subscribe(self._on_switch)
        centre.channels[CHANNEL] = self

    @classmethod
    def for_config(cls, centre: Centre, switch_driver: SwitchDriver, clock: IReactorTime) -> IvrRunner:
        """The IVR numbers of ``[server.voice] ivr``, their menus loaded and checked against the centre."""
        from contactcentre.telephony.ivr.menu import load_menu

        config = centre.config
        numbers = config.queue_numbers()
        voice = config.server.voice
        menus = {number: load_menu(path, config) for number, path in voice.ivr.items()}
        return cls(
            centre,
            switch_driver,
            menus,
            clock=clock,
            queue_number=lambda q: numbers[q],
            ms_per_word=voice.ivr_ms_per_word,
        )

    # ------------------------------------------------------------------------------------- lifecycle

    async def settle(self) -> None:
        """Wait until every caller look-up and callback request under way has come back (tests, shutdown)."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        """Stop taking calls. Calls still in the IVR stay on the switch, which is going down with the server."""
        self._unsubscribe()
        self._closed = True
        self._timer.cancel()
        await self.settle()
        if self.centre.channels.get(CHANNEL) is self:
            del self.centre.channels[CHANNEL]

    # ----------------------------------------------------------------------------------- switch → IVR

    def _on_switch(self, events: list[SwitchEvent]) -> None:
        for ev in events:
            try:
                self._switch_event(ev)
            except Exception:  # one bad event must not cost the other calls
                log.exception("ivr: handling %s of %s failed", type(ev).__name__, ev.call_id)
        self._rearm()

    def _switch_event(self, ev: SwitchEvent) -> None:
        live = self.calls.get(ev.call_id)
        if live is None:
            if type(ev) is Established and ev.device in self.menus:
                self._start(ev)
            return
        kind = type(ev)
        if kind is DigitsGenerated and ev.device != live.number:
            for digit in ev.digits:  # type: ignore[attr-defined]
                self._input(live, lambda now, d=digit: live.session.dtmf(d, now))
        elif kind in (ConnectionCleared, Failed) or (kind is Transferred and ev.device == live.number):
            # The caller hung up, or someone else took the IVR's leg away (a CTI client cleared or transferred
            # it; the runner's own moves come after the session is done): the caller is gone from the menu.
            self._input(live, live.session.hangup)

    def _start(self, ev: SwitchEvent) -> None:
        menu = self.menus[ev.device]
        now = self.driver.now_ms()
        session = IvrSession(menu, ev.call_id, ev.ani, now)
        live = _Live(ev.call_id, ev.device, session)
        session.hooks.update(self._hooks(live, menu))
        self.calls[ev.call_id] = live
        self.centre.publish([IvrStarted(at_ms=now, contact_id=ev.call_id, menu=menu.name, number=ev.device)])
        self._spawn(self._read_caller(live, ev.ani))
        self._input(live, session.start)

    async def _read_caller(self, live: _Live, ani: str) -> None:
        try:
            live.caller = await self.centre.read(read_caller, ani)
        except Exception:  # the store is failing: the menu still runs, its case look-ups take ``otherwise``
            log.exception("ivr: reading the caller of %s failed", live.call_id)
            live.caller = CallerRecord()

    def _hooks(self, live: _Live, menu: Menu) -> dict[str, Callable[..., Any]]:
        def case_status(digits: str) -> str | None:
            if live.caller is None:
                raise LookupError("the caller's cases have not been read yet")
            return live.caller.case_status.get(digits)

        hours_cal = next((n.calendar for n in menu.nodes.values() if isinstance(n, HoursNode)), None)
        text = hours_text(self.centre.config.calendars.get(hours_cal) if hours_cal else None)
        hooks: dict[str, Callable[..., Any]] = {"case_status": case_status, "opening_hours": lambda now_ms: text}
        used = {n.hook for n in menu.nodes.values() if isinstance(n, SelfServiceNode)}
        return {name: fn for name, fn in hooks.items() if name in used}

    # ---------------------------------------------------------------------------------- the sessions

    def _now(self, live: _Live) -> int:
        # Never behind the session's own clock, which an input must not take backwards.
        return max(self.driver.now_ms(), live.session.now_ms)

    def _input(self, live: _Live, fn: Callable[[int], list[A.IvrAction]]) -> None:
        """Bring the call up to now (prompts that ended, timers due), then give it one input."""
        now = self._now(live)
        self._catch_up(live, now)
        if live.call_id not in self.calls:
            return  # the catch-up ended the session
        try:
            out = fn(now)
        except IvrError as exc:
            log.warning("ivr: %s refused an input: %s", live.call_id, exc)
            out = []
        self._after(live, out)
        self._catch_up(live, now)  # prompts that take no time (ms_per_word = 0) end at once

    def _catch_up(self, live: _Live, now: int) -> None:
        """Fire, in time order, the prompt ends and session timers due at or before ``now``."""
        while live.call_id in self.calls:
            session = live.session
            due = session.next_deadline()
            ends = live.prompt[1] if live.prompt is not None else None
            if ends is not None and ends <= now and (due is None or ends <= due):
                seq = live.prompt[0]  # type: ignore[index]
                live.prompt = None
                self._after(live, session.prompt_done(max(ends, session.now_ms), seq))
            elif due is not None and due <= now:
                self._after(live, session.advance(due))
            else:
                return

    def _after(self, live: _Live, actions: list[A.IvrAction]) -> None:
        """Carry out a session's actions and publish its new facts; forget the call once it is done."""
        session = live.session
        if session.done:  # first: the switch events of the runner's own last moves must not reach the session
            self.calls.pop(live.call_id, None)
        for action in actions:
            for fn in list(self.listeners):
                try:
                    fn(live.call_id, action)
                except Exception:
                    log.exception("ivr: action listener %r failed", fn)
            try:
                self._carry_out(live, action)
            except Exception:
                log.exception("ivr: carrying out %s for %s failed", type(action).__name__, live.call_id)
        facts = session.facts[live.published :]
        live.published = len(session.facts)
        if facts:
            self.stats.add(facts)
            self.centre.publish([self._event(live, f) for f in facts])
        if session.done:
            live.prompt = None

    def _carry_out(self, live: _Live, action: A.IvrAction) -> None:
        cid = live.call_id
        if isinstance(action, A.Play):
            ends = live.session.now_ms + self.ms_per_word * len(action.text.split())
            live.prompt = (action.seq, ends)
        elif isinstance(action, A.Enqueue):
            to = self.queue_number(action.queue)
            data = attached_data(action)
            self._switch(lambda now: self.switch.set_attached_data(cid, data, now, device=live.number))
            self._switch(lambda now: self.switch.transfer(cid, live.number, to, now))
        elif isinstance(action, A.Hangup | A.Handoff):
            if isinstance(action, A.Handoff):
                log.info("ivr: %s handed off to %s: nothing takes it here, the IVR hangs up", cid, action.target)
            if cid in self.switch.calls and live.number in self.switch.calls[cid].connections:
                self._switch(lambda now: self.switch.clear_connection(cid, live.number, now))
        elif isinstance(action, A.RequestCallback):
            self._request_callback(live, action)

    def _request_callback(self, live: _Live, action: A.RequestCallback) -> None:
        channel = self.centre.channels.get("callback")
        request = getattr(channel, "request", None)
        if request is None:
            log.warning(
                "ivr: %s asked to be called back (queue %s) but this server has no callback channel",
                live.call_id,
                action.queue,
            )
            return
        customer_id = live.caller.customer_id if live.caller is not None else None

        async def ask() -> None:
            try:
                await request(
                    number=action.number,
                    queue=action.queue,
                    callback_id=live.call_id,  # the IVR's logged facts and the callback share the call's id
                    customer_id=customer_id,
                    at_ms=action.at_ms,
                    priority=action.priority,
                    attributes=dict(action.attributes),
                    by_customer=True,  # the caller asked for it in the IVR: their consent to this call
                )
            except Exception as exc:  # refused (do-not-call, outside any window) or failing: the caller has gone
                log.warning("ivr: the callback %s asked for was not scheduled: %s", live.call_id, exc)

        self._spawn(ask())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.centre.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _switch(self, op: Callable[[int], list[SwitchEvent]]) -> None:
        try:
            self.driver.run(op)
        except SwitchError as exc:  # the caller hung up in the same instant: the hang-up event follows
            log.info("ivr: the switch refused an operation: %s (%s)", exc.message, exc.code)

    def _event(self, live: _Live, fact: A.IvrFact) -> Event:
        # Logged at the centre's now: a prompt end or timeout handled a little late happened at its deadline
        # for the session, but the log's times must not go back behind what was logged meanwhile.
        fact = msgspec.structs.replace(fact, at_ms=max(fact.at_ms, self.centre.now_ms()))
        menu, cid = live.session.menu.name, live.call_id
        if isinstance(fact, A.NodeEntered):
            return IvrNodeEntered(at_ms=fact.at_ms, contact_id=cid, menu=menu, node=fact.node)
        if isinstance(fact, A.InputFailed):
            return IvrInputFailed(
                at_ms=fact.at_ms, contact_id=cid, menu=menu, node=fact.node, cause=fact.cause, attempt=fact.attempt
            )
        if isinstance(fact, A.NodeExited):
            return IvrNodeExited(at_ms=fact.at_ms, contact_id=cid, menu=menu, node=fact.node, cause=fact.cause)
        queue = None
        if fact.outcome == "queued":
            node = live.session.menu.node(fact.node)
            queue = getattr(node, "queue", None)
        return IvrFinished(
            at_ms=fact.at_ms,
            contact_id=cid,
            menu=menu,
            outcome=fact.outcome,
            node=fact.node,
            path=fact.path,
            queue=queue,
            customer_id=live.caller.customer_id if live.caller is not None else None,
        )

    # ---------------------------------------------------------------------------------------- timers

    def next_deadline(self) -> int | None:
        """The earliest instant any call in the IVR needs the clock: a prompt's end or a session's timer."""
        due = [d for live in self.calls.values() for d in self._deadlines(live) if d is not None]
        return min(due) if due else None

    @staticmethod
    def _deadlines(live: _Live) -> tuple[int | None, int | None]:
        return (live.prompt[1] if live.prompt is not None else None), live.session.next_deadline()

    def _on_deadline(self, due: int) -> None:
        if self._closed:
            return
        # The centre's clock, not the deadline: a session must never run ahead of the time the rest of the
        # centre logs at (a timer a hair early finds nothing due and is armed again).
        now = self.driver.now_ms()
        for live in list(self.calls.values()):
            if any(d is not None and d <= now for d in self._deadlines(live)):
                try:
                    self._catch_up(live, now)
                except Exception:
                    log.exception("ivr: the timers of %s failed", live.call_id)
        self._rearm()

    def _rearm(self) -> None:
        """Keep exactly one ``callLater`` armed, for the earliest deadline of all calls in the IVR."""
        if self._closed:
            return
        # A scan over the calls in the IVR: they are few (each is a caller listening), and it runs once per
        # batch of switch events or timer, not per call.
        self._timer.arm(self.next_deadline())
