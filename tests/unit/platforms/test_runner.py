"""The connector framework: sync, stream, resume without gap or duplicate, order per account, guard."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from support.platforms import T0, FakePlatform, FakeStore, closed, opened, reading

from propcrm.adapters.platforms.guard import GuardSettings
from propcrm.adapters.platforms.metrics import ConnectorMetrics
from propcrm.adapters.platforms.port import PlatformPosition
from propcrm.adapters.platforms.runner import AccountView, ConnectorRunner, RunnerSettings
from propcrm.domain.events import decode_event

S = dt.timedelta(seconds=1)


def _runner(platform, store, *, now=None, guard=None, **settings):
    clock = {"now": now or T0 + 10 * S}
    runner = ConnectorRunner(platform, store, settings=RunnerSettings(
        poll_interval_s=0, backoff_initial_s=0.001, backoff_max_s=0.002,
        guard=guard or GuardSettings(settle_s=0, confirm_reads=2, confirm_s=1), **settings),
        metrics=ConnectorMetrics(), now=lambda: clock["now"])
    runner.clock = clock
    return runner


def test_sync_ingests_the_history_and_the_readings_with_the_cursor():
    platform = FakePlatform()
    platform.deal("1001", T0, opened("p1"))
    platform.deal("1001", T0 + S, closed("p1", "-120.50"))
    platform.deal("2002", T0 + S, opened("p9"))  # a login mapped to no account
    platform.accounts["1001"] = reading("1001", "99879.50", "99879.50", at=T0 + 5 * S)
    store = FakeStore({"1001": "A1"})
    runner = _runner(platform, store)
    runner.connect()
    report = runner.sync()
    assert report.accepted == 3
    assert [store.events[i]["type"] for i in store.order] == ["trade_opened", "trade_closed", "equity"]
    assert all(e["account"] == "A1" for e in store.events.values())
    assert store.stored_cursor == "3"
    for event in store.events.values():  # every line is a valid event of the wire contract
        decode_event(__import__("json").dumps(event))
    equity = store.of_type("equity")[0]
    assert equity["equity"] == "99879.50" and equity["balance"] == "99879.50"


def test_resumes_after_a_disconnect_with_no_gap_and_no_duplicate():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1"})
    runner = _runner(platform, store)
    for i in range(5):
        platform.deal("1001", T0 + i * S, opened(f"p{i}"))
    stop = threading.Event()
    platform.fail_next = 0
    runner.connect()
    runner.sync()
    for i in range(5, 10):
        platform.deal("1001", T0 + i * S, opened(f"p{i}"))
    platform.fail_next = 2  # the next poll and the first reconnect fail
    calls = {"n": 0}
    original = platform.poll

    def poll(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            stop.set()
        return original(*args, **kwargs)

    platform.poll = poll
    runner.run(stop)
    assert platform.opened >= 2  # it reconnected
    ids = [store.events[i]["id"] for i in store.order]
    assert ids == [f"deal-p{i}-in" for i in range(10)]
    assert len(ids) == len(set(ids))


def test_a_failed_commit_keeps_the_cursor_and_the_events_come_again():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1"})
    runner = _runner(platform, store)
    runner.connect()
    runner.sync()
    platform.deal("1001", T0 + 20 * S, opened("p1"))
    store.fail_commit = 1
    with pytest.raises(RuntimeError):
        runner.step()
    assert store.stored_cursor == "0" and not store.events
    runner.step()
    assert [e["id"] for e in store.events.values()] == ["deal-p1-in"] and store.stored_cursor == "1"


def test_an_event_older_than_the_accounts_last_is_stamped_with_it_and_keeps_its_platform_time():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1"})
    store.view["A1"] = AccountView(status="active", last_ts=T0 + 30 * S)
    platform.deal("1001", T0 + 10 * S, opened("p1"))
    runner = _runner(platform, store)
    runner.connect()
    runner.sync()
    event = store.events["deal-p1-in"]
    assert event["ts"] == "2026-03-02T10:00:30.000Z" and event["platform_ts"] == "2026-03-02T10:00:10.000Z"


def test_readings_are_taken_before_deals_and_an_account_stays_in_time_order():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1"})
    runner = _runner(platform, store)
    runner.connect()
    runner.sync()
    platform.accounts["1001"] = reading("1001", "100000", "99500", at=T0 + 20 * S)
    platform.deal("1001", T0 + 21 * S, opened("p1"))  # executed after the reading
    platform.deal("1001", T0 + 19 * S, opened("p0"))  # before it
    runner.step()
    kinds = [(store.events[i]["type"], store.events[i]["ts"]) for i in store.order]
    assert kinds == [("trade_opened", "2026-03-02T10:00:19.000Z"), ("equity", "2026-03-02T10:00:20.000Z"),
                     ("trade_opened", "2026-03-02T10:00:21.000Z")]


class TestGlitchGuard:
    def _setup(self, guard):
        platform = FakePlatform()
        store = FakeStore({"1001": "A1"})
        store.view["A1"] = AccountView(status="active", last_ts=None, equity=Decimal("100000"),
                                       balance=Decimal("100000"))
        return platform, store, _runner(platform, store, guard=guard)

    def test_a_zero_equity_while_the_connection_synchronises_is_not_passed_on(self):
        platform, store, runner = self._setup(GuardSettings(settle_s=5, confirm_reads=2, confirm_s=1))
        runner.connect()  # at T0 + 10 s
        for i in range(4):  # 4 readings of zero within the 5 s after connecting: confirmed, but settling
            platform.accounts["1001"] = reading("1001", "100000", "0.00", at=T0 + (10 + i) * S)
            runner.sync() if i == 0 else runner.step()
        assert store.of_type("equity") == []
        platform.accounts["1001"] = reading("1001", "100000", "99990", at=T0 + 16 * S)
        runner.step()
        assert [e["equity"] for e in store.of_type("equity")] == ["99990"]

    def test_a_real_loss_to_zero_is_passed_on_once_confirmed(self):
        platform, store, runner = self._setup(GuardSettings(settle_s=0, confirm_reads=3, confirm_s=2))
        runner.connect()
        runner.sync()
        for i in range(3):
            platform.accounts["1001"] = reading("1001", "100000", "-5.00", at=T0 + i * S)
            runner.step()
            assert store.of_type("equity") == [] or i == 2
        assert [e["equity"] for e in store.of_type("equity")] == ["-5.00"]

    def test_a_one_off_spike_is_dropped_and_the_next_plausible_reading_passes(self):
        platform, store, runner = self._setup(GuardSettings(settle_s=0, confirm_reads=2, confirm_s=1))
        runner.connect()
        runner.sync()
        platform.accounts["1001"] = reading("1001", "100000", "20000", at=T0)
        runner.step()
        platform.accounts["1001"] = reading("1001", "100000", "99950", at=T0 + S)
        runner.step()
        assert [e["equity"] for e in store.of_type("equity")] == ["99950"]

    def test_no_trading_state_means_the_balance_when_flat_and_nothing_when_positions_are_open(self):
        platform, store, runner = self._setup(GuardSettings(settle_s=0))
        runner.connect()
        runner.sync()
        platform.accounts["1001"] = reading("1001", "100250", None, at=T0 + S)
        runner.step()
        assert [(e["equity"], e["balance"]) for e in store.of_type("equity")] == [("100250", "100250")]
        platform.deal("1001", T0 + 2 * S, opened("p1"))
        runner.step()
        platform.accounts["1001"] = reading("1001", "100000", None, at=T0 + 3 * S)
        runner.step()
        assert len(store.of_type("equity")) == 1

    def test_unchanged_readings_are_not_repeated(self):
        platform, store, runner = self._setup(GuardSettings(settle_s=0))
        runner.connect()
        runner.sync()
        for i in range(3):
            platform.accounts["1001"] = reading("1001", "100000", "99990", at=T0 + i * S)
            runner.step()
        assert len(store.of_type("equity")) == 1


def test_reconciliation_finds_positions_opened_and_closed_while_away_and_enforces_again():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1", "1002": "A2"})
    # the platform has p7 open, opened before the cursor's window; propcrm never saw it
    platform.history["p7"] = []
    platform.deal("1001", T0, opened("p7"))
    platform.deals.clear()
    platform.open_positions["p7"] = PlatformPosition("1001", "p7", "EURUSD", "buy", Decimal(1), Decimal("1.1"), T0)
    # propcrm holds p3 open; the platform closed it (its closing deal is older than the cursor)
    platform.deal("1001", T0, closed("p3", "50"))
    platform.deals.clear()
    store.view["A1"] = AccountView(status="active", last_ts=T0, positions={"p3": T0 - S})
    store.view["A2"] = AccountView(status="breached", last_ts=T0)
    platform.accounts["1002"] = reading("1002", "90000", "90000", trade_enabled=True)
    runner = _runner(platform, store)
    runner.connect()
    runner.sync()
    assert platform.calls == ["opening p7", "closing p3"]
    assert {"deal-p7-in", "deal-p3-out"} <= set(store.events)
    assert store.enforced == [("A2", "disable")]


def test_a_position_open_on_both_sides_is_left_alone():
    platform = FakePlatform()
    store = FakeStore({"1001": "A1"})
    platform.open_positions["p1"] = PlatformPosition("1001", "p1", "EURUSD", "buy", Decimal(1), Decimal("1.1"), T0)
    store.view["A1"] = AccountView(status="active", last_ts=T0, positions={"p1": T0})
    runner = _runner(platform, store)
    runner.connect()
    runner.sync()
    assert platform.calls == []
