"""The CTI link: a line-based JSON protocol over TCP in front of the simulated switch (``docs/cti.md``).

One JSON object per line, both ways. A client's first line authenticates it (``Authenticate`` with the
server's token); a first line that is anything else (an HTTP request from a web page, a wrong token) closes
the connection without executing anything. Then it sends CSTA-style requests (``MakeCall``, ``AnswerCall``,
``TransferCall``…) each with an ``invoke_id``; the server answers every request with exactly one response that
echoes it, after pushing the events the request caused to every connection monitoring a device involved.
Nothing an authenticated client sends can stop the server: bad JSON, an unknown request, an oversized line
or a refused operation is answered with an error response and the connection carries on.

The link is an adapter: it translates lines into switch operations and events into lines, and holds no call
state of its own (that is the switch's). ``CtiServer`` is the Twisted factory; it owns a ``SwitchDriver``.
``CtiClient`` is a small client for tests, softphones and the load generator.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from contactcentre.edge.limits import decode_json
from contactcentre.telephony.driver import SwitchDriver
from contactcentre.telephony.events import SwitchEvent
from contactcentre.telephony.switch import Switch, SwitchError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024
ALL = "*"  # MonitorStart without a device, or with this one: every event of the switch
LOGIN = "Authenticate"  # the first line's request: {"request": "Authenticate", "token": "..."}
LOGIN_TIMEOUT_S = 10.0

# ------------------------------------------------------------------------------------------------ requests


class Request(msgspec.Struct, frozen=True):
    invoke_id: int | str | None = None


class MonitorStart(Request, frozen=True):
    device: str = ALL


class MonitorStop(Request, frozen=True):
    device: str = ALL


class MakeCall(Request, frozen=True):
    from_: str = msgspec.field(name="from", default="")
    to: str = ""
    attached_data: dict[str, str] = {}


class AnswerCall(Request, frozen=True):
    call_id: str = ""
    device: str = ""


class HoldCall(AnswerCall, frozen=True):
    pass


class RetrieveCall(AnswerCall, frozen=True):
    pass


class ClearConnection(AnswerCall, frozen=True):
    pass


class ClearCall(Request, frozen=True):
    call_id: str = ""


class DeflectCall(Request, frozen=True):
    call_id: str = ""
    device: str = ""
    to: str = ""


class ConsultationCall(DeflectCall, frozen=True):
    pass


class TransferCall(Request, frozen=True):
    """Blind with ``call_id``, ``device`` and ``to``; consultative with ``held_call_id`` and ``active_call_id``."""

    call_id: str | None = None
    device: str | None = None
    to: str | None = None
    held_call_id: str | None = None
    active_call_id: str | None = None


class ConferenceCall(Request, frozen=True):
    held_call_id: str = ""
    active_call_id: str = ""
    device: str | None = None


class SetAttachedData(Request, frozen=True):
    call_id: str = ""
    data: dict[str, str] = {}
    replace: bool = False
    device: str = ""


class GenerateDigits(Request, frozen=True):
    """The party at ``device`` (a caller's trunk, a softphone) sends DTMF ``digits`` into the call."""

    call_id: str = ""
    device: str = ""
    digits: str = ""


class SnapshotCall(Request, frozen=True):
    call_id: str = ""


class SnapshotDevice(Request, frozen=True):
    device: str = ""


class SimulateInbound(Request, frozen=True):
    """Not CSTA: the trunk side of the simulator, for load generators driving the switch over TCP."""

    ani: str = ""
    dnis: str = ""
    attached_data: dict[str, str] = {}


REQUESTS: dict[str, type[Request]] = {
    cls.__name__: cls
    for cls in (
        MonitorStart,
        MonitorStop,
        MakeCall,
        AnswerCall,
        HoldCall,
        RetrieveCall,
        DeflectCall,
        ConsultationCall,
        TransferCall,
        ConferenceCall,
        ClearConnection,
        ClearCall,
        SetAttachedData,
        GenerateDigits,
        SnapshotCall,
        SnapshotDevice,
        SimulateInbound,
    )
}
# Fields a request cannot do without (msgspec defaults them so that a missing one is our error, not its).
REQUIRED: dict[str, tuple[str, ...]] = {
    "MakeCall": ("from_", "to"),
    "AnswerCall": ("call_id", "device"),
    "HoldCall": ("call_id", "device"),
    "RetrieveCall": ("call_id", "device"),
    "ClearConnection": ("call_id", "device"),
    "ClearCall": ("call_id",),
    "DeflectCall": ("call_id", "device", "to"),
    "ConsultationCall": ("call_id", "device", "to"),
    "ConferenceCall": ("held_call_id", "active_call_id"),
    "SetAttachedData": ("call_id",),
    "GenerateDigits": ("call_id", "device", "digits"),
    "SnapshotCall": ("call_id",),
    "SnapshotDevice": ("device",),
    "SimulateInbound": ("ani", "dnis"),
}


class BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def event_line(ev: SwitchEvent) -> bytes:
    return msgspec.json.encode(ev)


def involves(ev: SwitchEvent, device: str) -> bool:
    """Does a monitor on ``device`` see this event: the device is its subject, a party or its target."""
    return device == ev.device or device in ev.parties or device == getattr(ev, "to_device", None)


# ------------------------------------------------------------------------------------------------- server


class CtiProtocol(LineReceiver):
    """One CTI client connection."""

    delimiter = b"\n"

    def __init__(self, server: CtiServer) -> None:
        self.server = server
        self.MAX_LENGTH = server.max_line
        self.monitors: set[str] = set()
        self._discarding = False  # inside an oversized line: drop bytes up to its end
        self._replay: bytes | None = None
        self.authenticated = False
        self._refused = False  # closing after a refused login: read nothing more
        self._login_timer: IDelayedCall | None = None

    # --------------------------------------------------------------------------------------- transport

    def connectionMade(self) -> None:
        self.server.connections.add(self)
        # A connection that never logs in must not keep its socket: it is closed after the login timeout.
        self._login_timer = self.server.clock.callLater(self.server.login_timeout_s, self._login_timed_out)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.server.connections.discard(self)
        self._cancel_login_timer()

    def _cancel_login_timer(self) -> None:
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None

    def _login_timed_out(self) -> None:
        self._login_timer = None
        log.info("CTI: %s did not authenticate within %g s; closed", self._peer(), self.server.login_timeout_s)
        self._refuse("no Authenticate in time", None)

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def _refuse(self, message: str | None, invoke_id: int | str | None) -> None:
        """Close the connection, with an ``unauthorized`` error line saying ``message`` first; without one
        when the peer does not speak the protocol (an HTTP request) and gets nothing back at all."""
        self._refused = True
        if message is not None:
            self.send({"response": LOGIN, "invoke_id": invoke_id, "ok": False, **_error("unauthorized", message)})
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        while True:
            if self._discarding:
                end = data.find(self.delimiter)
                if end < 0:
                    return
                self._discarding = False
                data = data[end + len(self.delimiter) :]
            if data:
                super().dataReceived(data)
            if self._replay is None:
                return
            data, self._replay = self._replay, None

    def lineLengthExceeded(self, line: bytes) -> None:
        if not self.authenticated:
            self._refuse(None, None)
            return
        # LineReceiver hands over the oversized line together with everything buffered behind it, and would
        # drop the connection. Drop only the line: if its end is not here yet, skip up to it when it comes.
        self.send({"response": "error", "invoke_id": None, "ok": False, **_error("line_too_long", self._too_long())})
        end = line.find(self.delimiter)
        if end < 0:
            self._discarding = True
        else:
            self._replay = line[end + len(self.delimiter) :]

    def _too_long(self) -> str:
        return f"lines are at most {self.MAX_LENGTH} bytes; the line was dropped"

    def send(self, obj: Any) -> None:
        self.sendLine(msgspec.json.encode(obj))

    def push(self, events: list[SwitchEvent]) -> None:
        mon = self.monitors
        if not mon:
            return
        for ev in events:
            if ALL in mon or any(involves(ev, d) for d in mon):
                self.sendLine(event_line(ev))

    # ----------------------------------------------------------------------------------------- requests

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        if not self.authenticated:
            self._login(line)
            return
        name: Any = None
        invoke_id: Any = None
        try:
            try:
                obj = decode_json(line)
            except msgspec.DecodeError as exc:
                raise BadRequest("bad_json", f"not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise BadRequest("bad_request", "a request is a JSON object")
            name = obj.get("request")
            if not isinstance(name, str):
                name = None
            invoke_id = obj.get("invoke_id")
            if isinstance(invoke_id, bool) or not (invoke_id is None or isinstance(invoke_id, str | int)):
                invoke_id = None
                raise BadRequest("bad_request", "invoke_id must be an integer or a string")
            if name is None:
                raise BadRequest("bad_request", "a request names itself in 'request'")
            cls = REQUESTS.get(name)
            if cls is None:
                raise BadRequest("unknown_request", f"unknown request {name!r}; known: {', '.join(REQUESTS)}")
            body = {k: v for k, v in obj.items() if k != "request"}
            try:
                req = msgspec.convert(body, cls, strict=True)
            except msgspec.ValidationError as exc:
                raise BadRequest("bad_request", str(exc)) from None
            missing = [f.rstrip("_") for f in REQUIRED.get(name, ()) if not getattr(req, f)]
            if missing:
                raise BadRequest("bad_request", f"{name} needs {', '.join(missing)}")
            result = self.server.handle(self, req)
        except (BadRequest, SwitchError) as exc:
            self.send(
                {"response": name or "error", "invoke_id": invoke_id, "ok": False, **_error(exc.code, exc.message)}
            )
            return
        except Exception:  # a bug of ours must cost one request, not the server or the connection
            log.exception("CTI request failed: %r", line[:200])
            self.send(
                {
                    "response": name or "error",
                    "invoke_id": invoke_id,
                    "ok": False,
                    **_error("internal", "internal error"),
                }
            )
            return
        self.send({"response": name, "invoke_id": invoke_id, "ok": True, **result})

    def _login(self, line: bytes) -> None:
        """The first line: ``Authenticate`` with the server's token, or the connection is closed. Anything that
        is not a JSON object (``POST / HTTP/1.1`` from a browser's fetch) is closed without a word, so that no
        line of a web page's request body is ever read, let alone executed."""
        try:
            obj = decode_json(line)
        except msgspec.DecodeError:
            obj = None
        if not isinstance(obj, dict):
            log.info("CTI: %s sent a first line that is not JSON (%.20r); closed", self._peer(), line)
            self._refuse(None, None)
            return
        invoke_id = obj.get("invoke_id")
        if isinstance(invoke_id, bool) or not isinstance(invoke_id, str | int):
            invoke_id = None
        token = obj.get("token")
        if obj.get("request") != LOGIN or not isinstance(token, str) or not self.server.token_matches(token):
            log.warning("CTI: %s failed to authenticate; closed", self._peer())
            self._refuse(f"the first line must be {LOGIN} with the server's token", invoke_id)
            return
        self._cancel_login_timer()
        self.authenticated = True
        self.send({"response": LOGIN, "invoke_id": invoke_id, "ok": True, "protocol": PROTOCOL_VERSION})


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _call_ids(events: list[SwitchEvent]) -> dict[str, Any]:
    return {"call_id": events[-1].call_id} if events else {}


class CtiServer(Factory):
    """The CTI link's factory: one switch, one driver, every client connection.

    ``clock`` is an ``IReactorTime`` (the reactor, or ``task.Clock`` in tests); ``now_ms`` optionally replaces
    the clock's seconds as the switch's time (the centre's clock, in epoch milliseconds). ``token`` is the
    secret every connection must send in its first line (``Authenticate``) within ``login_timeout_s``.
    """

    protocol = CtiProtocol

    def __init__(
        self,
        switch: Switch,
        clock: IReactorTime,
        *,
        token: str,
        login_timeout_s: float = LOGIN_TIMEOUT_S,
        now_ms: Callable[[], int] | None = None,
        max_line: int = MAX_LINE,
        allow_simulation: bool = True,
    ) -> None:
        if not token:
            raise ValueError("the CTI link needs a token")
        self.switch = switch
        self.clock = clock
        self._token = token.encode()
        self.login_timeout_s = login_timeout_s
        self.driver = SwitchDriver(switch, clock, now_ms=now_ms)
        self.max_line = max_line
        self.allow_simulation = allow_simulation
        self.connections: set[CtiProtocol] = set()
        self.driver.subscribe(self._fan_out)

    def buildProtocol(self, addr: IAddress) -> CtiProtocol:
        return CtiProtocol(self)

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)  # constant time: no guessing it byte by byte

    def _fan_out(self, events: list[SwitchEvent]) -> None:
        for conn in list(self.connections):
            conn.push(events)

    def simulate_inbound(self, ani: str, dnis: str, attached: Mapping[str, str] | None = None) -> str:
        """The trunk side: deliver a call from ``ani`` to ``dnis`` now; returns its call id."""
        return self.driver.simulate_inbound(ani, dnis, attached)

    def close(self) -> None:
        """Stop the switch's timer and hang up on every CTI client (no call control after shutdown)."""
        self.driver.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.loseConnection()

    # ------------------------------------------------------------------------------------------ dispatch

    def handle(self, conn: CtiProtocol, req: Request) -> dict[str, Any]:
        sw, run = self.switch, self.driver.run
        if isinstance(req, MonitorStart | MonitorStop):
            if req.device != ALL and req.device not in sw.kinds:
                raise SwitchError("unknown_device", f"no device {req.device!r}")
            if isinstance(req, MonitorStart):
                conn.monitors.add(req.device)
            else:
                conn.monitors.discard(req.device)
            return {"device": req.device}
        if isinstance(req, MakeCall):
            return _call_ids(run(lambda now: sw.make_call(req.from_, req.to, now, req.attached_data)))
        if isinstance(req, HoldCall):
            run(lambda now: sw.hold(req.call_id, req.device, now))
        elif isinstance(req, RetrieveCall):
            run(lambda now: sw.retrieve(req.call_id, req.device, now))
        elif isinstance(req, ClearConnection):
            run(lambda now: sw.clear_connection(req.call_id, req.device, now))
        elif isinstance(req, AnswerCall):
            run(lambda now: sw.answer(req.call_id, req.device, now))
        elif isinstance(req, ClearCall):
            run(lambda now: sw.clear_call(req.call_id, now))
        elif isinstance(req, ConsultationCall):
            events = run(lambda now: sw.consult(req.call_id, req.device, req.to, now))
            return {"held_call_id": req.call_id, "active_call_id": events[-1].call_id}
        elif isinstance(req, DeflectCall):
            run(lambda now: sw.deflect(req.call_id, req.device, req.to, now))
        elif isinstance(req, TransferCall):
            return self._transfer(req)
        elif isinstance(req, ConferenceCall):
            run(lambda now: sw.conference(req.held_call_id, req.active_call_id, now, req.device))
            return {"call_id": req.held_call_id}
        elif isinstance(req, SetAttachedData):
            run(lambda now: sw.set_attached_data(req.call_id, req.data, now, replace=req.replace, device=req.device))
        elif isinstance(req, GenerateDigits):
            run(lambda now: sw.generate_digits(req.call_id, req.device, req.digits, now))
        elif isinstance(req, SnapshotCall):
            return {"call": sw.describe(req.call_id)}
        elif isinstance(req, SnapshotDevice):
            if req.device not in sw.kinds:
                raise SwitchError("unknown_device", f"no device {req.device!r}")
            conns = sw.connections_of(req.device)
            return {"device": req.device, "calls": [{"call_id": c.call_id, "state": c.state} for c in conns]}
        elif isinstance(req, SimulateInbound):
            if not self.allow_simulation:
                raise SwitchError("not_allowed", "this server does not simulate the trunk side")
            return {"call_id": self.simulate_inbound(req.ani, req.dnis, req.attached_data)}
        return {"call_id": req.call_id} if hasattr(req, "call_id") else {}

    def _transfer(self, req: TransferCall) -> dict[str, Any]:
        sw, run = self.switch, self.driver.run
        if req.held_call_id or req.active_call_id:
            if not (req.held_call_id and req.active_call_id) or req.to:
                raise BadRequest("bad_request", "a consultative TransferCall names held_call_id and active_call_id")
            held, active = req.held_call_id, req.active_call_id
            run(lambda now: sw.complete_transfer(held, active, now, req.device))
            return {"call_id": held}
        if not (req.call_id and req.device and req.to):
            raise BadRequest("bad_request", "a blind TransferCall names call_id, device and to")
        call_id, device, to = req.call_id, req.device, req.to
        run(lambda now: sw.transfer(call_id, device, to, now))
        return {"call_id": call_id}


# ------------------------------------------------------------------------------------------------- client


class CtiRequestError(Exception):
    """The server answered ``ok: false``."""

    def __init__(self, response: dict[str, Any]) -> None:
        err = response.get("error") or {}
        self.code = err.get("code", "")
        self.response = response
        super().__init__(f"{response.get('response')}: {self.code}: {err.get('message', '')}")


class CtiClient(LineReceiver):
    """A minimal CTI client: ``request(name, **fields)`` returns a Deferred firing with the response (or
    failing with ``CtiRequestError``); pushed events go to ``on_event`` and are kept in ``events``."""

    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        self._pending: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self._next = 0

    def request(self, name: str, **fields: Any) -> defer.Deferred[dict[str, Any]]:
        """Send one request; ``from`` may be passed as ``from_``."""
        self._next += 1
        if "from_" in fields:
            fields["from"] = fields.pop("from_")
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[self._next] = d
        self.sendLine(msgspec.json.encode({"request": name, "invoke_id": self._next, **fields}))
        return d

    def authenticate(self, token: str) -> defer.Deferred[dict[str, Any]]:
        """The first request on a connection: without it the server closes the link."""
        return self.request(LOGIN, token=token)

    def lineReceived(self, line: bytes) -> None:
        msg = msgspec.json.decode(line)
        if "event" in msg:
            self.events.append(msg)
            if self.on_event is not None:
                self.on_event(msg)
            return
        d = self._pending.pop(msg.get("invoke_id"), None) if isinstance(msg.get("invoke_id"), int) else None
        if d is None:
            log.warning("CTI response nobody asked for: %r", msg)
            return
        if msg.get("ok"):
            d.callback(msg)
        else:
            d.errback(CtiRequestError(msg))

    def connectionLost(self, reason: Failure | None = None) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ConnectionError("CTI link closed"))
