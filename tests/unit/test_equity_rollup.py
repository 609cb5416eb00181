"""The equity-points roll-up's rule (services/equity_rollup.py), without a database: which stored points a
bucket keeps, that its extremes, ends and decision points are exactly the raw series', that rolling hours up
again per day is rolling the raw day up, that a second run drops nothing, and that the chart drawn from the
rolled-up points shows the raw series' extremes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import NamedTuple

from hypothesis import given, settings, strategies as st

from propcrm.domain.calendar import TradingCalendar
from propcrm.services.equity_points import minute_of
from propcrm.services.equity_rollup import day_bucket, dropped, horizons, hour_bucket, keep
from propcrm.web.queries_accounts import downsample

UTC = dt.timezone.utc
PRAGUE = TradingCalendar("Europe/Prague", dt.time(0, 0))
CHICAGO = TradingCalendar("America/Chicago", dt.time(17, 0))
KOLKATA = TradingCalendar("Asia/Kolkata", dt.time(0, 0))  # a half-hour offset: hours count from the day's start
START = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIELDS = ("equity", "balance", "daily_floor", "max_loss")


class P(NamedTuple):
    id: int
    ts: dt.datetime
    minute: int
    equity: Decimal
    balance: Decimal
    daily_floor: Decimal | None
    max_loss: Decimal | None
    decisions: str | None = None


def _point(i: int, seconds: int, equity: str, *, decisions: str | None = None, balance: str = "100000") -> P:
    ts = START + dt.timedelta(seconds=seconds)
    return P(i, ts, minute_of(ts), Decimal(equity), Decimal(balance), Decimal("95000"),
             Decimal("90000"), decisions)


def _kept(points, calendar=PRAGUE, days_before=START):
    gone = set(dropped(points, calendar, days_before=minute_of(days_before)))
    return [p for p in points if p.id not in gone]


def test_an_hour_keeps_its_open_close_extremes_and_every_point_with_a_decision():
    points = [_point(1, 0, "100000"), _point(2, 60, "99000.01"), _point(3, 120, "98000.5"),
              _point(4, 180, "98000.50"),  # equal to the low, later: the earliest of equals is kept
              _point(5, 240, "101000", decisions="warning: daily-loss"), _point(6, 300, "100500"),
              _point(7, 360, "102999.99"), _point(8, 420, "100100"), _point(9, 480, "100200")]
    kept = _kept(points)
    assert [p.id for p in kept] == [1, 3, 5, 7, 9]


def test_balance_and_levels_keep_their_extremes_too():
    points = [_point(1, 0, "100000"), _point(2, 60, "100000", balance="99000"),
              P(3, START + dt.timedelta(seconds=120), minute_of(START) + 2, Decimal("100000"), Decimal("100000"), Decimal("94000"),
                Decimal("91000")), _point(4, 180, "100000"), _point(5, 240, "100000")]
    assert [p.id for p in _kept(points)] == [1, 2, 3, 5]


def test_buckets_never_span_two_trading_days_whatever_the_offset():
    # Chicago 17:00: the trading day starts at 23:00 UTC in March (CDT after the 8th) -> the hour 22:30-23:30
    # UTC is two buckets; Kolkata: an hour bucket starts at :30 UTC
    a = dt.datetime(2026, 3, 2, 22, 59, tzinfo=UTC)
    b = dt.datetime(2026, 3, 2, 23, 1, tzinfo=UTC)
    assert hour_bucket(CHICAGO, a)[0] != hour_bucket(CHICAGO, b)[0]
    assert day_bucket(CHICAGO, a) != day_bucket(CHICAGO, b)
    assert hour_bucket(KOLKATA, dt.datetime(2026, 3, 2, 10, 29, tzinfo=UTC)) != \
        hour_bucket(KOLKATA, dt.datetime(2026, 3, 2, 10, 31, tzinfo=UTC))
    assert hour_bucket(KOLKATA, dt.datetime(2026, 3, 2, 10, 31, tzinfo=UTC)) == \
        hour_bucket(KOLKATA, dt.datetime(2026, 3, 2, 11, 29, tzinfo=UTC))


def test_the_horizons_are_the_previous_trading_day_and_thirty_days_in_the_pack_zone():
    now = dt.datetime(2026, 3, 11, 2, 0, tzinfo=UTC)  # Chicago: Wednesday 11th's session started 10th 22:00 UTC
    hours, days = horizons(CHICAGO, now)
    assert hours == dt.datetime(2026, 3, 9, 22, 0, tzinfo=UTC)  # Tuesday 10th's session (CDT since the 8th)
    assert days == dt.datetime(2026, 2, 8, 23, 0, tzinfo=UTC)  # the session holding now - 30 days (CST)
    hours, days = horizons(PRAGUE, now)
    assert hours == dt.datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # Prague midnight of the 10th, CET


# --------------------------------------------------------------------------------------------------
# the property: over random series, the rolled-up points hold the raw series' extremes exactly


cents = st.integers(min_value=-5_000_000, max_value=20_000_000).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def series(draw):
    n = draw(st.integers(min_value=1, max_value=120))
    gaps = draw(st.lists(st.integers(min_value=0, max_value=4 * 3600), min_size=n, max_size=n))
    points, at = [], START
    for i, gap in enumerate(gaps):
        at += dt.timedelta(seconds=gap)
        floor = draw(st.one_of(st.none(), cents))
        level = draw(st.one_of(st.none(), cents))
        decisions = draw(st.one_of(st.none(), st.none(), st.none(), st.just("breach: max-loss")))
        points.append(P(i + 1, at, minute_of(at), draw(cents), draw(cents), floor, level, decisions))
    return points


def _buckets(points, bucket_of):
    out: dict = {}
    for p in points:
        out.setdefault(bucket_of(p.ts), []).append(p)
    return out


def _extremes(points):
    out = {}
    for field in FIELDS:
        values = [getattr(p, field) for p in points if getattr(p, field) is not None]
        out[field] = (min(values), max(values)) if values else None
    return out


@settings(max_examples=150, deadline=None)
@given(points=series(), calendar=st.sampled_from([PRAGUE, CHICAGO, KOLKATA]),
       split_at=st.integers(min_value=0, max_value=120))
def test_rolled_up_points_keep_every_buckets_ends_extremes_and_decisions(points, calendar, split_at):
    days_before = points[min(split_at, len(points) - 1)].ts
    split = minute_of(days_before)
    kept = _kept(points, calendar, days_before)
    assert set(kept) <= set(points)
    # whole series: ends, every extreme (values and the moments they were reached first), every decision
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert _extremes(kept) == _extremes(points)
    assert [p for p in kept if p.decisions] == [p for p in points if p.decisions]
    # per bucket (days before the split, hours after it): the same
    for tier, bucket_of in (("day", lambda ts: day_bucket(calendar, ts)), ("hour", lambda ts: hour_bucket(calendar, ts))):
        part = [p for p in points if (p.minute < split) == (tier == "day")]
        rolled = _buckets([p for p in kept if (p.minute < split) == (tier == "day")], bucket_of)
        for key, raw in _buckets(part, bucket_of).items():
            got = rolled[key]
            assert got[0] == raw[0] and got[-1] == raw[-1]
            assert _extremes(got) == _extremes(raw)
            for field in FIELDS:  # the earliest moment of each extreme is kept, not just the value
                values = [(getattr(p, field), p.ts) for p in raw if getattr(p, field) is not None]
                if values:
                    low = min(values, key=lambda v: v[0])
                    assert min(((getattr(p, field), p.ts) for p in got if getattr(p, field) is not None),
                               key=lambda v: v[0]) == low
            assert len(got) <= 2 + 2 * len(FIELDS) + sum(1 for p in raw if p.decisions)
    # idempotent; and hours rolled up again per day are the raw days rolled up
    assert dropped(kept, calendar, days_before=split) == []
    later = points[-1].ts + dt.timedelta(days=2)
    assert _kept(kept, calendar, later) == _kept(points, calendar, later)
    # the chart drawn from them (its own thinning to a limit included) shows the raw series' extremes
    as_chart = [{"t": int(p.ts.timestamp() * 1000), "equity": p.equity, "decisions": [p.decisions] if p.decisions else []}
                for p in kept]
    if sum(1 for q in as_chart if q["decisions"]) > 30:
        return  # more decisions than the chart's limit: it thins them (whatever the storage), not this rule's concern
    shown = downsample(as_chart, 40)
    assert min(q["equity"] for q in shown) == min(p.equity for p in points)
    assert max(q["equity"] for q in shown) == max(p.equity for p in points)
