"""Soak and fault run: ``contactcentre loadgen`` against a real server for ``--minutes`` (default 1), the server
killed with SIGKILL half-way and started again on the same database after ``--down-s`` seconds, then the
conservation count (docs/loadgen.md):

    sent = answered + abandoned + offline + disconnected + refused + error + still waiting

``refused``: the customer could not reach the server while it was down (never a contact); ``disconnected``: a
chat whose socket the crash closed before an agent joined (the chat's resume window decides what the server
makes of it); ``still waiting``: acknowledged and never offered by the end of the drain. For e-mail a 250 means
the server stored the mail, so an acknowledged mail still waiting after the restart is a lost contact: the run
reports it as ``lost_email`` and exits 1 if there is any.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_latency import REPO, cli, start_server, stop, write_config

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
capacity = {{ chat = 5 }}
[[arrivals]]
queue = "support"
channel = "chat"
per_hour = 3000
handle_time = {{ distribution = "exponential", mean_s = 2 }}
patience = {{ distribution = "exponential", mean_s = 60 }}
[[arrivals]]
queue = "support"
channel = "email"
per_hour = 600
handle_time = {{ distribution = "exponential", mean_s = 2 }}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=20.0, help="contacts per second (5:1 chat:e-mail)")
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--down-s", type=float, default=3.0, help="seconds the server stays dead")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp, args.agents, 5)
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(seed=args.seed, agents=args.agents))
    db = tmp / "events.sqlite"
    tokens = tmp / "tokens.json"
    prep = cli("loadgen", "--prepare", "--config", str(config), "--database-url", str(db), "--tokens", str(tokens))
    subprocess.run(prep, cwd=REPO, check=True, capture_output=True)
    seconds = args.minutes * 60
    # fixed ports: the restarted server must be where the load generator's customers and agents look
    ports = [str(p) for p in _free_ports(2)]
    (tmp / "run1").mkdir()
    (tmp / "run2").mkdir()
    proc, smtp_port, ws_port = start_server(tmp / "run1", config, db, ports=ports)
    report = tmp / "report.json"
    cmd = cli("loadgen", "--scenario", str(scenario), "--tokens", str(tokens), "--ws-port", str(ws_port))
    cmd += ["--smtp-port", str(smtp_port), "--rate", str(args.rate), "--duration", str(seconds)]
    cmd += ["--seed", str(args.seed), "--report", str(report), "--quiet", "--no-simulate"]
    lg = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stderr=(tmp / "loadgen.err").open("wb"))
    restarted: list[subprocess.Popen[bytes]] = []

    def fault() -> None:
        time.sleep(seconds / 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"  server killed (SIGKILL) at {seconds / 2:.0f} s", file=sys.stderr, flush=True)
        time.sleep(args.down_s)
        p2, _, _ = start_server(tmp / "run2", config, db, ports=ports)
        restarted.append(p2)
        print("  server restarted on the same database", file=sys.stderr, flush=True)

    t = threading.Thread(target=fault, daemon=True)
    t.start()
    try:
        lg.wait()
        t.join(60)
    finally:
        for p in [proc, *restarted]:
            stop(p)
    if lg.returncode != 0 or not report.exists():
        print((tmp / "loadgen.err").read_text(errors="replace")[-3000:], file=sys.stderr)
        return 2
    r = json.loads(report.read_text())
    outcomes = r["outcomes"]
    print(f"soak: {args.minutes:g} min at {args.rate:g}/s, server killed with SIGKILL at half-time, restarted")
    print(f"  sent                {r['sent']}")
    for name in ("answered", "abandoned", "offline", "disconnected", "refused", "error", "waiting"):
        print(f"  {name:<19} {outcomes.get(name, 0)}")
    accounted = sum(outcomes.values())
    print(f"  accounted for       {accounted}  ({'equal' if accounted == r['sent'] else 'NOT EQUAL'})")
    lost = r.get("waiting_by_channel", {}).get("email", 0)
    print(f"  lost_email          {lost}  (acknowledged with 250, never offered)")
    print(f"  arrival->offer ms   {r['arrival_to_offer_ms_all']}")
    return 0 if accounted == r["sent"] and lost == 0 else 1


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
