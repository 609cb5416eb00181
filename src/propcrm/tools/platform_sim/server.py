"""The simulator's trading core: a small MT5-like trade server.

What it does, in MetaTrader 5's terms (the Web API layer in ``webapi.py`` shows it):

* **accounts** (``IMTUser``): login, group, rights (``USER_RIGHT_TRADE_DISABLED`` refuses orders with
  10017 "Trade disabled"), leverage, balance, credit; created with ``user/add``, changed with
  ``user/update``;
* **a price feed**: a seeded random walk per symbol (EURUSD, GBPUSD, USDJPY, XAUUSD), bid/ask with a
  spread, ticking every ``tick_s``;
* **market orders** (from its traders, ``/sim/order``, or a dealer's ``TA_DEALER_POS_EXECUTE``) with
  optional stop loss and take profit, in a hedging account (one position per order); positions
  **marked to market** on every tick; SL and TP trigger closing deals (``DEAL_REASON_SL``/``_TP``);
  **stop out** at ``stop_out_level`` % margin level closes the worst position first (``DEAL_REASON_SO``);
* **commissions** per lot and side (the entry half taken from the balance at once, as MT5 does) and
  **swaps** per lot and night (triple on Wednesday) accumulated in the position's ``Storage`` and
  realised with its closing deal;
* **balance operations** (``DEAL_BALANCE`` deals);
* **deals** numbered from one sequence, with the Web API's documented fields.

Times are the server's wall clock (``zone``, default UTC+2 with the EU's DST as many brokers run),
as MT5 reports them. Money is kept in integer cents. Every change is written to SQLite (WAL) *before*
anyone can read it, so a killed and restarted simulator has every deal it ever showed, with the same
tickets, and goes on numbering after them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import math
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgspec

from ...adapters.platforms.servertime import ServerClock

_ENC = msgspec.json.Encoder()

USER_RIGHT_ENABLED = 0x1
USER_RIGHT_TRADE_DISABLED = 0x4
DEFAULT_RIGHTS = 0x163
DEAL_BUY, DEAL_SELL, DEAL_BALANCE = 0, 1, 2
ENTRY_IN, ENTRY_OUT = 0, 1
REASON_CLIENT, REASON_DEALER, REASON_SL, REASON_TP, REASON_SO = 0, 2, 3, 4, 5

DONE = "10009 Request executed"
TRADE_DISABLED = "10017 Trade disabled"
INVALID_VOLUME = "10014 Invalid volume"
NO_MONEY = "10019 Not enough money"
INVALID = "10013 Invalid request"
INVALID_STOPS = "10016 Invalid stops or price"
NOT_FOUND = "13 Not found"
ACCOUNT_DISABLED = "1002 Account disabled"  # MT_RET_AUTH_ACCOUNT_DISABLED


@dataclass
class SymbolSpec:
    name: str
    digits: int
    contract_size: float
    price: float
    volatility: float  # relative standard deviation per second
    spread_points: int
    commission_cents_per_lot: int = 350  # per side
    swap_long_cents: int = -700  # per lot per night
    swap_short_cents: int = 200

    @property
    def base(self) -> str:
        return self.name[:3]

    @property
    def quote(self) -> str:
        return self.name[3:6]

    @property
    def point(self) -> float:
        return 10.0 ** -self.digits


DEFAULT_SYMBOLS = (
    SymbolSpec("EURUSD", 5, 100_000, 1.08500, 0.00004, 8),
    SymbolSpec("GBPUSD", 5, 100_000, 1.27000, 0.00005, 12),
    SymbolSpec("USDJPY", 3, 100_000, 150.000, 0.00004, 10),
    SymbolSpec("XAUUSD", 2, 100, 2300.00, 0.00008, 25, commission_cents_per_lot=500, swap_long_cents=-2500,
               swap_short_cents=800),
)


@dataclass
class Account:
    login: int
    group: str
    name: str
    rights: int = DEFAULT_RIGHTS
    leverage: int = 100
    balance_c: int = 0
    credit_c: int = 0
    email: str = ""
    comment: str = ""
    pass_main: str = ""
    pass_investor: str = ""
    registration: int = 0
    last_access: int = 0
    last_ip: str = ""
    disabled_at: float | None = None  # wall clock when trading was disabled (for the benchmark)
    refused: int = 0  # orders refused because trading is disabled


@dataclass
class Position:
    ticket: int
    login: int
    symbol: str
    action: int  # 0 buy, 1 sell
    volume_ext: int
    price_open: float
    time_ms: int
    sl: float = 0.0
    tp: float = 0.0
    storage_c: int = 0
    comment: str = ""
    profit: float = 0.0  # marked to market, account currency
    price_current: float = 0.0


@dataclass
class Deal:
    Deal: int
    Login: int
    Order: int
    Action: int
    Entry: int
    Time: int
    TimeMsc: int
    Symbol: str
    Price: float
    Volume: int
    VolumeExt: int
    Profit_c: int
    Storage_c: int
    Commission_c: int
    PositionID: int
    Reason: int
    Comment: str
    Digits: int = 5
    ContractSize: float = 0.0
    PriceSL: float = 0.0
    PriceTP: float = 0.0
    PricePosition: float = 0.0
    VolumeClosed: int = 0
    Dealer: int = 0
    wall_ms: int = 0  # the wall clock when it was executed (for the benchmark's latency)

    def web_json(self) -> bytes:
        """:meth:`to_web` encoded, made once: a deal never changes, and a connector reads each one many
        times (every poll re-reads the last second or so)."""
        cached = self.__dict__.get("_web")
        if cached is None:
            cached = self.__dict__["_web"] = _ENC.encode(self.to_web())
        return cached

    def to_web(self) -> dict[str, Any]:
        """As the Web API documents a deal (numbers as JSON strings)."""
        d = self.Digits
        return {"Deal": str(self.Deal), "ExternalID": "", "Login": str(self.Login), "Dealer": str(self.Dealer),
                "Order": str(self.Order), "Action": str(self.Action), "Entry": str(self.Entry), "Digits": str(d),
                "DigitsCurrency": "2", "ContractSize": f"{self.ContractSize:.2f}", "Time": str(self.Time),
                "TimeMsc": str(self.TimeMsc), "Symbol": self.Symbol, "Price": f"{self.Price:.{d}f}",
                "PriceSL": f"{self.PriceSL:.{d}f}", "PriceTP": f"{self.PriceTP:.{d}f}", "Volume": str(self.Volume),
                "VolumeExt": str(self.VolumeExt), "Profit": cents(self.Profit_c), "Storage": cents(self.Storage_c),
                "Commission": cents(self.Commission_c), "RateProfit": "1.00000000", "RateMargin": "1.00000000",
                "ExpertID": "0", "PositionID": str(self.PositionID), "Comment": self.Comment,
                "PricePosition": f"{self.PricePosition:.{d}f}", "VolumeClosed": str(self.VolumeClosed),
                "Flags": "0", "Reason": str(self.Reason), "Gateway": "", "ModificationFlags": "0"}


def _record(obj: Any, names: tuple[str, ...]) -> bytes:
    """A dataclass of plain values as the JSON object ``asdict`` would give (without its deep copies)."""
    return _ENC.encode({name: getattr(obj, name) for name in names})


def cents(value: int) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // 100}.{value % 100:02d}"


def group_matches(group: str, mask: str) -> bool:
    """MT5 group masks: comma-separated patterns with ``*``; a pattern starting with ``!`` excludes."""
    wanted = False
    for raw in mask.split(","):
        pattern = raw.strip()
        if not pattern:
            continue
        exclude = pattern.startswith("!")
        pattern = pattern[1:] if exclude else pattern
        escaped = pattern.replace("[", "[[]").lower()
        if fnmatch.fnmatchcase(group.lower(), escaped):
            if exclude:
                return False
            wanted = True
    return wanted


@dataclass
class Result:
    retcode: str
    order: int = 0
    deal: int = 0
    price: float = 0.0
    volume_ext: int = 0


_ACCOUNT_FIELDS = tuple(f.name for f in fields(Account))
_POSITION_FIELDS = tuple(f.name for f in fields(Position))
_DEAL_FIELDS = tuple(f.name for f in fields(Deal))


class SimServer:
    def __init__(self, path: str | None = None, *, zone: str = "Europe/Athens", seed: int = 7,
                 symbols: Iterable[SymbolSpec] = DEFAULT_SYMBOLS, stop_out_level: float = 50.0,
                 first_login: int = 100_000, first_ticket: int = 5_000_000, first_deal: int = 9_000_000,
                 wall: Any = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = ServerClock(zone)
        self.wall = wall
        self.random = random.Random(seed)
        self.symbols = {s.name: SymbolSpec(**asdict(s)) for s in symbols}
        self.stop_out_level = stop_out_level
        self.accounts: dict[int, Account] = {}
        self.positions: dict[int, Position] = {}
        self.open_by_login: dict[int, dict[int, Position]] = {}
        self.deals: list[Deal] = []
        self.deals_by_login: dict[int, list[Deal]] = {}
        self.prices: dict[str, tuple[float, float]] = {}
        self.next_login, self.next_ticket, self.next_deal = first_login, first_ticket, first_deal
        self.orders_refused = 0
        self.requests: dict[int, dict[str, Any]] = {}
        self.next_request = 1
        self._last_server_day: dt.date | None = None
        self._db: sqlite3.Connection | None = None
        self.listeners: list[Any] = []  # objects with on_deal / on_position / on_login (the fake Manager API)
        self._batch: dict[str, Any] | None = None  # changes of a batch, written when it ends (see batch())
        self.accounts_version = 0  # moves when an account is added or changes group (group masks' cache)
        self._masks: dict[str, tuple[int, list[int]]] = {}
        self._times_in_order = True  # every deal's Time ≥ the one before (false if the clock went back)
        self.price_generation = 0  # moves when positions are marked anew or charged a swap
        self.touched: dict[int, int] = {}  # login → moves with each of its deals and changes
        for spec in self.symbols.values():
            self._quote(spec, spec.price)
        if path:
            self._open(path)

    # ------------------------------------------------------------------ persistence
    def _open(self, path: str) -> None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS accounts (login INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS positions (ticket INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS deals (deal INTEGER PRIMARY KEY, login INTEGER, body TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db = db
        for (body,) in db.execute("SELECT body FROM accounts"):
            account = Account(**json.loads(body))
            self.accounts[account.login] = account
        for (body,) in db.execute("SELECT body FROM positions"):
            position = Position(**json.loads(body))
            self.positions[position.ticket] = position
            self.open_by_login.setdefault(position.login, {})[position.ticket] = position
        for (body,) in db.execute("SELECT body FROM deals ORDER BY deal"):
            deal = Deal(**json.loads(body))
            if self.deals and deal.Time < self.deals[-1].Time:
                self._times_in_order = False
            self.deals.append(deal)
            self.deals_by_login.setdefault(deal.Login, []).append(deal)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        self.next_login = max(self.next_login, int(meta.get("next_login", 0)), max(self.accounts, default=0) + 1)
        self.next_ticket = max(self.next_ticket, int(meta.get("next_ticket", 0)), max(self.positions, default=0) + 1)
        if self.deals:
            self.next_deal = max(self.next_deal, self.deals[-1].Deal + 1)
        for name, value in json.loads(meta.get("prices", "{}")).items():
            if name in self.symbols:
                self._quote(self.symbols[name], float(value))

    def _save(self, *, accounts: Iterable[Account] = (), positions: Iterable[Position] = (),
              gone: Iterable[int] = (), deals: Iterable[Deal] = ()) -> None:
        if self._db is None:
            return
        batch = self._batch
        if batch is not None:  # written when the batch ends, before anyone can read (the lock is held)
            for a in accounts:
                batch["accounts"][a.login] = a
            for p in positions:
                batch["positions"][p.ticket] = p
            for t in gone:
                batch["positions"].pop(t, None)
                batch["gone"].append(t)
            batch["deals"].extend(deals)
            return
        self._write(accounts, positions, gone, deals)

    def _write(self, accounts: Iterable[Account], positions: Iterable[Position], gone: Iterable[int],
               deals: Iterable[Deal]) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)",
                           [(a.login, _record(a, _ACCOUNT_FIELDS)) for a in accounts])
            db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?)",
                           [(p.ticket, _record(p, _POSITION_FIELDS)) for p in positions])
            db.executemany("DELETE FROM positions WHERE ticket = ?", [(t,) for t in gone])
            db.executemany("INSERT INTO deals VALUES (?, ?, ?)", [(d.Deal, d.Login, _record(d, _DEAL_FIELDS))
                                                                  for d in deals])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("next_login", str(self.next_login)), ("next_ticket", str(self.next_ticket)),
                ("prices", json.dumps({n: (b + a) / 2 for n, (b, a) in self.prices.items()}))])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several operations under the lock and in one write transaction (the simulated traders' orders
        of a moment): nothing of them can be read before it is written, as for a single operation."""
        with self.lock:
            if self._batch is not None or self._db is None:  # nested, or nothing to write
                yield
                return
            self._batch = batch = {"accounts": {}, "positions": {}, "gone": [], "deals": []}
            try:
                yield
            finally:
                self._batch = None
                if batch["accounts"] or batch["positions"] or batch["gone"] or batch["deals"]:
                    self._write(batch["accounts"].values(), batch["positions"].values(), batch["gone"],
                                batch["deals"])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ time and prices
    def server_ms(self) -> int:
        return self.clock.to_server_ms(dt.datetime.fromtimestamp(self.wall(), dt.timezone.utc))

    def _quote(self, spec: SymbolSpec, mid: float) -> None:
        half = spec.spread_points * spec.point / 2
        self.prices[spec.name] = (round(mid - half, spec.digits), round(mid + half, spec.digits))

    def set_price(self, symbol: str, bid: float) -> None:
        """Move a symbol's bid (tests and demos), then re-mark, trigger SL/TP and stop out."""
        with self.lock:
            spec = self.symbols[symbol]
            self._quote(spec, bid + spec.spread_points * spec.point / 2)
            self._after_prices()

    def tick(self, seconds: float = 0.1) -> None:
        with self.lock:
            for spec in self.symbols.values():
                bid, ask = self.prices[spec.name]
                mid = (bid + ask) / 2
                step = self.random.gauss(0.0, spec.volatility * math.sqrt(max(seconds, 1e-6)))
                self._quote(spec, mid * (1 + step))
            self._rollover_if_due()
            self._after_prices()

    def _rollover_if_due(self) -> None:
        day = dt.datetime.fromtimestamp(self.server_ms() / 1000, dt.timezone.utc).date()
        if self._last_server_day is None:
            self._last_server_day = day
        elif day != self._last_server_day:
            self._last_server_day = day
            self.rollover(triple=day.weekday() == 3)  # Wednesday night counts three

    def rollover(self, *, triple: bool = False) -> None:
        """Charge a night's swap to every open position (three on Wednesday), into its ``Storage``."""
        with self.lock:
            factor = 3 if triple else 1
            self.price_generation += 1
            for position in self.positions.values():
                spec = self.symbols[position.symbol]
                rate = spec.swap_long_cents if position.action == 0 else spec.swap_short_cents
                position.storage_c += round(rate * position.volume_ext / 100_000_000) * factor
            self._save(positions=list(self.positions.values()))

    def _usd(self, spec: SymbolSpec, amount_quote: float) -> float:
        if spec.quote == "USD":
            return amount_quote
        bid, ask = self.prices[spec.name]
        return amount_quote / ((bid + ask) / 2)

    def _mark(self, position: Position) -> None:
        spec = self.symbols[position.symbol]
        bid, ask = self.prices[position.symbol]
        lots = position.volume_ext / 100_000_000
        if position.action == 0:
            position.price_current = bid
            diff = bid - position.price_open
        else:
            position.price_current = ask
            diff = position.price_open - ask
        position.profit = self._usd(spec, diff * spec.contract_size * lots)

    def _margin(self, position: Position, leverage: int) -> float:
        spec = self.symbols[position.symbol]
        lots = position.volume_ext / 100_000_000
        notional = spec.contract_size * lots if spec.base == "USD" else spec.contract_size * lots * position.price_open
        return notional / max(leverage, 1)

    def _after_prices(self) -> None:
        self.price_generation += 1
        closing: list[tuple[Position, int]] = []
        by_login: dict[int, list[Position]] = {}
        # what _mark does, with each symbol's figures looked up once per tick instead of once per position
        marks = {name: (spec.contract_size, bid, ask, spec.quote == "USD", (bid + ask) / 2)
                 for name, spec in self.symbols.items() for bid, ask in (self.prices[name],)}
        for position in self.positions.values():
            contract_size, bid, ask, usd, mid = marks[position.symbol]
            lots = position.volume_ext / 100_000_000
            if position.action == 0:
                position.price_current = bid
                diff = bid - position.price_open
            else:
                position.price_current = ask
                diff = position.price_open - ask
            amount = diff * contract_size * lots
            position.profit = amount if usd else amount / mid
            by_login.setdefault(position.login, []).append(position)
            if position.action == 0:
                if position.sl and bid <= position.sl:
                    closing.append((position, REASON_SL))
                elif position.tp and bid >= position.tp:
                    closing.append((position, REASON_TP))
            else:
                if position.sl and ask >= position.sl:
                    closing.append((position, REASON_SL))
                elif position.tp and ask <= position.tp:
                    closing.append((position, REASON_TP))
        for position, reason in closing:
            self._close(position, reason)
        for login, positions in by_login.items():
            account = self.accounts.get(login)
            if account is None:
                continue
            live = [p for p in positions if p.ticket in self.positions]
            while live:
                equity, margin = self._equity_margin(account)
                if margin <= 0 or equity / margin * 100 > self.stop_out_level:
                    break
                worst = min(live, key=lambda p: p.profit)
                self._close(worst, REASON_SO)
                live.remove(worst)

    # ------------------------------------------------------------------ accounts
    def add_user(self, *, group: str, name: str, leverage: int = 100, rights: int = DEFAULT_RIGHTS, email: str = "",
                 comment: str = "", pass_main: str = "", pass_investor: str = "", login: int = 0) -> Account:
        with self.lock:
            if login and login in self.accounts:
                raise ValueError("3004 Account already exists")
            if not login:
                login = self.next_login
                self.next_login += 1
            now = self.server_ms() // 1000
            account = Account(login=login, group=group, name=name, rights=rights, leverage=leverage, email=email,
                              comment=comment, pass_main=pass_main, pass_investor=pass_investor, registration=now)
            self.accounts[login] = account
            self.accounts_version += 1
            self._save(accounts=[account])
            return account

    def update_user(self, login: int, **changes: Any) -> Account:
        with self.lock:
            account = self.accounts[login]
            before = account.rights
            for name, value in changes.items():
                setattr(account, name, value)
            if "group" in changes:
                self.accounts_version += 1
            self.touched[login] = self.touched.get(login, 0) + 1
            if account.rights & USER_RIGHT_TRADE_DISABLED and not before & USER_RIGHT_TRADE_DISABLED:
                account.disabled_at = self.wall()
            elif not account.rights & USER_RIGHT_TRADE_DISABLED:
                account.disabled_at = None
            self._save(accounts=[account])
            return account

    def login_seen(self, login: int, ip: str) -> None:
        with self.lock:
            account = self.accounts[login]
            account.last_access = self.server_ms() // 1000
            account.last_ip = ip
            self._save(accounts=[account])
            self._notify("on_login", account, ip)

    def trade_state(self, login: int) -> dict[str, float]:
        with self.lock:
            account = self.accounts[login]
            positions = list(self.open_by_login.get(login, {}).values())
            profit = sum(p.profit for p in positions)
            storage = sum(p.storage_c for p in positions) / 100
            margin = sum(self._margin(p, account.leverage) for p in positions)
            balance = account.balance_c / 100
            credit = account.credit_c / 100
            floating = profit + storage
            equity = balance + credit + floating
            return {"balance": balance, "credit": credit, "profit": profit, "storage": storage,
                    "floating": floating, "equity": equity, "margin": margin, "free": equity - margin,
                    "positions": len(positions)}

    def _equity_margin(self, account: Account) -> tuple[float, float]:
        """``trade_state``'s equity and margin, the same sums in the same order, without the rest."""
        positions = self.open_by_login.get(account.login)
        if not positions:
            return account.balance_c / 100 + account.credit_c / 100 + (0 + 0 / 100), 0
        leverage = account.leverage
        profit = sum(p.profit for p in positions.values())
        storage = sum(p.storage_c for p in positions.values()) / 100
        margin = sum(self._margin(p, leverage) for p in positions.values())
        return account.balance_c / 100 + account.credit_c / 100 + (profit + storage), margin

    # ------------------------------------------------------------------ deals
    def _deal(self, **fields: Any) -> Deal:
        now_ms = self.server_ms()
        deal = Deal(Deal=self.next_deal, Time=now_ms // 1000, TimeMsc=now_ms, wall_ms=int(self.wall() * 1000), **fields)
        self.next_deal += 1
        if self.deals and deal.Time < self.deals[-1].Time:
            self._times_in_order = False
        self.touched[deal.Login] = self.touched.get(deal.Login, 0) + 1
        self.deals.append(deal)
        self.deals_by_login.setdefault(deal.Login, []).append(deal)
        self._notify("on_deal", deal)
        return deal

    def _notify(self, name: str, *args: Any) -> None:
        for listener in self.listeners:
            handler = getattr(listener, name, None)
            if handler is not None:
                handler(*args)

    def balance_operation(self, login: int, amount_c: int, comment: str, *, action: int = DEAL_BALANCE) -> Deal:
        with self.lock:
            account = self.accounts.get(login)
            if account is None:
                raise KeyError(NOT_FOUND)
            if action == 3:  # credit
                account.credit_c += amount_c
            else:
                account.balance_c += amount_c
            deal = self._deal(Login=login, Order=0, Action=action, Entry=ENTRY_IN, Symbol="", Price=0.0, Volume=0,
                              VolumeExt=0, Profit_c=amount_c, Storage_c=0, Commission_c=0, PositionID=0,
                              Reason=REASON_DEALER, Comment=comment[:31])
            self._save(accounts=[account], deals=[deal])
            return deal

    def execute(self, login: int, symbol: str, side: int, volume_ext: int, *, sl: float = 0.0, tp: float = 0.0,
                comment: str = "", reason: int = REASON_CLIENT, dealer: bool = False) -> Result:
        """A market order opening a position (hedging: each order is its own position)."""
        with self.lock:
            account = self.accounts.get(login)
            spec = self.symbols.get(symbol)
            if account is None or spec is None:
                return Result(INVALID)
            if not account.rights & USER_RIGHT_ENABLED and not dealer:
                return Result(ACCOUNT_DISABLED)
            if account.rights & USER_RIGHT_TRADE_DISABLED and not dealer:
                account.refused += 1
                self.orders_refused += 1
                return Result(TRADE_DISABLED)
            if volume_ext <= 0 or volume_ext % 1_000_000:  # 0.01 lot steps
                return Result(INVALID_VOLUME)
            bid, ask = self.prices[symbol]
            price = ask if side == 0 else bid
            if (sl and ((side == 0 and sl >= bid) or (side == 1 and sl <= ask))) or \
               (tp and ((side == 0 and tp <= bid) or (side == 1 and tp >= ask))):
                return Result(INVALID_STOPS)
            ticket = self.next_ticket
            self.next_ticket += 1
            position = Position(ticket=ticket, login=login, symbol=symbol, action=side, volume_ext=volume_ext,
                                price_open=price, time_ms=self.server_ms(), sl=sl, tp=tp, comment=comment[:31])
            state = self.trade_state(login)
            if state["free"] < self._margin(position, account.leverage):
                self.next_ticket -= 1
                return Result(NO_MONEY)
            commission = -round(spec.commission_cents_per_lot * volume_ext / 100_000_000)
            account.balance_c += commission
            self.positions[ticket] = position
            self.open_by_login.setdefault(login, {})[ticket] = position
            self._mark(position)
            deal = self._deal(Login=login, Order=ticket, Action=side, Entry=ENTRY_IN, Symbol=symbol, Price=price,
                              Volume=volume_ext // 10_000, VolumeExt=volume_ext, Profit_c=0, Storage_c=0,
                              Commission_c=commission, PositionID=ticket, Reason=REASON_DEALER if dealer else reason,
                              Comment=comment[:31], Digits=spec.digits, ContractSize=spec.contract_size, PriceSL=sl,
                              PriceTP=tp)
            self._save(accounts=[account], positions=[position], deals=[deal])
            return Result(DONE, order=ticket, deal=deal.Deal, price=price, volume_ext=volume_ext)

    def close_position(self, ticket: int, *, reason: int = REASON_CLIENT, login: int | None = None,
                       dealer: bool = False) -> Result:
        with self.lock:
            position = self.positions.get(ticket)
            if position is None or (login is not None and position.login != login):
                return Result("10036 Position already closed")
            account = self.accounts[position.login]
            if account.rights & USER_RIGHT_TRADE_DISABLED and not dealer:
                account.refused += 1
                self.orders_refused += 1
                return Result(TRADE_DISABLED)
            self._mark(position)
            deal = self._close(position, REASON_DEALER if dealer else reason)
            return Result(DONE, order=deal.Order, deal=deal.Deal, price=deal.Price, volume_ext=deal.VolumeExt)

    def _close(self, position: Position, reason: int) -> Deal:
        spec = self.symbols[position.symbol]
        account = self.accounts[position.login]
        profit_c = round(position.profit * 100)
        commission = -round(spec.commission_cents_per_lot * position.volume_ext / 100_000_000)
        account.balance_c += profit_c + commission + position.storage_c
        del self.positions[position.ticket]
        self.open_by_login.get(position.login, {}).pop(position.ticket, None)
        order = self.next_ticket
        self.next_ticket += 1
        deal = self._deal(Login=position.login, Order=order, Action=1 - position.action, Entry=ENTRY_OUT,
                          Symbol=position.symbol, Price=position.price_current, Volume=position.volume_ext // 10_000,
                          VolumeExt=position.volume_ext, Profit_c=profit_c, Storage_c=position.storage_c,
                          Commission_c=commission, PositionID=position.ticket, Reason=reason, Comment="",
                          Digits=spec.digits, ContractSize=spec.contract_size, PriceSL=position.sl,
                          PriceTP=position.tp, PricePosition=position.price_open, VolumeClosed=position.volume_ext // 10_000)
        self._save(accounts=[account], gone=[position.ticket], deals=[deal])
        return deal

    # ------------------------------------------------------------------ queries
    def logins_of(self, *, logins: Iterable[int] | None = None, group: str | None = None) -> list[int]:
        with self.lock:
            if group:
                cached = self._masks.get(group)
                if cached is None or cached[0] != self.accounts_version:
                    cached = self._masks[group] = (self.accounts_version, [a.login for a in self.accounts.values()
                                                                           if group_matches(a.group, group)])
                return list(cached[1])
            return [login for login in (logins or []) if login in self.accounts]

    def deals_between(self, logins: Iterable[int], start_s: int, end_s: int) -> list[Deal]:
        with self.lock:
            logins = list(logins)
            wanted = set(logins)
            if len(wanted) > 8 and len(wanted) == len(logins) and self._times_in_order:
                # many accounts (a group mask): one walk back over all deals — they are numbered in time
                # order — instead of one per account and a sort
                deals = self.deals
                i = len(deals)
                while i and deals[i - 1].Time >= start_s:
                    i -= 1
                return [d for d in deals[i:] if d.Time <= end_s and d.Login in wanted]
            found = []
            for login in logins:
                for deal in reversed(self.deals_by_login.get(login, [])):
                    if deal.Time < start_s:
                        break
                    if deal.Time <= end_s:
                        found.append(deal)
            found.sort(key=lambda d: d.Deal)
            return found

    def positions_of(self, logins: Iterable[int]) -> list[Position]:
        with self.lock:
            return [p for login in logins for p in self.open_by_login.get(login, {}).values()]


__all__ = ["Account", "DEFAULT_SYMBOLS", "Deal", "Position", "Result", "SimServer", "SymbolSpec", "cents",
           "group_matches"]
