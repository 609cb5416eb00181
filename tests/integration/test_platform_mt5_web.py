"""Contract tests of the MT5 Web API connector.

The counterpart is the simulator's Web API (tools/platform_sim/webapi.py), written from MetaQuotes'
documentation from the server's side; the authentication is also held to the documentation's own
worked example. No database: these run the gateway alone over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import httpx
import pytest

from propcrm.adapters.platforms.mt5.mapping import Mt5Deal, deal_events
from propcrm.adapters.platforms.mt5.webapi import (USER_RIGHT_TRADE_DISABLED, DealCursor, Mt5WebApi, Mt5WebGateway,
                                                   Mt5WebSettings, password_hash, rand_answer)
from propcrm.adapters.platforms.port import NewAccount, NotConnected, PlatformError
from propcrm.adapters.platforms.secrets import Secret
from propcrm.adapters.platforms.servertime import ServerClock
from propcrm.tools.platform_sim.main import Simulator
from propcrm.tools.platform_sim.server import TRADE_DISABLED

UTC = dt.timezone.utc
MANAGER, PASSWORD = "1000", "Manager#2026"


def test_password_hash_and_answers_match_metaquotes_worked_example():
    # Web API → Authentication: "Password1", srv_rand 73007dc7…, cli_rand 4db98fec…
    assert password_hash("Password1").hex() == "904ba8ecb16273d2f0ae9c3b8a023752"
    assert rand_answer("Password1", "73007dc7184747ce0f7c98516ef1c851") == "77fe51827f7fa69dd80fbec9aa33f1bb"
    assert rand_answer("Password1", "4db98fec17aab4dc5a240bdc659e8395") == "1732021b1b332f51660b2b315eed3a35"


@pytest.fixture
def sim(tmp_path):
    simulator = Simulator(str(tmp_path / "sim.db"), MANAGER, PASSWORD, zone="+02:00", controls=True).start(feed=False)
    yield simulator
    simulator.close()


def _gateway(sim, **overrides) -> Mt5WebGateway:
    settings = Mt5WebSettings(url=sim.url, manager=MANAGER, server_timezone="+02:00",
                              groups_by_phase={"*": "demo\\challenge"}, readings_interval_s=0, **overrides)
    return Mt5WebGateway(settings, {"password": Secret(PASSWORD)})


def test_the_handshake_refuses_a_wrong_password_and_proves_the_server(sim):
    api = Mt5WebApi(sim.url, MANAGER, Secret("wrong"))
    with pytest.raises(PlatformError, match="1001"):
        api.connect()
    api = Mt5WebApi(sim.url, MANAGER, Secret(PASSWORD))
    api.connect()
    assert api.authenticated and api.version_access == "4150"
    api.ping()
    api.close()

    def impostor(request: httpx.Request) -> httpx.Response:  # knows the protocol, not the password
        if request.url.path == "/api/auth/start":
            return httpx.Response(200, json={"retcode": "0 Done", "srv_rand": "00" * 16})
        return httpx.Response(200, json={"retcode": "0 Done", "cli_rand_answer": "ff" * 16})

    fake = Mt5WebApi("https://mt5.example", MANAGER, Secret(PASSWORD), transport=httpx.MockTransport(impostor))
    with pytest.raises(PlatformError, match="does not know the password"):
        fake.connect()


def test_a_request_without_a_session_is_refused_and_the_client_logs_in_again(sim):
    api = Mt5WebApi(sim.url, MANAGER, Secret(PASSWORD))
    api.connect()
    sim.api.sessions.clear()  # the server forgot the connection (restart, 180 s idle)
    assert api.get("/api/user/logins", group="*") == []
    assert api.authenticated
    raw = httpx.get(f"{sim.url}/api/user/logins?group=*")
    assert raw.status_code == 403 and "8 " in raw.text
    api.close()


def test_secrets_never_show(sim):
    gateway = _gateway(sim)
    assert PASSWORD not in repr(gateway) + repr(gateway.api) + str(Secret(PASSWORD)) + repr(Secret(PASSWORD))


def test_accounts_are_created_found_again_funded_and_moved(sim):
    gateway = _gateway(sim)
    gateway.open()
    spec = NewAccount(group="demo\\challenge", leverage=100, name="Ada Trader", email="ada@example.com",
                      tag="propcrm CH-1", password="Aa#12345", investor_password="Bb#12345")
    assert gateway.find_account(spec) is None
    login = gateway.create_account(spec)
    assert gateway.find_account(spec) == login
    account = sim.server.accounts[int(login)]
    assert account.group == "demo\\challenge" and account.leverage == 100 and account.comment == "propcrm CH-1"
    ticket = gateway.balance_operation(login, Decimal("100000.00"), "pc init 1a2b3c4d")
    assert gateway.find_balance_operation(login, "pc init 1a2b3c4d", dt.datetime.now(UTC) - dt.timedelta(days=1)) == ticket
    assert account.balance_c == 10_000_000
    gateway.change_group(login, "real\\funded")
    assert account.group == "real\\funded"
    with pytest.raises(PlatformError, match="3006"):
        gateway.create_account(NewAccount(group="demo\\x", leverage=100, name="Weak", email=None, tag="t",
                                          password="weak"))
    gateway.close()


def test_disabling_trading_refuses_the_next_order_and_closing_flattens(sim):
    gateway = _gateway(sim)
    gateway.open()
    login = gateway.create_account(NewAccount(group="demo\\challenge", leverage=100, name="T", email=None, tag="x",
                                              password="Aa#12345"))
    gateway.balance_operation(login, Decimal("100000"), "deposit")
    server = sim.server
    assert server.execute(int(login), "EURUSD", 0, 100_000_000).retcode.startswith("10009")
    assert server.execute(int(login), "XAUUSD", 1, 50_000_000).retcode.startswith("10009")
    gateway.set_trading(login, False)
    assert server.accounts[int(login)].rights & USER_RIGHT_TRADE_DISABLED
    assert server.execute(int(login), "EURUSD", 0, 100_000_000).retcode == TRADE_DISABLED
    assert gateway.close_positions(login) == 2
    assert not server.open_by_login[int(login)]
    gateway.set_trading(login, True)
    assert server.execute(int(login), "EURUSD", 0, 100_000_000).retcode.startswith("10009")
    gateway.close()


def _funded(sim, gateway, balance="100000"):
    login = gateway.create_account(NewAccount(group="demo\\challenge", leverage=100, name="T", email=None,
                                              tag=f"t{len(sim.server.accounts)}", password="Aa#12345"))
    gateway.balance_operation(login, Decimal(balance), "deposit")
    return login


def test_the_stream_loses_and_repeats_nothing_across_polls_and_reconnects(sim):
    gateway = _gateway(sim)
    gateway.open()
    logins = [_funded(sim, gateway) for _ in range(3)]
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    seen: list[str] = []
    cursor = None
    for round_ in range(6):
        for login in logins:
            result = sim.server.execute(int(login), "EURUSD", round_ % 2, 10_000_000)
            sim.server.close_position(result.order, login=int(login))
        poll = gateway.poll(cursor, logins, start=start)
        seen += [e.body["id"] for e in poll.events if e.kind in ("deal", "balance")]
        cursor = poll.cursor
        if round_ == 2:  # the connection drops; a new session goes on from the cursor
            gateway.close()
            gateway = _gateway(sim)
            gateway.open()
    poll = gateway.poll(cursor, logins, start=start)
    seen += [e.body["id"] for e in poll.events if e.kind in ("deal", "balance")]
    deals = sim.server.deals
    expected = [f"deal-{d.Deal}" for d in deals] + [f"deal-{d.Deal}-fee" for d in deals if d.Action < 2 and d.Entry == 0]
    assert len(deals) == 3 + 6 * 3 * 2 and sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    assert DealCursor.parse(cursor).seen  # the tickets of the last second are remembered
    gateway.close()


def test_deals_map_to_events_with_costs_reasons_and_utc_times(sim):
    gateway = _gateway(sim)
    gateway.open()
    login = _funded(sim, gateway)
    server = sim.server
    server.set_price("EURUSD", 1.08500)
    opened = server.execute(int(login), "EURUSD", 0, 200_000_000, sl=1.08000)
    server.rollover()
    server.set_price("EURUSD", 1.07990)  # below the stop loss: closed by SL
    poll = gateway.poll(None, [login], start=dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    by_type = {}
    for event in poll.events:
        by_type.setdefault(event.body["type"], []).append(event)
    trade_open = by_type["trade_opened"][0]
    assert trade_open.body["position"] == str(opened.order) and trade_open.body["lots"] == Decimal("2")
    assert trade_open.body["sl"] == Decimal("1.08000")
    fee = [e for e in by_type["balance"] if e.body["reason"] == "fee"][0]
    assert fee.body["amount"] == Decimal("-7.00")
    closed = by_type["trade_closed"][0]
    assert closed.body["reason"] == "sl" and closed.body["swap"] == Decimal("-14.00")
    assert closed.body["commission"] == Decimal("-7.00") and closed.body["profit"] < 0
    deal = server.deals[-1]
    assert closed.ts == ServerClock("+02:00").ms_to_utc(deal.TimeMsc)
    assert abs((closed.ts - dt.datetime.now(UTC)).total_seconds()) < 5  # +02:00 server time read as UTC correctly
    assert [e.body["reason"] for e in by_type["balance"] if e.body["reason"] != "fee"] == ["deposit"]
    gateway.close()


def test_readings_and_an_account_without_trading_state(sim):
    gateway = _gateway(sim)
    gateway.open()
    login = gateway.create_account(NewAccount(group="demo\\challenge", leverage=100, name="T", email=None, tag="q",
                                              password="Aa#12345"))
    sim.api.started_wall = sim.server.wall() + 1  # as if the server restarted after the account was made
    sim.api.active.clear()
    [reading] = gateway.readings([login])
    assert reading.equity is None and reading.balance == Decimal("0.00")
    gateway.balance_operation(login, Decimal("5000"), "deposit")
    sim.server.execute(int(login), "EURUSD", 0, 10_000_000)
    [reading] = gateway.readings([login])
    assert reading.equity is not None and reading.balance == Decimal("4999.65") and reading.trade_enabled
    gateway.close()


def test_the_deal_record_of_the_documentation_maps():
    record = {"Deal": "11918642", "Login": "1020", "Action": "1", "Entry": "1", "Time": "1569933125",
              "TimeMsc": "1569933125123", "Symbol": "EURUSD", "Price": "1.10100", "VolumeExt": "50000000",
              "Profit": "-12.50", "Storage": "-0.70", "Commission": "-3.50", "PositionID": "11918600", "Reason": "4"}
    [event] = deal_events(Mt5Deal.from_record(record), ServerClock("+03:00"))
    assert event.body == {"id": "deal-11918642", "type": "trade_closed", "position": "11918600", "lots": Decimal("0.5"),
                          "price": Decimal("1.10100"), "profit": Decimal("-12.50"), "commission": Decimal("-3.50"),
                          "swap": Decimal("-0.70"), "reason": "tp"}
    assert event.ts == dt.datetime(2019, 10, 1, 9, 32, 5, 123000, tzinfo=UTC)


def test_propcrm_balance_operations_are_not_ingested_twice():
    base = {"Deal": "1", "Login": "7", "Action": "2", "Entry": "0", "Time": "1700000000", "Profit": "-500.00"}
    assert deal_events(Mt5Deal.from_record({**base, "Comment": "pc payout 42"}), ServerClock("UTC")) == []
    assert deal_events(Mt5Deal.from_record({**base, "Comment": "pc init 1a2b"}), ServerClock("UTC")) == []
    [event] = deal_events(Mt5Deal.from_record({**base, "Comment": "manual"}), ServerClock("UTC"))
    assert event.body["reason"] == "withdrawal" and event.body["amount"] == Decimal("-500.00")
    assert deal_events(Mt5Deal.from_record({**base, "Action": "3"}), ServerClock("UTC")) == []  # credit


def test_logins_are_reported_without_a_device_that_would_link_every_account(sim):
    """MT5 names no device: two traders logging in must not share one (linkage weighs a shared device as
    strong evidence; a constant "mt5" linked every account of the platform and opened a case that blocked
    the demo's funded trader's payout)."""
    gateway = _gateway(sim)
    gateway.open()
    logins = [_funded(sim, gateway) for _ in range(2)]
    for n, login in enumerate(logins):
        sim.server.login_seen(int(login), f"198.51.100.{n + 1}")
    poll = gateway.poll(None, logins, start=dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    devices = {e.login: e.body["device"] for e in poll.events if e.body["type"] == "session"}
    assert set(devices) == set(logins) and len(set(devices.values())) == 2
    gateway.close()
