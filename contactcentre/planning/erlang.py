"""Capacity planning: Erlang B, Erlang C and Erlang A, and the staffing solver.

Pure standard-library Python (``math`` only); every formula is the one written up in
``docs/queueing.md`` (the project's queueing reference). Units are seconds throughout:

* ``per_hour`` — arrivals per hour; λ = per_hour / 3600 per second.
* ``aht_s`` — mean handling time (talk + hold + after-call work); μ = 1 / AHT.
* A = λ · AHT — offered load in Erlangs.
* ``agents`` (c) — servers, an integer.
* ``threshold_s`` (T) — the service-level threshold.
* ``patience_s`` (Erlang A) — mean of the exponential patience; θ = 1 / patience.

Numerical stability. Erlang B is the recursion B(n) = A·B(n−1) / (n + A·B(n−1)), never factorials, and
every other quantity is built on it or evaluated in log space (``math.lgamma``, a running log scale), so
thousands of agents are fine. Erlang C with A ≥ c has no steady state: the result says ``stable=False``
(P(wait) = 1, service level 0, ASA ``None``) instead of a negative or >1 number.

Service-level variants (docs/queueing.md). With infinite patience (Erlang C) every definition coincides:
SL(T) = P(Wq ≤ T). With abandonment (Erlang A) this module reports three, by name:

* ``service_level_offered`` — answered within T / all arrivals (abandons count against it);
* ``service_level_answered`` — answered within T / answered (abandons left out; Asterisk's "SL");
* ``service_level_virtual`` — P(the offered wait V ≤ T): the wait a caller *would* have with infinite
  patience, i.e. whether the system reached them in time, whatever the caller did;
* ``service_level_asterisk2`` — (answered within T + abandoned within T) / (answered + abandoned),
  Asterisk's SL2 (``sl_asterisk2`` in ``acd/stats.py``): short abandons count as good.

:func:`staff` targets ``service_level_offered`` under Erlang A by default; see its docstring for why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "SL_VARIANTS",
    "ErlangA",
    "ErlangC",
    "SLVariant",
    "Staffing",
    "erlang_a",
    "erlang_b",
    "erlang_b_lines",
    "erlang_b_max_load",
    "erlang_c",
    "offered_load",
    "staff",
]

SLVariant = Literal["offered", "answered", "virtual", "asterisk2"]
SL_VARIANTS: tuple[SLVariant, ...] = ("offered", "answered", "virtual", "asterisk2")

#: A chain term below this share of the running sum ends the Erlang A sum (docs/queueing.md, Erlang A).
CHAIN_TOLERANCE = 1e-14
#: Guard against a chain that would take minutes: only an overloaded centre (A ≥ c) whose callers are
#: almost infinitely patient gets near it, and that is Erlang C's "unstable" in all but name.
MAX_CHAIN_TERMS = 5_000_000


# ---------------------------------------------------------------------------------------------------------
# Validation helpers (ValueError with the argument's name: the CLI turns them into argparse errors)


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    return float(value)


def _positive(name: str, value: float) -> float:
    v = _finite(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, not {value}")
    return v


def _non_negative(name: str, value: float) -> float:
    v = _finite(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return v


def _count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return value


def _share(name: str, value: float) -> float:
    v = _finite(name, value)
    if not 0 < v < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, not {value}")
    return v


def offered_load(per_hour: float, aht_s: float) -> float:
    """A = λ·AHT in Erlangs, with λ = per_hour / 3600 arrivals per second."""
    return _non_negative("per_hour", per_hour) / 3600.0 * _positive("aht_s", aht_s)


# ---------------------------------------------------------------------------------------------------------
# Erlang B (M/M/c/c)


def erlang_b(load: float, lines: int) -> float:
    """Blocking probability of an M/M/c/c loss system: B(c, A) for ``lines`` = c and ``load`` = A Erlangs.

    Computed with the recursion B(0) = 1, B(n) = A·B(n−1) / (n + A·B(n−1)), which is stable for c in the
    thousands (it only ever multiplies and divides numbers in [0, 1] and [1, n + A]). Note the argument
    order: the literature writes B(c, A), e.g. B(14, 10) = ``erlang_b(load=10, lines=14)`` = 0.0568191.
    """
    a = _non_negative("load", load)
    n = _count("lines", lines, minimum=0)
    b = 1.0
    for k in range(1, n + 1):
        ab = a * b
        b = ab / (k + ab)
    return b


def erlang_b_max_load(lines: int, blocking: float) -> float:
    """The largest offered load (Erlangs) that ``lines`` lines carry with blocking ≤ ``blocking``.

    B(c, A) increases strictly with A, so this is bisection on A (to about 1e-12 relative);
    15 lines at 1 % blocking carry 8.108 Erlangs.
    """
    c = _count("lines", lines)
    target = _share("blocking", blocking)
    lo, hi = 0.0, float(c)
    while erlang_b(hi, c) <= target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if erlang_b(mid, c) <= target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return lo


def erlang_b_lines(load: float, blocking: float) -> int:
    """The smallest number of lines whose blocking at ``load`` Erlangs is ≤ ``blocking``."""
    a = _non_negative("load", load)
    target = _share("blocking", blocking)
    b, n = 1.0, 0
    while b > target:
        n += 1
        b = a * b / (n + a * b)
    return n


# ---------------------------------------------------------------------------------------------------------
# Erlang C (M/M/c, FIFO, infinite patience)


@dataclass(frozen=True, slots=True)
class ErlangC:
    """Steady state of M/M/c (Erlang C) for the inputs it carries.

    * ``p_wait`` — C(c, A) = P(Wq > 0) = c·B / (c − A·(1 − B)), the share of arrivals that wait.
    * ``service_level`` — SL(T) = P(Wq ≤ T) = 1 − C·exp(−(c − A)·T / AHT), over all arrivals.
    * ``asa_s`` — average speed of answer, the mean wait over *all* calls including zero waits:
      E[Wq] = C·AHT / (c − A).
    * ``mean_wait_if_waiting_s`` — the mean wait of the calls that do wait: AHT / (c − A).
    * ``mean_queue_length`` — E[Lq] = C·A / (c − A) (Little: λ·E[Wq]).
    * ``occupancy`` — A / c.
    * ``wait_p90_s``, ``wait_p99_s`` — wait quantiles, see :meth:`wait_quantile_s`.

    When A ≥ c (``stable`` false) the queue grows without bound: ``p_wait`` is 1, ``service_level`` 0,
    ``occupancy`` 1 (every agent is always busy; A/c would exceed 1) and the waits are ``None``.
    """

    per_hour: float
    aht_s: float
    agents: int
    threshold_s: float
    offered_load_erlangs: float
    stable: bool
    p_wait: float
    service_level: float
    asa_s: float | None
    occupancy: float
    mean_wait_if_waiting_s: float | None
    mean_queue_length: float | None

    def wait_quantile_s(self, p: float) -> float | None:
        """The p-quantile of the wait over all arrivals: the t with P(Wq ≤ t) = p.

        t_p = AHT / (c − A) · ln(C / (1 − p)) for p > 1 − C, otherwise 0 (that share of calls does not
        wait at all). ``None`` when unstable. Row E8 (850/h, 180 s, 50 agents): p90 15.4 s, p99 70.6 s.
        """
        q = _share("p", p)
        if not self.stable:
            return None
        if q <= 1.0 - self.p_wait or self.p_wait <= 0.0:
            return 0.0
        return self.aht_s / (self.agents - self.offered_load_erlangs) * math.log(self.p_wait / (1.0 - q))

    def service_level_within(self, t_s: float) -> float:
        """SL(t) = P(Wq ≤ t) for another threshold ``t_s`` (0 when unstable)."""
        t = _non_negative("t_s", t_s)
        if not self.stable:
            return 0.0
        return _erlang_c_sl(self.p_wait, self.agents, self.offered_load_erlangs, self.aht_s, t)

    @property
    def wait_p90_s(self) -> float | None:
        return self.wait_quantile_s(0.9)

    @property
    def wait_p99_s(self) -> float | None:
        return self.wait_quantile_s(0.99)

    @property
    def min_stable_agents(self) -> int:
        """The fewest agents for which this load has a steady state: the smallest integer > A."""
        return math.floor(self.offered_load_erlangs) + 1

    def to_dict(self) -> dict[str, Any]:
        """The figures as one flat dict (the CLI's ``--json``): the issue's keys first, then the rest."""
        d = asdict(self)
        head = {k: d.pop(k) for k in ("stable", "p_wait", "service_level", "asa_s", "occupancy")}
        extra = {
            "wait_p90_s": self.wait_p90_s,
            "wait_p99_s": self.wait_p99_s,
            "min_stable_agents": self.min_stable_agents,
        }
        return head | d | extra


def _erlang_c_sl(p_wait: float, c: int, a: float, aht_s: float, t: float) -> float:
    return min(1.0, max(0.0, 1.0 - p_wait * math.exp(-(c - a) * t / aht_s)))


def _erlang_c_from(per_hour: float, aht_s: float, c: int, t: float, a: float, b: float) -> ErlangC:
    if a >= c:
        return ErlangC(per_hour, aht_s, c, t, a, False, 1.0, 0.0, None, 1.0, None, None)
    p_wait = min(1.0, c * b / (c - a * (1.0 - b)))
    wait_if_waiting = aht_s / (c - a)
    return ErlangC(
        per_hour=per_hour,
        aht_s=aht_s,
        agents=c,
        threshold_s=t,
        offered_load_erlangs=a,
        stable=True,
        p_wait=p_wait,
        service_level=_erlang_c_sl(p_wait, c, a, aht_s, t),
        asa_s=p_wait * wait_if_waiting,
        occupancy=a / c,
        mean_wait_if_waiting_s=wait_if_waiting,
        mean_queue_length=p_wait * a / (c - a),
    )


def erlang_c(per_hour: float, aht_s: float, agents: int, threshold_s: float) -> ErlangC:
    """Erlang C (M/M/c, FIFO, no abandonment) for ``per_hour`` arrivals, ``agents`` agents.

    P(wait) = C(c, A) = c·B(c, A) / (c − A·(1 − B(c, A))), with B from :func:`erlang_b`; the rest follows
    (see :class:`ErlangC`). Row E8: ``erlang_c(850, 180, 50, 20)`` gives P(wait) 0.189660, SL 0.917574,
    ASA 4.552 s, occupancy 0.85. A ≥ c gives ``stable=False``.
    """
    lam = _non_negative("per_hour", per_hour)
    aht = _positive("aht_s", aht_s)
    c = _count("agents", agents)
    t = _non_negative("threshold_s", threshold_s)
    a = lam / 3600.0 * aht
    return _erlang_c_from(lam, aht, c, t, a, erlang_b(a, c) if a < c else 1.0)


# ---------------------------------------------------------------------------------------------------------
# Erlang A (M/M/c+M)


@dataclass(frozen=True, slots=True)
class ErlangA:
    """Steady state of M/M/c+M (Erlang A: exponential patience with mean ``patience_s``).

    * ``p_wait`` — P(W > 0) = Σ_{n ≥ c} π_n, the share of arrivals that find every agent busy.
    * ``p_abandon`` — P(Ab) = θ·E[Q] / λ, the share of arrivals that hang up before being answered.
    * ``p_abandon_given_wait`` — P(Ab | W > 0).
    * ``mean_wait_s`` — E[W] = E[Q] / λ = P(Ab) / θ: the mean time in queue over *all* arrivals, abandoners
      (their time until they hung up) and zero waits included.
    * ``service_level_offered`` — answered within T / all arrivals.
    * ``service_level_answered`` — answered within T / answered = SL_offered / (1 − P(Ab)).
    * ``service_level_virtual`` — P(V ≤ T), V the offered wait (what the wait would be with infinite
      patience).
    * ``service_level_asterisk2`` — (answered within T + abandoned within T) / all arrivals, Asterisk's
      SL2 (in steady state answered + abandoned = all arrivals): P(min(V, τ) ≤ T), τ the caller's patience.
    * ``occupancy`` — carried load / c = A·(1 − P(Ab)) / c (abandoners take no agent time).
    * ``mean_queue_length`` — E[Q], the mean number waiting.

    The chain is stable for any A, so ``stable`` is always true (kept for symmetry with :class:`ErlangC`).
    ``chain_terms`` is how many queue states the numerical sum used.
    """

    per_hour: float
    aht_s: float
    agents: int
    threshold_s: float
    patience_s: float
    offered_load_erlangs: float
    p_wait: float
    p_abandon: float
    p_abandon_given_wait: float
    mean_wait_s: float
    service_level_offered: float
    service_level_answered: float
    service_level_virtual: float
    service_level_asterisk2: float
    occupancy: float
    mean_queue_length: float
    chain_terms: int
    stable: bool = True

    def service_level(self, variant: SLVariant = "offered") -> float:
        """The named service-level variant (``offered``, ``answered``, ``virtual`` or ``asterisk2``)."""
        if variant not in SL_VARIANTS:
            raise ValueError(f"unknown service-level variant {variant!r}; choose from {SL_VARIANTS}")
        return float(getattr(self, f"service_level_{variant}"))

    def to_dict(self) -> dict[str, Any]:
        """The figures as one flat dict (the CLI's ``--json``): the issue's keys first, then the rest."""
        d = asdict(self)
        keys = (
            "p_wait",
            "p_abandon",
            "mean_wait_s",
            "service_level_offered",
            "service_level_answered",
            "service_level_virtual",
        )
        head = {k: d.pop(k) for k in keys}
        return head | d


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def erlang_a(per_hour: float, aht_s: float, agents: int, threshold_s: float, patience_s: float) -> ErlangA:
    """Erlang A (M/M/c+M) by the birth-death chain on n = number in system (docs/queueing.md, Erlang A).

    Birth rate λ; death rate n·μ for n ≤ c and c·μ + (n − c)·θ above. Relative to π_c, the states below
    c weigh Σ_{n<c} π_n/π_c = 1/B(c, A) − 1 (Erlang B recursion, no factorials) and the queue states
    t_k = π_{c+k}/π_c = Π_{j=1..k} λ / (cμ + jθ); those are summed with a running log scale, so the chain
    is finite and stable for any load (A ≥ c too), and cut when a (decreasing) term falls below 1e-14 of
    the running sum of the queue states (docs/queueing.md says of the running sum; counting only the queue
    states is stricter and keeps the *relative* accuracy of P(W>0) and P(Ab) when they are tiny).

    Service level: an arrival that finds k callers waiting has the offered wait V_k = Σ_{j=0..k}
    Exp(cμ + jθ). With r = cμ/θ and x = exp(−θT): P(V_k > T) = I_x(r, k+1) and P(answered and V_k ≤ T) =
    r/(r + k + 1)·(1 − I_x(r + 1, k + 1)). The I_x(a, k+1) are walked along k with the exact recurrence
    I_x(a, b+1) = I_x(a, b) + x^a (1−x)^b / (b·B(a, b)), started at I_x(a, 1) = x^a, the increments kept
    in log space (no lgamma cancellation even when r is in the billions, as with near-infinite patience);
    they equal ``scipy.special.betainc`` (tested). Asterisk's SL2 counts a caller as good unless both the offered
    wait and the caller's own (independent) patience exceed T: 1 − Σ_k π_{c+k}·x·I_x(r, k+1).

    Rows A1 (200/h, 180 s, 14 agents, patience 120 s, T 20 s) and A3 (850/h, 180 s, 50, 180 s, 20 s) of
    docs/queueing.md are reproduced to the digits given there.
    """
    per_hour_v = _non_negative("per_hour", per_hour)
    aht = _positive("aht_s", aht_s)
    c = _count("agents", agents)
    t = _non_negative("threshold_s", threshold_s)
    patience = _positive("patience_s", patience_s)
    lam = per_hour_v / 3600.0
    mu, theta = 1.0 / aht, 1.0 / patience
    a = lam * aht
    b = erlang_b(a, c)

    def result(
        p_wait: float, p_ab: float, p_ab_w: float, eq: float, sl_o: float, sl_v: float, sl_2: float, n: int
    ) -> ErlangA:
        sl_a = _clip01(sl_o / (1.0 - p_ab)) if p_ab < 1.0 else 0.0
        return ErlangA(
            per_hour=per_hour_v,
            aht_s=aht,
            agents=c,
            threshold_s=t,
            patience_s=patience,
            offered_load_erlangs=a,
            p_wait=_clip01(p_wait),
            p_abandon=_clip01(p_ab),
            p_abandon_given_wait=_clip01(p_ab_w),
            mean_wait_s=eq / lam if lam > 0 else 0.0,
            service_level_offered=_clip01(sl_o),
            service_level_answered=sl_a,
            service_level_virtual=_clip01(sl_v),
            service_level_asterisk2=_clip01(sl_2),
            occupancy=_clip01(a * (1.0 - p_ab) / c),
            mean_queue_length=eq,
            chain_terms=n,
        )

    if b <= 0.0:  # no load, or so little that every agent being busy underflows: nobody ever waits
        return result(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0)

    # Queue states k = 0, 1, ...: weight t_k (relative to π_c) = exp(log_t - scale) · exp(scale).
    log_below = math.log1p(-b) - math.log(b) if b < 1.0 else -math.inf  # log(1/B − 1)
    r = c * mu / theta  # = c·patience/AHT
    theta_t = theta * t
    log_x = -theta_t
    x = math.exp(log_x)
    one_minus_x = -math.expm1(-theta_t)
    log_1mx = math.log(one_minus_x) if one_minus_x > 0.0 else -math.inf  # T = 0 (or θT underflows): x = 1
    log_lam = math.log(lam)
    # I_x(r, k+1) and I_x(r+1, k+1), started at k = 0 (I_x(a, 1) = x^a); log of the next increments.
    i_r = math.exp(r * log_x)
    i_r1 = math.exp((r + 1.0) * log_x)
    ld_r = r * log_x + log_1mx + math.log(r)  # log of I_x(r, 2) − I_x(r, 1)
    ld_r1 = (r + 1.0) * log_x + log_1mx + math.log(r + 1.0)

    # Accumulators hold their value divided by exp(scale); the states below c stay apart, as log_below.
    scale = 0.0
    # Σ t_k, Σ k·t_k, Σ t_k·P(V_k ≤ T), Σ t_k·P(answered, V_k ≤ T), Σ t_k·P(min(V_k, τ) ≤ T)
    s_sum = s_k = s_virtual = s_offered = s_sl2 = 0.0
    log_t = 0.0
    k = 0
    while True:
        if log_t > scale:  # rescale before a term overflows
            f = math.exp(scale - log_t)
            s_sum, s_k, s_virtual, s_offered, s_sl2 = (
                s_sum * f,
                s_k * f,
                s_virtual * f,
                s_offered * f,
                s_sl2 * f,
            )
            scale = log_t
        w = math.exp(log_t - scale)
        s_sum += w
        s_k += k * w
        s_virtual += w * (1.0 - min(1.0, i_r))
        s_offered += w * r / (r + k + 1.0) * (1.0 - min(1.0, i_r1))
        s_sl2 += w * (1.0 - x * min(1.0, i_r))
        k += 1
        # next term and the next incomplete beta values
        i_r += math.exp(ld_r)
        i_r1 += math.exp(ld_r1)
        ld_r += log_1mx + math.log((r + k) / (k + 1.0))
        ld_r1 += log_1mx + math.log((r + k + 1.0) / (k + 1.0))
        rate = c * mu + k * theta
        log_t += log_lam - math.log(rate)
        # cut once the terms decrease and are negligible; states 0-2 always count, so that E[Q | W>0]
        # (hence P(Ab | W>0) = θ·E[Q | W>0]/λ) keeps its relative accuracy even at a vanishing load
        if k > 2 and lam < rate and math.exp(log_t - scale) < CHAIN_TOLERANCE * s_sum:
            break
        if k >= MAX_CHAIN_TERMS:
            raise ValueError(
                f"Erlang A: the chain needs more than {MAX_CHAIN_TERMS:,} queue states (offered load {a:.4g} "
                f"Erlangs on {c} agents with patience {patience:g} s); the centre is overloaded and callers "
                "almost never hang up: shorten the patience or add agents"
            )

    # P(W>0) = Q / (below + Q) with log Q = scale + log s_sum, written so that exp cannot overflow
    d = log_below - (scale + math.log(s_sum))
    p_wait = 1.0 / (1.0 + math.exp(d)) if d <= 0 else math.exp(-d) / (1.0 + math.exp(-d))
    eq_if_waiting = s_k / s_sum  # E[Q | W>0]
    eq = p_wait * eq_if_waiting
    p_ab = theta * eq / lam
    sl_virtual = (1.0 - p_wait) + p_wait * (s_virtual / s_sum)
    sl_offered = (1.0 - p_wait) + p_wait * (s_offered / s_sum)
    sl_asterisk2 = (1.0 - p_wait) + p_wait * (s_sl2 / s_sum)
    return result(p_wait, p_ab, theta * eq_if_waiting / lam, eq, sl_offered, sl_virtual, sl_asterisk2, k)


# ---------------------------------------------------------------------------------------------------------
# Staffing


@dataclass(frozen=True, slots=True)
class Staffing:
    """The smallest number of agents meeting a service-level target (and an occupancy cap, if any).

    ``model`` is ``"erlang_c"`` or ``"erlang_a"``; ``sl_variant`` the service level that was targeted
    (always ``"offered"`` under Erlang C, where all variants coincide); ``service_level`` and
    ``occupancy`` are the figures at ``agents``; ``result`` is the full :class:`ErlangC` /
    :class:`ErlangA` at ``agents``.
    """

    agents: int
    model: Literal["erlang_c", "erlang_a"]
    sl_variant: SLVariant
    target: float
    threshold_s: float
    max_occupancy: float | None
    offered_load_erlangs: float
    service_level: float
    occupancy: float
    result: ErlangC | ErlangA = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "result"}
        return d | {"at_agents": self.result.to_dict()}


def _smallest(ok: Callable[[int], bool], lo: int) -> int:
    """The smallest n ≥ lo with ok(n), for a predicate that is false then true as n grows."""
    if ok(lo):
        return lo
    bad, step = lo, 1
    good = lo + step
    while not ok(good):
        bad, step = good, step * 2
        good = bad + step
        if good > 10_000_000:
            raise ValueError("no staffing up to 10,000,000 agents meets the target")
    while good - bad > 1:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def staff(
    per_hour: float,
    aht_s: float,
    threshold_s: float,
    target: float,
    patience_s: float | None = None,
    max_occupancy: float | None = None,
    sl_variant: SLVariant = "offered",
) -> Staffing:
    """The smallest number of agents c with SL(T) ≥ ``target`` (and occupancy ≤ ``max_occupancy``).

    Without ``patience_s`` this is Erlang C: the smallest c > A with SL(c) ≥ target. 200/h, 180 s, 80 %
    within 20 s needs 14 agents.

    With ``patience_s`` it is Erlang A, and the service level targeted is ``sl_variant``, by default
    ``"offered"`` — answered within T over *all* arrivals, abandons counting as failures. That is the
    conservative choice (SL_offered ≤ SL_virtual, SL_answered and SL_asterisk2), it tends to the Erlang C
    figure as patience grows, and it cannot be met by letting callers give up: SL_answered drops
    abandoners from its denominator (and SL2 counts quick hang-ups as good), so a short-staffed queue
    whose long waiters hang up looks better than it is. The occupancy cap applies to the model's
    occupancy (A/c under Erlang C, carried load/c under Erlang A). The service levels and the occupancy
    move monotonically with c (property-tested), so the answer is
    found by doubling and bisection.
    """
    per_hour_v = _positive("per_hour", per_hour)
    aht = _positive("aht_s", aht_s)
    t = _non_negative("threshold_s", threshold_s)
    goal = _share("target", target)
    cap = None
    if max_occupancy is not None:
        cap = _positive("max_occupancy", max_occupancy)
        if cap > 1:
            raise ValueError(f"max_occupancy must be in (0, 1], not {max_occupancy}")
    if sl_variant not in SL_VARIANTS:
        raise ValueError(f"unknown service-level variant {sl_variant!r}; choose from {SL_VARIANTS}")
    a = per_hour_v / 3600.0 * aht
    results: dict[int, ErlangC | ErlangA] = {}

    if patience_s is None:
        patience = None
        variant: SLVariant = "offered"

        def evaluate(c: int) -> ErlangC | ErlangA:
            return erlang_c(per_hour_v, aht, c, t)

        def sl(res: ErlangC | ErlangA) -> float:
            assert isinstance(res, ErlangC)
            return res.service_level

        lo = math.floor(a) + 1
    else:
        patience = _positive("patience_s", patience_s)
        variant = sl_variant

        def evaluate(c: int) -> ErlangC | ErlangA:
            return erlang_a(per_hour_v, aht, c, t, patience)

        def sl(res: ErlangC | ErlangA) -> float:
            assert isinstance(res, ErlangA)
            return res.service_level(variant)

        lo = 1

    def ok(c: int) -> bool:
        res = results[c] = evaluate(c)
        return sl(res) >= goal and (cap is None or res.occupancy <= cap)

    c = _smallest(ok, lo)
    res = results[c]
    return Staffing(
        agents=c,
        model="erlang_c" if patience is None else "erlang_a",
        sl_variant=variant,
        target=goal,
        threshold_s=t,
        max_occupancy=cap,
        offered_load_erlangs=a,
        service_level=sl(res),
        occupancy=res.occupancy,
        result=res,
    )
