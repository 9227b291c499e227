"""How long the worst mails hold the server's event loop, beside what parsing them on the loop would cost.

    .venv/bin/python benchmarks/mail_stall.py            # each worst mail once, pings every 50 ms
    .venv/bin/python benchmarks/mail_stall.py --quick    # smaller mails (a smoke run)

Issue 16: MIME parsing and HTML-to-text ran on the event loop, so one mail of 10,000 parts, an 8 MB HTML body
or 2,000-deep nesting stalled every channel for seconds. Now they are parsed in worker processes with a time
budget and caps. Two figures per mail, measured in the same run:

* **on the loop (reference)** — the wall time of ``parse_inbound`` on this process with no caps: what the loop
  was held for before (the tag soup never finishes: it is stopped at ``--soup-limit`` seconds);
* **live** — a real ``contactcentre serve``; an agent's console sends ``ping`` every 50 ms while the mail is
  delivered over SMTP; the round trips' p50 / p99 / max, the SMTP answer, and the server's own loop-lag
  watchdog (``contactcentre_event_loop_lag_seconds``: how many of its 100 ms ticks ran more than 50 ms late).

An idle phase (pings with no mail) comes first as the floor of the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import REPO, cli, load_average, pct, start, stop

sys.path.insert(0, str(REPO))
from tests.worst_mails import big_html, deep_nesting, many_parts, send_mail, tag_soup

READY = re.compile(
    r"contactcentre serve: (http://127\.0\.0\.1:\d+/) · smtp://127\.0\.0\.1:(\d+) · ws://127\.0\.0\.1:(\d+)/"
)
PING_EVERY_S = 0.05


def on_the_loop(data: bytes, limit_s: float) -> tuple[float, str]:
    """Parse as the old server did (no caps) in a child process, so a mail that never finishes can be stopped."""
    code = (
        "import sys, time\n"
        "from contactcentre.edge.email.channel import Rejected, parse_inbound\n"
        "data = sys.stdin.buffer.read()\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    parse_inbound(data, 'mallory@example.net', ['support@centre.example'], max_parts=10**9, max_depth=10**9)\n"
        "    what = 'parsed'\n"
        "except Rejected as r:\n"
        "    what = r.reply[:40]\n"
        "print(time.perf_counter() - t, what)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], input=data, capture_output=True, timeout=limit_s, cwd=REPO, check=True
        )
    except subprocess.TimeoutExpired:
        return limit_s, f"not finished after {limit_s:g} s"
    seconds, what = done.stdout.decode().split(" ", 1)
    return float(seconds), what.strip()


async def ping_while(ws_port: int, token: str, done: threading.Event) -> list[float]:
    from websockets.asyncio.client import connect

    rtts: list[float] = []
    async with connect(f"ws://127.0.0.1:{ws_port}/agent", proxy=None) as ws:
        await ws.send(json.dumps({"type": "login", "token": token}))
        while json.loads(await ws.recv()).get("type") != "welcome":
            pass
        while not done.is_set():
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "ping"}))
            while (f := json.loads(await ws.recv())).get("type") != "ack" or f.get("for") != "ping":
                pass
            rtts.append(time.perf_counter() - sent)
            await asyncio.sleep(PING_EVERY_S)  # the pace of the probe, not a wait for a result
    return rtts


def late_ticks(http_url: str) -> tuple[int, int]:
    """(watchdog ticks in all, ticks more than 50 ms late) from the server's /metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(http_url + "metrics", timeout=30) as resp:
        text = resp.read().decode()
    buckets = dict(re.findall(r'contactcentre_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', text))
    total = int(float(buckets["+Inf"]))
    within = max((float(v) for le, v in buckets.items() if le != "+Inf" and float(le) <= 0.05), default=0.0)
    return total, total - int(within)


def phase(ws_port: int, token: str, http_url: str, mail: bytes | None, smtp_port: int, idle_s: float) -> dict[str, Any]:
    done = threading.Event()
    result: dict[str, Any] = {}
    before = late_ticks(http_url)

    def deliver() -> None:
        try:
            if mail is None:
                done.wait(idle_s)
            else:
                t = time.perf_counter()
                result["code"] = send_mail(smtp_port, mail, timeout_s=300)
                result["smtp_s"] = time.perf_counter() - t
        finally:
            done.set()

    threading.Thread(target=deliver, daemon=True).start()
    rtts = sorted(asyncio.run(ping_while(ws_port, token, done)))
    after = late_ticks(http_url)
    result |= {
        "pings": len(rtts),
        "p50_ms": pct(rtts, 50) * 1000,
        "p99_ms": pct(rtts, 99) * 1000,
        "max_ms": rtts[-1] * 1000 if rtts else float("nan"),
        "ticks": after[0] - before[0],
        "late": after[1] - before[1],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: mails a tenth of the size")
    ap.add_argument("--soup-limit", type=float, default=20.0, help="seconds before the reference gives up (soup)")
    args = ap.parse_args(argv)
    scale = 10 if args.quick else 1
    mails = {
        "10,000 parts": many_parts(10_000 // scale),
        "2,000-deep nesting": deep_nesting(2_000 // scale),
        "8 MB HTML": big_html(8_000_000 // scale),
        "tag soup": tag_soup(400_000 // (scale * 3 if args.quick else 1)),  # quadratic: keep the smoke run short
    }
    print(f"mail_stall: {'quick' if args.quick else 'full'} run; load average {load_average()}")
    print("\nOn the loop (reference: parse_inbound with no caps, as the old server ran it on its event loop)")
    for name, data in mails.items():
        seconds, what = on_the_loop(data, args.soup_limit)
        print(f"  {name:20s} {len(data) / 1e6:6.2f} MB  held the loop {seconds * 1000:9.1f} ms  ({what})")

    with tempfile.TemporaryDirectory(prefix="mail-stall-") as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "centre.sqlite"
        subprocess.run(cli("migrate", "--database-url", str(db)), cwd=REPO, check=True, capture_output=True)
        added = subprocess.run(
            cli("user", "add", "ada", "--role", "agent", "--agent-id", "ada", "--database-url", str(db)),
            cwd=REPO, check=True, capture_output=True, text=True,
        )  # fmt: skip
        token = re.search(r"cc_\S+", added.stdout).group(0)  # type: ignore[union-attr]
        config = tmp / "centre.toml"
        text = (REPO / "contactcentre" / "data" / "default.toml").read_text(encoding="utf-8")
        config.write_text(text.replace("smarthost_port = 25", "smarthost_port = 9"), encoding="utf-8")
        cmd = cli("serve", "--config", str(config), "--database-url", str(db), "--http-port", "0", "--smtp-port", "0")
        cmd += ["--ws-port", "0", "--cti-port", "0", "--sip-port", "0"]
        proc, ready = start(tmp, cmd, READY.search, 60)
        http_url, smtp_port, ws_port = ready.group(1), int(ready.group(2)), int(ready.group(3))
        try:
            print(f"\nLive (an agent pings every {PING_EVERY_S * 1000:.0f} ms; watchdog ticks every 100 ms)")
            print(f"  {'phase':20s} {'SMTP':>5s} {'took s':>7s} {'pings':>6s} {'p50 ms':>7s} {'p99 ms':>7s} "
                  f"{'max ms':>7s} {'ticks >50 ms late':>18s}")  # fmt: skip
            rows = [("idle (floor)", None), *mails.items()]
            for name, data in rows:
                r = phase(ws_port, token, http_url, data, smtp_port, idle_s=3.0)
                code = str(r.get("code", "–"))
                took = f"{r['smtp_s']:.1f}" if "smtp_s" in r else "–"
                print(f"  {name:20s} {code:>5s} {took:>7s} {r['pings']:6d} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} "
                      f"{r['max_ms']:7.1f} {r['late']:>8d} of {r['ticks']:<6d}")  # fmt: skip
        finally:
            stop(proc)
    print(f"\nload average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
