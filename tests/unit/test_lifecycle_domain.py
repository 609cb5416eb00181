"""The pure parts of the lifecycle: payout arithmetic, the trader state machine, scaled packs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propcrm.domain import lifecycle as machine
from propcrm.domain.money import CENT, to_cents
from propcrm.domain.payouts import Carried, amount, consistency_check, split_for
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


# ------------------------------------------------------------------------------------------ carried over

OLD = "CH-1.phase-2.funded"


def _scaled(balance, *, penalties="0", manual="0", carried=(("300", "80"),), split="90"):
    """The first payout of a scaled account of 12,500 that got ``carried`` (amount, split) from OLD."""
    return amount(balance=D(balance), baseline=D(12500), penalties=D(penalties), manual_deduction=D(manual),
                  manual_reason="fee" if D(manual) else None, split_pct=D(split), split_source="phase",
                  carried=[Carried(D(a), D(s), OLD) for a, s in carried], account="CH-1.s1")


def test_carried_over_profit_is_paid_at_the_split_it_was_earned_at_and_the_rest_at_the_new_one():
    only = _scaled("12800")  # nothing earned since scaling: 300 × 80%, not × 90%
    assert (only.payable, only.trader_amount, only.firm_amount, only.withdrawal) == (300, D("240.00"), 60, 300)
    steps = {s.label: s for s in only.steps}
    assert steps[f"carried over from {OLD} at 80%"].note == "300.00 × 80% = 240.00"
    assert steps["earned since scaling at 90%"].note == "0.00 × 90% = 0.00"
    more = _scaled("13300")  # + 500 since scaling
    assert more.trader_amount == D("690.00")  # 240 + 450
    labels = [s.label for s in more.steps]
    assert labels == ["profit since the last payout", f"carried over from {OLD}", "earned since scaling",
                      "deducted profit (penalties)", "payable profit", "profit split",
                      f"carried over from {OLD} at 80%", "earned since scaling at 90%", "trader's share, exact",
                      "trader's amount", "firm's share", "withdrawn from the account"]
    assert [(p.carried, p.payable, p.split_pct, p.share) for p in more.parts] == [
        (True, 300, 80, 240), (False, 500, 90, 450)]


def test_a_loss_since_scaling_reduces_the_carried_profit_and_never_the_other_way_round():
    loss = _scaled("12700")  # − 100 since scaling: 200 of the 300 carried is left
    assert (loss.payable, loss.trader_amount) == (200, D("160.00"))
    note = {s.label: s.note for s in loss.steps}[f"carried over from {OLD} at 80%"]
    assert note == "300.00 − 100.00 taken off = 200.00; 200.00 × 80% = 160.00"
    assert _scaled("12400").trader_amount == 0  # below the carried profit and the start: nothing
    # + 500 then − 200 since scaling is + 300 since scaling: the loss is netted against what was earned
    # since scaling (paid at 90%) before it touches the carried part — 240 + 270, never 80 + 450
    assert _scaled("13100").trader_amount == D("510.00")


def test_penalties_and_deductions_come_off_the_higher_split_first_and_only_once():
    pen = _scaled("13300", penalties="50")  # earned 500 − 50 at 90% + 300 at 80%
    assert pen.payable == 750 and pen.trader_amount == D("645.00")
    big = _scaled("13300", penalties="100", manual="500")  # 600 off: all 500 earned, then 100 of the carried
    assert big.payable == 200 and big.trader_amount == D("160.00")
    assert sum(p.payable for p in big.parts) == big.payable  # each unit deducted once, from one part
    # a carried part at a higher split than the scaled account's (e.g. a tier) gives up its profit first
    high = _scaled("13300", manual="100", carried=(("300", "95"),), split="90")
    assert high.trader_amount == D("190.00") + D("450.00")  # 200 × 95% + 500 × 90%


def test_a_scaled_account_scaled_again_before_a_payout_carries_each_part_with_its_own_split():
    owed = _scaled("13300", penalties="50").still_owed()  # what a second scaling would carry over
    assert owed == (Carried(D(300), D(80), OLD), Carried(D(450), D(90), "CH-1.s1"))
    assert _scaled("12700").still_owed() == (Carried(D(200), D(80), OLD),)
    assert _scaled("12400").still_owed() == ()


def test_the_trader_s_amount_is_rounded_down_once_after_adding_the_parts():
    a = _scaled("12500.02", carried=(("0.01", "50"),), split="50")  # 0.005 + 0.005
    assert a.trader_exact == D("0.01") and a.trader_amount == D("0.01")
    b = _scaled("12800.017", carried=(("300.011", "80"),), split="90")  # 240.0088 + 0.0054
    assert b.trader_exact == D("240.0142") and b.trader_amount == D("240.01")


@settings(max_examples=400, deadline=None)
@given(profit=st.decimals(min_value=D("-3000"), max_value=D("9000"), places=3),
       carried=st.lists(st.tuples(st.decimals(min_value=D("0.01"), max_value=D("5000"), places=3),
                                  st.decimals(min_value=0, max_value=D(100), places=2)), min_size=1, max_size=3),
       penalties=st.decimals(min_value=0, max_value=D("2000"), places=2),
       manual=st.decimals(min_value=0, max_value=D("2000"), places=2),
       split=st.decimals(min_value=0, max_value=D(100), places=2))
def test_carried_over_profit_never_pays_more_than_the_rules_allow(profit, carried, penalties, manual, split):
    parts = [Carried(a, s, f"OLD{i}") for i, (a, s) in enumerate(carried)]
    got = amount(balance=D(12500) + profit, baseline=D(12500), penalties=penalties, manual_deduction=manual,
                 split_pct=split, carried=parts, account="NEW")
    carried_total = sum(a for a, _ in carried)
    # the payable profit is the rules' one, each reduction taken once
    assert got.payable == max(profit - penalties - manual, D(0)) == sum(p.payable for p in got.parts)
    assert all(0 <= p.payable <= p.gross for p in got.parts)
    assert got.trader_amount == to_cents(sum(p.payable * p.split_pct / 100 for p in got.parts))
    assert got.trader_amount == got.trader_amount.quantize(CENT) and got.trader_amount + got.firm_amount == got.payable
    # never more than each profit at the split it was earned at, before any reduction …
    ceiling = sum(a * s / 100 for a, s in carried) + max(profit - carried_total, D(0)) * split / 100
    assert got.trader_amount <= ceiling
    # … nor than the highest split of the payable profit, nor than taking the reductions from the lowest
    # split first (the opposite choice)
    assert got.trader_amount <= got.payable * max([split] + [s for _, s in carried]) / 100
    gross = sorted([(s, a) for a, s in carried] + [(split, max(profit - carried_total, D(0)))])
    left, opposite = sum(a for _, a in gross) - got.payable, D(0)
    for s, a in gross:
        take = min(a, left)
        left -= take
        opposite += (a - take) * s / 100
    assert got.trader_exact <= opposite
    # a part carried at the account's own split pays exactly what the old derivation paid
    same = amount(balance=D(12500) + profit, baseline=D(12500), penalties=penalties, manual_deduction=manual,
                  split_pct=split, carried=[Carried(carried_total, split, "OLD")])
    plain = amount(balance=D(12500) + profit, baseline=D(12500), penalties=penalties, manual_deduction=manual,
                   split_pct=split)
    assert same.trader_amount == plain.trader_amount


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
