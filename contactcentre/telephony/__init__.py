"""Telephony: a simulated switch (pure, CSTA-style) and the CTI link that exposes it over TCP.

``switch`` is sans-I/O like the ACD router: operations take ``now_ms`` and return events, ring timers are
data. ``driver`` runs it on a Twisted clock; ``link`` is the line-based JSON protocol (``docs/cti.md``).
Nothing here imports the global reactor: the runtime installs the asyncio reactor first and passes it in.
"""

from __future__ import annotations

from contactcentre.telephony.events import (
    SWITCH_EVENTS,
    AttachedDataChanged,
    Conferenced,
    ConnectionCleared,
    Delivered,
    DigitsGenerated,
    Diverted,
    Established,
    Failed,
    Held,
    Originated,
    Queued,
    Retrieved,
    SwitchEvent,
    Transferred,
)
from contactcentre.telephony.switch import (
    CONNECTION_ACTIONS,
    CONNECTION_STATES,
    CONNECTION_TRANSITIONS,
    Call,
    Connection,
    Switch,
    SwitchConfig,
    SwitchError,
    replay,
)

__all__ = [
    "CONNECTION_ACTIONS",
    "CONNECTION_STATES",
    "CONNECTION_TRANSITIONS",
    "SWITCH_EVENTS",
    "AttachedDataChanged",
    "Call",
    "Conferenced",
    "Connection",
    "ConnectionCleared",
    "Delivered",
    "DigitsGenerated",
    "Diverted",
    "Established",
    "Failed",
    "Held",
    "Originated",
    "Queued",
    "Retrieved",
    "Switch",
    "SwitchConfig",
    "SwitchError",
    "SwitchEvent",
    "Transferred",
    "replay",
]
