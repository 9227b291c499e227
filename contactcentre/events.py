"""The event vocabulary: every fact the engine consumes or produces, as one tagged union.

The same classes are what the router takes and returns, what the store logs, what the bus ships, what the
dashboard receives and what replay re-reads. Times are integer milliseconds since the Unix epoch (``at_ms``).

Two kinds of event live here:

* **inputs** (``INPUT = True``) are reports from the edge: a contact arrived, an agent accepted an offer, a
  customer hung up. The router checks them, and if it accepts one it echoes it into its output, so the log
  holds every input in the order it took effect.
* **derived** events are what the router concluded: queued, offered, connected, SLA breached, agent state.

Replaying the inputs of a log into a fresh router built from the same configuration reproduces the log byte
for byte; that is how routing decisions are audited and how policies are compared.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import msgspec

Channel = Literal["voice", "chat", "email", "callback", "outbound"]
CHANNELS: tuple[str, ...] = ("voice", "chat", "email", "callback", "outbound")

AgentState = Literal["logged_out", "available", "reserved", "busy", "wrap_up", "away"]
AGENT_STATES: tuple[str, ...] = ("logged_out", "available", "reserved", "busy", "wrap_up", "away")


class Event(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True, gc=False):
    """Base of all events. ``at_ms`` is when the fact took effect, in epoch milliseconds."""

    at_ms: int
    INPUT: ClassVar[bool] = False
    # A fact an adapter publishes (``centre.publish``): neither a router input nor what the router says. Only
    # these may come from an edge node as published facts (server/router_node.py refuses others).
    FACT: ClassVar[bool] = False
    # Every field of every event is classified, so that erasure cannot miss one (``classification_errors``
    # and its test): PERSONAL fields can hold a customer's personal data (an address, a number, free text)
    # and erasure blanks them in the logged payloads; NOT_PERSONAL fields, and the COMMON_FIELDS every event
    # shares, cannot, and erasure keeps them for the statistics.
    PERSONAL: ClassVar[tuple[str, ...]] = ()
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ()
    # Optional PERSONAL fields whose being set is itself a fact others read (a transfer to an outside number
    # ended the contact): erasure empties a set one to "" rather than removing it.
    PRESENCE_KEPT: ClassVar[tuple[str, ...]] = ()


# Fields that mean the same in every event and hold no personal data: ids the centre mints or configures,
# times, durations and routing vocabulary. ``customer_id`` and ``case_id`` are pseudonyms that erasure keeps
# on purpose (the anonymised customer row keeps its id, and statistics per tier and case need them).
COMMON_FIELDS: frozenset[str] = frozenset(
    {
        "at_ms",
        "contact_id",
        "agent_id",
        "offer_id",
        "customer_id",
        "case_id",
        "queue",
        "channel",
        "tier",
        "priority",
        "wait_ms",
        "talk_ms",
        "attempt",
    }
)


# --------------------------------------------------------------------------------------------- explanations


class Candidate(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One agent (or, when an agent pulled work, one contact) that the router weighed.

    ``score`` is the strategy's sort key, smaller is better; ``note`` says in words what the key is made of.
    """

    id: str
    score: list[int]
    note: str = ""


class Explanation(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Why an offer went where it went.

    ``trigger`` is ``contact`` when a contact looked for an agent (arrival, requeue, overflow widening) and
    ``agent`` when an agent with free capacity pulled the best waiting contact. ``filters`` counts what was
    looked at and excluded, by reason. ``candidates`` lists the best few, winner first.
    """

    trigger: Literal["contact", "agent"]
    strategy: str
    requirement: str
    step: int = 0
    considered: int = 0
    filters: dict[str, int] = {}
    candidates: list[Candidate] = []
    tie_break: str = ""


# ------------------------------------------------------------------------------------------------- inputs


class ContactArrived(Event, tag="contact.arrived"):
    """A customer request reached a queue. Customer data (tier, account manager) is resolved by the edge,
    so that the fact in the log is complete and replay needs no lookups."""

    contact_id: str
    queue: str
    channel: Channel = "voice"
    customer_id: str | None = None
    tier: str | None = None
    priority: int = 0
    preferred_agent_id: str | None = None
    skills: dict[str, int] = {}
    attributes: dict[str, str] = {}
    case_id: str | None = None
    address: str | None = None  # the identity the customer used: ANI (E.164), e-mail address, chat token
    subject: str | None = None
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("attributes", "address", "subject")
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("preferred_agent_id", "skills")


class CustomerLeft(Event, tag="contact.customer_left"):
    """The customer hung up, closed the chat or withdrew. Waiting ⇒ abandoned; talking ⇒ handling ends."""

    contact_id: str
    # Set when the customer did not leave of their own accord: "edge_lost" (the edge node that held their call
    # died, and the call with it: docs/scaling.md).
    reason: str | None = None
    INPUT: ClassVar[bool] = True
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)


class AgentLoggedIn(Event, tag="agent.logged_in"):
    """An agent logged in. Skills and capacity come from configuration unless given here."""

    agent_id: str
    away_reason: str | None = None
    skills: dict[str, int] | None = None
    capacity: dict[str, int] | None = None
    INPUT: ClassVar[bool] = True
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("away_reason", "skills", "capacity")


class AgentLoggedOut(Event, tag="agent.logged_out"):
    agent_id: str
    INPUT: ClassVar[bool] = True


class AgentReady(Event, tag="agent.ready"):
    agent_id: str
    INPUT: ClassVar[bool] = True


class AgentAway(Event, tag="agent.away"):
    agent_id: str
    reason: str = "break"
    INPUT: ClassVar[bool] = True
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)


class AgentSkillsChanged(Event, tag="agent.skills_changed"):
    """A supervisor changed an agent's skills (levels 1-10) and/or channel capacity."""

    agent_id: str
    skills: dict[str, int] | None = None
    capacity: dict[str, int] | None = None
    INPUT: ClassVar[bool] = True
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("skills", "capacity")


class OfferAccepted(Event, tag="offer.accepted"):
    offer_id: str
    contact_id: str
    agent_id: str
    INPUT: ClassVar[bool] = True


class OfferRejected(Event, tag="offer.rejected"):
    offer_id: str
    contact_id: str
    agent_id: str
    reason: str = ""
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)  # free text the agent typed about the contact


class ContactHeld(Event, tag="contact.held"):
    contact_id: str
    agent_id: str
    INPUT: ClassVar[bool] = True


class ContactRetrieved(Event, tag="contact.retrieved"):
    contact_id: str
    agent_id: str
    INPUT: ClassVar[bool] = True


class ContactEnded(Event, tag="contact.ended"):
    """The agent finished handling (hung up, closed the chat, sent the reply); wrap-up follows."""

    contact_id: str
    agent_id: str
    INPUT: ClassVar[bool] = True


class TransferRequested(Event, tag="contact.transfer_requested"):
    """Exactly one target: another queue, a named agent (who gets it first, then its queue), or an
    external number (the contact leaves the centre)."""

    contact_id: str
    agent_id: str
    to_queue: str | None = None
    to_agent_id: str | None = None
    to_external: str | None = None
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("to_external",)  # an outside number: a person's phone
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("to_queue", "to_agent_id")
    PRESENCE_KEPT: ClassVar[tuple[str, ...]] = ("to_external",)


class WrapUpEnded(Event, tag="wrap_up.ended"):
    """The agent ended after-contact work (manually, before or without the wrap-up timer)."""

    contact_id: str
    agent_id: str
    INPUT: ClassVar[bool] = True


class DispositionSet(Event, tag="disposition.set"):
    contact_id: str
    agent_id: str
    code: str
    INPUT: ClassVar[bool] = True
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("code",)


class CallbackRequested(Event, tag="callback.requested"):
    """Virtual hold: a caller waiting in a queue asked to be called back on ``number``. The contact becomes a
    ``callback`` contact that keeps its place, its wait clock and its SLA clock; the caller may hang up."""

    contact_id: str
    number: str
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("number",)


class CallbackScheduled(Event, tag="callback.scheduled"):
    """A callback to make at ``due_ms``: the router holds it and then queues it as a ``callback`` contact.
    ``attempt`` counts dialling attempts (a retry after no answer is a new scheduled callback)."""

    contact_id: str
    queue: str
    due_ms: int
    number: str
    customer_id: str | None = None
    tier: str | None = None
    priority: int = 0
    attempt: int = 1
    attributes: dict[str, str] = {}
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("number", "attributes")
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("due_ms",)


class CallbackCancelled(Event, tag="callback.cancelled"):
    """Withdraw a callback not yet with an agent (scheduled, or waiting in its queue)."""

    contact_id: str
    reason: str = ""
    INPUT: ClassVar[bool] = True
    PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)  # free text from whoever cancelled


# ---------------------------------------------------------------------------------------- derived (router)


class ContactQueued(Event, tag="contact.queued"):
    """The contact entered a queue. ``position`` is 1-based among contacts competing for the same agents;
    ``ewt_ms`` is the estimated wait (absent when no agent is staffed to serve it). ``via`` says why it is in
    this queue when not by plain arrival (``transfer``, ``overflow:Q``, ``closed:Q``, ``full:Q``);
    ``waiting_since_ms`` is set when it has been waiting since before ``at_ms`` (an overflow move)."""

    contact_id: str
    queue: str
    channel: Channel
    priority: int
    tier: str | None = None
    position: int = 1
    ewt_ms: int | None = None
    sla_deadline_ms: int | None = None
    via: str | None = None
    waiting_since_ms: int | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("position", "ewt_ms", "sla_deadline_ms", "via", "waiting_since_ms")


class ContactFailed(Event, tag="contact.failed"):
    """The contact could not be queued (queue full, queue closed); it is finished."""

    contact_id: str
    queue: str
    channel: Channel
    reason: str
    tier: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)


class OfferMade(Event, tag="offer.made"):
    offer_id: str
    contact_id: str
    agent_id: str
    queue: str
    channel: Channel
    expires_ms: int
    why: Explanation
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("expires_ms", "why")


class OfferExpired(Event, tag="offer.expired"):
    """Nobody answered the offer in time (ring-no-answer); the contact keeps its place."""

    offer_id: str
    contact_id: str
    agent_id: str


class OfferCancelled(Event, tag="offer.cancelled"):
    """The router withdrew an offer: the customer left, or the agent went away or logged out."""

    offer_id: str
    contact_id: str
    agent_id: str
    reason: str
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)


class ContactConnected(Event, tag="contact.connected"):
    contact_id: str
    agent_id: str
    queue: str
    channel: Channel
    wait_ms: int
    tier: str | None = None


class ContactAbandoned(Event, tag="contact.abandoned"):
    contact_id: str
    queue: str
    channel: Channel
    wait_ms: int
    tier: str | None = None


class ContactOverflowed(Event, tag="contact.overflowed"):
    """An overflow step fired. ``step`` is the number of the queue's overflow steps in force; ``actions`` say
    what changed; ``to_queue`` is set when the contact moved; ``left`` is true when it left the centre (state
    overflowed, e.g. to voicemail or another site)."""

    contact_id: str
    queue: str
    step: int
    actions: list[str]
    to_queue: str | None = None
    left: bool = False
    wait_ms: int = 0
    channel: Channel = "voice"
    tier: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("step", "actions", "to_queue", "left")


class ContactTransferred(Event, tag="contact.transferred"):
    """The agent (``agent_id``) passed the contact on: to a queue, to a named agent, or out of the centre."""

    contact_id: str
    agent_id: str
    queue: str
    to_queue: str | None = None
    to_agent_id: str | None = None
    to_external: str | None = None
    channel: Channel = "voice"
    tier: str | None = None
    talk_ms: int = 0
    PERSONAL: ClassVar[tuple[str, ...]] = ("to_external",)  # an outside number: a person's phone
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("to_queue", "to_agent_id")
    PRESENCE_KEPT: ClassVar[tuple[str, ...]] = ("to_external",)


class ContactConferenced(Event, tag="contact.conferenced"):
    """The handling agent (``agent_id``) brought ``parties`` (agent ids; an outside number is ``tel:`` and the
    number) into the customer's call: a three-way conference. The agent keeps the contact; nothing changes for
    the router, which is why this is published rather than submitted."""

    FACT: ClassVar[bool] = True

    contact_id: str
    agent_id: str
    parties: list[str] = []
    PERSONAL: ClassVar[tuple[str, ...]] = ("parties",)  # an outside party's number


class WrapUpStarted(Event, tag="wrap_up.started"):
    """Handling ended; after-contact work began. ``ends_ms`` is absent for manual wrap-up."""

    contact_id: str
    agent_id: str
    by: Literal["agent", "customer"]
    ends_ms: int | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("by", "ends_ms")


class WrapUpExpired(Event, tag="wrap_up.expired"):
    contact_id: str
    agent_id: str


class ContactClosed(Event, tag="contact.closed"):
    """The contact is finished. Durations are for the last agent who handled it."""

    contact_id: str
    agent_id: str
    queue: str
    channel: Channel
    wait_ms: int
    talk_ms: int
    hold_ms: int
    wrap_ms: int
    tier: str | None = None
    disposition: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("hold_ms", "wrap_ms", "disposition")


class SlaWarned(Event, tag="sla.warned"):
    contact_id: str
    queue: str
    channel: Channel
    deadline_ms: int
    tier: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("deadline_ms",)


class SlaBreached(Event, tag="sla.breached"):
    contact_id: str
    queue: str
    channel: Channel
    deadline_ms: int
    tier: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("deadline_ms",)


class ContactCallbackQueued(Event, tag="contact.callback_queued"):
    """A callback contact is in its queue: a caller's virtual hold (``via`` ``virtual_hold``: same place, same
    wait and SLA clocks) or a scheduled callback that fell due (``scheduled``). A ``contact.queued`` on the
    ``callback`` channel follows."""

    contact_id: str
    queue: str
    via: Literal["virtual_hold", "scheduled"]
    waiting_since_ms: int
    attempt: int = 1
    customer_id: str | None = None
    tier: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("via", "waiting_since_ms")


class ContactWithdrawn(Event, tag="contact.withdrawn"):
    """A waiting callback was cancelled before an agent took it; it is finished (not an abandon)."""

    contact_id: str
    queue: str
    channel: Channel
    wait_ms: int
    reason: str = ""
    tier: str | None = None
    PERSONAL: ClassVar[tuple[str, ...]] = ("reason",)  # the cancelling callback's free text, copied


class CallbackAttemptEnded(Event, tag="callback.attempt_ended"):
    """One dialling attempt of a callback is over (published by the callback channel, not the router).
    ``outcome``: ``answered``, ``no_answer``, ``busy``, ``failed`` (the switch refused the call). A retry is
    ``retry_contact_id`` at ``retry_ms``; neither set and not answered means the callback has failed."""

    FACT: ClassVar[bool] = True

    contact_id: str
    agent_id: str
    attempt: int
    outcome: str
    retry_contact_id: str | None = None
    retry_ms: int | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("outcome", "retry_contact_id", "retry_ms")


class AgentStateChanged(Event, tag="agent.state_changed"):
    agent_id: str
    state: AgentState
    previous: AgentState
    reason: str | None = None
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("state", "previous", "reason")


# ------------------------------------------------------------------------------------ derived (channels)


class MessageReceived(Event, tag="message.received"):
    """A customer message on a contact (chat line, email). Logged by channel adapters, not the router.

    ``message_id`` is the channel's id for the message (an e-mail's Message-ID without angle brackets);
    ``in_reply_to`` and ``references`` thread e-mail into cases; ``address`` is the sender."""

    FACT: ClassVar[bool] = True

    contact_id: str
    message_id: str
    channel: Channel
    body: str = ""
    author: str = "customer"
    case_id: str | None = None
    address: str | None = None
    subject: str | None = None
    in_reply_to: str | None = None
    references: list[str] = []
    PERSONAL: ClassVar[tuple[str, ...]] = (
        "body",
        "author",
        "address",
        "subject",
        "message_id",
        "in_reply_to",
        "references",
    )


class MessageSent(Event, tag="message.sent"):
    """An agent's message to the customer; ``address`` is the recipient."""

    FACT: ClassVar[bool] = True

    contact_id: str
    message_id: str
    channel: Channel
    agent_id: str
    body: str = ""
    case_id: str | None = None
    address: str | None = None
    subject: str | None = None
    in_reply_to: str | None = None
    references: list[str] = []
    PERSONAL: ClassVar[tuple[str, ...]] = ("body", "address", "subject", "message_id", "in_reply_to", "references")


class CaseNoteAdded(Event, tag="case.note_added"):
    """An agent's note about a contact, for colleagues: never sent to the customer. Stored as a message of
    channel ``note`` on the contact's case (``case_id``, when it has one) and interaction."""

    FACT: ClassVar[bool] = True

    contact_id: str
    agent_id: str
    text: str
    case_id: str | None = None
    PERSONAL: ClassVar[tuple[str, ...]] = ("text",)


# ------------------------------------------------------------------------------- derived (the voice IVR)
# Published by the IVR runner (contactcentre/edge/voice/ivr.py), one per session fact, so that containment
# statistics per node can be rebuilt from the log alone (contactcentre.reporting.ivr_stats.stats_from_events). A call in
# the IVR is not a contact yet; ``contact_id`` is its call id, which becomes the contact id if the IVR queues
# it (so the contact's journey and its erasure include its IVR steps). No caller number is logged here.


class IvrStarted(Event, tag="ivr.started"):
    """A call reached an IVR number (``number``) and its menu started."""

    FACT: ClassVar[bool] = True

    contact_id: str
    menu: str
    number: str = ""
    # number: the centre's own IVR number, not the caller's
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("menu", "number")


class IvrNodeEntered(Event, tag="ivr.node_entered"):
    FACT: ClassVar[bool] = True
    contact_id: str
    menu: str
    node: str
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("menu", "node")


class IvrInputFailed(Event, tag="ivr.input_failed"):
    """One failed attempt at a question: no key in time (``timeout``) or keys that are no answer (``invalid``)."""

    FACT: ClassVar[bool] = True

    contact_id: str
    menu: str
    node: str
    cause: Literal["timeout", "invalid"]
    attempt: int
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("menu", "node", "cause")


class IvrNodeExited(Event, tag="ivr.node_exited"):
    """How the call left ``node``: ``option:K``, ``digits``, ``next``, a hook's outcome, ``hangup`` (the
    caller), ``queued``, ``callback``… (``contactcentre.telephony.ivr.actions.NodeExited``)."""

    FACT: ClassVar[bool] = True

    contact_id: str
    menu: str
    node: str
    cause: str
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("menu", "node", "cause")


class IvrFinished(Event, tag="ivr.finished"):
    """The call left the IVR. ``outcome``: ``queued`` (to ``queue``), ``self_served``, ``abandoned`` (the caller
    hung up in the IVR: not a queue abandon), ``callback``, ``ivr_hangup`` or ``handed_off``. ``customer_id``:
    who the caller's number belongs to, when the store knew by then."""

    FACT: ClassVar[bool] = True

    contact_id: str
    menu: str
    outcome: str
    node: str = ""
    path: str = ""
    queue: str | None = None
    customer_id: str | None = None
    # path: the menu keys chosen ("node>1"), never digits typed in answer to a question
    NOT_PERSONAL: ClassVar[tuple[str, ...]] = ("menu", "outcome", "node", "path")


# ------------------------------------------------------------------------------------------- clean text

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Text that every database and JSON encoder takes: raw 8-bit bytes (kept by parsers as surrogate
    escapes) re-read as UTF-8, other surrogates replaced, NULs and control characters dropped.

    Adapters pass everything a client typed through this before it goes into an event: one unencodable
    string would fail the store writer's commit, and with it everyone's."""
    if text.isascii() and not _CONTROL.search(text) and "\r" not in text:
        return text
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, msgspec.Struct):
        return scrub(value)
    return value


def scrub(event: Any) -> Any:
    """The event with every string cleaned (``clean_text``): the store writer's last line of defence."""
    fields = {f: getattr(event, f) for f in event.__struct_fields__}
    return msgspec.structs.replace(event, **{f: _scrubbed(v) for f, v in fields.items()})


# ------------------------------------------------------------------------------------------------ codecs


def _all_event_types() -> tuple[type[Event], ...]:
    seen: list[type[Event]] = []
    stack = list(Event.__subclasses__())
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return tuple(seen)


EVENT_TYPES: tuple[type[Event], ...] = _all_event_types()
INPUT_TYPES: tuple[type[Event], ...] = tuple(t for t in EVENT_TYPES if t.INPUT)
EVENT_BY_TAG: dict[str, type[Event]] = {t.__struct_config__.tag: t for t in EVENT_TYPES}  # type: ignore[misc]


def classification_errors(types: Iterable[type[Event]]) -> list[str]:
    """What is wrong with the personal-data classification of ``types``: a field that is neither PERSONAL nor
    NOT_PERSONAL nor one of the COMMON_FIELDS (a new field must be classified before erasure can be trusted),
    one marked both ways, or a name that is no field. Empty when every field is classified once."""
    errors: list[str] = []
    for cls in types:
        fields = set(cls.__struct_fields__)
        personal, kept = set(cls.PERSONAL), set(cls.NOT_PERSONAL) | (COMMON_FIELDS & fields)
        unmarked = sorted(fields - personal - kept)
        errors += [f"{cls.__name__}.{f}: not classified (PERSONAL or NOT_PERSONAL)" for f in unmarked]
        errors += [f"{cls.__name__}.{f}: both PERSONAL and not" for f in sorted(personal & kept)]
        errors += [f"{cls.__name__}.{f}: classified but no field" for f in sorted((personal | kept) - fields)]
    return errors


AnyEvent = functools.reduce(operator.or_, EVENT_TYPES)  # the tagged union, for msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """One event as compact JSON (no trailing newline)."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> Event:
    """One event from JSON; raises ``msgspec.ValidationError`` naming the bad field on malformed input."""
    return _decoder.decode(data)


def encode_lines(events: Iterable[Event]) -> bytes:
    """JSON lines: one event per line, each line ending in a newline."""
    buf = bytearray()
    for ev in events:
        _encoder.encode_into(ev, buf, -1)
        buf += b"\n"
    return bytes(buf)


def decode_lines(data: bytes | str) -> list[Event]:
    """Events from JSON lines; blank lines are skipped. Errors name the 1-based line."""
    if isinstance(data, str):
        data = data.encode()
    out: list[Event] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(_decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise msgspec.DecodeError(f"line {n}: {exc}") from None
    return out


def is_input(event: Event) -> bool:
    return type(event).INPUT
