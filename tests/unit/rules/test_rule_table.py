"""The table of rule kinds: every kind of the pack format compiles, and slots go where the pack says."""

from __future__ import annotations

from rulekit import make_pack

from propcrm.domain.program import COMPILERS
from propcrm.domain.rulepack import AnyRule, EarlyWarning


def test_every_rule_kind_of_the_pack_format_has_a_compiler():
    kinds = set(AnyRule.__args__)  # type: ignore[attr-defined]
    assert set(COMPILERS) == kinds


def test_limits_take_state_slots_and_warning_bits_in_the_order_they_are_written():
    pack = make_pack(
        '{kind: max_loss, amount: {pct_initial: 10}}',
        '{kind: daily_loss, amount: {pct_initial: 5}}',
        '{kind: min_holding_time, seconds: 60}',
        '{kind: min_trading_days, days: 4}',
        '{kind: early_warning, limits: [daily_loss, max_loss], at_pct: [80, 90]}',
    )
    phase = pack.phases[0]
    slots = {r.kind: getattr(r, "slot", None) for r in phase.rules}
    assert slots["max_loss"] == 0 and slots["daily_loss"] == 1
    assert slots["min_holding_time"] == 0 and slots["min_trading_days"] == 2  # holding time takes two counters
    assert (phase.n_levels, phase.n_counts) == (2, 3)
    bits = {r.kind: [mask for mask, _pct, _share in r.warn] for r in phase.limits}
    assert bits == {"max_loss": [1, 2], "daily_loss": [4, 8]}  # one bit per limit and threshold, none shared
    assert not any(isinstance(r, EarlyWarning) for r in phase.rules)
