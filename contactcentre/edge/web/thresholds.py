"""Red / amber / green for the dashboard's queue figures, from the queue's SLA (``docs/web.md`` "Colours").

One rule per kind of figure, all from the queue's base SLA (its first channel's ``threshold_s`` and
``target``, the same target the staffing hint aims at):

* service levels (``sl_answered``, ``sl_offered``, ``sl_offered_excl_short``): green at or above the target,
  amber up to ``SL_BAND`` (5 percentage points) below it, red further below;
* times (``longest_wait_s``, which also colours ``waiting``, and ``asa_s``): green below the point where the
  SLA warning fires by default (``WARN_SHARE`` of the threshold, as ``acd/queue.py``), amber from there up to
  the threshold, red beyond it — a contact waiting that long has already missed the target;
* ``abandon_rate``: an abandoned contact is one not answered in time, so the target leaves a budget of
  ``1 - target``: green up to half of it, amber up to all of it, red above.

A figure with no value yet (no contacts) gets no colour.
"""

from __future__ import annotations

from typing import Any

SL_BAND = 0.05  # amber: this far (a share) below the SL target
WARN_SHARE = 0.8  # the SLA warning's default point, as a share of the threshold (acd/queue.py: threshold * 4 // 5)
SL_FIGURES = ("sl_answered", "sl_offered", "sl_offered_excl_short")


def level_share(value: float | None, target: float) -> str | None:
    """A service level against its target: higher is better."""
    if value is None:
        return None
    if value >= target:
        return "green"
    return "amber" if value >= target - SL_BAND else "red"


def level_time(value_s: float | None, threshold_s: float) -> str | None:
    """A wait against the SLA threshold: lower is better; amber from the warning point."""
    if value_s is None:
        return None
    if value_s < threshold_s * WARN_SHARE:
        return "green"
    return "amber" if value_s <= threshold_s else "red"


def level_abandon(rate: float | None, target: float) -> str | None:
    """An abandon rate against the share the target leaves unanswered in time (``1 - target``)."""
    if rate is None:
        return None
    budget = round(1.0 - target, 9)  # 1 - 0.8 is 0.19999999999999996 in floating point
    if rate <= budget / 2:
        return "green"
    return "amber" if rate <= budget else "red"


def queue_colours(m: dict[str, Any], threshold_s: float, target: float) -> dict[str, str]:
    """The colour of each of a queue's ``LiveStats`` figures that has one (figure name → green/amber/red)."""
    out: dict[str, str | None] = {name: level_share(m.get(name), target) for name in SL_FIGURES}
    # Nobody waiting is a longest wait of zero (LiveStats leaves it empty): green, not colourless.
    wait = level_time(m.get("longest_wait_s") or 0.0, threshold_s)
    out["longest_wait_s"] = out["waiting"] = wait
    out["asa_s"] = level_time(m.get("asa_s"), threshold_s)
    out["abandon_rate"] = level_abandon(m.get("abandon_rate"), target)
    return {k: v for k, v in out.items() if v is not None}
