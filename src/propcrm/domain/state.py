"""An account's evaluation state: everything the rules need to decide the next event, and no more.

A plain msgspec struct: compact (no ``__dict__``), fast to copy (the engine copies it before a
non-trivial event so an event is applied whole or not at all) and serialisable for snapshots.
Money fields are Decimal. ``low_watch``/``high_watch``/``peak_watch``/``next_deadline`` are derived
caches that let an equity update inside the band skip every rule (see ``engine.runner``); they are
recomputed whenever anything they depend on changes.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

Status = Literal["active", "paused", "breached", "passed"]

FAR_FUTURE = dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc)


class Position(msgspec.Struct, gc=False):
    symbol: str
    side: str
    lots: Decimal
    opened_lots: Decimal
    opened_at: dt.datetime
    price: Decimal
    sl: Decimal | None = None
    realised: Decimal = Decimal(0)
    in_news: bool = False
    news_deducted: Decimal = Decimal(0)  # profit deducted so far when the whole position is affected
    mark: Decimal | None = None  # floating P/L at the last tick of its symbol (None: never marked)


# At most this many trade actions are remembered per account for news published after the fact.
MAX_RECENT = 256


class RecentAction(msgspec.Struct, array_like=True, gc=False, frozen=True, omit_defaults=True):
    """A trade action remembered for a while, to judge news published after the fact.

    A close also carries the position's opening time, its realised result after this close and the
    profit deducted from the whole position so far (``news`` with ``profit_scope: position``).
    """

    ts: dt.datetime
    action: str  # "open" | "close"
    position: str
    symbol: str
    net: Decimal | None = None
    opened_at: dt.datetime | None = None
    total: Decimal | None = None
    deducted: Decimal = Decimal(0)


class AccountState(msgspec.Struct, gc=False, omit_defaults=True):
    account: str
    phase: str
    phase_index: int
    status: Status
    balance: Decimal
    equity: Decimal
    phase_start: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    # trading day
    trading_day: dt.date | None = None
    day_start_at: dt.datetime | None = None
    day_end_at: dt.datetime = FAR_FUTURE
    day_start_balance: Decimal = Decimal(0)
    day_start_equity: Decimal = Decimal(0)
    day_profit: Decimal = Decimal(0)
    best_day_profit: Decimal = Decimal(0)
    trades_today: int = 0
    opened_today: bool = False
    active_days: int = 0
    # per-rule slots (indices are assigned when the phase is compiled)
    levels: list[Decimal] = []
    peaks: list[Decimal] = []
    counts: list[int] = []
    warned: int = 0
    # positions and history
    positions: dict[str, Position] = {}
    last_trade_at: dt.datetime | None = None  # the last opening or close
    last_open_at: dt.datetime | None = None
    last_close_at: dt.datetime | None = None
    last_loss_lots: Decimal | None = None
    closed_positions: int = 0
    short_holds: int = 0
    deductions: Decimal = Decimal(0)
    recent: list[RecentAction] = []
    # deadlines
    next_weekend: dt.datetime = FAR_FUTURE
    next_deadline: dt.datetime = FAR_FUTURE
    paused_until: dt.datetime | None = None
    blocked_key: str | None = None
    # mark-to-market: some open position carries a mark (ticks move equity); and the drift found when
    # the platform last reported equity: its figure − the tick-level equity just before it
    marked: bool = False
    tick_drift: Decimal | None = None
    # fast-path band
    low_watch: Decimal = Decimal("Infinity")  # until computed, every update takes the full path
    high_watch: Decimal = Decimal("Infinity")
    peak_watch: Decimal = Decimal("Infinity")

    @property
    def open_lots(self) -> Decimal:
        return sum((p.lots for p in self.positions.values()), Decimal(0))
