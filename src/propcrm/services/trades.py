"""The trade-history projection: each account's positions, opened and closed, with costs and partial closes.

The evaluation write path (:func:`propcrm.services.outcomes.write_outcomes`, shared by the embedded
worker and the partitioned NATS workers) calls :func:`record` with the trade events the engine accepted
in the batch, inside the transaction of the batch's decisions: the projection is exactly as committed
as the decisions. With them go the account's logins (``session`` events) and the time and ip/device of
every trade event to :class:`~propcrm.adapters.db.models.AccountActivity`. Readers — the portal's
journal, statistics and P/L calendar, the back office's trade list, the firm-wide trade export and the
abuse analysis (:mod:`propcrm.services.analysis`) — read these tables, never ``raw_events``.

A position is a :class:`~propcrm.adapters.db.models.Trade` row: ``open`` from its ``trade_opened``;
every ``trade_closed`` adds a :class:`~propcrm.adapters.db.models.TradeClose` row and its lots,
lot-weighted price, profit and costs to the trade; the trade is ``closed`` once the closed lots reach
the opened lots. A close of a position propcrm never saw opened (trading before the account was
connected) becomes a closed trade without an open side: its result still counts.

:func:`backfill` rebuilds an account's projection from the embedded event log (``propcrm trades
backfill``): for databases evaluated before the projection existed.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
from sqlalchemy import String, bindparam, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.events import DECODER, Session as LoginEvent, TradeClosed, TradeOpened

ZERO = Decimal(0)
PLACES = Decimal(1).scaleb(-8)
TRADE_TYPES = ("trade_opened", "trade_closed")
TRADE_EVENTS = (TradeOpened, TradeClosed)
#: what the drivers hand to :func:`record`: the trades, and the logins (``session``) for the activity
PROJECTED_TYPES = (*TRADE_TYPES, "session")
PROJECTED_EVENTS = (TradeOpened, TradeClosed, LoginEvent)
IDENTITY_MAX = 200  # account_activity.ip / device
_CHUNK = 500


@dataclass(eq=False)
class _Position:
    """A trade row being built: ``id`` is ``None`` until inserted."""

    values: dict
    id: int | None = None
    changed: bool = False
    closes: list[dict] = field(default_factory=list)


def _new(firm_id: str, account_id: int, position: str) -> dict:
    return {"firm_id": firm_id, "account_id": account_id, "position": position, "symbol": None, "side": None,
            "lots": None, "open_ts": None, "open_price": None, "open_event_id": None, "order_ts": None, "as_sent": None,
            "closed_lots": ZERO,
            "close_ts": None, "close_price": None, "profit": ZERO, "commission": ZERO, "swap": ZERO, "net": ZERO,
            "closes": 0, "held_s": None, "status": "open"}


def _as_sent(lots: Decimal, price: Decimal) -> str | None:
    """``"lots price"`` as the platform wrote them (the Decimal keeps its digits), or ``None`` past the column."""
    text = f"{lots} {price}"
    return text if len(text) <= 80 else None


def _apply_close(position: _Position, ev: TradeClosed, seq: int | None) -> None:
    row = position.values
    before = row["closed_lots"]
    closed = before + ev.lots
    if row["close_price"] is None or not closed:
        price = ev.price
    else:
        price = ((row["close_price"] * before + ev.price * ev.lots) / closed).quantize(PLACES)
    net = ev.profit + ev.commission + ev.swap
    row.update(closed_lots=closed, close_ts=ev.ts, close_price=price, profit=row["profit"] + ev.profit,
               commission=row["commission"] + ev.commission, swap=row["swap"] + ev.swap, net=row["net"] + net,
               closes=row["closes"] + 1)
    if row["lots"] is None or closed >= row["lots"]:
        row["status"] = "closed"
        if row["open_ts"] is not None:
            row["held_s"] = max(int((ev.ts - row["open_ts"]).total_seconds()), 0)
    position.changed = True
    position.closes.append({"firm_id": row["firm_id"], "account_id": row["account_id"], "event_id": ev.id,
                            "event_seq": seq, "ts": ev.ts, "lots": ev.lots, "price": ev.price, "profit": ev.profit,
                            "commission": ev.commission, "swap": ev.swap, "net": net, "reason": ev.reason,
                            "as_sent": _as_sent(ev.lots, ev.price)})


def _identity(ip: str | None, device: str | None) -> tuple[str | None, str | None]:
    """The linkage values of a login or an open: the network of the IP, the device, clipped to the column."""
    from ..analytics.frame import network_of

    return ((network_of(ip)[:IDENTITY_MAX] or None) if ip else None,
            (device[:IDENTITY_MAX] or None) if device else None)


def record(session: Session, accounts: Sequence[tuple[str, int, Sequence[tuple[object, int | None]]]]) -> int:
    """Project the accepted trade and login events of a batch: ``accounts`` are (firm id, account id,
    [(event, stored seq or None)] in the order applied). Set-based: one read of the open positions the
    batch closes, one insert of new trades, one update of changed ones, one insert of closes, one
    insert of activity rows (:class:`~propcrm.adapters.db.models.AccountActivity`). Returns the number
    of trade events projected."""
    wanted: set[tuple[int, str]] = set()
    activity: list[dict] = []
    count = 0
    for _firm, account_id, events in accounts:
        for ev, _seq in events:
            if type(ev) is TradeClosed:
                wanted.add((account_id, ev.position))
    open_rows: dict[tuple[int, str], _Position] = {}
    keys = sorted(wanted)
    for start in range(0, len(keys), _CHUNK):
        part = keys[start:start + _CHUNK]
        rows = session.execute(select(m.Trade.__table__).where(
            m.Trade.account_id.in_({a for a, _ in part}), m.Trade.position.in_({p for _, p in part}),
            m.Trade.status == "open").order_by(m.Trade.id)).mappings()
        for row in rows:
            key = (row["account_id"], row["position"])
            if key in wanted:
                values = dict(row)
                open_rows[key] = _Position({k: v for k, v in values.items() if k != "id"}, id=values["id"])
    touched: list[_Position] = []
    seen: set[int] = set()  # ids of the touched rows already in the database
    for firm_id, account_id, events in accounts:
        for ev, seq in events:
            kind = type(ev)
            if kind is LoginEvent:
                ip, device = _identity(ev.ip, ev.device)
                activity.append({"firm_id": firm_id, "account_id": account_id, "kind": "session", "ts": ev.ts,
                                 "ip": ip, "device": device})
                continue
            if kind is TradeOpened:
                ip, device = _identity(ev.ip, ev.device)
                activity.append({"firm_id": firm_id, "account_id": account_id, "kind": "opened", "ts": ev.ts,
                                 "ip": ip, "device": device})
                position = _Position(_new(firm_id, account_id, ev.position), changed=True)
                position.values.update(symbol=ev.symbol, side=ev.side, lots=ev.lots, open_ts=ev.ts,
                                       open_price=ev.price, open_event_id=ev.id, order_ts=ev.order_ts,
                                       as_sent=_as_sent(ev.lots, ev.price))
                open_rows[(account_id, ev.position)] = position
                touched.append(position)
            elif kind is TradeClosed:
                activity.append({"firm_id": firm_id, "account_id": account_id, "kind": "closed", "ts": ev.ts,
                                 "ip": None, "device": None})
                key = (account_id, ev.position)
                position = open_rows.get(key)
                if position is None:  # opened before propcrm saw the account
                    position = open_rows[key] = _Position(_new(firm_id, account_id, ev.position), changed=True)
                    touched.append(position)
                elif position.id is not None and position.id not in seen:
                    seen.add(position.id)
                    touched.append(position)
                _apply_close(position, ev, seq)
                if position.values["status"] == "closed":
                    del open_rows[key]
            else:
                continue
            count += 1
    if activity:
        session.execute(insert(m.AccountActivity.__table__), activity)
    if not touched:
        return count
    known = [p for p in touched if p.id is not None]
    fresh = [p for p in touched if p.id is None]
    if fresh:
        table = m.Trade.__table__
        ids = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                              [p.values for p in fresh]).scalars()
        for position, new_id in zip(fresh, ids):
            position.id = new_id
    if known:
        table = m.Trade.__table__
        columns = ("closed_lots", "close_ts", "close_price", "profit", "commission", "swap", "net", "closes",
                   "held_s", "status")
        session.execute(update(table).where(table.c.id == bindparam("trade_id"))
                        .values({c: bindparam(f"new_{c}") for c in columns}),
                        [{"trade_id": p.id, **{f"new_{c}": p.values[c] for c in columns}} for p in known])
    closes = [{**close, "trade_id": p.id} for p in touched for close in p.closes]
    if closes:
        session.execute(insert(m.TradeClose.__table__), closes)
    return count


# ---------------------------------------------------------------------------------------------------
# backfill


@dataclass
class BackfillReport:
    accounts: int = 0
    events: int = 0


def backfill(session: Session, *, firm_id: str, account_ids: Sequence[int] | None = None) -> BackfillReport:
    """Rebuild the projection of a firm's accounts (all, or ``account_ids``) from the embedded event log:
    the applied ``trade_opened``/``trade_closed``/``session`` rows of ``raw_events`` in stored order
    (trades, closes and the account activity). What was
    projected for those accounts before is replaced, so running it twice gives the same rows."""
    report = BackfillReport()
    query = select(m.Account.id).where(m.Account.firm_id == firm_id)
    if account_ids is not None:
        query = query.where(m.Account.id.in_(list(account_ids)))
    ids = sorted(session.scalars(query))
    for start in range(0, len(ids), _CHUNK):
        part = ids[start:start + _CHUNK]
        session.execute(delete(m.TradeClose).where(m.TradeClose.account_id.in_(part))
                        .execution_options(synchronize_session=False))
        session.execute(delete(m.Trade).where(m.Trade.account_id.in_(part))
                        .execution_options(synchronize_session=False))
        session.execute(delete(m.AccountActivity).where(m.AccountActivity.account_id.in_(part))
                        .execution_options(synchronize_session=False))
        rows = session.execute(select(m.RawEvent.account_id, m.RawEvent.seq, m.RawEvent.body).where(
            m.RawEvent.firm_id == firm_id, m.RawEvent.account_id.in_(part), m.RawEvent.type.in_(PROJECTED_TYPES),
            m.RawEvent.status == "applied").order_by(m.RawEvent.seq))
        by_account: dict[int, list] = {}
        for account_id, seq, body in rows:
            try:
                ev = DECODER.decode(body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # never applied as such; the evaluation set it aside
            by_account.setdefault(account_id, []).append((ev, seq))
        report.events += record(session, [(firm_id, a, evs) for a, evs in sorted(by_account.items())])
        report.accounts += len(part)
    return report


def projected(session: Session, *, firm_id: str, account_id: int) -> bool:
    """Whether the account has any trade in the projection."""
    return session.scalar(select(func.count()).select_from(m.Trade).where(
        m.Trade.firm_id == firm_id, m.Trade.account_id == account_id)) > 0


# ---------------------------------------------------------------------------------------------------
# reads: the journal, statistics and the daily P/L calendar (the portal and the back office)


@dataclass
class JournalPage:
    items: list[dict]
    total: int
    limit: int
    offset: int


_JOURNAL_COLUMNS = ("id", "position", "symbol", "side", "lots", "open_ts", "open_price", "closed_lots", "close_ts",
                    "close_price", "profit", "commission", "swap", "net", "closes", "held_s")


def journal(session: Session, *, firm_id: str, account_id: int, limit: int = 50, offset: int = 0) -> JournalPage:
    """The account's closed trades, newest close first (one index walk: ``ix_trades_journal``). The
    caller has checked that the account is in the reader's scope."""
    table = m.Trade.__table__
    where = (table.c.firm_id == firm_id, table.c.account_id == account_id, table.c.status == "closed")
    total = session.scalar(select(func.count()).select_from(table).where(*where)) or 0
    rows = session.execute(select(*(table.c[c] for c in _JOURNAL_COLUMNS)).where(*where)
                           .order_by(table.c.close_ts.desc(), table.c.id.desc()).limit(limit).offset(offset)).mappings()
    return JournalPage([dict(row) for row in rows], total, limit, offset)


@dataclass
class Statistics:
    trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_win: Decimal = ZERO
    gross_loss: Decimal = ZERO  # negative or zero
    net: Decimal = ZERO
    best: Decimal | None = None
    worst: Decimal | None = None
    lots: Decimal = ZERO
    held_s_total: int = 0
    held_count: int = 0

    @property
    def win_rate(self) -> Decimal | None:
        """Percent of closed trades with a positive net result (two places)."""
        return (Decimal(self.wins) * 100 / self.trades).quantize(Decimal("0.01")) if self.trades else None

    @property
    def average_win(self) -> Decimal | None:
        return (self.gross_win / self.wins).quantize(Decimal("0.01")) if self.wins else None

    @property
    def average_loss(self) -> Decimal | None:
        return (self.gross_loss / self.losses).quantize(Decimal("0.01")) if self.losses else None

    @property
    def profit_factor(self) -> Decimal | None:
        """Gross win / gross loss; ``None`` without a losing trade (unbounded)."""
        return (self.gross_win / -self.gross_loss).quantize(Decimal("0.01")) if self.gross_loss else None

    @property
    def average_held_s(self) -> int | None:
        return self.held_s_total // self.held_count if self.held_count else None


#: Statistics by account, with the version of the closed trades they were computed from. A closed trade
#: never changes again (the write path only updates open ones; a backfill inserts new rows), so (number of
#: closed trades, highest id) names the set exactly: one index lookup decides whether to read 10,000 rows.
_STATS: OrderedDict[tuple[str, int], tuple[tuple[int, int], Statistics]] = OrderedDict()
_STATS_KEPT = 512


def statistics(session: Session, *, firm_id: str, account_id: int) -> Statistics:
    """Win rate, average win and loss, best and worst trade, lots, holding time and profit factor of the
    account's closed trades (net of costs; a trade at exactly 0 is neither a win nor a loss). Exact:
    the sums are Decimal, read column by column (SQLite keeps money as text). Kept per account until its
    closed trades change (:data:`_STATS`)."""
    table = m.Trade.__table__
    where = (table.c.firm_id == firm_id, table.c.account_id == account_id, table.c.status == "closed")
    count, highest = session.execute(select(func.count(), func.max(table.c.id)).where(*where)).one()
    version = (count or 0, highest or 0)
    key = (firm_id, account_id)
    kept = _STATS.get(key)
    if kept is not None and kept[0] == version:
        _STATS.move_to_end(key)
        return kept[1]
    stats = _compute_statistics(session, where)
    _STATS[key] = (version, stats)
    while len(_STATS) > _STATS_KEPT:
        _STATS.popitem(last=False)
    return stats


def _compute_statistics(session: Session, where) -> Statistics:
    table = m.Trade.__table__
    stats = Statistics()
    # as exact decimal text (NUMERIC cast to text on PostgreSQL, the stored text on SQLite), parsed here:
    # 10,000 trades read in a few milliseconds instead of through the Money type row by row
    rows = session.execute(select(cast(table.c.net, String), cast(table.c.closed_lots, String), table.c.held_s)
                           .where(*where)).all()
    for net_text, lots_text, held in rows:
        net, lots = Decimal(net_text), Decimal(lots_text)
        stats.trades += 1
        stats.net += net
        stats.lots += lots
        if net > 0:
            stats.wins += 1
            stats.gross_win += net
        elif net < 0:
            stats.losses += 1
            stats.gross_loss += net
        if stats.best is None or net > stats.best:
            stats.best = net
        if stats.worst is None or net < stats.worst:
            stats.worst = net
        if held is not None:
            stats.held_s_total += held
            stats.held_count += 1
    return stats


def closes_between(session: Session, *, firm_id: str, account_id: int, start: dt.datetime,
                   end: dt.datetime) -> list[tuple[dt.datetime, Decimal]]:
    """(time, net result) of the account's closes in [start, end): partial closes count when they happen."""
    table = m.TradeClose.__table__
    return [(ts, net) for ts, net in session.execute(select(table.c.ts, table.c.net).where(
        table.c.firm_id == firm_id, table.c.account_id == account_id, table.c.ts >= start, table.c.ts < end))]


def daily_results(closes: Sequence[tuple[dt.datetime, Decimal]], session_of) -> dict[dt.date, tuple[Decimal, int]]:
    """The net result and number of closes per trading day; ``session_of(ts)`` names the trading day
    (the pack's :class:`~propcrm.domain.calendar.TradingCalendar`: its timezone, day start and DST)."""
    out: dict[dt.date, tuple[Decimal, int]] = {}
    for ts, net in closes:
        day = session_of(ts)
        total, count = out.get(day, (ZERO, 0))
        out[day] = (total + net, count + 1)
    return out


# ---------------------------------------------------------------------------------------------------
# the firm-wide trade list (API and CSV export)

TRADE_STATUSES = ("open", "closed")
EXPORT_COLUMNS = ("id", "account", "position", "symbol", "side", "lots", "order_ts", "open_ts", "open_price",
                  "closed_lots", "close_ts", "close_price", "profit", "commission", "swap", "net", "closes", "held_s",
                  "status")


def firm_trades(session: Session, *, firm_id: str, status: str | None = None, opened_from: dt.datetime | None = None,
                opened_before: dt.datetime | None = None, account_id: int | None = None, after_id: int = 0,
                limit: int = 500) -> list[dict]:
    """The firm's trades (every account, open and closed) in projection order, ``limit`` after the trade
    id ``after_id`` (keyset paging: an export of millions of trades reads each page by the primary key).
    ``opened_from`` ≤ open time < ``opened_before`` leaves out trades without an open side."""
    if status is not None and status not in TRADE_STATUSES:
        raise ValueError(f"`status`: one of {', '.join(TRADE_STATUSES)}")
    table = m.Trade.__table__
    query = (select(*(table.c[c] for c in EXPORT_COLUMNS if c != "account"), m.Account.external_id.label("account"))
             .join(m.Account, m.Account.id == table.c.account_id)
             .where(table.c.firm_id == firm_id, table.c.id > after_id).order_by(table.c.id).limit(limit))
    if status is not None:
        query = query.where(table.c.status == status)
    if account_id is not None:
        query = query.where(table.c.account_id == account_id)
    if opened_from is not None:
        query = query.where(table.c.open_ts >= opened_from)
    if opened_before is not None:
        query = query.where(table.c.open_ts < opened_before)
    return [dict(row) for row in session.execute(query).mappings()]


def all_firm_trades(session: Session, *, firm_id: str, page: int = 1000, **filters) -> Iterator[dict]:
    """Every trade :func:`firm_trades` selects, page by page."""
    after = 0
    while True:
        rows = firm_trades(session, firm_id=firm_id, after_id=after, limit=page, **filters)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1]["id"]


__all__ = ["BackfillReport", "EXPORT_COLUMNS", "TRADE_STATUSES", "all_firm_trades", "firm_trades", "JournalPage", "PROJECTED_EVENTS", "PROJECTED_TYPES", "Statistics", "TRADE_EVENTS", "TRADE_TYPES", "backfill", "closes_between",
           "daily_results", "journal", "projected", "record", "statistics"]
