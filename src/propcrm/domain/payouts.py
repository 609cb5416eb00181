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

**Profit carried over by a scaling** (``Carried``) is paid at the split in force when it was earned,
not at the scaled account's split. The first payout of a scaled account splits its profit into parts:
each carried-over part (net of the deducted profit of the account it was earned on, at that account's
split) and the profit earned since scaling (at the account's split). What reduces the profit — a loss
since scaling, the deducted profit, a deduction by finance — is taken from the part paid at the
**highest split first**: of every way to attribute the reductions to the parts, this one pays the
least, so the trader is never paid more than the rules allow. Each reduction is taken once, from one
part (the parts' payable profits add up to the payable profit exactly), so nothing is deducted twice.
Each part's share is exact; the sum is rounded down to the cent once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from .money import CENT, HUNDRED, ZERO, fmt, fmt_pct, to_cents
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
class Carried:
    """Profit carried over to a scaled account by a scaling: ``amount`` (net of the deducted profit of
    the account it was earned on) is paid at ``split_pct``, the split in force there at scaling time.
    ``source`` is the account it was earned on."""

    amount: Decimal
    split_pct: Decimal
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"amount": _text(self.amount), "split_pct": _text(self.split_pct), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Carried:
        return cls(amount=Decimal(str(data["amount"])), split_pct=Decimal(str(data["split_pct"])),
                   source=str(data["source"]))


@dataclass(frozen=True)
class Part:
    """One part of the payable profit and its split: a carried-over part, or the profit earned on the
    account itself (since scaling, or since the last payout). ``gross`` is before the reductions."""

    source: str  # the account the profit was earned on
    carried: bool
    gross: Decimal
    payable: Decimal
    split_pct: Decimal
    share: Decimal  # payable × split, exact


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
    parts: tuple[Part, ...] = ()

    def steps_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

    @property
    def carried_payable(self) -> Decimal:
        """The part of the payable profit paid at a carried-over split."""
        return sum((p.payable for p in self.parts if p.carried), ZERO)

    def still_owed(self) -> tuple[Carried, ...]:
        """The payable profit by the split it is paid at, as a scaling carries it over (parts of the
        same account and split merged; empty parts left out)."""
        merged: dict[tuple[str, Decimal], Decimal] = {}
        for p in self.parts:
            if p.payable > 0:
                merged[(p.source, p.split_pct)] = merged.get((p.source, p.split_pct), ZERO) + p.payable
        return tuple(Carried(amount=v, split_pct=k[1], source=k[0]) for k, v in merged.items())


def _text(value: Decimal) -> str:
    if not value:
        return "0"
    return format(value.normalize(), "f")


def _exact(value: Decimal) -> str:
    """An amount for people, exact: at least two decimals, never rounded (``240`` → ``240.00``,
    ``880.9096`` → ``880.9096``), so a step's arithmetic reads true."""
    if value == value.quantize(CENT):
        return f"{value.quantize(CENT):,.2f}"
    return f"{value.normalize():,f}"


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
    carried: Sequence[Carried] = (),
    account: str = "",
) -> Amount:
    """The payout for an account at ``balance`` whose last payout left it at ``baseline``.

    ``carried``: profit a scaling carried over to this account and not paid yet (its first payout),
    each part paid at its own split; the rest of the profit is paid at ``split_pct``."""
    if manual_deduction < 0 or penalties < 0:
        raise ValueError("deductions are amounts of 0 or more")
    carried = tuple(c for c in carried if c.amount > 0)
    if any(c.split_pct < 0 for c in carried):
        raise ValueError("a split is 0% or more")
    profit = balance - baseline
    payable = profit - penalties - manual_deduction
    if payable < 0:
        payable = ZERO
    withdrawal = profit if profit > 0 else ZERO
    if not carried:
        exact = payable * split_pct / HUNDRED
        parts: tuple[Part, ...] = (Part(account, False, max(profit, ZERO), payable, split_pct, exact),)
    else:
        parts = _split_into_parts(profit=profit, payable=payable, carried=carried, split_pct=split_pct,
                                  account=account)
        exact = sum((p.share for p in parts), ZERO)
    trader = to_cents(exact)
    firm = payable - trader
    steps = [Step("profit since the last payout", profit, f"closed balance {fmt(balance)} − {fmt(baseline)}")]
    if carried:
        carried_total = sum((c.amount for c in carried), ZERO)
        for c in carried:
            steps.append(Step(f"carried over from {c.source}", c.amount,
                              f"its unpaid profit, net of its deducted profit, when it was scaled; "
                              f"earned at {fmt_pct(c.split_pct)}"))
        earned = profit - carried_total
        steps.append(Step("earned since scaling", earned, "profit since the last payout − carried over"
                          + ("; a loss: it reduces the carried-over profit" if earned < 0 else "")))
        steps.append(Step("deducted profit (penalties)", -penalties,
                          "profit the rules count only partly (e.g. news windows), since scaling"))
    else:
        steps.append(Step("deducted profit (penalties)", -penalties,
                          "profit the rules count only partly (e.g. news windows)"))
    if manual_deduction:
        steps.append(Step("deducted by finance", -manual_deduction, manual_reason or ""))
    if not carried:
        steps += [
            Step("payable profit", payable, "never below 0"),
            Step("profit split", split_pct, split_source),
            Step("trader's share, exact", exact, f"{fmt(payable)} × {fmt_pct(split_pct)}"),
        ]
    else:
        steps += [
            Step("payable profit", payable,
                 "never below 0; a loss since scaling, penalties and deductions come off the part paid at the "
                 "highest split first, once each"),
            Step("profit split", split_pct, (split_source + "; " if split_source else "")
                 + "for the profit earned since scaling"),
        ]
        for p in parts:
            label = (f"carried over from {p.source} at {fmt_pct(p.split_pct)}" if p.carried
                     else f"earned since scaling at {fmt_pct(p.split_pct)}")
            reduced = (f"{_exact(p.gross)} − {_exact(p.gross - p.payable)} taken off = {_exact(p.payable)}; "
                       if p.payable != p.gross else "")
            steps.append(Step(label, p.share, f"{reduced}{_exact(p.payable)} × {fmt_pct(p.split_pct)} = "
                                              f"{_exact(p.share)}"))
        steps.append(Step("trader's share, exact", exact, " + ".join(_exact(p.share) for p in parts)))
    steps += [
        Step("trader's amount", trader, "rounded down to the cent" + (", once, at the end" if carried else "")),
        Step("firm's share", firm, "payable profit − trader's amount"),
        Step("withdrawn from the account", withdrawal, "the whole profit since the last payout"),
    ]
    return Amount(profit=profit, penalties=penalties, manual_deduction=manual_deduction, payable=payable,
                  split_pct=split_pct, trader_exact=exact, trader_amount=trader, firm_amount=firm,
                  withdrawal=withdrawal, steps=tuple(steps), parts=parts)


def _split_into_parts(*, profit: Decimal, payable: Decimal, carried: tuple[Carried, ...], split_pct: Decimal,
                      account: str) -> tuple[Part, ...]:
    """The payable profit by part. Gross: each carried-over amount, and the profit earned since
    scaling (``profit − carried``, when positive). Everything between the gross total and the payable
    profit — a loss since scaling (the profit is below what was carried over), the deducted profit, the
    deduction by finance — is taken from the parts in descending order of split (on a tie, the profit
    earned since scaling first, then the most recent carried part): the least the rules allow."""
    carried_total = sum((c.amount for c in carried), ZERO)
    gross = [(c.source, True, c.amount, c.split_pct) for c in carried]
    gross.append((account, False, max(profit - carried_total, ZERO), split_pct))
    to_take = sum((g[2] for g in gross), ZERO) - payable  # 0 ≤ to_take ≤ the gross total
    order = sorted(range(len(gross)), key=lambda i: (gross[i][3], i), reverse=True)
    taken = [ZERO] * len(gross)
    for i in order:
        take = min(gross[i][2], to_take)
        taken[i] = take
        to_take -= take
    assert to_take == 0
    return tuple(Part(source, is_carried, g, g - t, split, (g - t) * split / HUNDRED)
                 for (source, is_carried, g, split), t in zip(gross, taken))


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


__all__ = ["Amount", "Carried", "Check", "Part", "Step", "amount", "consistency_check", "split_for"]
