"""A router under a fake clock, with the log of everything it said, for readable scenario tests."""

from __future__ import annotations

from typing import Any

from contactcentre import events as E
from contactcentre.acd import Router
from contactcentre.config import parse_config

BASE: dict[str, Any] = {
    "skills": {"general": "", "billing": "", "spanish": "", "supervisor": ""},
    "channels": {
        "voice": {"offer_timeout_s": 15, "wrap_up_s": 10},
        "chat": {"offer_timeout_s": 20, "wrap_up_s": 0},
        "email": {"offer_timeout_s": 60, "wrap_up_s": 0},
    },
    "routing": {"priority_weight_s": 60},
}


def make_config(**overrides: Any) -> Any:
    data = {**BASE, **overrides}
    return parse_config(data, "<test>")


class Harness:
    def __init__(self, start_ms: int = 1_000_000, **config: Any) -> None:
        self.cfg = make_config(**config)
        self.router = Router(self.cfg, start_ms=start_ms)
        self.start = self.now = start_ms
        self.log: list[E.Event] = []

    # time
    def at(self, seconds: float) -> int:
        """Move the clock to ``seconds`` after the start, firing timers on the way."""
        self.now = self.start + round(seconds * 1000)
        self.log += self.router.advance(self.now)
        return self.now

    def send(self, cls: type[E.Event], **fields: Any) -> list[E.Event]:
        out = self.router.handle(cls(at_ms=self.now, **fields))
        self.log += out
        return out

    # inputs in words
    def login(self, *agents: str, **kw: Any) -> None:
        for a in agents:
            self.send(E.AgentLoggedIn, agent_id=a, **kw)

    def arrive(self, cid: str, queue: str = "support", channel: str = "voice", **kw: Any) -> list[E.Event]:
        return self.send(E.ContactArrived, contact_id=cid, queue=queue, channel=channel, **kw)

    def offer_of(self, cid: str) -> E.OfferMade:
        """The latest offer made for ``cid``."""
        for ev in reversed(self.log):
            if isinstance(ev, E.OfferMade) and ev.contact_id == cid:
                return ev
        raise AssertionError(f"no offer for {cid}")

    def accept(self, cid: str) -> list[E.Event]:
        o = self.offer_of(cid)
        return self.send(E.OfferAccepted, offer_id=o.offer_id, contact_id=cid, agent_id=o.agent_id)

    def reject(self, cid: str) -> list[E.Event]:
        o = self.offer_of(cid)
        return self.send(E.OfferRejected, offer_id=o.offer_id, contact_id=cid, agent_id=o.agent_id)

    def end(self, cid: str) -> list[E.Event]:
        return self.send(E.ContactEnded, contact_id=cid, agent_id=self.router.contacts[cid].agent_id)

    # reading the log
    def of(self, cls: type[E.Event]) -> list[Any]:
        return [e for e in self.log if isinstance(e, cls)]

    def offered_to(self, cid: str) -> str:
        return self.offer_of(cid).agent_id

    def state(self, cid: str) -> str:
        c = self.router.contacts.get(cid)
        return c.state if c else "finished"

    def agent_state(self, aid: str) -> str:
        return self.router.agents[aid].state


def agents(*specs: tuple[str, dict[str, int]], capacity: dict[str, int] | None = None) -> list[dict[str, Any]]:
    out = []
    for aid, skills in specs:
        a: dict[str, Any] = {"id": aid, "skills": skills}
        if capacity is not None:
            a["capacity"] = capacity
        out.append(a)
    return out
