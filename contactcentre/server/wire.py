"""What travels between the nodes of one centre (``serve --role router|edge``), as msgspec structs.

Edges send ``InputRecord`` s to the active router; the router sends ``OutputRecord`` s to everyone (edges and
the standby router). The router is deterministic, so an output record says everything a replica needs to be
where the router was after it: the operations to apply (``Handle`` an input as the router stamped it,
``Advance`` its clock to fire what fell due) and the events that came out, which the replica fans out to its
own subscribers instead of recomputing them. ``docs/scaling.md`` describes the streams these records travel on.
"""

from __future__ import annotations

import msgspec

from contactcentre.events import AnyEvent
from contactcentre.store.ops import AnyStoreOp


class Submit(msgspec.Struct, tag="submit", frozen=True):
    """A router input (``centre.submit``)."""

    event: AnyEvent  # type: ignore[valid-type]


class Publish(msgspec.Struct, tag="publish", frozen=True):
    """Facts that are not router inputs (``centre.publish``): logged and fanned out in their place."""

    events: list[AnyEvent]  # type: ignore[valid-type]


class Stage(msgspec.Struct, tag="stage", frozen=True):
    """A named store operation (``centre.stage``), committed with the record's events."""

    op: AnyStoreOp  # type: ignore[valid-type]


Part = Submit | Publish | Stage


class InputRecord(msgspec.Struct, frozen=True):
    """One unit an edge hands over: a lone submit, publish or stage, or one ``with centre.atomic():`` block.
    The router applies its parts in one store transaction. ``id`` is unique for ever (node, boot, counter):
    an input retried across a fail-over is recognised by it and applied once."""

    id: str
    node: str
    parts: list[Part]


class Advance(msgspec.Struct, tag="advance", frozen=True):
    """The router fired what fell due by ``to_ms`` (``Router.advance``)."""

    to_ms: int


class Handle(msgspec.Struct, tag="handle", frozen=True):
    """The router took ``event`` (as it stamped it) (``Router.handle``)."""

    event: AnyEvent  # type: ignore[valid-type]


Op = Advance | Handle


class OutputRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the router did for one input record (``input_id``) or for a deadline (``input_id`` None), after it
    was committed: its events carry the event-log ids ``first_id`` .. ``last_id`` (``last_id`` is
    ``first_id - 1`` when none were logged), the router held fencing token ``fence``."""

    fence: int
    first_id: int
    last_id: int
    ops: list[Op] = []
    events: list[AnyEvent] = []  # type: ignore[valid-type]
    input_id: str | None = None
    node: str | None = None  # the edge the input came from
    refused: str | None = None  # the router's refusal of the record's first submit
    duplicate: bool = False  # the input was applied before (retried across a fail-over): nothing done again


_encoder = msgspec.json.Encoder()
_input_decoder = msgspec.json.Decoder(InputRecord)
_output_decoder = msgspec.json.Decoder(OutputRecord)


def encode(record: InputRecord | OutputRecord) -> bytes:
    return _encoder.encode(record)


def decode_input(data: bytes | str) -> InputRecord:
    return _input_decoder.decode(data)


def decode_output(data: bytes | str) -> OutputRecord:
    return _output_decoder.decode(data)
