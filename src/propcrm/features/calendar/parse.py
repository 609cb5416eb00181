"""Economic calendar files → calendar entries (time in UTC, title, currency, impact).

Formats read (``auto`` tells them apart by their content):

* **JSON**, ForexFactory style: a list (or ``{"events": [...]}``) of objects with ``title`` (or
  ``event``/``name``), ``country`` (or ``currency``) — a currency code — , ``date`` (ISO 8601, with an
  offset, or a date with a separate ``time``) and ``impact`` (``High``/``Medium``/``Low``; ``Holiday``
  and ``Non-Economic`` are not news and are left out);
* **XML**, ForexFactory style: ``<weeklyevents><event><title/><country/><date>MM-DD-YYYY</date>
  <time>8:30am</time><impact/>…``;
* **CSV** with a header row naming the same columns (``Title,Country,Date,Time,Impact,…``);
* **ICS** (RFC 5545, read with ``icalendar``): each VEVENT's ``DTSTART`` (its ``TZID`` or UTC), the
  ``SUMMARY`` as title; the currency from ``CATEGORIES``, an ``X-CURRENCY`` property or a leading
  currency code in the summary (``USD Non-Farm Payrolls``, ``[USD] …``); the impact from
  ``X-IMPACT``, words in the summary or description (``High Impact Expected``, ``Impact: High``) or
  ``PRIORITY`` (1–4 high, 5 medium, 6–9 low).

Times without an offset are read in the source's ``timezone`` (an offset or an IANA name). An entry
without a time of day ("All Day", "Tentative") cannot open a news window and is left out; every
entry left out is counted in the warnings with its reason, and nothing malformed stops the rest.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ...adapters.platforms.servertime import parse_zone

UTC = dt.timezone.utc
FORMATS = ("auto", "json", "xml", "csv", "ics")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LEADING_CURRENCY = re.compile(r"^\s*\[?([A-Z]{3})\]?\s*[-:–]?\s+(.*)$")


class CalendarError(ValueError):
    """The file cannot be read as a calendar at all (a single bad entry is a warning instead)."""


@dataclass(frozen=True)
class CalendarEntry:
    ts: dt.datetime
    title: str
    currency: str
    impact: str  # high | medium | low

    @property
    def event_id(self) -> str:
        digest = hashlib.sha256(f"{self.ts.isoformat()}|{self.currency}|{self.title}".encode()).hexdigest()
        return f"news-{digest[:24]}"

    def to_event(self) -> dict[str, Any]:
        return {"id": self.event_id, "type": "news", "ts": self.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "title": self.title[:200], "currency": self.currency, "impact": self.impact}


@dataclass
class ParsedCalendar:
    entries: list[CalendarEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        if len(self.warnings) < 50:
            self.warnings.append(f"{where}: {why}")


def impact_of(text: Any) -> str | None:
    """``high``/``medium``/``low``, or None for what is not an impact (holidays, unknown words)."""
    value = str(text or "").strip().lower()
    if not value:
        return None
    if value in ("3", "red") or value.startswith("high") or "high impact" in value:
        return "high"
    if value in ("2", "orange") or value.startswith(("medium", "moderate")) or "medium impact" in value:
        return "medium"
    if value in ("1", "yellow") or value.startswith("low") or "low impact" in value:
        return "low"
    return None


def detect(data: bytes) -> str:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]
    if head.startswith((b"[", b"{")):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    if head.upper().startswith(b"BEGIN:VCALENDAR"):
        return "ics"
    return "csv"


def parse_calendar(data: bytes, *, fmt: str = "auto", timezone: str = "UTC") -> ParsedCalendar:
    if fmt not in FORMATS:
        raise CalendarError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        zone = parse_zone(timezone)
    except ValueError as exc:
        raise CalendarError(str(exc)) from None
    kind = detect(data) if fmt == "auto" else fmt
    parsed = ParsedCalendar()
    if kind == "json":
        _json(data, zone, parsed)
    elif kind == "xml":
        _xml(data, zone, parsed)
    elif kind == "ics":
        _ics(data, zone, parsed)
    else:
        _csv(data, zone, parsed)
    parsed.entries.sort(key=lambda e: (e.ts, e.currency, e.title))
    return parsed


# ------------------------------------------------------------------------------------------- fields
def _text(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


_DATE_FORMATS = ("%m-%d-%Y", "%Y-%m-%d", "%Y.%m.%d", "%m/%d/%Y", "%d.%m.%Y", "%b %d, %Y", "%B %d, %Y", "%Y%m%d")


def _date(text: str) -> dt.date:
    value = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date {text!r} is not a date this reader knows (MM-DD-YYYY, YYYY-MM-DD, …)")


def _clock(text: str) -> dt.time:
    value = text.strip().lower().replace(" ", "")
    for fmt in ("%I:%M%p", "%I%p", "%H:%M", "%H:%M:%S"):
        try:
            return dt.datetime.strptime(value, fmt).time()
        except ValueError:
            continue
    raise ValueError(f"time {text!r} has no time of day (all-day or tentative entries open no news window)")


def _moment(date_text: str, time_text: str | None, zone: dt.tzinfo) -> dt.datetime:
    value = date_text.strip()
    if "T" in value and not time_text:
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"date {date_text!r} is not ISO 8601") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=zone)
        return stamp.astimezone(UTC)
    if not time_text:
        raise ValueError("no time of day (all-day or tentative entries open no news window)")
    day = _date(value)
    local = dt.datetime.combine(day, _clock(time_text)).replace(tzinfo=zone)
    return local.astimezone(UTC)


def _entry(parsed: ParsedCalendar, where: str, *, title: Any, currency: Any, impact: Any, ts: dt.datetime) -> None:
    name = " ".join(str(title or "").split())
    code = str(currency or "").strip().upper()
    level = impact_of(impact)
    if not name:
        parsed.skip(where, "no title")
    elif not _CURRENCY.match(code) or code == "ALL":
        parsed.skip(where, f"currency {currency!r} is not a currency code")
    elif level is None:
        parsed.skip(where, f"impact {impact!r} is not high, medium or low")
    else:
        parsed.entries.append(CalendarEntry(ts=ts, title=name[:200], currency=code, impact=level))


# ------------------------------------------------------------------------------------------- formats
def _json(data: bytes, zone: dt.tzinfo, parsed: ParsedCalendar) -> None:
    try:
        document = json.loads(_text(data))
    except ValueError as exc:
        raise CalendarError(f"not valid JSON: {exc}") from None
    if isinstance(document, dict):
        document = document.get("events") or document.get("data") or []
    if not isinstance(document, list):
        raise CalendarError("a JSON calendar is a list of events (or an object with `events`)")
    for index, item in enumerate(document, start=1):
        where = f"event {index}"
        if not isinstance(item, dict):
            parsed.skip(where, "not an object")
            continue
        try:
            ts = _moment(str(item.get("date") or item.get("datetime") or item.get("timestamp") or ""),
                         item.get("time"), zone)
        except ValueError as exc:
            parsed.skip(where, str(exc))
            continue
        _entry(parsed, where, title=item.get("title") or item.get("event") or item.get("name"),
               currency=item.get("country") or item.get("currency"), impact=item.get("impact"), ts=ts)


def _xml(data: bytes, zone: dt.tzinfo, parsed: ParsedCalendar) -> None:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise CalendarError(f"not valid XML: {exc}") from None
    events = root.findall(".//event")
    if not events and root.tag != "weeklyevents":
        raise CalendarError("no <event> elements: not a ForexFactory-style XML calendar")
    for index, node in enumerate(events, start=1):
        where = f"event {index}"

        def text(name: str) -> str:
            return (node.findtext(name) or "").strip()

        try:
            ts = _moment(text("date"), text("time") or None, zone)
        except ValueError as exc:
            parsed.skip(where, str(exc))
            continue
        _entry(parsed, where, title=text("title"), currency=text("country") or text("currency"),
               impact=text("impact"), ts=ts)


def _csv(data: bytes, zone: dt.tzinfo, parsed: ParsedCalendar) -> None:
    reader = csv.reader(io.StringIO(_text(data)))
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise CalendarError("the CSV file is empty")
    header = [cell.strip().lower() for cell in rows[0]]

    def index(*names: str) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        return None

    title, currency = index("title", "event", "name"), index("country", "currency")
    date, time_, impact = index("date", "datetime"), index("time"), index("impact")
    if title is None or currency is None or date is None or impact is None:
        raise CalendarError("the CSV header must name Title, Country (or Currency), Date and Impact columns; "
                            f"found {', '.join(rows[0])}")
    for number, row in enumerate(rows[1:], start=2):
        where = f"line {number}"

        def cell(position: int | None) -> str:
            return row[position].strip() if position is not None and position < len(row) else ""

        try:
            ts = _moment(cell(date), cell(time_) or None, zone)
        except ValueError as exc:
            parsed.skip(where, str(exc))
            continue
        _entry(parsed, where, title=cell(title), currency=cell(currency), impact=cell(impact), ts=ts)


def _ics(data: bytes, zone: dt.tzinfo, parsed: ParsedCalendar) -> None:
    from icalendar import Calendar

    try:
        calendar = Calendar.from_ical(data)
    except ValueError as exc:
        raise CalendarError(f"not a valid iCalendar file: {exc}") from None
    for index, event in enumerate(calendar.walk("VEVENT"), start=1):
        where = f"VEVENT {index}"
        start = event.get("DTSTART")
        value = start.dt if start is not None else None
        if not isinstance(value, dt.datetime):
            parsed.skip(where, "no time of day (an all-day event opens no news window)")
            continue
        ts = (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
        summary = " ".join(str(event.get("SUMMARY") or "").split())
        description = str(event.get("DESCRIPTION") or "")
        currency = str(event.get("X-CURRENCY") or "").strip()
        categories = event.get("CATEGORIES")
        if not currency and categories is not None:
            for group in categories if isinstance(categories, list) else [categories]:
                for category in getattr(group, "cats", [group]):
                    if _CURRENCY.match(str(category).strip().upper()):
                        currency = str(category).strip().upper()
                        break
        title = summary
        leading = _LEADING_CURRENCY.match(summary)
        if leading and leading.group(1) != "ALL":
            currency = currency or leading.group(1)
            title = leading.group(2)
        impact = str(event.get("X-IMPACT") or "")
        if impact_of(impact) is None:
            found = re.search(r"(high|medium|moderate|low)\s+impact|impact\s*[:=]\s*(high|medium|low)",
                              f"{summary} {description}", re.IGNORECASE)
            if found:
                impact = found.group(1) or found.group(2)
        if impact_of(impact) is None and event.get("PRIORITY") is not None:
            priority = int(event.get("PRIORITY"))
            impact = "high" if 1 <= priority <= 4 else "medium" if priority == 5 else "low" if priority else ""
        title = re.sub(r"\s*\((high|medium|low) impact[^)]*\)\s*$", "", title, flags=re.IGNORECASE)
        _entry(parsed, where, title=title, currency=currency, impact=impact, ts=ts)


__all__ = ["CalendarEntry", "CalendarError", "FORMATS", "ParsedCalendar", "detect", "impact_of", "parse_calendar"]
