"""The accounts list's stored figures (migration 0007) on both backends: written with every state, equal to
the account page's numbers, sortable by each new key, the ``near`` filter, search by trader, the rows the
live page re-reads, and ``propcrm accounts refresh-figures`` for rows written before the migration."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import RiskScore
from propcrm.services.accounts import FIGURE_COLUMNS, account_rows, basis_points, cents, changed_since, list_accounts
from support.staff import build_world, seed

pytestmark = pytest.mark.usefixtures("cheap_argon2")

KEYS = ("daily_distance", "max_loss_distance", "nearest", "target_pct", "trading_days", "risk_score")


def opened(eid, account, ts, position=None):
    return {"id": eid, "type": "trade_opened", "account": account, "ts": ts, "position": position or f"p-{eid}",
            "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}


def equity(eid, account, ts, value, balance="100000"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        # three evaluated accounts with different figures; a fourth (X…) never evaluated
        world.ingest(
            opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "99000"),
            opened("o2", "A2", "2026-03-02T09:00:00Z"),
            equity("e2", "A2", "2026-03-02T10:00:00Z", "103250.55", "103000.10"),
            opened("o3", "A3", "2026-03-02T09:00:00Z"), opened("o4", "A3", "2026-03-03T09:00:00Z"),
            equity("e3", "A3", "2026-03-03T10:00:00Z", "96100.125"),
        )
        world.evaluate()
        world.fresh = world.new_account()
        with world.sessions.begin() as s:
            for name, score in (("A1", 70), ("A2", 10), ("A3", 40)):
                s.add(RiskScore(account_id=world.accounts[name], firm_id="fa", score=score, explanation={}))
        yield world


def detail(world, account_id):
    response = world.client.get(f"/api/v1/accounts/{account_id}", headers=world.headers("risk"))
    assert response.status_code == 200
    return response.json()


def listed(world, query="", who="risk"):
    response = world.client.get(f"/api/v1/accounts?limit=500&{query}", headers=world.headers(who))
    assert response.status_code == 200, response.text
    return response.json()


def test_stored_figures_are_the_numbers_of_the_account_page(world):
    items = {item["external_id"]: item for item in listed(world)["items"]}
    for name in ("A1", "A2", "A3"):
        page = detail(world, world.accounts[name])
        item = items[name]
        assert item["daily_floor"] == page["daily_floor"]["level"] is not None
        assert item["daily_distance"] == page["daily_floor"]["distance"]
        assert item["max_loss_level"] == page["max_loss_level"]["level"]
        assert item["max_loss_distance"] == page["max_loss_level"]["distance"]
        assert item["target_pct"] == page["target"]["progress_pct"]
        assert item["trading_days"] == page["trading_days"]["count"]
        assert item["trading_days_required"] == page["trading_days"]["required"] == 4
        assert item["nearest_pct"] == min((limit["distance_pct_of_equity"] for limit in page["limits"]), key=Decimal)
        assert (item["balance"], item["equity"]) == (page["balance"], page["equity"])
    assert items["A1"]["daily_distance"] == "4000" and items["A1"]["nearest_pct"] == "4.04"
    assert items["A2"]["target_pct"] == "30.00" and items["A3"]["trading_days"] == 2
    assert (items["A1"]["risk_score"], items["A1"]["trader_name"]) == (70, "t1")
    fresh = next(item for item in items.values() if item["id"] == world.fresh)
    assert all(fresh[key] is None for key in ("daily_distance", "target_pct", "trading_days", "risk_score"))
    # the integer copies: the exact value floored to the cent, percentages in basis points
    with world.sessions() as s:
        for row in s.scalars(select(m.AccountState)):
            assert row.daily_distance_cents == cents(row.daily_distance)
            assert row.max_loss_distance_cents == cents(row.max_loss_distance)
    assert items["A3"]["daily_distance"] == "1100.125"


@pytest.mark.parametrize("key", KEYS)
def test_each_new_key_sorts_by_value_with_missing_figures_last(world, key):
    field = {"nearest": "nearest_pct"}.get(key, key)
    for descending in (False, True):
        items = listed(world, f"sort={'-' if descending else ''}{key}")["items"]
        values = [item[field] for item in items]
        known = [Decimal(str(v)) for v in values if v is not None]
        assert len(known) == 3 and len(set(known)) > 1, values
        assert known == sorted(known, reverse=descending), (key, descending, values)
        assert values[len(known):] == [None] * (len(values) - len(known))  # never evaluated / scored: last


def test_near_keeps_accounts_within_that_share_of_equity_of_a_floor(world):
    near = {item["external_id"] for item in listed(world, "near=5")["items"]}
    assert near == {"A1", "A3"}  # 4.04 % and 1.14 % of equity from their daily floors
    assert {i["external_id"] for i in listed(world, "near=4.04")["items"]} == {"A1", "A3"}
    assert {i["external_id"] for i in listed(world, "near=4.03")["items"]} == {"A3"}
    assert listed(world, "near=1.13")["total"] == 0
    assert listed(world, "near=100")["total"] == 3  # the unevaluated account has no distance
    for bad in ("abc", "-1", "101", "1.005", "NaN"):
        response = world.client.get(f"/api/v1/accounts?near={bad}", headers=world.headers("risk"))
        assert response.status_code == 422, bad


def test_search_matches_the_traders_name_and_email_within_scope(world):
    assert [i["external_id"] for i in listed(world, "search=t2")["items"]] == ["A2"]
    assert {i["external_id"] for i in listed(world, "search=T1%40TRADERS")["items"]} == {"A1", "A3"}
    assert listed(world, "search=t2", who="trader")["total"] == 0  # t1's login sees only t1's accounts
    assert listed(world, "search=tb")["total"] == 0  # firm fb's trader
    page = listed(world, "search=a&sort=-risk_score")
    assert [i["external_id"] for i in page["items"]] == ["A1", "A3", "A2"] and page["total_capped"] is False


def test_account_rows_and_changes_since_are_scoped(world):
    ids = [world.accounts["A2"], world.accounts["A1"], world.accounts["B1"], 999_999]
    with world.sessions() as s:
        rows = account_rows(s, firm_id="fa", ids=ids)
        assert [r["external_id"] for r in rows] == ["A1", "A2"]
        assert rows == [i for i in list_accounts(s, firm_id="fa", limit=500).items if i["id"] in ids]
        assert [r["external_id"] for r in account_rows(s, firm_id="fa", trader_id=world.traders["t1"], ids=ids)] == ["A1"]
        changed = changed_since(s, firm_id="fa", since=rows[0]["updated_at"].replace(year=2000))
        assert {account_id for account_id, _ in changed} == {world.accounts[n] for n in ("A1", "A2", "A3")}
        latest = max(at for _, at in changed)
        assert changed_since(s, firm_id="fa", since=latest) == []
    world.ingest(equity("e9", "A2", "2026-03-02T11:00:00Z", "103000", "103000.10"))
    world.evaluate()
    with world.sessions() as s:
        assert [a for a, _ in changed_since(s, firm_id="fa", since=latest)] == [world.accounts["A2"]]
        assert changed_since(s, firm_id="fa", since=latest, trader_id=world.traders["t1"]) == []


def test_refresh_figures_fills_rows_written_before_the_migration(world, db_url):
    from propcrm.cli import app

    with world.sessions() as s:
        before = {r.account_id: [getattr(r, c) for c in FIGURE_COLUMNS] for r in s.scalars(select(m.AccountState))}
    with world.sessions.begin() as s:
        s.execute(update(m.AccountState).values(**dict.fromkeys(FIGURE_COLUMNS)))
    assert listed(world, "sort=daily_distance")["items"][0]["daily_distance"] is None
    result = CliRunner().invoke(app, ["accounts", "refresh-figures", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "refreshed the figures of 3 account states" in result.output
    with world.sessions() as s:
        after = {r.account_id: [getattr(r, c) for c in FIGURE_COLUMNS] for r in s.scalars(select(m.AccountState))}
    assert after == before
    again = CliRunner().invoke(app, ["accounts", "refresh-figures", "--database-url", db_url])
    assert "refreshed the figures of 0 account states" in again.output  # only missing rows, unless --all


money = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8, allow_nan=False,
                    allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(money)
def test_cents_is_the_exact_value_floored_to_the_cent(value):
    c = cents(value)
    assert c == int((value * 100).to_integral_value(ROUND_FLOOR))
    assert Decimal(c) / 100 <= value < Decimal(c + 1) / 100


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1000"), places=2), money, money)
def test_the_integer_copies_keep_the_order_of_the_exact_values(pct, a, b):
    assert Decimal(basis_points(pct)) / 100 == pct
    if a <= b:
        assert cents(a) <= cents(b)


def test_bench_web_builds_a_firm_with_real_states_and_times_the_pages(tmp_path):
    import io

    from rich.console import Console

    from propcrm.adapters.db.session import make_engine, sessions
    from propcrm.tools.bench_web import bench_web

    out = io.StringIO()
    urls = ["/api/v1/accounts?sort=-daily_distance&offset={offset}", "/api/v1/accounts/{id}"]
    results = bench_web(accounts=40, events=1600, db=str(tmp_path / "web.db"), requests=3, urls=urls,
                        console=Console(file=out, width=200))
    assert [(r["url"], r["status"], r["failures"], r["n"]) for r in results] == [(u, 200, 0, 3) for u in urls]
    assert "built in" in out.getvalue() and "p95" in out.getvalue()
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    with sessions(engine)() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent)) == 1600
        assert s.scalar(select(func.count()).select_from(m.AccountState).where(m.AccountState.trading_days > 0)) == 40
        page = list_accounts(s, firm_id="bench", sort="-daily_distance", limit=5)
        assert page.total == 40 and all(item["daily_distance"] is not None for item in page.items)
    engine.dispose()
    again = io.StringIO()  # a second run reuses the database
    bench_web(db=str(tmp_path / "web.db"), requests=1, urls=urls[1:], console=Console(file=again, width=200))
    assert "reusing" in again.getvalue()
