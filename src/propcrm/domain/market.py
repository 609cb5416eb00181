"""Market-wide reference data the rules read: the news calendar and the last reference prices.

It is built from the same event stream (``news`` and ``price`` events) as the account states, so a
replay rebuilds it exactly; nothing here reads a clock or a file.
"""

from __future__ import annotations

import bisect
import datetime as dt
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow

import msgspec

from .events import require_positive  # the event bounds: one definition of a valid decimal

_IMPACT_RANK = {"low": 0, "medium": 1, "high": 2}


class NewsEntry(msgspec.Struct, frozen=True, array_like=True):
    ts: dt.datetime
    title: str
    impact: str
    currency: str | None
    symbols: tuple[str, ...] | None
    event_id: str

    @classmethod
    def from_event(cls, ev) -> NewsEntry:
        """The calendar entry a ``news`` event announces."""
        return cls(
            ts=ev.ts,
            title=ev.title,
            impact=ev.impact,
            currency=ev.currency.upper() if ev.currency else None,
            symbols=tuple(ev.symbols) if ev.symbols else None,
            event_id=ev.id,
        )


def symbol_currencies(symbol: str, overrides: dict[str, list[str]] | None = None) -> frozenset[str]:
    """The currencies a symbol moves with: explicit override, else base and quote of a 6-letter pair."""
    if overrides and symbol in overrides:
        return frozenset(c.upper() for c in overrides[symbol])
    head = symbol[:6].upper()
    if len(head) == 6 and head.isalpha():
        return frozenset((head[:3], head[3:]))
    return frozenset()


# ---------------------------------------------------------------------------------------------- marking
#
# Mark-to-market: what an open position is worth at the last tick of its symbol, in the account's
# currency. Everything is exact but one step: a position's value is the exact rational number
# (close − open) × lots × contract size (or × tick value / tick size) × conversion, rounded once to
# MARK_PLACES decimal places, half to even. Nothing else is rounded; equity moves by the change of the
# rounded values, so a replay gives the same figures to the last place.

#: A position's floating P/L in the account currency is rounded to this many decimal places (half-even).
MARK_PLACES = 8
_MARK_SCALE = 10**MARK_PLACES
_CENT = Decimal("0.01")
_ONE_TO_ONE = (1, 1)
# Products of bounded figures (at most 24 digits each) fit 80 digits: Inexact would be a bug, so it traps.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, Overflow])


class SymbolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of a firm's symbol table: how a price move becomes money.

    The P/L of one lot moved by ``d`` in price is ``d × contract_size`` in ``profit_currency`` — or,
    when ``tick_size`` and ``tick_value`` are given (futures), ``d / tick_size × tick_value``. A profit
    currency other than the account's is converted at the mid price ((bid + ask) / 2) of the pair
    ``PROFITACCOUNT`` (multiplied) or ``ACCOUNTPROFIT`` (divided), e.g. JPY → USD via ``USDJPY``.
    """

    symbol: str
    profit_currency: str
    contract_size: Decimal | None = None
    tick_size: Decimal | None = None
    tick_value: Decimal | None = None
    digits: int | None = None  # informational (platform display), never used to round

    def __post_init__(self) -> None:
        if not self.symbol or len(self.symbol) > 64:
            raise ValueError("`symbol`: must be 1 to 64 characters")
        if len(self.profit_currency) != 3 or not (self.profit_currency.isalpha() and self.profit_currency.isupper()):
            raise ValueError(f"`profit_currency`: must be a 3-letter upper-case currency code, got {self.profit_currency!r}")
        require_positive("contract_size", self.contract_size)
        require_positive("tick_size", self.tick_size)
        require_positive("tick_value", self.tick_value)
        if (self.tick_size is None) != (self.tick_value is None):
            raise ValueError("`tick_size` and `tick_value`: give both or neither")
        if self.contract_size is None and self.tick_size is None:
            raise ValueError("`contract_size`: required unless `tick_size` and `tick_value` are given")
        if self.digits is not None and not 0 <= self.digits <= 8:
            raise ValueError("`digits`: must be between 0 and 8")


class SymbolTable(msgspec.Struct, frozen=True):
    """A firm's symbols by name (``{"symbols": [SymbolSpec, …]}`` on the wire)."""

    symbols: tuple[SymbolSpec, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for spec in self.symbols:
            if spec.symbol in seen:
                raise ValueError(f"`symbols`: {spec.symbol} is listed twice")
            seen.add(spec.symbol)

    def by_symbol(self) -> dict[str, SymbolSpec]:
        return {spec.symbol: spec for spec in self.symbols}


_TABLE_DECODER = msgspec.json.Decoder(SymbolTable)


def parse_symbol_table(raw: bytes | str | list | dict) -> SymbolTable:
    """A symbol table from JSON text, or from already-parsed data (a list of specs, or
    ``{"symbols": [...]}``); raises ValueError naming the entry and the field."""
    if isinstance(raw, (bytes, str)):
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ValueError(f"symbol table: not valid JSON: {exc}") from None
    else:
        data = raw
    if isinstance(data, list):
        data = {"symbols": data}
    try:
        return msgspec.convert(data, SymbolTable, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"symbol table: {exc}") from None


def _round_ratio(num: int, den: int) -> Decimal:
    """num / den rounded half-even to MARK_PLACES places, in integers (exact; den > 0), written with
    no more places than it needs but at least two (−5100 is ``-5100.00``, not ``-5100.00000000``)."""
    q, r = divmod(num * _MARK_SCALE, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    exponent = -MARK_PLACES
    while exponent < -2 and q % 10 == 0:
        q //= 10
        exponent += 1
    return Decimal(q).scaleb(exponent)


class Tick(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The last price of a symbol, and the event that brought it."""

    ts: dt.datetime
    bid: Decimal
    ask: Decimal
    event_id: str = ""

    def describe(self, symbol: str) -> str:
        return f"{symbol} bid {self.bid} / ask {self.ask} at {self.ts.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


class Market(msgspec.Struct):
    news: list[NewsEntry] = []
    news_times: list[dt.datetime] = []
    news_keys: set[tuple] = set()
    prices: dict[str, Tick] = {}
    symbols: dict[str, SymbolSpec] = {}  # the firm's symbol table; without an entry a symbol is not marked

    def canonical(self) -> Market:
        """This market as a snapshot writes it: the same fields, with the news calendar's de-duplication keys in
        a fixed order (by their msgpack bytes) instead of the set's, which follows the process's string hash
        seed — so the same engine snapshots to the same bytes in every process. The copy shares everything
        else and is only for encoding (it decodes back to a set)."""
        ordered = sorted(self.news_keys, key=msgspec.msgpack.encode)
        return msgspec.structs.replace(self, news_keys=ordered)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ marking
    def set_symbols(self, table: SymbolTable | None) -> None:
        self.symbols = table.by_symbol() if table is not None else {}

    def price(self, symbol: str, tick: Tick) -> bool:
        """Record a tick; False (and nothing recorded) when it is older than the symbol's last one."""
        last = self.prices.get(symbol)
        if last is not None and tick.ts < last.ts:
            return False
        self.prices[symbol] = tick
        return True

    def rate(self, profit_currency: str, currency: str) -> tuple[int, int] | None:
        """Profit currency → account currency as an exact ratio (numerator, denominator), from the mid
        price of ``PROFITACCOUNT`` (multiply) or ``ACCOUNTPROFIT`` (divide); None while neither is priced."""
        if profit_currency == currency:
            return _ONE_TO_ONE
        tick = self.prices.get(profit_currency + currency)
        if tick is not None:
            n, d = (tick.bid + tick.ask).as_integer_ratio()
            return n, d * 2
        tick = self.prices.get(currency + profit_currency)
        if tick is not None:
            n, d = (tick.bid + tick.ask).as_integer_ratio()
            return d * 2, n
        return None

    def moves(self, symbol: str, currency: str) -> tuple[str, ...]:
        """The symbols whose ticks move a position in ``symbol`` held in an account in ``currency``:
        the symbol itself and, when its profit currency differs, the two conversion pairs."""
        spec = self.symbols.get(symbol)
        if spec is None:
            return ()
        profit = spec.profit_currency
        if profit == currency:
            return (symbol,)
        return (symbol, profit + currency, currency + profit)

    def mark(self, symbol: str, side: str, lots: Decimal, open_price: Decimal, currency: str) -> Decimal | None:
        """A position's floating P/L in ``currency`` at the last tick: a buy closes at the bid, a sell
        at the ask. Exact, then rounded half-even to MARK_PLACES places. None when the symbol has no
        spec or no price yet, or its profit currency cannot be converted yet."""
        spec = self.symbols.get(symbol)
        tick = self.prices.get(symbol)
        if spec is None or tick is None:
            return None
        rate = self.rate(spec.profit_currency, currency)
        if rate is None:
            return None
        diff = tick.bid - open_price if side == "buy" else open_price - tick.ask  # exact: bounded operands
        if rate is _ONE_TO_ONE and spec.tick_size is None:
            # the common case, in Decimal: a product of bounded operands is exact in 80 digits
            value = _EXACT.multiply(_EXACT.multiply(diff, lots), spec.contract_size)
            try:
                return value.quantize(_CENT, context=_EXACT)  # to the cent when that is exact (the usual case)
            except Inexact:
                n, d = value.as_integer_ratio()
                return _round_ratio(n, d)
        dn, dd = diff.as_integer_ratio()
        ln, ld = lots.as_integer_ratio()
        if spec.tick_size is not None:
            vn, vd = spec.tick_value.as_integer_ratio()  # type: ignore[union-attr]
            sn, sd = spec.tick_size.as_integer_ratio()
            un, ud = vn * sd, vd * sn
        else:
            un, ud = spec.contract_size.as_integer_ratio()  # type: ignore[union-attr]
        return _round_ratio(dn * ln * un * rate[0], dd * ld * ud * rate[1])

    def add_news(self, entry: NewsEntry) -> bool:
        """Add a calendar entry; False if the same entry (time, title, currency, symbols) is known."""
        key = (entry.ts, entry.title, entry.currency, entry.symbols)
        if key in self.news_keys:
            return False
        self.news_keys.add(key)
        index = bisect.bisect_right(self.news_times, entry.ts)
        self.news_times.insert(index, entry.ts)
        self.news.insert(index, entry)
        return True

    def news_around(
        self,
        symbol: str,
        instant: dt.datetime,
        before_s: int,
        after_s: int,
        impacts: frozenset[str],
        overrides: dict[str, list[str]] | None = None,
        since: dt.datetime | None = None,
    ) -> NewsEntry | None:
        """The first news entry whose window [ts − before, ts + after] holds ``instant`` for ``symbol``
        (and ``since`` as well, when given: an opening that must lie in the same window)."""
        if not self.news_times:
            return None
        low = bisect.bisect_left(self.news_times, instant - dt.timedelta(seconds=after_s))
        high = bisect.bisect_right(self.news_times, (since or instant) + dt.timedelta(seconds=before_s))
        currencies: frozenset[str] | None = None
        for entry in self.news[low:high]:
            if entry.impact not in impacts:
                continue
            if entry.symbols:
                if symbol in entry.symbols:
                    return entry
                continue
            if currencies is None:
                currencies = symbol_currencies(symbol, overrides)
            if entry.currency in currencies:
                return entry
        return None

    def affects(self, entry: NewsEntry, symbol: str, overrides: dict[str, list[str]] | None = None) -> bool:
        if entry.symbols:
            return symbol in entry.symbols
        return entry.currency in symbol_currencies(symbol, overrides)

