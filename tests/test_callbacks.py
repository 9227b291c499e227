"""Callbacks and virtual hold: the router (places, timers, accounting, replay) and the callback channel."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from twisted.internet import task

import contactcentre.events as E
from contactcentre.acd import Router, RouterError
from contactcentre.acd.stats import LiveStats
from contactcentre.config import ConfigError, parse_config
from contactcentre.edge.voice.callback import CallbackChannel, CallbackError, number_zones, window_start
from contactcentre.edge.voice.channel import VoiceChannel
from contactcentre.server.centre import Centre
from contactcentre.server.clock import ManualClock
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.customers import create_customer
from contactcentre.store.schema import interactions
from contactcentre.telephony import Switch, SwitchConfig
from contactcentre.telephony.driver import SwitchDriver
from tests.harness import Harness, agents

QUEUES = [
    {"name": "support", "skills": {"general": 1}, "channels": ["voice", "callback"], "max_wait_s": 300},
    {"name": "voice_only", "skills": {"general": 1}, "channels": ["voice"]},
]


def centre(**kw: Any) -> Harness:
    return Harness(queues=QUEUES, agents=agents(("a1", {"general": 5})), **kw)


def three_waiting(h: Harness) -> None:
    """a1 is busy on c0; c1, c2, c3 wait in that order."""
    h.login("a1")
    h.arrive("c0")
    h.accept("c0")
    for i, cid in enumerate(("c1", "c2", "c3"), 1):
        h.at(i)
        h.arrive(cid)


def serve_next(h: Harness, busy: str) -> str:
    """a1 finishes ``busy`` and, once its wrap-up has run out, is offered the next contact: which one?"""
    h.end(busy)
    made = len(h.of(E.OfferMade))
    while len(h.of(E.OfferMade)) == made:
        due = h.router.next_deadline()
        assert due is not None
        h.at((due - h.start) / 1000)
    return h.of(E.OfferMade)[-1].contact_id


# --------------------------------------------------------------------------------------------- virtual hold


def test_a_callback_keeps_the_callers_place() -> None:
    h = centre()
    three_waiting(h)
    h.at(5)
    out = h.send(E.CallbackRequested, contact_id="c2", number="+31201234567")
    assert [type(e) for e in out] == [E.CallbackRequested, E.ContactCallbackQueued, E.ContactQueued]
    q = out[-1]
    assert (q.channel, q.position, q.via, q.waiting_since_ms) == ("callback", 2, "virtual_hold", h.start + 2000)
    c2 = h.router.contacts["c2"]
    assert (c2.channel, c2.callback_number, c2.attempt) == ("callback", "+31201234567", 1)
    # The caller hangs up: no abandon, the callback waits on.
    h.send(E.CustomerLeft, contact_id="c2")
    assert not h.of(E.ContactAbandoned) and h.state("c2") == "queued"
    # Served in arrival order across the channels: c1 (call), c2 (callback), c3 (call).
    assert serve_next(h, "c0") == "c1"
    h.accept("c1")
    assert serve_next(h, "c1") == "c2"
    offer = h.offer_of("c2")
    assert offer.channel == "callback"
    assert offer.expires_ms == offer.at_ms + 30_000  # the callback channel's offer timeout, not voice's 15 s
    h.accept("c2")
    (connected,) = [e for e in h.of(E.ContactConnected) if e.contact_id == "c2"]
    assert connected.wait_ms == connected.at_ms - (h.start + 2000)  # its wait clock ran on from the call
    assert serve_next(h, "c2") == "c3"


def test_a_callback_is_not_sent_away_by_max_wait_and_frees_a_place_in_the_line() -> None:
    h = centre()
    three_waiting(h)
    assert h.router.queues["support"].depth == 3
    h.send(E.CallbackRequested, contact_id="c1", number="+31201234567")
    assert h.router.queues["support"].depth == 2
    h.at(400)  # past the queue's 300 s maximum wait
    left = [e.contact_id for e in h.of(E.ContactOverflowed) if e.left]
    assert left == ["c2", "c3"]
    assert h.state("c1") == "queued"


def test_only_a_waiting_call_in_a_queue_that_serves_callbacks_becomes_one() -> None:
    h = centre()
    h.login("a1")
    h.arrive("c0")  # offered to a1 at once
    with pytest.raises(RouterError, match="only a waiting call"):
        h.send(E.CallbackRequested, contact_id="c0", number="+31201234567")
    h.arrive("v1", queue="voice_only")
    with pytest.raises(RouterError, match="does not serve callbacks"):
        h.send(E.CallbackRequested, contact_id="v1", number="+31201234567")
    h.arrive("c1")
    with pytest.raises(RouterError, match="number"):
        h.send(E.CallbackRequested, contact_id="c1", number="")
    assert h.router.contacts["c1"].channel == "voice"


def test_virtual_hold_accounting_keeps_callbacks_out_of_voice_abandons_and_service_level() -> None:
    h = centre()
    three_waiting(h)
    h.at(30)  # past the 20 s voice SLA for c1
    h.send(E.CallbackRequested, contact_id="c1", number="+31201234567")
    h.send(E.CustomerLeft, contact_id="c1")
    h.send(E.CustomerLeft, contact_id="c3")  # a real abandon
    stats = LiveStats()
    stats.apply_all(h.log)
    snap = {(k[0], k[1]): v for k, v in stats.buckets.items()}
    voice, callback = snap[("support", "voice")], snap[("support", "callback")]
    assert (voice.offered, voice.answered, voice.abandoned, voice.callbacks) == (4, 1, 1, 1)
    assert (callback.offered, callback.abandoned) == (1, 0)
    # The callback keeps the call's SLA deadline: its answer is already late.
    assert h.router.contacts["c1"].sla_deadline_ms == h.start + 1000 + 20_000
    serve_next(h, "c0")
    h.accept("c1")
    stats = LiveStats()
    stats.apply_all(h.log)
    callback = {(k[0], k[1]): v for k, v in stats.buckets.items()}[("support", "callback")]
    assert (callback.answered, callback.answered_within) == (1, 0)


# ---------------------------------------------------------------------------------------- scheduled callbacks


def schedule(h: Harness, cid: str, due_s: float, **kw: Any) -> list[E.Event]:
    fields = {"queue": "support", "number": "+81312345678", "due_ms": h.start + round(due_s * 1000), **kw}
    return h.send(E.CallbackScheduled, contact_id=cid, **fields)


def test_a_scheduled_callback_is_a_timer_and_arrives_when_due() -> None:
    h = centre()
    h.login("a1")
    schedule(h, "cb1", 3600, customer_id="cus-1", attempt=2)
    assert h.router.next_deadline() == h.start + 3_600_000
    assert "cb1" not in h.router.contacts and h.router.arrived == 0
    h.at(3599.999)
    assert not h.of(E.ContactCallbackQueued)
    h.at(3600)
    kinds = [type(e) for e in h.log if getattr(e, "contact_id", None) == "cb1"]
    assert kinds == [E.CallbackScheduled, E.ContactCallbackQueued, E.ContactQueued, E.OfferMade]
    (cq,) = h.of(E.ContactCallbackQueued)
    assert (cq.via, cq.attempt, cq.customer_id, cq.waiting_since_ms) == ("scheduled", 2, "cus-1", h.now)
    c = h.router.contacts["cb1"]
    assert (c.channel, c.callback_number, c.attempt, c.customer_id) == ("callback", "+81312345678", 2, "cus-1")
    assert h.router.arrived == 1


def test_a_callback_due_already_arrives_at_once() -> None:
    h = centre()
    h.at(10)
    schedule(h, "cb1", 5)
    assert h.state("cb1") == "queued"


def test_scheduled_callbacks_are_checked_when_scheduled() -> None:
    h = centre()
    schedule(h, "cb1", 60)
    with pytest.raises(RouterError, match="cb1"):
        schedule(h, "cb1", 90)
    with pytest.raises(RouterError, match="does not serve callbacks"):
        schedule(h, "cb2", 60, queue="voice_only")
    with pytest.raises(RouterError, match="nope"):
        schedule(h, "cb3", 60, queue="nope")
    with pytest.raises(RouterError, match="attempt"):
        schedule(h, "cb4", 60, attempt=0)
    assert list(h.router.scheduled) == ["cb1"]


def test_cancel_a_scheduled_callback_and_a_waiting_one() -> None:
    h = centre()
    schedule(h, "cb1", 60)
    h.send(E.CallbackCancelled, contact_id="cb1", reason="customer called in")
    assert h.router.next_deadline() is None
    h.at(120)
    assert not h.of(E.ContactCallbackQueued)
    # One waiting in its queue, then one ringing at an agent.
    schedule(h, "cb2", 120)
    assert h.state("cb2") == "queued"
    out = h.send(E.CallbackCancelled, contact_id="cb2")
    assert [type(e) for e in out] == [E.CallbackCancelled, E.ContactWithdrawn]
    h.login("a1")
    schedule(h, "cb3", 120)
    assert h.state("cb3") == "offered"
    out = h.send(E.CallbackCancelled, contact_id="cb3")
    assert [type(e) for e in out][:3] == [E.CallbackCancelled, E.OfferCancelled, E.ContactWithdrawn]
    assert h.agent_state("a1") == "available"
    assert h.router.census()["withdrawn"] == 2
    with pytest.raises(RouterError):
        h.send(E.CallbackCancelled, contact_id="cb3")
    h.arrive("c1")  # a call is not a callback
    h.accept("c1")
    with pytest.raises(RouterError, match="only a callback"):
        h.send(E.CallbackCancelled, contact_id="c1")
    stats = LiveStats()
    stats.apply_all(h.log)
    cb = {(k[0], k[1]): v for k, v in stats.buckets.items()}[("support", "callback")]
    assert (cb.offered, cb.withdrawn, cb.abandoned) == (2, 2, 0)


def test_callbacks_survive_a_restart_by_replaying_the_inputs() -> None:
    h = centre()
    three_waiting(h)
    h.send(E.CallbackRequested, contact_id="c2", number="+31201234567")
    schedule(h, "cb1", 600)
    inputs = [e for e in h.log if E.is_input(e)]
    fresh = Router(h.cfg, start_ms=h.start)
    replayed: list[E.Event] = []
    for ev in inputs:
        replayed += fresh.handle(ev)
    assert replayed == h.log
    assert fresh.contacts["c2"].channel == "callback" and fresh.contacts["c2"].rank == h.router.contacts["c2"].rank
    assert list(fresh.scheduled) == ["cb1"]
    assert fresh.advance(h.start + 600_000) == h.router.advance(h.start + 600_000)
    assert fresh.contacts["cb1"].state == "queued"


# ------------------------------------------------------------------------------------------ calling window


def at_utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("now", "number", "due"),
    [
        ("2027-01-05T18:00", "+81312345678", "2027-01-06T00:00"),  # 03:00 in Tokyo: at 09:00 Tokyo time
        ("2027-01-05T02:00", "+81312345678", "2027-01-05T02:00"),  # 11:00 in Tokyo: now
        ("2027-01-05T11:30", "+81312345678", "2027-01-06T00:00"),  # 20:30 in Tokyo: tomorrow 09:00
        ("2027-01-05T07:59", "+31201234567", "2027-01-05T08:00"),  # 08:59 in Amsterdam: a minute later
        ("2027-01-05T07:59", "+12125550123", "2027-01-05T14:00"),  # New York, 02:59: 09:00 EST
        ("2027-07-05T07:59", "+31201234567", "2027-07-05T07:59"),  # summer time: 09:59 in Amsterdam
    ],
)
def test_the_due_time_is_inside_the_window_in_the_customers_time_zone(now: str, number: str, due: str) -> None:
    zones = number_zones(number, "UTC")
    assert window_start(at_utc(now), zones, "09:00-20:00") == at_utc(due)


def test_a_number_without_a_zone_uses_the_centres_and_zones_must_all_be_open() -> None:
    assert number_zones("+81312345678", "Europe/Amsterdam") == ("Asia/Tokyo",)
    assert number_zones("not a number", "Europe/Amsterdam") == ("Europe/Amsterdam",)
    # 09:00 in Amsterdam is 17:00 in Tokyo: both open only from 09:00 to 12:00 Amsterdam time (in winter).
    both = ("Europe/Amsterdam", "Asia/Tokyo")
    assert window_start(at_utc("2027-01-05T07:00"), both, "09:00-20:00") == at_utc("2027-01-05T08:00")
    assert window_start(at_utc("2027-01-05T11:30"), both, "09:00-20:00") == at_utc("2027-01-06T08:00")
    with pytest.raises(ValueError, match="never open"):
        window_start(at_utc("2027-01-05T07:00"), ("Europe/Amsterdam", "Pacific/Kiritimati"), "09:00-10:00")


# ---------------------------------------------------------------------------------- the channel, end to end

RING_MS = 20_000
CB_CONFIG = parse_config(
    {
        "timezone": "Europe/Amsterdam",
        "skills": {"general": "General"},
        "tiers": {"gold": {"priority": 3, "answer_s": 20}},
        "queues": [
            {
                "name": "support",
                "skills": {"general": 1},
                "channels": ["voice", "callback"],
                "callback_offer_after_s": 60,
            },
            {"name": "mail", "skills": {"general": 1}, "channels": ["email"]},
        ],
        "agents": [{"id": "a1", "skills": {"general": 5}}],
        "callbacks": {"window": "09:00-20:00", "max_attempts": 2, "retry_after_s": 60},
    },
    "<test>",
)
ANN = "+31201234567"  # Amsterdam
KENJI = "+81312345678"  # Tokyo
START = at_utc("2027-01-05T09:30")  # 10:30 in Amsterdam, 18:30 in Tokyo


@dataclass
class Rig:
    centre: Centre
    clock: ManualClock
    ring_clock: task.Clock
    switch: Switch
    driver: SwitchDriver
    voice: VoiceChannel
    callbacks: CallbackChannel
    events: list[E.Event] = field(default_factory=list)

    def of(self, cls: type[Any], contact_id: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls) and contact_id in (None, getattr(e, "contact_id", None))]

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.centre.driver._run(self.clock.now_ms())

    def ring_out(self) -> None:
        """The far end does not pick up: the switch's ring timer runs out."""
        self.clock.advance(RING_MS)
        self.ring_clock.advance(RING_MS / 1000)
        self.centre.driver._run(self.clock.now_ms())

    def dialled(self) -> tuple[str, str]:
        """The call a1's phone is making: (call id, the trunk the customer is on)."""
        (call,) = [c for c in self.switch.calls.values() if "a1" in c.connections]
        trunk = next(d for d, conn in call.connections.items() if conn.kind == "trunk")
        return call.id, trunk

    def far_end(self, op: str) -> None:
        call_id, trunk = self.dialled()
        if op == "answer":
            self.driver.run(lambda now: self.switch.answer(call_id, trunk, now))
        else:
            self.driver.run(lambda now: self.switch.clear_connection(call_id, trunk, now))


def run_rig(tmp_path: Path, scenario: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        centre = await open_centre(CB_CONFIG, tmp_path / "centre.sqlite")
        try:
            clock = ManualClock(max(START, centre.now_ms()))
            centre.clock = centre.driver.clock = clock
            switch = Switch(
                SwitchConfig(extensions=("a1",), queues=("q-support",), trunks=4, ring_timeout_ms=RING_MS),
                start_ms=clock.now_ms(),
            )
            ring_clock = task.Clock()
            driver = SwitchDriver(switch, ring_clock, now_ms=clock.now_ms)
            voice = VoiceChannel(centre, driver)
            callbacks = CallbackChannel(centre, voice, new_id=iter(f"cb{i}" for i in range(1, 99)).__next__)
            assert centre.channels["callback"] is callbacks
            rig = Rig(centre, clock, ring_clock, switch, driver, voice, callbacks)
            centre.subscribe(rig.events.extend)
            now = clock.now_ms()
            for cid, phone, fields in (
                ("ann", ANN, {"consent_calls": True, "tier": "gold"}),
                ("bob", "+31201234568", {"consent_calls": True, "do_not_call": True}),
                ("cas", "+31201234569", {}),
                ("kenji", KENJI, {"consent_calls": True}),
            ):
                await centre.write(
                    partial(create_customer, customer_id=cid, identities_=[("phone", phone)], **fields), now
                )
            await scenario(rig)
            await callbacks.stop()
            await voice.stop()
            assert "callback" not in centre.channels
        finally:
            await close_centre(centre)

    asyncio.run(main())


def test_do_not_call_consent_and_bad_requests_are_refused(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cb = rig.callbacks

        async def code(**kw: Any) -> str:
            with pytest.raises(CallbackError) as err:
                await cb.request(**{"queue": "support", **kw})
            return err.value.code

        assert await code(number="+31201234568", by_customer=True) == "do_not_call"  # even when asked for
        assert await code(number="+31201234569") == "no_consent"  # cas gave no consent to be called
        assert await code(number="+31201234599") == "no_consent"  # nobody we know: no consent on record
        assert await code(number="12") == "bad_number"
        assert await code(number=ANN, queue="mail") == "bad_queue"
        assert await code(number=ANN, contact_id="nope") == "not_waiting"
        assert not rig.centre.router.scheduled and not rig.centre.router.contact_list()
        # The customer asking is their consent; a known customer's consent stands for any callback.
        got = await cb.request(number="020 123 4569", queue="support", by_customer=True, at_ms=START + 3_600_000)
        assert (got.contact_id, got.due_ms, got.virtual_hold) == ("cb1", START + 3_600_000, False)
        (scheduled,) = rig.of(E.CallbackScheduled)
        assert (scheduled.number, scheduled.customer_id) == ("+31201234569", "cas")
        got = await cb.request(number=ANN, queue="support")
        assert rig.centre.router.contact(got.contact_id).tier == "gold"

    run_rig(tmp_path, scenario)


def test_a_request_at_night_in_the_customers_zone_is_due_at_the_next_opening(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.advance(at_utc("2027-01-05T18:00") - rig.clock.now_ms())  # 03:00 in Tokyo, 19:00 in Amsterdam
        got = await rig.callbacks.request(number=KENJI, queue="support")
        assert got.due_ms == at_utc("2027-01-06T00:00")  # 09:00 in Tokyo (01:00 in Amsterdam)
        assert rig.centre.router.next_deadline() == got.due_ms
        rig.advance(got.due_ms - rig.clock.now_ms())
        (queued,) = rig.of(E.ContactCallbackQueued, got.contact_id)
        assert (queued.via, queued.customer_id) == ("scheduled", "kenji")

    run_rig(tmp_path, scenario)


def test_agent_accepts_the_switch_dials_the_customer_answers_and_hangs_up(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        got = await rig.callbacks.request(number=ANN, queue="support")
        cid = got.contact_id
        (offer,) = rig.of(E.OfferMade, cid)
        assert offer.agent_id == "a1" and offer.channel == "callback"
        assert not rig.switch.calls  # nothing is dialled before the agent takes it
        await rig.callbacks.answer(cid, "a1")
        call_id, trunk = rig.dialled()
        call = rig.switch.calls[call_id]
        assert (call.ani, call.dnis) == ("a1", ANN)  # from the agent's extension to the customer's number
        assert call.connections[trunk].state == "alerting"
        assert rig.centre.router.contact(cid).state == "connected"
        rig.advance(5_000)
        rig.far_end("answer")
        (answered,) = rig.of(E.CallbackAttemptEnded, cid)
        assert (answered.outcome, answered.attempt) == ("answered", 1)
        await rig.callbacks.hold(cid, "a1")
        assert rig.centre.router.contact(cid).state == "held"
        await rig.callbacks.retrieve(cid, "a1")
        assert rig.centre.router.contact(cid).state == "connected"
        rig.advance(60_000)
        rig.far_end("hang_up")
        (wrap,) = rig.of(E.WrapUpStarted, cid)
        assert wrap.by == "customer"
        assert not rig.switch.calls
        rig.advance(30_000)
        (closed,) = rig.of(E.ContactClosed, cid)
        assert closed.channel == "callback" and closed.talk_ms == 65_000

    run_rig(tmp_path, scenario)


def test_the_agent_hanging_up_from_the_console_clears_the_phone(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        got = await rig.callbacks.request(number=ANN, queue="support")
        (offer,) = rig.of(E.OfferMade, got.contact_id)
        # The console accepts without the phone (the agent protocol's own path): the dial follows all the same.
        rig.centre.submit(
            E.OfferAccepted(at_ms=rig.clock.now_ms(), offer_id=offer.offer_id, contact_id=got.contact_id, agent_id="a1")
        )
        rig.far_end("answer")
        rig.centre.submit(E.ContactEnded(at_ms=rig.clock.now_ms(), contact_id=got.contact_id, agent_id="a1"))
        assert not rig.switch.calls
        (wrap,) = rig.of(E.WrapUpStarted, got.contact_id)
        assert wrap.by == "agent"

    run_rig(tmp_path, scenario)


def test_the_console_and_api_actions_operate_the_callback_call(tmp_path: Path) -> None:
    """``ContactActions`` (the agent protocol's and the REST API's door) reaches the callback channel's phone,
    not the voice channel's, for a callback contact."""
    from contactcentre.server.contact_actions import ContactActions

    async def scenario(rig: Rig) -> None:
        actions = ContactActions(rig.centre)
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        got = await rig.callbacks.request(number=ANN, queue="support")
        cid = got.contact_id
        await actions.answer(cid, "a1")
        rig.dialled()  # a1's phone is dialling the customer
        rig.far_end("answer")
        await actions.hold(cid, "a1")
        assert rig.centre.router.contact(cid).state == "held"
        await actions.retrieve(cid, "a1")
        assert rig.centre.router.contact(cid).state == "connected"
        await actions.hang_up(cid, "a1")
        assert not rig.switch.calls
        (wrap,) = rig.of(E.WrapUpStarted, cid)
        assert wrap.by == "agent"

    run_rig(tmp_path, scenario)


def test_no_answer_is_retried_then_the_callback_fails(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        got = await rig.callbacks.request(number=ANN, queue="support")
        await rig.callbacks.answer(got.contact_id, "a1")
        rig.ring_out()
        (disp,) = rig.of(E.DispositionSet, got.contact_id)
        assert disp.code == "no_answer"
        assert rig.of(E.WrapUpStarted, got.contact_id)
        assert not rig.switch.calls
        await rig.callbacks.settle()
        (first,) = rig.of(E.CallbackAttemptEnded, got.contact_id)
        assert (first.outcome, first.attempt, first.retry_contact_id) == ("no_answer", 1, "cb1~a2")
        assert first.retry_ms == rig.clock.now_ms() + 60_000
        rig.advance(60_000)  # wrap-up (30 s) is over; the retry falls due
        (retry,) = rig.of(E.ContactCallbackQueued, "cb1~a2")
        assert retry.attempt == 2
        await rig.callbacks.answer("cb1~a2", "a1")
        rig.far_end("busy")
        await rig.callbacks.settle()
        (last,) = rig.of(E.CallbackAttemptEnded, "cb1~a2")
        assert (last.outcome, last.attempt, last.retry_contact_id) == ("busy", 2, None)  # two attempts: failed
        assert [d.code for d in rig.of(E.DispositionSet)] == ["no_answer", "busy"]
        assert not rig.centre.router.scheduled
        rig.advance(30_000)  # the second attempt's wrap-up ends
        await rig.centre.commit()
        # Every attempt is an interaction of its own in the case store, with what became of it.
        rows = await rig.centre.read(
            lambda conn: {
                r.id: r
                for r in conn.execute(select(interactions).where(interactions.c.id.in_(["cb1", "cb1~a2"]))).all()
            }
        )
        assert {cid: (r.channel, r.direction, r.customer_id, r.outcome, r.disposition) for cid, r in rows.items()} == {
            "cb1": ("callback", "outbound", "ann", "no_answer", "no_answer"),
            "cb1~a2": ("callback", "outbound", "ann", "busy", "busy"),
        }
        assert rows["cb1~a2"].started_ms == retry.at_ms and rows["cb1~a2"].ended_ms is not None

    run_rig(tmp_path, scenario)


def test_virtual_hold_the_caller_presses_1_hangs_up_and_is_called_back_in_turn(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        first = rig.driver.simulate_inbound("+31201234599", "q-support")
        await rig.voice.settle()
        await rig.voice.answer(first, "a1")
        # Two more callers wait; Ann is told about the callback (her wait is estimated above 60 s).
        ann = rig.driver.simulate_inbound("020 123 4567", "q-support")
        bob = rig.driver.simulate_inbound("+31201234568", "q-support")
        await rig.voice.settle()
        assert {ann, bob} <= rig.callbacks.offered
        assert first not in rig.callbacks.offered  # answered at once: never offered one

        def press_1(call_id: str) -> None:
            trunk = rig.voice.calls[call_id].caller
            rig.driver.run(lambda now: rig.switch.generate_digits(call_id, trunk, "1", now))

        press_1(bob)  # do-not-call: Bob stays on the line and keeps waiting
        await rig.callbacks.settle()
        assert bob in rig.switch.calls and rig.centre.router.contact(bob).channel == "voice"
        rig.advance(10_000)
        press_1(ann)
        await rig.callbacks.settle()
        (requested,) = rig.of(E.CallbackRequested, ann)
        assert requested.number == ANN
        assert ann not in rig.switch.calls  # goodbye: the call is cleared
        assert not rig.of(E.ContactAbandoned)  # and that is no abandon
        c = rig.centre.router.contact(ann)
        assert (c.channel, c.state) == ("callback", "queued")
        # a1 finishes the first call; Ann arrived before Bob, so her callback is next.
        await rig.voice.hang_up(first, "a1")
        rig.advance(30_000)
        offer = rig.of(E.OfferMade)[-1]
        assert (offer.contact_id, offer.channel) == (ann, "callback")
        await rig.callbacks.answer(ann, "a1")
        call_id, _ = rig.dialled()
        assert rig.switch.calls[call_id].dnis == ANN

    run_rig(tmp_path, scenario)


def test_a_scheduled_callback_and_a_virtual_hold_survive_a_restart_of_the_centre(tmp_path: Path) -> None:
    db = tmp_path / "centre.sqlite"
    due = START + 3_600_000

    async def first_run() -> None:
        centre = await open_centre(CB_CONFIG, db)
        now = max(START, centre.now_ms())
        centre.submit(E.ContactArrived(at_ms=now, contact_id="call-1", queue="support", channel="voice"))
        centre.submit(E.ContactArrived(at_ms=now + 1, contact_id="call-2", queue="support", channel="voice"))
        centre.submit(E.CallbackRequested(at_ms=now + 2, contact_id="call-1", number=ANN))
        centre.submit(E.CallbackScheduled(at_ms=now + 3, contact_id="cb-1", queue="support", due_ms=due, number=KENJI))
        await centre.commit()
        centre.driver.close()  # the process dies here, everything committed
        await centre.writer.close()
        centre.close()

    async def second_run() -> None:
        centre = await open_centre(CB_CONFIG, db)
        try:
            router = centre.router
            assert list(router.scheduled) == ["cb-1"] and router.scheduled["cb-1"][1].due_ms == due
            assert [(c.id, c.channel) for c in router.waiting_contacts()] == [
                ("call-1", "callback"),
                ("call-2", "voice"),
            ]
            assert router.contacts["call-1"].callback_number == ANN
        finally:
            await close_centre(centre)

    asyncio.run(first_run())
    asyncio.run(second_run())


@pytest.mark.parametrize(
    ("callbacks", "key"),
    [({"window": "9-17"}, "callbacks.window"), ({"max_attempts": 0}, "callbacks.max_attempts")],
)
def test_callback_settings_are_checked(callbacks: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"callbacks": callbacks}, "<test>")
    assert err.value.key == key


def test_the_agent_giving_up_while_the_customer_rings_is_no_answer_and_retried(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        got = await rig.callbacks.request(number=ANN, queue="support")
        await rig.callbacks.answer(got.contact_id, "a1")
        call_id, _ = rig.dialled()
        rig.advance(10_000)
        rig.driver.run(lambda now: rig.switch.clear_connection(call_id, "a1", now))  # the agent hangs up ringing
        await rig.callbacks.settle()
        (ended,) = rig.of(E.CallbackAttemptEnded, got.contact_id)
        assert (ended.outcome, ended.retry_contact_id) == ("no_answer", "cb1~a2")
        assert "cb1~a2" in rig.centre.router.scheduled
        (disp,) = rig.of(E.DispositionSet, got.contact_id)
        assert disp.code == "no_answer"

    run_rig(tmp_path, scenario)


def test_a_callback_being_dialled_when_the_server_dies_is_retried_after_the_restart(tmp_path: Path) -> None:
    db = tmp_path / "centre.sqlite"

    async def first_run() -> None:
        centre = await open_centre(CB_CONFIG, db)
        now = max(START, centre.now_ms())
        centre.submit(E.AgentLoggedIn(at_ms=now, agent_id="a1"))
        centre.submit(E.CallbackScheduled(at_ms=now, contact_id="cb-1", queue="support", due_ms=now, number=ANN))
        (o,) = centre.router.offers.values()
        centre.submit(E.OfferAccepted(at_ms=now + 1, offer_id=o.id, contact_id="cb-1", agent_id="a1"))
        assert centre.router.contact("cb-1").state == "connected"  # a1's phone would be dialling Ann
        await centre.commit()
        centre.driver.close()  # the process dies here
        await centre.writer.close()
        centre.close()

    async def second_run() -> None:
        centre = await open_centre(CB_CONFIG, db)
        events: list[E.Event] = []
        centre.subscribe(events.extend)
        try:
            switch = Switch(SwitchConfig(extensions=("a1",), queues=("q-support",), trunks=4), start_ms=centre.now_ms())
            voice = VoiceChannel(centre, SwitchDriver(switch, task.Clock(), now_ms=centre.now_ms))
            callbacks = CallbackChannel(centre, voice)
            voice.restore()
            callbacks.restore()
            await callbacks.settle()
            (ended,) = [e for e in events if isinstance(e, E.CallbackAttemptEnded)]
            assert (ended.contact_id, ended.outcome, ended.retry_contact_id) == ("cb-1", "interrupted", "cb-1~a2")
            assert "cb-1~a2" in centre.router.scheduled
            await centre.commit()
            row = await centre.read(
                lambda conn: conn.execute(select(interactions).where(interactions.c.id == "cb-1")).one()
            )
            assert (row.outcome, row.disposition) == ("interrupted", "interrupted")
            await callbacks.stop()
            await voice.stop()
        finally:
            await close_centre(centre)

    asyncio.run(first_run())
    asyncio.run(second_run())
