"""The accounts pages in a real browser against the real server: a breach arrives live, an override works
through the form, the account page draws its chart, the table scrolls on a phone."""

from __future__ import annotations

import itertools
import time
import re

from playwright.sync_api import expect

_ids = itertools.count(1)


def _ts(day: int, hour: int, minute: int = 0) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def _events(external_id: str, equity: str, *, day: int = 2) -> list[dict]:
    n = next(_ids)
    return [
        {"id": f"bt-{n}-o", "type": "trade_opened", "account": external_id, "ts": _ts(day, 9), "position": f"p{n}",
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
        {"id": f"bt-{n}-e1", "type": "equity", "account": external_id, "ts": _ts(day, 10), "equity": "99200.00",
         "balance": "100000.00"},
        {"id": f"bt-{n}-e2", "type": "equity", "account": external_id, "ts": _ts(day, 11), "equity": "100450.00",
         "balance": "100000.00"},
        {"id": f"bt-{n}-e3", "type": "equity", "account": external_id, "ts": _ts(day, 12), "equity": equity,
         "balance": "100000.00"},
    ]


def _watch(page):
    """Console errors and failed requests from here on (the login page's favicon 404 is not ours)."""
    page.console_errors.clear()
    page.failed = []
    page.on("response", lambda r: r.status >= 400 and "favicon" not in r.url and page.failed.append(f"{r.status} {r.url}"))


def _problems(page) -> list[str]:
    return [e for e in page.console_errors if not e.startswith("Failed to load resource")] + page.failed


def test_a_new_breach_appears_on_the_open_accounts_page_without_a_reload(site, page_as, shot):
    account = site.new_account(trader="t2")
    page = page_as("risk")
    _watch(page)
    page.goto("/office/accounts?limit=200")
    expect(page.locator("#live-state")).to_have_text("Live updates: on")
    page.evaluate("window.__sameDocument = true")
    row = page.locator(f'tr[data-account-id="{account["id"]}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("active")

    site.post_events(_events(account["external_id"], "94000.00"))
    site.wait_status(account["id"], "breached")

    expect(row.locator('[data-field="status"]')).to_have_text("breached", timeout=10_000)
    expect(row.locator('[data-field="equity"]')).to_have_text("94,000.00")
    expect(row.locator('[data-field="status"]')).to_have_class(re.compile(r"\bbreached\b"))
    toast = page.locator("#live-toasts .toast", has_text=account["external_id"])
    expect(toast.first).to_be_visible()
    expect(toast.first.get_by_role("link", name="Open account")).to_have_attribute(
        "href", f"/office/accounts/{account['id']}")
    expect(page.locator("#live-announce")).to_contain_text(f"{account['external_id']} is now breached")
    assert page.evaluate("window.__sameDocument") is True  # no navigation happened
    assert _problems(page) == []
    shot(page, "accounts-list", full_page=False)


def test_an_override_through_the_account_page_clears_the_breach_and_the_chart_renders(site, page_as, shot):
    account = site.new_account(trader="t1")
    site.post_events(_events(account["external_id"], "94000.00", day=3))
    site.wait_status(account["id"], "breached")

    page = page_as("risk")
    _watch(page)
    page.goto(f"/office/accounts/{account['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(account["external_id"])
    canvas = page.locator("canvas#account-chart")
    expect(canvas).to_be_visible()
    expect(page.locator("#chart-note")).to_contain_text("Showing 4 of 4 points")
    assert page.evaluate("!!(window.Chart && Chart.getChart(document.getElementById('account-chart')))")
    page.locator("#chart-data summary").click()
    expect(page.locator("#chart-data tbody tr")).to_have_count(4)
    expect(page.locator("#decisions")).to_contain_text("fell below the daily floor")
    shot(page, "account-page")

    page.get_by_label("Reason").first.fill("Price feed spike confirmed by the platform")
    page.get_by_role("button", name="Clear breach").click()
    expect(page.locator(".flash")).to_contain_text("Breach cleared")
    expect(page.locator("h1 .badge")).to_have_text("active")
    assert site.status_of(account["id"]) == "active"
    expect(page.locator("section", has=page.get_by_role("heading", name="Overrides"))).to_contain_text(
        "Price feed spike confirmed by the platform")
    assert _problems(page) == []


def test_the_decisions_feed_shows_new_decisions_live_and_support_cannot_act(site, page_as, shot):
    account = site.new_account(trader="t2")
    page = page_as("support")
    _watch(page)
    page.goto("/office/decisions")
    expect(page.locator("#live-state")).to_have_text("Live updates: on")
    site.post_events(_events(account["external_id"], "95500.00", day=4))  # 80 % of the daily limit used: a warning
    first = page.locator("#decisions-table tbody tr").first
    expect(first).to_contain_text(account["external_id"], timeout=10_000)
    expect(first).to_contain_text("warning")
    shot(page, "decisions-feed", full_page=False)
    page.goto(f"/office/accounts/{account['id']}")
    expect(page.get_by_role("button", name="Emergency stop")).to_have_count(0)
    assert _problems(page) == []


def test_on_a_phone_the_table_scrolls_inside_its_box_not_the_page(site, page_as, shot):
    page = page_as("finance", mobile=True)
    page.goto("/office/accounts")
    wrap = page.locator(".table-wrap").first
    expect(wrap).to_be_visible()
    sizes = wrap.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert sizes[0] > sizes[1], sizes  # the wide table scrolls inside its box
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # the page itself does not
    expect(page.get_by_label("Search")).to_be_visible()
    shot(page, "accounts-list-phone", full_page=False)


def test_risk_finds_the_five_accounts_nearest_a_breach_and_reads_why_one_failed(site, page_as, shot):
    """The risk desk's daily walk: from the accounts list, the live accounts nearest a breach first (five of
    them 10 to 50 away from the daily floor, in that order), then the failed one's page: the explanation in
    words and the breach marked on its chart."""
    near = [site.new_account(trader="t2") for _ in range(5)]
    failed = site.new_account(trader="t1")
    events = []
    for k, account in enumerate(reversed(near)):  # posted farthest first: the order is the sort's, not the ids'
        events += _events(account["external_id"], f"{95000 + 10 * (5 - k)}.00", day=5)
    events += _events(failed["external_id"], "94000.00", day=5)
    site.post_events(events)
    site.wait_status(failed["id"], "breached")

    page = page_as("risk")
    _watch(page)
    page.goto("/office/accounts")
    page.get_by_test_id("nearest-first").click()
    expect(page).to_have_url(re.compile(r"sort=nearest"))
    mine = {a["id"] for a in near}

    def nearest_rows() -> list[tuple[int, str]]:
        rows = page.locator("#accounts-table tbody tr")
        out = []
        for i in range(rows.count()):
            row = rows.nth(i)
            distance = row.locator('[data-field="daily_distance"]').inner_text()
            if distance.startswith("-") or distance.startswith("−"):
                continue  # already past the floor (a cleared breach of another test): not "near"
            out.append((int(row.get_attribute("data-account-id")), distance))
        return out[:5]

    deadline = time.monotonic() + 10
    while {i for i, _ in nearest_rows()} != mine and time.monotonic() < deadline:
        page.wait_for_timeout(300)  # the worker is still evaluating: reload
        page.reload()
    assert nearest_rows() == [(a["id"], f"{10 * (k + 1)}.00") for k, a in enumerate(near)]
    shot(page, "accounts-nearest", full_page=False)

    page.goto("/office/accounts?status=breached")
    page.locator(f'tr[data-account-id="{failed["id"]}"] a').first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(failed["external_id"])
    expect(page.locator("#decisions")).to_contain_text("fell below the daily floor 95,000.00")
    expect(page.get_by_test_id("breach-mark")).to_contain_text("94,000.00 USD against 95,000.00 USD")
    canvas = page.locator("canvas#account-chart")
    expect(canvas).to_be_visible()
    expect(page.locator("#chart-note")).to_contain_text("Showing")
    labels = page.evaluate("Chart.getChart(document.getElementById('account-chart')).data.datasets.map(d => d.label)")
    assert "Breach" in labels and "Breached level" in labels
    assert _problems(page) == []
