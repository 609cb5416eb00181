"""Real time in the embedded service: committed events wake the worker, and the states it keeps in memory
between passes never hide a state someone else wrote (issue 14)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cli.serve import _worker_loop
from propcrm.domain.rulepack import load_pack
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest
from propcrm.services.overrides import override_account
from propcrm.services.passwords import generate_password
from propcrm.services.state_codec import STATE_DECODER
from propcrm.services.users import create_user
from propcrm.services.wakeup import EVENTS

FIRM = "rt"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _setup(db_url):
    engine = make_engine(db_url)
    Session = sessions(engine)
    with Session.begin() as s:
        ensure_firm(s, firm_id=FIRM)
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        account_id = create_account(s, firm_id=FIRM, external_id="A1", pack_version_id=version.id).id
        email = "risk@rt.example"
        user_id = create_user(s, firm_id=FIRM, email=email, password=generate_password(email=email, firm_id=FIRM),
                              role="risk").id
    return engine, Session, account_id, user_id


def _equity(n: int, equity: str, *, minutes: int) -> bytes:
    ts = (NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return json.dumps({"id": f"e{n}", "type": "equity", "account": "A1", "ts": ts, "equity": equity,
                       "balance": "100000"}).encode() + b"\n"


def _send(Session, *lines: bytes) -> None:
    with Session.begin() as s:
        report = ingest(s, firm_id=FIRM, source="mt5", body=b"".join(lines))
        assert report.rejected == 0, report.to_dict()


def _status(Session, account_id: int) -> str:
    with Session() as s:
        return s.get(m.Account, account_id).status


def test_a_commit_that_stored_events_wakes_the_worker_and_a_rollback_does_not(db_url):
    engine, Session, _, _ = _setup(db_url)
    before = EVENTS.generation
    with Session() as s:
        with s.begin():
            ingest(s, firm_id=FIRM, source="mt5", body=_equity(1, "100000", minutes=1))
            s.rollback()
    assert EVENTS.generation == before
    _send(Session, _equity(1, "100000", minutes=1))
    assert EVENTS.generation > before
    again = EVENTS.generation
    _send(Session, _equity(1, "100000", minutes=1))  # a duplicate stores nothing: nothing to wake for
    assert EVENTS.generation == again
    engine.dispose()


def test_the_service_worker_evaluates_a_committed_event_without_waiting_for_its_fallback_poll(db_url):
    engine, Session, account_id, _ = _setup(db_url)
    stop = threading.Event()
    worker = threading.Thread(target=_worker_loop, args=(Session, stop), kwargs={"fallback": 3600.0}, daemon=True)
    worker.start()
    try:
        _send(Session, _equity(1, "100000", minutes=1))
        _send(Session, _equity(2, "80000", minutes=2))  # far below the max-loss level: a breach
        woken = threading.Event()
        for _ in range(600):  # (a worker that only polled would sleep an hour between passes)
            if _status(Session, account_id) == "breached":
                woken.set()
                break
            woken.wait(0.05)
        assert woken.is_set(), "the worker was not woken by the committed events"
    finally:
        stop.set()
        EVENTS.notify()
        worker.join(timeout=30)
    assert not worker.is_alive()
    engine.dispose()


def test_a_state_written_by_someone_else_replaces_the_one_the_worker_keeps(db_url):
    """The worker keeps the account's state between passes; a risk officer clears the breach (which
    writes account_states): the next event is evaluated from the cleared state, not the kept one."""
    engine, Session, account_id, user_id = _setup(db_url)
    worker = EvaluationWorker(Session)
    _send(Session, _equity(1, "100000", minutes=1), _equity(2, "80000", minutes=2))
    worker.run_until_idle()
    assert _status(Session, account_id) == "breached"
    with Session.begin() as s:
        override_account(s, firm_id=FIRM, account_id=account_id, reason="feed glitch, verified with the platform",
                         actor_user_id=user_id, actor="risk@rt.example")
    assert _status(Session, account_id) == "active"
    _send(Session, _equity(3, "99500", minutes=3))  # within every limit
    worker.run_until_idle()
    assert _status(Session, account_id) == "active"
    with Session() as s:
        state = STATE_DECODER.decode(s.get(m.AccountState, account_id).state)
        kinds = list(s.scalars(select(m.Decision.kind).where(m.Decision.account_id == account_id)))
    assert state.status == "active" and state.equity == 99500
    assert kinds.count("breach") == 1
    engine.dispose()


def test_a_clock_before_the_accounts_next_deadline_is_left_for_later_and_an_eager_pass_moves_only_the_position(db_url):
    """A firm-wide clock tick before the account's next deadline cannot change its state: the worker
    does not catch the account up at all (nothing written, no pass for it). The eager path (every account
    behind caught up) writes the position only: the stored state and its time stay as they were."""
    engine, Session, account_id, _ = _setup(db_url)
    worker = EvaluationWorker(Session)
    _send(Session, _equity(1, "100000", minutes=1))
    worker.run_until_idle()

    def row():
        with Session() as s:
            found = s.get(m.AccountState, account_id)
            return bytes(found.state), found.updated_at, found.last_seq

    before = row()
    ts = (NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    _send(Session, json.dumps({"id": "c1", "type": "clock", "ts": ts}).encode() + b"\n")
    report = worker.run_until_idle()
    assert report.accounts == 0
    assert row() == before
    EvaluationWorker(Session, lazy_clock=False).run_until_idle()
    after = row()
    assert after[2] > before[2]
    assert after[:2] == before[:2]
    engine.dispose()


def test_a_breach_cleared_while_a_pass_evaluates_is_not_undone_by_that_pass(db_url, monkeypatch):
    """On SQLite a pass evaluates in a read transaction and takes the write lock only to write. A risk
    officer clears the breach in between: the pass leaves that account out (its state moved), and the
    next pass evaluates the waiting event from the cleared state."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL passes claim their accounts (FOR UPDATE) for the whole pass")
    engine, Session, account_id, user_id = _setup(db_url)
    worker = EvaluationWorker(Session)
    _send(Session, _equity(1, "100000", minutes=1), _equity(2, "80000", minutes=2))
    worker.run_until_idle()
    assert _status(Session, account_id) == "breached"
    _send(Session, _equity(3, "99500", minutes=3))
    evaluate = worker._evaluate

    def override_meanwhile(session, ids):
        plan = evaluate(session, ids)
        with Session.begin() as s:
            override_account(s, firm_id=FIRM, account_id=account_id, reason="feed glitch, verified with the platform",
                             actor_user_id=user_id, actor="risk@rt.example")
        return plan

    monkeypatch.setattr(worker, "_evaluate", override_meanwhile)
    report = worker.run_pass()
    assert report.stale == 1 and report.accounts == 0
    assert _status(Session, account_id) == "active"
    monkeypatch.setattr(worker, "_evaluate", evaluate)
    worker.run_until_idle()
    assert _status(Session, account_id) == "active"
    with Session() as s:
        assert STATE_DECODER.decode(s.get(m.AccountState, account_id).state).equity == 99500
        assert s.scalar(select(m.RawEvent.status).where(m.RawEvent.event_id == "e3")) == "applied"
    engine.dispose()
