"""The dashboard's red / amber / green rules (contactcentre/edge/web/thresholds.py, docs/web.md "Colours")."""

from __future__ import annotations

from contactcentre.edge.web.thresholds import queue_colours


def test_service_levels_are_green_at_target_amber_within_five_points_red_below() -> None:
    c = queue_colours({"sl_answered": 0.80, "sl_offered": 0.75, "sl_offered_excl_short": 0.7499}, 20, 0.8)
    assert (c["sl_answered"], c["sl_offered"], c["sl_offered_excl_short"]) == ("green", "amber", "red")


def test_waits_turn_amber_at_the_warning_point_and_red_past_the_threshold() -> None:
    assert queue_colours({"longest_wait_s": 15.9, "asa_s": 16}, 20, 0.8)["longest_wait_s"] == "green"
    c = queue_colours({"waiting": 2, "longest_wait_s": 16, "asa_s": 20}, 20, 0.8)
    assert (c["waiting"], c["longest_wait_s"], c["asa_s"]) == ("amber", "amber", "amber")
    c = queue_colours({"waiting": 1, "longest_wait_s": 20.5, "asa_s": 21}, 20, 0.8)
    assert (c["waiting"], c["longest_wait_s"], c["asa_s"]) == ("red", "red", "red")


def test_abandons_are_measured_against_what_the_target_leaves_unanswered() -> None:
    # target 80 %: a budget of 20 % — green up to 10 %, amber up to 20 %
    assert [queue_colours({"abandon_rate": r}, 20, 0.8)["abandon_rate"] for r in (0.1, 0.2, 0.21)] == [
        "green",
        "amber",
        "red",
    ]


def test_figures_without_a_value_have_no_colour_and_nobody_waiting_is_green() -> None:
    assert queue_colours({"waiting": 0, "longest_wait_s": 0.0, "sl_offered": None}, 20, 0.8) == {
        "waiting": "green",
        "longest_wait_s": "green",
    }
