"""The supervisor dashboard's live side (contactcentre/edge/web/live.py): the snapshot from a scripted router run,
number by number; the ``/live`` WebSocket (who may watch, a snapshot at connect, an update after an event);
today's series rebuilt from the store's log after a restart. The browser drives it in
tests/test_browser_dashboard.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from contactcentre import events as E
from contactcentre.acd.stats import LiveStats
from contactcentre.edge import frames
from contactcentre.edge.web import live
from contactcentre.edge.web.live import BUCKET_MS, LiveBoard, LiveHub, build_snapshot, day_start_ms, queue_sla
from contactcentre.planning.erlang import staff
from contactcentre.server.driver import RouterDriver
from contactcentre.server.runtime import close_centre, open_centre
from contactcentre.store import users
from contactcentre.store.sessions import create_session
from tests.harness import Harness
from tests.test_agent_gateway import CONFIG, TIMEOUT
from tests.test_api import Server, server  # noqa: F401  (the REST API on a real port, with users)

MIDNIGHT = 1_772_409_600_000  # Monday 2 March 2026, 00:00 UTC
SITE = "http://127.0.0.1:8080"


def scripted() -> tuple[Harness, LiveBoard, dict[str, Any]]:
    """One agent; a Gold call answered after 5 s, a plain call that warns, breaches and is abandoned, a
    Gold call waiting at the end. Ten minutes after midnight."""
    h = Harness(
        start_ms=MIDNIGHT + 10 * 60_000,
        queues=[{"name": "support", "skills": {"general": 1}, "channels": ["voice"]}],
        agents=[{"id": "a1", "skills": {"general": 5}}],
        tiers={"gold": {"priority": 3, "answer_s": 20}},
    )
    h.login("a1")
    h.arrive("c1", tier="gold")  # offered at once; estimated wait 0
    h.at(5)
    h.accept("c1")  # answered after 5 s: EWT error 5 s
    h.at(10)
    h.arrive("c2")  # a1 busy: waits (estimate 240 s)
    h.at(40)  # warned at 26 s, breached at 30 s
    h.send(E.CustomerLeft, contact_id="c2")  # abandoned after 30 s
    h.at(65)
    h.end("c1")  # 60 s talk, then 10 s wrap-up
    h.at(100)
    h.arrive("c3", tier="gold")  # being offered: still waiting
    now = h.at(110)
    stats, board = LiveStats(), LiveBoard("UTC", h.start)
    stats.apply_all(h.log)
    board.apply_all(h.log)
    driver = RouterDriver(h.router, None, None, stats=stats)  # type: ignore[arg-type]  # only read here
    return h, board, build_snapshot(driver.live(now), board, queue_sla(h.router))


def test_the_snapshot_of_a_scripted_run_number_by_number() -> None:
    h, _board, snap = scripted()
    assert snap["at_ms"] == MIDNIGHT + 710_000
    [q] = snap["queues"]
    m = q["m"]
    assert (m["offered"], m["answered"], m["abandoned"], m["waiting"]) == (3, 1, 1, 1)
    assert m["longest_wait_s"] == 10.0
    assert m["sl_answered"] == 1.0
    assert m["sl_offered"] == 0.5
    assert m["asa_s"] == 5.0
    assert m["aht_s"] == 70.0  # 60 s talk + 10 s wrap-up
    assert m["abandon_rate"] == 0.5
    threshold_s, target = queue_sla(h.router)["support"]
    # 3 arrivals in the last 15 minutes: 12 an hour; one agent staffed (ringing for c3).
    assert q["hint"] == {
        "needed": staff(12.0, 70.0, threshold_s, target).agents,
        "staffed": 1,
        "per_hour": 12.0,
        "threshold_s": threshold_s,
        "target": target,
    }
    rows = {(r["queue"], r["channel"], r["tier"]): r for r in snap["rows"]}
    assert set(rows) == {("support", "voice", "-"), ("support", "voice", "gold")}
    plain, gold = rows["support", "voice", "-"], rows["support", "voice", "gold"]
    # The EWT error is per queue and channel (as on /metrics): the abandoned call's estimate is not compared.
    assert (plain["offered"], plain["abandoned"], plain["waiting"], plain["ewt_error_s"]) == (1, 1, 0, 5.0)
    assert (gold["offered"], gold["answered"], gold["waiting"], gold["ewt_error_s"]) == (2, 1, 1, 5.0)
    assert gold["sl_offered"] == 1.0 and plain["sl_offered"] == 0.0
    assert [(a["kind"], a["contact_id"], a["id"]) for a in snap["alerts"]] == [
        ("sla_breached", "c2", 2),
        ("sla_warned", "c2", 1),
    ]
    assert snap["gold_waiting"] == [
        {"kind": "gold_waiting", "queue": "support", "channel": "voice", "waiting": 1, "longest_wait_s": 10.0}
    ]
    [a1] = snap["agents"]
    assert (a1["id"], a1["state"], a1["in_state_s"]) == ("a1", "reserved", 10.0)
    # Three five-minute points since midnight; everything happened in the third.
    assert snap["series"] == [
        {"at_ms": MIDNIGHT, "sl": None, "depth": 0},
        {"at_ms": MIDNIGHT + BUCKET_MS, "sl": None, "depth": 0},
        {"at_ms": MIDNIGHT + 2 * BUCKET_MS, "sl": 0.5, "depth": 1},
    ]
    json.dumps(snap)  # all plain data


def test_alerts_are_acknowledged_once() -> None:
    _h, board, _snap = scripted()
    assert board.acknowledge(2, "sue")
    assert not board.acknowledge(2, "sue")  # already done
    assert not board.acknowledge(99, "sue")  # no such alert
    assert [a["acked_by"] for a in board.alerts] == [None, "sue"]


def test_a_new_day_starts_empty_with_the_waiting_carried_over() -> None:
    board = LiveBoard("Europe/Amsterdam", MIDNIGHT)
    start = day_start_ms(MIDNIGHT, "Europe/Amsterdam")
    assert start == MIDNIGHT - 3_600_000  # midnight in Amsterdam is 23:00 UTC in winter
    board.apply(E.ContactQueued(at_ms=start + 86_399_000, contact_id="x", queue="q", channel="chat", priority=0))
    tomorrow = start + 86_400_000
    board.apply(E.ContactQueued(at_ms=tomorrow + 60_000, contact_id="y", queue="q", channel="chat", priority=0))
    assert board.day_ms == tomorrow
    assert board.series(tomorrow + 2 * BUCKET_MS) == [
        {"at_ms": tomorrow, "sl": None, "depth": 2},
        {"at_ms": tomorrow + BUCKET_MS, "sl": None, "depth": 2},
        {"at_ms": tomorrow + 2 * BUCKET_MS, "sl": None, "depth": 2},
    ]


# ----------------------------------------------------------------------------------- the WebSocket and store


async def _people(centre: Any) -> dict[str, str]:
    now = centre.now_ms()

    def add(conn: Any) -> None:
        users.add_user(conn, "ann", "agent", now, agent_id="a1", password="pw-ann-123456")
        users.add_user(conn, "sue", "supervisor", now, password="pw-sue-123456")

    await centre.write(add)
    return {
        name: await centre.write(lambda c, n=name: create_session(c, n, now, max_ms=3_600_000))
        for name in ("ann", "sue")
    }


async def _frame(ws: Any, want: Any = lambda f: True) -> dict[str, Any]:
    """The next frame for which ``want`` holds, within TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = json.loads(await ws.recv())
            if want(frame):
                return frame


def _waiting(frame: dict[str, Any], queue: str) -> int:
    return next(q["m"].get("waiting", 0) for q in frame["queues"] if q["name"] == queue)


def test_the_websocket_refuses_strangers_and_pushes_supervisors_live_figures(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    from contactcentre.edge.web.auth import WebAuth

    async def main() -> None:
        centre = await open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}")
        try:
            sessions = await _people(centre)
            web_auth = WebAuth(centre)
            web_auth.add_origin(SITE + "/")
            hub = LiveHub(centre, web_auth)
            await hub.start()
            async with serve(hub.handle, "127.0.0.1", 0) as server:
                url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/live"

                async def refused(origin: str, cookie: str | None) -> str:
                    headers = {"Origin": origin} | ({"Cookie": cookie} if cookie else {})
                    async with connect(url, proxy=None, additional_headers=headers, origin=None) as ws:
                        frame = await _frame(ws)
                        assert frame["type"] == "error"
                        return frame["code"]

                assert await refused(SITE, None) == "unauthorized"
                assert await refused(SITE, f"cc_session={sessions['ann']}") == "forbidden"
                assert await refused("http://evil.example", f"cc_session={sessions['sue']}") == "bad_origin"
                assert not hub.clients

                headers = {"Origin": SITE, "Cookie": f"theme=dark; cc_session={sessions['sue']}"}
                async with connect(url, proxy=None, additional_headers=headers, origin=None) as ws:
                    first = await _frame(ws)
                    assert first["type"] == "snapshot" and _waiting(first, "support") == 0
                    centre.submit(
                        E.ContactArrived(at_ms=centre.now_ms(), contact_id="w1", queue="support", channel="chat")
                    )
                    update = await _frame(ws, lambda f: _waiting(f, "support") == 1)
                    assert update["at_ms"] - first["at_ms"] < 1000 + TIMEOUT * 1000
                    await ws.send("not json")
                    assert (await _frame(ws, lambda f: f["type"] == "error"))["code"] == "bad_frame"
                    await ws.send("[" * 5000 + "]" * 5000)  # nested too deeply: bad input, not a bug
                    assert (await _frame(ws, lambda f: f["type"] == "error"))["code"] == "bad_frame"
                    await ws.send(json.dumps({"type": "ack", "id": 7}))
                    assert (await _frame(ws, lambda f: f["type"] == "error"))["code"] == "unknown_alert"
                hub.stop()
        finally:
            await close_centre(centre)

    reactor_loop.run_until_complete(main())


def test_todays_series_is_rebuilt_from_the_store_after_a_restart(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    from contactcentre.edge.web.auth import WebAuth

    db = f"sqlite:///{tmp_path / 's.sqlite'}"

    async def run_once(arrive: bool) -> tuple[list[dict[str, Any]], LiveBoard]:
        centre = await open_centre(CONFIG, db)
        try:
            hub = LiveHub(centre, WebAuth(centre))
            await hub.start()
            if arrive:
                for i in range(3):
                    centre.submit(
                        E.ContactArrived(at_ms=centre.now_ms(), contact_id=f"r{i}", queue="sales", channel="email")
                    )
                await centre.commit()
            now = centre.now_ms()
            hub.stop()
            return hub.board.series(now), hub.board
        finally:
            await close_centre(centre)

    before, board = reactor_loop.run_until_complete(run_once(True))
    assert max(p["depth"] for p in before) == 3
    after, rebuilt = reactor_loop.run_until_complete(run_once(False))
    assert after[: len(before)] == before
    assert rebuilt.arrivals == board.arrivals


class _Dashboard:
    """A dashboard's socket as ``LiveHub.handle`` sees it, driven by the test: what the page sends is put in
    ``inbox``, what it is sent lands in ``frames``; while ``reading`` is clear its sends block (a page that does
    not read)."""

    def __init__(self, session: str) -> None:
        self.request = SimpleNamespace(headers={"Origin": SITE, "Cookie": f"cc_session={session}"})
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reading = asyncio.Event()
        self.reading.set()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def send(self, data: str | bytes, text: bool = False) -> None:
        await self.reading.wait()
        self.frames.put_nowait(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))
        self.inbox.put_nowait(None)

    def __aiter__(self) -> _Dashboard:
        return self

    async def __anext__(self) -> str | bytes:
        message = await self.inbox.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def frame(self, want: Any = lambda f: True) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await self.frames.get()
                if want(frame):
                    return frame

    def sent(self) -> list[dict[str, Any]]:
        out = []
        while not self.frames.empty():
            out.append(self.frames.get_nowait())
        return out


async def _until(done: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not done():
            await asyncio.sleep(0)


def _with_hub(tmp_path: Path, reactor_loop: asyncio.AbstractEventLoop, test: Any) -> None:
    from contactcentre.edge.web.auth import WebAuth

    async def main() -> None:
        centre = await open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}")
        try:
            sessions = await _people(centre)
            web_auth = WebAuth(centre)
            web_auth.add_origin(SITE + "/")
            hub = LiveHub(centre, web_auth)
            await hub.start()
            try:
                await test(hub, sessions["sue"])
            finally:
                hub.stop()
        finally:
            await close_centre(centre)

    reactor_loop.run_until_complete(main())


def test_a_wrong_frame_is_one_error_and_a_flood_is_rate_limited_then_closed(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    async def test(hub: LiveHub, session: str) -> None:
        now = [100.0]
        hub.clock = lambda: now[0]  # frozen: only the burst is there to spend
        ws = _Dashboard(session)
        handler = asyncio.create_task(hub.handle(ws))
        assert (await ws.frame())["type"] == "snapshot"
        wrong = [
            ('{"type": "ack", "id": "7"}', "id: must be a whole number"),
            ('{"type": "ack"}', "id: required"),
            ('{"type": "nack", "id": 7}', "'nack' is not a frame"),
            ("[1]", "JSON object"),
            ("not json", "not JSON"),
            (b'{"type": "ack", "id": 7}', "text frames"),
        ]
        for raw, said in wrong:
            ws.inbox.put_nowait(raw)
            error = await ws.frame()
            assert set(error) == {"type", "code", "message"}, error
            assert error["code"] == "bad_frame" and said in error["message"], error
        for _ in range(live.BURST - len(wrong)):
            ws.inbox.put_nowait(json.dumps({"type": "ack", "id": 7}))
            assert (await ws.frame())["code"] == "unknown_alert"
        ws.inbox.put_nowait(json.dumps({"type": "ack", "id": 7}))  # the burst is spent
        assert (await ws.frame())["code"] == "rate_limited"
        now[0] += 1.0  # a second later: RATE_PER_S frames more
        for _ in range(int(live.RATE_PER_S)):
            ws.inbox.put_nowait(json.dumps({"type": "ack", "id": 7}))
            assert (await ws.frame())["code"] == "unknown_alert"
        for _ in range(live.MAX_REFUSED_IN_A_ROW):  # refused in a row: the next one closes
            ws.inbox.put_nowait(json.dumps({"type": "ack", "id": 7}))
            assert (await ws.frame())["code"] == "rate_limited"
        assert not ws.closed.done()
        ws.inbox.put_nowait(json.dumps({"type": "ack", "id": 7}))
        assert await asyncio.wait_for(ws.closed, TIMEOUT) == (1008, "rate_limited")
        assert [f["code"] for f in ws.sent()] == ["rate_limited"]  # said before the close
        await asyncio.wait_for(handler, TIMEOUT)
        assert not hub.clients

    _with_hub(tmp_path, reactor_loop, test)


def test_a_dashboard_that_does_not_read_is_dropped_and_a_snapshot_is_encoded_once_for_all(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = []

    def counting(frame: Any) -> bytes:
        encoded.append(frame.get("type"))
        return frames.encode(frame)

    async def test(hub: LiveHub, session: str) -> None:
        hub.max_backlog = 3
        reader, stuck = _Dashboard(session), _Dashboard(session)
        stuck.reading.clear()
        handlers = [asyncio.create_task(hub.handle(ws)) for ws in (reader, stuck)]
        assert (await reader.frame())["type"] == "snapshot"
        await _until(lambda: stuck in hub.clients)
        monkeypatch.setattr(hub, "snapshot", lambda: {"type": "snapshot", "n": len(encoded)})
        monkeypatch.setattr(live, "encode", counting, raising=True)
        for _ in range(hub.max_backlog + 1):  # the stuck page's first snapshot is still being sent
            hub._push_now()  # a timer's each: the page that reads has read it before the next
            await _until(lambda: not hub.clients[reader].items)
        assert encoded == ["snapshot"] * (hub.max_backlog + 1)  # once per push, not once per dashboard
        assert await asyncio.wait_for(stuck.closed, TIMEOUT) == (4001, "too slow: frames not read")
        await asyncio.wait_for(handlers[1], TIMEOUT)
        assert list(hub.clients) == [reader]
        assert [f["n"] for f in [await reader.frame() for _ in range(hub.max_backlog + 1)]] == [0, 1, 2, 3]
        hub.stop()
        assert await asyncio.wait_for(reader.closed, TIMEOUT) == (1001, "server shutting down")
        await asyncio.wait_for(handlers[0], TIMEOUT)
        assert not hub.clients

    _with_hub(tmp_path, reactor_loop, test)


class _Request:
    """What ``live_ws_url`` asks of a twisted.web request: the Host it came with (port removed) and TLS."""

    def __init__(self, host: bytes) -> None:
        self.host = host

    def getRequestHostname(self) -> bytes:
        return self.host

    def isSecure(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("host", "shown"),
    [(b"cc.example.com", "cc.example.com"), (b"<script>alert(1)</script>", "127.0.0.1"), (b"x y", "127.0.0.1")],
)
def test_the_dashboard_websocket_url_never_carries_a_hostile_host(host: bytes, shown: str) -> None:
    from contactcentre.edge.web.live import live_ws_url

    url, csp = live_ws_url(_Request(host), 9001, b"connect-src 'self'; x")  # type: ignore[arg-type]
    assert url == f"ws://{shown}:9001/live"
    assert csp == f"connect-src 'self' ws://{shown}:9001; x".encode()


# ----------------------------------------------------------------------------------- changing skills (REST)


def _post_skills(api: Server, who: str, payload: Any) -> Any:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    return api.call("POST", "/api/agents/a2/skills", who, body=body, headers=headers)


def test_a_supervisor_changes_an_agents_skills_through_the_api(server: Server) -> None:  # noqa: F811
    assert _post_skills(server, "bob", {"skills": {"general": 9}}).status == 403  # not even their own
    for bad in ({}, {"skills": {"general": 11}}, {"capacity": {"fax": 1}}, {"skills": {"general": 5}, "x": 1}):
        r = _post_skills(server, "sue", bad)
        assert r.status == 400 and r.json["error"] == "bad_request", bad
    r = _post_skills(server, "sue", {"skills": {"general": 9, "sales": 2}, "capacity": {"chat": 2}})
    assert r.status == 200, r.body
    agent = server.centre.router.agent("a2")
    assert agent.skills == {"general": 9, "sales": 2} and agent.capacity["chat"] == 2
    assert server.call("GET", "/api/agents/a2/skills", "sue").status == 405
