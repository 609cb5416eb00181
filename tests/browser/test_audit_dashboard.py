"""The firm dashboard and the audit log in a real browser: the charts draw (Chart.js, no console errors)
with the firm's breaches in them, an audit entry expands to its before/after, "Verify chain" says the
chain is intact, and the pages are only for their roles."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re

UTC = dt.timezone.utc
_ids = itertools.count(1)


def breach(site, account: dict, equity: str, days_ago: int = 0) -> None:
    """An equity report more than 5 % under the start of the day: the worker breaches the account."""
    when = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=days_ago)
    site.post_events([{"id": f"ad-{next(_ids)}-{account['external_id']}", "type": "equity",
                       "account": account["external_id"], "ts": when.isoformat().replace("+00:00", "Z"),
                       "equity": equity, "balance": "100000.00"}])
    site.wait_status(account["id"], "breached")


def test_admin_sees_the_dashboard_charts_with_todays_breaches(site, page_as, shot):
    for equity, days_ago in (("89500.00", 0), ("88000.00", 0), ("94100.00", 3), ("93000.00", 9)):
        breach(site, site.new_account(trader="t2"), equity, days_ago)
    page = page_as("admin")
    page.console_errors.clear()  # from here on: this page's own (scripts, CSP, resources)
    page.goto("/office/dashboard")
    assert page.get_by_role("heading", name="Firm dashboard").is_visible()
    page.wait_for_function("() => typeof Chart !== 'undefined' && document.querySelectorAll('canvas').length > 0 && "
                           "Array.from(document.querySelectorAll('canvas')).every(c => Chart.getChart(c))")
    assert page.locator("canvas").count() == 5
    # the breaches chart and its table agree, and hold at least the two breaches sent above
    drawn = page.evaluate("() => Chart.getChart(document.getElementById('chart-breaches')).data.datasets"
                          ".reduce((s, d) => s + d.data.reduce((a, b) => a + b, 0), 0)")
    table = page.get_by_test_id("breaches")
    counts = [int(cell) for cell in table.locator("td.num").all_text_contents()]
    assert drawn == sum(counts) >= 2
    today = page.evaluate("() => { const c = Chart.getChart(document.getElementById('chart-decisions'));"
                          " const d = c.data.datasets.find(d => d.label === 'Breaches'); return d.data[d.data.length - 1]; }")
    assert today >= 2
    assert re.fullmatch(r"[\d,]+\.\d\d", page.get_by_test_id("liability").inner_text())
    page.get_by_text("Data table").nth(2).click()  # breaches by rule, as text
    assert table.is_visible()
    assert page.console_errors == []
    shot(page, "dashboard")


def test_admin_searches_the_audit_log_expands_an_entry_and_verifies_the_chain(site, page_as, shot):
    page = page_as("admin")
    page.console_errors.clear()
    page.goto("/office/audit")
    newest = page.get_by_test_id("audit-entries").locator("tbody tr")
    assert newest.count() >= 5
    change = newest.filter(has_text="account.status").first  # from the breaches of the dashboard's test, if any
    (change if change.count() else newest.first).locator("summary").click()
    shot(page, "audit-log")
    page.get_by_label("Action starts with").fill("user.login")
    page.get_by_role("button", name="Search").click()
    rows = page.get_by_test_id("audit-entries").locator("tbody tr")
    assert rows.count() >= 1
    first = rows.first
    assert first.locator("code").first.inner_text() == "user.login"
    first.locator("summary").click()
    assert first.locator("pre").last.is_visible()
    # the newest login is this page's own: the admin, with the e-mail and role the entry recorded
    # the person by e-mail (issue 16: not "user:1:…"); the stored actor stays on hover
    assert first.locator("td.actor").inner_text().strip() == "admin@acme.example"
    assert re.fullmatch(r"user:\d+:admin@acme\.example", first.locator("td.actor").get_attribute("title"))
    recorded = json.loads(first.locator("pre").last.inner_text())
    assert recorded == {"email": "admin@acme.example", "role": "admin", "address": recorded["address"]}
    assert recorded["address"]  # the address the login came from (the throttle and the investigation use it)
    assert re.fullmatch(r"[0-9a-f]{64}", first.locator("dd code").first.inner_text())
    page.get_by_role("button", name="Verify chain").click()
    page.wait_for_url("**/office/audit/verify*")
    result = page.get_by_test_id("verify-result")
    assert "The chain is intact" in result.inner_text()
    assert int(page.get_by_test_id("verify-entries").inner_text()) > 5
    assert re.fullmatch(r"[0-9a-f]{64}", page.get_by_test_id("verify-head").inner_text())
    assert page.console_errors == []
    shot(page, "audit-verify")


def test_finance_gets_the_dashboard_not_the_audit_log_and_both_pages_fit_a_phone(page_as):
    page = page_as("finance", mobile=True)
    page.goto("/office/dashboard")
    assert page.get_by_test_id("liability").is_visible()
    page.wait_for_function("() => typeof Chart !== 'undefined' && "
                           "Array.from(document.querySelectorAll('canvas')).every(c => Chart.getChart(c))")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    response = page.goto("/office/audit")
    assert response.status == 403
    risk = page_as("risk", mobile=True)  # risk's audit log fits the phone too (the wide table scrolls in its box)
    risk.goto("/office/audit")
    assert risk.get_by_test_id("audit-entries").is_visible()
    assert risk.evaluate("() => document.documentElement.scrollWidth") <= 390
    support = page_as("support")
    assert support.goto("/office/dashboard").status == 403
