"""Early warnings: usage of a loss limit's room crossing a threshold, once per limit, threshold and day."""

from __future__ import annotations

from rulekit import D, kinds, only, utc

LIMITS = (
    "{kind: daily_loss, amount: {pct_initial: 5}, base: balance}",  # floor 95,000, room 5,000
    "{kind: max_loss, amount: {pct_initial: 10}}",  # level 90,000, room 10,000
)


def at(clock: str):
    return utc(f"2026-03-02 {clock}")


def test_the_threshold_is_reached_at_equality_with_the_numbers(trader_for):
    t = trader_for(*LIMITS, "{kind: early_warning, at_pct: [50, 80]}")
    assert t.equity(at("09:00"), "97500.01") == []
    d = only(t.equity(at("09:01"), "97500.00"))
    assert (d.kind, d.rule) == ("warning", "daily_loss")
    assert (d.value, d.threshold, d.comparator) == (D("97500.00"), D("97500"), "at_or_below")
    assert d.message == (
        "equity 97,500.00 has used 50% of the daily loss room 5,000.00 (warning at 50%; the level is 95,000.00)"
    )
    assert d.details["usage_pct"] == D("50.00")
    assert d.details["warn_at_pct"] == D(50)
    assert t.state.status == "active"


def test_a_jump_past_several_thresholds_warns_for_each_in_order(trader_for):
    t = trader_for(*LIMITS, "{kind: early_warning, at_pct: [80, 50]}")
    t.equity(at("09:00"), "99000")
    decisions = t.equity(at("09:01"), "95500.00")
    assert [d.details["warn_at_pct"] for d in decisions] == [D(50), D(80)]
    assert all(d.rule == "daily_loss" for d in decisions)
    assert "has used 90% of the daily loss room" in decisions[0].message
    # the max-loss room is used 45%: no warning for it yet
    d = only(t.equity(at("09:02"), "95000.00"))
    assert (d.rule, d.details["warn_at_pct"]) == ("max_loss", D(50))
    assert d.message == (
        "equity 95,000.00 has used 50% of the max loss room 10,000.00 (warning at 50%; the level is 90,000.00)"
    )


def test_only_the_listed_limits_warn(trader_for):
    t = trader_for(*LIMITS, "{kind: early_warning, at_pct: [50], limits: [max_loss]}")
    assert t.equity(at("09:00"), "96000.00") == []
    assert only(t.equity(at("09:01"), "95000.00")).rule == "max_loss"


def test_without_early_warning_nothing_warns(trader_for):
    t = trader_for(*LIMITS)
    assert t.equity(at("09:00"), "95000.01") == []


def test_a_breach_is_not_accompanied_by_warnings(trader_for):
    t = trader_for(*LIMITS, "{kind: early_warning, at_pct: [50, 80]}")
    decisions = t.equity(at("09:00"), "94999.99")  # below the daily floor and past 50% of max loss
    assert kinds(decisions) == [("breach", "daily_loss")]


def test_trailing_warnings_follow_the_moving_level(trader_for):
    t = trader_for(
        '{kind: max_loss, amount: {absolute: "4000"}, trailing: equity_intraday}',
        "{kind: early_warning, at_pct: [75]}",
    )
    t.open(at("09:00"), "p1")
    t.equity(at("09:01"), "102000.00")  # level 98,000; warning at 99,000
    assert t.equity(at("09:02"), "99000.01") == []
    d = only(t.equity(at("09:03"), "99000.00"))
    assert d.details["level"] == D("98000.00")
    assert d.threshold == D("99000.00")
