"""The NDJSON a fixed simulator session produces through the MT5 Web API connector, byte for byte.

A scripted session on the simulator (a fake wall clock, fixed prices: no randomness) — balance
operations, logins, market orders with SL/TP, closes by the trader, the dealer, SL, TP and stop out,
swaps, and deals the simulator's traders never make (a charge, a netting reversal, a cancelled deal,
a credit) — read by the real ``mt5-web`` gateway over HTTP and turned into lines by the real
:class:`ConnectorRunner`. The lines must stay exactly those in ``data/platform_session.ndjson``
(recorded before the connector's decoding and the simulator were made cheaper): event ids, field
order, number formats. Regenerate only for a deliberate change of the mapping:
``PROPCRM_PIN_WRITE=1 pytest tests/integration/test_platform_ndjson_pin.py``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.mt5.webapi import Mt5WebGateway, Mt5WebSettings
from propcrm.adapters.platforms.runner import CommitReport, ConnectorRunner, RunnerSettings
from propcrm.adapters.platforms.secrets import Secret
from propcrm.tools.platform_sim.main import Simulator
from propcrm.tools.platform_sim.server import ENTRY_IN, REASON_DEALER

UTC = dt.timezone.utc
MANAGER, PASSWORD = "1000", "Manager#2026"
PIN = Path(__file__).parent / "data" / "platform_session.ndjson"
T0 = dt.datetime(2026, 3, 4, 9, 0, 0, 250_000, tzinfo=UTC)  # a Wednesday


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def wall(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class LineStore:
    name = "sim"

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self.lines: list[bytes] = []
        self.cursors: list[str | None] = []
        self._cursor: str | None = None

    def mapped(self) -> dict[str, str]:
        return dict(self.mapping)

    def cursor(self) -> str | None:
        return self._cursor

    def views(self, accounts):
        return {}

    def commit(self, lines: list[bytes], cursor: str | None) -> CommitReport:
        self.lines.extend(lines)
        self.lines.append(b"# cursor " + (cursor or "").encode())
        self._cursor = cursor
        return CommitReport(accepted=len(lines))

    def enforce(self, account, command, reason) -> bool:
        return False


def _session(tmp_path) -> list[bytes]:
    clock = Clock()
    sim = Simulator(str(tmp_path / "sim.db"), MANAGER, PASSWORD, zone="+02:00").start(feed=False)
    try:
        server = sim.server
        server.wall = clock.wall
        sim.api.started_wall = clock.wall()
        logins = [server.add_user(group="demo\\challenge", name=f"Trader {i}", leverage=100).login for i in range(3)]
        logins.append(server.add_user(group="other\\group", name="Unmapped", leverage=100).login)
        for login in logins:
            server.balance_operation(login, 100_000_00, "pc init demo")
        mapping = {str(login): f"A{i + 1}" for i, login in enumerate(logins[:3])}
        store = LineStore(mapping)
        settings = Mt5WebSettings(url=sim.url, manager=MANAGER, server_timezone="+02:00", groups="demo\\*",
                                  readings_interval_s=0, users_interval_s=0, poll_interval_s=0)
        gateway = Mt5WebGateway(settings, {"password": Secret(PASSWORD)}, now=lambda: clock.now)
        runner = ConnectorRunner(gateway, store, settings=RunnerSettings(
            poll_interval_s=0, start_lookback_s=3600, guard=GuardSettings(settle_s=0, confirm_reads=2, confirm_s=0)),
            metrics=ConnectorMetrics(), now=lambda: clock.now)
        a, b, c, d = logins
        clock.advance(1.5)
        server.login_seen(a, "10.0.0.1")
        server.login_seen(b, "10.0.0.2")
        server.balance_operation(a, 5_000_00, "deposit wire")
        runner.connect()
        runner.sync()

        def step(seconds: float = 0.75) -> None:
            clock.advance(seconds)
            runner.step()

        server.set_price("EURUSD", 1.08500)
        server.set_price("GBPUSD", 1.27000)
        server.set_price("XAUUSD", 2300.00)
        server.set_price("USDJPY", 150.000)
        r1 = server.execute(a, "EURUSD", 0, 100_000_000, sl=1.08000, tp=1.09000)
        clock.advance(0.2)
        r2 = server.execute(a, "GBPUSD", 1, 50_000_000, tp=1.26500, comment="robot")
        server.execute(b, "XAUUSD", 0, 200_000_000, sl=2290.00)
        server.execute(c, "USDJPY", 1, 1_000_000_000)
        server.execute(d, "EURUSD", 0, 10_000_000)
        step()
        server.set_price("EURUSD", 1.09100)  # a's buy hits its TP
        clock.advance(0.3)
        server.set_price("XAUUSD", 2289.00)  # b's buy hits its SL
        server.close_position(r2.order, login=a)
        server.balance_operation(a, -1_000_00, "withdrawal 1")
        step()
        clock.advance(3600 * 15)  # past the server's midnight: a night's swap (Wednesday: three)
        server.rollover(triple=True)
        server.login_seen(a, "10.0.0.9")
        server.update_user(b, rights=0x163 | 0x4)
        step()
        server.set_price("USDJPY", 180.000)  # c's sell blows the account: stop out
        server.execute(b, "EURUSD", 0, 10_000_000, dealer=True)
        with server.lock:  # deals the simulated traders never make
            made = [
                server._deal(Login=a, Order=0, Action=4, Entry=ENTRY_IN, Symbol="", Price=0.0, Volume=0, VolumeExt=0,
                             Profit_c=-2_50, Storage_c=0, Commission_c=0, PositionID=0, Reason=REASON_DEALER,
                             Comment="monthly data fee"),
                server._deal(Login=a, Order=0, Action=3, Entry=ENTRY_IN, Symbol="", Price=0.0, Volume=0, VolumeExt=0,
                             Profit_c=500_00, Storage_c=0, Commission_c=0, PositionID=0, Reason=REASON_DEALER,
                             Comment="bonus credit"),
                server._deal(Login=a, Order=0, Action=2, Entry=ENTRY_IN, Symbol="", Price=0.0, Volume=0, VolumeExt=0,
                             Profit_c=-250_00, Storage_c=0, Commission_c=0, PositionID=0, Reason=REASON_DEALER,
                             Comment="pc reset phase 2"),
                server._deal(Login=b, Order=7_000_001, Action=1, Entry=2, Symbol="EURUSD", Price=1.08712,
                             Volume=20_000, VolumeExt=200_000_000, Profit_c=-12_34, Storage_c=-56, Commission_c=-7_00,
                             PositionID=r1.order, Reason=0, Comment="reverse", Digits=5, ContractSize=100_000.0,
                             VolumeClosed=10_000),
                server._deal(Login=b, Order=0, Action=13, Entry=0, Symbol="EURUSD", Price=1.08700, Volume=10_000,
                             VolumeExt=100_000_000, Profit_c=0, Storage_c=0, Commission_c=0, PositionID=1,
                             Reason=0, Comment=""),
                server._deal(Login=c, Order=0, Action=12, Entry=ENTRY_IN, Symbol="", Price=0.0, Volume=0, VolumeExt=0,
                             Profit_c=3_21, Storage_c=0, Commission_c=0, PositionID=0, Reason=REASON_DEALER,
                             Comment="interest"),
            ]
            server._save(deals=made)
        step()
        step(5.0)  # nothing new: no lines, the same cursor
        for position in list(server.positions.values()):
            server.close_position(position.ticket, login=position.login, dealer=True)
        step()
        runner.disconnect()
        return store.lines
    finally:
        sim.close()


def test_a_fixed_simulator_session_gives_the_same_ndjson_byte_for_byte(tmp_path):
    lines = _session(tmp_path)
    produced = b"\n".join(lines) + b"\n"
    if os.environ.get("PROPCRM_PIN_WRITE"):
        PIN.parent.mkdir(exist_ok=True)
        PIN.write_bytes(produced)
    expected = PIN.read_bytes()
    assert produced.decode().splitlines() == expected.decode().splitlines()
    assert produced == expected
