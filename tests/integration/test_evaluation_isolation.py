"""One account's bad events never stop the evaluation of another account or firm (embedded worker).

Whatever goes wrong while one account's events are evaluated or stored — an event an older version
stored out of bounds or dated in the future, a rule pack that no longer compiles, figures the database
cannot hold — those events are set aside (``raw_events.status = 'rejected'`` with the reason, and a
quarantine entry), the rest of the pass commits, and the next pass has nothing left to retry.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import InvalidOperation

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.rulepack import load_pack
from propcrm.services import accounts as accounts_service
from propcrm.services import audit
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest

UTC = dt.timezone.utc


def event(event_id: str, account: str, ts: str, **fields) -> bytes:
    kind = fields.pop("type", "equity")
    if kind == "equity":
        fields = {"equity": "99000", "balance": "100000", **fields}
    return json.dumps({"id": event_id, "type": kind, "account": account, "ts": ts, **fields}).encode()


BREACH = {"equity": "80000", "balance": "100000"}  # below the 90% max-loss floor of two-step-100k


@pytest.fixture
def firms(db_url):
    """Firm f1 (accounts A1, A2) and firm f2 (account B1), all on two-step-100k."""
    engine = make_engine(db_url)
    factory = sessions(engine)
    factory.ids = {}
    factory.versions = {}
    with factory.begin() as s:
        for firm, names in (("f1", ("A1", "A2")), ("f2", ("B1",))):
            ensure_firm(s, firm_id=firm)
            version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
            factory.versions[firm] = version.id
            for name in names:
                factory.ids[name] = create_account(s, firm_id=firm, external_id=name, pack_version_id=version.id).id
    yield factory
    engine.dispose()


def send(db, firm: str, *lines: bytes, source: str = "mt5"):
    with db.begin() as s:
        return ingest(s, firm_id=firm, source=source, body=b"\n".join(lines))


def store_raw(db, firm: str, account: str | None, line: bytes, *, kind: str = "equity", ts: str,
              status: str = "pending") -> None:
    """A row as an older version stored it, before the bounds and the clock were checked."""
    with db.begin() as s:
        s.add(m.RawEvent(firm_id=firm, source="mt5", event_id=json.loads(line)["id"],
                         account_id=db.ids.get(account), type=kind, body=line, status=status,
                         ts=dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))))


def decisions(db) -> list[tuple[str, str, str]]:
    with db() as s:
        rows = s.execute(select(m.Account.external_id, m.Decision.kind, m.Decision.event_id)
                         .join(m.Account, m.Account.id == m.Decision.account_id).order_by(m.Decision.id)).all()
    return [tuple(r) for r in rows]


def raw(db, event_id: str) -> m.RawEvent:
    with db() as s:
        return s.scalars(select(m.RawEvent).where(m.RawEvent.event_id == event_id)).one()


def quarantine(db, firm: str) -> list[m.Quarantine]:
    with db() as s:
        return list(s.scalars(select(m.Quarantine).where(m.Quarantine.firm_id == firm).order_by(m.Quarantine.id)))


def status_of(db, account: str) -> str:
    with db() as s:
        return s.get(m.Account, db.ids[account]).status


def test_an_out_of_bounds_event_stored_by_an_older_version_is_set_aside_and_other_firms_go_on(firms):
    bad = event("huge", "A1", "2026-03-02T10:00:00Z", equity="100000000000000000")
    store_raw(firms, "f1", "A1", bad, ts="2026-03-02T10:00:00Z")
    send(firms, "f1", event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH))
    send(firms, "f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH))

    worker = EvaluationWorker(firms)
    report = worker.run_pass()
    assert ("B1", "breach", "b1-breach") in decisions(firms), "another firm's breach is decided in the same pass"
    assert ("A2", "breach", "a2-breach") in decisions(firms), "…and so is another account's of the same firm"
    assert status_of(firms, "B1") == "breached" and status_of(firms, "A2") == "breached"
    assert (report.rejected, report.set_aside) == (1, 0), "the bad line alone is set aside, not its account"

    row = raw(firms, "huge")
    assert row.status == "rejected" and row.reason.startswith("malformed: `equity`: must be less than 10^12")
    held = quarantine(firms, "f1")
    assert [(q.body, q.source, q.resolved_at) for q in held] == [(bad, "mt5", None)]
    assert held[0].reason == row.reason
    assert worker.run_pass().accounts == 0, "nothing is left to retry"
    with firms() as s:
        assert audit.verify(s).ok


def test_an_account_whose_figures_cannot_be_stored_costs_only_its_own_events(firms, monkeypatch):
    real = accounts_service.stored_figures

    def failing(program, st):
        if st.account == "A1":
            raise InvalidOperation("[<class 'decimal.InvalidOperation'>]")
        return real(program, st)

    monkeypatch.setattr(accounts_service, "stored_figures", failing)
    send(firms, "f1", event("a1-1", "A1", "2026-03-02T09:00:00Z"), event("a1-2", "A1", "2026-03-02T09:30:00Z"),
         event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH))
    send(firms, "f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH))

    worker = EvaluationWorker(firms)
    report = worker.run_pass()
    assert report.set_aside == 1 and report.accounts == 2
    assert {("A2", "breach", "a2-breach"), ("B1", "breach", "b1-breach")} <= set(decisions(firms))
    for event_id in ("a1-1", "a1-2"):
        row = raw(firms, event_id)
        assert row.status == "rejected"
        assert row.reason.startswith("not applied: the events of A1 in this pass could not be stored")
        assert "InvalidOperation" in row.reason
    assert [json.loads(q.body)["id"] for q in quarantine(firms, "f1")] == ["a1-1", "a1-2"]
    with firms() as s:
        assert s.get(m.AccountState, firms.ids["A1"]) is None, "nothing of A1's events was applied"
        assert s.get(m.AccountState, firms.ids["A2"]) is not None
    assert worker.run_pass().accounts == 0, "no retry loop"

    monkeypatch.setattr(accounts_service, "stored_figures", real)  # fixed: a corrected re-send is applied
    again = send(firms, "f1", event("a1-1", "A1", "2026-03-02T09:00:00Z"), event("a1-3", "A1",
                                                                                 "2026-03-02T11:00:00Z", **BREACH))
    assert [o.status for o in again.lines] == ["accepted", "accepted"]
    worker.run_until_idle()
    assert ("A1", "breach", "a1-3") in decisions(firms)
    assert raw(firms, "a1-1").status == "applied", raw(firms, "a1-1").reason
    assert [q.resolved_at is not None for q in quarantine(firms, "f1")] == [True, False]
    with firms() as s:
        assert audit.verify(s).ok


def test_a_rule_pack_that_no_longer_compiles_sets_its_accounts_events_aside(firms):
    with firms.begin() as s:
        broken = add_pack(s, firm_id="f1", pack=load_pack("one-step-100k"))
        s.get(m.Account, firms.ids["A1"]).pack_version_id = broken.id
        s.flush()
        s.get(m.RulePackVersion, broken.id).body = '{"id": "broken"}'
    send(firms, "f1", event("a1-1", "A1", "2026-03-02T09:00:00Z"), event("a2-breach", "A2", "2026-03-02T10:00:00Z",
                                                                          **BREACH))
    report = EvaluationWorker(firms).run_pass()
    assert report.set_aside == 1
    assert ("A2", "breach", "a2-breach") in decisions(firms)
    row = raw(firms, "a1-1")
    assert row.status == "rejected" and row.reason.startswith("not applied: the events of A1 in this pass could not be evaluated")


def test_a_future_clock_stored_by_an_older_version_is_set_aside_and_freezes_nobody(firms):
    store_raw(firms, "f1", None, b'{"id":"k-2099","type":"clock","ts":"2099-01-01T00:00:00Z"}', kind="clock",
              ts="2099-01-01T00:00:00Z", status="stored")
    send(firms, "f1", event("a1-1", "A1", "2026-03-02T09:00:00Z"))
    worker = EvaluationWorker(firms)
    worker.run_until_idle()
    clock = raw(firms, "k-2099")
    assert clock.status == "rejected" and clock.reason.startswith("`ts`: 2099-01-01T00:00:00+00:00 is ahead of")
    assert [q.reason for q in quarantine(firms, "f1")] == [clock.reason]
    send(firms, "f1", event("a1-breach", "A1", "2026-03-02T10:00:00Z", **BREACH))
    worker.run_until_idle()
    assert ("A1", "breach", "a1-breach") in decisions(firms), "later events are applied: the firm is not frozen"
    assert len(quarantine(firms, "f1")) == 1, "the clock is set aside once, not once per account or pass"
    assert worker.run_pass().accounts == 0


def test_an_out_of_order_event_is_quarantined_with_its_reason_and_a_corrected_one_is_applied(firms):
    worker = EvaluationWorker(firms)
    send(firms, "f1", event("a1-10", "A1", "2026-03-02T10:00:00Z"))
    worker.run_until_idle()
    late = event("a1-09", "A1", "2026-03-02T09:00:00Z", **BREACH)
    assert send(firms, "f1", late).accepted == 1
    report = worker.run_until_idle()
    assert report.rejected == 1 and decisions(firms) == []
    row = raw(firms, "a1-09")
    assert row.status == "rejected" and row.reason.startswith("out_of_order: event time 2026-03-02T09:00:00+00:00")
    assert "the same id" in row.reason
    held = quarantine(firms, "f1")
    assert [(q.body, q.reason, q.resolved_at) for q in held] == [(late, row.reason, None)]

    corrected = event("a1-09", "A1", "2026-03-02T10:05:00Z", **BREACH)
    answer = send(firms, "f1", corrected)
    assert [o.status for o in answer.lines] == ["accepted"], "the id of an event set aside is not spent"
    worker.run_until_idle()
    assert decisions(firms) == [("A1", "breach", "a1-09")], (raw(firms, "a1-09").status, raw(firms, "a1-09").reason)
    assert raw(firms, "a1-09").status == "applied"
    assert quarantine(firms, "f1")[0].resolved_at is not None


def test_equal_ids_from_two_sources_are_judged_each_on_its_own(firms):
    worker = EvaluationWorker(firms)
    send(firms, "f1", event("x", "A1", "2026-03-02T10:00:00Z"), source="mt5")
    worker.run_until_idle()
    send(firms, "f1", event("x", "A1", "2026-03-02T09:00:00Z"), source="ctrader")  # out of order
    send(firms, "f1", event("y", "A1", "2026-03-02T11:00:00Z"), source="mt5")
    worker.run_until_idle()
    with firms() as s:
        rows = {(r.source, r.event_id): r.status for r in s.scalars(select(m.RawEvent))}
    assert rows == {("mt5", "x"): "applied", ("ctrader", "x"): "rejected", ("mt5", "y"): "applied"}


def test_passes_end_when_every_account_of_a_pass_is_set_aside(firms, monkeypatch):
    monkeypatch.setattr(accounts_service, "stored_figures",
                        lambda program, st: (_ for _ in ()).throw(ValueError("cannot hold this")))
    for i in range(5):
        send(firms, "f1", event(f"a1-{i}", "A1", f"2026-03-02T0{i}:00:00Z"),
             event(f"a2-{i}", "A2", f"2026-03-02T0{i}:00:00Z"))
        send(firms, "f2", event(f"b1-{i}", "B1", f"2026-03-02T0{i}:00:00Z"))
    worker = EvaluationWorker(firms, batch=4)
    passes = 0
    while (report := worker.run_pass()).accounts or report.set_aside:
        assert report.accounts == 0
        passes += 1
        assert passes < 20, "evaluation loops"
    with firms() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending")) == 0
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == 15


def test_an_account_blown_to_a_cent_of_equity_is_stored_with_its_figures(firms):
    """Equity of 0.01 against a floor of 95,000: the distance is −9.5 billion per cent of equity, beyond
    the 32-bit basis-point column. It is stored at the column's limit (it sorts nearest all the same)."""
    send(firms, "f1", event("a1-cent", "A1", "2026-03-02T10:00:00Z", equity="0.01", balance="100000"))
    report = EvaluationWorker(firms).run_pass()
    assert report.set_aside == 0 and ("A1", "breach", "a1-cent") in decisions(firms)
    with firms() as s:
        state = s.get(m.AccountState, firms.ids["A1"])
        assert state.nearest_bp == -(2**31 - 1)


def test_events_that_would_take_an_account_beyond_what_it_can_hold_are_set_aside(firms):
    worker = EvaluationWorker(firms)
    deposit = "999999999999"
    first = [event(f"d-{i}", "A1", "2026-03-02T10:00:00Z", type="balance", amount=deposit, reason="deposit")
             for i in range(900)]
    send(firms, "f1", *first)
    worker.run_until_idle()
    assert raw(firms, "d-899").status == "applied"
    more = [event(f"d-{i}", "A1", "2026-03-02T10:00:00Z", type="balance", amount=deposit, reason="deposit")
            for i in range(900, 1200)]
    send(firms, "f1", *more)
    send(firms, "f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH))
    report = worker.run_until_idle()
    assert report.set_aside == 1 and ("B1", "breach", "b1-breach") in decisions(firms)
    row = raw(firms, "d-1000")
    assert row.status == "rejected" and "balance would reach" in row.reason and "10^15" in row.reason
    with firms() as s:
        assert s.get(m.AccountState, firms.ids["A1"]).balance == 100000 + 900 * 999999999999


def test_a_payouts_withdrawal_is_timed_by_applied_events_not_by_scheduled_news_or_set_aside_ones(firms):
    """A payout's withdrawal goes right after the account's latest event. News scheduled next week (its
    time is when it happens) and an event set aside as from the future must not move it ahead of the
    clock: ingestion would refuse the withdrawal, and the payout could not be approved."""
    from propcrm.services.payouts import withdrawal_ts

    now = dt.datetime.now(UTC)
    send(firms, "f1", event("a1-1", "A1", "2026-03-02T09:00:00Z"),
         json.dumps({"id": "n-1", "type": "news", "ts": (now + dt.timedelta(days=7)).isoformat(), "title": "NFP",
                     "currency": "USD", "impact": "high"}).encode())
    store_raw(firms, "f1", "A1", event("a1-2099", "A1", "2099-01-01T00:00:00Z"), ts="2099-01-01T00:00:00Z")
    EvaluationWorker(firms).run_until_idle()
    assert raw(firms, "a1-2099").status == "rejected"
    with firms() as s:
        account = s.get(m.Account, firms.ids["A1"])
        assert withdrawal_ts(s, account, now) == dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_a_news_row_that_no_longer_decodes_is_set_aside_and_kept_out_of_the_calendar(firms):
    """The worker's news calendar holds only what the engine meets: a news row stored by an older version
    that no longer decodes is set aside like any firm-wide row, never read into the calendar (which
    failed every pass before, holding up the whole worker)."""
    bad = json.dumps({"id": "n-bad", "type": "news", "ts": "2026-03-02T09:00:00Z", "title": "CPI",
                      "impact": "extreme", "currency": "USD"}).encode()
    store_raw(firms, "f1", None, bad, kind="news", ts="2026-03-02T09:00:00Z", status="stored")
    send(firms, "f1", event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH))
    worker = EvaluationWorker(firms)
    worker.run_until_idle()
    assert ("A2", "breach", "a2-breach") in decisions(firms)
    assert raw(firms, "n-bad").status == "rejected"
    assert all(entry.event_id != "n-bad" for calendar in worker._calendars.values() for _, entry in calendar)
