"""The voice bridge: the simulated switch and a live centre (SQLite) joined by ``VoiceChannel``.

Nothing sleeps. The centre's clock is replaced by a ``ManualClock`` that the switch driver shares, the router's
timers are fired with ``centre.driver._run(now)`` after moving that clock, and the switch's ring timers live
on a ``twisted.internet.task.Clock`` that only moves when a test says so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from twisted.internet import task

import contactcentre.events as E
from contactcentre.config import parse_config
from contactcentre.edge.voice.channel import VoiceChannel, VoiceError, switch_config
from contactcentre.server.centre import Centre
from contactcentre.server.clock import ManualClock
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.customers import create_customer
from contactcentre.store.schema import interactions
from contactcentre.telephony import Diverted, Switch, SwitchConfig, SwitchEvent
from contactcentre.telephony.driver import SwitchDriver

T = TypeVar("T")
OFFER_MS = 15_000

CONFIG = parse_config(
    {
        "skills": {"general": "General", "sales": "Sales"},
        "channels": {"voice": {"offer_timeout_s": OFFER_MS / 1000, "wrap_up_s": 30}},
        "tiers": {"gold": {"priority": 10, "answer_s": 20, "answer_target": 0.9}},
        "queues": [
            {"name": "support", "skills": {"general": 1}, "channels": ["voice", "chat"]},
            {"name": "sales", "skills": {"sales": 1}, "channels": ["voice"]},
            {"name": "mail", "skills": {"general": 1}, "channels": ["email"]},
        ],
        "agents": [
            {"id": "a1", "skills": {"general": 5}},
            {"id": "a2", "skills": {"general": 5}},
            {"id": "a3", "skills": {"sales": 5}},
        ],
    },
    "<test>",
)
ANN_PHONE = "020 123 4567"  # dialled nationally: the store keeps +31201234567
ANN_E164 = "+31201234567"


@dataclass
class Rig:
    centre: Centre
    clock: ManualClock
    ring_clock: task.Clock
    switch: Switch
    driver: SwitchDriver
    voice: VoiceChannel
    events: list[E.Event] = field(default_factory=list)
    switch_events: list[SwitchEvent] = field(default_factory=list)

    async def call(self, ani: str = ANN_PHONE, queue: str = "support", attached: dict[str, str] | None = None) -> str:
        """A caller dials the queue's number; returns once the bridge has submitted the arrival."""
        cid = self.driver.simulate_inbound(ani, f"q-{queue}", attached)
        await self.voice.settle()
        return cid

    def login(self, *agents: str) -> None:
        for a in agents:
            self.centre.submit(E.AgentLoggedIn(at_ms=self.clock.now_ms(), agent_id=a))

    def advance(self, ms: int) -> None:
        """Time passes for the router (its timers fire); the switch's ring timers stay put."""
        self.clock.advance(ms)
        self.centre.driver._run(self.clock.now_ms())

    def of(self, cls: type[T], contact_id: str | None = None) -> list[T]:
        return [
            ev
            for ev in self.events
            if isinstance(ev, cls) and (contact_id is None or getattr(ev, "contact_id", None) == contact_id)
        ]

    def state(self, cid: str) -> str | None:
        c = self.centre.router.contact(cid)
        return c.state if c is not None else None

    def at(self, cid: str, device: str) -> str | None:
        """The switch connection state of ``device`` in call ``cid`` (None: not in it)."""
        call = self.switch.calls.get(cid)
        conn = call.connections.get(device) if call is not None else None
        return conn.state if conn is not None else None

    def hang_up_caller(self, cid: str) -> None:
        trunk = next(d for d, c in self.switch.calls[cid].connections.items() if c.kind == "trunk")
        self.driver.run(lambda now: self.switch.clear_connection(cid, trunk, now))

    async def interaction(self, cid: str) -> dict[str, Any]:
        await self.centre.commit()

        def row(conn: Any) -> dict[str, Any]:
            return dict(conn.execute(select(interactions).where(interactions.c.id == cid)).mappings().one())

        return await self.centre.read(row)


def run(tmp_path: Path, scenario: Callable[[Rig], Awaitable[None]], config: Any = CONFIG) -> None:
    async def main() -> None:
        centre = await open_centre(config, tmp_path / "centre.sqlite")
        try:
            clock = ManualClock(centre.now_ms())
            centre.clock = centre.driver.clock = clock  # the router's time moves only when a test says so
            switch = Switch(
                SwitchConfig(
                    extensions=("a1", "a2", "a3"),
                    queues=("q-support", "q-sales"),
                    trunks=4,
                    ring_timeout_ms=OFFER_MS + 5_000,
                ),
                start_ms=clock.now_ms(),
            )
            ring_clock = task.Clock()
            driver = SwitchDriver(switch, ring_clock, now_ms=clock.now_ms)
            voice = VoiceChannel(centre, driver)
            rig = Rig(centre, clock, ring_clock, switch, driver, voice)
            centre.subscribe(rig.events.extend)
            driver.subscribe(rig.switch_events.extend)
            await centre.write(
                partial(create_customer, name="Ann", tier="gold", identities_=[("phone", ANN_E164)], customer_id="ann"),
                clock.now_ms(),
            )
            await scenario(rig)
            await voice.stop()
            assert centre.channels.get("voice") is None
        finally:
            await close_centre(centre)

    asyncio.run(main())


def offer_of(rig: Rig, cid: str) -> E.OfferMade:
    return rig.of(E.OfferMade, cid)[-1]


# ------------------------------------------------------------------------------------------- the happy path


def test_inbound_call_is_identified_offered_answered_and_ended_by_the_caller(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call(attached={"lang": "nl", "ivr_choice": "2"})
        [arrived] = rig.of(E.ContactArrived, cid)
        assert arrived.channel == "voice" and arrived.queue == "support"
        assert arrived.customer_id == "ann" and arrived.tier == "gold"  # screen-pop by ANI, normalised
        assert arrived.address == ANN_E164
        assert arrived.attributes == {"lang": "nl", "ivr_choice": "2"}
        offer = offer_of(rig, cid)
        assert offer.agent_id == "a1"
        assert rig.at(cid, "a1") == "alerting"  # the router's offer rings a1's phone
        assert rig.at(cid, "q-support") is None

        await rig.voice.answer(cid, "a1")
        assert rig.at(cid, "a1") == "connected"
        [accepted] = rig.of(E.OfferAccepted, cid)
        assert accepted.offer_id == offer.offer_id and accepted.agent_id == "a1"
        assert rig.state(cid) == "connected"
        assert rig.centre.router.agent("a1").state == "busy"

        rig.clock.advance(60_000)
        rig.hang_up_caller(cid)
        assert cid not in rig.switch.calls
        assert rig.state(cid) == "wrap_up"
        [wrap] = rig.of(E.WrapUpStarted, cid)
        assert wrap.by == "customer"
        rig.centre.submit(E.WrapUpEnded(at_ms=rig.clock.now_ms(), contact_id=cid, agent_id="a1"))
        [closed] = rig.of(E.ContactClosed, cid)
        assert closed.talk_ms == 60_000 and closed.channel == "voice" and closed.tier == "gold"

        row = await rig.interaction(cid)
        assert row["channel"] == "voice" and row["address"] == ANN_E164
        assert row["customer_id"] == "ann" and row["tier"] == "gold" and row["agent_id"] == "a1"
        assert row["outcome"] == "handled"
        assert rig.centre.driver.refused == 0
        assert cid not in rig.voice.calls  # forgotten once the call is over

    run(tmp_path, scenario)


def test_agent_hangs_up_ends_handling(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        await rig.voice.hang_up(cid, "a1")
        assert cid not in rig.switch.calls  # two-party call: the caller is cleared too
        [ended] = rig.of(E.ContactEnded, cid)
        assert ended.agent_id == "a1"
        assert rig.of(E.WrapUpStarted, cid)[0].by == "agent"
        assert not rig.of(E.CustomerLeft, cid)  # the trunk's clearing after the agent's is not a second end
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_unknown_caller_arrives_without_customer(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = await rig.call(ani="+44 20 7946 0018")
        [arrived] = rig.of(E.ContactArrived, cid)
        assert arrived.customer_id is None and arrived.tier is None
        assert arrived.address == "+442079460018"
        withheld = await rig.call(ani="anonymous")
        [arrived] = rig.of(E.ContactArrived, withheld)
        assert arrived.customer_id is None and arrived.address == "anonymous"  # not a number: kept as given
        assert rig.state(cid) == rig.state(withheld) == "queued"
        assert rig.at(cid, "q-support") == "queued"

    run(tmp_path, scenario)


# ---------------------------------------------------------------------------------------------- abandons


def test_caller_hangs_up_while_queued_is_an_abandon_with_its_wait(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = await rig.call()  # nobody logged in: it waits
        assert rig.state(cid) == "queued"
        rig.advance(7_000)
        rig.hang_up_caller(cid)
        [left] = rig.of(E.CustomerLeft, cid)
        [abandoned] = rig.of(E.ContactAbandoned, cid)
        assert abandoned.wait_ms == 7_000 and abandoned.channel == "voice" and abandoned.tier == "gold"
        assert left.at_ms == abandoned.at_ms
        row = await rig.interaction(cid)
        assert row["outcome"] == "abandoned" and row["address"] == ANN_E164 and row["wait_ms"] == 7_000

    run(tmp_path, scenario)


def test_caller_hangs_up_while_ringing_cancels_the_offer(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        assert rig.at(cid, "a1") == "alerting"
        rig.hang_up_caller(cid)
        assert cid not in rig.switch.calls
        [cancelled] = rig.of(E.OfferCancelled, cid)
        assert cancelled.reason == "customer_left"
        assert rig.of(E.ContactAbandoned, cid)
        assert rig.centre.router.agent("a1").state == "available"
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_caller_hangs_up_during_the_look_up_is_still_logged(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = rig.driver.simulate_inbound(ANN_PHONE, "q-support")
        rig.hang_up_caller(cid)  # before the look-up came back
        await rig.voice.settle()
        assert rig.of(E.ContactArrived, cid) and rig.of(E.ContactAbandoned, cid)
        assert cid not in rig.voice.calls

    run(tmp_path, scenario)


# ------------------------------------------------------------------------------------------ ring-no-answer


def test_ring_no_answer_is_the_routers_call_and_the_next_agent_rings(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1", "a2")
        cid = await rig.call()
        first = offer_of(rig, cid)
        other = "a2" if first.agent_id == "a1" else "a1"
        assert rig.at(cid, first.agent_id) == "alerting"
        rig.clock.set(first.expires_ms)
        rig.centre.driver._run(rig.clock.now_ms())  # the router's offer timer fires (before the switch's)
        [expired] = rig.of(E.OfferExpired, cid)
        assert expired.agent_id == first.agent_id
        assert rig.centre.router.agent(first.agent_id).presence == "away"  # missed offer
        second = offer_of(rig, cid)
        assert second.agent_id == other
        assert rig.at(cid, first.agent_id) is None
        assert rig.at(cid, other) == "alerting"
        # The call goes straight from the first phone to the next one (it stays the queue's: came_from).
        assert any(
            isinstance(e, Diverted) and e.device == first.agent_id and e.to_device == other for e in rig.switch_events
        )
        await rig.voice.answer(cid, other)
        assert rig.state(cid) == "connected"
        assert len(rig.of(E.ContactArrived)) == 1  # the call's trip back is no new arrival

    run(tmp_path, scenario)


def test_ring_no_answer_with_nobody_else_puts_the_call_back_in_its_queue(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        rig.advance(OFFER_MS)
        assert rig.of(E.OfferExpired, cid)
        assert rig.state(cid) == "queued"
        assert rig.at(cid, "a1") is None and rig.at(cid, "q-support") == "queued"
        assert rig.switch.next_deadline() is None  # no phone rings, so no ring timer either
        with pytest.raises(VoiceError):
            await rig.voice.answer(cid, "a1")  # a late answer from the first ring: the phone rings no more
        # a1 comes back; once the router lets it have the call again (one offer timeout), it rings again
        rig.centre.submit(E.AgentReady(at_ms=rig.clock.now_ms(), agent_id="a1"))
        rig.advance(OFFER_MS)
        assert offer_of(rig, cid).agent_id == "a1"
        assert rig.at(cid, "a1") == "alerting"
        assert len(rig.of(E.ContactArrived)) == 1

    run(tmp_path, scenario)


def test_the_switch_ring_timer_is_only_a_safety_net(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.switch.config.ring_timeout_ms > OFFER_MS
        cfg = switch_config(CONFIG)
        assert cfg.ring_timeout_ms == OFFER_MS + 5_000
        assert cfg.extensions == ("1001", "1002", "1003") and cfg.queues == ("2001", "2002", "2003")
        # Should the switch ring out first anyway, the call returns to its queue and nobody crashes.
        rig.login("a1")
        cid = await rig.call()
        rig.clock.advance(OFFER_MS + 5_000)
        rig.ring_clock.advance((OFFER_MS + 5_000) / 1000)
        assert rig.at(cid, "q-support") == "queued"
        rig.centre.driver._run(rig.clock.now_ms())
        assert rig.state(cid) == "queued" and rig.at(cid, "q-support") == "queued"

    run(tmp_path, scenario)


# ------------------------------------------------------------------------------------------ hold, transfer


def test_hold_and_retrieve_from_the_phone_reach_the_router(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        await rig.voice.hold(cid, "a1")
        assert rig.at(cid, "a1") == "held" and rig.state(cid) == "held"
        assert rig.of(E.ContactHeld, cid)[0].agent_id == "a1"
        rig.clock.advance(4_000)
        await rig.voice.retrieve(cid, "a1")
        assert rig.state(cid) == "connected" and rig.of(E.ContactRetrieved, cid)
        with pytest.raises(VoiceError) as err:
            await rig.voice.retrieve(cid, "a1")  # not held any more: the switch's word
        assert err.value.code == "invalid_state"
        rig.clock.advance(1_000)
        await rig.voice.hang_up(cid, "a1")
        rig.advance(30_000)  # wrap-up ends by its timer
        [closed] = rig.of(E.ContactClosed, cid)
        assert closed.hold_ms == 4_000 and closed.talk_ms == 1_000
        row = await rig.interaction(cid)
        assert row["outcome"] == "handled" and row["hold_ms"] == 4_000

    run(tmp_path, scenario)


def test_blind_transfer_to_a_queue_from_the_phone(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1", "a3")
        cid = await rig.call()
        assert offer_of(rig, cid).agent_id == "a1"
        await rig.voice.answer(cid, "a1")
        await rig.voice.transfer(cid, "a1", to_queue="sales")
        [moved] = rig.of(E.ContactTransferred, cid)
        assert moved.to_queue == "sales" and moved.agent_id == "a1"
        assert offer_of(rig, cid).agent_id == "a3"
        assert rig.at(cid, "a3") == "alerting" and rig.at(cid, "a1") is None
        assert rig.centre.router.agent("a1").state in ("available", "wrap_up")
        await rig.voice.answer(cid, "a3")
        assert rig.state(cid) == "connected"
        assert rig.centre.router.arrived == 1 and rig.centre.driver.refused == 0
        with pytest.raises(VoiceError):
            await rig.voice.transfer(cid, "a3", to_queue="mail")  # not a voice queue: the switch is untouched
        assert rig.at(cid, "a3") == "connected"

    run(tmp_path, scenario)


def test_blind_transfer_to_an_agent_from_the_phone(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        rig.login("a2")
        await rig.voice.transfer(cid, "a1", to_agent="a2")
        assert rig.of(E.ContactTransferred, cid)[0].to_agent_id == "a2"
        assert offer_of(rig, cid).agent_id == "a2"
        assert rig.at(cid, "a2") == "alerting"
        await rig.voice.answer(cid, "a2")
        assert rig.state(cid) == "connected" and rig.centre.router.contact(cid).agent_id == "a2"

    run(tmp_path, scenario)


def test_transfer_to_an_agent_the_router_cannot_offer_to_waits_in_the_queue(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a2", away_reason="lunch"))
        await rig.voice.transfer(cid, "a1", to_agent="a2")
        assert rig.state(cid) == "queued"
        assert rig.at(cid, "a2") is None and rig.at(cid, "q-support") == "queued"  # not left ringing a2

    run(tmp_path, scenario)


def test_consultative_transfer_from_the_phone_hands_the_contact_to_the_consulted_agent(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1", "a2")
        cid = await rig.call()
        agent = offer_of(rig, cid).agent_id
        other = "a2" if agent == "a1" else "a1"
        await rig.voice.answer(cid, agent)
        consult = rig.driver.run(lambda now: rig.switch.consult(cid, agent, other, now))[-1].call_id
        assert rig.state(cid) == "held"  # the consultation put the customer on hold
        rig.driver.run(lambda now: rig.switch.answer(consult, other, now))
        rig.driver.run(lambda now: rig.switch.complete_transfer(cid, consult, now))
        assert rig.of(E.ContactTransferred, cid)[0].to_agent_id == other
        assert rig.at(cid, other) == "connected"
        # Already talking to the caller: the router's offer to them is taken at once.
        assert rig.state(cid) == "connected" and rig.centre.router.contact(cid).agent_id == other
        assert rig.centre.router.arrived == 1 and rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_transfer_out_of_the_centre(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        await rig.voice.transfer(cid, "a1", to_external="+31307654321")
        [moved] = rig.of(E.ContactTransferred, cid)
        assert moved.to_external == "+31307654321"
        assert rig.state(cid) is None  # finished in the router
        assert rig.at(cid, "a1") is None
        far = [d for d, c in rig.switch.calls[cid].connections.items() if c.number == "+31307654321"]
        assert far and rig.at(cid, far[0]) == "alerting"
        row = await rig.interaction(cid)
        assert row["outcome"] == "transferred"

    run(tmp_path, scenario)


def test_transfer_decided_through_the_router_moves_the_call(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1", "a3")
        cid = await rig.call()
        await rig.voice.answer(cid, "a1")
        # What the agent gateway does today for any channel: the router first, the switch follows.
        rig.centre.submit(
            E.TransferRequested(at_ms=rig.clock.now_ms(), contact_id=cid, agent_id="a1", to_queue="sales")
        )
        assert rig.at(cid, "a1") is None and rig.at(cid, "a3") == "alerting"
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


# ------------------------------------------------------------------------------------ the router's endings


def test_overflow_out_of_the_centre_clears_the_call(tmp_path: Path) -> None:
    config = parse_config(
        {
            "skills": {"general": "General"},
            "queues": [
                {
                    "name": "support",
                    "skills": {"general": 1},
                    "channels": ["voice"],
                    "overflow": [{"after_s": 60, "leave": True, "leave_to": "voicemail"}],
                },
                {"name": "sales", "skills": {"general": 1}, "channels": ["voice"]},
            ],
            "agents": [{"id": "a1", "skills": {"general": 5}}],
        },
        "<test>",
    )

    async def scenario(rig: Rig) -> None:
        cid = await rig.call()
        rig.advance(60_000)
        [over] = rig.of(E.ContactOverflowed, cid)
        assert over.left
        assert cid not in rig.switch.calls  # "to voicemail": the call is gone from the switch
        row = await rig.interaction(cid)
        assert row["outcome"] == "overflowed"

    run(tmp_path, scenario, config)


def test_a_queue_that_refuses_the_call_clears_it(tmp_path: Path) -> None:
    config = parse_config(
        {
            "skills": {"general": "General"},
            "queues": [
                {"name": "support", "skills": {"general": 1}, "channels": ["voice"], "max_depth": 1},
                {"name": "sales", "skills": {"general": 1}, "channels": ["voice"]},
            ],
            "agents": [{"id": "a1", "skills": {"general": 5}}],
        },
        "<test>",
    )

    async def scenario(rig: Rig) -> None:
        first = await rig.call()
        second = await rig.call(ani="+31 6 12345678")
        assert rig.state(first) == "queued"
        assert rig.of(E.ContactFailed, second)
        assert second not in rig.switch.calls and first in rig.switch.calls
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario, config)


# ---------------------------------------------------------------------------------------- robustness


def test_a_phone_busy_outside_the_router_rejects_the_offer_instead_of_crashing(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.driver.run(lambda now: rig.switch.make_call("a1", "+31101234567", now))  # a1's private call
        rig.login("a1")
        cid = await rig.call()
        [rejected] = rig.of(E.OfferRejected, cid)
        assert rejected.agent_id == "a1" and rejected.reason == "phone_busy"
        assert rig.state(cid) == "queued" and rig.at(cid, "q-support") == "queued"
        rig.login("a2")
        assert rig.at(cid, "a2") == "alerting"

    run(tmp_path, scenario)


def test_agent_actions_on_unknown_calls_and_text_are_refused(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        for action in (rig.voice.answer, rig.voice.hold, rig.voice.retrieve, rig.voice.hang_up):
            with pytest.raises(VoiceError) as err:
                await action("call-99", "a1")
            assert err.value.code == "unknown_contact"
        rig.login("a1")
        cid = await rig.call()
        with pytest.raises(VoiceError) as err:
            await rig.voice.answer(cid, "a2")  # a2's phone is not ringing
        assert err.value.code == "not_in_call"
        with pytest.raises(VoiceError) as err:
            await rig.voice.agent_message(cid, "a1", "hello")
        assert err.value.code == "no_text"
        with pytest.raises(VoiceError):
            await rig.voice.transfer(cid, "a1")
        assert rig.centre.channels["voice"] is rig.voice

    run(tmp_path, scenario)


def test_restore_ends_voice_contacts_without_a_call(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        now = rig.clock.now_ms()
        rig.centre.submit(E.ContactArrived(at_ms=now, contact_id="old-call", queue="support", channel="voice"))
        rig.voice.restore()
        assert rig.state("old-call") is None and rig.of(E.ContactAbandoned, "old-call")

    run(tmp_path, scenario)


def test_an_answer_after_the_offer_deadline_does_not_pick_up_a_call_the_router_took_back(tmp_path: Path) -> None:
    """The deadline has passed but the loop has not yet run the router's expiry: answering must not connect
    the caller to an agent the router is about to take the call from (they would talk while it queues)."""

    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        first = offer_of(rig, cid)
        rig.clock.set(first.expires_ms + 1)  # no driver._run: the expiry is owed, not yet run
        with pytest.raises(VoiceError) as err:
            await rig.voice.answer(cid, first.agent_id)
        # answering brought the router up to now first: the offer expired and the call left the phone
        assert err.value.code in ("stale_offer", "not_in_call")
        assert rig.of(E.OfferExpired, cid)
        assert rig.state(cid) == "queued" and rig.at(cid, first.agent_id) is None

    run(tmp_path, scenario)
