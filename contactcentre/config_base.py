"""The bottom of the configuration: the error every check raises, the strict struct base, skill levels and
the calendar's open hours — what the router's calendar (``acd/calendar.py``) and the IVR menus
(``telephony/ivr/menu.py``) need. They import this, not ``config.py``: the centre's configuration loads and checks the
IVR menus, so a menu importing it back would close an import circle.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = [
    "ALWAYS_OPEN",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "WEEKDAYS",
    "CalendarConfig",
    "ConfigError",
    "convert",
    "parse_range",
]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = "24x7"
MIN_LEVEL, MAX_LEVEL = 1, 10

_AT = re.compile(r"\s*-\s*at\s*(?:`key` in\s*)?`\$([^`]*)`\s*$")
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class ConfigError(ValueError):
    """A configuration problem: which file, which key, what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class CalendarConfig(_Strict):
    """Weekly open hours in a time zone, e.g. ``mon = ["08:00-12:00", "13:00-18:00"]``, and closed dates."""

    timezone: str = "UTC"
    mon: list[str] = []
    tue: list[str] = []
    wed: list[str] = []
    thu: list[str] = []
    fri: list[str] = []
    sat: list[str] = []
    sun: list[str] = []
    holidays: list[str] = []

    def day(self, weekday: int) -> list[str]:
        return getattr(self, WEEKDAYS[weekday])


def convert(data: Any, type_: type, source: str) -> Any:
    """msgspec conversion whose errors become ``ConfigError`` with a dotted key path."""
    try:
        return msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        key = ""
        m = _AT.search(msg)
        if m:
            key = m.group(1).lstrip(".")
            msg = msg[: m.start()]
        raise ConfigError(source, key, msg.replace("`", "'")) from None


def parse_range(text: str) -> tuple[int, int] | None:
    """``"08:00-17:30"`` → (480, 1050) minutes after midnight; ``"00:00-24:00"`` is the whole day."""
    m = _RANGE.match(text.strip())
    if not m:
        return None
    h1, m1, h2, m2 = map(int, m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or start >= end or end > 24 * 60:
        return None
    return start, end
