"""Frames in and out of a JSON-over-WebSocket protocol: one msgspec decoder per protocol, made once, that
turns a text frame into the tagged ``Struct`` of its ``type`` with every field checked (types, lengths,
ranges, and what a frame's ``__post_init__`` adds) in one call; and one encoder for everything sent.

A frame that does not decode is a ``FrameError`` (what went wrong, in the client's words: which field and
why), never an exception: the protocol answers it with one error frame and carries on. Nothing here knows
either protocol; each gives its union of frame types and maps ``FrameError.kind`` to its own error codes.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

# What a client's frame got wrong, from the coarsest to the finest.
JSON = "json"  # not JSON at all (or nested deeper than any decoder goes)
FRAME = "frame"  # JSON, but not an object with a string ``type`` (or a binary frame)
TYPE = "type"  # a ``type`` the protocol does not have
FIELD = "field"  # a field of a known frame is missing, of the wrong type, too long or out of range


class FrameError(msgspec.Struct, frozen=True):
    """A frame that did not decode. ``type``, ``ref`` and ``client_id`` are what the frame said of itself, when
    it was an object that said it (read leniently, so that the error frame can repeat them)."""

    kind: str
    detail: str
    type: str | None = None
    ref: Any = None
    client_id: str | None = None


class _Envelope(msgspec.Struct):
    """What any frame object says about itself, whatever else it holds: read only to answer one that failed."""

    type: Any = None
    ref: Any = None
    client_id: Any = None


_envelope = msgspec.json.Decoder(_Envelope).decode
_any = msgspec.json.Decoder().decode
_encoder = msgspec.json.Encoder()
encode = _encoder.encode  # every frame sent, Struct or dict, to UTF-8 JSON bytes (sent as a text frame)

_AT = re.compile(r" - at `\$\.([A-Za-z_][A-Za-z0-9_]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")
_LENGTH = re.compile(r"^Expected `str` of length <= (\d+)")
_TYPE_NAMES = {"str": "a string", "int": "a whole number", "bool": "true or false", "float": "a number"}


def _wanted(expected: str) -> str:
    """``str | null`` -> 'a string'; anything unusual is said as msgspec says it."""
    names = [n.strip() for n in expected.split("|") if n.strip() != "null"]
    said = [_TYPE_NAMES.get(n) for n in names]
    if all(said):
        return " or ".join(s for s in said if s)
    return f"`{expected}`"


def explain(exc: msgspec.ValidationError) -> tuple[str, str]:
    """A validation error as ``(kind, detail)``, the detail starting with the field it is about."""
    message = str(exc)
    at = _AT.search(message)
    if at is None:
        missing = _MISSING.match(message)
        if missing is None:
            # no path: the frame itself (not an object), or a frame's own check, which names its field
            if message.startswith("Expected `object`"):
                return FRAME, 'a frame is a JSON object with a string "type"'
            return FIELD, message
        field = missing.group(1)
        if field == "type":
            return FRAME, 'a frame is a JSON object with a string "type"'
        return FIELD, f"{field}: required"
    field, what = at.group(1), message[: at.start()]
    if field == "type":
        if what.startswith("Invalid value"):
            return TYPE, "type: " + what[len("Invalid value ") :] + " is not a frame of this protocol"
        return FRAME, 'a frame is a JSON object with a string "type"'
    length = _LENGTH.match(what)
    if length is not None:
        return FIELD, f"{field}: at most {length.group(1)} characters"
    if what.startswith("Expected `"):
        expected = what[len("Expected `") : what.index("`", len("Expected `"))]
        rest = what[len("Expected `") + len(expected) + 1 :]
        if rest.startswith(", got"):  # the wrong JSON type
            return FIELD, f"{field}: must be {_wanted(expected)}"
        return FIELD, f"{field}: must be {_wanted(expected)}{rest}"  # a bound, e.g. ' >= 0'
    return FIELD, f"{field}: {what[:1].lower()}{what[1:]}"


class FrameDecoder(Generic[T]):
    """Decodes one protocol's frames: ``decode(raw)`` is the frame's Struct or a ``FrameError``."""

    def __init__(self, frames: Any) -> None:
        self._decode = msgspec.json.Decoder(frames).decode

    def decode(self, raw: str | bytes) -> T | FrameError:
        if not isinstance(raw, str):
            return FrameError(FRAME, "send JSON objects in text frames, not binary ones")
        try:
            return self._decode(raw)  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            kind, detail = explain(exc)
            if kind == FRAME:  # the typed decoder stops at the first wrong token: is the rest JSON at all?
                try:
                    _any(raw)
                except msgspec.DecodeError as bad:
                    return FrameError(JSON, f"not JSON: {bad}")
                except RecursionError:
                    return FrameError(JSON, "not JSON: JSON nested too deeply")
        except msgspec.DecodeError as exc:
            return FrameError(JSON, f"not JSON: {exc}")
        except RecursionError:  # ``[[[[…`` deeper than the decoder's stack: the client's bad input, not a bug
            return FrameError(JSON, "not JSON: JSON nested too deeply")
        try:
            env = _envelope(raw)
        except (msgspec.DecodeError, RecursionError):  # not an object: it says nothing about itself
            return FrameError(kind, detail)
        client_id = env.client_id if isinstance(env.client_id, str) else None
        return FrameError(kind, detail, env.type if isinstance(env.type, str) else None, env.ref, client_id)


__all__ = ["FIELD", "FRAME", "JSON", "TYPE", "FrameDecoder", "FrameError", "encode", "explain"]
