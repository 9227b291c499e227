"""How an IVR's results travel with a call: the switch's attached data (strings to strings) and back.

The IVR runner moves a call from the IVR number to a queue DN with its results as attached data; the voice
bridge turns the call's arrival there into a ``ContactArrived``. Attributes (language, IVR path, collected
digits) travel as they are, for the agent's screen; the routing fields travel under two reserved keys:
``ivr_skills`` (``technical=5,dutch=1``) and ``ivr_priority`` (``1``), which the bridge takes out again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from contactcentre.telephony.ivr.actions import Enqueue

SKILLS_KEY = "ivr_skills"
PRIORITY_KEY = "ivr_priority"
_SKILL = re.compile(r"^([^=,\s]+)=(-?[0-9]{1,4})$")


def attached_data(enqueue: Enqueue) -> dict[str, str]:
    """The attached data that hands ``enqueue`` over to the ACD."""
    data = {k: v for k, v in enqueue.attributes.items() if k not in (SKILLS_KEY, PRIORITY_KEY)}
    if enqueue.skills:
        data[SKILLS_KEY] = ",".join(f"{skill}={level}" for skill, level in sorted(enqueue.skills.items()))
    if enqueue.priority:
        data[PRIORITY_KEY] = str(enqueue.priority)
    return data


def routing_from_attached(data: Mapping[str, str]) -> tuple[dict[str, int], int, dict[str, str]]:
    """``(skills, priority, attributes)`` from a call's attached data; a call that never saw an IVR gives
    ``({}, 0, data)``. A malformed routing value raises ``ValueError`` naming the key."""
    attributes = {k: v for k, v in data.items() if k not in (SKILLS_KEY, PRIORITY_KEY)}
    skills: dict[str, int] = {}
    for part in filter(None, data.get(SKILLS_KEY, "").split(",")):
        m = _SKILL.match(part.strip())
        if m is None:
            raise ValueError(f"{SKILLS_KEY}: {part!r} is not skill=level")
        skills[m.group(1)] = int(m.group(2))
    raw = data.get(PRIORITY_KEY, "").strip()
    try:
        priority = int(raw) if raw else 0
    except ValueError:
        raise ValueError(f"{PRIORITY_KEY}: {raw!r} is not an integer") from None
    return skills, priority, attributes
