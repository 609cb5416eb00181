"""Payouts in the scale-out deployment, on the real NATS JetStream and PostgreSQL.

A funded account's payout is requested, prepared and approved by two people through the API while
``PROPCRM_NATS_URL`` is set. The withdrawal goes through the event log: an outbox row committed with
the approval, published by the dispatcher to the account's partition (``Nats-Msg-Id`` from the event
id), applied by a ``propcrm worker`` process exactly once — a re-publication with the same id is
dropped by JetStream, one with another message id (past the de-duplication window) by the worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from propcrm.adapters.bus.jetstream import EventPublisher, connect, publish_event
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Payout
from propcrm.services import payouts as payout_service
from propcrm.services import scaling
from propcrm.services.dispatch import build_dispatcher
from propcrm.services.lifecycle import Refusal
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account
from support.staff import build_world, seed
from integration.test_cluster import become_scale_out, _start_worker, _stop, _tail, bus, nats_url, pg_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("cheap_argon2")
UTC = dt.timezone.utc


def _diagnosis(world, bus) -> str:
    from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint

    with world.sessions() as s:
        letters = s.execute(select(DeadLetter.event_id, DeadLetter.reason)).all()
        points = s.execute(select(PartitionCheckpoint.partition, PartitionCheckpoint.seq, PartitionCheckpoint.state_seq)
                           .where(PartitionCheckpoint.seq > 0)).all()
        actions = s.scalars(select(m.AuditEntry.action).order_by(m.AuditEntry.seq.desc()).limit(8)).all()
    return f"dead letters {letters}; checkpoints {points}; last audit {actions}"


def _wait(what: str, check, log, explain=lambda: "", timeout: float = 60.0):
    began = time.monotonic()
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() - began < timeout, f"timed out waiting for {what}: {explain()}\n{_tail(log)}"
        time.sleep(0.1)


def _has_state(world, account: int) -> bool:
    with world.sessions() as s:
        return s.get(m.AccountState, account) is not None


def _state(world, account: int) -> tuple[Decimal, int]:
    with world.sessions() as s:
        row = s.get(m.AccountState, account)
        return row.balance, row.last_seq


def test_a_payout_approved_by_two_people_is_withdrawn_once_through_the_bus(pg_url, bus, tmp_path, monkeypatch):
    _, world = build_world(pg_url)
    log = tmp_path / "worker0.log"
    worker = None
    with world.client:
        seed(world)  # (its fixtures write to the embedded log: before the deployment becomes the scale-out one)
        become_scale_out(bus, monkeypatch)  # the deployment is now the scale-out one (as after a restart)
        version = add_life_pack(world.sessions, "fa")
        approve_kyc(world.sessions, world.traders["t1"])
        assert world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"},
                                 headers=world.headers("admin")).status_code == 200
        f2, f3 = (world.headers(add_user(world, firm="fa", role="finance", name=n)) for n in ("f2", "f3"))
        account = funded_account(world.sessions, firm="fa", version_id=version, external_id="P7",
                                 trader_id=world.traders["t1"], balance=Decimal("10500"))
        worker = _start_worker(pg_url, bus, log)
        try:
            payout = world.client.post("/api/v1/payouts", json={"account_id": account},
                                       headers=world.headers("trader")).json()
            assert payout["status"] == "requested", payout
            pid = payout["id"]
            prepared = world.client.post(f"/api/v1/payouts/{pid}/prepare", json={}, headers=world.headers("finance"))
            assert prepared.status_code == 200 and prepared.json()["approvals_needed"] == 2, prepared.text
            first = world.client.post(f"/api/v1/payouts/{pid}/approve", headers=f2)
            assert first.status_code == 200 and first.json()["status"] == "prepared", first.text
            with world.sessions() as s:  # nothing to publish before the last approval
                assert s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "bus_event")).all() == []
            second = world.client.post(f"/api/v1/payouts/{pid}/approve", headers=f3)
            assert second.status_code == 200 and second.json()["status"] == "approved", second.text
            with world.sessions() as s:
                [row] = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "bus_event")).all()
                assert row.status == "pending" and row.dedupe_key == f"payout:{pid}:withdrawal"
                line = json.loads(row.payload["line"])
                assert (line["id"], line["type"], line["reason"], line["amount"], line["account"]) == \
                    (f"payout-{pid}", "balance", "payout", "-500", "P7")
                assert s.get(Payout, pid).event_id == f"payout-{pid}"
            # until the worker has applied it the account is not settled: no second payout
            check = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility",
                                     headers=world.headers("trader")).json()
            settled = next(c for c in check["checks"] if c["name"] == "settled")
            assert not settled["ok"] and f"payout {pid} is pending" in settled["reason"], settled

            dispatcher = build_dispatcher(world.sessions, env=dict(os.environ))
            report = dispatcher.run_once()
            assert report.by_kind.get("bus_event") == 1, report
            [published] = world.audit("event.published")
            assert published.entity_id == f"payout-{pid}" and published.after["duplicate"] is False

            _wait("the withdrawal in the stored state", lambda: _state(world, account)[0] == Decimal("10000"), log,
                  lambda: _diagnosis(world, bus))
            [applied] = world.audit(payout_service.WITHDRAWAL_APPLIED)
            assert applied.entity_id == str(pid) and applied.after["stream_seq"] == published.after["stream_seq"]

            # published again: the same message id is dropped by JetStream; another message id (as after
            # the de-duplication window) reaches the worker, which drops the repeat by the event id
            again = publish_event(bus, firm_id="fa", source=payout_service.SOURCE, account="P7",
                                  line=row.payload["line"].encode(), event_id=f"payout-{pid}")
            assert again.duplicate

            async def republish_and_deposit() -> None:
                nc, js = await connect(bus)
                try:
                    publisher = EventPublisher(js, bus)
                    await publisher.publish("fa", payout_service.SOURCE, [("P7", row.payload["line"].encode())])
                    ts = (dt.datetime.now(UTC) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    deposit = json.dumps({"id": "dep-1", "type": "balance", "account": "P7", "ts": ts,
                                          "amount": "1", "reason": "deposit"}).encode()
                    await publisher.publish("fa", "mt5", [("P7", deposit)])
                finally:
                    await nc.close()

            asyncio.run(republish_and_deposit())
            # the deposit after the repeat is in the stored state, the repeat is not: 10000 + 1, not 9501
            _wait("the deposit in the stored state", lambda: _state(world, account)[0] != Decimal("10000"), log)
            assert _state(world, account)[0] == Decimal("10001")
            assert len(world.audit(payout_service.WITHDRAWAL_APPLIED)) == 1
            assert worker.poll() is None, _tail(log)
            check = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility",
                                     headers=world.headers("trader")).json()
            settled = next(c for c in check["checks"] if c["name"] == "settled")
            assert settled["ok"], settled

            # scaling, now that the account is settled: the carried profit goes to the new account the same way
            with world.sessions.begin() as s:
                scaled = scaling.scale_account(s, firm_id="fa", account_id=account, actor="test")
                assert not isinstance(scaled, Refusal), scaled.reason
                scaled = scaling.approve_scaling(s, firm_id="fa", scaling_id=scaled.id, actor="test")
                assert not isinstance(scaled, Refusal), scaled.reason
                new_account, expected = scaled.new_account_id, scaled.to_size + scaled.carried_profit
                assert scaled.carried_profit == Decimal("1") and s.scalar(select(func.count()).select_from(m.RawEvent)) == 0
            assert dispatcher.run_once().by_kind.get("bus_event") == 1
            _wait("the carried profit in the new account's stored state",
                  lambda: _state(world, new_account)[0] == expected if _has_state(world, new_account) else False, log,
                  lambda: _diagnosis(world, bus))
        finally:
            _stop([worker])


def test_a_quarantined_line_re_submitted_goes_to_the_stream_and_is_applied(pg_url, bus, tmp_path, monkeypatch):
    from propcrm.services.ingest import prepare_for_bus

    _, world = build_world(pg_url)
    log = tmp_path / "worker0.log"
    worker = None
    with world.client:
        seed(world)
        become_scale_out(bus, monkeypatch)  # the deployment is now the scale-out one (as after a restart)
        version = add_life_pack(world.sessions, "fa")
        ts = dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = json.dumps({"id": "dep-q1", "type": "balance", "account": "Q1", "ts": ts, "amount": "100",
                           "reason": "deposit"}).encode()
        with world.sessions.begin() as s:  # the account does not exist yet: quarantined by the ingest node
            prepared = prepare_for_bus(s, firm_id="fa", source="mt5", body=line)
        [outcome] = prepared.outcomes.values()
        assert outcome.status == "rejected" and "no account 'Q1'" in outcome.reason
        account = funded_account(world.sessions, firm="fa", version_id=version, external_id="Q1",
                                 trader_id=world.traders["t1"], balance=Decimal("10500"))
        worker = _start_worker(pg_url, bus, log)
        try:
            risk = world.headers("risk")
            done = world.client.post("/api/v1/quarantine/resubmit", json={"ids": [outcome.quarantine_id]}, headers=risk)
            assert done.status_code == 200, done.text
            assert done.json()["accepted"] == 1, done.json()
            again = world.client.post("/api/v1/quarantine/resubmit", json={"ids": [outcome.quarantine_id]},
                                      headers=risk).json()
            assert again["duplicates"] == 1 and again["accepted"] == 0  # queued once
            with world.sessions() as s:
                assert s.get(m.Quarantine, outcome.quarantine_id).resolved_at is not None
                assert s.scalar(select(func.count()).select_from(m.RawEvent)) == 0  # not the embedded log
            report = build_dispatcher(world.sessions, env=dict(os.environ)).run_once()
            assert report.by_kind.get("bus_event") == 1, report
            _wait("the re-submitted deposit in the stored state",
                  lambda: _state(world, account)[0] == Decimal("10600"), log, lambda: _diagnosis(world, bus))
            assert worker.poll() is None, _tail(log)
        finally:
            _stop([worker])


def _stream_lines(bus, firm: str, account: str) -> list[bytes]:
    """The account's lines as the stream holds them, in stream order (what ``propcrm replay`` of it reads)."""
    from propcrm.adapters.bus.partitions import HEADER_FIRM

    async def read() -> list[bytes]:
        nc, js = await connect(bus)
        try:
            info = await js.stream_info(bus.stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(bus.stream, seq)
                if (msg.headers or {}).get(HEADER_FIRM) != firm:
                    continue
                out.extend(line for line in msg.data.split(b"\n")
                           if line.strip() and json.loads(line).get("account") == account)
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_withdrawal_takes_effect_at_its_place_in_the_stream_and_an_older_platform_event_after_it_applies(
        pg_url, bus, tmp_path, monkeypatch):
    """The withdrawal is approved now; the platform's deposit of an earlier time (after the account's last
    event) reaches the stream after it. It is applied, not dead-lettered as older than the withdrawal; the
    withdrawal is applied once; and a replay of the stream's lines gives the stored state."""
    from propcrm.adapters.db.models_cluster import DeadLetter
    from propcrm.domain.events import DECODER
    from propcrm.domain.program import compile_pack
    from propcrm.domain.rulepack import parse_pack
    from propcrm.engine.runner import Engine
    from propcrm.services.evaluation import STATE_DECODER

    _, world = build_world(pg_url)
    log = tmp_path / "worker0.log"
    worker = None
    with world.client:
        seed(world)
        become_scale_out(bus, monkeypatch)
        version = add_life_pack(world.sessions, "fa")
        approve_kyc(world.sessions, world.traders["t1"])
        approver = world.headers(add_user(world, firm="fa", role="finance", name="f2"))
        account = funded_account(world.sessions, firm="fa", version_id=version, external_id="P8",
                                 trader_id=world.traders["t1"], balance=Decimal("10500"))
        with world.sessions() as s:
            start = STATE_DECODER.decode(s.get(m.AccountState, account).state)  # last event: 2026-01-05
            body = s.get(m.RulePackVersion, version).body
        worker = _start_worker(pg_url, bus, log)
        try:
            pid = world.client.post("/api/v1/payouts", json={"account_id": account},
                                    headers=world.headers("trader")).json()["id"]
            assert world.client.post(f"/api/v1/payouts/{pid}/prepare", json={},
                                     headers=world.headers("finance")).status_code == 200
            approved = world.client.post(f"/api/v1/payouts/{pid}/approve", headers=approver)
            assert approved.status_code == 200 and approved.json()["status"] == "approved", approved.text
            assert build_dispatcher(world.sessions, env=dict(os.environ)).run_once().by_kind.get("bus_event") == 1
            _wait("the withdrawal in the stored state", lambda: _state(world, account)[0] == Decimal("10000"), log,
                  lambda: _diagnosis(world, bus))

            # the platform's deposit of 2026-01-06 (before the approval, after the account's last event)
            # arrives now: the withdrawal took effect at the account's last event, so it is in order
            deposit = json.dumps({"id": "dep-late", "type": "balance", "account": "P8",
                                  "ts": "2026-01-06T10:00:00Z", "amount": "1", "reason": "deposit"}).encode()

            async def publish_late_deposit() -> None:
                nc, js = await connect(bus)
                try:
                    await EventPublisher(js, bus).publish("fa", "mt5", [("P8", deposit)])
                finally:
                    await nc.close()

            asyncio.run(publish_late_deposit())

            def letters() -> list:
                with world.sessions() as s:
                    return s.execute(select(DeadLetter.event_id, DeadLetter.reason)).all()

            _wait("the late deposit applied or dead-lettered",
                  lambda: _state(world, account)[0] != Decimal("10000") or letters(), log)
            assert letters() == []
            assert _state(world, account)[0] == Decimal("10001")
            assert len(world.audit(payout_service.WITHDRAWAL_APPLIED)) == 1
            assert worker.poll() is None, _tail(log)

            lines = _stream_lines(bus, "fa", "P8")
            assert [json.loads(line)["id"] for line in lines] == [f"payout-{pid}", "dep-late"]
            assert json.loads(lines[0])["at"] == "position"
            program = compile_pack(parse_pack(body)).phase(start.phase)
            engine = Engine(lambda _account: program, dedupe=False)
            engine.adopt(start, program)
            decisions = engine.feed([DECODER.decode(line) for line in lines])
            assert engine.rejected == []
            with world.sessions() as s:
                stored = STATE_DECODER.decode(s.get(m.AccountState, account).state)
                stored_decisions = s.scalar(select(func.count()).select_from(m.Decision)
                                            .where(m.Decision.account_id == account))
            assert engine.states["P8"] == stored
            assert stored.balance == Decimal("10001") and stored.last_ts == dt.datetime(2026, 1, 6, 10, tzinfo=UTC)
            assert len(decisions) == stored_decisions
        finally:
            _stop([worker])
