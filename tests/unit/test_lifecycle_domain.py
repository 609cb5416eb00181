"""The pure parts of the lifecycle: payout arithmetic, the trader state machine, scaled packs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propcrm.domain import lifecycle as machine
from propcrm.domain.money import CENT
from propcrm.domain.payouts import amount, consistency_check, split_for
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import PayoutPolicy, RulePackError, SplitTier, canonical_json, load_pack, parse_pack
from propcrm.domain.scaling import add_months, next_size, scaled_pack, split_after
from support.lifecycle import LIFE_PACK, life_pack

D = Decimal
UTC = dt.timezone.utc


# ------------------------------------------------------------------------------------------ amounts


def test_the_amount_is_derived_step_by_step_and_rounded_down_to_the_cent():
    a = amount(balance=D("11234.567"), baseline=D("10000"), penalties=D("100.10"), manual_deduction=D("33.33"),
               manual_reason="chargeback fee", split_pct=D("80"), split_source="phase")
    assert a.profit == D("1234.567") and a.payable == D("1101.137")
    assert a.trader_exact == D("880.9096") and a.trader_amount == D("880.90")
    assert a.firm_amount == D("220.237") and a.withdrawal == D("1234.567")
    labels = [s.label for s in a.steps]
    assert labels == ["profit since the last payout", "deducted profit (penalties)", "deducted by finance",
                      "payable profit", "profit split", "trader's share, exact", "trader's amount", "firm's share",
                      "withdrawn from the account"]
    assert a.steps[2].note == "chargeback fee"


def test_penalties_larger_than_the_profit_pay_nothing_and_a_loss_withdraws_nothing():
    assert amount(balance=D("10100"), baseline=D("10000"), penalties=D("500"), split_pct=D(80)).trader_amount == 0
    loss = amount(balance=D("9000"), baseline=D("10000"), penalties=D(0), split_pct=D(80))
    assert (loss.payable, loss.trader_amount, loss.withdrawal) == (0, 0, 0)


@settings(max_examples=300, deadline=None)
@given(profit=st.decimals(min_value=D("-5000"), max_value=D("50000"), places=3),
       penalties=st.decimals(min_value=0, max_value=D("5000"), places=2),
       split=st.decimals(min_value=D("0.01"), max_value=D(100), places=2))
def test_the_trader_never_gets_more_than_the_split_of_the_payable_profit_nor_a_fraction_of_a_cent(profit, penalties,
                                                                                                 split):
    a = amount(balance=D(10000) + profit, baseline=D(10000), penalties=penalties, split_pct=split)
    assert a.trader_amount == a.trader_amount.quantize(CENT)
    assert 0 <= a.trader_amount <= a.payable * split / 100 < a.trader_amount + CENT
    assert a.trader_amount + a.firm_amount == a.payable <= max(profit, D(0))


def test_the_split_is_the_higher_of_the_phase_and_the_tier_for_the_payout_count():
    policy = PayoutPolicy(split_tiers=[SplitTier(after_payouts=0, split=D(70)), SplitTier(after_payouts=3, split=D(90))])
    assert split_for(policy, D(80), 0)[0] == D(80)
    assert split_for(policy, D(80), 3)[0] == D(90)
    assert split_for(PayoutPolicy(), None, 5)[0] == D(100)


def test_payout_consistency_blocks_a_best_day_above_its_share():
    policy = PayoutPolicy(consistency_max_day_pct=D(40))
    check = consistency_check(policy, best_day=D(500), profit=D(1000))
    assert not check.ok and "must reach 1,250.00" in check.reason
    assert consistency_check(policy, best_day=D(400), profit=D(1000)).ok


def test_payout_policy_fields_are_validated_with_their_path():
    bad = LIFE_PACK.replace('min_amount: "50"', 'min_amount: "-1"')
    with pytest.raises(RulePackError, match=r"phases\[2\].payout"):
        parse_pack(bad)
    with pytest.raises(RulePackError, match="split_tiers"):
        parse_pack(LIFE_PACK.replace("after_payouts: 3", "after_payouts: 3}, {after_payouts: 1, split: 90"))


def test_existing_packs_keep_their_hash():
    # a pack without payout or scaling sections is unchanged by their addition (defaults are left out)
    assert b"payout" not in canonical_json(load_pack("two-step-100k"))
    assert b"scaling" not in canonical_json(load_pack("two-step-100k"))


# ------------------------------------------------------------------------------------------ stages


def test_only_allowed_transitions_and_a_refusal_names_the_allowed_ones():
    assert machine.can("registered", "customer") and not machine.can("registered", "funded")
    assert "allowed from registered: customer, suspended, terminated" in machine.refusal("registered", "funded")
    assert machine.allowed("terminated") == ()
    assert "nothing (final)" in machine.refusal("terminated", "registered")


def test_facts_walk_the_machine_along_allowed_steps_never_through_a_held_stage():
    assert machine.path("registered", "funded") == ["customer", "evaluation", "funded"]
    assert machine.path("failed", "evaluation") == ["evaluation"]
    assert machine.path("funded", "funded") == []
    for a in machine.STAGES:
        for b in machine.STAGES:
            chain = machine.path(a, b)
            if chain:
                steps = [a, *chain]
                assert all(machine.can(x, y) for x, y in zip(steps, steps[1:]))
                assert not set(chain[:-1]) & set(machine.HELD)


# ------------------------------------------------------------------------------------------ scaling


def test_a_scaled_pack_grows_the_size_and_absolute_amounts_and_raises_the_split():
    pack = life_pack()
    plan = pack.scaling
    size = next_size(plan, pack.initial_balance)
    bigger = scaled_pack(pack, step=1, size=size, split=split_after(plan, 1, D(80)), funded_phase="funded")
    assert (bigger.id, bigger.version, bigger.initial_balance) == ("life-10k.s1", 1, D(12500))
    funded = bigger.phases[-1]
    assert funded.profit_split == D(90)
    assert funded.rules[1].amount.absolute == D(1250) and funded.rules[0].amount.pct_initial == D(5)
    program = compile_pack(bigger).phase("funded")
    assert program.new_state("X").levels[1] == D(11250)  # 12,500 − 1,250
    again = scaled_pack(bigger, step=2, size=next_size(plan, size), split=split_after(plan, 2, D(90)),
                        funded_phase="funded")
    assert again.id == "life-10k.s2" and again.initial_balance == D("15625")
    capped = next_size(plan, D(19000))
    assert capped == D(20000)


def test_months_are_calendar_months():
    assert add_months(dt.datetime(2026, 1, 31, tzinfo=UTC), 1) == dt.datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(dt.datetime(2026, 11, 15, tzinfo=UTC), 4) == dt.datetime(2027, 3, 15, tzinfo=UTC)


def test_a_scaling_plan_is_validated():
    with pytest.raises(RulePackError, match="max_balance"):
        parse_pack(LIFE_PACK.replace('max_balance: "20000", ', ""))
    plan = msgspec.convert({"max_balance": "1"}, type(life_pack().scaling))
    assert plan.every_months == 4 and plan.increase_pct == D(25)
