"""The case workflow's storage seam: the SQL adapter (SQLite and PostgreSQL) and the in-memory fake the unit
tests use (tests/unit/test_case_workflow.py) answer the same contract, checked here by the same function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from support.fakes import FakeCaseStore

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import Case
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.rulepack import load_pack
from propcrm.services import users
from propcrm.services.cases import CaseWorkflow, SqlCaseStore
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.errors import NotFound

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


@dataclass
class Setup:
    accounts: dict[str, int]  # external id -> id
    users: dict[str, int]  # "fa:risk" -> id


def check_contract(store: Any, setup: Setup) -> None:
    a1, a2, a3 = (setup.accounts[x] for x in ("A1", "A2", "A3"))
    flow = CaseWorkflow(store, clock=lambda: T0)

    def new(detector: str, accounts: list[int], fingerprint: str) -> Case:
        case = Case(firm_id="fa", detector=detector, fingerprint=fingerprint, status="open", title="t", summary="",
                    score=50, evidence={}, opened_at=T0, updated_at=T0)
        store.add(case, accounts)
        return case

    first = new("copy", [a2, a1], "copy:1")
    second = new("copy", [a3], "copy:2")
    other = new("hedging", [a1], "hedging:1")
    assert first.id is not None and len({first.id, second.id, other.id}) == 3
    assert store.get("fa", first.id) is first and store.get("fa", first.id, for_update=True) is first
    with pytest.raises(NotFound, match=f"no case {first.id}"):
        store.get("fb", first.id)
    assert store.by_fingerprint("fa", "copy:2") is second and store.by_fingerprint("fb", "copy:2") is None
    assert store.by_fingerprint("fa", "nothing") is None
    assert store.members(first) == {a1, a2}
    assert [a.external_id for a in store.accounts(first)] == ["A1", "A2"]
    assert store.open_sharing("fa", "copy", [a1, a3]) is first  # the oldest of those sharing an account
    assert store.open_sharing("fa", "copy", [a3]) is second and store.open_sharing("fa", "latency", [a1]) is None
    first.status = "dismissed"
    assert store.open_sharing("fa", "copy", [a1, a3]) is second
    first.status = "open"
    store.add_members(second, [a1])
    assert store.members(second) == {a1, a3}
    note = store.add_note(first, kind="note", text="hello", author_user_id=None)
    assert note.id is not None and store.note_count(first) == 1 and store.note_count(second) == 0
    assert store.active_user("fa", setup.users["fa:risk"]).role == "risk"
    assert store.active_user("fb", setup.users["fa:risk"]) is None
    assert store.active_user("fa", setup.users["fa:inactive"]) is None
    # the workflow over it: an enforced confirmation stops the account
    flow.transition(firm_id="fa", case_id=other.id, status="under_review", reason="look", actor_user_id=1, actor="r")
    flow.transition(firm_id="fa", case_id=other.id, status="confirmed", reason="same device", actor_user_id=1,
                    actor="r", enforce=True)
    assert [a.status for a in store.accounts(other)] == ["suspended"]


def test_the_fake_keeps_the_contract():
    store = FakeCaseStore()
    for i, name in enumerate(("A1", "A2", "A3"), start=1):
        store.add_account(id=i, external_id=name, trader_id=7)
    store.add_user(id=1, role="risk")
    store.add_user(id=2, role="risk", active=False)
    check_contract(store, Setup(accounts={"A1": 1, "A2": 2, "A3": 3}, users={"fa:risk": 1, "fa:inactive": 2}))


def test_the_sql_store_keeps_the_contract(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    try:
        with factory.begin() as s:
            setup = Setup(accounts={}, users={})
            for firm in ("fa", "fb"):
                ensure_firm(s, firm_id=firm)
            version = add_pack(s, firm_id="fa", pack=load_pack("two-step-100k"), activate=True)
            trader = m.Trader(firm_id="fa", name="t", email="t@traders.example")
            s.add(trader)
            s.flush()
            for name in ("A3", "A1", "A2"):  # stored out of order: the store sorts by external id
                setup.accounts[name] = create_account(s, firm_id="fa", external_id=name, pack_version_id=version.id,
                                                      trader_id=trader.id).id
            for key, active in (("fa:risk", True), ("fa:inactive", False)):
                user = users.create_user(s, firm_id="fa", email=f"{key[3:]}@fa.example",
                                         password="correct horse battery staple", role="risk")
                user.active = active
                setup.users[key] = user.id
        with factory.begin() as s:
            check_contract(SqlCaseStore(s), setup)
        with factory() as s:  # what the adapter wrote is in the database after the commit
            assert s.scalar(select(m.Account.status).where(m.Account.id == setup.accounts["A1"])) == "suspended"
            assert s.scalars(select(m.OutboxMessage.kind).where(m.OutboxMessage.kind == "platform_command")).all()
    finally:
        engine.dispose()
