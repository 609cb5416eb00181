"""A ``balance`` event with reason ``payout`` is the trader's profit leaving the account, not a loss.

Everything measured from the balance moves down with it (day-start figures, daily floors, trailing
max-loss peaks and levels, never below where they started); static levels stay; the counters the
pack's ``payout.resets`` names start again. The same amount as a plain ``withdrawal`` is a loss.
"""

from __future__ import annotations

from decimal import Decimal

from propcrm.domain.events import Balance
from rulekit import Trader, make_pack, utc

D = Decimal

FUNDED = [
    "{kind: daily_loss, amount: {pct_initial: 5}}",
    "{kind: max_loss, amount: {absolute: '1000'}, trailing: balance_intraday}",
    "{kind: max_loss, id: static, amount: {pct_initial: 10}}",
]


def _trader(resets: str = "") -> Trader:
    pack = make_pack(phases=[("funded", FUNDED)], initial="10000")
    if resets:
        import msgspec

        from propcrm.domain.program import compile_pack
        from propcrm.domain.rulepack import PayoutPolicy

        phase = msgspec.structs.replace(pack.pack.phases[0], payout=PayoutPolicy(resets=[]))
        pack = compile_pack(msgspec.structs.replace(pack.pack, phases=[phase]))
    return Trader(pack, "F1")


def _balance(t: Trader, ts: str, amount: str, reason: str):
    return t.feed(Balance(id=t._id("b"), ts=utc(ts), account="F1", amount=D(amount), reason=reason))


def _profit(t: Trader, day: str, profit: str, hour: int = 10) -> None:
    t.open(utc(f"{day} {hour}:00"), f"p-{day}-{hour}")
    t.close(utc(f"{day} {hour}:30"), f"p-{day}-{hour}", profit)


def test_a_payout_withdrawal_moves_the_balance_levels_with_it_and_decides_nothing():
    t = _trader()
    _profit(t, "2026-03-02", "2000")
    st = t.state
    assert (st.balance, st.levels[1]) == (D(12000), D(11000))  # trailing: highest balance 12,000 − 1,000
    assert _balance(t, "2026-03-02 12:00", "-2000", "payout") == []
    st = t.state
    assert (st.balance, st.equity, st.day_start_balance) == (D(10000), D(10000), D(8000))
    assert st.levels[0] == D(7500)  # the day's floor keeps its room: 8,000 − 5% of 10,000
    assert (st.peaks[1], st.levels[1]) == (D(10000), D(9000))  # trailing moved down, not below its start
    assert st.levels[2] == D(9000)  # static: initial − 10%
    assert st.status == "active"


def test_the_same_amount_as_a_plain_withdrawal_is_a_loss_that_breaches():
    t = _trader()
    _profit(t, "2026-03-02", "2000")
    decisions = _balance(t, "2026-03-02 12:00", "-2000", "withdrawal")
    assert [d.kind for d in decisions] == ["breach"] and decisions[0].rule == "max_loss"  # trailing 11,000


def test_after_a_payout_a_real_loss_is_judged_against_the_moved_levels():
    t = _trader()
    _profit(t, "2026-03-02", "2000")
    _balance(t, "2026-03-02 12:00", "-2000", "payout")
    assert t.equity(utc("2026-03-02 13:00"), "9100", "10000") == []  # room below 10,000 down to 9,000 remains
    decisions = t.equity(utc("2026-03-02 13:05"), "8999", "10000")
    assert [d.kind for d in decisions] == ["breach"] and decisions[0].rule == "max_loss"


def test_a_payout_resets_the_period_counters_the_pack_names():
    t = _trader()
    _profit(t, "2026-03-02", "500")
    _profit(t, "2026-03-03", "700")
    t.state.deductions = D(50)
    assert (t.state.active_days, max(t.state.best_day_profit, t.state.day_profit)) == (2, D(700))
    _balance(t, "2026-03-03 12:00", "-1200", "payout")
    st = t.state
    assert (st.active_days, st.best_day_profit, st.day_profit, st.deductions) == (0, D(0), D(0), D(0))
    _profit(t, "2026-03-03", "100", hour=14)  # the same day counts again in the new period
    assert t.state.active_days == 1


def test_a_pack_may_keep_the_counters_over_a_payout():
    t = _trader(resets="none")
    _profit(t, "2026-03-02", "500")
    _balance(t, "2026-03-02 12:00", "-500", "payout")
    assert t.state.active_days == 1 and t.state.best_day_profit + t.state.day_profit == D(500)


def test_after_a_payout_the_fast_path_follows_the_moved_levels():
    pack = make_pack(phases=[("funded", ["{kind: max_loss, amount: {absolute: '1000'}, trailing: equity_intraday}"])],
                     initial="10000")
    fast = Trader(pack, "F1")
    _profit(fast, "2026-03-02", "2000")
    assert fast.state.levels[0] == D(11000)
    fast.feed(Balance(id="pay", ts=utc("2026-03-02 12:00"), account="F1", amount=D("-2000"), reason="payout"))
    assert (fast.state.peaks[0], fast.state.levels[0]) == (D(10000), D(9000))
    assert fast.equity(utc("2026-03-02 12:05"), "11500", "10000") == []  # a new peak: the level rises to 10,500
    assert fast.state.levels[0] == D(10500)
    decisions = fast.equity(utc("2026-03-02 12:10"), "10400", "10000")
    assert [d.kind for d in decisions] == ["breach"]
