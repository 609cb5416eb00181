"""Contract tests of the Match-Trader Broker API connector against a counterpart written from
Match-Trade's Broker API documentation (tests/support/fake_matchtrader.py), and one pass through the
runner into ingestion and through the outbox commands with a database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.matchtrader.brokerapi import MatchTraderGateway, MatchTraderSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.port import NewAccount, NotConnected, PlatformError
from propcrm.adapters.platforms.runner import ConnectorRunner, RunnerSettings
from propcrm.adapters.platforms.secrets import Secret, SecretBox, new_key
from propcrm.domain.events import decode_event
from propcrm.domain.rulepack import load_pack
from propcrm.features.platforms.commands import PlatformCommands
from propcrm.features.platforms.connections import add_connection, map_login
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from tests.support.fake_matchtrader import FakeBrokerApi
from tests.support.platforms import FakeStore

UTC = dt.timezone.utc


def _gateway(api: FakeBrokerApi, **overrides) -> MatchTraderGateway:
    settings = MatchTraderSettings(url="https://broker-api.example", system_uuid=api.system_uuid,
                                   payment_gateway_uuid=api.gateway_uuid,
                                   groups_by_phase={"*": "offer-challenge", "funded": "offer-funded"}, **overrides)
    return MatchTraderGateway(settings, {"api_key": Secret(api.token)}, transport=api.transport())


def test_the_token_is_required_and_never_shown():
    api = FakeBrokerApi()
    gateway = MatchTraderGateway(MatchTraderSettings(url="https://broker-api.example", system_uuid="sys-1"),
                                 {"api_key": Secret("wrong")}, transport=api.transport())
    with pytest.raises(NotConnected, match="401"):
        gateway.open()
    assert "wrong" not in repr(gateway) and api.token not in repr(_gateway(api))
    with pytest.raises(ValueError, match="api_key"):
        MatchTraderGateway(MatchTraderSettings(url="u", system_uuid="s"), {})


def test_readings_positions_and_the_events_of_a_round_trip():
    api = FakeBrokerApi()
    login = api.account(balance="100000")
    gateway = _gateway(api)
    gateway.open()
    pid = api.trade(login, volume="2")
    api.prices["EURUSD"] = Decimal("1.09900")
    [reading] = gateway.readings([login])
    assert reading.balance == Decimal("100000") and reading.equity == Decimal("99800.00") and reading.trade_enabled
    [position] = gateway.positions([login])
    assert (position.position, position.side, position.lots) == (pid, "buy", Decimal("2"))
    api.close(login, pid)
    poll = gateway.poll(None, [login], start=dt.datetime.now(UTC) - dt.timedelta(hours=1))
    kinds = {e.body["id"]: e.body for e in poll.events}
    closing = api.accounts[login].closed[0]["closingOrderID"]
    assert kinds[f"mt-open-{pid}"]["type"] == "trade_opened"
    closed = kinds[f"mt-close-{closing}"]
    assert closed["profit"] == Decimal("-200.00") and closed["commission"] == Decimal("-3.50")
    deposit = [b for b in kinds.values() if b["type"] == "balance"]
    assert deposit and deposit[0]["reason"] == "deposit" and deposit[0]["amount"] == Decimal("100000")
    assert all(e.ts.tzinfo is not None for e in poll.events)


def test_commands_do_what_the_documentation_says():
    api = FakeBrokerApi()
    login = api.account(balance="50000")
    gateway = _gateway(api)
    api.trade(login)
    gateway.set_trading(login, False)
    assert api.accounts[login].access == "TRADING_DISABLED"
    with pytest.raises(PermissionError):
        api.trade(login)
    assert gateway.readings([login])[0].trade_enabled is False
    assert gateway.close_positions(login) == 1 and not api.accounts[login].positions
    gateway.set_trading(login, True)
    assert api.accounts[login].access == "FULL"
    gateway.balance_operation(login, Decimal("-1000"), "pc payout 17")
    gateway.balance_operation(login, Decimal("250"), "pc deposit ab12cd34")
    assert gateway.find_balance_operation(login, "pc payout 17", dt.datetime.now(UTC) - dt.timedelta(days=1))
    assert gateway.find_balance_operation(login, "pc payout 18", dt.datetime.now(UTC) - dt.timedelta(days=1)) is None
    with pytest.raises(PlatformError, match="400") as refused:
        gateway.balance_operation(login, Decimal("-1000000"), "pc withdrawal x")
    assert refused.value.retryable is False
    gateway.change_group(login, "offer-funded")
    assert api.accounts[login].offer_uuid == "offer-funded"
    api.user("bob@traders.example")
    new = gateway.create_account(NewAccount(group="offer-challenge", leverage=100, name="Bob",
                                            email="bob@traders.example", tag="propcrm B1"))
    assert new in api.accounts and api.accounts[new].offer_uuid == "offer-challenge"
    with pytest.raises(PlatformError, match="no Match-Trader user"):
        gateway.create_account(NewAccount(group="offer-challenge", leverage=100, name="X", email="x@nowhere", tag="t"))
    # propcrm's own operations do not come back as events
    ids = [e.body for e in gateway.poll(None, [login], start=dt.datetime.now(UTC) - dt.timedelta(hours=1)).events
           if e.body["type"] == "balance"]
    assert [b["reason"] for b in ids] == ["deposit", "deposit"]  # the initial one and "pc deposit"


def test_rate_limit_and_network_failures_are_retryable():
    api = FakeBrokerApi(per_minute=3)
    login = api.account()
    gateway = _gateway(api, requests_per_minute=1000)  # a client that believes in more than the server allows
    gateway.readings([login])
    gateway.readings([login])
    gateway.readings([login])
    with pytest.raises(PlatformError, match="429") as limited:
        gateway.readings([login])
    assert limited.value.retryable
    api.down = True
    with pytest.raises(NotConnected):
        gateway.readings([login])
    slept = []
    polite = _gateway(FakeBrokerApi(), requests_per_minute=2)
    polite._sleep = slept.append
    polite.open(), polite.open(), polite.open()
    assert slept and 0 < slept[0] <= 60  # the client waits for its budget instead of being refused


def test_the_runner_streams_without_gaps_or_duplicates_across_a_dropped_connection():
    api = FakeBrokerApi()
    logins = [api.account(f"t{i}@example.com", balance="10000") for i in range(3)]
    store = FakeStore({login: f"A{i}" for i, login in enumerate(logins)}, name="mt")
    runner = ConnectorRunner(_gateway(api, poll_interval_s=0.01), store, metrics=ConnectorMetrics(),
                             settings=RunnerSettings(poll_interval_s=0, guard=GuardSettings(settle_s=0)))
    runner.connect()
    runner.sync()
    expected: set[str] = set()
    for round_ in range(4):
        for login in logins:
            pid = api.trade(login)
            record = api.close(login, pid)
            expected |= {f"mt-open-{pid}", f"mt-close-{record['closingOrderID']}"}
        if round_ == 1:
            api.down = True
            with pytest.raises(NotConnected):
                runner.step()
            api.down = False
            runner.disconnect()
            runner.connect()
            runner.sync()
        for _ in logins:
            runner.step()
    assert expected <= set(store.events)
    assert len(store.order) == len(set(store.order))
    for event in store.events.values():
        decode_event(__import__("json").dumps(event).encode())


@pytest.fixture
def firm(db_url, monkeypatch):
    monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
    engine = make_engine(db_url)
    db = sessions(engine)
    with db.begin() as s:
        ensure_firm(s, firm_id="acme", name="Acme Prop")
        version = add_pack(s, firm_id="acme", pack=load_pack("two-step-100k"), activate=True)
        trader = m.Trader(firm_id="acme", name="Bob", email="bob@traders.example")
        s.add(trader)
        s.flush()
        create_account(s, firm_id="acme", external_id="MT-1", pack_version_id=version.id, platform="mt",
                       trader_id=trader.id)
        add_connection(s, firm_id="acme", name="mt", family_name="matchtrader",
                       settings={"url": "https://broker-api.example", "system_uuid": "sys-1",
                                 "payment_gateway_uuid": "pg-manual", "groups_by_phase": {"*": "offer-challenge"}},
                       secrets={"api_key": "broker-token"}, actor="test", box=SecretBox())
    yield db
    engine.dispose()


def test_outbox_commands_create_fund_and_disable_a_match_trader_account(firm):
    api = FakeBrokerApi()
    api.user("bob@traders.example")
    commands = PlatformCommands(firm, gateway_factory=lambda row: _gateway(api))
    for _ in range(2):  # at least once: the second delivery changes nothing
        commands.send({"firm": "acme", "platform": "mt", "command": "create_account", "account": "MT-1",
                       "idempotency_key": "order-1"})
    with firm() as s:
        login = s.scalar(select(m.Account.login).where(m.Account.external_id == "MT-1"))
    assert login in api.accounts and len(api.accounts) == 1
    assert api.accounts[login].balance == Decimal("100000")
    pid = api.trade(login)
    commands.send({"firm": "acme", "platform": "mt", "command": "disable", "account": "MT-1"})
    assert api.accounts[login].access == "TRADING_DISABLED" and pid not in api.accounts[login].positions
    for _ in range(2):
        commands.send({"firm": "acme", "platform": "mt", "command": "adjust_balance", "account": "MT-1",
                       "reason": "payout", "payout": 7, "amount": "500", "idempotency_key": "payout:7"})
    assert [op["profit"] for op in api.accounts[login].ledgers if op["type"] == "WITHDRAWAL"] == [Decimal("-500")]
    commands.close()


def test_an_approved_payout_is_withdrawn_on_the_platform_once(firm):
    from propcrm.features.platforms.payouts import queue_platform_withdrawal

    api = FakeBrokerApi()
    api.user("bob@traders.example")
    commands = PlatformCommands(firm, gateway_factory=lambda row: _gateway(api))
    with firm.begin() as s:
        account = s.scalar(select(m.Account).where(m.Account.external_id == "MT-1"))
        assert queue_platform_withdrawal(s, account, payout_id=41, amount=Decimal("800")) is False  # no login yet
    commands.send({"firm": "acme", "platform": "mt", "command": "create_account", "account": "MT-1",
                   "idempotency_key": "order-1"})
    with firm.begin() as s:
        account = s.scalar(select(m.Account).where(m.Account.external_id == "MT-1"))
        assert queue_platform_withdrawal(s, account, payout_id=41, amount=Decimal("800")) is True
        assert queue_platform_withdrawal(s, account, payout_id=41, amount=Decimal("800")) is False
        s.flush()
        [row] = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "platform_command")).all()
        payload = dict(row.payload)
    for _ in range(2):
        commands.send({**payload, "firm": "acme", "idempotency_key": row.dedupe_key})
    [login] = api.accounts
    assert [op["comment"] for op in api.accounts[login].ledgers if op["type"] == "WITHDRAWAL"] == ["pc payout 41"]
    commands.close()
