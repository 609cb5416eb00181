"""Hypothesis strategies: plausible multi-account trading histories (GUIDE §2 events)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import strategies as st

from propcrm.domain.events import Balance, Clock, Equity, News, TradeClosed, TradeOpened

UTC = dt.timezone.utc
# Friday before the EU DST change (2026-03-29) and the US one two weeks earlier is also near.
START = dt.datetime(2026, 3, 26, 18, 0, tzinfo=UTC)
SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD", "US30"]


def cents(n: int) -> Decimal:
    return Decimal(n).scaleb(-2)


# The strategies a history is drawn from, built once: hypothesis keeps a strategy's validation and label on the
# object, so a fresh ``sampled_from([...])`` per draw pays them again for every event of every example (about
# half of the generation time). Same elements in the same order, so the same histories as building them in place.
GAPS = st.sampled_from([0, 1, 30, 59, 60, 300, 3600, 4 * 3600, 11 * 3600, 26 * 3600])
KINDS = st.sampled_from(["equity"] * 5 + ["open", "open", "close", "close", "balance", "clock", "news"])
FLOATING, PROFITS, COMMISSIONS = st.integers(-900_000, 400_000), st.integers(-700_000, 900_000), st.integers(0, 1000)
AMOUNTS, NEWS_SHIFT = st.integers(-50_000, 50_000), st.integers(-300, 300)
SIZES = st.sampled_from([Decimal("0.1"), Decimal("1"), Decimal("2"), Decimal("5"), Decimal("25")])
SYMBOL = st.sampled_from(SYMBOLS)
SIDE = st.sampled_from(["buy", "sell"])
STOP = st.sampled_from([None, Decimal("1.07")])
CURRENCY = st.sampled_from(["USD", "EUR"])
_WHO: dict[int, st.SearchStrategy[str]] = {}


def _who(count: int) -> st.SearchStrategy[str]:
    if count not in _WHO:
        _WHO[count] = st.sampled_from([f"A{i}" for i in range(count)])
    return _WHO[count]


@st.composite
def histories(draw, max_events: int = 80, accounts: int = 3):
    names = [f"A{i}" for i in range(draw(st.integers(1, accounts)))]
    who = _who(len(names))
    balance = {a: Decimal("100000") for a in names}
    positions: dict[str, dict[str, Decimal]] = {a: {} for a in names}
    serial = 0
    t = START
    events = []
    for _ in range(draw(st.integers(1, max_events))):
        t += dt.timedelta(seconds=draw(GAPS))
        account = draw(who)
        kind = draw(KINDS)
        serial += 1
        eid = f"e{serial}"
        if kind == "equity":
            floating = cents(draw(FLOATING)) if positions[account] else Decimal(0)
            events.append(Equity(id=eid, ts=t, account=account, equity=balance[account] + floating, balance=balance[account]))
        elif kind == "open":
            pid = f"p{serial}"
            lots = draw(SIZES)
            positions[account][pid] = lots
            events.append(
                TradeOpened(
                    id=eid,
                    ts=t,
                    account=account,
                    position=pid,
                    symbol=draw(SYMBOL),
                    side=draw(SIDE),
                    lots=lots,
                    price=Decimal("1.08512"),
                    sl=draw(STOP),
                )
            )
        elif kind == "close" and positions[account]:
            pid = draw(st.sampled_from(sorted(positions[account])))
            held = positions[account][pid]
            half = (held / 2).quantize(Decimal("0.01"))  # a platform's lot step: halving 0.1 again and again ends
            lots = draw(st.sampled_from([held, half] if half > 0 else [held]))  # at 0.01, as events allow
            if lots >= held:
                del positions[account][pid]
            else:
                positions[account][pid] = held - lots
            profit = cents(draw(PROFITS))
            commission = cents(-draw(COMMISSIONS))
            balance[account] += profit + commission
            events.append(
                TradeClosed(
                    id=eid, ts=t, account=account, position=pid, lots=lots, price=Decimal("1.08"),
                    profit=profit, commission=commission,
                )
            )
        elif kind == "balance":
            amount = cents(draw(AMOUNTS))
            balance[account] += amount
            events.append(Balance(id=eid, ts=t, account=account, amount=amount, reason="adjustment"))
        elif kind == "clock":
            events.append(Clock(id=eid, ts=t))
        elif kind == "news":
            shift = dt.timedelta(seconds=draw(NEWS_SHIFT))
            events.append(
                News(id=eid, ts=t + shift, title="CPI", impact="high", currency=draw(CURRENCY))
            )
    return events
