"""The contact: one customer request on one channel, and its lifecycle as a transition table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd.errors import IllegalTransition

if TYPE_CHECKING:
    from contactcentre.acd.agent import Agent
    from contactcentre.acd.offers import Offer
    from contactcentre.acd.timers import Timer
    from contactcentre.acd.waiting import WaitGroup

# States.
NEW = "new"
IVR = "ivr"
QUEUED = "queued"
OFFERED = "offered"
CONNECTED = "connected"
HELD = "held"
WRAP_UP = "wrap_up"
CLOSED = "closed"
ABANDONED = "abandoned"
TRANSFERRED = "transferred"  # transferred out of the centre (external number)
OVERFLOWED = "overflowed"  # left the centre by overflow (voicemail, another site)
FAILED = "failed"  # never queued: queue full or closed
WITHDRAWN = "withdrawn"  # a waiting callback cancelled before an agent took it

CONTACT_STATES = (
    NEW,
    IVR,
    QUEUED,
    OFFERED,
    CONNECTED,
    HELD,
    WRAP_UP,
    CLOSED,
    ABANDONED,
    TRANSFERRED,
    OVERFLOWED,
    FAILED,
    WITHDRAWN,
)
WITH_AGENT = frozenset({OFFERED, CONNECTED, HELD, WRAP_UP})  # states that hold an agent's capacity

# (state, action) -> next state. Every pair not listed is illegal. Internal transfers (to a queue or to a
# named agent) put the contact back in ``queued``: a transfer to an agent is a queued contact that only that
# agent may take for a while, so it reuses offers, timeouts and fallbacks instead of duplicating them.
CONTACT_TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, "queue"): QUEUED,
    (NEW, "ivr"): IVR,
    (NEW, "fail"): FAILED,
    (IVR, "queue"): QUEUED,
    (IVR, "abandon"): ABANDONED,
    (IVR, "close"): CLOSED,  # finished in self-service
    (IVR, "fail"): FAILED,
    (QUEUED, "offer"): OFFERED,
    (QUEUED, "abandon"): ABANDONED,
    (QUEUED, "move"): QUEUED,  # overflow to another queue, keeping its age
    (QUEUED, "overflow_out"): OVERFLOWED,
    (QUEUED, "withdraw"): WITHDRAWN,  # a callback cancelled (an offer ringing is cancelled first)
    (OFFERED, "accept"): CONNECTED,
    (OFFERED, "reject"): QUEUED,
    (OFFERED, "expire"): QUEUED,
    (OFFERED, "cancel"): QUEUED,
    (OFFERED, "abandon"): ABANDONED,
    (CONNECTED, "hold"): HELD,
    (HELD, "retrieve"): CONNECTED,
    (CONNECTED, "end"): WRAP_UP,
    (HELD, "end"): WRAP_UP,
    (CONNECTED, "transfer"): QUEUED,
    (HELD, "transfer"): QUEUED,
    (CONNECTED, "transfer_out"): TRANSFERRED,
    (HELD, "transfer_out"): TRANSFERRED,
    (WRAP_UP, "close"): CLOSED,
}
CONTACT_ACTIONS = tuple(sorted({a for _, a in CONTACT_TRANSITIONS}))


class Contact:
    """Mutable routing state of one contact. Only the router changes it."""

    __slots__ = (
        "agent_id",
        "attempt",
        "attributes",
        "bonus",
        "callback_number",
        "channel",
        "connected_ms",
        "customer_id",
        "disposition",
        "drained_by",
        "ended_ms",
        "exclusion_timer",
        "extra",
        "group",
        "held_ms",
        "hold_started_ms",
        "id",
        "key",
        "offer",
        "pending_exit",
        "preferred_agent_id",
        "preferred_ms",
        "preferred_timer",
        "priority",
        "queue",
        "rank",
        "rejected_by",
        "reqs",
        "reqs_text",
        "seq",
        "sla_deadline_ms",
        "sla_timer",
        "state",
        "step",
        "tier",
        "timers",
        "transfers",
        "waiting_since_ms",
        "wrap_timer",
    )

    def __init__(self, contact_id: str, channel: str, queue: str, seq: int) -> None:
        self.id = contact_id
        self.channel = channel
        self.queue = queue
        self.seq = seq
        self.state = NEW
        self.customer_id: str | None = None
        self.tier: str | None = None
        self.attributes: dict[str, str] = {}
        self.priority = 0  # the queue's priority + bonus
        self.bonus = 0  # from the arrival, the tier, hooks and overflow steps
        self.extra: tuple[tuple[str, int], ...] = ()  # skills the arrival added to the queue's requirement
        self.key = 0  # waiting_since - priority × weight: smaller is served first
        self.rank: tuple[int, int] = (0, seq)
        self.reqs: tuple[tuple[tuple[str, int], ...], ...] = ((),)
        self.reqs_text = ""
        self.preferred_agent_id: str | None = None
        self.preferred_ms = 0
        self.preferred_timer: Timer | None = None
        self.rejected_by: set[str] = set()
        self.exclusion_timer: Timer | None = None
        self.group: WaitGroup | None = None
        self.offer: Offer | None = None
        self.agent_id: str | None = None
        self.waiting_since_ms = 0
        self.sla_deadline_ms: int | None = None
        self.step = 0
        self.timers: list[Timer] = []  # overflow and max-wait timers of the current queue visit
        self.sla_timer: Timer | None = None  # warning, then breach; it survives a move to another queue
        self.pending_exit: tuple[str, list[str]] | None = None  # an overflow exit that fired during an offer
        self.connected_ms = 0
        self.hold_started_ms = 0
        self.held_ms = 0
        self.ended_ms = 0
        self.wrap_timer: Timer | None = None
        self.disposition: str | None = None
        self.transfers = 0
        self.drained_by: Agent | None = None  # the agent draining its work to take this one (blending)
        self.callback_number: str | None = None  # a callback contact: the number to dial
        self.attempt = 0  # a callback contact: its dialling attempt (1-based)

    def step_to(self, action: str) -> str:
        """Apply ``action`` through the transition table; raise ``IllegalTransition`` if it has no row."""
        nxt = CONTACT_TRANSITIONS.get((self.state, action))
        if nxt is None:
            raise IllegalTransition("contact", self.id, self.state, action)
        self.state = nxt
        return nxt

    def must(self, action: str, detail: str = "") -> None:
        """Check before mutating anything, so a refused input leaves no trace."""
        if (self.state, action) not in CONTACT_TRANSITIONS:
            raise IllegalTransition("contact", self.id, self.state, action, detail)

    def __repr__(self) -> str:
        return f"Contact({self.id} {self.state} {self.queue}/{self.channel} p{self.priority})"
