"""Business-hours calendars: open/closed, SLA clocks that run in open hours only, across DST."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from contactcentre.acd.calendar import BusinessCalendar
from contactcentre.config import CalendarConfig

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
H = 3_600_000


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=AMS).timestamp() * 1000)


OFFICE = BusinessCalendar(
    "office",
    CalendarConfig(
        timezone="Europe/Amsterdam",
        mon=["08:00-12:00", "13:00-17:00"],
        tue=["08:00-17:00"],
        wed=["08:00-17:00"],
        thu=["08:00-17:00"],
        fri=["08:00-17:00"],
        holidays=["2026-12-25"],
    ),
)


def test_open_and_closed() -> None:
    assert OFFICE.is_open(ms(2026, 11, 23, 9))  # Monday
    assert not OFFICE.is_open(ms(2026, 11, 23, 12, 30))  # lunch
    assert not OFFICE.is_open(ms(2026, 11, 28, 10))  # Saturday
    assert not OFFICE.is_open(ms(2026, 12, 25, 10))  # holiday


def test_deadline_skips_lunch_nights_weekends_and_holidays() -> None:
    assert OFFICE.add(ms(2026, 11, 23, 11), 2 * H) == ms(2026, 11, 23, 14)
    assert OFFICE.add(ms(2026, 11, 27, 16), 2 * H) == ms(2026, 11, 30, 9)  # Friday 16:00 → Monday 09:00
    assert OFFICE.add(ms(2026, 11, 28, 10), 1 * H) == ms(2026, 11, 30, 9)  # starts on a Saturday
    assert OFFICE.add(ms(2026, 12, 24, 16), 2 * H) == ms(2026, 12, 28, 9)  # 25th is a holiday, then weekend
    assert OFFICE.open_ms_between(ms(2026, 11, 23, 11), ms(2026, 11, 23, 14)) == 2 * H


def test_deadline_is_right_across_a_dst_change() -> None:
    always = BusinessCalendar(
        "x", CalendarConfig(timezone="Europe/Amsterdam", sun=["00:00-24:00"], mon=["00:00-24:00"])
    )
    start = ms(2026, 10, 25, 0)  # the night clocks go back: that Sunday has 25 hours
    assert always.add(start, 25 * H) == ms(2026, 10, 26, 0)


def test_always_open() -> None:
    cal = BusinessCalendar("24x7", None)
    assert cal.is_open(0) and cal.add(5, 10) == 15
