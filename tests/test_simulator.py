"""The simulator: seeded and repeatable, scenario files checked like configuration, and its results agree
with queueing theory (Erlang C and A) within tolerances measured from its own spread."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from contactcentre.config import ConfigError
from contactcentre.simulation.engine import simulate
from contactcentre.simulation.scenario import apply_overrides, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent


def mmc(per_hour: float, aht: float, agents: int, calls: int, patience: float | None = None,
        threshold: float = 20, **sim: Any) -> dict[str, Any]:  # fmt: skip
    arrivals: dict[str, Any] = {
        "queue": "q",
        "per_hour": per_hour,
        "handle_time": {"distribution": "exponential", "mean_s": aht},
    }
    if patience is not None:
        arrivals["patience"] = {"distribution": "exponential", "mean_s": patience}
    return {
        "simulation": {"calls": calls, "seed": 1, "service_level_threshold_s": threshold, **sim},
        "queues": [{"name": "q", "skills": {"general": 1}}],
        "agent_groups": [{"count": agents, "skills": {"general": 5}}],
        "arrivals": [arrivals],
    }


# --------------------------------------------------------------------------------------------- validation
#
# Reference values are the closed forms of docs/queueing.md. Tolerances are 4 standard deviations of one run at the
# call count used: the spread was measured over 20 seeds of 100,000 calls each (the sds below), and scales
# with sqrt(100,000 / calls). The means over those 20 seeds sat within noise of every closed form.

ERLANG_C = [
    # id, per hour, AHT, agents, T, calls, P(wait), SL, ASA, (sd P(wait), sd SL, relative sd ASA) at 100k
    ("E1", 60, 180, 5, 20, 100_000, 0.236152, 0.810905, 21.254, (0.0045, 0.0046, 0.036)),
    ("E3", 200, 180, 14, 20, 100_000, 0.174132, 0.888350, 7.836, (0.0072, 0.0060, 0.082)),
    ("E5", 30, 60, 2, 10, 100_000, 0.100000, 0.922120, 4.000, (0.0015, 0.0013, 0.022)),
    ("E8", 850, 180, 50, 20, 200_000, 0.189660, 0.917574, 4.552, (0.0113, 0.0080, 0.115)),
]


@pytest.mark.parametrize("row", ERLANG_C, ids=[r[0] for r in ERLANG_C])
def test_simulator_agrees_with_erlang_c(row: tuple[Any, ...]) -> None:
    _, lam, aht, c, t, calls, p_wait, sl, asa, (sd_pw, sd_sl, sd_asa) = row
    scale = math.sqrt(100_000 / calls)
    d = simulate(parse_scenario(mmc(lam, aht, c, calls, threshold=t))).to_json()
    assert d["p_wait"] == pytest.approx(p_wait, abs=4 * sd_pw * scale)
    assert d["service_level_offered"] == pytest.approx(sl, abs=4 * sd_sl * scale)
    assert d["asa_s"] == pytest.approx(asa, rel=4 * sd_asa * scale)
    assert d["occupancy"] == pytest.approx(lam * aht / 3600 / c, abs=0.01)
    assert d["abandoned"] == 0


ERLANG_A = [
    # id, per hour, AHT, agents, patience, calls, P(W>0), P(Ab), E[W], SL offered, sds at 100k
    ("A1", 200, 180, 14, 120, 100_000, 0.1270, 0.02284, 2.741, 0.93273, (0.0033, 0.00092, 0.038, 0.0023)),
    ("A3", 850, 180, 50, 180, 200_000, 0.1421, 0.0104, 1.866, 0.95954, (0.0078, 0.0010, 0.085, 0.0043)),
]


@pytest.mark.parametrize("row", ERLANG_A, ids=[r[0] for r in ERLANG_A])
def test_simulator_agrees_with_erlang_a(row: tuple[Any, ...]) -> None:
    _, lam, aht, c, pat, calls, p_wait, p_ab, ew, sl, (sd_pw, sd_ab, sd_ew, sd_sl) = row
    scale = math.sqrt(100_000 / calls)
    d = simulate(parse_scenario(mmc(lam, aht, c, calls, patience=pat))).to_json()
    assert d["p_wait"] == pytest.approx(p_wait, abs=4 * sd_pw * scale)
    assert d["p_abandon"] == pytest.approx(p_ab, abs=4 * sd_ab * scale)
    assert d["mean_wait_s"] == pytest.approx(ew, rel=4 * sd_ew * scale)
    assert d["service_level_offered"] == pytest.approx(sl, abs=4 * sd_sl * scale)


# ------------------------------------------------------------------------------------------- determinism


def _stable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("contacts_per_second", "wall_s")}


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    loaded = parse_scenario(mmc(850, 180, 50, 5_000, patience=120))
    a = _stable(simulate(loaded).to_json())
    b = _stable(simulate(loaded).to_json())
    c = _stable(simulate(loaded, seed=2).to_json())
    assert a == b
    assert a != c


def test_example_scenarios_load_and_run_briefly() -> None:
    for path in sorted((ROOT / "contactcentre" / "data" / "scenarios").glob("*.toml")):
        loaded = load_scenario(path)
        d = simulate(loaded, calls=300 if loaded.scenario.simulation.calls else None).to_json()
        assert d["offered"] > 0, path


# ------------------------------------------------------------------------------------------ the workload


def test_no_patience_means_no_abandonment_and_patience_means_some() -> None:
    d = simulate(parse_scenario(mmc(900, 180, 45, 5_000))).to_json()  # overloaded: A = 45 = c
    assert d["abandoned"] == 0
    d = simulate(parse_scenario(mmc(900, 180, 45, 5_000, patience=60))).to_json()
    assert d["abandoned"] > 0


def test_arrival_curve_follows_its_intervals() -> None:
    data = mmc(1, 60, 20, 1)
    del data["simulation"]["calls"]
    data["simulation"].update(duration_s=4 * 3600, warmup_fraction=0)
    data["arrivals"][0].pop("per_hour")
    data["arrivals"][0]["curve"] = [0, 0, 0, 0, 1200, 1200, 1200, 1200] + [0] * 88  # only the second hour
    d = simulate(parse_scenario(data), timeline=True)
    per_interval = [iv.offered for iv in d.intervals]
    assert sum(per_interval[:4]) == 0 and sum(per_interval[8:]) == 0
    assert sum(per_interval[4:8]) == pytest.approx(1200, rel=0.15)


def test_lognormal_handle_time_has_the_mean_asked_for() -> None:
    data = mmc(600, 120, 40, 20_000)
    data["arrivals"][0]["handle_time"] = {"distribution": "lognormal", "mean_s": 120, "sd_s": 90}
    d = simulate(parse_scenario(data)).to_json()
    assert d["occupancy"] == pytest.approx(600 * 120 / 3600 / 40, abs=0.02)


def test_shifts_take_agents_off_the_floor() -> None:
    data = mmc(120, 60, 4, 1)
    del data["simulation"]["calls"]
    data["simulation"].update(duration_s=2 * 3600, warmup_fraction=0)
    data["agent_groups"][0]["shifts"] = [[0, 3600]]  # nobody in the second hour
    data["arrivals"][0]["patience"] = {"distribution": "fixed", "mean_s": 600}
    r = simulate(parse_scenario(data), timeline=True)
    second_hour = r.intervals[4:8]
    assert sum(iv.answered for iv in second_hour) <= 6  # only those already ringing at the shift's end
    assert sum(iv.abandoned for iv in second_hour) > 50


def test_accept_delay_counts_as_waiting() -> None:
    data = mmc(60, 180, 20, 2_000)  # hardly any queueing: waits come from the accept delay
    data["agent_groups"][0]["accept_delay"] = {"distribution": "fixed", "mean_s": 4}
    d = simulate(parse_scenario(data)).to_json()
    assert d["p_wait"] == 1.0
    assert d["asa_s"] == pytest.approx(4.0, abs=0.1)


def test_the_production_router_decides_priority() -> None:
    data = mmc(820, 180, 45, 20_000)  # 97 % busy with the VIP stream: long waits for everyone else
    data["queues"].append({"name": "vip", "skills": {"general": 1}, "priority": 5})  # 5 min head start
    data["arrivals"].append({"queue": "vip", "per_hour": 50, "handle_time": {"mean_s": 180}})
    d = simulate(parse_scenario(data)).to_json()
    assert d["queues"]["vip"]["asa_s"] < d["queues"]["q"]["asa_s"] / 3


# ---------------------------------------------------------------------------------------------- scenarios


def test_overrides_are_the_what_if_mechanism() -> None:
    data = apply_overrides(mmc(850, 180, 50, 10), ["agent_groups.0.count=52", "simulation.seed=9"], "s.toml")
    assert data["agent_groups"][0]["count"] == 52 and data["simulation"]["seed"] == 9
    loaded = parse_scenario(mmc(850, 180, 50, 10), "s.toml", ["arrivals.0.patience={ mean_s = 60 }"])
    assert loaded.scenario.arrivals[0].patience is not None
    with pytest.raises(ConfigError, match=r"s.toml: agent_groups.3: no item 3"):
        parse_scenario(mmc(850, 180, 50, 10), "s.toml", ["agent_groups.3.count=1"])


def _set(path: str, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        apply_overrides(d, [f"{path}={value}"], "bad.toml")

    return edit


BAD_SCENARIOS = [
    (_set("simulation.duration_s", 60), "simulation", "exactly one of calls and duration_s"),
    (_set("arrivals.0.queue", '"nope"'), "arrivals[0].queue", "unknown queue"),
    (_set("arrivals.0.handle_time.distribution", '"gamma"'), "arrivals[0].handle_time.distribution", "gamma"),
    (_set("arrivals.0.handle_time.distribution", '"lognormal"'), "arrivals[0].handle_time.sd_s", "deviation"),
    (_set("agent_groups.0.skills.general", 12), "agents[0].skills.general", "outside 1-10"),
    (_set("simulation.warmup", 0.1), "simulation", "unknown field 'warmup'"),
]


@pytest.mark.parametrize(("edit", "key", "problem"), BAD_SCENARIOS, ids=[b[1] for b in BAD_SCENARIOS])
def test_bad_scenarios_name_the_key(edit: Any, key: str, problem: str) -> None:
    data = mmc(850, 180, 50, 10)
    edit(data)
    with pytest.raises(ConfigError) as err:
        parse_scenario(data, "bad.toml")
    assert err.value.key == key and problem in err.value.problem


# -------------------------------------------------------------------------------------------------- the CLI


def test_simulate_cli_json_has_every_promised_key(capsys: pytest.CaptureFixture[str]) -> None:
    from contactcentre.cli import main

    scenario = str(ROOT / "contactcentre" / "data" / "scenarios" / "e8_mmc.toml")
    assert main(["simulate", scenario, "--calls", "3000", "--seed", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = ("offered", "answered", "abandoned", "p_wait", "p_abandon", "mean_wait_s", "asa_s",
            "service_level_offered", "service_level_answered", "occupancy", "wait_p90_s", "wait_p99_s")  # fmt: skip
    for key in keys:
        assert key in data and key in data["queues"]["support"], key
    assert data["contacts_per_second"] > 0 and data["seed"] == 4
    assert main(["simulate", scenario, "--calls", "3000", "--set", "agent_groups.0.count=60"]) == 0
    assert "p_wait" in capsys.readouterr().out


def test_simulate_cli_refuses_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from contactcentre.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[simulation]\ncalls = 10\n[[queues]]\nname = "q"\n[[agent_groups]]\ncount = 1\n'
                   '[[arrivals]]\nqueue = "q"\nper_hour = -5\n')  # fmt: skip
    assert main(["simulate", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"{bad}: arrivals[0].per_hour: must be > 0"


def test_simulate_cli_takes_a_shipped_scenario_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From any directory (an installed package has no contactcentre/data/ beside the user), by name."""
    from contactcentre.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "e8_mmc", "--calls", "500", "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 1
    assert main(["simulate", "no_such_scenario"]) == 2
    assert "no_such_scenario: cannot read" in capsys.readouterr().err


def test_report_has_the_day_and_the_staffing_sweep(tmp_path: Path) -> None:
    from contactcentre.cli import main

    out = tmp_path / "report.html"
    scenario = str(ROOT / "contactcentre" / "data" / "scenarios" / "e8_mmc.toml")
    assert main(["simulate", scenario, "--calls", "2000", "--report", str(out), "--sweep", "49:51"]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "Erlang C" in page and "<script" not in page


def test_every_measured_arrival_has_an_outcome() -> None:
    d = simulate(load_scenario(ROOT / "contactcentre" / "data" / "scenarios" / "day_200_agents.toml")).to_json()
    assert d["offered"] == d["answered"] + d["abandoned"] + d["overflowed_or_refused"] + d["still_waiting"]
    for q in d["queues"].values():
        assert q["offered"] == q["answered"] + q["abandoned"] + q["overflowed_or_refused"] + q["still_waiting"]


def test_an_agent_that_missed_an_offer_comes_back() -> None:
    data = mmc(100, 180, 10, 2_000, patience=120)
    data["agent_groups"][0]["accept_delay"] = {"distribution": "exponential", "mean_s": 5}
    data["channels"] = {"voice": {"offer_timeout_s": 8}}  # some offers ring out: the agent goes away
    d = simulate(parse_scenario(data)).to_json()
    assert d["p_abandon"] < 0.1  # the floor does not silently disappear


def test_curves_are_one_day_of_quarter_hours() -> None:
    data = mmc(100, 180, 10, 10)
    data["arrivals"][0].pop("per_hour")
    data["arrivals"][0]["curve"] = [100] * 24
    with pytest.raises(ConfigError, match=r"arrivals\[0\].curve: a curve is 96 rates"):
        parse_scenario(data)
