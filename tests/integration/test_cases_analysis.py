"""Analysis over the stored events and the case workflow, through the API, on SQLite and PostgreSQL.

The workflow's rules themselves (findings opening and updating cases, transitions, notes, assignment) are
unit tests on the in-memory store: tests/unit/test_case_workflow.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import AccountLink, AnalysisWatermark, Case, CaseAccount, RiskScore
from propcrm.services.cases import linked_accounts, open_cases_touching, record_finding, risk_score_of
from support.analytics import ingest_events, new_case, store_firm


def _cases(world, firm="fa"):
    with world.sessions() as s:
        out = {}
        for case in s.scalars(select(Case).where(Case.firm_id == firm)):
            members = s.scalars(select(m.Account.external_id).join(CaseAccount, CaseAccount.account_id == m.Account.id)
                                .where(CaseAccount.case_id == case.id))
            out[(case.detector, tuple(sorted(members)))] = case
        return out


def test_a_full_then_incremental_analysis_opens_cases_for_what_was_planted_and_nothing_else(world):
    rest, crm, truth, ids = store_firm(world.sessions, split=0.7)
    run = world.client.post("/api/v1/analysis/run", json={}, headers=world.headers("risk"))
    assert run.status_code == 200, run.text
    first = run.json()
    assert first["mode"] == "full" and first["cases"].get("opened", 0) > 0
    # nothing new: the incremental pass reads nothing and changes nothing
    again = world.client.post("/api/v1/analysis/run", headers=world.headers("risk")).json()
    assert again["mode"] == "incremental" and again["events_read"] == 0 and again["last_seq"] == first["last_seq"]
    # the rest of the history arrives; the incremental pass completes the picture
    ingest_events(world.sessions, rest)
    later = world.client.post("/api/v1/analysis/run", headers=world.headers("admin")).json()
    assert later["mode"] == "incremental" and later["events_read"] > 0 and later["last_seq"] > first["last_seq"]
    cases = _cases(world)
    flagged = {d: {a for (det, accs) in cases for a in accs if det == d} for d in ("hedging", "copy", "latency", "linkage")}
    for detector in ("hedging", "copy", "latency", "linkage"):
        planted = {a for group in truth[detector] for a in group}
        assert flagged[detector] == planted, detector
    # scores, links and the watermark are stored; the payout-side helpers see them
    with world.sessions() as s:
        hedger = ids[truth["hedging"][0][0]]
        partner = ids[truth["hedging"][0][1]]
        assert risk_score_of(s, firm_id="fa", account_id=hedger) >= 35
        assert s.scalar(select(RiskScore.explanation).where(RiskScore.account_id == hedger))["detectors"] == ["hedging"]
        assert [c.detector for c in open_cases_touching(s, firm_id="fa", account_ids=[partner])] == ["hedging"]
        linked = truth["linkage"][0]
        assert linked_accounts(s, firm_id="fa", account_id=ids[linked[0]]) == {ids[a] for a in linked[1:]}
        assert s.scalar(select(AnalysisWatermark.last_seq).where(AnalysisWatermark.firm_id == "fa")) == later["last_seq"]
        assert s.scalar(select(AccountLink.via).where(AccountLink.account_a.in_([ids[a] for a in linked]))) in (
            "ip", "device", "payment")
    # a full pass again finds the same cases: updated or unchanged, never duplicated
    full = world.client.post("/api/v1/analysis/run", json={"full": True}, headers=world.headers("risk")).json()
    assert full["mode"] == "full" and "opened" not in full["cases"]
    assert set(_cases(world)) == set(cases)
    # the account's risk page: score, explanation, links, open cases
    page = world.client.get(f"/api/v1/accounts/{hedger}/risk", headers=world.headers("risk")).json()
    assert page["score"] >= 35 and page["open_cases"][0]["detector"] == "hedging"
    assert page["explanation"]["top"][0]["feature"] == "detector:hedging"


def test_the_case_workflow_with_reasons_notes_assignment_and_enforcement(world):
    case_id = new_case(world, account="A2")
    risk = world.headers("risk")
    url = f"/api/v1/cases/{case_id}"
    # an illegal transition is 409 and names the allowed ones
    bad = world.client.post(f"{url}/status", json={"status": "confirmed", "reason": "obvious"}, headers=risk)
    assert bad.status_code == 409
    assert bad.json()["error"] == f"case {case_id} is open: it cannot become confirmed; allowed: under_review, dismissed"
    # a reason is required
    assert world.client.post(f"{url}/status", json={"status": "under_review"}, headers=risk).status_code == 422
    assert world.client.post(f"{url}/status", json={"status": "under_review", "reason": " "}, headers=risk).status_code == 422
    assert world.client.post(f"{url}/status", json={"status": "closed", "reason": "done"}, headers=risk).status_code == 422
    ok = world.client.post(f"{url}/status", json={"status": "under_review", "reason": "pulling the trades"}, headers=risk)
    assert ok.status_code == 200 and ok.json()["status"] == "under_review"
    assert ok.json()["allowed_transitions"] == ["confirmed", "dismissed", "open"]
    assert world.client.post(f"{url}/notes", json={"text": "trader says it is a family account"},
                             headers=risk).status_code == 200
    assigned = world.client.post(f"{url}/assign", json={"user_id": world.user_ids["fa:risk"]}, headers=risk)
    assert assigned.json()["assigned_user_id"] == world.user_ids["fa:risk"]
    wrong = world.client.post(f"{url}/assign", json={"user_id": world.user_ids["fa:finance"]}, headers=risk)
    assert wrong.status_code == 422 and "user_id" in wrong.json()["error"]
    # an open case holds the payout of the account and of accounts linked to it
    a2, a1 = world.accounts["A2"], world.accounts["A1"]
    with world.sessions.begin() as s:
        s.add(AccountLink(firm_id="fa", account_a=min(a1, a2), account_b=max(a1, a2), via="device", value="dev-1",
                          first_seen=m.utcnow(), last_seen=m.utcnow()))
    with world.sessions() as s:
        assert [c.id for c in open_cases_touching(s, firm_id="fa", account_ids=[a1])] == [case_id]
        assert open_cases_touching(s, firm_id="fa", account_ids=[a1], include_linked=False) == []
    # confirmation with enforcement stops the account through the override path (outbox, audit)
    done = world.client.post(f"{url}/status", json={"status": "confirmed", "reason": "same device, opposite trades",
                                                     "enforce": True}, headers=world.headers("admin"))
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "confirmed" and body["resolution"] == "same device, opposite trades" and body["closed_at"]
    assert world.status_of(a2) == "suspended"
    assert [n["kind"] for n in body["notes"]] == ["evidence", "status", "note", "assign", "status", "status"]
    with world.sessions() as s:
        command = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "platform_command")
                            .order_by(m.OutboxMessage.id.desc())).first()
        assert command.payload["command"] == "disable" and command.payload["account"] == "A2"
        assert open_cases_touching(s, firm_id="fa", account_ids=[a2]) == []
    assert [e.after["status"] for e in world.audit("case.status")] == ["under_review", "confirmed"]
    assert world.audit("account.emergency_stop")[-1].entity_id == "A2"
    # enforcement only with a confirmation
    other = new_case(world)
    refused = world.client.post(f"/api/v1/cases/{other}/status",
                                json={"status": "dismissed", "reason": "noise", "enforce": True}, headers=risk)
    assert refused.status_code == 422
    # dismissed → open again (a person reopens); the analysis does not reopen it by itself
    assert world.client.post(f"/api/v1/cases/{other}/status", json={"status": "dismissed", "reason": "noise"},
                             headers=risk).status_code == 200
    with world.sessions.begin() as s:
        case = s.get(Case, other)
        _, what = record_finding(s, firm_id="fa", detector="hedging", fingerprint=case.fingerprint,
                                 account_ids=[], title="more of the same", score=90, evidence={"pairs": [1]})
        assert what == "noted" and case.status == "dismissed"
    reopened = world.client.post(f"/api/v1/cases/{other}/status", json={"status": "open", "reason": "it came back"},
                                 headers=risk)
    assert reopened.json()["status"] == "open" and reopened.json()["closed_at"] is None
    # listing and filters
    listed = world.client.get("/api/v1/cases?status=open", headers=risk).json()
    assert [c["id"] for c in listed["items"]] == [other]
    assert world.client.get(f"/api/v1/cases?account_id={a2}", headers=risk).json()["total"] == 1


def test_traders_and_other_firms_see_nothing_of_cases(world):
    case_id = new_case(world, account="A1")  # the trader user's own account
    for who in ("trader", "support", "finance"):
        for method, url, body in (("GET", f"/api/v1/cases/{case_id}", None), ("GET", "/api/v1/cases", None),
                                  ("POST", f"/api/v1/cases/{case_id}/status", {"status": "dismissed", "reason": "mine"}),
                                  ("POST", f"/api/v1/cases/{case_id}/notes", {"text": "hello"}),
                                  ("POST", f"/api/v1/cases/{case_id}/assign", {"user_id": None}),
                                  ("POST", "/api/v1/analysis/run", {"full": True}),
                                  ("GET", f"/api/v1/accounts/{world.accounts['A1']}/risk", None)):
            assert world.client.request(method, url, json=body, headers=world.headers(who)).status_code == 403
    fb = world.headers("fb:risk")
    for method, url, body in (("GET", f"/api/v1/cases/{case_id}", None),
                              ("POST", f"/api/v1/cases/{case_id}/status", {"status": "dismissed", "reason": "x" * 5}),
                              ("POST", f"/api/v1/cases/{case_id}/notes", {"text": "hello"}),
                              ("POST", f"/api/v1/cases/{case_id}/assign", {"user_id": None}),
                              ("GET", f"/api/v1/accounts/{world.accounts['A1']}/risk", None)):
        response = world.client.request(method, url, json=body, headers=fb)
        assert response.status_code == 404, (url, response.text)
    assert world.client.get("/api/v1/cases", headers=fb).json()["total"] == 0
    # assigning another firm's user is refused
    response = world.client.post(f"/api/v1/cases/{case_id}/assign", json={"user_id": world.user_ids["fb:risk"]},
                                 headers=world.headers("risk"))
    assert response.status_code == 422
    with world.sessions() as s:
        assert s.get(Case, case_id).status == "open"


def test_propcrm_analyze_db_from_the_command_line(db_url, tmp_path):
    from typer.testing import CliRunner

    from propcrm.adapters.db.session import make_engine, sessions
    from propcrm.cli import app

    engine = make_engine(db_url)
    make = sessions(engine)
    rest, _crm, truth, _ids = store_firm(make, firm="cli", split=1.0)
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "db", "--database-url", db_url, "--firm", "cli", "--json"])
    assert result.exit_code == 0, result.output
    assert '"mode": "full"' in result.output and '"opened"' in result.output
    result = runner.invoke(app, ["analyze", "db", "--database-url", db_url, "--firm", "nope"])
    assert result.exit_code == 2 and "no firm 'nope'" in result.output
    with make() as s:
        assert s.scalar(select(AnalysisWatermark.last_seq).where(AnalysisWatermark.firm_id == "cli")) > 0
    engine.dispose()


def test_payment_methods_link_accounts_and_the_service_loop_analyses_new_events(world):
    import threading

    from propcrm.services.analysis import analysis_loop, record_payment_method

    a1, a2 = world.accounts["A1"], world.accounts["A2"]  # traders t1 and t2
    with world.sessions.begin() as s:
        for account_id in (a1, a2):
            record_payment_method(s, firm_id="fa", account_id=account_id, fingerprint="card:4242…4242:exp-0929")
        with pytest.raises(Exception, match="fingerprint"):
            record_payment_method(s, firm_id="fa", account_id=a1, fingerprint="")
    world.ingest({"id": "s1", "type": "session", "account": "A1", "ts": "2026-03-02T07:00:00Z",
                  "ip": "2001:db8:1:2::a", "device": "dev-1"})
    stop = threading.Event()
    thread = threading.Thread(target=analysis_loop, args=(world.sessions, stop), kwargs={"interval": 0.05})
    thread.start()
    try:
        for _ in range(200):
            if _cases(world):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    # A1 and A3 are one trader's (t1), A2 is t2's: one cluster of two people, linked by the card
    case = _cases(world)[("linkage", ("A1", "A2", "A3"))]
    assert {(l["account_a"], l["account_b"], l["via"]) for l in case.evidence["links"]} == {
        ("A1", "A2", "payment"), ("A1", "A3", "trader")}
    assert case.evidence["people"] == sorted([f"trader:{world.traders['t1']}", f"trader:{world.traders['t2']}"])
    with world.sessions() as s:
        assert linked_accounts(s, firm_id="fa", account_id=a1) == {a2}  # stored links: what the person shares


def test_a_payment_method_cannot_be_recorded_on_another_firms_account(world):
    from propcrm.adapters.db.models_analytics import AccountFingerprint
    from propcrm.services.analysis import record_payment_method
    from propcrm.services.errors import NotFound

    with world.sessions.begin() as s:
        with pytest.raises(NotFound):
            record_payment_method(s, firm_id="fa", account_id=world.accounts["B1"], fingerprint="card:1111…1111")
    with world.sessions() as s:
        assert s.scalars(select(AccountFingerprint).where(AccountFingerprint.account_id == world.accounts["B1"])).all() == []


def test_a_device_longer_than_the_index_column_does_not_stall_the_analysis(world):
    from propcrm.adapters.db.models_analytics import AccountFingerprint
    from propcrm.services.analysis import run

    device = "d" * 250  # trade_opened's ip/device are not length-limited by the contract
    world.ingest({"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T07:00:00Z", "position": "p1",
                  "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08500", "device": device})
    world.evaluate()
    with world.sessions.begin() as s:
        assert run(s, firm_id="fa", full=True).mode == "full"
    world.ingest({"id": "o2", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T08:00:00Z", "position": "p2",
                  "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08500", "device": device})
    world.evaluate()
    with world.sessions.begin() as s:
        assert run(s, firm_id="fa").mode == "incremental"
    with world.sessions() as s:
        [row] = s.scalars(select(AccountFingerprint).where(AccountFingerprint.via == "device"))
        assert row.value == device[:200] and row.seen == 2
