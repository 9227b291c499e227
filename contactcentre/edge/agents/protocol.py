"""The agent protocol (docs/protocol.md) without the socket: its commands as msgspec Structs, and the rules of
one console connection as a sans-I/O state machine, ``AgentConnection``: it takes decoded frames and the time
and says what to answer, which command to carry out and when to close. ``contactcentre.edge.agents.gateway`` is the
I/O around it (the socket, the login's store read, the router).

A connection goes ``LOGIN`` (waiting for the login frame, or none with a web session) -> ``LIVE`` ->
``ENDED`` (logged out, replaced, revoked, rate limit abused: only the closing handshake is left).
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from msgspec import Meta, Struct

from contactcentre.edge.frames.codec import FIELD, FRAME, JSON, TYPE, FrameDecoder, FrameError
from contactcentre.edge.frames.policy import Close, Closes, FrameLimiter, Verdict, refused_login
from contactcentre.events import clean_text

PROTOCOL = 1
RATE_PER_S = 20.0  # sustained frames per second from one console; a person clicks far less
BURST = 40
MAX_REFUSED_IN_A_ROW = 50  # rate-limited frames in a row before the connection is closed
MAX_BACKLOG = 2_000  # frames queued for a console that does not read them
MAX_TEXT = 100_000  # characters in one agent message (an e-mail reply may be long)
MAX_SHORT = 128  # ids, reasons, disposition codes, refs
MAX_MESSAGE_ID = 998  # the longest a stored Message-ID can be (``messages.message_id``; a test holds them equal)
MAX_NUMBER = 64

Short = Annotated[str, Meta(max_length=MAX_SHORT)]
Long = Annotated[str, Meta(max_length=MAX_TEXT)]
Ref = Short | int


class Command(Struct, tag_field="type", kw_only=True):
    """A frame a console sends. Every string is cleaned (no lone surrogate or NUL may reach the store);
    fields a command does not know are ignored."""

    ref: Ref | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if type(value) is str:
                setattr(self, name, clean_text(value))


class Login(Command, tag="login"):
    token: str | None = None


class Ping(Command, tag="ping"):
    pass


class SetState(Command, tag="state"):
    state: Short
    reason: Short | None = None


class Logout(Command, tag="logout"):
    pass


class Accept(Command, tag="accept"):
    offer_id: Short
    contact_id: Short | None = None


class Answer(Command, tag="answer"):
    """``accept`` by contact id (a ringing call), or by ``offer_id`` like ``accept``."""

    contact_id: Short | None = None
    offer_id: Short | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contact_id is None and self.offer_id is None:
            raise ValueError("contact_id: required (or offer_id)")


class Reject(Command, tag="reject"):
    offer_id: Short
    contact_id: Short | None = None
    reason: Short | None = None


class OnContact(Command):
    """A command about one of the agent's contacts."""

    contact_id: Short


class Message(OnContact, tag="message"):
    text: Long


class Reply(Message, tag="reply"):
    """An e-mail reply is an agent message on an e-mail contact."""


class Note(OnContact, tag="note"):
    text: Long


class Hold(OnContact, tag="hold"):
    pass


class Retrieve(OnContact, tag="retrieve"):
    pass


class Transfer(OnContact, tag="transfer"):
    to_queue: Short | None = None
    to_agent: Short | None = None
    to_external: Short | None = None


class Consult(Transfer, tag="consult"):
    pass


class CompleteTransfer(OnContact, tag="complete_transfer"):
    pass


class Conference(OnContact, tag="conference"):
    pass


class End(OnContact, tag="end"):
    pass


class HangUp(End, tag="hang_up"):
    """A call's word for ``end``."""


class Callback(OnContact, tag="callback"):
    at_ms: Annotated[int, Meta(ge=0)] | None = None
    number: Annotated[str, Meta(max_length=MAX_NUMBER)] | None = None
    queue: Short | None = None
    customer_asked: bool = False


class Disposition(OnContact, tag="disposition"):
    code: Short


class WrapUpDone(OnContact, tag="wrap_up_done"):
    pass


class Typing(OnContact, tag="typing"):
    pass


class Transcript(OnContact, tag="transcript"):
    before: Short


class MessageText(OnContact, tag="message_text"):
    id: Annotated[int, Meta(gt=0, le=2**63 - 1)] | None = None
    message_id: Annotated[str, Meta(max_length=MAX_MESSAGE_ID)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.id is None) == (self.message_id is None):
            raise ValueError("id: give exactly one of id (a transcript line's) and message_id")


Frame = (
    Login
    | Ping
    | SetState
    | Logout
    | Accept
    | Answer
    | Reject
    | Message
    | Reply
    | Note
    | Hold
    | Retrieve
    | Transfer
    | Consult
    | CompleteTransfer
    | Conference
    | End
    | HangUp
    | Callback
    | Disposition
    | WrapUpDone
    | Typing
    | Transcript
    | MessageText
)
decoder: FrameDecoder[Frame] = FrameDecoder(Frame)

# A frame that does not decode, as the console is told.
ERROR_CODES = {JSON: "bad_json", FRAME: "bad_frame", TYPE: "unknown_type", FIELD: "bad_field"}


def type_name(frame: Command) -> str:
    """The frame's ``type`` as the console sent it (``for`` in the answer)."""
    return frame.__struct_config__.tag  # type: ignore[return-value]


def good_ref(ref: Any) -> bool:
    if isinstance(ref, bool):
        return False
    return isinstance(ref, int) or (isinstance(ref, str) and len(ref) <= MAX_SHORT)


def _answer_to(frame: Frame | FrameError) -> dict[str, Any]:
    """The ``ref``/``for`` of a frame refused before it was looked at (rate limited): what it carried, when it
    could be read, so the console knows which command was dropped."""
    if isinstance(frame, FrameError):
        answer: dict[str, Any] = {"ref": frame.ref} if good_ref(frame.ref) else {}
        if frame.type is not None and frame.kind in (TYPE, FIELD):
            answer["for"] = frame.type
        return answer
    return {**({} if frame.ref is None else {"ref": frame.ref}), "for": type_name(frame)}


def error_frame(code: str, detail: str, answer: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An ``error`` frame: ``code``, ``detail``, more fields a code has (``reason``, ``codes``), and the
    ``ref``/``for`` of the command it answers."""
    return {"type": "error", "code": code, "detail": detail, **extra, **(answer or {})}


# --------------------------------------------------------------------------------------- the connection

LOGIN = "login"
LIVE = "live"
ENDED = "ended"


class Step(NamedTuple):
    """What one frame comes to: frames to send at once, a command for the gateway to carry out (with the
    ``ref``/``for`` its answer repeats), a login to check (the token), a close (after what is sent)."""

    send: tuple[dict[str, Any], ...] = ()
    command: Command | None = None
    answer: dict[str, Any] | None = None
    token: str | None = None
    close: Close | None = None


_NOTHING = Step()


def _refuse(code: str, detail: str) -> Step:
    return Step(send=(error_frame(code, detail),), close=refused_login(code))


class AgentConnection:
    """One console connection's rules. ``state`` is ``LOGIN``, ``LIVE`` or ``ENDED``."""

    __slots__ = ("_burst", "agent_id", "limiter", "rate_per_s", "state")

    def __init__(self, rate_per_s: float = RATE_PER_S, burst: int = BURST) -> None:
        self.rate_per_s = rate_per_s
        self.limiter: FrameLimiter | None = None  # from the login on
        self.state = LOGIN
        self.agent_id: str | None = None
        self._burst = burst

    # ---------------------------------------------------------------------------------------- inputs

    def login_frame(self, frame: Frame | FrameError) -> Step:
        """The first frame of a connection without a web session: it must be a login with a token."""
        if self.state != LOGIN:
            return _NOTHING
        if isinstance(frame, FrameError):
            if frame.kind in (JSON, FRAME):
                return _refuse(ERROR_CODES[frame.kind], frame.detail)
            if frame.type == "login":  # a login whose token is not a string
                return _refuse("unauthorized", "a login needs an API token")
            return _refuse("login_required", 'the first frame must be {"type": "login", "token": ...}')
        if type(frame) is not Login:
            return _refuse("login_required", 'the first frame must be {"type": "login", "token": ...}')
        if not frame.token:  # type: ignore[union-attr]
            return _refuse("unauthorized", "a login needs an API token")
        return Step(token=frame.token)  # type: ignore[union-attr]

    def logged_in(self, agent_id: str, now: float) -> None:
        self.state, self.agent_id = LIVE, agent_id
        self.limiter = FrameLimiter(
            self.rate_per_s, self._burst, now, max_strikes=MAX_REFUSED_IN_A_ROW + 1, strike_window_s=None
        )

    def ended(self) -> None:
        """Nothing the console sends is carried out any more (logged out, replaced, revoked)."""
        self.state = ENDED

    def receive(self, frame: Frame | FrameError, now: float) -> Step:
        """A frame on a logged-in connection: every command gets exactly one answer, ``ack`` (the gateway's,
        after the frames the command caused) or ``error``."""
        if self.state != LIVE:
            return _NOTHING
        assert self.limiter is not None
        verdict = self.limiter.admit(now)
        if verdict is Verdict.CLOSE:
            self.state = ENDED
            return Step(close=Closes.AGENT_RATE_ABUSED.value)
        if verdict is Verdict.REFUSE:
            detail = f"more than {self.rate_per_s:g} frames a second; frame dropped"
            return Step(send=(error_frame("rate_limited", detail, _answer_to(frame)),))
        if isinstance(frame, FrameError):
            answer: dict[str, Any] = {}
            if frame.kind in (TYPE, FIELD):
                if good_ref(frame.ref) and not frame.detail.startswith("ref:"):  # a bad ref is not repeated
                    answer["ref"] = frame.ref
                if frame.type is not None:
                    answer["for"] = frame.type
            detail = f"no command {frame.type!r} in protocol {PROTOCOL}" if frame.kind == TYPE else frame.detail
            return Step(send=(error_frame(ERROR_CODES[frame.kind], detail, answer),))
        answer = {} if frame.ref is None else {"ref": frame.ref}
        kind = answer["for"] = type_name(frame)
        if kind == "login":
            detail = f"this connection is agent {self.agent_id!r}'s already"
            return Step(send=(error_frame("already_logged_in", detail, answer),))
        return Step(command=frame, answer=answer)

    def acked(self, command: Command) -> Step:
        """The gateway carried ``command`` out and sent its ack: a logout ends the connection."""
        if type(command) is Logout:
            self.state = ENDED
            return Step(close=Closes.LOGGED_OUT.value)
        return _NOTHING


__all__ = [
    "BURST",
    "ENDED",
    "LIVE",
    "LOGIN",
    "MAX_BACKLOG",
    "MAX_MESSAGE_ID",
    "MAX_SHORT",
    "MAX_TEXT",
    "PROTOCOL",
    "RATE_PER_S",
    "AgentConnection",
    "Command",
    "Step",
    "decoder",
    "error_frame",
]
