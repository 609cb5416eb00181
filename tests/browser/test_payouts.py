"""The payout queue in a real browser: a payout prepared by finance and approved by another user through the
UI is paid (its withdrawal reaches the account); the preparer cannot approve; who may not, cannot."""

from __future__ import annotations

import itertools
import time
from decimal import Decimal

from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import parse_pack
from propcrm.services import payouts
from propcrm.services.catalog import add_pack
from support.lifecycle import LIFE_PACK, funded_account

_numbers = itertools.count(1)


def payable(site, balance: str = "10500", deductions: str = "0") -> dict:
    """A funded account with a payable profit of its own trader (KYC approved) and a requested payout:
    the pack is added to the site's firm without activating it, so nothing else on the site changes."""
    n = next(_numbers)
    with site.sessions.begin() as s:
        version = s.scalar(select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == "acme",
                                                              m.RulePackVersion.pack_id == "life-10k"))
        if version is None:
            version = add_pack(s, firm_id="acme", pack=parse_pack(LIFE_PACK), activate=False).id
        trader = m.Trader(firm_id="acme", name=f"Pat Payout {n}", email=f"pat{n}@traders.example", country="GB",
                          kyc_status="approved")
        s.add(trader)
        s.flush()
        trader_id = trader.id
    external = f"PAY-{n}-{int(time.time())}"
    account = funded_account(site.sessions, firm="acme", version_id=version, external_id=external, trader_id=trader_id,
                             balance=Decimal(balance), deductions=Decimal(deductions))
    with site.sessions.begin() as s:  # the trader's request, as POST /api/v1/payouts makes it
        row = payouts.request_payout(s, firm_id="acme", account_id=account, actor=f"trader:{trader_id}")
        assert row.status == "requested", row.reason
        payout_id = row.id
    return {"account": account, "external_id": external, "payout": payout_id, "trader": f"Pat Payout {n}"}


def wait_applied(site, event_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with site.sessions() as s:
            status = s.scalar(select(m.RawEvent.status).where(m.RawEvent.event_id == event_id))
        if status == "applied":
            return
        time.sleep(0.1)
    raise AssertionError(f"{event_id} is {status!r}, not applied\n{site.log_tail()}")


def test_a_payout_approval_works_through_the_ui(site, page_as, shot):
    found = payable(site, deductions="100")
    payout = found["payout"]
    finance = page_as("finance")
    finance.get_by_role("link", name="Payouts").click()
    finance.wait_for_url("**/office/payouts")
    row = finance.locator(f'tr[data-payout="{payout}"]')
    assert found["trader"] in row.inner_text() and "to be prepared" in row.inner_text()
    assert "320.00" in row.inner_text()  # (500 − 100 deducted) × 80%, as requested
    shot(finance, "payout-queue")
    row.get_by_role("link", name=f"Payout {payout}").click()
    finance.wait_for_url(f"**/office/payouts/{payout}")
    assert finance.get_by_role("status").first.is_visible()
    finance.get_by_label("Deduction (optional)").fill("12.50")
    finance.get_by_label("Reason for the deduction (the trader reads it)").fill("wire transfer fee")
    finance.get_by_role("button", name="Prepare payout").click()
    finance.wait_for_load_state()
    assert "prepared" in finance.locator(".flash").inner_text()
    assert finance.get_by_test_id("trader-amount").inner_text() == "310.00"  # (400 − 12.50) × 80%
    assert finance.get_by_test_id("payout-status").inner_text() == "prepared"
    # the preparer never has an enabled approve button
    assert finance.get_by_role("button", name="Approve payout").is_disabled()
    assert "You prepared this payout" in finance.get_by_test_id("maker-checker").inner_text()
    shot(finance, "payout-detail")
    with site.sessions() as s:
        assert s.get(m.Account, found["account"]) is not None
        assert s.scalar(select(m.RawEvent.status).where(m.RawEvent.event_id == f"payout-{payout}")) is None

    admin = page_as("admin")
    admin.goto(f"/office/payouts/{payout}")
    approve = admin.get_by_role("button", name="Approve payout")
    assert approve.is_enabled()
    approve.click()
    admin.wait_for_load_state()
    assert admin.get_by_test_id("payout-status").inner_text() == "approved"
    assert "310.00" in admin.locator(".flash").inner_text()
    assert "admin@acme.example" in admin.get_by_role("table").last.inner_text()
    wait_applied(site, f"payout-{payout}")  # the server's worker took the profit out of the account
    with site.sessions() as s:
        assert s.get(m.AccountState, found["account"]).balance == Decimal("10000")
    admin.goto("/office/payouts?status=approved")
    assert "1/1" in admin.locator(f'tr[data-payout="{payout}"]').inner_text()
    # no script or style of these pages is refused by the content security policy
    assert not [e for e in admin.console_errors + finance.console_errors if "Content Security Policy" in e]


def test_risk_reads_the_queue_on_a_phone_support_may_not(site, page_as, shot):
    found = payable(site, balance="10200")
    risk = page_as("risk", mobile=True)
    risk.goto("/office/payouts")
    assert risk.locator(f'tr[data-payout="{found["payout"]}"]').is_visible()
    # the page itself does not scroll sideways at 390 px: the wide table scrolls inside its wrapper
    assert risk.evaluate("document.documentElement.scrollWidth") <= 392
    shot(risk, "payout-queue-mobile")
    risk.goto(f"/office/payouts/{found['payout']}")
    assert risk.get_by_role("button", name="Prepare payout").count() == 0
    assert risk.get_by_role("button", name="Approve payout").count() == 0
    assert risk.evaluate("document.documentElement.scrollWidth") <= 392
    shot(risk, "payout-detail-mobile")
    support = page_as("support")
    response = support.goto("/office/payouts")
    assert response.status == 403
    assert support.get_by_role("navigation", name="Main").get_by_role("link", name="Payouts").count() == 0
