"""Exposure and trade behaviour: lots, open positions, trades per day, stop loss, hedging, martingale."""

from __future__ import annotations

from rulekit import D, kinds, only, utc

T0 = "2026-03-02"


def at(clock: str, day: str = T0):
    return utc(f"{day} {clock}")


class TestMaxLots:
    def test_per_position_limit_is_inclusive(self, trader_for):
        t = trader_for("{kind: max_lots, per_position: 5}")
        assert t.open(at("09:00"), "p1", lots="5") == []
        d = only(t.open(at("09:01"), "p2", lots="5.01"))
        assert (d.kind, d.rule) == ("violation", "max_lots")
        assert (d.value, d.threshold, d.comparator) == (D("5.01"), D("5"), "above")
        assert d.message == "position p2 opened 5.01 lots of EURUSD; at most 5 lots per position"
        assert d.details["limit"] == "per_position"

    def test_total_counts_every_open_position_and_partial_closes_free_room(self, trader_for):
        t = trader_for("{kind: max_lots, total: 10}")
        t.open(at("09:00"), "p1", lots="6")
        assert t.open(at("09:01"), "p2", lots="4") == []  # exactly 10
        t.close(at("09:02"), "p1", "0", lots="2")  # 8 left open
        assert t.open(at("09:03"), "p3", lots="2") == []
        d = only(t.open(at("09:04"), "p4", lots="0.01"))
        assert d.message == "10.01 lots open in total after opening p4; at most 10"
        assert d.value == D("10.01")

    def test_per_symbol_limit_only_for_listed_symbols(self, trader_for):
        t = trader_for('{kind: max_lots, per_symbol: {XAUUSD: 2}}')
        assert t.open(at("09:00"), "g1", symbol="XAUUSD", lots="1.5") == []
        assert t.open(at("09:01"), "e1", symbol="EURUSD", lots="50") == []
        d = only(t.open(at("09:02"), "g2", symbol="XAUUSD", lots="0.51"))
        assert d.message == "2.01 lots of XAUUSD open after g2; at most 2"
        assert d.details["symbol"] == "XAUUSD"

    def test_one_open_can_break_several_limits(self, trader_for):
        t = trader_for("{kind: max_lots, per_position: 5, total: 8}")
        t.open(at("09:00"), "p1", lots="4")
        decisions = t.open(at("09:01"), "p2", lots="6")
        assert [d.details["limit"] for d in decisions] == ["total", "per_position"]  # ordered by message

    def test_action_breach(self, trader_for):
        t = trader_for("{kind: max_lots, per_position: 5, action: breach}")
        assert only(t.open(at("09:00"), "p1", lots="6")).kind == "breach"
        assert t.state.status == "breached"


class TestMaxOpenPositions:
    def test_the_count_is_inclusive_and_closing_frees_a_slot(self, trader_for):
        t = trader_for("{kind: max_open_positions, count: 2}")
        t.open(at("09:00"), "p1")
        assert t.open(at("09:01"), "p2") == []
        d = only(t.open(at("09:02"), "p3"))
        assert (d.kind, d.rule, d.value, d.threshold) == ("violation", "max_open_positions", D(3), D(2))
        assert d.message == "3 positions open after p3; at most 2"
        t.close(at("09:03"), "p1", "0")
        t.close(at("09:04"), "p2", "0")
        assert t.open(at("09:05"), "p4") == []


class TestMaxTradesPerDay:
    def test_counts_opens_per_trading_day(self, trader_for):
        t = trader_for("{kind: max_trades_per_day, count: 2}")
        t.open(at("09:00"), "p1")
        t.open(at("09:01"), "p2")
        d = only(t.open(at("09:02"), "p3"))
        assert d.message == "3 trades opened on trading day 2026-03-02; at most 2"
        assert kinds(t.open(at("22:59:59"), "p4")) == [("violation", "max_trades_per_day")]
        assert t.open(at("23:00"), "p5") == []  # 00:00 Prague: a new trading day
        assert t.open(at("09:00", "2026-03-03"), "p6") == []


class TestStopLossRequired:
    def test_a_position_without_a_stop_loss(self, trader_for):
        t = trader_for("{kind: stop_loss_required}")
        assert t.open(at("09:00"), "p1", sl="1.09") == []
        d = only(t.open(at("09:01"), "p2", sl=None, side="sell", lots="0.5"))
        assert (d.kind, d.rule) == ("violation", "stop_loss_required")
        assert d.message == "position p2 (EURUSD sell 0.5 lots) was opened without a stop loss"

    def test_on_the_wire_a_missing_sl_is_no_stop_loss(self, trader_for):
        t = trader_for("{kind: stop_loss_required, action: breach}")
        line = (
            '{"id":"d-1","type":"trade_opened","account":"A1","ts":"2026-03-02T14:03:11Z","position":"p1",'
            '"symbol":"EURUSD","side":"buy","lots":"1","price":"1.08512"}'
        )
        assert only(t.wire(line)).kind == "breach"


class TestHedging:
    def test_opposite_side_on_the_same_symbol_is_hedging(self, trader_for):
        t = trader_for("{kind: hedging}")
        t.open(at("09:00"), "b1", side="buy")
        assert t.open(at("09:01"), "b2", side="buy") == []
        assert t.open(at("09:02"), "g1", side="sell", symbol="GBPUSD") == []
        d = only(t.open(at("09:03"), "s1", side="sell"))
        assert (d.kind, d.rule) == ("violation", "hedging")
        assert d.details["against"] == ["b1", "b2"]
        assert d.message == "position s1 (sell EURUSD) hedges open position(s) b1, b2 in the same account"

    def test_no_hedge_once_the_opposite_position_is_closed(self, trader_for):
        t = trader_for("{kind: hedging}")
        t.open(at("09:00"), "b1", side="buy")
        t.close(at("09:05"), "b1", "10")
        assert t.open(at("09:06"), "s1", side="sell") == []


class TestLotEscalation:
    RULE = "{kind: lot_escalation, factor: 2}"

    def test_doubling_after_a_loss_is_martingale(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at("09:00"), "p1", lots="1")
        t.close(at("09:10"), "p1", "-100")
        d = only(t.open(at("09:11"), "p2", lots="2"))
        assert (d.kind, d.rule, d.value, d.threshold) == ("violation", "lot_escalation", D(2), D(2))
        assert d.message == (
            "position p2 opened 2 lots right after a losing position of 1 lots (≥ 2× is lot escalation after a loss)"
        )

    def test_just_under_the_factor_is_fine(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at("09:00"), "p1", lots="1")
        t.close(at("09:10"), "p1", "-100")
        assert t.open(at("09:11"), "p2", lots="1.99") == []

    def test_a_win_resets_and_costs_decide_a_loss(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at("09:00"), "p1", lots="1")
        t.close(at("09:10"), "p1", "-100")
        t.open(at("09:11"), "p2", lots="1")
        t.close(at("09:12"), "p2", "50")
        assert t.open(at("09:13"), "p3", lots="4") == []
        t.close(at("09:14"), "p3", "5", lots="4", commission="-7")  # a loss after costs
        assert only(t.open(at("09:15"), "p4", lots="8")).details["losing_lots"] == D(4)

    def test_the_losing_size_is_the_opened_size_and_judged_at_the_last_partial_close(self, trader_for):
        t = trader_for(self.RULE)
        t.open(at("09:00"), "p1", lots="2")
        t.close(at("09:01"), "p1", "-50", lots="1")
        assert t.open(at("09:02"), "p2", lots="4") == []  # p1 is still open: no losing position yet
        t.close(at("09:03"), "p1", "-50", lots="1")
        assert t.open(at("09:04"), "p3", lots="3.99") == []
        assert kinds(t.open(at("09:05"), "p4", lots="4"))[0] == ("violation", "lot_escalation")


def test_one_opening_that_breaks_two_limits_is_one_breach(trader_for):
    t = trader_for("{kind: max_lots, per_position: 5, total: 8, action: breach}")
    t.open(utc("2026-03-02 10:00"), "p1", lots="4")
    decisions = t.open(utc("2026-03-02 10:01"), "p2", lots="6")
    assert [d.kind for d in decisions] == ["breach"]
    assert "at most 5 lots per position" in decisions[0].message
    assert t.state.status == "breached"
