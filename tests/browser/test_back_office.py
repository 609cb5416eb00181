"""The back office's daily work in a real browser (issue 16): support answers a trader and closes the
conversation; compliance approves a KYC from the trader's documents."""

from __future__ import annotations

import itertools
import time

from sqlalchemy import select

from propcrm.adapters.db import models as m

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
_numbers = itertools.count(1)


def no_csp_errors(*pages) -> None:
    assert not [e for page in pages for e in page.console_errors if "Content Security Policy" in e]


def test_support_answers_a_trader_and_closes_the_conversation(site, page_as, shot):
    subject = f"Where is my certificate {time.time_ns()}"
    trader = page_as("trader")
    trader.goto("/portal/messages")
    trader.get_by_label("Subject").fill(subject)
    trader.get_by_label("Message", exact=True).fill("I passed phase 1 yesterday.")
    trader.get_by_role("button", name="Send message").click()
    trader.wait_for_load_state()

    support = page_as("support")
    support.get_by_role("link", name="Support inbox").click()
    support.wait_for_url("**/office/support")
    row = support.locator("#inbox tr", has_text=subject)
    assert "to answer" in row.inner_text()
    row.get_by_role("link", name="Tina Trader").click()
    support.wait_for_url("**/office/support/*")
    assert "I passed phase 1 yesterday." in support.locator("#messages").inner_text()
    support.get_by_label("Assigned to").select_option(label="support@acme.example (support)")
    support.get_by_role("button", name="Assign").click()
    support.wait_for_load_state()
    assert support.get_by_label("Assigned to").input_value() != ""
    support.get_by_label("Your reply").fill("Congratulations! It is on its way by e-mail.")
    support.get_by_label("Close the conversation after sending").check()
    shot(support, "support-conversation")
    support.get_by_role("button", name="Send reply").click()
    support.wait_for_load_state()
    assert "closed" in support.locator(".flash").inner_text()
    assert support.locator("#conversation-status").inner_text() == "closed"
    assert support.get_by_role("button", name="Reopen").is_visible()

    trader.goto("/portal/messages")
    answer = trader.locator(".timeline li", has_text="Congratulations! It is on its way by e-mail.")
    assert "From support" in answer.inner_text() and f"Re: {subject}" in answer.inner_text()
    no_csp_errors(trader, support)


def test_compliance_approves_a_kyc_from_its_documents(site, page_as, shot, tmp_path):
    n = next(_numbers)
    with site.sessions.begin() as s:
        trader = m.Trader(firm_id="acme", name=f"Kim Verify {n}", email=f"kim{n}-{time.time_ns()}@traders.example",
                          country="DE")
        s.add(trader)
        s.flush()
        trader_id = trader.id
    passport = tmp_path / "passport.pdf"
    passport.write_bytes(PDF)

    support = page_as("support")  # the document arrives (by e-mail, say) and support files it
    support.goto(f"/office/traders/{trader_id}")
    support.get_by_label("Kind").select_option("id_document")
    support.get_by_label("File (PDF, PNG or JPEG, at most 10 MB)").set_input_files(str(passport))
    support.get_by_role("button", name="Upload").click()
    support.wait_for_load_state()
    assert "awaits review" in support.locator(".flash").inner_text()

    compliance = page_as("risk")
    compliance.get_by_role("link", name="KYC review").click()
    compliance.wait_for_url("**/office/kyc")
    compliance.locator(f'#kyc-queue tr[data-trader="{trader_id}"]').get_by_role("link").click()
    compliance.wait_for_url(f"**/office/traders/{trader_id}*")
    link = compliance.get_by_role("link", name="passport.pdf")
    with compliance.expect_download() as download:
        link.click()
    assert open(download.value.path(), "rb").read() == PDF
    shot(compliance, "kyc-review")
    compliance.get_by_label("Reason").first.fill("passport matches the name and country")
    compliance.get_by_role("button", name="Approve verification").click()
    compliance.wait_for_url("**/office/kyc")
    assert "approved" in compliance.locator(".flash").inner_text()
    assert compliance.locator(f'#kyc-queue tr[data-trader="{trader_id}"]').count() == 0
    compliance.goto(f"/office/traders/{trader_id}")
    assert compliance.locator("#kyc-status").inner_text() == "approved"
    with site.sessions() as s:
        assert s.get(m.Trader, trader_id).kyc_status == "approved"
        entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "trader.kyc_review",
                                                     m.AuditEntry.entity_id == str(trader_id))).one()
        assert entry.actor.endswith("risk@acme.example")
    no_csp_errors(support, compliance)


def test_an_admin_adds_a_staff_member_who_enrols_two_factor_and_logs_in_with_a_code(site, page_as, shot):
    import datetime as dt

    import pyotp

    email = f"sam{time.time_ns()}@acme.example"
    password = "sam's long staff passphrase"
    admin = page_as("admin")
    admin.get_by_role("link", name="Users").click()
    admin.wait_for_url("**/office/users")
    admin.get_by_label("New staff member's e-mail").fill(email)
    admin.get_by_label("Role", exact=True).select_option("support")
    admin.get_by_label("Password (empty: generate one)").fill(password)
    admin.get_by_role("button", name="Add staff member").click()
    admin.wait_for_load_state()
    assert f"{email} is added as support" in admin.locator(".flash").inner_text()

    sam = page_as("support", email=email, password=password)
    sam.get_by_role("link", name="Two-factor").click()
    sam.wait_for_url("**/account/two-factor")
    sam.get_by_role("button", name="Set up two-factor login").click()
    sam.wait_for_load_state()
    assert sam.get_by_role("img", name="QR code of your two-factor key").is_visible()
    secret = sam.get_by_test_id("totp-secret").inner_text()
    totp = pyotp.TOTP(secret)
    sam.get_by_label("Code from the app").fill(totp.now())
    shot(sam, "two-factor-enrol")
    sam.get_by_role("button", name="Switch two-factor on").click()
    sam.wait_for_load_state()
    assert sam.get_by_test_id("recovery-codes").locator("li").count() == 10
    sam.get_by_role("button", name="Log out").click()
    sam.wait_for_url("**/login")

    sam.get_by_label("Firm").fill("acme")
    sam.get_by_label("E-mail").fill(email)
    sam.get_by_label("Password").fill(password)
    sam.get_by_role("button", name="Log in").click()
    sam.wait_for_load_state()
    code = sam.get_by_label("Authentication code")
    assert code.is_visible()
    # the enrolment used this 30-second step's code: each code works once, so the next step's
    code.fill(totp.at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)))
    sam.get_by_role("button", name="Verify").click()
    sam.wait_for_url("**/office/accounts")
    assert email in sam.locator("header .who").inner_text()
    no_csp_errors(admin, sam)


def test_a_sorted_accounts_list_stays_sorted_as_live_figures_change(site, page_as):
    from playwright.sync_api import expect

    n = time.time_ns()
    x, y = site.new_account(trader="t2"), site.new_account(trader="t2")

    def events(external: str, tag: str, hour: int, value: str, opened: bool = False) -> list[dict]:
        out = [{"id": f"rs-{n}-{tag}-o", "type": "trade_opened", "account": external, "ts": "2026-03-02T09:00:00Z",
                "position": f"p-{n}-{tag}", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}] \
            if opened else []
        return out + [{"id": f"rs-{n}-{tag}-e{hour}", "type": "equity", "account": external,
                       "ts": f"2026-03-02T{hour:02d}:00:00Z", "equity": value, "balance": "100000.00"}]

    site.post_events(events(x["external_id"], "x", 10, "99000.00", opened=True)
                     + events(y["external_id"], "y", 10, "98000.00", opened=True))
    risk = page_as("risk")

    def order() -> list[str]:
        return risk.evaluate("() => Array.from(document.querySelectorAll('#accounts-table tbody tr'))"
                             ".map(tr => tr.getAttribute('data-account-id'))")

    deadline = time.monotonic() + 10
    while True:  # the worker has evaluated both accounts: their distances are on the page
        risk.goto("/office/accounts?sort=daily_distance&limit=200&near_amount=4000")
        ids = order()
        if str(x["id"]) in ids and str(y["id"]) in ids or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert ids.index(str(y["id"])) < ids.index(str(x["id"]))  # 3,000 before 4,000 from the daily floor
    expect(risk.locator("#live-state")).to_have_text("Live updates: on")
    site.post_events(events(x["external_id"], "x", 11, "97000.00"))  # now 2,000 away: before y
    row = risk.locator(f'tr[data-account-id="{x["id"]}"] [data-field="daily_distance"]')
    expect(row).to_have_text("2,000.00", timeout=10_000)
    ids = order()
    assert ids.index(str(x["id"])) < ids.index(str(y["id"]))
    expect(risk.locator("#live-announce")).to_contain_text(f"{x['external_id']} moved")
    no_csp_errors(risk)
