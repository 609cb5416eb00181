"""The abuse-case pages of the back office through a TestClient, on SQLite and PostgreSQL.

Abuse is planted as a platform would report it (hedging between A1 and A2, which also share a device;
stale fills on A3 against stored reference prices), the analysis opens its cases, and the pages must
show the detector's exact numbers, let only risk and admin users see and act, and change the case
exactly as the JSON API would (timeline, audit log).
"""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import AccountLink, Case, CaseAccount, CaseNote
from propcrm.services import analysis
from support.analytics import new_case
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hedging_events(a: str, b: str, *, prefix: str = "h", start: dt.datetime = START, n: int = 4) -> list[dict]:
    """``a`` and ``b`` open opposite EURUSD positions 3 s apart, four times; each match loses 24.70 net."""
    events = []
    for k in range(n):
        t = start + dt.timedelta(minutes=20 * k)
        side_a, side_b = ("buy", "sell") if k % 2 == 0 else ("sell", "buy")
        events += [
            {"id": f"{prefix}{k}a-o", "type": "trade_opened", "account": a, "ts": iso(t), "position": f"pa{k}",
             "symbol": "EURUSD", "side": side_a, "lots": "1.00", "price": "1.08500"},
            {"id": f"{prefix}{k}b-o", "type": "trade_opened", "account": b, "ts": iso(t + dt.timedelta(seconds=3)),
             "position": f"pb{k}", "symbol": "EURUSD", "side": side_b, "lots": "1.10", "price": "1.08497"},
            {"id": f"{prefix}{k}a-c", "type": "trade_closed", "account": a, "ts": iso(t + dt.timedelta(minutes=10)),
             "position": f"pa{k}", "lots": "1.00", "price": "1.08620", "profit": "120.00", "commission": "-7.00"},
            {"id": f"{prefix}{k}b-c", "type": "trade_closed", "account": b,
             "ts": iso(t + dt.timedelta(minutes=10, seconds=2)), "position": f"pb{k}", "lots": "1.10",
             "price": "1.08617", "profit": "-130.00", "commission": "-7.70"},
        ]
    return events


def latency_events(account: str, *, prefix: str = "l", start: dt.datetime = START + dt.timedelta(hours=3),
                   n: int = 6) -> list[dict]:
    """Six XAUUSD buys filled at the ask of a quote that had already moved up 1.00 (3.33 spreads), all won."""
    events = []
    for k in range(n):
        t = start + dt.timedelta(minutes=5 * k)
        events += [
            {"id": f"{prefix}{k}q0", "type": "price", "ts": iso(t), "symbol": "XAUUSD", "bid": "2040.20",
             "ask": "2040.50"},
            {"id": f"{prefix}{k}q1", "type": "price", "ts": iso(t + dt.timedelta(seconds=2)), "symbol": "XAUUSD",
             "bid": "2041.20", "ask": "2041.50"},
            {"id": f"{prefix}{k}o", "type": "trade_opened", "account": account,
             "ts": iso(t + dt.timedelta(milliseconds=2500)), "order_ts": iso(t + dt.timedelta(seconds=1)),
             "position": f"lt{k}", "symbol": "XAUUSD", "side": "buy", "lots": "0.50", "price": "2040.50"},
            {"id": f"{prefix}{k}c", "type": "trade_closed", "account": account, "ts": iso(t + dt.timedelta(seconds=9)),
             "position": f"lt{k}", "lots": "0.50", "price": "2041.20", "profit": "35.00"},
        ]
    return events


def sessions_events(accounts: list[str], device: str, *, prefix: str = "s") -> list[dict]:
    return [{"id": f"{prefix}{i}", "type": "session", "account": a, "ts": iso(START - dt.timedelta(minutes=30 - i)),
             "ip": f"198.51.100.{10 + i}", "device": device} for i, a in enumerate(accounts)]


def plant(world) -> dict[str, int]:
    """Hedging A1↔A2 (and a shared device), stale fills on A3; one full analysis. Case ids by detector."""
    world.ingest(*sessions_events(["A1", "A2"], "dev-shared-1"), *hedging_events("A1", "A2"), *latency_events("A3"))
    world.evaluate()  # the analysis reads what the evaluation projected
    with world.sessions.begin() as s:
        analysis.run(s, firm_id="fa", full=True)
    with world.sessions() as s:
        return {c.detector: c.id for c in s.scalars(select(Case).where(Case.firm_id == "fa"))}


def text_of(html: str) -> str:
    """The page's visible text, whitespace collapsed (what a user reads)."""
    html = re.sub(r"<script\b.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def flash_of(response) -> str:
    from urllib.parse import unquote

    cookie = response.cookies.get("propcrm_flash")
    return unquote(cookie) if cookie else ""


# --------------------------------------------------------------------------------------------------


def test_the_case_list_shows_the_planted_cases_strongest_first_with_counts_and_filters(world):
    ids = plant(world)
    assert {"hedging", "latency", "linkage"} <= set(ids), ids
    page = browse(world, "risk")
    response = page.get("/office/cases")
    assert response.status_code == 200
    html = response.text
    listed = [int(x) for x in re.findall(r'<tr data-case="(\d+)"', html)]
    with world.sessions() as s:
        expected = [c.id for c in s.scalars(select(Case).where(Case.firm_id == "fa")
                                            .order_by(Case.score.desc(), Case.id.desc()))]
    assert listed == expected  # strongest evidence first, as the API lists them
    assert 'data-status="active"' in html and re.search(r'Open or under review <span class="badge"[^>]*>(\d+)<', html).group(1) \
        == str(len(expected))
    # filter by kind, by status, assigned to me
    only = page.get("/office/cases?kind=latency").text
    assert re.findall(r'<tr data-case="(\d+)"', only) == [str(ids["latency"])]
    assert 'href="/office/accounts/%d">A3</a>' % world.accounts["A3"] in only
    assert "No cases match" in page.get("/office/cases?status=dismissed").text
    assert "No cases match" in page.get("/office/cases?mine=1").text
    assert page.post_form(f"/office/cases/{ids['latency']}/assign",
                          {"user_id": str(world.user_ids["fa:risk"])}).status_code == 303
    mine = page.get("/office/cases?mine=1").text
    assert re.findall(r'<tr data-case="(\d+)"', mine) == [str(ids["latency"])] and "risk@fa.example" in mine
    # another firm sees none of them
    assert "No cases match" in browse(world, "fb:risk").get("/office/cases?status=all").text


def test_the_case_page_shows_the_graph_the_matched_trades_and_the_risk_reasons(world):
    ids = plant(world)
    a1, a2, a3 = (world.accounts[x] for x in ("A1", "A2", "A3"))
    page = browse(world, "admin")
    response = page.get(f"/office/cases/{ids['hedging']}")
    assert response.status_code == 200, response.text
    html = response.text
    text = text_of(html)
    # header: kind, status, strength, the accounts linking to their pages
    assert f"Case {ids['hedging']}: Cross-account hedging" in text and "open" in text
    for account_id, name in ((a1, "A1"), (a2, "A2")):
        assert f'<a href="/office/accounts/{account_id}">{name}</a>' in html
    # the graph: both accounts as nodes, the hedging pair and the shared device as labelled edges
    svg = re.search(r'<svg id="link-graph".*?</svg>', html, re.S).group(0)
    assert 'data-account="A1"' in svg and 'data-account="A2"' in svg
    assert re.search(r"<title>A1 — A2: [^<]*shared device dev-shared-1[^<]*hedging pair: 4 matched", svg)
    assert "hedging ×4" in svg
    assert "shared device" in re.search(r'<table id="link-list">.*?</table>', html, re.S).group(0)
    # matched trades: every trade with the platform's text, the combined P/L exact
    assert 'data-testid="combined-profit">-98.80<' in html
    table = re.search(r'<table class="matched">.*?</table>', html, re.S).group(0)
    assert table.count('class="match-start"') == 4
    for cell in ("1.08500", "1.08497", "1.08620", "1.08617", "113.00", "-137.70", "3.0 s", "2026-03-02 09:00:00 UTC"):
        assert cell in table, cell
    # the chart's data: one row per account, one segment per trade, times in epoch ms
    import json
    charts = json.loads(re.search(r'<script type="application/json" id="case-charts">(.*?)</script>', html, re.S).group(1))
    assert charts["matched"]["accounts"] == ["A1", "A2"] and len(charts["matched"]["segments"]) == 8
    first = charts["matched"]["segments"][0]
    assert first["start"] == int(START.timestamp() * 1000) and first["end"] == int(
        (START + dt.timedelta(minutes=10)).timestamp() * 1000)
    assert len(charts["matched"]["matches"]) == 4 and charts["latency"] is None
    assert '<script src="/static/cases.js" defer></script>' in html
    # the risk score of each account with its top reasons
    risk = re.search(r'<section[^>]*aria-labelledby="risk-heading">.*?</section>', html, re.S).group(0)
    assert "flagged by the hedging detector" in risk and 'data-account="A1"' in risk and 'data-account="A2"' in risk
    assert "Every feature of A1" in risk and "share of trades held under 60 s" in risk  # values, alarm levels, percentiles
    # the timeline starts with the analysis
    assert "opened by the analysis" in re.search(r'<ol id="timeline".*?</ol>', html, re.S).group(0)

    # an account linked to A2 by a stored link (not in the case) is drawn too, as a linked node
    other = world.new_account(trader="t2")
    with world.sessions.begin() as s:
        s.add(AccountLink(firm_id="fa", account_a=min(a2, other), account_b=max(a2, other), via="ip",
                          value="2001:db8:1:2::/64", first_seen=START, last_seen=START))
        external = s.get(m.Account, other).external_id
    svg = re.search(r'<svg id="link-graph".*?</svg>', page.get(f"/office/cases/{ids['hedging']}").text, re.S).group(0)
    node = re.search(rf'<a href="/office/accounts/{other}" class="node" data-account="{external}">\s*<title>([^<]*)</title>', svg)
    assert node and node.group(1) == f"{external} (active), linked to the case's accounts"
    assert re.search(rf"<title>A2 — {external}: shared IP 2001:db8:1:2::/64; same trader \(CRM trader \d+\)</title>", svg)

    # the linkage case: three accounts (A3 is t1's, like A1), the device and the trader as links
    html = page.get(f"/office/cases/{ids['linkage']}").text
    svg = re.search(r'<svg id="link-graph".*?</svg>', html, re.S).group(0)
    assert {'data-account="A1"', 'data-account="A2"', 'data-account="A3"'} <= set(re.findall(r'data-account="A\d"', svg))
    links = text_of(re.search(r'<table id="link-list">.*?</table>', html, re.S).group(0))
    assert "A1 A2 shared device" in links and "A1 A3 same trader" in links
    assert f'href="/office/accounts/{a3}"' in svg


def test_the_latency_case_shows_each_fill_against_the_stored_reference_prices(world):
    ids = plant(world)
    html = browse(world, "risk").get(f"/office/cases/{ids['latency']}").text
    fills = re.search(r'<table id="latency-fills">.*?</table>', html, re.S).group(0)
    assert fills.count("<tr data-fill=") == 6
    row = text_of(re.search(r'<tr data-fill="1">.*?</tr>', fills, re.S).group(0))
    # fill 2040.50 against the quote at the fill (bid 2041.20, ask 2041.50): 1.00 in the trader's favour, exactly
    assert "2040.50 2041.20 2041.50 1.00 3.33 35.00" in row, row
    assert "2026-03-02 12:00:02.500 UTC ordered 2026-03-02 12:00:01.000 UTC" in row
    # the reference stream around the first fill, in the platform's text, the quote at the fill marked
    quotes = text_of(re.search(r'<details open class="latency-fill" data-fill="1">.*?</details>', html, re.S).group(0))
    assert "2026-03-02 12:00:00.000 UTC 2040.20 2040.50 the quote when the order was sent" in quotes
    assert "2026-03-02 12:00:02.000 UTC 2041.20 2041.50 the quote at the fill" in quotes
    import json
    charts = json.loads(re.search(r'id="case-charts">(.*?)</script>', html, re.S).group(1))
    first = charts["latency"][0]
    assert first["fill"] == "2040.50" and [q["ask"] for q in first["quotes"]] == ["2040.50", "2041.50"]
    assert "6 of 6 fills at stale prices" in text_of(html)


def test_assign_note_review_and_confirm_through_the_forms_change_the_case_and_are_audited(world):
    ids = plant(world)
    case_id, url = ids["hedging"], f"/office/cases/{ids['hedging']}"
    page = browse(world, "risk")
    # assign to the admin (from the select list), then a note with HTML in it
    html = page.get(url).text
    assert f'<option value="{world.user_ids["fa:admin"]}">admin@fa.example (admin)</option>' in html
    assert "finance@fa.example" not in html  # only risk and admin users can be assigned
    done = page.post_form(f"{url}/assign", {"user_id": str(world.user_ids["fa:admin"])})
    assert done.status_code == 303 and done.headers["location"] == url and flash_of(done) == "Case assigned"
    done = page.post_form(f"{url}/notes", {"text": "<script>alert(1)</script> same household?"})
    assert done.status_code == 303 and flash_of(done) == "Note added to the timeline"
    html = page.get(url).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; same household?" in html and "<script>alert(1)" not in html
    assert 'data-testid="case-assignee">admin@fa.example<' in html
    assert "assigned to admin@fa.example" in text_of(html)
    # a refusal comes back as the service's words, and changes nothing
    bad = page.post_form(f"{url}/status", {"status": "confirmed", "reason": "obvious"})
    assert bad.status_code == 303
    assert flash_of(bad) == f"Not done: case {case_id} is open: it cannot become confirmed; allowed: under_review, dismissed"
    short = page.post_form(f"{url}/status", {"status": "under_review", "reason": " x"})
    assert "reason" in flash_of(short) and flash_of(short).startswith("Not done")
    wrong = page.post_form(f"{url}/assign", {"user_id": str(world.user_ids["fa:finance"])})
    assert flash_of(wrong).startswith("Not done: `user_id`")
    assert page.post_form(f"{url}/assign", {"user_id": "abc"}).status_code == 303
    with world.sessions() as s:
        assert s.get(Case, case_id).status == "open" and s.get(Case, case_id).assigned_user_id == world.user_ids["fa:admin"]
    # under review, then confirmed with enforcement: the accounts are emergency-stopped, as through the API
    assert flash_of(page.post_form(f"{url}/status", {"status": "under_review", "reason": "pulling the trades"})) \
        == f"Case {case_id} is now under review"
    html = page.get(url).text
    assert '<option value="confirmed">Confirm abuse</option>' in html and 'id="enforce"' in html
    done = page.post_form(f"{url}/status", {"status": "confirmed", "reason": "same device, opposite trades",
                                            "enforce": "1"})
    assert "emergency-stopped" in flash_of(done)
    with world.sessions() as s:
        case = s.get(Case, case_id)
        assert case.status == "confirmed" and case.resolution == "same device, opposite trades" and case.closed_at
        kinds = list(s.scalars(select(CaseNote.kind).where(CaseNote.case_id == case_id).order_by(CaseNote.id)))
        assert kinds == ["evidence", "assign", "note", "status", "status", "status"]
    assert world.status_of(world.accounts["A1"]) == "suspended" and world.status_of(world.accounts["A2"]) == "suspended"
    assert [e.after["status"] for e in world.audit("case.status")] == ["under_review", "confirmed"]
    assert [e.actor for e in world.audit("case.note")] == [f"user:{world.user_ids['fa:risk']}:risk@fa.example"]
    assert world.audit("case.assign")[-1].after == {"assigned_user_id": world.user_ids["fa:admin"]}
    assert {e.entity_id for e in world.audit("account.emergency_stop")} >= {"A1", "A2"}
    html = page.get(url).text
    assert 'data-testid="case-resolution">same device, opposite trades<' in html
    assert "open → under_review: pulling the trades" in unescape(html)


def test_dismiss_and_unassign_through_the_forms(world):
    case_id = new_case(world, account="A2")
    url = f"/office/cases/{case_id}"
    page = browse(world, "admin")
    page.post_form(f"{url}/assign", {"user_id": str(world.user_ids["fa:risk"])})
    assert flash_of(page.post_form(f"{url}/assign", {"user_id": ""})) == "Case unassigned"
    refused = page.post_form(f"{url}/status", {"status": "dismissed", "reason": "noise", "enforce": "1"})
    assert flash_of(refused) == "Not done: `enforce`: only a confirmation enforces"
    done = page.post_form(f"{url}/status", {"status": "dismissed", "reason": "a family account, checked"})
    assert flash_of(done) == f"Case {case_id} is now dismissed"
    with world.sessions() as s:
        case = s.get(Case, case_id)
        assert case.status == "dismissed" and case.assigned_user_id is None
    assert world.status_of(world.accounts["A2"]) == "active"
    assert [e.after["assigned_user_id"] for e in world.audit("case.assign")] == [world.user_ids["fa:risk"], None]
    html = page.get(url).text
    assert 'data-testid="case-status">dismissed<' in html and '<option value="open">Reopen</option>' in html


def test_only_risk_and_admin_users_of_the_firm_see_or_act_on_cases(world):
    case_id = new_case(world, account="A1")  # the trader user's own account
    url = f"/office/cases/{case_id}"
    gets = ("/office/cases", url)
    posts = ((f"{url}/assign", {"user_id": ""}), (f"{url}/notes", {"text": "hello there"}),
             (f"{url}/status", {"status": "dismissed", "reason": "mine mine"}), ("/office/cases/analyse", {}))
    for who in ("finance", "support", "trader"):
        page = browse(world, who)
        for path in gets:
            assert page.get(path).status_code == 403, (who, path)
        for path, data in posts:
            assert page.post_form(path, data).status_code == 403, (who, path)
    for who in ("risk", "admin"):
        page = browse(world, who)
        for path in gets:
            assert page.get(path).status_code == 200, (who, path)
    # logged out: to the login page
    world.client.cookies.clear()
    for path in gets:
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    # another firm's case does not exist for them, for reading or acting
    other = browse(world, "fb:risk")
    assert other.get(url).status_code == 404
    for path, data in posts[:3]:
        assert other.post_form(path, data).status_code == 404, path
    assert browse(world, "risk").get("/office/cases/999999").status_code == 404
    # a form without the CSRF token is refused
    page = browse(world, "risk")
    for path, data in posts:
        assert page.post_form(path, data, csrf=False).status_code == 403, path
    with world.sessions() as s:
        case = s.get(Case, case_id)
        assert case.status == "open" and case.assigned_user_id is None
        assert s.scalar(select(CaseNote.id).where(CaseNote.case_id == case_id, CaseNote.kind == "note")) is None
    assert world.audit("case.note") == [] and world.audit("case.status") == []


def test_the_analyse_button_runs_an_incremental_pass_and_new_cases_appear(world):
    page = browse(world, "risk")
    assert "No cases match" in page.get("/office/cases").text
    world.ingest(*hedging_events("A1", "A2"))
    world.evaluate()
    done = page.post_form("/office/cases/analyse", {})
    assert done.status_code == 303 and done.headers["location"] == "/office/cases"
    assert flash_of(done).startswith("Analysis (full) read") and "opened" in flash_of(done)
    with world.sessions() as s:
        members = set(s.scalars(select(CaseAccount.account_id).join(Case, Case.id == CaseAccount.case_id)
                                .where(Case.detector == "hedging")))
    assert members == {world.accounts["A1"], world.accounts["A2"]}
    assert "Cross-account hedging" in page.get("/office/cases").text
