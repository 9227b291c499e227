"""Planning: Erlang B, C and A and the staffing solver against the reference rows of docs/queueing.md, numerical
stability at thousands of agents, properties, and the ``contactcentre erlang`` command.

The incomplete beta the Erlang A chain walks is checked against SciPy's (a test dependency); the
Mandelbaum–Zeltyn closed forms live in ``tests/erlang_reference.py``. The A(x, y) reference values were
generated once with ``scipy.special.gammainc``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contactcentre.cli import main
from contactcentre.planning import erlang as planning
from contactcentre.planning.erlang import (
    ErlangA,
    ErlangC,
    erlang_a,
    erlang_b,
    erlang_b_lines,
    erlang_b_max_load,
    erlang_c,
    staff,
)
from tests.erlang_reference import betainc, erlang_a_closed_form, mandelbaum_zeltyn_log_a


def assert_digits(value: float | None, expected: str) -> None:
    """``value`` agrees with ``expected`` to the digits written: |value − expected| ≤ half a unit in the
    last place (e.g. "0.1270" allows ±0.00005)."""
    assert value is not None
    decimals = len(expected.partition(".")[2])
    assert abs(value - float(expected)) <= 0.5 * 10.0**-decimals + 1e-12, (value, expected)


# ---------------------------------------------------------------------------------------------------------
# Reference rows (docs/queueing.md)

ERLANG_C_ROWS = [
    # id, calls/h, AHT, c, T, occupancy, P(wait), SL, ASA
    ("E1", 60, 180, 5, 20, "0.600", "0.236152", "0.810905", "21.254"),
    ("E3", 200, 180, 14, 20, "0.714", "0.174132", "0.888350", "7.836"),
    ("E5", 30, 60, 2, 10, "0.250", "0.100000", "0.922120", "4.000"),
    ("E8", 850, 180, 50, 20, "0.850", "0.189660", "0.917574", "4.552"),
]


@pytest.mark.parametrize(("row", "per_hour", "aht", "c", "t", "occ", "p_wait", "sl", "asa"), ERLANG_C_ROWS)
def test_erlang_c_reference_rows(
    row: str, per_hour: int, aht: int, c: int, t: int, occ: str, p_wait: str, sl: str, asa: str
) -> None:
    r = erlang_c(per_hour, aht, c, t)
    assert r.stable
    assert_digits(r.occupancy, occ)
    assert_digits(r.p_wait, p_wait)
    assert_digits(r.service_level, sl)
    assert_digits(r.asa_s, asa)
    # the Erlang C identities of docs/queueing.md
    assert r.mean_wait_if_waiting_s == pytest.approx(aht / (c - r.offered_load_erlangs))
    assert r.asa_s == pytest.approx(r.p_wait * r.mean_wait_if_waiting_s)
    assert r.mean_queue_length == pytest.approx(per_hour / 3600 * r.asa_s)  # Little
    assert r.service_level_within(t) == r.service_level
    assert r.service_level_within(0) == pytest.approx(1 - r.p_wait)


@pytest.mark.parametrize(
    ("per_hour", "c", "p90", "p99"),
    [(850, 50, "15.4", "70.6"), (200, 14, "25.0", "128.6")],  # E8, E3
)
def test_erlang_c_wait_quantiles(per_hour: int, c: int, p90: str, p99: str) -> None:
    r = erlang_c(per_hour, 180, c, 20)
    assert_digits(r.wait_quantile_s(0.9), p90)
    assert_digits(r.wait_quantile_s(0.99), p99)
    assert r.wait_p90_s == r.wait_quantile_s(0.9) and r.wait_p99_s == r.wait_quantile_s(0.99)
    # the quantile is the inverse of SL(t)
    assert r.service_level_within(r.wait_quantile_s(0.99)) == pytest.approx(0.99)
    # below 1 − C the quantile is zero: that share of calls does not wait at all
    assert r.wait_quantile_s(0.5 * (1 - r.p_wait)) == 0.0


def test_erlang_b_reference_values() -> None:
    assert_digits(erlang_b(load=10, lines=14), "0.0568191")
    assert_digits(erlang_b(load=42.5, lines=50), "0.0339168")
    carried = erlang_b_max_load(lines=15, blocking=0.01)
    assert_digits(carried, "8.108")
    assert erlang_b(carried, 15) <= 0.01 < erlang_b(carried * (1 + 1e-9), 15)
    assert erlang_b_lines(load=10, blocking=0.01) == 18  # the classic table: 10 Erlangs at 1 % need 18 lines
    assert erlang_b(10, 17) > 0.01 >= erlang_b(10, 18)
    assert erlang_b(5, 0) == 1.0
    assert erlang_b(0, 3) == 0.0


ERLANG_A_ROWS = [
    # id, calls/h, AHT, c, patience, T, P(W>0), P(Ab), E[W], SL_offered, SL_virtual, SL_answered
    ("A1", 200, 180, 14, 120, 20, "0.1270", "0.02284", "2.741", "0.93273", "0.93737", "0.95453"),
    ("A3", 850, 180, 50, 180, 20, "0.1421", "0.0104", "1.866", "0.95954", "0.96425", "0.9696"),
]


@pytest.mark.parametrize(
    ("row", "per_hour", "aht", "c", "patience", "t", "p_wait", "p_ab", "ew", "sl_o", "sl_v", "sl_a"),
    ERLANG_A_ROWS,
)
def test_erlang_a_reference_rows(
    row: str,
    per_hour: int,
    aht: int,
    c: int,
    patience: int,
    t: int,
    p_wait: str,
    p_ab: str,
    ew: str,
    sl_o: str,
    sl_v: str,
    sl_a: str,
) -> None:
    r = erlang_a(per_hour, aht, c, t, patience)
    assert_digits(r.p_wait, p_wait)
    assert_digits(r.p_abandon, p_ab)
    assert_digits(r.mean_wait_s, ew)
    assert_digits(r.service_level_offered, sl_o)
    assert_digits(r.service_level_virtual, sl_v)
    assert_digits(r.service_level_answered, sl_a)
    assert r.mean_wait_s == pytest.approx(r.p_abandon * patience)  # E[W] = P(Ab)/θ
    # Asterisk's SL2 also counts the abandons within T as good: between SL_offered and SL_offered + P(Ab)
    assert r.service_level_offered < r.service_level_asterisk2 < r.service_level_offered + r.p_abandon
    assert r.service_level_answered == pytest.approx(r.service_level_offered / (1 - r.p_abandon))
    # the closed forms (Mandelbaum & Zeltyn) give the same numbers
    cf = erlang_a_closed_form(per_hour, aht, c, patience)
    assert_digits(cf.p_wait, p_wait)
    assert_digits(cf.p_abandon, p_ab)
    assert_digits(cf.mean_wait_s, ew)
    assert cf.p_wait == pytest.approx(r.p_wait, rel=1e-12)
    assert cf.p_abandon == pytest.approx(r.p_abandon, rel=1e-10)
    assert cf.p_abandon_given_wait == pytest.approx(r.p_abandon_given_wait, rel=1e-10)


def test_erlang_a_with_near_infinite_patience_is_erlang_c_row_e3() -> None:
    r = erlang_a(200, 180, 14, 20, 1e9)
    assert_digits(r.p_wait, "0.1741319")
    assert_digits(r.mean_wait_s, "7.8359")
    c = erlang_c(200, 180, 14, 20)
    assert r.p_wait == pytest.approx(c.p_wait, rel=1e-6)
    assert r.mean_wait_s == pytest.approx(c.asa_s, rel=1e-6)
    for sl in (
        r.service_level_offered,
        r.service_level_virtual,
        r.service_level_answered,
        r.service_level_asterisk2,
    ):
        assert sl == pytest.approx(c.service_level, abs=1e-7)


def test_staffing_80_20_needs_14_agents() -> None:
    s = staff(per_hour=200, aht_s=180, threshold_s=20, target=0.8)
    assert s.agents == 14 and s.model == "erlang_c"
    assert_digits(s.service_level, "0.888350")
    assert erlang_c(200, 180, 13, 20).service_level < 0.8
    assert isinstance(s.result, ErlangC) and s.result.agents == 14


# ---------------------------------------------------------------------------------------------------------
# Erlang C unstable, Erlang A overloaded, validation


@pytest.mark.parametrize(("per_hour", "c"), [(850, 40), (720, 36), (850, 42)])  # A = 42.5, 36, 42.5
def test_erlang_c_at_or_over_capacity_is_unstable_never_a_bad_number(per_hour: int, c: int) -> None:
    r = erlang_c(per_hour, 180, c, 20)
    assert not r.stable
    assert (r.p_wait, r.service_level, r.occupancy) == (1.0, 0.0, 1.0)
    assert r.asa_s is None and r.mean_wait_if_waiting_s is None and r.mean_queue_length is None
    assert r.wait_quantile_s(0.9) is None and r.service_level_within(60) == 0.0
    assert r.min_stable_agents == math.floor(r.offered_load_erlangs) + 1
    assert r.to_dict()["stable"] is False


def test_erlang_a_is_stable_when_overloaded() -> None:
    r = erlang_a(850, 180, 40, 20, 180)  # A = 42.5 > c
    assert r.stable
    for v in (r.p_wait, r.p_abandon, r.service_level_offered, r.service_level_virtual, r.occupancy):
        assert 0.0 <= v <= 1.0
    # flow balance: what is not abandoned is served, and 40 agents serve at most 40 Erlangs
    assert r.offered_load_erlangs * (1 - r.p_abandon) <= 40 + 1e-9
    assert r.p_abandon >= 2.5 / 42.5 - 1e-12


def test_erlang_a_chain_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "MAX_CHAIN_TERMS", 1000)
    with pytest.raises(ValueError, match="overloaded"):
        erlang_a(1.5 * 100 * 20, 180, 100, 20, 1e7)  # A = 1.5 c and callers almost never hang up


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        erlang_c(200, 180, 14, 20).p_wait = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        erlang_a(200, 180, 14, 20, 120).p_wait = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: erlang_c(-1, 180, 14, 20), ValueError),
        (lambda: erlang_c(200, 0, 14, 20), ValueError),
        (lambda: erlang_c(200, 180, 0, 20), ValueError),
        (lambda: erlang_c(200, 180, 14.0, 20), TypeError),
        (lambda: erlang_c(200, 180, True, 20), TypeError),
        (lambda: erlang_c(200, 180, 14, -1), ValueError),
        (lambda: erlang_c(math.nan, 180, 14, 20), ValueError),
        (lambda: erlang_a(200, 180, 14, 20, 0), ValueError),
        (lambda: erlang_a(200, 180, 14, 20, math.inf), ValueError),
        (lambda: erlang_b(-1, 3), ValueError),
        (lambda: erlang_b_max_load(15, 1.0), ValueError),
        (lambda: staff(200, 180, 20, 0.0), ValueError),
        (lambda: staff(200, 180, 20, 0.8, max_occupancy=1.2), ValueError),
        (lambda: staff(200, 180, 20, 0.8, patience_s=60, sl_variant="sl9"), ValueError),  # type: ignore
        (lambda: erlang_c(200, 180, 14, 20).wait_quantile_s(1.0), ValueError),
    ],
)
def test_bad_arguments_are_refused(call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------------------
# The A(x, y) series against SciPy's values


@pytest.mark.parametrize(
    ("x", "y", "log_a"),  # log(x·e^y·y^−x·γ(x, y)) from scipy.special.gammainc
    [
        (3.0, 2.0, 0.5832162777972907),
        (50.5, 42.5, 1.5225921650655843),
        (100.0, 300.0, 93.36112808994335),
        (1.5, 0.2, 0.08137925244843869),
    ],
)
def test_mandelbaum_zeltyn_a_series(x: float, y: float, log_a: float) -> None:
    assert mandelbaum_zeltyn_log_a(x, y) == pytest.approx(log_a, rel=1e-12)


def _erlang_a_by_hand(per_hour: float, aht: float, c: int, t: float, patience: float) -> dict[str, float]:
    """Erlang A straight from docs/queueing.md with plain floats and betainc per state (small c only)."""
    lam, mu, theta = per_hour / 3600, 1 / aht, 1 / patience
    a = lam / mu
    pis = [a**n / math.factorial(n) for n in range(c + 1)]
    k = 0
    while True:
        k += 1
        nxt = pis[-1] * lam / (c * mu + k * theta)
        if nxt < 1e-18 * sum(pis) and lam < c * mu + k * theta:
            break
        pis.append(nxt)
    total = sum(pis)
    pis = [p / total for p in pis]
    queue = pis[c:]
    r, x = c * mu / theta, math.exp(-theta * t)
    p_wait = sum(queue)
    eq = sum(k * p for k, p in enumerate(queue))
    return {
        "p_wait": p_wait,
        "p_abandon": theta * eq / lam,
        "service_level_virtual": 1 - p_wait + sum(p * (1 - betainc(r, k + 1, x)) for k, p in enumerate(queue)),
        "service_level_offered": 1
        - p_wait
        + sum(p * r / (r + k + 1) * (1 - betainc(r + 1, k + 1, x)) for k, p in enumerate(queue)),
        # Asterisk SL2 misses a caller only if the offered wait and the own patience both exceed T
        "service_level_asterisk2": 1 - sum(p * betainc(r, k + 1, x) * x for k, p in enumerate(queue)),
    }


@pytest.mark.parametrize(
    "case",
    [(200, 180, 14, 20, 120), (850, 180, 50, 20, 180), (400, 240, 20, 30, 60), (300, 300, 20, 45, 600)],
)
def test_erlang_a_chain_matches_a_by_hand_evaluation(case: tuple[float, float, int, float, float]) -> None:
    """The chain walks I_x(r, k+1) by recurrence in log space; this checks it against betainc per state."""
    r = erlang_a(*case)
    for key, value in _erlang_a_by_hand(*case).items():
        assert getattr(r, key) == pytest.approx(value, rel=1e-10, abs=1e-13), key


# ---------------------------------------------------------------------------------------------------------
# Numerical stability at thousands of agents


def _log_space_erlang_b(load: float, lines: int) -> float:
    terms = [k * math.log(load) - math.lgamma(k + 1) for k in range(lines + 1)]
    top = max(terms)
    return math.exp(terms[-1] - top - math.log(sum(math.exp(v - top) for v in terms)))


@pytest.mark.parametrize("c0", [1000, 2000])
def test_stable_and_monotone_at_thousands_of_agents(c0: int) -> None:
    aht = 180.0
    per_hour = 0.97 * c0 * 3600 / aht  # A = 0.97 c0
    a = per_hour / 3600 * aht
    assert erlang_b(a, c0) == pytest.approx(_log_space_erlang_b(a, c0), rel=1e-11)

    previous_c: ErlangC | None = None
    for c in range(math.floor(a) + 1, c0 + 80):
        r = erlang_c(per_hour, aht, c, 20)
        assert r.stable
        for v in (r.p_wait, r.service_level, r.occupancy):
            assert math.isfinite(v) and 0.0 <= v <= 1.0
        assert r.asa_s is not None and math.isfinite(r.asa_s) and r.asa_s >= 0
        if previous_c is not None:
            assert r.p_wait <= previous_c.p_wait and r.service_level >= previous_c.service_level
            assert r.asa_s <= previous_c.asa_s  # type: ignore[operator]
        previous_c = r

    previous_a: ErlangA | None = None
    for c in range(c0 - 60, c0 + 60, 3):  # through A = c: Erlang A has no stability boundary
        ra = erlang_a(per_hour, aht, c, 20, 180)
        figures = (
            ra.p_wait,
            ra.p_abandon,
            ra.service_level_offered,
            ra.service_level_answered,
            ra.service_level_virtual,
            ra.occupancy,
        )
        for v in figures:
            assert math.isfinite(v) and 0.0 <= v <= 1.0
        assert math.isfinite(ra.mean_wait_s) and ra.mean_wait_s >= 0
        if previous_a is not None:
            assert ra.p_wait <= previous_a.p_wait and ra.p_abandon <= previous_a.p_abandon
            assert ra.mean_wait_s <= previous_a.mean_wait_s
            assert ra.service_level_offered >= previous_a.service_level_offered
            assert ra.service_level_virtual >= previous_a.service_level_virtual
        previous_a = ra
    cf = erlang_a_closed_form(per_hour, aht, c0, 180)
    ra = erlang_a(per_hour, aht, c0, 20, 180)
    assert cf.p_wait == pytest.approx(ra.p_wait, rel=1e-10)
    assert cf.p_abandon == pytest.approx(ra.p_abandon, rel=1e-8)


def test_tiny_load_on_many_agents_underflows_gracefully() -> None:
    assert erlang_b(1.0, 2000) == 0.0  # below the smallest float: nothing is ever blocked
    r = erlang_a(10, 180, 2000, 20, 180)
    assert (r.p_wait, r.p_abandon, r.service_level_offered) == (0.0, 0.0, 1.0)
    c = erlang_c(10, 180, 2000, 20)
    assert (c.p_wait, c.service_level, c.asa_s) == (0.0, 1.0, 0.0)


def test_staffing_at_thousands_of_agents() -> None:
    s = staff(0.95 * 2000 * 20, 180, 20, 0.9)  # A = 1900
    assert s.agents > 1900 and s.service_level >= 0.9
    assert erlang_c(0.95 * 2000 * 20, 180, s.agents - 1, 20).service_level < 0.9


# ---------------------------------------------------------------------------------------------------------
# Properties

loads = st.floats(min_value=0.01, max_value=100.0, allow_nan=False)
small_c = st.integers(min_value=1, max_value=80)
ahts = st.floats(min_value=10.0, max_value=900.0)
thresholds = st.floats(min_value=0.0, max_value=120.0)
patiences = st.floats(min_value=5.0, max_value=3600.0)
utilisations = st.floats(min_value=0.05, max_value=0.95)


@given(load=loads, lines=small_c)
def test_erlang_b_recursion_equals_log_space_sum(load: float, lines: int) -> None:
    assert erlang_b(load, lines) == pytest.approx(_log_space_erlang_b(load, lines), rel=1e-11, abs=1e-300)


@given(load=loads, lines=small_c)
def test_erlang_b_moves_the_right_way(load: float, lines: int) -> None:
    b = erlang_b(load, lines)
    assert 0.0 <= b <= 1.0
    assert erlang_b(load, lines + 1) <= b <= erlang_b(load * 1.1, lines)


@given(load=st.floats(min_value=0.1, max_value=500.0), blocking=st.floats(min_value=0.001, max_value=0.5))
def test_erlang_b_inverses(load: float, blocking: float) -> None:
    n = erlang_b_lines(load, blocking)
    assert erlang_b(load, n) <= blocking and (n == 0 or erlang_b(load, n - 1) > blocking)
    lines = max(n, 1)
    a = erlang_b_max_load(lines, blocking)
    assert erlang_b(a, lines) <= blocking < erlang_b(a * (1 + 1e-9), lines)


@given(aht=ahts, c=small_c, util=st.floats(min_value=0.0, max_value=1.5), t=thresholds)
def test_erlang_c_figures_are_probabilities_and_improve_with_agents(aht: float, c: int, util: float, t: float) -> None:
    per_hour = util * c * 3600 / aht
    r = erlang_c(per_hour, aht, c, t)
    for v in (r.p_wait, r.service_level, r.occupancy):
        assert 0.0 <= v <= 1.0
    assert r.stable == (r.offered_load_erlangs < c)
    more = erlang_c(per_hour, aht, c + 1, t)
    assert more.p_wait <= r.p_wait + 1e-15
    assert more.service_level >= r.service_level - 1e-15
    if r.stable:
        assert r.service_level >= 1 - r.p_wait - 1e-15
        assert erlang_c(per_hour, aht, c, t + 1).service_level >= r.service_level


@given(aht=ahts, c=small_c, util=st.floats(min_value=0.0, max_value=2.0), t=thresholds, patience=patiences)
def test_erlang_a_figures_are_probabilities_and_improve_with_agents(
    aht: float, c: int, util: float, t: float, patience: float
) -> None:
    per_hour = util * c * 3600 / aht
    r = erlang_a(per_hour, aht, c, t, patience)
    for v in (r.p_wait, r.p_abandon, r.service_level_offered, r.service_level_virtual, r.occupancy):
        assert 0.0 <= v <= 1.0
    assert r.service_level_offered <= r.service_level_virtual + 1e-12
    assert r.service_level_offered <= r.service_level_answered + 1e-12
    assert r.service_level_offered <= r.service_level_asterisk2 <= 1.0
    assert r.p_abandon <= r.p_wait + 1e-15
    more = erlang_a(per_hour, aht, c + 1, t, patience)
    assert more.p_wait <= r.p_wait + 1e-12
    assert more.p_abandon <= r.p_abandon + 1e-12
    assert more.service_level_offered >= r.service_level_offered - 1e-12
    assert more.service_level_virtual >= r.service_level_virtual - 1e-12
    assert more.service_level_asterisk2 >= r.service_level_asterisk2 - 1e-12
    assert more.service_level_answered >= r.service_level_answered - 1e-12
    assert more.occupancy <= r.occupancy + 1e-12


@given(aht=ahts, c=small_c, util=utilisations, patience=patiences)
def test_erlang_a_closed_form_agrees_with_the_chain(aht: float, c: int, util: float, patience: float) -> None:
    per_hour = util * c * 3600 / aht
    r = erlang_a(per_hour, aht, c, 20, patience)
    cf = erlang_a_closed_form(per_hour, aht, c, patience)
    assert cf.p_wait == pytest.approx(r.p_wait, rel=1e-9, abs=1e-13)  # the chain stops at 1e-14 of Σπ
    assert cf.p_abandon == pytest.approx(r.p_abandon, rel=1e-6, abs=1e-12)


@given(aht=ahts, c=small_c, util=utilisations, t=thresholds)
def test_erlang_a_tends_to_erlang_c_as_patience_grows(aht: float, c: int, util: float, t: float) -> None:
    per_hour = util * c * 3600 / aht
    ec = erlang_c(per_hour, aht, c, t)
    gaps = []
    for patience in (aht * 10, aht * 1e3, aht * 1e8):
        ea = erlang_a(per_hour, aht, c, t, patience)
        gaps.append(abs(ea.service_level_offered - ec.service_level) + abs(ea.p_wait - ec.p_wait))
    assert gaps[2] <= gaps[1] + 1e-12 <= gaps[0] + 2e-12
    assert gaps[2] < 1e-4
    ea = erlang_a(per_hour, aht, c, t, aht * 1e8)  # the gap shrinks like θ: ~1e-6 at c = 1, ρ = 0.95
    assert ea.mean_wait_s == pytest.approx(ec.asa_s, rel=1e-3, abs=1e-9)
    assert ea.service_level_virtual == pytest.approx(ec.service_level, abs=1e-4)
    assert ea.service_level_asterisk2 == pytest.approx(ec.service_level, abs=1e-4)


@given(
    per_hour=st.floats(min_value=1.0, max_value=3000.0),
    aht=ahts,
    t=thresholds,
    target=st.floats(min_value=0.05, max_value=0.99),
    patience=st.none() | patiences,
    cap=st.none() | st.floats(min_value=0.5, max_value=1.0),
    variant=st.sampled_from(planning.SL_VARIANTS),
)
def test_staffing_is_the_smallest_that_meets_the_target(
    per_hour: float,
    aht: float,
    t: float,
    target: float,
    patience: float | None,
    cap: float | None,
    variant: planning.SLVariant,
) -> None:
    s = staff(per_hour, aht, t, target, patience_s=patience, max_occupancy=cap, sl_variant=variant)

    def meets(c: int) -> bool:
        if patience is None:
            r: ErlangC | ErlangA = erlang_c(per_hour, aht, c, t)
            sl = r.service_level if r.stable else 0.0
        else:
            r = erlang_a(per_hour, aht, c, t, patience)
            sl = r.service_level(variant)
        return sl >= target and (cap is None or r.occupancy <= cap)

    assert meets(s.agents)
    assert s.agents == 1 or not meets(s.agents - 1)


def test_staffing_under_erlang_a_variants_and_occupancy_cap() -> None:
    offered = staff(200, 180, 20, 0.8, patience_s=120)
    assert offered.model == "erlang_a" and offered.sl_variant == "offered"
    assert offered.agents == 12  # abandonment relieves the queue: fewer than Erlang C's 14
    answered = staff(200, 180, 20, 0.8, patience_s=120, sl_variant="answered")
    virtual = staff(200, 180, 20, 0.8, patience_s=120, sl_variant="virtual")
    assert answered.agents <= offered.agents and virtual.agents <= offered.agents
    capped = staff(200, 180, 20, 0.8, max_occupancy=0.7)  # A = 10 ⇒ at least 10 / 0.7 = 14.3
    assert capped.agents == 15 and capped.occupancy <= 0.7


# ---------------------------------------------------------------------------------------------------------
# The command line

E8 = ["--per-hour", "850", "--aht", "180", "--agents", "50", "--threshold", "20"]


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def test_cli_erlang_b_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erlang", "b", "--load", "10", "--lines", "14", "--json"]) == 0
    d = _json(capsys)
    assert_digits(d["blocking"], "0.0568191")  # type: ignore[arg-type]
    assert main(["erlang", "b", "--lines", "15", "--max-blocking", "0.01", "--json"]) == 0
    assert_digits(_json(capsys)["max_load_erlangs"], "8.108")  # type: ignore[arg-type]


def test_cli_erlang_c_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erlang", "c", *E8, "--json"]) == 0
    d = _json(capsys)
    assert list(d)[:5] == ["stable", "p_wait", "service_level", "asa_s", "occupancy"]
    assert d["stable"] is True and d["offered_load_erlangs"] == 42.5
    for key, expected in [("p_wait", "0.189660"), ("service_level", "0.917574"), ("asa_s", "4.552")]:
        assert_digits(d[key], expected)  # type: ignore[arg-type]
    assert_digits(d["wait_p99_s"], "70.6")  # type: ignore[arg-type]


def test_cli_erlang_c_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erlang", "c", *E8]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert lines["p_wait"] == "0.189660" and lines["service_level"] == "0.917574"
    assert lines["asa_s"] == "4.552" and lines["occupancy"] == "0.850000"
    points = {line.index(".") for line in out.splitlines()[1:]}
    assert len(points) == 1  # the figures are aligned on the decimal point


def test_cli_erlang_c_unstable(capsys: pytest.CaptureFixture[str]) -> None:
    overloaded = ["--per-hour", "850", "--aht", "180", "--agents", "40", "--threshold", "20"]
    assert main(["erlang", "c", *overloaded]) == 3
    out = capsys.readouterr().out
    assert out.startswith("unstable: offered load 42.5 Erlangs needs more than 40 agents")
    assert main(["erlang", "c", *overloaded, "--json"]) == 3
    d = _json(capsys)
    assert d["stable"] is False and d["p_wait"] == 1.0 and d["service_level"] == 0.0 and d["asa_s"] is None
    assert d["min_stable_agents"] == 43


def test_cli_erlang_a_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erlang", "a", *E8, "--patience", "180", "--json"]) == 0
    d = _json(capsys)
    assert list(d)[:6] == [
        "p_wait",
        "p_abandon",
        "mean_wait_s",
        "service_level_offered",
        "service_level_answered",
        "service_level_virtual",
    ]
    _, *_, p_wait, p_ab, ew, sl_o, sl_v, sl_a = ERLANG_A_ROWS[1]
    for key, expected in [
        ("p_wait", p_wait),
        ("p_abandon", p_ab),
        ("mean_wait_s", ew),
        ("service_level_offered", sl_o),
        ("service_level_virtual", sl_v),
        ("service_level_answered", sl_a),
    ]:
        assert_digits(d[key], expected)  # type: ignore[arg-type]
    assert d["service_level_offered"] < d["service_level_asterisk2"] < 1  # type: ignore[operator]
    assert d["stable"] is True and d["offered_load_erlangs"] == 42.5
    assert main(["erlang", "a", *E8, "--patience", "180"]) == 0
    assert "service_level_answered" in capsys.readouterr().out


def test_cli_erlang_staff(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["erlang", "staff", "--per-hour", "200", "--aht", "180", "--threshold", "20", "--target", "0.8"]
    assert main([*base, "--json"]) == 0
    d = _json(capsys)
    assert d["agents"] == 14 and d["model"] == "erlang_c"
    assert main([*base, "--patience", "120", "--json"]) == 0
    d = _json(capsys)
    assert d["agents"] == 12 and d["model"] == "erlang_a" and d["sl_variant"] == "offered"
    assert main([*base, "--patience", "120", "--sl-variant", "answered", "--json"]) == 0
    d = _json(capsys)
    assert d["sl_variant"] == "answered" and d["agents"] <= 12  # type: ignore[operator]
    assert main([*base, "--max-occupancy", "0.7", "--json"]) == 0
    assert _json(capsys)["agents"] == 15
    assert main(base) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["agents", "14"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["erlang", "c", "--per-hour", "-5", "--aht", "180", "--agents", "5", "--threshold", "20"], "> 0"),
        (["erlang", "c", "--per-hour", "60", "--aht", "x", "--agents", "5", "--threshold", "20"], "number"),
        (
            ["erlang", "c", "--per-hour", "60", "--aht", "180", "--agents", "4.5", "--threshold", "20"],
            "integer",
        ),
        (["erlang", "c", "--per-hour", "60", "--aht", "180", "--agents", "0", "--threshold", "20"], ">= 1"),
        (
            ["erlang", "c", "--per-hour", "nan", "--aht", "180", "--agents", "5", "--threshold", "20"],
            "finite",
        ),
        (["erlang", "c", "--per-hour", "60", "--aht", "180", "--agents", "5"], "--threshold"),
        (["erlang", "b", "--lines", "5"], "--load"),
        (["erlang", "b", "--lines", "5", "--load", "2", "--max-blocking", "0.1"], "not allowed"),
        (
            ["erlang", "staff", "--per-hour", "60", "--aht", "180", "--threshold", "20", "--target", "1"],
            "between",
        ),
        (
            [
                "erlang",
                "staff",
                "--per-hour",
                "60",
                "--aht",
                "180",
                "--threshold",
                "20",
                "--max-occupancy",
                "2",
            ],
            "(0, 1]",
        ),
        (["erlang", "a", *E8], "--patience"),
        (["erlang", "x"], "invalid choice"),
    ],
)
def test_cli_argument_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_documents_exit_codes_and_the_targeted_variant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["erlang", "c", "--help"])
    out = capsys.readouterr().out
    assert "3 unstable" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["erlang", "staff", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "by default 'offered' = answered within T / ALL arrivals" in out
