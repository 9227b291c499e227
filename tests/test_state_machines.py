"""Both state machines as tables: every row is walked, every missing pair is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from contactcentre import events as E
from contactcentre.acd import IllegalTransition, RouterError
from contactcentre.acd.agent import AGENT_ACTIONS, AGENT_TRANSITIONS
from contactcentre.acd.contact import CONTACT_ACTIONS, CONTACT_STATES, CONTACT_TRANSITIONS, Contact
from tests.harness import Harness

# ---------------------------------------------------------------------------------------------- contacts


@pytest.mark.parametrize(("state", "action"), sorted(CONTACT_TRANSITIONS))
def test_contact_row(state: str, action: str) -> None:
    c = Contact("c1", "voice", "q", 1)
    c.state = state
    assert c.step_to(action) == CONTACT_TRANSITIONS[(state, action)]
    assert c.state == CONTACT_TRANSITIONS[(state, action)]


MISSING_CONTACT = sorted((s, a) for s in CONTACT_STATES for a in CONTACT_ACTIONS if (s, a) not in CONTACT_TRANSITIONS)


@pytest.mark.parametrize(("state", "action"), MISSING_CONTACT)
def test_contact_missing_pair_is_refused_naming_both(state: str, action: str) -> None:
    c = Contact("c1", "voice", "q", 1)
    c.state = state
    with pytest.raises(IllegalTransition) as err:
        c.step_to(action)
    assert repr(state) in str(err.value) and repr(action) in str(err.value)
    assert c.state == state


def test_terminal_states_have_no_way_out() -> None:
    for state in ("closed", "abandoned", "transferred", "overflowed", "failed"):
        assert not [a for (s, a) in CONTACT_TRANSITIONS if s == state]


# ------------------------------------------------------------------------------------------------ agents
#
# One scenario per row. ``voice`` builds a one-contact-at-a-time voice agent (the first target of each row);
# ``multi`` an agent with chat capacity 2 and two open offers allowed, for rows only such agents reach.

Q = [{"name": "support", "skills": {"general": 1}}]


def voice() -> Harness:
    return Harness(queues=Q, agents=[{"id": "a", "skills": {"general": 5}, "capacity": {"voice": 1}}])


def multi() -> Harness:
    return Harness(
        queues=Q,
        agents=[{"id": "a", "skills": {"general": 5}, "capacity": {"chat": 2}}],
        routing={"offers_per_agent": 2},
        channels={"chat": {"offer_timeout_s": 20, "wrap_up_s": 10}},
    )


def reach(state: str, h: Harness, channel: str = "voice") -> Harness:
    if state == "logged_out":
        return h
    h.login("a", away_reason="lunch" if state == "away" else None)
    if state in ("reserved", "busy", "wrap_up"):
        h.arrive("c1", channel=channel)
    if state in ("busy", "wrap_up"):
        h.accept("c1")
    if state == "wrap_up":
        h.end("c1")
    assert h.agent_state("a") == state
    return h


def act(h: Harness, action: str, cid: str = "c1", channel: str = "voice") -> None:
    a = "a"

    def oid() -> str:
        offers = [e.offer_id for e in h.of(E.OfferMade) if e.contact_id == cid]
        return offers[-1] if offers else "o-none"

    simple: dict[str, Callable[[], Any]] = {
        "login": lambda: h.send(E.AgentLoggedIn, agent_id=a),
        "logout": lambda: h.send(E.AgentLoggedOut, agent_id=a),
        "ready": lambda: h.send(E.AgentReady, agent_id=a),
        "away": lambda: h.send(E.AgentAway, agent_id=a, reason="break"),
        "offer": lambda: h.arrive("c9", channel=channel),
        "accept": lambda: h.send(E.OfferAccepted, offer_id=oid(), contact_id=cid, agent_id=a),
        "reject": lambda: h.send(E.OfferRejected, offer_id=oid(), contact_id=cid, agent_id=a),
        "expire": lambda: h.at((h.now - h.start) / 1000 + 60),
        "cancel": lambda: h.send(E.CustomerLeft, contact_id=cid),
        "hold": lambda: h.send(E.ContactHeld, contact_id=cid, agent_id=a),
        "retrieve": lambda: h.send(E.ContactRetrieved, contact_id=cid, agent_id=a),
        "end": lambda: h.send(E.ContactEnded, contact_id=cid, agent_id=a),
        "transfer": lambda: h.send(E.TransferRequested, contact_id=cid, agent_id=a, to_external="+31"),
        "wrap_done": lambda: h.send(E.WrapUpEnded, contact_id=cid, agent_id=a),
        "wrap_expire": lambda: h.at((h.now - h.start) / 1000 + 11),
        "skills": lambda: h.send(E.AgentSkillsChanged, agent_id=a, skills={"general": 6}),
    }
    simple[action]()


def single(state: str, action: str, expected: str) -> Callable[[], None]:
    def run() -> None:
        h = reach(state, voice())
        if action == "retrieve":
            act(h, "hold")
        act(h, action)
        assert h.agent_state("a") == expected

    return run


def busy_with_offer_open(action: str, expected: str) -> Callable[[], None]:
    """Reserved while also handling a chat: actions on the chat in hand leave the agent reserved."""

    def run() -> None:
        h = multi()
        h.login("a")
        h.arrive("c1", channel="chat")
        h.accept("c1")
        if action in ("wrap_done", "wrap_expire"):
            h.end("c1")
        if action == "retrieve":
            act(h, "hold")
        h.arrive("c2", channel="chat")
        assert h.agent_state("a") == "reserved"
        act(h, action, "c1", "chat")
        assert h.agent_state("a") == expected

    return run


def multi_offer(state: str) -> Callable[[], None]:
    def run() -> None:
        h = multi()
        h.login("a")
        h.arrive("c1", channel="chat")
        if state in ("busy", "wrap_up"):
            h.accept("c1")
        if state == "wrap_up":
            h.end("c1")
        assert h.agent_state("a") == state
        act(h, "offer", channel="chat")
        assert h.agent_state("a") == "reserved"

    return run


def busy_while_wrapping(action: str) -> Callable[[], None]:
    def run() -> None:
        h = multi()
        h.login("a")
        h.arrive("c1", channel="chat")
        h.accept("c1")
        h.end("c1")
        h.arrive("c2", channel="chat")
        h.accept("c2")
        assert h.agent_state("a") == "busy"
        act(h, action)
        assert h.agent_state("a") == "busy"

    return run


ROWS: dict[tuple[str, str], Callable[[], None]] = {
    ("logged_out", "login"): single("logged_out", "login", "available"),
    ("available", "logout"): single("available", "logout", "logged_out"),
    ("away", "logout"): single("away", "logout", "logged_out"),
    ("reserved", "logout"): single("reserved", "logout", "logged_out"),
    ("wrap_up", "logout"): single("wrap_up", "logout", "logged_out"),
    ("available", "ready"): single("available", "ready", "available"),
    ("away", "ready"): single("away", "ready", "available"),
    ("reserved", "ready"): single("reserved", "ready", "reserved"),
    ("busy", "ready"): single("busy", "ready", "busy"),
    ("wrap_up", "ready"): single("wrap_up", "ready", "wrap_up"),
    ("available", "away"): single("available", "away", "away"),
    ("away", "away"): single("away", "away", "away"),
    ("reserved", "away"): single("reserved", "away", "away"),
    ("busy", "away"): single("busy", "away", "busy"),
    ("wrap_up", "away"): single("wrap_up", "away", "wrap_up"),
    ("available", "offer"): single("available", "offer", "reserved"),
    ("reserved", "offer"): multi_offer("reserved"),
    ("busy", "offer"): multi_offer("busy"),
    ("wrap_up", "offer"): multi_offer("wrap_up"),
    ("reserved", "accept"): single("reserved", "accept", "busy"),
    ("reserved", "reject"): single("reserved", "reject", "available"),
    ("reserved", "expire"): single("reserved", "expire", "away"),
    ("reserved", "cancel"): single("reserved", "cancel", "available"),
    ("busy", "hold"): single("busy", "hold", "busy"),
    ("reserved", "hold"): busy_with_offer_open("hold", "reserved"),
    ("busy", "retrieve"): single("busy", "retrieve", "busy"),
    ("reserved", "retrieve"): busy_with_offer_open("retrieve", "reserved"),
    ("busy", "end"): single("busy", "end", "wrap_up"),
    ("reserved", "end"): busy_with_offer_open("end", "reserved"),
    ("busy", "transfer"): single("busy", "transfer", "available"),
    ("reserved", "transfer"): busy_with_offer_open("transfer", "reserved"),
    ("wrap_up", "wrap_done"): single("wrap_up", "wrap_done", "available"),
    ("busy", "wrap_done"): busy_while_wrapping("wrap_done"),
    ("reserved", "wrap_done"): busy_with_offer_open("wrap_done", "reserved"),
    ("wrap_up", "wrap_expire"): single("wrap_up", "wrap_expire", "available"),
    ("busy", "wrap_expire"): busy_while_wrapping("wrap_expire"),
    ("reserved", "wrap_expire"): busy_with_offer_open("wrap_expire", "reserved"),
    **{
        (s, "skills"): single(s, "skills", s)
        for s in ("logged_out", "available", "away", "reserved", "busy", "wrap_up")
    },
}


def test_every_agent_row_has_a_scenario() -> None:
    assert set(ROWS) == set(AGENT_TRANSITIONS)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_agent_row(row: tuple[str, str]) -> None:
    ROWS[row]()


def test_first_target_is_the_single_contact_outcome() -> None:
    """The scenarios above assert the first target for a voice agent; the table must say the same."""
    singles = {
        ("available", "offer"): "reserved",
        ("reserved", "accept"): "busy",
        ("reserved", "reject"): "available",
        ("reserved", "expire"): "away",
        ("busy", "end"): "wrap_up",
        ("wrap_up", "wrap_done"): "available",
    }
    for row, target in singles.items():
        assert AGENT_TRANSITIONS[row][0] == target


INPUT_ACTIONS = (
    "login",
    "logout",
    "ready",
    "away",
    "accept",
    "reject",
    "hold",
    "retrieve",
    "end",
    "transfer",
    "wrap_done",
    "skills",
)
MISSING_AGENT = sorted(
    (s, a)
    for s in ("logged_out", "available", "away", "reserved", "busy", "wrap_up")
    for a in INPUT_ACTIONS
    if (s, a) not in AGENT_TRANSITIONS
)


@pytest.mark.parametrize(("state", "action"), MISSING_AGENT)
def test_agent_missing_pair_is_refused_and_changes_nothing(state: str, action: str) -> None:
    h = reach(state, voice())
    before = (h.agent_state("a"), h.router.census(), dict(h.router.agents["a"].load), len(h.log))
    with pytest.raises(RouterError):
        act(h, action)
    assert (h.agent_state("a"), h.router.census(), dict(h.router.agents["a"].load), len(h.log)) == before


def test_agent_actions_cover_the_table() -> None:
    assert set(INPUT_ACTIONS) | {"offer", "expire", "cancel", "wrap_expire"} == set(AGENT_ACTIONS)
