"""Vector marking: re-value every holder of a symbol at a tick in a few numpy operations.

The exact path (``Engine._price`` → ``PhaseProgram.remark``) values each position in Decimal, account
by account: ~9 µs per re-valued account, far from 2,000 ticks/s over 1,700 holders a tick. This module
screens a tick instead. Every open position that has a mark is a row of its *book* (its symbol and
its account's currency) in integers: lots in units of the book's lot step, the open price in points of
its price step, and the current mark in units of 1e-8 (``MARK_PLACES``). A tick re-computes the rows
of the books it moves exactly in int64 — the same rational value as ``Market.mark``, rounded half to
even at the eighth place the same way — and adds the change to each account's integer equity. Only
the accounts whose equity then leaves their watch band (or whose deadline is due) go through the
exact Decimal path, with their Decimal state settled first; for the others nothing can be decided
(a new intraday peak moves its trailing level in integers, as the exact path does in place), so
their Decimal state is settled lazily — before their next event, a snapshot or a read — exactly from
the integers (the marks' Decimal writing, the equity's exponent and the peak included, so a settled
state is the same bytes as on the exact path).

Whatever cannot be held in int64 safely (a huge position, an unpriced conversion, a price with more
places than the book) is simply left to the exact path: the screen is an optimisation, never a second
set of rules. ``tests/unit/engine/test_vector_marking.py`` holds both paths to identical decisions and
states.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Context, Decimal
from math import gcd
from typing import Any

import msgspec
import numpy as np

from ..domain.market import MARK_PLACES, Market
from ..domain.program import LIVE
from ..domain.state import AccountState

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)
_SCALE = 10**MARK_PLACES
_TOP = 2**62  # every screened integer stays below this in magnitude (int64 holds 2**63 − 1)
_MAX_EQUITY = 2**56  # |equity| in 1e-8 units (~720 million in money) for an account to be screened
_MAX_MARK = 2**55
_MAX_ROWS = 32  # positions per screened account: their marks' sum stays below 2**60
_MAX_PLACES = 8  # events carry at most 8 decimal places (domain.events.MAX_PLACES)
_GROW = 256
_CEILING = Context(prec=60, rounding=ROUND_CEILING)


def to_units(value: Decimal) -> int | None:
    """``value`` in units of 1e-8, or None when it has more places (or is not finite)."""
    if not value.is_finite():
        return None
    scaled = value.scaleb(MARK_PLACES)
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def mark_from_units(q: int) -> Decimal:
    """A mark of ``q`` × 1e-8 written as ``Market.mark`` writes it: no more places than it needs, but two."""
    exponent = -MARK_PLACES
    while exponent < -2 and q % 10 == 0:
        q //= 10
        exponent += 1
    return Decimal(q).scaleb(exponent)


def equity_from_units(units: int, places: int) -> Decimal:
    """``units`` × 1e-8 written with ``places`` decimal places (as the exact path's sums write it)."""
    whole, rest = divmod(units, 10 ** (MARK_PLACES - places))
    if rest:  # cannot happen while the places are tracked right; never lose a digit
        return Decimal(units).scaleb(-MARK_PLACES)
    return Decimal(whole).scaleb(-places)


# the places ``mark_from_units`` writes a mark of q units with, by q mod 10**6: which of 10, 100, …,
# 10**6 divide q depends on that remainder alone (the floor modulo of a negative q included)
_PLACES_BY_REST = np.full(10 ** (MARK_PLACES - 2), MARK_PLACES, np.int8)
for _k in range(1, MARK_PLACES - 1):
    _PLACES_BY_REST[:: 10**_k] -= 1


def mark_places(q: np.ndarray) -> np.ndarray:
    """The places ``mark_from_units`` writes each mark with (2 to 8): one modulo and one look-up
    (it was six modulo passes, a fifth of a screened tick's CPU)."""
    return _PLACES_BY_REST[q % len(_PLACES_BY_REST)]


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _watch(value: Decimal, up: bool) -> int:
    """A band edge in 1e-8 units, rounded so that an integer equity compares to it as the Decimal does
    (floor for ``equity > edge``, ceiling for ``equity < edge``), clamped to ±2**62."""
    if value.is_infinite():
        return _TOP if value > 0 else -_TOP
    scaled = value.scaleb(MARK_PLACES)
    edge = int(scaled)  # towards zero; then up (ceiling) or down (floor) when a fraction was cut off
    if edge != scaled:
        if up:
            if scaled > 0:
                edge += 1
        elif scaled < 0:
            edge -= 1
    return -_TOP if edge < -_TOP else (_TOP if edge > _TOP else edge)


def _alert_units(below: Decimal) -> int:
    """The screen's threshold for an equity ``below`` (rounded up: the screen may only err towards the exact path)."""
    if below.is_infinite():
        return _TOP if below > 0 else -_TOP
    units = int(below.scaleb(MARK_PLACES, _CEILING).to_integral_value(ROUND_CEILING))
    return max(-_TOP, min(_TOP, units))


def _micros(ts: dt.datetime) -> int:
    return (ts - _EPOCH) // _US


class Book:
    """The rows of one (symbol, account currency): one open, marked position a row."""

    def __init__(self, symbol: str, currency: str, market: Market) -> None:
        spec = market.symbols[symbol]
        self.symbol = symbol
        self.currency = currency
        self.profit = spec.profit_currency
        if spec.tick_size is not None:
            vn, vd = spec.tick_value.as_integer_ratio()  # type: ignore[union-attr]
            sn, sd = spec.tick_size.as_integer_ratio()
            self.unit = (vn * sd, vd * sn)
        else:
            self.unit = spec.contract_size.as_integer_ratio()  # type: ignore[union-attr]
        self.moved_by = tuple(dict.fromkeys(market.moves(symbol, currency)))  # USDJPY is its own conversion
        self.price_places = 0  # open prices and ticks in points of 10**-price_places
        self.lot_places = 0
        n = _GROW
        self.acc = np.zeros(n, np.int64)
        self.buy = np.zeros(n, bool)
        self.lots = np.zeros(n, np.int64)
        self.open = np.zeros(n, np.int64)
        self.mark = np.zeros(n, np.int64)  # the current mark (1e-8)
        self.settled = np.zeros(n, np.int64)  # the mark the Decimal state holds
        self.size = 0
        self.free: list[int] = []
        self.max_lots = 0
        self.max_open = 0

    def _grow(self) -> None:
        n = len(self.acc) * 2
        for name in ("acc", "buy", "lots", "open", "mark", "settled"):
            old = getattr(self, name)
            new = np.zeros(n, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _rescale(self, price_places: int, lot_places: int) -> bool:
        """Use finer steps; False when the integers would no longer fit."""
        up_p, up_l = price_places - self.price_places, lot_places - self.lot_places
        if (self.max_open * 10**up_p) >= _TOP or (self.max_lots * 10**up_l) >= _TOP:
            return False
        if up_p:
            self.open *= 10**up_p
            self.max_open *= 10**up_p
            self.price_places = price_places
        if up_l:
            self.lots *= 10**up_l
            self.max_lots *= 10**up_l
            self.lot_places = lot_places
        return True

    def add(self, account: int, side: str, lots: Decimal, price: Decimal, mark: int) -> int | None:
        pp, lp = max(self.price_places, _places(price)), max(self.lot_places, _places(lots))
        if (pp, lp) != (self.price_places, self.lot_places) and not self._rescale(pp, lp):
            return None
        lot_units = int(lots.scaleb(self.lot_places))
        open_points = int(price.scaleb(self.price_places))
        if abs(lot_units) >= _TOP or abs(open_points) >= _TOP:
            return None
        if self.free:
            slot = self.free.pop()
        else:
            if self.size == len(self.acc):
                self._grow()
            slot = self.size
            self.size += 1
        self.acc[slot] = account
        self.buy[slot] = side == "buy"
        self.lots[slot] = lot_units
        self.open[slot] = open_points
        self.mark[slot] = self.settled[slot] = mark
        self.max_lots = max(self.max_lots, abs(lot_units))
        self.max_open = max(self.max_open, abs(open_points))
        return slot

    def remove(self, slot: int) -> None:
        self.lots[slot] = self.open[slot] = self.mark[slot] = self.settled[slot] = 0
        self.free.append(slot)

    def revalue(self, market: Market) -> tuple[np.ndarray, bool] | None:
        """Every row's mark at the current prices (int64, 1e-8), exactly as ``Market.mark``, and whether
        every mark is a whole number of cents; None when it cannot be done safely in int64 (then the
        book's holders take the exact path)."""
        tick = market.prices.get(self.symbol)
        rate = market.rate(self.profit, self.currency)
        if tick is None or rate is None:
            return None
        places = max(self.price_places, _places(tick.bid), _places(tick.ask))
        if places > self.price_places and not self._rescale(places, self.lot_places):
            return None
        bid = int(tick.bid.scaleb(self.price_places))
        ask = int(tick.ask.scaleb(self.price_places))
        # mark = diff_points × lot_units × m / d, rounded half to even
        m = self.unit[0] * rate[0] * _SCALE
        d = self.unit[1] * rate[1] * 10 ** (self.price_places + self.lot_places)
        g = gcd(m, d)
        m, d = m // g, d // g
        mq, mr = divmod(m, d)
        reach = (max(abs(bid), abs(ask)) + self.max_open) * self.max_lots  # bounds |diff × lots|
        if reach * max(mq + 1, d) >= _TOP or d >= _TOP // 4 or reach * m // d >= _MAX_MARK:
            return None
        n = self.size
        open_ = self.open[:n]
        moved = np.where(self.buy[:n], bid - open_, open_ - ask) * self.lots[:n]
        if mr == 0:
            return moved * mq, mq % 10**6 == 0
        whole, rest = np.divmod(moved * mr, d)  # floor division: 0 ≤ rest < d
        q = moved * mq + whole
        twice = rest * 2
        q += (twice > d) | ((twice == d) & (q & 1 == 1))
        return q, False


class Marks:
    """The screened integer state of an engine's accounts (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine  # the engine.runner.Engine it screens for (not imported: runner imports this)
        self.reset()

    def reset(self) -> None:
        self.books: dict[tuple[str, str], Book] = {}
        self.by_symbol: dict[str, list[Book]] = {}  # a tick's symbol → the books it moves
        self.slot: dict[str, int] = {}  # account → its row in the per-account arrays
        self.names: list[str] = []
        self.free: list[int] = []
        n = _GROW
        self.base = np.zeros(n, np.int64)  # equity − Σ marks, as of the last settlement
        self.floating = np.zeros(n, np.int64)  # Σ current marks
        self.low = np.zeros(n, np.int64)
        self.high = np.zeros(n, np.int64)
        self.peak = np.zeros(n, np.int64)
        self.deadline = np.zeros(n, np.int64)
        # the places the exact path's equity would be written with (its sums keep the most places)
        self.places = np.zeros(n, np.int8)
        # an intraday trailing level moved in integers: level = min(peak − amount, cap); low = level + offset
        self.trail = np.zeros(n, bool)
        self.amount = np.zeros(n, np.int64)
        self.cap = np.zeros(n, np.int64)
        self.offset = np.zeros(n, np.int64)
        self.top = np.zeros(n, np.int64)  # the highest equity since the settlement, when it made a new peak
        self.top_places = np.zeros(n, np.int8)
        self.raised = np.zeros(n, bool)
        # near-breach watching (engine/lows.py): an equity at or under ``alert`` goes the exact path (to be
        # measured there), as does a new intraday peak (it moves a level the measure reads)
        self.alert = np.full(n, -_TOP, np.int64)
        self.stamp = np.zeros(n, np.int64)  # scratch: picks each account once from rows (no sort)
        self.pending = np.zeros(n, bool)  # the Decimal state lags the integers
        self.rows: dict[str, list[tuple[Book, int, str]]] = {}
        self.held_positions: dict[str, dict] = {}  # the positions each screened account was read with
        self.loose: dict[str, set[str]] = {}  # symbol → holders left to the exact path
        self.loose_in: dict[str, tuple[str, ...]] = {}
        self.dirty: set[str] = set(self.engine.held)

    # ------------------------------------------------------------------ keeping in step
    def touch(self, account: str) -> None:
        """The exact path is about to read or change ``account``: settle it and re-read it later."""
        if account in self.slot:
            self.settle(account)
        self.dirty.add(account)

    def settle(self, account: str) -> None:
        """Bring the Decimal state of ``account`` to its integer marks (no-op when it is not behind):
        the marks, the equity (with the places the exact path's sums would have given it) and the
        intraday peak the exact path would have recorded at the highest tick."""
        index = self.slot.get(account)
        if index is None or not self.pending.item(index):  # (.item: a Python value, not a numpy scalar)
            return
        self.pending[index] = False
        st = self.engine.states.get(account)
        if st is None:
            return
        positions = None
        for book, slot, key in self.rows[account]:
            q = book.mark.item(slot)
            if q == book.settled.item(slot):
                continue
            book.settled[slot] = q
            if positions is None:
                positions = dict(st.positions)
            positions[key] = msgspec.structs.replace(positions[key], mark=mark_from_units(q))
        if positions is not None:
            st.positions = positions
            self.held_positions[account] = positions
        equity = equity_from_units(self.base.item(index) + self.floating.item(index), self.places.item(index))
        if self.raised.item(index):
            self.raised[index] = False
            st.equity = equity_from_units(self.top.item(index), self.top_places.item(index))
            self.engine.programs[account].raise_peak(st)
        st.equity = equity

    def settle_all(self) -> None:
        for index in np.flatnonzero(self.pending):
            self.settle(self.names[index])

    def _detach(self, account: str) -> None:
        for symbol in self.loose_in.pop(account, ()):
            holders = self.loose.get(symbol)
            if holders is not None:
                holders.discard(account)
        index = self.slot.pop(account, None)
        if index is None:
            return
        self.held_positions.pop(account, None)
        for book, slot, _ in self.rows.pop(account):
            book.remove(slot)
        self.pending[index] = False
        self.raised[index] = False
        self.free.append(index)

    def _attach(self, account: str) -> None:
        engine = self.engine
        held = engine.held.get(account)
        if not held:
            return
        st = engine.states.get(account)
        if st is None or not self._screen(account, st):
            self.loose_in[account] = held
            for symbol in held:
                self.loose.setdefault(symbol, set()).add(account)

    def _screen(self, account: str, st: AccountState) -> bool:
        """Take ``account`` into the books; False (nothing taken) when it must stay on the exact path."""
        if st.status not in LIVE or st.phase_start is None or len(st.positions) > _MAX_ROWS:
            return False
        equity = to_units(st.equity)
        if equity is None or abs(equity) >= _MAX_EQUITY:
            return False
        market = self.engine.market
        currency = self.engine.programs[account].currency
        wanted = []
        for key, pos in st.positions.items():
            if pos.symbol not in market.symbols:
                continue  # no tick moves it
            if pos.mark is None:
                return False  # its first mark is the exact path's
            q = to_units(pos.mark)
            if q is None or abs(q) >= _MAX_MARK:
                return False
            wanted.append((key, pos, q))
        if self.free:
            index = self.free.pop()
            self.names[index] = account
        else:
            index = len(self.names)
            self.names.append(account)
            if index == len(self.base):
                for name in ("base", "floating", "low", "high", "peak", "deadline", "places", "pending",
                             "trail", "amount", "cap", "offset", "top", "top_places", "raised", "stamp", "alert"):
                    old = getattr(self, name)
                    new = np.zeros(len(old) * 2, old.dtype)
                    new[: len(old)] = old
                    setattr(self, name, new)
        rows = []
        floating = 0
        for key, pos, q in wanted:
            book = self.books.get((pos.symbol, currency))
            if book is None:
                book = self.books[(pos.symbol, currency)] = Book(pos.symbol, currency, market)
                for symbol in book.moved_by:
                    self.by_symbol.setdefault(symbol, []).append(book)
            slot = book.add(index, pos.side, pos.lots, pos.price, q)
            if slot is None:
                for b, s, _ in rows:
                    b.remove(s)
                self.free.append(index)
                return False
            rows.append((book, slot, key))
            floating += q
        self.slot[account] = index
        self.rows[account] = rows
        self.held_positions[account] = st.positions
        self.floating[index] = floating
        self._rebase(index, st, equity)
        return True

    def _rebase(self, index: int, st: AccountState, equity: int) -> None:
        self.base[index] = equity - self.floating[index]
        self.low[index] = _watch(st.low_watch, up=False)
        self.high[index] = _watch(st.high_watch, up=True)
        self.peak[index] = _watch(st.peak_watch, up=False)
        self.deadline[index] = _micros(st.next_deadline)
        self.places[index] = _places(st.equity)
        self.pending[index] = False
        self.raised[index] = False
        self.trail[index] = False
        self.alert[index] = _alert_units(self.engine.low_below(st.account, st))
        line = self.engine.programs[st.account].peak_line(st)
        if line is not None:
            amount, cap, offset = (to_units(x) if x is not None else _TOP for x in line)
            if amount is not None and cap is not None and offset is not None and max(amount, offset) < _MAX_EQUITY:
                self.trail[index] = True
                self.amount[index], self.cap[index], self.offset[index] = amount, min(cap, _TOP), offset

    def _catch_up(self) -> None:
        dirty, self.dirty = self.dirty, set()
        states = self.engine.states
        for account in dirty:
            st = states.get(account)
            index = self.slot.get(account)
            if (
                index is not None
                and st is not None
                and st.positions is self.held_positions[account]
                and st.status in LIVE
                and (equity := to_units(st.equity)) is not None
                and abs(equity) < _MAX_EQUITY
            ):
                # the same positions with the same marks (an equity report, a deposit, a new day):
                # only the money outside the positions and the band moved
                self._rebase(index, st, equity)
                continue
            self._detach(account)
            self._attach(account)

    def resync(self, account: str) -> None:
        """The exact path has just evaluated a tick for ``account``: when it only re-marked positions the
        screen holds (the same positions, lots and prices, new marks) and the account stays screenable,
        take its new marks and band into its existing rows instead of rebuilding them at the next tick
        (``_catch_up``: detach, attach, a new row per position). Else it stays dirty for ``_catch_up``.

        Cheaper by ~20 µs a band leaver; the rows end exactly as a rebuild would leave them (the same
        integers; only the rows' slots in their books may differ, which nothing reads in order) —
        ``tests/unit/engine/test_vector_marking.py`` holds both to the same rows."""
        index = self.slot.get(account)
        if index is None or account not in self.dirty:
            return
        st = self.engine.states.get(account)
        if st is None or st.status not in LIVE or st.phase_start is None:
            return
        positions = st.positions
        held = self.held_positions[account]
        rows = self.rows[account]
        if positions is not held:
            if len(positions) != len(held):
                return
            marks = []
            for book, slot, key in rows:
                pos, was = positions.get(key), held[key]
                if pos is None or pos.mark is None or (pos is not was and (
                        pos.lots != was.lots or pos.price != was.price or pos.side != was.side or pos.symbol != was.symbol)):
                    return
                q = to_units(pos.mark)
                if q is None or abs(q) >= _MAX_MARK:
                    return
                marks.append(q)
            for key, pos in positions.items():  # the positions no tick moves must be the very same
                if pos.symbol not in self.engine.market.symbols and held.get(key) is not pos:
                    return
        else:
            marks = [int(book.settled[slot]) for book, slot, _ in rows]
        equity = to_units(st.equity)
        if equity is None or abs(equity) >= _MAX_EQUITY:
            return
        floating = 0
        for (book, slot, _), q in zip(rows, marks):
            book.mark[slot] = book.settled[slot] = q
            floating += q
        self.floating[index] = floating
        self.held_positions[account] = positions
        self._rebase(index, st, equity)
        self.dirty.discard(account)

    # ------------------------------------------------------------------ a tick
    def tick(self, symbol: str, ts: dt.datetime) -> list[str]:
        """Re-value the screened holders of ``symbol`` (its tick is already in the market) and take in
        the marks of those that stay inside their band; returns, sorted, the holders the exact path
        must take: those that leave their band and those the screen does not hold."""
        if self.dirty:
            self._catch_up()
        exact: set[str] = set(self.loose.get(symbol, ()))
        books = self.by_symbol.get(symbol)
        if not books:
            return sorted(exact)
        market = self.engine.market
        floating = self.floating
        moved = []
        failed: list[np.ndarray] = []
        for book in books:
            if not book.size:
                continue
            valued = book.revalue(market)
            if valued is None:  # not safely in int64: every holder of the book takes the exact path
                live = book.lots[: book.size] != 0
                failed.append(book.acc[: book.size][live])
                continue
            q, cents = valued
            changed = np.flatnonzero(q != book.mark[: book.size])
            if not len(changed):
                continue
            q = q[changed]
            accounts = book.acc[changed]
            change = q - book.mark[changed]
            np.add.at(floating, accounts, change)  # undone below for the accounts leaving their band
            moved.append((book, changed, q, accounts, change, cents))
        gone = np.unique(np.concatenate(failed)) if failed else None
        if gone is not None:
            exact.update(self.names[i] for i in gone)
        if not moved:
            return sorted(exact)
        now = _micros(ts)
        watching = self.engine.lows is not None
        verdicts = []
        for book, changed, q, accounts, change, cents in moved:  # every change is in before any test
            equity = self.base[accounts] + floating[accounts]
            inside = (
                (self.low[accounts] < equity)
                & (equity < self.high[accounts])
                & (now < self.deadline[accounts])
            )
            if gone is not None:
                inside &= ~np.isin(accounts, gone)
            if watching:
                inside &= (equity > self.alert[accounts]) & (equity <= self.peak[accounts])
            verdicts.append(inside)
        kept = []
        for (book, changed, q, accounts, change, cents), inside in zip(moved, verdicts):
            if not inside.all():
                out = ~inside
                np.subtract.at(floating, accounts[out], change[out])
                exact.update(self.names[i] for i in np.unique(accounts[out]))
                changed, q, accounts = changed[inside], q[inside], accounts[inside]
            if not len(changed):
                continue
            # the exact path's equity keeps the most places of every mark it added or took out — the old
            # mark's too: a whole-cent tick can take out a mark of more places (a tick quoted to an extra
            # place before the account's state was re-read), so "cents" alone does not bound them
            np.maximum.at(self.places, accounts, np.maximum(mark_places(q), mark_places(book.mark[changed])))
            book.mark[changed] = q
            self.pending[accounts] = True
            kept.append(accounts)
        if kept:
            rows = np.concatenate(kept) if len(kept) > 1 else kept[0]
            order = np.arange(len(rows))
            self.stamp[rows] = order  # the last row of each account wins: one row per account
            kept_all = rows[self.stamp[rows] == order]
            self.engine.stats.marked += len(kept_all)  # re-valued in the screen, each account once
            equity = self.base[kept_all] + floating[kept_all]
            high = equity > self.peak[kept_all]
            if high.any():
                self._new_peaks(kept_all[high], equity[high])
        return sorted(exact)

    def _new_peaks(self, accounts: np.ndarray, equity: np.ndarray) -> None:
        """Equity inside the band made a new intraday peak: move the trailing level as the exact path
        does in place (``PhaseProgram.raise_peak``) — in integers where the rule's line is known (the
        Decimal peak is recorded at settlement), else on the settled Decimal state."""
        trail = self.trail[accounts]
        if trail.any():
            a, e = accounts[trail], equity[trail]
            self.top[a] = e
            self.top_places[a] = self.places[a]
            self.raised[a] = True
            cap = self.cap[a]
            level = np.minimum(e - self.amount[a], cap)
            self.low[a] = np.maximum(self.low[a], level + self.offset[a])
            self.peak[a] = np.where(level >= cap, _TOP, e)
        if not trail.all():
            states, programs = self.engine.states, self.engine.programs
            for index in accounts[~trail].tolist():
                account = self.names[index]
                self.settle(account)
                st = states[account]
                programs[account].raise_peak(st)
                self.low[index] = _watch(st.low_watch, up=False)
                self.peak[index] = _watch(st.peak_watch, up=False)
