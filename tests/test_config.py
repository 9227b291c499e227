"""Configuration: the default file loads; every mistake is one clear line naming file, key and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contactcentre.acd import Router
from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config


def test_default_config_loads_and_builds_a_router() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert {q.name for q in cfg.queues} >= {"support", "billing"}
    assert cfg.tiers["gold"].answer_s == 20 and cfg.tiers["gold"].answer_target == 0.9
    assert cfg.tiers["silver"].answer_s == 30 and cfg.tiers["silver"].answer_target == 0.8
    assert [cfg.tiers[t].email_response_s for t in ("gold", "silver", "bronze")] == [3600, 14400, 86400]
    assert cfg.channel("voice").exclusive is True
    Router(cfg)


def test_channel_table_adjusts_defaults_instead_of_replacing_them() -> None:
    cfg = parse_config({"channels": {"voice": {"offer_timeout_s": 9}, "email": {"sla": {"target": 0.95}}}})
    assert cfg.channel("voice").offer_timeout_s == 9
    assert cfg.channel("voice").exclusive is True  # kept from the voice defaults
    assert (cfg.channel("email").sla.threshold_s, cfg.channel("email").sla.target) == (14400, 0.95)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"queues": [{"name": "q", "skills": {"general": 11}}]}, "queues[0].skills.general", "outside 1-10"),
    ({"queues": [{"name": "q", "prioritty": 1}]}, "queues[0]", "unknown field"),
    ({"queues": [{"name": "q", "strategy": "fastest"}]}, "queues[0].strategy", "fastest"),
    ({"queues": [{"name": "q", "priority": "high"}]}, "queues[0].priority", "Expected 'int'"),
    (
        {"skills": {"a": ""}, "queues": [{"name": "q", "skills": {"b": 1}}]},
        "queues[0].skills.b",
        "unknown skill",
    ),
    ({"queues": [{"name": "q"}, {"name": "q"}]}, "queues[1].name", "more than once"),
    (
        {"queues": [{"name": "q", "overflow": [{"after_s": 5, "move_to": "x"}]}]},
        "queues[0].overflow[0]",
        "unknown queue 'x'",
    ),
    (
        {"queues": [{"name": "q", "overflow": [{"after_s": 9}, {"after_s": 5}]}]},
        "queues[0].overflow[1].after_s",
        "increasing",
    ),
    ({"queues": [{"name": "q", "hours": "office"}]}, "queues[0].hours", "unknown calendar"),
    ({"calendars": {"office": {"mon": ["9-17"]}}}, "calendars.office.mon[0]", "not a range"),
    (
        {"calendars": {"office": {"timezone": "Mars/Olympus", "mon": ["09:00-17:00"]}}},
        "calendars.office.timezone",
        "unknown time zone",
    ),
    ({"tiers": {"gold": {"answer_target": 1.5}}}, "tiers.gold.answer_target", "share"),
    ({"agents": [{"id": "a", "capacity": {"fax": 1}}]}, "agents[0].capacity", "fax"),
    ({"routing": {"priority_weight_s": 0}}, "routing.priority_weight_s", "starving"),
    ({"queues": [{"name": "q", "when_full": "nowhere"}]}, "queues[0].when_full", "nor a queue"),
    (
        {
            "queues": [
                {"name": "a", "max_wait_s": 60, "max_wait_action": "b"},
                {"name": "b", "overflow": [{"after_s": 30, "move_to": "a"}]},
            ]
        },
        "queues",
        "in a circle: a -> b -> a",
    ),
    (
        {"calendars": {"o": {"mon": ["09:00-17:00"], "holidays": ["2026-02-30"]}}},
        "calendars.o.holidays[0]",
        "not a date",
    ),
    ({"tiers": {"gold": {"email_target": 7}}}, "tiers.gold.email_target", "share"),
    (
        {"agents": [{"id": "a"}, {"id": "b", "extension": "2001"}], "queues": [{"name": "q"}]},
        "queues[0].number",
        "already agents[1].extension",
    ),
    ({"agents": [{"id": "a", "extension": "T5"}]}, "agents[0].extension", "trunks"),
    ({"server": {"cti_port": 70000}}, "server.cti_port", "not a port"),
    ({"server": {"voice": {"cti_token": "too-short"}}}, "server.voice.cti_token", "at least 16"),
    ({"server": {"voice": {"cti_token": "has a space in it ok"}}}, "server.voice.cti_token", "without spaces"),
    ({"server": {"voice": {"cti_login_timeout_s": 0}}}, "server.voice.cti_login_timeout_s", "> 0"),
    ({"server": {"voice": {"sip_invites_per_s": 0}}}, "server.voice.sip_invites_per_s", "> 0"),
    ({"server": {"voice": {"sip_calls_per_source": 0}}}, "server.voice.sip_calls_per_source", "at least 1"),
    ({"server": {"voice": {"sip_trusted": ["proxy"]}}}, "server.voice.sip_trusted[0]", "not an IP address"),
    (
        {"queues": [{"name": "q", "when_closed": "chat"}, {"name": "chat", "channels": ["chat"]}]},
        "queues[0].when_closed",
        "does not serve voice, email",
    ),
    ({"server": {"transcripts": {"body_chars": 0}}}, "server.transcripts.body_chars", "at least 1"),
    ({"server": {"transcripts": {"messages": 0}}}, "server.transcripts.messages", "at least 1"),
]


@pytest.mark.parametrize(("data", "key", "problem"), BAD, ids=[b[1] for b in BAD])
def test_bad_config_names_key_and_problem(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "centre.toml")
    assert err.value.source == "centre.toml"
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"centre.toml: {key}: ")


def test_unreadable_and_invalid_toml_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[queues\nname = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_config(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[[queues]]\nname = "q"\nskills = { general = 0 }\n')
    with pytest.raises(ConfigError, match=r"typo.toml: queues\[0\].skills.general: level 0 is outside 1-10"):
        load_config(typo)


def test_default_numbers_never_collide_at_any_size() -> None:
    # 10,000 agents and 1,200 queues: before, agent 1,001 took 2001, the first queue's number, and the
    # configuration was refused.
    cfg = parse_config(
        {
            "agents": [{"id": f"a{i}"} for i in range(10_000)],
            "queues": [{"name": f"q{i}"} for i in range(1_200)],
        },
        "<big>",
    )
    extensions, numbers = cfg.extensions(), cfg.queue_numbers()
    assert len(set(extensions.values()) | set(numbers.values())) == 11_200
    assert extensions["a0"] == "100001" and extensions["a9999"] == "110000"
    assert numbers["q0"] == "20001" and numbers["q1199"] == "21200"


def test_default_numbers_keep_their_three_digit_form_for_small_centres() -> None:
    cfg = parse_config({"agents": [{"id": "a"}, {"id": "b"}], "queues": [{"name": "q"}]}, "<small>")
    assert cfg.extensions() == {"a": "1001", "b": "1002"} and cfg.queue_numbers() == {"q": "2001"}
