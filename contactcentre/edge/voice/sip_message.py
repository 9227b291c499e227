"""SIP messages, sans-I/O: parsing and writing the RFC 3261 subset the front door speaks (``sip.py``), the SDP
it reads and answers, and DTMF carried by INFO.

``parse`` accepts a request or a response with compact header forms and folded lines, and turns anything else
into ``SipError`` naming what is wrong (with the request as far as it was read, when a 400 can still be sent
back). ``serialise`` always writes Content-Length from the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_HEADERS = 100
SERVER = "contactcentre"
DTMF = re.compile(r"[0-9*#A-Da-d]")

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
}
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}

_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: ([^\r\n]*))?")
_HEADER_NAME = re.compile(_TOKEN)
_CSEQ = re.compile(rf"([0-9]{{1,10}})\s+({_TOKEN})")
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+\s+[^\s;]+.*", re.S)
_DIGITS = re.compile(r"[0-9]{1,9}")
_ECHOED = frozenset({"via", "from", "to", "call-id", "cseq"})
_ROUTE = ("Via", "From", "To", "Call-ID")


class SipError(ValueError):
    """A datagram that is not a SIP message we can use; ``reason`` says why, for the log and the 400.

    ``partial`` is the request as far as it could be read (its start line and headers) when a response can
    still be addressed to it; ``None`` otherwise.
    """

    def __init__(self, reason: str, partial: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


# ------------------------------------------------------------------------------------------------ messages


@dataclass
class Message:
    headers: list[tuple[str, str]]
    body: bytes = b""

    def get(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive; compact forms are expanded when parsed)."""
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def vias(self) -> list[str]:
        """Every Via value, in order, one per hop (a header line may carry several, comma-separated)."""
        return [v for line in self.get_all("Via") for v in split_commas(line)]

    def cseq(self) -> tuple[int, str]:
        m = _CSEQ.fullmatch((self.get("CSeq") or "").strip())
        if m is None:
            raise SipError("CSeq must be a number and a method")
        return int(m.group(1)), m.group(2)


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""


@dataclass
class Response(Message):
    status: int = 0
    reason: str = ""


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    out, cur, quoted, angle = [], [], False, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        if ch == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v]


def params(text: str) -> dict[str, str]:
    """``;a=1;b`` → ``{"a": "1", "b": ""}`` (names lower-cased)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            out[name.strip().lower()] = value.strip()
    return out


def name_addr(value: str) -> tuple[str, dict[str, str]]:
    """A From/To/Contact value → (URI, header parameters such as ``tag``)."""
    value = value.strip()
    if "<" in value:
        start = value.index("<")
        end = value.find(">", start)
        if end < 0:
            raise SipError(f"unclosed '<' in {value!r}")
        return value[start + 1 : end].strip(), params(value[end + 1 :])
    uri, _, rest = value.partition(";")  # addr-spec form: parameters after the URI belong to the header
    return uri.strip(), params(rest)


def uri_user(uri: str) -> str:
    """The user part of ``sip:user@host``, ``sips:…`` or ``tel:number`` (empty when there is none)."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        return rest.split(";", 1)[0]
    if scheme not in ("sip", "sips") or "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0].split(":", 1)[0]


def tag_of(value: str | None) -> str:
    return name_addr(value)[1].get("tag", "") if value else ""


def via_branch(via: str) -> str:
    return params(via.partition(";")[2]).get("branch", "")


def parse(data: bytes) -> Request | Response:
    """One datagram → a ``Request`` or a ``Response``, or ``SipError`` saying what is wrong with it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, rest = data.partition(b"\n\n")  # bare LF line ends: tolerated on input
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("the start line and headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():  # keep-alive CRLFs before a message
        lines.pop(0)
    if not lines:
        raise SipError("empty message")
    start = lines[0].rstrip()
    msg: Request | Response
    if m := _REQUEST_LINE.fullmatch(start):
        msg = Request(headers=[], method=m.group(1), uri=m.group(2))
    elif m := _STATUS_LINE.fullmatch(start):
        msg = Response(headers=[], status=int(m.group(1)), reason=m.group(2) or "")
    else:
        raise SipError(f"not a SIP request or status line: {start[:80]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header lines")
    problem = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:  # folded onto the previous header
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            problem = problem or f"not a header line: {line[:80]!r}"
            continue
        msg.headers.append((COMPACT.get(name.lower(), name), value.strip()))
    problem = problem or _check(msg)
    if not problem:
        length = msg.get("Content-Length")
        if length is None:
            msg.body = rest
        elif not _DIGITS.fullmatch(length) or int(length) > len(rest):
            problem = f"Content-Length {length!r} does not match the {len(rest)}-byte body"
        else:
            msg.body = rest[: int(length)]  # over UDP, bytes past Content-Length are discarded
    if problem:
        partial = msg if isinstance(msg, Request) and _addressable(msg, text) else None
        raise SipError(problem, partial and _with_usable_cseq(partial))
    return msg


def _addressable(msg: Request, text: str) -> bool:
    """Can a broken request still be answered: are the headers that carry a response back (``response``)
    well-formed? The CSeq is not one of them (``_with_usable_cseq``)."""
    echoed = [(n, v) for n, v in msg.headers if n.lower() in _ECHOED]
    return "\x00" not in text and not _check_route(Response(headers=echoed))


def _with_usable_cseq(req: Request) -> Request:
    """``req`` with a CSeq a response can carry: a missing or unreadable one (or one over 2**31) becomes
    ``N METHOD`` (N its number if it has a usable one, else 0), so the 400 is well-formed SIP and the caller's
    transaction still matches it (RFC 3261 17.1.3: by the top Via's branch and the CSeq method)."""
    value = req.get("CSeq")
    if value is not None and not _check_cseq(Response(headers=[("CSeq", value)])):
        return req  # readable (a method other than the request's is echoed as it came)
    number = m.group(1) if value and (m := re.match(r"\s*([0-9]{1,10})\b", value)) else "0"
    cseq = f"{number if int(number) < 2**31 else 0} {req.method}"
    headers = [(n, v) for n, v in req.headers if n.lower() != "cseq"] + [("CSeq", cseq)]
    return Request(headers=headers, body=req.body, method=req.method, uri=req.uri)


def _check(msg: Message) -> str:
    return _check_route(msg) or _check_cseq(msg)


def _check_route(msg: Message) -> str:
    """Via, From, To and Call-ID: what a response is addressed and matched by."""
    for name in _ROUTE:
        if msg.get(name) is None:
            return f"no {name} header"
    try:
        for name in ("From", "To"):
            name_addr(msg.get(name) or "")
    except SipError as exc:
        return exc.reason
    vias = msg.vias()
    if not vias or not _VIA.fullmatch(vias[0]):
        return "the top Via is not SIP/2.0/<transport> <host>"
    if not (msg.get("Call-ID") or "").strip():
        return "empty Call-ID"
    return ""


def _check_cseq(msg: Message) -> str:
    if msg.get("CSeq") is None:
        return "no CSeq header"
    try:
        number, method = msg.cseq()
    except SipError as exc:
        return exc.reason
    if isinstance(msg, Request) and method != msg.method:
        return f"the CSeq method {method!r} is not the request's {msg.method!r}"
    if number >= 2**31:
        return "the CSeq number must be below 2**31"
    return ""


def serialise(msg: Request | Response) -> bytes:
    """The message on the wire; Content-Length is always written, from the body."""
    start = f"{msg.method} {msg.uri} SIP/2.0" if isinstance(msg, Request) else f"SIP/2.0 {msg.status} {msg.reason}"
    lines = [start, *(f"{n}: {v}" for n, v in msg.headers if n.lower() != "content-length")]
    lines.append(f"Content-Length: {len(msg.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + msg.body


def response(
    req: Request,
    status: int,
    *,
    to_tag: str = "",
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str = "",
) -> Response:
    """A response to ``req``: its Vias, From, Call-ID and CSeq copied, our tag added to To when given."""
    headers = [("Via", v) for v in req.get_all("Via")]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = req.get(name)
        if value is None:
            continue
        if name == "To" and to_tag and not tag_of(value):
            value = f"{value};tag={to_tag}"
        headers.append((name, value))
    headers.append(("Server", SERVER))
    headers.extend(extra)
    if body:
        headers.append(("Content-Type", content_type))
    return Response(headers=headers, body=body, status=status, reason=REASONS.get(status, "Unknown"))


# ---------------------------------------------------------------------------------------------------- SDP


@dataclass(frozen=True)
class Sdp:
    """What we read from an offer: the audio payload types, their rtpmap lines and the direction."""

    formats: tuple[str, ...]
    rtpmaps: dict[str, str]
    direction: str  # sendrecv | sendonly | recvonly | inactive
    null_address: bool  # c=IN IP4 0.0.0.0: the old way to put a call on hold

    @property
    def held(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.null_address


ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def parse_sdp(body: bytes) -> Sdp:
    """The parts of an SDP offer that decide our answer; ``SipError`` if it offers no audio."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("the SDP body is not UTF-8") from None
    formats: tuple[str, ...] = ()
    rtpmaps: dict[str, str] = {}
    session_dir, media_dir = "sendrecv", ""
    null_address, in_audio, seen_audio = False, False, False
    for raw in text.splitlines():
        line = raw.strip()
        kind, _, value = line.partition("=")
        if kind == "m":
            in_audio = value.startswith("audio ") and not seen_audio
            if in_audio:
                parts = value.split()
                if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                    raise SipError(f"bad SDP media line {line[:80]!r}")
                formats, seen_audio = tuple(parts[3:]), True
        elif kind == "c" and value.split()[-1:] == ["0.0.0.0"] and (in_audio or not seen_audio):
            null_address = True
        elif kind == "a" and value in ANSWER_DIRECTION:
            if in_audio:
                media_dir = value
            elif not seen_audio:
                session_dir = value
        elif kind == "a" and in_audio and value.startswith("rtpmap:"):
            pt = value[7:].split(" ", 1)[0]
            rtpmaps[pt] = value
    if not seen_audio:
        raise SipError("the SDP offers no audio stream")
    return Sdp(formats, rtpmaps, media_dir or session_dir, null_address)


def sdp_body(host: str, port: int, version: int, offer: Sdp | None) -> bytes:
    """Our side of the media: one audio stream on ``port`` (no RTP is ever sent or read there). With an
    offer it is the answer (its first format, the direction mirrored); without one it is our offer (PCMU)."""
    fmt = offer.formats[0] if offer is not None and offer.formats else "0"
    rtpmap = offer.rtpmaps.get(fmt) if offer is not None else None
    if rtpmap is None and fmt in ("0", "8"):
        rtpmap = f"rtpmap:{fmt} {'PCMU' if fmt == '0' else 'PCMA'}/8000"
    direction = "sendrecv"
    if offer is not None:
        direction = "recvonly" if offer.null_address else ANSWER_DIRECTION[offer.direction]
    lines = [
        "v=0",
        f"o={SERVER} 1 {version} IN IP4 {host}",
        f"s={SERVER}",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {fmt}",
        *([f"a={rtpmap}"] if rtpmap else []),
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def dtmf_digit(content_type: str, body: bytes) -> str | None:
    """The digit an INFO carries: ``application/dtmf-relay`` (``Signal=5``) or ``application/dtmf`` (``5``).
    ``None`` for an empty body (a keep-alive INFO); ``SipError`` for anything unreadable."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if content_type == "application/dtmf":
        signal = text
    else:
        pairs = (line.partition("=") for line in text.splitlines())
        found = [v.strip() for k, _, v in pairs if k.strip().lower() == "signal"]
        if not found:
            raise SipError("a dtmf-relay INFO needs a Signal= line")
        signal = found[0]
    if _DIGITS.fullmatch(signal) and 10 <= int(signal) <= 15:  # RFC 4733 event codes for * # A-D
        signal = "*#ABCD"[int(signal) - 10]
    if not DTMF.fullmatch(signal):
        raise SipError(f"not a DTMF digit: {signal[:10]!r}")
    return signal.upper()
