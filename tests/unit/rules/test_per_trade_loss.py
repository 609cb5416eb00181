"""Per-trade loss: the realised loss of one position, all its partial closes and costs together."""

from __future__ import annotations

from rulekit import D, only, utc

RULE = "{kind: per_trade_loss, amount: {pct_initial: 1}}"  # 1,000 on 100,000


def test_a_loss_exactly_at_the_limit_is_allowed(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1")
    assert t.close(utc("2026-03-02 10:00"), "p1", "-1000.00") == []


def test_one_cent_over_the_limit_is_a_violation_with_the_numbers(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1", symbol="GBPUSD")
    d = only(t.close(utc("2026-03-02 10:00"), "p1", "-1000.01"))
    assert (d.kind, d.rule) == ("violation", "per_trade_loss")
    assert (d.value, d.threshold, d.comparator) == (D("1000.01"), D("1000"), "above")
    assert d.message == (
        "position p1 (GBPUSD) lost 1,000.01 after costs, more than the per-trade limit 1,000.00 = 1% of initial 100,000.00"
    )
    assert d.details["position"] == "p1"
    assert t.state.status == "active"


def test_commission_and_swap_count_toward_the_loss(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1")
    d = only(t.close(utc("2026-03-02 10:00"), "p1", "-990.00", commission="-7.00", swap="-4.00"))
    assert d.value == D("1001.00")


def test_partial_closes_add_up_and_the_violation_fires_once(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1", lots="3")
    assert t.close(utc("2026-03-02 09:10"), "p1", "-600.00", lots="1") == []
    d = only(t.close(utc("2026-03-02 09:20"), "p1", "-500.00", lots="1"))
    assert d.value == D("1100.00")
    assert "lost 1,100.00" in d.message
    assert t.close(utc("2026-03-02 09:30"), "p1", "-300.00", lots="1") == []  # already reported


def test_a_profitable_partial_close_offsets_a_later_loss(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1", lots="2")
    t.close(utc("2026-03-02 09:10"), "p1", "500.00", lots="1")
    assert t.close(utc("2026-03-02 09:20"), "p1", "-1500.00", lots="1") == []  # net −1,000
    t.open(utc("2026-03-02 10:00"), "p2", lots="2")
    t.close(utc("2026-03-02 10:10"), "p2", "500.00", lots="1")
    assert only(t.close(utc("2026-03-02 10:20"), "p2", "-1500.01", lots="1")).value == D("1000.01")


def test_losses_of_different_positions_are_not_added(trader_for):
    t = trader_for(RULE)
    t.open(utc("2026-03-02 09:00"), "p1")
    t.open(utc("2026-03-02 09:00"), "p2")
    assert t.close(utc("2026-03-02 09:10"), "p1", "-800.00") == []
    assert t.close(utc("2026-03-02 09:20"), "p2", "-800.00") == []


def test_action_breach_fails_the_account(trader_for):
    t = trader_for('{kind: per_trade_loss, amount: {absolute: "500"}, action: breach}')
    t.open(utc("2026-03-02 09:00"), "p1")
    d = only(t.close(utc("2026-03-02 10:00"), "p1", "-500.01"))
    assert d.kind == "breach"
    assert d.message == "position p1 (EURUSD) lost 500.01 after costs, more than the per-trade limit 500.00"
    assert t.state.status == "breached"


def test_a_position_opened_before_the_engine_saw_the_account_only_moves_the_balance(trader_for):
    t = trader_for(RULE)
    t.equity(utc("2026-03-02 09:00"), "100000")
    assert t.close(utc("2026-03-02 10:00"), "old-1", "-5000.00") == []
    assert t.state.balance == D("95000.00")
