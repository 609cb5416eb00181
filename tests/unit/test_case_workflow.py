"""The case workflow's rules (services/cases.CaseWorkflow) on the in-memory store: no database.

The SQL adapter (``SqlCaseStore``) keeps the same contract on SQLite and PostgreSQL
(tests/integration/test_case_store.py); the pages and the API over it: test_web_cases.py,
test_cases_analysis.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from support.fakes import FakeCaseStore

from propcrm.services.cases import TRANSITIONS, CaseWorkflow
from propcrm.services.errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
def store() -> FakeCaseStore:
    store = FakeCaseStore()
    store.add_account(id=1, external_id="A1", trader_id=10)
    store.add_account(id=2, external_id="A2", trader_id=20)
    store.add_account(id=3, external_id="A3", trader_id=10)
    store.add_user(id=100, role="risk")
    store.add_user(id=101, role="finance")
    store.add_user(id=102, role="admin", active=False)
    store.add_user(id=200, role="risk", firm_id="fb")
    return store


@pytest.fixture
def flow(store) -> CaseWorkflow:
    return CaseWorkflow(store, clock=lambda: T0)


def record(flow, accounts, evidence, score=70, detector="copy"):
    case, what = flow.record_finding(firm_id="fa", detector=detector, account_ids=accounts, title="same signals",
                                     fingerprint=f"{detector}:" + ",".join(map(str, sorted(accounts))), score=score,
                                     evidence=evidence)
    return case.id, what


def test_a_finding_updates_its_case_a_growing_group_extends_it_and_a_partial_view_leaves_it(flow, store):
    first, what = record(flow, [1, 2], {"pairs": [1]})
    assert what == "opened"
    assert record(flow, [1, 2], {"pairs": [1]}) == (first, "unchanged")
    assert record(flow, [1, 2], {"pairs": [1, 2]}, score=80) == (first, "updated")
    assert record(flow, [1, 2, 3], {"pairs": [1, 2, 3]}, score=90) == (first, "updated")  # a new follower joins
    assert record(flow, [2, 3], {"pairs": [3]}) == (first, "unchanged")  # a pass that saw part of the group
    case = store.cases[first]
    assert case.evidence == {"pairs": [1, 2, 3]} and case.score == 90 and case.fingerprint == "copy:1,2,3"
    assert store.members(case) == {1, 2, 3} and len(store.cases) == 1
    assert [n.text for n in store.notes_of(first)] == [
        "opened by the analysis: same signals", "evidence updated by the analysis (score 70 → 80)",
        "evidence updated by the analysis (score 80 → 90); accounts added: 3"]


def test_a_case_that_gains_accounts_is_audited(flow, store):
    case_id, _ = record(flow, [1, 2], {"pairs": [1]})
    record(flow, [1, 2, 3], {"pairs": [1, 2]}, score=80)
    assert [(a["action"], a["entity_id"]) for a in store.audits] == [("case.opened", str(case_id)),
                                                                     ("case.updated", str(case_id))]
    assert store.audits[1]["before"] == {"score": 70} and store.audits[1]["after"] == {"score": 80, "accounts_added": [3]}


def test_another_detector_or_firm_opens_its_own_case(flow, store):
    first, _ = record(flow, [1, 2], {"pairs": [1]})
    second, what = record(flow, [1, 2], {"pairs": [1]}, detector="hedging")
    assert what == "opened" and second != first


def test_the_analysis_never_reopens_a_decided_case_it_leaves_a_note(flow, store):
    case_id, _ = record(flow, [1, 2], {"pairs": [1]})
    flow.transition(firm_id="fa", case_id=case_id, status="dismissed", reason="noise", actor_user_id=100, actor="r")
    assert record(flow, [1, 2], {"pairs": [1, 2]}, score=95) == (case_id, "noted")
    case = store.cases[case_id]
    assert case.status == "dismissed" and case.score == 70 and case.evidence == {"pairs": [1]}
    assert store.notes_of(case_id)[-1].text == "new evidence after the case was dismissed: same signals"


def test_only_the_allowed_transitions_and_each_needs_a_reason(flow, store):
    case_id, _ = record(flow, [2], {"x": 1})
    with pytest.raises(Conflict, match=f"case {case_id} is open: it cannot become confirmed; "
                                       "allowed: under_review, dismissed"):
        flow.transition(firm_id="fa", case_id=case_id, status="confirmed", reason="obvious", actor_user_id=100,
                        actor="r")
    for reason in ("", " ", "ab", "x" * 4001, None):
        with pytest.raises(Invalid, match="`reason`"):
            flow.transition(firm_id="fa", case_id=case_id, status="under_review", reason=reason, actor_user_id=100,
                            actor="r")
    with pytest.raises(Invalid, match="`status`"):
        flow.transition(firm_id="fa", case_id=case_id, status="closed", reason="done", actor_user_id=100, actor="r")
    with pytest.raises(Invalid, match="`enforce`"):
        flow.transition(firm_id="fa", case_id=case_id, status="dismissed", reason="noise", actor_user_id=100,
                        actor="r", enforce=True)
    assert store.cases[case_id].status == "open" and store.audits[-1]["action"] == "case.opened"  # nothing applied
    case = flow.transition(firm_id="fa", case_id=case_id, status="under_review", reason="  pulling the trades ",
                           actor_user_id=100, actor="r")
    assert case.status == "under_review" and case.updated_at == T0 and case.closed_at is None
    assert store.notes_of(case_id)[-1].text == "open → under_review: pulling the trades"
    assert store.audits[-1]["after"] == {"status": "under_review", "reason": "pulling the trades", "stopped": []}


@pytest.mark.parametrize(("start", "path"), [(s, t) for s, targets in TRANSITIONS.items() for t in targets])
def test_every_transition_of_the_table_and_what_it_closes(flow, store, start, path):
    case_id, _ = record(flow, [1], {"x": 1})
    store.cases[case_id].status = start
    case = flow.transition(firm_id="fa", case_id=case_id, status=path, reason="because", actor_user_id=100, actor="r")
    decided = path in ("confirmed", "dismissed")
    assert case.status == path and (case.closed_at == T0) == decided and (case.resolution == "because") == decided


def test_a_confirmation_that_enforces_stops_the_trading_accounts_and_tells_each_trader_once(flow, store):
    case_id, _ = record(flow, [1, 2, 3], {"x": 1})
    store.accounts_by_id[2].status = "suspended"  # already stopped: left alone
    flow.transition(firm_id="fa", case_id=case_id, status="under_review", reason="look", actor_user_id=100, actor="r")
    flow.transition(firm_id="fa", case_id=case_id, status="confirmed", reason="same device", actor_user_id=100,
                    actor="r", enforce=True)
    assert [s["account_id"] for s in store.stops] == [1, 3]
    assert store.stops[0]["reason"] == f"case {case_id} confirmed (copy): same device"
    assert [(msg["trader_id"], msg["title"], msg["account"]) for msg in store.messages] == [
        (10, "Accounts A1, A3 stopped", None)]
    assert "copy" not in store.messages[0]["message"]  # the detector's findings stay with the firm
    assert store.notes_of(case_id)[-1].text == "emergency stop of A1, A3"
    assert store.audits[-1]["after"]["stopped"] == ["A1", "A3"]


def test_a_case_of_another_firm_is_not_found(flow, store):
    case_id, _ = record(flow, [1], {"x": 1})
    with pytest.raises(NotFound):
        flow.transition(firm_id="fb", case_id=case_id, status="dismissed", reason="noise", actor_user_id=200, actor="r")
    with pytest.raises(NotFound):
        flow.add_note(firm_id="fb", case_id=case_id, text="hello there", actor_user_id=200, actor="r")
    with pytest.raises(NotFound):
        flow.assign(firm_id="fb", case_id=case_id, user_id=200, actor_user_id=200, actor="r")


def test_notes_and_assignment(flow, store):
    case_id, _ = record(flow, [1], {"x": 1})
    note = flow.add_note(firm_id="fa", case_id=case_id, text=" a family account ", actor_user_id=100, actor="r")
    assert note.text == "a family account" and note.kind == "note"
    assert store.audits[-1]["after"] == {"note": note.id}
    with pytest.raises(Invalid, match="`text`"):
        flow.add_note(firm_id="fa", case_id=case_id, text="no", actor_user_id=100, actor="r")
    assert flow.assign(firm_id="fa", case_id=case_id, user_id=100, actor_user_id=100, actor="r").assigned_user_id == 100
    for wrong in (101, 102, 200, 999):  # finance; inactive admin; another firm's risk; nobody
        with pytest.raises(Invalid, match=f"`user_id`: no active risk or admin user {wrong}"):
            flow.assign(firm_id="fa", case_id=case_id, user_id=wrong, actor_user_id=100, actor="r")
    case = flow.assign(firm_id="fa", case_id=case_id, user_id=None, actor_user_id=100, actor="r")
    assert case.assigned_user_id is None
    assert [n.text for n in store.notes_of(case_id) if n.kind == "assign"] == ["assigned to user 100", "unassigned"]
    assert store.audits[-1]["before"] == {"assigned_user_id": 100}
