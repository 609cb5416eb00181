"""The trader portal in a real browser: the trader sees their accounts with progress bars on a phone,
opens the "why did my account fail" page of an account that breached through real platform events,
writes to support; staff cannot open the portal and the trader cannot open the back office."""

from __future__ import annotations

import datetime as dt
import itertools
import time

from sqlalchemy import select

from propcrm.adapters.db import models as m

UTC = dt.timezone.utc
_ids = itertools.count(1)


def stamp(seconds_ago: int) -> str:
    return (dt.datetime.now(UTC) - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def events(external: str, *equities: str) -> list[dict]:
    """A trade opened, then one equity report per value (balance unchanged at 100,000), a second apart."""
    n = next(_ids)
    out = [{"id": f"portal-{n}-open", "type": "trade_opened", "account": external, "ts": stamp(60),
            "position": f"p{n}", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}]
    for i, value in enumerate(equities):
        out.append({"id": f"portal-{n}-eq{i}", "type": "equity", "account": external, "ts": stamp(50 - i),
                    "equity": value, "balance": "100000.00"})
    return out


def wait_evaluated(site, account_id: int, equity: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with site.sessions() as s:
            found = s.scalar(select(m.AccountState.equity).where(m.AccountState.account_id == account_id))
        if found is not None and found == type(found)(equity):
            return
        time.sleep(0.1)
    raise AssertionError(f"account {account_id} was not evaluated to equity {equity}\n{site.log_tail()}")


def watch(page) -> list[str]:
    """Failed requests (other than a favicon) and script errors from now on."""
    found: list[str] = []
    page.on("response", lambda r: r.status >= 400 and "favicon" not in r.url and found.append(f"{r.status} {r.url}"))
    page.on("pageerror", lambda exc: found.append(str(exc)))
    return found


def test_the_trader_sees_progress_bars_on_a_phone(site, page_as, shot):
    account = site.new_account(trader="t1")
    site.post_events(events(account["external_id"], "99820.00", "98600.00"))
    wait_evaluated(site, account["id"], "98600.00")
    page = page_as("trader", mobile=True)
    problems = watch(page)
    page.reload()
    assert page.url.endswith("/portal")
    card = page.locator(f'section[data-account="{account["id"]}"]')
    assert account["external_id"] in card.get_by_role("heading").inner_text()
    assert "98,600.00" in card.inner_text()  # equity
    # four bars, each with its words: target, daily loss left, max loss left, trading days
    assert card.locator("progress").count() == 2 and card.locator("meter").count() == 2
    daily = card.get_by_role("meter", name="Daily loss left")
    assert daily.get_attribute("value") == "3600.00" and daily.get_attribute("max") == "5000.00"
    assert "3,600.00 of 5,000.00 left" in card.inner_text()
    assert "8,600.00 of 10,000.00 left" in card.inner_text()  # max loss: 98,600 − 90,000
    assert "1 of 4 days" in card.inner_text()
    # nothing is wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    card.scroll_into_view_if_needed()
    shot(page, "portal-accounts")
    # the account page: figures, limits with the engine's formula, the chart with its data table
    card.get_by_role("link", name=account["external_id"]).click()
    page.wait_for_url(f"**/portal/accounts/{account['id']}")
    assert "balance at day start 100,000.00 − 5% of initial 100,000.00" in page.inner_text("main")
    page.locator("#portal-chart-data summary").click()
    page.wait_for_function("document.querySelectorAll('#portal-chart-data tbody tr td.num').length > 0")
    assert "98600" in page.locator("#portal-chart-data tbody").inner_text()
    assert problems == []


def test_a_breach_appears_live_and_the_trader_opens_why_the_account_failed(site, page_as, shot):
    account = site.new_account(trader="t1")
    page = page_as("trader")
    problems = watch(page)
    page.reload()
    card = page.locator(f'section[data-account="{account["id"]}"]')
    assert "active" in card.locator(".badge").inner_text()
    page.wait_for_function("document.getElementById('portal-live').textContent.startsWith('Live')")
    # the breach arrives from the platform while the page is open: the card changes without a reload
    site.post_events(events(account["external_id"], "99820.00", "94750.00"))
    site.wait_status(account["id"], "breached")
    card.get_by_role("link", name="Why did my account fail?").wait_for(timeout=10_000)
    assert "breached" in card.locator(".badge").inner_text()
    assert "94,750.00" in card.inner_text()
    card.get_by_role("link", name="Why did my account fail?").click()
    page.wait_for_url(f"**/portal/accounts/{account['id']}/why")
    main = page.inner_text("main")
    assert f"Why did {account['external_id']} fail?" in main
    assert ("equity 94,750.00 fell below the daily floor 95,000.00 = balance at day start 100,000.00 − 5% of "
            "initial 100,000.00") in main
    # the exact event as the platform sent it, and the time in UTC and in the pack's timezone
    fields = page.get_by_label(f"Event portal-")
    assert fields.count() == 1
    text = fields.inner_text()
    assert "94750.00" in text and "100000.00" in text and "equity" in text
    assert "When (UTC)" in main and "When (Europe/Prague)" in main
    shot(page, "portal-why-failed")
    assert problems == []


def test_the_trader_writes_to_support_and_staff_cannot_open_the_portal(site, page_as):
    page = page_as("trader")
    page.get_by_role("link", name="Messages").click()
    page.wait_for_url("**/portal/messages")
    page.get_by_label("Subject").fill("Payout timing")
    page.get_by_label("Message", exact=True).fill("When is <b>my</b> payout reviewed?")
    page.get_by_role("button", name="Send message").click()
    page.wait_for_url("**/portal/messages")
    assert page.get_by_role("status").first.inner_text() == "Your message is sent to support."
    assert "When is <b>my</b> payout reviewed?" in page.locator("ol.timeline").inner_text()  # shown as text
    assert page.locator("ol.timeline b").count() == 0
    refused = page.goto("/office/accounts")
    assert refused.status == 403
    risk = page_as("risk")
    answer = risk.goto("/portal")
    assert answer.status == 403 and "Not allowed" in risk.inner_text("main")
    assert risk.get_by_role("navigation", name="Main").get_by_role("link", name="My accounts").count() == 0
