"""IVR: the example menu loads against the demo centre; every broken file names file and key; calls walk the
menu under a fake clock (no sleeps); the session's tables are walked; a property test drives random callers."""

from __future__ import annotations

import copy
import datetime as dt
import tomllib
import zoneinfo
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactcentre import events as E
from contactcentre.acd import IllegalTransition, Router
from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from contactcentre.reporting.ivr_stats import IvrStats
from contactcentre.telephony.ivr import (
    OUTCOMES,
    SESSION_INPUTS,
    SESSION_TRANSITIONS,
    CollectDigits,
    Enqueue,
    Handoff,
    Hangup,
    HookResult,
    InputFailed,
    IvrError,
    IvrSession,
    Menu,
    NodeEntered,
    NodeExited,
    Play,
    RequestCallback,
    SelfServiceDone,
    SessionFinished,
    keypad_digits,
    load_menu,
    parse_menu,
)
from contactcentre.telephony.ivr.menu import DTMF_KEYS
from contactcentre.telephony.ivr.session import SESSION_INPUT_NAMES, SESSION_STATES, SESSION_STEPS

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "contactcentre" / "data" / "ivr" / "main.toml"
CENTRE = load_config(DEFAULT_CONFIG_PATH)
AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
ANI = "+31201234567"


def local_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=AMS).timestamp() * 1000)  # type: ignore[misc]


OPEN = local_ms(2026, 3, 4, 10, 0)  # a Wednesday morning
SUNDAY = local_ms(2026, 3, 8, 12, 0)
NIGHT = local_ms(2026, 3, 4, 23, 0)
CHRISTMAS = local_ms(2026, 12, 25, 10, 0)  # a Friday, but a holiday in the office calendar
MONDAY_8 = local_ms(2026, 3, 9, 8, 0)  # when the office opens after SUNDAY / the Friday night

MENU = load_menu(MAIN, CENTRE)
CASES = {keypad_digits("C-7QK2ZP"): "pending", keypad_digits("C-ABCDEF"): "solved"}
HOURS_TEXT = "Monday to Thursday 8 to 6, Friday 8 to 5"


def hooks(case_status: Callable[[str], str | None] = CASES.get) -> dict[str, Callable[..., Any]]:
    return {"case_status": case_status, "opening_hours": lambda now_ms: HOURS_TEXT}


class Call:
    """One caller on a fake clock: the test says when prompts end, which keys are pressed and how long passes."""

    def __init__(self, at_ms: int, ani: str | None = ANI, menu: Menu = MENU, **kw: Any) -> None:
        self.now = at_ms
        self.s = IvrSession(menu, "call-1", ani, at_ms, kw.get("hooks", hooks()))
        self.out: list[Any] = []

    def _got(self, actions: list[Any]) -> list[Any]:
        self.out += actions
        return actions

    def start(self) -> list[Any]:
        return self._got(self.s.start(self.now))

    def played(self, ms: int = 1500) -> list[Any]:
        self.now += ms
        return self._got(self.s.prompt_done(self.now))

    def press(self, keys: str, gap_ms: int = 300) -> list[Any]:
        got: list[Any] = []
        for key in keys:
            self.now += gap_ms
            got += self._got(self.s.dtmf(key, self.now))
        return got

    def wait(self, ms: int) -> list[Any]:
        self.now += ms
        return self._got(self.s.advance(self.now))

    def hangup(self) -> list[Any]:
        self.now += 100
        return self._got(self.s.hangup(self.now))

    def hears(self, *prompts: str) -> None:
        """The last prompt is the first of these; each of the rest follows when the one before it ends."""
        for i, prompt in enumerate(prompts):
            if i:
                self.played()
            assert self.plays()[-1] == prompt, self.plays()

    def plays(self) -> list[str]:
        return [a.prompt_id for a in self.out if isinstance(a, Play)]

    def of(self, cls: type) -> list[Any]:
        return [a for a in self.out if isinstance(a, cls)]

    def to_main(self, language: str = "1") -> Call:
        """Welcome, pick a language while its prompt plays (barge-in), hear the main menu to its end."""
        self.start()
        self.played()
        self.press(language)
        assert self.plays()[-1] == "main_menu", self.plays()
        self.played()
        return self


# ------------------------------------------------------------------------------------------------ loading


def test_example_menu_loads_against_the_demo_centre() -> None:
    menu = load_menu(MAIN, CENTRE)
    assert menu.name == "main" and menu.languages == ("en", "nl") and menu.default_language == "en"
    kinds = {type(n).__struct_config__.tag for n in menu.nodes.values()}
    assert kinds == {
        "prompt",
        "menu",
        "collect",
        "hours",
        "queue",
        "self_service",
        "callback",
        "language",
        "hangup",
        "end",
    }
    main = menu.node("main")
    assert main.options == {"1": "billing", "2": "technical", "3": "case_number", "0": "operator"}  # type: ignore[union-attr]
    queues = {n.queue for n in menu.nodes.values() if hasattr(n, "queue")}
    assert queues <= {q.name for q in CENTRE.queues}
    # The same file loads with the names alone, and without any centre (then only 24x7 calendars are known).
    load_menu(MAIN, queues=["billing", "technical", "support"], calendars=CENTRE.calendars, skills=CENTRE.skills)


def _data() -> dict[str, Any]:
    return tomllib.loads(MAIN.read_text(encoding="utf-8"))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for p in parents:
            data = data[p]
        if value is _DELETE:
            del data[last]
        else:
            data[last] = value

    return change


_DELETE = object()
_LOOP = {"kind": "prompt", "prompt": "welcome", "next": "loop_b"}

BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown node", _set("nodes/main/options/1", "biling"), "nodes.main.options.1", "unknown node 'biling'"),
    ("unknown exhausted", _set("nodes/closed/on_exhausted", "bye"), "nodes.closed.on_exhausted", "unknown node 'bye'"),
    ("unknown start", _set("start", "hello"), "start", "unknown node 'hello'"),
    ("letter key", _set("nodes/main/options/A", "billing"), "nodes.main.options.A", "not a telephone key"),
    ("two keys", _set("nodes/main/options/12", "billing"), "nodes.main.options.12", "not a telephone key"),
    ("callback key", _set("nodes/callback/times/x", "asap"), "nodes.callback.times.x", "not a telephone key"),
    (
        "loop without input",
        _set("nodes/case_unknown/on_exhausted", "case_lookup"),
        "nodes.case_lookup.outcomes.not_found",
        "loop without caller input: case_lookup -> case_unknown -> case_lookup",
    ),
    (
        "prompt loop",
        lambda d: d["nodes"].update(loop_a=_LOOP, loop_b={**_LOOP, "next": "loop_a"}),
        "nodes.loop_a.next",
        "loop without caller input: loop_a -> loop_b -> loop_a",
    ),
    ("unknown queue", _set("nodes/billing/queue", "invoices"), "nodes.billing.queue", "unknown queue 'invoices'"),
    ("callback queue", _set("nodes/callback/queue", "nowhere"), "nodes.callback.queue", "unknown queue 'nowhere'"),
    ("unknown calendar", _set("nodes/hours/calendar", "shop"), "nodes.hours.calendar", "unknown calendar 'shop'"),
    ("unknown skill", _set("nodes/technical/skills/wizardry", 3), "nodes.technical.skills.wizardry", "unknown skill"),
    ("skill level", _set("nodes/technical/skills/technical", 11), "nodes.technical.skills.technical", "outside 1-10"),
    (
        "skill language",
        _set("nodes/technical/skills_by_language/de", {}),
        "nodes.technical.skills_by_language.de",
        "not in languages",
    ),
    ("unknown prompt", _set("nodes/welcome/prompt", "hello"), "nodes.welcome.prompt", "unknown prompt 'hello'"),
    ("invalid prompt", _set("nodes/main/invalid_prompt", "oops"), "nodes.main.invalid_prompt", "unknown prompt 'oops'"),
    ("prompt language", _set("prompts/welcome", {"en": "Hi"}), "prompts.welcome", "no text for language 'nl'"),
    ("extra language", _set("prompts/welcome/de", "Hallo"), "prompts.welcome.de", "not in languages"),
    ("placeholder", _set("prompts/goodbye/en", "Bye {name:>9}"), "prompts.goodbye.en", "plain {name}"),
    ("typo in node", _set("nodes/main/optoins", {}), "nodes.main.optoins", "unknown field 'optoins'"),
    ("typo at top", _set("strat", "welcome"), "strat", "unknown field 'strat'"),
    ("typo in settings", _set("settings/timout_ms", 1), "settings.timout_ms", "unknown field"),
    ("unknown kind", _set("nodes/main/kind", "menue"), "nodes.main.kind", "kind is one of prompt, menu"),
    ("missing kind", _set("nodes/main/kind", _DELETE), "nodes.main", "missing 'kind'"),
    ("missing field", _set("nodes/billing/queue", _DELETE), "nodes.billing", "missing required field 'queue'"),
    ("wrong type", _set("nodes/main/timeout_ms", "5s"), "nodes.main.timeout_ms", "Expected 'int"),
    ("zero timeout", _set("nodes/main/timeout_ms", 0), "nodes.main.timeout_ms", "must be > 0"),
    ("settings timeout", _set("settings/max_call_ms", 0), "settings.max_call_ms", "must be > 0"),
    ("negative retries", _set("nodes/main/max_retries", -1), "nodes.main.max_retries", "must be >= 0"),
    ("no exhausted", _set("settings/on_exhausted", _DELETE), "nodes.language", "unreachable"),
    ("digits", _set("nodes/case_number/min_digits", 7), "nodes.case_number.max_digits", "min_digits <= max_digits"),
    ("pattern", _set("nodes/case_number/pattern", "[2-9"), "nodes.case_number.pattern", "not a regular expression"),
    ("terminator", _set("nodes/case_number/terminator", "x"), "nodes.case_number.terminator", "Invalid enum value"),
    ("language", _set("nodes/dutch/language", "de"), "nodes.dutch.language", "'de' is not in languages"),
    ("default language", _set("default_language", "fr"), "default_language", "not in languages"),
    ("orphan", _set("nodes/orphan", {"kind": "hangup"}), "nodes.orphan", "cannot be reached from start"),
    ("time limit", _set("settings/on_time_limit", "main"), "settings.on_time_limit", "queue, hangup or end"),
    (
        "hook outcome",
        _set("nodes/case_lookup/outcomes/maybe", "main"),
        "nodes.case_lookup.outcomes.maybe",
        "found, not_found",
    ),
    ("hook input", _set("nodes/case_lookup/input", "case_no"), "nodes.case_lookup.input", "no collect node sets"),
    ("served", _set("nodes/case_lookup/served", ["maybe"]), "nodes.case_lookup.served", "not one of the listed"),
    ("callback time", _set("nodes/callback/times/2", "tomorrow"), "nodes.callback.times.2", "'asap', 'next_open'"),
    ("callback calendar", _set("nodes/callback/calendar", _DELETE), "nodes.callback.calendar", "needs the calendar"),
    ("empty menu", _set("nodes/main/options", {}), "nodes.main.options", "at least one option"),
]


@pytest.mark.parametrize(("change", "key", "problem"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_menu_names_file_and_key(change: Callable[[dict[str, Any]], None], key: str, problem: str) -> None:
    data = copy.deepcopy(_data())
    change(data)
    if problem == "unreachable":  # without a default, the first menu found without on_exhausted is named
        key, problem = "nodes.main.on_exhausted", "must name a node"
    with pytest.raises(ConfigError) as err:
        parse_menu(data, "ivr/main.toml", CENTRE)
    assert (err.value.source, err.value.key) == ("ivr/main.toml", key)
    assert problem in err.value.problem
    assert str(err.value).startswith(f"ivr/main.toml: {key}: ")


def test_without_a_centre_queues_are_unchecked_but_calendars_are_needed() -> None:
    data = _data()
    with pytest.raises(ConfigError, match=r"nodes.hours.calendar: unknown calendar 'office' \(known: 24x7\)"):
        parse_menu(data, "m.toml")
    data["nodes"]["hours"]["calendar"] = data["nodes"]["callback"]["calendar"] = "24x7"
    data["nodes"]["billing"]["queue"] = "anything"
    assert parse_menu(data, "m.toml").node("billing").queue == "anything"  # type: ignore[union-attr]


def test_unreadable_and_invalid_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_menu(tmp_path / "missing.toml", CENTRE)
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_menu(bad, CENTRE)
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "t"\nstart = "a"\n[prompts]\nhi = { en = "Hi" }\n[nodes.a]\nkind = "menu"\nprompt = "hi"\n')
    with pytest.raises(ConfigError, match=r"typo\.toml: nodes\.a: Object missing required field 'options'"):
        load_menu(typo, CENTRE)


# ------------------------------------------------------------------------------------------------ walks


def test_press_1_enqueues_billing_with_the_path_language_and_menu() -> None:
    call = Call(OPEN).to_main()
    assert call.of(CollectDigits)[-1] == CollectDigits("call-1", node="main", max_digits=1, timeout_ms=5000)
    call.press("1")
    assert call.plays()[-1] == "to_billing" and not call.of(Enqueue)  # the queue node's prompt plays first
    call.played()
    (enq,) = call.of(Enqueue)
    assert enq.queue == "billing" and enq.priority == 0 and enq.skills == {}
    assert enq.attributes == {"ivr_menu": "main", "ivr_path": "language>1/main>1", "language": "en"}
    assert call.s.done and call.s.outcome == "queued" and call.s.next_deadline() is None
    assert call.plays() == ["welcome", "choose_language", "main_menu", "to_billing"]
    # What the runtime hands the router: a voice contact with the call's id; the demo centre queues it.
    arrived = enq.contact_arrived(call.now, address=ANI)
    assert (arrived.contact_id, arrived.queue, arrived.channel, arrived.address) == ("call-1", "billing", "voice", ANI)
    out = Router(CENTRE).handle(arrived)
    assert any(isinstance(e, E.ContactQueued) for e in out)


def test_technical_in_dutch_carries_skills_priority_and_attributes() -> None:
    call = Call(OPEN).to_main(language="2")
    assert call.of(Play)[-1].text.startswith("Voor facturen, druk 1.")  # the main menu in Dutch
    call.press("2")
    (enq,) = call.of(Enqueue)
    assert enq.queue == "technical" and enq.priority == 1
    assert enq.skills == {"technical": 5, "dutch": 1}
    assert enq.attributes == {
        "ivr_menu": "main",
        "ivr_path": "language>2/main>2",
        "language": "nl",
        "topic": "technical",
    }


def test_language_choice_changes_every_prompt_after_it() -> None:
    en, nl = Call(OPEN).to_main("1"), Call(OPEN).to_main("2")
    assert [p.language for p in en.of(Play)] == ["en", "en", "en"]
    assert [p.language for p in nl.of(Play)] == ["en", "en", "nl"]  # welcome and the choice itself: default
    assert en.of(Play)[-1].text != nl.of(Play)[-1].text
    assert nl.of(Play)[-1].text == MENU.spec.prompts["main_menu"]["nl"]


def test_silence_at_the_language_menu_carries_on_in_english() -> None:
    call = Call(OPEN)
    call.start()
    call.played()
    call.played()  # choose_language ends; nobody presses anything
    call.wait(4000)  # timeout: max_retries 1, so the menu plays once more
    call.hears("no_input", "choose_language")
    call.played()
    call.wait(4000)
    assert call.s.language == "en" and call.plays()[-1] == "main_menu"


def test_timeouts_then_retries_then_the_exhausted_branch() -> None:
    call = Call(OPEN).to_main()
    waited = call.now
    call.wait(4999)
    assert not call.of(InputFailed) and call.s.next_deadline() == waited + 5000
    call.wait(1)
    assert call.plays()[-1] == "no_input"
    call.played(1000)
    assert call.plays()[-1] == "main_menu"
    call.played(3000)
    call.wait(5000)  # second attempt
    call.played(1000)
    call.played(3000)
    call.wait(5000)  # third: retries exhausted
    failed = [f for f in call.s.facts if isinstance(f, InputFailed)]
    assert [(f.node, f.cause, f.attempt) for f in failed] == [("main", "timeout", n) for n in (1, 2, 3)]
    (enq,) = call.of(Enqueue)
    assert enq.queue == "support" and enq.attributes["ivr_path"] == "language>1"  # no choice made at main
    exit_main = [f for f in call.s.facts if isinstance(f, NodeExited) and f.node == "main"]
    assert [f.cause for f in exit_main] == ["timeout"]


def test_invalid_key_plays_the_invalid_prompt_and_asks_again() -> None:
    call = Call(OPEN).to_main()
    call.press("7")
    assert [(f.cause, f.attempt) for f in call.s.facts if isinstance(f, InputFailed)] == [("invalid", 1)]
    call.hears("invalid", "main_menu")
    call.played()
    call.press("0")
    assert call.of(Enqueue)[0].queue == "support"
    assert call.of(Enqueue)[0].attributes["ivr_path"] == "language>1/main>0"


def test_three_wrong_keys_exhaust_the_menu() -> None:
    call = Call(OPEN).to_main()
    call.press("789")  # each wrong key barges into the replay that the previous one started
    assert call.of(Enqueue)[0].queue == "support"
    assert [f.cause for f in call.s.facts if isinstance(f, NodeExited) and f.node == "main"] == ["invalid"]


def test_a_stale_prompt_end_is_ignored_and_a_lost_one_is_covered_by_prompt_max() -> None:
    call = Call(OPEN)
    (welcome,) = call.start()
    call.played()
    call.press("1")  # barge-in: the language prompt is replaced by the main menu
    main = call.out[-1]
    assert main.prompt_id == "main_menu" and main.seq == welcome.seq + 2
    assert call._got(call.s.prompt_done(call.now, seq=main.seq - 1)) == []  # the replaced prompt reports late
    assert call.s.state == "playing"
    # The media server never reports the end of the main menu: after prompt_max_ms it counts as played.
    assert call.s.next_deadline() == call.now + MENU.settings.prompt_max_ms
    assert call.wait(MENU.settings.prompt_max_ms)[-1] == CollectDigits("call-1", "main", 1, timeout_ms=5000)
    assert call.s.state == "waiting_input"


def test_keys_during_a_plain_prompt_are_not_kept() -> None:
    call = Call(OPEN)
    call.start()
    assert call.press("1") == []  # welcome takes no input
    call.played()
    assert call.plays()[-1] == "choose_language" and call.s.node == "language"


@pytest.mark.parametrize("at", [SUNDAY, NIGHT, CHRISTMAS], ids=["sunday", "night", "holiday"])
def test_closed_hours_take_the_closed_branch(at: int) -> None:
    call = Call(at)
    call.start()
    call.played()
    call.press("1")
    closed = call.out[-1]
    assert closed.prompt_id == "closed" and closed.variables == {"opening_hours": HOURS_TEXT}
    assert f"Our opening hours are {HOURS_TEXT}." in closed.text
    assert [f.cause for f in call.s.facts if isinstance(f, NodeExited) and f.node == "hours"] == ["closed"]
    assert not call.of(SelfServiceDone)  # telling the hours does not count as serving the caller


def test_opening_hours_follow_the_calendar_through_dst() -> None:
    # 30 March 2026, the day after clocks go forward: 08:15 local is 06:15 UTC. A calendar that got the offset
    # wrong would still think it is 07:15 and closed.
    for at, node in ((local_ms(2026, 3, 30, 8, 15), "main"), (local_ms(2026, 3, 30, 7, 45), "closed")):
        call = Call(at)
        call.start()
        call.played()
        call.press("1")
        assert call.s.node == node


def test_closed_then_voicemail_hands_the_call_off() -> None:
    call = Call(SUNDAY)
    call.start()
    call.played()
    call.press("2")  # Dutch
    call.played()  # closed prompt ends
    call.press("2")
    assert call.plays()[-1] == "voicemail" and call.out[-1].language == "nl"
    call.played()
    (handoff,) = call.of(Handoff)
    assert handoff.target == "voicemail" and handoff.attributes["ivr_path"] == "language>2/closed>2"
    assert call.s.outcome == "handed_off"


def test_closed_and_silent_hears_goodbye_and_the_ivr_hangs_up() -> None:
    call = Call(NIGHT)
    call.start()
    call.played()
    call.press("1")
    for attempt in range(3):
        call.played()  # the closed prompt ends; nothing is pressed
        call.wait(5000)
        if attempt < 2:
            call.played()  # "no input"
    assert call.plays()[-1] == "goodbye"
    call.played()
    assert call.of(Hangup) == [Hangup("call-1", reason="goodbye")]
    assert call.s.outcome == "ivr_hangup"


def test_case_status_found_is_spoken_and_the_call_is_contained() -> None:
    call = Call(OPEN).to_main()
    call.press("3")
    assert call.plays()[-1] == "enter_case"
    call.played()
    call.press(keypad_digits("C-7QK2ZP"))  # six digits end the entry without waiting for '#'
    status = call.out[-1]
    assert status.prompt_id == "case_status"
    assert status.variables == {"status": "pending"}
    assert status.text.startswith("Your case is waiting for your reply.")  # the label, not the code
    assert call.of(SelfServiceDone) == [
        SelfServiceDone("call-1", node="case_lookup", hook="case_status", outcome="found")
    ]
    call.played()
    call.wait(6000)  # no key: goodbye (max_retries 0)
    call.played()
    assert call.of(Hangup) == [Hangup("call-1", reason="goodbye")]
    assert call.s.outcome == "self_served" and not call.of(Enqueue)


def test_case_status_in_dutch_and_hanging_up_after_hearing_it_is_contained() -> None:
    call = Call(OPEN).to_main("2")
    call.press("3")
    call.press(keypad_digits("C-ABCDEF") + "#")  # six digits end the entry; the '#' after them is swallowed
    assert call.out[-1].text.startswith("Uw zaak is opgelost.")
    call.hangup()
    assert call.s.outcome == "self_served"


def test_case_not_found_then_an_agent_gets_the_case_number() -> None:
    call = Call(OPEN).to_main()
    call.press("3")
    call.played()
    call.press("234#")  # too short: invalid
    call.hears("case_invalid", "enter_case")
    call.played()
    call.press("222222")
    assert call.plays()[-1] == "case_unknown" and not call.of(SelfServiceDone)
    call.press("0")
    (enq,) = call.of(Enqueue)
    assert enq.queue == "support"
    assert enq.attributes["case_number"] == "222222"
    assert enq.attributes["ivr_path"] == "language>1/main>3/case_unknown>0"
    assert call.s.outcome == "queued"


def test_an_entry_ends_when_the_caller_stops_typing() -> None:
    call = Call(OPEN).to_main()
    call.press("3")
    call.played()
    call.press("77529")
    call.wait(MENU.settings.inter_digit_ms)  # five digits and a pause: the entry is checked, and is short
    call.hears("case_invalid", "enter_case")


def test_a_failing_case_lookup_goes_to_a_person() -> None:
    def broken(case_number: str) -> str | None:
        raise ConnectionError("store is down")

    call = Call(OPEN, hooks=hooks(broken)).to_main()
    call.press("3")
    call.press("775297")
    (enq,) = call.of(Enqueue)
    assert enq.queue == "support" and enq.attributes["case_number"] == "775297"
    exits = [f.cause for f in call.s.facts if isinstance(f, NodeExited) and f.node == "case_lookup"]
    assert exits == ["otherwise"]


def test_custom_hooks_return_a_result() -> None:
    data = _data()
    data["nodes"]["case_lookup"] = {
        "kind": "self_service",
        "hook": "balance",
        "input": "case_number",
        "outcomes": {"ok": "case_status", "unknown": "case_unknown"},
        "otherwise": "operator",
    }
    menu = parse_menu(data, "m.toml", CENTRE)
    seen: list[dict[str, str]] = []

    def balance(variables: dict[str, str], now_ms: int) -> HookResult:
        seen.append(variables)
        return HookResult("ok", {"status": "closed"})

    call = Call(OPEN, menu=menu, hooks={"balance": balance}).to_main()
    call.press("3775297")
    assert seen[0]["case_number"] == "775297" and seen[0]["ani"] == ANI
    assert call.out[-1].text.startswith("Your case is closed.")
    assert call.of(SelfServiceDone)[0].outcome == "ok"  # listed outcomes serve, unless ``served`` lists fewer


def test_callback_on_the_callers_number_when_the_office_opens() -> None:
    call = Call(SUNDAY)
    call.start()
    call.played()
    call.press("1")
    call.press("1")  # closed menu: callback (barge-in)
    assert call.plays()[-1] == "callback_confirm"
    call.press("1")  # this number
    assert call.plays()[-1] == "callback_when"
    call.press("1")  # as soon as we open
    (cb,) = call.of(RequestCallback)
    assert (cb.number, cb.at_ms, cb.queue) == (ANI, MONDAY_8, "support")
    assert cb.attributes["ivr_path"] == "language>1/closed>1"
    assert call.s.outcome is None and call.plays()[-1] == "callback_done"
    call.hangup()  # the caller does not wait for the goodbye: still a callback
    assert call.s.outcome == "callback" and not call.of(Hangup)


def test_callback_on_another_number_in_two_hours() -> None:
    call = Call(NIGHT)
    call.start()
    call.played()
    call.press("11")
    call.press("2")  # another number
    assert call.plays()[-1] == "callback_number"
    call.played()
    call.press("12#")  # not a phone number
    call.hears("invalid", "callback_number")
    call.press("0612345678#")
    call.played()
    call.press("2")
    (cb,) = call.of(RequestCallback)
    assert cb.number == "0612345678" and cb.at_ms == call.now + 120 * 60_000
    call.played()
    assert call.of(Hangup) == [Hangup("call-1", reason="callback")]
    assert call.s.outcome == "callback"


def test_callback_with_a_withheld_number_asks_for_one() -> None:
    call = Call(SUNDAY, ani=None)
    call.start()
    call.played()
    call.press("11")
    assert call.plays()[-1] == "callback_number"


def test_caller_hangs_up_mid_menu_is_abandoned_in_the_ivr() -> None:
    call = Call(OPEN).to_main()
    assert call.hangup() == []
    assert call.s.outcome == "abandoned" and call.s.done
    finished = [f for f in call.s.facts if isinstance(f, SessionFinished)]
    assert [(f.outcome, f.node) for f in finished] == [("abandoned", "main")]
    stats = IvrStats()
    stats.add_session(call.s)
    assert stats.outcomes == Counter({"abandoned": 1})
    assert stats.node("main").abandoned == 1 and stats.abandon_rate == 1.0
    # Late media reports and keys are ignored; the session stays finished.
    assert call.s.dtmf("1", call.now + 1) == [] and call.s.prompt_done(call.now + 2) == []
    assert call.s.hangup(call.now + 3) == [] and call.s.advance(call.now + 10**9) == []
    assert len([f for f in call.s.facts if isinstance(f, SessionFinished)]) == 1


def test_time_limit_sends_a_looping_caller_to_the_operator() -> None:
    data = _data()
    data["settings"]["max_call_ms"] = 60_000
    menu = parse_menu(data, "m.toml", CENTRE)
    call = Call(OPEN, menu=menu).to_main()
    call.press("3")
    while not call.s.done:  # case number, status, "9" for another case number, for ever
        call.press("775297")
        call.press("9")
    (enq,) = call.of(Enqueue)
    assert enq.queue == "support" and call.now <= OPEN + 60_000 + 300
    exits = [f for f in call.s.facts if isinstance(f, NodeExited) and f.cause == "time_limit"]
    assert len(exits) == 1 and exits[0].at_ms == OPEN + 60_000


def test_no_prompt_done_at_all_still_ends() -> None:
    call = Call(SUNDAY)
    call.start()
    while not call.s.done:
        deadline = call.s.next_deadline()
        assert deadline is not None
        call.wait(deadline - call.now)
    assert call.s.outcome == "ivr_hangup"


def test_same_inputs_give_byte_identical_outputs() -> None:
    def run() -> bytes:
        call = Call(OPEN).to_main()
        call.press("3")
        call.press("775297")
        call.press("0")
        return msgspec.json.encode([call.out, call.s.facts])

    assert run() == run()


def test_refused_inputs() -> None:
    call = Call(OPEN)
    with pytest.raises(IllegalTransition, match="cannot 'dtmf' in state 'new'"):
        call.s.dtmf("1", OPEN)
    call.start()
    with pytest.raises(IllegalTransition, match="cannot 'start' in state 'playing'"):
        call.s.start(OPEN)
    with pytest.raises(IvrError, match="not a telephone key"):
        call.s.dtmf("A", OPEN)
    before = (call.s.state, call.s.next_deadline(), len(call.s.facts))
    with pytest.raises(IvrError, match="before the session's clock"):
        call.s.advance(OPEN - 1)
    with pytest.raises(IvrError, match="before the session's clock"):
        call.s.dtmf("1", OPEN - 1)
    assert (call.s.state, call.s.next_deadline(), len(call.s.facts)) == before  # a refused input leaves no trace


def test_an_input_past_a_deadline_comes_after_the_timer() -> None:
    call = Call(OPEN).to_main()
    deadline = call.s.next_deadline()
    assert deadline is not None
    call.s.dtmf("1", deadline)  # a key exactly at the timeout: the timeout fired first, the key barges in
    failed = [f for f in call.s.facts if isinstance(f, InputFailed)]
    assert [(f.cause, f.at_ms) for f in failed] == [("timeout", deadline)]
    assert call.s.outcome is None and call.s.node == "billing"


# ------------------------------------------------------------------------------------------------ tables


@pytest.mark.parametrize(("state", "step"), sorted(SESSION_TRANSITIONS))
def test_session_row(state: str, step: str) -> None:
    s = IvrSession(MENU, "c", ANI, OPEN)
    s.state = state
    s._step(step)
    assert s.state == SESSION_TRANSITIONS[(state, step)]


MISSING_STEPS = sorted((s, a) for s in SESSION_STATES for a in SESSION_STEPS if (s, a) not in SESSION_TRANSITIONS)


@pytest.mark.parametrize(("state", "step"), MISSING_STEPS)
def test_session_missing_step_is_refused_naming_both(state: str, step: str) -> None:
    s = IvrSession(MENU, "c", ANI, OPEN)
    s.state = state
    with pytest.raises(IllegalTransition) as err:
        s._step(step)
    assert repr(state) in str(err.value) and repr(step) in str(err.value)
    assert s.state == state


MISSING_INPUTS = sorted(
    (s, i) for s in SESSION_STATES for i in SESSION_INPUT_NAMES if (s, i) not in SESSION_INPUTS and i != "start"
)


@pytest.mark.parametrize(("state", "name"), MISSING_INPUTS)
def test_session_input_not_in_the_table_is_refused(state: str, name: str) -> None:
    s = IvrSession(MENU, "c", ANI, OPEN)
    s.state = state
    call: dict[str, Callable[[], object]] = {
        "dtmf": lambda: s.dtmf("1", OPEN),
        "prompt_done": lambda: s.prompt_done(OPEN),
    }
    with pytest.raises(IllegalTransition) as err:
        call[name]()
    assert repr(state) in str(err.value) and repr(name) in str(err.value)


def test_only_new_sessions_start_and_done_is_terminal() -> None:
    assert [s for (s, i) in SESSION_INPUTS if i == "start"] == ["new"]
    assert not [step for (s, step) in SESSION_TRANSITIONS if s == "done"]
    assert {v for (s, _), v in SESSION_INPUTS.items() if s == "done"} == {"ignore"}


# ------------------------------------------------------------------------------------------------ statistics


def test_containment_statistics_from_a_day_of_calls() -> None:
    stats = IvrStats()
    contained = Call(OPEN).to_main()
    contained.press("3775297")
    contained.hangup()
    queued = Call(OPEN).to_main()
    queued.press("1")
    queued.played()
    abandoned = Call(OPEN).to_main()
    abandoned.press("5")
    abandoned.hangup()
    voicemail = Call(SUNDAY)
    voicemail.start()
    voicemail.played()
    voicemail.press("12")
    voicemail.played()
    for call in (contained, queued, abandoned, voicemail):
        stats.add_session(call.s)
    assert stats.calls == 4
    assert stats.outcomes == Counter({"self_served": 1, "queued": 1, "abandoned": 1, "handed_off": 1})
    assert stats.containment_rate == 0.25 and stats.abandon_rate == 0.25
    main = stats.node("main")
    assert main.entered == 3
    assert main.exits == Counter({"option:3": 1, "option:1": 1, "hangup": 1})
    assert main.failures == Counter({"invalid": 1})
    assert stats.node("hours").exits == Counter({"open": 3, "closed": 1})
    assert stats.node("case_lookup").exits == Counter({"found": 1})
    assert stats.node("case_status").exits == Counter({"hangup": 1})
    assert stats.time_in_ivr_ms > 0
    report = stats.as_dict()
    assert report["containment_rate"] == 0.25
    assert msgspec.json.decode(msgspec.json.encode(report)) == report


def test_statistics_read_back_from_logged_facts() -> None:
    call = Call(OPEN).to_main()
    call.press("1")
    call.played()
    logged = msgspec.json.encode(call.s.facts)
    from contactcentre.telephony.ivr.actions import IvrFact

    facts = msgspec.json.decode(logged, type=list[IvrFact])
    live, replayed = IvrStats(), IvrStats()
    live.add(call.s.facts)
    replayed.add(facts)
    assert live.as_dict() == replayed.as_dict()


def test_keypad_digits_of_case_tokens() -> None:
    assert keypad_digits("C-7QK2ZP") == "775297"
    assert keypad_digits("c-abcdef") == "222333"


def test_the_documentation_describes_every_node_kind() -> None:
    doc = (ROOT / "docs" / "ivr.md").read_text(encoding="utf-8")
    for kind in (
        "prompt",
        "menu",
        "collect",
        "hours",
        "queue",
        "self_service",
        "callback",
        "language",
        "hangup",
        "end",
    ):
        assert f'kind = "{kind}"' in doc or f"`{kind}`" in doc, kind


# ------------------------------------------------------------------------------------------------ property

STARTS = [OPEN, SUNDAY, NIGHT, CHRISTMAS, local_ms(2026, 3, 30, 7, 59, 59)]
OPS = st.one_of(
    st.tuples(st.just("dtmf"), st.sampled_from(sorted(DTMF_KEYS)), st.integers(0, 3000)),
    st.tuples(st.just("dtmf"), st.sampled_from("1230#"), st.integers(0, 500)),  # keys the menu uses, often
    st.tuples(st.just("keys"), st.sampled_from(["775297", "0612345678#", "13", "32222"]), st.integers(0, 500)),
    st.tuples(st.just("prompt_done"), st.none(), st.integers(0, 5000)),
    st.tuples(st.just("stale"), st.none(), st.integers(0, 100)),
    st.tuples(st.just("advance"), st.none(), st.integers(0, 20_000)),
    st.tuples(st.just("deadline"), st.none(), st.just(0)),
    st.tuples(st.just("hangup"), st.none(), st.integers(0, 1000)),
)
TERMINAL = {"queued": Enqueue, "callback": RequestCallback, "handed_off": Handoff}


def _hook_for(kind: str) -> Callable[[str], str | None]:
    def hook(case_number: str) -> str | None:
        if kind == "raise":
            raise RuntimeError("down")
        return None if kind == "none" else "open"

    return hook


@settings(max_examples=500)
@given(
    start=st.sampled_from(STARTS),
    ani=st.sampled_from([ANI, None]),
    hook=st.sampled_from(["found", "none", "raise"]),
    ops=st.lists(OPS, max_size=80),
)
def test_random_callers_always_end_in_exactly_one_outcome(
    start: int, ani: str | None, hook: str, ops: list[tuple[str, str | None, int]]
) -> None:
    s = IvrSession(MENU, "p", ani, start, hooks(_hook_for(hook)))
    out: list[Any] = list(s.start(start))
    now = start

    def check() -> None:
        deadline = s.next_deadline()
        assert deadline is None or deadline > now
        assert (deadline is None) == s.done
        finished = [f for f in s.facts if isinstance(f, SessionFinished)]
        assert len(finished) == (1 if s.done else 0)
        if s.done:
            assert s.outcome in OUTCOMES and finished[0].outcome == s.outcome

    for op, key, dt_ms in ops:
        now += dt_ms
        if op == "dtmf":
            assert key is not None
            out += s.dtmf(key, now)
        elif op == "keys":  # an entry typed in one go, so that case lookups and callbacks are reached
            assert key is not None
            for k in key:
                now += 150
                out += s.dtmf(k, now)
        elif op == "prompt_done":
            out += s.prompt_done(now)
        elif op == "stale":
            assert s.prompt_done(now, seq=-1) == []
        elif op == "advance":
            out += s.advance(now)
        elif op == "deadline":
            now = s.next_deadline() or now
            out += s.advance(now)
        else:
            out += s.hangup(now)
        check()

    # Then the caller goes silent and the media server stops reporting: the call still ends, in bounded time.
    steps = 0
    while not s.done:
        deadline = s.next_deadline()
        assert deadline is not None
        now = deadline
        out += s.advance(now)
        check()
        steps += 1
        assert steps < 200
    (finished,) = [f for f in s.facts if isinstance(f, SessionFinished)]
    assert finished.at_ms <= start + MENU.settings.max_call_ms

    # Exactly one outcome, and the actions agree with it.
    counts = Counter(type(a) for a in out)
    for outcome, cls in TERMINAL.items():
        assert counts[cls] == (1 if s.outcome == outcome else 0), (outcome, s.outcome)
    if s.outcome == "abandoned":
        assert counts[Hangup] == 0
    if s.outcome in ("ivr_hangup", "callback"):
        assert counts[Hangup] <= 1
    if s.outcome == "self_served":
        assert counts[SelfServiceDone] >= 1 and counts[Enqueue] == 0
    # Every node left was entered first, and never left twice for one entry.
    inside: str | None = None
    for f in s.facts:
        if isinstance(f, NodeEntered):
            assert inside is None
            inside = f.node
        elif isinstance(f, NodeExited):
            assert inside == f.node
            inside = None
    times = [f.at_ms for f in s.facts]
    assert times == sorted(times)
