"""The audit log viewer and the firm dashboard on both backends: who may open them, searching the firm's
entries (filters, keyset pages, another firm's entries never shown, user text escaped), "Verify chain"
(OK with the count and head hash of ``services.audit.verify``, the broken entry named after a row is
tampered with in SQL, the time budget), and the dashboard's numbers equal to ``services.business``."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Order, Payout
from propcrm.services import audit, business
from propcrm.web import queries_audit
from support.lifecycle import add_life_pack, funded_account
from support.staff import PASSWORD
from support import tamper
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

UTC = dt.timezone.utc


def login(world, email: str) -> None:
    world.client.cookies.clear()
    response = world.client.post("/api/v1/login", json={"firm": email.split("@")[1].split(".")[0], "email": email,
                                                         "password": PASSWORD})
    assert response.status_code == 200, response.text
    world.client.cookies.clear()


def add_entries(world, n: int, *, firm: str = "fa", **fields) -> None:
    with world.sessions.begin() as s:
        audit.append_many(s, [{"actor": fields.get("actor", f"user:{i}:bot@fa.example"),
                               "action": fields.get("action", "account.status"),
                               "entity": fields.get("entity", "account"),
                               "entity_id": fields.get("entity_id", str(1000 + i)),
                               "before": fields.get("before", {"status": "active"}),
                               "after": fields.get("after", {"status": "breached", "n": i}),
                               "ts": fields.get("ts"), "firm_id": firm} for i in range(n)])


def seqs(page_html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr id="entry-\d+" data-seq="(\d+)"', page_html)]


def entries(world, **where) -> list[m.AuditEntry]:
    with world.sessions() as s:
        query = select(m.AuditEntry).order_by(m.AuditEntry.seq.desc())
        for key, value in where.items():
            query = query.where(getattr(m.AuditEntry, key) == value)
        return list(s.scalars(query))


def attacker(world):
    """Direct write access to ``audit_log`` (on PostgreSQL: its append-only trigger disabled)."""
    return tamper.attacker(world.sessions.kw["bind"])


# --------------------------------------------------------------------------------------------------
# who may


def test_who_may_open_the_audit_log_and_the_dashboard(world):
    pages = {"/office/audit": ("admin", "risk"), "/office/audit/verify": ("admin", "risk"),
             "/office/audit?action=user.": ("admin", "risk"), "/office/dashboard": ("admin", "risk", "finance")}
    for url, allowed in pages.items():
        for role in ("admin", "risk", "finance", "support", "trader"):
            response = browse(world, role).get(url)
            assert response.status_code == (200 if role in allowed else 403), (url, role, response.status_code)
        world.client.cookies.clear()
        response = world.client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), url
    # the menu mirrors it
    assert 'href="/office/audit"' in browse(world, "risk").get("/office/dashboard").text
    assert 'href="/office/audit"' not in browse(world, "finance").get("/office/dashboard").text
    assert 'href="/office/dashboard"' in browse(world, "finance").get("/office/dashboard").text
    # risk opens the dashboard but not the business numbers the API keeps to admin and finance
    body = browse(world, "risk").get("/office/dashboard").text
    assert 'data-testid="liability"' not in body and 'data-testid="pass-rates"' not in body
    assert 'data-testid="statuses"' in body and 'data-testid="decisions-per-day"' in body
    assert world.client.get("/api/v1/metrics/business", headers=world.headers("risk")).status_code == 403
    admin = browse(world, "admin").get("/office/dashboard").text
    assert 'data-testid="liability"' in admin and 'data-testid="pass-rates"' in admin
    # verification reads only: it is not a form post
    assert browse(world, "admin").post_form("/office/audit/verify", {}).status_code == 405


# --------------------------------------------------------------------------------------------------
# search


def test_searching_by_action_finds_the_logins_of_the_firm_only(world):
    login(world, "risk@fa.example")
    login(world, "finance@fa.example")
    login(world, "admin@fb.example")
    page = browse(world, "fa:admin").get("/office/audit?action=user.login")
    assert page.status_code == 200
    logins = entries(world, action="user.login", firm_id="fa")
    assert len(logins) == 2
    assert seqs(page.text) == [e.seq for e in logins]  # newest first, only fa's
    assert "risk@fa.example" in page.text and "finance@fa.example" in page.text
    assert "admin@fb.example" not in page.text
    # the prefix "user." also finds user.create (seeding) but never another firm's
    page = browse(world, "fa:risk").get("/office/audit?action=user.")
    fa_user_entries = [e.seq for e in entries(world, firm_id="fa") if e.action.startswith("user.")]
    assert seqs(page.text) == fa_user_entries
    # and fb's admin sees fb's login, not fa's
    page = browse(world, "fb:admin").get("/office/audit?action=user.login")
    assert seqs(page.text) == [e.seq for e in entries(world, action="user.login", firm_id="fb")]
    assert "risk@fa.example" not in page.text
    # a "%" is a literal, not a wildcard
    assert seqs(browse(world, "fa:admin").get("/office/audit?action=%25login").text) == []


def test_filters_actor_entity_id_text_and_time_range(world):
    add_entries(world, 3, actor="cli:ops", action="pack.activate", entity="rule_pack", entity_id="two-step-100k",
                after={"note": "Grüße aus Zürich", "status": "active"}, ts=dt.datetime(2026, 3, 2, 14, 5, tzinfo=UTC))
    add_entries(world, 2, actor="cli:ops", action="pack.retire", entity="rule_pack", entity_id="old-pack",
                after={"status": "retired"}, ts=dt.datetime(2026, 3, 5, 9, 0, tzinfo=UTC))
    page = browse(world, "risk")
    packs = [e.seq for e in entries(world, firm_id="fa") if e.action.startswith("pack.")]
    assert len(packs) == 5
    assert seqs(page.get("/office/audit?actor=CLI:OPS").text) == packs  # case-insensitive "contains"
    assert seqs(page.get("/office/audit?entity=rule_pack&entity_id=old-pack").text) == packs[:2]
    assert seqs(page.get("/office/audit?text=retired").text) == packs[:2]
    assert seqs(page.get("/office/audit?text=Zürich").text) == packs[2:]  # non-ASCII text in the JSON
    assert seqs(page.get("/office/audit?since=2026-03-02&until=2026-03-02").text) == packs[2:]  # the whole day
    assert seqs(page.get("/office/audit?since=2026-03-02T14:06&actor=cli").text) == packs[:2]
    assert seqs(page.get(f"/office/audit?seq={packs[0]}").text) == [packs[0]]
    every_field_empty = page.get("/office/audit?actor=&action=pack.&entity=&entity_id=&since=&until=&text=&seq=")
    assert seqs(every_field_empty.text) == packs  # as the search form sends it
    assert page.get("/office/audit?seq=12x").status_code == 422
    bad = page.get("/office/audit?since=yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.text and 'value="yesterday"' in bad.text
    assert "No entries match these filters" in page.get("/office/audit?actor=nobody-at-all").text


def test_keyset_pages_walk_the_log_newest_first_without_gaps_or_repeats(world):
    add_entries(world, 120, action="decision.breach")
    page = browse(world, "admin")
    expected = [e.seq for e in entries(world, firm_id="fa", action="decision.breach")]
    url, seen, pages = "/office/audit?action=decision.", [], 0
    while url:
        body = page.get(url).text
        got = seqs(body)
        assert 0 < len(got) <= queries_audit.PAGE
        seen += got
        pages += 1
        older = re.search(r'href="(/office/audit\?[^"]*before=\d+)" rel="next"', body)
        url = html.unescape(older.group(1)) if older else None
    assert seen == expected and pages == 3
    # "Newer" from the last page leads back to the page before it
    body = page.get(f"/office/audit?action=decision.&before={expected[100 - 1]}").text
    assert seqs(body) == expected[100:]
    newer = re.search(r'href="(/office/audit\?[^"]*after=\d+)" rel="prev"', body)
    assert seqs(page.get(html.unescape(newer.group(1))).text) == expected[50:100]


def test_an_entry_expands_to_its_before_after_and_hashes_and_user_text_is_escaped(world):
    with world.sessions.begin() as s:
        entry = audit.append(s, actor="<script>alert('actor')</script>", action="trader.note", entity="trader",
                             entity_id="<b>7</b>", before={"note": None},
                             after={"note": "<img src=x onerror=alert(1)>", "amount": Decimal("1250.50")},
                             firm_id="fa")
    seq, digest, prev = entry.seq, entry.hash, entry.prev_hash
    body = browse(world, "risk").get("/office/audit?action=trader.note").text
    assert seqs(body) == [seq]
    assert "<script>alert('actor')</script>" not in body and "&lt;script&gt;alert(" in body
    assert "<b>7</b>" not in body and "&lt;b&gt;7&lt;/b&gt;" in body
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&#34;amount&#34;: &#34;1250.50&#34;" in body or '&quot;amount&quot;: &quot;1250.50&quot;' in body
    assert digest in body and prev in body


# --------------------------------------------------------------------------------------------------
# verify


def test_verify_chain_says_ok_with_the_services_count_and_head_hash_within_a_time_budget(world, monkeypatch):
    login(world, "risk@fa.example")
    with world.sessions() as s:
        expected = audit.verify(s)
        total = s.scalar(select(func.count()).select_from(m.AuditEntry))
    assert expected.ok and expected.entries == total > 5
    response = browse(world, "risk").get("/office/audit/verify")
    assert response.status_code == 200
    assert "The chain is intact" in response.text
    assert f'data-testid="verify-entries">{total}<' in response.text
    assert f'data-testid="verify-head">{expected.head_hash}<' in response.text
    with world.sessions() as s:  # reading wrote nothing
        assert s.scalar(select(func.count()).select_from(m.AuditEntry)) == total
    # one verification at a time per process
    assert queries_audit._running.acquire(blocking=False)
    try:
        busy = browse(world, "admin").get("/office/audit/verify")
        assert busy.status_code == 503 and "already running" in busy.text
    finally:
        queries_audit._running.release()
    # on a log too large for a page load it stops at its budget and says how far it got
    add_entries(world, 30)
    monkeypatch.setattr(queries_audit, "VERIFY_PAGE", 10)
    monkeypatch.setattr(queries_audit, "VERIFY_BUDGET_S", 0.0)
    body = browse(world, "admin").get("/office/audit/verify").text
    assert "Incomplete" in body and "No break in the first 10 entries" in body and f"of {total + 30}" in body
    assert "propcrm audit verify" in body


def test_verify_chain_names_the_entry_that_was_tampered_with(world):
    add_entries(world, 2, firm="fb", action="case.note", entity="case")
    add_entries(world, 5, action="payout.approved", entity="payout")
    # another firm's entry: named, not linked, its content not shown
    other = entries(world, firm_id="fb", action="case.note")[0]
    with attacker(world) as conn:
        conn.execute(text("UPDATE audit_log SET entity_id = 'x' WHERE seq = :seq"), {"seq": other.seq})
    body = browse(world, "fa:risk").get("/office/audit/verify").text
    assert f"The chain is broken at entry #{other.seq}" in body and "another firm" in body
    assert "in firm fb&#39;s chain" in body or "in firm fb's chain" in body  # which firm's chain broke
    assert f"seq={other.seq}" not in body
    with attacker(world) as conn:  # put it back: the chain verifies again
        conn.execute(text("UPDATE audit_log SET entity_id = :v WHERE seq = :seq"),
                     {"v": other.entity_id, "seq": other.seq})
    assert "The chain is intact" in browse(world, "fa:risk").get("/office/audit/verify").text
    # one of the firm's own entries: named and linked
    target = entries(world, firm_id="fa", action="payout.approved")[2].seq
    with attacker(world) as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = :seq"), {"seq": target})
    with world.sessions() as s:
        expected = audit.verify(s)
    assert not expected.ok and expected.first_bad_seq == target
    response = browse(world, "admin").get("/office/audit/verify")
    assert response.status_code == 200
    assert f"The chain is broken at entry #{target}" in response.text
    assert html.escape(expected.problem, quote=False).replace("'", "&#39;") in response.text or \
        f"entry #{target} was altered" in response.text
    assert f'href="/office/audit?seq={target}"' in response.text  # fa's own entry: linked
    assert "The chain is intact" not in response.text


# --------------------------------------------------------------------------------------------------
# dashboard


def _decision(s, account_id: int, kind: str, rule: str, ts: dt.datetime, phase: str = "phase-1") -> None:
    account = s.get(m.Account, account_id)
    s.add(m.Decision(firm_id=account.firm_id, account_id=account_id, event_seq=None, event_id=f"ev-{kind}-{ts}",
                     ts=ts, kind=kind, rule=rule, phase=phase, message=kind, value=Decimal("1"),
                     threshold=Decimal("1"), body=b"{}"))


def test_the_dashboard_shows_the_business_numbers_of_services_business(world):
    life = add_life_pack(world.sessions, "fa")
    funded_account(world.sessions, firm="fa", version_id=life, external_id="F1", trader_id=world.traders["t1"],
                   balance=Decimal("10450.37"))
    funded_account(world.sessions, firm="fa", version_id=life, external_id="F2", trader_id=world.traders["t2"],
                   balance=Decimal("10000.10"))
    now = dt.datetime.now(UTC).replace(microsecond=0)
    with world.sessions.begin() as s:
        a2, a3 = world.accounts["A2"], world.accounts["A3"]
        _decision(s, a2, "breach", "max_loss", now - dt.timedelta(days=2))
        _decision(s, a3, "phase_passed", "profit_target", now)
        _decision(s, world.accounts["B1"], "breach", "daily_loss", now)  # firm fb: not counted
        s.get(m.Account, a2).status = "breached"
        # revenue and an approved payout, so that the payout ratio is a number (812.34 ÷ 1,798.00)
        product = m.Product(firm_id="fa", name="<i>Two-step</i> 100k", pack_version_id=world.version["fa"],
                            account_size=Decimal("100000"), price=Decimal("599.00"), currency="USD")
        s.add(product)
        s.flush()
        s.get(m.Account, a3).product_id = product.id
        for amount, status in (("599.00", "paid"), ("1199.00", "paid"), ("599.00", "refunded")):
            s.add(Order(firm_id="fa", trader_id=world.traders["t1"], product_id=product.id, list_price=Decimal(amount),
                          discount=Decimal(0), amount=Decimal(amount), currency="USD", status=status))
        s.add(Payout(firm_id="fa", account_id=world.accounts["A1"], trader_id=world.traders["t1"], lineage="A1",
                     status="approved", requested_by="trader", trader_amount=Decimal("812.34")))
    with world.sessions() as s:
        expected = business.business_numbers(s, firm_id="fa")
    assert Decimal(expected["open_liability"]["total"]) > 0
    body = browse(world, "finance").get("/office/dashboard").text
    liability = re.search(r'data-testid="liability">([^<]*)<', body).group(1)
    assert liability == f"{Decimal(expected['open_liability']['total']):,.2f}"
    assert re.search(r'data-testid="paid">([^<]*)<', body).group(1) == \
        f"{Decimal(expected['payouts']['paid']):,.2f}"
    ratio = re.search(r'data-testid="payout-ratio">([^<]*)<', body).group(1)
    assert ratio == expected["payouts"]["payout_ratio"] == "0.4518"
    assert re.search(r'data-testid="revenue">([^<]*)<', body).group(1) == "1,798.00"
    assert "<i>Two-step</i>" not in body and "&lt;i&gt;Two-step&lt;/i&gt; 100k" in body  # a product name, escaped
    # the pass-rate table: one row per product and phase, the service's numbers
    table = body.split('data-testid="pass-rates"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>"
                      r"<td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td><td class=\"num\">(.*?)</td></tr>", table)
    assert [(r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows] == \
        [(g["phase"], g["accounts"], g["passed"], g["failed"], g["in_progress"]) for g in expected["pass_rates"]]
    assert [r[6].split(" ")[0] for r in rows] == [g["pass_rate"] or "—" for g in expected["pass_rates"]]
    breaches = body.split('data-testid="breaches"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td class=\"num\">(\d+)</td></tr>", breaches) == \
        [(b["rule"], b["phase"], str(b["count"])) for b in expected["breaches_by_rule"]]
    # the chart data embedded for the script carries the same numbers
    data = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', body, re.S).group(1)
    charts = json.loads(data)
    assert charts["pass_rates"]["passed"] == [g["passed"] for g in expected["pass_rates"]]
    assert sum(charts["statuses"]["counts"]) == 5  # A1..A3, F1, F2
    assert dict(zip(charts["statuses"]["labels"], charts["statuses"]["counts"]))["breached"] == 1
    # decisions per day: today has the pass (and fb's breach is not counted), two days ago the breach
    per_day = charts["decisions"]
    assert per_day["dates"][-1] == now.date().isoformat() and len(per_day["dates"]) == 30
    assert per_day["series"]["phase_passed"][-1] == 1 and per_day["series"]["breach"][-1] == 0
    assert per_day["series"]["breach"][-3] == 1 and sum(per_day["totals"]) == 2
    assert '<script src="/static/dashboard.js" defer></script>' in body
