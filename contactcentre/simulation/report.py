"""The simulation report: one self-contained HTML page with the charts people look at rather than read.

* the day: contacts waiting and service level per 15-minute interval of the day (averaged over the days
  simulated), beside the arrivals;
* the staffing sweep (``--sweep LO:HI``): service level, ASA and abandonment against the number of agents,
  the simulated points beside the Erlang C (or, with patience, Erlang A) curve for the same load.

Charts are drawn with matplotlib (the ``report`` extra) and embedded as PNG, so the page travels alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from contactcentre.planning.erlang import erlang_a, erlang_c
from contactcentre.simulation.engine import INTERVAL_MS, SimResult
from contactcentre.simulation.scenario import LoadedScenario

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Simulation report — {{ name }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { padding: .25rem .8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr:nth-child(even) { background: #f4f6f8; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5rem 0 1.5rem; } .note { color: #666; }
</style></head><body>
<h1>Simulation report</h1>
<p>{{ name }} · seed {{ seed }} · {{ "{:,}".format(arrivals) }} contacts ·
{{ "%.1f"|format(hours) }} simulated hours measured · {{ "%.1f"|format(wall) }} s wall</p>
<table>
<tr><th></th>{% for col in columns %}<th>{{ col }}</th>{% endfor %}</tr>
{% for label, values in rows %}<tr><td>{{ label }}</td>{% for v in values %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p class="note">Service level = answered within {{ threshold }} s over all arrivals (offered) and over answered;
waits are queue times including abandoned contacts'; the first part of the run is left out as warm-up.</p>
<h2>The day</h2>
<img alt="contacts waiting and service level per 15 minutes" src="data:image/png;base64,{{ day_png }}">
{% if sweep_png %}<h2>Staffing sweep</h2>
<p class="note">Each point is a simulation of the same scenario with that many agents in the first group;
the line is {{ model }} for the same offered load.</p>
<img alt="service level, ASA and abandonment against agents" src="data:image/png;base64,{{ sweep_png }}">
{% endif %}
</body></html>
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f} %"


def _sec(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:,}"


ROWS = [
    ("offered", "offered", _num),
    ("answered", "answered", _num),
    ("abandoned", "abandoned", _num),
    ("P(wait)", "p_wait", _pct),
    ("P(abandon)", "p_abandon", _pct),
    ("SL offered", "service_level_offered", _pct),
    ("SL answered", "service_level_answered", _pct),
    ("ASA", "asa_s", _sec),
    ("mean wait", "mean_wait_s", _sec),
    ("wait p90", "wait_p90_s", _sec),
    ("wait p99", "wait_p99_s", _sec),
]


def write_report(
    path: Path, loaded: LoadedScenario, result: SimResult, sweep: list[tuple[int, dict[str, Any]]]
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--report needs matplotlib: pip install -e '.[report]'") from None
    data = result.to_json()
    queues = list(data["queues"])
    columns = ["total", *queues] if len(queues) > 1 else ["total"]
    rows = []
    for label, key, fmt in ROWS:
        values = [fmt(data.get(key))]
        if len(queues) > 1:
            values += [fmt(data["queues"][q].get(key)) for q in queues]
        rows.append((label, values))
    rows.append(("occupancy", [_pct(data["occupancy"])] + [""] * (len(columns) - 1)))

    day_png = _png(_day_figure(plt, result))
    sweep_png, model = "", ""
    if sweep:
        fig, model = _sweep_figure(plt, loaded, sweep)
        sweep_png = _png(fig)
    plt.close("all")
    env = Environment(autoescape=True, undefined=StrictUndefined)
    page = env.from_string(_PAGE).render(
        name=Path(loaded.scenario.source).name or "scenario",
        seed=result.seed,
        arrivals=result.arrivals,
        hours=(result.measured_to_ms - result.measured_from_ms) / 3_600_000,
        wall=result.wall_s,
        columns=columns,
        rows=rows,
        threshold=f"{result.threshold_ms / 1000:g}",
        day_png=day_png,
        sweep_png=sweep_png,
        model=html.escape(model),
    )
    path.write_text(page, encoding="utf-8")


def _day_figure(plt: Any, result: SimResult) -> Any:
    """Time-of-day profile: the intervals of every simulated day folded onto one day."""
    per_day = 24 * 60 * 60 * 1000 // INTERVAL_MS
    offered = [0] * per_day
    within = [0] * per_day
    area = [0] * per_day
    days = [0] * per_day
    for k, iv in enumerate(result.intervals):
        slot = k % per_day
        offered[slot] += iv.offered
        within[slot] += iv.answered_within
        area[slot] += iv.waiting_area_ms
        days[slot] += 1
    hours = [k * INTERVAL_MS / 3_600_000 for k in range(per_day)]
    waiting = [a / INTERVAL_MS / d if d else 0 for a, d in zip(area, days, strict=True)]
    sl = [w / o if o else None for w, o in zip(within, offered, strict=True)]
    rate = [o / d * 4 if d else 0 for o, d in zip(offered, days, strict=True)]  # per hour
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.bar(hours, rate, width=0.25, align="edge", color="#c9d7e8", label="arrivals per hour")
    ax1.set_ylabel("arrivals per hour")
    ax1b = ax1.twinx()
    ax1b.plot([h + 0.125 for h in hours], waiting, color="#1f4e79", label="contacts waiting (mean)")
    ax1b.set_ylabel("contacts waiting")
    ax1.set_title("Arrivals and queue length through the day")
    pts = [(h + 0.125, s) for h, s in zip(hours, sl, strict=True) if s is not None]
    ax2.plot([p[0] for p in pts], [p[1] * 100 for p in pts], marker=".", color="#2e7d32")
    ax2.set_ylabel(f"SL % (≤ {result.threshold_ms / 1000:g} s)")
    ax2.set_ylim(0, 105)
    ax2.set_xlabel("hour of day")
    ax2.set_xlim(0, 24)
    ax2.set_xticks(range(0, 25, 2))
    ax2.set_title("Service level of the contacts arriving in each 15 minutes")
    fig.tight_layout()
    return fig


def _sweep_figure(plt: Any, loaded: LoadedScenario, sweep: list[tuple[int, dict[str, Any]]]) -> tuple[Any, str]:
    """Simulated points against the Erlang curve for the whole offered load on one pool of agents."""
    sc = loaded.scenario
    per_hour = sum(a.per_hour or 0 for a in sc.arrivals)
    aht = sum((a.per_hour or 0) * a.handle_time.mean_s for a in sc.arrivals) / per_hour if per_hour else 0
    patience = [a.patience.mean_s for a in sc.arrivals if a.patience is not None]
    t_s = sc.simulation.service_level_threshold_s
    others = sum(g.count for g, _ in loaded.agent_groups[1:])
    counts = [n for n, _ in sweep]
    model = "Erlang A" if patience else "Erlang C"
    curve: dict[str, list[float | None]] = {"sl": [], "asa": [], "ab": []}
    for n in counts:
        c = n + others
        if patience:
            r = erlang_a(per_hour, aht, c, t_s, sum(patience) / len(patience))
            curve["sl"].append(r.service_level_offered)
            curve["asa"].append(r.mean_wait_s)
            curve["ab"].append(r.p_abandon)
        else:
            e = erlang_c(per_hour, aht, c, t_s)
            curve["sl"].append(e.service_level if e.stable else None)
            curve["asa"].append(e.asa_s if e.stable else None)
            curve["ab"].append(0.0)
    panels = [
        ("sl", "service_level_offered", "SL offered %", 100),
        ("asa", "mean_wait_s" if patience else "asa_s", "mean wait s" if patience else "ASA s", 1),
    ]
    if patience:
        panels.append(("ab", "p_abandon", "abandoned %", 100))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (key, sim_key, label, scale) in zip(axes, panels, strict=True):
        xs = [n for n, v in zip(counts, curve[key], strict=True) if v is not None]
        ys = [v * scale for v in curve[key] if v is not None]
        ax.plot(xs, ys, color="#999", label=model)
        sim = [(d[sim_key] or 0) * scale for _, d in sweep]
        # points that are means over replications carry their confidence interval's half width
        err = [((d.get("half_width") or {}).get(sim_key) or 0) * scale for _, d in sweep]
        if any(err):
            ax.errorbar(counts, sim, yerr=err, fmt="o", color="#1f4e79", capsize=3, label="simulated (95 % CI)")
        else:
            ax.plot(counts, sim, "o", color="#1f4e79", label="simulated")
        ax.set_xlabel("agents in the first group")
        ax.set_title(label)
    axes[0].legend()
    fig.tight_layout()
    return fig, f"{model} ({per_hour:g}/h, AHT {aht:.0f} s{', patience' if patience else ''})"
