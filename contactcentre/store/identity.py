"""How a customer is recognised: phone numbers in E.164, e-mail addresses, chat visitor tokens.

Every identity is stored normalised, so that "+31 20 123 4567", "020-1234567" (dialled in the Netherlands)
and "0031201234567" are one key, and a look-up is one probe of a unique index. Phone numbers are parsed by
Google's libphonenumber rules (the ``phonenumbers`` package); national numbers need the centre's region.
"""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError
from email.headerregistry import Address

import phonenumbers

DEFAULT_REGION = "NL"
MAX_TOKEN = 200


class IdentityError(ValueError):
    """The value is not a usable identity of its kind; the message says why."""


def normalise_phone(text: str, region: str | None = DEFAULT_REGION) -> str:
    """E.164 (``+31201234567``) for a number in international or, with ``region``, national form."""
    raw = text.strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        number = phonenumbers.parse(raw, None if raw.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise IdentityError(f"{text!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(number):
        raise IdentityError(f"{text!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def normalise_email(text: str) -> str:
    """The bare address, lower-cased (``"Ann <Ann@Example.COM>"`` → ``ann@example.com``).

    Lower-casing the local part is not what RFC 5321 promises, but it is what every mail provider a customer
    uses does, and two customers differing only by case in one mailbox are far rarer than one customer
    typing their address two ways."""
    raw = text.strip()
    if "<" in raw:
        try:
            raw = Address(addr_spec=raw[raw.index("<") + 1 : raw.rindex(">")].strip()).addr_spec
        except (ValueError, HeaderParseError, IndexError) as exc:
            raise IdentityError(f"{text!r} is not an e-mail address: {exc}") from None
    address = unicodedata.normalize("NFC", raw).lower()
    if not _EMAIL.match(address) or len(address) > 320:
        raise IdentityError(f"{text!r} is not an e-mail address")
    return address


def mailbox(address: str) -> str:
    """The mailbox a normalised address delivers to: a ``+tag`` sub-address is its mailbox's
    (``ann+shop@example.com`` → ``ann@example.com``; RFC 5233). Nearly every mail provider delivers
    sub-addresses so, so one person can write from as many tags as they like: whatever is counted once per
    sender (the e-mail channel's acknowledgements) is counted once per mailbox. An address without a tag, or
    with nothing before its ``+``, is its own mailbox."""
    local, at, domain = address.rpartition("@")
    base, plus, _ = local.partition("+")
    if not at or not plus or not base or local.startswith('"'):
        return address
    return f"{base}@{domain}"


def normalise_chat_token(text: str) -> str:
    token = text.strip()
    if not token or len(token) > MAX_TOKEN or any(c.isspace() for c in token):
        raise IdentityError(f"{text!r} is not a chat visitor token (1-{MAX_TOKEN} characters, no spaces)")
    return token


def normalise(kind: str, value: str, region: str | None = DEFAULT_REGION) -> str:
    if kind == "phone":
        return normalise_phone(value, region)
    if kind == "email":
        return normalise_email(value)
    if kind == "chat":
        return normalise_chat_token(value)
    raise IdentityError(f"unknown identity kind {kind!r} (phone, email or chat)")


def name_key(name: str | None) -> str | None:
    """A name folded for comparison: accents removed, lower case, words sorted ("Müller, Jan" and "jan
    muller" are one key)."""
    if not name:
        return None
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    words = sorted(w for w in re.split(r"[^\w]+", folded) if w)
    return " ".join(words)[:200] or None
