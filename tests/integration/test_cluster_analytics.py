"""Abuse analysis in the scale-out deployment, on the real NATS JetStream and PostgreSQL.

Trading reaches the firm only through the partitioned stream and a ``propcrm worker`` process: nothing
is written to ``raw_events``. The worker projects the trades, closes and logins (``trades``,
``trade_closes``, ``account_activity``) in the transaction of its decisions, and the analysis — which
reads those projections, not the event log — must find the same hedging pair and shared device as in
the embedded deployment (tests/integration/test_web_cases.py plants the same events there).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from propcrm.adapters.bus.jetstream import EventPublisher, connect
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import Case, CaseAccount
from propcrm.services.ingest import prepare_for_bus, publish_prepared
from support.staff import build_world, seed
from integration.test_cluster import become_scale_out, _start_worker, _stop, _tail, bus, nats_url, pg_url  # noqa: F401 - fixtures
from integration.test_cluster_payouts import _diagnosis, _wait
from integration.test_web_cases import START, hedging_events, sessions_events

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def _publish(world, bus, events: list[dict]) -> None:
    """What POST /api/v1/events does in bus mode: checked and quarantined here, published to the stream."""
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    async def go() -> None:
        nc, js = await connect(bus)
        try:
            with world.sessions.begin() as s:
                prepared = prepare_for_bus(s, firm_id="fa", source="mt5", body=body)
            report = await publish_prepared(EventPublisher(js, bus), prepared)
            assert report.rejected == 0, report.to_dict()
        finally:
            await nc.close()

    asyncio.run(go())


def _projected(world) -> tuple[int, int, int]:
    with world.sessions() as s:
        trades = s.scalar(select(func.count()).select_from(m.Trade).where(m.Trade.status == "closed"))
        logins = s.scalar(select(func.count()).select_from(m.AccountActivity).where(m.AccountActivity.kind == "session"))
        raw = s.scalar(select(func.count()).select_from(m.RawEvent))
    return trades, logins, raw


def test_the_analysis_finds_hedging_and_a_shared_device_on_a_firm_fed_through_the_workers(pg_url, bus, tmp_path,
                                                                                        monkeypatch):
    _, world = build_world(pg_url)
    log = tmp_path / "worker0.log"
    worker = None
    with world.client:
        seed(world)
        become_scale_out(bus, monkeypatch)  # the deployment is now the scale-out one (as after a restart)
        worker = _start_worker(pg_url, bus, log)
        try:
            _publish(world, bus, [*sessions_events(["A1", "A2"], "dev-shared-1"), *hedging_events("A1", "A2")])
            _wait("the worker's projection of 8 closed trades and 2 logins", lambda: _projected(world)[:2] == (8, 2),
                  log, lambda: f"{_projected(world)}; {_diagnosis(world, bus)}")
            assert _projected(world)[2] == 0  # the event log is the stream: raw_events stays empty

            run = world.client.post("/api/v1/analysis/run", json={}, headers=world.headers("risk"))
            assert run.status_code == 200, run.text
            first = run.json()
            assert first["mode"] == "full" and first["trades"] == 8 and first["last_seq"] > 0, first
            with world.sessions() as s:
                found = {(case.detector, tuple(sorted(s.scalars(
                    select(m.Account.external_id).join(CaseAccount, CaseAccount.account_id == m.Account.id)
                    .where(CaseAccount.case_id == case.id)))))
                    for case in s.scalars(select(Case).where(Case.firm_id == "fa"))}
            assert ("hedging", ("A1", "A2")) in found, found
            assert any(detector == "linkage" and {"A1", "A2"} <= set(accounts) for detector, accounts in found), found
            hedging = world.client.get("/api/v1/cases?status=open", headers=world.headers("risk")).json()
            case = next(c for c in hedging["items"] if c["detector"] == "hedging")
            detail = world.client.get(f"/api/v1/cases/{case['id']}", headers=world.headers("risk")).json()
            # the evidence shows the trades as the platform sent them (NUMERIC(24, 8) would pad them)
            assert '"1.08500"' in json.dumps(detail["evidence"]) and '"1.10"' in json.dumps(detail["evidence"])

            # more trading through the stream: the incremental pass reads only what the worker added
            _publish(world, bus, hedging_events("A1", "A2", prefix="g", n=2,
                                                start=START.replace(hour=15)))
            _wait("the worker's projection of 12 closed trades", lambda: _projected(world)[0] == 12, log,
                  lambda: f"{_projected(world)}; {_diagnosis(world, bus)}")
            later = world.client.post("/api/v1/analysis/run", json={}, headers=world.headers("risk")).json()
            assert later["mode"] == "incremental" and later["events_read"] > 0 and later["last_seq"] > first["last_seq"]
            assert worker.poll() is None, _tail(log)
        finally:
            _stop([worker])
