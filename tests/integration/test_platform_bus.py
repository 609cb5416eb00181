"""Platform connectors in the scale-out deployment, on the real NATS JetStream and PostgreSQL.

The platform simulator (MT5 Web API) is connected through the real connector whose store publishes to
the partitioned stream (``features/platforms/store.BusStore``); a ``propcrm worker`` process evaluates
the partitions and a ``propcrm cluster dispatch`` process carries the outbox out, with a poll interval
far longer than the tests wait: only the cross-process wake (``NOTIFY`` on the worker's commit,
``services/wakeup.listen_outbox``) can bring a breach's ``disable`` to the platform in time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from propcrm.adapters.bus.jetstream import BusConfig, connect
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from propcrm.adapters.db.models_platforms import PlatformConnection
from propcrm.adapters.db.session import make_engine, migrate, sessions
from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.mt5.webapi import USER_RIGHT_TRADE_DISABLED
from propcrm.adapters.platforms.runner import ConnectorRunner, RunnerSettings
from propcrm.adapters.platforms.secrets import SecretBox, new_key
from propcrm.features.platforms.connections import gateway_for
from propcrm.adapters.settings import Settings, install
from propcrm.features.platforms.service import ConnectorSupervisor
from propcrm.features.platforms.store import BusStore, store_for
from propcrm.services.catalog import create_account
from propcrm.services.dispatch import build_dispatcher
from propcrm.tools.platform_sim.main import Simulator
from propcrm.tools.platform_sim.server import TRADE_DISABLED
from integration.test_cluster import _start_worker, _stop, _tail, bus, nats_url, pg_url  # noqa: F401 - fixtures

UTC = dt.timezone.utc
from support.sim_firm import FIRM, MANAGER, PASSWORD, clear_delivery_env, seed_sim_firm
LONG_POLL_S = 600  # the dispatcher's fallback poll: never reached within a test


class CrashAfterPublish(BusStore):
    """A store that fails between JetStream's acknowledgement and the cursor ``crashes`` times: what a
    process killed there leaves behind (the step published, the cursor not moved)."""

    crashes = 0

    def store_cursor(self, cursor):
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("crashed after the publication, before the cursor")
        super().store_cursor(cursor)


class BusWorld:
    def __init__(self, db_url: str, bus: BusConfig, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
        clear_delivery_env(monkeypatch)
        self.url, self.bus, self.tmp = db_url, bus, tmp_path
        migrate(db_url)
        self.engine = make_engine(db_url)
        self.db = sessions(self.engine)
        self.sim_path = str(tmp_path / "sim.db")
        self.sim = Simulator(self.sim_path, MANAGER, PASSWORD, zone="+02:00", controls=True).start(feed=False)
        self.box = SecretBox()
        self.trader_id, self.version_id, self.connection_id = seed_sim_firm(self.db, sim_url=self.sim.url, box=self.box)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.runner: ConnectorRunner | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    # -- the deployment's processes
    def start_worker(self) -> None:
        log = self.tmp / "worker.log"
        self.logs.append(log)
        self.procs.append(_start_worker(self.url, self.bus, log))

    def start_dispatcher(self) -> None:
        """A dispatcher process, once it has made its first pass (from then on only a wake-up or its
        ``LONG_POLL_S`` poll starts another)."""
        log = self.tmp / "dispatcher.log"
        self.logs.append(log)
        env = {**os.environ, **self.bus.as_env(), "PROPCRM_DATABASE_URL": self.url}
        port = _free_port()
        with open(log, "ab") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "propcrm.cli", "cluster", "dispatch", "--interval", str(LONG_POLL_S),
                 "--metrics-port", str(port)], env=env, stdout=out, stderr=out))

        def passed() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    return json.loads(answer.read())["last_pass_s_ago"] < 5
            except (OSError, ValueError, KeyError):
                return False

        self.wait("the dispatcher's first pass", passed)

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{_tail(log)}" for log in self.logs)

    # -- the connector
    def new_runner(self, store_class=BusStore, crashes: int = 0) -> ConnectorRunner:
        with self.db() as s:
            row = s.get(PlatformConnection, self.connection_id)
            s.expunge(row)
        store = store_class(self.db, firm_id=FIRM, connection_id=self.connection_id, name="sim", bus=self.bus)
        store.crashes = crashes
        return ConnectorRunner(gateway_for(row, self.box), store, metrics=ConnectorMetrics(), settings=RunnerSettings(
            poll_interval_s=0.02, backoff_initial_s=0.05, backoff_max_s=0.2, guard=GuardSettings(settle_s=0)))

    def run_connector(self, runner: ConnectorRunner) -> None:
        self.stop_connector()
        self.stop = threading.Event()
        self.runner = runner
        self.thread = threading.Thread(target=runner.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def stop_connector(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=10)
            self.runner.store.close()
            self.thread = None

    def challenge(self, external_id: str) -> str:
        """A challenge account created on the platform by the outbox (carried out here, before the
        dispatcher process starts)."""
        with self.db.begin() as s:
            create_account(s, firm_id=FIRM, external_id=external_id, pack_version_id=self.version_id, platform="sim",
                           trader_id=self.trader_id)
            s.add(m.OutboxMessage(firm_id=FIRM, kind="platform_command", dedupe_key=f"test:create:{external_id}",
                                  payload={"command": "create_account", "account": external_id, "platform": "sim",
                                           "account_size": "100000"}))
        dispatcher = build_dispatcher(self.db, {})
        try:
            report = dispatcher.run_once()
        finally:
            dispatcher.close()
        assert report.delivered >= 1 and report.failed == 0, report
        with self.db() as s:
            return s.scalar(select(m.Account.login).where(m.Account.external_id == external_id))

    def wait(self, what: str, check, timeout: float = 60.0, explain=lambda: ""):
        began = time.monotonic()
        while True:
            found = check()
            if found:
                return found
            assert time.monotonic() - began < timeout, (
                f"timed out waiting for {what}: {explain()}; connector {self.runner and self.runner.health.to_dict()}"
                f"\n{self.tails()}")
            time.sleep(0.1)

    def stream_last_seq(self) -> int:
        async def go() -> int:
            nc, js = await connect(self.bus)
            try:
                return (await js.stream_info(self.bus.stream)).state.last_seq
            finally:
                await nc.close()

        return asyncio.run(go())

    def caught_up(self) -> bool:
        last = self.stream_last_seq()
        with self.db() as s:
            done = s.scalar(select(func.max(PartitionCheckpoint.seq)))
        return last > 0 and (done or 0) >= last

    def close(self) -> None:
        self.stop_connector()
        _stop(self.procs)
        self.sim.close()
        self.engine.dispose()


@pytest.fixture
def world(pg_url, bus, tmp_path, monkeypatch):
    w = BusWorld(pg_url, bus, tmp_path, monkeypatch)
    yield w
    w.close()


def test_the_bus_store_is_chosen_in_the_scale_out_deployment(world, monkeypatch):
    def chosen():
        store = store_for(world.db, firm_id=FIRM, connection_id=world.connection_id, name="sim")
        return type(store).__name__, getattr(store, "bus", None)

    assert chosen() == ("DatabaseStore", None)
    for key, value in world.bus.as_env().items():  # PROPCRM_NATS_URL: the deployment is the scale-out one
        monkeypatch.setenv(key, value)
    install(Settings.from_env())
    assert chosen() == ("BusStore", world.bus)
    supervisor = ConnectorSupervisor(world.db, refresh_s=3600)  # what `propcrm connect` runs
    try:
        supervisor.refresh()
        [running] = supervisor.running.values()
        assert type(running.runner.store) is BusStore
    finally:
        supervisor.close()


def test_a_breach_through_the_bus_disables_the_platform_account_without_the_dispatcher_s_poll(world):
    login = world.challenge("CH-1")
    server = world.sim.server
    account = server.accounts[int(login)]
    world.start_worker()
    world.start_dispatcher()
    world.run_connector(world.new_runner())
    server.set_price("EURUSD", 1.08500)
    assert server.execute(int(login), "EURUSD", 0, 500_000_000).retcode.startswith("10009")
    world.wait("the open position in the worker's trades", lambda: _trades(world, "CH-1"))
    server.set_price("EURUSD", 1.07400)  # about −5,500 on 5 lots: below the 95,000 daily floor

    world.wait("the platform account disabled", lambda: account.rights & USER_RIGHT_TRADE_DISABLED,
               explain=lambda: f"status {_status(world, 'CH-1')}, outbox {_outbox(world)}")
    assert _status(world, "CH-1") == "breached"
    with world.db() as s:
        breach = s.scalar(select(m.Decision.message).where(m.Decision.kind == "breach"))
    assert "daily" in breach
    assert server.execute(int(login), "EURUSD", 0, 100_000_000).retcode == TRADE_DISABLED
    # the flattening deal comes back through the connector as the close of a breached account's trade
    world.wait("the flattening close stored", lambda: _closes(world) and world.caught_up())
    assert _dead_letters(world) == []


def test_no_deal_is_doubled_or_lost_across_a_crash_after_the_publication_and_restarts(world):
    externals = [f"CH-{i}" for i in range(3)]
    logins = [world.challenge(e) for e in externals]
    server = world.sim.server
    server.set_price("EURUSD", 1.08500)
    world.start_worker()
    # the first two steps with events crash between JetStream's acknowledgement and the cursor: each
    # is read and published again by the reconnected runner
    world.run_connector(world.new_runner(CrashAfterPublish, crashes=2))

    def trade(rounds: int) -> None:
        for _ in range(rounds):
            for login in logins:
                result = server.execute(int(login), "EURUSD", 0, 10_000_000)
                assert result.retcode.startswith("10009"), result
                server.close_position(result.order, login=int(login))

    def closing_deals() -> set[str]:
        return {f"deal-{d.Deal}" for d in server.deals if d.Action in (0, 1) and d.Entry == 1}

    def settled() -> None:
        world.wait("every closing deal applied", lambda: closing_deals() <= set(_closes(world)) and world.caught_up(),
                   explain=lambda: f"missing {sorted(closing_deals() - set(_closes(world)))[:5]}")

    trade(2)
    settled()
    assert world.runner.store.crashes == 0  # both crashes happened
    world.sim.api.sessions.clear()  # the platform forgets the session
    trade(2)
    settled()
    world.stop_connector()
    trade(2)  # while propcrm's connector is down
    world.run_connector(world.new_runner(CrashAfterPublish, crashes=1))  # restarted: on from the stored cursor
    trade(1)
    settled()

    closes = _closes(world)
    assert sorted(closes) == sorted(closing_deals())  # none lost, none twice
    assert len(closes) == 3 * 7
    assert _dead_letters(world) == []
    with world.db() as s:
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == 0
        opens = s.scalars(select(m.Trade.open_event_id)).all()
    assert len(opens) == len(set(opens)) == 3 * 7
    # the balances propcrm holds are the platform's (a doubled deal or commission would move them)
    world.wait("the states snapshotted", lambda: all(_balance(world, e) is not None for e in externals))
    for external, login in zip(externals, logins):
        platform = Decimal(server.accounts[int(login)].balance_c) / 100
        world.wait(f"{external}'s balance", lambda: _balance(world, external) == platform,
                   explain=lambda: f"propcrm {_balance(world, external)} vs platform {platform}")


# ------------------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _trades(world, external: str) -> list:
    with world.db() as s:
        return s.scalars(select(m.Trade.position).join(m.Account, m.Account.id == m.Trade.account_id)
                         .where(m.Account.external_id == external)).all()


def _closes(world) -> list[str]:
    with world.db() as s:
        return list(s.scalars(select(m.TradeClose.event_id)))


def _status(world, external: str) -> str:
    with world.db() as s:
        return s.scalar(select(m.Account.status).where(m.Account.external_id == external))


def _balance(world, external: str):
    with world.db() as s:
        return s.scalar(select(m.AccountState.balance).join(m.Account, m.Account.id == m.AccountState.account_id)
                        .where(m.Account.external_id == external))


def _outbox(world) -> list:
    with world.db() as s:
        return s.execute(select(m.OutboxMessage.kind, m.OutboxMessage.status, m.OutboxMessage.payload["command"])
                         ).all()


def _dead_letters(world) -> list:
    with world.db() as s:
        return s.execute(select(DeadLetter.event_id, DeadLetter.reason)).all()
