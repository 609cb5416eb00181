"""Rule packs in a real browser: an admin edits a draft (a tighter daily loss), compares it side by side
with the active version, back-tests it on recorded history and activates it (typing the confirmation); risk may look and back-test
but has no editing controls and no way in by URL.

The test uses a pack of its own (``browser-packs``) so that activating a draft changes nothing the other
areas' tests rely on (``two-step-100k`` stays active).
"""

from __future__ import annotations

import re

import msgspec
import pytest
from sqlalchemy import select

PACK = "browser-packs"


@pytest.fixture(scope="module")
def history(site):
    """Pack ``browser-packs`` v1 (active, a copy of two-step-100k) with two accounts and their evaluated
    history: PK-DEEP fell 4 % in a day (inside 5 %), PK-SHALLOW 0.5 %."""
    from propcrm.domain.rulepack import load_pack
    from propcrm.services.catalog import add_pack, create_account

    pack = msgspec.structs.replace(load_pack("two-step-100k"), id=PACK, name="Browser test pack")
    with site.sessions.begin() as s:
        version_id = add_pack(s, firm_id="acme", pack=pack, activate=True).id
        ids = {}
        for external in ("PK-DEEP", "PK-SHALLOW"):
            ids[external] = create_account(s, firm_id="acme", external_id=external, pack_version_id=version_id,
                                           platform="mt5", trader_id=site.traders["t2"]).id
    events = []
    for external, low in (("PK-DEEP", "96000.00"), ("PK-SHALLOW", "99500.00")):
        events += [
            {"id": f"{external}-o", "type": "trade_opened", "account": external, "ts": "2026-03-02T09:00:00Z",
             "position": "p1", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
            {"id": f"{external}-e1", "type": "equity", "account": external, "ts": "2026-03-02T10:00:00Z",
             "equity": "99000.00", "balance": "100000.00"},
            {"id": f"{external}-e2", "type": "equity", "account": external, "ts": "2026-03-02T11:00:00Z",
             "equity": low, "balance": "100000.00"},
        ]
    site.post_events(events)
    return {"version_id": version_id, "accounts": ids}


def script_errors(page) -> list[str]:
    """Script errors (a refused form answers 422 and the browser logs that as a failed load: not a script error)."""
    return [e for e in page.console_errors if "Failed to load resource" not in e]


def statuses(site) -> list[tuple[int, str]]:
    from propcrm.adapters.db import models as m

    with site.sessions() as s:
        return [(r.version, r.status) for r in s.scalars(
            select(m.RulePackVersion).where(m.RulePackVersion.firm_id == "acme", m.RulePackVersion.pack_id == PACK)
            .order_by(m.RulePackVersion.version))]


def test_admin_edits_a_draft_back_tests_it_and_activates_it(site, history, page_as, shot):
    page = page_as("admin")
    page.get_by_role("link", name="Rule packs").click()
    page.wait_for_url("**/office/packs")
    section = page.get_by_role("region", name=re.compile(PACK))
    section.get_by_role("link", name="Edit a new draft").click()
    page.wait_for_url(f"**/office/packs/{PACK}/draft")

    editor = page.get_by_label("Rule pack (YAML or JSON)")
    text = editor.input_value()
    assert "version: 2" in text
    # first an invalid value: the error names the field and nothing is stored
    head, sep, tail = text.partition("kind: daily_loss")
    editor.fill(head + sep + tail.replace("pct_initial: 5", "pct_initial: -3", 1))
    page.get_by_role("button", name="Save as draft").click()
    alert = page.get_by_role("alert")
    assert "pct_initial" in alert.inner_text() and "phase “phase-1”, rule 1 (daily_loss)" in alert.inner_text()
    shot(page, "packs-draft-error", full_page=False)
    assert statuses(site) == [(1, "active")]
    # then phase-1's daily loss from 5 % to 3 %
    editor.fill(head + sep + tail.replace("pct_initial: 5", "pct_initial: 3", 1))
    page.get_by_role("button", name="Save as draft").click()
    page.wait_for_url(re.compile(rf"/office/packs/{PACK}\?a=\d+&b=\d+"))
    assert "Draft browser-packs v2 saved" in page.get_by_role("status").first.inner_text()
    assert statuses(site) == [(1, "active"), (2, "draft")]

    # side by side: exactly the changed threshold is highlighted
    changed = page.locator("table.packs-diff tr.changed")
    assert changed.count() == 1
    cells = [c.strip() for c in changed.first.locator("td").all_inner_texts()]
    assert cells[0] == "phase-1" and cells[2] == "amount.pct_initial" and cells[3:5] == ["5", "3"]
    shot(page, "packs-side-by-side")

    # what-if: the draft would breach PK-DEEP, not PK-SHALLOW
    page.get_by_role("link", name="What-if: A vs B on history").click()
    page.get_by_label("Accounts bound to version A").check()
    page.get_by_role("button", name="Run the what-if").click()
    page.wait_for_selector("#result")
    assert "1 account would end differently" in page.locator("#result").inner_text()
    row = page.locator("table.packs-diff tr.changed")
    assert row.count() == 1
    text = row.first.inner_text()
    assert "PK-DEEP" in text and "breached (daily_loss)" in text and "96,000.00" in text and "97,000.00" in text
    shot(page, "packs-whatif")

    # activate, with the confirmation text
    page.goto(f"/office/packs/{PACK}")
    box = page.get_by_label(f"To activate v2, type: activate {PACK} v2")
    button = page.get_by_role("button", name="Activate v2")
    assert button.is_disabled()  # until the confirmation text is typed (the server checks it again)
    box.fill("activate it")
    assert button.is_disabled()
    box.fill(f"activate {PACK} v2")
    assert button.is_enabled()
    assert statuses(site) == [(1, "active"), (2, "draft")]
    button.click()
    assert "is now active" in page.locator(".flash").inner_text()
    assert statuses(site) == [(1, "retired"), (2, "active")]
    assert not script_errors(page)


def test_risk_can_look_and_back_test_but_not_edit(site, history, page_as, shot):
    page = page_as("risk", mobile=True)
    page.goto(f"/office/packs/{PACK}")
    assert page.get_by_role("heading", name=re.compile(PACK)).count() >= 1
    assert page.get_by_role("button", name=re.compile("Activate|Retire")).count() == 0
    assert page.get_by_role("link", name="Edit a new draft").count() == 0
    page.goto(f"/office/packs/{PACK}/whatif")
    page.get_by_role("button", name="Run the what-if").click()
    page.wait_for_selector("#result")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways at 390 px ({width} px)"
    shot(page, "packs-whatif-mobile")
    response = page.goto(f"/office/packs/{PACK}/draft")
    assert response.status == 403
    assert not script_errors(page)
