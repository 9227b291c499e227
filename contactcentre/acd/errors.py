"""Errors the router raises for input it refuses. A refused input changes nothing."""

from __future__ import annotations


class RouterError(Exception):
    """An input the router refuses; its state is exactly as before the call."""


class IllegalTransition(RouterError):
    """A state machine was asked for a step its transition table does not have."""

    def __init__(self, kind: str, ident: str, state: str, action: str, detail: str = "") -> None:
        self.kind, self.ident, self.state, self.action = kind, ident, state, action
        msg = f"{kind} {ident!r}: cannot {action!r} in state {state!r}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class UnknownContact(RouterError):
    def __init__(self, contact_id: str) -> None:
        super().__init__(f"unknown or finished contact {contact_id!r}")


class UnknownAgent(RouterError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"unknown agent {agent_id!r} (not in the configuration, and no skills given)")


class UnknownQueue(RouterError):
    def __init__(self, queue: str) -> None:
        super().__init__(f"unknown queue {queue!r}")


class DuplicateContact(RouterError):
    def __init__(self, contact_id: str) -> None:
        super().__init__(f"contact {contact_id!r} is already in the centre")


class StaleOffer(RouterError):
    """The offer is no longer open (expired, cancelled, or never made to this agent) — a normal race."""

    def __init__(self, offer_id: str, why: str) -> None:
        super().__init__(f"offer {offer_id!r} is not open: {why}")


class TimeWentBackwards(RouterError):
    def __init__(self, at_ms: int, now_ms: int) -> None:
        super().__init__(f"event at {at_ms} ms is earlier than the router's clock ({now_ms} ms)")
