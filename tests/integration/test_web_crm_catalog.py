"""Leads, products, discount codes and staff tasks in the back office (issue 16) on both backends: who may open
and act (role matrix; another firm's rows are 404), each action changes what the service says and is audited,
refusals name the field and change nothing, and every list exports as CSV with the page's filters."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import DiscountCode, Lead, StaffTask
from propcrm.services import lifecycle as lifecycle_service
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        yield world


def flash_of(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def post(world, who, path, data, follow=True):
    return browse(world, who).post_form(path, data, follow_redirects=follow)


def rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_who_may_open_the_pages(world):
    pages = {"/office/leads": ("admin", "support"), "/office/products": ("admin", "finance"),
             "/office/tasks": ("admin", "risk", "finance", "support"),
             "/office/leads.csv": ("admin", "support"), "/office/products.csv": ("admin", "finance"),
             "/office/discount-codes.csv": ("admin", "finance"),
             "/office/tasks.csv": ("admin", "risk", "finance", "support")}
    for url, allowed in pages.items():
        for role in ("admin", "risk", "finance", "support", "trader"):
            status = browse(world, role).get(url).status_code
            assert status == (200 if role in allowed else 403), (url, role, status)
    assert 'href="/office/leads"' in browse(world, "support").get("/office/tasks").text
    finance = browse(world, "finance").get("/office/tasks").text
    assert 'href="/office/products"' in finance and 'href="/office/leads"' not in finance
    assert 'href="/office/products"' not in browse(world, "risk").get("/office/tasks").text
    # acting without the role is refused and changes nothing
    assert post(world, "risk", "/office/leads", {"name": "Ann", "email": "ann@x.example", "source": "web"},
                follow=False).status_code == 403
    assert post(world, "support", "/office/discount-codes", {"code": "X", "off_kind": "percent", "off": "5"},
                follow=False).status_code == 403
    with world.sessions() as s:
        assert s.scalar(select(Lead.id)) is None and s.scalar(select(DiscountCode.id)) is None


def test_a_lead_is_captured_and_converted(world):
    answer = post(world, "support", "/office/leads", {"name": "Ann Lee", "email": "Ann@Leads.example",
                                                       "source": "affiliate:fx", "consent": "yes", "country": "cz"})
    assert "Lead Ann Lee saved." in flash_of(answer)
    assert "ann@leads.example" in answer.text and "Convert to trader" in answer.text
    refused = post(world, "support", "/office/leads", {"name": "Ann", "email": "not-an-address", "source": "web"})
    assert "Not saved: email:" in flash_of(refused)
    again = post(world, "support", "/office/leads", {"name": "Ann", "email": "ann@leads.example", "source": "web"})
    assert "already exists" in flash_of(again)
    with world.sessions() as s:
        lead = s.scalars(select(Lead)).one()
        assert (lead.country, lead.consent, lead.status) == ("CZ", True, "new")
    # another firm cannot convert it; the support desk can, once, and lands on the new trader's profile
    assert post(world, "fb:admin", f"/office/leads/{lead.id}/convert", {}, follow=False).status_code == 404
    with world.sessions() as s:
        assert s.get(Lead, lead.id).status == "new"
    desk = browse(world, "support")
    converted = desk.post_form(f"/office/leads/{lead.id}/convert", {})
    assert converted.status_code == 303 and converted.headers["location"].startswith("/office/traders/")
    profile = desk.get(converted.headers["location"])
    assert "Ann Lee" in profile.text and "Lead converted" in flash_of(profile)
    twice = post(world, "support", f"/office/leads/{lead.id}/convert", {})
    assert "already converted" in flash_of(twice)
    assert [e.action for e in world.audit("lead.capture")] == ["lead.capture"]
    assert len(world.audit("lead.convert")) == 1
    exported = rows(browse(world, "admin").get("/office/leads.csv?status=converted"))
    assert [(r["email"], r["status"], r["source"]) for r in exported] == [("ann@leads.example", "converted",
                                                                         "affiliate:fx")]
    assert rows(browse(world, "admin").get("/office/leads.csv?status=new")) == []


def test_products_are_created_edited_and_retired(world):
    version = world.version["fa"]
    made = post(world, "finance", "/office/products", {"name": "100k challenge", "pack_version_id": str(version),
                                                        "price": "540.00"})
    assert "Product 100k challenge created." in flash_of(made)
    with world.sessions() as s:
        product = s.scalars(select(m.Product).where(m.Product.firm_id == "fa")).one()
    assert f'data-product="{product.id}"' in made.text and "on sale" in made.text
    for bad, field in (({"price": "abc"}, "price"), ({"price": "1.001"}, "price"), ({"name": ""}, "name")):
        data = {"name": "100k challenge", "price": "499.00", **bad}
        assert f"Not saved: {field}" in flash_of(post(world, "finance", f"/office/products/{product.id}", data))
    saved = post(world, "finance", f"/office/products/{product.id}", {"name": "100k Classic", "price": "499.00"})
    assert "Product 100k Classic saved." in flash_of(saved)
    with world.sessions() as s:
        row = s.get(m.Product, product.id)
        assert (row.name, row.price, row.active) == ("100k Classic", Decimal("499.00"), True)
    [update] = world.audit("product.update")
    assert update.actor.startswith("user:") and "540" in str(update.before)
    # another firm: 404; retiring needs the tick
    assert post(world, "fb:admin", f"/office/products/{product.id}", {"name": "x", "price": "1"},
                follow=False).status_code == 404
    unticked = post(world, "admin", f"/office/products/{product.id}/retire", {})
    assert "tick the box" in flash_of(unticked)
    retired = post(world, "admin", f"/office/products/{product.id}/retire", {"confirm": "yes"})
    assert "retired" in flash_of(retired)
    with world.sessions() as s:
        assert s.get(m.Product, product.id).active is False
    assert "retired" in flash_of(post(world, "finance", f"/office/products/{product.id}/retire", {"confirm": "yes"}))
    assert "is retired" in flash_of(post(world, "finance", f"/office/products/{product.id}",
                                         {"name": "again", "price": "1"}))
    exported = rows(browse(world, "finance").get("/office/products.csv"))
    assert [(r["name"], r["price"], r["active"], r["on_sale"], r["rule_pack"]) for r in exported] == [
        ("100k Classic", "499", "false", "false", "two-step-100k v1")]  # exact, the same on both backends


def test_discount_codes_are_created_limited_and_retired(world):
    made = post(world, "finance", "/office/discount-codes", {"code": "spring10", "off_kind": "percent", "off": "10",
                                                              "max_uses": "3", "last_day": "2099-03-31"})
    assert "Discount code SPRING10 created." in flash_of(made)
    for bad, field in (({"off": "abc"}, "percent_off"), ({"off_kind": "both"}, "off_kind"),
                       ({"max_uses": "x"}, "max_uses"), ({"last_day": "31/03/2099"}, "due_on")):
        data = {"code": "OTHER", "off_kind": "percent", "off": "5", **bad}
        assert f"Not created: {field}" in flash_of(post(world, "finance", "/office/discount-codes", data))
    assert "Not created: off:" in flash_of(post(world, "finance", "/office/discount-codes",
                                                {"code": "OTHER", "off_kind": "amount", "off": ""}))
    with world.sessions() as s:
        code = s.scalars(select(DiscountCode)).one()
        assert code.expires_at == dt.datetime(2099, 4, 1, tzinfo=dt.timezone.utc) and code.max_uses == 3
        code_id = code.id
    assert "until 2099-03-31" in made.text
    saved = post(world, "admin", f"/office/discount-codes/{code_id}", {"max_uses": "", "last_day": ""})
    assert "SPRING10 saved." in flash_of(saved)
    with world.sessions() as s:
        row = s.get(DiscountCode, code_id)
        assert (row.max_uses, row.expires_at, row.active) == (None, None, True)
        s.execute(DiscountCode.__table__.update().values(uses=2))
        s.commit()
    assert "at least 2" in flash_of(post(world, "finance", f"/office/discount-codes/{code_id}", {"max_uses": "1"}))
    assert post(world, "fb:admin", f"/office/discount-codes/{code_id}/retire", {}, follow=False).status_code == 404
    assert "retired" in flash_of(post(world, "finance", f"/office/discount-codes/{code_id}/retire", {}))
    # a retired code prices no order
    with world.sessions() as s, pytest.raises(Exception, match="not a valid code"):
        lifecycle_service._discount(s, "fa", "SPRING10", Decimal("100"))
    assert [e.action for e in world.audit("discount.update")] == ["discount.update"]
    assert len(world.audit("discount.retire")) == 1
    exported = rows(browse(world, "finance").get("/office/discount-codes.csv"))
    assert [(r["code"], r["percent_off"], r["uses"], r["active"]) for r in exported] == [("SPRING10", "10", "2", "false")]


def test_tasks_on_a_trader_an_account_and_a_case(world):
    t1, t2 = world.traders["t1"], world.traders["t2"]
    risk_id = world.user_ids["fa:risk"]
    back = f"/office/traders/{t1}#tasks"
    made = post(world, "support", "/office/tasks", {"title": "Call about KYC", "trader_id": str(t1),
                                                     "due_on": "2020-01-02", "assigned_user_id": str(risk_id),
                                                     "back": back}, follow=False)
    assert made.status_code == 303 and made.headers["location"] == back
    profile = browse(world, "finance").get(f"/office/traders/{t1}")
    assert "Call about KYC" in profile.text and "overdue" in profile.text and "risk@fa.example" in profile.text
    by_account = post(world, "risk", "/office/tasks", {"title": "Check after NFP", "account": "A2",
                                                        "due_on": "2099-01-01"})
    assert "added" in flash_of(by_account)
    with world.sessions() as s:
        task = s.scalars(select(StaffTask).where(StaffTask.title == "Check after NFP")).one()
        assert (task.account_id, task.trader_id) == (world.accounts["A2"], t2)  # the account's trader filled in
    # refusals name the field and add nothing (each rule: tests/unit/test_staff_tasks.py; here the form's path)
    for data, field in (({"title": "x"}, "title"), ({"title": "Other firm", "account": "B1"}, "account"),
                        ({"title": "Bad day", "trader_id": str(t1), "due_on": "tomorrow"}, "due_on")):
        assert f"Not added: {field}" in flash_of(post(world, "admin", "/office/tasks", data)), data
    with world.sessions() as s:
        assert s.scalar(select(m.AuditEntry.seq).where(m.AuditEntry.action == "task.create").order_by(
            m.AuditEntry.seq.desc()).limit(1)) is not None
        assert len(list(s.scalars(select(StaffTask)))) == 2
    # the list: open by due day, "mine", "overdue"; assign and done; another firm's task is 404
    listing = browse(world, "risk").get("/office/tasks")
    assert listing.text.index("Call about KYC") < listing.text.index("Check after NFP")
    assert "Call about KYC" in browse(world, "risk").get("/office/tasks?view=mine").text
    assert "Call about KYC" not in browse(world, "admin").get("/office/tasks?view=mine").text
    overdue = browse(world, "admin").get("/office/tasks?view=overdue").text
    assert "Call about KYC" in overdue and "Check after NFP" not in overdue
    assert post(world, "fb:admin", f"/office/tasks/{task.id}/done", {}, follow=False).status_code == 404
    assigned = post(world, "admin", f"/office/tasks/{task.id}/assign",
                    {"assigned_user_id": str(world.user_ids["fa:support"])})
    assert "assigned" in flash_of(assigned)
    done = post(world, "support", f"/office/tasks/{task.id}/done", {"back": "https://evil.example/"}, follow=False)
    assert done.headers["location"] == "/office/tasks"  # never back to another site
    assert "already done" in flash_of(post(world, "support", f"/office/tasks/{task.id}/done", {}))
    assert "is done" in flash_of(post(world, "admin", f"/office/tasks/{task.id}/assign", {"assigned_user_id": ""}))
    with world.sessions() as s:
        row = s.get(StaffTask, task.id)
        assert (row.status, row.assigned_user_id, row.done_by) == (
            "done", world.user_ids["fa:support"], f"user:{world.user_ids['fa:support']}:support@fa.example")
        assert row.done_at is not None
    assert [len(world.audit(a)) for a in ("task.create", "task.assign", "task.done")] == [2, 1, 1]
    done_list = browse(world, "risk").get("/office/tasks?view=done").text
    assert "Check after NFP" in done_list and "Call about KYC" not in done_list
    # CSV with the page's view; another firm sees none of it
    exported = rows(browse(world, "finance").get("/office/tasks.csv?view=all"))
    assert {(r["task"], r["status"], r["trader"], r["account"]) for r in exported} == {
        ("Call about KYC", "open", "t1", ""), ("Check after NFP", "done", "t2", "A2")}
    assert [r["task"] for r in rows(browse(world, "finance").get("/office/tasks.csv?view=overdue"))] == [
        "Call about KYC"]
    assert rows(browse(world, "fb:admin").get("/office/tasks.csv?view=all")) == []
    assert "Call about KYC" not in browse(world, "fb:admin").get("/office/tasks?view=all").text


def test_the_payout_queue_shows_liability_to_whom_the_dashboard_does(world):
    """Risk does not see the firm's business numbers on the dashboard, so not on the payout queue either."""
    for role, shown in (("admin", True), ("finance", True), ("risk", False)):
        queue = browse(world, role).get("/office/payouts")
        dashboard = browse(world, role).get("/office/dashboard")
        assert queue.status_code == dashboard.status_code == 200
        assert ("Liability now" in queue.text) is shown, role
        assert ('data-testid="liability"' in queue.text) is shown is ('data-testid="liability"' in dashboard.text)


def test_the_dashboard_has_a_date_range(world):
    """The seed has one decision for each of fa's three accounts on 2026-03-02 (and one of fb's)."""
    admin = browse(world, "admin")

    def day_total(page, day):
        found = re.search(rf"<tr><td[^>]*>{day}</td>(.*?)</tr>", page.text, re.S)
        return int(re.findall(r'<td class="num">(\d+)</td>', found.group(1))[-1]) if found else None

    ranged = admin.get("/office/dashboard?from=2026-03-01&to=2026-03-03")
    assert ranged.status_code == 200
    assert day_total(ranged, "2026-03-02") == 3 and day_total(ranged, "2026-03-01") == 0
    assert day_total(ranged, "2026-03-04") is None and "3 decision(s) from 2026-03-01 to 2026-03-03" in ranged.text
    assert day_total(admin.get("/office/dashboard?from=2026-03-03&to=2026-03-10"), "2026-03-02") is None
    default = admin.get("/office/dashboard")
    assert day_total(default, "2026-03-02") is None and 'data-testid="range-problem"' not in default.text
    for bad, said in (("from=2026-03-05&to=2026-03-01", "from: must not be after to"),
                      ("from=yesterday", "dates such as"), ("from=2020-01-01&to=2026-03-03", "at most 366 days")):
        page = admin.get(f"/office/dashboard?{bad}")
        assert page.status_code == 200 and said in page.text, bad
    longest = admin.get("/office/dashboard?from=2020-01-01&to=2026-03-03")
    assert day_total(longest, "2026-03-02") == 3  # the range ends where asked, shortened at its start
    assert day_total(browse(world, "risk").get("/office/dashboard?from=2026-03-02&to=2026-03-02"), "2026-03-02") == 3


def test_the_breach_is_marked_on_the_equity_chart(world):
    """A1 (two-step-100k: daily floor 95,000) falls to 94,500.50: the chart's data carries the breach at the
    breaching decision's time, on the equity it saw and the level it crossed; the page says it in words."""
    world.ingest(
        {"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T09:00:00Z", "position": "p1",
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
        {"id": "e1", "type": "equity", "account": "A1", "ts": "2026-03-02T10:00:00Z", "equity": "99000",
         "balance": "100000"},
        {"id": "e2", "type": "equity", "account": "A1", "ts": "2026-03-02T11:30:00Z", "equity": "94500.50",
         "balance": "100000"})
    world.evaluate()
    account = world.accounts["A1"]
    doc = browse(world, "risk").get(f"/office/accounts/{account}/series.json").json()
    at = int(dt.datetime(2026, 3, 2, 11, 30, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert [(b["t"], b["rule"], b["value"], b["threshold"]) for b in doc["breaches"]] == [
        (at, "daily_loss", "94500.5", "95000")]
    sets = {s["label"]: s for s in doc["datasets"]}
    assert sets["Breach"]["data"] == [[at, "94500.5"]] and sets["Breach"]["marker"]
    assert sets["Breached level"]["data"] == [[at, "95000"]]
    assert [at, "94500.5"] in sets["Equity"]["data"]  # the mark sits on the equity line
    page = browse(world, "support").get(f"/office/accounts/{account}").text
    mark = re.search(r'data-testid="breach-mark">(.*?)</p>', page, re.S).group(1)
    assert "2026-03-02 11:30:00 UTC" in mark and "94,500.50 USD against 95,000.00 USD" in mark
    # an account without a breach has no mark
    quiet = browse(world, "risk").get(f"/office/accounts/{world.accounts['A2']}/series.json").json()
    assert quiet["breaches"] == [] and "Breach" not in {s["label"] for s in quiet["datasets"]}
    assert 'data-testid="breach-mark"' not in browse(world, "risk").get(f"/office/accounts/{world.accounts['A2']}").text


def test_the_default_whatif_replays_only_accounts_with_history(world):
    """Of fa's A1, A2, A3 (all bound to the active two-step-100k) only A2 has events: the default scopes
    spend their budget on it alone; a list of accounts is taken as given."""
    world.ingest({"id": "e1", "type": "equity", "account": "A2", "ts": "2026-03-02T10:00:00Z", "equity": "99000",
                  "balance": "100000"})
    world.evaluate()
    risk = browse(world, "risk")
    version = world.version["fa"]
    def selected(page):
        assert page.status_code == 200, page.text
        found = re.search(r"([\d,]+) accounts? replayed\s*\(([\d,]+) selected\)", page.text)
        return int(found.group(1)), int(found.group(2)), "have no stored events" in page.text

    for scope in ("bound", "pack"):
        # the budget is 2: before, the two newest accounts (A3, A2) were chosen and A3 replayed to nothing
        assert selected(risk.get(f"/office/packs/two-step-100k/whatif?run=true&a={version}&b={version}"
                                 f"&scope={scope}&limit=2")) == (1, 1, False), scope
    listed = risk.get(f"/office/packs/two-step-100k/whatif?run=true&a={version}&b={version}&scope=list"
                      "&accounts=A1%0AA3")
    assert selected(listed) == (0, 2, True)


def test_the_account_page_offers_a_task_prefilled(world):
    account = world.accounts["A2"]
    page = browse(world, "support").get(f"/office/accounts/{account}").text
    assert 'href="/office/tasks?account=A2#h-new-task"' in page
    form = browse(world, "support").get("/office/tasks?account=A2").text
    assert re.search(r'id="nt-account" name="account" maxlength="200" value="A2"', form)


def test_leads_and_discount_codes_are_listed_a_page_at_a_time(world):
    """A big firm's leads and codes (issue 16's scale bound): the pages show 50, newest first, with the
    total and a pager; the CSV export still has every row."""
    with world.sessions() as s:
        s.execute(Lead.__table__.insert(), [
            {"firm_id": "fa", "name": f"Lead {k:03d}", "email": f"lead{k:03d}@x.example", "source": "web",
             "consent": True, "status": "lost" if k % 4 == 0 else "new",
             "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)} for k in range(1, 121)])
        s.execute(DiscountCode.__table__.insert(), [
            {"firm_id": "fa", "code": f"CODE{k:03d}", "percent_off": Decimal(5), "uses": 0, "active": True,
             "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)} for k in range(1, 56)])
        s.commit()
    desk = browse(world, "support")
    first = desk.get("/office/leads")
    shown = re.findall(r"<th scope=\"row\">(Lead \d+)</th>", first.text)
    assert shown == [f"Lead {k:03d}" for k in range(120, 70, -1)] and "1–50 of 120" in first.text
    assert 'href="/office/leads?offset=50" rel="next"' in first.text and 'rel="prev"' not in first.text
    last = desk.get("/office/leads?offset=100")
    assert re.findall(r"<th scope=\"row\">(Lead \d+)</th>", last.text) == [f"Lead {k:03d}" for k in range(20, 0, -1)]
    assert 'rel="next"' not in last.text and 'href="/office/leads?offset=50" rel="prev"' in last.text
    lost = desk.get("/office/leads?status=lost")  # the filter counts and pages too
    assert "1–30 of 30" in lost.text and 'rel="next"' not in lost.text
    assert len(rows(browse(world, "admin").get("/office/leads.csv"))) == 120
    codes = browse(world, "finance").get("/office/products")
    assert re.findall(r'<tr data-code="(CODE\d+)">', codes.text) == [f"CODE{k:03d}" for k in range(55, 5, -1)]
    assert "1–50 of 55" in codes.text and 'href="/office/products?codes_offset=50#codes" rel="next"' in codes.text
    rest = browse(world, "finance").get("/office/products?codes_offset=50")
    assert re.findall(r'<tr data-code="(CODE\d+)">', rest.text) == [f"CODE{k:03d}" for k in range(5, 0, -1)]
    assert len(rows(browse(world, "finance").get("/office/discount-codes.csv"))) == 55
