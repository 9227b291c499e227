"""The cost of one contact through the router, as the simulator drives it: calls per contact, time per
contact, and where the time goes (the table in docs/simulator.md comes from this script).

Run::

    .venv/bin/python benchmarks/sim_profile.py                    # E8 (M/M/50), 20,000 calls
    .venv/bin/python benchmarks/sim_profile.py --calls 50000 --top 25
    .venv/bin/python benchmarks/sim_profile.py --scenario day_200_agents

"Calls per contact" counts Python-level function calls (cProfile's primitive and recursive calls, C
builtins included) made while the scenario ran, divided by the arrivals: once for every function in
``contactcentre/acd/`` and once for everything (the engine, msgspec structs, heapq, ...). "Time per contact"
is wall time without the profiler (best of ``--repeat``), because cProfile inflates cheap calls.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from contactcentre.simulation.engine import simulate
from contactcentre.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "contactcentre" / "data" / "scenarios"


def _load(name: str, calls: int | None) -> Any:
    path = Path(name) if name.endswith(".toml") else SCENARIOS / f"{name}.toml"
    timed = "duration_s" in path.read_text(encoding="utf-8")  # a day: its length, not a call count
    return load_scenario(path, [] if timed or not calls else [f"simulation.calls={calls}"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="e8_mmc", help="a shipped scenario name or a .toml path")
    ap.add_argument("--calls", type=int, default=20_000, help="arrivals (scenarios with a call count only)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs without the profiler (best is shown)")
    ap.add_argument("--top", type=int, default=20, help="functions in the profile table")
    args = ap.parse_args(argv)

    loaded = _load(args.scenario, args.calls)
    walls = []
    arrivals = 0
    for _ in range(args.repeat):
        gc.collect()
        t0 = time.perf_counter()
        r = simulate(loaded)
        walls.append(time.perf_counter() - t0)
        arrivals = r.arrivals
    best = min(walls)
    print(
        f"scenario {args.scenario}: {arrivals:,} arrivals, {r.events:,} router events handed to the engine "
        f"({r.events / arrivals:.1f}/contact)"
    )
    print(
        f"time per contact: {best / arrivals * 1e6:.1f} µs (best of {args.repeat}: "
        f"{', '.join(f'{w:.2f}' for w in walls)} s; {arrivals / best:,.0f} contacts/s)"
    )

    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    simulate(loaded)
    prof.disable()
    st = pstats.Stats(prof)
    acd = total = 0
    acd_tt = total_tt = 0.0
    for (file, _line, _name), (_cc, nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += nc
        total_tt += tt
        if "contactcentre/acd/" in file.replace("\\", "/"):
            acd += nc
            acd_tt += tt
    print(
        f"calls per contact: {acd / arrivals:.1f} in contactcentre/acd/ ({acd_tt / total_tt:.0%} of profiled "
        f"time), {total / arrivals:.1f} in all"
    )
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(args.top)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    print(f"\nprofile (cProfile, sorted by own time; per contact = ncalls / {arrivals:,}):")
    print(f"{'per contact':>11}  {'own s':>7}  {'cum s':>7}  function")
    for line in lines[start + 1 :]:
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        ncalls = int(parts[0].split("/")[0])
        print(f"{ncalls / arrivals:11.2f}  {float(parts[1]):7.3f}  {float(parts[3]):7.3f}  {parts[5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
