"""A trader's day in a real browser: today's P/L and the countdown to the daily reset on the account card,
the trade journal with its statistics, a payout requested with a method and destination, its statement
downloaded after finance approved it, and a certificate downloaded and verified through its link; then the
profile: taking part in the leaderboard under a pseudonym, a KYC document uploaded, two-factor login enrolled
(QR code, recovery codes) and the next login made with a code."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from decimal import Decimal

import pyotp
from playwright.sync_api import expect
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import parse_pack
from propcrm.services import payouts, users
from propcrm.services.catalog import add_pack
from support.lifecycle import LIFE_PACK, funded_account

UTC = dt.timezone.utc
_n = itertools.count(1)


def _stamp(seconds_ago: int) -> str:
    return (dt.datetime.now(UTC) - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _trader(site) -> tuple[str, int]:
    """A trader of their own (KYC approved) with a login: nothing of the shared trader t1 changes."""
    n = next(_n)
    email = f"journey{n}@acme.example"
    with site.sessions.begin() as s:
        trader = m.Trader(firm_id="acme", name=f"Jo Journey {n}", email=f"jo{n}@traders.example", country="GB",
                          kyc_status="approved")
        s.add(trader)
        s.flush()
        users.create_user(s, firm_id="acme", email=email, password=site.password, role="trader", trader_id=trader.id)
        site.traders[f"jo{n}"] = trader.id
        return email, trader.id


def _wait_closed(site, account_id: int, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with site.sessions() as s:
            found = s.query(m.Trade).filter(m.Trade.account_id == account_id, m.Trade.status == "closed").count()
        if found >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"account {account_id} has not {count} closed trades\n{site.log_tail()}")


def test_a_trader_reads_today_journal_requests_a_payout_and_verifies_a_certificate(site, page_as, shot, tmp_path):
    email, trader_id = _trader(site)
    name = next(k for k, v in site.traders.items() if v == trader_id)
    account = site.new_account(trader=name)
    external = account["external_id"]
    site.post_events([
        {"id": f"{external}-o1", "type": "trade_opened", "account": external, "ts": _stamp(90), "position": "j1",
         "symbol": "EURUSD", "side": "buy", "lots": "1.5", "price": "1.08512"},
        {"id": f"{external}-c1", "type": "trade_closed", "account": external, "ts": _stamp(60), "position": "j1",
         "lots": "1.5", "price": "1.08612", "profit": "150.00", "commission": "-10.50"},
        {"id": f"{external}-o2", "type": "trade_opened", "account": external, "ts": _stamp(50), "position": "j2",
         "symbol": "XAUUSD", "side": "sell", "lots": "1", "price": "2300.5"},
        {"id": f"{external}-c2", "type": "trade_closed", "account": external, "ts": _stamp(40), "position": "j2",
         "lots": "1", "price": "2301.5", "profit": "-100.00", "commission": "-7.00", "swap": "-0.50"},
    ])
    _wait_closed(site, account["id"], 2)
    page = page_as("trader", email=email)
    page.goto("/portal")
    card = page.locator(f'section[data-account="{account["id"]}"]')
    assert "32.00" in card.locator("[data-today-pnl]").inner_text()  # 139.50 − 107.50, both closed today
    countdown = card.locator(".countdown")
    first = countdown.inner_text()
    assert re.fullmatch(r"\d{1,2}:\d\d:\d\d", first), first
    # portal.js counts it down every second (the locator is looked up again each time: a live update may
    # have rendered the card anew since `first` was read)
    expect(countdown).not_to_have_text(first, timeout=10_000)
    assert "Europe/Prague" in card.inner_text() and "Phase deadline" in card.inner_text()
    shot(page, "portal-today-countdown")
    # the journal and statistics
    card.get_by_role("link", name="Trade journal and statistics").click()
    page.wait_for_url(f"**/portal/accounts/{account['id']}/trades")
    assert page.locator('[data-stat="trades"]').inner_text() == "2"
    assert page.locator('[data-stat="win-rate"]').inner_text() == "50.00%"
    assert page.locator('[data-stat="profit-factor"]').inner_text() == "1.30"  # 139.50 / 107.50
    journal = page.locator("table.journal")
    assert "XAUUSD" in journal.inner_text() and "-107.50" in journal.inner_text()
    assert page.locator("table.pnl-calendar td.up").count() == 1
    shot(page, "portal-journal")
    # a payout with a method and destination
    with site.sessions.begin() as s:
        version = s.scalar(select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == "acme",
                                                              m.RulePackVersion.pack_id == "life-10k"))
        if version is None:
            version = add_pack(s, firm_id="acme", pack=parse_pack(LIFE_PACK), activate=False).id
    funded_external = f"JF-{trader_id}-{int(time.time())}"
    funded = funded_account(site.sessions, firm="acme", version_id=version, external_id=funded_external,
                            trader_id=trader_id, balance=Decimal("10500"))
    page.goto("/portal/payouts")
    page.get_by_label("Payout method").select_option("bank_transfer")
    page.get_by_label("Destination").fill("GB33BUKB20201555555555")
    page.get_by_role("button", name=re.compile(f"Request a payout of 400.00 from {funded_external}")).click()
    page.wait_for_url("**/portal/payouts**")
    assert "is received" in page.locator(".flash").inner_text()
    with site.sessions.begin() as s:  # finance prepares, another finance user (admin) approves
        row = s.scalars(select(m.Account).where(m.Account.id == funded)).one()
        from propcrm.adapters.db.models_lifecycle import Payout

        payout = s.scalars(select(Payout).where(Payout.account_id == row.id)).one()
        assert (payout.method, payout.destination) == ("bank_transfer", "GB33BUKB20201555555555")
        staff = {u.role: u for u in s.scalars(select(m.User).where(m.User.firm_id == "acme"))}
        payouts.prepare_payout(s, firm_id="acme", payout_id=payout.id, user_id=staff["finance"].id, actor="finance")
        approved = payouts.approve_payout(s, firm_id="acme", payout_id=payout.id, user_id=staff["admin"].id,
                                          actor="admin")
        assert getattr(approved, "status", None) == "approved", approved
        payout_id = payout.id
    page.reload()
    item = page.locator(f"#payout-{payout_id}")
    assert "bank transfer to GB33BUKB20201555555555" in item.inner_text()
    with page.expect_download() as info:
        item.get_by_role("link", name="Download the statement (PDF)").click()
    statement = tmp_path / "statement.pdf"
    info.value.save_as(statement)
    assert statement.read_bytes().startswith(b"%PDF-")
    # certificates: download one and verify it through its link, logged out
    page.goto("/portal/certificates")
    certificate = page.locator("li.card", has_text="Payout").first
    assert "400.00 USD" in certificate.inner_text()
    with page.expect_download() as info:
        certificate.get_by_role("link", name="Download (PDF)").click()
    info.value.save_as(tmp_path / "certificate.pdf")
    assert (tmp_path / "certificate.pdf").read_bytes().startswith(b"%PDF-")
    link = certificate.locator('a[href^="/verify/"]').get_attribute("href")
    shot(page, "portal-certificates")
    page.context.clear_cookies()
    page.goto(link)
    assert "Certificate verified" in page.locator("h1").inner_text()
    assert "400.00 USD" in page.inner_text("main") and "Jo Journey" in page.inner_text("main")
    assert not page.console_errors, page.console_errors


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 128


def test_a_trader_joins_the_leaderboard_uploads_a_kyc_document_and_logs_in_with_two_factor(site, page_as, shot):
    email, trader_id = _trader(site)
    name = next(k for k, v in site.traders.items() if v == trader_id)
    account = site.new_account(trader=name)
    external = account["external_id"]
    # five round trips on two trading days (27 hours apart): what the board asks by default to be ranked
    events = []
    for n, closed in enumerate((27 * 3600, 27 * 3600 - 600, 27 * 3600 - 1200, 3600 + 600, 3600), start=1):
        events += [{"id": f"{external}-o{n}", "type": "trade_opened", "account": external, "ts": _stamp(closed + 300),
                    "position": f"b{n}", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
                   {"id": f"{external}-c{n}", "type": "trade_closed", "account": external, "ts": _stamp(closed),
                    "position": f"b{n}", "lots": "1", "price": "1.08612", "profit": "407.00", "commission": "-7.00"}]
    site.post_events(events)
    _wait_closed(site, account["id"], 5)
    page = page_as("trader", email=email)
    # the leaderboard: opt in from the profile under a chosen pseudonym
    page.goto("/portal/profile")
    pseudonym = f"Keen Heron {trader_id}"
    page.get_by_label("Pseudonym").fill(pseudonym)
    page.get_by_role("button", name="Take part in the leaderboard").click()
    assert f"You are on the leaderboard as {pseudonym}" in page.locator(".flash").inner_text()
    page.get_by_role("navigation").get_by_role("link", name="Leaderboard").click()
    page.wait_for_url("**/portal/leaderboard")
    mine = page.locator("#leaderboard-table tr.you")
    expect(mine).to_have_count(1)
    assert "ranked after 5 closed trades" in page.inner_text("#leaderboard-fairness")
    assert pseudonym in mine.inner_text() and "+" in mine.inner_text() and "%" in mine.inner_text()
    main = page.inner_text("main")
    assert "Jo Journey" not in main and email not in main and external not in main
    page.get_by_label("Period").select_option("7d")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/portal/leaderboard?period=7d**")
    expect(page.locator("#leaderboard-table tr.you")).to_have_count(1)
    shot(page, "portal-leaderboard")
    # a KYC document: uploaded, then listed as awaiting review
    page.goto("/portal/profile")
    page.get_by_label("Kind of document").select_option("proof_of_address")
    page.get_by_label("File (PDF, PNG or JPEG").set_input_files(
        {"name": "utility-bill.png", "mimeType": "image/png", "buffer": PNG})
    page.get_by_role("button", name="Upload for review").click()
    assert "utility-bill.png is uploaded" in page.locator(".flash").inner_text()
    row = page.locator("#kyc-documents tr", has_text="utility-bill.png")
    assert "Proof of address" in row.inner_text() and "awaiting review" in row.inner_text()
    # two-factor: enrol with the QR code's key, keep the recovery codes, then log in with a code
    page.get_by_role("link", name="Set up two-factor login").click()
    page.get_by_role("button", name="Set up two-factor login").click()
    expect(page.get_by_alt_text("QR code of your two-factor key")).to_be_visible()
    secret = page.get_by_test_id("totp-secret").inner_text()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    # ten recovery codes are hashed with the server's real argon2 cost: seconds on a loaded machine
    page.get_by_role("button", name="Switch two-factor on").click(timeout=60_000)
    expect(page.get_by_test_id("recovery-codes").locator("li")).to_have_count(10, timeout=60_000)
    shot(page, "portal-two-factor-recovery-codes")
    page.goto("/portal/profile")
    assert page.locator("#profile-two-factor").inner_text() == "on"
    page.get_by_role("button", name="Log out").click()
    page.goto("/login")
    page.get_by_label("Firm").fill("acme")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_label("Authentication code")).to_be_visible()
    # the enrolment used the current 30 s step: each step's code works once, so the next step's code
    page.get_by_label("Authentication code").fill(pyotp.TOTP(secret).at(dt.datetime.now(UTC) + dt.timedelta(seconds=30)))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/portal")
    assert page.locator("h1").first.inner_text()
    assert not page.console_errors, page.console_errors
