"""The event vocabulary: tags are unique, every event survives JSON lines, bad input is named."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contactcentre import events as E


def test_tags_are_unique_and_dotted() -> None:
    tags = [t.__struct_config__.tag for t in E.EVENT_TYPES]
    assert len(tags) == len(set(tags))
    assert all("." in tag for tag in tags)


def test_inputs_are_the_facts_the_edge_reports() -> None:
    names = {t.__name__ for t in E.INPUT_TYPES}
    assert {"ContactArrived", "OfferAccepted", "CustomerLeft", "AgentLoggedIn"} <= names
    assert not names & {"OfferMade", "ContactQueued", "AgentStateChanged", "SlaBreached"}


@pytest.mark.parametrize("cls", E.EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_round_trips(cls: type[E.Event]) -> None:
    ev = _sample(cls)
    line = E.encode(ev)
    assert line.startswith(b'{"type":"' + cls.__struct_config__.tag.encode() + b'","at_ms":')
    assert E.decode(line) == ev
    assert E.decode_lines(E.encode_lines([ev, ev])) == [ev, ev]


def _sample(cls: type[E.Event]) -> E.Event:
    """An instance with every required field filled from its type."""
    values = {"at_ms": 1_700_000_000_123}
    for f in msgspec.structs.fields(cls):
        if f.required and f.name not in values:
            values[f.name] = _value(f.type, f.name)
    return cls(**values)


def _value(tp: object, name: str) -> object:
    if tp is int:
        return 42
    if tp is bool:
        return True
    if tp is str:
        return f"{name}-x"
    if tp == list[str]:
        return ["relax general>=1"]
    if tp is E.Explanation:
        return E.Explanation(
            trigger="contact",
            strategy="longest_idle",
            requirement="general>=1",
            candidates=[E.Candidate(id="a1", score=[1, 2])],
        )
    args = getattr(tp, "__args__", ())
    if args:  # a Literal: take the first value
        return args[0]
    raise AssertionError(f"no sample for {tp}")


@given(st.integers(min_value=0, max_value=2**53), st.text(max_size=20), st.sampled_from(E.CHANNELS))
def test_arrivals_round_trip_for_any_text(at_ms: int, text: str, channel: str) -> None:
    ev = E.ContactArrived(at_ms=at_ms, contact_id=text or "x", queue=text, channel=channel, attributes={"note": text})
    assert E.decode(E.encode(ev)) == ev


def test_malformed_lines_are_named() -> None:
    good = E.encode(E.AgentReady(at_ms=1, agent_id="a"))
    with pytest.raises(msgspec.DecodeError, match="line 2"):
        E.decode_lines(good + b"\n" + b'{"type":"agent.ready","at_ms":"soon","agent_id":"a"}\n')
    with pytest.raises(msgspec.ValidationError, match="nope"):
        E.decode(b'{"type":"nope","at_ms":1}')
