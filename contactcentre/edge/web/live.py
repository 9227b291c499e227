"""The supervisor dashboard, live over one WebSocket (``ws://HOST:WS_PORT/live``).

Two halves:

* ``LiveBoard`` — pure: it consumes events (the router's batches, or the store's log at start-up) and keeps
  what ``LiveStats`` does not: today's per-5-minute series (SL and queue depth), the recent EWT error, the
  recent arrival rate per queue, and the SLA alerts with their acknowledgements. ``build_snapshot`` joins it
  with ``RouterDriver.live()`` into the one JSON document the page draws. Both are plain functions of their
  inputs, so tests feed them scripted router runs and compare numbers.
* ``LiveHub`` — the edge: it subscribes to the centre, keeps the connected dashboards, and pushes a snapshot
  at connect and then after events, coalesced to at most ``PUSHES_PER_S`` a second. One timer ticks "time in
  state" and "longest wait" once a second, armed only while a dashboard is connected; nothing polls. Its
  frames go through the shared frame layer (``edge/frames/``): the one inbound frame (``Ack``) decoded in one
  call, rate limited, and one bounded outbox per dashboard, each snapshot encoded once for them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import msgspec

from contactcentre.edge.frames import Closes, FrameDecoder, FrameError, FrameLimiter, Outbox, Verdict, encode
from contactcentre.edge.frames.policy import refused_login
from contactcentre.edge.web.thresholds import queue_colours
from contactcentre.events import (
    ContactAbandoned,
    ContactCallbackQueued,
    ContactConnected,
    ContactOverflowed,
    ContactQueued,
    ContactWithdrawn,
    Event,
    SlaBreached,
    SlaWarned,
    decode,
)
from contactcentre.events import encode as encode_event
from contactcentre.planning.erlang import staff
from contactcentre.store.eventlog import payloads_since

if TYPE_CHECKING:
    from twisted.web.server import Request

    from contactcentre.edge.web.auth import WebAuth
    from contactcentre.server.centre import Centre

log = logging.getLogger(__name__)

BUCKET_MS = 5 * 60_000  # the day's charts: one point per five minutes
EWT_WINDOW = 50  # the EWT error is the mean |error| over this many answered contacts per queue and channel
RATE_WINDOW_MS = 15 * 60_000  # the arrival rate behind the staffing hint: arrivals in the last 15 minutes
MAX_ALERTS = 100
PUSHES_PER_S = 4
TICK_S = 1.0
GOLD = "gold"
MAY_WATCH = ("supervisor", "admin")
RATE_PER_S = 20.0  # frames a second from one dashboard (acks): a person clicks far less
BURST = 40
MAX_REFUSED_IN_A_ROW = 50  # rate-limited frames in a row before the dashboard is closed
MAX_BACKLOG = 20  # snapshots (five seconds' worth) queued for a dashboard that does not read them


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    """The one frame the page sends: acknowledge alert ``id``."""

    id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


decoder: FrameDecoder[Ack] = FrameDecoder(Ack)


def error_frame(code: str, message: str) -> dict[str, Any]:
    """The dashboard's ``error`` frame (docs/web.md): its shape predates the frame layer, hence ``message``."""
    return {"type": "error", "code": code, "message": message}


def day_start_ms(now_ms: int, timezone: str) -> int:
    """Midnight (local time in ``timezone``) of the day ``now_ms`` falls in."""
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * 1000)


class _Point:
    __slots__ = ("depth", "end", "resolved", "within")

    def __init__(self, depth: int) -> None:
        self.depth = depth  # the deepest the queues got in this bucket
        self.end = depth  # how many were waiting after its last event (the level of the empty buckets after it)
        self.resolved = 0  # answered + abandoned + overflowed out, as LiveStats' sl_offered counts them
        self.within = 0  # answered at or before the contact's SLA deadline


class LiveBoard:
    """What the dashboard shows beyond ``LiveStats``, built from events alone (so a restart rebuilds it)."""

    def __init__(self, timezone: str, now_ms: int) -> None:
        self.timezone = timezone
        self.day_ms = day_start_ms(now_ms, timezone)
        self.day_end_ms = self._next_day(self.day_ms)
        self.points: dict[int, _Point] = {}
        self._waiting: dict[str, int | None] = {}  # contact -> SLA deadline
        self._queued: dict[str, tuple[str, str, int, int | None]] = {}  # contact -> queue, channel, at, ewt
        self.ewt_errors: dict[tuple[str, str], deque[float]] = {}
        self.arrivals: dict[str, deque[int]] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self._alert_seq = 0

    def _next_day(self, day_ms: int) -> int:
        local = datetime.fromtimestamp(day_ms / 1000, ZoneInfo(self.timezone))
        nxt = (local + timedelta(hours=36)).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(nxt.timestamp() * 1000)

    # ------------------------------------------------------------------------------------------- events

    def apply_all(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.apply(ev)

    def apply(self, ev: Event) -> None:
        self.roll(ev.at_ms)
        kind = type(ev)
        if kind is ContactQueued:
            self._on_queued(ev)  # type: ignore[arg-type]
        elif kind is ContactConnected:
            self._resolve(ev.contact_id, ev.at_ms, answered=True)  # type: ignore[attr-defined]
            self._ewt(ev)  # type: ignore[arg-type]
        elif kind is ContactAbandoned:
            self._resolve(ev.contact_id, ev.at_ms, answered=False)  # type: ignore[attr-defined]
            self._queued.pop(ev.contact_id, None)  # type: ignore[attr-defined]
        elif kind is ContactOverflowed:
            if ev.left or ev.to_queue is not None:  # type: ignore[attr-defined]
                self._resolve(ev.contact_id, ev.at_ms, answered=False)  # type: ignore[attr-defined]
        elif kind is ContactWithdrawn or (kind is ContactCallbackQueued and ev.via == "virtual_hold"):  # type: ignore[attr-defined]
            # Neither answered nor abandoned (as in LiveStats): it leaves the depth, not the SL.
            if self._waiting.pop(ev.contact_id, 0) != 0:  # type: ignore[attr-defined]
                self._point(ev.at_ms)
        elif kind is SlaWarned or kind is SlaBreached:
            self._alert("sla_breached" if kind is SlaBreached else "sla_warned", ev)

    def roll(self, now_ms: int) -> None:
        """A new day starts with empty charts; contacts still waiting carry over into its depth."""
        if now_ms < self.day_end_ms:
            return
        self.day_ms = day_start_ms(now_ms, self.timezone)
        self.day_end_ms = self._next_day(self.day_ms)
        self.points = {}

    def _point(self, at_ms: int) -> _Point | None:
        if at_ms < self.day_ms:  # yesterday's tail, read at start-up for the contacts still waiting
            return None
        i = (at_ms - self.day_ms) // BUCKET_MS
        p = self.points.get(i)
        if p is None:
            p = self.points[i] = _Point(len(self._waiting))
        p.depth = max(p.depth, len(self._waiting))
        p.end = len(self._waiting)
        return p

    def _on_queued(self, ev: ContactQueued) -> None:
        self._waiting[ev.contact_id] = ev.sla_deadline_ms
        self._queued[ev.contact_id] = (ev.queue, ev.channel, ev.at_ms, ev.ewt_ms)
        if ev.via is None and ev.waiting_since_ms is None:  # a new arrival, not a move between queues
            arrivals = self.arrivals.setdefault(ev.queue, deque())
            arrivals.append(ev.at_ms)
            while arrivals and arrivals[0] <= ev.at_ms - RATE_WINDOW_MS:
                arrivals.popleft()
        self._point(ev.at_ms)

    def _resolve(self, contact_id: str, at_ms: int, *, answered: bool) -> None:
        if contact_id not in self._waiting:
            return
        deadline = self._waiting.pop(contact_id)
        p = self._point(at_ms)
        if p is not None:
            p.resolved += 1
            if answered and deadline is not None and at_ms <= deadline:
                p.within += 1

    def _ewt(self, ev: ContactConnected) -> None:
        visit = self._queued.pop(ev.contact_id, None)
        if visit is None or visit[3] is None:  # no wait was promised (nobody staffed), nothing to compare
            return
        queue, channel, queued_ms, ewt_ms = visit
        errors = self.ewt_errors.setdefault((queue, channel), deque(maxlen=EWT_WINDOW))
        errors.append(abs((ev.at_ms - queued_ms) - ewt_ms) / 1000)

    def _alert(self, kind: str, ev: SlaWarned | SlaBreached) -> None:
        self._alert_seq += 1
        self.alerts.append(
            {
                "id": self._alert_seq,
                "kind": kind,
                "at_ms": ev.at_ms,
                "contact_id": ev.contact_id,
                "queue": ev.queue,
                "channel": ev.channel,
                "tier": ev.tier,
                "deadline_ms": ev.deadline_ms,
                "acked_by": None,
            }
        )

    def acknowledge(self, alert_id: int, user_id: str) -> bool:
        for a in self.alerts:
            if a["id"] == alert_id and a["acked_by"] is None:
                a["acked_by"] = user_id
                return True
        return False

    # ------------------------------------------------------------------------------------------- views

    def series(self, now_ms: int) -> list[dict[str, Any]]:
        """One point per five minutes from midnight to now: ``sl`` (answered within target / resolved in that
        bucket, ``None`` when nothing was resolved) and ``depth`` (the most contacts waiting at once)."""
        last = max(0, (now_ms - self.day_ms) // BUCKET_MS)
        out = []
        depth = 0
        for i in range(last + 1):
            p = self.points.get(i)
            sl = p.within / p.resolved if p is not None and p.resolved else None
            out.append({"at_ms": self.day_ms + i * BUCKET_MS, "sl": sl, "depth": p.depth if p else depth})
            if p is not None:  # a bucket without events stays at the level the last one ended at
                depth = p.end
        return out

    def ewt_error_s(self, queue: str, channel: str) -> float | None:
        errors = self.ewt_errors.get((queue, channel))
        return sum(errors) / len(errors) if errors else None

    def arrivals_per_hour(self, queue: str, now_ms: int) -> float:
        arrivals = self.arrivals.get(queue, ())
        recent = sum(1 for at in arrivals if at > now_ms - RATE_WINDOW_MS)
        return recent * 3_600_000 / RATE_WINDOW_MS


def staffing_hint(per_hour: float, aht_s: float | None, threshold_s: float, target: float, staffed: int) -> dict:
    """Agents the Erlang C model needs now for ``target`` within ``threshold_s``, next to those staffed.
    ``needed`` is ``None`` until there is an arrival rate and an AHT to model."""
    needed = None
    if per_hour > 0 and aht_s:
        needed = staff(per_hour, aht_s, threshold_s, target).agents
    return {"needed": needed, "staffed": staffed, "per_hour": per_hour, "threshold_s": threshold_s, "target": target}


def build_snapshot(live: dict[str, Any], board: LiveBoard, sla: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The dashboard's document: ``live`` is ``RouterDriver.live()``, ``sla`` maps a queue to its base target
    (threshold seconds, share) for the staffing hint."""
    now = live["at_ms"]
    snap = live["snapshot"]
    serving_states = {"available", "reserved", "busy", "wrap_up"}
    queues = []
    for q in live["queues"]:
        m = snap["queues"].get(q["name"], {})
        staffed = sum(n for s, n in m.get("agents", {}).items() if s in serving_states)
        threshold_s, target = sla.get(q["name"], (20.0, 0.8))
        queues.append(
            {
                **q,
                "m": m,
                "hint": staffing_hint(
                    board.arrivals_per_hour(q["name"], now), m.get("aht_s"), threshold_s, target, staffed
                ),
                "colours": queue_colours(m, threshold_s, target),
            }
        )
    rows = []
    for key, m in snap["buckets"].items():
        queue, channel, tier = key.split("/")
        rows.append(
            {"queue": queue, "channel": channel, "tier": tier, **m, "ewt_error_s": board.ewt_error_s(queue, channel)}
        )
    # An agent who has not logged in since the start has no "since" (0): no time in state to show.
    agents = [
        {**a, "in_state_s": max(0, now - a["since_ms"]) / 1000 if a["since_ms"] else None} for a in live["agents"]
    ]
    alerts = [a for a in reversed(board.alerts)]
    gold = [
        {
            "kind": "gold_waiting",
            "queue": r["queue"],
            "channel": r["channel"],
            "waiting": r["waiting"],
            "longest_wait_s": r["longest_wait_s"],
        }
        for r in rows
        if r["tier"] == GOLD and r["waiting"]
    ]
    return {
        "type": "snapshot",
        "at_ms": now,
        "centre": live["centre"],
        "timezone": live["timezone"],
        "total": snap["total"],
        "agent_states": snap["agents"],
        "queues": queues,
        "rows": rows,
        "agents": agents,
        "alerts": alerts,
        "gold_waiting": gold,
        "series": board.series(now),
        "decisions": live["decisions"],
    }


def queue_sla(centre_router: Any) -> dict[str, tuple[float, float]]:
    """Each queue's base SLA (its first channel's), the target the staffing hint aims at."""
    out = {}
    for q in centre_router.queue_list():
        if q.sla_threshold_s is not None and q.sla_target is not None:
            out[q.name] = (q.sla_threshold_s, q.sla_target)
    return out


def live_ws_url(request: Request, ws_port: int | None, base_csp: bytes) -> tuple[str | None, bytes]:
    """The dashboard's WebSocket URL (the host the browser used, the WebSocket port) and the page's policy
    with ``connect-src`` widened to exactly that socket. No port: no URL, the policy unchanged."""
    if ws_port is None:
        return None, base_csp
    from contactcentre.edge.web.widget import _HOST

    host = request.getRequestHostname() or b""
    if not _HOST.match(host):  # never let a Host header write into the policy or the page
        host = b"127.0.0.1"
    scheme = b"wss" if request.isSecure() else b"ws"
    url = b"%s://%s:%d/live" % (scheme, host, ws_port)
    csp = base_csp.replace(b"connect-src 'self'", b"connect-src 'self' %s://%s:%d" % (scheme, host, ws_port))
    return url.decode("ascii"), csp


# ---------------------------------------------------------------------------------------------------- hub


class LiveHub:
    """The ``/live`` WebSocket endpoint: supervisors' dashboards, pushed to from the centre's events."""

    def __init__(self, centre: Centre, web_auth: WebAuth) -> None:
        self.centre = centre
        self.auth = web_auth
        self.loop = centre.loop
        self.board = LiveBoard(centre.config.timezone, centre.now_ms())
        self.sla = queue_sla(centre.router)
        self.clients: dict[Any, Outbox] = {}  # each dashboard's socket and its outbox
        self.clock = self.loop.time  # the rate limiter's time (tests pass a fake one)
        self.max_backlog = MAX_BACKLOG
        self._push: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._last_push = -math.inf
        self._unsubscribe: Any = None

    async def start(self) -> None:
        """Rebuild today from the store's log, then follow the live stream. Batches that arrive while the log
        is read are held back and applied after it, minus those the read already contained."""
        held: list[Event] = []
        self._unsubscribe = self.centre.subscribe(held.extend)
        await self.centre.commit()
        # From a day back, so contacts queued before midnight and still waiting count in today's depth.
        since = self.board.day_ms - 24 * 3_600_000
        payloads = await self.centre.read(payloads_since, since)
        seen = set(payloads[-len(held) * 2 :]) if held else set()
        for p in payloads:
            self.board.apply(decode(p))
        self._unsubscribe()
        self.board.apply_all(ev for ev in held if encode_event(ev).decode() not in seen)
        self._unsubscribe = self.centre.subscribe(self._on_events)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for handle in (self._push, self._tick):
            if handle is not None:
                handle.cancel()
        self._push = self._tick = None
        for outbox in list(self.clients.values()):
            outbox.close_now(Closes.DASHBOARD_GOING_AWAY.value)  # at once: a snapshot may be stuck on a slow one

    def snapshot(self) -> dict[str, Any]:
        return build_snapshot(self.centre.driver.live(), self.board, self.sla)

    # ---------------------------------------------------------------------------------------------- push

    def _on_events(self, events: list[Event]) -> None:
        self.board.apply_all(events)
        if self.clients:
            self._schedule()

    def _schedule(self) -> None:
        if self._push is not None:
            return  # one push is due already; it will carry these events too
        wait = max(0.0, self._last_push + 1 / PUSHES_PER_S - self.loop.time())
        self._push = self.loop.call_later(wait, self._push_now)

    def _push_now(self) -> None:
        self._push = None
        if not self.clients:
            return
        self._last_push = self.loop.time()
        frame = encode(self.snapshot())  # once, for every dashboard
        for outbox in list(self.clients.values()):
            outbox.send(frame)
        self._arm_tick()

    def _arm_tick(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self._tick = self.loop.call_later(TICK_S, self._on_tick) if self.clients else None

    def _on_tick(self) -> None:
        self._tick = None
        self._schedule()

    # ---------------------------------------------------------------------------------------- endpoint

    async def handle(self, ws: Any) -> None:
        from contactcentre.edge.web.auth import session_cookie

        headers = ws.request.headers
        if not self.auth.allowed_origin(headers.get("Origin")):
            await self._refuse(ws, "bad_origin", "this page's origin may not open the dashboard")
            return
        session_id = session_cookie(headers.get("Cookie"))
        checked_at = self.auth.sockets.checking()  # a login ended while it is checked closes the stream at once
        user = await self.auth.session_user(session_id)
        if user is None:
            await self._refuse(ws, "unauthorized", "log in first")
            return
        if user.role not in MAY_WATCH:
            await self._refuse(ws, "forbidden", f"the dashboard needs the supervisor role; {user.id} is {user.role}")
            return
        outbox = Outbox(ws, limit=self.max_backlog, too_slow=Closes.DASHBOARD_TOO_SLOW, name=f"dashboard {user.id}")
        self.clients[ws] = outbox
        writer = self.loop.create_task(outbox.run())
        limiter = FrameLimiter(
            RATE_PER_S, BURST, self.clock(), max_strikes=MAX_REFUSED_IN_A_ROW + 1, strike_window_s=None
        )
        # Ending the login (logged out, user disabled) ends the stream at once.
        unregister = self.auth.sockets.add(
            user.id, lambda why: self._revoked(ws, why), session_id=session_id, checked_at=checked_at
        )
        try:
            outbox.send(encode(self.snapshot()))
            self._arm_tick()
            async for message in ws:
                if ws not in self.clients:
                    continue  # revoked, too slow or too fast: only the closing handshake is left
                verdict = limiter.admit(self.clock())
                if verdict is not Verdict.ADMIT:
                    outbox.send(error_frame("rate_limited", f"more than {RATE_PER_S:g} frames a second; dropped"))
                    if verdict is Verdict.CLOSE:
                        del self.clients[ws]
                        outbox.close(*refused_login("rate_limited"))
                    continue
                reply = self._on_message(message, user.id)
                if reply is not None:
                    outbox.send(reply)
        except Exception as exc:  # a broken connection ends this dashboard only
            log.debug("live dashboard connection ended: %s", exc)
        finally:
            unregister()
            self.clients.pop(ws, None)
            outbox.drop()
            writer.cancel()
            if not self.clients and self._tick is not None:
                self._tick.cancel()
                self._tick = None

    def _on_message(self, message: str | bytes, user_id: str) -> dict[str, Any] | None:
        """The page sends one kind of frame: ``{"type": "ack", "id": N}`` to acknowledge an alert."""
        frame = decoder.decode(message)
        if isinstance(frame, FrameError):  # every way of getting it wrong is one code: the page sends one frame
            return error_frame("bad_frame", f'{frame.detail} (expected {{"type": "ack", "id": N}})')
        if not self.board.acknowledge(frame.id, user_id):
            return error_frame("unknown_alert", f"no open alert {frame.id}")
        self._schedule()
        return None

    def _revoked(self, ws: Any, why: str) -> None:
        outbox = self.clients.pop(ws, None)  # no snapshot more, from now on
        if outbox is not None:
            outbox.send(error_frame("revoked", why))
            outbox.close(*refused_login("revoked"))

    async def _refuse(self, ws: Any, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await ws.send(encode(error_frame(code, message)), text=True)
            await ws.close(*refused_login(code))


__all__ = ["LiveBoard", "LiveHub", "build_snapshot", "day_start_ms", "staffing_hint"]
