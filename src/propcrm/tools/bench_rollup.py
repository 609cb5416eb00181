"""``propcrm bench rollup``: the equity-points roll-up on a dense series.

``propcrm bench web`` builds a firm whose accounts trade 8 events a day; this builds the other end — accounts
whose platform reports equity every ``--every`` seconds through the trading hours (08:00–16:00 UTC, weekdays)
for ``--days`` trading days — through the evaluation's own write path (:func:`propcrm.services.equity_points.record`,
≤ 8 rows a minute), then runs the roll-up twice: the day after the last one (hours rolled up before the previous
trading day) and 40 days later (trading days rolled up). It prints the table's rows and bytes after each step and
the roll-up's CPU per million points read, with the machine's load.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from decimal import Decimal

from sqlalchemy import select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.rulepack import load_pack
from ..services.accounts import create_account
from ..services.catalog import add_pack, ensure_firm
from ..services.equity_points import Point, record
from ..services.equity_rollup import footprint, rollup

UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
FIRM = "rollup"


def _days(n: int) -> list[dt.datetime]:
    out, day = [], START
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def build(url: str, *, accounts: int, days: int, every: int, print_=print) -> dt.datetime:
    """The firm and its points; returns the last point's time."""
    migrate(url)
    engine = make_engine(url)
    factory = sessions(engine)
    with factory.begin() as s:
        if s.get(m.Firm, FIRM) is not None:
            last = s.scalar(select(m.EquityPoint.ts).order_by(m.EquityPoint.ts.desc()).limit(1))
            engine.dispose()
            return last
        ensure_firm(s, firm_id=FIRM)
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True).id
        ids = [create_account(s, firm_id=FIRM, external_id=f"R{i:05d}", pack_version_id=version,
                                  actor="bench").id
               for i in range(accounts)]
    rng = random.Random(7)
    started = time.perf_counter()
    last = START
    for day in _days(days):
        equity = {a: 10_000_000 for a in ids}  # cents
        balance = dict(equity)
        for hour in range(8, 16):
            batch = []
            for a in ids:
                points = []
                for k in range(3600 // every):
                    ts = day + dt.timedelta(hours=hour, seconds=k * every + a % every)
                    equity[a] += int(rng.gauss(0, 2000))
                    if rng.random() < 0.002:
                        balance[a] = equity[a]
                    decisions = (("warning", "daily-loss"),) if rng.random() < 0.0005 else ()
                    points.append(Point(ts, Decimal(equity[a]).scaleb(-2), Decimal(balance[a]).scaleb(-2),
                                        Decimal("95000"), Decimal("90000"), decisions))
                    last = max(last, ts)
                batch.append((FIRM, a, points))
            with factory.begin() as s:
                record(s, batch)
    print_(f"built {accounts:,} accounts × {days} trading days, a point every {every} s "
           f"({time.perf_counter() - started:.0f} s)")
    engine.dispose()
    return last


def run(url: str, *, accounts: int, days: int, every: int, print_=print) -> None:
    last = build(url, accounts=accounts, days=days, every=every, print_=print_)
    engine = make_engine(url)
    try:
        factory = sessions(engine)

        def show(label: str) -> None:
            rows, data, pages = footprint(engine)
            print_(f"{label}: {rows:,} rows, {data / 1e6:,.1f} MB of rows and index entries ({pages / 1e6:,.1f} MB of pages)")

        show("as written")
        for label, now in (("hours", last + dt.timedelta(days=1)), ("days", last + dt.timedelta(days=41))):
            load = os.getloadavg()[0]
            report = rollup(factory, now=now, firm_id=FIRM)
            per = report.cpu_s / report.read * 1e6 if report.read else 0.0
            print_(f"roll-up at {now:%Y-%m-%d %H:%M} ({label}): {report.read:,} points read, {report.deleted:,} deleted, "
                   f"{report.cpu_s:.2f} s CPU = {per:.1f} s per million points read (load {load:.1f})")
            show(f"after ({label})")
    finally:
        engine.dispose()


__all__ = ["build", "run"]
