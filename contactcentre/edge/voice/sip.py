"""The SIP front door, sans-I/O: SIP messages (an RFC 3261 subset) and a user-agent server for inbound calls.

Nothing here touches a socket or a clock. ``SipUas.receive(datagram, addr, now_ms)`` returns what to do about
it: datagrams to send (``Send``) and what happened to a call (``IncomingCall``, ``CallEnded``,
``DigitReceived``, ``HoldChanged``). The owner answers an ``IncomingCall`` with ``ring``/``answer``/``reject``
and hangs up with ``hangup``. Retransmissions are timers as data: ``next_deadline()`` and ``advance(now_ms)``,
as in the router and the switch. ``sip_transport.py`` drives this over UDP and maps calls onto the switch.

Signalling only: the SDP answer names a port but no RTP ever flows. What a dialog may do next is the table
``DIALOG_TRANSITIONS``; ``docs/sip.md`` lists what is supported and what is not.
"""

from __future__ import annotations

import heapq
import logging
import random
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from contactcentre.edge.limits import TokenBucket, address_key, canonical_ip
from contactcentre.edge.voice.sip_message import (
    SERVER,
    Request,
    Response,
    Sdp,
    SipError,
    dtmf_digit,
    name_addr,
    parse,
    parse_sdp,
    response,
    sdp_body,
    serialise,
    tag_of,
    uri_user,
    via_branch,
)

log = logging.getLogger(__name__)

_URI = re.compile(r"sips?:[!-~]+", re.I)  # printable, no spaces: it must make a valid request line

Addr = tuple[str, int]

MAX_DATAGRAM = 16 * 1024  # a UDP SIP message this large is abuse, not a call (RFC 3261 wants < 1300 bytes)
T1_MS = 500  # RFC 3261 timer values for an unreliable transport
T2_MS = 4_000
GIVE_UP_MS = 64 * T1_MS  # timers B/F/H: the far end is gone
KEEP_MS = 64 * T1_MS  # timer J: a finished transaction keeps answering retransmissions this long
# An unverified source (under the limits, not trusted, never yet ACKed one of our final responses) may be a
# forged address: its final responses are resent at T1, 3·T1 and 7·T1 only, and given up at 15·T1 (7.5 s)
# without a BYE, instead of for 64·T1 with a BYE at the end. A real phone ACKs within a round trip.
UNVERIFIED_GIVE_UP_MS = 15 * T1_MS
COOKIE = "z9hG4bK"  # RFC 3261 branch prefix
ALLOW = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS"
PRUNE_SOURCES = 1024  # look for forgettable sources once this many are remembered (then at twice as many)
# Methods we know and refuse (405, with Allow) rather than do not know (501).
KNOWN_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "UPDATE", "PRACK", "PUBLISH"})


@dataclass(frozen=True)
class SourceLimits:
    """What one source (its IP whatever the port; an IPv6 address's /64: ``source_key``) may do: start
    ``invites_per_s`` calls a second on average and ``invite_burst`` at once, and hold ``calls`` at a time.
    Past either it gets one 503 with ``Retry-After: retry_after_s``, sent once and kept nowhere (an INVITE's
    final response is otherwise resent until the ACK, which a spoofed source never sends: a reflector), and
    nothing more until that time is up. Requests outside a call (OPTIONS, REGISTER, a stray BYE …) and
    retransmissions take a token too, and over it get nothing. Until the source has ACKed one of our final
    responses (proving the address is its own) it is unverified: answers outside a call are never larger
    than the request (else not sent), and at most ``unacked`` of its calls' final responses are resent at a
    time, briefly (``UNVERIFIED_GIVE_UP_MS``), with no BYE after. ``trusted`` addresses (a SIP proxy or a
    carrier's trunk in front, every call from one address) are exempt.
    """

    invites_per_s: float
    invite_burst: int
    calls: int
    retry_after_s: int
    trusted: frozenset[str] = frozenset()
    unacked: int = 2  # an unverified source's final responses resent at a time; more are sent once only


@dataclass
class _Source:
    """What the limits remember of one address: dropped once it is as if it had never been seen."""

    bucket: TokenBucket
    quiet_until_ms: int = 0  # no further 503 to it before then
    calls: set[str] = field(default_factory=set)  # its dialogs that may hold a trunk (pruned when looked at)
    confirmed: bool = False  # it ACKed one of our final responses: it receives at this address
    resending: set[str] = field(default_factory=set)  # its dialogs whose final response we resend


def source_key(ip: str) -> str:
    """What the flood limits count as one source: the unit every per-address cap counts by (an IPv4 address,
    also when mapped into IPv6, or an IPv6 address's /64, since one host can take any address of its /64)."""
    return address_key(ip)


class SipStateError(Exception):
    """A dialog was asked to do what ``DIALOG_TRANSITIONS`` has no row for (names the state and the event)."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"a dialog in state {state!r} cannot take {event!r}")
        self.state = state
        self.event = event


# ----------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Send:
    data: bytes
    addr: Addr


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE: answer with ``ring``/``answer`` or ``reject``. ``ani`` is the From user, ``dnis`` the
    Request-URI user."""

    dialog: str
    ani: str
    dnis: str
    addr: Addr
    sip_call_id: str


@dataclass(frozen=True)
class CallEnded:
    """The caller's side is gone: ``bye``, ``cancel``, ``no_ack`` (our 200 was never acknowledged)."""

    dialog: str
    why: str


@dataclass(frozen=True)
class DigitReceived:
    dialog: str
    digit: str


@dataclass(frozen=True)
class HoldChanged:
    """The caller put us on hold (or took us off) with a re-INVITE. Recorded, nothing more: the switch's hold
    is the agent's."""

    dialog: str
    held: bool


Output = Send | IncomingCall | CallEnded | DigitReceived | HoldChanged

# ------------------------------------------------------------------------------------------------- dialogs

TRYING = "trying"  # INVITE received, 100 sent, the owner deciding
RINGING = "ringing"  # 180 sent
ANSWERED = "answered"  # 200 sent, retransmitted until the ACK
BYE_PENDING = "bye_pending"  # hung up by us before the ACK came: the BYE goes once it does (RFC 3261 15)
CONFIRMED = "confirmed"
REJECTED = "rejected"  # a final error (or 487) sent, retransmitted until the ACK
HANGING_UP = "hanging_up"  # our BYE sent, retransmitted until answered
ENDED = "ended"
DIALOG_STATES = (TRYING, RINGING, ANSWERED, BYE_PENDING, CONFIRMED, REJECTED, HANGING_UP, ENDED)
LIVE = frozenset({TRYING, RINGING, ANSWERED, BYE_PENDING, CONFIRMED})  # a dialog that may hold a trunk

# (state, event) -> next state. Events from the caller: invite (a re-INVITE), ack, cancel, bye, info; from the
# owner: ring, answer, reject, hangup; from timers: no_ack, bye_answered, bye_timeout. A request in a state
# without a row gets an error response (``REFUSED``), an owner's call without one raises ``SipStateError``.
DIALOG_TRANSITIONS: dict[tuple[str, str], str] = {
    (TRYING, "ring"): RINGING,
    (TRYING, "answer"): ANSWERED,
    (RINGING, "answer"): ANSWERED,
    (TRYING, "reject"): REJECTED,
    (RINGING, "reject"): REJECTED,
    (TRYING, "cancel"): REJECTED,  # 200 to the CANCEL, 487 to the INVITE
    (RINGING, "cancel"): REJECTED,
    (RINGING, "bye"): REJECTED,  # a BYE on the early dialog: 200, and 487 to the INVITE
    (TRYING, "hangup"): REJECTED,  # the switch dropped the call before it was answered: 480
    (RINGING, "hangup"): REJECTED,
    (REJECTED, "ack"): ENDED,
    (REJECTED, "no_ack"): ENDED,
    (ANSWERED, "ack"): CONFIRMED,
    (ANSWERED, "info"): ANSWERED,  # the ACK may still be on its way
    (ANSWERED, "bye"): ENDED,
    (ANSWERED, "hangup"): BYE_PENDING,
    (ANSWERED, "no_ack"): HANGING_UP,  # the caller never confirmed: BYE (RFC 3261 13.3.1.4)
    (BYE_PENDING, "ack"): HANGING_UP,
    (BYE_PENDING, "no_ack"): HANGING_UP,
    (BYE_PENDING, "bye"): ENDED,
    (CONFIRMED, "invite"): CONFIRMED,  # re-INVITE: hold / unhold
    (CONFIRMED, "ack"): CONFIRMED,  # for a re-INVITE's 200
    (CONFIRMED, "no_ack"): HANGING_UP,  # a re-INVITE's 200 never acknowledged
    (CONFIRMED, "info"): CONFIRMED,
    (CONFIRMED, "bye"): ENDED,
    (CONFIRMED, "hangup"): HANGING_UP,
    (HANGING_UP, "bye"): ENDED,  # both hung up at once
    (HANGING_UP, "ack"): HANGING_UP,  # a late ACK
    (HANGING_UP, "bye_answered"): ENDED,
    (HANGING_UP, "bye_timeout"): ENDED,
}
DIALOG_EVENTS = tuple(sorted({e for _, e in DIALOG_TRANSITIONS}))
# What a caller's request gets in a state the table has no row for.
REFUSED = {"invite": 491, "info": 481, "bye": 481, "cancel": 481}


def dialog_step(state: str, event: str) -> str:
    try:
        return DIALOG_TRANSITIONS[(state, event)]
    except KeyError:
        raise SipStateError(state, event) from None


class _Timer:
    __slots__ = ("cancelled", "fire")

    def __init__(self, fire: Callable[[int], list[Output]]) -> None:
        self.fire = fire
        self.cancelled = False


class _Retransmit:
    """One message sent again at T1, 2·T1 … (capped at T2) until stopped or GIVE_UP_MS has passed."""

    __slots__ = ("addr", "data", "give_up_at", "interval", "on_give_up", "resends", "timer")

    def __init__(
        self,
        data: bytes,
        addr: Addr,
        now_ms: int,
        on_give_up: Callable[[int], list[Output]],
        give_up_ms: int = GIVE_UP_MS,
        resends: bool = True,
    ) -> None:
        self.data = data
        self.addr = addr
        self.interval = T1_MS
        self.give_up_at = now_ms + give_up_ms
        self.resends = resends  # False: sent once, only the give-up is timed
        self.on_give_up = on_give_up
        self.timer: _Timer | None = None


@dataclass
class Dialog:
    """One inbound call. ``id`` is our To-tag, unique, and names the call to the owner."""

    id: str
    sip_call_id: str
    remote_tag: str
    addr: Addr
    invite: Request
    invite_key: str
    remote_target: str  # where our BYE goes: the caller's Contact URI
    state: str = TRYING
    remote_cseq: int = 0
    local_cseq: int = 0
    sdp_version: int = 0
    held: bool = False
    offer: Sdp | None = None
    pending: _Retransmit | None = field(default=None, repr=False)  # our final response to an INVITE
    pending_cseq: int = 0
    bye: _Retransmit | None = field(default=None, repr=False)
    bye_branch: str = ""

    def step(self, event: str) -> str:
        self.state = dialog_step(self.state, event)
        return self.state


class SipUas:
    """A SIP user-agent server for inbound calls; every method returns the ``Output`` it caused, timers
    due by ``now_ms`` first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        media_port: int = 4000,
        rng: random.Random | None = None,
        limits: SourceLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.media_port = media_port
        self.rng = rng or random.Random(secrets.randbits(64))
        self.now_ms = 0
        self.dialogs: dict[str, Dialog] = {}  # our tag -> dialog
        self._by_remote: dict[tuple[str, str], Dialog] = {}  # (Call-ID, caller's tag) -> dialog
        self._invites: dict[str, Dialog] = {}  # INVITE transaction key -> dialog (CANCEL finds it here)
        self._answered: dict[str, tuple[bytes, _Timer | None]] = {}  # transaction key -> last response sent
        self._heap: list[tuple[int, int, _Timer]] = []
        self._seq = 0
        self.limits = limits  # None: no per-source limits (the switch's trunks are the only cap)
        # The exempt addresses as the peer's address is compared: however the configuration spelled them.
        self._trusted = frozenset(canonical_ip(a) for a in limits.trusted) if limits is not None else frozenset()
        self._sources: dict[str, _Source] = {}
        self._prune_at = PRUNE_SOURCES
        self.shed = 0  # new INVITEs refused by the per-source limits (503 or dropped)
        self.unanswered = 0  # requests outside a call, or retransmissions, left unanswered by those limits
        self._rx_len = 0

    # --------------------------------------------------------------------------------------- timers

    def next_deadline(self) -> int | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, now_ms: int) -> list[Output]:
        """Fire every timer due at or before ``now_ms``, each at its own deadline, in order."""
        out: list[Output] = []
        while (due := self.next_deadline()) is not None and due <= now_ms:
            _, _, timer = heapq.heappop(self._heap)
            timer.cancelled = True
            self.now_ms = max(self.now_ms, due)
            out += timer.fire(due)
        self.now_ms = max(self.now_ms, now_ms)
        return out

    def _at(self, when: int, fire: Callable[[int], list[Output]]) -> _Timer:
        timer = _Timer(fire)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))
        return timer

    def _retransmit(
        self,
        data: bytes,
        addr: Addr,
        on_give_up: Callable[[int], list[Output]],
        give_up_ms: int = GIVE_UP_MS,
        resends: bool = True,
    ) -> _Retransmit:
        rt = _Retransmit(data, addr, self.now_ms, on_give_up, give_up_ms, resends)

        def fire(now: int) -> list[Output]:
            if now >= rt.give_up_at:
                rt.timer = None
                return rt.on_give_up(now)
            rt.interval = min(rt.interval * 2, T2_MS)
            rt.timer = self._at(min(now + rt.interval, rt.give_up_at), fire)
            return [Send(rt.data, rt.addr)]

        rt.timer = self._at(self.now_ms + T1_MS if resends else rt.give_up_at, fire)
        return rt

    @staticmethod
    def _stop(rt: _Retransmit | None) -> None:
        if rt is not None and rt.timer is not None:
            rt.timer.cancelled = True
            rt.timer = None

    def _remember(self, key: str, data: bytes, *, keep: bool = True) -> None:
        """Answer retransmissions of transaction ``key`` with ``data``; forget it KEEP_MS later (or when the
        dialog ends, for an INVITE still in progress: ``keep=False``)."""
        old = self._answered.get(key)
        if old is not None and old[1] is not None:
            old[1].cancelled = True
        timer = self._at(self.now_ms + KEEP_MS, lambda _now: self._forget_tx(key)) if keep else None
        self._answered[key] = (data, timer)

    def _forget_tx(self, key: str) -> list[Output]:
        self._answered.pop(key, None)
        self._invites.pop(key, None)
        return []

    # ------------------------------------------------------------------------------------- receiving

    def receive(self, data: bytes, addr: Addr, now_ms: int) -> list[Output]:
        """One datagram from ``addr``. Never raises for bad input: it is answered 400 or dropped and logged."""
        out = self.advance(now_ms)
        if len(data) > MAX_DATAGRAM:
            log.warning("sip: dropped a %d-byte datagram from %s:%s (limit %d)", len(data), *addr, MAX_DATAGRAM)
            return out
        if not data.strip():
            return out  # a CRLF keep-alive
        self._rx_len = len(data)  # what an answer to an unverified source may not exceed (_stray)
        try:
            msg = parse(data)
        except SipError as exc:
            return out + self._malformed(exc, addr)
        if isinstance(msg, Response):
            return out + self._on_response(msg)
        try:
            return out + self._on_request(msg, addr)
        except SipError as exc:  # a header we only read now (a To without '>') is as bad as an unparsable one
            return out + self._malformed(SipError(exc.reason, msg), addr)

    def _malformed(self, exc: SipError, addr: Addr) -> list[Output]:
        req = exc.partial
        if req is None or req.method == "ACK":
            log.info("sip: dropped a malformed message from %s:%s: %s", *addr, exc.reason)
            return []
        log.info("sip: 400 to %s from %s:%s: %s", req.method, *addr, exc.reason)
        text = exc.reason[:200].replace('"', "'")
        warning = ("Warning", f'399 {SERVER} "{text}"')
        if self._unverified(addr) is not None:  # the reason stays in the log: the answer must stay small
            return self._stray(req, "", addr, 400, to_tag="")
        return [Send(serialise(response(req, 400, extra=[warning])), addr)]

    def _tx_key(self, req: Request) -> str:
        vias = req.vias()
        branch = via_branch(vias[0])
        method = "INVITE" if req.method == "ACK" else req.method  # an ACK to an error is in the INVITE's transaction
        if branch.startswith(COOKIE):
            return f"{branch}|{vias[0].split(';', 1)[0].strip()}|{method}"
        number, _ = req.cseq()  # RFC 2543 peers: no unique branch
        return f"{req.get('Call-ID')}|{number}|{tag_of(req.get('From'))}|{vias[0]}|{method}"

    def _on_request(self, req: Request, addr: Addr) -> list[Output]:
        key = self._tx_key(req)
        if req.method != "ACK" and key in self._answered:
            # A retransmission: same answer, nothing new happens. Resent answers cost a forged source's bucket
            # too, or one remembered 200 could be called up again and again onto its victim.
            if not self._may_answer(addr):
                return []
            return [Send(self._answered[key][0], addr)]
        if req.method not in ("ACK", "OPTIONS") and (req.get("Max-Forwards") or "70").strip() == "0":
            return self._stray(req, key, addr, 483)
        handler = {
            "INVITE": self._on_invite,
            "ACK": self._on_ack,
            "CANCEL": self._on_cancel,
            "BYE": self._on_bye,
            "INFO": self._on_info,
            "OPTIONS": self._on_options,
        }.get(req.method)
        if handler is not None:
            return handler(req, key, addr)
        status = 405 if req.method in KNOWN_METHODS else 501
        return self._stray(req, key, addr, status, extra=[("Allow", ALLOW)])

    def _reply(
        self,
        req: Request,
        key: str,
        addr: Addr,
        status: int,
        *,
        dialog: Dialog | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> list[Output]:
        to_tag = dialog.id if dialog is not None else (self._tag() if status >= 200 else "")
        data = serialise(response(req, status, to_tag=to_tag, extra=extra))
        self._remember(key, data)
        return [Send(data, addr)]

    def _stray(
        self,
        req: Request,
        key: str,
        addr: Addr,
        status: int,
        *,
        extra: Iterable[tuple[str, str]] = (),
        to_tag: str | None = None,
    ) -> list[Output]:
        """The answer to a request outside any call. To an unverified source (perhaps a forged address, to
        bounce our answers onto) it costs a token of its bucket (none left: no answer), is sent statelessly
        (RFC 3261 8.2.7: nothing remembered), carries only what RFC 3261 requires (no Server, no Accept; Allow
        only on a 405) and is not sent at all if it would still be larger than the request."""
        source = self._unverified(addr)
        if source is None:
            if not key:
                return [Send(serialise(response(req, status, extra=extra)), addr)]
            return self._reply(req, key, addr, status, extra=extra)
        if not source.bucket.take(self.now_ms / 1000):
            self.unanswered += 1
            return []
        tag = self._tag() if to_tag is None else to_tag
        keep = [(n, v) for n, v in extra if status == 405 and n == "Allow"]
        resp = response(req, status, to_tag=tag, extra=keep)
        resp.headers = [(n, v) for n, v in resp.headers if n != "Server"]
        data = serialise(resp)
        if len(data) > self._rx_len:
            self.unanswered += 1
            log.info("sip: no %d to %s from unverified %s: larger than the request", status, req.method, addr[0])
            return []
        return [Send(data, addr)]

    def _unverified(self, addr: Addr) -> _Source | None:
        """The source of ``addr`` if the limits apply to it and it has not proven it receives there."""
        if self.limits is None or canonical_ip(addr[0]) in self._trusted:
            return None
        source = self._source(addr[0])
        return None if source.confirmed else source

    def _may_answer(self, addr: Addr) -> bool:
        """Whether a resent answer may go to ``addr``: yes unless it is unverified and out of tokens."""
        source = self._unverified(addr)
        if source is None or source.bucket.take(self.now_ms / 1000):
            return True
        self.unanswered += 1
        return False

    def _resend_plan(self, d: Dialog) -> tuple[int, bool]:
        """How a final response to ``d``'s INVITE is resent until the ACK: (give up after ms, resend at all).
        RFC 3261's 64·T1 with resends for a verified or exempt source; for an unverified one
        UNVERIFIED_GIVE_UP_MS, and resends only while fewer than ``unacked`` of its responses are resent."""
        source = self._unverified(d.addr)
        if source is None:
            return GIVE_UP_MS, True
        assert self.limits is not None
        source.resending = {
            c for c in source.resending if (x := self.dialogs.get(c)) is not None and x.pending and x.pending.resends
        }
        resends = len(source.resending) < self.limits.unacked
        if resends:
            source.resending.add(d.id)
        return UNVERIFIED_GIVE_UP_MS, resends

    def _tag(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _find(self, req: Request) -> Dialog | None:
        d = self._by_remote.get((req.get("Call-ID") or "", tag_of(req.get("From"))))
        if d is None or d.id != tag_of(req.get("To")):
            return None
        return d

    def _on_invite(self, req: Request, key: str, addr: Addr) -> list[Output]:
        if tag_of(req.get("To")):
            return self._on_reinvite(req, key, addr)
        source: _Source | None = None
        if self.limits is not None and canonical_ip(addr[0]) not in self._trusted:
            source = self._source(addr[0])
            refused = self._over_limit(source)
            if refused:
                return self._shed(req, addr, source, refused)
        call_id, from_tag = req.get("Call-ID") or "", tag_of(req.get("From"))
        if (call_id, from_tag) in self._by_remote:
            return self._reply(req, key, addr, 482)  # the same call again on another branch: a loop
        if req.get("Require"):
            return self._reply(req, key, addr, 420, extra=[("Unsupported", req.get("Require") or "")])
        offer: Sdp | None = None
        if req.body:
            ctype = (req.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/sdp":
                return self._reply(req, key, addr, 415, extra=[("Accept", "application/sdp")])
            try:
                offer = parse_sdp(req.body)
            except SipError as exc:
                log.info("sip: 488 to INVITE %s: %s", call_id, exc.reason)
                return self._reply(req, key, addr, 488)
        target = name_addr(req.get("Contact") or req.get("From") or "")[0]  # SipError: answered 400
        if not _URI.fullmatch(target):
            raise SipError(f"the Contact {target[:80]!r} is not a SIP URI we can send a BYE to")
        d = Dialog(
            id=self._tag(),
            remote_target=target,
            sip_call_id=call_id,
            remote_tag=from_tag,
            addr=addr,
            invite=req,
            invite_key=key,
            remote_cseq=req.cseq()[0],
            offer=offer,
            held=offer.held if offer is not None else False,
        )
        self.dialogs[d.id] = d
        if source is not None:
            source.calls.add(d.id)
        self._by_remote[(call_id, from_tag)] = d
        self._invites[key] = d
        trying = serialise(response(req, 100))
        self._remember(key, trying, keep=False)
        ani = uri_user(name_addr(req.get("From") or "")[0]) or "anonymous"
        return [Send(trying, addr), IncomingCall(d.id, ani, uri_user(req.uri), addr, call_id)]

    # ---------------------------------------------------------------------------------- flood limits

    def _source(self, ip: str) -> _Source:
        assert self.limits is not None
        key = source_key(ip)
        source = self._sources.get(key)
        if source is None:
            self._prune()
            bucket = TokenBucket.new(self.limits.invites_per_s, self.limits.invite_burst, self.now_ms / 1000)
            source = self._sources[key] = _Source(bucket)
        return source

    def _live(self, source: _Source) -> set[str]:
        return {c for c in source.calls if (d := self.dialogs.get(c)) is not None and d.state in LIVE}

    def _over_limit(self, source: _Source) -> str:
        """Why a new INVITE from ``source`` is refused ("" if it is not); takes a token from its bucket."""
        assert self.limits is not None
        source.calls = self._live(source)
        if len(source.calls) >= self.limits.calls:
            return f"{len(source.calls)} calls at once"
        if not source.bucket.take(self.now_ms / 1000):
            return f"more than {self.limits.invites_per_s:g} new calls a second"
        return ""

    def _shed(self, req: Request, addr: Addr, source: _Source, why: str) -> list[Output]:
        """One 503 with Retry-After per source and quiet period, never resent and never remembered (no
        transaction, no dialog): a flood from a forged address reflects at most that towards its victim,
        smaller than each INVITE that caused it. The rest of the flood is dropped unanswered."""
        assert self.limits is not None
        self.shed += 1
        if self.now_ms < source.quiet_until_ms:
            return []
        wait = self.limits.retry_after_s
        source.quiet_until_ms = self.now_ms + wait * 1000
        log.warning("sip: %s from %s: 503, then silence for %d s", why, addr[0], wait)
        data = serialise(response(req, 503, to_tag=self._tag(), extra=[("Retry-After", str(wait))]))
        return [Send(data, addr)]

    def _prune(self) -> None:
        """Forget sources that are as good as new (full bucket, no quiet period, no calls), so a flood from
        many forged addresses costs memory for as long as their buckets take to refill, not for ever."""
        if len(self._sources) < self._prune_at:
            return
        now_s = self.now_ms / 1000
        for key, src in list(self._sources.items()):
            if src.bucket.is_full(now_s) and self.now_ms >= src.quiet_until_ms and not self._live(src):
                del self._sources[key]
        self._prune_at = max(PRUNE_SOURCES, 2 * len(self._sources))

    def _on_reinvite(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._find(req)
        if d is None:
            return self._stray(req, key, addr, 481)
        number = req.cseq()[0]
        if number <= d.remote_cseq:
            return self._reply(req, key, addr, 500, dialog=d)
        if (d.state, "invite") not in DIALOG_TRANSITIONS or d.pending is not None:  # RFC 3261 14.2: one at a time
            return self._reply(req, key, addr, REFUSED["invite"], dialog=d)
        offer: Sdp | None = None
        if req.body:
            try:
                offer = parse_sdp(req.body)
            except SipError as exc:
                log.info("sip: 488 to re-INVITE in %s: %s", d.sip_call_id, exc.reason)
                return self._reply(req, key, addr, 488, dialog=d)
        d.remote_cseq = number
        d.step("invite")
        out: list[Output] = []
        if offer is not None:
            d.offer = offer
            if offer.held != d.held:
                d.held = offer.held
                out.append(HoldChanged(d.id, d.held))
        return self._ok_to_invite(d, req, key, addr, offer) + out

    def _ok_to_invite(self, d: Dialog, req: Request, key: str, addr: Addr, offer: Sdp | None) -> list[Output]:
        d.sdp_version += 1
        body = sdp_body(self.host, self.media_port, d.sdp_version, offer)
        extra = [("Contact", f"<sip:{self.host}:{self.port}>"), ("Allow", ALLOW)]
        extra += [("Record-Route", rr) for rr in req.get_all("Record-Route")]
        data = serialise(response(req, 200, to_tag=d.id, extra=extra, body=body, content_type="application/sdp"))
        self._remember(key, data)
        self._stop(d.pending)
        d.pending_cseq = req.cseq()[0]
        d.pending = None  # the old response is no longer resent: _resend_plan must not count it
        d.pending = self._retransmit(data, addr, lambda now: self._no_ack(d), *self._resend_plan(d))
        return [Send(data, addr)]

    def _no_ack(self, d: Dialog) -> list[Output]:
        d.pending = None
        before = d.state
        d.step("no_ack")
        if d.state == ENDED:
            return self._end(d)
        if self._unverified(d.addr) is not None:
            # No BYE (and its eleven resends) to an address that never showed it receives: it may be forged.
            log.warning("sip: no ACK for our 200 in %s from unverified %s: call ended", d.sip_call_id, d.addr[0])
            d.step("bye_timeout")  # as if that BYE had been sent and given up at once
            out = self._end(d)
            if before in (ANSWERED, CONFIRMED):
                out.append(CallEnded(d.id, "no_ack"))
            return out
        log.warning("sip: no ACK for our 200 in %s: hanging up", d.sip_call_id)
        out = self._send_bye(d)
        if before in (ANSWERED, CONFIRMED):  # the owner still has the call: tell it
            out.append(CallEnded(d.id, "no_ack"))
        return out

    def _on_ack(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._find(req)
        if d is None or d.pending is None or req.cseq()[0] != d.pending_cseq:
            return []  # a retransmitted ACK, or one for nothing we know: ACKs are never answered
        self._stop(d.pending)
        d.pending = None
        if (source := self._unverified(addr)) is not None:  # it had our To-tag: it receives at this address
            source.confirmed = True
        d.step("ack")
        if d.state == HANGING_UP and d.bye is None:  # hung up while we waited for this ACK
            return self._send_bye(d)
        if d.state == ENDED:
            return self._end(d)
        if req.body and d.offer is None:  # late offer: this ACK carries the caller's answer
            try:
                d.held = parse_sdp(req.body).held
            except SipError as exc:
                log.info("sip: ignored the SDP in an ACK for %s: %s", d.sip_call_id, exc.reason)
        return []

    def _on_cancel(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._invites.get(key.rsplit("|", 1)[0] + "|INVITE")
        if d is None:
            return self._stray(req, key, addr, 481)
        out = self._reply(req, key, addr, 200, dialog=d)
        if (d.state, "cancel") in DIALOG_TRANSITIONS:  # otherwise a final response has gone: nothing to cancel
            d.step("cancel")
            out += [*self._final_error(d, 487), CallEnded(d.id, "cancel")]
        return out

    def _on_bye(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._find(req)
        if d is None:
            return self._stray(req, key, addr, 481)
        number = req.cseq()[0]
        if number <= d.remote_cseq:
            return self._reply(req, key, addr, 500, dialog=d)
        if (d.state, "bye") not in DIALOG_TRANSITIONS:
            return self._reply(req, key, addr, REFUSED["bye"], dialog=d)
        d.remote_cseq = number
        before = d.state
        d.step("bye")
        out = self._reply(req, key, addr, 200, dialog=d)
        if d.state == REJECTED:  # BYE on the early dialog: the INVITE ends too
            out += self._final_error(d, 487)
        else:
            out += self._end(d)
        if before not in (HANGING_UP, BYE_PENDING):  # else the owner hung up first and knows
            out.append(CallEnded(d.id, "bye"))
        return out

    def _on_info(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._find(req)
        if d is None:
            return self._stray(req, key, addr, 481)
        if (d.state, "info") not in DIALOG_TRANSITIONS:
            return self._reply(req, key, addr, REFUSED["info"], dialog=d)
        number = req.cseq()[0]
        if number <= d.remote_cseq:
            return self._reply(req, key, addr, 500, dialog=d)
        ctype = (req.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if req.body and ctype not in ("application/dtmf-relay", "application/dtmf"):
            return self._reply(
                req, key, addr, 415, dialog=d, extra=[("Accept", "application/dtmf-relay, application/dtmf")]
            )
        digit = dtmf_digit(ctype, req.body)  # SipError: answered 400 by receive()
        d.remote_cseq = number
        d.step("info")
        out = self._reply(req, key, addr, 200, dialog=d)
        if digit is not None:
            out.append(DigitReceived(d.id, digit))
        return out

    def _on_options(self, req: Request, key: str, addr: Addr) -> list[Output]:
        d = self._find(req)
        extra = [("Allow", ALLOW), ("Accept", "application/sdp, application/dtmf-relay")]
        if d is None:
            return self._stray(req, key, addr, 200, extra=extra)
        return self._reply(req, key, addr, 200, dialog=d, extra=extra)

    def _on_response(self, resp: Response) -> list[Output]:
        vias = resp.vias()
        branch = via_branch(vias[0]) if vias else ""
        d = next((x for x in self.dialogs.values() if x.bye is not None and x.bye_branch == branch), None)
        if d is None or resp.status < 200:
            return []  # a provisional answer to our BYE, or a stray response
        self._stop(d.bye)
        d.bye = None
        d.step("bye_answered")
        return self._end(d)

    # ---------------------------------------------------------------------------------- the owner's

    def ring(self, dialog: str, now_ms: int) -> list[Output]:
        """180 Ringing (only while still trying; later calls do nothing)."""
        out = self.advance(now_ms)
        d = self.dialogs.get(dialog)
        if d is None or d.state != TRYING:
            return out
        d.step("ring")
        data = serialise(response(d.invite, 180, to_tag=d.id, extra=[("Contact", f"<sip:{self.host}:{self.port}>")]))
        self._remember(d.invite_key, data, keep=False)
        return [*out, Send(data, d.addr)]

    def answer(self, dialog: str, now_ms: int) -> list[Output]:
        """180 (if not sent yet) then 200 OK with our SDP, retransmitted until the ACK; a no-op once
        answered or ended. To an unverified source no 180 right before the 200: it tells a real phone
        nothing the 200 does not, and would be one more datagram to bounce onto a forged address."""
        out = self.advance(now_ms)
        d = self.dialogs.get(dialog)
        if d is None or d.state not in (TRYING, RINGING):
            return out
        if self._unverified(d.addr) is None:
            out += self.ring(dialog, now_ms)
        d.step("answer")
        return out + self._ok_to_invite(d, d.invite, d.invite_key, d.addr, d.offer)

    def reject(self, dialog: str, status: int, now_ms: int) -> list[Output]:
        """A final error response to a call not yet answered (404, 486, 503 …)."""
        if not 300 <= status <= 699:
            raise ValueError(f"a call is rejected with a 3xx-6xx status, not {status}")
        out = self.advance(now_ms)
        d = self.dialogs.get(dialog)
        if d is None:
            raise SipStateError(ENDED, "reject")
        d.step("reject")
        return out + self._final_error(d, status)

    def hangup(self, dialog: str, now_ms: int) -> list[Output]:
        """We end the call: BYE when answered (after the ACK if it is still due), 480 while it was ringing.
        A no-op for a call already ending."""
        out = self.advance(now_ms)
        d = self.dialogs.get(dialog)
        if d is None or (d.state, "hangup") not in DIALOG_TRANSITIONS:
            return out
        before = d.state
        d.step("hangup")
        if before in (TRYING, RINGING):
            return out + self._final_error(d, 480)
        if d.state == HANGING_UP:
            out += self._send_bye(d)
        return out

    # ------------------------------------------------------------------------------------- internals

    def _final_error(self, d: Dialog, status: int) -> list[Output]:
        data = serialise(response(d.invite, status, to_tag=d.id))
        self._remember(d.invite_key, data, keep=False)
        self._stop(d.pending)
        d.pending_cseq = d.invite.cseq()[0]
        d.pending = None  # the old response is no longer resent: _resend_plan must not count it
        d.pending = self._retransmit(data, d.addr, lambda now: self._no_ack(d), *self._resend_plan(d))
        return [Send(data, d.addr)]

    def _send_bye(self, d: Dialog) -> list[Output]:
        d.local_cseq += 1
        d.bye_branch = f"{COOKIE}{self._tag()}"
        inv = d.invite
        remote_target = d.remote_target
        to_value = inv.get("To") or ""
        headers = [
            ("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={d.bye_branch};rport"),
            ("Max-Forwards", "70"),
            *[("Route", rr) for rr in reversed(inv.get_all("Record-Route"))],
            ("From", f"{to_value};tag={d.id}" if not tag_of(to_value) else to_value),
            ("To", inv.get("From") or ""),
            ("Call-ID", d.sip_call_id),
            ("CSeq", f"{d.local_cseq} BYE"),
            ("User-Agent", SERVER),
        ]
        data = serialise(Request(headers=headers, method="BYE", uri=remote_target))
        d.bye = self._retransmit(data, d.addr, lambda now: self._bye_timeout(d))
        return [Send(data, d.addr)]

    def _bye_timeout(self, d: Dialog) -> list[Output]:
        log.warning("sip: no answer to our BYE in %s", d.sip_call_id)
        d.bye = None
        d.step("bye_timeout")
        return self._end(d)

    def _end(self, d: Dialog) -> list[Output]:
        """The dialog is over; it stays findable for KEEP_MS so that late retransmissions get their answer."""
        self._stop(d.pending)
        self._stop(d.bye)
        d.pending = d.bye = None

        def drop(_now: int) -> list[Output]:
            self.dialogs.pop(d.id, None)
            if self._by_remote.get((d.sip_call_id, d.remote_tag)) is d:
                del self._by_remote[(d.sip_call_id, d.remote_tag)]
            self._forget_tx(d.invite_key)
            return []

        self._at(self.now_ms + KEEP_MS, drop)
        return []
