"""The SIP front door on UDP: ``SipUas`` (``sip.py``) driven by a Twisted ``DatagramProtocol``, and its calls
mapped onto the simulated switch.

A new INVITE is a call arriving on a trunk: ``switch.inbound(ani=From user, dnis=Request-URI user)`` through
the ``SwitchDriver``. What the switch does with it decides the SIP answer: waiting at a queue DN or picked up
by an IVR ⇒ 200 OK at once (the caller is connected to the centre, which plays the prompts and the music);
alerting at an extension ⇒ 180 Ringing and 200 when that phone answers. A refusal ⇒ 404 (no such number),
486 (busy), 503 (no trunk free, the switch down). From then on:

* the caller's BYE or CANCEL (or a 200 never acknowledged) ⇒ ``clear_connection(call, trunk)``;
* INFO with a DTMF digit ⇒ ``generate_digits(call, trunk, digit)``, which is what an IVR listens to;
* the switch clearing the trunk's connection (the agent hung up, the IVR or the router ended the call, a
  ring-out) ⇒ our BYE (or 480 if it was never answered);
* a re-INVITE putting the call on hold is answered and logged; the switch's hold is the agent's.

Time is the driver's (the centre's clock in the server, ``task.Clock`` in tests); exactly one ``callLater`` is
armed, for the UAS's next retransmission deadline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import DatagramProtocol

from contactcentre.deadlines import DeadlineTimer, on_reactor
from contactcentre.edge.voice.sip import (
    Addr,
    CallEnded,
    DigitReceived,
    HoldChanged,
    IncomingCall,
    Output,
    Send,
    SipUas,
    SourceLimits,
)
from contactcentre.telephony.events import (
    ConnectionCleared,
    Delivered,
    Established,
    Failed,
    Originated,
    Queued,
    SwitchEvent,
)
from contactcentre.telephony.switch import TRUNK, SwitchError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from contactcentre.config import VoiceServerConfig
    from contactcentre.telephony.driver import SwitchDriver

log = logging.getLogger(__name__)

# The switch's refusal codes (docs/cti.md) as SIP final responses.
REFUSAL_STATUS = {"invalid_number": 404, "unknown_device": 404, "busy": 486, "no_trunk": 503, "closed": 503}


def source_limits(voice: VoiceServerConfig) -> SourceLimits:
    """The per-source flood limits of ``[server.voice]`` (``sip_*``)."""
    return SourceLimits(
        invites_per_s=voice.sip_invites_per_s,
        invite_burst=voice.sip_invite_burst,
        calls=voice.sip_calls_per_source,
        retry_after_s=voice.sip_retry_after_s,
        unacked=voice.sip_unacked_per_source,
        trusted=frozenset(voice.sip_trusted),
    )


@dataclass
class _Leg:
    """A SIP dialog that is a call on the switch, through ``trunk``."""

    dialog: str
    call_id: str
    trunk: str


class SipTransport(DatagramProtocol):
    """Listen with ``reactor.listenUDP(port, SipTransport(driver, reactor))``."""

    def __init__(
        self, driver: SwitchDriver, clock: IReactorTime, *, host: str = "127.0.0.1", uas: SipUas | None = None
    ):
        self.driver = driver
        self.switch = driver.switch
        self.clock = clock
        self.uas = uas or SipUas(host, 0)
        self.by_dialog: dict[str, _Leg] = {}
        self.by_call: dict[str, _Leg] = {}
        self._arriving: str | None = None  # the dialog whose switch.inbound is running
        self._timer = DeadlineTimer(on_reactor(clock, driver.now_ms), self._on_deadline)
        self.closed = False
        self._unsubscribe = driver.subscribe(self._on_switch)

    # ----------------------------------------------------------------------------------------- Twisted

    def startProtocol(self) -> None:
        self.uas.port = self.transport.getHost().port  # type: ignore[union-attr]  # our Via and Contact

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.closed:
            return
        try:
            self._handle(self.uas.receive(data, (addr[0], addr[1]), self.driver.now_ms()))
        except Exception:  # a bug must cost this datagram, never the server
            log.exception("sip: handling a datagram from %s:%s failed", addr[0], addr[1])
        self._rearm()

    def close(self) -> None:
        """Hang up every call (one BYE each, not waited for) and stop the timer."""
        if self.closed:
            return
        for dialog in list(self.uas.dialogs):
            try:
                self._handle(self.uas.hangup(dialog, self.driver.now_ms()))
            except Exception:
                log.exception("sip: hanging up %s at shutdown failed", dialog)
        self.closed = True
        self._unsubscribe()
        self._timer.cancel()

    # ---------------------------------------------------------------------------------- UAS → switch

    def _handle(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._send(out.data, out.addr)
            elif isinstance(out, IncomingCall):
                self._incoming(out)
            elif isinstance(out, CallEnded):
                self._caller_left(out)
            elif isinstance(out, DigitReceived):
                self._digit(out)
            elif isinstance(out, HoldChanged):
                leg = self.by_dialog.get(out.dialog)
                log.info("sip: caller %s call %s", "held" if out.held else "retrieved", leg.call_id if leg else "?")

    def _send(self, data: bytes, addr: Addr) -> None:
        if self.transport is None:
            return
        try:
            self.transport.write(data, addr)
        except Exception as exc:  # an unreachable address must not stop the others
            log.warning("sip: cannot send to %s:%s: %s", addr[0], addr[1], exc)

    def _incoming(self, call: IncomingCall) -> None:
        now = self.driver.now_ms()
        attached = {"sip_call_id": call.sip_call_id[:1024]}
        self._arriving = call.dialog
        try:
            self.driver.run(lambda t: self.switch.inbound(call.ani[:64], call.dnis, t, attached))
        except SwitchError as exc:
            status = REFUSAL_STATUS.get(exc.code, 503)
            log.info("sip: %s from %r to %r refused: %s (%s)", status, call.ani, call.dnis, exc.message, exc.code)
            self._handle(self.uas.reject(call.dialog, status, now))
        except Exception:  # a bug: the caller hears 500 rather than ringing forever
            log.exception("sip: bringing in the call from %r to %r failed", call.ani, call.dnis)
            if call.dialog not in self.by_dialog:
                self._handle(self.uas.reject(call.dialog, 500, now))
        finally:
            self._arriving = None
        if call.dialog not in self.by_dialog:  # over already (an IVR that hung up at once): 480 if not answered
            self._handle(self.uas.hangup(call.dialog, self.driver.now_ms()))

    def _caller_left(self, ended: CallEnded) -> None:
        leg = self.by_dialog.pop(ended.dialog, None)
        if leg is None:
            return
        del self.by_call[leg.call_id]
        log.info("sip: caller left %s (%s)", leg.call_id, ended.why)
        try:
            self.driver.run(lambda t: self.switch.clear_connection(leg.call_id, leg.trunk, t))
        except SwitchError as exc:  # the call ended on the switch at the same moment
            log.info("sip: clearing %s: %s", leg.call_id, exc.message)

    def _digit(self, got: DigitReceived) -> None:
        leg = self.by_dialog.get(got.dialog)
        if leg is None:
            return
        try:
            self.driver.run(lambda t: self.switch.generate_digits(leg.call_id, leg.trunk, got.digit, t))
        except SwitchError as exc:  # no speech path (the agent holds the call): the tone goes nowhere
            log.info("sip: digit %s in %s not passed on: %s", got.digit, leg.call_id, exc.message)

    # ---------------------------------------------------------------------------------- switch → UAS

    def _on_switch(self, events: list[SwitchEvent]) -> None:
        for ev in events:
            try:
                self._switch_event(ev)
            except Exception:
                log.exception("sip: handling %s of %s failed", type(ev).__name__, ev.call_id)
        self._rearm()

    def _switch_event(self, ev: SwitchEvent) -> None:
        kind = type(ev)
        if kind is Originated and self._arriving is not None and self.switch.kinds.get(ev.device) == TRUNK:
            leg = _Leg(self._arriving, ev.call_id, ev.device)
            self._arriving = None
            self.by_dialog[leg.dialog] = leg
            self.by_call[leg.call_id] = leg
            return
        leg = self.by_call.get(ev.call_id)
        if leg is None:
            return
        now = self.driver.now_ms()
        if ev.device == leg.trunk:
            if kind is ConnectionCleared or kind is Failed:
                del self.by_call[leg.call_id]
                del self.by_dialog[leg.dialog]
                self._handle(self.uas.hangup(leg.dialog, now))
            return
        if kind is Queued or kind is Established:  # the centre (a queue, an IVR) or a phone picked it up
            self._handle(self.uas.answer(leg.dialog, now))
        elif kind is Delivered:
            self._handle(self.uas.ring(leg.dialog, now))

    # ------------------------------------------------------------------------------------------ timers

    def _on_deadline(self, due: int) -> None:
        if self.closed:
            return
        try:
            self._handle(self.uas.advance(max(self.driver.now_ms(), due)))
        except Exception:
            log.exception("sip: firing timers failed")
        self._rearm()

    def _rearm(self) -> None:
        """Keep exactly one ``callLater`` armed, for the UAS's next deadline."""
        if not self.closed:
            self._timer.arm(self.uas.next_deadline())

    @property
    def armed_for(self) -> int | None:
        return self._timer.armed_for
