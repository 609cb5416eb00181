"""Capital scaling as arithmetic: the scaled pack and the review's checks. Pure.

A scaled account is a new funded account bound to a *scaled pack version*: the same rules with the
initial balance grown by ``increase_pct`` % (capped at ``max_balance``), every absolute amount grown
in the same proportion (percentages of the initial balance follow by themselves), and the profit
split of ``split_steps``. Its limits therefore follow the new size, and each account keeps one pack
version for its whole life, so ``propcrm replay`` of its events with that version gives its
decisions byte for byte.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import msgspec

from .money import HUNDRED
from .rulepack import Amount, InitialPlus, MaxLoss, RulePack, ScalingPlan

_STEP = re.compile(r"\.s\d+$")


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    """``when`` plus whole calendar months (the day clamped to the month's end)."""
    month = when.month - 1 + months
    year = when.year + month // 12
    month = month % 12 + 1
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30,
            31, 30, 31][month - 1]
    return when.replace(year=year, month=month, day=min(when.day, days))


def next_size(plan: ScalingPlan, size: Decimal) -> Decimal:
    grown = size + size * plan.increase_pct / HUNDRED
    return min(grown, plan.max_balance)


def split_after(plan: ScalingPlan, step: int, current: Decimal | None) -> Decimal | None:
    if not plan.split_steps:
        return current
    return plan.split_steps[min(step, len(plan.split_steps)) - 1]


def root_pack_id(pack_id: str) -> str:
    return _STEP.sub("", pack_id)


def scaled_pack(pack: RulePack, *, step: int, size: Decimal, split: Decimal | None, funded_phase: str) -> RulePack:
    """``pack`` grown to ``size`` (scaling step ``step``): absolute amounts in proportion, the funded
    phase's split set to ``split``. The id is ``<root id>.s<step>``; the version stays."""
    ratio = size / pack.initial_balance

    def grow(rule):
        changes = {}
        amount = getattr(rule, "amount", None)
        if isinstance(amount, Amount) and amount.absolute is not None:
            changes["amount"] = Amount(absolute=amount.absolute * ratio)
        if isinstance(rule, MaxLoss) and isinstance(rule.lock, InitialPlus):
            changes["lock"] = InitialPlus(initial_plus=rule.lock.initial_plus * ratio)
        return msgspec.structs.replace(rule, **changes) if changes else rule

    phases = []
    for phase in pack.phases:
        rules = [grow(rule) for rule in phase.rules]
        changes = {"rules": rules}
        if phase.name == funded_phase and split is not None:
            changes["profit_split"] = split
        phases.append(msgspec.structs.replace(phase, **changes))
    note = f"scaled (step {step}) from {root_pack_id(pack.id)} to {size}"
    return msgspec.structs.replace(pack, id=f"{root_pack_id(pack.id)}.s{step}", initial_balance=size, phases=phases,
                                   description=note)


__all__ = ["add_months", "next_size", "root_pack_id", "scaled_pack", "split_after"]
