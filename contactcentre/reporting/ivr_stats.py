"""Containment statistics, folded from the sessions' facts (live, or read back from the log).

Per node: how many calls entered, how many attempts failed (timeout / invalid), and how calls left it
(``option:1``, ``timeout``, ``hangup``, ...). Per call: its outcome. The containment rate is the share of
finished calls served in self-service without reaching a queue (outcome ``self_served``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contactcentre.events import Event, IvrFinished, IvrInputFailed, IvrNodeEntered, IvrNodeExited, decode
from contactcentre.store.eventlog import payloads_of_types
from contactcentre.telephony.ivr.actions import OUTCOMES, InputFailed, IvrFact, NodeEntered, NodeExited, SessionFinished
from contactcentre.telephony.ivr.session import IvrSession

if TYPE_CHECKING:
    from contactcentre.store.db import Connection

IVR_EVENT_TAGS = ("ivr.node_entered", "ivr.input_failed", "ivr.node_exited", "ivr.finished")


@dataclass
class NodeStats:
    entered: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed attempts: timeout / invalid
    exits: Counter[str] = field(default_factory=Counter)  # cause -> calls that left this way

    @property
    def abandoned(self) -> int:
        """Callers who hung up while at this node."""
        return self.exits["hangup"]


@dataclass
class IvrStats:
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    time_in_ivr_ms: int = 0  # summed over finished calls (mean = time_in_ivr_ms / calls)
    _started: dict[str, int] = field(default_factory=dict)

    def add(self, facts: Iterable[IvrFact]) -> None:
        """Fold facts in, in the order they happened (several calls may be interleaved)."""
        for f in facts:
            if isinstance(f, NodeEntered):
                self._started.setdefault(f.call_id, f.at_ms)
                self.node(f.node).entered += 1
            elif isinstance(f, InputFailed):
                self.node(f.node).failures[f.cause] += 1
            elif isinstance(f, NodeExited):
                self.node(f.node).exits[f.cause] += 1
            elif isinstance(f, SessionFinished):
                self.outcomes[f.outcome] += 1
                self.time_in_ivr_ms += f.at_ms - self._started.pop(f.call_id, f.at_ms)

    def add_session(self, session: IvrSession) -> None:
        self.add(session.facts)

    def node(self, name: str) -> NodeStats:
        got = self.nodes.get(name)
        if got is None:
            got = self.nodes[name] = NodeStats()
        return got

    @property
    def calls(self) -> int:
        """Finished calls."""
        return sum(self.outcomes.values())

    @property
    def containment_rate(self) -> float | None:
        """Share of finished calls served in self-service without reaching a queue; None before any call."""
        return self.outcomes["self_served"] / self.calls if self.calls else None

    @property
    def abandon_rate(self) -> float | None:
        return self.outcomes["abandoned"] / self.calls if self.calls else None

    def as_dict(self) -> dict[str, object]:
        """Plain data for an API or a report."""
        return {
            "calls": self.calls,
            "outcomes": dict(sorted(self.outcomes.items())),
            "containment_rate": self.containment_rate,
            "abandon_rate": self.abandon_rate,
            "nodes": {
                name: {"entered": s.entered, "failures": dict(s.failures), "exits": dict(sorted(s.exits.items()))}
                for name, s in sorted(self.nodes.items())
            },
        }


def facts_of(events: Iterable[Any], menu: str | None = None) -> Iterator[IvrFact]:
    """The session facts the IVR runner logged (``contactcentre.events.Ivr*``), back as facts; other events
    are skipped, and so are other menus' when ``menu`` is given."""
    for ev in events:
        if menu is not None and getattr(ev, "menu", None) != menu:
            continue
        if isinstance(ev, IvrNodeEntered):
            yield NodeEntered(call_id=ev.contact_id, at_ms=ev.at_ms, node=ev.node)
        elif isinstance(ev, IvrInputFailed):
            yield InputFailed(call_id=ev.contact_id, at_ms=ev.at_ms, node=ev.node, cause=ev.cause, attempt=ev.attempt)
        elif isinstance(ev, IvrNodeExited):
            yield NodeExited(call_id=ev.contact_id, at_ms=ev.at_ms, node=ev.node, cause=ev.cause)
        elif isinstance(ev, IvrFinished) and ev.outcome in OUTCOMES:
            outcome: Any = ev.outcome
            yield SessionFinished(call_id=ev.contact_id, at_ms=ev.at_ms, outcome=outcome, node=ev.node, path=ev.path)


def stats_from_events(events: Iterable[Any], menu: str | None = None) -> IvrStats:
    """Containment statistics rebuilt from logged events (in log order), e.g. ``read_ivr_events`` below."""
    stats = IvrStats()
    stats.add(facts_of(events, menu))
    return stats


def read_ivr_events(conn: Connection, since_ms: int | None = None, until_ms: int | None = None) -> list[Event]:
    """The IVR facts logged in the store's events table, in log order; ``since_ms`` / ``until_ms`` bound
    ``at_ms`` (a call that started before ``since_ms`` counts with the facts inside the window only)."""
    return [decode(p) for p in payloads_of_types(conn, IVR_EVENT_TAGS, since_ms, until_ms)]


def stats_from_store(
    conn: Connection, menu: str | None = None, since_ms: int | None = None, until_ms: int | None = None
) -> IvrStats:
    """Containment statistics from the log: what ``contactcentre ivr-stats`` prints (``--json``: ``as_dict``,
    its shape in docs/ivr.md); a server reads them with ``centre.read(stats_from_store, menu)``."""
    return stats_from_events(read_ivr_events(conn, since_ms, until_ms), menu)
