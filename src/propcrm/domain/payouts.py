"""Payouts as arithmetic: which checks a request must pass, and the amount, step by step. Pure.

The amount a trader is paid from a funded account::

    profit since the last payout   = closed balance − the account's initial balance
  − deducted profit (penalties)    = the engine's deductions (e.g. news-window profit counted only partly)
  − deductions by finance          = each with the reason the trader sees
  = payable profit                 (never below 0)
  × profit split %                 = the higher of the phase's split and the pack's tier for the payout count
  = the trader's amount            rounded DOWN to the cent (money.to_cents): the firm never pays a
                                   fraction of a cent more than the rules allow

The whole profit since the last payout leaves the account (a ``balance`` event with reason
``payout``), so the account starts the next period at its initial balance; the firm keeps the rest.
Every figure is an exact Decimal; only the trader's amount is rounded, once, at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from .money import HUNDRED, ZERO, fmt, fmt_pct, to_cents
from .rulepack import PayoutPolicy


@dataclass(frozen=True)
class Check:
    """One eligibility condition and its outcome, in words the trader understands."""

    name: str
    ok: bool
    reason: str
    value: str | None = None
    required: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    label: str
    amount: Decimal
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "amount": _text(self.amount), "note": self.note}


@dataclass(frozen=True)
class Amount:
    profit: Decimal
    penalties: Decimal
    manual_deduction: Decimal
    payable: Decimal
    split_pct: Decimal
    trader_exact: Decimal
    trader_amount: Decimal
    firm_amount: Decimal
    withdrawal: Decimal
    steps: tuple[Step, ...]

    def steps_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]


def _text(value: Decimal) -> str:
    if not value:
        return "0"
    return format(value.normalize(), "f")


def split_for(policy: PayoutPolicy, phase_split: Decimal | None, payouts_done: int) -> tuple[Decimal, str]:
    """The trader's share for the next payout and where it comes from.

    The phase's ``profit_split`` (raised by scaling) and the highest ``split_tiers`` entry whose
    ``after_payouts`` ≤ the payouts already approved: the higher of the two. No split at all: 100%.
    """
    base = phase_split if phase_split is not None else None
    tier = None
    for candidate in policy.split_tiers:
        if candidate.after_payouts <= payouts_done:
            tier = candidate
    if base is None and tier is None:
        return HUNDRED, "no profit split in the pack: 100%"
    if tier is not None and (base is None or tier.split > base):
        return tier.split, f"tier after {tier.after_payouts} payout(s) ({payouts_done} done): {fmt_pct(tier.split)}"
    return base, f"the funded phase's split {fmt_pct(base)}"  # type: ignore[arg-type]


def amount(
    *,
    balance: Decimal,
    baseline: Decimal,
    penalties: Decimal,
    manual_deduction: Decimal = ZERO,
    manual_reason: str | None = None,
    split_pct: Decimal,
    split_source: str = "",
) -> Amount:
    """The payout for an account at ``balance`` whose last payout left it at ``baseline``."""
    if manual_deduction < 0 or penalties < 0:
        raise ValueError("deductions are amounts of 0 or more")
    profit = balance - baseline
    payable = profit - penalties - manual_deduction
    if payable < 0:
        payable = ZERO
    exact = payable * split_pct / HUNDRED
    trader = to_cents(exact)
    firm = payable - trader
    withdrawal = profit if profit > 0 else ZERO
    steps = [
        Step("profit since the last payout", profit, f"closed balance {fmt(balance)} − {fmt(baseline)}"),
        Step("deducted profit (penalties)", -penalties, "profit the rules count only partly (e.g. news windows)"),
    ]
    if manual_deduction:
        steps.append(Step("deducted by finance", -manual_deduction, manual_reason or ""))
    steps += [
        Step("payable profit", payable, "never below 0"),
        Step("profit split", split_pct, split_source),
        Step("trader's share, exact", exact, f"{fmt(payable)} × {fmt_pct(split_pct)}"),
        Step("trader's amount", trader, "rounded down to the cent"),
        Step("firm's share", firm, "payable profit − trader's amount"),
        Step("withdrawn from the account", withdrawal, "the whole profit since the last payout"),
    ]
    return Amount(profit=profit, penalties=penalties, manual_deduction=manual_deduction, payable=payable,
                  split_pct=split_pct, trader_exact=exact, trader_amount=trader, firm_amount=firm,
                  withdrawal=withdrawal, steps=tuple(steps))


def consistency_check(policy: PayoutPolicy, *, best_day: Decimal, profit: Decimal) -> Check:
    """The pack's payout consistency: the best day ≤ X% of the profit since the last payout."""
    pct = policy.consistency_max_day_pct
    if pct is None:
        return Check("consistency", True, "the pack has no payout consistency rule")
    if best_day <= 0 or profit <= 0:
        return Check("consistency", True, "no profitable day to weigh", value=_text(best_day))
    if best_day * HUNDRED > pct * profit:
        needed = best_day * HUNDRED / pct
        return Check(
            "consistency", False,
            f"best day {fmt(best_day)} is more than {fmt_pct(pct)} of the profit {fmt(profit)}; "
            f"the profit must reach {fmt(needed)} first",
            value=_text(best_day), required=_text(pct * profit / HUNDRED),
        )
    return Check("consistency", True, f"best day {fmt(best_day)} ≤ {fmt_pct(pct)} of the profit {fmt(profit)}",
                 value=_text(best_day), required=_text(pct * profit / HUNDRED))


__all__ = ["Amount", "Check", "Step", "amount", "consistency_check", "split_for"]
