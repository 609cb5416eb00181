"""The equity-points projection kept bounded: older points rolled up per hour, then per trading day.

The evaluation writes a point per evaluated event (at most :data:`~propcrm.services.equity_points.PER_MINUTE`
per account and minute). Kept for ever that is a row per event. This roll-up keeps:

- the **current and the previous trading day** (in the pack's timezone, from its ``day_start``) as written;
- before that, per **hour of a trading day** (hours counted from the day's start, so a bucket never spans two
  trading days, whatever the zone's offset), and before :data:`DAY_AFTER` per **trading day**, the bucket's
  *open* and *close* (its first and last point), the points of the **lowest and highest** equity, balance,
  daily floor and max-loss level (the earliest of equals), and **every point that carries decisions** (the
  breach, the pause, the warning a dispute reads).

A rolled-up bucket is a subset of the stored points — real points with the values they had, compared as
Decimal — so the chart (:func:`propcrm.services.equity_points.read`, the back office's and the portal's
``series.json``) reads rolled-up and recent points the same way, and every extreme of a bucket (of every span
of buckets) is exactly the stored series'. Rolling a day's hour-buckets up again per day keeps what rolling
the raw day would (the first, last, extreme and decision points of a day are kept by its hours), so a run
is idempotent and a run over a part of the data already rolled changes nothing.

**Incremental**: per account :class:`~propcrm.adapters.db.models.EquityRollup` holds the minute up to which
its points are rolled per hour and per day; a run reads only the points between those marks and the new
horizons. **Safe beside the writers**: it deletes only rows it read, by id, in buckets that ended before
the account's newest point; the evaluation writes an account's points in time order (the engine refuses an
older event) and touches only the minute of its newest point and later ones, so the two never write the
same rows. Reads and choices happen in a read-only session; the deletes are committed in groups of
accounts with their marks, each account's only if its marks row is as read (:func:`_commit`). A re-bind's
rebuild (:func:`propcrm.services.equity_replay.backfill_points`) replaces an account's points and resets its
marks (:func:`forget`). Two runs at once (two processes) delete the same rows: keeping is idempotent.

Where it runs: inside ``propcrm serve`` and ``propcrm work`` (embedded; :func:`rollup_loop`, every
:data:`INTERVAL` seconds) and as ``propcrm points rollup`` (scale-out: a scheduled job beside the workers,
e.g. hourly; any database).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.session import readonly_sessions
from ..domain.calendar import TradingCalendar
from .accounts import compiled_pack
from .equity_points import minute_of

#: older than this (from the start of the trading day holding it): one bucket per trading day
DAY_AFTER = dt.timedelta(days=30)
#: seconds between two runs inside ``propcrm serve``
INTERVAL = 600.0
#: accounts per transaction (the write lock is held for one chunk's deletes only)
CHUNK = 200
_IDS = 500
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_TINY = dt.timedelta(microseconds=1)
_HOUR = dt.timedelta(hours=1)


@dataclass
class RollupReport:
    accounts: int = 0  # accounts whose marks moved
    read: int = 0  # points read
    deleted: int = 0  # points deleted
    cpu_s: float = 0.0

    def add(self, other: "RollupReport") -> None:
        self.accounts += other.accounts
        self.read += other.read
        self.deleted += other.deleted
        self.cpu_s += other.cpu_s


def _minute_start(minute: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(minutes=minute)


def hour_bucket(calendar: TradingCalendar, ts: dt.datetime) -> tuple[dt.date, int]:
    """(trading day, hours since its start) of ``ts``: a bucket never spans two trading days."""
    day, start, _ = calendar.session(ts)
    return day, int((ts - start) // _HOUR)


def day_bucket(calendar: TradingCalendar, ts: dt.datetime) -> tuple[dt.date, int]:
    """(trading day, -1) of ``ts``."""
    return calendar.session(ts)[0], -1


def horizons(calendar: TradingCalendar, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(hours, days): points before ``hours`` (the start of the previous trading day) are rolled per hour,
    before ``days`` (the start of the trading day :data:`DAY_AFTER` before ``now``) per trading day."""
    _, today, _ = calendar.session(now)
    _, previous, _ = calendar.session(today - _TINY)
    _, old, _ = calendar.session(now - DAY_AFTER)
    return previous, min(old, previous)


def keep(points: Sequence[Any]) -> set[int]:
    """The indexes of one bucket's points (in time order) it keeps: the first and the
    last; of equity, balance, daily floor and max-loss level the lowest and the highest (the earliest of
    equals; a level that is None is not compared); and every point with decisions."""
    n = len(points)
    if n <= 2:
        return set(range(n))
    chosen = {0, n - 1}
    for field in ("equity", "balance", "daily_floor", "max_loss"):
        low = high = None
        for i, p in enumerate(points):
            value = getattr(p, field)
            if value is None:
                continue
            if low is None or value < low[0]:
                low = (value, i)
            if high is None or value > high[0]:
                high = (value, i)
        if low is not None:
            chosen.add(low[1])
            chosen.add(high[1])
    chosen.update(i for i, p in enumerate(points) if p.decisions)
    return chosen


def _span(calendar: TradingCalendar, minute: int, per_day: bool) -> tuple[int, int]:
    """[first, end) minute numbers of the bucket holding ``minute``: its trading day, or its hour of it
    (counted from the day's start; the last one ends with the day on a 25-hour DST day)."""
    ts = _minute_start(minute)
    _day, start, end = calendar.session(ts)
    if not per_day:
        start = start + (ts - start) // _HOUR * _HOUR
        end = min(start + _HOUR, end)
    return minute_of(start), minute_of(end)


def dropped(points: Sequence[Any], calendar: TradingCalendar, *, days_before: int) -> list[int]:
    """The ids of an account's ``points`` (in time order; objects with ``id``, ``minute``, the four values
    and ``decisions``) that the roll-up deletes: buckets of those before minute ``days_before`` are trading
    days, of the others hours of a trading day. The caller passes only points of closed buckets. The
    calendar is asked once per bucket, not per point."""
    out: list[int] = []
    n, i = len(points), 0
    while i < n:
        minute = points[i].minute
        first, end = _span(calendar, minute, minute < days_before)
        if minute < days_before:
            end = min(end, days_before)
        j = i + 1
        while j < n and first <= points[j].minute < end:
            j += 1
        if j - i > 2:
            part = points[i:j]
            kept = keep(part)
            out.extend(p.id for k, p in enumerate(part) if k not in kept)
        i = j
    return out


def _calendar(session: Session, cache: dict[int, TradingCalendar], version_id: int, phase: str | None):
    found = cache.get(version_id)
    if found is None:
        version = session.get(m.RulePackVersion, version_id)
        found = cache[version_id] = compiled_pack(version).phase(phase).calendar
    return found


def _plan(session: Session, firm_id: str, after: int, now: dt.datetime, cache: dict) -> list[tuple]:
    """The next :data:`CHUNK` accounts of the firm after id ``after`` that have points: (account id,
    calendar, hours mark, days mark, newest point's minute, newest point's time)."""
    table = m.EquityPoint.__table__
    newest = (select(func.max(table.c.minute)).where(table.c.account_id == m.Account.id)
              .correlate(m.Account).scalar_subquery())
    rows = session.execute(
        select(m.Account.id, m.Account.pack_version_id, m.Account.phase, m.EquityRollup.hours_until,
               m.EquityRollup.days_until, newest.label("newest"), m.EquityRollup.rolled_at)
        .outerjoin(m.EquityRollup, m.EquityRollup.account_id == m.Account.id)
        .where(m.Account.firm_id == firm_id, m.Account.id > after)
        .order_by(m.Account.id).limit(CHUNK)).all()
    out = []
    for account_id, version_id, phase, hours_until, days_until, newest_minute, rolled_at in rows:
        calendar = _calendar(session, cache, version_id, phase)
        out.append((account_id, calendar, hours_until, days_until, newest_minute, rolled_at))
    return out


def _bounds(calendar: TradingCalendar, now: dt.datetime, newest_minute: int):
    """(hours limit, days limit) as minute numbers for an account: the horizons, but never into the bucket
    of the account's newest point (the writers may still add to it). Trading days and their hours start on
    whole minutes, so the newest point's minute tells its buckets."""
    hours_at, days_at = horizons(calendar, now)
    newest_ts = _minute_start(newest_minute)
    _day, start, _ = calendar.session(newest_ts)
    hour_open = start + (newest_ts - start) // _HOUR * _HOUR
    return minute_of(min(hours_at, hour_open)), minute_of(min(days_at, start))


def _targets(row: tuple, now: dt.datetime) -> tuple[int, int, int, int] | None:
    """(hours from, days from, hours to, days to) of a planned account, None when its marks stay."""
    _account_id, calendar, hours_until, days_until, newest_minute, _rolled_at = row
    if newest_minute is None:
        return None
    hours_to, days_to = _bounds(calendar, now, newest_minute)
    hours_from, days_from = hours_until or 0, days_until or 0
    hours_to, days_to = max(hours_to, hours_from), max(days_to, days_from)
    if hours_to == hours_from and days_to == days_from:
        return None
    return hours_from, days_from, hours_to, days_to


@dataclass
class _Work:
    """What a chunk's read found: the ids to delete and the marks to move (account, old hours, old days,
    new hours, new days, whether a marks row existed)."""

    report: RollupReport
    drop: dict[int, list[int]]  # account → ids
    marks: list[tuple]  # (account, rolled_at as read or None, new hours, new days)
    last: int | None


def _compute(session: Session, *, firm_id: str, after: int, now: dt.datetime, cache: dict) -> _Work:
    """Plan the next :data:`CHUNK` accounts after ``after`` and read their new points (one read per distinct
    range, in the index's time order), choosing what each closed bucket drops. Reads only."""
    started = time.process_time()
    report = RollupReport()
    plan = _plan(session, firm_id, after, now, cache)
    if not plan:
        return _Work(report, {}, [], None)
    table = m.EquityPoint.__table__
    ranges: dict[tuple[int, int], list[int]] = {}  # (from, to) minute → accounts
    tiers: dict[int, tuple[TradingCalendar, int]] = {}
    ranges_of: dict[int, int] = {}
    marks: list[tuple] = []
    for row in plan:
        target = _targets(row, now)
        if target is None:
            continue
        account_id, calendar, rolled_at = row[0], row[1], row[5]
        hours_from, days_from, hours_to, days_to = target
        if days_to > days_from:
            ranges.setdefault((days_from, days_to), []).append(account_id)
            ranges_of[account_id] = ranges_of.get(account_id, 0) + 1
        hour_from = max(hours_from, days_to)
        if hours_to > hour_from:
            ranges.setdefault((hour_from, hours_to), []).append(account_id)
            ranges_of[account_id] = ranges_of.get(account_id, 0) + 1
        tiers[account_id] = (calendar, days_to)
        marks.append((account_id, rolled_at, hours_to, days_to))
    by_account: dict[int, list] = {}
    for (lo, hi), accounts in ranges.items():
        for start in range(0, len(accounts), _IDS):
            part = accounts[start:start + _IDS]
            # the time order is the index's (account, minute, ts); ``ts`` itself is not needed (buckets
            # start on whole minutes), nor the decisions' text
            rows = session.execute(
                select(table.c.id, table.c.account_id, table.c.minute, table.c.equity, table.c.balance,
                       table.c.daily_floor, table.c.max_loss, table.c.decisions.isnot(None).label("decisions"))
                .where(table.c.account_id.in_(part), table.c.minute >= lo, table.c.minute < hi)
                .order_by(table.c.account_id, table.c.minute, table.c.ts, table.c.id)).all()
            for row in rows:
                by_account.setdefault(row.account_id, []).append(row)
    drop: dict[int, list[int]] = {}
    for account_id, rows in by_account.items():
        report.read += len(rows)
        calendar, days_to = tiers[account_id]
        if ranges_of[account_id] > 1:  # the day range and the hour range after it: one time order
            rows.sort(key=lambda r: r.minute)  # stable: each range came in time order
        drop[account_id] = dropped(rows, calendar, days_before=days_to)
    report.cpu_s = time.process_time() - started
    return _Work(report, drop, marks, plan[-1][0])


def _delete(session: Session, ids: Sequence[int]) -> None:
    table = m.EquityPoint.__table__
    for start in range(0, len(ids), _IDS):
        session.execute(delete(table).where(table.c.id.in_(list(ids[start:start + _IDS]))))


def _commit(session: Session, firm_id: str, work: _Work, marks: Sequence[tuple], now: dt.datetime) -> int:
    """Delete the chosen points of ``marks``' accounts and move their marks, in ``session``'s transaction —
    only for accounts whose marks row is as the read saw it (``rolled_at``; or still absent). A rebuild
    (:func:`forget`) since the read changed it: that account's ids may be reused (SQLite hands out a deleted
    highest rowid again), so nothing of it is deleted now; its points are rolled up at the next run.
    Returns the points deleted."""
    rollups = m.EquityRollup.__table__
    ids = [mark[0] for mark in marks]
    present = dict(session.execute(select(rollups.c.account_id, rollups.c.rolled_at)
                                   .where(rollups.c.account_id.in_(ids))).all())
    ok = [mark for mark in marks if (mark[0] not in present if mark[1] is None else present.get(mark[0]) == mark[1])]
    gone = [i for mark in ok for i in work.drop.get(mark[0], ())]
    _delete(session, gone)
    fresh = [{"account_id": a, "firm_id": firm_id, "hours_until": h, "days_until": d, "rolled_at": now}
             for a, seen, h, d in ok if seen is None]
    if fresh:
        session.execute(insert(rollups), fresh)
    for a, seen, h, d in ok:
        if seen is not None:  # compare-and-set too: on PostgreSQL a rebuild may commit after the check above
            session.execute(update(rollups).where(rollups.c.account_id == a, rollups.c.rolled_at == seen)
                            .values(hours_until=h, days_until=d, rolled_at=now))
    return len(gone)


def rollup_firm(session_factory, *, firm_id: str, now: dt.datetime | None = None,
                deletes_per_commit: int = 1000) -> RollupReport:
    """One incremental run over a firm's accounts, :data:`CHUNK` accounts at a time. A chunk is read and
    decided in a read-only session (on SQLite: no write lock, WAL reads never wait), then committed in
    groups of accounts of about ``deletes_per_commit`` deleted points, each group's deletes with its
    marks (:func:`_commit`) — the writers wait for the roll-up a few milliseconds at a time, never for its
    reads. An idle run (the usual one within a trading day) writes nothing."""
    now = now or dt.datetime.now(dt.timezone.utc)
    report = RollupReport()
    cache: dict[int, TradingCalendar] = {}
    reader = readonly_sessions(session_factory)
    after = 0
    while True:
        with reader() as session:
            work = _compute(session, firm_id=firm_id, after=after, now=now, cache=cache)
        if work.last is None:
            return report
        started = time.process_time()
        deleted = 0
        group: list[tuple] = []
        size = 0
        for mark in work.marks:  # accounts grouped so a commit deletes about ``deletes_per_commit`` points
            group.append(mark)
            size += len(work.drop.get(mark[0], ()))
            if size >= deletes_per_commit:
                with session_factory.begin() as session:
                    deleted += _commit(session, firm_id, work, group, now)
                group, size = [], 0
        if group:
            with session_factory.begin() as session:
                deleted += _commit(session, firm_id, work, group, now)
        work.report.cpu_s += time.process_time() - started
        work.report.deleted = deleted
        work.report.accounts = len(work.marks)
        report.add(work.report)
        after = work.last


def rollup_chunk(session: Session, *, firm_id: str, after: int, now: dt.datetime,
                 cache: dict | None = None) -> tuple[RollupReport, int | None]:
    """Roll up the next :data:`CHUNK` accounts after ``after`` in ``session``'s one transaction (reads,
    deletes and marks). Returns (report, the last account id; None when there were none left)."""
    work = _compute(session, firm_id=firm_id, after=after, now=now, cache={} if cache is None else cache)
    if work.last is None:
        return work.report, None
    started = time.process_time()
    work.report.deleted = _commit(session, firm_id, work, work.marks, now)
    work.report.cpu_s += time.process_time() - started
    work.report.accounts = len(work.marks)
    return work.report, work.last


def rollup(session_factory, *, now: dt.datetime | None = None, firm_id: str | None = None) -> RollupReport:
    """One run over every firm (or one)."""
    with readonly_sessions(session_factory)() as session:
        firms = [firm_id] if firm_id else list(session.scalars(select(m.Firm.id).order_by(m.Firm.id)))
    report = RollupReport()
    for firm in firms:
        report.add(rollup_firm(session_factory, firm_id=firm, now=now))
    return report


def footprint(engine) -> tuple[int, int, int | None]:
    """(rows, bytes of data, bytes of pages) of ``equity_points`` and its index, for measuring the roll-up.
    SQLite: from ``dbstat`` (data = page bytes less their unused space; the file keeps freed pages for
    reuse until VACUUM). PostgreSQL: the rows' ``pg_column_size`` plus the index's size estimate from its
    entries (pages: ``pg_total_relation_size``, which shrinks only after VACUUM FULL)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(m.EquityPoint.__table__))
        if engine.dialect.name == "sqlite":
            data, pages = conn.execute(text(
                "SELECT sum(pgsize - unused), sum(pgsize) FROM dbstat "
                "WHERE name IN ('equity_points', 'ix_equity_points_account')")).one()
            return rows, int(data or 0), int(pages or 0)
        data = conn.scalar(text("SELECT coalesce(sum(pg_column_size(p.*)), 0) "
                                "+ coalesce(sum(pg_column_size(ROW(p.account_id, p.minute, p.ts))), 0) "
                                "FROM equity_points p"))
        pages = conn.scalar(text("SELECT pg_total_relation_size('equity_points')"))
        return rows, int(data), int(pages)


def forget(session: Session, *, firm_id: str, account_ids: Sequence[int]) -> None:
    """Reset the marks of accounts whose points were rebuilt (a re-bind, a backfill): rolled up afresh. The
    row is written (at 0, with a new ``rolled_at``) rather than deleted: a run that read the old points
    meanwhile then fails its compare-and-set (or its insert), so it cannot mark points it never read."""
    if not account_ids:
        return
    rollups = m.EquityRollup.__table__
    stamp = dt.datetime.now(dt.timezone.utc)
    ids = list(account_ids)
    session.execute(update(rollups).where(rollups.c.account_id.in_(ids))
                    .values(hours_until=0, days_until=0, rolled_at=stamp)
                    .execution_options(synchronize_session=False))
    present = set(session.scalars(select(rollups.c.account_id).where(rollups.c.account_id.in_(ids))))
    missing = [{"account_id": a, "firm_id": firm_id, "hours_until": 0, "days_until": 0, "rolled_at": stamp}
               for a in ids if a not in present]
    if missing:
        session.execute(insert(rollups), missing)


def rollup_loop(session_factory, stop, *, interval: float = INTERVAL) -> None:
    """The embedded service's roll-up: a run every ``interval`` seconds (0 or less: off). A failed chunk
    rolls back (its marks stay) and is done again at the next run."""
    log = logging.getLogger("propcrm.equity_rollup")
    if interval <= 0:
        return
    while not stop.wait(interval):
        try:
            report = rollup(session_factory)
            if report.deleted:
                log.info("equity points rolled up: %s accounts, %s read, %s deleted, %.2f s CPU",
                         report.accounts, report.read, report.deleted, report.cpu_s)
        except Exception:  # noqa: BLE001 - the chunk rolled back; the next run starts from the same marks
            log.exception("equity roll-up failed; retrying at the next interval")


__all__ = ["CHUNK", "DAY_AFTER", "INTERVAL", "RollupReport", "day_bucket", "dropped", "footprint", "forget",
           "horizons", "hour_bucket",
           "keep", "rollup", "rollup_chunk", "rollup_firm", "rollup_loop"]
