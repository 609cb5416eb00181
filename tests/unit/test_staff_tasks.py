"""The staff-task rules (services/tasks.py ``TaskDesk``) on the in-memory store: what a task may be about, who
may hold it, open → done once, each change audited. The same store contract holds on SQLite and PostgreSQL
(tests/integration/test_task_store.py); the pages' wiring is tests/integration/test_web_crm_catalog.py."""

from __future__ import annotations

import datetime as dt

import pytest
from support.fakes import FakeTaskStore

from propcrm.services.errors import Conflict, Invalid, NotFound
from propcrm.services.tasks import TaskDesk, parse_due

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
ACTOR = "user:1:admin@fa.example"


@pytest.fixture
def store() -> FakeTaskStore:
    store = FakeTaskStore()
    store.add_trader(id=1, name="t1")
    store.add_trader(id=2, name="t2")
    store.add_trader(id=9, firm_id="fb", name="tb")
    store.add_account(id=10, external_id="A2", trader_id=2)
    store.add_account(id=19, external_id="B1", firm_id="fb", trader_id=9)
    store.add_case(id=5)
    store.add_case(id=6, firm_id="fb")
    store.add_user(id=1, role="admin")
    store.add_user(id=2, role="risk")
    store.add_user(id=3, role="trader")
    store.add_user(id=4, role="support", active=False)
    store.add_user(id=8, role="risk", firm_id="fb")
    return store


def desk(store: FakeTaskStore) -> TaskDesk:
    return TaskDesk(store, clock=lambda: T0)


def test_a_task_on_an_account_gets_the_accounts_trader_and_is_audited(store):
    task = desk(store).create(firm_id="fa", title="  Check after NFP ", account=" A2 ", assigned_user_id=2,
                              due_on=dt.date(2026, 3, 6), actor=ACTOR)
    assert (task.id, task.title, task.account_id, task.trader_id, task.case_id) == (1, "Check after NFP", 10, 2, None)
    assert (task.status, task.assigned_user_id, task.created_by, task.created_at) == ("open", 2, ACTOR, T0)
    [entry] = store.audits
    assert entry["action"] == "task.create" and entry["entity_id"] == "1" and entry["firm_id"] == "fa"
    assert entry["after"] == {"title": "Check after NFP", "due_on": "2026-03-06", "assigned_user_id": 2,
                              "trader_id": 2, "account_id": 10, "case_id": None}


def test_a_given_trader_is_kept_over_the_accounts(store):
    task = desk(store).create(firm_id="fa", title="Both given", trader_id=1, account="A2", case_id=5, actor=ACTOR)
    assert (task.trader_id, task.account_id, task.case_id) == (1, 10, 5)


@pytest.mark.parametrize(("given", "field"), [
    ({"title": "x", "trader_id": 1}, "title"),
    ({"title": "a" * 201, "trader_id": 1}, "title"),
    ({"title": "tab\there", "trader_id": 1}, "title"),
    ({"title": "Too long", "details": "d" * 4001, "trader_id": 1}, "details"),
    ({"title": "About nothing"}, "a task is about"),
    ({"title": "Other firm", "account": "B1"}, "account"),
    ({"title": "No such", "account": "ZZ"}, "account"),
    ({"title": "Other trader", "trader_id": 9}, "trader"),
    ({"title": "Other case", "case_id": 6}, "case"),
    ({"title": "No case", "case_id": 999}, "case"),
    ({"title": "Trader as assignee", "trader_id": 1, "assigned_user_id": 3}, "assigned_user_id"),
    ({"title": "Inactive assignee", "trader_id": 1, "assigned_user_id": 4}, "assigned_user_id"),
    ({"title": "Other firm's staff", "trader_id": 1, "assigned_user_id": 8}, "assigned_user_id"),
])
def test_a_refusal_names_the_field_and_stores_nothing(store, given, field):
    with pytest.raises(Invalid, match=field):
        desk(store).create(firm_id="fa", actor=ACTOR, **given)
    assert store.tasks == {} and store.audits == []


@pytest.mark.parametrize(("text", "day"), [("", None), ("  ", None), ("2026-03-02", dt.date(2026, 3, 2))])
def test_a_due_day_is_a_calendar_day_or_nothing(text, day):
    assert parse_due(text) == day


@pytest.mark.parametrize("text", ["tomorrow", "1999-12-31", "2101-01-01", "2026-02-30"])
def test_a_bad_due_day_is_refused_naming_the_field(text):
    with pytest.raises(Invalid, match="due_on"):
        parse_due(text)


def test_assign_then_done_once_each_audited(store):
    d = desk(store)
    task = d.create(firm_id="fa", title="Call about KYC", trader_id=1, assigned_user_id=2, actor=ACTOR)
    assert d.assign(firm_id="fa", task_id=task.id, user_id=2, actor=ACTOR) is task  # the same holder: no change
    assert [a["action"] for a in store.audits] == ["task.create"]
    d.assign(firm_id="fa", task_id=task.id, user_id=1, actor=ACTOR)
    assert task.assigned_user_id == 1 and store.audits[-1]["before"] == {"assigned_user_id": 2}
    d.assign(firm_id="fa", task_id=task.id, user_id=None, actor=ACTOR)
    assert task.assigned_user_id is None
    with pytest.raises(Invalid, match="assigned_user_id"):
        d.assign(firm_id="fa", task_id=task.id, user_id=3, actor=ACTOR)
    d.complete(firm_id="fa", task_id=task.id, actor="user:2:risk@fa.example")
    assert (task.status, task.done_by, task.done_at) == ("done", "user:2:risk@fa.example", T0)
    with pytest.raises(Conflict, match="already done by user:2:risk@fa.example"):
        d.complete(firm_id="fa", task_id=task.id, actor=ACTOR)
    with pytest.raises(Conflict, match="is done"):
        d.assign(firm_id="fa", task_id=task.id, user_id=2, actor=ACTOR)
    assert [a["action"] for a in store.audits] == ["task.create", "task.assign", "task.assign", "task.done"]


def test_another_firms_task_is_not_found(store):
    task = desk(store).create(firm_id="fa", title="Ours", trader_id=1, actor=ACTOR)
    for act in (lambda d: d.get(firm_id="fb", task_id=task.id),
                lambda d: d.complete(firm_id="fb", task_id=task.id, actor=ACTOR),
                lambda d: d.assign(firm_id="fb", task_id=task.id, user_id=8, actor=ACTOR),
                lambda d: d.get(firm_id="fa", task_id=999)):
        with pytest.raises(NotFound, match="no task"):
            act(desk(store))
    assert task.status == "open" and len(store.audits) == 1
