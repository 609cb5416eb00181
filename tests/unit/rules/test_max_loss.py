"""Max loss: a static floor, trailing levels (intraday equity, intraday balance, end-of-day balance), locks."""

from __future__ import annotations

import pytest

from rulekit import D, only, utc

MON, TUE, WED = "2026-03-02", "2026-03-03", "2026-03-04"  # Europe/Prague, day boundary 23:00 UTC


def at(day: str, clock: str):
    return utc(f"{day} {clock}")


class TestStatic:
    RULE = "{kind: max_loss, amount: {pct_initial: 10}, trailing: none, comparator: below}"

    def test_the_static_floor_never_moves_with_profit(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "20000.00")
        t.open(at(TUE, "09:00"), "p2")
        assert t.state.levels[0] == D("90000")
        assert t.equity(at(TUE, "10:00"), "90000.00") == []  # a 30,000 drawdown from the balance, on the floor

    def test_one_cent_below_fails_with_the_derivation(self, trader_for):
        t = trader_for(self.RULE)
        t.equity(at(MON, "09:00"), "95000.00")
        d = only(t.equity(at(MON, "09:01"), "89999.99"))
        assert (d.kind, d.rule) == ("breach", "max_loss")
        assert (d.value, d.threshold, d.comparator) == (D("89999.99"), D("90000"), "below")
        assert d.message == (
            "equity 89,999.99 fell below the max-loss level 90,000.00 = initial balance 100,000.00 "
            "− 10% of initial 100,000.00"
        )
        assert d.details["trailing"] == "none"
        assert "peak" not in d.details
        assert t.state.status == "breached"

    def test_touching_the_floor_with_at_or_below(self, trader_for):
        t = trader_for('{kind: max_loss, amount: {absolute: "8000"}, comparator: at_or_below}')
        assert t.equity(at(MON, "09:00"), "92000.01") == []
        d = only(t.equity(at(MON, "09:01"), "92000.00"))
        assert d.kind == "breach"
        assert d.message == "equity 92,000.00 reached the max-loss level 92,000.00 = initial balance 100,000.00 − 8,000.00"

    def test_a_withdrawal_through_a_balance_event_can_breach(self, trader_for):
        t = trader_for(self.RULE)
        d = only(t.cash(at(MON, "09:00"), "-10000.01", "withdrawal"))
        assert d.kind == "breach"
        assert d.value == D("89999.99")


class TestEquityIntraday:
    RULE = '{kind: max_loss, amount: {absolute: "5000"}, trailing: equity_intraday}'

    def test_level_follows_peak_equity_immediately_including_floating(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.equity(at(MON, "09:30"), "103000.00")  # floating profit only
        assert t.state.levels[0] == D("98000.00")
        assert t.state.peaks[0] == D("103000.00")
        assert t.equity(at(MON, "09:31"), "98000.00") == []
        d = only(t.equity(at(MON, "09:32"), "97999.99"))
        assert d.kind == "breach"
        assert d.message == (
            "equity 97,999.99 fell below the trailing max-loss level 98,000.00 = highest equity "
            "(floating P/L included) 103,000.00 − 5,000.00"
        )
        assert d.details["peak"] == D("103000.00")

    def test_level_never_decreases(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.equity(at(MON, "09:30"), "103000.00")
        t.equity(at(MON, "09:40"), "99000.00")
        t.close(at(MON, "09:41"), "p1", "-1000.00")
        t.open(at(TUE, "09:00"), "p2")
        t.equity(at(TUE, "10:00"), "101000.00")
        assert t.state.levels[0] == D("98000.00")
        assert t.state.peaks[0] == D("103000.00")

    @pytest.mark.parametrize(
        "lock, cap, words",
        [
            ("initial", "100000", "stopped trailing at 100,000.00"),
            ("{initial_plus: 1000}", "101000", "stopped trailing at 101,000.00"),
        ],
    )
    def test_lock_stops_the_level(self, trader_for, lock, cap, words):
        t = trader_for(f'{{kind: max_loss, amount: {{absolute: "5000"}}, trailing: equity_intraday, lock: {lock}}}')
        t.open(at(MON, "09:00"), "p1")
        t.equity(at(MON, "09:30"), "104000.00")
        assert t.state.levels[0] == min(D("99000.00"), D(cap))
        t.equity(at(MON, "09:31"), "112000.00")
        assert t.state.levels[0] == D(cap)
        t.equity(at(MON, "09:32"), "120000.00")
        assert t.state.levels[0] == D(cap)
        assert t.equity(at(MON, "09:33"), cap) == []
        d = only(t.equity(at(MON, "09:34"), str(D(cap) - D("0.01"))))
        assert d.kind == "breach"
        assert d.threshold == D(cap)
        assert d.details["locked"] is True
        assert d.message.endswith(words)

    def test_lock_at_the_profit_target_balance(self, trader_for):
        t = trader_for(
            '{kind: max_loss, amount: {absolute: "5000"}, trailing: equity_intraday, lock: target}',
            "{kind: profit_target, amount: {pct_initial: 10}}",
        )
        t.open(at(MON, "09:00"), "p1")  # open: the balance-measured target cannot pass yet
        t.equity(at(MON, "09:30"), "114000.00")
        assert t.state.levels[0] == D("109000.00")
        t.equity(at(MON, "09:31"), "118000.00")
        assert t.state.levels[0] == D("110000")
        d = only(t.equity(at(MON, "09:32"), "109999.99"))
        assert d.kind == "breach"
        assert "stopped trailing at 110,000.00" in d.message

    def test_before_the_lock_level_is_reached_the_message_has_no_lock(self, trader_for):
        t = trader_for('{kind: max_loss, amount: {absolute: "5000"}, trailing: equity_intraday, lock: initial}')
        t.equity(at(MON, "09:30"), "102000.00")
        d = only(t.equity(at(MON, "09:31"), "96999.99"))
        assert d.details["locked"] is False
        assert "stopped trailing" not in d.message


class TestBalanceIntraday:
    RULE = '{kind: max_loss, amount: {absolute: "5000"}, trailing: balance_intraday}'

    def test_floating_profit_does_not_move_the_level(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.equity(at(MON, "09:30"), "108000.00")
        assert t.state.levels[0] == D("95000")

    def test_a_closed_profit_moves_the_level_immediately(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.open(at(MON, "09:01"), "p2")
        t.close(at(MON, "10:00"), "p1", "3000.00")
        assert t.state.levels[0] == D("98000.00")
        d = only(t.equity(at(MON, "10:01"), "97999.99"))
        assert d.kind == "breach"
        assert "= highest closed balance 103,000.00 − 5,000.00" in d.message

    def test_lock_initial(self, trader_for):
        t = trader_for('{kind: max_loss, amount: {absolute: "5000"}, trailing: balance_intraday, lock: initial}')
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "9000.00")
        assert t.state.levels[0] == D("100000")


class TestBalanceEndOfDay:
    RULE = '{kind: max_loss, amount: {absolute: "5000"}, trailing: balance_eod}'

    def test_level_moves_only_at_the_day_boundary(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "3000.00")
        t.open(at(MON, "11:00"), "p2")
        assert t.state.levels[0] == D("95000")
        assert t.equity(at(MON, "12:00"), "95000.00") == []  # the level is still yesterday's
        t.equity(at(MON, "20:00"), "103000.00")
        t.clock(at(MON, "23:00"))  # 00:00 Prague
        assert t.state.levels[0] == D("98000.00")
        d = only(t.equity(at(TUE, "09:00"), "97999.99"))
        assert d.kind == "breach"
        assert d.message == (
            "equity 97,999.99 fell below the trailing max-loss level 98,000.00 = highest end-of-day "
            "balance 103,000.00 − 5,000.00"
        )

    def test_only_the_closing_balance_counts_not_the_intraday_peak(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "4000.00")  # 104,000 intraday
        t.open(at(MON, "11:00"), "p2")
        t.close(at(MON, "12:00"), "p2", "-3000.00")  # 101,000 at the end of the day
        t.clock(at(MON, "23:00"))
        assert t.state.levels[0] == D("96000.00")

    def test_a_losing_day_does_not_lower_the_level(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "3000.00")
        t.open(at(TUE, "09:00"), "p2")
        t.close(at(TUE, "10:00"), "p2", "-2000.00")
        t.clock(at(TUE, "23:00"))
        assert t.state.levels[0] == D("98000.00")
        assert t.state.peaks[0] == D("103000.00")

    def test_lock_initial_plus(self, trader_for):
        t = trader_for('{kind: max_loss, amount: {absolute: "5000"}, trailing: balance_eod, lock: {initial_plus: 500}}')
        t.open(at(MON, "09:00"), "p1")
        t.close(at(MON, "10:00"), "p1", "7000.00")
        t.clock(at(MON, "23:00"))
        assert t.state.levels[0] == D("100500")
        assert t.equity(at(TUE, "09:00"), "100500.00") == []
        d = only(t.equity(at(TUE, "09:01"), "100499.99"))
        assert "stopped trailing at 100,500.00" in d.message
