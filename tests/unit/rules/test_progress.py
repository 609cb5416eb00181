"""Passing a phase: profit target, minimum trading days, maximum duration, inactivity and the blockers."""

from __future__ import annotations

import datetime as dt

from rulekit import D, Trader, kinds, make_pack, only, utc

TARGET = "{kind: profit_target, amount: {pct_initial: 10}}"  # balance 110,000


def day(n: int, clock: str = "09:00"):
    """Trading day ``n`` of a March 2026 test (1 = Monday 2 March; Prague days, weekends included)."""
    return utc(f"2026-03-{1 + n:02d} {clock}")


def win(t, n: int, profit: str, position: str | None = None, clock: str = "09:00"):
    position = position or f"d{n}-{clock}"
    t.open(day(n, clock), position)
    return t.close(day(n, clock.replace(":00", ":30")), position, profit)


class TestProfitTarget:
    def test_balance_target_needs_every_position_closed(self, trader_for):
        t = trader_for(TARGET)
        t.open(day(1), "p1")
        t.open(day(1), "p2")
        assert t.close(day(1, "10:00"), "p1", "10000.00") == []  # p2 still open
        assert t.state.status == "active"
        d = only(t.close(day(1, "11:00"), "p2", "0.00"))
        assert (d.kind, d.rule) == ("phase_passed", "profit_target")
        assert (d.value, d.threshold, d.comparator) == (D("110000.00"), D("110000"), "at_or_above")
        assert d.message == "phase-1 passed: balance 110,000.00 ≥ target 110,000.00"
        assert t.state.status == "passed"

    def test_one_cent_short_of_the_target_does_not_pass(self, trader_for):
        t = trader_for(TARGET)
        assert win(t, 1, "9999.99") == []
        assert t.state.status == "active"

    def test_balance_target_is_not_met_by_floating_profit(self, trader_for):
        t = trader_for(TARGET)
        t.open(day(1), "p1")
        assert t.equity(day(1, "10:00"), "115000.00") == []

    def test_equity_target_passes_with_positions_open(self, trader_for):
        t = trader_for("{kind: profit_target, amount: {pct_initial: 10}, measure: equity}")
        t.open(day(1), "p1")
        assert t.equity(day(1, "10:00"), "109999.99") == []
        d = only(t.equity(day(1, "10:01"), "110000.00"))
        assert d.kind == "phase_passed"
        assert d.message == "phase-1 passed: equity 110,000.00 ≥ target 110,000.00"

    def test_the_next_phase_is_named(self):
        pack = make_pack(phases=[("phase-1", [TARGET]), ("phase-2", ["{kind: profit_target, amount: {pct_initial: 5}}"])])
        t = Trader(pack)
        d = only(win(t, 1, "10000.00"))
        assert d.details["next_phase"] == "phase-2"
        assert d.message.endswith("; next: phase-2")
        t2 = Trader(pack, phase="phase-2")
        d2 = only(win(t2, 1, "5000.00"))
        assert d2.phase == "phase-2"
        assert "next_phase" not in d2.details

    def test_nothing_is_evaluated_after_the_pass(self, trader_for):
        t = trader_for(TARGET, "{kind: max_loss, amount: {pct_initial: 10}}")
        win(t, 1, "10000.00")
        assert t.equity(day(1, "12:00"), "1.00") == []
        assert t.state.status == "passed"


class TestMinTradingDays:
    def test_target_waits_for_the_minimum_days_of_opened_positions(self, trader_for):
        t = trader_for(TARGET, "{kind: min_trading_days, days: 4, counts: opened}")
        win(t, 1, "4000.00")
        win(t, 1, "4000.00", clock="11:00")  # a second trade the same day counts once
        d = only(win(t, 2, "2000.00"))  # target met on day 2, only 2 trading days
        assert (d.kind, d.rule) == ("blocked", "min_trading_days")
        assert t.state.active_days == 2
        assert only(win(t, 3, "0.00")).message.startswith("target met but minimum trading days: 3 of 4")
        d = only(win(t, 4, "0.00"))
        assert d.kind == "phase_passed"
        assert d.message == "phase-1 passed: balance 110,000.00 ≥ target 110,000.00; 4 trading days ≥ 4"
        assert d.details["trading_days"] == 4

    def test_ftmo_a_target_met_early_says_how_many_days_are_left_once_per_change(self, trader_for):
        """FTMO: at least 4 trading days; a trader who reaches the 10% target on the second day must keep
        trading (one trade a day is enough) and is told so, not left to guess from a missing pass."""
        t = trader_for(TARGET, "{kind: min_trading_days, days: 4, counts: opened}")
        win(t, 1, "6000.00")
        d = only(win(t, 2, "4000.00"))
        assert (d.kind, d.rule, d.phase) == ("blocked", "min_trading_days", "phase-1")
        assert d.message == "target met but minimum trading days: 2 of 4 trading days — keep trading"
        assert (d.value, d.threshold) == (D(2), D(4))
        assert d.details == {"trading_days": 2, "required_days": 4, "days_needed": 2}
        assert t.equity(day(2, "12:00"), "110000.00") == []  # the same text is not repeated
        assert t.clock(day(2, "23:59")) == []
        assert only(win(t, 3, "0.00")).message == (
            "target met but minimum trading days: 3 of 4 trading days — keep trading"
        )
        assert only(win(t, 4, "0.00")).kind == "phase_passed"

    def test_every_blocker_is_named_at_once_days_and_consistency(self, trader_for):
        t = trader_for(TARGET, "{kind: min_trading_days, days: 4}", "{kind: consistency, max_best_day_pct: 50}")
        win(t, 1, "2000.00")
        decisions = win(t, 2, "8000.00")
        assert kinds(decisions) == [("blocked", "consistency"), ("blocked", "min_trading_days")]
        assert decisions[1].message == "target met but minimum trading days: 2 of 4 trading days — keep trading"
        assert "best day 8,000.00 is 80%" in decisions[0].message
        # the days move on, consistency still holds: both are said again, together, with the new text
        decisions = win(t, 3, "0.00")
        assert kinds(decisions) == [("blocked", "consistency"), ("blocked", "min_trading_days")]
        assert "3 of 4" in decisions[1].message
        # the days are met; only consistency is left
        d = only(win(t, 4, "0.00"))
        assert (d.kind, d.rule) == ("blocked", "consistency")
        assert t.state.status == "active"

    def test_days_without_an_opened_position_do_not_count(self, trader_for):
        t = trader_for(TARGET, "{kind: min_trading_days, days: 2}")
        t.open(day(1), "p1")
        d = only(t.close(day(2), "p1", "10000.00"))  # closed on day 2, opened on day 1
        assert d.message == "target met but minimum trading days: 1 of 2 trading days — keep trading"
        assert t.state.active_days == 1

    def test_profitable_days_count_only_at_the_threshold(self, trader_for):
        t = trader_for(
            '{kind: profit_target, amount: {absolute: "1000"}}',
            "{kind: min_trading_days, days: 2, counts: {profitable_pct_initial: 0.5}}",  # 500 a day
        )
        assert win(t, 1, "600.00") == []
        d = only(win(t, 2, "499.99"))  # target met, but day 2 does not count
        assert d.message == (
            "target met but minimum trading days: 1 of 2 days with closed profit ≥ 500.00 — keep trading"
        )
        assert t.state.status == "active"
        d = only(win(t, 3, "500.00"))
        assert d.kind == "phase_passed"
        assert d.message.endswith("; 2 days with closed profit ≥ 500.00 ≥ 2")

    def test_a_profitable_day_is_its_net_closed_profit(self, trader_for):
        t = trader_for(
            '{kind: profit_target, amount: {absolute: "1000"}}',
            "{kind: min_trading_days, days: 2, counts: {profitable_pct_initial: 0.5}}",
        )
        win(t, 1, "800.00")
        win(t, 1, "-400.00", clock="11:00")  # day 1 nets 400: does not count
        assert only(win(t, 2, "600.00")).kind == "blocked"  # target met with one counted day
        assert only(win(t, 3, "500.00")).kind == "phase_passed"


class TestMaxDuration:
    RULES = (TARGET, "{kind: max_duration, days: 30}")

    def test_time_runs_out_exactly_at_the_deadline(self, trader_for):
        t = trader_for(*self.RULES)
        t.equity(utc("2026-03-02 10:00"), "100000")
        assert t.clock(utc("2026-04-01 09:59:59")) == []
        d = only(t.clock(utc("2026-04-01 10:00")))
        assert (d.kind, d.rule) == ("breach", "max_duration")
        assert d.message == (
            "phase phase-1 was not passed within 30 days (started 2026-03-02 10:00 UTC, "
            "time ran out 2026-04-01 10:00 UTC)"
        )
        assert t.state.status == "breached"

    def test_an_event_after_the_deadline_is_judged_after_the_deadline(self, trader_for):
        t = trader_for(*self.RULES)
        t.open(utc("2026-03-02 10:00"), "p1")
        decisions = t.close(utc("2026-04-02 10:00"), "p1", "20000.00")
        assert kinds(decisions) == [("breach", "max_duration")]
        assert t.state.balance == D("100000")  # the late close was not applied

    def test_passing_in_time_stops_the_clock(self, trader_for):
        t = trader_for(*self.RULES)
        win(t, 1, "10000.00")
        assert t.clock(utc("2026-05-01 00:00")) == []
        assert t.state.status == "passed"


class TestInactivity:
    RULE = "{kind: inactivity, days: 5}"

    def test_no_trade_for_the_span_fails_and_equity_updates_are_not_activity(self, trader_for):
        t = trader_for(self.RULE)
        t.open(utc("2026-03-02 09:00"), "p1")
        t.close(utc("2026-03-04 09:00"), "p1", "10.00")
        t.equity(utc("2026-03-08 09:00"), "100010.00")
        assert t.clock(utc("2026-03-09 08:59:59")) == []
        d = only(t.clock(utc("2026-03-09 09:00")))
        assert (d.kind, d.rule) == ("breach", "inactivity")
        assert d.message == "no trade for 5 days (last activity 2026-03-04 09:00 UTC)"

    def test_the_span_starts_at_the_first_event_when_nothing_was_traded(self, trader_for):
        t = trader_for(self.RULE)
        t.equity(utc("2026-03-02 12:00"), "100000")
        assert only(t.clock(utc("2026-03-07 12:00"))).rule == "inactivity"

    def test_a_trade_pushes_the_deadline(self, trader_for):
        t = trader_for(self.RULE)
        t.open(utc("2026-03-02 09:00"), "p1")
        t.open(utc("2026-03-06 09:00"), "p2")
        assert t.clock(utc("2026-03-07 09:00")) == []
        assert t.state.next_deadline <= utc("2026-03-11 09:00")


    def test_for_traders_days_count_from_the_last_closed_position(self, trader_for):
        """For Traders: inactivity counts from the last closed position; opening one does not reset it."""
        t = trader_for("{kind: inactivity, days: 30, activity: closed}")
        t.open(utc("2026-03-02 09:00"), "p1")
        t.close(utc("2026-03-04 09:00"), "p1", "10.00")
        t.open(utc("2026-03-20 09:00"), "p2")  # an opening is not activity here
        assert t.clock(utc("2026-04-03 08:59")) == []
        d = only(t.clock(utc("2026-04-03 09:00")))
        assert (d.kind, d.rule) == ("breach", "inactivity")
        assert d.message == "no position closed for 30 days (last activity 2026-03-04 09:00 UTC)"
        assert d.details == {"last_activity": utc("2026-03-04 09:00"), "activity": "closed"}

    def test_a_close_resets_the_closed_timer_and_the_phase_start_counts_before_any(self, trader_for):
        t = trader_for("{kind: inactivity, days: 5, activity: closed}")
        t.open(utc("2026-03-02 09:00"), "p1")  # the phase starts here; the open does not count
        assert only(t.clock(utc("2026-03-07 09:00"))).message.startswith("no position closed for 5 days")
        t = trader_for("{kind: inactivity, days: 5, activity: closed}")
        t.open(utc("2026-03-02 09:00"), "p1")
        t.close(utc("2026-03-06 09:00"), "p1", "1.00")
        assert t.clock(utc("2026-03-11 08:59")) == []
        assert only(t.clock(utc("2026-03-11 09:00"))).rule == "inactivity"

    def test_only_openings_can_be_the_activity(self, trader_for):
        t = trader_for("{kind: inactivity, days: 5, activity: opened}")
        t.open(utc("2026-03-02 09:00"), "p1")
        t.close(utc("2026-03-06 09:00"), "p1", "1.00")  # a close is not activity here
        d = only(t.clock(utc("2026-03-07 09:00")))
        assert d.message == "no position opened for 5 days (last activity 2026-03-02 09:00 UTC)"


class TestConsistency:
    RULES = (TARGET, "{kind: consistency, max_best_day_pct: 50}")

    def test_a_dominant_best_day_blocks_the_pass_and_names_the_new_target(self, trader_for):
        t = trader_for(*self.RULES)
        assert win(t, 1, "6000.00") == []
        d = only(win(t, 2, "4000.00"))  # balance 110,000: target met
        assert (d.kind, d.rule) == ("blocked", "consistency")
        assert d.message == (
            "target met but consistency: best day 6,000.00 is 60% of total profit 10,000.00 (at most 50%); "
            "total profit must reach 12,000.00 (balance 112,000.00) to pass"
        )
        assert d.value == D("6000.00")
        assert d.threshold == D("5000.00")
        assert d.details["effective_target"] == D("112000.00")
        assert t.state.status == "active"
        assert t.equity(day(2, "12:00"), "110000.00") == []  # the same block is not repeated

    def test_enough_further_profit_releases_the_pass(self, trader_for):
        t = trader_for(*self.RULES)
        win(t, 1, "6000.00")
        win(t, 2, "4000.00")
        d = only(win(t, 3, "1999.99"))
        assert d.kind == "blocked"
        assert d.details["effective_target"] == D("112000.00")
        d = only(win(t, 3, "0.01", clock="11:00"))
        assert d.kind == "phase_passed"
        assert t.state.balance == D("112000.00")

    def test_todays_profit_can_be_the_best_day(self, trader_for):
        t = trader_for(*self.RULES)
        win(t, 1, "2000.00")
        d = only(win(t, 2, "8000.00"))
        assert d.kind == "blocked"
        assert "best day 8,000.00 is 80%" in d.message
        assert d.details["effective_target"] == D("116000.00")

    def test_even_days_pass_at_the_target(self, trader_for):
        t = trader_for(*self.RULES)
        win(t, 1, "5000.00")
        assert only(win(t, 2, "5000.00")).kind == "phase_passed"  # 50% is allowed


class TestMinHoldingTime:
    def trade(self, t, n: int, held_s: int, profit: str = "250.00"):
        opened = utc(f"2026-03-02 09:{n:02d}:00")
        t.open(opened, f"h{n}")
        closed = opened + dt.timedelta(seconds=held_s)
        return t.close(closed, f"h{n}", profit)

    def test_blocker_holds_the_pass_and_says_what_releases_it(self, trader_for):
        t = trader_for(
            '{kind: profit_target, amount: {absolute: "1000"}}',
            "{kind: min_holding_time, seconds: 60, max_share_pct: 50, min_trades: 4}",
        )
        self.trade(t, 1, 30)
        self.trade(t, 3, 59)
        self.trade(t, 5, 60)  # exactly 60 s is long enough
        d = only(self.trade(t, 7, 10))  # 3 of 4 short; target 101,000 met
        assert (d.kind, d.rule) == ("blocked", "min_holding_time")
        assert d.message == (
            "target met but holding time: 3 of 4 closed positions (75%) were held under 60 s; at most 50% may be; "
            "2 more positions held ≥ 60 s would release it"
        )
        assert d.value == D(75)
        assert d.details["short_trades"] == 3
        assert only(self.trade(t, 9, 120, "0.00")).kind == "blocked"  # 3 of 5: still over, new numbers
        assert only(self.trade(t, 11, 120, "0.00")).kind == "phase_passed"  # 3 of 6 = 50%

    def test_below_min_trades_nothing_is_judged(self, trader_for):
        t = trader_for(
            '{kind: profit_target, amount: {absolute: "500"}}',
            "{kind: min_holding_time, seconds: 60, max_share_pct: 50, min_trades: 4}",
        )
        self.trade(t, 1, 5)
        assert only(self.trade(t, 3, 5)).kind == "phase_passed"

    def test_violation_fires_when_the_share_crosses_and_again_after_recovering(self, trader_for):
        t = trader_for("{kind: min_holding_time, seconds: 60, max_share_pct: 50, min_trades: 2, action: violation}")
        assert self.trade(t, 1, 120) == []
        assert self.trade(t, 3, 5) == []  # 1 of 2 = 50%: not over
        d = only(self.trade(t, 5, 5))
        assert (d.kind, d.rule) == ("violation", "min_holding_time")
        assert d.message == "2 of 3 closed positions (66.7%) were held under 60 s; at most 50% may be"
        assert self.trade(t, 7, 5) == []  # still over: reported once
        assert self.trade(t, 9, 120) == []
        assert self.trade(t, 11, 120) == []  # 3 of 6 = 50%: back within
        assert only(self.trade(t, 13, 5)).kind == "violation"  # 4 of 7: crosses again
        assert t.state.status == "active"

    def test_a_partially_closed_position_is_judged_at_its_last_close(self, trader_for):
        t = trader_for("{kind: min_holding_time, seconds: 60, max_share_pct: 0, min_trades: 1, action: violation}")
        opened = utc("2026-03-02 09:00:00")
        t.open(opened, "p1", lots="2")
        assert t.close(utc("2026-03-02 09:00:10"), "p1", "10.00", lots="1") == []
        assert t.close(utc("2026-03-02 09:05:00"), "p1", "10.00", lots="1") == []  # held 5 minutes in all
        t.open(utc("2026-03-02 09:10:00"), "p2")
        assert only(t.close(utc("2026-03-02 09:10:30"), "p2", "10.00")).details["short_trades"] == 1
