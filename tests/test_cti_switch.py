"""The simulated switch: its connection table walked row by row, refusals that change nothing, call scenarios
(transfers, conference, ring-no-answer, outbound) and a stateful property test over random operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contactcentre.telephony import (
    CONNECTION_ACTIONS,
    CONNECTION_STATES,
    CONNECTION_TRANSITIONS,
    Conferenced,
    Connection,
    Delivered,
    DigitsGenerated,
    Diverted,
    Failed,
    Held,
    Originated,
    Queued,
    Switch,
    SwitchConfig,
    SwitchError,
    SwitchEvent,
    Transferred,
    replay,
)
from contactcentre.telephony.switch import ACTIVE, ALERTING, CLEARED, CONNECTED, HELD, NULL, QUEUED

RING = 20_000
EXTS = ("1001", "1002", "1003", "1004")
QUEUE = "5000"
CUSTOMER = "+31201234567"


def switch(trunks: int = 3) -> Switch:
    return Switch(SwitchConfig(extensions=EXTS, queues=(QUEUE,), trunks=trunks, ring_timeout_ms=RING))


def kinds(events: list[SwitchEvent]) -> list[tuple[str, str]]:
    return [(type(e).__name__, e.device) for e in events]


def state_of(sw: Switch, call_id: str, device: str) -> str:
    call = sw.calls.get(call_id)
    conn = call.connections.get(device) if call else None
    return conn.state if conn else CLEARED


def ringing(sw: Switch, to: str = "1001", at: int = 1_000, data: dict[str, str] | None = None) -> str:
    return sw.inbound(CUSTOMER, to, at, data)[-1].call_id


def talking(sw: Switch, ext: str = "1001", at: int = 1_000) -> str:
    cid = ringing(sw, ext, at)
    sw.answer(cid, ext, at + 1_000)
    return cid


def consulting(sw: Switch, answered: bool = True, to: str = "1002") -> tuple[str, str]:
    """1001 talks to the customer, holds and consults ``to``. Returns (held call, consultation call)."""
    cid = talking(sw)
    out = sw.consult(cid, "1001", to, 3_000)
    active = out[-1].call_id
    if answered:
        sw.answer(active, to, 4_000)
    return cid, active


# ------------------------------------------------------------------------------------------- the table


@pytest.mark.parametrize(("state", "action"), sorted(CONNECTION_TRANSITIONS))
def test_connection_row(state: str, action: str) -> None:
    c = Connection("call-1", "1001", "extension", "1001")
    c.state = state
    assert c.step(action) == CONNECTION_TRANSITIONS[(state, action)]
    assert c.state == CONNECTION_TRANSITIONS[(state, action)]


MISSING = sorted((s, a) for s in CONNECTION_STATES for a in CONNECTION_ACTIONS if (s, a) not in CONNECTION_TRANSITIONS)


@pytest.mark.parametrize(("state", "action"), MISSING)
def test_connection_missing_pair_is_refused_naming_both(state: str, action: str) -> None:
    c = Connection("call-1", "1001", "extension", "1001")
    c.state = state
    with pytest.raises(SwitchError) as err:
        c.step(action)
    assert err.value.code == "invalid_state"
    assert repr(state) in str(err.value) and repr(action) in str(err.value)
    assert c.state == state


def test_cleared_is_terminal_and_null_only_starts() -> None:
    assert not [a for (s, a) in CONNECTION_TRANSITIONS if s == CLEARED]
    assert {a for (s, a) in CONNECTION_TRANSITIONS if s == NULL} == {"originate", "deliver", "queue"}


# Every row again, this time reached and taken through the switch's own operations. Each scenario returns the
# (call, device) whose connection took the step and the state the table promises it.

Row = Callable[[Switch], tuple[str, str]]


def _originate(sw: Switch) -> tuple[str, str]:
    return sw.make_call("1001", "1002", 1_000)[0].call_id, "1001"


def _deliver(sw: Switch) -> tuple[str, str]:
    return ringing(sw), "1001"


def _queue(sw: Switch) -> tuple[str, str]:
    return ringing(sw, QUEUE), QUEUE


def _answer(sw: Switch) -> tuple[str, str]:
    return talking(sw), "1001"


def _hold(sw: Switch) -> tuple[str, str]:
    cid = talking(sw)
    sw.hold(cid, "1001", 3_000)
    return cid, "1001"


def _retrieve(sw: Switch) -> tuple[str, str]:
    cid, _ = _hold(sw)
    sw.retrieve(cid, "1001", 4_000)
    return cid, "1001"


def _divert_alerting(sw: Switch) -> tuple[str, str]:
    cid = ringing(sw)
    sw.deflect(cid, "1001", "1002", 2_000)
    assert state_of(sw, cid, "1002") == ALERTING
    return cid, "1001"


def _divert_queued(sw: Switch) -> tuple[str, str]:
    cid = ringing(sw, QUEUE)
    sw.deflect(cid, QUEUE, "1001", 2_000)
    assert state_of(sw, cid, "1001") == ALERTING
    return cid, QUEUE


def _no_answer(sw: Switch) -> tuple[str, str]:
    cid = ringing(sw)
    sw.advance(1_000 + RING)
    return cid, "1001"


def _transfer_connected(sw: Switch) -> tuple[str, str]:
    cid = talking(sw)
    sw.transfer(cid, "1001", "1002", 3_000)
    return cid, "1001"


def _transfer_held(sw: Switch) -> tuple[str, str]:
    cid = talking(sw)
    sw.hold(cid, "1001", 3_000)
    sw.transfer(cid, "1001", "1002", 4_000)
    return cid, "1001"


def _join(answered: bool, to: str = "1002", hold_consult: bool = False) -> Row:
    def run(sw: Switch) -> tuple[str, str]:
        held, active = consulting(sw, answered, to)
        if hold_consult:
            sw.hold(active, to, 4_500)
        sw.complete_transfer(held, active, 5_000)
        return held, to

    return run


def _conference(sw: Switch) -> tuple[str, str]:
    held, active = consulting(sw)
    sw.conference(held, active, 5_000)
    return held, "1001"


def _merge(sw: Switch) -> tuple[str, str]:
    held, active = consulting(sw)
    sw.conference(held, active, 5_000)
    assert active not in sw.calls
    return active, "1001"


def _add(sw: Switch) -> tuple[str, str]:
    held, active = consulting(sw)
    sw.conference(held, active, 5_000)
    return held, "1002"


def _clear(reach: Row) -> Row:
    def run(sw: Switch) -> tuple[str, str]:
        cid, dev = reach(sw)
        sw.clear_connection(cid, dev, 10_000)
        return cid, dev

    return run


ROWS: dict[tuple[str, str], Row] = {
    (NULL, "originate"): _originate,
    (NULL, "deliver"): _deliver,
    (NULL, "queue"): _queue,
    (ALERTING, "answer"): _answer,
    (CONNECTED, "hold"): _hold,
    (HELD, "retrieve"): _retrieve,
    (ALERTING, "divert"): _divert_alerting,
    (QUEUED, "divert"): _divert_queued,
    (ALERTING, "no_answer"): _no_answer,
    (CONNECTED, "transfer"): _transfer_connected,
    (HELD, "transfer"): _transfer_held,
    (ALERTING, "join"): _join(answered=False),
    (QUEUED, "join"): _join(answered=False, to=QUEUE),
    (CONNECTED, "join"): _join(answered=True),
    (HELD, "join"): _join(answered=True, hold_consult=True),
    (HELD, "conference"): _conference,
    (CONNECTED, "merge"): _merge,
    (CONNECTED, "add"): _add,
    (ALERTING, "clear"): _clear(_deliver),
    (QUEUED, "clear"): _clear(_queue),
    (CONNECTED, "clear"): _clear(_answer),
    (HELD, "clear"): _clear(_hold),
}


def test_every_row_has_a_switch_scenario() -> None:
    assert set(ROWS) == set(CONNECTION_TRANSITIONS)


@pytest.mark.parametrize(("state", "action"), sorted(ROWS))
def test_row_through_the_switch(state: str, action: str) -> None:
    sw = switch()
    cid, dev = ROWS[(state, action)](sw)
    assert state_of(sw, cid, dev) == CONNECTION_TRANSITIONS[(state, action)]


# The operations a client can aim at an existing connection, and the table action each one takes.
OPS: dict[str, Callable[[Switch, str, str], list[SwitchEvent]]] = {
    "answer": lambda sw, c, d: sw.answer(c, d, 9_000),
    "hold": lambda sw, c, d: sw.hold(c, d, 9_000),
    "retrieve": lambda sw, c, d: sw.retrieve(c, d, 9_000),
    "divert": lambda sw, c, d: sw.deflect(c, d, "1003", 9_000),
    "transfer": lambda sw, c, d: sw.transfer(c, d, "1003", 9_000),
    "clear": lambda sw, c, d: sw.clear_connection(c, d, 9_000),
}
REACH: dict[str, Row] = {ALERTING: _deliver, QUEUED: _queue, CONNECTED: _answer, HELD: _hold}
REFUSED_OPS = sorted((s, a) for s in REACH for a in OPS if (s, a) not in CONNECTION_TRANSITIONS)


@pytest.mark.parametrize(("state", "action"), REFUSED_OPS)
def test_refused_operation_changes_nothing(state: str, action: str) -> None:
    sw = switch()
    cid, dev = REACH[state](sw)
    sw.advance(9_000)  # nothing is due yet: the refusal is the only thing tried
    before = sw.snapshot()
    with pytest.raises(SwitchError) as err:
        OPS[action](sw, cid, dev)
    assert err.value.code in ("invalid_state", "not_allowed")
    assert err.value.fired == []
    assert sw.snapshot() == before
    assert state_of(sw, cid, dev) == state


# ---------------------------------------------------------------------------------------------- scenarios


def test_inbound_answer_hold_retrieve_blind_transfer_clear() -> None:
    sw = switch()
    data = {"account": "A-17", "intent": "billing"}
    out = sw.inbound(CUSTOMER, "1001", 1_000, data)
    assert kinds(out) == [("Originated", "T1"), ("Delivered", "1001")]
    cid = out[0].call_id
    d = out[1]
    assert isinstance(d, Delivered)
    assert (d.ani, d.dnis, d.attached_data, d.calling_device, d.at_ms) == (CUSTOMER, "1001", data, "T1", 1_000)
    assert d.parties == ("T1", "1001")
    assert sw.calls[cid].state == "offered"

    out = sw.answer(cid, "1001", 4_000)
    assert kinds(out) == [("Established", "1001")] and out[0].at_ms == 4_000
    assert sw.calls[cid].state == "connected" and sw.next_deadline() is None  # answering stops the ring timer
    assert kinds(sw.hold(cid, "1001", 5_000)) == [("Held", "1001")]
    assert sw.calls[cid].state == "held"
    assert kinds(sw.retrieve(cid, "1001", 6_000)) == [("Retrieved", "1001")]
    assert kinds(sw.set_attached_data(cid, {"note": "wants refund"}, 6_500, device="1001")) == [
        ("AttachedDataChanged", "1001")
    ]

    out = sw.transfer(cid, "1001", "1002", 7_000)
    assert kinds(out) == [("Transferred", "1001"), ("Delivered", "1002")]
    t = out[0]
    assert isinstance(t, Transferred) and t.to_device == "1002" and t.secondary_call_id == ""
    assert out[1].attached_data == {**data, "note": "wants refund"}
    assert out[1].ani == CUSTOMER and out[1].call_id == cid
    assert sw.connections_of("1001") == []

    out = sw.answer(cid, "1002", 8_000)
    assert out[0].attached_data["account"] == "A-17"
    out = sw.clear_connection(cid, "T1", 9_000)  # the customer hangs up: the agent's side clears with it
    assert kinds(out) == [("ConnectionCleared", "T1"), ("ConnectionCleared", "1002")]
    assert cid not in sw.calls and sw.free_trunks() == ["T1", "T2", "T3"]


def test_consultative_transfer() -> None:
    sw = switch()
    cid = ringing(sw, data={"case": "C-9"})
    sw.answer(cid, "1001", 2_000)
    out = sw.consult(cid, "1001", "1002", 3_000)
    assert kinds(out) == [("Held", "1001"), ("Originated", "1001"), ("Delivered", "1002")]
    active = out[-1].call_id
    assert active != cid and sw.calls[active].consult_of == cid
    assert out[-1].attached_data == {"case": "C-9"} and out[-1].ani == "1001" and out[-1].dnis == "1002"
    sw.answer(active, "1002", 4_000)

    out = sw.complete_transfer(cid, active, 5_000)
    assert kinds(out) == [("Transferred", "1001")]
    t = out[0]
    assert isinstance(t, Transferred) and (t.call_id, t.secondary_call_id, t.to_device) == (cid, active, "1002")
    assert t.parties == ("T1", "1002") and t.ani == CUSTOMER and t.attached_data == {"case": "C-9"}
    assert active not in sw.calls
    assert {d: c.state for d, c in sw.calls[cid].connections.items()} == {"T1": CONNECTED, "1002": CONNECTED}
    assert sw.connections_of("1001") == []


def test_consultation_while_the_consulted_party_still_rings_keeps_its_ring_timer() -> None:
    sw = switch()
    held, active = consulting(sw, answered=False)  # consult delivered at 3_000
    sw.complete_transfer(held, active, 5_000)
    assert state_of(sw, held, "1002") == ALERTING
    assert sw.next_deadline() == 3_000 + RING
    out = sw.advance(3_000 + RING)
    assert kinds(out) == [("Failed", "1002"), ("ConnectionCleared", "T1")]
    assert out[0].call_id == held and not sw.calls


def test_conference_of_three_then_one_leaves() -> None:
    sw = switch()
    held, active = consulting(sw)
    out = sw.conference(held, active, 5_000)
    assert kinds(out) == [("Conferenced", "1001")]
    c = out[0]
    assert isinstance(c, Conferenced) and c.secondary_call_id == active and c.to_device == "1002"
    assert set(c.parties) == {"T1", "1001", "1002"}
    assert sw.calls[held].state == "conferenced" and active not in sw.calls

    out = sw.clear_connection(held, "1002", 6_000)
    assert kinds(out) == [("ConnectionCleared", "1002")]  # two parties left: the call goes on
    assert sw.calls[held].state == "connected"
    out = sw.clear_connection(held, "1001", 7_000)
    assert kinds(out) == [("ConnectionCleared", "1001"), ("ConnectionCleared", "T1")]
    assert not sw.calls


def test_conference_needs_the_consulted_party_to_have_answered() -> None:
    sw = switch()
    held, active = consulting(sw, answered=False)
    before = sw.snapshot()
    with pytest.raises(SwitchError) as err:
        sw.conference(held, active, 4_000)
    assert err.value.code == "invalid_state" and "'add'" in str(err.value)
    assert sw.snapshot()[1:] == before[1:]


def test_ring_no_answer_fires_at_the_deadline_without_sleeping() -> None:
    sw = switch()
    cid = ringing(sw, at=1_000)
    assert sw.next_deadline() == 1_000 + RING
    assert sw.advance(1_000 + RING - 1) == []
    out = sw.advance(1_000 + RING + 5_000)  # late: the timer still fires at its own deadline
    assert kinds(out) == [("Failed", "1001"), ("ConnectionCleared", "T1")]
    assert [e.at_ms for e in out] == [1_000 + RING] * 2
    assert isinstance(out[0], Failed) and out[0].cause == "no_answer" and out[1].cause == "no_answer"
    assert cid not in sw.calls and sw.next_deadline() is None and sw.now_ms == 1_000 + RING + 5_000


def test_unanswered_call_from_a_queue_goes_back_to_the_queue() -> None:
    sw = switch()
    cid = ringing(sw, QUEUE, at=1_000)
    out = sw.deflect(cid, QUEUE, "1001", 2_000)  # the ACD routes it to an agent
    assert kinds(out) == [("Diverted", QUEUE), ("Delivered", "1001")]
    assert isinstance(out[0], Diverted) and out[0].to_device == "1001"
    out = sw.advance(2_000 + RING)
    assert kinds(out) == [("Failed", "1001"), ("Queued", QUEUE)]
    assert isinstance(out[1], Queued) and out[1].calling_device == "1001"
    assert sw.calls[cid].state == "queued"
    sw.deflect(cid, QUEUE, "1002", 30_000)
    sw.answer(cid, "1002", 31_000)
    assert sw.calls[cid].state == "connected"


def test_a_due_timer_fires_before_the_operation_and_travels_on_a_refusal() -> None:
    sw = switch()
    cid = ringing(sw, at=1_000)
    with pytest.raises(SwitchError) as err:
        sw.answer(cid, "1001", 1_000 + RING)  # too late: the ring timer fired first
    assert err.value.code == "unknown_call"
    assert kinds(err.value.fired) == [("Failed", "1001"), ("ConnectionCleared", "T1")]
    assert sw.advance(1_000 + RING) == []


def test_outbound_make_call_to_an_external_number() -> None:
    sw = switch(trunks=1)
    out = sw.make_call("1001", "+442071234567", 1_000, {"campaign": "renewals"})
    assert kinds(out) == [("Originated", "1001"), ("Delivered", "T1")]
    o, d = out
    assert isinstance(o, Originated) and (o.ani, o.dnis, o.number) == ("1001", "+442071234567", "1001")
    assert d.number == "+442071234567" and d.attached_data == {"campaign": "renewals"}
    cid = o.call_id
    with pytest.raises(SwitchError) as err:
        sw.make_call("1002", "+442070000000", 1_500)
    assert err.value.code == "no_trunk"
    assert kinds(sw.answer(cid, "T1", 2_000)) == [("Established", "T1")]  # the far end picks up
    out = sw.clear_connection(cid, "1001", 3_000)
    assert kinds(out) == [("ConnectionCleared", "1001"), ("ConnectionCleared", "T1")]
    assert sw.free_trunks() == ["T1"]


def test_internal_call_and_blind_transfer_to_queue_and_external() -> None:
    sw = switch()
    cid = sw.make_call("1001", "1002", 1_000)[0].call_id
    sw.answer(cid, "1002", 2_000)
    assert sw.calls[cid].state == "connected"
    out = sw.transfer(cid, "1002", QUEUE, 3_000)
    assert kinds(out) == [("Transferred", "1002"), ("Queued", QUEUE)]
    cid2 = talking(sw, "1003", at=4_000)
    out = sw.transfer(cid2, "1003", "+3110999888", 6_000)
    assert kinds(out) == [("Transferred", "1003"), ("Delivered", "T2")]
    assert out[1].number == "+3110999888" and out[0].to_device == "T2"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("attempt", "code"),
    [
        (lambda sw, c: sw.answer("call-99", "1001", 5_000), "unknown_call"),
        (lambda sw, c: sw.answer(c, "9999", 5_000), "unknown_device"),
        (lambda sw, c: sw.answer(c, "1003", 5_000), "not_in_call"),
        (lambda sw, c: sw.make_call("1001", "1002", 5_000), "busy"),
        (lambda sw, c: sw.make_call("1003", "1001", 5_000), "busy"),
        (lambda sw, c: sw.make_call("1003", "1003", 5_000), "invalid_number"),
        (lambda sw, c: sw.make_call("1003", "not a number", 5_000), "invalid_number"),
        (lambda sw, c: sw.make_call("T1", "1003", 5_000), "not_allowed"),
        (lambda sw, c: sw.make_call("1003", "1004", 500), "time_backwards"),
        (lambda sw, c: sw.inbound(CUSTOMER, "+3120", 5_000), "invalid_number"),
        (lambda sw, c: sw.inbound(CUSTOMER, "1001", 5_000), "busy"),
        (lambda sw, c: sw.inbound("", "1003", 5_000), "invalid_number"),
        (lambda sw, c: sw.inbound(CUSTOMER, "1003", 5_000, {"k": 1}), "bad_request"),  # type: ignore[dict-item]
        (lambda sw, c: sw.hold(c, "T1", 5_000), "not_allowed"),
        (lambda sw, c: sw.transfer(c, "1001", "1001", 5_000), "invalid_number"),
        (lambda sw, c: sw.transfer(c, "1001", "T1", 5_000), "conflict"),
        (lambda sw, c: sw.deflect(c, "1001", "1003", 5_000), "invalid_state"),
        (lambda sw, c: sw.consult(c, "1001", "1001", 5_000), "invalid_number"),
        (lambda sw, c: sw.complete_transfer(c, c, 5_000), "bad_request"),
        (lambda sw, c: sw.set_attached_data("call-99", {}, 5_000), "unknown_call"),
    ],
)
def test_refusals_name_a_code_and_change_nothing(attempt: Callable[[Switch, str], Any], code: str) -> None:
    sw = switch()
    cid = talking(sw)  # T1 (customer) talking to 1001, since 2_000
    sw.make_call("1002", "1004", 3_000)
    sw.advance(5_000)  # time passing is not the refused operation's doing
    before = sw.snapshot()
    with pytest.raises(SwitchError) as err:
        attempt(sw, cid)
    assert err.value.code == code
    assert sw.snapshot() == before


def test_all_trunks_busy_refuses_inbound() -> None:
    sw = switch(trunks=1)
    ringing(sw, QUEUE)
    with pytest.raises(SwitchError) as err:
        sw.inbound("+3161", QUEUE, 2_000)
    assert err.value.code == "no_trunk"


def test_config_is_checked() -> None:
    for bad in (
        {"extensions": ()},
        {"extensions": ("1001", "1001")},
        {"extensions": ("1001",), "queues": ("1001",)},
        {"extensions": ("T1",)},
        {"extensions": ("1001",), "ring_timeout_ms": 0},
    ):
        with pytest.raises(ValueError):
            SwitchConfig(**bad)


def test_events_encode_with_their_name_as_tag() -> None:
    import msgspec

    ev = Held(at_ms=5, call_id="call-1", device="1001", ani=CUSTOMER, parties=("T1", "1001"))
    assert msgspec.json.decode(msgspec.json.encode(ev)) == {
        "event": "Held",
        "at_ms": 5,
        "call_id": "call-1",
        "device": "1001",
        "ani": CUSTOMER,
        "parties": ["T1", "1001"],
    }


# ------------------------------------------------------------------------------------------- properties

DESTS = (*EXTS, QUEUE, "3000", "+31201111111", "bogus")
DEVICES = (*EXTS, QUEUE, "3000", "T1", "T2", "T3", "nobody")


class SwitchMachine(RuleBasedStateMachine):
    """Random operations, most of them refused; after each one the invariants must hold and a refusal must
    have changed nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sw = Switch(SwitchConfig(extensions=EXTS, queues=(QUEUE,), ivrs=("3000",), trunks=3, ring_timeout_ms=RING))
        self.now = 0
        self.events: list[SwitchEvent] = []
        self.seen: list[str] = ["call-0"]  # call ids ever made, plus one that never was

    def _try(self, dt: int, op: Callable[[int], list[SwitchEvent]]) -> None:
        self.now += dt
        self.events += self.sw.advance(self.now)  # time first, so a refusal can be checked for "no change"
        before = self.sw.snapshot()
        try:
            out = op(self.now)
        except SwitchError as exc:
            assert exc.fired == []
            assert self.sw.snapshot() == before, exc
            return
        assert all(e.at_ms == self.now for e in out)
        self.events += out
        for e in out:
            if e.call_id not in self.seen:
                self.seen.append(e.call_id)

    # Indexes, so that Hypothesis can shrink them: small ones pick live calls and their parties (operations
    # that may succeed), the rest any call ever made or any device (mostly refusals).
    def _call(self, i: int) -> str:
        live = list(self.sw.calls)
        return live[i % len(live)] if live and i < 16 else self.seen[i % len(self.seen)]

    def _dev(self, call_id: str, j: int) -> str:
        call = self.sw.calls.get(call_id)
        if call is not None and j < 12:
            parties = list(call.connections)
            return parties[j % len(parties)]
        return DEVICES[j % len(DEVICES)]

    @rule(dt=st.integers(0, 3_000), ani=st.sampled_from(("+3161", "+3162")), dnis=st.sampled_from(DESTS))
    def inbound(self, dt: int, ani: str, dnis: str) -> None:
        self._try(dt, lambda now: self.sw.inbound(ani, dnis, now, {"ani": ani}))

    @rule(dt=st.integers(0, 3_000), frm=st.sampled_from(DEVICES), to=st.sampled_from(DESTS))
    def make_call(self, dt: int, frm: str, to: str) -> None:
        self._try(dt, lambda now: self.sw.make_call(frm, to, now))

    @rule(
        dt=st.integers(0, 3_000),
        op=st.sampled_from(("answer", "hold", "retrieve", "clear_connection")),
        i=st.integers(0, 20),
        j=st.integers(0, 20),
    )
    def act(self, dt: int, op: str, i: int, j: int) -> None:
        cid = self._call(i)
        self._try(dt, lambda now: getattr(self.sw, op)(cid, self._dev(cid, j), now))

    @rule(
        dt=st.integers(0, 3_000),
        op=st.sampled_from(("deflect", "transfer", "consult")),
        i=st.integers(0, 20),
        j=st.integers(0, 20),
        to=st.sampled_from(DESTS),
    )
    def redirect(self, dt: int, op: str, i: int, j: int, to: str) -> None:
        cid = self._call(i)
        self._try(dt, lambda now: getattr(self.sw, op)(cid, self._dev(cid, j), to, now))

    def _conns(self, state: str) -> list[Connection]:
        return [c for call in self.sw.calls.values() for c in call.connections.values() if c.state == state]

    # Aimed rules: random (call, device) pairs rarely hit a ringing phone or an answered consultation.
    @precondition(lambda self: bool(self._conns(ALERTING)))
    @rule(dt=st.integers(0, 1_000), i=st.integers(0, 20))
    def answer_ringing(self, dt: int, i: int) -> None:
        c = self._conns(ALERTING)[i % len(self._conns(ALERTING))]
        self._try(dt, lambda now: self.sw.answer(c.call_id, c.device, now))

    @precondition(lambda self: bool(self._conns(CONNECTED)))
    @rule(dt=st.integers(0, 1_000), i=st.integers(0, 20), to=st.sampled_from(DESTS), answer=st.booleans())
    def consult(self, dt: int, i: int, to: str, answer: bool) -> None:
        c = self._conns(CONNECTED)[i % len(self._conns(CONNECTED))]
        self._try(dt, lambda now: self.sw.consult(c.call_id, c.device, to, now))
        consult = self.sw.calls.get(self.seen[-1])
        if answer and consult is not None and to in consult.connections and consult.connections[to].state == ALERTING:
            self._try(0, lambda now: self.sw.answer(consult.id, to, now))

    @rule(dt=st.integers(0, 3_000), conference=st.booleans(), i=st.integers(0, 20))
    def join(self, dt: int, conference: bool, i: int) -> None:
        op = self.sw.conference if conference else self.sw.complete_transfer
        consults = [c for c in self.sw.calls.values() if c.consult_of is not None]
        if consults and i < 16:
            held, active = consults[i % len(consults)].consult_of or "", consults[i % len(consults)].id
        else:
            held, active = self._call(i), self._call(i // 2)
        self._try(dt, lambda now: op(held, active, now))

    @precondition(lambda self: bool(self.sw.calls))
    @rule(dt=st.integers(0, 3_000), i=st.integers(0, 20), key=st.sampled_from(("a", "b")))
    def attach(self, dt: int, i: int, key: str) -> None:
        self._try(dt, lambda now: self.sw.set_attached_data(self._call(i), {key: str(now)}, now))

    @rule(dt=st.integers(0, 3_000), i=st.integers(0, 20))
    def clear_call(self, dt: int, i: int) -> None:
        self._try(dt, lambda now: self.sw.clear_call(self._call(i), now))

    @rule(dt=st.integers(0, 3_000), i=st.integers(0, 20), j=st.integers(0, 20), digits=st.sampled_from(("1", "#", "x")))
    def dtmf(self, dt: int, i: int, j: int, digits: str) -> None:
        cid = self._call(i)
        self._try(dt, lambda now: self.sw.generate_digits(cid, self._dev(cid, j), digits, now))

    @rule(dt=st.integers(0, 2 * RING))
    def wait(self, dt: int) -> None:
        self.now += dt
        self.events += self.sw.advance(self.now)

    @invariant()
    def one_active_connection_per_device(self) -> None:
        for dev, conns in self.sw.by_device.items():
            if self.sw.kinds[dev] == "trunk":
                assert len(conns) <= 1, (dev, conns)
            elif self.sw.kinds[dev] == "extension":
                assert sum(c.state in ACTIVE for c in conns.values()) <= 1, (dev, conns)

    @invariant()
    def live_calls_have_two_live_parties_and_cleared_calls_none(self) -> None:
        for cid, call in self.sw.calls.items():
            assert len(call.connections) >= 2, call
            for dev, c in call.connections.items():
                assert c.call_id == cid and c.device == dev and c.state not in (NULL, CLEARED)
                assert self.sw.by_device[dev][cid] is c
        indexed = sum(len(v) for v in self.sw.by_device.values())
        assert indexed == sum(len(c.connections) for c in self.sw.calls.values())
        rebuilt = replay(self.events)
        for cid in self.seen:
            if cid not in self.sw.calls:
                assert not [k for k in rebuilt if k[0] == cid], cid

    @invariant()
    def events_reconstruct_connection_states(self) -> None:
        live = {(cid, d): c.state for cid, call in self.sw.calls.items() for d, c in call.connections.items()}
        assert replay(self.events) == live

    @invariant()
    def ring_timers_are_exactly_the_alerting_connections(self) -> None:
        deadlines = []
        for call in self.sw.calls.values():
            for c in call.connections.values():
                assert (c.ring_deadline_ms is not None) == (c.state == ALERTING), c
                if c.ring_deadline_ms is not None:
                    assert c.ring_deadline_ms > self.now
                    deadlines.append(c.ring_deadline_ms)
        assert self.sw.next_deadline() == (min(deadlines) if deadlines else None)

    @invariant()
    def events_carry_the_calls_current_data(self) -> None:
        last: dict[str, SwitchEvent] = {}
        for e in self.events:
            last[e.call_id] = e
        for cid, call in self.sw.calls.items():
            assert last[cid].attached_data == call.attached_data
            assert (last[cid].ani, last[cid].dnis) == (call.ani, call.dnis)


TestSwitchMachine = SwitchMachine.TestCase
TestSwitchMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ------------------------------------------------------------------------------------- DTMF and the IVR

IVR_NO = "3000"


def ivr_switch() -> Switch:
    return Switch(SwitchConfig(extensions=EXTS, queues=(QUEUE,), ivrs=(IVR_NO,), trunks=3, ring_timeout_ms=RING))


def test_the_caller_sends_digits_as_an_event_that_changes_no_connection() -> None:
    sw = switch()
    cid = talking(sw)
    before = sw.snapshot()
    [ev] = sw.generate_digits(cid, "T1", "12*#AD", 3_000)
    assert isinstance(ev, DigitsGenerated)
    assert (ev.call_id, ev.device, ev.digits, ev.at_ms, ev.number) == (cid, "T1", "12*#AD", 3_000, CUSTOMER)
    assert sw.snapshot()[2:] == before[2:] and replay([ev]) == {}


@pytest.mark.parametrize(
    ("call", "device", "digits", "code"),
    [
        ("call-99", "T1", "1", "unknown_call"),
        (None, "nobody", "1", "unknown_device"),
        (None, "1003", "1", "not_in_call"),
        (None, "T1", "", "bad_request"),
        (None, "T1", "12x", "bad_request"),
        (None, "T1", "E", "bad_request"),
        (None, "T1", "1" * 33, "bad_request"),
        (None, "T1", 5, "bad_request"),
        (None, "1001", "1", "invalid_state"),  # held: no speech path
        ("ringing", "1002", "1", "invalid_state"),  # alerting: not answered yet
    ],
)
def test_generate_digits_refusals(call: str | None, device: str, digits: Any, code: str) -> None:
    sw = switch()
    cid = talking(sw)
    sw.hold(cid, "1001", 2_500)
    ringing_call = sw.make_call("1003", "1002", 2_600)[-1].call_id
    target = {None: cid, "ringing": ringing_call}.get(call, call)
    sw.advance(3_000)
    before = sw.snapshot()
    with pytest.raises(SwitchError) as err:
        sw.generate_digits(target, device, digits, 3_000)
    assert err.value.code == code
    assert sw.snapshot() == before


def test_an_ivr_number_answers_at_once_and_never_rings_out() -> None:
    sw = ivr_switch()
    out = sw.inbound(CUSTOMER, IVR_NO, 1_000)
    assert kinds(out) == [("Originated", "T1"), ("Delivered", IVR_NO), ("Established", IVR_NO)]
    cid = out[0].call_id
    assert sw.calls[cid].state == "connected" and sw.next_deadline() is None
    assert not sw.is_busy(IVR_NO)
    second = sw.inbound("+3161", IVR_NO, 1_100)  # many ports: a second caller is answered too
    assert kinds(second)[-1] == ("Established", IVR_NO)
    assert sw.advance(1_000_000) == []  # nothing rings, nothing times out


def test_the_ivr_hands_the_call_to_a_queue_with_its_results() -> None:
    sw = ivr_switch()
    cid = sw.inbound(CUSTOMER, IVR_NO, 1_000)[0].call_id
    sw.generate_digits(cid, "T1", "2", 2_000)
    sw.set_attached_data(cid, {"ivr.language": "nl", "skills": "billing"}, 3_000, device=IVR_NO)
    out = sw.transfer(cid, IVR_NO, QUEUE, 3_000)
    assert kinds(out) == [("Transferred", IVR_NO), ("Queued", QUEUE)]
    assert out[-1].attached_data == {"ivr.language": "nl", "skills": "billing"}
    assert out[-1].dnis == IVR_NO and out[-1].calling_device == IVR_NO  # type: ignore[attr-defined]
    assert sw.call(cid).state == "queued" and set(sw.calls[cid].connections) == {"T1", QUEUE}


def test_the_ivr_clears_a_self_served_call_and_the_caller_may_hang_up_first() -> None:
    sw = ivr_switch()
    a = sw.inbound(CUSTOMER, IVR_NO, 1_000)[0].call_id
    b = sw.inbound("+3161", IVR_NO, 1_000)[0].call_id
    assert kinds(sw.clear_connection(a, IVR_NO, 2_000)) == [("ConnectionCleared", IVR_NO), ("ConnectionCleared", "T1")]
    assert kinds(sw.clear_connection(b, "T2", 2_000)) == [("ConnectionCleared", "T2"), ("ConnectionCleared", IVR_NO)]
    assert sw.calls == {}


def test_an_ivr_cannot_dial_hold_or_be_held_like_a_phone() -> None:
    sw = ivr_switch()
    cid = sw.inbound(CUSTOMER, IVR_NO, 1_000)[0].call_id
    for attempt in (
        lambda: sw.make_call(IVR_NO, "1001", 2_000),
        lambda: sw.hold(cid, IVR_NO, 2_000),
        lambda: sw.consult(cid, IVR_NO, "1001", 2_000),
    ):
        with pytest.raises(SwitchError) as err:
            attempt()
        assert err.value.code == "not_allowed"
    with pytest.raises(ValueError):
        SwitchConfig(extensions=("1001",), queues=("5000",), ivrs=("5000",))
