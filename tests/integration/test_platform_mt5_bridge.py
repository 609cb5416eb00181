"""The MT5 Manager API bridge and propcrm's mt5-manager connector, against a fake of the MT5Manager
package's documented interface backed by the platform simulator."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import httpx
import pytest
from support import fake_mt5manager
from support.platforms import FakeStore

from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.mt5.bridge_client import BridgeGateway, BridgeSettings, sign
from propcrm.adapters.platforms.mt5.manager_bridge import BridgeConfig, ManagerBridge
from propcrm.adapters.platforms.port import NewAccount, PlatformError
from propcrm.adapters.platforms.runner import ConnectorRunner, RunnerSettings
from propcrm.adapters.platforms.secrets import Secret
from propcrm.tools.platform_sim.server import TRADE_DISABLED, USER_RIGHT_TRADE_DISABLED, SimServer

UTC = dt.timezone.utc
SECRET = "bridge-shared-secret"


@pytest.fixture
def sim(tmp_path):
    server = SimServer(str(tmp_path / "mt5.db"), zone="+02:00")
    fake_mt5manager.SERVERS["mt5.example:443"] = (server, 1000, "Manager#1")
    yield server
    server.close()
    fake_mt5manager.SERVERS.clear()


def _bridge(tmp_path, **overrides) -> ManagerBridge:
    config = BridgeConfig(server="mt5.example:443", manager=1000, password="Manager#1", secret=SECRET,
                          groups="demo\\*", server_timezone="+02:00", journal=str(tmp_path / "journal.db"),
                          listen_port=0, **overrides)
    return ManagerBridge(config, api_module=fake_mt5manager)


@pytest.fixture
def bridge(sim, tmp_path):
    b = _bridge(tmp_path)
    b.connect()
    server = b.serve()
    b.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield b
    server.shutdown()
    b.disconnect()
    b.journal.close()


def _gateway(url: str, secret: str = SECRET) -> BridgeGateway:
    return BridgeGateway(BridgeSettings(url=url, wait_s=0.2, readings_interval_s=0,
                                        groups_by_phase={"*": "demo\\challenge"}), {"bridge_secret": Secret(secret)})


def _account(gateway, sim, balance="100000") -> str:
    login = gateway.create_account(NewAccount(group="demo\\challenge", leverage=100, name="Ada", email=None,
                                              tag=f"propcrm CH-{len(sim.accounts)}", password="Aa#12345"))
    gateway.balance_operation(login, Decimal(balance), "pc init 00000000")
    return login


def test_commands_run_through_the_manager_api(bridge, sim):
    gateway = _gateway(bridge.url)
    gateway.open()
    spec = NewAccount(group="demo\\challenge", leverage=50, name="Ada", email="ada@example.com", tag="propcrm CH-9",
                      password="Aa#12345")
    login = gateway.create_account(spec)
    assert gateway.find_account(spec) == login and sim.accounts[int(login)].leverage == 50
    gateway.balance_operation(login, Decimal("100000.004"), "pc init 1a2b3c4d")
    assert sim.accounts[int(login)].balance_c == 10_000_000  # rounded to the cent before the API's double
    assert gateway.find_balance_operation(login, "pc init 1a2b3c4d", dt.datetime.now(UTC) - dt.timedelta(hours=1))
    sim.execute(int(login), "EURUSD", 0, 100_000_000)
    sim.execute(int(login), "GBPUSD", 1, 50_000_000)
    gateway.set_trading(login, False)
    assert sim.accounts[int(login)].rights & USER_RIGHT_TRADE_DISABLED
    assert sim.execute(int(login), "EURUSD", 0, 100_000_000).retcode == TRADE_DISABLED
    assert gateway.close_positions(login) == 2 and not sim.open_by_login[int(login)]
    gateway.change_group(login, "demo\\funded")
    assert sim.accounts[int(login)].group == "demo\\funded"
    [reading] = gateway.readings([login])
    assert reading.trade_enabled is False and reading.group == "demo\\funded"
    gateway.close()


def test_requests_must_be_signed_and_fresh(bridge):
    with pytest.raises(PlatformError, match="401"):
        _gateway(bridge.url, "wrong").open()
    stamp = str(int(time.time()) - 3600)
    target = "/readings?logins="
    response = httpx.get(bridge.url + target, headers={"X-Propcrm-Timestamp": stamp,
                                                       "X-Propcrm-Signature": sign(SECRET, stamp, "GET", target, b"")})
    assert response.status_code == 401 and "stale" in response.json()["error"]
    assert httpx.get(bridge.url + "/healthz").json() == {"connected": True}


def test_sinks_are_journalled_once_and_the_stream_resumes(bridge, sim, tmp_path):
    gateway = _gateway(bridge.url)
    gateway.open()
    login = _account(gateway, sim)
    sim.login_seen(int(login), "203.0.113.7")
    opened = sim.execute(int(login), "EURUSD", 0, 100_000_000)
    sim.close_position(opened.order, login=int(login))
    poll = gateway.poll(None, [login], start=dt.datetime.now(UTC))
    kinds = [(e.body["type"], e.body["id"]) for e in poll.events]
    deals = sim.deals
    assert ("session", f"login-{login}-{sim.accounts[int(login)].last_access}") in kinds
    [session] = [e for e in poll.events if e.body["type"] == "session"]
    assert session.body["device"].endswith(f":{login}")  # the terminal's kind alone would link every user
    assert ("trade_opened", f"deal-{deals[-2].Deal}") in kinds and ("trade_closed", f"deal-{deals[-1].Deal}") in kinds
    assert not any(e.body["id"] == f"deal-{deals[0].Deal}" for e in poll.events)  # "pc init": propcrm's own
    cursor = poll.cursor
    # the MT5 server drops the bridge; deals happen meanwhile; the bridge reconnects and back-fills them
    bridge.manager.drop()
    assert not bridge.connected
    missed = sim.execute(int(login), "XAUUSD", 1, 10_000_000)
    bridge.connect()
    # and the bridge itself restarts on the same journal
    restarted = _bridge(tmp_path)
    restarted.connect()
    assert restarted.journal.after(0, 10_000, 0)[1] == bridge.journal.after(0, 10_000, 0)[1]
    restarted.disconnect()
    restarted.journal.close()
    poll = gateway.poll(cursor, [login], start=dt.datetime.now(UTC))
    assert [e.body["id"] for e in poll.events if e.kind == "deal"] == [f"deal-{missed.deal}"]
    assert gateway.poll(poll.cursor, [login], start=dt.datetime.now(UTC)).events == []


def test_daily_reports_become_end_of_day_equity(bridge, sim):
    gateway = _gateway(bridge.url)
    gateway.open()
    login = _account(gateway, sim, "50000")
    bridge.manager.daily(int(login), 1_772_755_200)  # 2026-03-06 00:00 server time
    [event] = [e for e in gateway.poll(None, [login], start=dt.datetime.now(UTC)).events if e.kind == "daily"]
    assert event.body["equity"] == "50000.00" and event.ts == dt.datetime(2026, 3, 5, 22, 0, tzinfo=UTC)


def test_the_runner_streams_through_the_bridge_into_ingestion(bridge, sim):
    gateway = _gateway(bridge.url)
    gateway.open()
    login = _account(gateway, sim)
    store = FakeStore({login: "CH-1"})
    runner = ConnectorRunner(gateway, store, metrics=ConnectorMetrics(), settings=RunnerSettings(
        poll_interval_s=0, guard=GuardSettings(settle_s=0)))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    for _ in range(5):
        result = sim.execute(int(login), "EURUSD", 0, 10_000_000)
        sim.close_position(result.order, login=int(login))
    wanted = {f"deal-{d.Deal}" for d in sim.deals if d.Action in (0, 1)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not wanted <= set(store.events):
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert wanted <= set(store.events)
    assert all(e["account"] == "CH-1" for e in store.events.values())
    balances = [e["balance"] for e in store.of_type("equity")]
    assert balances and all(b.count(".") == 1 and len(b.split(".")[1]) == 2 for b in balances)  # cents, not doubles
