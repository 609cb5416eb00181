"""The equity-points roll-up on both backends (services/equity_rollup.py): what the evaluation wrote is
rolled up per hour before the previous trading day and per trading day after 30 days; the chart
(``series.json``) shows the same extremes, ends, decision points and breach markers in the same shape;
a second run changes nothing; the writers' newest bucket is never touched, also while they write; a
re-bind's rebuild (equity_replay) gives the raw series back and the roll-up rolls it up again the same way."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.services import equity_rollup
from propcrm.services.equity_replay import backfill_points
from support.web import browse
from integration.test_web_accounts import equity

pytestmark = pytest.mark.usefixtures("cheap_argon2")

UTC = dt.timezone.utc
DAY0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday; the pack's days are Prague's (CET, UTC+1)
BREACH_AT = dt.datetime(2026, 3, 3, 13, 1, 30, tzinfo=UTC)


def _stamp(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _walk(i: int) -> Decimal:
    return Decimal(100000) + Decimal((i * 7919) % 1700) - Decimal(850) + Decimal(i % 7) / 100


def _events(account: str, days: int = 4, *, breach: bool = True) -> list[dict]:
    """Every 90 s from 08:00 to 16:00 UTC on ``days`` weekdays, equity inside both limits, except one point
    that breaks the daily floor (95,000) on the second day, 13:01:30."""
    out = []
    for day in range(days):
        for k in range(321):
            ts = DAY0 + dt.timedelta(days=day, seconds=90 * k)
            value = Decimal("94321.5") if breach and ts == BREACH_AT else _walk(day * 1000 + k)
            out.append(equity(f"{account}-{day}-{k}", account, _stamp(ts), str(value)))
    return out


def _rows(world, account_id: int) -> list[tuple]:
    with world.sessions() as s:
        return [tuple(r) for r in s.execute(
            select(m.EquityPoint.id, m.EquityPoint.ts, m.EquityPoint.equity, m.EquityPoint.balance,
                   m.EquityPoint.daily_floor, m.EquityPoint.max_loss, m.EquityPoint.decisions)
            .where(m.EquityPoint.account_id == account_id).order_by(m.EquityPoint.ts, m.EquityPoint.id))]


def _chart(world, account_id: int) -> dict:
    return browse(world, "fa:risk").get(f"/office/accounts/{account_id}/series.json").json()


def _shape(doc: dict) -> tuple:
    return (sorted(doc), [sorted(p) for p in doc["points"][:1]], [d["label"] for d in doc["datasets"]])


def _summary(doc: dict) -> dict:
    points = doc["points"]
    out = {"first": points[0], "last": points[-1], "breaches": doc["breaches"],
           "decisions": [p for p in points if p["decisions"]]}
    for key in ("equity", "balance", "daily_floor", "max_loss"):
        values = [(Decimal(p[key]), p["t"]) for p in points if p[key] is not None]
        out[key] = (min(values, key=lambda v: v[0]), max(values, key=lambda v: v[0]))
    return out


def _run(world, now: dt.datetime) -> equity_rollup.RollupReport:
    return equity_rollup.rollup(world.sessions, now=now, firm_id="fa")


def test_the_rollup_keeps_the_charts_extremes_breach_and_shape_and_a_second_run_changes_nothing(world):
    a1 = world.accounts["A1"]
    world.ingest(*_events("A1"))
    world.evaluate()
    raw = _rows(world, a1)
    assert len(raw) == 4 * 321  # one point an event: a minute holds at most one here
    before = _chart(world, a1)
    assert [b["value"] for b in before["breaches"]] == ["94321.5"]
    assert any(p["decisions"] for p in before["points"])

    # Thursday 12:00 UTC: the previous trading day is Wednesday (from 2026-03-03 23:00 UTC); Monday and
    # Tuesday are rolled up per hour
    report = _run(world, dt.datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    assert report.deleted > 0 and report.accounts == 1
    rolled = _rows(world, a1)
    horizon = dt.datetime(2026, 3, 3, 23, 0, tzinfo=UTC)
    assert [r for r in rolled if r[1] >= horizon] == [r for r in raw if r[1] >= horizon]  # recent: untouched
    old = [r for r in rolled if r[1] < horizon]
    assert set(old) <= set(raw) and len(old) <= 2 * 9 * 10  # 9 hours a day, at most 10 points each
    after = _chart(world, a1)
    assert _shape(after) == _shape(before)
    assert _summary(after) == _summary(before)
    assert after["count"] == len(rolled) < before["count"]
    assert all(p in before["points"] for p in after["points"])
    breach_points = [p for p in after["points"] if any(d.startswith("breach") for d in p["decisions"])]
    assert [p["equity"] for p in breach_points] == ["94321.5"]

    again = _run(world, dt.datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    assert (again.deleted, again.read) == (0, 0)
    assert _rows(world, a1) == rolled

    # forty days on: every trading day but the newest point's is rolled up per day, that one per hour but
    # the newest point's hour (the writers' open bucket)
    _run(world, dt.datetime(2026, 4, 14, 12, 0, tzinfo=UTC))
    daily = _rows(world, a1)
    last_day, last_hour = dt.datetime(2026, 3, 4, 23, 0, tzinfo=UTC), dt.datetime(2026, 3, 5, 16, 0, tzinfo=UTC)
    assert [r for r in daily if r[1] >= last_hour] == [r for r in raw if r[1] >= last_hour]
    assert len([r for r in daily if last_day <= r[1] < last_hour]) <= 8 * 10
    assert len([r for r in daily if r[1] < last_day]) <= 3 * 10
    assert _summary(_chart(world, a1)) == _summary(before)
    assert (_run(world, dt.datetime(2026, 4, 14, 12, 0, tzinfo=UTC)).deleted, _rows(world, a1)) == (0, daily)

    # a re-bind's rebuild from the log: the raw series back, the marks cleared, rolled up the same way again
    with world.sessions.begin() as s:
        assert backfill_points(s, firm_id="fa", account_ids=[a1])[0] == 1
        mark = s.get(m.EquityRollup, a1)
        assert (mark.hours_until, mark.days_until) == (0, 0)
    rebuilt = _rows(world, a1)
    assert [r[1:] for r in rebuilt] == [r[1:] for r in raw]
    _run(world, dt.datetime(2026, 4, 14, 12, 0, tzinfo=UTC))
    assert [r[1:] for r in _rows(world, a1)] == [r[1:] for r in daily]


def test_the_writers_newest_bucket_is_left_alone_and_writing_into_it_goes_on(world):
    a1 = world.accounts["A1"]
    events = _events("A1", days=1, breach=False)
    world.ingest(*events[:200])
    world.evaluate()
    newest = _rows(world, a1)[-1][1]
    _run(world, dt.datetime(2026, 6, 1, tzinfo=UTC))  # every bucket is old: all but the newest one rolled
    rows = _rows(world, a1)
    hour_start = newest.replace(minute=0, second=0)  # Prague's days start on a whole UTC hour

    def since(evs):
        return len([e for e in evs if hour_start <= dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))])

    assert len([r for r in rows if r[1] >= hour_start]) == since(events[:200])
    assert len([r for r in rows if r[1] < hour_start]) < len([e for e in events[:200]]) - since(events[:200])
    world.ingest(*events[200:])  # the writer goes on in that bucket and after it
    world.evaluate()
    rows = _rows(world, a1)
    assert len([r for r in rows if r[1] >= hour_start]) == since(events)
    report = _run(world, dt.datetime(2026, 6, 1, tzinfo=UTC))
    assert report.deleted > 0
    values = [Decimal(e["equity"]) for e in events]
    doc = _chart(world, a1)
    shown = [Decimal(p["equity"]) for p in doc["points"]]
    assert min(shown) == min(values) and max(shown) == max(values)
    assert doc["points"][-1]["equity"] == events[-1]["equity"]


def test_a_rollup_and_a_writer_in_flight_together(world, db_url):
    """PostgreSQL: the roll-up's transaction is open (its rows read, its deletes done, its mark written) while
    the evaluation claims the same account (FOR UPDATE SKIP LOCKED: a lock of the roll-up's on the account
    would make it skip it) and commits its new points; both commits stand and nothing of the writer's is
    lost. On
    SQLite every unit of work takes the write lock first (BEGIN IMMEDIATE), so the two queue instead."""
    a1 = world.accounts["A1"]
    events = _events("A1", days=2, breach=False)
    world.ingest(*events[:321 + 100])
    world.evaluate()
    now = dt.datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # Monday is older than the previous trading day
    done = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            world.ingest(*events[321 + 100:])
            world.evaluate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    with world.sessions.begin() as s:
        report, _last = equity_rollup.rollup_chunk(s, firm_id="fa", after=0, now=now)
        assert report.deleted > 0
        thread = threading.Thread(target=writer)
        thread.start()
        if db_url.startswith("postgresql"):
            assert done.wait(60), "the writer waited on the roll-up"
    thread.join(60)
    assert not errors
    rows = _rows(world, a1)
    tuesday = dt.datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    assert len([r for r in rows if r[1] >= tuesday]) == 321  # every point of Tuesday, the writer's included
    values = [Decimal(e["equity"]) for e in events]
    shown = [Decimal(p["equity"]) for p in _chart(world, a1)["points"]]
    assert min(shown) == min(values) and max(shown) == max(values)


def test_the_rollup_table_is_migrated_as_declared(db_url, world):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from propcrm.adapters.db.session import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), m.Base.metadata)
    finally:
        engine.dispose()
    assert [d for d in diffs if "equity_rollups" in repr(d)] == []


class _OneRun:
    """A stop event whose first wait times out (one run) and whose second says stop."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, interval: float) -> bool:
        self.waits.append(interval)
        return len(self.waits) > 1


def test_the_services_loop_runs_the_rollup_and_survives_a_failed_run(world, monkeypatch):
    a1 = world.accounts["A1"]
    world.ingest(*_events("A1", days=2, breach=False))
    world.evaluate()
    raw = len(_rows(world, a1))
    stop = _OneRun()
    equity_rollup.rollup_loop(world.sessions, stop, interval=600)  # the clock now: March is long gone
    assert stop.waits == [600, 600]
    assert len(_rows(world, a1)) < raw

    def broken(*_a, **_k):
        raise RuntimeError("database gone")

    monkeypatch.setattr(equity_rollup, "rollup", broken)
    equity_rollup.rollup_loop(world.sessions, _OneRun(), interval=600)  # logged, not raised
    equity_rollup.rollup_loop(world.sessions, _OneRun(), interval=0)  # off


def test_a_rebuild_between_a_runs_read_and_its_writes_is_not_marked_rolled(world, monkeypatch):
    """A re-bind rebuilds the account's points after the roll-up read the old ones: the old ids are gone
    (the deletes hit nothing), and the marks' compare-and-set fails, so the next run rolls the rebuilt
    points up."""
    a1 = world.accounts["A1"]
    world.ingest(*_events("A1", days=2, breach=False))
    world.evaluate()
    with world.sessions.begin() as s:  # the account has a marks row from an earlier (empty) run
        equity_rollup.forget(s, firm_id="fa", account_ids=[a1])
    raw = _rows(world, a1)
    real_commit = equity_rollup._commit

    def rebuild_first(*args, **kwargs):
        with world.sessions.begin() as s:
            backfill_points(s, firm_id="fa", account_ids=[a1])
        monkeypatch.setattr(equity_rollup, "_commit", real_commit)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(equity_rollup, "_commit", rebuild_first)
    now = dt.datetime(2026, 6, 1, tzinfo=UTC)
    report = _run(world, now)
    assert report.deleted == 0 and report.read > 0  # chosen from the old rows, whose ids may be reused
    assert [r[1:] for r in _rows(world, a1)] == [r[1:] for r in raw]  # the rebuilt series, whole
    with world.sessions() as s:
        mark = s.get(m.EquityRollup, a1)
        assert (mark.hours_until, mark.days_until) == (0, 0)  # not marked: the rebuilt points are not rolled
    again = _run(world, now)
    assert again.deleted > 0
    assert len(_rows(world, a1)) == len(raw) - again.deleted
