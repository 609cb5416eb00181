"""The payout queue pages on both backends: who may see and act, the queue's numbers, prepare → approve by
another finance user through the forms (the withdrawal event is written), the preparer refused, a
rejection the trader reads, a case that blocks, and user text escaped."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Payout
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account, open_case
from support.staff import build_world, seed
from support.web import browse


pytestmark = pytest.mark.usefixtures("cheap_argon2")

@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        world.life = add_life_pack(world.sessions, "fa")
        approve_kyc(world.sessions, world.traders["t1"])
        yield world


def requested(world, external_id: str, balance: str, **kwargs) -> tuple[int, int]:
    """A funded account of t1 with ``balance`` and a payout requested by the trader through the API."""
    account = funded_account(world.sessions, firm="fa", version_id=world.life, external_id=external_id,
                             trader_id=world.traders["t1"], balance=Decimal(balance), **kwargs)
    world.client.cookies.clear()
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=world.headers("trader")).json()
    assert payout["status"] == "requested", payout
    return account, payout["id"]


def flash(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def payout_row(world, payout_id: int) -> Payout:
    with world.sessions() as s:
        row = s.get(Payout, payout_id)
        s.expunge(row)
        return row


def test_who_may_read_and_act_on_the_payout_queue(world):
    account, payout = requested(world, "P1", "10500")
    for role in ("support", "trader"):
        page = browse(world, role)
        for url in ("/office/payouts", f"/office/payouts/{payout}"):
            assert page.get(url).status_code == 403, (role, url)
    for role in ("admin", "risk", "finance"):
        page = browse(world, role)
        queue = page.get("/office/payouts")
        assert queue.status_code == 200 and f'href="/office/payouts/{payout}"' in queue.text, role
        assert page.get(f"/office/payouts/{payout}").status_code == 200, role
    # risk reads but has no forms, and the server refuses its posts
    risk = browse(world, "risk")
    assert "Prepare payout" not in risk.get(f"/office/payouts/{payout}").text
    for action, data in (("prepare", {}), ("approve", {}), ("reject", {"reason": "no"})):
        assert risk.post_form(f"/office/payouts/{payout}/{action}", data).status_code == 403, action
    assert payout_row(world, payout).status == "requested"
    # another firm: the payout does not exist for it
    other = browse(world, "fb:admin")
    assert other.get(f"/office/payouts/{payout}").status_code == 404
    assert f"/office/payouts/{payout}" not in other.get("/office/payouts?status=all").text
    assert other.post_form(f"/office/payouts/{payout}/reject", {"reason": "not yours"}).status_code == 404
    assert other.post_form(f"/office/payouts/{payout}/prepare", {}).status_code == 404
    assert payout_row(world, payout).status == "requested"
    assert browse(world, "finance").get("/office/payouts/999999").status_code == 404
    # logged out: to the login form; a form without its CSRF token: refused
    world.client.cookies.clear()
    out = world.client.get(f"/office/payouts/{payout}", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"].startswith("/login")
    finance = browse(world, "finance")
    assert finance.post_form(f"/office/payouts/{payout}/prepare", {}, csrf=False).status_code == 403
    assert finance.post_form(f"/office/payouts/{payout}/reject", {"reason": "x"}, csrf=False).status_code == 403
    assert finance.post_form(f"/office/payouts/{payout}/reject", {"reason": "x"},
                             headers={"Origin": "https://evil.example"}).status_code == 403
    world.client.cookies.clear()
    assert world.client.post(f"/office/payouts/{payout}/approve", data={}).status_code in (401, 403)
    assert payout_row(world, payout).status == "requested"


def test_prepare_with_a_deduction_then_another_finance_user_approves_and_the_withdrawal_is_written(world):
    account, payout = requested(world, "P2", "10500", deductions=Decimal("100"))
    finance = browse(world, "finance")
    queue = finance.get("/office/payouts")
    assert "to be prepared" in queue.text and "320.00" in queue.text  # (500 − 100 deducted) × 80%, as requested
    assert 'data-testid="open-requested">320.00<' in queue.text
    # a deduction without its reason: the service's refusal, nothing changes
    missing = finance.post_form(f"/office/payouts/{payout}/prepare", {"deduction": "10"}, follow_redirects=True)
    assert "deduction_reason" in flash(missing) and payout_row(world, payout).status == "requested"
    bad = finance.post_form(f"/office/payouts/{payout}/prepare", {"deduction": "ten", "deduction_reason": "fee"},
                            follow_redirects=True)
    assert "decimal amount" in flash(bad) and payout_row(world, payout).status == "requested"
    note = "<script>x</script> wire fee"
    done = finance.post_form(f"/office/payouts/{payout}/prepare", {"deduction": "10", "deduction_reason": note},
                             follow_redirects=True)
    assert done.status_code == 200 and "prepared" in flash(done) and "312.00" in flash(done)
    assert "&lt;script&gt;x&lt;/script&gt; wire fee" in done.text and "<script>x</script>" not in done.text
    row = payout_row(world, payout)
    assert (row.status, row.trader_amount, row.manual_deduction) == ("prepared", Decimal("312"), Decimal("10"))
    # the steps exactly as stored by the service
    for step in row.steps:
        assert step["label"].replace("'", "&#39;") in done.text
    assert "You prepared this payout: another finance user must approve it." in done.text
    assert re.search(r'<button type="submit" disabled[^>]*>Approve payout</button>', done.text)
    # the preparer's approval: refused by the service, with its reason
    refused = finance.post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert "maker-checker: you prepared this payout" in flash(refused)
    assert payout_row(world, payout).status == "prepared"
    # a second finance user approves through the form: paid exactly the service's amount
    f2 = browse(world, add_user(world, firm="fa", role="finance", name="f2"))
    page = f2.get(f"/office/payouts/{payout}")
    assert re.search(r'<button type="submit" class="primary">Approve payout</button>', page.text)
    assert "Approvals: <strong>0 of 1</strong>" in page.text
    paid = f2.post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert "approved" in flash(paid) and "312.00" in flash(paid)
    assert 'data-testid="payout-status">approved<' in paid.text and "f2@fa.example" in paid.text
    row = payout_row(world, payout)
    assert (row.status, row.event_id, row.withdrawal) == ("approved", f"payout-{payout}", Decimal("500"))
    with world.sessions() as s:
        event = s.scalars(select(m.RawEvent).where(m.RawEvent.event_id == f"payout-{payout}")).one()
        assert b'"type": "balance"' in event.body and b'"amount": "-500"' in event.body
        assert b'"reason": "payout"' in event.body and b'"trader_amount": "312"' in event.body
    assert [e.entity_id for e in world.audit("payout.prepared")] == [str(payout)]
    assert [e.entity_id for e in world.audit("payout.approved")] == [str(payout)]
    # the queue: no longer open; listed with the approved ones, 1/1
    assert f'href="/office/payouts/{payout}"' not in f2.get("/office/payouts").text
    approved = f2.get("/office/payouts?status=approved").text
    assert f'href="/office/payouts/{payout}"' in approved and "1/1" in approved and "312.00" in approved


def test_dual_approval_shows_partially_approved_and_needs_a_second_approver(world):
    admin = world.headers("admin")
    world.client.cookies.clear()
    assert world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"},
                             headers=admin).status_code == 200
    account, payout = requested(world, "P3", "10500")
    finance = browse(world, "finance")
    finance.post_form(f"/office/payouts/{payout}/prepare", {})
    assert payout_row(world, payout).approvals_needed == 2
    f2 = browse(world, add_user(world, firm="fa", role="finance", name="f2"))
    page = f2.get(f"/office/payouts/{payout}").text
    assert "Needs 2 distinct approvers over 100.00" in page
    once = f2.post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert "recorded" in flash(once) and "partially approved" in once.text
    assert "You have approved this payout" in once.text
    assert re.search(r'<button type="submit" disabled[^>]*>Approve payout<', once.text)
    partial = f2.get("/office/payouts?status=partially_approved").text
    assert f'href="/office/payouts/{payout}"' in partial and "1/2" in partial
    assert f'href="/office/payouts/{payout}"' not in f2.get("/office/payouts?status=prepared").text
    twice = f2.post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert "already approved" in flash(twice)
    final = browse(world, "admin").post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert 'data-testid="payout-status">approved<' in final.text
    assert payout_row(world, payout).status == "approved"


def test_a_rejection_reason_reaches_the_trader_escaped_on_the_page(world):
    account, payout = requested(world, "P4", "10200")
    finance = browse(world, "finance")
    empty = finance.post_form(f"/office/payouts/{payout}/reject", {"reason": "  "}, follow_redirects=True)
    assert "reason" in flash(empty) and payout_row(world, payout).status == "requested"
    reason = "bank name <b>mismatch</b>"
    done = finance.post_form(f"/office/payouts/{payout}/reject", {"reason": reason}, follow_redirects=True)
    assert "rejected" in flash(done)
    assert "bank name &lt;b&gt;mismatch&lt;/b&gt;" in done.text and "<b>mismatch" not in done.text
    assert "Reject payout" not in done.text  # nothing left to decide
    world.client.cookies.clear()
    seen = world.client.get(f"/api/v1/payouts/{payout}", headers=world.headers("trader")).json()
    assert (seen["status"], seen["reason"]) == ("rejected", reason)
    assert [e.entity_id for e in world.audit("payout.rejected")] == [str(payout)]
    again = browse(world, "finance").post_form(f"/office/payouts/{payout}/reject", {"reason": "again"},
                                               follow_redirects=True)
    assert "only a requested or prepared payout can be rejected" in flash(again)


def test_an_open_case_blocks_the_payout_and_is_linked_for_risk(world):
    account, payout = requested(world, "P5", "10300")
    case = open_case(world, firm="fa", account_ids=[account], title="copy <ring>")
    risk = browse(world, "risk")
    row = re.search(rf'<tr data-payout="{payout}">.*?</tr>', risk.get("/office/payouts").text, re.S).group(0)
    assert "no_open_case" in row
    page = risk.get(f"/office/payouts/{payout}").text
    assert f'href="/office/cases/{case}"' in page and "copy &lt;ring&gt;" in page
    assert "1 check(s) fail now: no_open_case" in page
    finance = browse(world, "finance")
    page = finance.get(f"/office/payouts/{payout}").text
    assert f'href="/office/cases/{case}"' not in page and f"Case {case}" in page  # finance may not open cases
    refused = finance.post_form(f"/office/payouts/{payout}/prepare", {}, follow_redirects=True)
    assert "not eligible now" in flash(refused) and "no_open_case" in flash(refused)
    assert payout_row(world, payout).status == "requested"
    # a request made while the case is open is stored as refused, with the check that failed
    other = funded_account(world.sessions, firm="fa", version_id=world.life, external_id="P5.x",
                           trader_id=world.traders["t1"], balance=Decimal("10300"))
    world.client.cookies.clear()
    stored = world.client.post("/api/v1/payouts", json={"account_id": other}, headers=world.headers("trader")).json()
    assert stored["status"] == "refused"
    finance = browse(world, "finance")
    page = finance.get(f"/office/payouts/{stored['id']}").text
    assert "Refused because" in page and "no_open_case" in page and "Prepare payout" not in page
    row = re.search(rf'<tr data-payout="{stored["id"]}">.*?</tr>', finance.get("/office/payouts?status=refused").text,
                    re.S).group(0)
    assert "no_open_case" in row and "refused" in row


def test_scaling_reviews_are_read_by_finance_and_decided_by_risk(world):
    from propcrm.adapters.db.models_lifecycle import Scaling

    account = funded_account(world.sessions, firm="fa", version_id=world.life, external_id="S1",
                             trader_id=world.traders["t1"], balance=Decimal("10300"))
    with world.sessions.begin() as s:
        rows = [Scaling(firm_id="fa", account_id=account, lineage="S1", step=1, status="pending", open_slot=None,
                        from_size=Decimal("10000"), to_size=Decimal("12500"), from_split=Decimal("80"),
                        to_split=Decimal("90"), checks=[{"name": "profit", "ok": True, "reason": "1% <made>"}],
                        actor="system") for _ in range(2)]
        s.add_all(rows)
        s.flush()
        first, second = (r.id for r in rows)
    finance = browse(world, "finance")
    page = finance.get("/office/scalings")
    assert page.status_code == 200 and "12,500.00" in page.text and "1% &lt;made&gt;" in page.text
    assert "Approve scaling" not in page.text
    assert finance.post_form(f"/office/scalings/{first}/reject", {"reason": "no"}).status_code == 403
    for role in ("support", "trader"):
        assert browse(world, role).get("/office/scalings").status_code == 403
    assert f'data-scaling="{first}"' not in browse(world, "fb:admin").get("/office/scalings").text
    assert browse(world, "fb:admin").post_form(f"/office/scalings/{first}/reject",
                                               {"reason": "not yours"}).status_code == 404
    risk = browse(world, "risk")
    assert f"Approve scaling {first}" in risk.get("/office/scalings").text
    assert risk.post_form(f"/office/scalings/{first}/reject", {"reason": "x"}, csrf=False).status_code == 403
    rejected = risk.post_form(f"/office/scalings/{first}/reject", {"reason": "too <fast>"}, follow_redirects=True)
    assert f"Scaling {first} rejected" in flash(rejected) and "too &lt;fast&gt;" in rejected.text
    # approval checks the plan again: this account has no payout yet, so the service refuses and says why
    refused = risk.post_form(f"/office/scalings/{second}/approve", {}, follow_redirects=True)
    assert "no longer eligible" in flash(refused)
    with world.sessions() as s:
        assert (s.get(Scaling, first).status, s.get(Scaling, first).reason) == ("rejected", "too <fast>")
        assert s.get(Scaling, second).status == "pending"
    assert [e.entity_id for e in world.audit("scaling.rejected")] == [str(first)]


def test_the_queue_does_not_assess_each_open_payout_again(world, monkeypatch):
    """Issue 16's scale bound: the queue shows the stored checks (and an open case now) without running
    every check of each open payout (some 16 queries a row, seconds a page at 100,000 accounts); the
    payout's page still checks everything now."""
    _, payout = requested(world, "P9", "10300")
    from propcrm.services import payouts as payout_service

    calls = []
    real = payout_service.assess
    monkeypatch.setattr(payout_service, "assess", lambda *a, **k: calls.append(1) or real(*a, **k))
    finance = browse(world, "finance")
    queue = finance.get("/office/payouts")
    assert queue.status_code == 200 and f'<tr data-payout="{payout}">' in queue.text
    assert calls == []
    assert "Prepare payout" in finance.get(f"/office/payouts/{payout}").text and calls


def test_the_queues_open_case_check_is_the_per_account_one_asked_once(world):
    """The queue asks which open payouts an open case touches (on the account or one linked to it) once for the
    page: exactly what open_cases_touching says account by account, on link chains, a cycle, cases open, under
    review, dismissed and confirmed, and another firm's links and cases (which must not count)."""
    import datetime as dt

    from propcrm.adapters.db.models_analytics import AccountLink, Case, CaseAccount
    from propcrm.services.cases import accounts_with_open_cases, open_cases_touching
    from propcrm.services.catalog import create_account

    at = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    with world.sessions.begin() as s:
        ids = [create_account(s, firm_id="fa", external_id=f"L{n}", pack_version_id=world.life).id for n in range(12)]
        fb = s.scalar(select(m.Account.id).where(m.Account.firm_id == "fb"))

        def link(a, b, firm="fa"):
            s.add(AccountLink(firm_id=firm, account_a=a, account_b=b, via="ip", value=f"{a}-{b}", first_seen=at,
                              last_seen=at))

        def case(status, *accounts, firm="fa"):
            row = Case(firm_id=firm, detector="manual", fingerprint=f"{status}-{accounts}", status=status, title="t")
            s.add(row)
            s.flush()
            for a in accounts:
                s.add(CaseAccount(case_id=row.id, account_id=a, firm_id=firm))

        link(ids[0], ids[1]), link(ids[1], ids[2]), link(ids[2], ids[3])  # a chain 0-1-2-3, case on its far end
        case("open", ids[3])
        link(ids[4], ids[5]), link(ids[5], ids[6]), link(ids[6], ids[4])  # a cycle, case under review on 5
        case("under_review", ids[5])
        link(ids[7], ids[8])  # only closed cases
        case("dismissed", ids[7]), case("confirmed", ids[8])
        case("open", ids[9])  # alone, on itself
        link(ids[10], fb, firm="fb")  # another firm's link to an account with another firm's open case
        case("open", fb, firm="fb")
        s.flush()
        for include_linked in (True, False):
            want = {a for a in ids if open_cases_touching(s, firm_id="fa", account_ids=[a], include_linked=include_linked)}
            got = accounts_with_open_cases(s, firm_id="fa", account_ids=ids, include_linked=include_linked)
            assert got == want, include_linked
            assert got == (set(ids[:7]) | {ids[9]} if include_linked else {ids[3], ids[5], ids[9]})
            assert accounts_with_open_cases(s, firm_id="fa", account_ids=ids, include_linked=include_linked,
                                            chunk=2) == want
    # and on the page: a payout on an account linked to one under an open case shows no_open_case
    account, payout = requested(world, "P7", "10300")
    with world.sessions.begin() as s:
        s.add(AccountLink(firm_id="fa", account_a=account, account_b=ids[0], via="ip", value="p7", first_seen=at,
                          last_seen=at))
    row = re.search(rf'<tr data-payout="{payout}">.*?</tr>', browse(world, "finance").get("/office/payouts").text,
                    re.S).group(0)
    assert "no_open_case" in row


def test_the_payouts_export_lists_what_the_api_lists_newest_first_with_names(world):
    _, first = requested(world, "P7", "10400")
    _, second = requested(world, "P8", "10600")
    browse(world, "finance").post_form(f"/office/payouts/{first}/reject", {"reason": "duplicate"},
                                       follow_redirects=True)
    world.client.cookies.clear()
    listed = world.client.get("/api/v1/payouts", headers=world.headers("finance")).json()
    listed = listed["items"] if isinstance(listed, dict) else listed
    exported = list(csv.reader(io.StringIO(browse(world, "finance").get("/office/payouts.csv").text)))
    assert exported[0][:4] == ["id", "status", "account", "trader"]
    rows = exported[1:]
    assert [int(r[0]) for r in rows] == sorted((p["id"] for p in listed), reverse=True) == [second, first]
    assert [(r[1], r[2]) for r in rows] == [("requested", "P8"), ("rejected", "P7")]
    assert rows[0][3]  # the trader's name, not an id
    requested_only = list(csv.reader(io.StringIO(
        browse(world, "finance").get("/office/payouts.csv?status=requested").text)))[1:]
    assert [int(r[0]) for r in requested_only] == [second]
