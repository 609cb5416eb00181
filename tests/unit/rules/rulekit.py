"""Helpers for the rule tests, imported by the test modules as ``rulekit``.

Small packs written as YAML, and a trader that feeds one account through the public engine.

Every test builds its own pack from a few YAML flow-style rule lines, so the rules under test are
visible in the test itself. Events go through the public engine (``Engine.feed``); ids are generated
so a test only says what happened and when.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from zoneinfo import ZoneInfo

from propcrm.domain.decisions import Decision
from propcrm.domain.events import (
    Balance,
    Clock,
    Equity,
    News,
    TradeClosed,
    TradeOpened,
    decode_event,
)
from propcrm.domain.program import CompiledPack, compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.domain.state import AccountState
from propcrm.engine.runner import Engine

D = Decimal
UTC = dt.timezone.utc


def utc(text: str) -> dt.datetime:
    """``"2026-03-02 14:00"`` or ``"2026-03-02 14:00:30"`` as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, tz: str) -> dt.datetime:
    """A wall-clock time in ``tz`` (aware; converted by the engine as it likes)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def pack_yaml(
    *rules: str,
    timezone: str = "Europe/Prague",
    day_start: str = "00:00",
    initial: str = "100000",
    phases: list[tuple[str, list[str]]] | None = None,
) -> str:
    """A pack with one phase ``phase-1`` holding ``rules`` (YAML flow mappings), or the given phases."""
    phases = phases or [("phase-1", list(rules))]
    lines = [
        "id: test-pack",
        "version: 1",
        "currency: USD",
        f'initial_balance: "{initial}"',
        f"timezone: {timezone}",
        f'day_start: "{day_start}"',
        "phases:",
    ]
    for name, phase_rules in phases:
        lines.append(f"  - name: {name}")
        lines.append("    rules:")
        lines.extend(f"      - {rule}" for rule in phase_rules)
    return "\n".join(lines) + "\n"


def make_pack(*rules: str, **kw) -> CompiledPack:
    return compile_pack(parse_pack(pack_yaml(*rules, **kw)))


class Trader:
    """One account fed through a fresh :class:`Engine`; each call returns that event's decisions."""

    def __init__(self, pack: CompiledPack, account: str = "A1", *, phase: str | None = None, engine: Engine | None = None):
        self.pack = pack
        self.account = account
        self.engine = engine or Engine(pack, phase=phase)
        self._ids = itertools.count(1)
        self.log: list[Decision] = []

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self.account}-{next(self._ids)}"

    def feed(self, *events) -> list[Decision]:
        out = self.engine.feed(list(events))
        self.log.extend(out)
        return out

    @property
    def state(self) -> AccountState:
        return self.engine.states[self.account]

    # ----------------------------------------------------------------- events
    def equity(self, ts: dt.datetime, equity: str | Decimal, balance: str | Decimal | None = None) -> list[Decision]:
        st = self.engine.states.get(self.account)
        if balance is None:
            balance = st.balance if st is not None else self.pack.pack.initial_balance
        return self.feed(
            Equity(id=self._id("e"), ts=ts, account=self.account, equity=D(equity), balance=D(balance))
        )

    def open(
        self,
        ts: dt.datetime,
        position: str,
        *,
        symbol: str = "EURUSD",
        side: str = "buy",
        lots: str = "1",
        price: str = "1.1",
        sl: str | None = "1.09",
    ) -> list[Decision]:
        return self.feed(
            TradeOpened(
                id=self._id("o"),
                ts=ts,
                account=self.account,
                position=position,
                symbol=symbol,
                side=side,  # type: ignore[arg-type]
                lots=D(lots),
                price=D(price),
                sl=D(sl) if sl is not None else None,
            )
        )

    def close(
        self,
        ts: dt.datetime,
        position: str,
        profit: str,
        *,
        lots: str = "1",
        price: str = "1.1",
        commission: str = "0",
        swap: str = "0",
        reason: str | None = None,
    ) -> list[Decision]:
        return self.feed(
            TradeClosed(
                id=self._id("c"),
                ts=ts,
                account=self.account,
                position=position,
                lots=D(lots),
                price=D(price),
                profit=D(profit),
                commission=D(commission),
                swap=D(swap),
                reason=reason,  # type: ignore[arg-type]
            )
        )

    def cash(self, ts: dt.datetime, amount: str, reason: str = "adjustment") -> list[Decision]:
        return self.feed(Balance(id=self._id("b"), ts=ts, account=self.account, amount=D(amount), reason=reason))  # type: ignore[arg-type]

    def clock(self, ts: dt.datetime, *, mine: bool = False) -> list[Decision]:
        return self.feed(Clock(id=self._id("k"), ts=ts, account=self.account if mine else None))

    def news(
        self,
        ts: dt.datetime,
        title: str = "NFP",
        *,
        impact: str = "high",
        currency: str | None = None,
        symbols: list[str] | None = None,
    ) -> list[Decision]:
        return self.feed(
            News(id=self._id("n"), ts=ts, title=title, impact=impact, currency=currency, symbols=symbols)  # type: ignore[arg-type]
        )

    def wire(self, line: str) -> list[Decision]:
        """Feed one NDJSON line exactly as a platform would send it."""
        return self.feed(decode_event(line))


def kinds(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.kind, d.rule) for d in decisions]


def only(decisions: list[Decision], kind: str | None = None, rule: str | None = None) -> Decision:
    """The single decision of that kind/rule (fails loudly if there are none or several)."""
    found = [d for d in decisions if (kind is None or d.kind == kind) and (rule is None or d.rule == rule)]
    assert len(found) == 1, f"expected one {kind}/{rule} decision, got {kinds(decisions)}"
    return found[0]
