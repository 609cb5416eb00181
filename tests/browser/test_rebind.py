"""The audited re-bind in a real browser: risk opens the pack page, follows "Move accounts here" to the
draft v2, previews the move (status now → after, the decisions that differ), types a reason and confirms;
the wrongly breached account trades again. Its own pack (``browser-rebind``) keeps the other areas' data as
it was."""

from __future__ import annotations

import msgspec

from support.governance import equity, fix_pack

PACK = "browser-rebind"


def test_risk_previews_then_confirms_a_rebind(site, page_as):
    from propcrm.services.catalog import add_pack, create_account

    with site.sessions.begin() as s:
        v1 = add_pack(s, firm_id="acme", pack=msgspec.structs.replace(fix_pack(1, 4), id=PACK), activate=True)
        account_id = create_account(s, firm_id="acme", external_id="RB-A", pack_version_id=v1.id,
                                    platform="mt5").id
        add_pack(s, firm_id="acme", pack=msgspec.structs.replace(fix_pack(2, 5), id=PACK))
    site.post_events([equity("rb-1", "RB-A", "2026-03-02T10:00:00Z", "95500")])
    site.wait_status(account_id, "breached")

    page = page_as("risk")
    page.goto(f"/office/packs/{PACK}")
    page.get_by_role("link", name="Move accounts to v2").click()
    page.get_by_label("Account external ids").fill("RB-A")
    page.get_by_role("button", name="Preview the move").click()
    page.wait_for_selector("#plan")
    row = page.locator("#plan-table tbody tr").first.inner_text()
    assert "RB-A" in row and "breached" in row and "active" in row and "no longer" in row and "96,000" in row
    assert site.status_of(account_id) == "breached"  # the preview wrote nothing

    page.get_by_label("Reason").fill("daily loss is 5% as published")
    page.get_by_role("button", name="Move 1 account(s) to v2").click()
    assert "Moved 1 account(s)" in page.locator(".flash").inner_text()
    site.wait_status(account_id, "active")
    assert not [e for e in page.console_errors if "Failed to load resource" not in e]
