"""News windows: opening or closing around high-impact news, known in advance or published afterwards."""

from __future__ import annotations

import pytest

from rulekit import D, kinds, only, utc

NEWS = "{kind: news, before_s: 120, after_s: 120, impact: [high], action: violation}"
NFP = "US Non-Farm Payrolls"
AT = utc("2026-03-06 13:30")  # the news time


def t_(clock: str):
    return utc(f"2026-03-06 {clock}")


class TestKnownInAdvance:
    @pytest.mark.parametrize("clock, inside", [("13:27:59", False), ("13:28:00", True), ("13:32:00", True), ("13:32:01", False)])
    def test_opening_at_the_window_edges(self, trader_for, clock, inside):
        t = trader_for(NEWS)
        t.news(AT, NFP, currency="USD")
        decisions = t.open(t_(clock), "p1")
        assert kinds(decisions) == ([("violation", "news")] if inside else [])

    def test_the_violation_names_the_news_and_the_window(self, trader_for):
        t = trader_for(NEWS)
        t.news(AT, NFP, currency="USD")
        d = only(t.open(t_("13:29:00"), "p1"))
        assert d.message == (
            "position p1 (EURUSD) was opened 13:29:00 UTC inside the window 120 s before to 120 s after the "
            f"high-impact USD news “{NFP}” at 2026-03-06 13:30:00 UTC"
        )
        assert d.details["news"] == NFP
        assert d.details["news_ts"] == AT

    def test_a_stop_loss_fill_inside_the_window_is_an_offence_too(self, trader_for):
        t = trader_for(NEWS)
        t.news(AT, NFP, currency="USD")
        t.open(t_("12:00"), "p1")
        d = only(t.close(t_("13:31:00"), "p1", "-150.00", reason="sl"))
        assert d.message.startswith("position p1 (EURUSD) was closed 13:31:00 UTC inside the window")

    def test_low_impact_news_is_ignored_when_only_high_counts(self, trader_for):
        t = trader_for(NEWS)
        t.news(AT, "Crude inventories", impact="medium", currency="USD")
        assert t.open(t_("13:30"), "p1") == []

    def test_action_breach_fails_the_account(self, trader_for):
        t = trader_for("{kind: news, before_s: 60, after_s: 60, action: breach}")
        t.news(AT, NFP, currency="USD")
        assert only(t.open(t_("13:30:30"), "p1")).kind == "breach"
        assert t.state.status == "breached"


class TestWhichSymbols:
    @pytest.mark.parametrize(
        "symbol, currency, affected",
        [
            ("EURUSD", "USD", True),
            ("EURUSD", "EUR", True),
            ("USDJPY", "USD", True),
            ("XAUUSD", "USD", True),
            ("EURGBP", "USD", False),
            ("GBPJPY", "EUR", False),
            ("US30", "USD", False),  # not a currency pair: only an explicit mapping makes it USD-sensitive
        ],
    )
    def test_a_pair_is_affected_by_its_base_and_quote_currency(self, trader_for, symbol, currency, affected):
        t = trader_for(NEWS)
        t.news(AT, "news", currency=currency)
        assert bool(t.open(t_("13:30"), "p1", symbol=symbol)) is affected

    def test_symbol_currencies_maps_an_index_to_a_currency(self, trader_for):
        t = trader_for("{kind: news, symbol_currencies: {US30: [USD]}}")
        t.news(AT, NFP, currency="USD")
        assert only(t.open(t_("13:30"), "p1", symbol="US30")).rule == "news"

    def test_an_explicit_symbol_list_overrides_currencies(self, trader_for):
        t = trader_for(NEWS)
        t.news(AT, "Dow earnings", symbols=["US30"])
        assert t.open(t_("13:30"), "p1", symbol="EURUSD") == []
        assert only(t.open(t_("13:30"), "p2", symbol="US30")).details["symbol"] == "US30"


class TestPublishedAfterTheTrade:
    def test_a_trade_opened_before_the_news_was_known_is_judged_when_it_arrives(self, trader_for):
        t = trader_for(NEWS)
        assert t.open(t_("13:29:00"), "p1") == []
        [d] = t.news(AT, NFP, currency="USD")
        assert (d.kind, d.rule, d.account) == ("violation", "news", "A1")
        assert d.event_id.startswith("n-")
        assert d.details["position"] == "p1"
        assert "was opened 13:29:00 UTC inside the window" in d.message

    def test_trades_outside_the_window_or_on_other_currencies_are_not_judged(self, trader_for):
        t = trader_for(NEWS)
        t.open(t_("13:27:59"), "p1")
        t.open(t_("13:29:00"), "p2", symbol="EURGBP")
        assert t.news(AT, NFP, currency="USD") == []

    def test_a_late_news_entry_judges_both_the_open_and_the_close(self, trader_for):
        t = trader_for(NEWS)
        t.open(t_("13:29:00"), "p1")
        t.close(t_("13:31:30"), "p1", "80.00")
        decisions = t.news(AT, NFP, currency="USD")
        assert [d.message.split(" UTC")[0] for d in decisions] == [
            "position p1 (EURUSD) was closed 13:31:30",
            "position p1 (EURUSD) was opened 13:29:00",
        ]

    def test_the_same_news_twice_is_judged_once(self, trader_for):
        t = trader_for(NEWS)
        t.open(t_("13:29:00"), "p1")
        assert len(t.news(AT, NFP, currency="USD")) == 1
        assert t.news(AT, NFP, currency="USD") == []  # another id, the same calendar entry


class TestPartialProfit:
    RULES = (
        "{kind: news, before_s: 120, after_s: 120, action: partial_profit, profit_counted_pct: 50}",
        "{kind: profit_target, amount: {pct_initial: 10}}",
    )

    def test_profit_of_a_position_opened_in_the_window_counts_half(self, trader_for):
        t = trader_for(*self.RULES)
        t.news(AT, NFP, currency="USD")
        assert t.open(t_("13:29:00"), "p1") == []  # no offence by itself
        d = only(t.close(t_("15:00"), "p1", "12000.00"))
        assert (d.kind, d.rule) == ("violation", "news")
        assert d.message == (
            "position p1 (EURUSD) opened inside a news window: of its profit 12,000.00 only 50% counts, "
            "6,000.00 is deducted"
        )
        assert d.details["deducted"] == D("6000.00")
        assert t.state.balance == D("112000.00")
        assert t.state.deductions == D("6000.00")
        assert t.state.status == "active"  # 112,000 − 6,000 counts as 106,000 toward the 110,000 target

    def test_deducted_profit_raises_the_balance_needed_to_pass(self, trader_for):
        t = trader_for(*self.RULES)
        t.news(AT, NFP, currency="USD")
        t.open(t_("13:29:00"), "p1")
        t.close(t_("15:00"), "p1", "12000.00")
        t.open(t_("16:00"), "p2")
        assert t.close(t_("16:30"), "p2", "3999.99") == []
        t.open(t_("17:00"), "p3")
        d = only(t.close(t_("17:30"), "p3", "0.01"))
        assert d.kind == "phase_passed"
        assert d.value == D("110000.00")
        assert d.message == "phase-1 passed: balance 110,000.00 ≥ target 110,000.00 (after 6,000.00 of deducted profit)"

    def test_a_loss_in_the_window_is_not_deducted(self, trader_for):
        t = trader_for(*self.RULES)
        t.news(AT, NFP, currency="USD")
        t.open(t_("13:29:00"), "p1")
        assert t.close(t_("13:31:00"), "p1", "-500.00") == []
        assert t.state.deductions == 0

    def test_closing_inside_the_window_deducts(self, trader_for):
        t = trader_for(*self.RULES)
        t.news(AT, NFP, currency="USD")
        t.open(t_("10:00"), "p1")
        d = only(t.close(t_("13:31:00"), "p1", "1000.00"))
        assert "closed 13:31:00 UTC inside the window" in d.message
        assert t.state.deductions == D("500.00")

    def test_a_close_judged_when_the_news_is_published_afterwards(self, trader_for):
        t = trader_for(*self.RULES)
        t.open(t_("10:00"), "p1")
        t.close(t_("13:29:00"), "p1", "1000.00")
        [d] = t.news(AT, NFP, currency="USD")
        assert d.details["deducted"] == D("500.00")
        assert t.state.deductions == D("500.00")

    def test_one_close_is_deducted_once_even_when_later_news_also_covers_it(self, trader_for):
        t = trader_for(*self.RULES)
        t.news(AT, NFP, currency="USD")
        t.open(t_("13:29:00"), "p1")  # inside the NFP window
        t.close(t_("13:40:00"), "p1", "1000.00")  # outside it: deducted for the opening
        assert t.state.deductions == D("500.00")
        t.news(t_("13:41:00"), "ECB speech", currency="EUR")  # published later; its window covers the close
        assert t.state.deductions == D("500.00")

    def test_a_close_covered_by_two_late_news_entries_is_deducted_once(self, trader_for):
        t = trader_for(*self.RULES)
        t.open(t_("10:00"), "p1")
        t.close(t_("13:29:00"), "p1", "1000.00")
        t.news(AT, NFP, currency="USD")
        t.news(AT, "ECB rate decision", currency="EUR")
        assert t.state.deductions == D("500.00")

    def test_news_published_late_deducts_a_position_opened_inside_and_closed_outside(self, trader_for):
        """The same history gives the same deduction whether the news was known in advance or not."""
        late = trader_for(*self.RULES)
        late.open(t_("13:29:00"), "p1")
        late.close(t_("13:33:00"), "p1", "1000.00")  # closed after the window
        [d] = late.news(AT, NFP, currency="USD")
        assert d.details["deducted"] == D("500.00")
        assert "opened inside a news window" in d.message
        early = trader_for(*self.RULES)
        early.news(AT, NFP, currency="USD")
        early.open(t_("13:29:00"), "p1")
        early.close(t_("13:33:00"), "p1", "1000.00")
        assert late.state.deductions == early.state.deductions == D("500.00")
        assert late.news(AT, "another entry", currency="USD") == []  # deducted once, never twice
