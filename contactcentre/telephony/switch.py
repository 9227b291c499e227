"""A simulated telephone switch (PBX) as a pure state machine: calls, connections and CSTA-style events.

Like the ACD router it is sans-I/O: every operation takes the time (``now_ms``, integer milliseconds) and
returns the events it caused; ring-no-answer timers are data (``next_deadline()``, ``advance(now_ms)``). The
CTI link (``link.py``) and the runtime drive it; tests drive it by hand.

The model is CSTA's. A **call** joins **connections**, one per device in it; a connection has a state
(``CONNECTION_TRANSITIONS``). Devices are:

* **extensions** — agents' phones, from the configuration;
* **queue DNs** — numbers the ACD owns; a call delivered there waits (``queued``) until someone deflects it
  to an extension;
* **IVR numbers** — voice-response units: a call delivered there is answered at once (``Delivered`` then
  ``Established``), the caller hears prompts and answers with DTMF (``generate_digits``); the IVR then
  transfers the call on (to a queue DN, with its results as attached data) or clears it. An IVR has as many
  ports as there are trunks, so it is never busy;
* **trunks** ``T1``…``Tn`` — lines to the outside world. An inbound call's caller is the trunk that brought it
  in (its number is the ANI); dialling an external number seizes a free trunk, whose connection then stands
  for the far end. Being a simulator, the switch also lets the far end answer and hang up through a trunk.

An operation is checked in full before anything changes: a refused one raises ``SwitchError`` (with a
``code`` the CTI link sends on) and leaves the switch as it was. Time passing is not part of the operation:
timers due by ``now_ms`` fire first, and if the operation is then refused their events travel on the error
(``SwitchError.fired``) so that nothing is lost.

Simplifications, on purpose: an extension has one line (it can alert or talk on one call at a time, and hold
any number); calling a busy extension is refused rather than answered with a busy tone; an unanswered call
is cleared after ``ring_timeout_ms``, unless it was routed out of a queue, in which case it goes back there.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from contactcentre.telephony.events import (
    AttachedDataChanged,
    Conferenced,
    ConnectionCleared,
    Delivered,
    DigitsGenerated,
    Diverted,
    Established,
    Failed,
    Held,
    Originated,
    Queued,
    Retrieved,
    SwitchEvent,
    Transferred,
)

# Connection states.
NULL = "null"  # not (yet) in the call: where every connection starts
ALERTING = "alerting"
QUEUED = "queued"
CONNECTED = "connected"
HELD = "held"
CLEARED = "cleared"

CONNECTION_STATES = (NULL, ALERTING, QUEUED, CONNECTED, HELD, CLEARED)
LIVE = frozenset({ALERTING, QUEUED, CONNECTED, HELD})
ACTIVE = frozenset({ALERTING, CONNECTED})  # an extension's one line is taken; held calls do not take it

# (state, action) -> next state. Every pair not listed is refused. One operation may step several connections
# (a consultative transfer steps three); each step is checked against this table before any is taken.
CONNECTION_TRANSITIONS: dict[tuple[str, str], str] = {
    (NULL, "originate"): CONNECTED,  # the calling party: an extension that dialled, the trunk of an inbound call
    (NULL, "deliver"): ALERTING,
    (NULL, "queue"): QUEUED,
    (ALERTING, "answer"): CONNECTED,
    (CONNECTED, "hold"): HELD,
    (HELD, "retrieve"): CONNECTED,
    (ALERTING, "divert"): CLEARED,  # deflected elsewhere before it was answered
    (QUEUED, "divert"): CLEARED,  # routed out of the queue
    (ALERTING, "no_answer"): CLEARED,  # the ring timer
    (CONNECTED, "transfer"): CLEARED,  # the transferring party leaves (blind, or both of its consultation legs)
    (HELD, "transfer"): CLEARED,
    (ALERTING, "join"): ALERTING,  # moved by a consultative transfer into the held call, as it was
    (QUEUED, "join"): QUEUED,
    (CONNECTED, "join"): CONNECTED,
    (HELD, "join"): HELD,
    (HELD, "conference"): CONNECTED,  # the conferencing party is back, now talking to everyone
    (CONNECTED, "merge"): CLEARED,  # ...and its consultation leg is merged away
    (CONNECTED, "add"): CONNECTED,  # the consulted party joins the conference (only once it has answered)
    (ALERTING, "clear"): CLEARED,
    (QUEUED, "clear"): CLEARED,
    (CONNECTED, "clear"): CLEARED,
    (HELD, "clear"): CLEARED,
}
CONNECTION_ACTIONS = tuple(sorted({a for _, a in CONNECTION_TRANSITIONS}))

# Device kinds.
EXTENSION = "extension"
QUEUE = "queue"
TRUNK = "trunk"
IVR = "ivr"

DTMF = re.compile(r"[0-9*#A-D]{1,32}")

EXTERNAL_NUMBER = re.compile(r"\+?[0-9]{3,20}")
MAX_DATA_ITEMS = 64
MAX_DATA_CHARS = 1024


class SwitchError(Exception):
    """An operation the switch refuses; nothing changed. ``code`` is machine-readable (see ``docs/cti.md``).

    ``fired`` holds the events of timers that came due before the operation was tried: they happened (time
    passed) even though the operation did not, so whoever drives the switch must still pass them on.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fired: list[SwitchEvent] = []


@dataclass(frozen=True)
class SwitchConfig:
    """The switch's numbering plan and limits. Trunks are named ``T1``…``Tn``."""

    extensions: tuple[str, ...]
    queues: tuple[str, ...] = ()
    trunks: int = 8
    ring_timeout_ms: int = 20_000
    ivrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        object.__setattr__(self, "queues", tuple(self.queues))
        object.__setattr__(self, "ivrs", tuple(self.ivrs))
        names = [*self.extensions, *self.queues, *self.ivrs]
        if not self.extensions:
            raise ValueError("a switch needs at least one extension")
        if any(not isinstance(n, str) or not n or n.startswith("T") for n in names):
            raise ValueError("extensions, queue DNs and IVR numbers are non-empty strings not starting with 'T'")
        if len(set(names)) != len(names):
            raise ValueError("extensions, queue DNs and IVR numbers must be distinct")
        if self.trunks < 0 or self.ring_timeout_ms <= 0:
            raise ValueError("trunks must be >= 0 and ring_timeout_ms > 0")


class Connection:
    """One device's part in one call."""

    __slots__ = ("call_id", "came_from", "device", "kind", "number", "ring_deadline_ms", "ring_seq", "state")

    def __init__(self, call_id: str, device: str, kind: str, number: str) -> None:
        self.call_id = call_id
        self.device = device
        self.kind = kind
        self.number = number
        self.state = NULL
        self.came_from: str | None = None  # the queue DN it was routed out of: where it goes back unanswered
        self.ring_deadline_ms: int | None = None
        self.ring_seq = 0  # identifies the live ring timer in the heap (0: none)

    def must(self, action: str) -> None:
        """Check ``action`` against the table, changing nothing."""
        if (self.state, action) not in CONNECTION_TRANSITIONS:
            raise SwitchError(
                "invalid_state",
                f"connection {self.device!r} in call {self.call_id!r}: cannot {action!r} in state {self.state!r}",
            )

    def step(self, action: str) -> str:
        self.must(action)
        self.state = CONNECTION_TRANSITIONS[(self.state, action)]
        return self.state

    def __repr__(self) -> str:
        return f"Connection({self.call_id}/{self.device} {self.state})"


class Call:
    """A call and its live connections (a cleared connection leaves ``connections``)."""

    __slots__ = ("ani", "attached_data", "connections", "consult_of", "created_ms", "dnis", "id")

    def __init__(self, call_id: str, ani: str, dnis: str, attached: dict[str, str], at_ms: int) -> None:
        self.id = call_id
        self.ani = ani
        self.dnis = dnis
        self.attached_data = attached
        self.connections: dict[str, Connection] = {}  # device -> connection, in joining order
        self.consult_of: str | None = None  # the held call this consultation was made from
        self.created_ms = at_ms

    @property
    def state(self) -> str:
        """The call as a whole: queued, offered (ringing), connected, held, conferenced or cleared."""
        states = [c.state for c in self.connections.values()]
        if not states:
            return "cleared"
        talking = sum(s in (CONNECTED, HELD) for s in states)
        if talking >= 3:
            return "conferenced"
        if HELD in states:
            return "held"
        if talking >= 2:
            return "connected"
        return "queued" if QUEUED in states else "offered"

    def __repr__(self) -> str:
        return f"Call({self.id} {self.state} {list(self.connections.values())})"


def _check_data(data: Any) -> dict[str, str]:
    if not isinstance(data, Mapping):
        raise SwitchError("bad_request", "attached data must be an object of strings")
    out: dict[str, str] = {}
    for k, v in data.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SwitchError("bad_request", "attached data keys and values must be strings")
        if len(k) > MAX_DATA_CHARS or len(v) > MAX_DATA_CHARS:
            raise SwitchError("bad_request", f"attached data keys and values are at most {MAX_DATA_CHARS} chars")
        out[k] = v
    if len(out) > MAX_DATA_ITEMS:
        raise SwitchError("bad_request", f"at most {MAX_DATA_ITEMS} attached data items")
    return out


class Switch:
    """The simulated switch. Every public operation returns the events it caused, timers first."""

    def __init__(self, config: SwitchConfig, *, start_ms: int = 0, call_prefix: str = "call-") -> None:
        self.config = config
        # Call ids must never repeat across restarts where they name contacts in the store: the server
        # passes a prefix unique to this run.
        self.call_prefix = call_prefix
        self.now_ms = start_ms
        self.kinds: dict[str, str] = {e: EXTENSION for e in config.extensions}
        self.kinds.update({q: QUEUE for q in config.queues})
        self.kinds.update({n: IVR for n in config.ivrs})
        self.trunks = tuple(f"T{i}" for i in range(1, config.trunks + 1))
        self.kinds.update({t: TRUNK for t in self.trunks})
        self.calls: dict[str, Call] = {}  # live calls only: a cleared call is forgotten
        self.by_device: dict[str, dict[str, Connection]] = {d: {} for d in self.kinds}  # device -> call id -> conn
        self.calls_made = 0
        self._ring: list[tuple[int, int, Connection]] = []  # (deadline, seq, connection), stale entries skipped
        self._seq = 0

    # ------------------------------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        """When ``advance`` next has something to do, or ``None``."""
        ring = self._ring
        while ring and ring[0][2].ring_seq != ring[0][1]:
            heapq.heappop(ring)  # disarmed: answered, cleared, diverted
        return ring[0][0] if ring else None

    def advance(self, now_ms: int) -> list[SwitchEvent]:
        """Fire every ring timer due at or before ``now_ms``, each at its own deadline, in order."""
        self._check_time(now_ms)
        out: list[SwitchEvent] = []
        while (due := self.next_deadline()) is not None and due <= now_ms:
            _, _, conn = heapq.heappop(self._ring)
            self.now_ms = due
            out += self._no_answer(conn)
        self.now_ms = now_ms
        return out

    def _arm(self, conn: Connection) -> None:
        self._seq += 1
        conn.ring_seq = self._seq
        conn.ring_deadline_ms = self.now_ms + self.config.ring_timeout_ms
        heapq.heappush(self._ring, (conn.ring_deadline_ms, self._seq, conn))

    @staticmethod
    def _disarm(conn: Connection) -> None:
        conn.ring_seq = 0
        conn.ring_deadline_ms = None

    def _check_time(self, now_ms: int) -> None:
        if now_ms < self.now_ms:
            raise SwitchError("time_backwards", f"{now_ms} ms is earlier than the switch's clock ({self.now_ms} ms)")

    def _op(self, now_ms: int, fn: Callable[[], list[SwitchEvent]]) -> list[SwitchEvent]:
        fired = self.advance(now_ms)
        try:
            return fired + fn()
        except SwitchError as exc:
            exc.fired = fired
            raise

    # ------------------------------------------------------------------------------------- operations

    def inbound(self, ani: str, dnis: str, now_ms: int, attached: Mapping[str, str] | None = None) -> list[SwitchEvent]:
        """A call arrives on a free trunk from ``ani`` for ``dnis`` (an extension or a queue DN)."""
        return self._op(now_ms, lambda: self._inbound(ani, dnis, attached))

    def make_call(
        self, from_device: str, to: str, now_ms: int, attached: Mapping[str, str] | None = None
    ) -> list[SwitchEvent]:
        """Extension ``from_device`` dials ``to``: an extension, a queue DN or an external number."""
        return self._op(now_ms, lambda: self._make_call(from_device, to, attached))

    def answer(self, call_id: str, device: str, now_ms: int) -> list[SwitchEvent]:
        return self._op(now_ms, lambda: self._answer(call_id, device))

    def hold(self, call_id: str, device: str, now_ms: int) -> list[SwitchEvent]:
        return self._op(now_ms, lambda: self._hold(call_id, device))

    def retrieve(self, call_id: str, device: str, now_ms: int) -> list[SwitchEvent]:
        return self._op(now_ms, lambda: self._retrieve(call_id, device))

    def deflect(self, call_id: str, device: str, to: str, now_ms: int) -> list[SwitchEvent]:
        """Move an unanswered call from ``device`` (alerting, or a queue DN where it waits) to ``to``: how the
        ACD routes a queued call to an agent, and takes it back from one who did not answer."""
        return self._op(now_ms, lambda: self._deflect(call_id, device, to))

    def transfer(self, call_id: str, device: str, to: str, now_ms: int) -> list[SwitchEvent]:
        """Blind transfer: ``device`` hands the call to ``to`` and leaves at once."""
        return self._op(now_ms, lambda: self._transfer(call_id, device, to))

    def consult(self, call_id: str, device: str, to: str, now_ms: int) -> list[SwitchEvent]:
        """Consultation call: ``device`` holds ``call_id`` (if it is not held already) and dials ``to``."""
        return self._op(now_ms, lambda: self._consult(call_id, device, to))

    def complete_transfer(
        self, held_call_id: str, active_call_id: str, now_ms: int, device: str | None = None
    ) -> list[SwitchEvent]:
        """Consultative transfer: the consulted party takes ``device``'s place in the held call."""
        return self._op(now_ms, lambda: self._join(held_call_id, active_call_id, device, conference=False))

    def conference(
        self, held_call_id: str, active_call_id: str, now_ms: int, device: str | None = None
    ) -> list[SwitchEvent]:
        """Three-way conference: ``device`` brings the consulted party into the held call and stays."""
        return self._op(now_ms, lambda: self._join(held_call_id, active_call_id, device, conference=True))

    def clear_connection(self, call_id: str, device: str, now_ms: int) -> list[SwitchEvent]:
        """``device`` hangs up. A call left with fewer than two parties ends."""
        return self._op(now_ms, lambda: self._clear_connection(call_id, device))

    def clear_call(self, call_id: str, now_ms: int) -> list[SwitchEvent]:
        """End the call for everyone."""
        return self._op(now_ms, lambda: self._clear_call(call_id))

    def set_attached_data(
        self, call_id: str, data: Mapping[str, str], now_ms: int, *, replace: bool = False, device: str = ""
    ) -> list[SwitchEvent]:
        """Merge ``data`` into the call's user data (or replace it). It travels with the call."""
        return self._op(now_ms, lambda: self._set_data(call_id, data, replace, device))

    def generate_digits(self, call_id: str, device: str, digits: str, now_ms: int) -> list[SwitchEvent]:
        """The party at ``device`` (normally the caller's trunk) sends DTMF ``digits`` (``[0-9*#A-D]``, 1 to 32)
        into the call. Only a connected party can: a held or ringing one has no speech path."""
        return self._op(now_ms, lambda: self._digits(call_id, device, digits))

    # ----------------------------------------------------------------------------------------- views

    def call(self, call_id: str) -> Call:
        try:
            return self.calls[call_id]
        except KeyError:
            raise SwitchError("unknown_call", f"no call {call_id!r} (never made, or cleared)") from None

    def connection(self, call_id: str, device: str) -> Connection:
        call = self.call(call_id)
        if device not in self.kinds:
            raise SwitchError("unknown_device", f"no device {device!r}")
        try:
            return call.connections[device]
        except KeyError:
            raise SwitchError("not_in_call", f"device {device!r} is not in call {call_id!r}") from None

    def connections_of(self, device: str) -> list[Connection]:
        return list(self.by_device.get(device, {}).values())

    def is_busy(self, device: str) -> bool:
        """Is the device's line taken: an extension alerting or talking, or a trunk carrying any call. Queue DNs
        and IVR numbers take any number of calls."""
        conns = self.by_device.get(device, {}).values()
        kind = self.kinds.get(device)
        if kind == TRUNK:
            return bool(conns)
        if kind in (QUEUE, IVR):
            return False
        return any(c.state in ACTIVE for c in conns)

    def free_trunks(self) -> list[str]:
        return [t for t in self.trunks if not self.by_device[t]]

    def snapshot(self) -> tuple[Any, ...]:
        """Everything observable, as plain comparable data (the tests check a refusal changes none of it)."""
        calls = tuple(
            (
                c.id,
                c.ani,
                c.dnis,
                tuple(sorted(c.attached_data.items())),
                c.consult_of,
                tuple(
                    (d, x.kind, x.number, x.state, x.came_from, x.ring_deadline_ms) for d, x in c.connections.items()
                ),
            )
            for c in self.calls.values()
        )
        return (self.now_ms, self.calls_made, calls, self.next_deadline())

    def describe(self, call_id: str) -> dict[str, Any]:
        """A call as plain data (``SnapshotCall`` on the CTI link)."""
        c = self.call(call_id)
        return {
            "call_id": c.id,
            "state": c.state,
            "ani": c.ani,
            "dnis": c.dnis,
            "attached_data": dict(c.attached_data),
            "consult_of": c.consult_of,
            "connections": [
                {"device": x.device, "kind": x.kind, "number": x.number, "state": x.state}
                for x in c.connections.values()
            ],
        }

    # ------------------------------------------------------------------------------------ internals

    def _resolve(self, to: Any) -> tuple[str, str]:
        """(kind, number) of a destination, checked: exists, reachable, not busy, a trunk free for it."""
        if not isinstance(to, str):
            raise SwitchError("invalid_number", f"not a number: {to!r}")
        kind = self.kinds.get(to)
        if kind == EXTENSION:
            if self.is_busy(to):
                raise SwitchError("busy", f"extension {to!r} is busy")
            return EXTENSION, to
        if kind in (QUEUE, IVR):
            return kind, to
        if kind is None and EXTERNAL_NUMBER.fullmatch(to):
            if not self.free_trunks():
                raise SwitchError("no_trunk", f"no free trunk to reach {to!r}")
            return TRUNK, to
        raise SwitchError(
            "invalid_number", f"{to!r} is not an extension, a queue DN, an IVR number or an external number"
        )

    def _extension(self, device: str, what: str, *, ivr: bool = False) -> None:
        kind = self.kinds.get(device)
        if kind is None:
            raise SwitchError("unknown_device", f"no device {device!r}")
        if kind != EXTENSION and not (ivr and kind == IVR):
            who = "an extension or an IVR" if ivr else "an extension"
            raise SwitchError("not_allowed", f"only {who} can {what} ({device!r} is a {kind})")

    def _new_call(self, ani: str, dnis: str, attached: dict[str, str]) -> Call:
        self.calls_made += 1
        call = Call(f"{self.call_prefix}{self.calls_made}", ani, dnis, attached, self.now_ms)
        self.calls[call.id] = call
        return call

    def _ev(self, cls: type[SwitchEvent], call: Call, conn: Connection, **kw: Any) -> SwitchEvent:
        return cls(
            at_ms=self.now_ms,
            call_id=call.id,
            device=conn.device,
            ani=call.ani,
            dnis=call.dnis,
            attached_data=dict(call.attached_data),
            parties=tuple(call.connections),
            number=conn.number,
            **kw,
        )

    def _enter(self, call: Call, kind: str, number: str, action: str, calling: str = "") -> list[SwitchEvent]:
        """A new connection: a trunk is seized for an outside number; extensions and queues are themselves."""
        device = self.free_trunks()[0] if kind == TRUNK else number
        conn = Connection(call.id, device, kind, number)
        conn.step(action)
        call.connections[device] = conn
        self.by_device[device][call.id] = conn
        if conn.state == ALERTING:
            self._arm(conn)
            return [self._ev(Delivered, call, conn, calling_device=calling)]
        if conn.state == QUEUED:
            return [self._ev(Queued, call, conn, calling_device=calling)]
        return [self._ev(Originated, call, conn)]

    def _deliver(self, call: Call, kind: str, number: str, calling: str) -> tuple[Connection, list[SwitchEvent]]:
        out = self._enter(call, kind, number, "queue" if kind == QUEUE else "deliver", calling)
        conn = call.connections[out[-1].device]
        if kind == IVR:  # a voice-response unit picks up at once: the caller hears its first prompt
            out += self._answer(call.id, conn.device)
        return conn, out

    def _leave(self, call: Call, conn: Connection, action: str) -> None:
        conn.step(action)
        self._disarm(conn)
        del call.connections[conn.device]
        del self.by_device[conn.device][call.id]

    def _collapse(self, call: Call, cause: str = "normal") -> list[SwitchEvent]:
        """A call needs two parties: with fewer left, the rest are cleared and the call ends."""
        out: list[SwitchEvent] = []
        if len(call.connections) < 2:
            for conn in list(call.connections.values()):
                self._leave(call, conn, "clear")
                out.append(self._ev(ConnectionCleared, call, conn, cause=cause))
        if not call.connections:
            del self.calls[call.id]
        return out

    def _inbound(self, ani: Any, dnis: Any, attached: Mapping[str, str] | None) -> list[SwitchEvent]:
        if not isinstance(ani, str) or not 0 < len(ani) <= 64:
            raise SwitchError("invalid_number", "the calling number (ANI) must be 1 to 64 characters")
        if not isinstance(dnis, str) or self.kinds.get(dnis) not in (EXTENSION, QUEUE, IVR):
            raise SwitchError(
                "invalid_number", f"inbound calls reach extensions, queue DNs and IVR numbers, not {dnis!r}"
            )
        kind, number = self._resolve(dnis)
        data = _check_data(attached or {})
        if not self.free_trunks():
            raise SwitchError("no_trunk", "all trunks are busy")
        call = self._new_call(ani, dnis, data)
        out = self._enter(call, TRUNK, ani, "originate")
        return out + self._deliver(call, kind, number, out[0].device)[1]

    def _make_call(self, from_device: str, to: Any, attached: Mapping[str, str] | None) -> list[SwitchEvent]:
        self._extension(from_device, "make a call")
        if self.is_busy(from_device):
            raise SwitchError("busy", f"extension {from_device!r} is already on a call")
        if to == from_device:
            raise SwitchError("invalid_number", "an extension cannot call itself")
        kind, number = self._resolve(to)
        data = _check_data(attached or {})
        call = self._new_call(from_device, number, data)
        out = self._enter(call, EXTENSION, from_device, "originate")
        return out + self._deliver(call, kind, number, from_device)[1]

    def _answer(self, call_id: str, device: str) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        conn.must("answer")
        call = self.calls[call_id]
        conn.step("answer")
        self._disarm(conn)
        conn.came_from = None
        return [self._ev(Established, call, conn)]

    def _hold(self, call_id: str, device: str) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        self._extension(device, "hold")
        conn.step("hold")
        return [self._ev(Held, self.calls[call_id], conn)]

    def _retrieve(self, call_id: str, device: str) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        self._extension(device, "retrieve")
        conn.must("retrieve")
        if self.is_busy(device):
            raise SwitchError("busy", f"extension {device!r} is on another call: hold or clear it first")
        conn.step("retrieve")
        return [self._ev(Retrieved, self.calls[call_id], conn)]

    def _target(self, call: Call, device: str, to: Any) -> tuple[str, str]:
        if to == device:
            raise SwitchError("invalid_number", f"{device!r} cannot pass the call to itself")
        if isinstance(to, str) and to in call.connections:
            raise SwitchError("conflict", f"{to!r} is already in call {call.id!r}")
        return self._resolve(to)

    def _deflect(self, call_id: str, device: str, to: Any) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        call = self.calls[call_id]
        conn.must("divert")
        kind, number = self._target(call, device, to)
        came_from = device if conn.kind == QUEUE else conn.came_from
        self._leave(call, conn, "divert")
        out = [self._ev(Diverted, call, conn, to_device=number if kind != TRUNK else self.free_trunks()[0])]
        new, more = self._deliver(call, kind, number, device)
        new.came_from = came_from if kind == EXTENSION else None
        return out + more

    def _transfer(self, call_id: str, device: str, to: Any) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        call = self.calls[call_id]
        self._extension(device, "transfer", ivr=True)
        conn.must("transfer")
        kind, number = self._target(call, device, to)
        self._leave(call, conn, "transfer")
        to_device = self.free_trunks()[0] if kind == TRUNK else number
        out = [self._ev(Transferred, call, conn, to_device=to_device)]
        _, more = self._deliver(call, kind, number, device)
        return out + more

    def _consult(self, call_id: str, device: str, to: Any) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        call = self.calls[call_id]
        self._extension(device, "make a consultation call")
        if conn.state != HELD:
            conn.must("hold")
        elif self.is_busy(device):
            raise SwitchError("busy", f"extension {device!r} is already on another call")
        kind, number = self._target(call, device, to)
        out: list[SwitchEvent] = []
        if conn.state != HELD:
            conn.step("hold")
            out.append(self._ev(Held, call, conn))
        consult = self._new_call(device, number, dict(call.attached_data))
        consult.consult_of = call.id
        out += self._enter(consult, EXTENSION, device, "originate")
        return out + self._deliver(consult, kind, number, device)[1]

    def _join(self, held_id: str, active_id: str, device: str | None, *, conference: bool) -> list[SwitchEvent]:
        held, active = self.call(held_id), self.call(active_id)
        if held is active:
            raise SwitchError("bad_request", "the held and the active call must differ")
        if device is None:  # the one device holding one call and talking on the other
            both = [
                d
                for d, c in held.connections.items()
                if c.state == HELD and (a := active.connections.get(d)) is not None and a.state == CONNECTED
            ]
            if len(both) != 1:
                raise SwitchError("invalid_state", f"no single device holds {held_id!r} and talks on {active_id!r}")
            device = both[0]
        self._extension(device, "conference" if conference else "transfer")
        mine_held, mine_active = self.connection(held_id, device), self.connection(active_id, device)
        mine_held.must("conference" if conference else "transfer")
        mine_active.must("merge" if conference else "transfer")
        if mine_held.state != HELD or mine_active.state != CONNECTED:
            raise SwitchError("invalid_state", f"{device!r} must hold {held_id!r} and talk on {active_id!r}")
        others = [c for d, c in active.connections.items() if d != device]
        for c in others:
            c.must("add" if conference else "join")
            if c.device in held.connections:
                raise SwitchError("conflict", f"{c.device!r} is in both calls")
        to_device = others[0].device if others else ""
        if conference:
            mine_held.step("conference")
            self._leave(active, mine_active, "merge")
        else:
            self._leave(held, mine_held, "transfer")
            self._leave(active, mine_active, "transfer")
        for c in others:
            c.step("add" if conference else "join")
            del active.connections[c.device]
            del self.by_device[c.device][active.id]
            c.call_id = held.id
            held.connections[c.device] = c
            self.by_device[c.device][held.id] = c
        del self.calls[active.id]
        cls = Conferenced if conference else Transferred
        ev = self._ev(cls, held, mine_held, to_device=to_device, secondary_call_id=active.id)
        return [ev, *self._collapse(held)]

    def _clear_connection(self, call_id: str, device: str) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        call = self.calls[call_id]
        self._leave(call, conn, "clear")
        return [self._ev(ConnectionCleared, call, conn, cause="normal"), *self._collapse(call)]

    def _clear_call(self, call_id: str) -> list[SwitchEvent]:
        call = self.call(call_id)
        out: list[SwitchEvent] = []
        for conn in list(call.connections.values()):
            self._leave(call, conn, "clear")
            out.append(self._ev(ConnectionCleared, call, conn, cause="normal"))
        del self.calls[call.id]
        return out

    def _set_data(self, call_id: str, data: Mapping[str, str], replace: bool, device: str) -> list[SwitchEvent]:
        call = self.call(call_id)
        new = _check_data(data)
        merged = new if replace else {**call.attached_data, **new}
        if len(merged) > MAX_DATA_ITEMS:
            raise SwitchError("bad_request", f"at most {MAX_DATA_ITEMS} attached data items")
        call.attached_data = merged
        conn = call.connections.get(device) or Connection(call.id, device, "", "")
        return [self._ev(AttachedDataChanged, call, conn)]

    def _digits(self, call_id: str, device: str, digits: Any) -> list[SwitchEvent]:
        conn = self.connection(call_id, device)
        if not isinstance(digits, str) or not DTMF.fullmatch(digits):
            raise SwitchError("bad_request", "digits are 1 to 32 of 0-9 * # A-D")
        if conn.state != CONNECTED:
            raise SwitchError(
                "invalid_state", f"connection {device!r} in call {call_id!r} is {conn.state}: no speech path for DTMF"
            )
        return [self._ev(DigitsGenerated, self.calls[call_id], conn, digits=digits)]

    def _no_answer(self, conn: Connection) -> list[SwitchEvent]:
        call = self.calls[conn.call_id]
        self._leave(call, conn, "no_answer")
        out = [self._ev(Failed, call, conn, cause="no_answer")]
        back = conn.came_from
        if back is not None and back not in call.connections and call.connections:
            out += self._enter(call, QUEUE, back, "queue", conn.device)
        return out + self._collapse(call, cause="no_answer")


def replay(events: Iterable[SwitchEvent]) -> dict[tuple[str, str], str]:
    """Rebuild the live connections' states, ``(call_id, device) -> state``, from events alone.

    This is the contract a CTI client relies on, written as code: the property test checks it against the
    switch after every step.
    """
    conns: dict[tuple[str, str], str] = {}
    for ev in events:
        key = (ev.call_id, ev.device)
        kind = type(ev)
        if kind in (Originated, Established, Retrieved):
            conns[key] = CONNECTED
        elif kind is Delivered:
            conns[key] = ALERTING
        elif kind is Queued:
            conns[key] = QUEUED
        elif kind is Held:
            conns[key] = HELD
        elif kind in (Diverted, ConnectionCleared, Failed):
            conns.pop(key, None)
        elif kind in (Transferred, Conferenced):
            sec = ev.secondary_call_id  # type: ignore[attr-defined]
            if kind is Transferred:
                conns.pop(key, None)
            else:
                conns[key] = CONNECTED
            if sec:
                conns.pop((sec, ev.device), None)
                for k in [k for k in conns if k[0] == sec]:
                    conns[(ev.call_id, k[1])] = conns.pop(k)
    return conns
