"""Independent replications of a scenario, in worker processes, summarised as a mean and a confidence
interval per KPI.

One simulated run is one sample: its KPIs carry the noise of that seed. ``replicate`` runs the scenario
with ``n`` seeds (``seed``, ``seed + 1``, ...: Mersenne Twister streams seeded apart are independent for
this purpose) and reports, per KPI, the mean over the runs and the Student-t interval
``mean ± t(1 − α/2, n − 1) · s / √n``. The runs are independent, so they go to ``jobs`` worker processes
(``concurrent.futures.ProcessPoolExecutor``). The worker function is a module-level function of an
importable module and everything it is sent or returns pickles, so the start method does not matter
(``spawn``, the default on macOS and Windows, works as ``fork`` does); the results are gathered in seed
order, so the same seeds give the same summary whatever ``jobs`` is.

The t quantile is computed here (scipy is only a test dependency): for integer degrees of freedom the
Student t distribution function has a closed form (a finite sum of powers of cos θ, θ = atan(t/√ν);
Abramowitz & Stegun 26.7.3-4), and the quantile is found by bisection on it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

from contactcentre.simulation.engine import SimResult, simulate
from contactcentre.simulation.scenario import LoadedScenario

# The KPIs summarised (keys of ``SimResult.to_json`` and of each of its queues).
KPIS: tuple[str, ...] = (
    "offered",
    "answered",
    "abandoned",
    "p_wait",
    "p_abandon",
    "mean_wait_s",
    "asa_s",
    "service_level_offered",
    "service_level_answered",
    "wait_p90_s",
    "wait_p99_s",
    "occupancy",
)


# ------------------------------------------------------------------------------------------- statistics


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sin θ cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...)), df − 3 in the last power
        term = total = 1.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
            if term < 1e-17 * total:  # the rest cannot move a double
                break
        return (2 / math.pi) * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
    # even: sin θ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...), df − 2 in the last power
    term = total = 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
        if term < 1e-17 * total:
            break
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom, e.g.
    ``t_quantile(0.975, 9)`` = 2.2622 for a 95 % interval from ten runs."""
    if not 0.5 < p < 1:
        raise ValueError("p must be between 0.5 and 1")
    target = 2 * p - 1  # P(|T| ≤ t)
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf_two_sided(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` samples and its two-sided confidence interval (``half_width`` is None for n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    half_width: float | None
    confidence: float

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean + self.half_width

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "half_width": self.half_width,
            "low": self.low,
            "high": self.high,
        }


def interval(samples: Iterable[float | None], confidence: float = 0.95) -> Estimate:
    """Student-t interval of the mean of the samples that are not None (a KPI with no value in a run, e.g.
    an ASA with nobody answered, is left out of it)."""
    xs = [float(x) for x in samples if x is not None]
    n = len(xs)
    if n == 0:
        return Estimate(0, None, None, None, confidence)
    mean = math.fsum(xs) / n
    if n < 2:
        return Estimate(n, mean, None, None, confidence)
    sd = statistics.stdev(xs, mean)
    return Estimate(n, mean, sd, t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n), confidence)


# ----------------------------------------------------------------------------------------- replications


@dataclass
class Replications:
    """``runs``: each replication's ``SimResult.to_json()``, in seed order."""

    seeds: list[int]
    runs: list[dict[str, Any]]
    confidence: float = 0.95
    total: dict[str, Estimate] = field(default_factory=dict)
    queues: dict[str, dict[str, Estimate]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.total = {k: interval((r[k] for r in self.runs), self.confidence) for k in KPIS}
        names = list(self.runs[0]["queues"]) if self.runs else []
        self.queues = {
            q: {k: interval((r["queues"][q][k] for r in self.runs), self.confidence) for k in KPIS} for q in names
        }

    def means(self) -> dict[str, Any]:
        """The KPIs' means in the shape of one run's ``to_json`` (totals and queues), e.g. for a chart."""
        out: dict[str, Any] = {k: iv.mean for k, iv in self.total.items()}
        out["queues"] = {q: {k: iv.mean for k, iv in kpis.items()} for q, kpis in self.queues.items()}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "replications": len(self.runs),
            "seeds": self.seeds,
            "confidence": self.confidence,
            "kpis": {k: iv.to_json() for k, iv in self.total.items()},
            "queues": {q: {k: iv.to_json() for k, iv in kpis.items()} for q, kpis in self.queues.items()},
            "wall_s": sum(r["wall_s"] for r in self.runs),
            "arrivals_simulated": sum(r["arrivals_simulated"] for r in self.runs),
            "runs": self.runs,
        }


def _one(loaded: LoadedScenario, seed: int, calls: int | None, timeline: bool) -> SimResult:
    """One replication, in a worker process (module level, so that ``spawn`` can import it)."""
    return simulate(loaded, seed=seed, calls=calls, timeline=timeline)


Job = tuple[LoadedScenario, int, "int | None", bool]  # scenario, seed, calls, timeline


def run_many(
    jobs_list: Sequence[Job],
    *,
    jobs: int = 1,
    mp_context: BaseContext | None = None,
    done: Callable[[int], None] | None = None,
) -> list[SimResult]:
    """Run each (scenario, seed, calls, timeline) and return the results in the order given. ``jobs`` > 1
    runs them in that many worker processes; ``done(k)`` is called as each finishes (k finished so far)."""
    if jobs <= 1 or len(jobs_list) <= 1:
        out = []
        for k, job in enumerate(jobs_list, 1):
            out.append(_one(*job))
            if done is not None:
                done(k)
        return out
    with ProcessPoolExecutor(max_workers=min(jobs, len(jobs_list)), mp_context=mp_context) as pool:
        futures = [pool.submit(_one, *job) for job in jobs_list]
        if done is not None:
            for k, _ in enumerate(as_completed(futures), 1):
                done(k)
        return [f.result() for f in futures]


def replicate(
    loaded: LoadedScenario,
    replications: int,
    *,
    seed: int | None = None,
    calls: int | None = None,
    jobs: int = 1,
    confidence: float = 0.95,
    mp_context: BaseContext | None = None,
) -> Replications:
    """Run ``loaded`` with seeds ``seed``, ``seed + 1``, ... (default: the scenario's seed) in ``jobs``
    processes and summarise the KPIs."""
    if replications < 1:
        raise ValueError("replications must be at least 1")
    seeds = seeds_for(loaded, replications, seed)
    runs = run_many([(loaded, s, calls, False) for s in seeds], jobs=jobs, mp_context=mp_context)
    return Replications(seeds, [r.to_json() for r in runs], confidence)


def seeds_for(loaded: LoadedScenario, replications: int, seed: int | None = None) -> list[int]:
    """The seeds of ``replications`` runs: ``seed`` (default: the scenario's) and the next ones."""
    base = loaded.scenario.simulation.seed if seed is None else seed
    return [base + i for i in range(replications)]
