"""Trading days and weekly moments in a rule pack's timezone (zoneinfo; DST included).

A trading day runs from ``day_start`` local time to the next day's ``day_start``. It is named after
the calendar date that holds most of it: with ``day_start`` before noon the day starting on Tuesday
is Tuesday's; with 17:00 America/Chicago the session that starts Tuesday 17:00 is Wednesday's (the
futures convention). On DST change days a trading day is 23 or 25 hours long. A ``day_start`` that
does not exist on a spring-forward date is resolved as zoneinfo resolves it (``fold=0``).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
_DAY = dt.timedelta(days=1)
_NOON = dt.time(12, 0)


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class TradingCalendar:
    """Where trading days begin and end for one pack (``timezone`` + ``day_start``)."""

    __slots__ = ("tz", "day_start", "_label_shift", "_starts", "_labels")

    def __init__(self, timezone: str, day_start: dt.time) -> None:
        self.tz = zone(timezone)
        self.day_start = day_start
        self._label_shift = _DAY if day_start >= _NOON else dt.timedelta(0)
        # Every account of a pack shares its trading days: the same date and datetime objects, not one
        # copy per account state (immutable values; a few dozen bytes per account saved).
        self._starts: dict[dt.date, dt.datetime] = {}
        self._labels: dict[dt.date, dt.date] = {}

    def session(self, instant: dt.datetime) -> tuple[dt.date, dt.datetime, dt.datetime]:
        """(trading date, start UTC, end UTC) of the trading day that holds ``instant``."""
        local = instant.astimezone(self.tz)
        opened_on = local.date()
        if local.time().replace(tzinfo=None) < self.day_start:
            opened_on -= _DAY
        start = self._at(opened_on)
        if start > instant:  # only on a DST day where the wall clock repeats or skips
            opened_on -= _DAY
            start = self._at(opened_on)
        end = self._at(opened_on + _DAY)
        if end <= instant:  # the wall clock repeated an hour after today's day_start (fold=0) had passed
            opened_on += _DAY
            start, end = end, self._at(opened_on + _DAY)
        label = self._labels.get(opened_on)
        if label is None:
            label = self._labels[opened_on] = opened_on + self._label_shift
        return label, start, end

    def _at(self, day: dt.date) -> dt.datetime:
        start = self._starts.get(day)
        if start is None:
            start = self._starts[day] = dt.datetime.combine(day, self.day_start, tzinfo=self.tz).astimezone(UTC)
        return start


def next_weekly(instant: dt.datetime, weekday: int, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The first moment strictly after ``instant`` that is ``weekday`` (0 = Monday) ``at`` local time, in UTC."""
    local = instant.astimezone(tz)
    day = local.date() + dt.timedelta(days=(weekday - local.weekday()) % 7)
    moment = dt.datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
    while moment <= instant:
        day += dt.timedelta(days=7)
        moment = dt.datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
    return moment
