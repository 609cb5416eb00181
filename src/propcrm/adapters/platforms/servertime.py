"""Platform server time ↔ UTC.

MetaTrader servers count time in *their own* zone: a deal's ``Time`` of 1700000000 is the server's
wall clock read as if it were UTC (MetaQuotes' documentation: "seconds that have elapsed since
01.01.1970", in trade server time). Brokers run their servers on UTC+2/UTC+3 and similar, so every
MT5 time — deals, positions, report rows — goes through a :class:`ServerClock` configured with the
server's zone: a fixed offset (``+02:00``) or an IANA name whose DST rules the server follows
(``Europe/Athens``). An ambiguous wall time at the autumn change is read as its first occurrence.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1)
EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=UTC)
_MS = dt.timedelta(milliseconds=1)
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def parse_zone(text: str) -> dt.tzinfo:
    """``UTC``, ``+02:00``/``-0530``/``GMT+3``, or an IANA zone name; ValueError names the problem."""
    value = (text or "").strip()
    if value.upper() in ("UTC", "GMT", "Z", ""):
        return UTC
    match = _OFFSET.match(value)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes >= 60:
            raise ValueError(f"time zone offset {text!r} is out of range")
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r} (use UTC, an offset such as +02:00, or an IANA name "
                         "such as Europe/Athens)") from None


class ServerClock:
    def __init__(self, zone: str | dt.tzinfo = "UTC") -> None:
        self.zone = parse_zone(zone) if isinstance(zone, str) else zone
        self.name = zone if isinstance(zone, str) else str(zone)
        # a fixed offset (UTC, +02:00) needs no zone rules: server time minus the offset is UTC
        self._offset = self.zone.utcoffset(None) if isinstance(self.zone, dt.timezone) else None

    def wall_to_utc(self, wall: dt.datetime) -> dt.datetime:
        """A naive wall-clock time of the server as an aware UTC time."""
        return wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    def to_utc(self, server_seconds: float) -> dt.datetime:
        return self.wall_to_utc(EPOCH + dt.timedelta(seconds=server_seconds))

    def ms_to_utc(self, server_ms: int) -> dt.datetime:
        if self._offset is not None and type(server_ms) is int:
            return EPOCH_UTC + (server_ms * _MS - self._offset)
        return self.wall_to_utc(EPOCH + dt.timedelta(milliseconds=server_ms))

    def to_server(self, utc: dt.datetime) -> int:
        """UTC → server seconds (what ``from``/``to`` of a request take)."""
        wall = utc.astimezone(self.zone).replace(tzinfo=None)
        return int((wall - EPOCH).total_seconds())

    def to_server_ms(self, utc: dt.datetime) -> int:
        wall = utc.astimezone(self.zone).replace(tzinfo=None)
        return (wall - EPOCH) // dt.timedelta(milliseconds=1)


__all__ = ["ServerClock", "parse_zone"]
