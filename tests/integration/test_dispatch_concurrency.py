"""Issue 20: in a burst of breaches, one account's ``disable`` does not wait for every other account's.

A platform command is mostly waiting for its platform (several requests per ``disable``), and the
dispatcher used to deliver the commands of a claim one after the other through one platform session
per connection: in the scale-out bench the last of a burst of disables waited for all the others. The
dispatcher now delivers the commands of different accounts side by side (PostgreSQL), and the platform
commands keep a few sessions per connection. These tests count what is in flight at once (a barrier
the commands must all reach together), never time anything; the barrier's timeout only keeps a
regression from hanging the run.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.platforms.secrets import SecretBox, new_key
from propcrm.domain.rulepack import load_pack
from propcrm.features.platforms.commands import PlatformCommands
from propcrm.features.platforms.connections import add_connection, map_login
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.dispatch import Dispatcher

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
FIRM = "acme"
ACCOUNTS = ("A1", "A2", "A3")


@pytest.fixture
def db(db_url, monkeypatch):
    monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
    engine = make_engine(db_url)
    Session = sessions(engine)
    with Session.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Acme Prop")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        trader = m.Trader(firm_id=FIRM, name="Alice", email="alice@traders.example")
        s.add(trader)
        s.flush()
        for external_id in ACCOUNTS:
            create_account(s, firm_id=FIRM, external_id=external_id, pack_version_id=version.id, platform="mt",
                           trader_id=trader.id)
        add_connection(s, firm_id=FIRM, name="mt", family_name="matchtrader",
                       settings={"url": "https://broker-api.example", "system_uuid": "sys-1",
                                 "payment_gateway_uuid": "pg-manual", "groups_by_phase": {"*": "offer-challenge"}},
                       secrets={"api_key": "broker-token"}, actor="test", box=SecretBox())
        s.flush()
        for i, external_id in enumerate(ACCOUNTS):
            map_login(s, firm_id=FIRM, connection="mt", login=str(5000 + i), account=external_id, actor="test")
    yield Session
    engine.dispose()


def _command(Session, command: str, account: str) -> int:
    with Session.begin() as s:
        row = m.OutboxMessage(firm_id=FIRM, kind="platform_command",
                              payload={"command": command, "account": account, "platform": "mt"},
                              dedupe_key=f"test:{account}:{command}", next_attempt_at=T0, created_at=T0)
        s.add(row)
        s.flush()
        return row.id


class Platform:
    """Gateways (one per platform session) that record what is in flight; ``together`` commands must be
    in flight at the same time to pass the barrier (a serial delivery breaks it)."""

    def __init__(self, together: int) -> None:
        self.barrier = threading.Barrier(together, timeout=10) if together > 1 else None
        self.lock = threading.Lock()
        self.in_flight: set[str] = set()
        self.most = 0
        self.opened = 0
        self.log: list[str] = []

    def gateway(self, row):
        platform = self

        class Gateway:
            def open(self):
                with platform.lock:
                    platform.opened += 1

            def close(self):
                pass

            def set_trading(self, login, enabled):
                with platform.lock:
                    assert login not in platform.in_flight, "two commands of one account at once"
                    platform.in_flight.add(login)
                    platform.most = max(platform.most, len(platform.in_flight))
                    platform.log.append(f"{'enable' if enabled else 'disable'}:{login}")
                try:
                    if platform.barrier is not None and not enabled:
                        platform.barrier.wait()
                finally:
                    with platform.lock:
                        platform.in_flight.discard(login)

            def close_positions(self, login):
                return 0

        return Gateway()


def _postgres(Session) -> bool:
    return Session.kw["bind"].dialect.name == "postgresql"


def test_the_disables_of_a_burst_of_breaches_are_delivered_side_by_side(db):
    ids = [_command(db, "disable", account) for account in ACCOUNTS]
    concurrent = _postgres(db)  # SQLite has one writer: its commands go one at a time, as before
    platform = Platform(together=len(ACCOUNTS) if concurrent else 1)
    commands = PlatformCommands(db, gateway_factory=platform.gateway)
    dispatcher = Dispatcher(db, connectors={"mt": commands})
    report = dispatcher.run_once(T0)
    dispatcher.close()
    commands.close()
    assert (report.claimed, report.delivered, report.failed) == (3, 3, 0)
    assert report.by_kind == {"platform_command": 3}
    assert platform.most == (3 if concurrent else 1)
    assert platform.opened == (3 if concurrent else 1)  # a platform session per command in flight, kept after
    with db() as s:
        rows = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.id.in_(ids))).all()
        assert {r.status for r in rows} == {"sent"} and {r.attempts for r in rows} == {1}
        entries = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "platform.disable")).all()
        assert sorted(e.entity_id for e in entries) == list(ACCOUNTS)


def test_the_commands_of_one_account_keep_their_order_while_other_accounts_run_beside_them(db):
    first = _command(db, "disable", "A1")
    then = _command(db, "enable", "A1")
    _command(db, "disable", "A2")
    platform = Platform(together=2 if _postgres(db) else 1)  # A1's disable and A2's, together
    commands = PlatformCommands(db, gateway_factory=platform.gateway)
    dispatcher = Dispatcher(db, connectors={"mt": commands})
    report = dispatcher.run_once(T0)
    dispatcher.close()
    commands.close()
    assert (report.delivered, report.failed) == (3, 0)
    mine = [entry for entry in platform.log if entry.endswith(":5000")]
    assert mine == ["disable:5000", "enable:5000"]
    with db() as s:
        first_sent, then_sent = (s.get(m.OutboxMessage, i) for i in (first, then))
        assert first_sent.status == then_sent.status == "sent"


def test_platform_commands_open_at_most_their_sessions_per_connection(db):
    platform = Platform(together=2)
    commands = PlatformCommands(db, gateway_factory=platform.gateway, sessions_per_connection=2)
    threads = [threading.Thread(target=commands.send, args=({"firm": FIRM, "platform": "mt", "command": "disable",
                                                             "account": account},)) for account in ACCOUNTS[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert platform.most == 2 and platform.opened == 2  # before: one session, the second command waited
    commands.send({"firm": FIRM, "platform": "mt", "command": "enable", "account": "A3"})
    assert platform.opened == 2  # an idle session is reused
    commands.close()
