"""What an IVR session says: actions for the media side to carry out, and facts for the log and statistics.

Actions are commands (play this, the call goes to that queue); facts are what happened (node entered, input
timed out, the call finished with this outcome). Both are msgspec tagged unions, like ``contactcentre.events``,
so the runtime can log, ship and replay them unchanged.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from contactcentre.events import ContactArrived

Outcome = Literal["queued", "self_served", "abandoned", "callback", "ivr_hangup", "handed_off"]
OUTCOMES: tuple[str, ...] = ("queued", "self_served", "abandoned", "callback", "ivr_hangup", "handed_off")


class Action(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    call_id: str


class Play(Action, tag="ivr.play"):
    """Play a prompt. A new ``Play`` (or any action that ends the IVR) replaces whatever is playing: that is
    how barge-in stops a prompt. Report its end with ``prompt_done(now_ms, seq)``."""

    seq: int
    prompt_id: str
    text: str
    language: str
    variables: dict[str, str] = {}
    barge_in: bool = False  # a key pressed while this plays is taken as input
    PERSONAL: ClassVar[tuple[str, ...]] = ("text", "variables")


class CollectDigits(Action, tag="ivr.collect_digits"):
    """The session now waits for keys. Advisory (the session times and collects the keys itself, from
    ``dtmf``): a media server may use it to arm DTMF detection or flush type-ahead."""

    node: str
    max_digits: int
    terminator: str = ""
    timeout_ms: int = 0
    inter_digit_ms: int = 0


class Enqueue(Action, tag="ivr.enqueue"):
    """Hand the call to the ACD: it becomes a ``ContactArrived`` on channel ``voice``."""

    queue: str
    priority: int = 0
    skills: dict[str, int] = {}
    attributes: dict[str, str] = {}
    PERSONAL: ClassVar[tuple[str, ...]] = ("attributes",)

    def contact_arrived(self, at_ms: int, address: str | None = None, **edge: str | None) -> ContactArrived:
        """The router input this becomes. The call id is the contact id, so the switch's later events (the
        caller hangs up: ``CustomerLeft``) name the same contact. ``edge``: what the runtime resolved from the
        ANI (``customer_id``, ``tier``, ``case_id``, ``preferred_agent_id``)."""
        return ContactArrived(
            at_ms=at_ms,
            contact_id=self.call_id,
            queue=self.queue,
            channel="voice",
            priority=self.priority,
            skills=dict(self.skills),
            attributes=dict(self.attributes),
            address=address,
            **edge,  # type: ignore[arg-type]
        )


class RequestCallback(Action, tag="ivr.request_callback"):
    """Call the customer back on ``number``: as soon as possible (``at_ms`` None) or from ``at_ms``."""

    number: str
    at_ms: int | None = None
    queue: str = ""
    priority: int = 0
    attributes: dict[str, str] = {}
    PERSONAL: ClassVar[tuple[str, ...]] = ("number", "attributes")


class Handoff(Action, tag="ivr.handoff"):
    """The call leaves the IVR for something that is not a queue (``target``, e.g. ``voicemail``)."""

    target: str
    attributes: dict[str, str] = {}
    PERSONAL: ClassVar[tuple[str, ...]] = ("attributes",)


class Hangup(Action, tag="ivr.hangup"):
    reason: str


class SelfServiceDone(Action, tag="ivr.self_service_done"):
    """A self-service hook served the caller (e.g. told them their case status)."""

    node: str
    hook: str
    outcome: str


IvrAction = Play | CollectDigits | Enqueue | RequestCallback | Handoff | Hangup | SelfServiceDone


class Fact(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    call_id: str
    at_ms: int


class NodeEntered(Fact, tag="ivr.node_entered"):
    node: str


class InputFailed(Fact, tag="ivr.input_failed"):
    """One failed attempt at a question: no key in time, or keys that are not an answer."""

    node: str
    cause: Literal["timeout", "invalid"]
    attempt: int


class NodeExited(Fact, tag="ivr.node_exited"):
    """``cause``: ``option:K`` (menu key), ``digits`` (collected), ``next``, ``open``/``closed``, a hook's
    outcome or ``otherwise``, ``timeout``/``invalid`` (retries exhausted), ``hangup`` (the caller),
    ``time_limit``, or the terminal action: ``queued``, ``callback``, ``handed_off``, ``ivr_hangup``."""

    node: str
    cause: str


class SessionFinished(Fact, tag="ivr.finished"):
    outcome: Outcome
    node: str = ""  # where the call was when it finished
    path: str = ""


IvrFact = NodeEntered | InputFailed | NodeExited | SessionFinished
