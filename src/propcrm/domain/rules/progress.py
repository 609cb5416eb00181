"""Passing a phase and the clocks on it: target, minimum days, duration, inactivity, and blockers.

Blockers (consistency, minimum holding time) never fail an account: they hold a pass back and say
what would release it.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from ..money import HUNDRED, fmt, fmt_pct
from ..rulepack import (
    Consistency,
    Inactivity,
    MaxDuration,
    MinHoldingTime,
    MinTradingDays,
    ProfitableDays,
    ProfitTarget,
)
from .base import CompiledRule, Ctx

if TYPE_CHECKING:  # pragma: no cover
    from ..events import TradeClosed
    from ..state import AccountState, Position


class ProfitTargetRule(CompiledRule):
    kind = "profit_target"

    def __init__(self, cfg: ProfitTarget, *, initial: Decimal):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.initial = initial
        self.amount = cfg.amount.resolve(initial=initial)
        self.target_balance = initial + self.amount
        self.on_equity_measure = cfg.measure == "equity"

    def measured(self, st: AccountState) -> Decimal:
        """What counts toward the target: closed balance (or equity) less deducted profit."""
        return (st.equity if self.on_equity_measure else st.balance) - st.deductions

    def met(self, st: AccountState) -> bool:
        if not self.on_equity_measure and st.positions:
            return False
        return self.measured(st) >= self.target_balance

    def describe(self, st: AccountState) -> str:
        what = "equity" if self.on_equity_measure else "balance"
        text = f"{what} {fmt(self.measured(st))} ≥ target {fmt(self.target_balance)}"
        if st.deductions:
            text += f" (after {fmt(st.deductions)} of deducted profit)"
        return text

    def watch(self, st: AccountState) -> tuple[Decimal | None, Decimal | None]:
        if self.on_equity_measure:
            return None, self.target_balance + st.deductions
        return None, None


class MinTradingDaysRule(CompiledRule):
    kind = "min_trading_days"

    def __init__(self, cfg: MinTradingDays, *, slot: int, initial: Decimal):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.slot = slot
        self.days = cfg.days
        self.threshold = (
            initial * cfg.counts.profitable_pct_initial / HUNDRED if isinstance(cfg.counts, ProfitableDays) else None
        )

    def current(self, st: AccountState) -> int:
        if self.threshold is None:
            return st.active_days
        today = 1 if st.trading_day is not None and st.day_profit >= self.threshold else 0
        return st.counts[self.slot] + today

    def met(self, st: AccountState) -> bool:
        return self.current(st) >= self.days

    def reset(self, st: AccountState) -> None:
        """Count again from zero (after a payout whose pack resets trading days)."""
        st.counts[self.slot] = 0

    def on_day_end(self, st: AccountState, ctx: Ctx) -> None:
        if self.threshold is not None and st.day_profit >= self.threshold:
            st.counts[self.slot] += 1

    def _what(self) -> str:
        return "trading days" if self.threshold is None else f"days with closed profit ≥ {fmt(self.threshold)}"

    def describe(self, st: AccountState) -> str:
        return f"{self.current(st)} {self._what()} ≥ {self.days}"

    def shortfall(self, st: AccountState) -> tuple[str, dict[str, Any]]:
        """Why a met target does not pass yet, as a blocker says it (see ``PhaseProgram.check_pass``)."""
        current = self.current(st)
        return (
            f"minimum trading days: {current} of {self.days} {self._what()} — keep trading",
            dict(
                value=Decimal(current),
                threshold=Decimal(self.days),
                trading_days=current,
                required_days=self.days,
                days_needed=self.days - current,
            ),
        )


class MaxDurationRule(CompiledRule):
    kind = "max_duration"

    def __init__(self, cfg: MaxDuration):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.span = dt.timedelta(days=cfg.days)

    def deadline(self, st: AccountState) -> dt.datetime | None:
        return st.phase_start + self.span if st.phase_start is not None else None

    def on_deadline(self, st: AccountState, when: dt.datetime, ctx: Ctx) -> None:
        ctx.breach(
            st,
            self.rule_id,
            f"phase {st.phase} was not passed within {self.cfg.days} days "
            f"(started {st.phase_start:%Y-%m-%d %H:%M} UTC, time ran out {when:%Y-%m-%d %H:%M} UTC)",
            threshold=Decimal(self.cfg.days),
            deadline=when,
        )


class InactivityRule(CompiledRule):
    kind = "inactivity"

    def __init__(self, cfg: Inactivity):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.span = dt.timedelta(days=cfg.days)

    def _since(self, st: AccountState) -> dt.datetime | None:
        activity = self.cfg.activity
        if activity == "closed":
            last = st.last_close_at
        elif activity == "opened":
            last = st.last_open_at
        else:
            last = st.last_trade_at
        return last or st.phase_start

    def deadline(self, st: AccountState) -> dt.datetime | None:
        since = self._since(st)
        return since + self.span if since is not None else None

    def on_deadline(self, st: AccountState, when: dt.datetime, ctx: Ctx) -> None:
        since = self._since(st)
        what = {"any_trade": "no trade", "opened": "no position opened", "closed": "no position closed"}
        ctx.breach(
            st,
            self.rule_id,
            f"{what[self.cfg.activity]} for {self.cfg.days} days (last activity {since:%Y-%m-%d %H:%M} UTC)",
            threshold=Decimal(self.cfg.days),
            last_activity=since,
            activity=self.cfg.activity if self.cfg.activity != "any_trade" else None,
        )


class ConsistencyRule(CompiledRule):
    kind = "consistency"

    def __init__(self, cfg: Consistency, *, initial: Decimal):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.initial = initial
        self.pct = cfg.max_best_day_pct

    def blocker(self, st: AccountState) -> tuple[str, dict[str, Any]] | None:
        total = st.balance - self.initial
        best = max(st.best_day_profit, st.day_profit)
        if best <= 0 or total <= 0 or best * HUNDRED <= self.pct * total:
            return None
        needed = best * HUNDRED / self.pct
        needed_cent = needed.quantize(Decimal("0.01"), rounding=ROUND_CEILING)
        share = (best * HUNDRED / total).quantize(Decimal("0.1"))
        return (
            f"consistency: best day {fmt(best)} is {fmt_pct(share)} of total profit {fmt(total)} "
            f"(at most {fmt_pct(self.pct)}); total profit must reach {fmt(needed_cent)} "
            f"(balance {fmt(self.initial + needed_cent)}) to pass",
            dict(
                value=best,
                threshold=self.pct * total / HUNDRED,
                best_day=best,
                total_profit=total,
                effective_target=self.initial + needed_cent,
            ),
        )


class MinHoldingTimeRule(CompiledRule):
    kind = "min_holding_time"

    def __init__(self, cfg: MinHoldingTime, *, slot: int):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.slot = slot  # counts[slot] closed positions, counts[slot + 1] held under `seconds`
        self.span = dt.timedelta(seconds=cfg.seconds)

    def over(self, st: AccountState) -> bool:
        closed, short = st.counts[self.slot], st.counts[self.slot + 1]
        return closed >= self.cfg.min_trades and short * HUNDRED > self.cfg.max_share_pct * closed

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None:
        if pos.lots > 0:  # partially closed: the position is judged when it is closed in full
            return
        was_over = self.over(st)
        st.counts[self.slot] += 1
        if ev.ts - pos.opened_at < self.span:
            st.counts[self.slot + 1] += 1
        if self.cfg.action == "violation" and self.over(st) and not was_over:
            ctx.decide(st, "violation", self.rule_id, self._describe(st), **self._numbers(st))

    def _numbers(self, st: AccountState) -> dict[str, Any]:
        closed, short = st.counts[self.slot], st.counts[self.slot + 1]
        return dict(
            value=(Decimal(short) * HUNDRED / Decimal(closed)).quantize(Decimal("0.01")),
            threshold=self.cfg.max_share_pct,
            short_trades=short,
            closed_trades=closed,
        )

    def _describe(self, st: AccountState) -> str:
        closed, short = st.counts[self.slot], st.counts[self.slot + 1]
        share = (Decimal(short) * HUNDRED / Decimal(closed)).quantize(Decimal("0.1"))
        return (
            f"{short} of {closed} closed positions ({fmt_pct(share)}) were held under {self.cfg.seconds} s; "
            f"at most {fmt_pct(self.cfg.max_share_pct)} may be"
        )

    def blocker(self, st: AccountState) -> tuple[str, dict[str, Any]] | None:
        if self.cfg.action != "blocker" or not self.over(st):
            return None
        closed, short = st.counts[self.slot], st.counts[self.slot + 1]
        if self.cfg.max_share_pct > 0:
            needed = int((Decimal(short) * HUNDRED / self.cfg.max_share_pct).to_integral_value(ROUND_CEILING))
            release = f"; {needed - closed} more positions held ≥ {self.cfg.seconds} s would release it"
        else:
            release = ""
        return f"holding time: {self._describe(st)}{release}", self._numbers(st)
