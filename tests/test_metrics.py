"""Prometheus metrics: exact values from a router run small enough to check by hand, agreement with LiveStats
over the golden log, names that follow the Prometheus conventions (and ``promtool check metrics``), and
``/metrics`` served by twisted.web — on a bare site, and by the real ``serve`` wiring."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contactcentre import events as E
from contactcentre.acd import Router
from contactcentre.acd.stats import LiveStats
from contactcentre.config import ConfigError, load_config, parse_config
from contactcentre.edge.web.metrics import exposition
from contactcentre.reporting.metrics import CentreMetrics
from tests.harness import Harness, agents
from tests.world import START_MS

GOLDEN = Path(__file__).parent / "golden" / "default_seed7.jsonl"
TOKEN = "s3cret-metrics-token-0123"


def scrape(m: CentreMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by sample name and sorted labels."""
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# ------------------------------------------------------------------------------------------ by hand


def scripted_run() -> tuple[Harness, CentreMetrics]:
    """One agent, three voice calls; ``start`` is t=0 and times below are seconds.

    t=0 c1 (gold, answer 10 s) is offered at once (estimate 0); accepted at 3. t=5 c2 and t=6 c3 queue behind
    a busy agent: estimates (k+1)·AHT/c = 240 s and 480 s (voice AHT 240 s). Both warn (80 % of 20 s) and
    breach. t=30 c1 ends, wrap-up 10 s, closed at 40 (handle 27 + 10 = 37 s) and c2 is offered; the offer
    rings out at 55 (RONA), the agent goes away, c2 waits on. t=60 the agent is ready and gets c3 (c2 is kept
    from the agent who just missed it), accepts at 62. At 65 the test scrapes; at 70 c2 hangs up.
    """
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5})),
        tiers={"gold": {"answer_s": 10}},
    )
    m = CentreMetrics(h.cfg, router=h.router, now_ms=lambda: h.now)
    h.login("a1")
    h.arrive("c1", tier="gold")
    h.at(3)
    h.accept("c1")
    h.at(5)
    h.arrive("c2")
    h.at(6)
    h.arrive("c3")
    h.at(30)
    h.end("c1")
    h.at(60)
    h.send(E.AgentReady, agent_id="a1")
    h.at(62)
    h.accept("c3")
    h.at(65)
    m.observe(h.log)
    return h, m


def test_live_gauges_are_read_from_the_router_at_scrape_time() -> None:
    h, m = scripted_run()
    s = scrape(m)
    assert sample(s, "contactcentre_contacts_waiting", queue="support", channel="voice") == 1  # c2
    assert sample(s, "contactcentre_longest_wait_seconds", queue="support", channel="voice") == 60.0  # 65 - 5
    assert sample(s, "contactcentre_agents", state="busy") == 1
    assert sample(s, "contactcentre_agents", state="available") == 0
    assert sample(s, "contactcentre_queue_agents", queue="support", state="busy") == 1
    h.at(68)  # nothing happened, yet the age moved: computed at the scrape, not when an event came
    assert sample(scrape(m), "contactcentre_longest_wait_seconds", queue="support", channel="voice") == 63.0


def test_counters_and_histograms_of_a_scripted_run_by_hand() -> None:
    h, m = scripted_run()
    mark = len(h.log)
    h.at(70)
    h.send(E.CustomerLeft, contact_id="c2")
    m.observe(h.log[mark:])
    s = scrape(m)
    v = {"queue": "support", "channel": "voice"}
    gold, none = {**v, "tier": "gold"}, {**v, "tier": "none"}
    assert sample(s, "contactcentre_contacts_arrived_total", **v) == 3
    assert sample(s, "contactcentre_contacts_offered_total", **gold) == 1
    assert sample(s, "contactcentre_contacts_offered_total", **none) == 2
    assert sample(s, "contactcentre_contacts_answered_total", **gold) == 1
    assert sample(s, "contactcentre_contacts_answered_total", **none) == 1
    assert sample(s, "contactcentre_contacts_answered_within_sla_total", **gold) == 1  # 3 s <= 10 s
    assert sample(s, "contactcentre_contacts_answered_within_sla_total", **none) == 0  # c3 at 62 s > 26 s
    assert sample(s, "contactcentre_contacts_abandoned_total", **none) == 1
    assert sample(s, "contactcentre_contacts_abandoned_total", **gold) == 0  # zero series exist from the start
    assert sample(s, "contactcentre_sla_warnings_total", **none) == 2
    assert sample(s, "contactcentre_sla_breaches_total", **none) == 2
    assert sample(s, "contactcentre_sla_breaches_total", **gold) == 0
    assert sample(s, "contactcentre_offers_made_total", **v) == 3
    assert sample(s, "contactcentre_offer_outcomes_total", **v, outcome="accepted") == 2
    assert sample(s, "contactcentre_offer_outcomes_total", **v, outcome="expired") == 1
    assert ("contactcentre_offer_outcomes_total", (*sorted({**v, "outcome": "rejected"}.items()),)) not in s

    # wait: answered 3 s and 56 s (c3 6 → 62), abandoned 65 s (c2 5 → 70)
    answered, abandoned = {**v, "outcome": "answered"}, {**v, "outcome": "abandoned"}
    assert sample(s, "contactcentre_wait_seconds_count", **answered) == 2
    assert sample(s, "contactcentre_wait_seconds_sum", **answered) == 59
    assert sample(s, "contactcentre_wait_seconds_bucket", **answered, le="2.0") == 0
    assert sample(s, "contactcentre_wait_seconds_bucket", **answered, le="5.0") == 1
    assert sample(s, "contactcentre_wait_seconds_bucket", **answered, le="45.0") == 1
    assert sample(s, "contactcentre_wait_seconds_bucket", **answered, le="60.0") == 2
    assert sample(s, "contactcentre_wait_seconds_bucket", **abandoned, le="60.0") == 0
    assert sample(s, "contactcentre_wait_seconds_bucket", **abandoned, le="90.0") == 1
    # queue entry → offer: c1 0 s, c2 35 s (5 → 40), c3 54 s (6 → 60)
    assert sample(s, "contactcentre_offer_latency_seconds_count", **v) == 3
    assert sample(s, "contactcentre_offer_latency_seconds_sum", **v) == 89
    assert sample(s, "contactcentre_offer_latency_seconds_bucket", **v, le="0.0") == 1
    assert sample(s, "contactcentre_offer_latency_seconds_bucket", **v, le="30.0") == 1
    assert sample(s, "contactcentre_offer_latency_seconds_bucket", **v, le="60.0") == 3
    # offer → accept: c1 3 s, c3 2 s
    assert sample(s, "contactcentre_offer_accept_seconds_count", **v) == 2
    assert sample(s, "contactcentre_offer_accept_seconds_sum", **v) == 5
    assert sample(s, "contactcentre_offer_accept_seconds_bucket", **v, le="2.0") == 1
    # handle: c1 talk 27 s + wrap-up 10 s
    assert sample(s, "contactcentre_handle_seconds_count", **v) == 1
    assert sample(s, "contactcentre_handle_seconds_sum", **v) == 37
    # EWT error, actual − estimate: c1 3 − 0 = +3 (late); c3 56 − 480 = −424 (early); c2 abandoned 65 − 240 = −175
    late, early = {**answered, "direction": "late"}, {**answered, "direction": "early"}
    assert sample(s, "contactcentre_ewt_error_seconds_count", **late) == 1
    assert sample(s, "contactcentre_ewt_error_seconds_sum", **late) == 3
    assert sample(s, "contactcentre_ewt_error_seconds_bucket", **late, le="0.0") == 0
    assert sample(s, "contactcentre_ewt_error_seconds_bucket", **late, le="10.0") == 1
    assert sample(s, "contactcentre_ewt_error_seconds_count", **early) == 1
    assert sample(s, "contactcentre_ewt_error_seconds_sum", **early) == 424
    assert sample(s, "contactcentre_ewt_error_seconds_bucket", **early, le="300.0") == 0
    assert sample(s, "contactcentre_ewt_error_seconds_bucket", **early, le="600.0") == 1
    gave_up = {**abandoned, "direction": "early"}
    assert sample(s, "contactcentre_ewt_error_seconds_count", **gave_up) == 1
    assert sample(s, "contactcentre_ewt_error_seconds_sum", **gave_up) == 175
    assert ("contactcentre_ewt_error_seconds_count", (*sorted({**abandoned, "direction": "late"}.items()),)) not in s
    assert sample(s, "contactcentre_contacts_waiting", **v) == 0


def test_metrics_started_mid_run_adopt_waiting_contacts_and_open_offers() -> None:
    """A restored server subscribes after the replay: what was already waiting or ringing still counts."""
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}}],
        agents=agents(("a1", {"general": 5})),
        tiers={"gold": {"answer_s": 10}},
    )
    h.login("a1")
    h.arrive("c1", tier="gold")  # offered to a1 at once
    h.arrive("c2", tier="gold")  # waits
    h.at(1)
    m = CentreMetrics(h.cfg, router=h.router, now_ms=lambda: h.now)
    mark = len(h.log)
    h.at(3)
    h.accept("c1")
    h.send(E.CustomerLeft, contact_id="c2")
    m.observe(h.log[mark:])
    s = scrape(m)
    v = {"queue": "support", "channel": "voice"}
    assert sample(s, "contactcentre_contacts_answered_within_sla_total", **v, tier="gold") == 1
    assert sample(s, "contactcentre_offer_outcomes_total", **v, outcome="accepted") == 1
    assert sample(s, "contactcentre_contacts_abandoned_total", **v, tier="gold") == 1
    assert sample(s, "contactcentre_wait_seconds_count", **v, outcome="answered") == 1  # the event carries the wait
    assert not any(name.startswith(("contactcentre_offer_accept", "contactcentre_ewt_error")) for name, _ in s)
    assert m._visits == {} and m._offers == {}


def test_transfers_overflows_failures_and_messages_get_their_bounded_labels() -> None:
    h = Harness(
        queues=[
            {
                "name": "support",
                "skills": {"general": 1},
                "channels": ["voice", "chat"],
                "overflow": [{"after_s": 30, "add_skill": {"billing": 1}}, {"after_s": 60, "move_to": "billing"}],
            },
            {"name": "billing", "skills": {"billing": 1}, "max_depth": 1},
        ],
        agents=agents(("a1", {"general": 5}), ("b1", {"billing": 5})),
    )
    m = CentreMetrics(h.cfg)
    h.login("a1")
    h.arrive("c1")
    h.accept("c1")
    h.send(E.TransferRequested, contact_id="c1", agent_id="a1", to_queue="billing")
    h.arrive("c2", queue="billing")  # billing holds c1 (transferred in): full at depth 1
    h.arrive("c3", tier="platinum")  # a tier the configuration does not know
    h.at(61)  # c3: widened at 30 s, moved to billing at 60 s
    h.arrive("c4", channel="chat", customer_id="cust-9")
    m.observe(h.log)
    m.observe([E.MessageReceived(at_ms=h.now, contact_id="c4", message_id="m1", channel="chat", body="hi")])
    s = scrape(m)
    v = {"queue": "support", "channel": "voice"}
    assert sample(s, "contactcentre_transfers_total", **v, target="queue") == 1
    assert sample(s, "contactcentre_contacts_failed_total", queue="billing", channel="voice", reason="queue_full") == 1
    assert sample(s, "contactcentre_overflows_total", **v, result="widened") == 1
    assert sample(s, "contactcentre_overflows_total", **v, result="moved") == 1
    assert sample(s, "contactcentre_contacts_offered_total", **v, tier="other") == 1
    assert sample(s, "contactcentre_contacts_offered_total", queue="billing", channel="voice", tier="other") == 1
    assert sample(s, "contactcentre_messages_received_total", channel="chat") == 1
    assert sample(s, "contactcentre_contacts_arrived_total", queue="support", channel="chat") == 1
    values = {value for (_, labels) in s for _, value in labels}
    assert not values & {"c1", "c2", "c3", "c4", "cust-9", "a1", "b1", "platinum", "m1"}


# ------------------------------------------------------------------------------------- golden log


def test_golden_log_counts_agree_with_live_stats() -> None:
    """Two consumers of one log, written apart: the counters must say what LiveStats says."""
    cfg = load_config()
    log = E.decode_lines(GOLDEN.read_bytes())
    stats = LiveStats()
    stats.apply_all(log)
    m = CentreMetrics(cfg)
    m.observe(log)
    s = scrape(m)
    buckets = stats.snapshot(log[-1].at_ms)["buckets"]
    assert buckets
    tiers = set(cfg.tiers)
    for key, b in buckets.items():
        queue, channel, tier = key.split("/")
        labels = {"queue": queue, "channel": channel, "tier": tier if tier in tiers else "none"}
        for name, field in (
            ("offered", "offered"),
            ("answered", "answered"),
            ("abandoned", "abandoned"),
        ):
            assert sample(s, f"contactcentre_contacts_{name}_total", **labels) == b[field], (key, name)
        assert sample(s, "contactcentre_sla_breaches_total", **labels) == b["sla_breaches"], key
    waits = {k: v for k, v in s.items() if k[0] == "contactcentre_wait_seconds_count"}
    connected = sum(isinstance(e, E.ContactConnected) for e in log)
    abandoned = sum(isinstance(e, E.ContactAbandoned) for e in log)
    assert sum(v for k, v in waits.items() if ("outcome", "answered") in k[1]) == connected
    assert sum(v for k, v in waits.items() if ("outcome", "abandoned") in k[1]) == abandoned
    offers = sum(v for k, v in s.items() if k[0] == "contactcentre_offers_made_total")
    assert offers == sum(isinstance(e, E.OfferMade) for e in log)
    expired = sum(
        v for k, v in s.items() if k[0] == "contactcentre_offer_outcomes_total" and ("outcome", "expired") in k[1]
    )
    assert expired == sum(isinstance(e, E.OfferExpired) for e in log) > 0


def test_memory_holds_only_contacts_still_waiting_and_offers_still_open() -> None:
    """Checked after every input of the golden run: nothing finished is kept."""
    cfg = load_config()
    router = Router(cfg, start_ms=START_MS)
    m = CentreMetrics(cfg)
    busy_moments = 0
    for ev in E.decode_lines(GOLDEN.read_bytes()):
        if not E.is_input(ev):
            continue
        m.observe(router.handle(ev))
        waiting = {c.id for c in router.contacts.values() if c.state in ("queued", "offered")}
        assert set(m._visits) == waiting
        assert set(m._offers) == set(router.offers)
        busy_moments += len(waiting) >= 3 and len(router.offers) >= 1
    assert busy_moments > 10


_NAME = re.compile(r"^contactcentre_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_LABELS = {"queue", "channel", "tier", "outcome", "result", "target", "reason", "state", "direction"}
_OTHER_UNITS = re.compile(r"_(ms|milliseconds|millis|minutes|hours|days|secs|percent)(_|$)")


def lint(text: str) -> list[str]:
    """Prometheus naming conventions (promtool's checks and the naming guide), as a list of problems."""
    problems = []
    for fam in text_string_to_metric_families(text):
        name = fam.name
        if not _NAME.match(name):
            problems.append(f"{name}: not snake_case with the contactcentre_ prefix")
        if _OTHER_UNITS.search(name):
            problems.append(f"{name}: time must be in seconds, named _seconds")
        if fam.type == "counter" and name.endswith("_total"):
            problems.append(f"{name}: the parser strips _total from counters; it was doubled")
        if fam.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total")
        if "seconds" in name and not name.endswith("_seconds") and not name.endswith("_seconds_total"):
            problems.append(f"{name}: the unit goes last")
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith(("_total", "_created")):
                problems.append(f"{s.name}: a counter sample must end in _total")
            extra = set(s.labels) - _LABELS - ({"le"} if fam.type == "histogram" else set())
            if extra:
                problems.append(f"{s.name}: unexpected labels {sorted(extra)}")
        if not fam.documentation:
            problems.append(f"{name}: no HELP")
    return problems


def golden_metrics() -> CentreMetrics:
    cfg = load_config()
    log = E.decode_lines(GOLDEN.read_bytes())
    router = Router(cfg, start_ms=START_MS)
    for ev in log:
        if E.is_input(ev):
            router.handle(ev)
    m = CentreMetrics(cfg, router=router, now_ms=lambda: router.now_ms)
    m.observe(log)
    return m


def test_every_name_follows_the_prometheus_conventions() -> None:
    text = exposition(golden_metrics().registry)[0].decode()
    families = list(text_string_to_metric_families(text))
    assert len(families) >= 20
    assert lint(text) == []


def test_the_lint_catches_what_it_is_meant_to() -> None:
    bad = (
        "# HELP wait_ms w\n# TYPE wait_ms gauge\nwait_ms 1\n"
        "# HELP contactcentre_queued_total q\n# TYPE contactcentre_queued_total gauge\ncontactcentre_queued_total 1\n"
        '# HELP contactcentre_x x\n# TYPE contactcentre_x gauge\ncontactcentre_x{contact_id="c1"} 1\n'
    )
    problems = lint(bad)
    assert any("wait_ms: not snake_case with the contactcentre_ prefix" in p for p in problems)
    assert any("wait_ms: time must be in seconds" in p for p in problems)
    assert any("only counters end in _total" in p for p in problems)
    assert any("unexpected labels ['contact_id']" in p for p in problems)


def test_promtool_check_metrics_passes() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    text = exposition(golden_metrics().registry)[0]
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode() + done.stderr.decode() == ""  # no lint warnings either
    broken = subprocess.run(  # and promtool does complain where it should
        [promtool, "check", "metrics"], input=b"# TYPE wait_ms counter\nwait_ms 1\n", capture_output=True, timeout=60
    )
    assert broken.returncode != 0


def test_importing_the_metrics_modules_installs_no_reactor() -> None:
    code = (
        "import sys\n"
        "import contactcentre.reporting.metrics, contactcentre.edge.web.metrics\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'a reactor was installed'\n"
        "assert 'prometheus_client.twisted' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def test_metrics_token_is_checked_in_the_configuration() -> None:
    with pytest.raises(ConfigError, match=r"server.metrics_token: must be at least 16"):
        parse_config({"server": {"metrics_token": "short"}}, "<test>")
    assert parse_config({"server": {"metrics_token": TOKEN}}, "<test>").server.metrics_token == TOKEN


# ----------------------------------------------------------------------------------------- the site


def _get(port: int, path: str = "/metrics", method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    data = b"x" if method == "POST" else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.fixture
def site(reactor_loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """The dashboard site with ``/metrics`` (open to loopback and token-protected variants), on 127.0.0.1."""
    from twisted.internet import reactor
    from twisted.web.server import Site as WebSite

    from contactcentre.edge.web import _Node
    from contactcentre.edge.web.metrics import MetricsResource
    from contactcentre.server.clock import ManualClock
    from contactcentre.server.driver import RouterDriver

    loop = reactor_loop
    h = Harness(queues=[{"name": "support", "skills": {"general": 1}}], agents=agents(("a1", {"general": 5})))
    clock = ManualClock(h.start)
    driver = RouterDriver(h.router, clock, loop)
    m = CentreMetrics(h.cfg, router=h.router, now_ms=clock.now_ms, driver=driver)
    driver.subscribe(m.observe)
    root = _Node()  # the real site's tree is built by runtime.serve: see the last test
    root.putChild(b"metrics", MetricsResource(m.registry))
    root.putChild(b"private", MetricsResource(m.registry, token=TOKEN))
    port = reactor.listenTCP(0, WebSite(root, logPath=None), interface="127.0.0.1")

    class Site:
        def get(self, path: str = "/metrics", method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
            number = port.getHost().port
            return loop.run_until_complete(loop.run_in_executor(None, lambda: _get(number, path, method, **headers)))

    driver.submit(E.AgentLoggedIn(at_ms=h.start, agent_id="a1"))
    driver.submit(E.ContactArrived(at_ms=h.start, contact_id="c1", queue="support", channel="voice"))
    driver.submit(E.ContactArrived(at_ms=h.start, contact_id="c2", queue="support", channel="voice"))
    clock.advance(7_000)
    try:
        yield Site()
    finally:
        driver.close()
        loop.run_until_complete(port.stopListening().asFuture(loop))


def test_metrics_page_over_a_real_request(site: Any) -> None:
    status, headers, body = site.get()
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    text = body.decode()
    assert lint(text) == []
    assert "_created" not in text  # left out of the classic format (see edge/web/metrics.py)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert sample(samples, "contactcentre_contacts_waiting", queue="support", channel="voice") == 2  # c1 ringing, c2
    assert sample(samples, "contactcentre_longest_wait_seconds", queue="support", channel="voice") == 7.0
    assert sample(samples, "contactcentre_offers_made_total", queue="support", channel="voice") == 1
    assert sample(samples, "contactcentre_router_inputs_total", result="handled") == 3


def test_openmetrics_when_the_scraper_asks_for_it(site: Any) -> None:
    status, headers, body = site.get(Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    families = {f.name: f for f in openmetrics_families(body.decode())}  # the strict parser
    assert families["contactcentre_offers_made"].type == "counter"
    assert families["contactcentre_wait_seconds"].type == "histogram"


def test_only_get_and_head_and_only_metrics(site: Any) -> None:
    assert site.get("/metrics/more")[0] == 404
    status, headers, _ = site.get("/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = site.get("/metrics", method="HEAD")
    assert status == 200 and body == b""


def test_token_protected_metrics(site: Any) -> None:
    status, headers, body = site.get("/private")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert b"contactcentre_" not in body
    assert site.get("/private", Authorization="Bearer wrong-token-wrong-token")[0] == 401
    assert site.get("/private", Authorization=f"Basic {TOKEN}")[0] == 401
    status, _, body = site.get("/private", Authorization=f"Bearer {TOKEN}")
    assert status == 200 and b"contactcentre_contacts_waiting" in body


def test_without_a_token_only_loopback_clients_are_served() -> None:
    from prometheus_client import CollectorRegistry
    from twisted.internet.address import IPv4Address, IPv6Address
    from twisted.web.test.requesthelper import DummyRequest

    from contactcentre.edge.web.metrics import MetricsResource

    resource = MetricsResource(CollectorRegistry())

    def render(client: Any, method: bytes = b"GET") -> tuple[int, bytes]:
        req = DummyRequest([])
        req.client = client  # (this Twisted's DummyRequest ignores its ``client`` argument)
        req.method = method
        body = resource.render(req)
        return req.responseCode or 200, body

    assert render(IPv4Address("TCP", "127.0.0.1", 5555))[0] == 200
    assert render(IPv6Address("TCP", "::1", 5555))[0] == 200
    code, body = render(IPv4Address("TCP", "192.0.2.7", 5555))  # documentation address: never connected to
    assert code == 403 and b"metrics_token" in body
    assert render(IPv4Address("TCP", "127.0.0.1", 5555), b"POST")[0] == 405


def test_serve_wires_metrics_at_slash_metrics(reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    from contactcentre.server.runtime import serve

    cfg = parse_config(
        {
            "queues": [{"name": "support", "channels": ["chat"]}],
            "agents": [{"id": "a1"}],
            "server": {"metrics_token": TOKEN, "email": {"enabled": False}},
        },
        "<test>",
    )
    loop = reactor_loop

    async def main() -> tuple[int, int, bytes]:
        stop = asyncio.Event()
        ready: asyncio.Future[Any] = loop.create_future()
        task = loop.create_task(
            serve(
                cfg,
                tmp_path / "s.sqlite",
                host="127.0.0.1",
                http_port=0,
                ws_port=0,
                cti_port=0,
                ready=ready.set_result,
                stop=stop,
            )
        )
        try:
            info = await asyncio.wait_for(ready, 30)
            refused = await loop.run_in_executor(None, lambda: _get(info.http_port))
            got = await loop.run_in_executor(None, lambda: _get(info.http_port, Authorization=f"Bearer {TOKEN}"))
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return refused[0], got[0], got[2]

    refused, status, body = loop.run_until_complete(main())
    assert refused == 401
    assert status == 200
    text = body.decode()
    assert lint(text) == []
    assert 'contactcentre_agents{state="logged_out"} 1.0' in text
    assert "contactcentre_store_events_committed_total" in text


def test_a_withdrawn_callback_is_forgotten() -> None:
    """Memory holds waiting contacts only: a callback cancelled while it waits leaves nothing behind."""
    h = Harness(
        queues=[{"name": "support", "skills": {"general": 1}, "channels": ["voice", "callback"]}],
        agents=agents(("a1", {"general": 5})),
    )
    m = CentreMetrics(h.cfg)
    for i in range(100):
        h.send(E.CallbackScheduled, contact_id=f"cb{i}", queue="support", due_ms=h.router.now_ms, number="+31201234567")
        h.send(E.CallbackCancelled, contact_id=f"cb{i}", reason="customer")
    m.observe(h.log)
    assert not h.router.contacts and not m._visits
