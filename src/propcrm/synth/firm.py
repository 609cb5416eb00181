"""A deterministic synthetic prop firm: thousands of traders of different styles on one shared market.

The stream is NDJSON in the wire contract of GUIDE §2 and is meant for tests, demos and benchmarks of
the rule engine and the analytics. What makes it useful is that it is *consistent*: every ``equity``
event's ``balance`` is the initial balance plus every earlier realised close (profit + commission +
swap) and balance event of the account, and its ``equity`` is that balance plus the floating P/L of
the open positions marked at the market's current prices (the same prices the optional ``price``
events carry). Nothing here reads a clock or global random state: the same :class:`FirmSpec` gives
byte-identical output.

How it is built, and why it is fast:

* one random walk per symbol, one price per minute (integer points, i.e. already quantized to the
  symbol's digits), shared by every account; it is the *bid*, the ask is bid + a fixed spread;
* every account first plans its trades (style decides symbols, lots, stops, holding times, and for
  skilled styles a look-ahead on the shared path), with all money in integer cents;
* every account then replays its plan as a generator of ``(ts, line)``, inserting equity snapshots on a
  per-account grid; a driver buckets the lines of all accounts by second, hour by hour, so the output
  is globally sorted without a comparison sort (ties: ``price``, ``clock``, ``news``, then accounts
  in index order, then each account's own order).

Money: P/L per position is rounded to cents half-even (the platform convention), USDJPY P/L is
converted to USD at the closing (or marking) price. Commission is charged on the close, swap on the
close for the rollovers (22:00 UTC, Wednesday triple, none on Friday) the closed lots were held over.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from typing import Iterator

__all__ = ["FirmSpec", "Trader", "STYLES", "traders", "generate", "write_ndjson", "estimate_events"]

#: Trader styles and their share of the accounts in percent (largest-remainder rounding).
STYLES: tuple[tuple[str, int], ...] = (
    ("steady", 35),
    ("scalper", 15),
    ("swing", 15),
    ("gambler", 15),
    ("news", 10),
    ("target_hitter", 10),
)

_DAY = 86_400
_HOUR = 3_600
_OPEN_FROM = 7 * _HOUR  # trading window of the traders, UTC, on weekdays
_OPEN_UNTIL = 21 * _HOUR
_ROLLOVER = 22 * _HOUR
_COMMISSION_PER_LOT_C = 7  # cents per 0.01 lot for a round turn: 3.50 per lot per side
_END = 1 << 62  # "no more events" for an account stream


@dataclass(frozen=True)
class FirmSpec:
    """What firm to make up. Everything else follows from ``seed``."""

    accounts: int = 2000
    days: int = 5  # trading days (Mon–Fri); the time line crosses the weekends in between
    start: dt.date = dt.date(2026, 3, 2)  # a Monday
    seed: int = 7
    initial_balance: Decimal = Decimal("100000")
    equity_every_s: int = 300  # equity snapshot cadence while positions are open (hourly while flat)
    news: bool = True  # emit `news` calendar events
    prices: bool = False  # emit `price` events (one per symbol per open-market minute)
    clock_every_s: int = 3600  # global `clock` cadence (0 = none) besides 00:00:05 and 22:05 daily
    account_prefix: str = "A"


@dataclass
class Trader:
    """One account of the firm and how its owner trades."""

    account: str
    style: str
    index: int = 0
    ip: str = ""
    device: str = ""
    phase: int = 0  # offset (s) of the account's equity-snapshot grid, so accounts do not all tick at once


# ----------------------------------------------------------------------------------------------------
# Instruments


@dataclass(frozen=True)
class _Instrument:
    name: str
    digits: int
    start: int  # points (price × 10**digits)
    sigma: float  # one-minute step of the walk, points, at volatility factor 1
    spread: int  # points
    kind: int  # 0: cents = Δpts·lot_c; 1: cents = Δpts·lot_c/den; 2: quote JPY: cents = Δpts·lot_c·10⁵/mark
    den: int
    swap_long: int  # cents per lot per rollover
    swap_short: int
    sl_min: int  # typical stop distance, points
    sl_max: int
    currencies: frozenset[str]


_INSTRUMENTS: dict[str, _Instrument] = {
    i.name: i
    for i in (
        # 100,000 units a lot, 1e-5 a point: 1 USD per point per lot.
        _Instrument("EURUSD", 5, 108_500, 6.0, 8, 0, 1, -690, 250, 120, 400, frozenset({"EUR", "USD"})),
        _Instrument("GBPUSD", 5, 127_000, 7.5, 12, 0, 1, -420, -80, 150, 500, frozenset({"GBP", "USD"})),
        # 100,000 USD a lot, 0.001 JPY a point: 100 JPY per point per lot, converted at the price.
        _Instrument("USDJPY", 3, 150_000, 8.0, 12, 2, 1, 1250, -2400, 150, 500, frozenset({"USD", "JPY"})),
        # 100 oz a lot, 0.01 USD a point: 1 USD per point per lot.
        _Instrument("XAUUSD", 2, 290_000, 50.0, 30, 0, 1, -4800, 2300, 300, 1200, frozenset({"XAU", "USD"})),
        # index CFD, 1 USD per index point per lot, 0.1 a point: 0.10 USD per point per lot.
        _Instrument("US30", 1, 420_000, 70.0, 20, 1, 10, -1800, -600, 300, 1200, frozenset()),
    )
}
_SYMBOLS = tuple(_INSTRUMENTS)

# Volatility by UTC hour: quiet Asia, busy London open and the New York overlap.
_HOUR_VOL = (0.5, 0.45, 0.45, 0.5, 0.5, 0.55, 0.7, 1.1, 1.3, 1.2, 1.1, 1.0,
             1.1, 1.4, 1.5, 1.3, 1.1, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.45)  # fmt: skip
_NEWS_SPIKE = {"high": (6.0, 4.0, 3.0, 2.0, 1.5, 1.2), "medium": (3.0, 2.0, 1.5), "low": (1.5,)}


def _rdiv(n: int, d: int) -> int:
    """n / d rounded half-even (d > 0) — what Decimal.quantize does by default."""
    q, r = divmod(n, d)
    r2 = r + r
    if r2 > d or (r2 == d and q & 1):
        return q + 1
    return q


def _pl_cents(ins: _Instrument, sign: int, open_pts: int, mark_pts: int, lot_c: int) -> int:
    """P/L in USD cents of ``lot_c`` hundredths of a lot opened at ``open_pts`` and marked at ``mark_pts``."""
    diff = (mark_pts - open_pts) * sign
    if ins.kind == 0:
        return diff * lot_c
    if ins.kind == 1:
        return _rdiv(diff * lot_c, ins.den)
    return _rdiv(diff * lot_c * 100_000, mark_pts)


def _money(cents: int) -> str:
    if cents < 0:
        cents = -cents
        return f"-{cents // 100}.{cents % 100:02d}"
    return f"{cents // 100}.{cents % 100:02d}"


def _lots(lot_c: int) -> str:
    return f"{lot_c // 100}.{lot_c % 100:02d}"


def _price_formatter(digits: int):
    scale = 10**digits

    def fmt(pts: int) -> str:
        q, r = divmod(pts, scale)
        return f"{q}.{r:0{digits}d}"

    return fmt


_PRICE_FMT = {name: _price_formatter(ins.digits) for name, ins in _INSTRUMENTS.items()}

_SOD: list[str] = []


def _seconds_of_day() -> list[str]:
    """'HH:MM:SSZ' for every second of a day, built once (formatting times is the hot path)."""
    if not _SOD:
        _SOD.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(_DAY))
    return _SOD


# ----------------------------------------------------------------------------------------------------
# The market: calendar, news and prices shared by every account


class _Market:
    def __init__(self, spec: FirmSpec) -> None:
        if spec.days < 1:
            raise ValueError("days must be at least 1")
        self.spec = spec
        self.start_weekday = spec.start.weekday()
        trading: list[int] = []
        day = 0
        while len(trading) < spec.days:
            if (self.start_weekday + day) % 7 < 5:
                trading.append(day)
            day += 1
        self.trading_days = trading
        self.trading_set = frozenset(trading)
        self.n_days = trading[-1] + 1  # calendar days on the time line
        self.end = self.n_days * _DAY + 6  # one last clock just after the final midnight
        self.final_close = trading[-1] * _DAY + _OPEN_UNTIL  # everyone is flat by then
        self.day_prefix = [f"{(spec.start + dt.timedelta(days=d)).isoformat()}T" for d in range(self.n_days + 1)]
        self.sod = _seconds_of_day()
        minutes = self.end // 60 + 2
        self.minutes = minutes
        self.open_flag = self._open_flags(minutes)
        self.rollover_weight = [self._rollover_weight(d) for d in range(self.n_days + 1)]
        self.calendar = self._news_calendar()
        self.news = self.calendar if spec.news else []
        self.news_by_day: dict[int, list[tuple]] = {}
        for entry in self.calendar:  # traders know the calendar even when it is not emitted
            self.news_by_day.setdefault(entry[0] // _DAY, []).append(entry)
        self.bid = {name: self._walk(ins) for name, ins in _INSTRUMENTS.items()}

    # -- time
    def weekday(self, day: int) -> int:
        return (self.start_weekday + day) % 7

    def ts(self, t: int) -> str:
        return self.day_prefix[t // _DAY] + self.sod[t % _DAY]

    def ts_ms(self, t_ms: int) -> str:
        t, ms = divmod(t_ms, 1000)
        return f"{self.day_prefix[t // _DAY]}{self.sod[t % _DAY][:-1]}.{ms:03d}Z"

    def _open_flags(self, minutes: int) -> bytearray:
        """Forex hours: Sunday 22:00 to Friday 22:00 UTC."""
        flags = bytearray(minutes)
        for m in range(minutes):
            wd = self.weekday(m // 1440)
            mod = m % 1440
            flags[m] = wd < 4 or (wd == 4 and mod < 1320) or (wd == 6 and mod >= 1320)
        return flags

    def _rollover_weight(self, day: int) -> int:
        wd = self.weekday(day)
        return 3 if wd == 2 else (1 if wd in (0, 1, 3) else 0)

    def rollovers(self, t_open: int, t_close: int) -> int:
        """Swap units for a position held over (t_open, t_close]."""
        units = 0
        for d in range(t_open // _DAY, t_close // _DAY + 1):
            if t_open < d * _DAY + _ROLLOVER <= t_close:
                units += self.rollover_weight[d]
        return units

    def in_window(self, t: int) -> bool:
        d, s = divmod(t, _DAY)
        return d in self.trading_set and _OPEN_FROM <= s < _OPEN_UNTIL

    def next_window_time(self, t: int, rng: random.Random) -> int:
        """``t`` if traders are at their desks then, else a moment early in the next trading window."""
        if t >= self.final_close:
            return self.final_close - rng.randint(60, 1800)
        if self.in_window(t):
            return t
        d, s = divmod(t, _DAY)
        if d in self.trading_set and s < _OPEN_FROM:
            return d * _DAY + _OPEN_FROM + rng.randint(0, 3 * _HOUR)
        for nd in self.trading_days:
            if nd > d:
                return nd * _DAY + _OPEN_FROM + rng.randint(0, 3 * _HOUR)
        return self.final_close - rng.randint(60, 1800)

    # -- news
    def _news_calendar(self) -> list[tuple]:
        """(ts, title, currency, symbols, impact) entries, a few per trading day."""
        rng = random.Random(f"propcrm-news:{self.spec.seed}")
        out: list[tuple] = []
        for k, d in enumerate(self.trading_days):
            base = d * _DAY
            wd = self.weekday(d)
            if rng.random() < 0.35:
                title = rng.choice(("UK Claimant Count Change", "UK GDP m/m", "UK Retail Sales m/m"))
                out.append((base + 7 * _HOUR, title, "GBP", None, "medium"))
            if rng.random() < 0.55:
                title = rng.choice(("German ZEW Economic Sentiment", "Eurozone Flash CPI y/y",
                                    "ECB Interest Rate Decision", "German Ifo Business Climate"))  # fmt: skip
                out.append((base + 9 * _HOUR, title, "EUR", None, rng.choice(("high", "medium"))))
            if rng.random() < 0.25:
                out.append((base + 9 * _HOUR + 1800, rng.choice(("UK CPI y/y", "BoE Gov Speaks")), "GBP", None, "high"))
            if rng.random() < 0.3:
                out.append((base + 10 * _HOUR, "Eurozone PPI m/m", "EUR", None, "low"))
            if k == 0 or rng.random() < 0.6:
                title = "Non-Farm Payrolls" if wd == 4 else rng.choice(
                    ("CPI m/m", "Retail Sales m/m", "Unemployment Claims", "Core PCE Price Index m/m", "PPI m/m"))
                out.append((base + 13 * _HOUR + 1800, title, "USD", None, "high"))
            if rng.random() < 0.15:
                out.append((base + 14 * _HOUR + 1800, "Index Rebalance", None, ("US30",), "medium"))
            if rng.random() < 0.4:
                title = rng.choice(("ISM Manufacturing PMI", "JOLTS Job Openings", "CB Consumer Confidence",
                                    "ISM Services PMI"))  # fmt: skip
                out.append((base + 15 * _HOUR, title, "USD", None, "medium"))
            if rng.random() < 0.1:
                out.append((base + 19 * _HOUR, "FOMC Statement", "USD", None, "high"))
            if rng.random() < 0.3 and wd < 4:
                title = rng.choice(("Tankan Manufacturing Index", "BoJ Core CPI y/y"))
                out.append((base + 23 * _HOUR + 3000, title, "JPY", None, rng.choice(("low", "medium"))))
        out.sort(key=lambda e: e[0])
        return out

    @staticmethod
    def affects(entry: tuple, symbol: str) -> bool:
        if entry[3]:
            return symbol in entry[3]
        return entry[2] in _INSTRUMENTS[symbol].currencies

    # -- prices
    def _walk(self, ins: _Instrument) -> list[int]:
        rng = random.Random(f"propcrm-price:{self.spec.seed}:{ins.name}")
        gauss = rng.gauss
        minutes = self.minutes
        factor = [_HOUR_VOL[(m % 1440) // 60] for m in range(minutes)]
        for entry in self.calendar:
            if self.affects(entry, ins.name):
                m0 = entry[0] // 60
                for k, f in enumerate(_NEWS_SPIKE[entry[4]]):
                    if m0 + k < minutes:
                        factor[m0 + k] *= f
        flags = self.open_flag
        path = [0] * minutes
        x = float(ins.start)
        sigma = ins.sigma
        floor = 0.5 * ins.start
        was_open = True
        for m in range(minutes):
            if flags[m]:
                step = gauss(0.0, sigma * factor[m])
                if not was_open:
                    step += gauss(0.0, sigma * 15)  # the weekend gap
                x += step
                if x < floor:
                    x = floor + (floor - x)
                was_open = True
            else:
                was_open = False
            path[m] = int(round(x))
        return path


# ----------------------------------------------------------------------------------------------------
# Traders


def _style_counts(accounts: int) -> list[tuple[str, int]]:
    exact = [(name, accounts * share / 100) for name, share in STYLES]
    counts = {name: int(x) for name, x in exact}
    rest = accounts - sum(counts.values())
    by_fraction = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
    for i in by_fraction[:rest]:
        counts[exact[i][0]] += 1
    return [(name, counts[name]) for name, _ in STYLES]


_IP_HEADS = (31, 37, 46, 62, 78, 79, 81, 82, 85, 89, 91, 93, 94, 95, 109, 176, 178, 185, 188, 212, 213, 217)
_DEVICES = ("mt5-win", "mt5-mac", "mt5-android", "mt5-ios", "web-chrome", "web-safari", "web-firefox")


def _ip(rng: random.Random) -> str:
    return f"{rng.choice(_IP_HEADS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def traders(spec: FirmSpec) -> list[Trader]:
    """The firm's accounts, their styles (exact shares, shuffled) and login fingerprints.

    About 1% of the accounts share an IP and a device with another one (the multi-accounting that
    linkage analysis should find).
    """
    rng = random.Random(f"propcrm-traders:{spec.seed}")
    styles = [name for name, count in _style_counts(spec.accounts) for _ in range(count)]
    rng.shuffle(styles)
    out = [
        Trader(
            account=f"{spec.account_prefix}{i + 1}",
            style=style,
            index=i,
            ip=_ip(rng),
            device=f"{rng.choice(_DEVICES)}-{rng.getrandbits(32):08x}",
            phase=rng.randrange(_HOUR),
        )
        for i, style in enumerate(styles)
    ]
    if len(out) > 1:
        for _ in range(max(1, len(out) // 100)):
            a, b = rng.randrange(len(out)), rng.randrange(len(out))
            if a != b:
                out[b].ip, out[b].device = out[a].ip, out[a].device
    return out


# ----------------------------------------------------------------------------------------------------
# Planning an account's trades (all money in integer cents)

_OPEN, _CLOSE, _SESSION, _BALANCE = 0, 1, 2, 3
_USER_AGENTS = ("MetaTrader 5 Terminal/5.0.4755", "MetaTrader 5 Android/5.0.4731",
                "MetaTrader 5 iOS/5.0.4702", "Mozilla/5.0 WebTerminal")  # fmt: skip


class _Plan:
    """The actions of one account over the whole time line, in the order they will be emitted."""

    def __init__(self, mk: _Market, trader: Trader, initial_cents: int) -> None:
        self.mk = mk
        self.trader = trader
        self.rng = random.Random((mk.spec.seed << 32) + trader.index)
        self.initial = initial_cents
        self.realised = 0  # sum of net results planned so far (time order for sequential styles)
        self.actions: list[tuple] = []
        self.seq = 0
        self.positions = 0
        self.first_open: dict[int, int] = {}
        self.lot_scale = initial_cents / 10_000_000  # styles think in lots for a 100k account

    def _add(self, ts: int, prio: int, *payload) -> None:
        self.seq += 1
        self.actions.append((ts, prio, self.seq, *payload))

    def side(self, sym: str, t_open: int, t_close: int, skill: float) -> str:
        """Buy or sell; with probability ``skill`` the side the market will favour by ``t_close``."""
        bid = self.mk.bid[sym]
        move = bid[t_close // 60] - bid[t_open // 60]
        rng = self.rng
        if move == 0:
            return "buy" if rng.random() < 0.5 else "sell"
        good = "buy" if move > 0 else "sell"
        if rng.random() < skill:
            return good
        return "sell" if good == "buy" else "buy"

    def balance(self, ts: int, cents: int, reason: str) -> None:
        self._add(ts, 1, _BALANCE, cents, reason)
        self.realised += cents

    def trade(
        self,
        t_open: int,
        sym: str,
        side: str,
        lot_c: int,
        t_close: int,
        sl_dist: int | None = None,
        tp_dist: int | None = None,
        sl_level: int | None = None,
        partial_at: int | None = None,
        sized: bool = False,
    ) -> tuple[int, int]:
        """Open a position, let stops act on the shared path, close it (maybe in two parts).

        ``lot_c`` is in hundredths of a lot for a 100k account, scaled to the initial balance unless
        ``sized`` (already sized for this account). Returns (time of the last close, net in cents).
        """
        if not sized and self.lot_scale != 1:
            lot_c = max(1, round(lot_c * self.lot_scale))
        mk = self.mk
        ins = _INSTRUMENTS[sym]
        bid = mk.bid[sym]
        spr = ins.spread
        buy = side == "buy"
        sign = 1 if buy else -1
        t_close = max(t_close, t_open + 5)
        open_pts = bid[t_open // 60] + (spr if buy else 0)
        sl = sl_level
        if sl is None and sl_dist:
            sl = open_pts - sl_dist if buy else open_pts + sl_dist
        tp = None
        if tp_dist:
            tp = open_pts + tp_dist if buy else open_pts - tp_dist
        # Triggers on the bid path: a buy's SL/TP look at the bid, a sell's at the ask = bid + spread.
        if buy:
            lo, hi = sl, tp
        else:
            lo = tp - spr if tp is not None else None
            hi = sl - spr if sl is not None else None
        self.positions += 1
        pos = f"{self.trader.account}-p{self.positions}"
        day = t_open // _DAY
        if day not in self.first_open or t_open < self.first_open[day]:
            self.first_open[day] = t_open
        self._add(t_open, 3, _OPEN, pos, sym, side, lot_c, open_pts, sl, tp, self.rng.randint(60, 900))
        legs: list[tuple[int, int]] = [(t_close, lot_c)]
        if partial_at is not None and t_open + 1 < partial_at < t_close - 1 and lot_c >= 2:
            part = max(1, lot_c // 2)
            legs = [(partial_at, part), (t_close, lot_c - part)]
        t_prev = t_open
        remaining = lot_c
        net_total = 0
        for t_end, lots in legs:
            hit = -1
            if lo is not None or hi is not None:
                hit = _first_cross(bid, t_prev // 60 + 1, t_end // 60 + 1, lo, hi)
            if hit >= 0:
                ts = hit * 60
                market = bid[hit]
                lots = remaining
                if buy:
                    stopped = lo is not None and market <= lo
                else:
                    stopped = hi is not None and market >= hi
                reason = "sl" if stopped else "tp"
                level = sl if stopped else tp
                price = level if mk.open_flag[hit - 1] else market + (0 if buy else spr)  # gaps fill at market
            else:
                ts = t_end
                price = bid[t_end // 60] + (0 if buy else spr)
                reason = "manual"
            profit = _pl_cents(ins, sign, open_pts, price, lots)
            commission = -_COMMISSION_PER_LOT_C * lots
            swap = 0
            units = mk.rollovers(t_open, ts)
            if units:
                swap = _rdiv(units * (ins.swap_long if buy else ins.swap_short) * lots, 100)
            self._add(ts, 2, _CLOSE, pos, lots, price, profit, commission, swap, reason, sym)
            net = profit + commission + swap
            net_total += net
            self.realised += net
            remaining -= lots
            t_prev = ts
            if remaining == 0:
                break
        return t_prev, net_total

    def finish(self) -> list[tuple]:
        """Add a login before each day's first trade and return the actions in emission order."""
        rng = self.rng
        tr = self.trader
        for day, t in sorted(self.first_open.items()):
            ts = max(day * _DAY + 1, t - rng.randint(3, 600))
            ip = tr.ip if rng.random() < 0.9 else _ip(rng)
            self._add(ts, 0, _SESSION, ip, tr.device, rng.choice(_USER_AGENTS))
        self.actions.sort()
        return self.actions


def _first_cross(path: list[int], a: int, b: int, lo: int | None, hi: int | None) -> int:
    """The first minute m in [a, b) with path[m] <= lo or path[m] >= hi, or −1."""
    low = -(1 << 62) if lo is None else lo
    high = (1 << 62) if hi is None else hi
    step = 240
    for s in range(a, b, step):
        seg = path[s : min(s + step, b)]
        if min(seg) > low and max(seg) < high:
            continue
        for k, v in enumerate(seg):
            if v <= low or v >= high:
                return s + k
    return -1


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for name, w in weighted:
        x -= w
        if x < 0:
            return name
    return weighted[-1][0]


_STEADY_SYMBOLS = (("EURUSD", 0.35), ("GBPUSD", 0.2), ("USDJPY", 0.15), ("XAUUSD", 0.2), ("US30", 0.1))


def _plan_steady(p: _Plan) -> None:
    """A few small trades a day with stops; slightly better than a coin."""
    rng, mk = p.rng, p.mk
    skill = rng.uniform(0.5, 0.6)
    for d in mk.trading_days:
        if rng.random() < 0.15:
            continue
        base = d * _DAY
        t = base + _OPEN_FROM + rng.randint(0, 3 * _HOUR)
        for _ in range(rng.randint(1, 4)):
            if t > base + _OPEN_UNTIL - 1800 or t >= mk.final_close:
                break
            sym = _pick(rng, _STEADY_SYMBOLS)
            ins = _INSTRUMENTS[sym]
            t_close = min(t + rng.randint(600, 3 * _HOUR), base + _OPEN_UNTIL)
            lot_c = rng.randint(2, 20) * 5
            sl = rng.randint(ins.sl_min, ins.sl_max) if rng.random() < 0.95 else None
            tp = int(sl * rng.uniform(1.0, 2.0)) if sl and rng.random() < 0.7 else None
            partial = t + (t_close - t) // 2 if lot_c >= 20 and rng.random() < 0.15 else None
            side = p.side(sym, t, t_close, skill)
            end, _ = p.trade(t, sym, side, lot_c, t_close, sl_dist=sl, tp_dist=tp, partial_at=partial)
            t = end + rng.randint(300, 5400)


def _plan_scalper(p: _Plan) -> None:
    """Bursts of very short trades on one or two symbols.

    One in five is a latency trader: opens in the last seconds of a minute, just before the quote
    moves, on the direction it will move (the stale-price pattern abuse detection looks for).
    """
    rng, mk = p.rng, p.mk
    latency = rng.random() < 0.2
    if latency:
        syms = rng.sample(("XAUUSD", "US30"), rng.randint(1, 2))
        skill = rng.uniform(0.85, 0.95)
    else:
        syms = rng.sample(("EURUSD", "XAUUSD", "US30", "GBPUSD"), rng.randint(1, 2))
        skill = rng.uniform(0.5, 0.7)
    for d in mk.trading_days:
        if rng.random() < 0.1:
            continue
        base = d * _DAY
        for _ in range(1 if rng.random() < 0.75 else 2):
            t = base + rng.randint(_OPEN_FROM, _OPEN_UNTIL - 2 * _HOUR)
            stop = min(t + rng.randint(1800, 2 * _HOUR), base + _OPEN_UNTIL, mk.final_close)
            if p.actions and t <= p.actions[-1][0]:
                t = p.actions[-1][0] + rng.randint(30, 600)
            while t < stop:
                sym = rng.choice(syms)
                ins = _INSTRUMENTS[sym]
                lot_c = rng.randint(5, 30) * 10
                sl = rng.randint(ins.sl_min // 3, ins.sl_min) if rng.random() < 0.4 else None
                if latency:
                    t = t - t % 60 + rng.randint(52, 59)
                    t_close = t + rng.randint(8, 40)
                else:
                    t_close = t + rng.randint(10, 90)
                side = p.side(sym, t, t_close, skill)
                end, _ = p.trade(t, sym, side, lot_c, t_close, sl_dist=sl)
                t = end + rng.randint(20, 900)


def _plan_swing(p: _Plan) -> None:
    """Up to three positions held for hours to days, over nights and weekends."""
    rng, mk = p.rng, p.mk
    skill = rng.uniform(0.5, 0.6)
    open_until: list[int] = []
    for d in mk.trading_days:
        base = d * _DAY
        for _ in range(rng.choices((0, 1, 2), (0.45, 0.4, 0.15))[0]):
            t = base + _OPEN_FROM + rng.randint(0, 13 * _HOUR)
            if t >= mk.final_close - _HOUR or sum(1 for u in open_until if u > t) >= 3:
                continue
            sym = _pick(rng, _STEADY_SYMBOLS)
            ins = _INSTRUMENTS[sym]
            t_close = mk.next_window_time(t + rng.randint(6 * _HOUR, 3 * _DAY), rng)
            if t_close <= t + 60:
                continue
            lot_c = rng.randint(4, 40) * 5
            sl = int(rng.randint(ins.sl_min, ins.sl_max) * rng.uniform(1.5, 3.0)) if rng.random() < 0.85 else None
            tp = int((sl or ins.sl_max * 2) * rng.uniform(1.0, 2.5)) if rng.random() < 0.6 else None
            partial = None
            if rng.random() < 0.3 and lot_c >= 20:
                partial = mk.next_window_time(t + (t_close - t) // 2, rng)
            side = p.side(sym, t, t_close, skill)
            end, _ = p.trade(t, sym, side, lot_c, t_close, sl_dist=sl, tp_dist=tp, partial_at=partial)
            open_until.append(end)


def _plan_gambler(p: _Plan) -> None:
    """Big lots, no stop, doubles after every loss (martingale); tilts until the day is badly red."""
    rng, mk = p.rng, p.mk
    base_lots = rng.randint(3, 10) * 100
    lot_c = base_lots
    initial = p.initial
    for d in mk.trading_days:
        base = d * _DAY
        day_start = p.realised
        if day_start < -initial * 30 // 100:
            break  # blown: the trader gives up
        t = base + _OPEN_FROM + rng.randint(0, 4 * _HOUR)
        for _ in range(rng.randint(2, 7)):
            if t > base + _OPEN_UNTIL - 900 or t >= mk.final_close:
                break
            sym = _pick(rng, (("XAUUSD", 0.4), ("US30", 0.25), ("GBPUSD", 0.2), ("EURUSD", 0.15)))
            ins = _INSTRUMENTS[sym]
            t_close = min(t + rng.randint(120, 45 * 60), base + _OPEN_UNTIL)
            tp = rng.randint(ins.sl_min, ins.sl_max) if rng.random() < 0.3 else None
            side = "buy" if rng.random() < 0.5 else "sell"
            end, net = p.trade(t, sym, side, lot_c, t_close, tp_dist=tp)
            lot_c = min(lot_c * 2, 4000) if net < 0 else base_lots
            if p.realised - day_start < -initial * 8 // 100:
                break
            t = end + rng.randint(60, 1800)


_NEWS_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30")


def _plan_news(p: _Plan) -> None:
    """Trades opened a minute or two around the calendar's releases; a plain trade now and then."""
    rng, mk = p.rng, p.mk
    for d in mk.trading_days:
        base = d * _DAY
        t_free = base
        for entry in mk.news_by_day.get(d, ()):
            ts, impact = entry[0], entry[4]
            if impact == "low" or not (_OPEN_FROM <= ts - base < _OPEN_UNTIL):
                continue
            if rng.random() >= (0.85 if impact == "high" else 0.4):
                continue
            syms = [s for s in _NEWS_SYMBOLS if mk.affects(entry, s)]
            if not syms:
                continue
            sym = rng.choice(syms)
            ins = _INSTRUMENTS[sym]
            t = max(ts + rng.randint(-120, 120), t_free + 5)
            if t >= mk.final_close:
                continue
            lot_c = rng.randint(10, 50) * 10
            sl = rng.randint(ins.sl_min, ins.sl_max) if rng.random() < 0.25 else None
            t_close = t + rng.randint(30, 600)
            side = "buy" if rng.random() < 0.5 else "sell"
            end, _ = p.trade(t, sym, side, lot_c, t_close, sl_dist=sl)
            if rng.random() < 0.2:  # a straddle: the other side too
                other = "sell" if side == "buy" else "buy"
                end2, _ = p.trade(t + rng.randint(0, 3), sym, other, lot_c, t + rng.randint(30, 600), sl_dist=sl)
                end = max(end, end2)
            t_free = end
        if rng.random() < 0.5:
            t = max(t_free + 600, base + _OPEN_FROM + rng.randint(0, 10 * _HOUR))
            if t < min(base + _OPEN_UNTIL - 1800, mk.final_close):
                sym = _pick(rng, _STEADY_SYMBOLS)
                ins = _INSTRUMENTS[sym]
                t_close = min(t + rng.randint(600, 2 * _HOUR), base + _OPEN_UNTIL)
                side = "buy" if rng.random() < 0.5 else "sell"
                p.trade(t, sym, side, rng.randint(5, 30) * 10, t_close, sl_dist=rng.randint(ins.sl_min, ins.sl_max))


_SKILLED_SYMBOLS = (("EURUSD", 0.3), ("GBPUSD", 0.2), ("XAUUSD", 0.3), ("US30", 0.1), ("USDJPY", 0.1))


def _plan_target_hitter(p: _Plan) -> None:
    """Skilled: reads the market ahead, sizes to reach +10.5–13% and stops there.

    About a third of them make most of it on one very big day (the consistency rule's case).
    """
    rng, mk = p.rng, p.mk
    days = mk.trading_days
    goal = p.initial * rng.randint(1050, 1300) // 10_000
    big_day = rng.choice(days) if len(days) > 1 and rng.random() < 0.35 else None
    for i, d in enumerate(days):
        need = goal - p.realised
        if need <= 0:
            break
        base = d * _DAY
        left = len(days) - i
        last = left == 1
        big_ahead = big_day is not None and d < big_day
        if last:
            day_goal = need
        elif d == big_day:
            day_goal = max(need * 3 // 4, min(need, goal * 55 // 100))
        elif big_ahead:  # keep more than half of the goal for the big day
            day_goal = int(max(0, need - goal * 55 // 100) * rng.uniform(0.8, 1.3) / (left - 1))
        else:
            day_goal = int(need * rng.uniform(0.8, 1.3) / left)
        if day_goal <= 0:
            continue
        n = rng.randint(1, 2) if last else rng.randint(2, 5)
        cap = 5000 if last else (2000 if d == big_day else 1000)
        day_start = p.realised
        t = base + _OPEN_FROM + rng.randint(0, 2 * _HOUR)
        k = 0
        for _attempt in range(80):
            got = p.realised - day_start
            if t > base + _OPEN_UNTIL - 1200 or t >= mk.final_close:
                break
            if got >= day_goal or p.realised >= goal:
                break
            sym = _pick(rng, _SKILLED_SYMBOLS)
            ins = _INSTRUMENTS[sym]
            if not last and k < n and rng.random() < 0.15:  # even the good ones lose sometimes
                t_close = min(t + rng.randint(600, 2 * _HOUR), base + _OPEN_UNTIL)
                side = "buy" if rng.random() < 0.5 else "sell"
                end, _ = p.trade(t, sym, side, rng.randint(4, 20) * 5, t_close, sl_dist=ins.sl_min)
                t = end + rng.randint(300, 2400)
                k += 1
                continue
            bid = mk.bid[sym]
            o = t // 60
            first_m = o + rng.randint(5, 20)
            last_m = min(t + rng.randint(_HOUR, 5 * _HOUR), base + _OPEN_UNTIL, mk.final_close) // 60 - 1
            if last_m < first_m:
                break
            window = bid[first_m : last_m + 1]
            hi_v, lo_v = max(window), min(window)
            gain_buy = hi_v - (bid[o] + ins.spread)
            gain_sell = bid[o] - (lo_v + ins.spread)
            if max(gain_buy, gain_sell) < ins.sl_min // 2:
                t += rng.randint(600, 1800)
                continue
            margin = int(ins.sl_min * rng.uniform(0.5, 2.0))
            if gain_buy >= gain_sell:
                side, c = "buy", first_m + window.index(hi_v)
                sl = min(bid[o : c + 1]) - margin
                gain = gain_buy
            else:
                side, c = "sell", first_m + window.index(lo_v)
                sl = max(bid[o : c + 1]) + ins.spread + margin
                gain = gain_sell
            per_lot_c = _pl_cents(ins, 1, 0, gain, 100) / 100  # cents per 0.01 lot
            if ins.kind == 2:
                per_lot_c = gain * 100_000 / bid[c]
            trade_goal = (day_goal - got) / max(1, n - k) if k < n else (day_goal - got)
            if last:
                trade_goal *= 1.1  # the last chance: aim a little above
            lot_c = max(1, min(round(cap * p.lot_scale) or 1, math.ceil(trade_goal / max(per_lot_c, 1e-9))))
            t_close = c * 60 + rng.randint(0, 59)
            end, _ = p.trade(t, sym, side, lot_c, t_close, sl_level=sl, sized=True)
            t = end + rng.randint(300, 2400)
            k += 1


_PLANNERS = {
    "steady": _plan_steady,
    "scalper": _plan_scalper,
    "swing": _plan_swing,
    "gambler": _plan_gambler,
    "news": _plan_news,
    "target_hitter": _plan_target_hitter,
}


def _plan(mk: _Market, trader: Trader, initial_cents: int) -> list[tuple]:
    p = _Plan(mk, trader, initial_cents)
    _PLANNERS[trader.style](p)
    rng = p.rng
    # Rare balance operations: a data fee, a goodwill/error adjustment.
    x = rng.random()
    if x < 0.05:
        d = rng.choice(mk.trading_days)
        ts = d * _DAY + 6 * _HOUR + rng.randint(0, 1800)
        if x < 0.03:
            p.balance(ts, -rng.randint(10, 99) * 100, "fee")
        else:
            p.balance(ts, rng.choice((-1, 1)) * rng.randint(100, 5000), "adjustment")
    return p.finish()


# ----------------------------------------------------------------------------------------------------
# Emitting one account: its plan with equity snapshots in between


def _account_stream(mk: _Market, trader: Trader, initial_cents: int) -> Iterator[tuple[int, str]]:
    actions = _plan(mk, trader, initial_cents)
    spec = mk.spec
    acct = trader.account
    head = f'{{"id":"{acct}-'
    eq_mid = f'","type":"equity","account":"{acct}","ts":"'
    day_prefix, sod = mk.day_prefix, mk.sod
    flags = mk.open_flag
    every = spec.equity_every_s if spec.equity_every_s > 0 else _HOUR
    phase = trader.phase
    rdiv = _rdiv
    n = 0
    bal = initial_cents
    bal_s = _money(bal)
    positions: dict[str, list] = {}
    ip, device = trader.ip, trader.device
    end = mk.end
    snap = 0 + (-phase) % _HOUR  # first hourly grid point ≥ 0
    actions.append((end, 9, 0, -1))
    for action in actions:
        ats = action[0]
        while snap < ats:
            m = snap // 60
            if positions:
                fl = 0
                for kind, den, bl, add, sg, op, lc in positions.values():
                    mark = bl[m] + add
                    if kind == 0:
                        fl += (mark - op) * sg * lc
                    elif kind == 1:
                        fl += rdiv((mark - op) * sg * lc, den)
                    else:
                        fl += rdiv((mark - op) * sg * lc * 100_000, mark)
                n += 1
                yield snap, (
                    f'{head}{n}{eq_mid}{day_prefix[snap // _DAY]}{sod[snap % _DAY]}",'
                    f'"equity":"{_money(bal + fl)}","balance":"{bal_s}"}}\n'
                )
                cadence = every if flags[m] else _HOUR
            else:
                if flags[m]:
                    n += 1
                    yield snap, (
                        f'{head}{n}{eq_mid}{day_prefix[snap // _DAY]}{sod[snap % _DAY]}",'
                        f'"equity":"{bal_s}","balance":"{bal_s}"}}\n'
                    )
                cadence = _HOUR
            snap += cadence - (snap - phase) % cadence
        kind = action[3]
        if kind < 0:
            break
        tss = day_prefix[ats // _DAY] + sod[ats % _DAY]
        equity_after = False
        if kind == _OPEN:
            _, _, _, _, pos, sym, side, lot_c, open_pts, sl, tp, order_ms = action
            ins = _INSTRUMENTS[sym]
            fmt = _PRICE_FMT[sym]
            buy = side == "buy"
            positions[pos] = [ins.kind, ins.den, mk.bid[sym], 0 if buy else ins.spread, 1 if buy else -1, open_pts, lot_c]
            stops = (f',"sl":"{fmt(sl)}"' if sl is not None else "") + (f',"tp":"{fmt(tp)}"' if tp is not None else "")
            n += 1
            yield ats, (
                f'{head}{n}","type":"trade_opened","account":"{acct}","ts":"{tss}","position":"{pos}",'
                f'"symbol":"{sym}","side":"{side}","lots":"{_lots(lot_c)}","price":"{fmt(open_pts)}"{stops},'
                f'"order_ts":"{mk.ts_ms(ats * 1000 - order_ms)}","ip":"{ip}","device":"{device}"}}\n'
            )
        elif kind == _CLOSE:
            _, _, _, _, pos, lot_c, price, profit, commission, swap, reason, sym = action
            held = positions[pos]
            held[6] -= lot_c
            if held[6] == 0:
                del positions[pos]
            bal += profit + commission + swap
            bal_s = _money(bal)
            n += 1
            yield ats, (
                f'{head}{n}","type":"trade_closed","account":"{acct}","ts":"{tss}","position":"{pos}",'
                f'"lots":"{_lots(lot_c)}","price":"{_PRICE_FMT[sym](price)}","profit":"{_money(profit)}",'
                f'"commission":"{_money(commission)}","swap":"{_money(swap)}","reason":"{reason}"}}\n'
            )
            equity_after = True
        elif kind == _SESSION:
            _, _, _, _, ip, device, agent = action
            n += 1
            yield ats, (
                f'{head}{n}","type":"session","account":"{acct}","ts":"{tss}","ip":"{ip}",'
                f'"device":"{device}","user_agent":"{agent}"}}\n'
            )
        else:  # _BALANCE
            _, _, _, _, amount, reason = action
            bal += amount
            bal_s = _money(bal)
            n += 1
            yield ats, (
                f'{head}{n}","type":"balance","account":"{acct}","ts":"{tss}",'
                f'"amount":"{_money(amount)}","reason":"{reason}"}}\n'
            )
            equity_after = True
        if equity_after:
            fl = 0
            m = ats // 60
            for kind_, den, bl, add, sg, op, lc in positions.values():
                mark = bl[m] + add
                if kind_ == 0:
                    fl += (mark - op) * sg * lc
                elif kind_ == 1:
                    fl += rdiv((mark - op) * sg * lc, den)
                else:
                    fl += rdiv((mark - op) * sg * lc * 100_000, mark)
            n += 1
            yield ats, f'{head}{n}{eq_mid}{tss}","equity":"{_money(bal + fl)}","balance":"{bal_s}"}}\n'
        cadence = every if positions and flags[ats // 60] else _HOUR
        snap = ats + cadence - (ats - phase) % cadence
    while True:
        yield _END, ""


# ----------------------------------------------------------------------------------------------------
# Market-wide events


def _global_events(mk: _Market) -> list[tuple[int, str]]:
    """price, clock and news lines, in that order for equal times."""
    spec = mk.spec
    out: list[tuple[int, int, str]] = []
    if spec.prices:
        k = 0
        for m in range(mk.minutes):
            if m * 60 >= mk.end or not mk.open_flag[m]:
                continue
            t = m * 60
            tss = mk.ts(t)
            for sym in _SYMBOLS:
                fmt = _PRICE_FMT[sym]
                bid = mk.bid[sym][m]
                k += 1
                out.append((t, 0, f'{{"id":"price-{k}","type":"price","ts":"{tss}","symbol":"{sym}",'
                                  f'"bid":"{fmt(bid)}","ask":"{fmt(bid + _INSTRUMENTS[sym].spread)}"}}\n'))  # fmt: skip
    clocks: set[int] = set()
    if spec.clock_every_s > 0:
        clocks.update(range(spec.clock_every_s, mk.end, spec.clock_every_s))
    for d in range(mk.n_days + 1):
        clocks.add(d * _DAY + 5)
        if d < mk.n_days:
            clocks.add(d * _DAY + 22 * _HOUR + 300)
    for k, t in enumerate(sorted(c for c in clocks if c < mk.end), 1):
        out.append((t, 1, f'{{"id":"clock-{k}","type":"clock","ts":"{mk.ts(t)}"}}\n'))
    for k, (t, title, currency, symbols, impact) in enumerate(mk.news, 1):
        where = f'"currency":"{currency}"' if currency else '"symbols":[' + ",".join(f'"{s}"' for s in symbols) + "]"
        out.append((t, 2, f'{{"id":"news-{k}","type":"news","ts":"{mk.ts(t)}","title":"{title}",{where},'
                          f'"impact":"{impact}"}}\n'))  # fmt: skip
    out.sort(key=lambda e: (e[0], e[1]))
    return [(t, line) for t, _, line in out]


def _initial_cents(spec: FirmSpec) -> int:
    cents = spec.initial_balance * 100
    if cents != cents.to_integral_value():
        raise ValueError("initial_balance must have at most 2 decimals")
    return int(cents)


_CHUNK_S = 2 * _HOUR


def _chunks(spec: FirmSpec) -> Iterator[list[str]]:
    """Lists of lines, each list covering the next two hours of the time line, globally sorted."""
    mk = _Market(spec)
    initial = _initial_cents(spec)
    streams = [_account_stream(mk, tr, initial) for tr in traders(spec)]
    pending = [next(s) for s in streams]
    market = _global_events(mk)
    g = 0
    for base in range(0, mk.end, _CHUNK_S):
        top = base + _CHUNK_S
        buckets: list[list[str]] = [[] for _ in range(_CHUNK_S)]
        while g < len(market) and market[g][0] < top:
            buckets[market[g][0] - base].append(market[g][1])
            g += 1
        for i, stream in enumerate(streams):
            item = pending[i]
            if item[0] >= top:
                continue
            while item[0] < top:
                buckets[item[0] - base].append(item[1])
                item = next(stream)
            pending[i] = item
        yield list(chain.from_iterable(buckets))


def generate(spec: FirmSpec) -> Iterator[bytes]:
    """The firm's event stream as NDJSON lines (bytes, each ending in a newline), sorted by ``ts``."""
    for chunk in _chunks(spec):
        for line in chunk:
            yield line.encode()


def write_ndjson(spec: FirmSpec, path) -> int:
    """Write the stream to ``path``; returns the number of events."""
    count = 0
    with open(path, "wb") as out:
        for chunk in _chunks(spec):
            count += len(chunk)
            out.write("".join(chunk).encode())
    return count


def estimate_events(spec: FirmSpec, sample_per_style: int = 24) -> int:
    """About how many events ``generate(spec)`` yields, from a simulation of a few accounts per style.

    Market-wide events are counted exactly; each style's account count is scaled from a sample
    (usually within a few percent; cost: ~150 accounts' worth of generation).
    """
    mk = _Market(spec)
    initial = _initial_cents(spec)
    total = len(_global_events(mk))
    by_style: dict[str, list[Trader]] = {}
    for tr in traders(spec):
        by_style.setdefault(tr.style, []).append(tr)
    for members in by_style.values():
        step = max(1, len(members) // sample_per_style)
        sample = members[::step][:sample_per_style]
        counted = 0
        for tr in sample:
            for ts, _ in _account_stream(mk, tr, initial):
                if ts == _END:
                    break
                counted += 1
        total += round(counted * len(members) / len(sample))
    return total
