"""The staff tasks' storage seam: the SQL adapter (SQLite and PostgreSQL) and the in-memory fake the unit tests
use (tests/unit/test_staff_tasks.py) answer the same contract, checked here by the same function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from support.fakes import FakeTaskStore
from support.stores import sql_traders, sql_user

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import Case
from propcrm.adapters.db.models_lifecycle import StaffTask
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.rulepack import load_pack
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.errors import Conflict, Invalid
from propcrm.services.tasks import SqlTaskStore, TaskDesk

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


@dataclass
class Setup:
    traders: dict[str, int]  # "fa:t1" -> id
    accounts: dict[str, int]  # external id -> id
    cases: dict[str, int]  # firm -> a case's id
    users: dict[str, int]  # "fa:risk" -> id


def check_contract(store: Any, setup: Setup) -> int:
    """The store's answers, then the rules over it; returns the id of the task it completed."""
    t1, tb = setup.traders["fa:t1"], setup.traders["fb:tb"]
    assert store.trader(t1).firm_id == "fa" and store.trader(tb).firm_id == "fb" and store.trader(10**9) is None
    a2 = store.account_named("fa", "A2")
    assert a2.id == setup.accounts["A2"] and a2.trader_id == setup.traders["fa:t2"]
    assert store.account_named("fb", "A2") is None and store.account_named("fa", "B1") is None
    assert store.case(setup.cases["fa"]).firm_id == "fa" and store.case(10**9) is None
    assert store.user(setup.users["fa:risk"]).role == "risk" and store.user(10**9) is None
    assert store.task(10**9) is None
    row = StaffTask(firm_id="fa", title="stored", trader_id=t1, status="open", created_by="test", created_at=T0)
    store.add(row)
    assert row.id is not None and store.task(row.id) is row
    store.audit(actor="test", action="task.create", entity="task", entity_id=str(row.id), after={}, firm_id="fa")
    # the rules over it
    desk = TaskDesk(store, clock=lambda: T0)
    task = desk.create(firm_id="fa", title="Check after NFP", account="A2", assigned_user_id=setup.users["fa:risk"],
                       actor="test")
    assert (task.trader_id, task.account_id) == (setup.traders["fa:t2"], setup.accounts["A2"])
    for given, field in (({"account": "B1"}, "account"), ({"trader_id": tb}, "trader"),
                         ({"case_id": setup.cases["fb"]}, "case"),
                         ({"trader_id": t1, "assigned_user_id": setup.users["fa:inactive"]}, "assigned_user_id"),
                         ({"trader_id": t1, "assigned_user_id": setup.users["fb:risk"]}, "assigned_user_id")):
        with pytest.raises(Invalid, match=field):
            desk.create(firm_id="fa", title="Refused", actor="test", **given)
    desk.complete(firm_id="fa", task_id=task.id, actor="test")
    with pytest.raises(Conflict, match="already done"):
        desk.complete(firm_id="fa", task_id=task.id, actor="test")
    return task.id


def test_the_fake_keeps_the_contract():
    store = FakeTaskStore()
    store.add_trader(id=1, name="t1")
    store.add_trader(id=2, name="t2")
    store.add_trader(id=3, firm_id="fb", name="tb")
    store.add_account(id=1, external_id="A2", trader_id=2)
    store.add_account(id=2, external_id="B1", firm_id="fb", trader_id=3)
    store.add_case(id=1)
    store.add_case(id=2, firm_id="fb")
    store.add_user(id=1, role="risk")
    store.add_user(id=2, role="risk", active=False)
    store.add_user(id=3, role="risk", firm_id="fb")
    done = check_contract(store, Setup(traders={"fa:t1": 1, "fa:t2": 2, "fb:tb": 3}, accounts={"A2": 1, "B1": 2},
                                       cases={"fa": 1, "fb": 2}, users={"fa:risk": 1, "fa:inactive": 2, "fb:risk": 3}))
    assert store.tasks[done].status == "done"
    assert [a["action"] for a in store.audits] == ["task.create", "task.create", "task.done"]


def test_the_sql_store_keeps_the_contract(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    try:
        with factory.begin() as s:
            setup = Setup(traders={}, accounts={}, cases={}, users={})
            for firm in ("fa", "fb"):
                ensure_firm(s, firm_id=firm)
            setup.traders.update(sql_traders(s, ("fa:t1", "fa:t2", "fb:tb")))
            for firm, name, trader_key in (("fa", "A2", "fa:t2"), ("fb", "B1", "fb:tb")):
                version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
                setup.accounts[name] = create_account(s, firm_id=firm, external_id=name, pack_version_id=version.id,
                                                      trader_id=setup.traders[trader_key]).id
            for firm in ("fa", "fb"):
                case = Case(firm_id=firm, detector="copy", fingerprint=f"copy:{firm}", status="open", title="c",
                            summary="", score=50, evidence={}, opened_at=T0, updated_at=T0)
                s.add(case)
                s.flush()
                setup.cases[firm] = case.id
            for key, active in (("fa:risk", True), ("fa:inactive", False), ("fb:risk", True)):
                setup.users[key] = sql_user(s, key, role="risk", active=active)
        with factory.begin() as s:
            done = check_contract(SqlTaskStore(s), setup)
        with factory() as s:  # what the adapter wrote is in the database after the commit
            assert s.scalar(select(StaffTask.status).where(StaffTask.id == done)) == "done"
            assert s.scalars(select(m.AuditEntry.action).where(m.AuditEntry.entity == "task")
                             .order_by(m.AuditEntry.seq)).all() == ["task.create", "task.create", "task.done"]
    finally:
        engine.dispose()
