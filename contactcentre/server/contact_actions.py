"""What an agent does to a contact it has: answer, hold, retrieve, transfer, consult, complete a transfer,
conference, hang up, request a callback. One set of checks behind the agent protocol (``edge/agents/gateway.py``) and
the REST API (``edge/web/api.py``), so that both refuse the same things with the same codes.

Every action is checked against the router's state first (``Router.check`` runs the router's own rules
without applying anything): an action on the phone reaches the router only through the switch's events, so
whoever asked must be told why before the phone is operated. A voice contact carried by a switch is
operated on the phone (``centre.channels["voice"]``): the switch's events then reach the router through the
voice bridge, as if the agent had pressed the phone's own buttons. Consultation and conference exist only on the phone.

Codes (``ActionError.code``) and the HTTP status the API answers with:

=====================  ====  ==========================================================================
``bad_field``          400   a missing, malformed or contradictory parameter
``not_your_contact``   403   the agent is not handling (or, to answer, not offered) the contact
``not_found``          404   no such contact in the centre now (finished, or never there)
``stale_offer``        409   the offer is no longer open (expired, withdrawn, answered)
``refused``            409   the router's rules refuse it now (with its reason)
``not_voice``          409   consultation and conference are for calls on the switch
``channel_error``      409   the channel refused (``reason``: the switch's or channel's own code)
``channel_unavailable`` 409  no adapter here carries that channel (callback)
``unavailable``        503   the server is shutting down
=====================  ====  ==========================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contactcentre.events import (
    ContactEnded,
    ContactHeld,
    ContactRetrieved,
    Event,
    OfferAccepted,
    TransferRequested,
)
from contactcentre.store.contacts import contact_address

if TYPE_CHECKING:
    from contactcentre.acd import AgentView, ContactView, OfferView
    from contactcentre.server.centre import Centre

STATUS = {
    "bad_field": 400,
    "not_your_contact": 403,
    "not_found": 404,
    "stale_offer": 409,
    "refused": 409,
    "not_voice": 409,
    "channel_error": 409,
    "channel_unavailable": 409,
    "unavailable": 503,
}


PHONE_CHANNELS = frozenset({"voice", "callback"})  # channels whose adapter operates the agent's phone
CALLBACK_ADDRESS_CHANNELS = frozenset({"voice", "callback", "outbound"})  # the contact's address is a number


class ActionError(Exception):
    """An action not carried out; ``reason`` is the channel's own code for a ``channel_error``."""

    def __init__(self, code: str, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.reason = reason

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 409)


def channel_error(exc: Exception) -> ActionError:
    """A channel adapter's failure, with the adapter's own code (``not_in_call``, ``busy`` …) as the reason."""
    reason = getattr(exc, "code", None)
    return ActionError("channel_error", str(exc) or type(exc).__name__, reason if isinstance(reason, str) else None)


class ContactActions:
    """The actions, for one centre. ``agent_id`` is who acts: the agent itself, or the agent a supervisor acts
    for (``acting_agent``)."""

    def __init__(self, centre: Centre) -> None:
        self.centre = centre

    # ------------------------------------------------------------------------------------------ lookups

    def contact(self, contact_id: str) -> ContactView:
        c = self.centre.router.contact(contact_id)
        if c is None:
            raise ActionError("not_found", f"no contact {contact_id!r} in the centre now")
        return c

    def acting_agent(self, c: ContactView) -> str:
        """Who a supervisor acts for: the agent handling the contact, else the one it is offered to."""
        if c.agent_id is not None:
            return c.agent_id
        if c.offer is not None:
            return c.offer.agent_id
        raise ActionError("refused", f"contact {c.id!r} is {c.state}: no agent has it")

    def own(self, contact_id: str, agent_id: str) -> tuple[ContactView, AgentView]:
        """The contact, if this agent is handling it (connected, held or wrapping up)."""
        c = self.contact(contact_id)
        a = self.centre.router.agent(agent_id)
        if a is None or c.id not in a.work:
            raise ActionError("not_your_contact", f"agent {agent_id!r} is not handling contact {contact_id!r}")
        return c, a

    def open_offer(self, contact_id: str, agent_id: str, offer_id: str | None = None) -> OfferView:
        """The agent's open offer of the contact (``offer_id``: that one exactly)."""
        self.centre.driver.catch_up()  # an offer past its deadline is not open, whether or not its timer ran
        c = self.contact(contact_id)
        a = self.centre.router.agent(agent_id)
        offers = a.offers if a is not None else ()
        o = next((o for o in offers if o.contact_id == c.id and (offer_id is None or o.id == offer_id)), None)
        if o is None:
            if offer_id is not None:
                raise ActionError("stale_offer", f"offer {offer_id!r} is not open (expired, withdrawn or answered)")
            if a is not None and c.id in a.work:
                raise ActionError("refused", f"contact {c.id!r} is {c.state} with you already")
            raise ActionError("stale_offer", f"no offer of {c.id!r} to {agent_id!r} is open (expired or withdrawn)")
        return o

    def phone(self, channel: str) -> Any:
        """The voice (or callback) channel when a switch carries calls: then the phone is the truth
        (answering, holding and hanging up operate the switch, whose events reach the router), not the
        console."""
        adapter = self.centre.channels.get(channel) if channel in PHONE_CHANNELS else None
        return adapter if adapter is not None and hasattr(adapter, "answer") else None

    # ------------------------------------------------------------------------------------------ actions

    async def answer(self, contact_id: str, agent_id: str, offer_id: str | None = None) -> dict[str, Any]:
        o = self.open_offer(contact_id, agent_id, offer_id)
        cid = o.contact_id
        phone = self.phone(self.contact(cid).channel)
        if phone is not None:
            await self._on_phone("answer", cid, agent_id, phone)  # the phone goes off-hook: that accepts the offer
        else:
            self._submit(OfferAccepted(at_ms=self.centre.now_ms(), offer_id=o.id, contact_id=cid, agent_id=agent_id))
        return {"offer_id": o.id, "contact_id": cid}

    async def hold(self, contact_id: str, agent_id: str) -> dict[str, Any]:
        return await self._handling_step(contact_id, agent_id, "hold", "hold", ContactHeld)

    async def retrieve(self, contact_id: str, agent_id: str) -> dict[str, Any]:
        return await self._handling_step(contact_id, agent_id, "retrieve", "retrieve", ContactRetrieved)

    async def hang_up(self, contact_id: str, agent_id: str) -> dict[str, Any]:
        """End handling (wrap-up follows); on the phone, hang up."""
        return await self._handling_step(contact_id, agent_id, "end", "hang_up", ContactEnded)

    async def _handling_step(
        self, contact_id: str, agent_id: str, action: str, phone_action: str, event: type[Event]
    ) -> dict[str, Any]:
        """One step of the agent's own contact, checked against both transition tables first: on the phone
        (whose events reach the router) when a switch carries the contact, else straight to the router."""
        c, a = self.own(contact_id, agent_id)
        self._check(event(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=a.id))  # type: ignore[call-arg]
        phone = self.phone(c.channel)
        if phone is not None:
            await self._on_phone(phone_action, c.id, a.id, phone)
        else:
            self._submit(event(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=a.id))  # type: ignore[call-arg]
        return {"contact_id": c.id}

    async def transfer(
        self,
        contact_id: str,
        agent_id: str,
        *,
        to_queue: str | None = None,
        to_agent: str | None = None,
        to_external: str | None = None,
    ) -> dict[str, Any]:
        """Blind transfer: to a queue, to a named agent (who gets it first, then its queue), out of the centre."""
        c, a = self.own(contact_id, agent_id)
        self._check_target(c, a, to_queue, to_agent, to_external, "a transfer")
        request = TransferRequested(
            at_ms=self.centre.now_ms(),
            contact_id=c.id,
            agent_id=a.id,
            to_queue=to_queue,
            to_agent_id=to_agent,
            to_external=to_external,
        )
        self._check(request)
        phone = self.phone(c.channel)
        if phone is not None:  # the switch moves the call first; its Transferred event reaches the router
            try:
                await phone.transfer(c.id, a.id, to_queue=to_queue, to_agent=to_agent, to_external=to_external)
            except Exception as exc:
                raise channel_error(exc) from None
            return {"contact_id": c.id}
        self._submit(request)
        return {"contact_id": c.id}

    async def consult(
        self,
        contact_id: str,
        agent_id: str,
        *,
        to_queue: str | None = None,
        to_agent: str | None = None,
        to_external: str | None = None,
    ) -> dict[str, Any]:
        """A consultation call (the customer is held meanwhile); returns its call id."""
        c, a = self.own(contact_id, agent_id)
        phone = self._voice(c)
        self._check_target(c, a, to_queue, to_agent, to_external, "a consultation")
        if c.state != "held":
            self._check(ContactHeld(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=a.id))
        try:
            call_id = await phone.consult(c.id, a.id, to_queue=to_queue, to_agent=to_agent, to_external=to_external)
        except Exception as exc:
            raise channel_error(exc) from None
        return {"contact_id": c.id, "consultation_id": call_id}

    async def complete_transfer(self, contact_id: str, agent_id: str) -> dict[str, Any]:
        """The consulted party takes the agent's place: a consultative transfer."""
        c, a = self.own(contact_id, agent_id)
        phone = self._voice(c)
        # Checked as a transfer back to its own queue: the consulted party's side is the switch's.
        self._check(TransferRequested(at_ms=self.centre.now_ms(), contact_id=c.id, agent_id=a.id, to_queue=c.queue))
        await self._on_phone("complete_transfer", c.id, a.id, phone)
        return {"contact_id": c.id}

    async def conference(self, contact_id: str, agent_id: str) -> dict[str, Any]:
        """The consulted party joins the customer's call; the agent keeps the contact."""
        c, a = self.own(contact_id, agent_id)
        phone = self._voice(c)
        if c.state != "held":  # a consultation holds the customer: not held means none is open
            raise ActionError("refused", f"contact {c.id!r} is {c.state}: consult first")
        await self._on_phone("conference", c.id, a.id, phone)
        return {"contact_id": c.id}

    async def callback(
        self,
        contact_id: str,
        agent_id: str,
        *,
        at_ms: int | None = None,
        number: str | None = None,
        queue: str | None = None,
        customer_asked: bool = False,
    ) -> dict[str, Any]:
        """A callback for the customer of a contact the agent has: to ``number`` (default: the number the
        contact came from), through ``queue`` (default: the contact's), at ``at_ms`` (default now; the
        callback channel moves it into the calling window). ``customer_asked``: the customer asked for it on
        this contact, which stands for their consent to the call."""
        c, _ = self.own(contact_id, agent_id)
        channel = self.centre.channels.get("callback")
        if channel is None or not hasattr(channel, "request"):
            raise ActionError("channel_unavailable", "callbacks are not served here (no callback channel)")
        if number is None:
            if c.channel in CALLBACK_ADDRESS_CHANNELS:
                await self.centre.commit()  # the arrival's row is written before it is read
                number = await self.centre.read(contact_address, c.id)
            if not number:
                raise ActionError("bad_field", f"number: contact {c.id!r} came from no phone number; give one")
        try:
            got = await channel.request(
                number=number,
                queue=queue or c.queue,
                customer_id=c.customer_id,
                at_ms=at_ms,
                by_customer=customer_asked,
                attributes={"requested_on": c.id, "requested_by": agent_id},
            )
        except Exception as exc:
            raise channel_error(exc) from None
        return {"contact_id": c.id, "callback_id": got.contact_id, "due_ms": got.due_ms}

    # ---------------------------------------------------------------------------------------- internals

    def _voice(self, c: ContactView) -> Any:
        phone = self.phone(c.channel)
        if phone is None:
            raise ActionError("not_voice", f"contact {c.id!r} is not a call on the switch ({c.channel})")
        return phone

    def _check_target(
        self,
        c: ContactView,
        a: AgentView,
        to_queue: str | None,
        to_agent: str | None,
        to_external: str | None,
        what: str,
    ) -> None:
        router = self.centre.router
        if sum(t is not None for t in (to_queue, to_agent, to_external)) != 1:
            raise ActionError("bad_field", f"{what} needs exactly one of to_queue, to_agent, to_external")
        if to_queue is not None:
            if router.queue(to_queue) is None:
                raise ActionError("refused", f"no queue {to_queue!r}")
            if not router.serves(to_queue, c.channel):
                raise ActionError("refused", f"queue {to_queue!r} does not take {c.channel}")
        if to_agent is not None:
            target = router.agent(to_agent)
            if target is None:
                raise ActionError("refused", f"no agent {to_agent!r}")
            if target.id == a.id:
                raise ActionError("refused", f"you cannot be the target of your own {what.split()[-1]}")
            if not target.logged_in:
                raise ActionError("refused", f"agent {to_agent!r} is not logged in")
        if to_external is not None and not to_external.strip():
            raise ActionError("bad_field", "to_external: empty")

    def _check(self, event: Event) -> None:
        """Would the router take ``event`` now? Asked before acting on the phone, whose events reach the
        router only later (and cannot be refused by then)."""
        refusal = self.centre.router.check(event)
        if refusal is not None:
            raise ActionError("refused", str(refusal))

    def _submit(self, event: Event) -> None:
        """Hand one input to the router; a refusal the checks before missed is still reported."""
        if self.centre.driver.closed:
            raise ActionError("unavailable", "the server is shutting down")
        refusal = self.centre.submit(event)
        if refusal is not None:
            raise ActionError("refused", f"the router refused {type(event).__name__}: {refusal}")

    async def _on_phone(self, action: str, contact_id: str, agent_id: str, phone: Any) -> None:
        """The agent's phone does it; the switch's events reach the router, and the phone channel refuses the
        operation (``refused``) if the router refused what they led to."""
        if self.centre.driver.closed:
            raise ActionError("unavailable", "the server is shutting down")
        try:
            await getattr(phone, action)(contact_id, agent_id)
        except Exception as exc:
            if getattr(exc, "code", None) == "refused":
                raise ActionError("refused", f"the router refused the {action}: {exc}") from None
            raise channel_error(exc) from None
