"""Replications: the t quantile and interval against scipy, parallel runs equal to serial ones (under the
``spawn`` start method too), and ``simulate --replications N --jobs J`` with and without ``--sweep``."""

from __future__ import annotations

import json
import multiprocessing
import statistics
from pathlib import Path

import pytest
from scipy import stats

from contactcentre.simulation.engine import simulate
from contactcentre.simulation.replications import KPIS, interval, replicate, t_quantile
from contactcentre.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
E8 = str(ROOT / "contactcentre" / "data" / "scenarios" / "e8_mmc.toml")


@pytest.mark.parametrize("p", [0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_scipy(p: float) -> None:
    for df in [*range(1, 121), 250, 1000, 5000]:
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9), df
    assert round(t_quantile(0.975, 9), 4) == 2.2622  # the textbook table: 95 %, ten samples


def test_interval_matches_scipy() -> None:
    xs = [0.191, 0.205, 0.188, 0.212, 0.199, 0.203]
    iv = interval(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=statistics.fmean(xs), scale=stats.sem(xs))
    assert (iv.low, iv.high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert iv.n == 6 and iv.mean == pytest.approx(statistics.fmean(xs))
    one = interval([0.2, None])  # a KPI a run had no value for is left out; one value has no interval
    assert (one.n, one.mean, one.half_width, one.low) == (1, 0.2, None, None)
    assert interval([None]).mean is None


def test_parallel_replications_under_spawn_equal_the_serial_ones() -> None:
    loaded = load_scenario(E8, ["simulation.calls=600"])
    serial = replicate(loaded, 3, seed=11)
    parallel = replicate(loaded, 3, seed=11, jobs=2, mp_context=multiprocessing.get_context("spawn"))
    assert serial.seeds == parallel.seeds == [11, 12, 13]

    def stable(runs: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k not in ("wall_s", "contacts_per_second")} for r in runs]

    assert stable(parallel.runs) == stable(serial.runs)
    assert parallel.total == serial.total
    # each replication is the plain run of its seed
    alone = simulate(loaded, seed=12).to_json()
    assert stable([alone]) == stable([serial.runs[1]])
    assert serial.total["p_wait"].mean == pytest.approx(statistics.fmean(r["p_wait"] for r in serial.runs))
    assert serial.runs[0] != serial.runs[1]  # the seeds differ, so do the runs


def test_simulate_cli_replications_report_mean_and_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from contactcentre.cli import main

    assert main(["simulate", E8, "--calls", "800", "--seed", "5", "--replications", "4", "--jobs", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["replications"] == 4 and data["seeds"] == [5, 6, 7, 8] and data["confidence"] == 0.95
    assert set(data["kpis"]) == set(KPIS) and set(data["queues"]["support"]) == set(KPIS)
    pw = data["kpis"]["p_wait"]
    values = [r["p_wait"] for r in data["runs"]]
    assert pw["mean"] == pytest.approx(statistics.fmean(values))
    assert pw["half_width"] == pytest.approx(t_quantile(0.975, 3) * statistics.stdev(values) / 2)
    assert pw["low"] < pw["mean"] < pw["high"]

    assert main(["simulate", E8, "--calls", "800", "--replications", "3", "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "± 95 % CI" in text and "3 replications (seeds 1–3)" in text and "p_wait" in text

    out = tmp_path / "report.html"
    args = ["simulate", E8, "--calls", "800", "--replications", "2", "--jobs", "2", "--report", str(out)]
    assert main([*args, "--sweep", "49:50"]) == 0
    assert out.read_text().count("data:image/png;base64,") == 2
    assert main(["simulate", E8, "--replications", "0"]) == 2
    assert "--replications must be at least 1" in capsys.readouterr().err
