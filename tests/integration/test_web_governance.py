"""The re-bind flow on the pack version page and the kill-switch page, on both backends: preview, then
confirm with a reason; who may; a confirmation that no longer matches changes nothing."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select
from support.web import browse

from propcrm.adapters.db import models as m
from propcrm.services.catalog import add_pack, create_account
from support.governance import equity, fix_pack

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def hidden(page_html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page_html)
    assert match, page_html[:3000]
    return html.unescape(match.group(1))


def test_rebind_preview_then_confirm_on_the_pack_page(world):
    with world.sessions.begin() as s:
        v1 = add_pack(s, firm_id="fa", pack=fix_pack(1, 4), activate=True)
        account = create_account(s, firm_id="fa", external_id="FX-A", pack_version_id=v1.id, platform="mt5")
        v2 = add_pack(s, firm_id="fa", pack=fix_pack(2, 5))
        account_id, v2_id = account.id, v2.id
    world.ingest(equity("a1", "FX-A", "2026-03-02T10:00:00Z", "95500"))
    world.evaluate()
    assert world.status_of(account_id) == "breached"

    for who in ("fa:finance", "fa:support"):
        assert browse(world, who).get(f"/office/packs/fix-100k/versions/{v2_id}/rebind").status_code == 403
    risk = browse(world, "fa:risk")
    pack_page = risk.get("/office/packs/fix-100k").text
    assert f"/office/packs/fix-100k/versions/{v2_id}/rebind" in pack_page
    url = f"/office/packs/fix-100k/versions/{v2_id}/rebind"
    preview = risk.get(url, params={"accounts": "FX-A", "preview": "true"})
    assert preview.status_code == 200, preview.text[:2000]
    assert "Move 1 account(s) to v2" in preview.text and "no longer:" in preview.text
    assert world.status_of(account_id) == "breached"  # a preview changes nothing

    form = {"accounts": "FX-A", "from_version": "", "phase": "", "product": "", "expect": hidden(preview.text, "expect")}
    without_reason = risk.post_form(url, {**form, "reason": ""})
    assert without_reason.status_code == 422 and "Nothing was moved" in without_reason.text
    stale = risk.post_form(url, {**form, "expect": "ffff", "reason": "daily loss is 5%"})
    assert stale.status_code == 422 and "preview it again" in stale.text
    assert world.status_of(account_id) == "breached"
    done = risk.post_form(url, {**form, "reason": "daily loss is 5%"})
    assert done.status_code == 303, done.text[:2000]
    assert world.status_of(account_id) == "active"
    assert "Moved 1 account(s)" in risk.get(done.headers["location"]).text
    assert "the account was moved to another" in risk.get(f"/office/accounts/{account_id}").text


def test_halt_preview_confirm_with_the_count_and_resume(world):
    assert browse(world, "fa:support").get("/office/halts").status_code == 403
    risk = browse(world, "fa:risk")
    assert "/office/halts" in risk.get("/office/accounts").text  # in the navigation
    preview = risk.get("/office/halts", params={"pack": "two-step-100k", "preview": "true"})
    assert preview.status_code == 200 and "<strong>3</strong> trading account(s) would be halted" in preview.text
    form = {"all": "", "pack": "two-step-100k", "version": "", "phase": "", "product": "", "accounts": "",
            "reason": "feed fault"}
    wrong = risk.post_form("/office/halts", {**form, "confirm": "2"})
    assert wrong.status_code == 422 and "Not halted" in wrong.text
    assert world.status_of(world.accounts["A1"]) == "active"
    done = risk.post_form("/office/halts", {**form, "confirm": "3"})
    assert done.status_code == 303
    assert world.status_of(world.accounts["A1"]) == "halted"
    page = risk.get("/office/halts").text
    assert "3 still halted" in page and "feed fault" in page
    with world.sessions() as s:
        halt_id = s.scalars(select(m.TradingHalt.id)).one()
    resumed = risk.post_form(f"/office/halts/{halt_id}/resume", {"reason": "feed back"})
    assert resumed.status_code == 303
    assert world.status_of(world.accounts["A1"]) == "active"
    assert "resumed" in risk.get("/office/halts").text
