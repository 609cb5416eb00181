"""The whole loop against the platform simulator, through the real MT5 Web API connector:

a challenge account is created on the platform by the outbox, its trades stream into ingestion, the
worker decides a breach, the dispatcher disables the account on the platform and its next order is
refused; and the stream loses and repeats no deal across dropped sessions and restarts of either side.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_platforms import PlatformConnection
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.mt5.webapi import USER_RIGHT_TRADE_DISABLED
from propcrm.adapters.platforms.runner import ConnectorRunner, RunnerSettings
from propcrm.adapters.platforms.secrets import SecretBox, new_key
from propcrm.features.platforms.connections import gateway_for
from propcrm.features.platforms.service import ConnectorSupervisor
from propcrm.features.platforms.store import DatabaseStore, FirmSuspended
from propcrm.services.firms import resume_firm, suspend_firm
from propcrm.services.catalog import create_account
from propcrm.services.dispatch import build_dispatcher
from propcrm.services.evaluation import EvaluationWorker
from propcrm.tools.platform_sim.main import Simulator
from propcrm.tools.platform_sim.server import TRADE_DISABLED

UTC = dt.timezone.utc
from support.sim_firm import FIRM, MANAGER, PASSWORD, clear_delivery_env, seed_sim_firm


class World:
    def __init__(self, db_url: str, tmp_path, monkeypatch) -> None:
        monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
        clear_delivery_env(monkeypatch)
        self.engine = make_engine(db_url)
        self.db = sessions(self.engine)
        self.sim_path = str(tmp_path / "sim.db")
        self.sim = Simulator(self.sim_path, MANAGER, PASSWORD, zone="+02:00", controls=True).start(feed=False)
        self.box = SecretBox()
        self.trader_id, self.version_id, self.connection_id = seed_sim_firm(self.db, sim_url=self.sim.url, box=self.box)
        self.dispatcher = build_dispatcher(self.db, {})
        self.worker = EvaluationWorker(self.db)
        self.runner = self.new_runner()

    def new_runner(self, commit_lines: int | None = None) -> ConnectorRunner:
        with self.db() as s:
            row = s.get(PlatformConnection, self.connection_id)
            s.expunge(row)
        store = DatabaseStore(self.db, firm_id=FIRM, connection_id=self.connection_id, name="sim",
                              commit_lines=commit_lines)
        return ConnectorRunner(gateway_for(row, self.box), store, metrics=ConnectorMetrics(), settings=RunnerSettings(
            poll_interval_s=0.01, backoff_initial_s=0.05, backoff_max_s=0.2, guard=GuardSettings(settle_s=0)))

    def challenge(self, external_id: str) -> str:
        """A challenge account, created on the platform by the outbox as a paid order does."""
        with self.db.begin() as s:
            create_account(s, firm_id=FIRM, external_id=external_id, pack_version_id=self.version_id, platform="sim",
                           trader_id=self.trader_id)
            s.add(m.OutboxMessage(firm_id=FIRM, kind="platform_command", dedupe_key=f"test:create:{external_id}",
                                  payload={"command": "create_account", "account": external_id, "platform": "sim",
                                           "account_size": "100000"}))
        report = self.dispatcher.run_once()
        assert report.delivered >= 1 and report.failed == 0, report
        with self.db() as s:
            return s.scalar(select(m.Account.login).where(m.Account.external_id == external_id))

    def evaluate(self) -> None:
        self.worker.run_until_idle()
        self.dispatcher.run_once()

    def stored_ids(self) -> list[str]:
        with self.db() as s:
            return list(s.scalars(select(m.RawEvent.event_id).where(m.RawEvent.source == "sim")))

    def restart_simulator(self) -> None:
        port = self.sim.port
        self.sim.close()
        self.sim = Simulator(self.sim_path, MANAGER, PASSWORD, zone="+02:00", controls=True, port=port).start(feed=False)

    def close(self) -> None:
        self.dispatcher.close()
        self.sim.close()
        self.engine.dispose()


@pytest.fixture
def world(db_url, tmp_path, monkeypatch):
    w = World(db_url, tmp_path, monkeypatch)
    yield w
    w.close()


def test_a_breach_disables_the_platform_account_and_its_next_order_is_refused(world):
    login = world.challenge("CH-1")
    server = world.sim.server
    account = server.accounts[int(login)]
    assert account.balance_c == 10_000_000 and account.group == "demo\\challenge"
    with world.db() as s:  # the trader was told the new login and password
        note = s.scalar(select(m.OutboxMessage.payload).where(m.OutboxMessage.kind == "notify"))
    assert login in note["message"] and "password" in note["message"]

    world.runner.connect()
    world.runner.sync()
    server.set_price("EURUSD", 1.08500)
    assert server.execute(int(login), "EURUSD", 0, 500_000_000).retcode.startswith("10009")
    world.runner.step()
    world.evaluate()
    server.set_price("EURUSD", 1.07400)  # about −5,500 on 5 lots: below the 95,000 daily floor
    world.runner.step()
    world.evaluate()

    with world.db() as s:
        status = s.scalar(select(m.Account.status).where(m.Account.external_id == "CH-1"))
        breach = s.scalar(select(m.Decision.message).where(m.Decision.kind == "breach"))
        sent = s.scalar(select(m.OutboxMessage.status).where(m.OutboxMessage.payload["command"].as_string() == "disable"))
    assert status == "breached" and "daily" in breach and sent == "sent"
    assert account.rights & USER_RIGHT_TRADE_DISABLED
    assert not server.open_by_login.get(int(login))  # flattened
    assert server.execute(int(login), "EURUSD", 0, 100_000_000).retcode == TRADE_DISABLED
    world.runner.step()  # the flattening deal comes back as a trade_closed of a breached account: stored, no decision
    ids = world.stored_ids()
    assert sum(1 for i in ids if i.startswith("deal-")) == 3  # open, its commission, the close


def test_no_deal_is_lost_or_repeated_across_dropped_sessions_and_restarts_of_either_side(world):
    logins = [world.challenge(f"CH-{i}") for i in range(3)]
    stop = threading.Event()
    runner = world.runner
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()

    def trade(rounds: int) -> None:
        for _ in range(rounds):
            for login in logins:
                result = world.sim.server.execute(int(login), "EURUSD", 0, 10_000_000)
                assert result.retcode.startswith("10009"), result
                world.sim.server.close_position(result.order, login=int(login))

    def settle() -> None:
        deadline = time.monotonic() + 20
        wanted = {f"deal-{d.Deal}" for d in world.sim.server.deals if d.Action in (0, 1)}
        while time.monotonic() < deadline and not wanted <= set(world.stored_ids()):
            time.sleep(0.05)
        assert wanted <= set(world.stored_ids()), f"the running connector did not catch up: {runner.health.to_dict()}"


    trade(3)
    settle()
    world.sim.api.sessions.clear()  # the access server forgets the session
    trade(3)
    settle()
    world.restart_simulator()  # the platform restarts (same file, same port)
    trade(3)
    settle()
    stop.set()
    thread.join(timeout=10)
    trade(3)  # while propcrm's connector is down
    runner = world.new_runner()  # propcrm's side restarts: it goes on from the stored cursor
    runner.connect()
    runner.sync()
    runner.step()

    deals = [d for d in world.sim.server.deals if d.Action in (0, 1)]
    assert len(deals) == 3 * 4 * 3 * 2
    ids = world.stored_ids()
    trades = sorted(i for i in ids if i.startswith("deal-") and not i.endswith("-fee")
                    and int(i.split("-")[1]) in {d.Deal for d in deals})
    assert trades == sorted(f"deal-{d.Deal}" for d in deals)
    assert len(ids) == len(set(ids))
    with world.db() as s:
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == 0


def test_a_crash_between_two_parts_of_a_step_s_commit_loses_and_repeats_nothing(world, monkeypatch):
    """A step's lines are stored in parts of ``commit_lines`` (``PROPCRM_CONNECTOR_COMMIT_LINES``), one
    transaction each; only the last moves the cursor. The process dies after the first part: what it
    stored stays, the cursor has not moved, and the restarted connector reads the step again — every
    deal stored once, none lost."""
    from propcrm.features.platforms import store as store_module

    logins = [world.challenge(f"CH-P{i}") for i in range(2)]
    runner = world.new_runner(commit_lines=3)
    runner.connect()
    runner.sync()

    def cursor() -> str | None:
        with world.db() as s:
            return s.scalar(select(PlatformConnection.cursor).where(PlatformConnection.id == world.connection_id))

    before_cursor, before_ids = cursor(), world.stored_ids()
    for _ in range(3):
        for login in logins:
            result = world.sim.server.execute(int(login), "EURUSD", 0, 10_000_000)
            assert result.retcode.startswith("10009"), result
            world.sim.server.close_position(result.order, login=int(login))
    real = store_module.ingest
    parts: list[int] = []

    def dies_at_the_second_part(session, **kwargs):
        parts.append(kwargs["body"].count(b"\n"))
        if len(parts) == 2:
            raise SystemExit("killed between two parts of a step's commit")
        return real(session, **kwargs)

    monkeypatch.setattr(store_module, "ingest", dies_at_the_second_part)
    with pytest.raises(SystemExit):
        runner.step()
    monkeypatch.setattr(store_module, "ingest", real)
    assert parts == [3, 3]  # the step had more than one part; the first was stored, the second not
    assert len(world.stored_ids()) == len(before_ids) + 3
    assert cursor() == before_cursor  # the cursor did not move over the lines the second part would have stored

    runner = world.new_runner(commit_lines=3)  # the restart: it goes on from the stored cursor
    runner.connect()
    runner.sync()
    runner.step()
    deals = [d for d in world.sim.server.deals if d.Action in (0, 1) and d.Login in {int(x) for x in logins}]
    assert len(deals) == 3 * 2 * 2
    ids = world.stored_ids()
    assert len(ids) == len(set(ids))
    assert {f"deal-{d.Deal}" for d in deals} <= set(ids)
    assert cursor() != before_cursor
    with world.db() as s:
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == 0


def test_a_suspended_firm_s_platform_events_wait_for_the_resume_and_none_is_lost(world):
    """Suspending a firm refuses its signed ingestion at once (test_tenant_lifecycle.py); its platform
    connections must stop storing too: the supervisor runs none of them, and a poll already under way stores
    nothing and keeps its cursor, so after the resume the connector reads on with no gap."""
    login = world.challenge("CH-S")
    runner = world.runner
    runner.connect()
    runner.sync()
    with world.db.begin() as s:
        suspend_firm(s, firm_id=FIRM, reason="chargebacks under review", actor="test")
    supervisor = ConnectorSupervisor(world.db, box=world.box, refresh_s=60)
    try:
        supervisor.refresh()
        assert supervisor.running == {}  # no connector of a suspended firm
        result = world.sim.server.execute(int(login), "EURUSD", 0, 10_000_000)
        assert result.retcode.startswith("10009"), result
        with pytest.raises(FirmSuspended, match="suspended"):
            runner.step()
        assert not [i for i in world.stored_ids() if i.startswith("deal-")]
        with world.db.begin() as s:
            resume_firm(s, firm_id=FIRM, reason="cleared", actor="test")
        supervisor.refresh()
        assert list(supervisor.running) == [world.connection_id]
    finally:
        supervisor.close()
    runner.step()  # the same poll again, from the cursor it kept
    deals = {f"deal-{d.Deal}" for d in world.sim.server.deals if d.Action in (0, 1)}
    assert deals and deals <= set(world.stored_ids())


def test_a_disable_and_the_connector_s_reads_do_not_queue_behind_a_writer(world):
    """On SQLite every unit of work takes the write lock up front; a breach's disable (its connection and
    login lookups) and the connector's reads (mapping, cursor, views) read without it, so a long write
    (an evaluation pass, a connector commit) does not hold the platform command back (issue 20)."""
    if world.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL readers never wait for writers")
    from sqlalchemy import text

    login = world.challenge("CH-1")
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with world.db.begin() as s:
            s.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is ours until commit
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    try:
        world.dispatcher.connectors.router.send({"command": "disable", "account": "CH-1", "platform": "sim",
                                                 "firm": FIRM, "idempotency_key": "test:disable"})
        store = DatabaseStore(world.db, firm_id=FIRM, connection_id=world.connection_id, name="sim")
        assert store.mapped() == {login: "CH-1"}
        store.cursor()
        assert set(store.views(["CH-1"])) == {"CH-1"}
        elapsed = time.monotonic() - started
    finally:
        release.set()
        thread.join(timeout=15)
    assert world.sim.server.accounts[int(login)].rights & USER_RIGHT_TRADE_DISABLED
    assert elapsed < 5, f"waited {elapsed:.1f} s for the writer"
