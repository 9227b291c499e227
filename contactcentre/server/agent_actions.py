"""Changing an agent from outside the agent's own console: one path for the REST API (``POST
/api/agents/{id}/skills``, a supervisor) and the ``/admin`` page (an admin), so both refuse the same things.

The change is an ``AgentSkillsChanged`` input: logged like any other, so the router, the dashboard and a
replay after a restart all see it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.events import AgentSkillsChanged

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre


class AgentChangeRefused(Exception):
    """Why the change was not made; ``status`` and ``code`` as the REST API answers them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def change_skills(
    centre: Centre, agent_id: str, skills: dict[str, int] | None, capacity: dict[str, int] | None
) -> None:
    """Set an agent's skills (name → level 1-10) and/or channel capacities; returns once the change is logged."""
    if not centre.router.has_agent(agent_id):
        raise AgentChangeRefused(404, "not_found", f"no agent {agent_id!r}")
    if centre.driver.closed:
        raise AgentChangeRefused(503, "unavailable", "the centre is shutting down")
    refusal = centre.submit(
        AgentSkillsChanged(at_ms=centre.now_ms(), agent_id=agent_id, skills=skills, capacity=capacity)
    )
    if refusal is not None:
        raise AgentChangeRefused(409, "conflict", f"the router refused the change: {refusal}")
    await centre.commit()
