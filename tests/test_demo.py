"""End to end: `contactcentre demo` in a subprocess, on an ephemeral port, driven over real HTTP.

Waits are polls with a deadline on real sockets; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from contactcentre import events as E
from contactcentre.acd import Router, StaleOffer, UnknownAgent
from contactcentre.cli import main
from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from contactcentre.server.clock import LoopClock, ManualClock
from contactcentre.server.driver import RouterDriver
from contactcentre.store.db import connect, open_store
from contactcentre.store.schema import interactions, messages
from contactcentre.store.screenpop import screen_pop
from contactcentre.store.writer import StoreWriter, read_events

REPO = Path(__file__).resolve().parent.parent
QUEUES = ("support", "billing", "technical", "sales")
START_LINE = re.compile(
    r"contactcentre demo: (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\) — case store and event log in (.+)"
)

# Direct connections only: a proxy from the environment must not see 127.0.0.1 traffic.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    """GET, as the supervisor (bearer ``token``: the dashboard and /api/live need one, or a session)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with _opener.open(req, timeout=5) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


SUPERVISOR_LINE = re.compile(rb"^ +supervisor +supervisor +token (\S+) +password (\S+)\r?$", re.M)


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, str, str]:
    """The first line of the child's stdout, the supervisor's API token and the banner up to the supervisor's
    line, waiting at most ``timeout_s``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while SUPERVISOR_LINE.search(buf) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no start-up line within {timeout_s} s (got {buf!r})")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the demo exited before printing its URL (got {buf!r})")
            buf += chunk
    m = SUPERVISOR_LINE.search(buf)
    assert m is not None
    return buf.split(b"\n", 1)[0].decode(), m.group(1).decode(), buf.decode()


def _wait_for_live(base: str, token: str, timeout_s: float) -> dict[str, Any]:
    """Poll /api/live until contacts were answered and an offer explanation with candidates is present."""
    deadline = time.monotonic() + timeout_s
    live: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, ctype, body = _get(base + "api/live", token)
        assert status == 200 and ctype.startswith("application/json")
        live = json.loads(body)
        decisions = live["decisions"]
        if live["snapshot"]["total"]["answered"] > 0 and any(d["why"]["candidates"] for d in decisions):
            return live
        time.sleep(0.1)  # poll interval, bounded by the deadline above
    raise AssertionError(f"no answered contact with an explained offer within {timeout_s} s: {live}")


def test_demo_serves_a_live_centre_and_logs_every_event(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    cmd = [sys.executable, "-m", "contactcentre.cli", "demo", "--port", "0", "--database", str(db)]
    cmd += ["--rate-scale", "200", "--duration", "120", "--cti-port", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line, token, banner = _read_line(proc, 30)
        m = START_LINE.fullmatch(line)
        assert m, line
        base, port, logged_in = m.group(1), int(m.group(2)), m.group(3)
        assert port != 0
        assert logged_in == str(db)
        # The banner names the CTI link, so `contactcentre loadgen --cti-port` can place calls against the demo.
        cti = re.search(r"^  CTI: +tcp://127\.0\.0\.1:(\d+) ", banner, re.M)
        assert cti, banner
        socket.create_connection(("127.0.0.1", int(cti.group(1))), timeout=5).close()

        with pytest.raises(urllib.error.HTTPError) as anonymous:
            _get(base + "api/live")
        assert anonymous.value.code == 401  # the figures are for supervisors only
        anonymous.value.close()
        live = _wait_for_live(base, token, 20)
        assert [q["name"] for q in live["queues"]] == list(QUEUES)
        assert set(live["snapshot"]["queues"]) >= set(QUEUES)
        for key in ("sl_answered", "sl_offered", "sl_offered_excl_short", "asa_s", "abandon_rate"):
            assert key in live["snapshot"]["total"]
        assert {a["id"] for a in live["agents"]} >= {"ada", "grace", "alan"}
        # The demo leaves the last agents to people, and says so: a person logging in as one takes over no
        # simulated agent's work. Nobody has, so they are logged out; every simulated agent is logged in.
        whose = dict(
            re.findall(r"^ +(\w+) +agent +token \S+ +password \S+ +\((simulated|free for you)\)$", banner, re.M)
        )
        assert whose == {a.id: "simulated" for a in load_config(DEFAULT_CONFIG_PATH).agents[:-2]} | {
            "margaret": "free for you",
            "linus": "free for you",
        }, banner
        assert "log in as margaret or linus to take calls and chats yourself" in banner
        states = {a["id"]: a["state"] for a in live["agents"]}
        assert {i for i, s in states.items() if s == "logged_out"} == {"margaret", "linus"}, states
        explained = next(d for d in live["decisions"] if d["why"]["candidates"])
        assert explained["why"]["strategy"]
        assert explained["agent_id"] == explained["why"]["candidates"][0]["id"] or (
            explained["why"]["trigger"] == "agent"
        )
        assert len(live["decisions"]) <= 20

        status, ctype, page = _get(base, token)
        assert status == 200 and ctype.startswith("text/html")
        html = page.decode()
        assert html.lstrip().lower().startswith("<!doctype html>")
        for q in QUEUES:
            assert f">{q}<" in html
        assert "/static/dashboard.js" in html
        assert re.search(r'data-ws-url="ws://[^"]+:\d+/live"', html)  # the live updates' WebSocket

        status, ctype, script = _get(base + "static/dashboard.js")
        assert status == 200 and "javascript" in ctype and b"new WebSocket(" in script

        for path in ("nope", "api/nope", "static/nope.js", "api/live/extra"):
            with pytest.raises(urllib.error.HTTPError) as err:
                _get(base + path)
            assert err.value.code == 404, path
            err.value.close()

        # Let the simulated people talk: wait (polling the store, with a deadline) until an agent has
        # written to a chat customer through the agent protocol.
        _wait_for_rows(db, "select count(*) from messages where channel = 'chat' and direction = 'outbound'", 90)

        proc.send_signal(signal.SIGINT)
        out, err_out = proc.communicate(timeout=30)
        assert proc.returncode == 0, err_out.decode()
        assert b"Traceback" not in err_out, err_out.decode()
        assert b"stopped" in out
        delivered = re.search(rb"(\d+) e-mails delivered", out)
        assert delivered and int(delivered.group(1)) > 0, out  # acknowledgements and replies really went out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    engine = connect(db)
    logged = read_events(engine)
    # Every contact is an interaction of a customer in the case store, and screen-pop finds it by the
    # identity the contact arrived with.
    arrived = [ev for ev in logged if isinstance(ev, E.ContactArrived)]
    kinds = {"voice": "phone", "email": "email", "chat": "chat"}
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(interactions))}
        assert set(rows) == {ev.contact_id for ev in arrived}
        # Calls and mails arrive with the book customer's number or address; a chat visitor gives their
        # e-mail address in the pre-chat form, so the chat lands on the same customer.
        for ev in [ev for ev in arrived if ev.channel != "chat"][:5]:
            assert rows[ev.contact_id].customer_id == ev.customer_id and ev.address
            pop = screen_pop(conn, kinds[ev.channel], ev.address, ev.at_ms + 1000)
            assert pop.customer is not None and pop.customer.id == ev.customer_id
            assert ev.contact_id in {i.id for i in pop.recent}
        # The README's screen-pop: the demo's regular (+31600000042) made the first contact on every stream.
        regular = screen_pop(conn, "phone", "+31600000042", logged[-1].at_ms + 1)
        assert regular.customer is not None and regular.customer.name == "Vera Bakker"
        assert {i.channel for i in regular.recent} >= {"chat", "email"}, regular.recent
        chats = [ev for ev in arrived if ev.channel == "chat"]
        assert chats and all(ev.customer_id and ev.customer_id.startswith("cust") for ev in chats)
        lines = conn.execute(select(messages.c.channel, messages.c.direction)).all()
    engine.dispose()
    # Customers wrote through the chat WebSocket and SMTP; simulated agents answered over the agent protocol.
    assert {("chat", "inbound"), ("chat", "outbound"), ("email", "inbound"), ("email", "outbound")} <= set(lines)
    assert {ev.channel for ev in arrived} == {"voice", "chat", "email"}
    types = {type(ev) for ev in logged}
    expected = {E.AgentLoggedIn, E.AgentReady, E.ContactArrived, E.ContactQueued, E.OfferMade, E.OfferAccepted}
    expected |= {E.ContactConnected, E.MessageReceived, E.MessageSent}
    assert expected <= types, expected - types
    assert all(logged[i].at_ms <= logged[i + 1].at_ms for i in range(len(logged) - 1))
    offer = next(ev for ev in logged if isinstance(ev, E.OfferMade))
    assert offer.why.candidates


def _wait_for_rows(db: Path, query: str, timeout_s: float) -> int:
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            n = conn.execute(query).fetchone()[0]
        except sqlite3.OperationalError:  # the schema is being created
            n = 0
        finally:
            conn.close()
        if n:
            return int(n)
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing for {query!r} within {timeout_s} s")
        time.sleep(0.2)  # polling with a deadline: the server is another process


def _broken_config(tmp_path: Path) -> Path:
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    bad = text.replace("skills = { general = 8, technical = 9, dutch = 5 }", "skills = { general = 11 }", 1)
    assert bad != text
    path = tmp_path / "broken.toml"
    path.write_text(bad, encoding="utf-8")
    return path


def test_check_config_names_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _broken_config(tmp_path)
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"{path}: agents[0].skills.general: level 11 is outside 1-10"


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEFAULT_CONFIG_PATH)]) == 0
    assert capsys.readouterr().out == f"{DEFAULT_CONFIG_PATH}: ok (4 queues, 8 agents)\n"


def test_demo_with_bad_config_says_why_and_exits_2(tmp_path: Path) -> None:
    path = _broken_config(tmp_path)
    db = tmp_path / "never.sqlite"
    cmd = [sys.executable, "-m", "contactcentre.cli", "demo", "--config", str(path), "--port", "0"]
    cmd += ["--database", str(db)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().strip() == f"{path}: agents[0].skills.general: level 11 is outside 1-10"
    assert not db.exists()


def test_check_config_unreadable_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[queues\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: not valid TOML")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------- the pieces, without sockets


class _Handle:
    def __init__(self, when: float, fn: Any, args: tuple[Any, ...]) -> None:
        self._when, self.fn, self.args, self.cancelled = when, fn, args, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class VirtualLoop:
    """Just enough of an asyncio loop for the driver and the traffic: ``call_at``/``call_later`` on a heap,
    time taken from a ManualClock that jumps from one due callback to the next."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, _Handle]] = []
        self.seq = 0

    def time(self) -> float:
        return self.clock.now_ms() / 1000

    def call_at(self, when: float, fn: Any, *args: Any) -> _Handle:
        h = _Handle(when, fn, args)
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, h))
        return h

    def call_later(self, delay: float, fn: Any, *args: Any) -> _Handle:
        return self.call_at(self.time() + delay, fn, *args)

    def pending(self) -> list[_Handle]:
        return [h for _, _, h in self.heap if not h.cancelled]

    def run_until(self, until_ms: int) -> None:
        while self.heap and self.heap[0][0] * 1000 <= until_ms:
            when, _, h = heapq.heappop(self.heap)
            if h.cancelled:
                continue
            self.clock.set(max(self.clock.now_ms(), round(when * 1000)))
            h.fn(*h.args)
        self.clock.set(until_ms)


START_MS = 1_772_438_400_000  # Monday 2 March 2026, 09:00 in Amsterdam: the office is open


def test_driver_keeps_one_timer_and_survives_refused_inputs(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config()
    clock = ManualClock(START_MS)
    loop = VirtualLoop(clock)
    driver = RouterDriver(Router(config, start_ms=START_MS), clock, loop)  # type: ignore[arg-type]
    batches: list[list[E.Event]] = []
    driver.subscribe(batches.append)
    driver.submit(E.AgentLoggedIn(at_ms=clock.now_ms(), agent_id="ada"))
    assert loop.pending() == []  # nothing scheduled yet
    driver.submit(E.ContactArrived(at_ms=clock.now_ms(), contact_id="c1", queue="support", channel="chat"))
    offer = next(ev for ev in batches[-1] if isinstance(ev, E.OfferMade))
    armed = loop.pending()
    assert len(armed) == 1 and round(armed[0].when() * 1000) == driver.router.next_deadline()

    with caplog.at_level(logging.INFO, logger="contactcentre.server.driver"):
        refusal = driver.submit(E.OfferAccepted(at_ms=clock.now_ms(), offer_id="o99", contact_id="c1", agent_id="ada"))
    assert isinstance(refusal, StaleOffer) and driver.refused == 1 and "o99" in caplog.text

    loop.run_until(offer.expires_ms)  # nobody answered: the router's own timer fires through the driver
    assert any(isinstance(ev, E.OfferExpired) for ev in batches[-1])
    assert len(loop.pending()) == 1  # re-armed for the next deadline (SLA, reoffer...)
    assert driver.submit(E.AgentAway(at_ms=clock.now_ms(), agent_id="ada", reason="lunch")) is None  # taken
    live = driver.live()
    assert live["decisions"][0]["outcome"] == "expired"
    assert live["snapshot"]["total"]["waiting"] == 1
    driver.close()
    assert loop.pending() == []


def test_submit_returns_the_refusal_unless_a_subscriber_submits_during_a_batch() -> None:
    clock = ManualClock(START_MS)
    driver = RouterDriver(Router(load_config(), start_ms=START_MS), clock, VirtualLoop(clock))  # type: ignore[arg-type]
    got: list[object] = []

    def submits_from_its_callback(batch: list[E.Event]) -> None:
        if any(isinstance(ev, E.AgentLoggedIn) for ev in batch):  # handled after this batch: nothing to return yet
            got.append(driver.submit(E.AgentReady(at_ms=clock.now_ms(), agent_id="nobody")))

    driver.subscribe(submits_from_its_callback)
    assert isinstance(driver.submit(E.AgentReady(at_ms=clock.now_ms(), agent_id="nobody")), UnknownAgent)
    assert driver.submit(E.AgentLoggedIn(at_ms=clock.now_ms(), agent_id="ada")) is None
    assert got == [None] and driver.refused == 2  # the nested one was refused after the batch, and counted


def test_event_log_group_commits_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    events = [
        E.ContactArrived(at_ms=START_MS + i, contact_id=f"c{i}", queue="support", channel="chat") for i in range(1203)
    ]

    async def scenario() -> StoreWriter:
        writer = StoreWriter(open_store(path), batch_size=500, max_delay_s=0.05)
        writer.append(events[:1200])  # a full batch: committed without waiting for the deadline
        writer.append(events[1200:])
        await writer.flush()
        assert writer.committed == 1203
        writer.append([])
        writer.append(events[:1])
        assert writer._deadline is not None  # a lone event waits at most max_delay_s, on a timer
        assert 0 < writer._deadline.when() - asyncio.get_running_loop().time() <= 0.05
        await writer.close()
        return writer

    writer = asyncio.run(scenario())
    assert writer.committed == 1204
    assert writer.commits <= 3
    engine = connect(path)
    assert read_events(engine) == [*events, events[0]]
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            row = conn.exec_driver_sql("SELECT type, contact_id, agent_id FROM events LIMIT 1").one()
            assert tuple(row) == ("contact.arrived", "c0", None)
    finally:
        engine.dispose()


def test_loop_clock_follows_the_loop() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)
        now = clock.now_ms()
        assert abs(now - time.time() * 1000) < 1000
        assert clock.loop_time(now) >= loop.time() - 0.001
        assert clock.now_ms() >= now

    asyncio.run(scenario())


def test_dashboard_escapes_everything() -> None:
    from contactcentre.edge.web import make_environment, queue_rows

    data = tomllib.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    data["name"] = "<script>alert('centre')</script>"
    data["agents"][0]["name"] = "<img src=x onerror=alert(1)>"
    config = parse_config(data, "<test>")
    clock = ManualClock(START_MS)
    driver = RouterDriver(Router(config, start_ms=START_MS), clock, VirtualLoop(clock))  # type: ignore[arg-type]
    driver.submit(E.AgentLoggedIn(at_ms=START_MS, agent_id="ada"))
    evil = "<b onmouseover=alert(2)>c1</b>"
    driver.submit(E.ContactArrived(at_ms=START_MS, contact_id=evil, queue="support", channel="chat"))
    live = driver.live()
    assert live["decisions"][0]["contact_id"] == evil
    html = make_environment().get_template("dashboard.html").render(live=live, queues=queue_rows(live))
    for raw in ("<script>alert", "<img src=x", "<b onmouseover"):
        assert raw not in html
    assert "&lt;script&gt;alert(&#39;centre&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b onmouseover=alert(2)&gt;c1&lt;/b&gt;" in html


def _wait_for_events(db: Path, wanted: dict[str, Any], timeout_s: float) -> list[E.Event]:
    """Poll the demo's event log until, for every name in ``wanted``, some event satisfies its predicate."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            logged = [E.decode(p) for (p,) in conn.execute("select payload from events order by id")]
        except sqlite3.OperationalError:  # the schema is being created
            logged = []
        finally:
            conn.close()
        missing = [name for name, seen in wanted.items() if not any(seen(ev) for ev in logged)]
        if not missing:
            return logged
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout_s} s no {missing}; logged {len(logged)} events")
        time.sleep(0.2)  # polling with a deadline: the server is another process


def _arrived_on(channel: str) -> Any:
    return lambda ev: isinstance(ev, E.ContactArrived) and ev.channel == channel


@pytest.mark.parametrize(
    ("at", "ivr_outcome"),
    [("2026-12-07T21:30", "callback"), ("2026-12-07T10:00", "queued")],  # a Monday evening, a Monday morning
    ids=["evening", "morning"],
)
def test_the_demo_shows_every_channel_within_seconds_at_any_hour(tmp_path: Path, at: str, ivr_outcome: str) -> None:
    """At the demo's own gentle rates, the first chat, e-mail and call come within seconds, and the IVR's
    caller gets somewhere at any hour: to a queue while the office is open, a callback request when closed
    (before, evening callers stayed silent in the closed menu until it hung up on them)."""
    db = tmp_path / "demo.sqlite"
    cmd = [sys.executable, "-m", "contactcentre.cli", "demo", "--port", "0", "--database", str(db)]
    cmd += ["--duration", "120", "--at", at]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _read_line(proc, 30)
        wanted = {f"{ch} contact": _arrived_on(ch) for ch in ("chat", "email", "voice")}
        _wait_for_events(db, wanted, 20)
        ivr = lambda ev: isinstance(ev, E.IvrFinished) and ev.outcome == ivr_outcome  # noqa: E731
        logged = _wait_for_events(db, {f"IVR call ending {ivr_outcome}": ivr}, 45)
        ended = [ev.outcome for ev in logged if isinstance(ev, E.IvrFinished)]
        assert "ivr_hangup" not in ended, ended  # nobody was hung up on for saying nothing
        proc.send_signal(signal.SIGINT)
        _, err_out = proc.communicate(timeout=30)
        assert proc.returncode == 0 and b"Traceback" not in err_out, err_out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_demo_caller_answers_every_question_of_the_menu() -> None:
    """The closed menu leads to no queue; the demo's caller asks for a callback there (and confirms its own
    number, then the first time offered) instead of saying nothing until the IVR gives up on it."""
    from contactcentre.demo.live import caller_key
    from contactcentre.telephony.ivr.menu import key_towards, load_menu

    menu = load_menu(REPO / "contactcentre" / "data" / "ivr" / "main.toml", load_config(DEFAULT_CONFIG_PATH))
    assert key_towards(menu, "closed", "billing") is None  # no way to billing when closed
    assert caller_key(menu, "closed", "billing") == "1"  # 1: be called back
    assert caller_key(menu, "callback", "billing", 0) == "1"  # yes, on the number I am calling from
    assert caller_key(menu, "callback", "billing", 1) == "1"  # as soon as you open
    assert caller_key(menu, "main", "billing") == key_towards(menu, "main", "billing") == "1"


def test_demo_agents_for_people_must_be_agents_there_are() -> None:
    data = tomllib.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    data["demo"]["agents_for_people"] = len(data["agents"]) + 1
    with pytest.raises(ConfigError, match=r"demo\.agents_for_people: must be between 0 and the 8 agents"):
        parse_config(data, "centre.toml")
