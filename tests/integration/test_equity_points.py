"""The equity-points projection on both backends: the embedded evaluation writes it with its decisions,
bounded per account and minute however many events arrive (and across batches of the same minute), and
``propcrm trades backfill`` rebuilds the same series from the event log."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select

from propcrm.adapters.db import models as m
from propcrm.services import equity_points
from propcrm.services.equity_replay import backfill_points
from support.web import browse
from integration.test_web_accounts import equity

pytestmark = pytest.mark.usefixtures("cheap_argon2")

START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)


def _stamp(i: int) -> str:
    return (START + dt.timedelta(milliseconds=100 * i)).isoformat().replace("+00:00", "Z")


def _value(i: int) -> str:
    return str(Decimal(100000) + Decimal((i * 7919) % 1500) - 750)  # inside both limits: no decision


def _rows(world, account_id: int) -> list[tuple[int, Decimal]]:
    with world.sessions() as s:
        return [(minute, Decimal(eq)) for minute, eq in s.execute(
            select(m.EquityPoint.minute, m.EquityPoint.equity).where(m.EquityPoint.account_id == account_id)
            .order_by(m.EquityPoint.minute, m.EquityPoint.ts))]


def test_a_thousand_events_in_two_minutes_keep_at_most_the_bound_per_minute_across_batches(world):
    a1 = world.accounts["A1"]
    values = [_value(i) for i in range(1500)]
    values[333] = "98000.5"  # the deepest low of the first minute
    values[444] = "101999"  # its highest high
    values[1400] = "98100"  # the deepest low of the second minute, in the second batch
    events = [equity(f"q{i}", "A1", _stamp(i), v) for i, v in enumerate(values)]  # 10:00:00 - 10:02:29.9
    world.ingest(*events[:1000])  # minute 10:00 and part of 10:01
    world.evaluate()
    first = _rows(world, a1)
    assert len(first) <= 2 * equity_points.PER_MINUTE
    world.ingest(*events[1000:])  # the rest of 10:01, and 10:02
    world.evaluate()
    rows = _rows(world, a1)
    minutes = [minute for minute, _ in rows]
    assert sorted(set(minutes)) == [equity_points.minute_of(START) + k for k in range(3)]
    assert all(minutes.count(k) == 4 for k in set(minutes))  # first, last, lowest, highest (distinct here)
    by_minute = {k: [Decimal(v) for v in values[600 * j:600 * (j + 1)]] for j, k in enumerate(sorted(set(minutes)))}
    for k, seen in by_minute.items():
        kept = [eq for minute, eq in rows if minute == k]
        assert kept[0] == seen[0] and kept[-1] == seen[-1]
        assert min(seen) in kept and max(seen) in kept
    # the second batch extended minute 10:01: the first batch's last point of it is gone
    assert Decimal(values[999]) not in [eq for minute, eq in rows if minute == sorted(set(minutes))[1]]

    doc = browse(world, "fa:risk").get(f"/office/accounts/{a1}/series.json").json()
    assert doc["count"] == doc["shown"] == len(rows) == 12
    equities = [Decimal(p["equity"]) for p in doc["points"]]
    assert equities == [eq for _, eq in rows]
    assert Decimal("98000.5") in equities and Decimal("101999") in equities and Decimal("98100") in equities
    assert [p["t"] for p in doc["points"]] == sorted(p["t"] for p in doc["points"])

    # backfill from the embedded log gives the same series
    with world.sessions.begin() as s:
        s.execute(delete(m.EquityPoint).where(m.EquityPoint.account_id == a1))
    assert browse(world, "fa:risk").get(f"/office/accounts/{a1}/series.json").json()["count"] == 0
    with world.sessions.begin() as s:
        accounts, written = backfill_points(s, firm_id="fa", account_ids=[a1])
    assert (accounts, written) == (1, 12)
    again = browse(world, "fa:risk").get(f"/office/accounts/{a1}/series.json").json()
    assert again["points"] == doc["points"]
    with world.sessions.begin() as s:  # twice: the same rows
        backfill_points(s, firm_id="fa", account_ids=[a1])
        assert s.scalar(select(func.count()).select_from(m.EquityPoint).where(m.EquityPoint.account_id == a1)) == 12
