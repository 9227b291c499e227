"""The ACD core: pure, synchronous, deterministic. Time is integer milliseconds passed in; no I/O."""

from contactcentre.acd.errors import (
    DuplicateContact,
    IllegalTransition,
    RouterError,
    StaleOffer,
    TimeWentBackwards,
    UnknownAgent,
    UnknownContact,
    UnknownQueue,
)
from contactcentre.acd.router import ArrivalAdjust, CustomerDirectory, Router, RoutingHooks

__all__ = [
    "ArrivalAdjust",
    "CustomerDirectory",
    "DuplicateContact",
    "IllegalTransition",
    "Router",
    "RouterError",
    "RoutingHooks",
    "StaleOffer",
    "TimeWentBackwards",
    "UnknownAgent",
    "UnknownContact",
    "UnknownQueue",
]
