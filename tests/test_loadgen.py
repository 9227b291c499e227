"""The live load generator: a short run against a real server subprocess, its target refusal, and its use of
scenario files (docs/loadgen.md)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from contactcentre.config import DEFAULT_CONFIG_PATH
from contactcentre.loadgen import generator as loadgen
from contactcentre.loadgen.generator import LoadGen, TargetRefused, check_target, quantiles_ms
from contactcentre.simulation.scenario import load_scenario
from tests.server_proc import start_server

REPO = Path(__file__).resolve().parent.parent

SCENARIO = """\
[simulation]
duration_s = 60
seed = 4
service_level_threshold_s = 20
[[queues]]
name = "support"
skills = { general = 3 }
[[agent_groups]]
count = 8
skills = { general = 5 }
capacity = { chat = 3, email = 5 }
[[arrivals]]
queue = "support"
channel = "chat"
per_hour = 30000
handle_time = { distribution = "fixed", mean_s = 0.3 }
patience = { distribution = "fixed", mean_s = 30 }
[[arrivals]]
queue = "support"
channel = "email"
per_hour = 6000
handle_time = { distribution = "fixed", mean_s = 0.3 }
[[arrivals]]
queue = "support"
channel = "voice"
per_hour = 12000
handle_time = { distribution = "fixed", mean_s = 0.3 }
patience = { distribution = "fixed", mean_s = 30 }
"""


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadgen.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["loadgen", *argv])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.8.9.10"])
def test_loopback_targets_are_allowed(host: str) -> None:
    check_target(host, [])


@pytest.mark.parametrize("host", ["10.0.0.5", "example.com", "0.0.0.0", "192.168.1.1"])
def test_other_targets_are_refused_unless_named(host: str) -> None:
    with pytest.raises(TargetRefused, match="--allow-host"):
        check_target(host, [])
    with pytest.raises(TargetRefused):
        check_target(host, ["some-other-host"])
    check_target(host, [host])


def test_cli_refuses_a_remote_target_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('{"a": "t"}')
    err = io.StringIO()
    args = _parse("--target", "203.0.113.7", "--scenario", "x.toml", "--tokens", str(tmp_path / "t.json"))
    assert loadgen.run(args, out=io.StringIO(), err=err) == 2
    assert "not loopback" in err.getvalue() and "--allow-host 203.0.113.7" in err.getvalue()


def test_bad_scenario_and_tokens_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[simulation]\ncalls = 10\n")
    (tmp_path / "t.json").write_text('{"a": "t"}')
    err = io.StringIO()
    assert (
        loadgen.run(_parse("--scenario", str(tmp_path / "bad.toml"), "--tokens", str(tmp_path / "t.json")), err=err)
        == 2
    )
    assert "bad.toml" in err.getvalue() and "queue" in err.getvalue()
    (tmp_path / "t.json").write_text("[1, 2]")
    (tmp_path / "ok.toml").write_text(SCENARIO)
    err = io.StringIO()
    assert (
        loadgen.run(_parse("--scenario", str(tmp_path / "ok.toml"), "--tokens", str(tmp_path / "t.json")), err=err) == 2
    )
    assert "expected a JSON object" in err.getvalue()


def test_rates_follow_the_scenario_mix_scaled_by_rate(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCENARIO)
    loaded = load_scenario(tmp_path / "s.toml")

    async def build(rate: float | None) -> list[tuple[str, float]]:
        gen = LoadGen(loaded, host="127.0.0.1", ws_port=1, smtp_port=1, tokens={}, rate=rate, duration_s=1, seed=1)
        return [(a.channel, round(per_s, 6)) for a, per_s, _ in gen.streams]

    assert asyncio.run(build(None)) == [
        ("chat", round(30000 / 3600, 6)),
        ("email", round(6000 / 3600, 6)),
        ("voice", round(12000 / 3600, 6)),
    ]
    assert asyncio.run(build(48.0)) == [("chat", 30.0), ("email", 6.0), ("voice", 12.0)]


def test_quantiles_are_nearest_rank_in_ms() -> None:
    q = quantiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (q["n"], q["p50"], q["p90"], q["p99"], q["max"]) == (100, 50.0, 90.0, 99.0, 100.0)
    assert quantiles_ms([])["p50"] is None


def test_a_short_run_against_a_real_server_accounts_for_every_contact(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    tokens = tmp_path / "tokens.json"
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    cli = [sys.executable, "-m", "contactcentre.cli", "loadgen"]
    prep = [*cli, "--prepare", "--config", str(DEFAULT_CONFIG_PATH), "--database-url", str(db), "--tokens", str(tokens)]
    subprocess.run(prep, cwd=REPO, check=True, capture_output=True, timeout=60)
    assert set(json.loads(tokens.read_text())) >= {"ada", "grace"}
    server = start_server(DEFAULT_CONFIG_PATH, db)
    try:
        report = tmp_path / "report.json"
        run = [*cli, "--scenario", str(scenario), "--tokens", str(tokens), "--ws-port", str(server.ws_port)]
        run += ["--smtp-port", str(server.smtp_port), "--rate", "8", "--duration", "2", "--seed", "7"]
        run += ["--cti-port", str(server.cti_port), "--cti-token", server.cti_token]
        run += ["--config", str(DEFAULT_CONFIG_PATH), "--report", str(report)]
        run += ["--http-port", str(server.http_port)]
        done = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "loadgen" in done.stderr and "sent" in done.stderr  # the progress line
    finally:
        _code, err = server.stop()
    assert "Traceback" not in err
    r = json.loads(report.read_text())
    assert r["sent"] > 0 and r["sent"] == r["accounted"] == sum(r["outcomes"].values())
    assert r["skipped_channels"] == {}
    assert r["outcomes"].get("answered", 0) > 0
    assert r["errors"] == {}
    lat = r["arrival_to_offer_ms"]["chat"]
    assert lat["n"] > 0 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["offer_to_accept_ms"]["n"] > 0
    assert set(r["throughput_per_s"]) == {"chat", "email", "voice"}
    calls = r["arrival_to_offer_ms"]["voice"]  # placed on the switch over CTI, offered, answered by a console
    assert calls["n"] > 0 and 0 < calls["p50"] <= calls["max"]
    assert r["answered_by_channel"]["voice"] > 0
    assert r["simulated"]["offered"] == r["sent"]
    assert set(r["live_minus_simulated"]) == {"service_level_offered", "asa_s", "p_abandon"}
    # the server's own figures (GET /api/queues): it counted every contact the customers saw answered
    assert r["server"]["answered"] >= r["outcomes"]["answered"] > 0
    assert r["server"]["offered"] >= r["server"]["answered"] and r["server"]["asa_s"] is not None
    assert set(r["server_minus_simulated"]) == {"service_level_offered", "asa_s", "p_abandon"}


def test_live_latency_benchmark_smoke_run() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/live_latency.py", "--steps", "20", "--seconds", "1", "--agents", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "p50 ms" in done.stdout and "     20 " in done.stdout
    assert "saturates" in done.stdout or "goal" in done.stdout


def test_a_call_the_server_clears_unanswered_is_offline_and_a_cleared_answered_one_stays_answered(
    tmp_path: Path,
) -> None:
    (tmp_path / "s.toml").write_text(SCENARIO)
    loaded = load_scenario(tmp_path / "s.toml")

    async def main() -> None:
        gen = LoadGen(loaded, host="127.0.0.1", ws_port=1, smtp_port=1, tokens={}, rate=1, duration_s=1, seed=1)
        waiting = loadgen.ContactRecord(1, "voice", "support", sent=0.0, contact_id="call-1")
        talking = loadgen.ContactRecord(2, "voice", "support", sent=0.0, contact_id="call-2", outcome="answered")
        events = {"call-1": asyncio.Event(), "call-2": asyncio.Event()}
        gen._calls.update({"call-1": (waiting, events["call-1"]), "call-2": (talking, events["call-2"])})
        gen._cti_event({"event": "Queued", "call_id": "call-1", "device": "2001"})
        assert waiting.outcome == "waiting" and not events["call-1"].is_set()
        gen._cti_event({"event": "ConnectionCleared", "call_id": "call-1", "device": "2001"})
        gen._cti_event({"event": "ConnectionCleared", "call_id": "call-2", "device": "2001"})
        assert waiting.outcome == "offline" and events["call-1"].is_set()
        assert talking.outcome == "answered"

    asyncio.run(main())
