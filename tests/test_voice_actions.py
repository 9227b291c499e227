"""Voice actions end to end: the simulated switch, the voice bridge, the router, the store and the statistics.

Abandon, ring-no-answer, blind and consultative transfer (to an agent, a queue, an outside number) and the
three-way conference are driven through ``ContactActions`` (what the agent protocol and the REST API call),
then checked where the issue judges them: the interaction row, each agent's leg read back from the log, and
the router's live statistics. The rig (a SQLite centre with a manual clock, a switch whose ring timers only
move when told) is the voice bridge tests' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import contactcentre.events as E
from contactcentre.acd import RouterError
from contactcentre.config import parse_config
from contactcentre.server.contact_actions import ActionError, ContactActions
from contactcentre.store.projection import contact_legs, fold_legs
from tests.test_voice_bridge import ANN_E164, OFFER_MS, Rig, offer_of, run


async def legs(rig: Rig, cid: str) -> list[dict[str, Any]]:
    await rig.centre.commit()
    return (await rig.centre.read(contact_legs, [cid]))[cid]


def stats(rig: Rig, queue: str = "support") -> dict[str, Any]:
    return rig.centre.driver.stats.snapshot(rig.clock.now_ms())["queues"][queue]


def wrap_up(rig: Rig, cid: str, agent: str) -> None:
    rig.centre.submit(E.WrapUpEnded(at_ms=rig.clock.now_ms(), contact_id=cid, agent_id=agent))


async def answered_call(rig: Rig, *agents: str, ringing_ms: int = 0) -> tuple[str, str]:
    """A call answered by the first agent the router offers it to; returns (contact id, that agent)."""
    rig.login(*agents)
    cid = await rig.call()
    agent = offer_of(rig, cid).agent_id
    rig.clock.advance(ringing_ms)
    await ContactActions(rig.centre).answer(cid, agent)
    return cid, agent


# ------------------------------------------------------------------------------------------ abandon, RONA


def test_abandon_in_queue_is_in_the_store_with_its_wait_and_in_the_statistics(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = await rig.call()
        rig.advance(12_000)
        rig.hang_up_caller(cid)
        row = await rig.interaction(cid)
        assert row["outcome"] == "abandoned" and row["wait_ms"] == 12_000 and row["ended_ms"] is not None
        assert row["agent_id"] is None and await legs(rig, cid) == []
        s = stats(rig)
        assert s["abandoned"] == 1 and s["answered"] == 0 and s["abandon_rate"] == 1.0 and s["waiting"] == 0

    run(tmp_path, scenario)


def test_ring_no_answer_puts_the_agent_away_and_the_next_agent_answers(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.login("a1", "a2")
        cid = await rig.call()
        first = offer_of(rig, cid)
        other = "a2" if first.agent_id == "a1" else "a1"
        rig.clock.set(first.expires_ms)
        rig.centre.driver._run(rig.clock.now_ms())  # the router's ring-no-answer
        missed = rig.centre.router.agent(first.agent_id)
        assert missed.presence == "away" and missed.away_reason == "missed_offer"
        assert rig.state(cid) == "offered" and offer_of(rig, cid).agent_id == other
        assert rig.at(cid, other) == "alerting" and rig.at(cid, first.agent_id) is None
        actions = ContactActions(rig.centre)
        with pytest.raises(ActionError) as err:
            await actions.answer(cid, first.agent_id)  # too late: the offer went on
        assert err.value.code == "stale_offer"
        await actions.answer(cid, other)
        rig.clock.advance(30_000)
        await actions.hang_up(cid, other)
        wrap_up(rig, cid, other)
        row = await rig.interaction(cid)
        assert row["outcome"] == "handled" and row["agent_id"] == other and row["wait_ms"] == OFFER_MS
        assert row["talk_ms"] == 30_000
        got = await legs(rig, cid)
        assert [(leg["agent_id"], leg["outcome"]) for leg in got] == [(first.agent_id, "no_answer"), (other, "handled")]
        s = stats(rig)
        assert s["answered"] == 1 and s["handled"] == 1 and s["abandoned"] == 0
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


# -------------------------------------------------------------------------------------------- transfers


def test_blind_transfer_to_an_agent_shows_both_legs(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        rig.login("a2")
        actions = ContactActions(rig.centre)
        rig.clock.advance(5_000)
        await actions.hold(cid, agent)
        rig.clock.advance(2_000)
        await actions.transfer(cid, agent, to_agent="a2")  # transferred while held: the hold ends there
        assert rig.at(cid, "a2") == "alerting"
        await actions.answer(cid, "a2")
        rig.clock.advance(20_000)
        await actions.hang_up(cid, "a2")
        wrap_up(rig, cid, "a2")
        got = await legs(rig, cid)
        assert [(g["agent_id"], g["outcome"]) for g in got] == [("a1", "transferred"), ("a2", "handled")]
        assert got[0]["to"] == "agent:a2" and got[0]["talk_ms"] == 5_000 and got[0]["hold_ms"] == 2_000
        assert got[1]["talk_ms"] == 20_000 and got[1]["hold_ms"] == 0
        row = await rig.interaction(cid)
        assert row["outcome"] == "handled" and row["agent_id"] == "a2"
        s = stats(rig)
        assert s["transferred"] == 1 and s["transferred_out"] == 0 and s["handled"] == 1
        assert s["offered"] == 2  # the transfer entered the queue again
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_consultative_transfer_to_an_agent(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1", ringing_ms=6_000)
        rig.login("a2")
        actions = ContactActions(rig.centre)
        rig.clock.advance(3_000)
        got = await actions.consult(cid, agent, to_agent="a2")
        consultation = got["consultation_id"]
        assert rig.state(cid) == "held" and rig.at(cid, agent) == "held"  # the caller waits on hold
        assert rig.at(consultation, "a2") == "alerting"
        rig.driver.run(lambda now: rig.switch.answer(consultation, "a2", now))  # a2 picks up the consultation
        rig.clock.advance(4_000)
        await actions.complete_transfer(cid, agent)
        assert consultation not in rig.switch.calls and rig.at(cid, "a2") == "connected" and rig.at(cid, agent) is None
        c = rig.centre.router.contact(cid)
        assert c.state == "connected" and c.agent_id == "a2"  # the router gave it to the one already talking
        assert rig.centre.router.agent(agent).state in ("available", "wrap_up")
        rig.clock.advance(10_000)
        rig.hang_up_caller(cid)
        wrap_up(rig, cid, "a2")
        got_legs = await legs(rig, cid)
        assert [(g["agent_id"], g["outcome"]) for g in got_legs] == [("a1", "transferred"), ("a2", "handled")]
        assert got_legs[0]["talk_ms"] == 3_000 and got_legs[0]["hold_ms"] == 4_000
        assert got_legs[1]["talk_ms"] == 10_000 and got_legs[1]["wait_ms"] == 0
        row = await rig.interaction(cid)  # the customer's contact: first answer and first wait, last agent
        assert row["agent_id"] == "a2" and row["outcome"] == "handled" and row["wait_ms"] == 6_000
        assert row["answered_ms"] == got_legs[0]["answered_ms"] and row["talk_ms"] == 10_000
        assert stats(rig)["transferred"] == 1 and rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_consultative_transfer_to_an_away_agent_is_refused_and_retrieve_goes_back_to_the_caller(
    tmp_path: Path,
) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a2", away_reason="meeting"))
        actions = ContactActions(rig.centre)
        consultation = (await actions.consult(cid, agent, to_agent="a2"))["consultation_id"]
        rig.driver.run(lambda now: rig.switch.answer(consultation, "a2", now))
        before = rig.switch.snapshot()
        with pytest.raises(ActionError) as err:
            await actions.complete_transfer(cid, agent)
        assert err.value.code == "channel_error" and err.value.reason == "agent_unavailable"
        assert rig.switch.snapshot() == before  # nothing moved
        with pytest.raises(ActionError) as err:
            await actions.consult(cid, agent, to_agent="a2")  # one consultation at a time
        assert err.value.reason == "conflict"
        await actions.retrieve(cid, agent)  # reconnect: the consultation is hung up, the caller is back
        assert consultation not in rig.switch.calls and rig.at(cid, agent) == "connected"
        assert rig.state(cid) == "connected" and rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_consultative_transfer_to_an_away_agent_from_the_phone_leaves_routing(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1", "a3")
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a2", away_reason="meeting"))
        consultation = rig.driver.run(lambda now: rig.switch.consult(cid, agent, "a2", now))[-1].call_id
        rig.driver.run(lambda now: rig.switch.answer(consultation, "a2", now))
        rig.driver.run(lambda now: rig.switch.complete_transfer(cid, consultation, now))  # the phone's own button
        [moved] = rig.of(E.ContactTransferred, cid)
        # Not queued for someone else while a2 talks to the caller (that would ring nobody and put them away).
        assert moved.to_external == "a2" and rig.state(cid) is None
        assert not rig.of(E.OfferMade, cid)[1:] and rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_consultative_transfer_to_a_queue(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1", "a3")
        actions = ContactActions(rig.centre)
        consultation = (await actions.consult(cid, agent, to_queue="sales"))["consultation_id"]
        assert rig.at(consultation, "q-sales") == "queued"  # the consultation itself is routed by nobody
        assert len(rig.of(E.ContactArrived)) == 1
        await actions.complete_transfer(cid, agent)
        [moved] = rig.of(E.ContactTransferred, cid)
        assert moved.to_queue == "sales"
        assert offer_of(rig, cid).agent_id == "a3" and rig.at(cid, "a3") == "alerting"
        await actions.answer(cid, "a3")
        await actions.hang_up(cid, "a3")
        wrap_up(rig, cid, "a3")
        got = await legs(rig, cid)
        assert [(g["agent_id"], g["outcome"], g.get("to")) for g in got] == [
            (agent, "transferred", "queue:sales"),
            ("a3", "handled", None),
        ]
        assert got[1]["queue"] == "sales"
        row = await rig.interaction(cid)
        assert row["queue"] == "sales" and row["agent_id"] == "a3" and row["outcome"] == "handled"
        assert stats(rig)["transferred"] == 1 and stats(rig, "sales")["handled"] == 1
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_consultative_transfer_to_an_outside_number(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        actions = ContactActions(rig.centre)
        consultation = (await actions.consult(cid, agent, to_external="+31307654321"))["consultation_id"]
        far = next(d for d, c in rig.switch.calls[consultation].connections.items() if c.kind == "trunk")
        rig.driver.run(lambda now: rig.switch.answer(consultation, far, now))
        await actions.complete_transfer(cid, agent)
        [moved] = rig.of(E.ContactTransferred, cid)
        assert moved.to_external == "+31307654321" and rig.state(cid) is None
        row = await rig.interaction(cid)
        assert row["outcome"] == "transferred" and row["agent_id"] == agent
        assert row["talk_ms"] == moved.talk_ms is not None  # the contact ends here: its talk is on the row
        got = await legs(rig, cid)
        assert [(g["agent_id"], g["outcome"], g["to"]) for g in got] == [
            (agent, "transferred", "external:+31307654321")
        ]
        s = stats(rig)
        assert s["transferred"] == 1 and s["transferred_out"] == 1
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


# ------------------------------------------------------------------------------------------- conference


def test_conference_is_recorded_and_leaving_it_hands_the_call_to_the_colleague(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        rig.login("a2")
        actions = ContactActions(rig.centre)
        consultation = (await actions.consult(cid, agent, to_agent="a2"))["consultation_id"]
        with pytest.raises(ActionError) as err:
            await actions.conference(cid, agent)  # a2 has not answered: nobody to bring in yet
        assert err.value.reason == "invalid_state"
        rig.driver.run(lambda now: rig.switch.answer(consultation, "a2", now))
        rig.clock.advance(2_000)
        await actions.conference(cid, agent)
        [conf] = rig.of(E.ContactConferenced, cid)
        assert conf.agent_id == agent and conf.parties == ["a2"]
        assert rig.state(cid) == "connected" and rig.centre.router.contact(cid).agent_id == agent  # hold over
        assert rig.switch.calls[cid].state == "conferenced"
        rig.clock.advance(5_000)
        await actions.hang_up(cid, agent)  # a1 leaves: the caller stays with a2
        c = rig.centre.router.contact(cid)
        assert c.state == "connected" and c.agent_id == "a2" and rig.at(cid, "a2") == "connected"
        rig.clock.advance(8_000)
        await actions.hang_up(cid, "a2")
        wrap_up(rig, cid, "a2")
        got = await legs(rig, cid)
        assert [(g["agent_id"], g["outcome"]) for g in got] == [("a1", "transferred"), ("a2", "handled")]
        assert got[0]["conferenced"] == ["a2"] and got[0]["hold_ms"] == 2_000 and got[0]["talk_ms"] == 5_000
        assert got[1]["talk_ms"] == 8_000
        await rig.centre.commit()
        logged = await rig.centre.read(
            lambda conn: conn.exec_driver_sql(
                "SELECT agent_id FROM events WHERE type = 'contact.conferenced' AND contact_id = ?", (cid,)
            ).all()
        )
        assert logged == [(agent,)]
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_conference_with_an_outside_party(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        actions = ContactActions(rig.centre)
        consultation = (await actions.consult(cid, agent, to_external="+31307654321"))["consultation_id"]
        far = next(d for d, c in rig.switch.calls[consultation].connections.items() if c.kind == "trunk")
        rig.driver.run(lambda now: rig.switch.answer(consultation, far, now))
        await actions.conference(cid, agent)
        [conf] = rig.of(E.ContactConferenced, cid)
        assert conf.parties == ["tel:+31307654321"]
        await actions.hang_up(cid, agent)  # the agent leaves the caller with the outside party
        [moved] = rig.of(E.ContactTransferred, cid)
        assert moved.to_external == "+31307654321" and rig.state(cid) is None
        assert (await rig.interaction(cid))["outcome"] == "transferred"

    run(tmp_path, scenario)


def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        actions = ContactActions(rig.centre)
        cases: list[tuple[Any, str, str | None]] = [
            (actions.complete_transfer(cid, agent), "channel_error", "no_consultation"),
            (actions.conference(cid, agent), "refused", None),  # not held: no consultation
            (actions.consult(cid, agent), "bad_field", None),
            (actions.consult(cid, agent, to_queue="sales", to_agent="a2"), "bad_field", None),
            (actions.consult(cid, agent, to_queue="mail"), "refused", None),  # not a voice queue
            (actions.consult(cid, agent, to_agent=agent), "refused", None),
            (actions.consult(cid, agent, to_agent="a2"), "refused", None),  # logged out
            (actions.hold(cid, "a2"), "not_your_contact", None),
            (actions.hold("nope", agent), "not_found", None),
            (actions.answer(cid, agent), "refused", None),  # answered already
        ]
        for coro, code, reason in cases:
            with pytest.raises(ActionError) as err:
                await coro
            assert (err.value.code, err.value.reason) == (code, reason), err.value.detail
        assert rig.state(cid) == "connected"
        rig.login("a2")
        rig.centre.submit(
            E.ContactArrived(at_ms=rig.clock.now_ms(), contact_id="chat-1", queue="support", channel="chat")
        )
        await actions.answer("chat-1", "a2")  # no phone: the offer is accepted in the router
        assert rig.state("chat-1") == "connected"
        for coro in (actions.consult("chat-1", "a2", to_agent="a1"), actions.conference("chat-1", "a2")):
            with pytest.raises(ActionError) as err:
                await coro
            assert err.value.code == "not_voice"
        assert rig.centre.driver.refused == 0

    run(tmp_path, scenario)


def test_legs_fold_ignores_events_before_a_connection() -> None:
    evs = [
        E.ContactHeld(at_ms=1, contact_id="c", agent_id="a"),  # nothing open: ignored
        E.OfferRejected(at_ms=2, offer_id="o1", contact_id="c", agent_id="a", reason="busy"),
        E.ContactConnected(at_ms=3, contact_id="c", agent_id="b", queue="q", channel="voice", wait_ms=3),
    ]
    got = fold_legs(evs)
    assert [(g["agent_id"], g["outcome"]) for g in got] == [("a", "rejected"), ("b", None)]


# --------------------------------------------------------------------------------------------- callback

CB_CONFIG = parse_config(
    {
        "skills": {"general": "General", "sales": "Sales"},
        "channels": {"voice": {"offer_timeout_s": OFFER_MS / 1000, "wrap_up_s": 30}},
        "queues": [
            {"name": "support", "skills": {"general": 1}, "channels": ["voice", "callback"]},
            {"name": "sales", "skills": {"sales": 1}, "channels": ["voice"]},
        ],
        "agents": [{"id": "a1", "skills": {"general": 5}}, {"id": "a2", "skills": {"general": 5}}],
    },
    "<test>",
)


def test_an_agent_requests_a_callback_for_the_caller(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        from contactcentre.edge.voice.callback import CallbackChannel

        callbacks = CallbackChannel(rig.centre, rig.voice)
        try:
            cid, agent = await answered_call(rig, "a1")
            actions = ContactActions(rig.centre)
            with pytest.raises(ActionError) as err:
                await actions.callback(cid, agent)  # Ann gave no consent to calls, and did not ask
            assert (err.value.code, err.value.reason) == ("channel_error", "no_consent")
            with pytest.raises(ActionError) as err:
                await actions.callback(cid, agent, queue="sales", customer_asked=True)
            assert err.value.reason == "bad_queue"
            with pytest.raises(ActionError) as err:
                await actions.callback(cid, "a2", customer_asked=True)
            assert err.value.code == "not_your_contact"
            later = rig.clock.now_ms() + 3_600_000
            got = await actions.callback(cid, agent, at_ms=later, customer_asked=True)
            assert got["contact_id"] == cid and got["due_ms"] >= later
            [scheduled] = rig.of(E.CallbackScheduled)
            assert scheduled.contact_id == got["callback_id"] and scheduled.number == ANN_E164
            assert scheduled.customer_id == "ann" and scheduled.queue == "support"
            assert scheduled.attributes == {"requested_on": cid, "requested_by": agent}
            assert rig.state(cid) == "connected" and rig.centre.driver.refused == 0
        finally:
            await callbacks.stop()

    run(tmp_path, scenario, config=CB_CONFIG)


def test_without_a_callback_channel_the_action_says_so(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid, agent = await answered_call(rig, "a1")
        with pytest.raises(ActionError) as err:
            await ContactActions(rig.centre).callback(cid, agent, customer_asked=True)
        assert err.value.code == "channel_unavailable"

    run(tmp_path, scenario)


def test_a_phone_action_whose_router_input_is_refused_is_refused_with_the_router_s_reason(tmp_path: Path) -> None:
    """The phone is operated first and the router hears of it from the switch's events; when the router refuses
    what they led to (a rule the checks before did not know), the action says so, with the router's words."""

    async def scenario(rig: Rig) -> None:
        rig.login("a1")
        cid = await rig.call()
        real = rig.centre.driver.submit

        def refusing(ev: E.Event) -> Any:
            if isinstance(ev, E.OfferAccepted):
                return RouterError("no answering today")  # as the router would say it, and nothing applied
            return real(ev)

        rig.centre.driver.submit = refusing  # type: ignore[method-assign]
        with pytest.raises(ActionError) as err:
            await ContactActions(rig.centre).answer(cid, "a1")
        assert err.value.code == "refused" and "no answering today" in err.value.detail
        assert rig.state(cid) == "offered"

    run(tmp_path, scenario)
