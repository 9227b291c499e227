"""What the tests of a many-process centre share (tests/test_cluster.py, tests/test_failover.py): the small
centre they run, router nodes as real ``contactcentre serve --role router`` processes, a load of contacts and
agents driven through in-process edges, and the invariants checked on the merged event log.

Waiting is on the nodes' own output or by polling with a deadline, never by sleeping."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import IO, Any

import contactcentre.events as E
from contactcentre.config import parse_config
from contactcentre.server.edge_centre import EdgeCentre, Unavailable
from contactcentre.server.roles import Cluster, RouterNode, close_edge, open_edge, run_router
from contactcentre.store.db import connect
from contactcentre.store.writer import read_events

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 20.0
AGENTS = [f"a{i}" for i in range(1, 7)]
CHANNELS = ("email", "chat", "voice")

CONFIG_TOML = """\
[skills]
general = "General"

[[queues]]
name = "support"
channels = ["email", "chat", "voice"]
skills = { general = 1 }
""" + "".join(f'\n[[agents]]\nid = "{a}"\nskills = {{ general = 5 }}\n' for a in AGENTS)

CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": list(CHANNELS)}],
        "agents": [{"id": a, "skills": {"general": 5}} for a in AGENTS],
    },
    "<test>",
)


def write_config(directory: Path) -> Path:
    path = directory / "centre.toml"
    path.write_text(CONFIG_TOML)
    return path


async def until(what: Callable[[], Any], why: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``what()`` on the loop until it is truthy (each turn yields to the nodes' tasks)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = what()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {why}")
        await asyncio.sleep(0.01)  # the poll's pace: the nodes run on this same loop meanwhile


# ------------------------------------------------------------------------------------------ the merged log


def logged_events(url: str) -> list[E.Event]:
    engine = connect(url)
    try:
        return read_events(engine)
    finally:
        engine.dispose()


def assert_no_double_offers(logged: list[E.Event]) -> None:
    """From the merged log: no contact is offered to two agents at once, no agent holds two offers of one
    contact."""
    open_offers: dict[str, tuple[str, str]] = {}  # offer id -> (contact, agent)
    for ev in logged:
        if isinstance(ev, E.OfferMade):
            for contact, agent in open_offers.values():
                assert contact != ev.contact_id, f"{ev.contact_id} offered twice at once ({agent}, {ev.agent_id})"
            open_offers[ev.offer_id] = (ev.contact_id, ev.agent_id)
        elif isinstance(ev, E.OfferAccepted | E.OfferRejected | E.OfferExpired | E.OfferCancelled):
            open_offers.pop(ev.offer_id, None)


def assert_each_once(logged: list[E.Event], acknowledged: Iterable[str]) -> None:
    """Every acknowledged contact arrived once in the log, and no contact arrived twice."""
    arrived = collections.Counter(ev.contact_id for ev in logged if isinstance(ev, E.ContactArrived))
    twice = sorted(c for c, n in arrived.items() if n > 1)
    assert not twice, f"contacts logged more than once: {twice[:10]}"
    missing = sorted(c for c in acknowledged if arrived[c] != 1)
    assert not missing, f"acknowledged contacts missing from the log: {missing[:10]} ({len(missing)})"


# ---------------------------------------------------------------------------------------- router processes


class RouterProc:
    """``contactcentre serve --role router`` in a subprocess; ``state`` follows what it prints."""

    def __init__(
        self, node_id: str, *, config: Path, database_url: str, redis_url: str, prefix: str, ttl_ms: int, logs: Path
    ) -> None:
        self.node_id = node_id
        self.cmd = [sys.executable, "-m", "contactcentre.cli", "serve", "--role", "router", "--config", str(config)]
        self.cmd += ["--database-url", database_url, "--redis-url", redis_url, "--node-id", node_id]
        self.cmd += ["--redis-prefix", prefix, "--lease-ttl-ms", str(ttl_ms)]
        self.log_path = logs / f"router-{node_id}.log"
        self.states: list[tuple[float, str]] = []  # (time.monotonic(), state) as printed
        self.paused = False
        self.stale = False  # paused past its lease by the test: whatever it printed, it is no longer the leader
        self._log: IO[bytes] | None = None
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed when the process is reaped)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()
        return proc

    def _read(self, out: IO[bytes]) -> None:
        marker = f"{self.node_id} is ".encode()
        for line in out:
            if marker in line:
                self.states.append((time.monotonic(), line.split(marker, 1)[1].strip().decode()))

    @property
    def state(self) -> str:
        if self.proc.poll() is not None:
            return "exited"
        return self.states[-1][1] if self.states else "starting"

    def when(self, state: str) -> float | None:
        """The monotonic time it first said ``state``."""
        return next((t for t, s in self.states if s == state), None)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> float:
        """SIGKILL; returns the monotonic time it was sent."""
        at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.paused = False
        return at

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._reader.join(timeout=10)  # the process is gone: its output ends
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self._log is not None:
            self._log.close()


# ------------------------------------------------------------------------------------------------ the load


class Load:
    """Contacts and agents driven through edges. ``arrive`` returns once the contact is acknowledged (its edge's
    ``commit`` returned, or the replica already holds it after a retry): those are in ``acknowledged``. An edge
    that answers "try again" (``Unavailable``) is tried again, as a customer's MTA or chat widget would."""

    def __init__(self, edges: list[EdgeCentre], *, retry_for_s: float = 60.0) -> None:
        self.edges = edges
        self.acknowledged: set[str] = set()
        self.retries = 0
        self.retry_for_s = retry_for_s
        self._n = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    def contact_id(self, channel: str) -> str:
        self._n += 1
        return f"{channel}-{self._n}"

    async def arrive(self, edge: EdgeCentre, channel: str, contact_id: str | None = None) -> str:
        cid = contact_id or self.contact_id(channel)
        await self._until_applied(
            edge,
            lambda: E.ContactArrived(at_ms=edge.now_ms(), contact_id=cid, queue="support", channel=channel),  # type: ignore[arg-type]
            lambda: edge.router.has_contact(cid),
        )
        self.acknowledged.add(cid)
        return cid

    async def log_in(self, edge: EdgeCentre, agent_id: str) -> None:
        def logged_in() -> bool:
            view = edge.router.agent(agent_id)
            return view is not None and view.presence != "logged_out"

        await self._until_applied(edge, lambda: E.AgentLoggedIn(at_ms=edge.now_ms(), agent_id=agent_id), logged_in)

    async def _until_applied(self, edge: EdgeCentre, make: Callable[[], E.Event], there: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.retry_for_s
        while True:
            refusal = edge.submit(make())
            if refusal is not None:
                # A retry of an input that was applied after all (its answer was lost with Redis, or came after
                # the edge gave up): the replica holds only what was committed.
                assert there(), f"refused: {refusal}"
                return
            try:
                await edge.commit(edge.log_position())
                return
            except Unavailable:
                self.retries += 1
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.05)  # the pace of a client trying again

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def settle(self, timeout: float = 90.0) -> None:
        """Wait for every spawned arrival; re-raise the first that failed."""
        if self.tasks:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*list(self.tasks))

    def accept_offers(self, edge: EdgeCentre, limit: int | None = None) -> int:
        """The agents take the offers ringing at them (at most ``limit``), as the replica shows them; the answers
        are not awaited (a lost one is only an offer that rings on)."""
        taken = 0
        for view in edge.router.agent_list():
            for offer in view.offers:
                if limit is not None and taken >= limit:
                    return taken
                ev = E.OfferAccepted(
                    at_ms=edge.now_ms(), offer_id=offer.id, contact_id=offer.contact_id, agent_id=view.id
                )
                if edge.submit(ev) is None:
                    taken += 1
        return taken


# ---------------------------------------------------------------------------------------------- in-process

TTL_MS = 600  # a short lease: a takeover within a second keeps the tests quick


class Nodes:
    """Router and edge nodes of one centre on this loop."""

    def __init__(self, pg_url: str, redis_url: str) -> None:
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.routers: dict[str, tuple[RouterNode, asyncio.Event, asyncio.Task[RouterNode]]] = {}
        self.edges: list[EdgeCentre] = []

    def cluster(self, node_id: str) -> Cluster:
        return Cluster(redis_url=self.redis_url, node_id=node_id, prefix=self.prefix, lease_ttl_ms=TTL_MS)

    def router(self, node_id: str) -> RouterNode:
        node, stop = RouterNode(node_id), asyncio.Event()
        task = asyncio.create_task(run_router(CONFIG, self.pg_url, self.cluster(node_id), stop=stop, node=node))
        self.routers[node_id] = (node, stop, task)
        return node

    async def edge(self, node_id: str) -> EdgeCentre:
        centre = await open_edge(CONFIG, self.pg_url, self.cluster(node_id))
        self.edges.append(centre)
        return centre

    def crash(self, node_id: str) -> None:
        """The router's process dies: its tasks stop where they are, its lease is left to lapse."""
        node, _stop, task = self.routers[node_id]
        if node.active is not None:
            node.active.give_up()  # what kill -9 does to routing: nothing more is decided or committed
        task.cancel()

    async def close(self) -> None:
        for centre in self.edges:
            await close_edge(centre)
        for _node, stop, _task in self.routers.values():
            stop.set()
        await asyncio.gather(*(t for _n, _s, t in self.routers.values()), return_exceptions=True)


@contextlib.asynccontextmanager
async def centre(pg_url: str, redis_url: str) -> AsyncIterator[Nodes]:
    nodes = Nodes(pg_url, redis_url)
    try:
        yield nodes
    finally:
        await nodes.close()
