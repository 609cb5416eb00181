"""Importing economic calendars: once from a file or URL, or on a schedule from stored sources.

Entries become ``news`` events (GUIDE §2) through :func:`propcrm.services.ingest.ingest` with the
source ``calendar``; an entry's id is a digest of its time, currency and title, so fetching the same
week again adds nothing, and the engine judges each calendar entry once whatever the id. A source that
cannot be fetched or read keeps its last error (shown on the platforms page) and is tried again at its
next interval; it never stops the other sources or the service.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db import models as m
from ...adapters.db.models_platforms import CalendarSource
from ...adapters.delivery import safe_url
from ...services import audit
from ...services.errors import Conflict, Invalid, NotFound
from ...services.ingest import ingest
from .parse import FORMATS, CalendarError, impact_of, parse_calendar

log = logging.getLogger("propcrm.calendar")
UTC = dt.timezone.utc
SOURCE = "calendar"
MAX_BYTES = 10 * 1024 * 1024


@dataclass
class CalendarImport:
    origin: str
    entries: int
    accepted: int
    duplicates: int
    rejected: int
    skipped: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fetch_location(location: str, *, timeout: float = 20.0, transport: httpx.BaseTransport | None = None) -> bytes:
    """The bytes at an http(s) URL or in a file; ValueError names what failed (never a URL's query)."""
    if location.startswith(("https://", "http://")):
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True, transport=transport,
                              headers={"User-Agent": "propcrm calendar import"}) as client:
                response = client.get(location)
        except httpx.HTTPError as exc:
            raise ValueError(f"{safe_url(location)}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ValueError(f"{safe_url(location)}: HTTP {response.status_code}")
        if len(response.content) > MAX_BYTES:
            raise ValueError(f"{safe_url(location)}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
        return response.content
    path = Path(location)
    if not path.is_file():
        raise ValueError(f"{location}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{location}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    return path.read_bytes()


def import_calendar(session: Session, *, firm_id: str, data: bytes, fmt: str = "auto", timezone: str = "UTC",
                    origin: str, actor: str) -> CalendarImport:
    try:
        parsed = parse_calendar(data, fmt=fmt, timezone=timezone)
    except CalendarError as exc:
        raise Invalid(f"{origin}: {exc}") from None
    lines = [msgspec.json.encode(entry.to_event()) for entry in parsed.entries]
    result = ingest(session, firm_id=firm_id, source=SOURCE, body=b"\n".join(lines) + b"\n",
                    content_type="application/x-ndjson") if lines else None
    report = CalendarImport(origin=origin, entries=len(lines), accepted=result.accepted if result else 0,
                            duplicates=result.duplicates if result else 0, rejected=result.rejected if result else 0,
                            skipped=parsed.skipped, warnings=parsed.warnings[:20])
    audit.append(session, actor=actor, action="calendar.import", entity="calendar", entity_id=origin[:200],
                 after={"entries": report.entries, "accepted": report.accepted, "duplicates": report.duplicates,
                        "rejected": report.rejected, "skipped": report.skipped}, firm_id=firm_id)
    return report


def add_source(session: Session, *, firm_id: str, name: str, location: str, fmt: str = "auto",
               timezone: str = "UTC", interval_s: int = 3600, actor: str) -> CalendarSource:
    name = (name or "").strip()
    if not name or len(name) > 64 or " " in name:
        raise Invalid("name must be 1 to 64 characters without spaces")
    if fmt not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}")
    if not location.startswith(("https://", "http://")) and not Path(location).is_file():
        raise Invalid(f"location must be an http(s) URL or an existing file, got {location!r}")
    if interval_s < 60:
        raise Invalid("interval must be at least 60 seconds")
    try:
        parse_calendar(b"[]", fmt="json", timezone=timezone)
    except CalendarError as exc:
        raise Invalid(str(exc)) from None
    if session.scalar(select(CalendarSource.id).where(CalendarSource.firm_id == firm_id,
                                                      CalendarSource.name == name)) is not None:
        raise Conflict(f"firm {firm_id} already has a calendar source named {name!r}")
    row = CalendarSource(firm_id=firm_id, name=name, location=location, format=fmt, timezone=timezone,
                         interval_s=interval_s, enabled=True, created_at=dt.datetime.now(UTC))
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="calendar.source_add", entity="calendar", entity_id=name,
                 after={"location": safe_url(location), "format": fmt, "timezone": timezone,
                        "interval_s": interval_s}, firm_id=firm_id)
    return row


def list_sources(session: Session, *, firm_id: str | None = None) -> list[dict[str, Any]]:
    query = select(CalendarSource).order_by(CalendarSource.firm_id, CalendarSource.name)
    if firm_id is not None:
        query = query.where(CalendarSource.firm_id == firm_id)
    return [{"firm": r.firm_id, "name": r.name, "location": safe_url(r.location), "format": r.format,
             "timezone": r.timezone, "interval_s": r.interval_s, "enabled": r.enabled,
             "last_fetched_at": r.last_fetched_at, "last_count": r.last_count, "last_error": r.last_error}
            for r in session.scalars(query)]


def run_due(session_factory: sessionmaker[Session], *, now: dt.datetime | None = None, name: str | None = None,
            fetch: Callable[[str], bytes] = fetch_location, force: bool = False) -> list[tuple[str, str]]:
    """Fetch and import every source that is due (or ``name``); returns (source, outcome) pairs."""
    now = now or dt.datetime.now(UTC)
    with session_factory() as session:
        query = select(CalendarSource).where(CalendarSource.enabled.is_(True))
        if name is not None:
            query = query.where(CalendarSource.name == name)
        rows = list(session.scalars(query))
        for row in rows:
            session.expunge(row)
    if name is not None and not rows:
        raise NotFound(f"no enabled calendar source {name!r}")
    outcomes = []
    for row in rows:
        if not force and row.last_fetched_at is not None and (now - row.last_fetched_at).total_seconds() < row.interval_s:
            continue
        error, count = None, None
        try:
            data = fetch(row.location)
            with session_factory.begin() as session:
                report = import_calendar(session, firm_id=row.firm_id, data=data, fmt=row.format,
                                         timezone=row.timezone, origin=f"source:{row.name}", actor="calendar")
            count = report.accepted
            outcome = f"{report.entries} entries, {report.accepted} new, {report.skipped} skipped"
        except (ValueError, Invalid) as exc:
            error = str(exc)[:500]
            outcome = f"failed: {error}"
            log.warning("calendar source %s (firm %s): %s", row.name, row.firm_id, error)
        with session_factory.begin() as session:
            stored = session.get(CalendarSource, row.id)
            if stored is not None:
                stored.last_fetched_at, stored.last_error = now, error
                if count is not None:
                    stored.last_count = count
        outcomes.append((row.name, outcome))
    return outcomes


class CalendarScheduler:
    """Fetches due calendar sources every ``check_s`` seconds (inside ``serve`` and ``connect``)."""

    def __init__(self, session_factory: sessionmaker[Session], *, check_s: float = 30.0) -> None:
        self.sessions = session_factory
        self.check_s = check_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                run_due(self.sessions)
            except Exception:  # noqa: BLE001 - a calendar never stops the service
                log.exception("calendar: scheduled fetch failed; retrying")
            if stop.wait(self.check_s):
                break


def upcoming(session: Session, *, firm_id: str, since: dt.datetime, impacts: tuple[str, ...] | None = ("high",),
             limit: int = 100) -> list[dict[str, Any]]:
    """The firm's calendar from ``since`` on, soonest first (each entry once, whatever its source)."""
    rows = session.execute(select(m.RawEvent.ts, m.RawEvent.body)
                           .where(m.RawEvent.firm_id == firm_id, m.RawEvent.type == "news", m.RawEvent.ts >= since)
                           .order_by(m.RawEvent.ts).limit(limit * 20))
    seen: set[tuple] = set()
    entries = []
    for ts, body in rows:
        try:
            event = msgspec.json.decode(body)
        except msgspec.DecodeError:
            continue
        impact = impact_of(event.get("impact"))
        if impacts is not None and impact not in impacts:
            continue
        key = (ts, event.get("title"), event.get("currency"), tuple(event.get("symbols") or ()))
        if key in seen:
            continue
        seen.add(key)
        entries.append({"ts": ts, "title": event.get("title", ""), "impact": impact or "",
                        "currency": event.get("currency") or ", ".join(event.get("symbols") or [])})
        if len(entries) >= limit:
            break
    return entries


__all__ = ["CalendarImport", "CalendarScheduler", "SOURCE", "add_source", "fetch_location", "import_calendar",
           "list_sources", "run_due", "upcoming"]
