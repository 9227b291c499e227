"""The ACD core: pure, synchronous, deterministic. Time is integer milliseconds passed in; no I/O.

Everything outside this package uses only the names below (``tests/test_architecture.py`` checks it): the
``Router`` and its inputs' refusals, the plain values its read methods return (``views``), and the few
tables and helpers the edge shares with it.
"""

from contactcentre.acd.agent import HANDLING, STAFFED
from contactcentre.acd.calendar import BusinessCalendar
from contactcentre.acd.contact import CONTACT_STATES
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
from contactcentre.acd.stats import LiveStats
from contactcentre.acd.strategies import UNEXPLAINED, score_words
from contactcentre.acd.views import (
    AgentStatus,
    AgentView,
    ContactView,
    OfferView,
    QueueLoad,
    QueueView,
    WaitEstimate,
    Waiting,
)

__all__ = [
    "CONTACT_STATES",
    "HANDLING",
    "STAFFED",
    "UNEXPLAINED",
    "AgentStatus",
    "AgentView",
    "ArrivalAdjust",
    "BusinessCalendar",
    "ContactView",
    "CustomerDirectory",
    "DuplicateContact",
    "IllegalTransition",
    "LiveStats",
    "OfferView",
    "QueueLoad",
    "QueueView",
    "Router",
    "RouterError",
    "RoutingHooks",
    "StaleOffer",
    "TimeWentBackwards",
    "UnknownAgent",
    "UnknownContact",
    "UnknownQueue",
    "WaitEstimate",
    "Waiting",
    "score_words",
]
