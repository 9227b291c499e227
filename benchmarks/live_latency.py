"""Live latency and throughput: a real ``contactcentre serve`` (SQLite event log on) driven by
``contactcentre loadgen`` in its own process, in steps of contacts per second (docs/loadgen.md).

The server runs ``contactcentre/data/default.toml`` with chat wrap-up set to 0 and ``--agents`` extra first-line agents
(``general = 5``, chat capacity ``--chat-capacity``) appended, so an idle agent is always available: the
figure measured is the routing path, not queueing. The mix is chat only (a WebSocket ``hello`` per contact,
the cheapest contact to generate at rate); handle time is fixed ``--handle-s``. Every step gets a fresh
server and database so steps do not inherit each other's backlog.

    .venv/bin/python benchmarks/live_latency.py [--steps 100,200,500,1000] [--seconds 10] [--profile DIR]
        [--baseline REV]
    .venv/bin/python benchmarks/live_latency.py --edges 1,2 [--steps ...] [--postgres URL] [--redis-url URL]

The server's CPU is its own (all threads, from /proc) from the instant the generator's arrivals begin (after
the agents' logins) until the generator has drained and exited, divided by the chats placed.

``--baseline REV`` measures a previous version side by side in the same run: REV is checked out into a
temporary ``git worktree`` and every step runs against its server too (alternating which goes first), with
the same interpreter and libraries, the generator of this tree for both, and the baseline's own
``contactcentre/data/default.toml``. Each server prints the ``contactcentre`` package it imported, which must lie in its
tree. ``--profile DIR`` records this tree's server with py-spy during the highest step (a ``--format raw``
collapsed-stack file) when py-spy is installed and allowed to attach.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import LOADGEN_LIMITS, REPO, cli, cpu_seconds, pct, start, stop

DEFAULT_CONFIG = REPO / "contactcentre" / "data" / "default.toml"
READY = re.compile(
    r"contactcentre serve: http://127\.0\.0\.1:(\d+)/ · smtp://127\.0\.0\.1:(\d+) · ws://127\.0\.0\.1:(\d+)/"
)
# The server's entry point: the command line, after saying which ``contactcentre`` it imported (a baseline's
# server must run the baseline's code, not this tree's).
BOOT = (
    "import sys, contactcentre; print('contactcentre imported from', contactcentre.__file__, flush=True); "
    "from contactcentre.cli import main; sys.argv[0] = 'contactcentre'; sys.exit(main())"
)
IMPORTED = re.compile(r"contactcentre imported from (.+)")
# The issue's goal (docs/loadgen.md): every chat answered, p99 arrival -> offer, server CPU per chat.
GOAL_P99_MS = 50.0
GOAL_CPU_MS = 2.0
SAMPLE_S = 0.025  # how often the server's CPU time is read while the generator runs


@dataclass(frozen=True)
class Version:
    """A source tree whose server is measured: this one, or a baseline checked out into a worktree."""

    label: str
    tree: Path

    @property
    def env(self) -> dict[str, str]:
        # cwd and PYTHONPATH both name the tree, ahead of the editable install of this one in site-packages
        return {"PYTHONPATH": str(self.tree)}

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-c", BOOT, *args]


THIS = Version("this tree", REPO)

SCENARIO = """\
[simulation]
duration_s = 60
seed = {seed}
service_level_threshold_s = 20
[[queues]]
name = "support"
skills = {{ general = 3 }}
[[agent_groups]]
count = {agents}
skills = {{ general = 5 }}
capacity = {{ chat = {capacity} }}
[[arrivals]]
queue = "support"
channel = "chat"
per_hour = 3600
handle_time = {{ distribution = "fixed", mean_s = {handle_s} }}
"""


def write_config(tmp: Path, agents: int, capacity: int, email: int = 0, default: Path = DEFAULT_CONFIG) -> Path:
    """``contactcentre/data/default.toml`` (or ``default``) with chat wrap-up 0 and ``agents`` extra agents (``general =
    5``, chat ``capacity``, e-mail ``email``)."""
    text = default.read_text(encoding="utf-8")
    chat = text.index("[channels.chat]")
    end = text.index("[channels.email]")
    section, n = re.subn(r"(?m)^wrap_up_s = \d+", "wrap_up_s = 0", text[chat:end])
    if n != 1:
        raise SystemExit("the shipped default.toml no longer has [channels.chat] wrap_up_s as this script expects")
    text = text[:chat] + section + text[end:]
    ivr_dir = (default.parent / "ivr").as_posix()
    text = re.sub(r'(?m)^(\s*ivr = \{[^}]*")ivr/', rf"\g<1>{ivr_dir}/", text)
    # appended [[agents]] tables land inside whatever table comes last, so they go before [server]
    extra = "".join(
        f'[[agents]]\nid = "lg{i}"\nname = "Load {i}"\nskills = {{ general = 5 }}\n'
        f"capacity = {{ chat = {capacity}, email = {email} }}\n\n"
        for i in range(agents)
    )
    at = text.index("[server]")
    text = text[:at] + extra + text[at:]
    # a fixed CTI token: the load generator reads it from this file (--config), and it survives a restart
    text, n = re.subn(r"(?m)^(\s*)\[server\.voice\]\n", rf'\g<0>\g<1>cti_token = "{secrets.token_urlsafe(24)}"\n', text)
    if n != 1:
        raise SystemExit("contactcentre/data/default.toml no longer has a [server.voice] table as this script expects")
    text += LOADGEN_LIMITS
    path = tmp / "centre.toml"
    path.write_text(text, encoding="utf-8")
    return path


def start_server(
    tmp: Path,
    config: Path,
    db: Path,
    timeout: float = 60,
    ports: list[str] | None = None,
    version: Version | None = None,
) -> tuple[subprocess.Popen[bytes], int, int, int]:
    """Start ``contactcentre serve`` (of ``version``'s tree: with a version, it must say it imported its
    ``contactcentre`` from there); returns the process and its SMTP, WebSocket and HTTP ports."""
    smtp, ws, cti = [*(ports or []), "0", "0", "0"][:3]  # fixed ports for a restart on the same ones
    args = ["serve", "--config", str(config), "--database-url", str(db)]
    args += ["--http-port", "0", "--smtp-port", smtp, "--ws-port", ws, "--cti-port", cti, "--sip-port", "0"]
    if version is None:
        proc, m = start(tmp, cli(*args), READY.search, timeout)
        return proc, int(m.group(2)), int(m.group(3)), int(m.group(1))
    proc, m = start(tmp, version.cli(*args), READY.search, timeout, cwd=version.tree, env=version.env)
    imported = IMPORTED.search((tmp / "server.out").read_text(errors="replace"))
    if imported is None or not Path(imported.group(1)).resolve().is_relative_to(version.tree.resolve()):
        stop(proc)
        where = imported.group(1) if imported else "(not said)"
        raise RuntimeError(f"the {version.label} server imported contactcentre from {where}, not {version.tree}")
    return proc, int(m.group(2)), int(m.group(3)), int(m.group(1))


def run_step(
    tmp: Path,
    config: Path,
    rate: int,
    seconds: float,
    seed: int,
    profile: Path | None,
    *,
    gil: bool = False,
    profile_loadgen: bool = False,
    version: Version = THIS,
    postgres: str | None = None,
) -> dict[str, Any]:
    name = f"step{rate}" if version is THIS else f"baseline-step{rate}"
    step = tmp / name
    for again in itertools.count(2):  # a step run more than once (--steps 100,100)
        if not step.exists():
            break
        step = tmp / f"{name}-{again}"
    step.mkdir()
    with contextlib.ExitStack() as stack:
        db: Any = step / "events.sqlite"
        if postgres is not None:  # one process on PostgreSQL instead (beside --edges' nodes, which need it)
            db = stack.enter_context(postgres_database(postgres))
        return _run_step(step, config, rate, seconds, seed, profile, db, gil, profile_loadgen, version)


def _run_step(
    step: Path,
    config: Path,
    rate: int,
    seconds: float,
    seed: int,
    profile: Path | None,
    db: Any,
    gil: bool,
    profile_loadgen: bool,
    version: Version,
) -> dict[str, Any]:
    tmp = step.parent
    tokens = step / "tokens.json"
    prepare = ["loadgen", "--prepare", "--config", str(config), "--database-url", str(db), "--tokens", str(tokens)]
    subprocess.run(  # the users go in with the server's own code, so its schema is the server's
        version.cli(*prepare),
        cwd=version.tree,
        env={**os.environ, **version.env},
        check=True,
        capture_output=True,
    )
    proc, smtp_port, ws_port, http_port = start_server(step, config, db, version=version)
    spy: subprocess.Popen[bytes] | None = None
    try:
        cpu0 = cpu_seconds(proc.pid)
        lg, report = start_loadgen(tmp, step, tokens, rate, seconds, seed, str(ws_port), smtp_port, http_port)
        spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if profile is not None and spy_bin:
            profile.mkdir(parents=True, exist_ok=True)
            spy_cmd = [
                spy_bin,
                "record",
                "--pid",
                str(lg.pid if profile_loadgen else proc.pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "200",
                *(["--gil"] if gil else []),
            ]
            spy = subprocess.Popen(
                [*spy_cmd, "--format", "raw", "--output", str(profile / f"server-{rate}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=(profile / "py-spy.err").open("wb"),
            )
        # The server's CPU (all threads; its event loop's thread alone) read every SAMPLE_S until the generator
        # exits, so that the agents' logins before the arrivals can be left out.
        result, (cpu_s, loop_s), usage = await_loadgen(
            lg,
            step,
            report,
            (cpu0, cpu_seconds(proc.pid, proc.pid)),
            lambda: (cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)),
        )
        result["server_cpu_s"] = cpu_s
        result["server_loop_cpu_s"] = loop_s  # the event loop's thread (the rest: store threads)
        placed = result["sent"] - result["outcomes"].get("refused", 0)
        result["server_cpu_ms_per_chat"] = 1000 * cpu_s / placed if placed else None
        result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
        result["version"] = version.label
        return result
    finally:
        if spy is not None:
            spy.wait(60)
        stop(proc)


ROUTER_ACTIVE = re.compile(r"contactcentre serve --role router: (\S+) is active")


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one step, dropped afterwards."""
    import psycopg

    name = f"cc_live_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_cluster_step(
    tmp: Path,
    config: Path,
    rate: int,
    seconds: float,
    seed: int,
    edges: int,
    *,
    postgres: str,
    redis: str,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One step against a centre of one router node and ``edges`` edge nodes (docs/scaling.md), on a fresh
    PostgreSQL database and its own Redis key prefix; the generator spreads its connections over the edges."""
    step = tmp / f"cluster{edges}-step{rate}"
    for again in itertools.count(2):
        if not step.exists():
            break
        step = tmp / f"cluster{edges}-step{rate}-{again}"
    step.mkdir()
    prefix = f"bench{secrets.token_hex(3)}"
    node = ["--config", str(config), "--redis-url", redis, "--redis-prefix", prefix]
    procs: list[subprocess.Popen[bytes]] = []
    with postgres_database(postgres) as db:
        tokens = step / "tokens.json"
        prepare = ["loadgen", "--prepare", "--config", str(config), "--database-url", db, "--tokens", str(tokens)]
        subprocess.run(cli(*prepare), cwd=REPO, check=True, capture_output=True)
        try:
            (step / "router").mkdir()
            router, _ = start(
                step / "router",
                cli("serve", "--role", "router", "--database-url", db, "--node-id", "r1", *node),
                ROUTER_ACTIVE.search,
                60,
            )
            procs.append(router)
            ports = []
            edge_procs = []
            for i in range(1, edges + 1):
                where = step / f"e{i}"
                where.mkdir()
                args = ["serve", "--role", "edge", "--database-url", db, "--node-id", f"e{i}", *node]
                args += ["--http-port", "0", "--smtp-port", "0", "--ws-port", "0", "--cti-port", "0"]
                args += ["--sip-port", "0"]
                proc, m = start(where, cli(*args), READY.search, 60)
                procs.append(proc)
                edge_procs.append(proc)
                ports.append((int(m.group(2)), int(m.group(3)), int(m.group(1))))
            ws_ports = ",".join(str(p[1]) for p in ports)  # the generator spreads its connections over them
            lg, report = start_loadgen(tmp, step, tokens, rate, seconds, seed, ws_ports, ports[0][0], ports[0][2])
            spies = []
            spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
            if profile is not None and spy_bin:
                profile.mkdir(parents=True, exist_ok=True)
                for name, proc in [("router", router)] + [(f"e{i}", p) for i, p in enumerate(edge_procs, 1)]:
                    out = profile / f"{name}-{edges}edges-{rate}.txt"
                    spy = [spy_bin, "record", "--pid", str(proc.pid), "--duration", str(max(1, int(seconds)))]
                    spy += ["--rate", "200", "--format", "raw", "--output", str(out)]
                    spies.append(subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            def cpu() -> tuple[float, float]:
                return cpu_seconds(router.pid), sum(cpu_seconds(p.pid) for p in edge_procs)

            result, (router_s, edges_s), usage = await_loadgen(lg, step, report, cpu(), cpu)
            placed = result["sent"] - result["outcomes"].get("refused", 0)
            result["router_cpu_s"] = router_s
            result["edges_cpu_s"] = edges_s
            result["server_cpu_s"] = result["router_cpu_s"] + result["edges_cpu_s"]
            result["server_cpu_ms_per_chat"] = 1000 * result["server_cpu_s"] / placed if placed else None
            result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
            result["edges"] = edges
            result["offer_round_trip_ms"] = offer_round_trips(db)
            for spy_proc in spies:
                spy_proc.wait(60)
            return result
        finally:
            for proc in reversed(procs):  # edges first, then the router: nothing is left half-sent
                stop(proc)


def offer_round_trips(db: str) -> dict[str, float | None]:
    """From the log: an offer made (the router's stamp) to its acceptance (the router's stamp of the agent's
    accept): the router's output to an edge, the edge to the agent's console, the accept back, and its input
    to the router, two commits on the way. The generator's agents accept at once."""
    from contactcentre.events import OfferAccepted, OfferMade, decode
    from contactcentre.store.db import connect
    from contactcentre.store.eventlog import payloads_of_types

    engine = connect(db)
    try:
        with engine.connect() as conn:
            payloads = payloads_of_types(conn, ["offer.made", "offer.accepted"])
    finally:
        engine.dispose()
    made: dict[str, int] = {}
    gaps = []
    for ev in map(decode, payloads):
        if isinstance(ev, OfferMade):
            made[ev.offer_id] = ev.at_ms
        elif isinstance(ev, OfferAccepted) and ev.offer_id in made:
            gaps.append(ev.at_ms - made[ev.offer_id])
    gaps.sort()
    return {
        "n": len(gaps),
        "p50": pct(gaps, 50) if gaps else None,
        "p99": pct(gaps, 99) if gaps else None,
    }


def print_cluster_table(rows: list[tuple[int, dict[str, Any]]], seconds: float) -> None:
    head = (
        f"{'edges':>5} {'rate/s':>7} {'sent':>7} {'answered':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} "
        f"{'router ms/chat':>14} {'edges ms/chat':>13} {'total ms/chat':>13} {'router CPU %':>12} {'gen CPU %':>9} "
        f"{'rt p50 ms':>9} {'rt p99 ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for rate, r in rows:
        lat = r["arrival_to_offer_ms_all"]
        print(
            f"{r['edges']:>5} {rate:>7} {r['sent']:>7} {r['outcomes'].get('answered', 0):>8} {fmt(lat['p50']):>7} "
            f"{fmt(lat['p99']):>7} {fmt(lat['max']):>8} {fmt(per_chat(r, 'router_cpu_s'), '.2f'):>14} "
            f"{fmt(per_chat(r, 'edges_cpu_s'), '.2f'):>13} {fmt(r.get('server_cpu_ms_per_chat'), '.2f'):>13} "
            f"{100 * r['router_cpu_s'] / seconds:>12.0f} {100 * r.get('loadgen_cpu_s', 0) / seconds:>9.0f} "
            f"{fmt(r['offer_round_trip_ms']['p50']):>9} {fmt(r['offer_round_trip_ms']['p99']):>9}"
        )


def start_loadgen(
    tmp: Path,
    step: Path,
    tokens: Path,
    rate: int,
    seconds: float,
    seed: int,
    ws_ports: str,
    smtp_port: int,
    http_port: int,
) -> tuple[subprocess.Popen[bytes], Path]:
    """The generator against a server (or the edges: ``ws_ports`` comma-separated); its report's path."""
    report = step / "report.json"
    cmd = cli("loadgen", "--scenario", str(tmp / "scenario.toml"), "--tokens", str(tokens))
    cmd += ["--ws-port", ws_ports, "--smtp-port", str(smtp_port), "--rate", str(rate)]
    cmd += ["--http-port", str(http_port)]
    cmd += ["--duration", str(seconds), "--seed", str(seed), "--report", str(report), "--quiet"]
    cmd += ["--max-contacts", str(int(rate * seconds * 1.2) + 10)]
    lg = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stderr=(step / "loadgen.err").open("wb"))
    return lg, report


def await_loadgen(
    lg: subprocess.Popen[bytes],
    step: Path,
    report: Path,
    first: tuple[float, ...],
    cpu: Callable[[], tuple[float, ...]],
) -> tuple[dict[str, Any], tuple[float, ...], Any]:
    """Wait for the generator, reading ``cpu()`` (CPU times of what is measured) every SAMPLE_S, so that the
    agents' logins before the arrivals can be left out. Returns the generator's report, each CPU time spent
    from the start of its arrivals to its exit (``first``: the readings before it started), and its rusage."""
    samples = [(time.perf_counter(), *first)]
    while True:
        pid, status, usage = os.wait4(lg.pid, os.WNOHANG)  # wait4: the generator's CPU time comes with its exit
        samples.append((time.perf_counter(), *cpu()))
        if pid:
            break
        time.sleep(SAMPLE_S)  # polling the generator, which ends by itself (--duration, a bounded drain)
    lg.returncode = os.waitstatus_to_exitcode(status)
    if lg.returncode != 0 or not report.exists():
        raise RuntimeError(f"loadgen failed: {(step / 'loadgen.err').read_text(errors='replace')[-2000:]}")
    result = json.loads(report.read_text())
    began = result.get("arrivals_started_perf_s", 0.0)
    start = max((x for x in samples if x[0] <= began), default=samples[0])
    return result, tuple(b - a for a, b in zip(start[1:], samples[-1][1:], strict=True)), usage


def fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[tuple[int, dict[str, Any]]], seconds: float) -> None:
    head = (
        f"{'rate/s':>7} {'sent':>7} {'achieved/s':>10} {'answered':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>8} {'acc p50':>7} {'conn p50':>8} {'errors':>6} {'srv CPU %':>9} {'gen CPU %':>9} "
        f"{'ms/chat':>7} {'loop ms':>7}"
    )
    print(head)
    print("-" * len(head))
    for rate, r in rows:
        lat = r["arrival_to_offer_ms_all"]
        acc = r["offer_to_accept_ms"]
        achieved = r.get("placed_per_s", r["sent"] / seconds)
        print(
            f"{rate:>7} {r['sent']:>7} {achieved:>10.1f} {r['outcomes'].get('answered', 0):>8} "
            f"{fmt(lat['p50']):>7} {fmt(lat['p90']):>7} {fmt(lat['p99']):>7} {fmt(lat['max']):>8} "
            f"{fmt(acc['p50'], '.2f'):>7} {fmt(r['chat_connect_ms']['p50']):>8} {sum(r['errors'].values()):>6} "
            f"{100 * r['server_cpu_s'] / seconds:>9.0f} {100 * r.get('loadgen_cpu_s', 0) / seconds:>9.0f} "
            f"{fmt(r.get('server_cpu_ms_per_chat'), '.2f'):>7} {fmt(per_chat(r, 'server_loop_cpu_s'), '.2f'):>7}"
        )


def per_chat(r: dict[str, Any], key: str) -> float | None:
    placed = r["sent"] - r["outcomes"].get("refused", 0)
    return 1000 * r[key] / placed if placed and key in r else None


def print_side_by_side(rows: list[tuple[int, dict[str, Any]]], labels: list[str]) -> None:
    """One line per step: for each version the server's CPU per chat (and its event loop's share), chats
    answered of those placed, and arrival -> offer p50 and p99."""
    width = 40
    print(f"{'':>7} " + " | ".join(f"{label[:width]:^{width}}" for label in labels))
    sub = f"{'ms/chat':>7} {'loop':>5} {'answered/placed':>15} {'p50':>5} {'p99':>5}"
    print(f"{'rate/s':>7} " + " | ".join(f"{sub:>{width}}" for _ in labels))
    for rate, r in rows:
        cells = []
        for res in [r["baseline"], r] if "baseline" in r else [r]:
            lat = res["arrival_to_offer_ms_all"]
            answered = f"{res['outcomes'].get('answered', 0)}/{res['sent']}"
            cells.append(
                f"{fmt(res.get('server_cpu_ms_per_chat'), '.2f'):>7} "
                f"{fmt(per_chat(res, 'server_loop_cpu_s'), '.2f'):>5} {answered:>15} "
                f"{fmt(lat['p50']):>5} {fmt(lat['p99']):>5}"
            )
        print(f"{rate:>7} " + " | ".join(f"{c:>{width}}" for c in cells))


def print_gap(rows: list[tuple[int, dict[str, Any]]]) -> None:
    """The server's own figures (its /api/queues) against the discrete-event simulator on the same scenario."""
    print(f"{'rate/s':>7} {'server SL':>9} {'sim SL':>7} {'server ASA s':>12} {'sim ASA s':>9} {'server aband':>12}")
    for rate, r in rows:
        srv, sim = r.get("server") or {}, r.get("simulated") or {}
        print(
            f"{rate:>7} {fmt(srv.get('service_level_offered'), '.3f'):>9} "
            f"{fmt(sim.get('service_level_offered'), '.3f'):>7} {fmt(srv.get('asa_s'), '.3f'):>12} "
            f"{fmt(sim.get('asa_s'), '.3f'):>9} {fmt(srv.get('p_abandon'), '.3f'):>12}"
        )


def saturation(rows: list[tuple[int, dict[str, Any]]], seconds: float) -> str:
    for rate, r in rows:
        lat = r["arrival_to_offer_ms_all"]
        achieved = r.get("placed_per_s", r["sent"] / seconds)
        if achieved < 0.9 * rate:
            return f"saturates at {rate}/s: the generator placed only {achieved:.0f}/s"
        answered = r["outcomes"].get("answered", 0)
        if answered < 0.95 * r["sent"]:
            return f"saturates at {rate}/s: only {answered} of {r['sent']} answered"
        cpu = r.get("server_cpu_ms_per_chat")
        if answered < r["sent"] or lat["p99"] is None or lat["p99"] > GOAL_P99_MS or (cpu or 0) > GOAL_CPU_MS:
            return (
                f"misses the goal (every chat answered, p99 <= {GOAL_P99_MS:.0f} ms, server CPU <= {GOAL_CPU_MS:.0f}"
                f" ms per chat) from {rate}/s"
            )
    return "no saturation in the steps run; goal met at every step"


@contextlib.contextmanager
def baseline_tree(rev: str, tmp: Path) -> Iterator[Version]:
    """``rev`` checked out (detached) into a temporary git worktree under ``tmp``, removed afterwards."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = tmp / f"baseline-{short}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), short], cwd=REPO, check=True, capture_output=True)
    try:
        yield Version(short, tree)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="100,200,500,1000", help="contacts per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of arrivals per step")
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--chat-capacity", type=int, default=10)
    ap.add_argument("--handle-s", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy the server at the top step")
    ap.add_argument("--gil", action="store_true", help="with --profile: sample only the thread holding the GIL")
    ap.add_argument("--profile-loadgen", action="store_true", help="with --profile: record the generator instead")
    ap.add_argument("--keep", type=Path, default=None, help="keep databases, logs and reports here")
    ap.add_argument("--json", type=Path, default=None, help="write all step reports here")
    ap.add_argument(
        "--baseline", default=None, metavar="REV", help="also measure git revision REV's server, side by side"
    )
    ap.add_argument(
        "--edges",
        default=None,
        metavar="N[,N...]",
        help="measure a centre of one router node and N edge nodes (PostgreSQL and Redis) instead of one process",
    )
    ap.add_argument(
        "--postgres",
        default=os.environ.get("CONTACTCENTRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="with --edges: a PostgreSQL database to create each step's database from",
    )
    ap.add_argument(
        "--redis-url",
        default=os.environ.get("CONTACTCENTRE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="with --edges: the Redis the nodes share",
    )
    ap.add_argument(
        "--one-on-postgres",
        action="store_true",
        help="the one-process server on a fresh PostgreSQL database (--postgres) instead of SQLite",
    )
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    if args.edges is not None:
        return cluster_main(args, steps)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="live-latency-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "scenario.toml").write_text(
        SCENARIO.format(seed=args.seed, agents=args.agents, capacity=args.chat_capacity, handle_s=args.handle_s)
    )
    print(
        f"live latency: {os.cpu_count()} CPUs, server + loadgen on this machine, SQLite log on, chat only, "
        f"{args.agents} agents x chat {args.chat_capacity}, handle {args.handle_s} s, {args.seconds:.0f} s per step"
    )
    rows: list[tuple[int, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        versions = [THIS]
        if args.baseline is not None:
            versions.insert(0, stack.enter_context(baseline_tree(args.baseline, tmp)))
        configs = {}
        for v in versions:
            where = tmp if v is THIS else tmp / f"config-{v.label}"
            where.mkdir(exist_ok=True)
            # the shipped centre: package data since issue 17's re-layout, config/ in older versions
            default = next(
                p
                for p in (v.tree / "contactcentre" / "data" / "default.toml", v.tree / "config" / "default.toml")
                if p.is_file()
            )
            configs[v] = write_config(where, args.agents, args.chat_capacity, default=default)
        try:
            for i, rate in enumerate(steps):
                prof = args.profile if rate == max(steps) else None
                results = {}
                for v in versions if i % 2 == 0 else versions[::-1]:  # alternate which runs first
                    results[v] = run_step(
                        tmp,
                        configs[v],
                        rate,
                        args.seconds,
                        args.seed,
                        prof if v is THIS else None,
                        gil=args.gil,
                        profile_loadgen=args.profile_loadgen,
                        version=v,
                        postgres=args.postgres if args.one_on_postgres else None,
                    )
                    print(f"  step {rate}/s done ({v.label})", file=sys.stderr, flush=True)
                r = results[THIS]
                if len(versions) > 1:
                    r["baseline"] = results[versions[0]]
                rows.append((rate, r))
        finally:
            if rows:
                print_table(rows, args.seconds)
                print_gap(rows)
                print(saturation(rows, args.seconds))
                if len(versions) > 1:
                    print(f"\nside by side: {versions[0].label} (baseline) and this tree; ms/chat = the server's")
                    print("CPU (loop: its event loop's thread) per chat placed; p50/p99 arrival -> offer, ms")
                    print_side_by_side(rows, [f"{versions[0].label} (baseline)", "this tree"])
                    base = [(k, r["baseline"]) for k, r in rows]
                    print(f"baseline {versions[0].label}: {saturation(base, args.seconds)}")
            if args.json is not None:
                args.json.write_text(json.dumps(dict(rows), indent=1))
            if args.keep is None:
                shutil.rmtree(tmp, ignore_errors=True)
    return 0


def cluster_main(args: argparse.Namespace, steps: list[int]) -> int:
    counts = [int(n) for n in args.edges.split(",") if n.strip()]
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="live-latency-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "scenario.toml").write_text(
        SCENARIO.format(seed=args.seed, agents=args.agents, capacity=args.chat_capacity, handle_s=args.handle_s)
    )
    config = write_config(tmp, args.agents, args.chat_capacity)
    print(
        f"live latency, one router node + N edge nodes: {os.cpu_count()} CPUs shared by every node and the"
        f" generator, PostgreSQL log, Redis streams, chat only, {args.agents} agents x chat {args.chat_capacity},"
        f" handle {args.handle_s} s, {args.seconds:.0f} s per step"
    )
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        for edges in counts:
            for rate in steps:
                prof = args.profile if rate == max(steps) else None
                r = run_cluster_step(
                    tmp,
                    config,
                    rate,
                    args.seconds,
                    args.seed,
                    edges,
                    postgres=args.postgres,
                    redis=args.redis_url,
                    profile=prof,
                )
                rows.append((rate, r))
                print(f"  {edges} edges, step {rate}/s done", file=sys.stderr, flush=True)
    finally:
        if rows:
            print_cluster_table(rows, args.seconds)
            print("ms/chat: CPU of the router process, of all edge processes, and both, per chat placed; rt: an offer")
            print(
                "made to its acceptance, both as the router stamped them (router -> edge -> console -> edge -> router)"
            )
        if args.json is not None:
            args.json.write_text(json.dumps([r for _rate, r in rows], indent=1))
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
