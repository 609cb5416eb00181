"""CSV exports of the staff lists (issue 16) on both backends: who may download which list, one firm's rows
only, the list page's filters, every row exactly once past a streaming batch, cells a spreadsheet would run
as a formula defused (and negative numbers left numbers), and a download another site starts refused."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.services import audit as audit_service
from propcrm.web.csv_export import BATCH, FIRST, batched, cell, rows_as_csv
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

LISTS = {"accounts": ("admin", "risk", "finance", "support"), "traders": ("admin", "risk", "finance", "support"),
         "decisions": ("admin", "risk", "finance", "support"), "cases": ("admin", "risk"),
         "payouts": ("admin", "risk", "finance"), "audit": ("admin", "risk"),
         "trades": ("admin", "risk", "finance", "support")}


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


def test_the_first_rows_go_out_before_the_rest_is_read():
    """The header and the first FIRST rows are a chunk of their own, read with a first page of FIRST: a
    download's first bytes wait for one small read, not for a batch of BATCH (nor for the whole list)."""
    items = list(range(FIRST + 2 * BATCH + 7))
    reads = []

    def fetch(limit, offset):
        reads.append((limit, offset))
        return items[offset:offset + limit]

    chunks = rows_as_csv(["n"], ([n] for n in batched(fetch)))
    first = next(chunks)
    assert reads == [(FIRST, 0)]
    assert list(csv.reader(io.StringIO(first))) == [["n"]] + [[str(n)] for n in range(FIRST)]
    rest = list(chunks)
    assert reads == [(FIRST, 0), (BATCH, FIRST), (BATCH, FIRST + BATCH), (BATCH, FIRST + 2 * BATCH)]
    assert [len(list(csv.reader(io.StringIO(c)))) for c in rest] == [BATCH, BATCH, 7]
    assert [int(r[0]) for c in [first, *rest] for r in csv.reader(io.StringIO(c)) if r[0] != "n"] == items
    # an exact multiple: the last read is short (empty), nothing repeated
    reads.clear()
    items[:] = list(range(FIRST + BATCH))
    assert list(batched(fetch)) == items and reads == [(FIRST, 0), (BATCH, FIRST), (BATCH, FIRST + BATCH)]


def test_the_audit_export_holds_every_entry_once_past_the_first_page(world):
    with world.sessions.begin() as s:
        for n in range(FIRST + 25):
            audit_service.append(s, actor="tests", action="bulk.entry", entity="thing", entity_id=str(n),
                                 after={"n": n}, firm_id="fa")
    with world.sessions() as s:  # (written by the commit)
        wanted = sorted(s.scalars(select(m.AuditEntry.seq).where(m.AuditEntry.firm_id == "fa")))
    rows = table(browse(world, "fa:admin").get("/office/audit.csv"))
    seqs = [int(r[0]) for r in rows[1:]]
    assert len(seqs) > FIRST + 25 and sorted(seqs) == wanted and seqs == sorted(seqs, reverse=True)


def test_a_cell_is_exact_and_safe():
    from decimal import Decimal

    assert cell(Decimal("-12.50")) == "-12.50" and cell("-12.50") == "-12.50"
    assert cell("-1+1") == "'-1+1" and cell("\t=1") == "'\t=1" and cell("\r=1") == "'\r=1"
    assert cell(None) == "" and cell(True) == "true" and cell("plain") == "plain"


def test_the_firm_wide_trade_export_holds_every_accounts_trades_as_projected(world):
    """The trades of every account of the firm (partial closes summed, costs signed), nothing of another
    firm; the JSON list pages by trade id with the same filters; the accounts page links the export."""
    ts = "2026-03-02T09:{:02d}:00Z".format
    world.ingest(
        {"id": "o1", "type": "trade_opened", "account": "A1", "ts": ts(0), "position": "p1", "symbol": "EURUSD",
         "side": "buy", "lots": "2", "price": "1.08500", "order_ts": "2026-03-02T08:59:59.500Z"},
        {"id": "c1", "type": "trade_closed", "account": "A1", "ts": ts(5), "position": "p1", "lots": "0.5",
         "price": "1.08600", "profit": "50", "commission": "-3.50"},
        {"id": "c2", "type": "trade_closed", "account": "A1", "ts": ts(9), "position": "p1", "lots": "1.5",
         "price": "1.08700", "profit": "300", "swap": "-1.25"},
        {"id": "o2", "type": "trade_opened", "account": "A2", "ts": ts(7), "position": "q1", "symbol": "=cmd()",
         "side": "sell", "lots": "1", "price": "10"})
    world.ingest({"id": "o3", "type": "trade_opened", "account": "B1", "ts": ts(8), "position": "r1",
                  "symbol": "XAUUSD", "side": "buy", "lots": "1", "price": "2000"}, firm="fb")
    world.evaluate()
    rows = table(browse(world, "finance").get("/office/trades.csv"))
    header = rows[0]
    got = [dict(zip(header, r)) for r in rows[1:]]
    assert [(r["account"], r["position"], r["status"]) for r in got] == [("A1", "p1", "closed"), ("A2", "q1", "open")]
    p1 = got[0]
    assert (p1["closes"], p1["held_s"]) == ("2", "540")
    assert [Decimal(p1[k]) for k in ("lots", "closed_lots", "profit", "commission", "swap", "net", "close_price")] == \
        [Decimal(v) for v in ("2", "2", "350", "-3.50", "-1.25", "345.25", "1.08675")]  # exact decimal text
    assert p1["order_ts"].startswith("2026-03-02T08:59:59.500") and p1["open_ts"].startswith("2026-03-02T09:00:00")
    assert got[1]["symbol"] == "'=cmd()"  # a formula defused
    assert [r[1] for r in table(browse(world, "fb:admin").get("/office/trades.csv"))[1:]] == ["B1"]
    assert [r[1] for r in table(browse(world, "risk").get("/office/trades.csv?status=open"))[1:]] == ["A2"]
    assert 'href="/office/trades.csv"' in browse(world, "support").get("/office/accounts").text

    first = world.client.get("/api/v1/trades?limit=1", headers=world.headers("risk")).json()
    assert [t["position"] for t in first["items"]] == ["p1"] and first["items"][0]["net"].startswith("345.25")
    rest = world.client.get(f"/api/v1/trades?limit=1&after={first['next_after']}", headers=world.headers("risk")).json()
    assert [t["position"] for t in rest["items"]] == ["q1"]
    closed = world.client.get("/api/v1/trades?status=closed&opened_from=2026-03-02T09:00:00Z",
                              headers=world.headers("admin")).json()
    assert [t["position"] for t in closed["items"]] == ["p1"] and closed["next_after"] is None
    naive = world.client.get("/api/v1/trades?opened_from=2026-03-02T09:00:00", headers=world.headers("admin"))
    assert naive.status_code == 422 and "opened_from" in naive.text
    exported = world.client.get(f"/api/v1/trades.csv?account_id={world.accounts['A2']}", headers=world.headers("support"))
    assert exported.status_code == 200 and [r[1] for r in table(exported)[1:]] == ["A2"]
    assert world.client.get("/api/v1/trades", headers=world.headers("trader")).status_code == 403
