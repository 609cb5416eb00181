"""The trade journal pages (portal and back office) read the trade-history projection: closed trades with
partial closes and costs, statistics, the daily P/L calendar in the pack's timezone, and each account card
shows today's P/L, the countdown to the daily reset, the start and the phase deadline."""

from __future__ import annotations

import datetime as dt

import pytest

from integration.test_web_portal import opened, text_of
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def closed(eid, account, ts, position, lots, profit, commission="0", swap="0"):
    return {"id": eid, "type": "trade_closed", "account": account, "ts": ts, "position": position, "lots": lots,
            "price": "1.25", "profit": profit, "commission": commission, "swap": swap}


def _trade(world):
    world.ingest(
        opened("o1", "A3", "2026-03-02T09:00:00Z"),
        closed("c1", "A3", "2026-03-02T09:30:00Z", "p-o1", "1", "100", "-7"),
        {**opened("o2", "A3", "2026-03-02T10:00:00Z"), "symbol": "GBPUSD", "side": "sell", "lots": "2"},
        closed("c2", "A3", "2026-03-02T10:30:00Z", "p-o2", "1", "-50", "-7"),
        closed("c3", "A3", "2026-03-02T11:00:00Z", "p-o2", "1", "-30", "-7", "-2"),
        opened("o3", "A3", "2026-03-02T11:10:00Z"),
    )
    world.evaluate()


def test_the_journal_shows_closed_trades_statistics_and_the_daily_calendar(world):
    _trade(world)
    page = browse(world, "fa:trader")
    a3 = world.accounts["A3"]
    html = page.get(f"/portal/accounts/{a3}/trades?month=2026-03").text
    text = text_of(html)
    assert "Closed trades (2)" in text  # the open position p-o3 is not in the journal
    assert "GBPUSD (2 partial closes) sell 2 " in text and "-96.00" in text
    assert "EURUSD buy 1 " in text and "93.00" in text and "-7.00" in text
    for stat, value in (("trades", "2"), ("win-rate", "50.00%"), ("average-win", "93.00"),
                        ("average-loss", "-96.00"), ("best", "93.00"), ("worst", "-96.00"),
                        ("profit-factor", "0.97"), ("lots", "3"), ("holding", "45 min 00 s")):
        assert f'data-stat="{stat}">{value}' in html or f'data-stat="{stat}" class' in html, stat
    # the calendar: 2 March 2026 (Europe/Prague) carries the day's net result and its 3 closes
    cell = html[html.index('data-day="2026-03-02"'):]
    cell = text_of(cell[:cell.index("</td>")])
    assert "-3.00" in cell and "3 closes" in cell
    assert "Month total: -3.00" in text and "March 2026" in text
    # the statistics follow a new close at once (they are kept per account until its closed trades change)
    world.ingest(closed("c4", "A3", "2026-03-02T11:20:00Z", "p-o3", "1", "500", "-7"))
    world.evaluate()
    again = page.get(f"/portal/accounts/{a3}/trades?month=2026-03").text
    assert 'data-stat="trades">3<' in again and 'data-stat="best">493.00<' in again
    assert 'data-stat="win-rate">66.67%<' in again
    # the back office reads the same journal
    office = browse(world, "fa:support").get(f"/office/accounts/{a3}/trades?month=2026-03").text
    assert "Closed trades" in office and 'data-stat="win-rate">66.67%' in office
    assert f'href="/office/accounts/{a3}/trades"' in browse(world, "fa:support").get(f"/office/accounts/{a3}").text


def test_the_journal_pages_and_a_bad_month_falls_back_to_the_current_one(world):
    world.ingest(*[e for i in range(60) for e in (
        opened(f"o{i}", "A3", f"2026-03-02T09:{i:02d}:00Z"),
        closed(f"c{i}", "A3", f"2026-03-02T09:{i:02d}:30Z", f"p-o{i}", "1", str(i - 30)))])
    world.evaluate()
    page = browse(world, "fa:trader")
    a3 = world.accounts["A3"]
    first = text_of(page.get(f"/portal/accounts/{a3}/trades").text)
    assert "1–50 of 60" in first and "Older →" in first
    second = text_of(page.get(f"/portal/accounts/{a3}/trades?offset=50").text)
    assert "51–60 of 60" in second and "← Newer" in second
    assert page.get(f"/portal/accounts/{a3}/trades?month=2026-13").status_code == 200
    assert page.get(f"/portal/accounts/{a3}/trades?offset=-1").status_code == 422


def test_another_traders_journal_is_404_and_staff_may_not_open_the_portals(world):
    page = browse(world, "fa:trader")
    for external in ("A2", "B1"):
        assert page.get(f"/portal/accounts/{world.accounts[external]}/trades").status_code == 404
    assert browse(world, "fa:risk").get(f"/portal/accounts/{world.accounts['A3']}/trades").status_code == 403
    assert browse(world, "fa:trader").get(f"/office/accounts/{world.accounts['A3']}/trades").status_code == 403
    assert browse(world, "fb:risk").get(f"/office/accounts/{world.accounts['A3']}/trades").status_code == 404


def test_every_card_shows_todays_pnl_the_reset_countdown_start_and_deadline(world):
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    at = (now - dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.ingest(opened("t1", "A3", at), closed("t2", "A3", at, "p-t1", "1", "250", "-5"))
    world.evaluate()
    html = browse(world, "fa:trader").get("/portal").text
    card = html[html.index('id="acct-%d"' % world.accounts["A3"]):]
    card = card[:card.index("</section>")]
    text = text_of(card)
    from zoneinfo import ZoneInfo

    local_now = now.astimezone(ZoneInfo("Europe/Prague"))
    if local_now.hour == 0 and local_now.minute == 0:
        pytest.skip("the trading day turned over while the test ran")
    assert "Today's P/L 245.00" in text and "Closed today 245.00" in text
    midnight = (local_now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
    reset = midnight.astimezone(dt.timezone.utc)
    assert f'data-reset="{reset.isoformat()}"' in card
    assert f"at {midnight:%a %d %b} 00:00 Europe/Prague" in text
    assert "Started " in text and "Phase deadline none: this phase has no time limit" in text
    assert f'href="/portal/accounts/{world.accounts["A3"]}/trades"' in card


def test_the_profile_leads_a_trader_to_changing_their_password(world):
    profile = browse(world, "fa:trader").get("/portal/profile").text
    assert 'href="/account/password">Change your password</a>' in profile
    assert browse(world, "fa:trader").get("/account/password").status_code == 200  # (the form: test_people.py)
