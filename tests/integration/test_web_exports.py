"""CSV exports of the staff lists (issue 16) on both backends: who may download which list, one firm's rows
only, the list page's filters, every row exactly once past a streaming batch, cells a spreadsheet would run
as a formula defused (and negative numbers left numbers), and a download another site starts refused."""

from __future__ import annotations

import csv
import io

import pytest

from propcrm.adapters.db import models as m
from propcrm.web.csv_export import BATCH, cell
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

LISTS = {"accounts": ("admin", "risk", "finance", "support"), "traders": ("admin", "risk", "finance", "support"),
         "decisions": ("admin", "risk", "finance", "support"), "cases": ("admin", "risk"),
         "payouts": ("admin", "risk", "finance"), "audit": ("admin", "risk")}


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        yield world


def table(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.text)))


def test_who_may_export_which_list(world):
    for name, allowed in LISTS.items():
        for role in ("admin", "risk", "finance", "support", "trader"):
            response = browse(world, role).get(f"/office/{name}.csv")
            assert response.status_code == (200 if role in allowed else 403), (name, role)
            if role in allowed:
                assert response.headers["content-type"].startswith("text/csv")
                assert response.headers["content-disposition"].startswith(f'attachment; filename="{name}-')
                assert table(response)[0], name  # a header row at least
    world.client.cookies.clear()
    assert world.client.get("/office/accounts.csv", follow_redirects=False).status_code == 303  # to the login
    refused = browse(world, "admin").get("/office/audit.csv", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403


def test_an_export_holds_the_firms_rows_only_and_the_pages_filters(world):
    rows = table(browse(world, "fa:admin").get("/office/accounts.csv"))
    assert rows[0][:3] == ["account", "login", "trader"]
    assert sorted(r[0] for r in rows[1:]) == ["A1", "A2", "A3"]
    assert [r[0] for r in table(browse(world, "fb:admin").get("/office/accounts.csv"))[1:]] == ["B1"]
    assert [r[0] for r in table(browse(world, "fa:admin").get("/office/accounts.csv?q=A2"))[1:]] == ["A2"]
    decisions = table(browse(world, "risk").get("/office/decisions.csv"))
    assert sorted(r[2] for r in decisions[1:]) == ["A1", "A2", "A3"]
    assert {r[6] for r in decisions[1:]} <= {"96000", "96000.00", "96000.00000000"}  # exact text, not a float
    audit = table(browse(world, "fb:admin").get("/office/audit.csv"))
    assert all("fa.example" not in " ".join(r) for r in audit[1:])
    traders = table(browse(world, "support").get("/office/traders.csv?q=t2"))
    assert [r[1] for r in traders[1:]] == ["t2"]


def test_every_row_once_past_a_batch_and_formulas_defused(world):
    with world.sessions.begin() as s:
        for n in range(BATCH + 30):
            s.add(m.Trader(firm_id="fa", name=f"Bulk {n:04d}", email=f"bulk{n}@x.example"))
        s.add(m.Trader(firm_id="fa", name='=HYPERLINK("http://evil.example","click")', email="evil@x.example"))
        s.add(m.Trader(firm_id="fa", name="+1 (555) 0100", email="plus@x.example"))
        s.add(m.Trader(firm_id="fa", name="@SUM(A1)", email="at@x.example"))
    rows = table(browse(world, "admin").get("/office/traders.csv"))
    names = [r[1] for r in rows[1:]]
    assert len(names) == len(set(r[0] for r in rows[1:])) == BATCH + 30 + 3 + 2
    assert sum(name.startswith("Bulk ") for name in names) == BATCH + 30
    assert "'=HYPERLINK(\"http://evil.example\",\"click\")" in names
    assert "'+1 (555) 0100" in names and "'@SUM(A1)" in names
    assert not any(name[:1] in "=+@" for name in names)


def test_a_cell_is_exact_and_safe():
    from decimal import Decimal

    assert cell(Decimal("-12.50")) == "-12.50" and cell("-12.50") == "-12.50"
    assert cell("-1+1") == "'-1+1" and cell("\t=1") == "'\t=1" and cell("\r=1") == "'\r=1"
    assert cell(None) == "" and cell(True) == "true" and cell("plain") == "plain"
