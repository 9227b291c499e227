"""Scenario files: the workload and staffing a simulation runs, in TOML.

The smallest useful scenario::

    [simulation]
    calls = 1000000            # or duration_s = 86400
    warmup_fraction = 0.05
    seed = 1
    service_level_threshold_s = 20
    [[queues]]
    name = "support"
    skills = { general = 1 }   # required skill: minimum level
    [[agent_groups]]
    count = 50
    skills = { general = 5 }
    [[arrivals]]
    queue = "support"
    per_hour = 850
    handle_time = { distribution = "exponential", mean_s = 180 }
    patience = { distribution = "exponential", mean_s = 120 }   # omit for infinite patience

Queues take every key of a centre configuration's ``[[queues]]`` (strategy, priority, overflow steps, …),
and ``[routing]``, ``[channels.*]``, ``[tiers.*]``, ``[calendars.*]`` and ``[skills]`` pass through to the
router unchanged — the simulator runs the production router on the scenario's centre. Channels default to
no wrap-up, so that a plain scenario is the M/M/c(+M) model queueing theory describes.

``overrides`` (``--set agent_groups.0.count=52``) edit the parsed TOML before it is checked: the what-if
mechanism. Errors name the file and the key, like configuration errors.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from contactcentre.config import CentreConfig, ConfigError, convert, parse_config
from contactcentre.events import Channel

Distribution = Literal["exponential", "lognormal", "fixed"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Dist(_Strict):
    """A duration: ``exponential`` (mean), ``lognormal`` (mean and standard deviation), ``fixed``."""

    distribution: Distribution = "exponential"
    mean_s: float = 180.0
    sd_s: float | None = None


class SimulationSection(_Strict):
    calls: int | None = None
    duration_s: float | None = None
    warmup_fraction: float = 0.05
    seed: int = 1
    service_level_threshold_s: float = 20.0
    start: str = "2026-11-23T00:00:00+00:00"  # a Monday: calendars and "today" counters need a date


class AgentGroup(_Strict):
    count: int
    skills: dict[str, int] = {}
    capacity: dict[Channel, int] = msgspec.field(default_factory=lambda: {"voice": 1})
    name: str | None = None
    accept_delay: Dist = msgspec.field(default_factory=lambda: Dist(distribution="fixed", mean_s=0.0))
    shifts: list[tuple[float, float]] = []  # (start_s, end_s) from the simulation start; none = always
    back_after_missed_s: float = 5.0  # an agent set away for a missed offer is ready again after this


class Arrivals(_Strict):
    """A Poisson stream of contacts for one queue and channel: a constant ``per_hour``, or ``curve``, a rate
    per hour for each 15-minute interval of the day (repeating daily)."""

    queue: str
    channel: Channel = "voice"
    per_hour: float | None = None
    curve: list[float] | None = None
    handle_time: Dist = msgspec.field(default_factory=Dist)
    patience: Dist | None = None
    tier: str | None = None
    priority: int = 0


class Scenario(_Strict):
    simulation: SimulationSection = msgspec.field(default_factory=SimulationSection)
    queues: list[dict[str, Any]] = []
    agent_groups: list[AgentGroup] = []
    arrivals: list[Arrivals] = []
    routing: dict[str, Any] = {}
    channels: dict[str, dict[str, Any]] = {}
    tiers: dict[str, dict[str, Any]] = {}
    calendars: dict[str, dict[str, Any]] = {}
    skills: dict[str, str] = {}
    timezone: str = "UTC"

    # filled by load_scenario
    source: str = ""


class LoadedScenario(msgspec.Struct):
    """A checked scenario and the centre configuration the router runs."""

    scenario: Scenario
    centre: CentreConfig
    agent_groups: list[tuple[AgentGroup, list[str]]]  # each group with its agents' ids
    start_ms: int
    threshold_ms: int


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """``key.path=value`` edits; list items by index (``agent_groups.0.count=52``); values are TOML
    (``52``, ``0.8``, ``"text"``, ``{ general = 3 }``), bare words are strings."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ConfigError(source, item, "an override is KEY.PATH=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node: Any = data
        parts = path.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(source, where, f"no item {part} (the list has {len(node)})")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(source, where, "cannot set a key inside a value")
    return data


#: the scenarios shipped with the package (``contactcentre simulate e8_mmc`` from any directory)
SHIPPED_SCENARIOS = Path(__file__).resolve().parent.parent / "data" / "scenarios"


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> LoadedScenario:
    """A scenario file, or a shipped scenario by name (``e8_mmc``, ``day_200_agents``) when no such file is
    here."""
    path = Path(path)
    shipped = SHIPPED_SCENARIOS / f"{path.name}.toml"
    if not path.exists() and path.suffix == "" and path.parent == Path(".") and shipped.is_file():
        path = shipped
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse_scenario(data, source, overrides)


def parse_scenario(
    data: dict[str, Any], source: str = "<scenario>", overrides: list[str] | None = None
) -> LoadedScenario:
    data = apply_overrides(data, list(overrides or []), source)
    sc: Scenario = convert(data, Scenario, source)
    sc.source = source
    sim = sc.simulation

    def fail(key: str, problem: str) -> None:
        raise ConfigError(source, key, problem)

    if (sim.calls is None) == (sim.duration_s is None):
        fail("simulation", "give exactly one of calls and duration_s")
    if sim.calls is not None and sim.calls < 1:
        fail("simulation.calls", "must be at least 1")
    if sim.duration_s is not None and sim.duration_s <= 0:
        fail("simulation.duration_s", "must be > 0")
    if not 0 <= sim.warmup_fraction < 1:
        fail("simulation.warmup_fraction", "must be in [0, 1)")
    if sim.service_level_threshold_s <= 0:
        fail("simulation.service_level_threshold_s", "must be > 0")
    try:
        start_ms = int(dt.datetime.fromisoformat(sim.start).timestamp() * 1000)
    except ValueError:
        fail("simulation.start", f"{sim.start!r} is not an ISO date-time like 2026-11-23T08:00:00+01:00")
    if not sc.queues:
        fail("queues", "a scenario needs at least one queue")
    if not sc.arrivals:
        fail("arrivals", "a scenario needs at least one arrival stream")
    if not sc.agent_groups:
        fail("agent_groups", "a scenario needs at least one agent group")

    threshold_s = sim.service_level_threshold_s
    queues = []
    for q in sc.queues:
        q = dict(q)
        q.setdefault("sla", {"threshold_s": threshold_s})
        q.setdefault("channels", sorted({a.channel for a in sc.arrivals if a.queue == q.get("name")}) or ["voice"])
        queues.append(q)
    agents: list[dict[str, Any]] = []
    groups: list[tuple[AgentGroup, list[str]]] = []
    for gi, g in enumerate(sc.agent_groups):
        if g.count < 0:
            fail(f"agent_groups[{gi}].count", "must be >= 0")
        for k, (s, e) in enumerate(g.shifts):
            if not 0 <= s < e:
                fail(f"agent_groups[{gi}].shifts[{k}]", "a shift is [start_s, end_s] with 0 <= start < end")
        _check_dist(g.accept_delay, f"agent_groups[{gi}].accept_delay", fail, zero_ok=True)
        name = g.name or f"g{gi}"
        ids = [f"{name}-{n}" for n in range(g.count)]
        groups.append((g, ids))
        agents += [{"id": aid, "skills": g.skills, "capacity": g.capacity} for aid in ids]
    for ai, a in enumerate(sc.arrivals):
        key = f"arrivals[{ai}]"
        if a.queue not in {q.get("name") for q in queues}:
            fail(f"{key}.queue", f"unknown queue {a.queue!r}")
        if (a.per_hour is None) == (a.curve is None):
            fail(key, "give exactly one of per_hour and curve")
        if a.per_hour is not None and a.per_hour <= 0:
            fail(f"{key}.per_hour", "must be > 0")
        if a.curve is not None and (len(a.curve) != 96 or min(a.curve) < 0 or max(a.curve) <= 0):
            fail(f"{key}.curve", "a curve is 96 rates per hour (>= 0, not all 0), one per 15 minutes of the day")
        _check_dist(a.handle_time, f"{key}.handle_time", fail)
        if a.patience is not None:
            _check_dist(a.patience, f"{key}.patience", fail)

    channels = {ch: {"wrap_up_s": 0, **cfg} for ch, cfg in sc.channels.items()}
    for ch in ("voice", "chat", "email", "callback", "outbound"):
        channels.setdefault(ch, {"wrap_up_s": 0})
    centre_data: dict[str, Any] = {
        "name": f"simulation of {Path(source).name}",
        "timezone": sc.timezone,
        "routing": sc.routing,
        "channels": channels,
        "tiers": sc.tiers,
        "calendars": sc.calendars,
        "skills": sc.skills,
        "queues": queues,
        "agents": agents,
    }
    centre = parse_config(centre_data, source)
    return LoadedScenario(
        scenario=sc,
        centre=centre,
        agent_groups=groups,
        start_ms=start_ms,
        threshold_ms=round(threshold_s * 1000),
    )


def _check_dist(d: Dist, key: str, fail: Any, zero_ok: bool = False) -> None:
    if d.mean_s < 0 or (d.mean_s == 0 and not zero_ok and d.distribution != "fixed"):
        fail(f"{key}.mean_s", "must be > 0")
    if d.distribution == "lognormal" and (d.sd_s is None or d.sd_s <= 0):
        fail(f"{key}.sd_s", "a lognormal needs a standard deviation > 0")
