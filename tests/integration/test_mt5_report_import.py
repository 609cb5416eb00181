"""Importing the MT5 terminal's trade history report (HTML and Excel) into an account's event log."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from support.mt5_reports import DEALS, html_report, xlsx_report
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.platforms.mt5.report import ReportError, parse_report
from propcrm.adapters.platforms.servertime import ServerClock
from propcrm.domain.rulepack import load_pack
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.errors import Invalid
from propcrm.services.evaluation import EvaluationWorker
from propcrm.features.platforms.reports import import_mt5_report

UTC = dt.timezone.utc
CLOCK = ServerClock("+02:00")


def test_the_deals_become_events_with_their_positions_found():
    parsed = parse_report(html_report(), clock=CLOCK, initial_balance=Decimal("100000"))
    assert (parsed.login, parsed.currency, parsed.deals, parsed.positions) == ("51234567", "USD", 7, 3)
    assert parsed.skipped_initial == Decimal("100000.00")
    by_id = {e.body["id"]: e for e in parsed.events}
    assert by_id["deal-1003"].body["position"] == "5001" and by_id["deal-1003"].body["reason"] == "sl"
    assert [by_id[i].body["position"] for i in ("deal-1004", "deal-1005")] == ["5002", "5002"]  # a partial close
    assert by_id["deal-1003"].body["swap"] == Decimal("-7.00") and by_id["deal-1003"].body["profit"] == Decimal("-500.00")
    assert by_id["deal-1001-fee"].body == {"id": "deal-1001-fee", "type": "balance", "amount": Decimal("-3.50"),
                                           "reason": "fee"}
    assert by_id["deal-1006"].body["price"] == Decimal("2300.00")  # "2 300.00"
    assert by_id["deal-1001"].ts == dt.datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 10:00 server time at UTC+2
    kept = parse_report(html_report(), clock=CLOCK, initial_balance=Decimal("100000"), keep_initial_deposit=True)
    assert kept.events[0].body == {"id": "deal-1000", "type": "balance", "amount": Decimal("100000.00"),
                                   "reason": "deposit"}


def test_excel_gives_the_same_events_as_html():
    html_events = parse_report(html_report(), clock=CLOCK, initial_balance=Decimal("100000")).events
    xlsx_events = parse_report(xlsx_report(), clock=CLOCK, filename="r.xlsx", initial_balance=Decimal("100000")).events
    assert [(e.ts, e.body) for e in html_events] == [(e.ts, e.body) for e in xlsx_events]


def test_what_is_not_a_report_is_refused_and_a_bad_row_is_named():
    with pytest.raises(ReportError, match="no Deals section"):
        parse_report(b"<html><body><table><tr><td>hello</td></tr></table></body></html>", clock=CLOCK)
    with pytest.raises(ReportError, match="Excel"):
        parse_report(b"PK\x03\x04 not really a zip", clock=CLOCK)
    bad = [row[:] for row in DEALS]
    bad[2][11] = "12,3x"
    parsed = parse_report(html_report(deals=bad), clock=CLOCK)
    assert len(parsed.warnings) == 1 and "Profit" in parsed.warnings[0] and "row" in parsed.warnings[0]
    assert "deal-1002" not in {e.body["id"] for e in parsed.events}


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    with factory.begin() as s:
        ensure_firm(s, firm_id="acme")
        version = add_pack(s, firm_id="acme", pack=load_pack("two-step-100k"), activate=True)
        create_account(s, firm_id="acme", external_id="CH-7", pack_version_id=version.id, platform="mt5")
    yield factory
    engine.dispose()


def test_an_imported_history_is_evaluated_like_any_other_and_imports_once(db):
    with db.begin() as s:
        report = import_mt5_report(s, firm_id="acme", account="CH-7", data=html_report(), filename="history.html",
                                   server_timezone="+02:00", actor="test")
    assert (report.accepted, report.duplicates, report.rejected, report.source) == (10, 0, 0, "mt5-report")
    EvaluationWorker(db).run_until_idle()
    with db() as s:
        breach = s.execute(select(m.Decision.rule, m.Decision.ts, m.Decision.event_id)
                           .where(m.Decision.kind == "breach")).one()
        status = s.scalar(select(m.Account.status).where(m.Account.external_id == "CH-7"))
    assert breach.rule == "daily_loss" and breach.event_id == "deal-1007" and status == "breached"
    assert breach.ts == dt.datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    with db.begin() as s:  # the same history again, as Excel: nothing new
        again = import_mt5_report(s, firm_id="acme", account="CH-7", data=xlsx_report(), filename="history.xlsx",
                                  server_timezone="+02:00", actor="test")
    assert (again.accepted, again.duplicates) == (0, 10)
    with db() as s:
        entry = s.scalar(select(m.AuditEntry.after).where(m.AuditEntry.action == "platform.report_import").limit(1))
    assert entry["deals"] == 7 and entry["accepted"] == 10


def test_the_import_needs_the_server_time_zone_and_the_right_login(db):
    with db.begin() as s, pytest.raises(Invalid, match="time zone"):
        import_mt5_report(s, firm_id="acme", account="CH-7", data=html_report(), actor="test")
    with db.begin() as s:
        account = s.scalar(select(m.Account).where(m.Account.external_id == "CH-7"))
        account.login = "777"
    with db.begin() as s, pytest.raises(Invalid, match="login 51234567, but account CH-7 is login 777"):
        import_mt5_report(s, firm_id="acme", account="CH-7", data=html_report(), server_timezone="UTC", actor="test")


def test_propcrm_import_mt5_report(db_url, db, tmp_path):
    from propcrm.cli import app

    path = tmp_path / "ReportHistory-51234567.html"
    path.write_bytes(html_report())
    result = CliRunner().invoke(app, ["import", "mt5-report", str(path), "--account", "CH-7", "--server-timezone",
                                      "Europe/Athens", "--firm", "acme", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "7 deals → 10 events" in result.output and "10 accepted" in result.output
    assert "initial balance: not ingested" in result.output
    result = CliRunner().invoke(app, ["import", "mt5-report", str(tmp_path / "missing.html"), "--account", "CH-7",
                                      "--database-url", db_url])
    assert result.exit_code == 2 and "no such file" in result.output
