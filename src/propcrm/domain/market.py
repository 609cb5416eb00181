"""Market-wide reference data the rules read: the news calendar and the last reference prices.

It is built from the same event stream (``news`` and ``price`` events) as the account states, so a
replay rebuilds it exactly; nothing here reads a clock or a file.
"""

from __future__ import annotations

import bisect
import datetime as dt
from decimal import Decimal

import msgspec

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


class Market(msgspec.Struct):
    news: list[NewsEntry] = []
    news_times: list[dt.datetime] = []
    news_keys: set[tuple] = set()
    prices: dict[str, tuple[dt.datetime, Decimal, Decimal]] = {}

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
