"""The admin view as plain data (strings, numbers, lists): users from the store beside the centre's queues,
agents and rules. ``/admin`` renders it and ``contactcentre admin show`` prints it, so both show the same."""

from __future__ import annotations

from typing import Any

from contactcentre.config import CentreConfig, SlaConfig


def _sla(sla: SlaConfig | None) -> str:
    if sla is None:
        return "channel default"
    text = f"{sla.target * 100:g} % in {sla.threshold_s:g} s"
    return text + (f" (warn {sla.warn_s:g} s)" if sla.warn_s is not None else "")


def _skills(skills: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in skills.items()) or "–"


def _overflow(step: Any) -> str:
    parts = []
    if step.relax:
        parts.append("relax " + _skills(step.relax))
    if step.drop_skills:
        parts.append("drop " + ", ".join(step.drop_skills))
    if step.add_skill:
        parts.append("add skill " + _skills(step.add_skill))
    if step.add_queues:
        parts.append("add queues " + ", ".join(step.add_queues))
    if step.move_to:
        parts.append("move to " + step.move_to)
    if step.raise_priority:
        parts.append(f"priority +{step.raise_priority}")
    if step.leave:
        parts.append("leave" + (f" to {step.leave_to}" if step.leave_to else ""))
    return f"after {step.after_s:g} s: " + ("; ".join(parts) or "nothing")


def overview(config: CentreConfig, user_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The admin view as plain data (strings, numbers, lists): the page renders it, the CLI prints it."""
    agents = {a.id: a for a in config.agents}
    people = []
    for u in user_rows:
        agent = agents.get(u["agent_id"]) if u["agent_id"] else None
        problem = ""
        if u["role"] == "agent" and agent is None:
            problem = f"agent id {u['agent_id']!r} is not in the configuration: this user cannot take contacts"
        extension = config.extensions().get(agent.id, "") if agent else ""
        people.append(
            {**u, "skills": _skills(agent.skills) if agent else "", "extension": extension, "problem": problem}
        )
    numbers = config.queue_numbers()
    queues = []
    for q in config.queues:
        queues.append(
            {
                "name": q.name,
                "description": q.description,
                "channels": ", ".join(q.channels),
                "skills": _skills(q.skills),
                "strategy": q.strategy or f"{config.routing.strategy} (centre default)",
                "priority": q.priority,
                "sla": _sla(q.sla),
                "hours": q.hours,
                "max_wait": f"{q.max_wait_s:g} s, then {q.max_wait_action}" if q.max_wait_s is not None else "–",
                "max_depth": q.max_depth if q.max_depth is not None else "–",
                "overflow": [_overflow(s) for s in q.overflow],
                "number": numbers[q.name],
            }
        )
    routing = {
        k: (_skills(v) if isinstance(v, dict) else v)
        for k, v in ((f, getattr(config.routing, f)) for f in config.routing.__struct_fields__)
    }
    return {
        "centre": config.name,
        "users": people,
        "agents_without_user": sorted(set(agents) - {u["agent_id"] for u in user_rows if u["agent_id"]}),
        "routing": routing,
        "queues": queues,
        "dispositions": list(config.dispositions.codes),
        "canned": [{"name": c.name, "channel": c.channel or "chat, email", "text": c.text} for c in config.canned],
        "ivr": [{"number": n, "file": p} for n, p in sorted(config.server.voice.ivr.items())],
    }
