"""The JSON-over-WebSocket layer both protocols share (contactcentre/edge/frames): decoding with clear errors,
the outbox, the rate limiter and the close table, without sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import msgspec
import pytest

from contactcentre.edge.frames import Close, Closes, FrameDecoder, FrameError, FrameLimiter, Lazy, Outbox, Verdict
from contactcentre.edge.frames.codec import FIELD, FRAME, JSON, TYPE


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class Say(msgspec.Struct, tag="say", tag_field="type"):
    text: str = msgspec.field(default="")
    n: int | None = None


decoder: FrameDecoder[Ping | Say] = FrameDecoder(Ping | Say)


@pytest.mark.parametrize(
    ("raw", "kind", "detail"),
    [
        ("{not json", JSON, "not JSON: JSON is malformed: object keys must be strings (byte 1)"),
        ("[" * 5000 + "]" * 5000, JSON, "not JSON: JSON nested too deeply"),
        ("[1, 2", JSON, "not JSON: Input data was truncated"),
        (b'{"type": "ping"}', FRAME, "send JSON objects in text frames, not binary ones"),
        ("[1, 2]", FRAME, 'a frame is a JSON object with a string "type"'),
        ('{"kind": "ping"}', FRAME, 'a frame is a JSON object with a string "type"'),
        ('{"type": 7}', FRAME, 'a frame is a JSON object with a string "type"'),
        ('{"type": "dance"}', TYPE, "type: 'dance' is not a frame of this protocol"),
        ('{"type": "say", "text": ["a"]}', FIELD, "text: must be a string"),
        ('{"type": "say", "n": "7"}', FIELD, "n: must be a whole number"),
        ('{"type": "say", "n": true}', FIELD, "n: must be a whole number"),
    ],
)
def test_a_bad_frame_is_one_error_naming_what_is_wrong(raw: str | bytes, kind: str, detail: str) -> None:
    err = decoder.decode(raw)
    assert isinstance(err, FrameError)
    assert (err.kind, err.detail) == (kind, detail)


def test_a_good_frame_is_its_struct_and_unknown_fields_are_ignored() -> None:
    assert decoder.decode('{"type": "say", "text": "hi", "later": {"x": 1}}') == Say("hi")
    assert decoder.decode('{"type": "ping"}') == Ping()


def test_a_failed_frame_keeps_what_it_said_of_itself_for_the_error() -> None:
    err = decoder.decode('{"type": "say", "n": [], "ref": 3, "client_id": "c-1"}')
    assert isinstance(err, FrameError)
    assert (err.kind, err.type, err.ref, err.client_id) == (FIELD, "say", 3, "c-1")
    err = decoder.decode('{"type": "say", "n": [], "client_id": 5}')
    assert isinstance(err, FrameError) and err.client_id is None  # not a string: not repeated


class Short(msgspec.Struct, tag="s", tag_field="type"):
    name: Annotated[str, msgspec.Meta(max_length=3)] = ""
    at: Annotated[int, msgspec.Meta(ge=0)] = 0


def test_lengths_and_bounds_are_said_in_the_clients_words() -> None:
    d: FrameDecoder[Short] = FrameDecoder(Short)
    err = d.decode('{"type": "s", "name": "abcd"}')
    assert isinstance(err, FrameError) and err.detail == "name: at most 3 characters"
    err = d.decode('{"type": "s", "at": -1}')
    assert isinstance(err, FrameError) and err.detail == "at: must be a whole number >= 0"


# ------------------------------------------------------------------------------------------- limiter


def test_the_limiter_refuses_over_the_bucket_and_closes_after_strikes_in_a_window() -> None:
    lim = FrameLimiter(0.5, 2, 0.0, max_strikes=3, strike_window_s=60.0)
    assert [lim.admit(0.0) for _ in range(4)] == [Verdict.ADMIT, Verdict.ADMIT, Verdict.REFUSE, Verdict.REFUSE]
    assert lim.admit(2.0) is Verdict.ADMIT  # a token earned back
    assert lim.admit(2.0) is Verdict.CLOSE  # the third refusal within the minute
    lim = FrameLimiter(0.5, 1, 0.0, max_strikes=2, strike_window_s=60.0)
    lim.admit(0.0)
    assert lim.admit(0.0) is Verdict.REFUSE
    assert lim.admit(61.0) is Verdict.ADMIT
    assert lim.admit(61.0) is Verdict.REFUSE  # the first strike is older than the window: forgotten


def test_without_a_window_strikes_count_in_a_row() -> None:
    lim = FrameLimiter(1.0, 1, 0.0, max_strikes=3, strike_window_s=None)
    assert [lim.admit(0.0) for _ in range(3)] == [Verdict.ADMIT, Verdict.REFUSE, Verdict.REFUSE]
    assert lim.admit(1.0) is Verdict.ADMIT  # forgives the two
    assert [lim.admit(1.0) for _ in range(3)] == [Verdict.REFUSE, Verdict.REFUSE, Verdict.CLOSE]


def test_every_close_has_its_documented_code() -> None:
    codes = {c.name: c.code for c in Closes}
    assert codes["CHAT_ENDED"] == codes["LOGGED_OUT"] == 1000
    assert codes["CHAT_RATE_ABUSED"] == codes["AGENT_RATE_ABUSED"] == codes["REVOKED"] == 1008
    assert (codes["CHAT_TOO_SLOW"], codes["AGENT_TOO_SLOW"], codes["AGENT_REPLACED"]) == (1013, 4001, 4000)
    assert Closes.CHAT_RESUMED_ELSEWHERE.value == Close(4000, "resumed on another connection")


# -------------------------------------------------------------------------------------------- outbox


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, data: bytes, text: bool = False) -> None:
        assert text, "frames go out as text"
        await self.gate.wait()
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


class Seen(Lazy):
    def __init__(self, keep: bool) -> None:
        self.keep = keep

    def frame(self) -> Any:
        return {"type": "lazy"} if self.keep else None


def test_the_outbox_sends_in_order_awaits_tasks_in_place_and_closes_after_what_came_before() -> None:
    async def main() -> None:
        ws = FakeSocket()
        box = Outbox(ws, limit=10, too_slow=Closes.CHAT_TOO_SLOW, name="t")
        pump = asyncio.get_running_loop().create_task(box.run())
        slow: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def later() -> Any:
            return await slow

        box.send({"type": "a"})
        box.send(asyncio.get_running_loop().create_task(later()))
        box.send(Ping())
        box.send(Seen(True))
        box.send(Seen(False))
        box.close(1000, "bye")
        box.send({"type": "after the close"})
        slow.set_result({"type": "slow"})
        await pump
        assert [f["type"] for f in ws.sent] == ["a", "slow", "ping", "lazy"]
        assert ws.closed == (1000, "bye")

    asyncio.run(main())


def test_a_held_outbox_sends_its_front_first_and_skips_what_the_front_carries() -> None:
    async def main() -> None:
        ws = FakeSocket()
        box = Outbox(ws, limit=10, too_slow=Closes.CHAT_TOO_SLOW, name="t")
        box.hold()
        pump = asyncio.get_running_loop().create_task(box.run())
        box.send({"type": "pushed", "id": 1})
        box.send({"type": "pushed", "id": 2})
        await asyncio.sleep(0)
        assert ws.sent == []  # held
        box.release([{"type": "reply"}, {"type": "pushed", "id": 1}], skip=lambda f: f.get("id") == 1)
        box.finish()
        await pump
        assert ws.sent == [{"type": "reply"}, {"type": "pushed", "id": 1}, {"type": "pushed", "id": 2}]

    asyncio.run(main())


def test_a_client_that_does_not_read_is_closed_at_once_with_too_slow() -> None:
    async def main() -> None:
        ws = FakeSocket()
        ws.gate.clear()  # the client reads nothing: the first send never returns
        box = Outbox(ws, limit=3, too_slow=Closes.AGENT_TOO_SLOW, name="t")
        pump = asyncio.get_running_loop().create_task(box.run())
        for i in range(5):
            box.send({"type": "f", "i": i})
            await asyncio.sleep(0)
        assert box.closing and len(box) == 0
        assert box._closer is not None
        await box._closer  # closed without waiting for the stuck send
        assert ws.closed == Closes.AGENT_TOO_SLOW.value
        pump.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pump

    asyncio.run(main())
