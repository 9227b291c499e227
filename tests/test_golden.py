"""Determinism: a seeded input sequence gives a byte-identical event log, today and after every change.

If a change alters routing on purpose, regenerate with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and
review the diff of ``tests/golden/`` like code: it shows exactly which decisions changed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from contactcentre import events as E
from contactcentre.acd import UNEXPLAINED
from contactcentre.config import load_config
from tests.world import replay, run_world

GOLDEN = Path(__file__).parent / "golden" / "default_seed7.jsonl"


def test_seeded_world_matches_the_golden_log_byte_for_byte() -> None:
    cfg = load_config()
    log, _ = run_world(cfg, seed=7)
    data = E.encode_lines(log)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(data)
    assert data == GOLDEN.read_bytes(), "routing changed: review and regenerate with UPDATE_GOLDEN=1"


def _unexplained(ev: E.Event) -> E.Event:
    return msgspec.structs.replace(ev, why=UNEXPLAINED) if type(ev) is E.OfferMade else ev


# What a lean consumer reads: the world's reactions need the first three; the rest make the check wider.
LEAN_READS = {E.OfferMade, E.ContactConnected, E.WrapUpStarted, E.AgentStateChanged, E.ContactAbandoned}


def test_the_golden_world_without_explanations_or_unread_events_decides_the_same() -> None:
    """Asking for less output changes nothing but the output: with no explanations the log is the golden
    one with every ``why`` blank, and a router that builds only some event types says exactly the golden
    log's events of those types, in the same order (the inputs it echoes included)."""
    cfg = load_config()
    golden = E.decode_lines(GOLDEN.read_bytes())
    unexplained, _ = run_world(cfg, seed=7, router_options={"explain": False})
    assert E.encode_lines(unexplained) == E.encode_lines([_unexplained(e) for e in golden])
    lean, _ = run_world(cfg, seed=7, router_options={"explain": False, "events": LEAN_READS})
    expected = [_unexplained(e) for e in golden if type(e) in LEAN_READS or E.is_input(e)]
    assert E.encode_lines(lean) == E.encode_lines(expected)
    assert len(lean) < len(golden) * 0.8  # the unread kinds (queued, closed, SLA, ...) really were skipped


def test_golden_log_exercises_the_interesting_paths() -> None:
    kinds = Counter(type(e).__name__ for e in E.decode_lines(GOLDEN.read_bytes()))
    for name in (
        "OfferMade",
        "OfferExpired",
        "OfferRejected",
        "ContactConnected",
        "ContactAbandoned",
        "ContactOverflowed",
        "ContactTransferred",
        "SlaBreached",
        "ContactClosed",
        "ContactHeld",
    ):
        assert kinds[name] > 0, f"the golden world never produced {name}"


def test_replaying_the_inputs_reproduces_the_log() -> None:
    cfg = load_config()
    log, end = run_world(cfg, seed=11)
    assert E.encode_lines(replay(cfg, log, end)) == E.encode_lines(log)


def test_same_seed_same_log_other_seed_other_log() -> None:
    cfg = load_config()
    a, _ = run_world(cfg, seed=3, contacts=40)
    b, _ = run_world(cfg, seed=3, contacts=40)
    c, _ = run_world(cfg, seed=4, contacts=40)
    assert E.encode_lines(a) == E.encode_lines(b)
    assert E.encode_lines(a) != E.encode_lines(c)


def test_a_router_asked_for_something_that_is_no_event_type_says_so() -> None:
    from contactcentre.acd import Router

    with pytest.raises(TypeError, match="not event types"):
        Router(load_config(), events={E.OfferMade, "contact.closed"})  # type: ignore[arg-type]
