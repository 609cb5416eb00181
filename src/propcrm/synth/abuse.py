"""A synthetic firm with planted abuse, for evaluating the detectors (``propcrm analyze evaluate``).

Honest traders are many, and they overlap *by coincidence* the way real ones do: a crowd trades EURUSD
in the first minutes of the London open every day with round lot sizes, scalpers hold for seconds,
some traders run two accounts from one device (declared in the CRM as the same person), and a mobile
carrier puts dozens of them behind one IPv4 address. Planted among them:

* **hedging** pairs: two traders open opposite positions of (nearly) the same size within seconds on
  one symbol, or on two symbols the configuration calls correlated; one side closes in parts;
* **copy** groups: a leader and followers opening the same symbol and side within 3 s, each follower
  at its own size multiple, skipping a trade now and then;
* **latency** arbitrage: fills at the quote from before a price jump, in the trader's favour, held
  for seconds;
* **martingale**: lots doubled after every losing trade;
* **linkage**: "different" traders (per the CRM) behind one device, one IPv6 /64 or one card.

The output is GUIDE §2 NDJSON (``price``, ``news``, ``session``, ``trade_opened`` with ``order_ts``,
``ip`` and ``device``, ``trade_closed``), a CRM file (account → trader, payment fingerprints) and a
ground truth of what was planted. The same :class:`AbuseSpec` gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

UTC = dt.timezone.utc
STEP_S = 10  # one reference quote per symbol every 10 s
DAY_OPEN_S = 7 * 3600
DAY_CLOSE_S = 17 * 3600
NY_OPEN_S = 13 * 3600 + 1800  # 13:30 UTC: the New York open, the day's second crowd
#: symbol, digits, spread (points), contract size, start price (points), volatility (points per step)
SYMBOLS = (
    ("EURUSD", 5, 8, 100_000, 108_500, 3.0),
    ("GBPUSD", 5, 12, 100_000, 126_400, 4.0),
    ("USDJPY", 3, 10, 100_000, 149_800, 4.0),
    ("XAUUSD", 2, 30, 100, 205_000, 25.0),
    ("US30", 1, 20, 1, 389_000, 40.0),
)
CORRELATED = ((("EURUSD", 1), ("GBPUSD", 1)),)  # the configuration the generator's correlated hedges assume


@dataclass(frozen=True)
class AbuseSpec:
    seed: int = 7
    honest: int = 600
    days: int = 10
    start: dt.date = dt.date(2026, 3, 2)  # a Monday
    hedge_pairs: int = 8
    copy_groups: int = 5
    latency: int = 6
    martingale: int = 6
    linked_groups: int = 6
    london_crowd: float = 0.5  # share of honest traders in the London-open EURUSD crowd
    cgnat_accounts: int = 30  # honest accounts behind one mobile-carrier IPv4
    same_person_pairs: int = 10  # honest traders with two accounts on one device (declared)
    # abusers who read the rules (``adaptive=True``): hedge legs opened 30 s – 10 min apart, split in parts
    # and of another size; copies 5–45 s late, scaled, skipping signals, with trades of their own; latency
    # arbs and martingale traders mixing in ordinary trades; large rings on one device and on one IPv6 /64;
    # and honest offices of 8–11 people on one IPv4 and a New York open crowd for them to hide in
    adaptive: bool = False
    offices: int = 4
    device_ring: int = 22
    ipv6_ring: int = 16


def _iso(ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(ms / 1000, UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def _day_ms(spec: AbuseSpec, day: int) -> int:
    days, d = 0, spec.start
    while True:
        if d.weekday() < 5:
            if days == day:
                break
            days += 1
        d += dt.timedelta(days=1)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _symbol(name: str):
    return next(s for s in SYMBOLS if s[0] == name)


def _price_text(points: int, digits: int) -> str:
    return str(Decimal(points).scaleb(-digits))


class _Market:
    """Shared reference prices: one integer mid per symbol per 10 s step, with the jumps the arbs exploit."""

    def __init__(self, spec: AbuseSpec, seed: int) -> None:
        gen = np.random.default_rng(seed)
        self.steps = (DAY_CLOSE_S - DAY_OPEN_S) // STEP_S + 60  # until 17:10
        self.first = DAY_OPEN_S - STEP_S
        self.mid: dict[str, list[np.ndarray]] = {}
        for name, _digits, _spread, _contract, start, vol in SYMBOLS:
            days, level = [], start
            for _ in range(spec.days):
                walk = np.cumsum(np.rint(gen.normal(0, vol, self.steps))).astype(np.int64) + level
                days.append(walk)
                level = int(walk[-1])
            self.mid[name] = days

    def step_of(self, second: int) -> int:
        return min(max((second - self.first) // STEP_S, 0), self.steps - 1)

    def bid_ask(self, name: str, day: int, second: int) -> tuple[int, int]:
        spread = _symbol(name)[2]
        mid = int(self.mid[name][day][self.step_of(second)])
        return mid - spread // 2, mid - spread // 2 + spread

    def jump(self, name: str, day: int, step: int, points: int) -> None:
        self.mid[name][day][step:] += points


def _profit(name: str, side: int, lots: Decimal, open_pts: int, close_pts: int) -> Decimal:
    _sym, digits, _spread, contract, _start, _vol = _symbol(name)
    diff = Decimal(side * (close_pts - open_pts)).scaleb(-digits)
    value = diff * lots * contract
    if name == "USDJPY":
        value = value / Decimal(close_pts).scaleb(-digits)
    return value.quantize(Decimal("0.01"))


class _Builder:
    def __init__(self, spec: AbuseSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.market = _Market(spec, spec.seed)
        self.events: list[tuple[int, int, dict]] = []
        self.crm: dict[str, dict] = {}
        self.n = 0
        self.truth: dict[str, list] = {"hedging": [], "copy": [], "latency": [], "martingale": [], "linkage": [],
                                       "honest_overlap": {"london_crowd": [], "cgnat": [], "same_person": [],
                                                          "scalpers": [], "offices": [], "new_york_crowd": []},
                                       "also": {}}
        self.positions: dict[str, int] = {}
        self.jumps: list[tuple[str, int, int, int]] = []  # symbol, day, step, signed points

    # ---------------------------------------------------------------- plumbing
    def emit(self, ms: int, event: dict) -> None:
        self.n += 1
        self.events.append((ms, self.n, {"id": f"ev{self.n}", "type": event.pop("type"), **event, "ts": _iso(ms)}))

    def identity(self, account: str, trader: str, *, ip: str, device: str, payment: str | None = None) -> None:
        self.crm[account] = {"trader": trader, "payments": [payment] if payment else []}
        for k in range(self.rng.randint(2, 4)):
            day = self.rng.randrange(self.spec.days)
            ms = _day_ms(self.spec, day) + (6 * 3600 + self.rng.randrange(3600)) * 1000
            self.emit(ms, {"type": "session", "account": account, "ip": self._ip(ip), "device": device})

    def _ip(self, ip: str) -> str:
        """An IPv6 /64 prefix ending in "::" gets a fresh interface id per use (privacy addresses)."""
        if ip.endswith("::"):
            return ip[:-1] + ":".join(f"{self.rng.randrange(1, 0xffff):x}" for _ in range(4))
        return ip

    def trade(self, account: str, *, symbol: str, side: int, lots: Decimal, day: int, open_s: float, hold_s: float,
              ip: str, device: str, stale: bool = False, slip: bool = True, partial: bool = False,
              order_lag_ms: int | None = None) -> None:
        """Open and close one position at market prices (honest slippage ±0.3 spread) or at a stale quote."""
        _name, digits, spread, *_ = _symbol(symbol)
        base = _day_ms(self.spec, day)
        open_ms = base + int(open_s * 1000)
        bid, ask = self.market.bid_ask(symbol, day, int(open_s))
        if stale:
            pbid, pask = self.market.bid_ask(symbol, day, int(open_s) - STEP_S)
            fill = pask if side > 0 else pbid
        else:
            fill = ask if side > 0 else bid
            if slip:
                fill += self.rng.choice((-1, 0, 0, 1)) * max(1, int(spread * 0.3 * self.rng.random()))
        close_s = min(open_s + hold_s, DAY_CLOSE_S + 590)
        close_ms = base + int(close_s * 1000)
        cbid, cask = self.market.bid_ask(symbol, day, int(close_s))
        exit_pts = cbid if side > 0 else cask
        self.positions[account] = self.positions.get(account, 0) + 1
        position = f"p{self.positions[account]}"
        lag = order_lag_ms if order_lag_ms is not None else self.rng.randint(20, 250)
        self.emit(open_ms, {"type": "trade_opened", "account": account, "position": position, "symbol": symbol,
                            "side": "buy" if side > 0 else "sell", "lots": str(lots), "price": _price_text(fill, digits),
                            "order_ts": _iso(open_ms - lag), "ip": self._ip(ip), "device": device})
        parts = [lots] if not partial else [(lots / 2).quantize(Decimal("0.01")), lots - (lots / 2).quantize(Decimal("0.01"))]
        for k, part in enumerate(parts):
            ms = close_ms + k * 15_000
            pbid, pask = self.market.bid_ask(symbol, day, int(close_s) + k * 15)
            exit_pts = pbid if side > 0 else pask
            profit = _profit(symbol, side, part, fill, exit_pts)
            self.emit(ms, {"type": "trade_closed", "account": account, "position": position, "lots": str(part),
                           "price": _price_text(exit_pts, digits), "profit": str(profit),
                           "commission": str((-Decimal("7") * part).quantize(Decimal("0.01"))), "swap": "0"})

    # ---------------------------------------------------------------- populations
    def lots(self) -> Decimal:
        return Decimal(self.rng.choice(("0.1", "0.2", "0.25", "0.5", "0.5", "1", "1", "1", "1.5", "2", "3")))

    def random_time(self) -> float:
        return self.rng.uniform(DAY_OPEN_S, DAY_CLOSE_S - 3600)

    def honest(self, account: str, *, ip: str, device: str, crowd: bool, scalper: bool, trades: tuple = (15, 45),
               new_york: bool = False) -> None:
        for _ in range(self.rng.randint(*trades)):
            day = self.rng.randrange(self.spec.days)
            if crowd and self.rng.random() < 0.6:
                open_s = (NY_OPEN_S if new_york and self.rng.random() < 0.5 else DAY_OPEN_S) + self.rng.uniform(0, 300)
                symbol = "EURUSD"
            else:
                symbol = self.rng.choice(("EURUSD", "EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30"))
                open_s = self.random_time()
            hold = self.rng.uniform(5, 90) if scalper else self.rng.uniform(300, 4 * 3600)
            self.trade(account, symbol=symbol, side=self.rng.choice((1, -1)), lots=self.lots(), day=day,
                       open_s=open_s, hold_s=hold, ip=ip, device=device)

    def build(self) -> None:
        spec, rng = self.spec, self.rng
        # latency arbs need jumps in the shared path before anyone's prices are read
        arbs = [f"LAT{k + 1:02d}" for k in range(spec.latency)]
        arb_trades = []
        for a in arbs:
            for _ in range(rng.randint(15, 30)):
                symbol = rng.choice(("EURUSD", "GBPUSD", "XAUUSD"))
                day = rng.randrange(spec.days)
                step = rng.randrange(10, self.market.steps - 120)
                direction = rng.choice((1, -1))
                points = direction * _symbol(symbol)[2] * rng.randint(3, 6)
                self.market.jump(symbol, day, step, points)
                arb_trades.append((a, symbol, day, step, direction))
        # honest traders
        honest = [f"H{k + 1:04d}" for k in range(spec.honest)]
        cgnat = set(honest[: spec.cgnat_accounts])
        same_person = honest[spec.cgnat_accounts: spec.cgnat_accounts + 2 * spec.same_person_pairs]
        for k, account in enumerate(honest):
            trader = f"T-{account}"
            device = f"dev-{account}"
            if account in same_person:
                partner = same_person[k - spec.cgnat_accounts - (k - spec.cgnat_accounts) % 2]
                trader, device = f"T-{partner}", f"dev-{partner}"
            ip = "100.64.7.9" if account in cgnat else (f"2001:db8:{k:x}:1::" if k % 2 else f"198.51.{k // 250}.{k % 250}")
            self.identity(account, trader, ip=ip, device=device, payment=f"card-{trader}")
            crowd = rng.random() < spec.london_crowd
            scalper = rng.random() < 0.2
            self.honest(account, ip=ip, device=device, crowd=crowd, scalper=scalper, new_york=spec.adaptive)
            if crowd:
                self.truth["honest_overlap"]["london_crowd"].append(account)
                if spec.adaptive:
                    self.truth["honest_overlap"]["new_york_crowd"].append(account)
            if scalper:
                self.truth["honest_overlap"]["scalpers"].append(account)
        self.truth["honest_overlap"]["cgnat"] = sorted(cgnat)
        self.truth["honest_overlap"]["same_person"] = list(same_person)
        if spec.adaptive:
            self.adaptive_abuse(arbs, arb_trades)
            return self.reference_prices()
        # hedging pairs
        for k in range(spec.hedge_pairs):
            a, b = f"HDG{k + 1:02d}A", f"HDG{k + 1:02d}B"
            for x in (a, b):
                self.identity(x, f"T-{x}", ip=f"192.0.2.{10 + 2 * k + (x == b)}", device=f"dev-{x}", payment=f"card-{x}")
            correlated = k % 4 == 3
            for t in range(rng.randint(12, 25)):
                day, open_s = rng.randrange(spec.days), self.random_time()
                if k % 2 == 0 and t % 3 == 0:
                    open_s = DAY_OPEN_S + rng.uniform(0, 300)  # even at the London open
                symbol = "EURUSD"
                other = "GBPUSD" if correlated else symbol  # EURUSD and GBPUSD move together
                side, lots = rng.choice((1, -1)), self.lots()
                hold = rng.uniform(600, 3 * 3600)
                self.trade(a, symbol=symbol, side=side, lots=lots, day=day, open_s=open_s, hold_s=hold,
                           ip=f"192.0.2.{10 + 2 * k}", device=f"dev-{a}")
                other_lots = (lots * Decimal(str(rng.choice((1, 1, 1.1, 0.9))))).quantize(Decimal("0.01"))
                self.trade(b, symbol=other, side=-side, lots=other_lots, day=day, open_s=open_s + rng.uniform(0.5, 20),
                           hold_s=hold + rng.uniform(-30, 30), ip=f"192.0.2.{11 + 2 * k}", device=f"dev-{b}",
                           partial=t % 2 == 0)
            self.truth["hedging"].append([a, b])
        # copy groups
        for k in range(spec.copy_groups):
            members = [f"CPY{k + 1:02d}{chr(65 + m)}" for m in range(rng.randint(3, 5))]
            factors = [Decimal("1")] + [Decimal(rng.choice(("0.5", "1", "2", "3"))) for _ in members[1:]]
            for x in members:
                self.identity(x, f"T-{x}", ip=f"203.0.113.{30 + 6 * k + members.index(x)}", device=f"dev-{x}",
                              payment=f"card-{x}")
            for _ in range(rng.randint(20, 35)):
                day, open_s = rng.randrange(spec.days), self.random_time()
                if rng.random() < 0.3:
                    symbol, open_s = "EURUSD", DAY_OPEN_S + rng.uniform(0, 300)
                else:
                    symbol = rng.choice(("EURUSD", "GBPUSD", "XAUUSD", "US30"))
                side, lots, hold = rng.choice((1, -1)), self.lots(), rng.uniform(120, 2 * 3600)
                for m, x in enumerate(members):
                    if m and rng.random() < 0.1:
                        continue  # a follower misses a signal
                    delay = 0 if m == 0 else rng.uniform(0.2, 2.5)
                    self.trade(x, symbol=symbol, side=side, lots=(lots * factors[m]).quantize(Decimal("0.01")), day=day,
                               open_s=open_s + delay, hold_s=hold + rng.uniform(0, 3), ip=f"203.0.113.{30 + 6 * k + m}",
                               device=f"dev-{x}")
            self.truth["copy"].append(members)
        # latency arbitrage
        for a in arbs:
            self.identity(a, f"T-{a}", ip=f"192.0.2.{100 + arbs.index(a)}", device=f"dev-{a}", payment=f"card-{a}")
        for a, symbol, day, step, direction in arb_trades:
            at = self.market.first + step * STEP_S + rng.uniform(0.1, 0.9)
            self.trade(a, symbol=symbol, side=direction, lots=self.lots(), day=day, open_s=at,
                       hold_s=rng.uniform(3, 8), ip=f"192.0.2.{100 + arbs.index(a)}", device=f"dev-{a}", stale=True,
                       order_lag_ms=rng.randint(1000, 1500))
        self.truth["latency"] = [[a] for a in arbs]
        # martingale
        for k in range(spec.martingale):
            a = f"MRT{k + 1:02d}"
            self.identity(a, f"T-{a}", ip=f"198.18.0.{k + 1}", device=f"dev-{a}", payment=f"card-{a}")
            lots = Decimal("0.1")
            count, day, open_s = rng.randint(25, 40), 0, DAY_OPEN_S + rng.uniform(0, 1800)
            for _ in range(count):  # one trade after another: each size follows the previous result
                if open_s > DAY_CLOSE_S - 1800:
                    day, open_s = (day + 1) % spec.days, DAY_OPEN_S + rng.uniform(0, 1800)
                symbol, side, hold = rng.choice(("EURUSD", "XAUUSD")), rng.choice((1, -1)), rng.uniform(60, 900)
                before = len(self.events)
                self.trade(a, symbol=symbol, side=side, lots=lots, day=day, open_s=open_s, hold_s=hold,
                           ip=f"198.18.0.{k + 1}", device=f"dev-{a}")
                net = sum(Decimal(e["profit"]) + Decimal(e["commission"]) for _ms, _n, e in self.events[before:]
                          if e["type"] == "trade_closed")
                lots = min(lots * 2, Decimal("12.8")) if net < 0 else Decimal("0.1")
                open_s += hold + rng.uniform(60, 1800)
            self.truth["martingale"].append([a])
        # linked groups: "different" traders behind one device, one IPv6 /64 or one card
        self.linked_groups(spec.linked_groups, rng)
        self.reference_prices()

    def linked_groups(self, count: int, rng) -> None:
        """Small groups of "different" traders who share one device, one IPv6 /64 or one card, in turn."""
        for k in range(count):
            members = [f"MUL{k + 1:02d}{chr(65 + m)}" for m in range(rng.randint(2, 4))]
            shared = ("device", "ipv6", "payment")[k % 3]
            for m, x in enumerate(members):
                device = f"dev-shared-{k}" if shared == "device" else f"dev-{x}"
                ip = f"2001:db8:ff{k:02x}:7::" if shared == "ipv6" else f"198.51.200.{10 * k + m}"
                self.identity(x, f"T-{x}", ip=ip, device=device,
                              payment=f"card-shared-{k}" if shared == "payment" else f"card-{x}")
                self.honest(x, ip=ip, device=device, crowd=False, scalper=False)
            self.truth["linkage"].append(members)

    def reference_prices(self) -> None:
        """News (high impact, on the calendar) and the reference prices."""
        spec = self.spec
        for day in range(spec.days):
            base = _day_ms(spec, day)
            if day % 2 == 0:
                self.emit(base + 13 * 3600 * 1000 + 30 * 60 * 1000,
                          {"type": "news", "title": "US data", "currency": "USD", "impact": "high"})
            for name, digits, spread, *_ in SYMBOLS:
                mids = self.market.mid[name][day]
                for step in range(self.market.steps):
                    bid = int(mids[step]) - spread // 2
                    self.emit(base + (self.market.first + step * STEP_S) * 1000,
                              {"type": "price", "symbol": name, "bid": _price_text(bid, digits),
                               "ask": _price_text(bid + spread, digits)})

    # ---------------------------------------------------------------- abusers who adapt
    def adaptive_abuse(self, arbs: list[str], arb_trades: list) -> None:
        spec, rng = self.spec, self.rng
        q = lambda x: Decimal(str(x)).quantize(Decimal("0.01"))  # noqa: E731
        # honest offices: 8–11 people behind one IPv4, each on their own device and card, many in the crowds
        for o in range(spec.offices):
            members = [f"OFF{o + 1:02d}{chr(65 + m)}" for m in range(rng.randint(8, 11))]
            for x in members:
                self.identity(x, f"T-{x}", ip=f"198.51.250.{o + 1}", device=f"dev-{x}", payment=f"card-{x}")
                self.honest(x, ip=f"198.51.250.{o + 1}", device=f"dev-{x}", crowd=rng.random() < 0.6,
                            scalper=False, new_york=True)
            self.truth["honest_overlap"]["offices"].extend(members)
        # hedging: the second account's legs open 30 s – 10 min later, often in two or three parts, at another
        # size; both accounts also trade on their own; every other pair opens all its hedges inside the London
        # or New York open crowd (where hundreds of opens lie between its legs), the rest a third of them
        for k in range(spec.hedge_pairs):
            a, b = f"HDG{k + 1:02d}A", f"HDG{k + 1:02d}B"
            ips = {a: f"192.0.2.{10 + 2 * k}", b: f"192.0.2.{11 + 2 * k}"}
            for x in (a, b):
                self.identity(x, f"T-{x}", ip=ips[x], device=f"dev-{x}", payment=f"card-{x}")
            correlated = k % 4 == 3
            for t in range(rng.randint(14, 24)):
                day, open_s = rng.randrange(spec.days), self.random_time()
                if t % 3 == 0 or k % 2 == 0:  # inside a crowd: a third of the time, or always
                    open_s = (DAY_OPEN_S if k % 2 == 0 else NY_OPEN_S) + rng.uniform(0, 300)
                side, lots = rng.choice((1, -1)), self.lots()
                hold = rng.uniform(1800, 4 * 3600)
                self.trade(a, symbol="EURUSD", side=side, lots=lots, day=day, open_s=open_s, hold_s=hold,
                           ip=ips[a], device=f"dev-{a}")
                total = lots * Decimal(str(rng.uniform(0.75, 1.3)))
                parts = rng.choice((1, 2, 2, 3))
                delay = rng.uniform(30, 600)
                for part in range(parts):
                    size = max(q(total / parts), Decimal("0.01"))
                    start = open_s + delay + part * rng.uniform(20, 240)
                    self.trade(b, symbol="GBPUSD" if correlated else "EURUSD", side=-side, lots=size, day=day,
                               open_s=start, hold_s=max(hold - (start - open_s) + rng.uniform(-300, 300), 600),
                               ip=ips[b], device=f"dev-{b}")
            for x in (a, b):
                self.honest(x, ip=ips[x], device=f"dev-{x}", crowd=False, scalper=False, trades=(2, 4))
            self.truth["hedging"].append([a, b])
        # copy groups: followers 5–45 s late, at their own scale with rounding, skipping a quarter of the signals
        for k in range(spec.copy_groups):
            members = [f"CPY{k + 1:02d}{chr(65 + m)}" for m in range(rng.randint(3, 6))]
            factors = [1.0] + [rng.choice((0.3, 0.5, 1.5, 2.0, 3.0)) for _ in members[1:]]
            ips = {x: f"203.0.113.{30 + 6 * k + m}" for m, x in enumerate(members)}
            for x in members:
                self.identity(x, f"T-{x}", ip=ips[x], device=f"dev-{x}", payment=f"card-{x}")
            for _ in range(rng.randint(22, 36)):
                day, open_s = rng.randrange(spec.days), self.random_time()
                if rng.random() < 0.3:
                    open_s = (DAY_OPEN_S if rng.random() < 0.5 else NY_OPEN_S) + rng.uniform(0, 300)
                    symbol = "EURUSD"
                else:
                    symbol = rng.choice(("EURUSD", "GBPUSD", "XAUUSD", "US30"))
                side, lots, hold = rng.choice((1, -1)), self.lots(), rng.uniform(300, 2 * 3600)
                for m, x in enumerate(members):
                    if m and rng.random() < 0.25:
                        continue  # a follower misses a signal
                    delay = 0 if m == 0 else rng.uniform(5, 45)
                    size = max(q(float(lots) * factors[m] * rng.uniform(0.95, 1.05)), Decimal("0.01"))
                    self.trade(x, symbol=symbol, side=side, lots=size, day=day, open_s=open_s + delay,
                               hold_s=hold + rng.uniform(-60, 60), ip=ips[x], device=f"dev-{x}")
            for x in members[1:]:
                self.honest(x, ip=ips[x], device=f"dev-{x}", crowd=False, scalper=False, trades=(2, 5))
            self.truth["copy"].append(members)
        # latency arbitrage, mixed with ordinary trades
        for a in arbs:
            ip = f"192.0.2.{100 + arbs.index(a)}"
            self.identity(a, f"T-{a}", ip=ip, device=f"dev-{a}", payment=f"card-{a}")
            self.honest(a, ip=ip, device=f"dev-{a}", crowd=True, scalper=True, trades=(8, 14), new_york=True)
        for a, symbol, day, step, direction in arb_trades:
            at = self.market.first + step * STEP_S + rng.uniform(0.1, 0.9)
            ip = f"192.0.2.{100 + arbs.index(a)}"
            self.trade(a, symbol=symbol, side=direction, lots=self.lots(), day=day, open_s=at, hold_s=rng.uniform(3, 30),
                       ip=ip, device=f"dev-{a}", stale=True, order_lag_ms=rng.randint(400, 1500))
        self.truth["latency"] = [[a] for a in arbs]
        # martingale: each its own multiplier (1.7–2.5×) and cap
        for k in range(spec.martingale):
            a = f"MRT{k + 1:02d}"
            ip = f"198.18.0.{k + 1}"
            self.identity(a, f"T-{a}", ip=ip, device=f"dev-{a}", payment=f"card-{a}")
            factor = Decimal(rng.choice(("1.7", "2", "2.5")))
            base, cap = Decimal(rng.choice(("0.1", "0.2", "0.3"))), Decimal(rng.choice(("6", "10", "20")))
            lots, day, open_s = base, 0, DAY_OPEN_S + rng.uniform(0, 1800)
            for _ in range(rng.randint(30, 45)):
                if open_s > DAY_CLOSE_S - 1800:
                    day, open_s = (day + 1) % spec.days, DAY_OPEN_S + rng.uniform(0, 1800)
                symbol, side, hold = rng.choice(("EURUSD", "XAUUSD", "GBPUSD")), rng.choice((1, -1)), rng.uniform(60, 1500)
                before = len(self.events)
                self.trade(a, symbol=symbol, side=side, lots=lots, day=day, open_s=open_s, hold_s=hold, ip=ip,
                           device=f"dev-{a}")
                net = sum(Decimal(e["profit"]) + Decimal(e["commission"]) for _ms, _n, e in self.events[before:]
                          if e["type"] == "trade_closed")
                lots = min(q(lots * factor), cap) if net < 0 else base
                open_s += hold + rng.uniform(60, 1800)
            self.truth["martingale"].append([a])
        # small linked groups as before (device, /64, card) ...
        self.linked_groups(spec.linked_groups, rng)
        # ... and large rings: many "different" traders on one device (more sharers than any office)
        ring = [f"RNG1{m:02d}" for m in range(spec.device_ring)]
        for x in ring:
            self.identity(x, f"T-{x}", ip=f"198.51.201.{ring.index(x) + 1}", device="dev-ring-1", payment=f"card-{x}")
            self.honest(x, ip=f"198.51.201.{ring.index(x) + 1}", device="dev-ring-1", crowd=False, scalper=False,
                        trades=(8, 20))
        self.truth["linkage"].append(ring)
        # one operator on one IPv6 /64, a device per account, trading one signal with jitter on every account
        # it skips half the signals on each account: the /64 alone is weak, the trading corroborates it
        ring = [f"RNG2{m:02d}" for m in range(spec.ipv6_ring)]
        for x in ring:
            self.identity(x, f"T-{x}", ip="2001:db8:beef:1::", device=f"dev-{x}", payment=f"card-{x}")
        for _ in range(rng.randint(30, 40)):
            day, open_s = rng.randrange(spec.days), self.random_time()
            symbol, side, hold = rng.choice(("EURUSD", "GBPUSD", "XAUUSD")), rng.choice((1, -1)), rng.uniform(600, 7200)
            for x in ring:
                if rng.random() < 0.5:
                    continue
                self.trade(x, symbol=symbol, side=side, lots=self.lots(), day=day, open_s=open_s + rng.uniform(0, 50),
                           hold_s=hold, ip="2001:db8:beef:1::", device=f"dev-{x}")
        self.truth["linkage"].append(ring)
        self.truth["also"]["copy"] = list(ring)  # they do trade one signal: a copy finding on them is no error


def generate(spec: AbuseSpec) -> tuple[list[dict], dict[str, dict], dict]:
    """The firm's events (time order), its CRM (account → trader, payments) and the ground truth."""
    builder = _Builder(spec)
    builder.build()
    builder.events.sort(key=lambda item: (item[0], item[1]))
    truth = builder.truth
    truth["config"] = {"correlated": [list(map(list, g)) for g in CORRELATED]}
    return [e for _ms, _n, e in builder.events], builder.crm, truth


def write_firm(spec: AbuseSpec, directory: str | Path) -> dict[str, Path]:
    """Write ``events.ndjson``, ``crm.json`` and ``truth.json`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    events, crm, truth = generate(spec)
    paths = {"events": out / "events.ndjson", "crm": out / "crm.json", "truth": out / "truth.json"}
    with paths["events"].open("w") as fh:
        for event in events:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
    paths["crm"].write_text(json.dumps(crm, indent=1, sort_keys=True))
    paths["truth"].write_text(json.dumps(truth, indent=1, sort_keys=True))
    return paths


__all__ = ["AbuseSpec", "CORRELATED", "generate", "write_firm"]
