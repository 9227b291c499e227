"""The agent: presence chosen by the agent, work given by the router, and the state the two make together.

An agent's *presence* is what it chose: logged out, ready, or away with a reason. Its *work* is what it
holds: open offers, connected or held contacts, contacts in wrap-up — up to a capacity per channel. Its
reported *state* follows from both, most urgent first::

    logged_out  if not logged in
    reserved    if an offer is open
    busy        if a contact is connected or on hold
    wrap_up     if a contact is in after-contact work
    away        if it chose to be away
    available   otherwise

``AGENT_TRANSITIONS`` lists, for every state and action, the states the agent may be in afterwards; the first
is the outcome for an agent that holds one contact at a time (a voice agent). The router checks every step
against it, so the table is the specification, not a comment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd.errors import IllegalTransition

if TYPE_CHECKING:
    from contactcentre.acd.contact import Contact
    from contactcentre.acd.offers import Offer

LOGGED_OUT = "logged_out"
AVAILABLE = "available"
RESERVED = "reserved"
BUSY = "busy"
WRAP_UP = "wrap_up"
AWAY = "away"

# Presence values (what the agent chose).
READY = "ready"

STAFFED = frozenset({AVAILABLE, RESERVED, BUSY, WRAP_UP})  # logged in and not away: occupancy's denominator
HANDLING = frozenset({BUSY, WRAP_UP})  # occupancy's numerator (ringing counts as staffed, not handling)

_ANY_AFTER_OFFER = (AVAILABLE, AWAY, BUSY, WRAP_UP, RESERVED)

AGENT_TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (LOGGED_OUT, "login"): (AVAILABLE, AWAY),
    (AVAILABLE, "logout"): (LOGGED_OUT,),
    (AWAY, "logout"): (LOGGED_OUT,),
    (RESERVED, "logout"): (LOGGED_OUT,),  # open offers are withdrawn
    (WRAP_UP, "logout"): (LOGGED_OUT,),  # wrap-ups are closed
    (AVAILABLE, "ready"): (AVAILABLE,),
    (AWAY, "ready"): (AVAILABLE,),
    (RESERVED, "ready"): (RESERVED,),
    (BUSY, "ready"): (BUSY,),
    (WRAP_UP, "ready"): (WRAP_UP,),
    (AVAILABLE, "away"): (AWAY,),
    (AWAY, "away"): (AWAY,),  # a new reason
    (RESERVED, "away"): (AWAY, BUSY, WRAP_UP),  # open offers are withdrawn
    (BUSY, "away"): (BUSY,),  # takes effect when the work is done
    (WRAP_UP, "away"): (WRAP_UP,),
    (AVAILABLE, "offer"): (RESERVED,),
    (RESERVED, "offer"): (RESERVED,),
    (BUSY, "offer"): (RESERVED,),
    (WRAP_UP, "offer"): (RESERVED,),
    (RESERVED, "accept"): (BUSY, RESERVED),
    (RESERVED, "reject"): _ANY_AFTER_OFFER,
    (RESERVED, "expire"): (AWAY, AVAILABLE, BUSY, WRAP_UP, RESERVED),
    (RESERVED, "cancel"): _ANY_AFTER_OFFER,
    (BUSY, "hold"): (BUSY,),
    (RESERVED, "hold"): (RESERVED,),
    (BUSY, "retrieve"): (BUSY,),
    (RESERVED, "retrieve"): (RESERVED,),
    (BUSY, "end"): (WRAP_UP, AVAILABLE, AWAY, BUSY),
    (RESERVED, "end"): (RESERVED,),
    (BUSY, "transfer"): (AVAILABLE, AWAY, BUSY, WRAP_UP),
    (RESERVED, "transfer"): (RESERVED,),
    (WRAP_UP, "wrap_done"): (AVAILABLE, AWAY, WRAP_UP),
    (BUSY, "wrap_done"): (BUSY,),
    (RESERVED, "wrap_done"): (RESERVED,),
    (WRAP_UP, "wrap_expire"): (AVAILABLE, AWAY, WRAP_UP),
    (BUSY, "wrap_expire"): (BUSY,),
    (RESERVED, "wrap_expire"): (RESERVED,),
    **{(s, "skills"): (s,) for s in (LOGGED_OUT, AVAILABLE, RESERVED, BUSY, WRAP_UP, AWAY)},
}
AGENT_ACTIONS = tuple(sorted({a for _, a in AGENT_TRANSITIONS}))


class Agent:
    """Mutable routing state of one agent. Only the router changes it."""

    __slots__ = (
        "active",
        "away_reason",
        "capacity",
        "counted_since_ms",
        "draining_for",
        "exclusive_load",
        "handled_today",
        "handling_ms",
        "id",
        "idle_since_ms",
        "listed",
        "listing_seq",
        "load",
        "name",
        "offers",
        "ordinal",
        "presence",
        "skills",
        "staffed_ms",
        "state",
        "state_reason",
        "state_since_ms",
        "total_capacity",
        "total_load",
        "work",
        "wrapping",
    )

    def __init__(
        self, agent_id: str, name: str, ordinal: int, skills: dict[str, int], capacity: dict[str, int]
    ) -> None:
        self.id = agent_id
        self.name = name
        self.ordinal = ordinal
        self.skills = dict(skills)
        self.capacity = dict(capacity)
        self.total_capacity = sum(capacity.values())
        self.presence = LOGGED_OUT
        self.away_reason: str | None = None
        self.state = LOGGED_OUT
        self.state_reason: str | None = None  # the away reason last reported with the state
        self.state_since_ms = 0
        self.counted_since_ms = 0  # start of the time not yet added to staffed_ms / handling_ms
        self.idle_since_ms = 0
        self.offers: dict[str, Offer] = {}
        self.work: dict[str, Contact] = {}  # connected, held or wrapping up
        self.load: dict[str, int] = dict.fromkeys(capacity, 0)  # offers + work, per channel
        self.total_load = 0
        self.exclusive_load = 0
        self.active = 0  # connected or held
        self.wrapping = 0
        self.listed: tuple[str, ...] = ()  # channels this agent is listed as able to take
        self.listing_seq = 0  # when it was last listed: the idle order
        self.draining_for: Contact | None = None  # the exclusive contact it takes no new work ahead of
        self.handled_today = 0
        self.staffed_ms = 0  # today, up to state_since_ms
        self.handling_ms = 0

    def derive_state(self) -> str:
        if self.presence == LOGGED_OUT:
            return LOGGED_OUT
        if self.offers:
            return RESERVED
        if self.active:
            return BUSY
        if self.wrapping:
            return WRAP_UP
        if self.presence == AWAY:
            return AWAY
        return AVAILABLE

    def must(self, action: str, detail: str = "") -> tuple[str, ...]:
        """The states allowed after ``action``; raises ``IllegalTransition`` if the table has no row."""
        allowed = AGENT_TRANSITIONS.get((self.state, action))
        if allowed is None:
            raise IllegalTransition("agent", self.id, self.state, action, detail)
        return allowed

    def meets(self, req: tuple[tuple[str, int], ...]) -> bool:
        skills = self.skills
        for skill, level in req:  # noqa: SIM110 — a plain loop: the innermost test of every routing walk
            if skills.get(skill, 0) < level:
                return False
        return True

    def __repr__(self) -> str:
        return f"Agent({self.id} {self.state} load={self.load})"
