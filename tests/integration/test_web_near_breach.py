"""Near-breach work and readability (issue 16) on both backends: the absolute-amount distance filter beside
the percentage one (API, page, CSV), the account page listing its cases and payouts, names instead of ids
and enums (the override's author, comparators, the audit log's actors and links)."""

from __future__ import annotations

import csv
import io
import re

import pytest

from support.lifecycle import open_case
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def opened(eid, account, ts):
    return {"id": eid, "type": "trade_opened", "account": account, "ts": ts, "position": f"p-{eid}",
            "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}


def equity(eid, account, ts, value, balance="100000"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        # daily floor 95,000 and max-loss level 90,000 (two-step-100k): A1 4,000 from its daily floor, A2
        # 8,250.55, A3 1,100.125 (its second day)
        world.ingest(
            opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "99000"),
            opened("o2", "A2", "2026-03-02T09:00:00Z"),
            equity("e2", "A2", "2026-03-02T10:00:00Z", "103250.55", "103000.10"),
            opened("o3", "A3", "2026-03-02T09:00:00Z"), opened("o4", "A3", "2026-03-03T09:00:00Z"),
            equity("e3", "A3", "2026-03-03T10:00:00Z", "96100.125"),
        )
        world.evaluate()
        yield world


def api_ids(world, query: str) -> list[str]:
    response = world.client.get(f"/api/v1/accounts?{query}", headers=world.headers("risk"))
    assert response.status_code == 200, response.text
    return sorted(item["external_id"] for item in response.json()["items"])


def test_the_absolute_distance_filter(world):
    world.client.cookies.clear()
    assert api_ids(world, "near_amount=1500") == ["A3"]
    assert api_ids(world, "near_amount=4000") == ["A1", "A3"]  # at most: 4,000 away counts
    assert api_ids(world, "near_amount=3999.99") == ["A3"]
    assert api_ids(world, "near_amount=100000") == ["A1", "A2", "A3"]
    assert api_ids(world, "near_amount=1500&near=50") == ["A3"]
    for bad in ("-1", "abc", "1.001", "1e20", "NaN"):
        response = world.client.get(f"/api/v1/accounts?near_amount={bad}", headers=world.headers("risk"))
        assert response.status_code == 422 and "near_amount" in response.text, bad
    page = browse(world, "risk")
    html = page.get("/office/accounts?near_amount=1%2C500").text  # "1,500" as typed
    assert re.findall(r'data-account-id="(\d+)"', html) == [str(world.accounts["A3"])]
    assert 'value="1500"' in html
    assert page.get("/office/accounts?near_amount=lots").status_code == 200  # ignored, not an error
    rows = list(csv.reader(io.StringIO(page.get("/office/accounts.csv?near_amount=4000&sort=daily_distance").text)))
    assert [r[0] for r in rows[1:]] == ["A3", "A1"]
    # the sorted table says its order for the live updates (static/accounts.js keeps it sorted)
    sorted_page = page.get("/office/accounts?sort=-daily_distance").text
    assert 'data-sort="-daily_distance"' in sorted_page and 'data-nearest="' in sorted_page


def test_the_account_page_lists_cases_and_payouts_and_names_people(world):
    a1 = world.accounts["A1"]
    case_id = open_case(world, firm="fa", account_ids=[a1, world.accounts["A2"]])
    risk = browse(world, "risk")
    risk.post_form(f"/office/accounts/{a1}/stop", {"reason": "checking a chargeback", "confirm": "yes"})
    html = risk.get(f"/office/accounts/{a1}").text
    assert f'href="/office/cases/{case_id}"' in html and "No payouts." in html
    assert "risk@fa.example" in re.search(r'id="h-overrides".*?</table>', html, re.S).group(0)
    assert "at_or_below" not in html and "below" in html
    # roles: support sees neither list (cases and payouts are not theirs), finance sees payouts only
    support = browse(world, "support").get(f"/office/accounts/{a1}").text
    assert 'id="h-cases"' not in support and 'id="h-payouts"' not in support
    finance = browse(world, "finance").get(f"/office/accounts/{a1}").text
    assert 'id="h-cases"' not in finance and 'id="h-payouts"' in finance
    # the audit log names the person and links what it can
    log = browse(world, "admin").get("/office/audit?action=account.").text
    assert ">risk@fa.example<" in log and 'title="user:' in log
    assert 'href="/office/accounts?q=A1"' in log
