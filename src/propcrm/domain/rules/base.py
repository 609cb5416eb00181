"""What every compiled rule shares: the hooks the evaluator calls and the context it passes.

A compiled rule is built once per pack phase from its configuration (amounts resolved to money,
timezones loaded) and then called only through the hooks it implements; the phase program keeps a
list per hook, so an event never visits a rule that has nothing to say about it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..decisions import Decision
from ..money import fmt

if TYPE_CHECKING:  # pragma: no cover
    from ..events import TradeClosed, TradeOpened
    from ..market import Market, Tick
    from ..state import AccountState, Position


# The last tick described and its text: a tick that takes many accounts out of their band names itself in
# each of their decisions, and writing it (its prices, its time in UTC) is the dearest part of a decision.
# One immutable tuple, replaced whole: engines in several threads each read a consistent one.
_DESCRIBED: tuple = (None, None, "")


class Ctx:
    """One event's evaluation: the event, the market, and the decisions taken so far."""

    __slots__ = ("event_id", "ts", "market", "decisions", "breached", "tick")

    def __init__(self, event_id: str, ts: dt.datetime, market: Market, tick: tuple[str, Tick] | None = None) -> None:
        self.event_id = event_id
        self.ts = ts
        self.market = market
        self.decisions: list[Decision] = []
        self.breached = False
        self.tick = tick  # (symbol, tick) when a price tick is being evaluated: every decision names it

    def decide(
        self,
        st: AccountState,
        kind: str,
        rule: str,
        message: str,
        *,
        value: Decimal | None = None,
        threshold: Decimal | None = None,
        comparator: str | None = None,
        **details: Any,
    ) -> None:
        if self.tick is not None:
            symbol, tick = self.tick
            global _DESCRIBED
            last = _DESCRIBED
            if last[1] is not tick or last[0] != symbol:  # (the tick is held here: its id cannot be reused)
                last = _DESCRIBED = (symbol, tick, tick.describe(symbol))
            message = f"{message} (at the tick {last[2]})"
            details["tick"] = {"symbol": symbol, "bid": tick.bid, "ask": tick.ask, "ts": tick.ts}
        self.decisions.append(
            Decision(
                account=st.account,
                event_id=self.event_id,
                ts=self.ts,
                kind=kind,  # type: ignore[arg-type]
                rule=rule,
                phase=st.phase,
                message=message,
                value=value,
                threshold=threshold,
                comparator=comparator,
                details={k: v for k, v in details.items() if v is not None},
            )
        )

    def breach(self, st: AccountState, rule: str, message: str, **kw: Any) -> None:
        """A hard breach: the account fails and accepts no further evaluation. One per event: the first
        rule to fail the account is the breach; later ones in the same event are not reported."""
        if self.breached:
            return
        self.decide(st, "breach", rule, message, **kw)
        st.status = "breached"
        self.breached = True

    def offence(self, st: AccountState, rule: str, action: str, message: str, **kw: Any) -> None:
        """A rule's configured consequence: ``breach`` fails the account, ``violation`` is recorded."""
        if action == "breach":
            self.breach(st, rule, message, **kw)
        else:
            self.decide(st, "violation", rule, message, **kw)

    def finish(self) -> list[Decision]:
        """The event's decisions in their deterministic order; a breach supersedes pause, warning and pass."""
        decisions = self.decisions
        if self.breached and len(decisions) > 1:
            decisions = [d for d in decisions if d.kind in ("breach", "violation")]
        if len(decisions) > 1:
            decisions.sort(key=Decision.sort_key)
        return decisions


class CompiledRule:
    """Base: a rule implements only the hooks it needs (the program checks which are overridden)."""

    kind = "rule"
    rule_id: str

    def on_phase_start(self, st: AccountState) -> None: ...

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None: ...

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None: ...

    def on_day_end(self, st: AccountState, ctx: Ctx) -> None: ...

    def on_day_start(self, st: AccountState, ctx: Ctx) -> None: ...

    def on_balance(self, st: AccountState, ctx: Ctx) -> None: ...

    def on_equity(self, st: AccountState, ctx: Ctx) -> None: ...

    def check(self, st: AccountState, ctx: Ctx) -> None: ...

    def watch(self, st: AccountState) -> tuple[Decimal | None, Decimal | None]:
        return None, None

    def deadline(self, st: AccountState) -> dt.datetime | None:
        return None

    def on_deadline(self, st: AccountState, when: dt.datetime, ctx: Ctx) -> None: ...

    def blocker(self, st: AccountState) -> tuple[str, dict[str, Any]] | None:
        return None


def money(value: Decimal) -> str:
    return fmt(value)


def describe_time(instant: dt.datetime, tz: Any) -> str:
    local = instant.astimezone(tz)
    return f"{local:%a %Y-%m-%d %H:%M} {tz.key if hasattr(tz, 'key') else tz}"
