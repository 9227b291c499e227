"""Business-hours calendars: is a queue open, and when does an SLA clock that only runs in open hours expire.

Pure: epoch milliseconds in, epoch milliseconds out; time-zone rules come from the IANA database.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from contactcentre.config_base import CalendarConfig, parse_range

_MAX_DAYS = 3 * 366  # an SLA that never finds open hours in three years is a configuration error


class CalendarError(ValueError):
    pass


class BusinessCalendar:
    """Open hours per weekday in a time zone, minus holidays. ``None`` config means always open."""

    def __init__(self, name: str, cfg: CalendarConfig | None) -> None:
        self.name = name
        self.always_open = cfg is None
        self._cfg = cfg
        self._tz = zoneinfo.ZoneInfo(cfg.timezone) if cfg else dt.UTC
        self._holidays = {dt.date.fromisoformat(d) for d in cfg.holidays} if cfg else set()
        self._week = [[parse_range(r) for r in cfg.day(i)] for i in range(7)] if cfg else []
        self._cache: dict[dt.date, list[tuple[int, int]]] = {}
        if cfg is not None and not any(self._week):
            raise CalendarError(f"calendar {name!r} has no open hours on any weekday")

    def _open_intervals(self, day: dt.date) -> list[tuple[int, int]]:
        """Open intervals of one local date, as epoch-ms pairs (DST-correct)."""
        got = self._cache.get(day)
        if got is not None:
            return got
        out: list[tuple[int, int]] = []
        if day not in self._holidays:
            for rng in self._week[day.weekday()]:
                assert rng is not None  # config checked
                start = _local_ms(day, rng[0], self._tz)
                end = _local_ms(day, rng[1], self._tz)
                if end > start:
                    out.append((start, end))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[day] = out
        return out

    def _local_date(self, at_ms: int) -> dt.date:
        return dt.datetime.fromtimestamp(at_ms / 1000, self._tz).date()

    def is_open(self, at_ms: int) -> bool:
        if self.always_open:
            return True
        return any(s <= at_ms < e for s, e in self._open_intervals(self._local_date(at_ms)))

    def add(self, start_ms: int, duration_ms: int) -> int:
        """The instant at which ``duration_ms`` of open time has passed since ``start_ms``."""
        if self.always_open:
            return start_ms + duration_ms
        remaining = duration_ms
        day = self._local_date(start_ms) - dt.timedelta(days=1)  # intervals may cross midnight in UTC terms
        for _ in range(_MAX_DAYS):
            for s, e in self._open_intervals(day):
                s = max(s, start_ms)
                if s >= e:
                    continue
                if remaining <= e - s:
                    return s + remaining
                remaining -= e - s
            day += dt.timedelta(days=1)
        raise CalendarError(f"calendar {self.name!r}: no open time within {_MAX_DAYS} days of {start_ms}")

    def open_ms_between(self, start_ms: int, end_ms: int) -> int:
        """Open time in [start_ms, end_ms) — for measuring waits in business time."""
        if self.always_open:
            return max(0, end_ms - start_ms)
        total = 0
        day = self._local_date(start_ms) - dt.timedelta(days=1)
        last = self._local_date(end_ms) + dt.timedelta(days=1)
        while day <= last:
            for s, e in self._open_intervals(day):
                total += max(0, min(e, end_ms) - max(s, start_ms))
            day += dt.timedelta(days=1)
        return total


def _local_ms(day: dt.date, minute: int, tz: dt.tzinfo) -> int:
    base = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
    if minute >= 24 * 60:
        nxt = day + dt.timedelta(days=1)
        return int(dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp() * 1000)
    local = base.replace(hour=minute // 60, minute=minute % 60)
    return int(local.timestamp() * 1000)


def day_number(at_ms: int, tz: dt.tzinfo) -> tuple[int, int]:
    """(local day ordinal, epoch ms of the next local midnight) — for "handled today" counters."""
    local = dt.datetime.fromtimestamp(at_ms / 1000, tz)
    day = local.date()
    nxt = day + dt.timedelta(days=1)
    return day.toordinal(), int(dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp() * 1000)
