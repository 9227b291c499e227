"""The voice bridge: the simulated switch's call events into router inputs, the router's decisions into switch
operations.

The switch (``contactcentre.telephony``) knows calls and connections; the router knows contacts and offers. A call
that reaches a queue DN becomes a contact whose id is the call id; from then on:

switch → router
    ``Queued`` at a queue DN (the call's first visit) → ``ContactArrived`` once the caller is looked up by ANI
    (customer, tier, E.164 address; the call's attached data as attributes). ``Established`` at the offered
    agent's extension → ``OfferAccepted``. The caller's trunk cleared → ``CustomerLeft`` (the router knows
    whether that is an abandon or the end of a conversation). The agent's extension cleared → ``ContactEnded``.
    ``Held``/``Retrieved`` → ``ContactHeld``/``ContactRetrieved``. ``Transferred`` by the handling agent →
    ``TransferRequested`` (to a queue DN: ``to_queue``; to an agent's extension: ``to_agent_id``; out on a
    trunk: ``to_external``; a consultative transfer to a colleague the router may not give the call to now
    leaves routing, as ``to_external``, rather than stay queued while the colleague talks to the caller).
    ``Conferenced`` → ``ContactRetrieved`` and a published ``ContactConferenced``; the handling agent leaving
    a conference hands the contact to a colleague still on the line (``to_agent_id``) or to an outside party
    (``to_external``), else it ends.

router → switch
    After every batch the router publishes, each voice contact it touched is *reconciled*: the call is moved
    to where the router wants it — alerting at the offered agent's extension, or waiting at a queue DN when
    the contact is queued (an offer expired, was cancelled or rejected). ``ContactOverflowed(left=True)`` and
    ``ContactFailed`` clear the call; ``ContactTransferred`` that the switch has not carried out yet (a
    transfer asked for through the router) moves the call.

Reconciling against the router's state rather than replaying each event keeps the bridge correct when one
batch holds several decisions about a call (an offer expired and the next one made at once): the call goes
straight to where it ends up. The router decides ring-no-answer: the switch's own ring timer must be longer
than the router's voice offer timeout (``switch_config`` sets it so), and is only a safety net.

Switch refusals (``SwitchError``) in a subscriber are logged and never propagate: the switch and the router
each carry on with what they know. The agent-facing methods (``answer``, ``hold`` …) raise ``VoiceError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contactcentre.acd import RouterError
from contactcentre.events import (
    ContactArrived,
    ContactConferenced,
    ContactEnded,
    ContactFailed,
    ContactHeld,
    ContactOverflowed,
    ContactRetrieved,
    ContactTransferred,
    CustomerLeft,
    Event,
    OfferAccepted,
    OfferRejected,
    TransferRequested,
)
from contactcentre.store.callers import customer_tier
from contactcentre.store.customers import find_customer
from contactcentre.store.identity import IdentityError, normalise_phone
from contactcentre.telephony.events import (
    Conferenced,
    ConnectionCleared,
    Established,
    Failed,
    Held,
    Queued,
    Retrieved,
    SwitchEvent,
    Transferred,
)
from contactcentre.telephony.ivr.handoff import routing_from_attached
from contactcentre.telephony.switch import ALERTING, EXTENSION, IVR, QUEUE, TRUNK, SwitchConfig, SwitchError

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig
    from contactcentre.server.centre import Centre
    from contactcentre.store.db import Connection
    from contactcentre.telephony.driver import SwitchDriver
    from contactcentre.telephony.switch import Call

log = logging.getLogger(__name__)

CHANNEL = "voice"
RING_MARGIN_MS = 5_000  # the switch's ring timer runs this much longer than the router's offer timeout


class VoiceError(Exception):
    """An agent's voice action that cannot be carried out; ``code`` is machine-readable (the switch's codes,
    ``unknown_contact``, ``no_text``, ``bad_request``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Call:
    """What the bridge remembers about one call that became (or is becoming) a contact."""

    call_id: str
    queue: str
    caller: str  # the calling party's device: the trunk of an inbound call, or an extension that dialled
    arrived: bool = False  # ContactArrived submitted
    left_early: bool = False  # the caller hung up while the look-up ran
    lookup: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Caller:
    customer_id: str | None
    tier: str | None
    address: str


def switch_config(config: CentreConfig) -> SwitchConfig:
    """The switch's numbering plan from the centre's configuration (agents' extensions, queue numbers), with
    a ring timer that leaves ring-no-answer to the router (at least its voice offer timeout + 5 s)."""
    offer_ms = round(config.channel(CHANNEL).offer_timeout_s * 1000)
    voice = config.server.voice
    ring_ms = offer_ms + RING_MARGIN_MS
    if voice.ring_timeout_s is not None:
        ring_ms = max(round(voice.ring_timeout_s * 1000), offer_ms)
    return SwitchConfig(
        extensions=tuple(config.extensions().values()),
        queues=tuple(config.queue_numbers().values()),
        trunks=voice.trunks,
        ivrs=tuple(voice.ivr),
        ring_timeout_ms=ring_ms,
    )


def _look_up_caller(conn: Connection, ani: str) -> _Caller:
    try:
        address = normalise_phone(ani)
    except IdentityError:  # withheld, an internal extension, garbage from the trunk: nobody to pop
        return _Caller(None, None, ani)
    customer_id = find_customer(conn, "phone", address)
    tier = customer_tier(conn, customer_id) if customer_id is not None else None
    return _Caller(customer_id, tier, address)


class VoiceChannel:
    """The bridge between one ``SwitchDriver`` and the centre; registered as ``centre.channels["voice"]``."""

    def __init__(
        self,
        centre: Centre,
        switch_driver: SwitchDriver,
        *,
        queue_number: Callable[[str], str] = lambda q: f"q-{q}",
        extension: Callable[[str], str] = lambda agent_id: agent_id,
    ) -> None:
        self.centre = centre
        self.driver = switch_driver
        self.switch = switch_driver.switch
        self.queue_number = queue_number
        self.extension = extension
        voice_queues = [q.name for q in centre.config.queues if CHANNEL in q.channels]
        self._queue_at: dict[str, str] = {queue_number(q): q for q in voice_queues}
        self._agent_at: dict[str, str] = {extension(a.id): a.id for a in centre.config.agents}
        self.calls: dict[str, _Call] = {}  # call id (= contact id) -> what the bridge knows
        self._refusals: list[RouterError] | None = None  # during an agent's phone operation (``_operate``)
        offer_ms = round(centre.config.channel(CHANNEL).offer_timeout_s * 1000)
        if self.switch.config.ring_timeout_ms < offer_ms:
            log.warning(
                "voice: the switch rings %d ms, less than the router's offer timeout (%d ms): ring-no-answer "
                "will be the switch's decision, not the router's",
                self.switch.config.ring_timeout_ms,
                offer_ms,
            )
        self._unsubscribe = [switch_driver.subscribe(self._on_switch), centre.subscribe(self._on_centre)]
        centre.channels[CHANNEL] = self

    @classmethod
    def for_config(cls, centre: Centre, switch_driver: SwitchDriver) -> VoiceChannel:
        """A bridge numbered by the configuration (``[[agents]] extension``, ``[[queues]] number``)."""
        numbers = centre.config.queue_numbers()
        extensions = centre.config.extensions()
        return cls(
            centre,
            switch_driver,
            queue_number=lambda q: numbers[q],
            extension=lambda agent_id: extensions.get(agent_id, agent_id),
        )

    # ------------------------------------------------------------------------------------- lifecycle

    def restore(self) -> None:
        """After a restart the (simulated) switch has no calls: voice contacts the router restored from its
        log have no caller any more. They are ended as the customer having left."""
        now = self.centre.now_ms()
        node = self.centre.node_id  # an edge of many ends only the calls its own switch held (scaling.md)
        for c in self.centre.router.contact_list():
            mine = node is None or c.attributes.get("edge") == node
            if mine and c.channel == CHANNEL and c.id not in self.switch.calls and (c.waiting or c.handling):
                self._submit(CustomerLeft(at_ms=now, contact_id=c.id))

    async def settle(self) -> None:
        """Wait until every caller look-up under way has been submitted (tests, shutdown)."""
        while pending := [c.lookup for c in self.calls.values() if c.lookup is not None and not c.lookup.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        for fn in self._unsubscribe:
            fn()
        self._unsubscribe = []
        await self.settle()
        if self.centre.channels.get(CHANNEL) is self:
            del self.centre.channels[CHANNEL]

    # --------------------------------------------------------------------------------- agents' actions

    async def agent_message(self, contact_id: str, agent_id: str, text: str) -> str:
        raise VoiceError("no_text", "a voice contact has no text messages: talk to the caller")

    async def answer(self, contact_id: str, agent_id: str) -> None:
        """The agent's phone picks up the call alerting at it (the ``Established`` then accepts the offer)."""
        ext = self._own_extension(contact_id, agent_id)
        # The router may owe an expiry (the deadline passed, its timer not yet run): bring it up to now, and
        # pick up only a call whose offer is still this agent's, or the caller would talk to an agent the
        # router has already taken the call from.
        self.centre.driver.catch_up()
        agent = self.centre.router.agent(agent_id)
        ringing = contact_id in self.switch.calls and any(
            conn.state == "alerting"
            for conn in self.switch.calls[contact_id].connections.values()
            if conn.device == ext
        )
        if ringing and (agent is None or agent.offer_of(contact_id) is None):
            raise VoiceError("stale_offer", f"the offer of {contact_id!r} to {agent_id!r} is no longer open")
        self._operate(lambda now: self.switch.answer(contact_id, ext, now))

    async def hold(self, contact_id: str, agent_id: str) -> None:
        ext = self._own_extension(contact_id, agent_id)
        self._operate(lambda now: self.switch.hold(contact_id, ext, now))

    async def retrieve(self, contact_id: str, agent_id: str) -> None:
        """Back to the held caller; a consultation the agent has open is hung up first (CSTA's reconnect)."""
        ext = self._own_extension(contact_id, agent_id)
        consultation = self._consultation(contact_id, ext)
        if consultation is not None:
            self._operate(lambda now: self.switch.clear_connection(consultation.id, ext, now))
        self._operate(lambda now: self.switch.retrieve(contact_id, ext, now))

    async def hang_up(self, contact_id: str, agent_id: str) -> None:
        ext = self._own_extension(contact_id, agent_id)
        self._operate(lambda now: self.switch.clear_connection(contact_id, ext, now))

    async def transfer(
        self,
        contact_id: str,
        agent_id: str,
        *,
        to_queue: str | None = None,
        to_agent: str | None = None,
        to_external: str | None = None,
    ) -> None:
        """Blind transfer from the agent's phone to a queue, another agent's phone or an outside number.

        The target is checked against the router's configuration first, so that the switch does not move a
        call the router would then refuse to follow."""
        ext = self._own_extension(contact_id, agent_id)
        to = self._destination(agent_id, "a transfer", to_queue, to_agent, to_external)
        self._operate(lambda now: self.switch.transfer(contact_id, ext, to, now))

    async def consult(
        self,
        contact_id: str,
        agent_id: str,
        *,
        to_queue: str | None = None,
        to_agent: str | None = None,
        to_external: str | None = None,
    ) -> str:
        """A consultation call from the agent's phone, the caller held meanwhile: to a colleague, to a queue
        number (nobody routes the consultation itself; completing it puts the caller in that queue) or to an
        outside number. Returns the consultation's call id. ``complete_transfer``, ``conference`` or
        ``retrieve`` (back to the caller) end it."""
        ext = self._own_extension(contact_id, agent_id)
        to = self._destination(agent_id, "a consultation", to_queue, to_agent, to_external)
        if self._consultation(contact_id, ext) is not None:
            raise VoiceError("conflict", f"a consultation about {contact_id!r} is open already")
        self._operate(lambda now: self.switch.consult(contact_id, ext, to, now))
        consultation = self._need_consultation(contact_id, ext)
        return consultation.id

    async def complete_transfer(self, contact_id: str, agent_id: str) -> None:
        """The consulted party takes the agent's place in the caller's call.

        A colleague gets the contact from the router, which hands it over only to an agent it may offer it to
        now (ready, with room for a call); anyone else is refused here with ``agent_unavailable`` before the
        switch moves anything, because the router would leave the call queued while the colleague talks to
        the caller. Conference them in instead, or have them make themselves available first."""
        ext = self._own_extension(contact_id, agent_id)
        consultation = self._need_consultation(contact_id, ext)
        for device in consultation.connections:
            colleague = self._agent_at.get(device)
            if device != ext and colleague is not None and not self._may_take(colleague, contact_id):
                raise VoiceError(
                    "agent_unavailable",
                    f"agent {colleague!r} cannot be given {contact_id!r} now (away, or busy): conference instead",
                )
        self._operate(lambda now: self.switch.complete_transfer(contact_id, consultation.id, now, device=ext))

    async def conference(self, contact_id: str, agent_id: str) -> None:
        """Three-way: the consulted party (once it has answered) joins the caller's call and the agent stays
        with the contact (``ContactConferenced`` records who joined)."""
        ext = self._own_extension(contact_id, agent_id)
        consultation = self._need_consultation(contact_id, ext)
        self._operate(lambda now: self.switch.conference(contact_id, consultation.id, now, device=ext))

    def _destination(
        self, agent_id: str, what: str, to_queue: str | None, to_agent: str | None, to_external: str | None
    ) -> str:
        """The switch number of a transfer's or consultation's target, checked against the router's
        configuration first, so that the switch does not move a call the router would then refuse to follow."""
        if sum(t is not None for t in (to_queue, to_agent, to_external)) != 1:
            raise VoiceError("bad_request", f"{what} needs exactly one of to_queue, to_agent, to_external")
        if to_queue is not None:
            if to_queue not in self._queue_at.values():
                raise VoiceError("unknown_queue", f"no voice queue {to_queue!r}")
            return self.queue_number(to_queue)
        if to_agent is not None:
            a = self.centre.router.agent(to_agent)
            if a is None or not a.logged_in:
                raise VoiceError("unknown_agent", f"agent {to_agent!r} is not logged in")
            if to_agent == agent_id:
                raise VoiceError("bad_request", f"an agent cannot be the target of its own {what.split()[-1]}")
            return self.extension(to_agent)
        assert to_external is not None
        if self._kind(to_external) == IVR:
            # The call is one contact: routed out to the IVR it would end, and could not be routed again.
            raise VoiceError("bad_request", f"{what} to the IVR ({to_external}) is not supported: use a queue")
        return to_external

    def _consultation(self, contact_id: str, ext: str) -> Call | None:
        """The consultation call ``ext`` made about the contact's call, if one is still up."""
        for call in self.switch.calls.values():
            if call.consult_of == contact_id and ext in call.connections:
                return call
        return None

    def _need_consultation(self, contact_id: str, ext: str) -> Call:
        consultation = self._consultation(contact_id, ext)
        if consultation is None:
            raise VoiceError("no_consultation", f"no consultation about {contact_id!r} is open: consult first")
        return consultation

    def _may_take(self, agent_id: str, contact_id: str) -> bool:
        """Would the router offer the contact to this agent at once (a transfer to a named agent)?"""
        return self.centre.router.may_take_now(agent_id, contact_id)

    def _own_extension(self, contact_id: str, agent_id: str) -> str:
        if contact_id not in self.switch.calls:
            raise VoiceError("unknown_contact", f"no call {contact_id!r} on the switch")
        return self.extension(agent_id)

    def _operate(self, op: Callable[[int], list[SwitchEvent]]) -> list[SwitchEvent]:
        """An agent's operation on its phone. The router inputs the switch's events lead to are submitted on
        the way; one the router refuses refuses the operation (``refused``, with the router's reason)."""
        outer, self._refusals = self._refusals, []
        try:
            out = self.driver.run(op)
        except SwitchError as exc:
            raise VoiceError(exc.code, exc.message) from None
        finally:
            refusals, self._refusals = self._refusals, outer
        if refusals:
            raise VoiceError("refused", str(refusals[0]))
        return out

    def _submit(self, ev: Event) -> RouterError | None:
        refusal = self.centre.submit(ev)
        if refusal is not None and self._refusals is not None:
            self._refusals.append(refusal)
        return refusal

    # ----------------------------------------------------------------------------------- switch → router

    def _on_switch(self, events: list[SwitchEvent]) -> None:
        for i, ev in enumerate(events):
            try:
                self._switch_event(ev, events[i + 1 :])
            except Exception:  # one bad event must not cost the rest of the batch
                log.exception("voice: handling %s of %s failed", type(ev).__name__, ev.call_id)

    def _switch_event(self, ev: SwitchEvent, rest: list[SwitchEvent]) -> None:
        kind = type(ev)
        call = self.calls.get(ev.call_id)
        if kind is Queued:
            if call is None and ev.device in self._queue_at and not self._is_consultation(ev.call_id):
                self._arrival(ev)
            elif call is not None and call.arrived and ev.device in self._queue_at and self._left_routing(call):
                # Back at a queue number after its contact ended (a phone sent it to the IVR, which queued it
                # again): a call id is one contact, so it cannot be routed twice. Clear it rather than leave
                # the caller waiting where no router contact will ever be offered.
                log.warning("voice: %s came back to %s after its contact ended; clearing it", ev.call_id, ev.device)
                self._try(lambda now: self.switch.clear_call(ev.call_id, now))
            return
        if call is None:
            return  # not a contact: an internal call, a consultation, a call straight to an extension
        if kind is ConnectionCleared or kind is Failed:
            if ev.device == call.caller:
                self._caller_left(call)
            elif kind is ConnectionCleared and self._kind(ev.device) == EXTENSION:
                self._agent_cleared(call, ev.device)
            elif kind is Failed:
                log.warning("voice: %s rang out at %s before the router's offer expired", ev.call_id, ev.device)
            if not ev.parties:  # the call is over on the switch
                self._forget(call)
            return
        if not call.arrived:
            return
        if kind is Established:
            self._established(call, ev.device)
        elif kind is Held:
            self._handling_input(call, ev.device, ContactHeld)
        elif kind is Retrieved:
            self._handling_input(call, ev.device, ContactRetrieved)
        elif kind is Transferred:  # blind, or consultative (the consulted party took the agent's place)
            self._transferred(call, ev, rest)
        elif kind is Conferenced:
            self._conferenced(call, ev)

    def _kind(self, device: str) -> str | None:
        return self.switch.kinds.get(device)

    def _left_routing(self, call: _Call) -> bool:
        c = self.centre.router.contact(call.call_id)
        return c is None or not (c.waiting or c.handling)

    def _is_consultation(self, call_id: str) -> bool:
        c = self.switch.calls.get(call_id)
        return c is not None and c.consult_of is not None

    def _arrival(self, ev: SwitchEvent) -> None:
        caller = ev.calling_device  # type: ignore[attr-defined]
        if self._kind(caller) == IVR:  # the IVR handed the call on: the caller is who called the IVR
            caller = next(iter(self.switch.calls[ev.call_id].connections))
        call = _Call(ev.call_id, self._queue_at[ev.device], caller)
        self.calls[ev.call_id] = call
        # The look-up reads the store on the reader pool: the routing path never waits for the database.
        call.lookup = self.centre.loop.create_task(self._look_up_and_submit(call, ev.ani, dict(ev.attached_data)))

    async def _look_up_and_submit(self, call: _Call, ani: str, attached: dict[str, str]) -> None:
        try:
            caller = await self.centre.read(_look_up_caller, ani)
        except Exception:  # the store is failing: route the call anyway, unidentified
            log.exception("voice: looking up caller of %s failed", call.call_id)
            caller = _Caller(None, None, ani)
        tier = caller.tier if caller.tier in self.centre.config.tiers else None
        try:  # an IVR's skills and priority bonus travel in the attached data (the tier adds its own)
            skills, priority, attributes = routing_from_attached(attached)
        except ValueError as exc:
            log.warning("voice: %s: ignoring the IVR's routing data: %s", call.call_id, exc)
            skills, priority, attributes = {}, 0, attached
        if self.centre.node_id is not None:  # an edge of many: the call lives on this edge's switch (scaling.md)
            attributes = {**attributes, "edge": self.centre.node_id}
        now = self.centre.now_ms()
        call.arrived = True  # before the submit: what the router says back may already end the call
        refusal = self._submit(
            ContactArrived(
                at_ms=now,
                contact_id=call.call_id,
                queue=call.queue,
                channel=CHANNEL,
                customer_id=caller.customer_id,
                tier=tier,
                priority=priority,
                skills=skills,
                address=caller.address,
                attributes=attributes,
            )
        )
        if call.left_early:  # hung up during the look-up: logged as a (short) abandon all the same
            self._submit(CustomerLeft(at_ms=now, contact_id=call.call_id))
            self._forget(call)
        elif refusal is not None and call.call_id in self.switch.calls:
            # Refused outright (the queue does not serve voice, a duplicate id): nobody will answer this call.
            log.warning("voice: the router refused call %s; clearing it", call.call_id)
            self._try(lambda now: self.switch.clear_call(call.call_id, now))

    def _caller_left(self, call: _Call) -> None:
        if not call.arrived:
            call.left_early = True
            return
        c = self.centre.router.contact(call.call_id)
        if c is not None and (c.waiting or c.handling):
            self._submit(CustomerLeft(at_ms=self.centre.now_ms(), contact_id=call.call_id))

    def _agent_cleared(self, call: _Call, device: str) -> None:
        agent_id = self._agent_at.get(device)
        c = self.centre.router.contact(call.call_id)
        if agent_id is None or c is None or c.agent_id != agent_id or not c.handling:
            return  # not the agent handling it (an alerting phone cleared, the call already ended)
        now = self.centre.now_ms()
        # Leaving a conference hands the caller to whoever stays on the line: a colleague the router may give
        # the contact to, or an outside party (the contact leaves the centre). Anyone else talks on outside
        # routing, and the agent's handling simply ends.
        sw = self.switch.calls.get(call.call_id)
        for conn in list(sw.connections.values()) if sw is not None else []:
            if conn.device == call.caller or conn.state != "connected":
                continue
            heir = self._agent_at.get(conn.device)
            if heir is not None and self._may_take(heir, c.id):
                self._submit(TransferRequested(at_ms=now, contact_id=c.id, agent_id=agent_id, to_agent_id=heir))
                return
            if conn.kind == TRUNK:
                number = conn.number or conn.device
                self._submit(TransferRequested(at_ms=now, contact_id=c.id, agent_id=agent_id, to_external=number))
                return
        self._submit(ContactEnded(at_ms=now, contact_id=call.call_id, agent_id=agent_id))

    def _established(self, call: _Call, device: str) -> None:
        agent_id = self._agent_at.get(device)
        c = self.centre.router.contact(call.call_id)
        if agent_id is None or c is None:
            return
        o = c.offer
        if c.state == "offered" and o is not None and o.agent_id == agent_id:
            # The phone is the truth: an answer that reached the switch in the instant the offer ran out, before
            # the router's expiry timer ran, still takes the call — stamped just inside the offer, or the
            # router would expire it first and leave the caller talking to an agent it has put away.
            at = max(self.centre.router.now_ms, min(self.centre.now_ms(), o.expires_ms - 1))
            self._submit(OfferAccepted(at_ms=at, offer_id=o.id, contact_id=c.id, agent_id=agent_id))
        elif c.waiting:
            # Picked up without the router's offer (a CTI client answering a call the router has taken back):
            # the caller goes back to waiting in its place rather than talk outside routing.
            log.warning("voice: %s answered %s without the router's offer; back to its queue", device, c.id)
            self._try(lambda now: self.switch.transfer(c.id, device, self.queue_number(c.queue), now))
            self._reconcile(c.id)
        else:
            log.warning("voice: %s answered %s without the router's offer (%s)", device, call.call_id, c.state)

    def _handling_input(self, call: _Call, device: str, cls: type[Event]) -> None:
        """The agent's phone held or retrieved the call: tell the router, if the router would take it (the call
        is this agent's contact, in a state that allows the step)."""
        agent_id = self._agent_at.get(device)
        if agent_id is None:
            return
        ev = cls(at_ms=self.centre.now_ms(), contact_id=call.call_id, agent_id=agent_id)  # type: ignore[call-arg]
        if self.centre.router.check(ev) is None:
            self._submit(ev)

    def _transferred(self, call: _Call, ev: SwitchEvent, rest: list[SwitchEvent]) -> None:
        agent_id = self._agent_at.get(ev.device)
        c = self.centre.router.contact(call.call_id)
        if agent_id is None or c is None or c.agent_id != agent_id or not c.handling:
            return
        to = ev.to_device  # type: ignore[attr-defined]
        target: dict[str, str] = {}
        kind = self._kind(to)
        if kind == QUEUE and to in self._queue_at:
            target["to_queue"] = self._queue_at[to]
        elif kind == EXTENSION and to in self._agent_at:
            colleague = self._agent_at[to]
            consultative = bool(ev.secondary_call_id)  # type: ignore[attr-defined]
            if consultative and not self._may_take(colleague, c.id):
                # The colleague (away, busy) is talking to the caller already, and the router would keep the
                # contact queued and offer it to someone else: recorded as leaving routing for that extension.
                log.warning("voice: %s handed to %s, who may not take it now: it leaves routing", c.id, to)
                target["to_external"] = to
            else:
                target["to_agent_id"] = colleague
        elif kind == TRUNK:
            # The far end's number is on the event that put the trunk in the call (same batch), else on
            # the switch's connection.
            number = next((e.number for e in rest if e.device == to and e.call_id == ev.call_id), "")
            if not number:
                sw = self.switch.calls.get(ev.call_id)
                conn = sw.connections.get(to) if sw is not None else None
                number = conn.number if conn is not None else to
            target["to_external"] = number
        else:  # an extension nobody is known at, a queue DN without a voice queue: the call has left
            target["to_external"] = to
        self._submit(TransferRequested(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=agent_id, **target))

    def _conferenced(self, call: _Call, ev: SwitchEvent) -> None:
        """The handling agent is talking again (its hold ends) and the consulted party is on the call."""
        agent_id = self._agent_at.get(ev.device)
        c = self.centre.router.contact(call.call_id)
        if agent_id is None or c is None or c.agent_id != agent_id or not c.handling:
            return
        now = self.centre.now_ms()
        if c.state == "held":
            self._submit(ContactRetrieved(at_ms=now, contact_id=c.id, agent_id=agent_id))
        to = ev.to_device  # type: ignore[attr-defined]
        party = self._agent_at.get(to)
        if party is None:
            sw = self.switch.calls.get(call.call_id)
            conn = sw.connections.get(to) if sw is not None else None
            party = f"tel:{conn.number if conn is not None and conn.number else to}"
        self.centre.publish([ContactConferenced(at_ms=now, contact_id=c.id, agent_id=agent_id, parties=[party])])

    def _forget(self, call: _Call) -> None:
        """The call is over on the switch. While its look-up runs it stays: the arrival is still to come."""
        if call.arrived:
            self.calls.pop(call.call_id, None)

    # ----------------------------------------------------------------------------------- router → switch

    def _on_centre(self, events: list[Event]) -> None:
        touched: dict[str, None] = {}  # in order of first mention
        for ev in events:
            cid = getattr(ev, "contact_id", None)
            if cid is None or cid not in self.calls:
                continue
            touched[cid] = None
            try:
                if isinstance(ev, ContactOverflowed) and ev.left:
                    log.info("voice: %s overflowed out of the centre (%s)", cid, ", ".join(ev.actions))
                    self._try(lambda now, cid=cid: self.switch.clear_call(cid, now))
                elif isinstance(ev, ContactFailed):
                    log.info("voice: %s failed (%s)", cid, ev.reason)
                    self._try(lambda now, cid=cid: self.switch.clear_call(cid, now))
                elif isinstance(ev, ContactTransferred):
                    self._carry_out_transfer(ev)
            except Exception:
                log.exception("voice: carrying out %s for %s failed", type(ev).__name__, cid)
        for cid in touched:
            try:
                self._reconcile(cid)
            except Exception:
                log.exception("voice: reconciling %s failed", cid)

    def _carry_out_transfer(self, ev: ContactTransferred) -> None:
        """A transfer the router decided on that the switch has not done yet (asked for through the router,
        not from the phone): the agent's phone hands the call on."""
        ext = self.extension(ev.agent_id)
        call = self.switch.calls.get(ev.contact_id)
        if call is None or ext not in call.connections:
            return  # done on the switch already (the phone transferred), or the call is gone
        if ev.to_external is not None:
            to = ev.to_external
        elif ev.to_agent_id is not None:
            # Through the queue: the router's offer to the named agent (or its fallback) rings the phone.
            to = self.queue_number(ev.queue)
        else:
            to = self.queue_number(ev.to_queue or ev.queue)
        self._try(lambda now: self.switch.transfer(ev.contact_id, ext, to, now))

    def _where(self, call: Call) -> tuple[str, str] | None:
        """Where the contact's side of the call is: (state, device) of its queue DN or an extension."""
        best: tuple[str, str] | None = None
        for conn in call.connections.values():
            if conn.kind == QUEUE:
                return conn.state, conn.device
            if conn.kind == EXTENSION and (best is None or conn.state == ALERTING):
                best = (conn.state, conn.device)
        return best

    def _reconcile(self, cid: str) -> None:
        """Move the call to where the router wants it: ringing at the offered agent, or back in a queue."""
        call = self.switch.calls.get(cid)
        c = self.centre.router.contact(cid)
        if call is None or c is None or c.channel != CHANNEL:  # a call turned callback is not moved again
            return
        where = self._where(call)
        if where is None:
            return
        state, device = where
        if c.state == "offered" and c.offer is not None:
            offer = c.offer
            target = self.extension(offer.agent_id)
            if device == target:
                if state in ("connected", "held"):  # already talking (a consultative transfer): take it
                    self._submit(
                        OfferAccepted(
                            at_ms=self.centre.now_ms(), offer_id=offer.id, contact_id=cid, agent_id=offer.agent_id
                        )
                    )
                return
            if state not in ("queued", ALERTING):
                return
            try:
                self.driver.run(lambda now: self.switch.deflect(cid, device, target, now))
            except SwitchError as exc:
                # The phone cannot ring (busy on a call the router does not know, unknown extension): say
                # so at once rather than let the offer time out, and keep the call waiting at its queue.
                log.warning("voice: cannot ring %s for %s: %s", target, cid, exc)
                if state == ALERTING:
                    self._try(lambda now: self.switch.deflect(cid, device, self.queue_number(c.queue), now))
                self._submit(
                    OfferRejected(
                        at_ms=self.centre.now_ms(),
                        offer_id=offer.id,
                        contact_id=cid,
                        agent_id=offer.agent_id,
                        reason=f"phone_{exc.code}",
                    )
                )
        elif c.state == "queued" and state == ALERTING:
            back = self.queue_number(c.queue)
            self._try(lambda now: self.switch.deflect(cid, device, back, now))

    def _try(self, op: Callable[[int], list[SwitchEvent]]) -> list[SwitchEvent]:
        """A switch operation from a subscriber: a refusal is logged, never raised."""
        try:
            return self.driver.run(op)
        except SwitchError as exc:
            log.warning("voice: the switch refused an operation: %s (%s)", exc.message, exc.code)
            return []
