"""Abuse cases in a real browser: abuse planted through the platform API, the analysis run from the
page, the case's graph and charts drawn, and a dismissal through the form."""

from __future__ import annotations

import datetime as dt
import itertools
import re

from sqlalchemy import select

UTC = dt.timezone.utc
_batch = itertools.count(1)


def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hedging(a: str, b: str, start: dt.datetime, prefix: str, n: int = 4) -> list[dict]:
    """``a`` and ``b`` open opposite EURUSD positions 3 s apart ``n`` times (each match: net −24.70)."""
    events = []
    for k in range(n):
        t = start + dt.timedelta(minutes=12 * k)
        side_a, side_b = ("buy", "sell") if k % 2 == 0 else ("sell", "buy")
        events += [
            {"id": f"{prefix}-{k}a-o", "type": "trade_opened", "account": a, "ts": iso(t), "position": f"pa{k}",
             "symbol": "EURUSD", "side": side_a, "lots": "1.00", "price": "1.08500", "device": f"{prefix}-laptop"},
            {"id": f"{prefix}-{k}b-o", "type": "trade_opened", "account": b, "ts": iso(t + dt.timedelta(seconds=3)),
             "position": f"pb{k}", "symbol": "EURUSD", "side": side_b, "lots": "1.10", "price": "1.08497",
             "device": f"{prefix}-laptop"},
            {"id": f"{prefix}-{k}a-c", "type": "trade_closed", "account": a, "ts": iso(t + dt.timedelta(minutes=6)),
             "position": f"pa{k}", "lots": "1.00", "price": "1.08620", "profit": "120.00", "commission": "-7.00"},
            {"id": f"{prefix}-{k}b-c", "type": "trade_closed", "account": b,
             "ts": iso(t + dt.timedelta(minutes=6, seconds=2)), "position": f"pb{k}", "lots": "1.10",
             "price": "1.08617", "profit": "-130.00", "commission": "-7.70"},
        ]
    return events


def _wait_evaluated(site, account_ids: list[int], *, closed: int, timeout: float = 20.0) -> None:
    import time

    from sqlalchemy import func

    from propcrm.adapters.db import models as m

    deadline = time.monotonic() + timeout
    while True:
        with site.sessions() as s:
            done = s.scalar(select(func.count()).select_from(m.Trade).where(
                m.Trade.account_id.in_(account_ids), m.Trade.status == "closed"))
        if done >= closed:
            return
        assert time.monotonic() < deadline, f"{done} of {closed} trades evaluated\n{site.log_tail()}"
        time.sleep(0.1)


def _plant_hedging_case(site, page):
    """Two accounts of different traders hedge each other; the risk user runs the analysis from the list."""
    a, b = site.new_account(trader="t1"), site.new_account(trader="t2")
    batch = next(_batch)
    prefix = f"cases{batch}-{a['external_id']}"
    # each batch in its own hours: two pairs trading the same seconds would look like a crowd, not a pair
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1 + 2 * batch)
    site.post_events(hedging(a["external_id"], b["external_id"], start, prefix))
    _wait_evaluated(site, [a["id"], b["id"]], closed=8)  # the analysis reads what the evaluation projected
    page.goto("/office/cases")
    page.get_by_role("button", name="Analyse new events now").click()
    page.wait_for_url("**/office/cases")
    assert "Analysis" in page.get_by_role("status").first.inner_text()
    from propcrm.adapters.db import models as m
    from propcrm.adapters.db.models_analytics import Case, CaseAccount

    with site.sessions() as s:
        case_id = s.scalar(select(Case.id).join(CaseAccount, CaseAccount.case_id == Case.id)
                           .where(Case.detector == "hedging", CaseAccount.account_id == a["id"]))
        assert case_id is not None, site.log_tail()
        assert s.get(m.Account, b["id"]).external_id == b["external_id"]
    return case_id, a, b


def test_a_risk_officer_reads_a_hedging_case_and_dismisses_it(site, page_as, shot):
    page = page_as("risk")
    case_id, a, b = _plant_hedging_case(site, page)
    # the list links to the case, strongest first
    page.console_errors.clear()  # from here on: the case page's own (scripts, CSP, resources)
    page.get_by_role("link", name=f"Case {case_id}", exact=True).click()
    page.wait_for_url(f"**/office/cases/{case_id}")
    assert page.get_by_role("heading", level=1).inner_text().startswith(f"Case {case_id}: Cross-account hedging")
    # the graph: both accounts as nodes (links to their pages), the hedging pair and the shared device
    graph = page.locator("#link-graph")
    for account in (a, b):
        node = graph.locator(f'a[data-account="{account["external_id"]}"]')
        assert node.count() == 1 and node.get_attribute("href") == f"/office/accounts/{account['id']}"
    assert "hedging ×4" in graph.inner_html()
    assert graph.bounding_box()["width"] > 300
    # the matched trades on one time axis: Chart.js drew on the canvas; the table has the exact figures
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('matched-chart'))")
    drawn = page.evaluate("() => { const c = Chart.getChart(document.getElementById('matched-chart'));"
                          " return [c.data.datasets.length, c.data.datasets[0].data.length]; }")
    assert drawn == [3, 12]  # two accounts (4 trades × 3 points) and the match links
    assert page.get_by_test_id("combined-profit").inner_text() == "-98.80"
    assert page.locator("table.matched tr.match-start").count() == 4
    # pick one match: the axis narrows to it
    window = page.get_by_label("Time window")
    assert window.locator("option").last.inner_text().startswith("Match 4 of pair 1")
    window.select_option(index=window.locator("option").count() - 1)
    span = page.evaluate("() => { const x = Chart.getChart(document.getElementById('matched-chart')).scales.x;"
                         " return x.max - x.min; }")
    assert span < 15 * 60 * 1000
    page.get_by_label("Time window").select_option(index=0)
    assert page.console_errors == []
    shot(page, "case-page")
    # dismiss with a reason
    page.get_by_label("New status").select_option("dismissed")
    page.get_by_label("Reason (required").fill("Two brothers trading the same news; accounts checked by phone")
    page.get_by_role("button", name="Move the case").click()
    page.wait_for_url(f"**/office/cases/{case_id}")
    assert page.get_by_role("status").first.inner_text() == f"Case {case_id} is now dismissed"
    assert page.get_by_test_id("case-status").inner_text() == "dismissed"
    assert "Two brothers" in page.locator("#timeline").inner_text()
    from propcrm.adapters.db.models_analytics import Case

    with site.sessions() as s:
        case = s.get(Case, case_id)
        assert case.status == "dismissed" and case.resolution.startswith("Two brothers")


def test_a_note_and_an_assignment_on_a_phone_and_other_roles_see_no_cases(site, page_as, shot):
    risk = page_as("risk", mobile=True)
    case_id, a, _b = _plant_hedging_case(site, risk)
    risk.goto(f"/office/cases/{case_id}")
    # usable at 390 px: nothing wider than the screen but the scrollable tables
    width = risk.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 392, width
    risk.get_by_label("Assign to").select_option(label="risk@acme.example (risk)")
    risk.get_by_role("button", name="Assign").click()
    risk.wait_for_url(f"**/office/cases/{case_id}")
    assert risk.get_by_test_id("case-assignee").inner_text() == "risk@acme.example"
    risk.get_by_label("Note", exact=True).fill("<b>called the trader</b>")
    risk.get_by_role("button", name="Add note").click()
    risk.wait_for_url(f"**/office/cases/{case_id}")
    assert "<b>called the trader</b>" in risk.locator("#timeline").inner_text()  # shown as text, not markup
    assert risk.locator("#timeline b").count() == 0
    shot(risk, "case-page-mobile")
    for role in ("finance", "support", "trader"):
        page = page_as(role)
        menu = page.get_by_role("navigation", name="Main").inner_text()
        assert "Cases" not in menu
        response = page.goto(f"/office/cases/{case_id}")
        assert response.status == 403, role
        assert a["external_id"] not in page.content()


def test_a_latency_case_shows_each_stale_fill_against_the_reference_quotes(site, page_as, shot):
    account = site.new_account(trader="t2")
    name, batch = account["external_id"], next(_batch)
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1 + 2 * batch)
    events = []
    for k in range(6):  # XAUUSD buys filled at the ask of a quote that had already moved up 1.00
        t = start + dt.timedelta(minutes=5 * k)
        events += [
            {"id": f"lat{batch}-{k}q0", "type": "price", "ts": iso(t), "symbol": "XAUUSD", "bid": "2040.20", "ask": "2040.50"},
            {"id": f"lat{batch}-{k}q1", "type": "price", "ts": iso(t + dt.timedelta(seconds=2)), "symbol": "XAUUSD",
             "bid": "2041.20", "ask": "2041.50"},
            {"id": f"lat{batch}-{k}o", "type": "trade_opened", "account": name, "ts": iso(t + dt.timedelta(seconds=2.5)),
             "order_ts": iso(t + dt.timedelta(seconds=1)), "position": f"lt{k}", "symbol": "XAUUSD", "side": "buy",
             "lots": "0.50", "price": "2040.50"},
            {"id": f"lat{batch}-{k}c", "type": "trade_closed", "account": name, "ts": iso(t + dt.timedelta(seconds=9)),
             "position": f"lt{k}", "lots": "0.50", "price": "2041.20", "profit": "35.00"},
        ]
    site.post_events(events)
    _wait_evaluated(site, [account["id"]], closed=6)
    page = page_as("admin")
    page.goto("/office/cases")
    page.get_by_role("button", name="Analyse new events now").click()
    page.wait_for_url("**/office/cases")
    page.get_by_label("Kind").select_option("latency")
    page.get_by_role("button", name="Show").click()
    page.locator("tr", has_text=name).get_by_role("link", name=re.compile(r"^Case \d+$")).click()
    page.wait_for_url(re.compile(r"/office/cases/\d+$"))
    page.console_errors.clear()
    page.reload()
    first = page.locator("#latency-fills tr[data-fill='1']")
    assert re.sub(r"\s+", " ", first.inner_text()).count("2040.50") == 1
    assert first.get_by_test_id("gap").inner_text() == "1.00"  # ask at the fill 2041.50 − fill 2040.50, exactly
    page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector('canvas[data-latency-chart=\"1\"]'))")
    labels = page.evaluate("() => Chart.getChart(document.querySelector('canvas[data-latency-chart=\"1\"]'))"
                           ".data.datasets.map(d => d.label)")
    assert labels == ["bid", "ask", "fill (buy 2040.50)", "order sent"]
    # a closed fill's chart is drawn when it is opened
    second = page.locator("details.latency-fill[data-fill='2']")
    second.locator("summary").click()
    page.wait_for_function("() => Chart.getChart(document.querySelector('canvas[data-latency-chart=\"2\"]'))")
    assert "the quote at the fill" in second.inner_text()
    assert page.console_errors == []
    shot(page, "case-latency")
