"""The mails that once froze the whole server (issue 16): each held the event loop for seconds while it was
parsed there. Shared by tests/test_loop_lag.py and benchmarks/mail_stall.py."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

HEAD = "From: Mallory <mallory@example.net>\r\nTo: support@centre.example\r\nSubject: {subject}\r\n"
HEAD += "Message-ID: <{subject}@example.net>\r\n"


def many_parts(n: int = 10_000) -> bytes:
    """~1 MB of 10,000 tiny MIME parts."""
    part = "--b\r\nContent-Type: text/plain\r\n\r\n" + "x" * 60 + "\r\n"
    return (HEAD.format(subject="parts") + "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * n).encode()


def deep_nesting(n: int = 2_000) -> bytes:
    """Multiparts nested 2,000 deep."""
    opened = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(n))
    closed = "".join(f"--b{i}--\r\n" for i in reversed(range(n)))
    return (HEAD.format(subject="deep") + opened + "Content-Type: text/plain\r\n\r\nhi\r\n" + closed).encode()


def big_html(size: int = 8_000_000) -> bytes:
    """~8 MB of ordinary HTML, under the default 10 MB size limit."""
    unit = "<p>Hello <b>there</b> &amp; <a href='https://example.net/'>a link</a></p>\r\n"
    head = HEAD.format(subject="html") + "Content-Type: text/html; charset=utf-8\r\n\r\n"
    return (head + unit * (size // len(unit))).encode()


def tag_soup(size: int = 400_000) -> bytes:
    """Unclosed tags that make html.parser go quadratic: it never finishes; only the time budget ends it."""
    head = HEAD.format(subject="soup") + "Content-Type: text/html; charset=utf-8\r\n\r\n"
    return (head + "<a <b <c\r\n" * (size // 10)).encode()


MAILS: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("parts", many_parts),
    ("deep", deep_nesting),
    ("html", big_html),
    ("soup", tag_soup),
)


def send_mail(port: int, data: bytes, timeout_s: float = 120) -> int:
    """Deliver ``data`` from mallory to the centre's SMTP port on 127.0.0.1; the server's final reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout_s) as smtp:
        smtp.ehlo()
        smtp.mail("mallory@example.net")
        smtp.rcpt("support@centre.example")
        try:
            code, _ = smtp.data(data)
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
    return code
