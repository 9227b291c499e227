"""What the benchmarks share: starting and stopping processes (``contactcentre serve``, or anything that prints
a line when it is ready, with its output in files; a stop that escalates from SIGTERM to SIGKILL), the limits a
server under the load generator needs, and facts about the machine they measure on (load average, CPU model, a
process's CPU time)."""

from __future__ import annotations

import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# The load generator is one address (127.0.0.1) standing for thousands of customers and agents: the server's
# per-address caps (``[server.limits]``) would refuse most of them, so the benchmarks' servers lift them.
LOADGEN_LIMITS = """
[server.limits]
max_connections_per_address = 100000
new_chats_per_minute = 1000000
new_chats_burst = 100000
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "contactcentre.cli", *args]


def start(
    tmp: Path,
    cmd: list[str],
    ready: Callable[[str], T | None],
    timeout: float,
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], T]:
    """Run ``cmd`` from ``cwd`` (the repository) with stdout and stderr in ``tmp/server.out`` and
    ``tmp/server.err`` (files, not pipes: an unread pipe stalls a busy server) until ``ready(stdout so far)``
    returns something, which is returned with the process. A process that exits or is not ready within
    ``timeout`` is stopped and raises ``RuntimeError`` with the end of its output. ``env`` is added to this
    process's environment."""
    out_path, err_path = tmp / "server.out", tmp / "server.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = ready(out_path.read_text(errors="replace"))
        if found is not None:
            return proc, found
        time.sleep(0.05)  # polling another process's output file, bounded by the deadline
    stop(proc)
    raise RuntimeError(
        f"server did not start within {timeout} s:\n{out_path.read_text(errors='replace')}\n"
        f"{err_path.read_text(errors='replace')[-3000:]}"
    )


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> int | None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout``; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (its threads included), or of its thread ``tid`` alone (the main
    thread's id is ``pid``), from /proc; NaN when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN for none)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))]
