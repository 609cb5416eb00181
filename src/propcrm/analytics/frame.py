"""Trade history as columns: one row per position (its open and all its closes), plus sessions, quotes, news.

The detectors work on these numpy columns, never on Python objects per trade, so 5 million positions fit
the time budget. Timestamps are int64 milliseconds since the epoch (UTC). Lots and prices are float64
*for the statistics* (similarity, ratios, gaps); the exact decimal text of every open is kept beside
them when the frame is built from events, and realised P/L is exact in integer units of 1e-8 of the
account currency (the database's NUMERIC scale), so evidence shows the trader's own numbers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from ..domain.events import News, Price, Session, TradeClosed, TradeOpened

UTC = dt.timezone.utc
E8 = 10**8
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def unique(values: np.ndarray, *, counts: bool = False):
    """Sorted distinct values (and how often each occurs) by one sort: faster here than ``np.unique``,
    whose hash-based path is slow for tens of millions of int64 keys."""
    ordered = np.sort(np.asarray(values))  # equal values are equal: no need for a stable sort (1.5x faster)
    if not ordered.size:
        return (ordered, np.zeros(0, np.int64)) if counts else ordered
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if not counts:
        return ordered[starts]
    return ordered[starts], np.diff(np.r_[starts, ordered.size])


def to_ms(ts: dt.datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=int(ms))


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds only when they are not zero."""
    ms = int(ms)
    text = str(np.datetime64(ms - ms % 1000, "ms"))[:19]
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def money_e8(value: Decimal) -> int:
    return int((value * E8).to_integral_value(ROUND_HALF_EVEN))


def money_text(units: int) -> str:
    """Exact text of integer 1e-8 units, at least two decimals (fast: integers only)."""
    units = int(units)
    whole, frac = divmod(abs(units), E8)
    digits = f"{frac:08d}".rstrip("0")
    return f"{'-' if units < 0 else ''}{whole}.{digits.ljust(2, '0')}"


def network_of(ip: str) -> str:
    """The address accounts are linked by: an IPv4 address exactly, an IPv6 address by its /64 network."""
    text = ip.strip()
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.lower()  # not an address (a platform's masked value): compared as text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@dataclass
class TradeFrame:
    """Positions of many accounts as parallel columns (row i is one position)."""

    accounts: list[str]  # account index -> external id
    symbols: list[str]  # symbol index -> name
    acc: np.ndarray  # int32
    sym: np.ndarray  # int32
    side: np.ndarray  # int8, +1 buy / -1 sell
    lots: np.ndarray  # float64, lots opened
    open_ms: np.ndarray  # int64
    order_ms: np.ndarray  # int64, the order's time (open time when the platform did not send it)
    open_price: np.ndarray  # float64
    close_ms: np.ndarray  # int64, time of the last close; -1 while open
    close_price: np.ndarray  # float64, lots-weighted over the closes; nan while open
    closed_lots: np.ndarray  # float64
    profit_e8: np.ndarray  # int64, realised profit + commission + swap of all closes, 1e-8 units
    closes: np.ndarray  # int32, how many close events (partial closes > 1)
    position: list[str] | None = None  # position ids (None in generated benchmark frames)
    close_detail: dict[int, list[dict]] = field(default_factory=dict)  # row -> each close as sent (from events)
    lots_text: list[str] | None = None
    price_text: list[str] | None = None
    # sessions (logins and the ip/device of opens): account index, time, network, device
    session_acc: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    session_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    session_ip: list[str] = field(default_factory=list)
    session_device: list[str] = field(default_factory=list)
    # reference quotes, sorted by (symbol, time)
    quote_sym: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    quote_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    quote_bid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quote_ask: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # high-impact news: time and the symbol indexes affected
    news_ms: list[int] = field(default_factory=list)
    news_symbols: list[frozenset[int]] = field(default_factory=list)
    news_titles: list[str] = field(default_factory=list)
    # CRM: account index -> trader id / payment fingerprints (optional)
    trader_of: dict[int, str] = field(default_factory=dict)
    payments_of: dict[int, list[str]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.acc.size)

    def account_time_order(self) -> np.ndarray:
        """Rows sorted by (account, open time); computed once per frame (several features need it)."""
        cached = self.__dict__.get("_account_time_order")
        if cached is None or cached.size != self.n:
            cached = np.lexsort((self.open_ms, self.acc))
            self.__dict__["_account_time_order"] = cached
        return cached

    def lots_of(self, i: int) -> str:
        return self.lots_text[i] if self.lots_text is not None else _float_text(self.lots[i])

    def open_price_of(self, i: int) -> str:
        return self.price_text[i] if self.price_text is not None else _float_text(self.open_price[i])

    def position_of(self, i: int) -> str:
        return self.position[i] if self.position is not None else f"#{i}"

    def trade_evidence(self, i: int) -> dict:
        """One position as a trader would recognise it: ids, times, sizes, prices, realised result."""
        i = int(i)
        cache = self.__dict__.setdefault("_evidence", {})
        found = cache.get(i)
        if found is None:
            self.prefetch([i])
            found = cache[i]
        return dict(found)

    def prefetch(self, rows) -> None:
        """Build the evidence of many positions at once (times formatted in one vectorised call)."""
        cache = self.__dict__.setdefault("_evidence", {})
        wanted = np.unique(np.fromiter((int(r) for r in rows if int(r) not in cache), np.int64))
        if not wanted.size:
            return
        stamps = np.concatenate([self.open_ms[wanted], self.order_ms[wanted], np.maximum(self.close_ms[wanted], 0)])
        text = np.datetime_as_string(stamps.astype("datetime64[ms]"), unit="ms").tolist()
        k = wanted.size
        for n, i in enumerate(wanted.tolist()):
            opened, order, closed = (_rfc3339(text[n]), _rfc3339(text[k + n]), _rfc3339(text[2 * k + n]))
            out = {"account": self.accounts[self.acc[i]], "position": self.position_of(i),
                   "symbol": self.symbols[self.sym[i]], "side": "buy" if self.side[i] > 0 else "sell",
                   "lots": self.lots_of(i), "opened_at": opened, "open_price": self.open_price_of(i)}
            if self.order_ms[i] != self.open_ms[i]:
                out["order_at"] = order
            if self.close_ms[i] >= 0:
                out["closed_at"] = closed
                detail = self.close_detail.get(i)
                out["closed_lots"] = _closed_lots(detail) if detail else _float_text(self.closed_lots[i])
                out["net_profit"] = money_text(self.profit_e8[i])  # profit + commission + swap, all closes
                if self.closes[i] > 1:
                    weighted = _weighted_price(detail) if detail else f"{self.close_price[i]:.6g}"
                    out["close_price"] = f"{weighted} (lots-weighted)"
                    out["closes"] = detail or int(self.closes[i])
                else:
                    out["close_price"] = detail[0]["price"] if detail else _float_text(self.close_price[i])
            cache[i] = out


def _rfc3339(text: str) -> str:
    return (text[:-4] if text.endswith(".000") else text) + "Z"


def _closed_lots(closes: list[dict]) -> str:
    """The lots of the closes as sent, summed exactly (0.1 + 0.1 + 0.1 is 0.3)."""
    total = sum((Decimal(c["lots"]) for c in closes), Decimal(0))
    return "0" if total == 0 else format(total.normalize(), "f")


def _weighted_price(closes: list[dict]) -> str:
    """The lots-weighted close price in decimals, at the precision of the finest price sent."""
    lots = [Decimal(c["lots"]) for c in closes]
    prices = [Decimal(c["price"]) for c in closes]
    total = sum(lots, Decimal(0))
    if total == 0:
        return "n/a"
    step = Decimal(1).scaleb(min(p.as_tuple().exponent for p in prices))
    return str((sum((q * p for q, p in zip(lots, prices)), Decimal(0)) / total).quantize(step, ROUND_HALF_EVEN))


def _float_text(value: float) -> str:
    """A float from decimal text back to that text (shortest round-trip repr), for evidence."""
    if value != value:
        return "n/a"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class FrameBuilder:
    """Collects decoded events (in any order) into a :class:`TradeFrame`."""

    def __init__(self) -> None:
        self._acc: dict[str, int] = {}
        self._sym: dict[str, int] = {}
        self._pos: dict[tuple[int, str], int] = {}
        self._rows: list[list] = []  # acc, sym, side, lots, open_ms, order_ms, open_price, position, lots_t, price_t
        self._close: dict[int, list] = {}  # row -> [last_ms, lots, price*lots, profit_e8, count]
        self._orphan_closes: list[TradeClosed] = []
        self._sessions: list[tuple[int, int, str, str]] = []
        self._quotes: list[tuple[int, int, float, float]] = []
        self._news: list[News] = []

    def account(self, name: str) -> int:
        index = self._acc.get(name)
        if index is None:
            index = self._acc[name] = len(self._acc)
        return index

    def symbol(self, name: str) -> int:
        index = self._sym.get(name)
        if index is None:
            index = self._sym[name] = len(self._sym)
        return index

    def login(self, account: str, ms: int, network: str, device: str) -> FrameBuilder:
        """A login (or an open's ip/device) already reduced to its network (:func:`network_of`): the
        projection keeps them so (``account_activity``)."""
        self._sessions.append((self.account(account), ms, network, device))
        return self

    def add(self, events: Iterable) -> FrameBuilder:
        for event in events:
            kind = type(event)
            if kind is TradeOpened:
                a = self.account(event.account)
                ms = to_ms(event.ts)
                row = len(self._rows)
                self._pos[(a, event.position)] = row
                self._rows.append([a, self.symbol(event.symbol), 1 if event.side == "buy" else -1, float(event.lots), ms,
                                   to_ms(event.order_ts) if event.order_ts is not None else ms, float(event.price),
                                   event.position, str(event.lots), str(event.price)])
                if event.ip or event.device:
                    self._sessions.append((a, ms, network_of(event.ip) if event.ip else "", event.device or ""))
            elif kind is TradeClosed:
                self._orphan_closes.append(event)
            elif kind is Session:
                self._sessions.append((self.account(event.account), to_ms(event.ts), network_of(event.ip), event.device))
            elif kind is Price:
                self._quotes.append((self.symbol(event.symbol), to_ms(event.ts), float(event.bid), float(event.ask)))
            elif kind is News:
                self._news.append(event)
        return self

    def build(self) -> TradeFrame:
        n = len(self._rows)
        close_ms = np.full(n, -1, np.int64)
        close_value = np.zeros(n)
        closed_lots = np.zeros(n)
        profit = np.zeros(n, np.int64)
        closes = np.zeros(n, np.int32)
        detail: dict[int, list[dict]] = {}
        for event in self._orphan_closes:  # closes after the opens, whatever order they came in
            row = self._pos.get((self._acc.get(event.account, -1), event.position))
            if row is None:
                continue  # a close of a position opened before the history starts: nothing to compare
            lots = float(event.lots)
            close_ms[row] = max(close_ms[row], to_ms(event.ts))
            close_value[row] += lots * float(event.price)
            closed_lots[row] += lots
            profit[row] += money_e8(event.net)
            closes[row] += 1
            detail.setdefault(row, []).append({"at": iso(to_ms(event.ts)), "lots": str(event.lots),
                                               "price": str(event.price), "profit": str(event.profit),
                                               "commission": str(event.commission), "swap": str(event.swap)})
        detail = {row: sorted(items, key=lambda c: c["at"]) for row, items in detail.items()}
        columns = list(zip(*self._rows)) if n else [()] * 10
        symbols = list(self._sym)
        news_ms, news_symbols, news_titles = [], [], []
        for item in sorted(self._news, key=lambda e: (e.ts, e.title)):
            if item.impact != "high":
                continue
            if item.symbols:
                affected = frozenset(self._sym[s] for s in item.symbols if s in self._sym)
            else:
                currency = (item.currency or "").upper()
                affected = frozenset(i for s, i in self._sym.items() if currency and currency in (s[:3], s[3:6]))
            news_ms.append(to_ms(item.ts))
            news_symbols.append(affected)
            news_titles.append(item.title)
        quotes = sorted(self._quotes)
        sessions = self._sessions
        with np.errstate(invalid="ignore", divide="ignore"):
            close_price = np.where(closed_lots > 0, close_value / np.where(closed_lots > 0, closed_lots, 1), np.nan)
        return TradeFrame(
            accounts=list(self._acc), symbols=symbols,
            acc=np.asarray(columns[0], np.int32), sym=np.asarray(columns[1], np.int32),
            side=np.asarray(columns[2], np.int8), lots=np.asarray(columns[3], np.float64),
            open_ms=np.asarray(columns[4], np.int64), order_ms=np.asarray(columns[5], np.int64),
            open_price=np.asarray(columns[6], np.float64), close_ms=close_ms, close_price=close_price,
            closed_lots=closed_lots, profit_e8=profit, closes=closes,
            position=list(columns[7]), close_detail=detail, lots_text=list(columns[8]), price_text=list(columns[9]),
            session_acc=np.asarray([s[0] for s in sessions], np.int32),
            session_ms=np.asarray([s[1] for s in sessions], np.int64),
            session_ip=[s[2] for s in sessions], session_device=[s[3] for s in sessions],
            quote_sym=np.asarray([q[0] for q in quotes], np.int32), quote_ms=np.asarray([q[1] for q in quotes], np.int64),
            quote_bid=np.asarray([q[2] for q in quotes], np.float64), quote_ask=np.asarray([q[3] for q in quotes], np.float64),
            news_ms=news_ms, news_symbols=news_symbols, news_titles=news_titles,
        )


def frame_from_events(events: Iterable, *, traders: dict[str, str] | None = None,
                      payments: dict[str, list[str]] | None = None) -> TradeFrame:
    """Decoded events (:mod:`propcrm.domain.events`) → a frame; ``traders``/``payments`` are CRM data by account."""
    builder = FrameBuilder().add(events)
    for name in list(traders or {}) + list(payments or {}):
        builder.account(name)
    frame = builder.build()
    index = {name: i for i, name in enumerate(frame.accounts)}
    frame.trader_of = {index[a]: str(t) for a, t in (traders or {}).items() if t is not None}
    frame.payments_of = {index[a]: [str(p) for p in ps] for a, ps in (payments or {}).items() if ps}
    return frame


__all__ = ["unique", "E8", "FrameBuilder", "TradeFrame", "frame_from_events", "from_ms", "iso", "money_e8", "money_text",
           "network_of", "to_ms"]
