"""Simulator speed: our discrete-event simulator (driving the production router) against an idiomatic SimPy
model of the same queue, side by side in one run, plus one simulated day of a 200-agent centre.

Run::

    .venv/bin/pip install -e '.[bench]'       # SimPy, only for this comparison
    .venv/bin/python benchmarks/sim_vs_simpy.py [--calls 200000] [--repeat 3]

Case 1 is row E8 of the queueing reference (M/M/50, 850 calls/h, AHT 180 s, 85 % occupancy, no
abandonment). The SimPy model is the textbook one: ``Resource(capacity=50)``, one process per call. Both
report P(wait) and ASA next to Erlang C so the two can be seen to simulate the same thing. The figure is
simulated calls per wall-clock second (best of ``--repeat``), and the ratio ours / SimPy.

Case 2 is ``contactcentre/data/scenarios/day_200_agents.toml``: 200 agents in ten teams, 20 skills, ten queues on voice,
chat and e-mail with time-of-day curves, two shifts, lognormal handle times, impatient customers, blended
agents, overflow steps and all five routing strategies. The figure is wall seconds for the simulated day
(the goal is 1 s).

The simulator drives the router in its lean mode (no explanations, only the event types the engine reads;
see docs/simulator.md, "The cost of one contact"), which makes the same decisions as the full one.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from pathlib import Path

from contactcentre.planning.erlang import erlang_c
from contactcentre.simulation.engine import simulate
from contactcentre.simulation.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
PER_HOUR, AHT_S, AGENTS, T_S = 850.0, 180.0, 50, 20.0


def ours(calls: int, seed: int) -> tuple[float, float, float]:
    loaded = parse_scenario(
        {
            "simulation": {
                "calls": calls,
                "seed": seed,
                "warmup_fraction": 0.05,
                "service_level_threshold_s": T_S,
            },
            "queues": [{"name": "support", "skills": {"general": 1}}],
            "agent_groups": [{"count": AGENTS, "skills": {"general": 5}}],
            "arrivals": [
                {
                    "queue": "support",
                    "per_hour": PER_HOUR,
                    "handle_time": {"distribution": "exponential", "mean_s": AHT_S},
                }
            ],
        }
    )
    gc.collect()
    t0 = time.perf_counter()
    r = simulate(loaded)
    wall = time.perf_counter() - t0
    d = r.to_json()
    return calls / wall, d["p_wait"], d["asa_s"]


def simpy_model(calls: int, seed: int) -> tuple[float, float, float]:
    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    agents = simpy.Resource(env, capacity=AGENTS)
    warm = int(calls * 0.05)
    waits: list[float] = []

    def call(n: int):  # type: ignore[no-untyped-def]
        arrived = env.now
        with agents.request() as req:
            yield req
            if n >= warm:
                waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1 / AHT_S))

    def source():  # type: ignore[no-untyped-def]
        for n in range(calls):
            yield env.timeout(rng.expovariate(PER_HOUR / 3600))
            env.process(call(n))

    env.process(source())
    gc.collect()
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    return calls / wall, sum(1 for w in waits if w > 0) / len(waits), sum(waits) / len(waits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    erl = erlang_c(PER_HOUR, AHT_S, AGENTS, T_S)
    print(
        f"Case 1: row E8, M/M/{AGENTS} at {PER_HOUR:g}/h, AHT {AHT_S:g} s; {args.calls:,} calls, best of {args.repeat}"
    )
    print(f"  Erlang C        P(wait) {erl.p_wait:.4f}  ASA {erl.asa_s:6.2f} s")
    best_ours = best_simpy = 0.0
    for i in range(args.repeat):
        rate, pw, asa = ours(args.calls, seed=i + 1)
        best_ours = max(best_ours, rate)
        print(f"  ours   (seed {i + 1}) P(wait) {pw:.4f}  ASA {asa:6.2f} s  {rate:>10,.0f} calls/s")
        rate, pw, asa = simpy_model(args.calls, seed=i + 1)
        best_simpy = max(best_simpy, rate)
        print(f"  SimPy  (seed {i + 1}) P(wait) {pw:.4f}  ASA {asa:6.2f} s  {rate:>10,.0f} calls/s")
    print(
        f"  best: ours {best_ours:,.0f} calls/s, SimPy {best_simpy:,.0f} calls/s, ratio {best_ours / best_simpy:.2f}×"
    )
    print(
        "  (ours runs the production router: offers, SLA timers and agent states for every call; the "
        "explanations and the events the simulator does not read are not built)"
    )

    loaded = load_scenario(ROOT / "contactcentre" / "data" / "scenarios" / "day_200_agents.toml")
    gc.collect()
    t0 = time.perf_counter()
    r = simulate(loaded)
    wall = time.perf_counter() - t0
    d = r.to_json()
    print(
        f"Case 2: one simulated day, 200 agents, 20 skills, 3 channels: {r.arrivals:,} contacts, "
        f"{r.events:,} router events read in {wall:.2f} s wall ({'within' if wall <= 1 else 'OVER'} the 1 s goal); "
        f"SL(offered) {d['service_level_offered']:.3f}, abandoned {d['p_abandon']:.3f}, occupancy {d['occupancy']:.3f}"
    )


if __name__ == "__main__":
    main()
