"""Blending exclusive work (calls) with concurrent work (chats, e-mails) on the same agents.

An agent on two chats cannot take a call (voice is exclusive), and if it pulls a new chat every time one
ends it never can: calls starve behind a stream of chats. With ``routing.drain_for_exclusive``, when an
agent with work in hand frees a slot and the best thing it could take is outranked by a waiting exclusive
contact it could take once free, the agent *drains for* that contact: it takes nothing new ranked after it,
and the call becomes its next contact. Each waiting exclusive contact holds at most one draining agent, so
the rest of the floor keeps serving chats, and undoing a drain costs one agent's routing, not a sweep.

A drain ends when its contact stops waiting (offered to anyone, abandoned, overflowed or moved) — the agent
is then routed again — or when the agent goes away, logs out or changes skills.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contactcentre.acd.agent import Agent
from contactcentre.acd.contact import Contact

if TYPE_CHECKING:
    from contactcentre.acd.router import Router as _Base
else:
    _Base = object


class Blending(_Base):
    """Part of ``Router`` (a mixin over the router's state)."""

    def _drain_target(self, a: Agent, rank: tuple[int, int]) -> Contact | None:
        """The waiting exclusive contact ``a`` should drain for instead of taking work ranked ``rank``:
        the best one it may take once free that outranks ``rank`` and has no draining agent yet."""
        if not a.total_load or not self.waiting.count_on(self._exclusive_channels):
            return None
        aid = a.id
        best: Contact | None = None
        for ch in self._exclusive_channels:
            if not a.capacity.get(ch, 0):
                continue
            for g in self.waiting.groups_for(a, ch):
                for x in g.contacts:  # in rank order
                    if x.rank >= rank or (best is not None and x.rank >= best.rank):
                        break
                    if aid in x.rejected_by or x.drained_by is not None:
                        continue
                    best = x
                    break
        return best

    def _find_drainer(self, x: Contact) -> None:
        """An exclusive contact nobody can take now: let the longest-idle agent that could take it once
        free, and has room for other work (so would otherwise keep taking it), drain for it."""
        if x.preferred_agent_id is not None:
            return
        aid_ok = x.rejected_by
        for ch in self._concurrent_channels:
            for req in x.reqs:
                for a in self.avail.pool(ch, req).values():
                    if (
                        a.draining_for is None
                        and a.total_load
                        and a.capacity.get(x.channel, 0)
                        and a.id not in aid_ok
                        and a.meets(req)
                    ):
                        self._start_drain(a, x)
                        return

    def _held_back(self, a: Agent, c: Contact) -> bool:
        """Is ``a`` draining for an exclusive contact that outranks ``c``?"""
        x = a.draining_for
        return x is not None and x.rank < c.rank and not self._exclusive.get(c.channel, False)

    def _start_drain(self, a: Agent, x: Contact) -> None:
        a.draining_for = x
        x.drained_by = a

    def _end_drain_of(self, x: Contact) -> None:
        """``x`` stops waiting: the agent that drained for it may take other work again."""
        a = x.drained_by
        if a is not None:
            x.drained_by = None
            a.draining_for = None
            self._recheck[a.id] = a

    def _end_drain_by(self, a: Agent) -> None:
        """``a`` can no longer drain (away, logged out, new skills, given other exclusive work)."""
        x = a.draining_for
        if x is not None:
            x.drained_by = None
            a.draining_for = None

    def _recheck_drained(self) -> None:
        """Route the agents whose drain ended during this step (after it, so routing never nests)."""
        while self._recheck:
            _, a = self._recheck.popitem()
            self._route_agent(a)
