"""The benchmark scripts still run (their figures are read by people, never asserted on time here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_routing_benchmark_smoke_run() -> None:
    out = run("benchmarks/routing.py", "--quick")
    # past 1,000 agents: default extensions once ran into the first queue's number there
    assert "Summary at 3,000 agents" in out and "GOAL" in out


def test_simulator_benchmark_smoke_run() -> None:
    out = run("benchmarks/sim_vs_simpy.py", "--calls", "3000", "--repeat", "1")
    assert "ratio" in out and "Case 2: one simulated day" in out


def test_store_benchmark_smoke_run() -> None:
    out = run("benchmarks/store.py", "--quick", "--no-postgres")
    assert "events/s with group commit" in out and "screen-pop at 20,000 interactions" in out
    assert "p99" in out and "GOAL" in out and "WRONG" not in out


def test_mail_stall_benchmark_smoke_run() -> None:
    out = run("benchmarks/mail_stall.py", "--quick", "--soup-limit", "5")
    assert "held the loop" in out and "idle (floor)" in out and "tag soup" in out


@pytest.mark.e2e
def test_failover_benchmark_smoke_run(postgres_admin: Any, redis_server: Any) -> None:
    # The fixtures only make sure PostgreSQL and redis-server are there (else skip, or fail under CI=true): the
    # benchmark starts a redis-server and creates a database of its own.
    out = run("benchmarks/failover.py", "--runs", "1", "--lease-ttl-ms", "600")
    assert "kill -9 -> first offer by the new router: p50" in out
    assert "lost 0, logged twice 0; double offers 0" in out and "GOAL met" in out
