"""Closed forms that cross-check ``contactcentre.planning.erlang`` in the tests, kept out of the package because
nothing but the tests uses them.

* ``betainc`` — SciPy's regularised incomplete beta I_x(a, b), which the Erlang A chain walks by recurrence.
* ``mandelbaum_zeltyn_log_a`` and ``erlang_a_closed_form`` — Erlang A by Mandelbaum & Zeltyn's closed forms
  ("Service engineering in action: the Palm/Erlang-A queue, with applications to call centers", 2007), an
  independent route to the chain's P(W>0), P(Ab) and E[W]. A(x, y) = x·e^y·y^(−x)·γ(x, y) is summed as a
  series in log space rather than through ``scipy.special.gammainc``, which underflows for the x of a large
  centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import betainc as _scipy_betainc

from contactcentre.planning.erlang import MAX_CHAIN_TERMS, erlang_b


def betainc(a: float, b: float, x: float) -> float:
    return float(_scipy_betainc(a, b, x))


def _positive(name: str, value: float) -> float:
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def mandelbaum_zeltyn_log_a(x: float, y: float) -> float:
    """log A(x, y), where A(x, y) = 1 + Σ_{j≥1} y^j / Π_{i=1..j}(x + i) = x·e^y·y^(−x)·γ(x, y).

    Summed term by term with a running log scale (the terms rise while y > x + j), to 1e-16 relative.
    """
    return _log1p_exp(_mz_log_a_minus_1(_positive("x", x), max(0.0, float(y))))


def _log1p_exp(v: float) -> float:
    """log(1 + e^v) without overflow."""
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def _mz_log_a_minus_1(x: float, y: float) -> float:
    """log(A(x, y) − 1) = log Σ_{j≥1} y^j / Π_{i=1..j}(x + i) (−inf for y = 0)."""
    if y == 0.0:
        return -math.inf
    log_y = math.log(y)
    log_term = log_y - math.log(x + 1.0)
    scale, acc, j = log_term, 1.0, 1
    while True:
        j += 1
        log_term += log_y - math.log(x + j)
        if log_term > scale:
            acc *= math.exp(scale - log_term)
            scale = log_term
        term = math.exp(log_term - scale)
        acc += term
        if y < x + j + 1 and term < 1e-17 * acc:
            return scale + math.log(acc)
        if j >= MAX_CHAIN_TERMS:
            raise ValueError(f"A(x, y) needs more than {MAX_CHAIN_TERMS:,} terms (x={x:g}, y={y:g})")


@dataclass(frozen=True, slots=True)
class ErlangAClosedForm:
    """The Mandelbaum & Zeltyn closed forms for Erlang A (no service level): a cross-check of
    :func:`erlang_a`'s chain. Same meanings as the :class:`ErlangA` fields of the same names."""

    p_wait: float
    p_abandon_given_wait: float
    p_abandon: float
    mean_wait_s: float


def erlang_a_closed_form(per_hour: float, aht_s: float, agents: int, patience_s: float) -> ErlangAClosedForm:
    """Erlang A by Mandelbaum & Zeltyn: with x = cμ/θ, y = λ/θ, E = B(c, λ/μ), ρ = λ/(cμ):

    P(W>0) = A(x, y)·E / (1 + (A(x, y) − 1)·E),  P(Ab | W>0) = 1/(ρ·A(x, y)) + 1 − 1/ρ,
    P(Ab) = P(Ab | W>0)·P(W>0),  E[W] = P(Ab)/θ.

    Evaluated as P(W>0) = E / (E + (1 − E)/A) and P(Ab | W>0) = 1 − (A − 1)/(ρ·A), with A − 1 summed
    directly: the textbook 1/(ρA) + 1 − 1/ρ subtracts numbers near 1/ρ and loses digits when ρ is small.
    """
    lam = _positive("per_hour", per_hour) / 3600.0
    aht = _positive("aht_s", aht_s)
    c = int(agents)
    theta = 1.0 / _positive("patience_s", patience_s)
    mu = 1.0 / aht
    e = erlang_b(lam / mu, c)
    log_a_minus_1 = _mz_log_a_minus_1(c * mu / theta, lam / theta)
    log_a = _log1p_exp(log_a_minus_1)
    # A·E / (1 + (A − 1)·E), divided through by A so that a huge A cannot overflow
    p_wait = e / (e + (1.0 - e) * math.exp(-log_a)) if e > 0 else 0.0
    rho = lam / (c * mu)
    p_ab_w = _clip01(1.0 - math.exp(log_a_minus_1 - log_a) / rho)
    p_ab = p_ab_w * p_wait
    return ErlangAClosedForm(p_wait, p_ab_w, p_ab, p_ab / theta)
