"""Loss limits checked against real-time equity: daily loss, max loss (static and trailing), per trade.

Each limit keeps its level in ``state.levels[slot]``; trailing max loss keeps what moves it in
``state.peaks[slot]``. Early warnings belong to the limit they watch: a warning fires once per limit,
threshold and trading day when usage of the limit's room crosses the threshold.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from ..money import HUNDRED, fmt, fmt_pct
from ..rulepack import DailyLoss, InitialPlus, MaxLoss, PerTradeLoss
from .base import CompiledRule, Ctx, describe_time

if TYPE_CHECKING:  # pragma: no cover
    from ..events import TradeClosed
    from ..state import AccountState, Position

_BASE_WORDS = {
    "balance": "balance at day start",
    "equity": "equity at day start",
    "max_balance_equity": "the higher of balance and equity at day start",
    "initial": "initial balance",
}
_TRAIL_WORDS = {
    "equity_intraday": "highest equity (floating P/L included)",
    "balance_intraday": "highest closed balance",
    "balance_eod": "highest end-of-day balance",
}


class _Limit(CompiledRule):
    """Shared by daily and max loss: a level, a comparator, warnings inside the room above the level.

    The room is the amount between the reference (day-start base, or the trailing peak) and the
    level; a warning at p % fires when equity has used p % of it.
    """

    slot: int
    touch: bool
    warn: tuple[tuple[int, Decimal, Decimal], ...] = ()  # (bit mask, pct, share of the room left)

    def _warnings(self, warn_at: tuple[Decimal, ...], warn_bit: int) -> None:
        # ascending thresholds: the first one not yet fired has the highest warning level
        self.warn = tuple(
            (1 << (warn_bit + i), pct, (HUNDRED - pct) / HUNDRED) for i, pct in enumerate(sorted(warn_at))
        )

    def room(self, st: AccountState) -> Decimal:
        raise NotImplementedError

    def hit(self, equity: Decimal, level: Decimal) -> bool:
        return equity <= level if self.touch else equity < level

    def check_warnings(self, st: AccountState, ctx: Ctx, name: str) -> None:
        equity = st.equity
        level = st.levels[self.slot]
        room = self.room(st)
        for mask, pct, left in self.warn:
            warn_level = level + room * left
            if st.warned & mask or equity > warn_level:
                continue
            st.warned |= mask
            used = (room - (equity - level)) * HUNDRED / room
            ctx.decide(
                st,
                "warning",
                self.rule_id,
                f"equity {fmt(equity)} has used {fmt_pct(used.quantize(Decimal('0.1')))} of the {name} room "
                f"{fmt(room)} (warning at {fmt_pct(pct)}; the level is {fmt(level)})",
                value=equity,
                threshold=warn_level,
                comparator="at_or_below",
                usage_pct=used.quantize(Decimal("0.01")),
                warn_at_pct=pct,
                level=level,
            )

    def low_watch(self, st: AccountState) -> Decimal:
        level = st.levels[self.slot]
        warned = st.warned
        for mask, _pct, left in self.warn:
            if not warned & mask:
                return level + self.room(st) * left
        return level


class DailyLossRule(_Limit):
    kind = "daily_loss"

    def __init__(self, cfg: DailyLoss, *, slot: int, initial: Decimal, warn_at: tuple[Decimal, ...], warn_bit: int):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.slot = slot
        self.initial = initial
        self.touch = cfg.comparator == "at_or_below"
        self.pause = cfg.on_breach == "pause"
        self._warnings(warn_at, warn_bit)

    def base_value(self, st: AccountState) -> Decimal:
        base = self.cfg.base
        if base == "balance":
            return st.day_start_balance
        if base == "equity":
            return st.day_start_equity
        if base == "max_balance_equity":
            return max(st.day_start_balance, st.day_start_equity)
        return self.initial

    def room(self, st: AccountState) -> Decimal:
        return st.peaks[self.slot] - st.levels[self.slot]  # the day's base is kept in peaks[slot]

    def on_day_start(self, st: AccountState, ctx: Ctx) -> None:
        base = self.base_value(st)
        st.peaks[self.slot] = base
        st.levels[self.slot] = base - self.cfg.amount.resolve(initial=self.initial, base=base)

    def on_payout(self, st: AccountState, withdrawn: Decimal) -> None:
        """The day-start figures have moved down with the withdrawal: the floor follows (not from initial)."""
        if self.cfg.base != "initial" and st.day_start_at is not None:
            self.on_day_start(st, None)  # type: ignore[arg-type]  # recomputes from the moved base

    def derivation(self, st: AccountState) -> str:
        base = self.base_value(st)
        amount = self.cfg.amount
        if amount.pct_initial is not None:
            part = f"{fmt_pct(amount.pct_initial)} of initial {fmt(self.initial)}"
        elif amount.pct_base is not None:
            part = f"{fmt_pct(amount.pct_base)} of {fmt(base)}"
        else:
            part = fmt(amount.absolute)
        if self.cfg.base == "max_balance_equity":
            words = (
                f"the higher of balance {fmt(st.day_start_balance)} and equity {fmt(st.day_start_equity)} "
                "at day start"
            )
            return f"{words} − {part}"
        return f"{_BASE_WORDS[self.cfg.base]} {fmt(base)} − {part}"

    def check(self, st: AccountState, ctx: Ctx) -> None:
        if self.pause and st.status == "paused":
            return
        level = st.levels[self.slot]
        equity = st.equity
        if self.hit(equity, level):
            verb = "reached" if equity == level else "fell below"
            message = f"equity {fmt(equity)} {verb} the daily floor {fmt(level)} = {self.derivation(st)}"
            numbers = dict(
                value=equity,
                threshold=level,
                comparator=self.cfg.comparator,
                base=self.cfg.base,
                base_value=self.base_value(st),
                amount=self.room(st),
                trading_day=st.trading_day.isoformat() if st.trading_day else None,
            )
            if self.pause:
                st.status = "paused"
                st.paused_until = st.day_end_at
                ctx.decide(
                    st,
                    "pause",
                    self.rule_id,
                    f"{message}; trading is paused until the next trading day starts "
                    f"({st.day_end_at:%Y-%m-%d %H:%M} UTC)",
                    until=st.day_end_at,
                    **numbers,
                )
            else:
                ctx.breach(st, self.rule_id, message, **numbers)
        elif self.warn:
            self.check_warnings(st, ctx, "daily loss")

    def watch(self, st: AccountState) -> tuple[Decimal | None, Decimal | None]:
        if self.pause and st.status == "paused":
            return None, None
        return self.low_watch(st), None


class MaxLossRule(_Limit):
    kind = "max_loss"

    def __init__(
        self,
        cfg: MaxLoss,
        *,
        slot: int,
        initial: Decimal,
        target_balance: Decimal | None,
        warn_at: tuple[Decimal, ...],
        warn_bit: int,
    ):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.slot = slot
        self.initial = initial
        self.amount = cfg.amount.resolve(initial=initial)
        self.touch = cfg.comparator == "at_or_below"
        self.trailing = cfg.trailing
        self._warnings(warn_at, warn_bit)
        lock = cfg.lock
        if lock is None:
            self.cap: Decimal | None = None
        elif lock == "initial":
            self.cap = initial
        elif lock == "target":
            assert target_balance is not None
            self.cap = target_balance
        else:
            assert isinstance(lock, InitialPlus)
            self.cap = initial + lock.initial_plus

    def room(self, st: AccountState) -> Decimal:
        return self.amount

    def on_phase_start(self, st: AccountState) -> None:
        st.levels[self.slot] = self.initial - self.amount
        if self.trailing != "none":
            st.peaks[self.slot] = self.initial

    def _move(self, st: AccountState, candidate: Decimal) -> None:
        if candidate <= st.peaks[self.slot]:
            return
        st.peaks[self.slot] = candidate
        level = candidate - self.amount
        if self.cap is not None and level > self.cap:
            level = self.cap
        if level > st.levels[self.slot]:
            st.levels[self.slot] = level

    def on_payout(self, st: AccountState, withdrawn: Decimal) -> None:
        """A trailing level moves down with a payout withdrawal, never below where it started."""
        if self.trailing == "none":
            return
        st.peaks[self.slot] -= withdrawn
        start = self.initial - self.amount
        st.levels[self.slot] = max(st.levels[self.slot] - withdrawn, start)

    def on_equity(self, st: AccountState, ctx: Ctx) -> None:
        if self.trailing == "equity_intraday":
            self._move(st, st.equity)

    def on_balance(self, st: AccountState, ctx: Ctx) -> None:
        if self.trailing == "balance_intraday":
            self._move(st, st.balance)

    def on_day_end(self, st: AccountState, ctx: Ctx) -> None:
        if self.trailing == "balance_eod":
            self._move(st, st.balance)

    def locked(self, st: AccountState) -> bool:
        return self.cap is not None and st.levels[self.slot] >= self.cap

    def derivation(self, st: AccountState) -> str:
        amount = self.cfg.amount
        part = (
            f"{fmt_pct(amount.pct_initial)} of initial {fmt(self.initial)}"
            if amount.pct_initial is not None
            else fmt(self.amount)
        )
        if self.trailing == "none":
            return f"the max-loss level {fmt(st.levels[self.slot])} = initial balance {fmt(self.initial)} − {part}"
        text = (
            f"the trailing max-loss level {fmt(st.levels[self.slot])} = {_TRAIL_WORDS[self.trailing]} "
            f"{fmt(st.peaks[self.slot])} − {part}"
        )
        if self.locked(st):
            text += f", stopped trailing at {fmt(self.cap)}"
        return text

    def check(self, st: AccountState, ctx: Ctx) -> None:
        level = st.levels[self.slot]
        equity = st.equity
        if self.hit(equity, level):
            verb = "reached" if equity == level else "fell below"
            ctx.breach(
                st,
                self.rule_id,
                f"equity {fmt(equity)} {verb} {self.derivation(st)}",
                value=equity,
                threshold=level,
                comparator=self.cfg.comparator,
                trailing=self.trailing,
                peak=st.peaks[self.slot] if self.trailing != "none" else None,
                amount=self.amount,
                locked=self.locked(st) if self.cap is not None else None,
            )
        elif self.warn:
            self.check_warnings(st, ctx, "max loss")

    def watch(self, st: AccountState) -> tuple[Decimal | None, Decimal | None]:
        return self.low_watch(st), None

    def peak_line(self, st: AccountState) -> tuple[Decimal, Decimal | None, Decimal] | None:
        """How a new intraday peak ``P`` moves this rule's low watch while no warning changes: it becomes
        ``min(P − amount, cap) + offset`` (None when the level no longer trails). Lets a caller move
        the band of many accounts at once (engine.marking) exactly as :meth:`_move` would."""
        if self.trailing != "equity_intraday" or self.locked(st):
            return None
        offset = Decimal(0)
        for mask, _pct, left in self.warn:
            if not st.warned & mask:
                offset = self.room(st) * left
                break
        return self.amount, self.cap, offset

    def trail_watch(self, st: AccountState) -> Decimal | None:
        """Equity above this moves the level (a new intraday peak); it can never cause a decision."""
        if self.trailing == "equity_intraday" and not self.locked(st):
            return st.peaks[self.slot]
        return None


class PerTradeLossRule(CompiledRule):
    kind = "per_trade_loss"

    def __init__(self, cfg: PerTradeLoss, *, initial: Decimal):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.amount = cfg.amount.resolve(initial=initial)
        self.initial = initial

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None:
        limit = self.amount
        loss = -pos.realised
        if loss > limit >= -before:
            derivation = (
                f" = {fmt_pct(self.cfg.amount.pct_initial)} of initial {fmt(self.initial)}"
                if self.cfg.amount.pct_initial is not None
                else ""
            )
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"position {ev.position} ({pos.symbol}) lost {fmt(loss)} after costs, more than the per-trade "
                f"limit {fmt(limit)}{derivation}",
                value=loss,
                threshold=limit,
                comparator="above",
                position=ev.position,
                symbol=pos.symbol,
            )


__all__ = ["DailyLossRule", "MaxLossRule", "PerTradeLossRule", "describe_time"]
