"""Trading-day boundaries: 00:00 Europe/Prague and 17:00 America/Chicago, DST days, clock-driven rollover."""

from __future__ import annotations

import datetime as dt

import pytest

from propcrm.domain.calendar import TradingCalendar
from propcrm.domain.rulepack import parse_hhmm

from rulekit import D, Trader, kinds, local, make_pack, only, utc

PRAGUE = dict(timezone="Europe/Prague", day_start="00:00")
CHICAGO = dict(timezone="America/Chicago", day_start="17:00")
DAILY = "{kind: daily_loss, amount: {pct_initial: 5}, base: balance}"


def day_of(instant, **calendar):
    """(trading day, start UTC, end UTC) the engine assigns to an account's first event at ``instant``."""
    t = Trader(make_pack(DAILY, **calendar))
    t.equity(instant, "100000")
    st = t.state
    return st.trading_day.isoformat(), st.day_start_at, st.day_end_at


@pytest.mark.parametrize(
    "instant, day, start, end",
    [
        # an ordinary winter day: 00:00 CET is 23:00 UTC the evening before
        ("2026-03-02 22:59:59", "2026-03-02", "2026-03-01 23:00", "2026-03-02 23:00"),
        ("2026-03-02 23:00:00", "2026-03-03", "2026-03-02 23:00", "2026-03-03 23:00"),
        # last Sunday of March: clocks go 02:00 CET → 03:00 CEST, the day has 23 hours
        ("2026-03-28 23:00:00", "2026-03-29", "2026-03-28 23:00", "2026-03-29 22:00"),
        ("2026-03-29 21:59:59", "2026-03-29", "2026-03-28 23:00", "2026-03-29 22:00"),
        ("2026-03-29 22:00:00", "2026-03-30", "2026-03-29 22:00", "2026-03-30 22:00"),
        # last Sunday of October: 03:00 CEST → 02:00 CET, the day has 25 hours
        ("2026-10-24 21:59:59", "2026-10-24", "2026-10-23 22:00", "2026-10-24 22:00"),
        ("2026-10-24 22:00:00", "2026-10-25", "2026-10-24 22:00", "2026-10-25 23:00"),
        ("2026-10-25 22:30:00", "2026-10-25", "2026-10-24 22:00", "2026-10-25 23:00"),
        ("2026-10-25 23:00:00", "2026-10-26", "2026-10-25 23:00", "2026-10-26 23:00"),
    ],
)
def test_prague_midnight_boundaries(instant, day, start, end):
    assert day_of(utc(instant), **PRAGUE) == (day, utc(start), utc(end))


@pytest.mark.parametrize(
    "instant, day, start, end",
    [
        # Tuesday 18:30 Chicago (CST) belongs to Wednesday's session, which opened Tuesday 17:00
        ("2026-03-04 00:30", "2026-03-04", "2026-03-03 23:00", "2026-03-04 23:00"),
        # Tuesday 16:59 Chicago is still Tuesday's session
        ("2026-03-03 22:59", "2026-03-03", "2026-03-02 23:00", "2026-03-03 23:00"),
        # second Sunday of March: 02:00 CST → 03:00 CDT; the session opened Saturday 17:00 CST lasts 23 hours
        ("2026-03-08 21:59", "2026-03-08", "2026-03-07 23:00", "2026-03-08 22:00"),
        ("2026-03-08 22:00", "2026-03-09", "2026-03-08 22:00", "2026-03-09 22:00"),
        # first Sunday of November: 02:00 CDT → 01:00 CST; the session opened Saturday 17:00 CDT lasts 25 hours
        ("2026-10-31 22:00", "2026-11-01", "2026-10-31 22:00", "2026-11-01 23:00"),
        ("2026-11-01 22:30", "2026-11-01", "2026-10-31 22:00", "2026-11-01 23:00"),
        ("2026-11-01 23:00", "2026-11-02", "2026-11-01 23:00", "2026-11-02 23:00"),
    ],
)
def test_chicago_five_pm_boundaries(instant, day, start, end):
    assert day_of(utc(instant), **CHICAGO) == (day, utc(start), utc(end))


def test_local_offsets_on_events_are_honoured():
    # the same instant written in Chicago time and in UTC lands on the same trading day
    assert day_of(local("2026-03-03 18:30", "America/Chicago"), **CHICAGO)[0] == "2026-03-04"
    assert day_of(local("2026-03-03 16:59:59", "America/Chicago"), **CHICAGO)[0] == "2026-03-03"


def test_chicago_trade_after_five_pm_counts_for_the_next_days_trade_limit():
    t = Trader(make_pack("{kind: max_trades_per_day, count: 1}", **CHICAGO))
    assert t.open(local("2026-03-03 16:59", "America/Chicago"), "p1") == []  # Tuesday's session
    assert t.open(local("2026-03-03 18:30", "America/Chicago"), "p2") == []  # Wednesday's session
    d = only(t.open(local("2026-03-04 09:00", "America/Chicago"), "p3"))  # still Wednesday's
    assert (d.kind, d.rule) == ("violation", "max_trades_per_day")
    assert "trading day 2026-03-04" in d.message


class TestDailyFloorAtTheBoundary:
    def lost_3000(self, **calendar):
        t = Trader(make_pack(DAILY, **calendar))
        t.open(utc("2026-03-28 09:00"), "p1")
        t.close(utc("2026-03-28 10:00"), "p1", "-3000.00")
        return t

    def test_prague_spring_forward_day_resets_at_23_utc_then_22_utc(self):
        t = self.lost_3000(**PRAGUE)
        t.equity(utc("2026-03-28 22:59:59"), "97000")
        assert t.state.levels[0] == D("95000")
        t.equity(utc("2026-03-28 23:00:00"), "97000")  # 00:00 CET, Sunday 29 March
        assert t.state.trading_day.isoformat() == "2026-03-29"
        assert t.state.levels[0] == D("92000.00")
        t.equity(utc("2026-03-29 21:59:59"), "97000")
        assert t.state.trading_day.isoformat() == "2026-03-29"
        t.equity(utc("2026-03-29 22:00:00"), "97000")  # 00:00 CEST, Monday 30 March
        assert t.state.trading_day.isoformat() == "2026-03-30"

    def test_chicago_spring_forward_session_resets_at_22_utc(self):
        t = Trader(make_pack(DAILY, **CHICAGO))
        t.open(utc("2026-03-08 20:00"), "p1")
        t.close(utc("2026-03-08 20:30"), "p1", "-3000.00")
        assert t.equity(utc("2026-03-08 21:59:59"), "95000.00") == []  # Sunday session, floor 95,000
        t.equity(utc("2026-03-08 22:00:00"), "97000")
        assert t.state.trading_day.isoformat() == "2026-03-09"
        assert t.state.levels[0] == D("92000.00")

    def test_chicago_fall_back_session_lasts_until_23_utc(self):
        t = Trader(make_pack(DAILY, **CHICAGO))
        t.open(utc("2026-11-01 20:00"), "p1")
        t.close(utc("2026-11-01 20:30"), "p1", "-3000.00")
        t.equity(utc("2026-11-01 22:00:00"), "97000")  # 16:00 CST: the same session still
        assert t.state.trading_day.isoformat() == "2026-11-01"
        assert t.state.levels[0] == D("95000")
        t.equity(utc("2026-11-01 23:00:00"), "97000")
        assert t.state.trading_day.isoformat() == "2026-11-02"
        assert t.state.levels[0] == D("92000.00")


class TestFloatingLossCarriedOverTheRollover:
    """Day 1: +3,000 closed, an open position floating −7,000 (equity 96,000, above the day-1 floor 95,000)."""

    def carry(self, base: str) -> Trader:
        t = Trader(make_pack(f"{{kind: daily_loss, amount: {{pct_initial: 5}}, base: {base}}}", **PRAGUE))
        t.open(utc("2026-03-02 08:00"), "p1")
        t.close(utc("2026-03-02 09:00"), "p1", "3000.00")
        t.open(utc("2026-03-02 10:00"), "p2")
        assert t.equity(utc("2026-03-02 21:00"), "96000.00", "103000.00") == []
        return t

    def test_balance_base_breaches_at_the_rollover_on_a_clock_event(self):
        t = self.carry("balance")
        assert t.clock(utc("2026-03-02 22:59:59")) == []
        [d] = t.clock(utc("2026-03-02 23:00:00"))
        assert d.kind == "breach"
        assert d.event_id.startswith("k-")  # the clock event that made time pass
        assert d.ts == utc("2026-03-02 23:00")
        assert d.threshold == D("98000.00")
        assert d.details["trading_day"] == "2026-03-03"
        assert d.message == (
            "equity 96,000.00 fell below the daily floor 98,000.00 = balance at day start 103,000.00 "
            "− 5% of initial 100,000.00"
        )
        assert t.state.status == "breached"

    def test_balance_base_breaches_at_the_first_event_of_the_new_day_without_a_clock(self):
        t = self.carry("balance")
        [d] = t.equity(utc("2026-03-03 07:00"), "96500.00", "103000.00")
        assert d.kind == "breach"
        # judged at the rollover with the equity known then, before this event is applied
        assert d.value == D("96000.00")

    def test_equity_base_starts_the_new_day_from_the_floating_equity(self):
        t = self.carry("equity")
        assert t.clock(utc("2026-03-02 23:00:00")) == []
        assert t.state.levels[0] == D("91000.00")
        assert t.state.status == "active"


class TestClockEvents:
    def test_clock_before_the_boundary_changes_nothing(self, trader_for):
        t = trader_for(DAILY)
        t.equity(utc("2026-03-02 09:00"), "99000")
        assert t.clock(utc("2026-03-02 22:59:59.999999")) == []
        assert t.state.trading_day.isoformat() == "2026-03-02"

    def test_clock_rolls_every_account_and_an_account_clock_only_its_own(self):
        pack = make_pack(DAILY)
        a = Trader(pack, "A1")
        b = Trader(pack, "B2", engine=a.engine)
        a.equity(utc("2026-03-02 09:00"), "100000")
        b.equity(utc("2026-03-02 09:00"), "100000")
        b.clock(utc("2026-03-02 23:30"), mine=True)
        assert a.engine.states["B2"].trading_day.isoformat() == "2026-03-03"
        assert a.engine.states["A1"].trading_day.isoformat() == "2026-03-02"
        a.clock(utc("2026-03-03 00:00"))
        assert a.engine.states["A1"].trading_day.isoformat() == "2026-03-03"

    def test_days_without_events_are_skipped_to_the_day_that_holds_the_event(self, trader_for):
        t = trader_for(DAILY)
        t.open(utc("2026-03-02 09:00"), "p1")
        t.close(utc("2026-03-02 10:00"), "p1", "-1000.00")
        t.equity(utc("2026-03-09 09:00"), "99000")  # a week later
        assert t.state.trading_day.isoformat() == "2026-03-09"
        assert t.state.day_start_balance == D("99000.00")
        assert t.state.levels[0] == D("94000.00")


def test_warnings_fire_again_on_a_new_trading_day(trader_for):
    t = trader_for(DAILY, "{kind: early_warning, at_pct: [80], limits: [daily_loss]}")
    t.open(utc("2026-03-02 09:00"), "p1")
    [w] = t.equity(utc("2026-03-02 10:00"), "96000.00")
    assert (w.kind, w.rule) == ("warning", "daily_loss")
    assert t.equity(utc("2026-03-02 10:01"), "95900.00") == []  # once per day
    assert t.equity(utc("2026-03-02 11:00"), "99000.00") == []
    assert t.equity(utc("2026-03-02 12:00"), "96000.00") == []  # crossing again the same day: still once
    assert t.equity(utc("2026-03-02 20:00"), "99000.00") == []
    assert t.equity(utc("2026-03-03 08:00"), "99500.00") == []
    [w2] = t.equity(utc("2026-03-03 09:00"), "96000.00")
    assert w2.kind == "warning"
    assert w2.ts == utc("2026-03-03 09:00")
    assert w2.details["level"] == D("95000")


def test_a_carried_floating_loss_past_the_warning_level_warns_at_the_rollover(trader_for):
    t = trader_for(DAILY, "{kind: early_warning, at_pct: [80], limits: [daily_loss]}")
    t.open(utc("2026-03-02 09:00"), "p1")
    assert kinds(t.equity(utc("2026-03-02 10:00"), "96000.00")) == [("warning", "daily_loss")]
    [w] = t.clock(utc("2026-03-02 23:00"))
    assert w.kind == "warning"
    assert w.value == D("96000.00")
    assert t.state.trading_day.isoformat() == "2026-03-03"
    assert t.equity(utc("2026-03-03 09:00"), "95900.00") == []


class TestCalendarTilesTime:
    """Every instant lies in exactly one trading day, and each day ends where the next begins."""

    @pytest.mark.parametrize(
        "timezone, day_start",
        [
            ("Europe/Prague", "00:00"),
            ("Europe/Prague", "02:30"),  # inside the hour that is skipped in March and repeated in October
            ("America/Chicago", "17:00"),
            ("America/Chicago", "01:30"),  # inside the hour repeated on the first Sunday of November
            ("America/New_York", "00:00"),
        ],
    )
    @pytest.mark.parametrize("around", ["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01"])
    def test_days_cover_the_dst_changes_without_gaps_or_overlaps(self, timezone, day_start, around):
        calendar = TradingCalendar(timezone, parse_hhmm(day_start))
        instant = utc(f"{around} 00:00") - dt.timedelta(days=1)
        last = calendar.session(instant)
        for _ in range(3 * 24 * 4):
            instant += dt.timedelta(minutes=15)
            day, start, end = calendar.session(instant)
            assert start <= instant < end, (instant, day, start, end)
            assert dt.timedelta(hours=22) <= end - start <= dt.timedelta(hours=26)
            if day != last[0]:
                assert start == last[2] and day == last[0] + dt.timedelta(days=1)
            else:
                assert (start, end) == last[1:]
            last = (day, start, end)

    def test_an_event_in_the_repeated_hour_after_the_day_start_rolls_over_once(self):
        # 02:15 CET on 25 October (01:15 UTC) comes after that day's 02:30 CEST start (00:30 UTC)
        day, start, end = TradingCalendar("Europe/Prague", dt.time(2, 30)).session(utc("2026-10-25 01:15"))
        assert start <= utc("2026-10-25 01:15") < end  # before the engine is fed: a wrong day here loops forever
        t = Trader(make_pack(DAILY, timezone="Europe/Prague", day_start="02:30"))
        t.equity(utc("2026-10-24 12:00"), "100000")
        t.equity(utc("2026-10-25 01:15"), "100000")
        assert t.state.trading_day.isoformat() == "2026-10-25"
        assert (t.state.day_start_at, t.state.day_end_at) == (utc("2026-10-25 00:30"), utc("2026-10-26 01:30"))
