"""Back office: the MT5 report upload on the account page, the platforms page and the calendar page —
by role, with CSRF, and never a secret on a page."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from support.mt5_reports import html_report
from support.web import browse, csrf_for

from propcrm.adapters.db import models as m
from propcrm.adapters.platforms.secrets import new_key
from propcrm.features.calendar.service import import_calendar
from propcrm.features.platforms.connections import add_connection

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def _upload(page, account_id, data=None, *, csrf=True, zone="+02:00"):
    fields = {"server_timezone": zone}
    if csrf:
        fields["csrf"] = csrf_for(page.token)
    files = {"report": ("ReportHistory.html", data if data is not None else html_report(), "text/html")}
    return page.client.post(f"/office/accounts/{account_id}/mt5-report", data=fields, files=files,
                            follow_redirects=False)


def test_risk_imports_a_report_on_the_account_page(world):
    a1 = world.accounts["A1"]
    page = browse(world, "risk")
    assert 'action="/office/accounts/%d/mt5-report"' % a1 in page.get(f"/office/accounts/{a1}").text
    response = _upload(page, a1)
    assert response.status_code == 303
    flash = page.get(f"/office/accounts/{a1}").text.split('class="flash"')[1].split("</p>")[0]
    assert "7 deals → 10 events imported" in flash
    with world.sessions() as s:
        ids = set(s.scalars(select(m.RawEvent.event_id).where(m.RawEvent.account_id == a1)))
    assert {"deal-1001", "deal-1007"} <= ids
    response = _upload(page, a1, b"<html>not a report</html>")
    flash = page.get(f"/office/accounts/{a1}").text.split('class="flash"')[1].split("</p>")[0]
    assert "Not imported" in flash and "Deals" in flash


def test_the_upload_needs_the_role_the_csrf_token_and_the_firm(world):
    a1, b1 = world.accounts["A1"], world.accounts["B1"]
    assert _upload(browse(world, "support"), a1).status_code == 403
    assert _upload(browse(world, "risk"), a1, csrf=False).status_code == 403
    assert _upload(browse(world, "risk"), b1).status_code == 404  # another firm's account


def test_platforms_page_shows_connections_without_their_secrets(world, monkeypatch):
    monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
    with world.sessions.begin() as s:
        add_connection(s, firm_id="fa", name="mt5-live", family_name="mt5-web",
                       settings={"url": "https://mt5.example:443", "manager": "1000"},
                       secrets={"password": "Sup3r#Secret"}, actor="test")
    text = browse(world, "risk").get("/office/platforms").text
    assert "mt5-live" in text and "https://mt5.example:443" in text and "password" in text
    assert "Sup3r#Secret" not in text
    assert browse(world, "finance").get("/office/platforms").status_code == 403
    assert "mt5-live" not in browse(world, "fb:risk").get("/office/platforms").text


def test_the_calendar_page_lists_upcoming_high_impact_entries(world):
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    data = (f'[{{"title": "Non-Farm Employment Change", "country": "USD", "date": "{soon}", "impact": "High"}},'
            f'{{"title": "Retail Sales", "country": "GBP", "date": "{soon}", "impact": "Low"}}]').encode()
    with world.sessions.begin() as s:
        import_calendar(s, firm_id="fa", data=data, origin="test", actor="test")
    text = browse(world, "support").get("/office/calendar").text
    assert "Non-Farm Employment Change" in text and "Retail Sales" not in text
    assert "Retail Sales" in browse(world, "support").get("/office/calendar?impact=all").text
    assert browse(world, "trader").get("/office/calendar").status_code == 403
    assert "Non-Farm" not in browse(world, "fb:risk").get("/office/calendar").text
