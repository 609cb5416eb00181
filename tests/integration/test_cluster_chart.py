"""The back office chart in the scale-out deployment, on the real NATS JetStream and PostgreSQL.

Events reach the firm only through the partitioned stream and a ``propcrm worker`` process: nothing is
written to ``raw_events``, which the chart once replayed. The worker writes the equity-points projection
with its decisions (one point per account per stream message), and the chart reads it: the series shows
what the account did, with the breach marked.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from support.staff import build_world, seed
from support.web import browse
from integration.test_cluster import _start_worker, _stop, _tail, bus, nats_url, pg_url  # noqa: F401 - fixtures
from integration.test_cluster_analytics import _publish
from integration.test_cluster_payouts import _diagnosis, _wait
from integration.test_web_accounts import equity, opened

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def _points(world, account_id: int) -> int:
    with world.sessions() as s:
        return s.scalar(select(func.count()).select_from(m.EquityPoint).where(m.EquityPoint.account_id == account_id))


def test_the_chart_shows_the_series_of_an_account_fed_only_through_the_workers(pg_url, bus, tmp_path, monkeypatch):
    _, world = build_world(pg_url)
    log = tmp_path / "worker0.log"
    with world.client:
        seed(world)
        for key, value in bus.as_env().items():
            monkeypatch.setenv(key, value)
        worker = _start_worker(pg_url, bus, log)
        try:
            a1 = world.accounts["A1"]
            # one request (one stream message) per step: the worker notes a point per account per message
            _publish(world, bus, [opened("c1", "A1", "2026-03-02T09:00:00Z"),
                                  equity("c2", "A1", "2026-03-02T09:30:00Z", "99500")])
            _wait("the first point", lambda: _points(world, a1) == 1, log, lambda: _diagnosis(world, bus))
            _publish(world, bus, [equity("c3", "A1", "2026-03-02T10:00:00Z", "101200.25")])
            _wait("the second point", lambda: _points(world, a1) == 2, log, lambda: _diagnosis(world, bus))
            _publish(world, bus, [equity("c4", "A1", "2026-03-02T11:00:00Z", "94000")])  # below the daily floor
            _wait("the breach", lambda: world.status_of(a1) == "breached", log, lambda: _diagnosis(world, bus))
            _wait("the third point", lambda: _points(world, a1) == 3, log, lambda: _diagnosis(world, bus))
            with world.sessions() as s:
                assert s.scalar(select(func.count()).select_from(m.RawEvent)) == 0  # the log is the stream

            doc = browse(world, "fa:risk").get(f"/office/accounts/{a1}/series.json").json()
            assert doc["count"] == doc["shown"] == 3
            points = doc["points"]
            assert [p["equity"] for p in points] == ["99500", "101200.25", "94000"]
            assert [p["t"] for p in points] == [1772443800000, 1772445600000, 1772449200000]
            assert all(p["balance"] == "100000" for p in points)
            # the two-step pack's levels: a 5 % daily floor and a 10 % max-loss level on the 100k start
            assert points[0]["daily_floor"] == "95000" and points[0]["max_loss"] == "90000"
            assert points[0]["decisions"] == [] and points[2]["decisions"] == ["breach: daily_loss"]
            # the breach marker: the standing breach decision at its time, on the equity it saw
            assert [(b["rule"], b["t"], Decimal(b["value"])) for b in doc["breaches"]] == [
                ("daily_loss", 1772449200000, Decimal("94000"))]
            assert [d["label"] for d in doc["datasets"]][:4] == ["Equity", "Balance", "Daily floor", "Max-loss level"]
            assert "Breach" in [d["label"] for d in doc["datasets"]]
            assert worker.poll() is None, _tail(log)
        finally:
            _stop([worker])
