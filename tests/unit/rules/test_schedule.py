"""When positions may be held or opened: weekend start, end of the trading day, trading hours."""

from __future__ import annotations

import pytest

from rulekit import kinds, local, only, utc

WEEKEND = '{kind: weekend_holding, weekend_start: {weekday: friday, time: "17:00", timezone: America/New_York}}'
NY = "America/New_York"


class TestWeekendHolding:
    def test_a_position_open_at_friday_17_new_york_is_a_violation(self, trader_for):
        t = trader_for(WEEKEND)
        t.open(utc("2026-03-05 10:00"), "p1")
        t.open(utc("2026-03-05 10:01"), "p2", symbol="GBPUSD")
        assert t.clock(utc("2026-03-06 21:59:59")) == []
        d = only(t.clock(utc("2026-03-06 22:00")))  # 17:00 EST
        assert (d.kind, d.rule) == ("violation", "weekend_holding")
        assert d.message == (
            "2 position(s) (p1, p2) were open at the weekend start Fri 2026-03-06 17:00 America/New_York; "
            "the account must be flat before it"
        )
        assert d.details["weekend_start"] == utc("2026-03-06 22:00")
        assert d.details["positions"] == ["p1", "p2"]
        assert t.clock(utc("2026-03-07 12:00")) == []  # once per weekend

    def test_flat_before_the_weekend_is_fine(self, trader_for):
        t = trader_for(WEEKEND)
        t.open(utc("2026-03-05 10:00"), "p1")
        t.close(utc("2026-03-06 21:59:59"), "p1", "10")
        assert t.clock(utc("2026-03-06 22:00")) == []
        assert t.clock(utc("2026-03-09 08:00")) == []

    def test_after_the_us_clock_change_the_weekend_starts_at_21_utc(self, trader_for):
        t = trader_for(WEEKEND)
        t.open(utc("2026-03-12 10:00"), "p1")
        assert t.clock(utc("2026-03-13 20:59:59")) == []
        d = only(t.clock(utc("2026-03-13 21:00")))  # 17:00 EDT
        assert "Fri 2026-03-13 17:00 America/New_York" in d.message

    def test_without_a_clock_the_next_event_finds_the_weekend(self, trader_for):
        t = trader_for(WEEKEND)
        t.open(utc("2026-03-06 15:00"), "p1")
        decisions = t.close(utc("2026-03-09 08:00"), "p1", "50")
        d = only(decisions, "violation")
        assert d.details["weekend_start"] == utc("2026-03-06 22:00")
        assert d.ts == utc("2026-03-09 08:00")

    def test_action_breach(self, trader_for):
        t = trader_for(WEEKEND.replace("}}", "}, action: breach}"))
        t.open(utc("2026-03-06 15:00"), "p1")
        assert only(t.clock(utc("2026-03-06 22:00"))).kind == "breach"
        assert t.state.status == "breached"

    def test_a_position_opened_during_the_weekend_is_judged_the_next_friday(self, trader_for):
        t = trader_for(WEEKEND)
        t.open(utc("2026-03-07 10:00"), "p1")  # Saturday: the account's first event
        assert t.clock(utc("2026-03-09 10:00")) == []
        assert only(t.clock(utc("2026-03-13 21:00"))).rule == "weekend_holding"


class TestOvernightHolding:
    def test_positions_open_at_the_end_of_the_trading_day(self, trader_for):
        t = trader_for("{kind: overnight_holding}")
        t.open(utc("2026-03-02 09:00"), "p1")
        assert t.clock(utc("2026-03-02 22:59:59")) == []
        d = only(t.clock(utc("2026-03-02 23:00")))  # 00:00 Prague
        assert (d.kind, d.rule) == ("violation", "overnight_holding")
        assert d.message == (
            "1 position(s) (p1) were held over the end of trading day 2026-03-02 (2026-03-02 23:00 UTC)"
        )

    def test_flat_at_the_chicago_session_end(self, trader_for):
        t = trader_for("{kind: overnight_holding, action: breach}", timezone="America/Chicago", day_start="17:00")
        t.open(local("2026-03-03 10:00", "America/Chicago"), "p1")
        t.close(local("2026-03-03 16:59", "America/Chicago"), "p1", "10")
        assert t.clock(local("2026-03-03 17:00", "America/Chicago")) == []
        t.open(local("2026-03-03 18:30", "America/Chicago"), "p2")  # Wednesday's session
        d = only(t.clock(local("2026-03-04 17:00", "America/Chicago")))
        assert d.kind == "breach"
        assert "trading day 2026-03-04" in d.message


class TestTradingHours:
    RULE = (
        "{kind: trading_hours, timezone: America/New_York, "
        "windows: [{days: [monday, tuesday, wednesday, thursday, friday], start: '09:30', end: '16:00'}]}"
    )

    @pytest.mark.parametrize(
        "when, allowed",
        [
            ("2026-03-02 09:29:59", False),
            ("2026-03-02 09:30:00", True),
            ("2026-03-02 15:59:59", True),
            ("2026-03-02 16:00:00", False),
            ("2026-03-07 11:00:00", False),  # Saturday
            ("2026-03-09 09:30:00", True),  # Monday after the US clock change (13:30 UTC)
        ],
    )
    def test_opening_inside_and_outside_the_windows(self, trader_for, when, allowed):
        t = trader_for(self.RULE)
        assert (t.open(local(when, NY), "p1") == []) is allowed

    def test_the_message_names_the_local_time_and_the_windows(self, trader_for):
        t = trader_for(self.RULE)
        d = only(t.open(utc("2026-03-02 14:29"), "p1"))
        assert d.message == (
            "position p1 was opened Mon 2026-03-02 09:29 America/New_York, outside the allowed trading hours "
            "(monday, tuesday, wednesday, thursday, friday 09:30–16:00 America/New_York)"
        )

    def test_closing_outside_the_hours_is_not_judged(self, trader_for):
        t = trader_for(self.RULE)
        t.open(local("2026-03-02 10:00", NY), "p1")
        assert t.close(local("2026-03-02 20:00", NY), "p1", "10") == []

    def test_a_window_until_midnight(self, trader_for):
        t = trader_for("{kind: trading_hours, timezone: Europe/Prague, windows: [{days: [sunday], start: '23:00', end: '24:00'}]}")
        assert t.open(local("2026-03-01 23:59:59", "Europe/Prague"), "p1") == []
        assert kinds(t.open(local("2026-03-02 00:00", "Europe/Prague"), "p2")) == [("violation", "trading_hours")]
