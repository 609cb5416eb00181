"""Daily loss: every base, every amount form, both comparators at the exact floor, fail and pause."""

from __future__ import annotations

from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack

from rulekit import D, Trader, kinds, only, utc

DAY1 = "2026-03-02"  # Monday; Europe/Prague, trading days start 00:00 local (23:00 UTC the day before, CET)
DAY2 = "2026-03-03"


def at(day: str, clock: str):
    return utc(f"{day} {clock}")


class TestBalanceBaseFiveOfInitial:
    RULE = "{kind: daily_loss, amount: {pct_initial: 5}, base: balance, on_breach: fail, comparator: below}"

    def test_equity_exactly_on_the_floor_is_not_a_breach_with_below(self, trader_for):
        t = trader_for(self.RULE)
        assert t.equity(at(DAY1, "09:00"), "99000.00") == []
        assert t.equity(at(DAY1, "09:01"), "95000.00") == []
        assert t.state.status == "active"
        assert t.state.levels[0] == D("95000")

    def test_one_cent_below_the_floor_fails_the_account_with_the_derivation(self, trader_for):
        t = trader_for(self.RULE)
        t.equity(at(DAY1, "09:00"), "97000.00")  # in band: takes the fast path
        d = only(t.equity(at(DAY1, "09:01"), "94999.99"))
        assert (d.kind, d.rule, d.phase, d.account) == ("breach", "daily_loss", "phase-1", "A1")
        assert d.value == D("94999.99")
        assert d.threshold == D("95000")
        assert d.comparator == "below"
        assert d.message == (
            "equity 94,999.99 fell below the daily floor 95,000.00 = balance at day start 100,000.00 "
            "− 5% of initial 100,000.00"
        )
        assert d.details["base_value"] == D("100000")
        assert d.details["amount"] == D("5000")
        assert d.details["trading_day"] == DAY1
        assert t.state.status == "breached"

    def test_intraday_profit_does_not_raise_todays_floor(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(DAY1, "09:00"), "p1")
        t.close(at(DAY1, "10:00"), "p1", "2000.00")
        assert t.state.balance == D("102000.00")
        assert t.state.levels[0] == D("95000")
        t.open(at(DAY1, "11:00"), "p2")
        assert t.equity(at(DAY1, "11:30"), "95000.00") == []  # a 7,000 drop from the balance, still on the floor
        d = only(t.equity(at(DAY1, "11:31"), "94999.99"), "breach")
        assert "balance at day start 100,000.00" in d.message

    def test_next_day_floor_follows_the_closed_balance(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(DAY1, "09:00"), "p1")
        t.close(at(DAY1, "10:00"), "p1", "2000.00")
        t.open(at(DAY2, "09:00"), "p2")
        assert t.state.trading_day.isoformat() == DAY2
        assert t.state.day_start_balance == D("102000.00")
        assert t.state.levels[0] == D("97000.00")
        d = only(t.equity(at(DAY2, "09:05"), "96999.99"), "breach")
        assert d.threshold == D("97000.00")
        assert "balance at day start 102,000.00 − 5% of initial 100,000.00" in d.message

    def test_numbers_on_the_wire_are_read_exactly(self, trader_for):
        t = trader_for(self.RULE)
        assert t.wire('{"id":"e1","type":"equity","account":"A1","ts":"2026-03-02T09:00:00Z","equity":95000.00,"balance":"100000"}') == []
        d = only(
            t.wire(
                '{"id":"e2","type":"equity","account":"A1","ts":"2026-03-02T10:00:00+01:00",'
                '"equity":94999.999,"balance":100000}'
            )
        )
        assert d.value == D("94999.999")
        assert d.event_id == "e2"
        assert d.message.startswith("equity 95,000.00 fell below the daily floor 95,000.00")  # display rounds, the check does not


class TestComparatorAtOrBelow:
    RULE = "{kind: daily_loss, amount: {pct_initial: 5}, base: balance, comparator: at_or_below}"

    def test_touching_the_floor_is_a_breach(self, trader_for):
        t = trader_for(self.RULE)
        t.equity(at(DAY1, "09:00"), "96000.00")
        d = only(t.equity(at(DAY1, "09:01"), "95000.00"))
        assert d.kind == "breach"
        assert d.comparator == "at_or_below"
        assert d.message.startswith("equity 95,000.00 reached the daily floor 95,000.00 = balance at day start")

    def test_one_cent_above_the_floor_is_fine(self, trader_for):
        t = trader_for(self.RULE)
        assert t.equity(at(DAY1, "09:00"), "95000.01") == []
        assert t.state.status == "active"


def _carry_floating(t, equity: str, balance: str = "100000.00"):
    """Day 1 ends with an open position: the last equity is ``equity`` while the balance is ``balance``."""
    t.open(at(DAY1, "09:00"), "p1")
    t.equity(at(DAY1, "20:00"), equity, balance)


class TestBases:
    def test_equity_base_uses_day_start_equity_including_floating(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 5}, base: equity}")
        _carry_floating(t, "98000.00")
        t.equity(at(DAY2, "08:00"), "97000.00")
        assert t.state.day_start_equity == D("98000.00")
        assert t.state.levels[0] == D("93000.00")
        assert t.equity(at(DAY2, "09:00"), "93000.00") == []
        d = only(t.equity(at(DAY2, "09:01"), "92999.99"))
        assert d.kind == "breach"
        assert d.message == (
            "equity 92,999.99 fell below the daily floor 93,000.00 = equity at day start 98,000.00 "
            "− 5% of initial 100,000.00"
        )
        assert d.details["base"] == "equity"

    def test_balance_base_ignores_floating_at_day_start(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 5}, base: balance}")
        _carry_floating(t, "98000.00")
        t.equity(at(DAY2, "08:00"), "97000.00")
        assert t.state.levels[0] == D("95000.00")
        assert only(t.equity(at(DAY2, "09:01"), "94999.99")).kind == "breach"

    def test_max_balance_equity_takes_equity_when_floating_profit(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 5}, base: max_balance_equity}")
        _carry_floating(t, "102000.00")
        t.equity(at(DAY2, "08:00"), "101000.00")
        assert t.state.levels[0] == D("97000.00")
        d = only(t.equity(at(DAY2, "09:00"), "96999.99"))
        assert d.message == (
            "equity 96,999.99 fell below the daily floor 97,000.00 = the higher of balance 100,000.00 and "
            "equity 102,000.00 at day start − 5% of initial 100,000.00"
        )
        assert d.details["base_value"] == D("102000.00")

    def test_max_balance_equity_takes_balance_when_floating_loss(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 5}, base: max_balance_equity}")
        _carry_floating(t, "99000.00")
        t.equity(at(DAY2, "08:00"), "99000.00")
        assert t.state.levels[0] == D("95000.00")
        assert t.equity(at(DAY2, "09:00"), "95000.00") == []

    def test_initial_base_never_moves_with_profit(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 5}, base: initial}")
        t.open(at(DAY1, "09:00"), "p1")
        t.close(at(DAY1, "10:00"), "p1", "10000.00")
        t.open(at(DAY2, "09:00"), "p2")
        assert t.state.levels[0] == D("95000")
        assert t.equity(at(DAY2, "10:00"), "95000.00") == []
        d = only(t.equity(at(DAY2, "10:01"), "94999.99"))
        assert d.message.endswith("= initial balance 100,000.00 − 5% of initial 100,000.00")


class TestAmountForms:
    def test_pct_base_is_a_percentage_of_the_base_itself(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_base: 5}, base: balance}")
        t.open(at(DAY1, "09:00"), "p1")
        t.close(at(DAY1, "10:00"), "p1", "10000.00")
        t.open(at(DAY2, "09:00"), "p2")
        assert t.state.levels[0] == D("104500.00")  # 110,000 − 5% of 110,000
        assert t.equity(at(DAY2, "10:00"), "104500.00") == []
        d = only(t.equity(at(DAY2, "10:01"), "104499.99"))
        assert d.details["amount"] == D("5500.00")
        assert d.message.endswith("= balance at day start 110,000.00 − 5% of 110,000.00")

    def test_fractional_percentages_stay_exact(self, trader_for):
        t = trader_for("{kind: daily_loss, amount: {pct_initial: 4.5}, base: balance}")
        t.equity(at(DAY1, "09:00"), "95500.00")
        d = only(t.equity(at(DAY1, "09:01"), "95499.99"))
        assert d.threshold == D("95500")
        assert "− 4.5% of initial 100,000.00" in d.message

    def test_absolute_amount(self, trader_for):
        t = trader_for('{kind: daily_loss, amount: {absolute: "3000"}, base: balance}')
        assert t.equity(at(DAY1, "09:00"), "97000.00") == []
        d = only(t.equity(at(DAY1, "09:01"), "96999.99"))
        assert d.threshold == D("97000")
        assert d.message.endswith("= balance at day start 100,000.00 − 3,000.00")


class TestPause:
    RULES = (
        "{kind: daily_loss, amount: {pct_initial: 5}, base: balance, on_breach: pause}",
        "{kind: max_loss, amount: {pct_initial: 10}}",
    )

    def paused(self, trader_for):
        t = trader_for(*self.RULES)
        t.open(at(DAY1, "09:00"), "p1")
        d = only(t.equity(at(DAY1, "10:00"), "94999.99"))
        return t, d

    def test_breaching_the_floor_pauses_instead_of_failing(self, trader_for):
        t, d = self.paused(trader_for)
        assert (d.kind, d.rule) == ("pause", "daily_loss")
        assert d.message == (
            "equity 94,999.99 fell below the daily floor 95,000.00 = balance at day start 100,000.00 − 5% of "
            "initial 100,000.00; trading is paused until the next trading day starts (2026-03-02 23:00 UTC)"
        )
        assert d.details["until"] == utc(f"{DAY1} 23:00")
        assert t.state.status == "paused"
        assert t.state.paused_until == utc(f"{DAY1} 23:00")

    def test_no_second_pause_the_same_day(self, trader_for):
        t, _ = self.paused(trader_for)
        t.close(at(DAY1, "10:05"), "p1", "-5500.00")
        assert t.equity(at(DAY1, "11:00"), "94000.00") == []
        assert t.equity(at(DAY1, "12:00"), "93000.00") == []
        assert t.state.status == "paused"

    def test_opening_while_paused_is_a_violation(self, trader_for):
        t, _ = self.paused(trader_for)
        d = only(t.open(at(DAY1, "12:00"), "p2"))
        assert (d.kind, d.rule) == ("violation", "pause")
        assert d.message == "position p2 was opened while trading is paused until 2026-03-02 23:00 UTC"
        assert t.state.status == "paused"

    def test_max_loss_still_fails_a_paused_account(self, trader_for):
        t, _ = self.paused(trader_for)
        d = only(t.equity(at(DAY1, "12:00"), "89999.99"))
        assert (d.kind, d.rule) == ("breach", "max_loss")
        assert t.state.status == "breached"

    def test_trading_resumes_at_the_next_trading_day_with_a_fresh_floor(self, trader_for):
        t, _ = self.paused(trader_for)
        t.close(at(DAY1, "10:05"), "p1", "-4000.00")
        assert t.clock(utc(f"{DAY1} 22:59:59")) == []
        assert t.state.status == "paused"
        assert t.clock(utc(f"{DAY1} 23:00")) == []  # 00:00 Prague: the next trading day
        assert t.state.status == "active"
        assert t.state.paused_until is None
        assert t.state.trading_day.isoformat() == DAY2
        assert t.state.levels[0] == D("91000.00")  # 96,000 − 5,000
        assert t.open(at(DAY2, "09:00"), "p3") == []  # allowed again
        assert t.equity(at(DAY2, "10:00"), "91000.00") == []  # and the floor is checked again
        assert only(t.equity(at(DAY2, "10:01"), "90999.99")).kind == "pause"

    def test_a_paused_account_that_reaches_the_target_passes_when_the_pause_ends(self, trader_for):
        t = trader_for(
            "{kind: daily_loss, amount: {pct_initial: 5}, on_breach: pause}",
            "{kind: profit_target, amount: {absolute: '1000'}}",
        )
        t.open(at(DAY1, "09:00"), "p1")
        t.open(at(DAY1, "09:00"), "p2")
        assert kinds(t.equity(at(DAY1, "10:00"), "94000.00")) == [("pause", "daily_loss")]
        t.close(at(DAY1, "10:01"), "p1", "-6000.00")
        assert t.close(at(DAY1, "10:02"), "p2", "7000.00") == []  # flattening is allowed; no pass while paused
        assert t.state.balance == D("101000.00")
        assert kinds(t.clock(at(DAY1, "23:00"))) == [("phase_passed", "profit_target")]

    def test_pause_again_on_the_next_day(self, trader_for):
        t, _ = self.paused(trader_for)
        t.close(at(DAY1, "10:05"), "p1", "-3000.00")  # balance 97,000
        t.open(at(DAY2, "09:00"), "p3")
        assert t.state.status == "active"
        assert t.state.levels[0] == D("92000.00")
        d = only(t.equity(at(DAY2, "10:00"), "91999.99"), "pause")
        assert "balance at day start 97,000.00" in d.message
        assert d.details["until"] == utc(f"{DAY2} 23:00")


def test_the_two_step_preset_explains_the_floor_in_the_guides_words():
    t = Trader(compile_pack(load_pack("two-step-100k")))
    t.open(at(DAY1, "14:03:11"), "p1")
    d = only(t.equity(at(DAY1, "14:05"), "94999.00"), "breach")
    assert d.message == (
        "equity 94,999.00 fell below the daily floor 95,000.00 = balance at day start 100,000.00 − 5% of "
        "initial 100,000.00"
    )


class TestCostsAtAPartialClose:
    """FTMO: "equity includes open positions, commissions and swaps". Closing part of a position moves
    its profit from floating to the balance (equity does not change by it) and charges its commission
    and swap at once, while the rest still floats."""

    RULE = "{kind: daily_loss, amount: {pct_initial: 5}, base: balance}"

    def test_the_exit_commission_of_a_partial_close_breaches_at_that_close(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(DAY1, "09:00"), "p1", lots="2")
        assert t.equity(at(DAY1, "10:00"), "95010.00") == []  # floating −4,990: 10.00 above the floor
        d = only(t.close(at(DAY1, "10:01"), "p1", "-2495.00", lots="1", commission="-7.00", swap="-5.00"))
        assert (d.kind, d.rule, d.event_id) == ("breach", "daily_loss", "c-A1-3")
        assert d.value == D("94998.00")  # 95,010 − 7 − 5, the other lot still floating
        assert t.state.balance == D("97493.00")  # 100,000 − 2,495 − 7 − 5

    def test_the_rest_keeps_floating_and_the_next_report_is_the_truth(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at(DAY1, "09:00"), "p1", lots="2")
        t.equity(at(DAY1, "10:00"), "99000.00")
        assert t.close(at(DAY1, "10:01"), "p1", "-500.00", lots="1", commission="-3.50", swap="1.00") == []
        assert t.state.equity == D("98997.50")  # only the costs moved it: the loss had already floated
        assert t.equity(at(DAY1, "10:02"), "99100.00", "99497.50") == []
        assert t.state.equity == D("99100.00")
