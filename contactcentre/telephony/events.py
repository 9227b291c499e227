"""What the simulated switch reports: CSTA-style call events, one per connection state change.

Every event names the call (``call_id``) and the device whose connection changed (``device``), and carries the
call's calling number (``ani``), the number that was dialled to start it (``dnis``) and its user data
(``attached_data``) as they were at that moment, so a listener needs no other state to pop a screen. ``parties``
lists the devices still in the call after the change: a device monitor is told about every event of a call it
is part of, not only about its own connection.

The tag field is ``event`` and the tag is the class name, so an encoded event is exactly the line the CTI link
pushes: ``{"event": "Delivered", "at_ms": …, "call_id": …}``. The transition each event stands for is listed
in ``docs/cti.md``; replaying events in order rebuilds every connection's state (the property test does).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class SwitchEvent(msgspec.Struct, tag_field="event", tag=True, frozen=True, omit_defaults=True, gc=False):
    at_ms: int
    call_id: str
    device: str
    ani: str = ""
    dnis: str = ""
    attached_data: dict[str, str] = {}
    parties: tuple[str, ...] = ()
    number: str = ""  # the number ``device`` stands for: its extension or queue DN, or the far end on a trunk
    cause: str = ""
    # Fields that can hold personal data, for whoever logs these events (the ACD's erasure register).
    PERSONAL: ClassVar[tuple[str, ...]] = ("ani", "number", "attached_data")


class Originated(SwitchEvent):
    """The calling party's connection: an extension that dialled, or the trunk that brought a call in."""


class Delivered(SwitchEvent):
    """The call is alerting at ``device``."""

    calling_device: str = ""


class Queued(SwitchEvent):
    """The call is waiting at a queue DN (a number the ACD owns) until it is deflected to an agent."""

    calling_device: str = ""


class Established(SwitchEvent):
    """``device`` answered."""


class Held(SwitchEvent):
    """``device`` put the call on hold (its own connection is held; the other parties stay connected)."""


class Retrieved(SwitchEvent):
    """``device`` took the call off hold."""


class Diverted(SwitchEvent):
    """The call left ``device`` unanswered for ``to_device`` (deflected, or routed out of a queue)."""

    to_device: str = ""


class Transferred(SwitchEvent):
    """``device`` transferred the call to ``to_device`` and left it.

    Blind: ``secondary_call_id`` is empty and a ``Delivered``/``Queued`` for ``to_device`` follows.
    Consultative: the parties of ``secondary_call_id`` (the consultation) other than ``device`` now belong to
    ``call_id`` in the state they had, ``device``'s connections in both calls are cleared, and the
    consultation call is gone. The surviving call keeps its id, ANI, DNIS and attached data.
    """

    to_device: str = ""
    secondary_call_id: str = ""


class Conferenced(SwitchEvent):
    """``device`` joined its held call and its consultation: ``device`` is connected in ``call_id`` again, its
    connection in ``secondary_call_id`` is merged away and the other parties of that call join ``call_id``."""

    to_device: str = ""
    secondary_call_id: str = ""


class ConnectionCleared(SwitchEvent):
    """``device`` left the call (hung up, or the call ended around it). ``cause``: ``normal`` or why."""


class Failed(SwitchEvent):
    """The connection at ``device`` ended without being answered (``cause`` ``no_answer``)."""


class AttachedDataChanged(SwitchEvent):
    """The call's user data changed (``device`` is who changed it, when known)."""


class DigitsGenerated(SwitchEvent):
    """The party at ``device`` sent DTMF ``digits`` into the call (in-band tones; no connection changes)."""

    digits: str = ""


SWITCH_EVENTS: tuple[type[SwitchEvent], ...] = (
    Originated,
    Delivered,
    Queued,
    Established,
    Held,
    Retrieved,
    Diverted,
    Transferred,
    Conferenced,
    ConnectionCleared,
    Failed,
    AttachedDataChanged,
    DigitsGenerated,
)
