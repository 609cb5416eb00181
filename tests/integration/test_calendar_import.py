"""Economic calendars (ForexFactory-style JSON, XML, CSV; ICS) → news events the news rules judge."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.rulepack import parse_pack
from propcrm.features.calendar.parse import CalendarError, parse_calendar
from propcrm.features.calendar.service import add_source, import_calendar, run_due, upcoming
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.errors import Invalid
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest

UTC = dt.timezone.utc

FF_JSON = json.dumps([
    {"title": "Non-Farm Employment Change", "country": "USD", "date": "2026-03-06T08:30:00-05:00", "impact": "High",
     "forecast": "200K", "previous": "143K"},
    {"title": "German Factory Orders m/m", "country": "EUR", "date": "2026-03-06T02:00:00-05:00", "impact": "Low",
     "forecast": "", "previous": ""},
    {"title": "Bank Holiday", "country": "JPY", "date": "2026-03-06T00:00:00-05:00", "impact": "Holiday"},
    {"title": "Everything", "country": "All", "date": "2026-03-06T10:00:00-05:00", "impact": "High"},
]).encode()

FF_XML = b"""<?xml version="1.0" encoding="windows-1252"?>
<weeklyevents>
<event><title>Non-Farm Employment Change</title><country>USD</country><date><![CDATA[03-06-2026]]></date>
<time><![CDATA[8:30am]]></time><impact><![CDATA[High]]></impact><forecast><![CDATA[200K]]></forecast></event>
<event><title>ECB Press Conference</title><country>EUR</country><date><![CDATA[03-05-2026]]></date>
<time><![CDATA[8:45am]]></time><impact><![CDATA[High]]></impact></event>
<event><title>OPEC Meetings</title><country>ALL</country><date><![CDATA[03-05-2026]]></date>
<time><![CDATA[All Day]]></time><impact><![CDATA[Medium]]></impact></event>
</weeklyevents>"""

FF_CSV = b"""Title,Country,Date,Time,Impact,Forecast,Previous
Non-Farm Employment Change,USD,03-06-2026,8:30am,High,200K,143K
CPI m/m,USD,2026-03-11,8:30am,High,0.3%,0.4%
Crude Oil Inventories,USD,03-11-2026,Tentative,Medium,,
"""

ICS = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//example//calendar//EN
BEGIN:VEVENT
UID:nfp-2026-03-06@example
DTSTART:20260306T133000Z
SUMMARY:USD - Non-Farm Employment Change
DESCRIPTION:Impact: High
END:VEVENT
BEGIN:VEVENT
UID:boe-2026-03-19@example
DTSTART;TZID=Europe/London:20260319T120000
SUMMARY:Official Bank Rate
CATEGORIES:GBP
PRIORITY:1
END:VEVENT
BEGIN:VEVENT
UID:holiday@example
DTSTART;VALUE=DATE:20260317
SUMMARY:[EUR] Bank Holiday
END:VEVENT
END:VCALENDAR
"""

NFP = dt.datetime(2026, 3, 6, 13, 30, tzinfo=UTC)


def test_forexfactory_json_with_offsets():
    parsed = parse_calendar(FF_JSON)
    assert [(e.ts, e.currency, e.impact, e.title) for e in parsed.entries] == [
        (dt.datetime(2026, 3, 6, 7, 0, tzinfo=UTC), "EUR", "low", "German Factory Orders m/m"),
        (NFP, "USD", "high", "Non-Farm Employment Change")]
    assert parsed.skipped == 2 and any("Holiday" in w for w in parsed.warnings)


def test_forexfactory_xml_in_the_sources_time_zone():
    parsed = parse_calendar(FF_XML, timezone="America/New_York")
    assert [(e.ts, e.currency) for e in parsed.entries] == [
        (dt.datetime(2026, 3, 5, 13, 45, tzinfo=UTC), "EUR"), (NFP, "USD")]
    assert parsed.skipped == 1 and "All Day" in parsed.warnings[0]


def test_csv_and_ics():
    csv_entries = parse_calendar(FF_CSV, timezone="America/New_York")
    assert [e.ts for e in csv_entries.entries] == [NFP, dt.datetime(2026, 3, 11, 12, 30, tzinfo=UTC)]  # EDT on 3-11
    assert csv_entries.skipped == 1
    ics = parse_calendar(ICS)
    assert [(e.ts, e.currency, e.impact, e.title) for e in ics.entries] == [
        (NFP, "USD", "high", "Non-Farm Employment Change"),
        (dt.datetime(2026, 3, 19, 12, 0, tzinfo=UTC), "GBP", "high", "Official Bank Rate")]
    assert ics.skipped == 1  # the all-day holiday


def test_the_same_entry_from_every_format_has_the_same_id():
    ids = {parse_calendar(data, timezone="America/New_York").entries[-1 if data is FF_XML else 0].event_id
           for data in (FF_XML, FF_CSV)}
    nfp_ids = {e.event_id for data in (FF_JSON, FF_XML, FF_CSV, ICS)
               for e in parse_calendar(data, timezone="America/New_York").entries if e.ts == NFP}
    assert len(nfp_ids) == 1 and len(ids) == 1


def test_what_is_no_calendar_is_refused():
    with pytest.raises(CalendarError, match="JSON"):
        parse_calendar(b"[not json", fmt="json")
    with pytest.raises(CalendarError, match="header"):
        parse_calendar(b"a,b\n1,2\n", fmt="csv")
    with pytest.raises(CalendarError, match="time zone"):
        parse_calendar(FF_CSV, timezone="Mars/Olympus")


NEWS_PACK = """
id: news-test
version: 1
currency: USD
initial_balance: "100000"
timezone: UTC
day_start: "00:00"
phases:
  - name: phase-1
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}, base: balance, on_breach: fail, comparator: below}
      - {kind: news, before_s: 120, after_s: 120, impact: [high], action: violation}
"""


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    with factory.begin() as s:
        ensure_firm(s, firm_id="acme")
        version = add_pack(s, firm_id="acme", pack=parse_pack(NEWS_PACK, source="test"), activate=True)
        create_account(s, firm_id="acme", external_id="A1", pack_version_id=version.id, platform="mt5")
    yield factory
    engine.dispose()


def test_imported_news_feeds_the_news_rule(db):
    with db.begin() as s:
        report = import_calendar(s, firm_id="acme", data=FF_XML, timezone="America/New_York", origin="ff.xml",
                                 actor="test")
    assert (report.entries, report.accepted, report.skipped) == (2, 2, 1)
    with db.begin() as s:
        again = import_calendar(s, firm_id="acme", data=FF_JSON, origin="ff.json", actor="test")
    assert again.duplicates == 1  # NFP again, same id
    trades = [{"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-06T13:29:30Z", "position": "p1",
               "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08"}]
    with db.begin() as s:
        ingest(s, firm_id="acme", source="mt5", body="\n".join(json.dumps(t) for t in trades).encode())
    EvaluationWorker(db).run_until_idle()
    with db() as s:
        decision = s.execute(select(m.Decision.kind, m.Decision.rule, m.Decision.message)).one()
    assert decision.kind == "violation" and decision.rule == "news" and "Non-Farm" in decision.message
    with db() as s:
        soon = upcoming(s, firm_id="acme", since=dt.datetime(2026, 3, 1, tzinfo=UTC))
    assert [e["title"] for e in soon] == ["ECB Press Conference", "Non-Farm Employment Change"]


class _Feed(BaseHTTPRequestHandler):
    body = FF_JSON
    status = 200
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body if self.status == 200 else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def feed():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Feed.status, _Feed.hits = 200, 0
    yield f"http://127.0.0.1:{server.server_address[1]}/ff_calendar_thisweek.json"
    server.shutdown()


def test_a_source_is_fetched_on_its_schedule_and_a_failure_is_kept_not_raised(db, feed):
    with db.begin() as s:
        add_source(s, firm_id="acme", name="ff", location=feed, interval_s=600, actor="test")
        with pytest.raises(Invalid, match="60 seconds"):
            add_source(s, firm_id="acme", name="fast", location=feed, interval_s=5, actor="test")
    t0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert run_due(db, now=t0) == [("ff", "2 entries, 2 new, 2 skipped")]
    assert run_due(db, now=t0 + dt.timedelta(seconds=300)) == []  # not due
    _Feed.status = 503
    [(name, outcome)] = run_due(db, now=t0 + dt.timedelta(seconds=601))
    assert outcome.startswith("failed") and "HTTP 503" in outcome
    from propcrm.features.calendar.service import list_sources

    with db() as s:
        [row] = list_sources(s, firm_id="acme")
    assert "HTTP 503" in row["last_error"] and row["last_count"] == 2 and _Feed.hits == 2


def test_propcrm_calendar_import(db_url, db, tmp_path):
    from propcrm.cli import app

    path = tmp_path / "calendar.ics"
    path.write_bytes(ICS)
    result = CliRunner().invoke(app, ["calendar", "import", str(path), "--firm", "acme", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "2 calendar entries: 2 new" in result.output and "left out: VEVENT 3" in result.output
