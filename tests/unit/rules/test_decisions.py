"""How decisions come out of one event and a stream: precedence, order, finality, idempotency."""

from __future__ import annotations

from propcrm.domain.decisions import to_ndjson
from propcrm.domain.events import Equity, TradeClosed, TradeOpened
from propcrm.engine.runner import Engine

from rulekit import D, Trader, kinds, make_pack, only, utc

LIMITS = (
    "{kind: daily_loss, amount: {pct_initial: 5}, base: balance}",
    "{kind: max_loss, amount: {pct_initial: 10}}",
)
TARGET = "{kind: profit_target, amount: {pct_initial: 10}}"


def at(clock: str, day: str = "2026-03-02"):
    return utc(f"{day} {clock}")


class TestPrecedence:
    def test_breach_beats_pass_in_the_same_event(self, trader_for):
        # the broker reports the target balance but an equity below the max-loss level, nothing open
        t = trader_for(*LIMITS, TARGET)
        decisions = t.equity(at("09:00"), "89999.99", "110000.00")
        assert [d.kind for d in decisions] == ["breach"]
        assert t.state.status == "breached"

    def test_a_close_that_reaches_the_target_inside_a_news_breach_does_not_pass(self, trader_for):
        t = trader_for(TARGET, "{kind: news, action: breach}")
        t.open(at("12:00"), "p1")
        t.news(at("13:30"), "NFP", currency="USD")
        decisions = t.close(at("13:31"), "p1", "10000.00")
        assert kinds(decisions) == [("breach", "news")]
        assert t.state.status == "breached"

    def test_violations_and_a_pass_from_one_event_come_in_kind_order(self, trader_for):
        t = trader_for(TARGET, "{kind: news, action: violation}")
        t.open(at("12:00"), "p1")
        t.news(at("13:30"), "NFP", currency="USD")
        assert kinds(t.close(at("13:31"), "p1", "10000.00")) == [("violation", "news"), ("phase_passed", "profit_target")]

    def test_two_limits_crossed_by_one_equity_update_fail_the_account_once(self, trader_for):
        t = trader_for(*LIMITS)
        decisions = t.equity(at("09:00"), "89000.00")
        assert kinds(decisions) == [("breach", "daily_loss")]

    def test_the_failing_rule_does_not_depend_on_the_order_rules_are_written(self):
        forward = Trader(make_pack(*LIMITS))
        backward = Trader(make_pack(*reversed(LIMITS)))
        assert kinds(forward.equity(at("09:00"), "89000.00")) == kinds(backward.equity(at("09:00"), "89000.00"))

    def test_a_pause_and_a_breach_in_one_event(self, trader_for):
        t = trader_for(
            "{kind: daily_loss, amount: {pct_initial: 5}, on_breach: pause}", "{kind: max_loss, amount: {pct_initial: 10}}"
        )
        assert kinds(t.equity(at("09:00"), "89000.00")) == [("breach", "max_loss")]  # the breach supersedes the pause
        assert t.state.status == "breached"


class TestOrderWithinAnEvent:
    def test_violations_of_one_open_are_sorted_by_rule(self, trader_for):
        t = trader_for(
            "{kind: stop_loss_required}", "{kind: max_lots, per_position: 1}", "{kind: hedging}", "{kind: max_open_positions, count: 1}"
        )
        t.open(at("09:00"), "p1", side="buy")
        decisions = t.open(at("09:01"), "p2", side="sell", lots="2", sl=None)
        assert [d.rule for d in decisions] == ["hedging", "max_lots", "max_open_positions", "stop_loss_required"]

    def test_replaying_the_same_history_gives_the_same_bytes(self):
        def run():
            t = Trader(make_pack(*LIMITS, TARGET, "{kind: stop_loss_required}", "{kind: early_warning, at_pct: [50, 80]}"))
            t.open(at("09:00"), "p1", sl=None)
            t.equity(at("09:30"), "96000.00")
            t.close(at("10:00"), "p1", "-3500.00")
            t.clock(at("23:00"))
            t.equity(at("09:00", "2026-03-03"), "91000.00")
            return to_ndjson(t.log)

        first, second = run(), run()
        assert first == second
        assert first.count(b"\n") >= 4


class TestFinality:
    def test_nothing_is_evaluated_after_a_breach(self, trader_for):
        t = trader_for(*LIMITS, "{kind: stop_loss_required}", "{kind: max_duration, days: 1}", "{kind: weekend_holding}")
        t.open(at("09:00"), "p1")
        assert only(t.equity(at("09:01"), "94000.00")).kind == "breach"
        frozen = (t.state.balance, t.state.equity, dict(t.state.positions))
        assert t.open(at("09:02"), "p2", sl=None) == []
        assert t.close(at("09:03"), "p1", "50000.00") == []
        assert t.equity(at("09:04"), "1.00") == []
        assert t.clock(utc("2026-03-20 00:00")) == []  # duration and weekend deadlines passed long ago
        assert (t.state.balance, t.state.equity, dict(t.state.positions)) == frozen
        assert t.state.status == "breached"
        assert t.engine.stats.after_end == 3


class TestIdempotency:
    def test_a_duplicate_event_is_reported_and_not_applied_twice(self):
        pack = make_pack(*LIMITS)
        engine = Engine(pack)
        opened = TradeOpened(id="o-1", ts=at("09:00"), account="A1", position="p1", symbol="EURUSD", side="buy", lots=D(1), price=D("1.1"))
        closed = TradeClosed(id="c-1", ts=at("09:10"), account="A1", position="p1", lots=D(1), price=D("1.1"), profit=D("-3000"))
        engine.feed([opened, closed, closed])
        assert engine.states["A1"].balance == D("97000")
        [rejected] = engine.rejected
        assert (rejected.kind, rejected.id, rejected.account) == ("duplicate", "c-1", "A1")
        assert engine.stats.duplicates == 1

    def test_an_out_of_order_event_is_reported_and_not_applied(self):
        engine = Engine(make_pack(*LIMITS))
        engine.feed([Equity(id="e-2", ts=at("10:00"), account="A1", equity=D("99000"), balance=D("100000"))])
        late = Equity(id="e-1", ts=at("09:00"), account="A1", equity=D("94000"), balance=D("100000"))
        assert engine.feed([late]) == []
        assert engine.states["A1"].status == "active"
        assert engine.states["A1"].equity == D("99000")
        [rejected] = engine.rejected
        assert rejected.kind == "out_of_order"
        assert "is before the last event applied to A1" in rejected.reason
        # it was not applied, so its id is not spent: the corrected event is accepted
        fixed = Equity(id="e-1", ts=at("10:01"), account="A1", equity=D("94000"), balance=D("100000"))
        assert kinds(engine.feed([fixed])) == [("breach", "daily_loss")]

    def test_events_with_the_same_timestamp_are_applied_in_stream_order(self):
        engine = Engine(make_pack(*LIMITS))
        same = at("09:00")
        engine.feed(
            [
                Equity(id="e-1", ts=same, account="A1", equity=D("96000"), balance=D("100000")),
                Equity(id="e-2", ts=same, account="A1", equity=D("94999"), balance=D("100000")),
            ]
        )
        assert engine.rejected == []
        assert engine.states["A1"].status == "breached"

    def test_an_out_of_order_clock_is_reported(self):
        t = Trader(make_pack(*LIMITS))
        t.equity(at("09:00"), "100000")
        t.clock(at("12:00"))
        t.clock(at("11:00"))
        assert [r.kind for r in t.engine.rejected] == ["out_of_order"]

    def test_an_account_without_a_pack_is_rejected(self):
        program = make_pack(*LIMITS).phase(None)
        engine = Engine(lambda account: program if account == "A1" else None)
        engine.feed(
            [
                Equity(id="e-1", ts=at("09:00"), account="A1", equity=D("99000"), balance=D("100000")),
                Equity(id="e-2", ts=at("09:00"), account="ZZ", equity=D("10"), balance=D("10")),
            ]
        )
        assert set(engine.states) == {"A1"}
        [rejected] = engine.rejected
        assert (rejected.kind, rejected.account) == ("unknown_account", "ZZ")
        assert "no rule pack is bound to account 'ZZ'" in rejected.reason

    def test_accounts_are_independent(self):
        pack = make_pack(*LIMITS)
        a = Trader(pack, "A1")
        b = Trader(pack, "B2", engine=a.engine)
        a.equity(at("09:00"), "94000.00")
        b.equity(at("09:00"), "99000.00")
        assert a.engine.states["A1"].status == "breached"
        assert a.engine.states["B2"].status == "active"


def test_a_decision_on_the_wire_carries_exact_numbers_as_strings():
    t = Trader(make_pack(*LIMITS))
    t.equity(at("09:00"), "94999.995")
    line = to_ndjson(t.log).decode()
    assert '"kind":"breach"' in line
    assert '"value":"94999.995"' in line
    assert '"threshold":"95000"' in line
    assert '"comparator":"below"' in line
    assert '"ts":"2026-03-02T09:00:00Z"' in line
