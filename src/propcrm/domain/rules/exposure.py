"""Exposure and trade behaviour, judged when a position opens or closes.

Lots, open positions, trades per day, a stop loss at entry, hedging inside one account, and lot
escalation after a loss (martingale). The consequence of each is the rule's ``action``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from ..money import ZERO
from ..rulepack import Hedging, LotEscalation, MaxLots, MaxOpenPositions, MaxTradesPerDay, StopLossRequired
from .base import CompiledRule, Ctx

if TYPE_CHECKING:  # pragma: no cover
    from ..events import TradeClosed, TradeOpened
    from ..state import AccountState, Position


def _lots(value: Decimal) -> str:
    return format(value.normalize(), "f")


class MaxLotsRule(CompiledRule):
    kind = "max_lots"

    def __init__(self, cfg: MaxLots):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        cfg = self.cfg
        if cfg.per_position is not None and ev.lots > cfg.per_position:
            ctx.offence(
                st,
                self.rule_id,
                cfg.action,
                f"position {ev.position} opened {_lots(ev.lots)} lots of {ev.symbol}; "
                f"at most {_lots(cfg.per_position)} lots per position",
                value=ev.lots,
                threshold=cfg.per_position,
                comparator="above",
                limit="per_position",
                position=ev.position,
            )
        if cfg.total is not None:
            total = sum((p.lots for p in st.positions.values()), ZERO)
            if total > cfg.total:
                ctx.offence(
                    st,
                    self.rule_id,
                    cfg.action,
                    f"{_lots(total)} lots open in total after opening {ev.position}; at most {_lots(cfg.total)}",
                    value=total,
                    threshold=cfg.total,
                    comparator="above",
                    limit="total",
                    position=ev.position,
                )
        if cfg.per_symbol and ev.symbol in cfg.per_symbol:
            cap = cfg.per_symbol[ev.symbol]
            on_symbol = sum((p.lots for p in st.positions.values() if p.symbol == ev.symbol), ZERO)
            if on_symbol > cap:
                ctx.offence(
                    st,
                    self.rule_id,
                    cfg.action,
                    f"{_lots(on_symbol)} lots of {ev.symbol} open after {ev.position}; at most {_lots(cap)}",
                    value=on_symbol,
                    threshold=cap,
                    comparator="above",
                    limit="per_symbol",
                    symbol=ev.symbol,
                    position=ev.position,
                )


class MaxOpenPositionsRule(CompiledRule):
    kind = "max_open_positions"

    def __init__(self, cfg: MaxOpenPositions):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        count = len(st.positions)
        if count > self.cfg.count:
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"{count} positions open after {ev.position}; at most {self.cfg.count}",
                value=Decimal(count),
                threshold=Decimal(self.cfg.count),
                comparator="above",
                position=ev.position,
            )


class MaxTradesPerDayRule(CompiledRule):
    kind = "max_trades_per_day"

    def __init__(self, cfg: MaxTradesPerDay):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        if st.trades_today > self.cfg.count:
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"{st.trades_today} trades opened on trading day {st.trading_day}; at most {self.cfg.count}",
                value=Decimal(st.trades_today),
                threshold=Decimal(self.cfg.count),
                comparator="above",
                position=ev.position,
            )


class StopLossRequiredRule(CompiledRule):
    kind = "stop_loss_required"

    def __init__(self, cfg: StopLossRequired):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        if ev.sl is None:
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"position {ev.position} ({ev.symbol} {ev.side} {_lots(ev.lots)} lots) was opened without a stop loss",
                position=ev.position,
                symbol=ev.symbol,
            )


class HedgingRule(CompiledRule):
    kind = "hedging"

    def __init__(self, cfg: Hedging):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        opposite = sorted(
            pid
            for pid, p in st.positions.items()
            if pid != ev.position and p.symbol == ev.symbol and p.side != ev.side
        )
        if opposite:
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"position {ev.position} ({ev.side} {ev.symbol}) hedges open position(s) {', '.join(opposite)} "
                "in the same account",
                position=ev.position,
                symbol=ev.symbol,
                against=opposite,
            )


class LotEscalationRule(CompiledRule):
    kind = "lot_escalation"

    def __init__(self, cfg: LotEscalation):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        previous = st.last_loss_lots
        if previous is not None and ev.lots >= previous * self.cfg.factor:
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"position {ev.position} opened {_lots(ev.lots)} lots right after a losing position of "
                f"{_lots(previous)} lots (≥ {_lots(self.cfg.factor)}× is lot escalation after a loss)",
                value=ev.lots,
                threshold=previous * self.cfg.factor,
                comparator="at_or_above",
                position=ev.position,
                losing_lots=previous,
            )

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None:
        if pos.lots > 0:
            return
        st.last_loss_lots = pos.opened_lots if pos.realised < 0 else None
