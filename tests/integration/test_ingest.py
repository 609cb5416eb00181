"""Ingestion on both backends: per-line answers, idempotency, quarantine and re-submission, bulk size."""

from __future__ import annotations

import datetime as dt
import json
import time

import msgspec
import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.events import DECODER
from propcrm.domain.rulepack import load_pack
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.ingest import IngestError, ingest, resubmit

UTC = dt.timezone.utc
FIRM = "f1"


def line(**fields) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def equity(event_id: str, account: str = "A1", ts: str = "2026-03-02T14:05:00Z", **extra) -> bytes:
    fields = {"equity": "99820.00", "balance": "100000.00", **extra}
    return line(id=event_id, type="equity", account=account, ts=ts, **fields)


@pytest.fixture
def db(db_url):
    """A session factory on a firm with pack two-step-100k and accounts A1, A2 (ids in ``db.accounts``)."""
    engine = make_engine(db_url)
    factory = sessions(engine)
    with factory.begin() as s:
        ensure_firm(s, firm_id=FIRM)
        ensure_firm(s, firm_id="f2")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        factory.pack_version_id = version.id
        factory.accounts = {
            name: create_account(s, firm_id=FIRM, external_id=name, pack_version_id=version.id).id
            for name in ("A1", "A2")
        }
    yield factory
    engine.dispose()


def run(db, body: bytes, *, source: str = "mt5", firm: str = FIRM, content_type: str | None = None):
    with db.begin() as s:
        return ingest(s, firm_id=firm, source=source, body=body, content_type=content_type)


def stored(db, firm: str = FIRM) -> list[m.RawEvent]:
    with db() as s:
        return list(s.scalars(select(m.RawEvent).where(m.RawEvent.firm_id == firm).order_by(m.RawEvent.seq)))


def quarantined(db, firm: str = FIRM) -> list[m.Quarantine]:
    with db() as s:
        return list(s.scalars(select(m.Quarantine).where(m.Quarantine.firm_id == firm).order_by(m.Quarantine.id)))


def test_every_line_gets_its_answer_and_accepted_events_are_stored_as_sent(db):
    opened = line(id="d-1", type="trade_opened", account="A1", ts="2026-03-02T15:03:11+01:00", position="p1",
                  symbol="EURUSD", side="buy", lots="1", price="1.08512", platform_note={"ticket": 991})
    body = b"\n".join([
        opened,                                                                   # 1 accepted
        line(id="d-2", type="trade_opened", account="A1", ts="2026-03-02T14:03:11Z"),  # 2 missing fields
        equity("e-1", equity="lots of money"),                                    # 3 wrong type
        equity("e-2", account="GHOST"),                                           # 4 unknown account
        b"",                                                                      # 5 blank: no answer
        line(id="px-1", type="price", ts="2026-03-02T14:03:12Z", symbol="EURUSD", bid="1.1", ask="1.2"),  # 6
        line(id="n-1", type="news", ts="2026-03-02T14:30:00Z", title="NFP", currency="USD", impact="high"),  # 7
        line(id="c-1", type="clock", ts="2026-03-02T23:59:59Z"),                  # 8 accepted, no account
        equity("d-1", account="A2"),                                              # 9 duplicate within request
        b"{not json",                                                             # 10 malformed
        line(id="s-1", type="session", account="A2", ts="2026-03-02T14:00:00Z", ip="10.0.0.1", device="pc"),  # 11
    ]) + b"\n"
    report = run(db, body)

    status = {o.line: o.status for o in report.lines}
    assert status == {1: "accepted", 2: "rejected", 3: "rejected", 4: "rejected", 6: "accepted",
                      7: "accepted", 8: "accepted", 9: "duplicate", 10: "rejected", 11: "accepted"}
    assert (report.accepted, report.duplicates, report.rejected) == (5, 1, 4)
    reasons = {o.line: o.reason for o in report.rejections()}
    assert reasons[2] == "missing required field `position`"
    assert "`equity`" in reasons[3]
    assert reasons[4] == f"no account 'GHOST' in firm {FIRM}"
    assert reasons[10].startswith("not valid JSON")
    assert report.lines[-1].id == "s-1" and report.lines[0].id == "d-1"

    rows = stored(db)
    assert [r.event_id for r in rows] == ["d-1", "px-1", "n-1", "c-1", "s-1"]  # line order = seq order
    by_id = {r.event_id: r for r in rows}
    assert by_id["d-1"].account_id == db.accounts["A1"] and by_id["s-1"].account_id == db.accounts["A2"]
    assert by_id["px-1"].account_id is None and by_id["n-1"].account_id is None and by_id["c-1"].account_id is None
    assert by_id["d-1"].body == opened  # the original bytes, unknown fields included
    assert json.loads(by_id["d-1"].body)["platform_note"] == {"ticket": 991}
    assert by_id["d-1"].ts == dt.datetime(2026, 3, 2, 14, 3, 11, tzinfo=UTC)
    assert by_id["d-1"].type == "trade_opened" and by_id["c-1"].type == "clock"
    # account events wait for the worker; firm-wide ones (price, news, clock) are simply stored
    assert {r.event_id: r.status for r in rows} == {
        "d-1": "pending", "px-1": "stored", "n-1": "stored", "c-1": "stored", "s-1": "pending"}
    assert {r.source for r in rows} == {"mt5"}
    assert all(r.received_at.tzinfo is not None for r in rows)
    for r in rows:
        DECODER.decode(r.body)

    held = quarantined(db)
    assert [(q.line, q.reason) for q in held] == sorted(reasons.items())
    assert [q.id for q in held] == [o.quarantine_id for o in report.rejections()]
    assert held[2].body == equity("e-2", account="GHOST") and held[3].body == b"{not json"
    assert {q.source for q in held} == {"mt5"} and all(q.resolved_at is None for q in held)


def test_duplicates_across_requests_are_not_stored_again_but_ids_are_per_source_and_per_firm(db):
    body = b"\n".join(equity(f"e-{i}") for i in range(5))
    first = run(db, body)
    assert first.accepted == 5
    again = run(db, body + b"\n" + equity("e-5"))
    assert [o.status for o in again.lines] == ["duplicate"] * 5 + ["accepted"]
    assert [o.id for o in again.lines] == [f"e-{i}" for i in range(6)]
    assert len(stored(db)) == 6
    other_source = run(db, body, source="ctrader")
    assert other_source.accepted == 5
    assert len(stored(db)) == 11
    # another firm has no account A1: its lines are quarantined there, never matched against f1's
    other_firm = run(db, body, firm="f2")
    assert other_firm.rejected == 5 and "in firm f2" in other_firm.lines[0].reason
    assert stored(db, "f2") == [] and len(quarantined(db, "f2")) == 5


def test_a_line_repeated_inside_one_request_counts_once(db):
    report = run(db, b"\n".join([equity("x"), equity("x"), equity("y"), equity("x", account="A2")]))
    assert [o.status for o in report.lines] == ["accepted", "duplicate", "accepted", "duplicate"]
    rows = stored(db)
    assert [r.event_id for r in rows] == ["x", "y"] and rows[0].account_id == db.accounts["A1"]


def test_quarantined_lines_are_resubmitted_once_their_account_exists(db):
    report = run(db, b"\n".join([equity("g-1", account="NEW"), equity("g-2", account="NEW"), b"[1, 2]",
                                 equity("ok-1")]))
    assert [o.status for o in report.lines] == ["rejected", "rejected", "rejected", "accepted"]
    ids = [o.quarantine_id for o in report.rejections()]

    still = None
    with db.begin() as s:
        still = resubmit(s, firm_id=FIRM, quarantine_ids=ids[:2])
    assert [o.status for o in still.lines] == ["rejected", "rejected"]
    assert [o.quarantine_id for o in still.lines] == ids[:2]
    assert all(q.resolved_at is None for q in quarantined(db))

    with db.begin() as s:
        create_account(s, firm_id=FIRM, external_id="NEW", pack_version_id=db.pack_version_id)
    with db.begin() as s:
        done = resubmit(s, firm_id=FIRM, quarantine_ids=ids)
    assert [(o.line, o.status, o.id) for o in done.lines] == [(1, "accepted", "g-1"), (2, "accepted", "g-2"),
                                                              (3, "rejected", None)]
    assert done.lines[2].quarantine_id == ids[2] and "Expected `object`" in done.lines[2].reason
    held = {q.id: q for q in quarantined(db)}
    assert held[ids[0]].resolved_at is not None and held[ids[1]].resolved_at is not None
    assert held[ids[2]].resolved_at is None
    with db() as s:
        new_id = s.scalars(select(m.Account.id).where(m.Account.external_id == "NEW")).one()
    assert [r.account_id for r in stored(db) if r.event_id.startswith("g-")] == [new_id, new_id]
    assert [r.source for r in stored(db)] == ["mt5"] * 3

    with db.begin() as s:  # a second re-submission stores nothing twice
        twice = resubmit(s, firm_id=FIRM, quarantine_ids=ids[:2])
    assert [o.status for o in twice.lines] == ["duplicate", "duplicate"]
    assert len(stored(db)) == 3

    with db.begin() as s, pytest.raises(IngestError, match="no quarantine entry 999999"):
        resubmit(s, firm_id=FIRM, quarantine_ids=[ids[0], 999999])
    with db.begin() as s, pytest.raises(IngestError, match="in firm f2"):
        resubmit(s, firm_id="f2", quarantine_ids=ids[:1])  # one firm never touches another's quarantine


def test_ten_thousand_events_in_one_request(db):
    body = b"\n".join(equity(f"bulk-{i}", account="A1" if i % 2 else "A2") for i in range(10_000)) + b"\n"
    started = time.perf_counter()
    report = run(db, body)
    seconds = time.perf_counter() - started
    assert report.accepted == 10_000 and report.rejected == 0
    print(f"\ningested 10,000 events in {seconds * 1000:.0f} ms ({10_000 / seconds:,.0f} events/s)")
    with db() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent)) == 10_000
        ids = list(s.scalars(select(m.RawEvent.event_id).order_by(m.RawEvent.seq)))
    assert ids == [f"bulk-{i}" for i in range(10_000)]
    again = run(db, body)
    assert again.duplicates == 10_000 and again.accepted == 0


def test_a_json_array_is_answered_per_element(db):
    elements = [
        {"id": "a-1", "type": "equity", "account": "A1", "ts": "2026-03-02T14:05:00Z", "equity": "1", "balance": "1",
         "nested": {"kept": [1, 2, 3]}},
        42,
        {"id": "a-2", "type": "clock", "ts": "2026-03-02T14:06:00Z"},
        {"id": "a-3", "type": "equity", "account": "ZZ", "ts": "2026-03-02T14:05:00Z", "equity": "1", "balance": "1"},
    ]
    body = json.dumps(elements, indent=2).encode()  # pretty-printed: elements span many lines
    report = run(db, body, content_type="application/json")
    assert [(o.line, o.status) for o in report.lines] == [(1, "accepted"), (2, "rejected"), (3, "accepted"),
                                                          (4, "rejected")]
    rows = stored(db)
    assert json.loads(rows[0].body) == elements[0] and b"\n" in rows[0].body
    assert quarantined(db)[0].body == b"42" and quarantined(db)[0].line == 2


def test_a_broken_array_is_kept_whole_or_judged_line_by_line(db):
    broken = b'[{"id": "b-1", "type": "clock", "ts": "2026-03-02T14:06:00Z"},'
    whole = run(db, broken, content_type="application/json")
    assert [(o.line, o.status) for o in whole.lines] == [(1, "rejected")]
    assert "not a valid JSON array" in whole.lines[0].reason and quarantined(db)[0].body == broken
    as_lines = run(db, broken + b"\n" + line(id="b-2", type="clock", ts="2026-03-02T14:06:00Z"))
    assert [(o.line, o.status) for o in as_lines.lines] == [(1, "rejected"), (2, "accepted")]


def test_lines_the_database_could_not_hold_are_rejected_not_crashed_on(db):
    body = b"\r\n".join([
        line(id="nul\u0000id", type="clock", ts="2026-03-02T14:06:00Z"),
        equity("nul-account", account="A\u00001"),
        line(id="far", type="clock", ts="0001-01-01T00:00:00+05:00"),
        b'{"id":"\xff\xfe","type":"clock","ts":"2026-03-02T14:06:00Z"}',
        b'{"id":"sur\\ud800","type":"clock","ts":"2026-03-02T14:06:00Z"}',
        line(id="x" * 201, type="clock", ts="2026-03-02T14:06:00Z"),
        equity("sql", account="'; DROP TABLE raw_events; --"),
        b"[" * 100_000,
        line(id="fine", type="clock", ts="2026-03-02T14:06:00Z", odd="\u0000\ud7ff"),
    ])
    report = run(db, body)
    assert [o.status for o in report.lines] == ["rejected"] * 8 + ["accepted"]
    reasons = [o.reason for o in report.rejections()]
    assert "NUL" in reasons[0] and "`account`" in reasons[1] and "`ts`" in reasons[2]
    assert "UTF-8" in reasons[3] and "`id`" in reasons[5]
    assert reasons[6] == f"no account ''; DROP TABLE raw_events; --' in firm {FIRM}"
    assert all("\x00" not in r for r in reasons)
    assert [r.event_id for r in stored(db)] == ["fine"]
    assert len(quarantined(db)) == 8


def test_the_report_serialises_to_the_api_answer(db):
    report = run(db, equity("r-1") + b"\n" + equity("r-2", account="NOPE"))
    answer = msgspec.json.decode(report.to_json())
    assert answer == {
        "accepted": 1, "duplicates": 0, "rejected": 1,
        "lines": [{"line": 1, "status": "accepted", "id": "r-1"},
                  {"line": 2, "status": "rejected", "id": "r-2", "reason": f"no account 'NOPE' in firm {FIRM}",
                   "quarantine_id": report.lines[1].quarantine_id}],
    }
    with db.begin() as s, pytest.raises(IngestError, match="source"):
        ingest(s, firm_id=FIRM, source="", body=b"")
    assert run(db, b"").lines == [] and run(db, b"\n \n").lines == []


def test_sqlite_rows_hold_times_exactly_as_the_orm_writes_them():
    """The SQLite fast path writes times itself; they must be the very text UtcDateTime writes."""
    from sqlalchemy.dialects.sqlite import dialect

    from propcrm.services.ingest import _sqlite_time

    sqlite = dialect()
    orm_writes = m.RawEvent.__table__.c.ts.type.dialect_impl(sqlite).bind_processor(sqlite)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    for moment in (dt.datetime(2026, 3, 2, 14, 5, tzinfo=UTC), dt.datetime(2026, 3, 2, 14, 5, 0, 1, tzinfo=plus_two),
                   dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
        assert _sqlite_time(moment) == orm_writes(moment)


# ------------------------------------------------------------------ bounds, the server's clock, scoping
def test_money_prices_and_lots_out_of_bounds_are_rejected_naming_line_field_and_limit(db):
    closed = line(id="c-big", type="trade_closed", account="A1", ts="2026-03-02T14:05:00Z", position="p1",
                  lots="1", price="1.1", profit="1e30")
    body = b"\n".join([
        equity("b-1", equity="100000000000000000"),
        equity("b-2", equity="-1e17"),
        b'{"id":"b-3","type":"equity","account":"A1","ts":"2026-03-02T14:05:00Z","equity":1e999999,"balance":"1"}',
        equity("b-4", balance="9" * 200_000),
        closed,
        line(id="o-big", type="trade_opened", account="A1", ts="2026-03-02T14:05:00Z", position="p1",
             symbol="EURUSD", side="buy", lots="1e1000000", price="1.1"),
        equity("fine"),
    ])
    report = run(db, body)
    assert [o.status for o in report.lines] == ["rejected"] * 6 + ["accepted"]
    reasons = [(o.line, o.reason) for o in report.rejections()]
    fields = ["equity", "equity", "equity", "balance", "profit", "lots"]
    for (number, reason), field, expected_line in zip(reasons, fields, range(1, 7)):
        assert number == expected_line
        assert reason.startswith(f"`{field}`: must be less than 10^12 in magnitude"), reason
        assert len(reason) < 200
    assert [r.event_id for r in stored(db)] == ["fine"]
    assert len(quarantined(db)) == 6


def test_events_from_the_future_are_refused_naming_the_field(db):
    now = dt.datetime.now(UTC)
    soon = (now + dt.timedelta(minutes=2)).isoformat()
    later = (now + dt.timedelta(minutes=30)).isoformat()
    body = b"\n".join([
        line(id="k-2099", type="clock", ts="2099-01-01T00:00:00Z"),
        line(id="s-2099", type="session", account="A1", ts="2099-01-01T00:00:00Z", ip="10.0.0.1", device="pc"),
        line(id="o-late", type="trade_opened", account="A1", ts="2026-03-02T14:05:00Z", position="p1",
             symbol="EURUSD", side="buy", lots="1", price="1.1", order_ts="2099-01-01T00:00:00Z"),
        equity("e-later", ts=later),
        equity("e-soon", ts=soon),  # a platform clock a little fast: accepted
        line(id="n-next-week", type="news", ts=(now + dt.timedelta(days=7)).isoformat(), title="NFP",
             currency="USD", impact="high"),  # a calendar is published in advance
    ])
    report = run(db, body)
    assert [o.status for o in report.lines] == ["rejected"] * 4 + ["accepted"] * 2, report.lines
    reasons = [o.reason for o in report.rejections()]
    assert reasons[0].startswith("`ts`: 2099-01-01T00:00:00+00:00 is ahead of the server's clock")
    assert "more than 5 minutes" in reasons[0] and "PROPCRM_MAX_EVENT_AHEAD_MINUTES" in reasons[0]
    assert reasons[1].startswith("`ts`:") and reasons[2].startswith("`order_ts`:") and reasons[3].startswith("`ts`:")
    assert [q.reason for q in quarantined(db)] == reasons


def test_how_far_ahead_is_configured_in_minutes(db, monkeypatch):
    from propcrm.adapters.settings import SettingsError, forget

    ahead = (dt.datetime.now(UTC) + dt.timedelta(minutes=30)).isoformat()
    monkeypatch.setenv("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "60")
    assert run(db, line(id="k-1", type="clock", ts=ahead)).accepted == 1
    monkeypatch.setenv("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "0.5")
    forget()  # the process's settings are read once: another value is another start
    refused = run(db, line(id="k-2", type="clock", ts=ahead))
    assert refused.rejected == 1 and "more than 0.5 minutes" in refused.lines[0].reason
    monkeypatch.setenv("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "lots")
    forget()  # a bad value: the settings are refused naming it (a process does not start; tests/unit/test_settings.py)
    with pytest.raises(SettingsError, match="PROPCRM_MAX_EVENT_AHEAD_MINUTES must be a number of minutes"):
        run(db, line(id="k-3", type="clock", ts=ahead))


def test_a_platform_scope_rejects_lines_for_other_platforms_accounts(db):
    with db.begin() as s:
        create_account(s, firm_id=FIRM, external_id="M1", pack_version_id=db.pack_version_id, platform="mt5")
    body = b"\n".join([equity("e-1", account="M1"), equity("e-2", account="A1"),
                       line(id="k-1", type="clock", ts="2026-03-02T14:06:00Z"),
                       line(id="k-2", type="clock", account="A1", ts="2026-03-02T14:06:00Z")])
    with db.begin() as s:
        report = ingest(s, firm_id=FIRM, source="mt5", body=body, only_platform="mt5")
    assert [o.status for o in report.lines] == ["accepted", "rejected", "accepted", "rejected"]
    assert report.lines[1].reason == "account 'A1' is on platform 'demo': this key writes only to accounts on 'mt5'"
    assert [r.event_id for r in stored(db)] == ["e-1", "k-1"]


def test_an_id_set_aside_by_evaluation_is_free_for_a_corrected_event(db):
    assert run(db, equity("e-1", equity="90000")).accepted == 1
    with db.begin() as s:  # what the worker does with an event it cannot apply (out of order, …)
        row = s.scalars(select(m.RawEvent).where(m.RawEvent.event_id == "e-1")).one()
        row.status, row.reason = "rejected", "out_of_order: before the last event applied to A1"
        s.add(m.Quarantine(firm_id=FIRM, source="mt5", line=None, body=row.body, reason=row.reason))
    again = run(db, equity("e-1", equity="91000"))
    assert [o.status for o in again.lines] == ["accepted"]
    rows = stored(db)
    assert len(rows) == 1 and rows[0].status == "pending" and json.loads(rows[0].body)["equity"] == "91000"
    held = quarantined(db)
    assert len(held) == 1 and held[0].resolved_at is not None, "the set-aside line is kept, resolved"
    assert run(db, equity("e-1", equity="92000")).lines[0].status == "duplicate", "a stored id is still spent"
    # an id rejected before its line was quarantined: the replaced line is recorded, resolved
    with db.begin() as s:
        row = s.scalars(select(m.RawEvent).where(m.RawEvent.event_id == "e-1")).one()
        row.status, row.reason = "rejected", "out of order"
    assert run(db, equity("e-1", equity="93000")).accepted == 1
    held = quarantined(db)
    assert len(held) == 2 and held[1].resolved_at is not None and "out of order" in held[1].reason
    assert json.loads(held[1].body)["equity"] == "91000"
