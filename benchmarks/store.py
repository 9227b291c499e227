"""Case store: sustained durable event writes with group commit, and screen-pop latency at a million
interactions, on SQLite and PostgreSQL.

Run::

    .venv/bin/python benchmarks/store.py                  # full run: 200,000 events; 1,000,000 interactions
    .venv/bin/python benchmarks/store.py --quick          # smoke run: small sizes
    .venv/bin/python benchmarks/store.py --no-postgres    # SQLite only
    .venv/bin/python benchmarks/store.py --postgres postgresql://postgres@db:5432/postgres

It prints figures and asserts nothing about time (the exit status is 0 whatever the figures; only
``--require-postgres`` without a reachable server fails). SQLite is a temporary file opened by ``open_store``
(WAL, ``synchronous=NORMAL``); PostgreSQL gets fresh databases (``cc_bench_*``) created through the admin URL
and dropped at the end. Everything generated comes from seeded ``random.Random`` streams, so two runs write
exactly the same rows (only the timings differ).

Part 1, durable writes. The golden router log (``tests/golden/default_seed7.jsonl``, a simulated morning of a
small centre) is replicated with contact and offer ids made unique per copy and times shifted by a copy's
span, so the writer projects interactions as it would live: an INSERT per arrival, UPDATEs for queueing,
connection, disposition and close, beside the ``events`` row of every event. A producer appends it in chunks
of 50-200 events (as the router hands over its output), yielding to the loop with ``asyncio.sleep(0)`` between
chunks, to a ``StoreWriter`` with its defaults (those of the server). The figure is events / time from the
first ``append`` to ``flush()`` returning, i.e. until the last event is committed. The producer is never
slowed (the routing path is never refused), so the writer runs saturated and its batches grow to whatever
accumulated during the previous commit: the figure is the writer's capacity. A second, paced run offers the
first events at ``--rate`` (20,000 events/s, twice the goal) in the same chunks, and shows the batches the
writer then forms and the lag from a chunk's ``append`` to the end of the commit holding it (what ``await
write()`` waits). The reference is the naive way, one transaction per event (the event row and its projection,
``engine.begin()`` each), on a fresh database.

Part 2, screen-pop. A fresh database is filled with customers (a phone ``+3120xxxxxxx``, an e-mail address and
a chat token each), cases (open and closed, with due times) and interactions spread over customers by a
lognormal activity (most customers have a handful, a few hundreds), on voice, chat and e-mail, with outcomes
and dispositions (some ``complaint``), over the year before ``now``. SQLite is filled by the Core ``insert()``
run as the driver's executemany over tuples in transactions of 100,000 rows, PostgreSQL by ``COPY``; then
``ANALYZE`` (PostgreSQL: ``VACUUM ANALYZE``, where autovacuum would get to by itself after a bulk load). Then
``screen_pop`` is timed (``perf_counter_ns`` around the call, on one ``db.reader`` connection as the server
reads: autocommit on PostgreSQL; a rollback after each pop outside the timing) for identities drawn as: 10 %
the 50 heaviest customers, 50 % the customer of a random interaction (callers in proportion to how often they
call), 35 % a uniformly random customer (some have no history at all), 5 % identities nobody has. Phones are
given in national and international forms (``020 1234567``, ``+31 20 123 4567`` ...) so normalisation is in
the figure, e-mail addresses in mixed case (some as ``Name <address>``), chat tokens as issued. A warm-up of a
few hundred pops precedes the measurement. The query plans of the three screen-pop queries for the heaviest
customer are printed so the index use can be checked. On PostgreSQL the same pops are also timed with each pop
in a transaction of its own, as a diagnostic (a row marked *; the goal is judged on ``db.reader``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import itertools
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import sqlalchemy
from sqlalchemy import Engine, Table, bindparam, create_engine, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import cpu_model, load_average, pct

from contactcentre import events as E
from contactcentre.store import projection, screenpop
from contactcentre.store.db import connect, open_store, reader, resolve_url
from contactcentre.store.identity import name_key
from contactcentre.store.schema import OPEN_CASE_STATUSES, cases, customers, events, identities, interactions, messages
from contactcentre.store.writer import StoreWriter

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "default_seed7.jsonl"
GOAL_EVENTS_PER_S = 10_000.0
GOAL_P99_MS = 5.0
GOAL_INTERACTIONS = 1_000_000
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
NOW_MS = 1_798_761_600_000  # 2027-01-01 00:00 UTC: the populated history is the year before this
CHUNK_MIN, CHUNK_MAX = 50, 200  # events per append, as the router hands its output over
ROWS_PER_TRANSACTION = 100_000  # SQLite populate
ACTIVITY_SIGMA = 1.2  # lognormal σ of a customer's activity: median ≈ half the mean, the top ≈ 100× the mean
HEAVIEST = 50


# ------------------------------------------------------------------------------------------------ helpers


def _mb(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return f"{size / 1e6:,.0f} MB"


class Postgres:
    """The admin connection, and the fresh databases made through it (dropped by ``drop_all``)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.admin = create_engine(
            resolve_url(admin_url), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        self.tag = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def facts(self) -> str:
        with self.admin.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            settings = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("synchronous_commit", "fsync", "shared_buffers", "wal_level")
            }
            raw: Any = conn.connection.dbapi_connection
            rtt = []
            for _ in range(500):
                t0 = time.perf_counter_ns()
                raw.execute("SELECT 1").fetchall()
                rtt.append(time.perf_counter_ns() - t0)
        rtt.sort()
        where = self.admin.url.render_as_string(hide_password=True)
        return (
            f"PostgreSQL {version} at {where} ({', '.join(f'{k}={v}' for k, v in settings.items())}); "
            f"round trip of SELECT 1 on raw psycopg p50 {pct(rtt, 50) / 1e6:.3f} ms, p99 {pct(rtt, 99) / 1e6:.3f} ms"
        )

    def fresh(self, label: str) -> str:
        name = f"cc_bench_{self.tag}_{label}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
        self.admin.dispose()


@dataclass
class Target:
    """One database product under test: how to get a fresh, empty database of it."""

    name: str
    directory: Path | None = None  # SQLite: where the files go
    postgres: Postgres | None = None

    def fresh(self, label: str) -> str:
        if self.postgres is not None:
            return self.postgres.fresh(label)
        assert self.directory is not None
        return f"sqlite:///{self.directory / f'{label}.sqlite'}"


# ------------------------------------------------------------------------------------ part 1: durable writes


def event_stream(n: int) -> tuple[list[E.Event], int]:
    """``n`` events: the golden log over and over, each copy with its own contact and offer ids and its times
    shifted past the previous copy. Returns the events and the number of copies started."""
    base = [E.decode(line) for line in GOLDEN.read_bytes().splitlines() if line.strip()]
    span = base[-1].at_ms - base[0].at_ms + 60_000
    out: list[E.Event] = []
    for copy in itertools.count():
        shift = copy * span
        for ev in base:
            changes: dict[str, Any] = {"at_ms": ev.at_ms + shift}
            fields = ev.__struct_fields__
            if "contact_id" in fields:
                changes["contact_id"] = f"{ev.contact_id}.{copy}"  # type: ignore[attr-defined]
            if "offer_id" in fields:
                changes["offer_id"] = f"{ev.offer_id}.{copy}"  # type: ignore[attr-defined]
            out.append(msgspec.structs.replace(ev, **changes))
            if len(out) >= n:
                return out, copy + 1
    raise AssertionError("unreachable")


class RecordingWriter(StoreWriter):
    """The server's writer, noting each commit: records in it, seconds inside it, and when it ended together
    with how many records were then durable (nothing else changes)."""

    def __init__(self, engine: Engine, **kw: Any) -> None:
        self.batches: list[tuple[int, float]] = []
        self.ends: list[tuple[int, float]] = []  # (records committed so far, perf_counter at commit end)
        self._done = 0
        super().__init__(engine, **kw)

    def _commit(self, records: list[Any]) -> None:
        t0 = time.perf_counter()
        super()._commit(records)
        t1 = time.perf_counter()
        self._done += len(records)
        self.batches.append((len(records), t1 - t0))
        self.ends.append((self._done, t1))


@dataclass
class WriteResult:
    events: int
    seconds: float
    appended_s: float  # when the producer had handed over its last chunk
    peak_pending: int
    batches: list[tuple[int, float]]
    rows: dict[str, int]
    lag_ms: list[float] = field(default_factory=list)  # per chunk: append → its commit ended, ascending

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    @property
    def mean_batch(self) -> float:
        return self.events / max(1, len(self.batches))


def _count_rows(url: str) -> dict[str, int]:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in (events, interactions, messages)
            }
    finally:
        engine.dispose()


def _chunked(evs: list[E.Event], seed: int) -> list[list[E.Event]]:
    rng = random.Random(seed)
    chunks: list[list[E.Event]] = []
    i = 0
    while i < len(evs):
        size = rng.randint(CHUNK_MIN, CHUNK_MAX)
        chunks.append(evs[i : i + size])
        i += size
    return chunks


async def _produce(url: str, evs: list[E.Event], seed: int, rate: float | None) -> WriteResult:
    """Append ``evs`` in router-sized chunks: as fast as the loop goes (``rate`` None) or at ``rate`` events/s;
    then ``flush()``."""
    chunks = _chunked(evs, seed)
    writer = RecordingWriter(open_store(url))
    appended: list[tuple[int, float]] = []  # (sequence number, perf_counter at append)
    gc.collect()
    peak = sent = 0
    t0 = time.perf_counter()
    for chunk in chunks:
        if rate is not None:
            delay = t0 + sent / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
        seq = writer.append(chunk)
        appended.append((seq, time.perf_counter()))
        sent += len(chunk)
        peak = max(peak, writer.pending)
        if rate is None:
            await asyncio.sleep(0)
    appended_s = time.perf_counter() - t0
    await writer.flush()
    seconds = time.perf_counter() - t0
    await writer.close()  # also disposes of the engine
    done = [n for n, _ in writer.ends]
    lags = sorted(
        (writer.ends[bisect.bisect_left(done, seq)][1] - at) * 1000 for seq, at in appended if seq <= done[-1]
    )
    return WriteResult(len(evs), seconds, appended_s, peak, writer.batches, _count_rows(url), lags)


def naive_writes(url: str, evs: list[E.Event]) -> float:
    """One transaction per event: its row and its projection. Returns events per second."""
    engine = open_store(url)
    try:
        gc.collect()
        t0 = time.perf_counter()
        for ev in evs:
            with engine.begin() as conn:
                projection.write(conn, projection.fold([ev]))
        return len(evs) / (time.perf_counter() - t0)
    finally:
        engine.dispose()


@dataclass
class WriteFigures:
    saturated: WriteResult
    paced: WriteResult
    naive_events: int
    naive_per_s: float


def part_writes(
    targets: list[Target], n_events: int, n_naive: int, rate: float, paced_s: float, seed: int
) -> dict[str, WriteFigures]:
    evs, copies = event_stream(n_events)
    n_paced = min(n_events, int(rate * paced_s))
    kinds: dict[str, int] = {}
    for ev in evs:
        tag = ev.__struct_config__.tag
        assert isinstance(tag, str)
        kinds[tag] = kinds.get(tag, 0) + 1
    projected = sum(kinds.get(k, 0) for k in ("contact.queued", "contact.connected", "contact.closed"))
    print(
        "\n=== 1. Sustained durable event writes: StoreWriter group commit (server defaults: batch_size 1000, "
        "max_delay 50 ms) ==="
    )
    print(
        f"  stream: the golden log ({GOLDEN.name}) replicated over {copies} copies with unique contact/offer ids: "
        f"{len(evs):,} events, {kinds.get('contact.arrived', 0):,} arrivals (interaction INSERTs), "
        f"{projected:,} queued/connected/closed and {kinds.get('disposition.set', 0):,} dispositions "
        "(interaction UPDATEs), every event also an events row"
    )
    print(
        f"  saturated: chunks of {CHUNK_MIN}-{CHUNK_MAX} events, asyncio.sleep(0) between chunks, producer never "
        "slowed; figure = events / (first append → flush() returned, all durable)"
    )
    print(
        f"  paced: the first {n_paced:,} events offered at {rate:,.0f} events/s in the same chunks; lag = a "
        "chunk's append → end of the commit holding it"
    )
    print(f"  naive: the first {n_naive:,} events, one engine.begin() transaction per event, fresh database")
    results: dict[str, WriteFigures] = {}
    for target in targets:
        saturated = asyncio.run(_produce(target.fresh("writes"), evs, seed, None))
        paced = asyncio.run(_produce(target.fresh("paced"), evs[:n_paced], seed, rate))
        naive = naive_writes(target.fresh("naive"), evs[:n_naive])
        results[target.name] = WriteFigures(saturated, paced, n_naive, naive)
    print(
        f"  {'database':<11} {'run':<10} {'events':>8} {'seconds':>7} {'events/s':>9} {'commits':>7} "
        f"{'mean batch':>10} {'max batch':>9} {'in commit':>9} {'lag p50/p99/max ms':>20}"
    )
    for name, f in results.items():
        for label, r in (("saturated", f.saturated), ("paced", f.paced)):
            sizes = [b for b, _ in r.batches]
            in_commit = sum(s for _, s in r.batches)
            lag = f"{pct(r.lag_ms, 50):.0f} / {pct(r.lag_ms, 99):.0f} / {r.lag_ms[-1]:.0f}" if r.lag_ms else "-"
            print(
                f"  {name if label == 'saturated' else '':<11} {label:<10} {r.events:>8,} {r.seconds:>7.2f} "
                f"{r.per_s:>9,.0f} {len(r.batches):>7,} {r.mean_batch:>10,.0f} {max(sizes, default=0):>9,} "
                f"{in_commit / r.seconds:>9.0%} {lag:>20}"
            )
        print(
            f"  {'':<11} {'naive':<10} {f.naive_events:>8,} {f.naive_events / f.naive_per_s:>7.2f} "
            f"{f.naive_per_s:>9,.0f} {f.naive_events:>7,} {1:>10} {1:>9}"
        )
    for name, f in results.items():
        r = f.saturated
        print(
            f"  {name}: group commit (saturated) / naive = {r.per_s / f.naive_per_s:.1f}×; rows after the saturated "
            f"run: events {r.rows['events']:,}, interactions {r.rows['interactions']:,}; producer done appending "
            f"after {r.appended_s:.2f} s, peak pending {r.peak_pending:,}; commit sizes "
            + ", ".join(f"{b:,}" for b, _ in r.batches[:5])
            + (" ..." if len(r.batches) > 5 else "")
        )
    for name, f in results.items():
        p = f.paced
        per_event = sum(t for _, t in p.batches) / p.events
        print(
            f"  {name} paced: {p.mean_batch:,.0f}-event commits cost {per_event * 1e6:.1f} µs per event in the "
            f"writer thread, i.e. it would keep up with batches of that size up to ~{1 / per_event:,.0f} events/s"
        )
    print(
        "  in commit = share of the wall time the writer thread spent inside its transactions (fold, encode, "
        "execute, COMMIT); lag of the saturated run = how long the whole backlog waited for its commit"
    )
    return results


# --------------------------------------------------------------------------------- part 2: screen-pop data

FIRST = (
    "Anna", "Bram", "Chen", "Daan", "Emma", "Fatima", "Gerrit", "Hanna", "Ibrahim", "Julia",
    "Kees", "Lotte", "Mohammed", "Noor", "Olaf", "Priya", "Ruben", "Sanne", "Tom", "Yara",
)  # fmt: skip
LAST = (
    ("de Vries", "devries"), ("Jansen", "jansen"), ("Bakker", "bakker"), ("Visser", "visser"),
    ("Smit", "smit"), ("Meijer", "meijer"), ("Mulder", "mulder"), ("de Boer", "deboer"), ("Bos", "bos"),
    ("Vos", "vos"), ("Peters", "peters"), ("Hendriks", "hendriks"), ("van Dijk", "vandijk"),
    ("Dekker", "dekker"), ("Brouwer", "brouwer"), ("Yılmaz", "yilmaz"), ("Müller", "muller"),
    ("Nguyen", "nguyen"), ("O'Brien", "obrien"), ("García", "garcia"),
)  # fmt: skip
DOMAINS = ("example.com", "mail.example.net", "example.org", "post.example.nl")
TIERS = ((None, 0.35), ("bronze", 0.3), ("silver", 0.2), ("gold", 0.12), ("platinum", 0.03))
QUEUES = ("support", "sales", "billing", "retention", "technical")
CATEGORIES = (("billing", 0.3), ("technical", 0.3), ("delivery", 0.15), ("account", 0.15), ("complaint", 0.1))
CHANNELS = (("voice", 0.55), ("chat", 0.3), ("email", 0.15))
OUTCOMES = (("handled", 0.84), ("abandoned", 0.1), ("transferred", 0.03), ("overflowed", 0.02), ("failed", 0.01))
DISPOSITIONS = (
    (None, 0.25),
    ("resolved", 0.35),
    ("information", 0.15),
    ("billing", 0.1),
    ("sale", 0.07),
    ("complaint", 0.08),
)


def _weighted(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    x = rng.random()
    for value, w in table:
        x -= w
        if x < 0:
            return value
    return table[-1][0]


class Plan:
    """Who owns what (drawn once from the seed); the rows themselves come from ``*_rows`` generators, which
    reproduce the same rows every time they are run."""

    def __init__(self, seed: int, n_customers: int, n_cases: int, n_interactions: int) -> None:
        t0 = time.perf_counter()
        rng = random.Random(seed)
        self.seed = seed
        self.n_customers, self.n_cases, self.n_interactions = n_customers, n_cases, n_interactions
        activity = [rng.lognormvariate(0.0, ACTIVITY_SIGMA) for _ in range(n_customers)]
        self.owner = array(
            "i", rng.choices(range(n_customers), cum_weights=list(itertools.accumulate(activity)), k=n_interactions)
        )
        self.counts = [0] * n_customers
        for c in self.owner:
            self.counts[c] += 1
        # Busy customers open more cases, but not in proportion: one long case collects many contacts.
        case_weights = list(itertools.accumulate(a**0.7 for a in activity))
        self.case_owner = array("i", rng.choices(range(n_customers), cum_weights=case_weights, k=n_cases))
        self.cases_of: dict[int, list[int]] = {}
        for n, c in enumerate(self.case_owner):
            self.cases_of.setdefault(c, []).append(n)
        self.subscriber = rng.sample(range(10**7), n_customers)  # +3120 and these 7 digits
        self.first = [rng.randrange(len(FIRST)) for _ in range(n_customers)]
        self.last = [rng.randrange(len(LAST)) for _ in range(n_customers)]
        self.domain = [rng.randrange(len(DOMAINS)) for _ in range(n_customers)]
        self.token = [f"v-{rng.getrandbits(64):016x}" for _ in range(n_customers)]
        self.tier = [_weighted(rng, TIERS) for _ in range(n_customers)]
        self.heaviest = sorted(range(n_customers), key=lambda c: -self.counts[c])[:HEAVIEST]
        self.seconds = time.perf_counter() - t0

    @staticmethod
    def customer_id(c: int) -> str:
        return f"cus-{c:07d}"

    @staticmethod
    def case_id(n: int) -> str:
        return f"case-{n:07d}"

    def phone(self, c: int) -> str:
        return f"+3120{self.subscriber[c]:07d}"

    def email(self, c: int) -> str:
        return f"{FIRST[self.first[c]].lower()}.{LAST[self.last[c]][1]}{c}@{DOMAINS[self.domain[c]]}"

    def name(self, c: int) -> str:
        return f"{FIRST[self.first[c]]} {LAST[self.last[c]][0]}"


CUSTOMER_COLS = (
    "id", "name", "name_key", "tier", "lifetime_value", "value_segment", "account_manager_id", "language",
    "consent_email", "consent_sms", "consent_calls", "do_not_call", "notes", "created_ms", "updated_ms",
)  # fmt: skip
IDENTITY_COLS = ("customer_id", "kind", "value", "verified", "created_ms")
CASE_COLS = (
    "id", "token", "customer_id", "subject", "category", "status", "priority", "queue", "owner_id", "created_ms",
    "updated_ms", "first_response_due_ms", "first_response_ms", "resolution_due_ms", "closed_ms",
)  # fmt: skip
INTERACTION_COLS = (
    "id", "case_id", "customer_id", "channel", "direction", "address", "subject", "queue", "tier", "agent_id",
    "started_ms", "answered_ms", "ended_ms", "wait_ms", "talk_ms", "hold_ms", "wrap_ms", "handle_ms",
    "disposition", "outcome",
)  # fmt: skip


def customer_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(plan.seed * 1000 + 1)
    for c in range(plan.n_customers):
        created = NOW_MS - 3 * YEAR_MS + int(rng.random() * 2 * YEAR_MS)
        value = round(rng.lognormvariate(6.0, 1.0), 2)
        segment = "vip" if value > 5000 else "high" if value > 1500 else "mid" if value > 300 else "low"
        name = plan.name(c)
        yield (
            plan.customer_id(c),
            name,
            name_key(name),
            plan.tier[c],
            value,
            segment,
            f"am{rng.randrange(40):02d}" if segment == "vip" else None,
            "nl" if rng.random() < 0.7 else "en",
            rng.random() < 0.6,
            rng.random() < 0.4,
            rng.random() < 0.5,
            rng.random() < 0.03,
            None,
            created,
            created + int(rng.random() * YEAR_MS),
        )


def identity_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(plan.seed * 1000 + 2)
    for c in range(plan.n_customers):
        cid = plan.customer_id(c)
        created = NOW_MS - YEAR_MS - int(rng.random() * YEAR_MS)
        yield (cid, "phone", plan.phone(c), rng.random() < 0.8, created)
        yield (cid, "email", plan.email(c), rng.random() < 0.6, created)
        yield (cid, "chat", plan.token[c], False, created)


def case_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(plan.seed * 1000 + 3)
    for n in range(plan.n_cases):
        created = NOW_MS - int(rng.random() * YEAR_MS)
        recent = NOW_MS - created < 60 * DAY_MS
        if recent:
            status = _weighted(rng, (("new", 0.1), ("open", 0.3), ("pending", 0.2), ("solved", 0.2), ("closed", 0.2)))
        else:  # old cases are mostly done; a few are stale and still open
            status = _weighted(rng, (("open", 0.03), ("pending", 0.02), ("solved", 0.05), ("closed", 0.9)))
        priority = _weighted(rng, ((0, 0.7), (1, 0.2), (2, 0.08), (3, 0.02)))
        category = _weighted(rng, CATEGORIES)
        first_due = created + (4 if priority else 24) * 3_600_000
        first_response = None if status == "new" else created + int(rng.random() * 30 * 3_600_000)
        closed = created + int(rng.random() * 14 * DAY_MS) if status in ("solved", "closed") else None
        yield (
            plan.case_id(n),
            f"[#C-{n:07X}]",
            plan.customer_id(plan.case_owner[n]),
            f"{category} question #{n}",
            category,
            status,
            priority,
            QUEUES[rng.randrange(len(QUEUES))],
            f"a{rng.randrange(400):03d}" if status != "new" else None,
            created,
            closed or first_response or created,
            first_due,
            first_response,
            created + rng.randint(3, 10) * DAY_MS,
            closed,
        )


def interaction_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(plan.seed * 1000 + 4)
    for n in range(plan.n_interactions):
        c = plan.owner[n]
        channel = _weighted(rng, CHANNELS)
        outbound = channel == "voice" and rng.random() < 0.06
        address = plan.phone(c) if channel == "voice" else plan.email(c) if channel == "email" else plan.token[c]
        own_cases = plan.cases_of.get(c)
        case_id = plan.case_id(rng.choice(own_cases)) if own_cases and rng.random() < 0.4 else None
        started = NOW_MS - int(rng.random() * YEAR_MS)
        outcome = "handled" if outbound else _weighted(rng, OUTCOMES)
        wait = int(rng.expovariate(1 / 40_000))
        answered = ended = talk = hold = wrap = handle = disposition = None
        if outcome in ("handled", "transferred"):
            answered = started + wait
            talk = int(rng.lognormvariate(12.0, 0.6))  # median ≈ 160 s
            hold = int(rng.expovariate(1 / 20_000)) if rng.random() < 0.2 else 0
            wrap = int(rng.expovariate(1 / 30_000))
            handle = talk + hold + wrap
            ended = answered + talk + hold
            disposition = _weighted(rng, DISPOSITIONS)
        else:
            ended = started + wait
        yield (
            f"ct-{n:08d}",
            case_id,
            plan.customer_id(c),
            channel,
            "outbound" if outbound else "inbound",
            address,
            f"Re: question #{n}" if channel == "email" else None,
            QUEUES[rng.randrange(len(QUEUES))],
            plan.tier[c],
            f"a{rng.randrange(400):03d}" if answered is not None else None,
            started,
            answered,
            ended,
            wait,
            talk,
            hold,
            wrap,
            handle,
            disposition,
            outcome,
        )


TABLES: tuple[tuple[Table, tuple[str, ...], Any], ...] = (
    (customers, CUSTOMER_COLS, customer_rows),
    (identities, IDENTITY_COLS, identity_rows),
    (cases, CASE_COLS, case_rows),
    (interactions, INTERACTION_COLS, interaction_rows),
)


def _chunks(rows: Iterable[tuple[Any, ...]], size: int, clock: list[float]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows in lists of ``size``; the time spent generating them is added to ``clock[0]``."""
    it = iter(rows)
    while True:
        t0 = time.perf_counter()
        chunk = list(itertools.islice(it, size))
        clock[0] += time.perf_counter() - t0
        if not chunk:
            return
        yield chunk


def populate(engine: Engine, plan: Plan) -> dict[str, float]:
    """Fill the migrated, empty database; returns seconds spent generating, writing and analysing."""
    generating = [0.0]
    t0 = time.perf_counter()
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for table, cols, rows in TABLES:
                with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for chunk in _chunks(rows(plan), 50_000, generating):
                        for row in chunk:
                            copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        loaded = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        for table, cols, rows in TABLES:
            # The Core INSERT, compiled once and run as the driver's executemany over plain tuples: half the
            # time of ``conn.execute(insert(table), [dict, ...])``, which builds and processes a dict per row.
            sql = str(insert(table).values({c: bindparam(c) for c in cols}).compile(dialect=engine.dialect))
            for chunk in _chunks(rows(plan), ROWS_PER_TRANSACTION, generating):
                with engine.begin() as conn:
                    conn.exec_driver_sql(sql, chunk)
        loaded = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    done = time.perf_counter()
    return {
        "total": done - t0,
        "generate": generating[0],
        "write": loaded - t0 - generating[0],
        "analyze": done - loaded,
    }


# -------------------------------------------------------------------------------- part 2: screen-pop timing


def _phone_forms(rng: random.Random, subscriber: int) -> str:
    s = f"{subscriber:07d}"
    return rng.choice(
        (
            f"020 {s}",
            f"020-{s[:3]} {s[3:5]} {s[5:]}",
            f"(020) {s[:3]}-{s[3:]}",
            f"+31 20 {s[:3]} {s[3:]}",
            f"0031 20 {s}",
            f"+3120{s}",
        )
    )


def _mixed_case(rng: random.Random, text_: str) -> str:
    return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in text_)


def draw_identities(plan: Plan, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """``n`` (group, kind, value) as a screen-pop would receive them."""
    taken = set(plan.subscriber)
    out: list[tuple[str, str, str]] = []
    for _ in range(n):
        x = rng.random()
        kind = _weighted(rng, (("phone", 0.45), ("email", 0.35), ("chat", 0.2)))
        if x < 0.05:
            group = "unknown"
            if kind == "phone":
                while (sub := rng.randrange(10**7)) in taken:
                    pass
                value = _phone_forms(rng, sub)
            elif kind == "email":
                value = _mixed_case(rng, f"nobody{rng.randrange(10**6)}@example.com")
            else:
                value = f"v-unknown-{rng.getrandbits(48):012x}"
            out.append((group, kind, value))
            continue
        if x < 0.15:
            group, c = "heaviest", rng.choice(plan.heaviest)
        elif x < 0.65:
            group, c = "by activity", plan.owner[rng.randrange(plan.n_interactions)]
        else:
            group, c = "uniform", rng.randrange(plan.n_customers)
        if kind == "phone":
            value = _phone_forms(rng, plan.subscriber[c])
        elif kind == "email":
            value = _mixed_case(rng, plan.email(c))
            if rng.random() < 0.1:
                value = f"{plan.name(c)} <{value}>"
        else:
            value = plan.token[c]
        out.append((group, kind, value))
    return out


@dataclass
class PopResult:
    populate: dict[str, float]
    size: str
    ns: dict[str, list[int]] = field(default_factory=dict)  # by group, and "all"
    matched: int = 0
    wrong: list[str] = field(default_factory=list)
    plans: list[tuple[str, list[str]]] = field(default_factory=list)
    transaction_ns: list[int] = field(default_factory=list)  # PostgreSQL diagnostic: each pop in a transaction


def _plan_lines(conn: Any, dialect: str, stmt: Any) -> list[str]:
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if dialect == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
        depth: dict[int, int] = {0: 0}
        lines = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * (depth[node] - 1) + detail)
        return lines
    return [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).all()]


def measure_pops(
    engine: Engine,
    plan: Plan,
    sample: list[tuple[str, str, str]],
    warm: list[tuple[str, str, str]],
    transactional: bool = False,
) -> tuple[dict[str, list[int]], int, list[str]]:
    """Time each screen-pop; the rollback after it (outside the timing) is what returning the connection to the
    pool does after ``with engine.connect()``, so each pop is one read transaction as in the server."""
    ns: dict[str, list[int]] = {}
    matched = 0
    wrong: list[str] = []
    heavy_ids = {plan.customer_id(c) for c in plan.heaviest}
    # The goal's figure reads as the server does, on db.reader(); the diagnostic row (``transaction``) wraps
    # every pop in a transaction of its own, as a plain ``with engine.connect()`` would.
    connection = reader(engine) if not transactional else engine.connect()
    with connection as conn:
        for _, kind, value in warm:
            screenpop.screen_pop(conn, kind, value, NOW_MS)
            conn.rollback()
        gc.collect()
        for group, kind, value in sample:
            t0 = time.perf_counter_ns()
            pop = screenpop.screen_pop(conn, kind, value, NOW_MS)
            took = time.perf_counter_ns() - t0
            conn.rollback()
            ns.setdefault(group, []).append(took)
            matched += pop.matched
            if pop.matched == (group == "unknown"):
                wrong.append(f"{group} {kind} {value!r}: matched={pop.matched}")
            elif group == "heaviest" and (
                pop.customer is None or pop.customer.id not in heavy_ids or len(pop.recent) != 10
            ):
                wrong.append(f"heaviest {kind} {value!r}: {len(pop.recent)} recent")
    ns["all"] = sorted(itertools.chain.from_iterable(ns.values()))
    for v in ns.values():
        v.sort()
    return ns, matched, wrong


def part_screen_pop(targets: list[Target], plan: Plan, n_pops: int, n_warm: int, seed: int) -> dict[str, PopResult]:
    counts = sorted(plan.counts)
    print(f"\n=== 2. Screen-pop latency at {plan.n_interactions:,} interactions ===")
    print(
        f"  data: {plan.n_customers:,} customers (phone, e-mail and chat token each: "
        f"{3 * plan.n_customers:,} identities), {plan.n_cases:,} cases, {plan.n_interactions:,} interactions over "
        f"the {YEAR_MS // DAY_MS} days before now (customer activity drawn in {plan.seconds:.1f} s)"
    )
    print(
        f"  interactions per customer: median {pct(counts, 50):,}, p90 {pct(counts, 90):,}, p99 {pct(counts, 99):,}, "
        f"max {counts[-1]:,}; none for {sum(1 for x in counts if x == 0):,} customers; the {HEAVIEST} heaviest "
        f"have {plan.counts[plan.heaviest[-1]]:,}-{plan.counts[plan.heaviest[0]]:,}"
    )
    rng = random.Random(seed * 7 + 5)
    warm = draw_identities(plan, n_warm, rng)
    sample = draw_identities(plan, n_pops, rng)
    groups: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for g, k, _ in sample:
        groups[g] = groups.get(g, 0) + 1
        kinds[k] = kinds.get(k, 0) + 1
    print(
        f"  sample: {n_pops:,} pops after {n_warm:,} warm-up pops; "
        + ", ".join(f"{g} {n:,}" for g, n in sorted(groups.items(), key=lambda x: -x[1]))
        + "; "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items(), key=lambda x: -x[1]))
        + f"; e.g. {', '.join(repr(v) for _, _, v in sample[:4])}"
    )
    results: dict[str, PopResult] = {}
    heaviest = plan.heaviest[0]
    hid = plan.customer_id(heaviest)
    for target in targets:
        url = target.fresh("screenpop")
        engine = open_store(url)
        try:
            took = populate(engine, plan)
            size = _mb(Path(engine.url.database or "")) if target.postgres is None else _pg_size(engine)
            with engine.connect() as conn:
                n_open = conn.execute(
                    select(func.count()).select_from(cases).where(cases.c.status.in_(OPEN_CASE_STATUSES))
                ).scalar_one()
            print(
                f"  populate {target.name}: {took['total']:.1f} s (generating rows {took['generate']:.1f} s, "
                f"{'COPY' if target.postgres else 'INSERT executemany'} {took['write']:.1f} s, "
                f"{'VACUUM ANALYZE' if target.postgres else 'ANALYZE'} {took['analyze']:.1f} s); {size}; "
                f"{n_open:,} open cases"
            )
            ns, matched, wrong = measure_pops(engine, plan, sample, warm)
            r = PopResult(took, size, ns, matched, wrong)
            if target.postgres is not None:
                r.transaction_ns = measure_pops(engine, plan, sample, warm, transactional=True)[0]["all"]
            with engine.connect() as conn:
                dialect = engine.dialect.name
                since = NOW_MS - screenpop.SIGNAL_WINDOW_DAYS * DAY_MS
                for label, stmt in (
                    (
                        "identity → customer + signals, open cases, recent interactions (one statement)",
                        screenpop._Q_IDENTITY.params(kind="phone", value=plan.phone(heaviest), since=since, limit=10),
                    ),
                ):
                    r.plans.append((label, _plan_lines(conn, dialect, stmt)))
            results[target.name] = r
        finally:
            engine.dispose()

    print(
        f"  {'database':<11} {'group':<12} {'pops':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'mean ms':>8}"
    )
    for name, r in results.items():
        for group in ("all", "heaviest", "by activity", "uniform", "unknown"):
            xs = r.ns.get(group)
            if not xs:
                continue
            print(
                f"  {name if group == 'all' else '':<11} {group:<12} {len(xs):>6,} {pct(xs, 50) / 1e6:>8.3f} "
                f"{pct(xs, 95) / 1e6:>8.3f} {pct(xs, 99) / 1e6:>8.3f} {xs[-1] / 1e6:>8.3f} "
                f"{sum(xs) / len(xs) / 1e6:>8.3f}"
            )
    for name, r in results.items():
        if xs := r.transaction_ns:
            print(
                f"  {name:<11} {'transaction *':<12} {len(xs):>6,} {pct(xs, 50) / 1e6:>8.3f} {pct(xs, 95) / 1e6:>8.3f} "
                f"{pct(xs, 99) / 1e6:>8.3f} {xs[-1] / 1e6:>8.3f} {sum(xs) / len(xs) / 1e6:>8.3f}"
            )
            print(
                "  * diagnostic, not the goal's figure: the same pops each in a transaction of its own (BEGIN and "
                "ROLLBACK round trips, and psycopg drops its prepared statements at every ROLLBACK)"
            )
    for name, r in results.items():
        print(
            f"  {name}: {r.matched:,} of {n_pops:,} pops matched a customer"
            + (f"; {len(r.wrong)} WRONG" if r.wrong else "")
        )
        for w in r.wrong[:5]:
            print(f"    wrong: {w}")
    for name, r in results.items():
        print(
            f"\n  {name} query plans for the heaviest customer {hid} ({plan.counts[heaviest]:,} interactions, "
            f"{len(plan.cases_of.get(heaviest, []))} cases)"
            + (": EXPLAIN (ANALYZE, BUFFERS)" if name == "PostgreSQL" else ": EXPLAIN QUERY PLAN")
        )
        for label, lines in r.plans:
            print(f"    {label}:")
            for line in lines:
                print(f"      {line}")
    return results


def _pg_size(engine: Engine) -> str:
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return f"{size / 1e6:,.0f} MB"


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    ap.add_argument("--events", type=int, help="events written with group commit (default 200,000; quick 20,000)")
    ap.add_argument("--naive", type=int, help="events written one transaction each (default 5,000; quick 1,000)")
    ap.add_argument("--interactions", type=int, help="interactions populated (default 1,000,000; quick 20,000)")
    ap.add_argument("--customers", type=int, help="customers populated (default 100,000; quick 2,000)")
    ap.add_argument("--cases", type=int, help="cases populated (default 1.5 per customer)")
    ap.add_argument("--pops", type=int, help="timed screen-pops (default 5,000; quick 500)")
    ap.add_argument("--rate", type=float, default=20_000.0, help="offered events/s of the paced run (default 20,000)")
    ap.add_argument("--paced-seconds", type=float, help="length of the paced run (default 5 s; quick 1 s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="admin URL of a PostgreSQL server (databases cc_bench_* are created and dropped through it)",
    )
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--require-postgres", action="store_true", help="fail (exit 2) if PostgreSQL is unreachable")
    ap.add_argument("--keep", type=Path, help="keep the SQLite files in this directory and the PostgreSQL databases")
    ap.add_argument("--skip", choices=("writes", "screen-pop"), help="leave one part out")
    args = ap.parse_args(argv)
    quick = args.quick
    n_events = args.events or (20_000 if quick else 200_000)
    n_naive = args.naive or (1_000 if quick else 5_000)
    n_interactions = args.interactions or (20_000 if quick else 1_000_000)
    n_customers = args.customers or (2_000 if quick else 100_000)
    n_cases = args.cases or n_customers * 3 // 2
    n_pops = args.pops or (500 if quick else 5_000)
    n_warm = 100 if quick else 300
    paced_s = args.paced_seconds or (1.0 if quick else 5.0)
    wall0 = time.perf_counter()

    print(
        f"store benchmark — seed {args.seed}{' (quick)' if quick else ''}; load average {load_average()} at start "
        "(other processes skew the tails)"
    )
    print(
        f"  machine: Python {sys.version.split()[0]} on {platform.platform()}, {os.cpu_count()} CPUs "
        f"({cpu_model()}); SQLAlchemy {sqlalchemy.__version__}, psycopg "
        f"{psycopg.__version__}"
    )
    keep = args.keep
    tmp = None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        directory = keep.resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cc_bench_")
        directory = Path(tmp.name)
    print(
        f"  SQLite library {sqlite3.sqlite_version}: files in {directory} (journal_mode=WAL, synchronous=NORMAL, "
        "as open_store sets them)"
    )
    targets = [Target("SQLite", directory=directory)]
    pg: Postgres | None = None
    if args.no_postgres:
        print("  PostgreSQL: skipped (--no-postgres)")
    else:
        pg = Postgres(args.postgres)
        try:
            print(f"  {pg.facts()}")
            targets.append(Target("PostgreSQL", postgres=pg))
        except Exception as exc:
            why = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            print(f"  PostgreSQL at {args.postgres} is NOT reachable: {why}")
            pg.admin.dispose()
            pg = None
            if args.require_postgres:
                print("  --require-postgres: giving up")
                return 2
            print("  carrying on with SQLite only")

    writes: dict[str, WriteFigures] = {}
    pops: dict[str, PopResult] = {}
    try:
        if args.skip != "writes":
            writes = part_writes(targets, n_events, n_naive, args.rate, paced_s, args.seed)
        if args.skip != "screen-pop":
            plan = Plan(args.seed, n_customers, n_cases, n_interactions)
            pops = part_screen_pop(targets, plan, n_pops, n_warm, args.seed)
    finally:
        if pg is not None:
            if keep is not None:
                print(f"\n  kept PostgreSQL databases: {', '.join(pg.created)}")
                pg.admin.dispose()
            else:
                pg.drop_all()
        if tmp is not None:
            tmp.cleanup()

    print("\n=== Summary ===")
    for name, f in writes.items():
        r, p = f.saturated, f.paced
        print(
            f"  {name:<11} durable writes: {r.per_s:>9,.0f} events/s with group commit ({len(r.batches):,} commits, "
            f"mean batch {r.mean_batch:,.0f}); naive one transaction per event {f.naive_per_s:,.0f} events/s, "
            f"ratio {r.per_s / f.naive_per_s:.1f}×; paced at {p.events / p.appended_s:,.0f} events/s offered: "
            f"mean batch {p.mean_batch:,.0f}, lag p99 {pct(p.lag_ms, 99):.0f} ms"
        )
    for name, pr in pops.items():
        xs = pr.ns["all"]
        print(
            f"  {name:<11} screen-pop at {n_interactions:,} interactions: p50 {pct(xs, 50) / 1e6:.3f} ms, "
            f"p95 {pct(xs, 95) / 1e6:.3f} ms, p99 {pct(xs, 99) / 1e6:.3f} ms, max {xs[-1] / 1e6:.3f} ms "
            f"(populate {pr.populate['total']:.1f} s)"
        )
    if "SQLite" in writes:
        rate = writes["SQLite"].saturated.per_s
        met = rate >= GOAL_EVENTS_PER_S
        print(
            f"GOAL {'MET' if met else 'NOT MET'}: durable writes on SQLite with group commit {rate:,.0f} events/s "
            f"{'≥' if met else '<'} {GOAL_EVENTS_PER_S:,.0f} events/s"
        )
    if pops:
        p99 = {name: pct(pr.ns["all"], 99) / 1e6 for name, pr in pops.items()}
        met = all(v <= GOAL_P99_MS for v in p99.values())
        print(
            f"GOAL {'MET' if met else 'NOT MET'}: screen-pop p99 ≤ {GOAL_P99_MS:g} ms at {n_interactions:,} "
            f"interactions ({', '.join(f'{n} {v:.3f} ms' for n, v in p99.items())})"
            + (
                f" — {n_interactions:,} is not {GOAL_INTERACTIONS:,}: indicative only"
                if n_interactions < GOAL_INTERACTIONS
                else ""
            )
        )
    print(f"wall time {time.perf_counter() - wall0:.0f} s; load average {load_average()} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
