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


class TestCalendarEntryThatArrivesLate:
    """FTMO: no opening or closing within 2 minutes of a release. Calendars are corrected or published
    late; the trades in the window must still be judged when the entry finally arrives."""

    def test_an_opening_is_judged_although_a_later_close_happened_long_before_the_entry_arrived(self, trader_for):
        t = trader_for(NEWS)
        t.open(t_("13:29:00"), "p1")  # inside the window of the 13:30 release, not yet known
        t.close(t_("13:40:00"), "p1", "150.00")  # outside the window, 10 minutes later
        t.open(t_("13:50:00"), "p2")
        d = only(t.news(AT, NFP, currency="USD"))  # the entry reaches propcrm at 13:55 (event order)
        assert (d.kind, d.rule) == ("violation", "news")
        assert d.message.startswith("position p1 (EURUSD) was opened 13:29:00 UTC inside the window")
        assert d.event_id.startswith("n-")

    def test_history_is_kept_for_late_s_and_no_longer(self, trader_for):
        t = trader_for("{kind: news, before_s: 120, after_s: 120, late_s: 600}")
        t.open(t_("13:29:00"), "p1")
        t.open(t_("13:41:01"), "p2")  # 12 min 1 s later: more than before_s + late_s, p1's open is forgotten
        assert t.news(AT, NFP, currency="USD") == []
        assert [a.position for a in t.state.recent] == ["p2"]

    def test_remembered_actions_are_bounded_in_number(self, trader_for):
        from propcrm.domain.state import MAX_RECENT

        t = trader_for(NEWS)
        for n in range(MAX_RECENT + 20):
            t.open(utc("2026-03-06 10:00") + __import__("datetime").timedelta(seconds=n), f"q{n}")
        assert len(t.state.recent) == MAX_RECENT
        assert t.state.recent[-1].position == f"q{MAX_RECENT + 19}"


FORTRADERS = (
    "{kind: news, before_s: 300, after_s: 300, impact: [high], action: partial_profit, profit_counted_pct: 0, "
    "inside: opened_and_closed}"
)
GDP = "GDP"


class TestForTraders:
    """For Traders (funded stage): profit from trades opened before the event and closed inside the window
    is recognised; profit from trades opened and closed inside the 10-minute window does not count."""

    def test_anna_opened_hours_before_and_closed_inside_keeps_her_profit(self, trader_for):
        t = trader_for(FORTRADERS)
        t.news(AT, GDP, currency="USD")
        t.open(t_("10:30:00"), "anna")  # three hours before the GDP release
        assert t.close(t_("13:31:00"), "anna", "800.00") == []  # hits its target right after it
        assert t.state.deductions == 0

    def test_bob_opened_2_minutes_before_and_exited_3_minutes_after_is_excluded(self, trader_for):
        t = trader_for(FORTRADERS)
        t.news(AT, GDP, currency="GBP")
        t.open(t_("13:28:00"), "bob", symbol="GBPUSD")
        assert t.open(t_("13:28:30"), "other") == []  # opening inside is no offence by itself
        d = only(t.close(t_("13:33:00"), "bob", "500.00"))
        assert (d.kind, d.rule) == ("violation", "news")
        assert d.message == (
            "position bob (GBPUSD) was opened 13:28:00 and closed 13:33:00 UTC inside the window 300 s before to "
            "300 s after the high-impact GBP news “GDP” at 2026-03-06 13:30:00 UTC: of its profit 500.00 only 0% "
            "counts, 500.00 is deducted"
        )
        assert t.state.deductions == D("500.00")

    def test_bob_judged_when_the_calendar_entry_arrives_after_his_trade(self, trader_for):
        t = trader_for(FORTRADERS)
        t.open(t_("13:28:00"), "bob", symbol="GBPUSD")
        t.close(t_("13:33:00"), "bob", "500.00")
        t.open(t_("10:30:00").replace(hour=13, minute=40), "later")
        d = only(t.news(AT, GDP, currency="GBP"))
        assert d.details["deducted"] == D("500.00")
        assert t.news(AT, "GDP (revised)", currency="GBP") == []  # deducted once

    def test_opened_in_one_window_and_closed_in_another_is_not_opened_and_closed_inside(self, trader_for):
        t = trader_for(FORTRADERS)
        t.news(AT, GDP, currency="USD")
        t.news(t_("14:30:00"), "ISM", currency="USD")
        t.open(t_("13:29:00"), "p1")
        assert t.close(t_("14:31:00"), "p1", "700.00") == []

    def test_as_an_offence_only_the_trade_opened_and_closed_inside_offends(self, trader_for):
        t = trader_for("{kind: news, before_s: 300, after_s: 300, inside: opened_and_closed}")
        t.news(AT, GDP, currency="USD")
        t.open(t_("10:30:00"), "anna")
        t.open(t_("13:28:00"), "bob")
        assert t.close(t_("13:31:00"), "anna", "800.00") == []
        d = only(t.close(t_("13:33:00"), "bob", "500.00"))
        assert d.message.startswith("position bob (EURUSD) was opened 13:28:00 and closed 13:33:00 UTC inside")


FUNDEDNEXT = (
    "{kind: news, before_s: 300, after_s: 300, impact: [high], action: partial_profit, profit_counted_pct: 40, "
    "profit_scope: position}"
)


class TestFundedNext:
    """FundedNext (FundedNext Account): 40% of the profit of trades executed 5 minutes before to 5 minutes
    after a high-impact release counts; 100% of a loss applies; closing a portion of an order inside
    the window affects the entire order."""

    def test_a_1000_profit_from_a_news_trade_adds_400(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.news(AT, NFP, currency="USD")
        t.open(t_("12:00:00"), "p1")
        d = only(t.close(t_("13:31:00"), "p1", "1000.00"))
        assert d.details["deducted"] == D("600.00")
        assert t.state.deductions == D("600.00")  # the target counts 400 of the 1,000

    def test_a_1000_loss_applies_in_full(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.news(AT, NFP, currency="USD")
        t.open(t_("13:29:00"), "p1")
        assert t.close(t_("13:40:00"), "p1", "-1000.00") == []
        assert t.state.deductions == 0
        assert t.state.balance == D("99000.00")

    def test_a_portion_closed_inside_the_window_affects_the_entire_order(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.news(AT, NFP, currency="USD")
        t.open(t_("09:00:00"), "p1", lots="3")
        assert t.close(t_("11:00:00"), "p1", "1000.00", lots="1") == []  # before the window: nothing yet
        d = only(t.close(t_("13:32:00"), "p1", "1000.00", lots="1"))  # a portion inside the window
        assert d.message == (
            "position p1 (EURUSD) was closed 13:32:00 UTC inside the window 300 s before to 300 s after the "
            "high-impact USD news “US Non-Farm Payrolls” at 2026-03-06 13:30:00 UTC: of the whole position's "
            "profit 2,000.00 only 40% counts, 1,200.00 is deducted"
        )
        d = only(t.close(t_("16:00:00"), "p1", "1000.00", lots="1"))  # after the window: still the same order
        assert d.details["deducted"] == D("600.00")
        assert t.state.deductions == D("1800.00")  # 60% of the order's 3,000

    def test_the_cycle_example_10000_plus_40_percent_of_3000(self, trader_for):
        """FundedNext's example: 10,000 profit outside news (news losses included) and 3,000 of profitable
        news trades: 10,000 + 1,200 = 11,200 counts."""
        t = trader_for(FUNDEDNEXT, '{kind: profit_target, amount: {absolute: "11200"}}')
        t.news(AT, NFP, currency="USD")
        t.open(t_("09:00:00"), "a")
        t.close(t_("10:00:00"), "a", "10500.00")
        t.open(t_("13:26:00"), "loss")
        t.close(t_("13:27:00"), "loss", "-500.00")  # a news loss, not removed
        t.open(t_("13:29:00"), "win")
        decisions = t.close(t_("13:31:00"), "win", "3000.00")
        assert [d.kind for d in decisions] == ["violation", "phase_passed"]
        assert t.state.deductions == D("1800.00")
        assert decisions[1].value == D("111200")  # balance 113,000 less 1,800 deducted: 11,200 of profit counts

    def test_news_published_after_a_partial_close_deducts_the_whole_order_once(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.open(t_("09:00:00"), "p1", lots="2")
        t.close(t_("11:00:00"), "p1", "500.00", lots="1")
        t.close(t_("13:32:00"), "p1", "1500.00", lots="1")
        t.open(t_("13:50:00"), "p2")
        d = only(t.news(AT, NFP, currency="USD"))
        assert d.details["deducted"] == D("1200.00")  # 60% of 2,000
        assert t.news(AT, "NFP (revised)", currency="USD") == []

    def test_an_order_opened_inside_and_closed_later_is_affected_whole(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.news(AT, NFP, currency="USD")
        assert t.open(t_("13:34:00"), "p1") == []  # inside: marks the order, nothing to deduct yet
        d = only(t.close(t_("15:00:00"), "p1", "1000.00"))
        assert d.message == (
            "position p1 (EURUSD) was traded inside a news window: of the whole position's profit 1,000.00 only "
            "40% counts, 600.00 is deducted"
        )

    def test_a_later_losing_portion_returns_part_of_the_deduction(self, trader_for):
        t = trader_for(FUNDEDNEXT)
        t.news(AT, NFP, currency="USD")
        t.open(t_("09:00:00"), "p1", lots="2")
        t.close(t_("13:31:00"), "p1", "1000.00", lots="1")  # 600 deducted
        d = only(t.close(t_("15:00:00"), "p1", "-400.00", lots="1"))  # the order made 600 in all
        assert d.details["deducted"] == D("-240.00")
        assert d.message.endswith("the whole position's profit is now 600.00, 240.00 of its deduction is returned")
        assert t.state.deductions == D("360.00")  # 60% of the order's 600

    def test_the_scope_needs_partial_profit(self):
        from propcrm.domain.rulepack import RulePackError, parse_pack
        from rulekit import pack_yaml

        with pytest.raises(RulePackError, match="profit_scope: position` needs `action: partial_profit"):
            parse_pack(pack_yaml("{kind: news, profit_scope: position}"))


def test_existing_packs_keep_their_hash_the_new_options_default_to_the_old_behaviour():
    from propcrm.domain.rulepack import content_hash, parse_pack
    from rulekit import pack_yaml

    plain = parse_pack(pack_yaml(NEWS))
    spelled = parse_pack(pack_yaml(
        "{kind: news, before_s: 120, after_s: 120, impact: [high], action: violation, "
        "inside: opened_or_closed, profit_scope: close, late_s: 3600}"
    ))
    assert content_hash(plain) == content_hash(spelled)
