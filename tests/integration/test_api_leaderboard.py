"""The leaderboard's API and fairness (issue 17) on both backends: the board as JSON for the firm's traders
and its moderators (pseudonyms only, the same filters as the page), staff hide and unhide with a reason
(audited), an account ranked only after the firm's minimum of closed trades and trading days (shown on the
page), a trader once with their best account, and the pseudonym check against account ids and logins
answered by an index."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from propcrm.adapters.db import models as m
from propcrm.services import leaderboard
from support.web import browse

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def fresh_boards():
    leaderboard.CACHE.forget()
    yield
    leaderboard.CACHE.forget()


def closes(account: str, tag: str, moments: list[dt.datetime], profit: str) -> list[dict]:
    ts = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    events = []
    for n, closed_at in enumerate(moments):
        position = f"p-{tag}-{n}"
        events += [{"id": f"o-{account}-{position}", "type": "trade_opened", "account": account,
                    "ts": ts(closed_at - dt.timedelta(minutes=5)), "position": position, "symbol": "EURUSD",
                    "side": "buy", "lots": "1", "price": "1.08512"},
                   {"id": f"c-{account}-{position}", "type": "trade_closed", "account": account, "ts": ts(closed_at),
                    "position": position, "lots": "1", "price": "1.08612", "profit": profit, "commission": "-7.00"}]
    return events


def one_day(world, start: dt.datetime, count: int) -> list[dt.datetime]:
    """``count`` moments a minute apart within one trading day of the seeded pack, from about ``start``."""
    with world.sessions() as s:
        pack = leaderboard.compiled_pack(s.get(m.RulePackVersion, world.version["fa"])).pack
    day = lambda moment: leaderboard.trading_day(moment, zone=pack.timezone, day_start=pack.day_start)  # noqa: E731
    while day(start) != day(start + dt.timedelta(minutes=count)):
        start += dt.timedelta(minutes=30)
    return [start + dt.timedelta(minutes=i) for i in range(count)]


def opt_in(world, trader: str, pseudonym: str) -> int:
    with world.sessions.begin() as s:
        return leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders[trader], pseudonym=pseudonym,
                                  actor="test").id


def get_board(world, who: str, query: str = "") -> dict:
    answer = world.client.get(f"/api/v1/leaderboard{query}", headers=world.headers(who))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_account_ranks_after_the_firms_minimum_and_a_trader_appears_once(world):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    heron, lynx = opt_in(world, "t1", "Quiet Heron"), opt_in(world, "t2", "Nimble Lynx")
    world.ingest(
        # A2 (t2): five closes, all on one trading day: short of the two days
        *closes("A2", "a", one_day(world, now - dt.timedelta(days=3), 5), "307.00"),
        # A1 (t1): five closes on two trading days: ranked, +300 on 100k
        *closes("A1", "a", one_day(world, now - dt.timedelta(days=5), 3), "107.00"),
        *closes("A1", "b", [now - dt.timedelta(days=2)] + [now - dt.timedelta(days=2, minutes=-1)], "57.00"),
        # A3 (t1): four closes on four days, +4,000: short of the five trades
        *closes("A3", "a", [now - dt.timedelta(days=d) for d in (10, 7, 4, 1)], "1007.00"))
    world.evaluate()
    board = get_board(world, "trader")
    assert (board["min_trades"], board["min_days"]) == (leaderboard.DEFAULT_MIN_TRADES, leaderboard.DEFAULT_MIN_DAYS)
    assert [(r["rank"], r["pseudonym"], r["return_pct"], r["trades"], r["days"], r["you"], r["entry_id"])
            for r in board["rows"]] == [(1, "Quiet Heron", "0.40", 5, 2, True, None)]
    page = browse(world, "fa:trader").get("/portal/leaderboard").text
    assert "ranked after 5 closed trades on at least 2 trading days" in " ".join(page.split())
    # the firm's admin lowers the bar: both are ranked; t1 once, with the better of A1 and A3
    refused = world.client.put("/api/v1/leaderboard/settings", json={"min_trades": 2, "min_days": 3},
                               headers=world.headers("admin"))
    assert refused.status_code == 422 and "min_days" in refused.json()["error"]
    assert world.client.put("/api/v1/leaderboard/settings", json={"min_trades": 0, "min_days": 1},
                            headers=world.headers("admin")).status_code == 422
    assert world.client.put("/api/v1/leaderboard/settings", json={"min_trades": 4, "min_days": 1},
                            headers=world.headers("admin")).json() == {"min_trades": 4, "min_days": 1}
    assert world.audit("leaderboard.fairness")[-1].after == {"min_trades": 4, "min_days": 1}
    board = get_board(world, "trader", "?period=30d&size=100000")
    assert [(r["pseudonym"], r["return_pct"], r["trades"], r["days"], r["you"]) for r in board["rows"]] == [
        ("Quiet Heron", "4.00", 4, 4, True), ("Nimble Lynx", "1.50", 5, 1, False)]
    assert board["size"] == "100000" and board["sizes"] == [{"size": "100000", "currency": "USD"}]
    assert "ranked after 4 closed trades on at least 1 trading day" in " ".join(
        browse(world, "fa:trader").get("/portal/leaderboard").text.split())
    # the trader's answer names no person, e-mail, account id or entry
    raw = world.client.get("/api/v1/leaderboard?period=all", headers=world.headers("trader")).text
    for secret in ('"A1"', '"A2"', '"A3"', "t1", "t2", "traders.example", "account"):
        assert secret not in raw, secret
    assert {key for row in get_board(world, "trader")["rows"] for key in row} == {
        "rank", "pseudonym", "kind", "size", "currency", "return_pct", "trades", "days", "you", "entry_id"}
    assert {r["entry_id"] for r in get_board(world, "risk")["rows"]} == {heron, lynx}
    # the other firm's board is its own
    assert get_board(world, "fb:trader")["rows"] == []
    assert get_board(world, "fb:trader")["min_trades"] == leaderboard.DEFAULT_MIN_TRADES


def test_staff_hide_and_unhide_through_the_api_with_a_reason(world):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    with world.sessions.begin() as s:
        leaderboard.set_fairness(s, firm_id="fa", min_trades=1, min_days=1, actor="test")
    lynx = opt_in(world, "t2", "Nimble Lynx")
    world.ingest(*closes("A2", "a", [now - dt.timedelta(days=1)], "507.00"))
    world.evaluate()
    assert [r["pseudonym"] for r in get_board(world, "trader")["rows"]] == ["Nimble Lynx"]
    url = f"/api/v1/leaderboard/entries/{lynx}"
    for body in ({}, {"reason": ""}, {"reason": "  "}):
        answer = world.client.post(f"{url}/hide", json=body, headers=world.headers("support"))
        assert answer.status_code == 422 and "reason" in answer.json()["error"], body
    assert world.client.post(f"{url}/hide", json={"reason": "not yours"}, headers=world.headers("fb:risk")).status_code == 404
    hidden = world.client.post(f"{url}/hide", json={"reason": "pseudonym reported"}, headers=world.headers("support"))
    assert hidden.status_code == 200 and hidden.json()["hidden"] and hidden.json()["hidden_reason"] == "pseudonym reported"
    assert world.audit("leaderboard.hide")[-1].after["reason"] == "pseudonym reported"
    assert get_board(world, "trader")["rows"] == []
    again = world.client.post(f"{url}/hide", json={"reason": "twice"}, headers=world.headers("risk"))
    assert again.status_code == 409 and "already hidden" in again.json()["error"]
    assert world.client.post(f"{url}/unhide", json={}, headers=world.headers("risk")).status_code == 422
    shown = world.client.post(f"{url}/unhide", json={"reason": "report reviewed"}, headers=world.headers("risk"))
    assert shown.status_code == 200 and not shown.json()["hidden"]
    entry = world.audit("leaderboard.unhide")[-1]
    assert entry.after["reason"] == "report reviewed" and entry.before["reason"] == "pseudonym reported"
    assert [r["pseudonym"] for r in get_board(world, "trader")["rows"]] == ["Nimble Lynx"]


def test_the_pseudonym_check_against_account_ids_and_logins_is_an_index_lookup(world, db_url):
    with world.sessions.begin() as s:
        s.get(m.Account, world.accounts["A2"]).login = "MT5-778899"
    with world.sessions() as s:
        assert leaderboard.is_account_name(s, firm_id="fa", text="a 2")  # case and separators ignored
        assert leaderboard.is_account_name(s, firm_id="fa", text="Mt5-778899")  # a login, without case
        assert not leaderboard.is_account_name(s, firm_id="fb", text="mt5-778899")  # another firm's login
        assert not leaderboard.is_account_name(s, firm_id="fa", text="Quiet Heron")
        # the query the check runs, as the database plans it
        statements = []
        from sqlalchemy import event

        engine = s.get_bind()
        listen = lambda conn, cursor, statement, params, context, many: statements.append((statement, params))  # noqa: E731
        event.listen(engine, "before_cursor_execute", listen)
        try:
            leaderboard.is_account_name(s, firm_id="fa", text="nobody here")
        finally:
            event.remove(engine, "before_cursor_execute", listen)
        assert len(statements) == 2
        for (statement, params), index in zip(statements, ("ix_accounts_external_id_folded", "ix_accounts_login_folded")):
            if db_url.startswith("sqlite"):
                plan = " ".join(str(row[-1]) for row in s.connection().exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", params))
                assert f"INDEX {index}" in plan, plan
            else:  # a three-account table is scanned whatever its indexes: ask that the index exists
                definition = s.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                                       {"name": index}).scalar_one()
                assert "firm_id, lower(" in definition, definition


def test_the_admin_sets_the_thresholds_on_the_office_page(world):
    admin = lambda: browse(world, "fa:admin")  # noqa: E731 - one browser at a time shares the client
    page = admin().get("/office/leaderboard").text
    assert 'id="leaderboard-settings"' in page and 'name="min_trades"' in page and 'value="5"' in page
    assert 'id="leaderboard-settings"' not in browse(world, "fa:risk").get("/office/leaderboard").text
    assert browse(world, "fa:risk").post_form("/office/leaderboard/settings",
                                              {"min_trades": "1", "min_days": "1"}).status_code == 403
    person = admin()
    assert person.post_form("/office/leaderboard/settings", {"min_trades": "3", "min_days": "x"}).status_code == 303
    assert "Not done: min_days" in person.get("/office/leaderboard").text
    assert person.post_form("/office/leaderboard/settings", {"min_trades": "3", "min_days": "2"}).status_code == 303
    assert "ranked after 3 closed trades on 2 trading days" in person.get("/office/leaderboard").text
    with world.sessions() as s:
        assert leaderboard.fairness(s, firm_id="fa") == leaderboard.Fairness(min_trades=3, min_days=2)
        assert leaderboard.fairness(s, firm_id="fb") == leaderboard.Fairness()
    assert "ranked after 3 closed trades on at least 2 trading days" in " ".join(
        browse(world, "fa:trader").get("/portal/leaderboard").text.split())
