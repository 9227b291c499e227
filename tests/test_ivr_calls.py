"""Calls through the IVR: the simulated switch, the IVR runner, the voice bridge and a live centre (SQLite).

Nothing sleeps. The centre's clock is a ``ManualClock`` shared by the switch driver and the runner; the
runner's one timer (prompt ends, input timeouts) and the switch's ring timers live on a ``task.Clock`` that
moves with it when a test says so. Calls are placed and keys pressed over the CTI link, as a client written
from docs/cti.md would, through ``StringTransport``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

import contactcentre.events as E
from contactcentre.cli import main
from contactcentre.config import CalendarConfig, ConfigError, parse_config
from contactcentre.edge.cti.link import CtiProtocol, CtiServer
from contactcentre.edge.voice.callback import CallbackChannel
from contactcentre.edge.voice.channel import VoiceChannel, switch_config
from contactcentre.edge.voice.ivr import CallerRecord, IvrRunner, hours_text, read_caller
from contactcentre.reporting.ivr_stats import stats_from_events, stats_from_store
from contactcentre.server.centre import Centre
from contactcentre.server.clock import ManualClock
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store.cases import open_case, set_status
from contactcentre.store.customers import create_customer
from contactcentre.telephony import Switch
from contactcentre.telephony.ivr import Enqueue, IvrAction, Play, keypad_digits, parse_menu
from contactcentre.telephony.ivr.handoff import attached_data, routing_from_attached

T = TypeVar("T")
IVR = "3000"
MS_PER_WORD = 100
ANN_PHONE = "020 123 4567"
ANN_E164 = "+31201234567"
STRANGER = "+31611111111"

CENTRE = {
    "skills": {"general": "General", "technical": "Technical"},
    "tiers": {"gold": {"priority": 10, "answer_s": 20, "answer_target": 0.9}},
    "queues": [
        {"name": "support", "skills": {"general": 1}, "channels": ["voice", "callback"], "number": "2001"},
        {"name": "technical", "skills": {"technical": 1}, "channels": ["voice"], "number": "2002"},
        {"name": "mail", "skills": {"general": 1}, "channels": ["email"], "number": "2003"},
    ],
    "agents": [
        {"id": "a1", "skills": {"general": 5}, "extension": "1001"},
        {"id": "a2", "skills": {"general": 1, "technical": 5}, "extension": "1002"},
    ],
}
CONFIG = parse_config(CENTRE, "<test>")

MENU: dict[str, Any] = {
    "name": "test",
    "start": "welcome",
    "settings": {"timeout_ms": 4000, "max_retries": 1, "on_exhausted": "support", "invalid_prompt": "invalid"},
    "prompts": {
        "welcome": {"en": "Welcome to the test centre."},  # 5 words: 500 ms
        "main": {"en": "Support one, technical two, case status three."},  # 7 words
        "invalid": {"en": "Not a choice."},
        "enter_case": {"en": "Key your case number then hash."},
        "status": {"en": "Your case is {status}. Zero for an agent."},
        "unknown": {"en": "We do not know that case."},
        "bye": {"en": "Goodbye."},
        "confirm": {"en": "One to be called on this number, two for another."},
        "number": {"en": "Key your number then hash."},
    },
    "nodes": {
        "welcome": {"kind": "prompt", "prompt": "welcome", "next": "main"},
        "main": {
            "kind": "menu",
            "prompt": "main",
            "options": {"1": "support", "2": "technical", "3": "case", "4": "callback"},
        },
        "callback": {
            "kind": "callback",
            "queue": "support",
            "confirm_prompt": "confirm",
            "number_prompt": "number",
            "done_prompt": "bye",
        },
        "support": {"kind": "queue", "queue": "support"},
        "technical": {
            "kind": "queue",
            "queue": "technical",
            "priority": 2,
            "skills": {"technical": 3},
            "attributes": {"topic": "tech"},
        },
        "case": {
            "kind": "collect",
            "prompt": "enter_case",
            "var": "case_number",
            "min_digits": 6,
            "max_digits": 6,
            "pattern": "[2-9]{6}",
            "next": "lookup",
        },
        "lookup": {
            "kind": "self_service",
            "hook": "case_status",
            "input": "case_number",
            "outcomes": {"found": "status", "not_found": "unknown"},
            "served": ["found"],
            "otherwise": "support",
        },
        "status": {
            "kind": "menu",
            "prompt": "status",
            "options": {"0": "support"},
            "max_retries": 0,
            "on_exhausted": "bye",
        },
        "unknown": {"kind": "prompt", "prompt": "unknown", "next": "support"},
        "bye": {"kind": "hangup", "prompt": "bye", "reason": "goodbye"},
    },
}


CTI_TOKEN = "ivr-test-token-0123"


class Wire:
    """A CTI client connection, as docs/cti.md describes it: one JSON object per line each way."""

    def __init__(self, server: CtiServer) -> None:
        self.proto: CtiProtocol = server.buildProtocol(None)  # type: ignore[arg-type]
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.events: list[dict[str, Any]] = []
        self._id = 0
        assert self.request("Authenticate", token=CTI_TOKEN)["ok"]  # every connection's first line

    def request(self, name: str, **fields: Any) -> dict[str, Any]:
        self._id += 1
        self.proto.dataReceived(msgspec.json.encode({"request": name, "invoke_id": self._id, **fields}) + b"\n")
        data = self.transport.value()
        self.transport.clear()
        lines = [msgspec.json.decode(line) for line in data.split(b"\n") if line]
        self.events += [m for m in lines if "event" in m]
        [response] = [m for m in lines if "response" in m]
        assert response["invoke_id"] == self._id
        return response

    def pushed(self) -> list[dict[str, Any]]:
        """Events pushed since the last request (timers, other parties' doings)."""
        data = self.transport.value()
        self.transport.clear()
        self.events += [msgspec.json.decode(line) for line in data.split(b"\n") if line]
        return self.events


@dataclass
class Rig:
    centre: Centre
    clock: ManualClock
    timers: task.Clock
    switch: Switch
    cti: CtiServer
    voice: VoiceChannel
    ivr: IvrRunner
    wire: Wire
    events: list[E.Event] = field(default_factory=list)
    actions: list[tuple[str, IvrAction]] = field(default_factory=list)

    async def call(self, ani: str = ANN_PHONE) -> str:
        resp = self.wire.request("SimulateInbound", ani=ani, dnis=IVR)
        assert resp["ok"], resp
        await self.settle()
        return str(resp["call_id"])

    def press(self, cid: str, digits: str) -> dict[str, Any]:
        trunk = next(d for d, c in self.switch.calls[cid].connections.items() if c.kind == "trunk")
        return self.wire.request("GenerateDigits", call_id=cid, device=trunk, digits=digits)

    def hang_up(self, cid: str) -> None:
        trunk = next(d for d, c in self.switch.calls[cid].connections.items() if c.kind == "trunk")
        assert self.wire.request("ClearConnection", call_id=cid, device=trunk)["ok"]

    def advance(self, ms: int) -> None:
        """Time passes for everyone: the centre's clock, then the timers due by then."""
        self.clock.advance(ms)
        self.timers.advance(ms / 1000)
        self.centre.driver._run(self.clock.now_ms())

    async def settle(self) -> None:
        await self.ivr.settle()
        await self.voice.settle()

    def of(self, cls: type[T], cid: str | None = None) -> list[T]:
        return [e for e in self.events if isinstance(e, cls) and (cid is None or getattr(e, "contact_id", None) == cid)]

    def plays(self, cid: str) -> list[str]:
        return [a.prompt_id for c, a in self.actions if c == cid and isinstance(a, Play)]


def run(
    tmp_path: Path,
    scenario: Callable[[Rig], Awaitable[None]],
    ms_per_word: int = MS_PER_WORD,
    *,
    callbacks: bool = False,
) -> None:
    async def main() -> None:
        centre = await open_centre(CONFIG, tmp_path / "centre.sqlite")
        try:
            clock = ManualClock(centre.now_ms())
            centre.clock = centre.driver.clock = clock
            timers = task.Clock()
            timers.advance(clock.now_ms() / 1000)
            cfg = switch_config(CONFIG)
            switch = Switch(dataclasses.replace(cfg, ivrs=(IVR,)), start_ms=clock.now_ms())
            cti = CtiServer(switch, timers, token=CTI_TOKEN, now_ms=clock.now_ms)
            voice = VoiceChannel.for_config(centre, cti.driver)
            callback = CallbackChannel(centre, voice) if callbacks else None
            numbers = CONFIG.queue_numbers()
            runner = IvrRunner(
                centre,
                cti.driver,
                {IVR: parse_menu(MENU, "<menu>", CONFIG)},
                clock=timers,
                queue_number=lambda q: numbers[q],
                ms_per_word=ms_per_word,
            )
            rig = Rig(centre, clock, timers, switch, cti, voice, runner, Wire(cti))
            centre.subscribe(rig.events.extend)
            runner.listeners.append(lambda cid, action: rig.actions.append((cid, action)))
            assert rig.wire.request("MonitorStart")["ok"]
            await centre.write(
                partial(create_customer, name="Ann", tier="gold", identities_=[("phone", ANN_E164)], customer_id="ann"),
                clock.now_ms(),
            )
            await scenario(rig)
            await runner.stop()
            if callback is not None:
                await callback.stop()
            await voice.stop()
            assert centre.channels.get("ivr") is None
        finally:
            await close_centre(centre)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ a whole call


def test_a_call_through_the_ivr_queue_and_agent(tmp_path: Path) -> None:
    """Inbound to the IVR number ⇒ welcome ⇒ menu ⇒ key 2 ⇒ the technical queue with the IVR's skills and
    priority and the tier from the ANI look-up ⇒ offered to a2 ⇒ answered ⇒ the caller hangs up."""

    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a2"))
        cid = await rig.call()
        assert rig.switch.describe(cid)["state"] == "connected"  # the IVR answered at once
        assert [e["event"] for e in rig.wire.events] == ["Originated", "Delivered", "Established"]
        assert rig.plays(cid) == ["welcome"]
        [started] = rig.of(E.IvrStarted, cid)
        assert (started.menu, started.number) == ("test", IVR)

        rig.press(cid, "2")  # during the welcome: no question asked yet, the key is lost
        rig.advance(500)  # the welcome's five words have played
        assert rig.plays(cid) == ["welcome", "main"]
        assert rig.press(cid, "2")["ok"]  # barge-in on the menu prompt
        await rig.settle()

        events = [(e["event"], e["device"]) for e in rig.wire.pushed()]
        assert events[3:] == [
            ("DigitsGenerated", "T1"),
            ("DigitsGenerated", "T1"),
            ("AttachedDataChanged", IVR),
            ("Transferred", IVR),
            ("Queued", "2002"),
            ("Diverted", "2002"),  # routed at once: a2 is ready
            ("Delivered", "1002"),
        ]
        queued = rig.wire.events[7]
        assert queued["dnis"] == IVR and queued["attached_data"]["ivr_skills"] == "technical=3"

        [arrived] = rig.of(E.ContactArrived, cid)
        assert (arrived.queue, arrived.channel, arrived.customer_id, arrived.tier) == (
            "technical",
            "voice",
            "ann",
            "gold",
        )
        assert arrived.skills == {"technical": 3} and arrived.priority == 2
        assert arrived.attributes == {"ivr_menu": "test", "ivr_path": "main>2", "language": "en", "topic": "tech"}
        assert rig.centre.router.contacts[cid].bonus == 2 + 10  # the IVR's bonus plus the gold tier's
        [finished] = rig.of(E.IvrFinished, cid)
        assert (finished.outcome, finished.queue, finished.path, finished.customer_id) == (
            "queued",
            "technical",
            "main>2",
            "ann",
        )
        assert cid not in rig.ivr.calls and rig.ivr.next_deadline() is None

        assert rig.wire.request("AnswerCall", call_id=cid, device="1002")["ok"]
        assert rig.centre.router.contact(cid).state == "connected"
        rig.advance(30_000)
        rig.hang_up(cid)
        assert cid not in rig.switch.calls
        assert rig.of(E.WrapUpStarted, cid) and not rig.of(E.ContactAbandoned, cid)

    run(tmp_path, scenario)


def test_silence_times_out_retries_and_goes_to_the_exhausted_branch(tmp_path: Path) -> None:
    """No key at all: the runner's one timer plays the prompts out and times the menu twice, then the
    settings' ``on_exhausted`` queues the call; the timer is always armed for the earliest deadline."""

    async def scenario(rig: Rig) -> None:
        cid = await rig.call(STRANGER)
        live = rig.ivr.calls[cid]
        assert rig.ivr.next_deadline() == live.prompt[1]  # type: ignore[index]
        rig.advance(500)  # welcome ends
        rig.advance(700)  # the menu prompt ends: 4 s for a key
        assert rig.ivr.next_deadline() == rig.clock.now_ms() + 4000
        rig.advance(4000)  # timeout: the invalid prompt is not played for a timeout (no timeout_prompt), the menu is
        assert rig.plays(cid)[-1] == "main"
        rig.advance(700 + 4000)  # second timeout: retries exhausted
        await rig.settle()
        failed = rig.of(E.IvrInputFailed, cid)
        assert [(f.node, f.cause, f.attempt) for f in failed] == [("main", "timeout", 1), ("main", "timeout", 2)]
        [arrived] = rig.of(E.ContactArrived, cid)
        assert arrived.queue == "support" and arrived.customer_id is None and arrived.skills == {}
        assert rig.of(E.IvrFinished, cid)[0].outcome == "queued"
        assert rig.ivr.next_deadline() is None

    run(tmp_path, scenario)


def test_prompts_without_duration_end_at_once(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = await rig.call()
        assert rig.plays(cid) == ["welcome", "main"]  # no clock needed to get to the menu
        rig.press(cid, "7")
        assert rig.plays(cid) == ["welcome", "main", "invalid", "main"]
        rig.press(cid, "1")
        await rig.settle()
        assert rig.of(E.ContactArrived, cid)[0].queue == "support"

    run(tmp_path, scenario, ms_per_word=0)


def test_a_callback_asked_for_in_the_ivr_is_scheduled_on_the_callers_number(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        cid = await rig.call()
        rig.press(cid, "4")
        rig.press(cid, "1")  # this number
        assert rig.plays(cid)[-1] == "bye"
        await rig.settle()  # the request runs as a task of its own (it reads the store)
        [scheduled] = rig.of(E.CallbackScheduled)
        assert (scheduled.contact_id, scheduled.queue, scheduled.number) == (cid, "support", ANN_E164)
        assert scheduled.customer_id == "ann" and scheduled.attributes["ivr_path"] == "main>4"
        assert cid not in rig.switch.calls  # goodbye played, the IVR hung up
        [finished] = rig.of(E.IvrFinished, cid)
        assert finished.outcome == "callback"

    run(tmp_path, scenario, ms_per_word=0, callbacks=True)


# ---------------------------------------------------------------------------------- abandon, self-service


def test_caller_hanging_up_in_the_ivr_is_an_ivr_abandon_not_a_queue_abandon(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        cid = await rig.call()
        rig.advance(1_500)
        rig.hang_up(cid)
        await rig.settle()
        assert cid not in rig.switch.calls and cid not in rig.ivr.calls
        [exited] = [e for e in rig.of(E.IvrNodeExited, cid) if e.cause == "hangup"]
        assert exited.node == "main"
        [finished] = rig.of(E.IvrFinished, cid)
        assert (finished.outcome, finished.node, finished.queue) == ("abandoned", "main", None)
        assert not rig.of(E.ContactArrived) and not rig.of(E.ContactAbandoned) and not rig.of(E.CustomerLeft)
        assert rig.centre.router.contact_list() == []
        stats = rig.ivr.stats
        assert stats.outcomes["abandoned"] == 1 and stats.node("main").abandoned == 1
        assert stats.abandon_rate == 1.0 and stats.containment_rate == 0.0
        assert rig.ivr.next_deadline() is None and rig.ivr._timer.armed_for is None

    run(tmp_path, scenario)


def test_case_status_from_the_store_contains_the_call(tmp_path: Path) -> None:
    """Ann keys her case token on the keypad; the status read from the store is spoken; she says nothing
    more and the IVR says goodbye and hangs up: served in self-service. A stranger keying the same digits
    is not told Ann's case (only the caller's own cases are looked at) and goes to a person."""

    async def scenario(rig: Rig) -> None:
        now = rig.clock.now_ms()

        def ann_case(conn: Any) -> str:
            case_id, token = open_case(conn, now, customer_id="ann", subject="Router broken")
            set_status(conn, case_id, "pending", now)
            return token

        token = await rig.centre.write(ann_case)
        digits = keypad_digits(token)
        said: list[str] = []
        rig.ivr.listeners.append(lambda cid, a: said.append(a.text) if isinstance(a, Play) else None)

        cid = await rig.call()
        rig.advance(500)
        rig.press(cid, "3")
        rig.advance(600)  # the case prompt
        rig.press(cid, digits + "#")
        assert said[-1] == "Your case is pending. Zero for an agent."
        rig.advance(900)  # the status prompt
        rig.advance(4_000)  # silence: retries exhausted ⇒ goodbye
        rig.advance(100)  # "Goodbye." plays, then the IVR hangs up
        await rig.settle()
        assert cid not in rig.switch.calls
        [finished] = rig.of(E.IvrFinished, cid)
        assert finished.outcome == "self_served" and finished.path == "main>3"
        assert rig.wire.pushed()[-2:][0]["event"] == "ConnectionCleared"
        assert [e["device"] for e in rig.wire.events if e["event"] == "ConnectionCleared"] == [IVR, "T1"]
        assert not rig.of(E.ContactArrived)

        other = await rig.call(STRANGER)
        rig.advance(500)
        rig.press(other, "3")
        rig.advance(600)
        rig.press(other, digits + "#")
        assert rig.plays(other)[-1] == "unknown"
        rig.advance(600)
        await rig.settle()
        [arrived] = rig.of(E.ContactArrived, other)
        assert arrived.queue == "support" and arrived.attributes["case_number"] == digits
        assert rig.of(E.IvrFinished, other)[0].outcome == "queued"

        await rig.centre.commit()
        from_log = await rig.centre.read(stats_from_store, "test")
        assert from_log.as_dict() == rig.ivr.stats.as_dict()
        assert from_log.outcomes == {"self_served": 1, "queued": 1}
        assert from_log.containment_rate == 0.5
        assert from_log.node("lookup").exits == {"found": 1, "not_found": 1}
        assert from_log.node("status").exits == {"timeout": 1}
        assert from_log.node("bye").exits == {"ivr_hangup": 1}

    run(tmp_path, scenario)


def test_containment_statistics_per_node_from_the_logged_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four callers: queued by key, abandoned at the menu, timed out to the operator, contained; the log
    alone gives the same per-node numbers as the live runner, and other menus' events are left out."""

    async def scenario(rig: Rig) -> None:
        t0 = rig.clock.now_ms()
        calls = [await rig.call(ANN_PHONE), await rig.call(STRANGER), await rig.call("+31622222222")]
        rig.advance(1_200)  # all at the menu
        rig.press(calls[0], "1")
        rig.hang_up(calls[1])
        rig.press(calls[2], "9")  # invalid, then silence
        rig.advance(1_000)
        rig.advance(4_000)
        await rig.settle()
        await rig.centre.commit()
        logged = await rig.centre.read(stats_from_store, None, t0)
        live = rig.ivr.stats
        assert logged.as_dict() == live.as_dict()
        assert logged.calls == 3 and logged.outcomes == {"queued": 2, "abandoned": 1}
        main = logged.node("main")
        assert main.entered == 3  # a retry replays the prompt within the same visit
        assert main.failures == {"invalid": 1, "timeout": 1}
        assert main.exits == {"option:1": 1, "hangup": 1, "timeout": 1}
        assert logged.containment_rate == 0.0
        assert stats_from_events(rig.events, menu="another").calls == 0
        assert logged.time_in_ivr_ms > 0
        seen.append(live.as_dict())

    seen: list[dict[str, Any]] = []
    run(tmp_path, scenario)
    db = str(tmp_path / "centre.sqlite")
    assert main(["ivr-stats", "--database-url", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(seen[0]))
    assert main(["ivr-stats", "--database-url", db, "--menu", "test"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("3 calls finished · containment 0.0% · abandoned in the IVR 33.3%")
    assert "main                        3        1        1  hangup 1, option:1 1, timeout 1" in text
    assert main(["ivr-stats", "--database-url", db, "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == "no IVR calls logged\n"


# ---------------------------------------------------------------------------------------- the pieces


def test_ivr_results_travel_as_attached_data_and_back() -> None:
    enq = Enqueue("call-1", queue="technical", priority=2, skills={"technical": 3, "dutch": 1}, attributes={"a": "b"})
    data = attached_data(enq)
    assert data == {"a": "b", "ivr_skills": "dutch=1,technical=3", "ivr_priority": "2"}
    assert routing_from_attached(data) == ({"dutch": 1, "technical": 3}, 2, {"a": "b"})
    assert routing_from_attached({"lang": "nl"}) == ({}, 0, {"lang": "nl"})
    for bad in ({"ivr_skills": "technical"}, {"ivr_skills": "a=b"}, {"ivr_priority": "high"}):
        with pytest.raises(ValueError, match="ivr_"):
            routing_from_attached(bad)


def test_opening_hours_in_words() -> None:
    cal = CalendarConfig(mon=["08:00-18:00"], tue=["08:00-18:00"], wed=["08:00-18:00"], sat=["10:00-12:00"])
    assert hours_text(cal) == "Monday to Wednesday 08:00-18:00, Saturday 10:00-12:00"
    assert hours_text(None) == "day and night, every day"
    assert hours_text(CalendarConfig()) == "closed"


def test_reading_the_caller_knows_only_their_own_cases(tmp_path: Path) -> None:
    async def main() -> None:
        centre = await open_centre(CONFIG, tmp_path / "c.sqlite")
        try:
            ann = partial(create_customer, name="Ann", identities_=[("phone", ANN_E164)], customer_id="ann")
            await centre.write(ann, 1)
            token = (await centre.write(lambda conn: open_case(conn, 1, customer_id="ann")))[1]
            got = await centre.read(read_caller, ANN_PHONE)
            assert got == CallerRecord("ann", {keypad_digits(token): "new"})
            assert await centre.read(read_caller, STRANGER) == CallerRecord()
            assert await centre.read(read_caller, "anonymous") == CallerRecord()
        finally:
            await close_centre(centre)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ configuration


def test_ivr_numbers_in_the_configuration(tmp_path: Path) -> None:
    menu_dir = tmp_path / "ivr"
    menu_dir.mkdir()
    (menu_dir / "main.toml").write_text(Path("contactcentre/data/ivr/main.toml").read_text())
    conf = tmp_path / "centre.toml"
    conf.write_text("")
    base = Path("contactcentre/data/default.toml").read_text()
    data = tomllib.loads(base)
    data["server"]["voice"]["ivr"] = {"3999": "ivr/main.toml"}
    cfg = parse_config(data, str(conf))
    assert cfg.server.voice.ivr == {"3999": str(menu_dir / "main.toml")}  # relative to the configuration file
    assert switch_config(cfg).ivrs == ("3999",)

    data["server"]["voice"]["ivr"] = {"3999": "ivr/missing.toml"}
    with pytest.raises(ConfigError) as err:
        parse_config(data, str(conf))
    assert err.value.key == "server.voice.ivr.3999" and "missing.toml" in str(err.value)
    number = parse_config(tomllib.loads(base), "<x>").queue_numbers()["support"]
    data["server"]["voice"]["ivr"] = {number: "ivr/main.toml"}
    with pytest.raises(ConfigError, match="already"):
        parse_config(data, str(conf))
    data["server"]["voice"]["ivr"] = {"3999": "ivr/main.toml"}
    data["server"]["voice"]["ivr_ms_per_word"] = -1
    with pytest.raises(ConfigError, match="ivr_ms_per_word"):
        parse_config(data, str(conf))


def test_a_menu_queue_that_does_not_take_calls_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\nstart = "q"\n[nodes.q]\nkind = "queue"\nqueue = "mail"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.voice\.ivr\.3000: .*nodes\.q\.queue: 'mail' does not serve voice"):
        parse_config({**CENTRE, "server": {"voice": {"ivr": {"3000": str(path)}}}}, "<test>")


def test_the_key_towards_a_queue() -> None:
    from contactcentre.config import load_config
    from contactcentre.telephony.ivr.menu import key_towards, load_menu

    centre = load_config()
    menu = load_menu("contactcentre/data/ivr/main.toml", centre)
    assert [key_towards(menu, "main", q) for q in ("billing", "technical", "support", "sales")] == ["1", "2", "0", None]
    assert key_towards(menu, "language", "technical") == "1"  # both languages lead there: the lowest key
    assert key_towards(menu, "case_unknown", "support") == "0"
    assert key_towards(menu, "closed", "billing") is None  # closed: no way to a person
    assert key_towards(menu, "welcome", "billing") is None  # not a menu


def test_a_phone_answering_as_the_offer_runs_out_takes_the_call(tmp_path: Path) -> None:
    """The answer reaches the switch at the offer's deadline, before the router's expiry timer has run: the
    phone is the truth, so the router connects the call rather than expire it under a talking agent."""

    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        cid = await rig.call()
        rig.advance(500)
        assert rig.press(cid, "1")["ok"]
        await rig.settle()
        (offer,) = rig.of(E.OfferMade, cid)
        rig.clock.advance(offer.expires_ms - rig.clock.now_ms() + 1)  # past the deadline; no timer has run
        assert rig.wire.request("AnswerCall", call_id=cid, device="1001")["ok"]
        c = rig.centre.router.contact(cid)
        assert (c.state, c.agent_id, rig.centre.router.agent("a1").state) == ("connected", "a1", "busy")
        (accepted,) = rig.of(E.OfferAccepted, cid)
        assert accepted.at_ms == offer.expires_ms - 1
        assert not rig.of(E.OfferExpired, cid)
        rig.advance(60_000)
        assert rig.wire.request("ClearConnection", call_id=cid, device="1001")["ok"]
        assert rig.of(E.WrapUpStarted, cid) and not rig.of(E.ContactAbandoned, cid)

    run(tmp_path, scenario)


def test_a_call_sent_back_to_the_ivr_is_cleared_when_it_queues_again_not_left_waiting(tmp_path: Path) -> None:
    """A phone's blind transfer to the IVR number ends the contact (it left routing); when the IVR queues
    the call again it cannot become the same contact twice, so the bridge clears it instead of leaving the
    caller at a queue number nobody routes. The console's and API's transfer refuse the IVR as a target."""
    from contactcentre.edge.voice.channel import VoiceError

    async def scenario(rig: Rig) -> None:
        rig.centre.submit(E.AgentLoggedIn(at_ms=rig.clock.now_ms(), agent_id="a1"))
        cid = await rig.call()
        rig.advance(500)
        assert rig.press(cid, "1")["ok"]
        await rig.settle()
        assert rig.wire.request("AnswerCall", call_id=cid, device="1001")["ok"]
        with pytest.raises(VoiceError) as refused:
            await rig.voice.transfer(cid, "a1", to_external=IVR)
        assert refused.value.code == "bad_request"
        assert rig.wire.request("TransferCall", call_id=cid, device="1001", to=IVR)["ok"]
        await rig.settle()
        (out,) = rig.of(E.ContactTransferred, cid)
        assert out.to_external == IVR
        rig.advance(500)
        assert rig.press(cid, "1")["ok"]
        await rig.settle()
        assert cid not in rig.switch.calls  # cleared, not waiting forever at the queue number

    run(tmp_path, scenario)
