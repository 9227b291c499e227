"""IVR: menus as data (``contactcentre/data/ivr/*.toml`` for the demo centre) and a pure, per-call DTMF state machine.

``load_menu`` checks a file against the centre's queues, calendars and skills; ``IvrSession`` walks one call
through it (inputs with ``now_ms``, actions out, timers as data); ``IvrStats`` folds the sessions' facts into
per-node counts and the containment rate.
"""

from __future__ import annotations

from contactcentre.telephony.ivr.actions import (
    OUTCOMES,
    CollectDigits,
    Enqueue,
    Handoff,
    Hangup,
    InputFailed,
    IvrAction,
    IvrFact,
    NodeEntered,
    NodeExited,
    Play,
    RequestCallback,
    SelfServiceDone,
    SessionFinished,
)
from contactcentre.telephony.ivr.hooks import keypad_digits
from contactcentre.telephony.ivr.menu import Menu, MenuFile, key_towards, load_menu, parse_menu
from contactcentre.telephony.ivr.session import (
    SESSION_INPUTS,
    SESSION_TRANSITIONS,
    HookResult,
    IvrError,
    IvrSession,
)

__all__ = [
    "OUTCOMES",
    "SESSION_INPUTS",
    "SESSION_TRANSITIONS",
    "CollectDigits",
    "Enqueue",
    "Handoff",
    "Hangup",
    "HookResult",
    "InputFailed",
    "IvrAction",
    "IvrError",
    "IvrFact",
    "IvrSession",
    "Menu",
    "MenuFile",
    "NodeEntered",
    "NodeExited",
    "Play",
    "RequestCallback",
    "SelfServiceDone",
    "SessionFinished",
    "key_towards",
    "keypad_digits",
    "load_menu",
    "parse_menu",
]
