"""SIP front door under load: SIPp calls a real ``contactcentre serve`` at stepped call rates, and the same load
calls SIPp's own UAS in the same run as the reference.

Run::

    .venv/bin/python benchmarks/sip_calls.py                  # full run: 10, 25, 50, 100, 200 calls/s, 5 s each
    .venv/bin/python benchmarks/sip_calls.py --quick          # smoke run: 10, 50, 200 calls/s, 1.5 s each
    .venv/bin/python benchmarks/sip_calls.py --rates 100,400,800 --step-seconds 3 --hold-ms 200

It prints figures and asserts nothing about time (exit status 0 whatever the figures; 2 only if the server or
SIPp cannot be started at all). Needs the SIPp binary (Debian's ``sip-tester``; ``--sipp`` to point elsewhere).

The server is ``contactcentre serve`` in a subprocess (``sys.executable -m contactcentre.cli serve``) on a fresh
SQLite file in a temporary directory, with every port ephemeral (``--http-port 0`` ... ``--sip-port 0``), on
``contactcentre/data/default.toml`` copied with ``[server.voice] trunks`` raised (``--trunks``, default 1,000:
the default 30 trunks would turn the benchmark into a test of the trunk limit, every call past 30 at once getting
503) and
``sip_trusted = ["127.0.0.1"]`` (SIPp's address; else the per-source flood limits would be measured). The
support queue (number 2001, ``max_depth`` 200, ``when_full = "refuse"``) keeps its configuration; no agent logs
in, so every call waits in the queue until the caller hangs up. Its output goes to files (not pipes, which
would fill and stall it); its stderr is scanned for warnings and tracebacks at the end.

The caller is a small SIPp scenario written to the temporary directory: INVITE (from ``+3120<call number>``,
SDP offer, retransmitted from T1 = 500 ms) → optional 100/180/183 → 200 → ACK → a pause of ``--hold-ms``
(default 500 ms) → BYE (retransmitted from 500 ms) → 200. Response-time measure 1 runs from sending the INVITE
to receiving its 200 (call set-up), measure 2 from sending the BYE to its 200 (tear-down). Each step is one
SIPp process at ``-r RATE -m RATE×step_seconds`` (at least 20 calls) with ``-trace_stat``, ``-trace_rtt
-rtt_freq 1`` (every value of SIPp's own measures: the "rtd1 p99" column), ``-trace_counts`` (per
message: retransmissions sent and received), ``-trace_err`` (unexpected messages, e.g. a 503 or the centre's
BYE) and ``-trace_shortmsg`` (one line per message with a µs timestamp), bounded by ``-recv_timeout`` and
``-timeout`` and a subprocess timeout beyond both. The set-up and tear-down percentiles are computed per call
from the short-message trace, strictly by CSeq: SIPp's ``<recv response="200">`` after the BYE also accepts a
resent 200 to the INVITE, so under overload SIPp can count a call as successful whose BYE never reached the
centre; the "BYE never answered" note counts those. The kernel's UDP receive-buffer overflows
(``RcvbufErrors`` in ``/proc/net/snmp``, machine-wide) are read before and after each step.

SIPp's own response times are whole milliseconds from its main-loop clock (on this machine they come in steps of
4 ms, so ``0`` means "under about 4 ms"), hence the µs figures from the message trace. Those include SIPp's own
receive latency: the reference's set-up p50 of about 1.2 ms is mostly SIPp (caller and UAS), not the network.
"rtx out" are retransmissions SIPp
sent (INVITE or BYE not answered within 500 ms), "200 rtx in" are 200s it received again (the UAS resent its
200 because the ACK had not arrived within its T1). "CPU ms/call" is the user+system CPU time of the UAS
process (the server, or the reference SIPp UAS) over the step, from ``/proc/PID/stat``, divided by the calls
attempted: the cost per call of the thing under test, with the caller's cost (the same SIPp in both) left out.

The reference is ``sipp -sn uas`` (SIPp's built-in UAS: 180 and 200 at once, waits for ACK and BYE) on another
free port (found by binding port 0), started once and left running for every step. The steps alternate:
reference at a rate, then the server at the same rate, so slow drift of the machine hits both.

Conservation: after each server step (all of that step's calls have ended, by SIPp's account), the script
polls ``GET /api/queues`` (a supervisor token created in the fresh store before start) until nothing is waiting,
offered or with an agent, or 5 s pass, and reports what is left; at the end it also compares the server's own
counters from ``/metrics`` (contacts arrived vs abandoned on the support queue) with the calls SIPp completed,
and after shutdown the ``interactions`` rows in the store. If contacts are still queued after the last step
(a caller's ACK and BYE lost, so the centre still thinks the call is up), it waits up to ``--drain-seconds``
(default 40: the centre gives up a call without ACK after 64·T1 = 32 s) and reports what is left. "up" is
whether the server process was still running and answering HTTP after the step.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import LOADGEN_LIMITS, REPO, cpu_model, cpu_seconds, load_average, pct, start, stop

DEFAULT_CONFIG = REPO / "contactcentre" / "data" / "default.toml"
READY = re.compile(
    r"contactcentre serve: (http://127\.0\.0\.1:(\d+)/) · smtp://127\.0\.0\.1:(\d+) · "
    r"ws://127\.0\.0\.1:(\d+)/chat and /agent · store (.+) \(Ctrl-C to stop\)"
)
SIP_LINE = re.compile(r"SIP front door \(docs/sip\.md\): sip:\S+@127\.0\.0\.1:(\d+) \(UDP\)")
QUEUE_NUMBER = "2001"
QUEUE_NAME = "support"
MIN_CALLS = 20

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- benchmarks/sip_calls.py: INVITE -> 100/180 -> 200 -> ACK -> pause -> BYE -> 200 -->
<scenario name="sip_calls benchmark caller">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+3120[call_number]@[local_ip]:[local_port]>;tag=[pid]Bench[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:bench@[local_ip]:[local_port]>
      Max-Forwards: 70
      Subject: sip_calls benchmark
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bench 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="1" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+3120[call_number]@[local_ip]:[local_port]>;tag=[pid]Bench[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:bench@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500" start_rtd="2">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+3120[call_number]@[local_ip]:[local_port]>;tag=[pid]Bench[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:bench@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" rtd="2"/>
  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100, 200, 500, 1000"/>
  <CallLengthRepartition value="100, 500, 1000, 2000, 5000, 10000"/>
</scenario>
"""


# ---------------------------------------------------------------------------------------------------- helpers


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a UDP socket's receive buffer was full (all sockets, all users)."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
        return int(dict(zip(lines[0], lines[1], strict=False)).get("RcvbufErrors", 0))
    except (OSError, IndexError, ValueError):
        return 0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fmt(x: float, spec: str = ".0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# ----------------------------------------------------------------------------------------------------- server


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    sip_port: int
    token: str
    out_path: Path
    err_path: Path

    def get(self, path: str, timeout: float = 5) -> Any:
        req = urllib.request.Request(self.url + path.lstrip("/"), headers={"Authorization": f"Bearer {self.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/api/") else body.decode()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            self.get("/api/me", timeout=5)
            return True
        except Exception:
            return False

    def in_flight(self) -> dict[str, int]:
        """Support queue contacts still waiting, offered or with an agent, from /api/queues."""
        rows = {r["name"]: r for r in self.get("/api/queues")["queues"]}
        left = {"waiting": 0, "offered": 0, "with_agents": 0}
        for r in rows.values():
            for k in left:
                left[k] += int(r.get(k, 0))
        return left

    def counters(self) -> dict[str, float]:
        """The support queue's voice counters and the waiting gauge from /metrics."""
        out: dict[str, float] = {}
        want = re.compile(r"^contactcentre_(contacts_\w+_total|contacts_waiting)\{([^}]*)\} (\S+)$")
        for line in self.get("/metrics").splitlines():
            m = want.match(line)
            if m and f'queue="{QUEUE_NAME}"' in m.group(2) and 'channel="voice"' in m.group(2):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out


def write_config(tmp: Path, trunks: int) -> Path:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^(\s*)trunks = \d+", rf"\g<1>trunks = {trunks}", text)
    # SIPp calls from one address: trusted, or the per-source flood limits (docs/sip.md) would be measured
    text, t = re.subn(r"(?m)^(\s*)sip_trusted = \[\]", r'\g<1>sip_trusted = ["127.0.0.1"]', text)
    ivr_dir = (DEFAULT_CONFIG.parent / "ivr").as_posix()
    text, m = re.subn(r'(?m)^(\s*ivr = \{[^}]*")ivr/', rf"\g<1>{ivr_dir}/", text)  # menus stay where they are
    if n != 1 or m != 1 or t != 1:
        raise SystemExit("the shipped default.toml no longer has [server.voice] trunks, sip_trusted and ivr")
    path = tmp / "centre.toml"
    path.write_text(text + LOADGEN_LIMITS, encoding="utf-8")
    return path


def make_token(db: Path) -> str:
    from contactcentre.store.db import open_store
    from contactcentre.store.users import add_user

    engine = open_store(db)
    try:
        with engine.begin() as conn:
            return add_user(conn, "bench", "supervisor", 0)
    finally:
        engine.dispose()


def start_server(tmp: Path, config: Path, db: Path, token: str, timeout: float = 30) -> Server:
    cmd = [sys.executable, "-m", "contactcentre.cli", "serve", "--config", str(config), "--database-url", str(db)]
    cmd += ["--http-port", "0", "--smtp-port", "0", "--ws-port", "0", "--cti-port", "0", "--sip-port", "0"]

    def ready(text: str) -> tuple[str, int] | None:
        m, s = READY.search(text), SIP_LINE.search(text)
        return (m.group(1), int(s.group(1))) if m and s else None

    proc, (url, sip_port) = start(tmp, cmd, ready, timeout)
    return Server(proc, url, sip_port, token, tmp / "server.out", tmp / "server.err")


def server_log_findings(err_path: Path) -> tuple[Counter[str], int]:
    """Warning/error lines of the server's stderr by message shape (numbers and ids blurred), and tracebacks."""
    shapes: Counter[str] = Counter()
    text = err_path.read_text(errors="replace")
    for line in text.splitlines():
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line):
            shape = re.sub(r"^\S+ \S+ ", "", line)  # drop a leading date and time
            shape = re.sub(r"[0-9a-f]{8,}|\d+", "#", shape)
            shapes[shape[:160]] += 1
    return shapes, text.count("Traceback")


# ------------------------------------------------------------------------------------------------------- SIPp


@dataclass
class Step:
    target: str
    rate: float
    calls: int
    exit_code: int | None = None
    timed_out: bool = False
    created: int = 0
    ok: int = 0
    failed: int = 0
    wall_s: float = math.nan
    achieved_rate: float = math.nan
    setup: list[float] = field(default_factory=list)  # ms, from -trace_shortmsg (µs timestamps)
    teardown: list[float] = field(default_factory=list)
    rtd_setup: list[float] = field(default_factory=list)  # ms, SIPp's own -trace_rtt measure 1
    rtd_teardown: list[float] = field(default_factory=list)
    rtx_out: int = 0
    rtx_200_in: int = 0
    bye_unanswered: int = 0  # our BYE never got a 200 with CSeq BYE (SIPp may still count the call as a success)
    their_bye: int = 0  # BYEs the UAS sent us (the centre hanging up, e.g. a full queue)
    udp_drops: int = 0  # kernel UDP receive-buffer overflows on the machine during the step (/proc/net/snmp)
    unexpected: Counter[str] = field(default_factory=Counter)
    timeouts_on_recv: int = 0
    dead_msgs: int = 0
    cpu_s: float = math.nan
    rss_mb: float = math.nan
    up: bool | None = None
    left: dict[str, int] | None = None

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu_s / self.created if self.created else math.nan


def run_step(
    sipp: str,
    target: str,
    port: int,
    rate: float,
    calls: int,
    hold_ms: int,
    workdir: Path,
    uas_pid: int,
    limit_s: float,
) -> Step:
    """One SIPp caller process at ``rate`` calls/s for ``calls`` calls against 127.0.0.1:``port``."""
    workdir.mkdir(parents=True)
    scenario = workdir.parent / "caller.xml"
    cmd = [sipp, f"127.0.0.1:{port}", "-sf", str(scenario), "-s", QUEUE_NUMBER, "-i", "127.0.0.1", "-p", "0"]
    cmd += ["-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-d", str(hold_ms), "-nostdin"]
    cmd += ["-recv_timeout", "10000", "-timeout", f"{limit_s:.0f}s", "-timeout_error"]
    cmd += ["-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-trace_counts", "-trace_err", "-trace_shortmsg"]
    st = Step(target, rate, calls)
    cpu0 = cpu_seconds(uas_pid)
    drops0 = udp_rcvbuf_errors()
    t0 = time.monotonic()
    with (workdir / "screen.out").open("wb") as screen:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=screen, stderr=subprocess.STDOUT)
        try:
            st.exit_code = proc.wait(limit_s + 15)
        except subprocess.TimeoutExpired:
            st.timed_out = True
            st.exit_code = stop(proc, 5)
    st.wall_s = time.monotonic() - t0
    st.cpu_s = cpu_seconds(uas_pid) - cpu0
    st.udp_drops = udp_rcvbuf_errors() - drops0
    st.rss_mb = rss_mb(uas_pid)
    _read_sipp_files(workdir, st)
    return st


def _read_sipp_files(workdir: Path, st: Step) -> None:
    stat = next(workdir.glob("caller_*_.csv"), None)
    if stat is not None:
        rows = list(csv.reader(stat.open(newline=""), delimiter=";"))
        if len(rows) >= 2:
            last = dict(zip(rows[0], rows[-1], strict=False))
            st.created = int(last.get("TotalCallCreated", 0) or 0)
            st.ok = int(last.get("SuccessfulCall(C)", 0) or 0)
            st.failed = int(last.get("FailedCall(C)", 0) or 0)
            st.rtx_out = int(last.get("Retransmissions(C)", 0) or 0)
            st.timeouts_on_recv = int(last.get("FailedTimeoutOnRecv(C)", 0) or 0)
            st.dead_msgs = int(last.get("DeadCallMsgs(C)", 0) or 0) + int(last.get("OutOfCallMsgs(C)", 0) or 0)
    rtt = next(workdir.glob("caller_*_rtt.csv"), None)
    if rtt is not None:
        for line in rtt.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[1]:
                (st.rtd_setup if parts[2].strip() == "1" else st.rtd_teardown).append(float(parts[1]))
        st.rtd_setup.sort()
        st.rtd_teardown.sort()
    short = next(workdir.glob("caller_*_shortmessages.log"), None)
    if short is not None:
        _read_short_messages(short, st)
    counts = next(workdir.glob("caller_*_counts.csv"), None)
    if counts is not None:
        rows = list(csv.reader(counts.open(newline=""), delimiter=";"))
        if len(rows) >= 2:
            last = dict(zip(rows[0], rows[-1], strict=False))
            counted = sum(int(v or 0) for k, v in last.items() if re.fullmatch(r"\d+_200_Retrans", k))
            st.rtx_200_in = max(st.rtx_200_in, counted)
    errors = next(workdir.glob("caller_*_errors.log"), None)
    if errors is not None:
        for m in re.finditer(r"(?m)^SIP/2\.0 (\d{3})", errors.read_text(errors="replace")):
            st.unexpected[m.group(1)] += 1


def _read_short_messages(path: Path, st: Step) -> None:
    """Per call, the first INVITE sent to the first 200 to it received, and the same for the BYE, from SIPp's
    one-line-per-message trace (``date time epoch S|R call-id CSeq:n METHOD first-line``, µs timestamps)."""
    sent: dict[tuple[str, str], float] = {}
    done: set[tuple[str, str]] = set()
    first_invites: list[float] = []
    invite_200s = 0
    with path.open(errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                continue
            t, way, call, cseq, first = float(parts[2]), parts[3], parts[4], parts[5], parts[6]
            method = cseq.rsplit(" ", 1)[-1]
            if method not in ("INVITE", "BYE"):
                continue
            key = (call, method)
            if way == "R" and first.startswith("BYE "):
                st.their_bye += 1
                continue
            if way == "R" and method == "INVITE" and first.startswith("SIP/2.0 200"):
                invite_200s += 1
            if way == "S" and not first.startswith("SIP/2.0"):
                if key not in sent:
                    sent[key] = t
                    if method == "INVITE":
                        first_invites.append(t)
            elif way == "R" and first.startswith("SIP/2.0 200") and key in sent and key not in done:
                done.add(key)
                (st.setup if method == "INVITE" else st.teardown).append(1000 * (t - sent[key]))
    st.setup.sort()
    st.teardown.sort()
    st.bye_unanswered = sum(1 for call, method in sent if method == "BYE" and (call, method) not in done)
    st.rtx_200_in = max(st.rtx_200_in, invite_200s - len([k for k in done if k[1] == "INVITE"]))
    if len(first_invites) > 1:
        st.achieved_rate = (len(first_invites) - 1) / (max(first_invites) - min(first_invites))


# ------------------------------------------------------------------------------------------------------- main


def print_table(steps: list[Step]) -> None:
    head = (
        f"  {'target':<8} {'rate/s':>6} {'sent/s':>6} {'calls':>6} {'ok':>6} {'failed':>6} "
        f"{'setup ms p50':>12} {'p90':>6} {'p99':>6} {'max':>7} {'rtd1 p99':>8} {'BYE ms p50':>10} {'p99':>6} "
        f"{'rtx out':>7} {'200 rtx in':>10} {'CPU %':>5} {'ms/call':>7} {'RSS MB':>6} {'up':>3} {'left':>4}  notes"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for s in steps:
        notes = []
        if s.unexpected:
            notes.append("unexpected " + ", ".join(f"{k}×{v}" for k, v in sorted(s.unexpected.items())))
        if s.bye_unanswered:
            notes.append(f"BYE never answered {s.bye_unanswered}")
        if s.their_bye:
            notes.append(f"UAS sent BYE {s.their_bye}")
        if s.udp_drops:
            notes.append(f"kernel UDP drops {s.udp_drops}")
        if s.timeouts_on_recv:
            notes.append(f"recv timeouts {s.timeouts_on_recv}")
        if s.dead_msgs:
            notes.append(f"late msgs {s.dead_msgs}")
        if s.timed_out:
            notes.append("SIPp killed at the step's time limit")
        if s.exit_code not in (0, None):
            notes.append(f"sipp exit {s.exit_code}")
        left = "-" if s.left is None else str(sum(s.left.values()))
        up = "-" if s.up is None else ("yes" if s.up else "NO")
        cpu_pct = 100 * s.cpu_s / s.wall_s if s.wall_s else math.nan
        print(
            f"  {s.target:<8} {s.rate:>6g} {_fmt(s.achieved_rate, '.1f'):>6} {s.created:>6,} {s.ok:>6,} "
            f"{s.failed:>6,} {_fmt(pct(s.setup, 50), '.2f'):>12} {_fmt(pct(s.setup, 90), '.2f'):>6} "
            f"{_fmt(pct(s.setup, 99), '.2f'):>6} "
            f"{_fmt(s.setup[-1] if s.setup else math.nan, '.1f'):>7} {_fmt(pct(s.rtd_setup, 99)):>8} "
            f"{_fmt(pct(s.teardown, 50), '.2f'):>10} {_fmt(pct(s.teardown, 99), '.2f'):>6} "
            f"{s.rtx_out:>7,} {s.rtx_200_in:>10,} {_fmt(cpu_pct):>5} {_fmt(s.cpu_ms_per_call, '.2f'):>7} "
            f"{_fmt(s.rss_mb, '.0f'):>6} {up:>3} {left:>4}  {'; '.join(notes)}"
        )
    print(
        "  setup = first INVITE sent → first 200 received, BYE = BYE sent → its 200, per call from SIPp's "
        "-trace_shortmsg (µs);\n  rtd1 = SIPp's own response-time measure 1 (-trace_rtt, whole ms in 4 ms steps "
        "here); sent/s = INVITEs per second while placing calls;\n  CPU % = the UAS process's CPU over the step "
        "(of one core), ms/call = its CPU per call placed (10 ms ticks; SIPp's idle polling dominates at low rates);\n"
        "  200 rtx in = 200s to an INVITE received again; BYE never answered = no 200 with CSeq BYE came back (SIPp "
        "then still counts\n  the call ok if a resent INVITE 200 arrived instead); kernel UDP drops = RcvbufErrors "
        "in /proc/net/snmp during the step (machine-wide)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 10, 50, 200 calls/s, 1.5 s each")
    ap.add_argument("--rates", help="comma-separated call rates per second (default 10,25,50,100,200)")
    ap.add_argument("--step-seconds", type=float, help="calls per step = rate × this (default 5; quick 1.5)")
    ap.add_argument("--hold-ms", type=int, default=500, help="pause between ACK and BYE (default 500 ms)")
    ap.add_argument("--trunks", type=int, default=1000, help="[server.voice] trunks of the server (default 1,000)")
    ap.add_argument("--sipp", default=shutil.which("sipp") or "/usr/bin/sipp", help="the SIPp binary")
    ap.add_argument(
        "--drain-seconds", type=float, default=40, help="at the end, wait this long for leftover contacts (default 40)"
    )
    ap.add_argument("--no-reference", action="store_true", help="leave out the SIPp UAS reference")
    ap.add_argument("--keep", type=Path, help="keep the database, logs and SIPp files in this directory")
    args = ap.parse_args(argv)
    quick = args.quick
    rates = [float(r) for r in (args.rates or ("10,50,200" if quick else "10,25,50,100,200")).split(",")]
    step_s = args.step_seconds or (1.5 if quick else 5.0)
    wall0 = time.perf_counter()

    if not Path(args.sipp).exists():
        print(f"SIPp not found at {args.sipp}: apt-get install -y sip-tester")
        return 2
    version = subprocess.run([args.sipp, "-v"], capture_output=True, text=True, timeout=10, check=False)
    sipp_version = next((ln.strip() for ln in (version.stdout + version.stderr).splitlines() if "SIPp" in ln), "?")
    print(
        f"SIP calls benchmark{' (quick)' if quick else ''}: rates {', '.join(f'{r:g}' for r in rates)} calls/s, "
        f"{step_s:g} s of calls per step (at least {MIN_CALLS}), hold {args.hold_ms} ms, number {QUEUE_NUMBER} "
        f"(queue {QUEUE_NAME}, no agents); load average {load_average()} at start"
    )
    print(
        f"  machine: Python {sys.version.split()[0]} on {platform.platform()}, {os.cpu_count()} CPUs "
        f"({cpu_model()}); {sipp_version}"
    )

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        tmp_obj = None
        tmp = args.keep.resolve()
    else:
        tmp_obj = tempfile.TemporaryDirectory(prefix="cc_bench_sip_")
        tmp = Path(tmp_obj.name)
    (tmp / "caller.xml").write_text(SCENARIO, encoding="ISO-8859-1")
    config = write_config(tmp, args.trunks)
    db = tmp / "store.sqlite"
    token = make_token(db)

    server: Server | None = None
    uas: subprocess.Popen[bytes] | None = None
    steps: list[Step] = []
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    server_code: int | None = None
    drained: tuple[int, float] | None = None
    try:
        t0 = time.perf_counter()
        try:
            server = start_server(tmp, config, db, token)
        except RuntimeError as exc:
            print(f"  {exc}")
            return 2
        print(
            f"  server: pid {server.proc.pid}, {server.url}, sip 127.0.0.1:{server.sip_port}, started in "
            f"{time.perf_counter() - t0:.1f} s; trunks {args.trunks}; store {db}"
        )
        before = server.counters()
        if not args.no_reference:
            uas_port = free_udp_port()
            (tmp / "uas").mkdir()
            ucmd = [args.sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"]
            with (tmp / "uas" / "screen.out").open("wb") as screen:
                uas = subprocess.Popen(ucmd, cwd=tmp / "uas", stdin=subprocess.DEVNULL, stdout=screen, stderr=screen)
            time.sleep(0.3)
            if uas.poll() is not None:
                print(f"  reference SIPp UAS exited at once (code {uas.returncode}); carrying on without it")
                uas = None
            else:
                print(f"  reference: sipp -sn uas, pid {uas.pid}, on 127.0.0.1:{uas_port}")
        print()

        for i, rate in enumerate(rates):
            calls = max(MIN_CALLS, round(rate * step_s))
            limit = calls / rate + args.hold_ms / 1000 + 20  # SIPp's -timeout: generous, but bounded
            if uas is not None and uas.poll() is None:
                st = run_step(
                    args.sipp, "SIPp UAS", uas_port, rate, calls, args.hold_ms, tmp / f"s{i}_ref", uas.pid, limit
                )
                steps.append(st)
            if server.proc.poll() is not None:
                print(f"  server exited (code {server.proc.returncode}) before the {rate:g}/s step")
                break
            st = run_step(
                args.sipp, "server", server.sip_port, rate, calls, args.hold_ms, tmp / f"s{i}", server.proc.pid, limit
            )
            st.up = server.alive()
            if st.up:
                deadline = time.monotonic() + 5
                while True:
                    st.left = server.in_flight()
                    if not sum(st.left.values()) or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
            steps.append(st)
            print(
                f"  {rate:>5g}/s: server {st.ok:,}/{st.created:,} ok in {st.wall_s:.1f} s"
                + (
                    f", reference {steps[-2].ok:,}/{steps[-2].created:,} ok"
                    if len(steps) >= 2 and steps[-2].target != "server"
                    else ""
                )
                + f"; load {load_average()}",
                flush=True,
            )
        if server.alive():
            left = server.in_flight()
            if sum(left.values()) and args.drain_seconds > 0:
                print(
                    f"  {sum(left.values())} contacts still in the queues; waiting up to {args.drain_seconds:g} s "
                    "(the centre gives up a call whose ACK never came after 64·T1 = 32 s)",
                    flush=True,
                )
                t_drain = time.monotonic()
                while sum(left.values()) and time.monotonic() - t_drain < args.drain_seconds and server.alive():
                    time.sleep(0.5)
                    left = server.in_flight()
                drained = (sum(left.values()), time.monotonic() - t_drain)
            after = server.counters()
    finally:
        if uas is not None:
            stop(uas, 5)
        if server is not None:
            server_code = stop(server.proc, 30)

    print("\n=== Per step ===")
    print_table(steps)

    print("\n=== Conservation ===")
    srv = [s for s in steps if s.target == "server"]
    ok = sum(s.ok for s in srv)
    created = sum(s.created for s in srv)
    left_total = sum(sum(s.left.values()) for s in srv if s.left is not None)
    print(
        "  left in the queues after each step (waiting + offered + with agents, /api/queues): "
        + ", ".join(f"{s.rate:g}/s {'-' if s.left is None else sum(s.left.values())}" for s in srv)
        + f"; total {left_total}"
    )
    if drained is not None:
        print(f"  after waiting {drained[1]:.0f} s at the end: {drained[0]} still in the queues")
    if after:
        arrived = after.get("contacts_arrived_total", 0) - before.get("contacts_arrived_total", 0)
        abandoned = after.get("contacts_abandoned_total", 0) - before.get("contacts_abandoned_total", 0)
        print(
            f"  /metrics, support queue voice: arrived {arrived:,.0f}, abandoned {abandoned:,.0f}, waiting now "
            f"{after.get('contacts_waiting', 0):,.0f}; SIPp: {created:,} calls placed, {ok:,} completed"
        )
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "select coalesce(outcome, '(open)'), count(*) from interactions where channel = 'voice' group by 1"
            ).fetchall()
        print(f"  store after shutdown, voice interactions by outcome: {dict(rows)}")
    except sqlite3.Error as exc:
        print(f"  store not readable after shutdown: {exc}")

    print("\n=== Server ===")
    if server is not None:
        shapes, tracebacks = server_log_findings(server.err_path)
        print(f"  exit code after SIGTERM: {server_code}; tracebacks in stderr: {tracebacks}")
        if shapes:
            print(f"  warning/error lines by shape ({sum(shapes.values()):,} in all):")
            for shape, n in shapes.most_common(8):
                print(f"    {n:>6,} × {shape}")
        else:
            print("  no warning or error lines in stderr")
    print("\n=== Summary ===")
    ref = {s.rate: s for s in steps if s.target == "SIPp UAS"}
    for s in srv:
        r = ref.get(s.rate)
        line = (
            f"  {s.rate:>5g}/s: server {s.ok:,}/{s.created:,} ok, setup p50/p99 {_fmt(pct(s.setup, 50), '.2f')}/"
            f"{_fmt(pct(s.setup, 99), '.2f')} ms, {_fmt(s.cpu_ms_per_call, '.2f')} CPU ms/call"
        )
        if r is not None:
            line += (
                f" | SIPp UAS {r.ok:,}/{r.created:,} ok, setup p50/p99 {_fmt(pct(r.setup, 50), '.2f')}/"
                f"{_fmt(pct(r.setup, 99), '.2f')} ms, {_fmt(r.cpu_ms_per_call, '.2f')} CPU ms/call"
            )
            if r.cpu_ms_per_call and not math.isnan(r.cpu_ms_per_call) and r.cpu_ms_per_call > 0:
                line += f" (CPU ×{s.cpu_ms_per_call / r.cpu_ms_per_call:.0f})"
        print(line)
    busy = [s for s in srv if s.cpu_s and not math.isnan(s.cpu_s)]
    if busy:
        top = max(busy, key=lambda s: s.rate)
        print(
            f"  server CPU at {top.rate:g}/s: {top.cpu_s:.1f} s over {top.wall_s:.1f} s of step "
            f"({100 * top.cpu_s / top.wall_s:.0f} % of one core)"
        )
    print(f"wall time {time.perf_counter() - wall0:.0f} s; load average {load_average()} at the end")
    if tmp_obj is not None:
        tmp_obj.cleanup()
    else:
        print(f"kept: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
