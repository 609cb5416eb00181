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
    trader.get_by_label("Message").fill("I passed phase 1 yesterday.")
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
