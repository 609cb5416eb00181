"""The worker evaluates stored events exactly as `propcrm replay` does, once, even across crashes."""

from __future__ import annotations

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.decisions import ENCODER
from propcrm.domain.events import DECODER
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.engine.runner import Engine
from propcrm.services import audit
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.evaluation import EvaluationWorker
from propcrm.synth.firm import FirmSpec, generate

FIRM = "demo"
SPEC = FirmSpec(accounts=24, days=3, seed=11, equity_every_s=900)


def _load(Session, lines: list[bytes]) -> None:
    pack = load_pack("two-step-100k")
    with Session.begin() as s:
        ensure_firm(s, firm_id=FIRM)
        version = add_pack(s, firm_id=FIRM, pack=pack, activate=True)
        accounts = {}
        for line in lines:
            ev = DECODER.decode(line)
            account = getattr(ev, "account", None)
            if account and account not in accounts:
                accounts[account] = create_account(s, firm_id=FIRM, external_id=account, pack_version_id=version.id).id
        for line in lines:
            ev = DECODER.decode(line)
            s.add(
                m.RawEvent(
                    firm_id=FIRM,
                    source="mt5",
                    event_id=ev.id,
                    account_id=accounts.get(getattr(ev, "account", None)),
                    type=type(ev).__struct_config__.tag,
                    ts=ev.ts,
                    body=line.rstrip(b"\n"),
                    status="pending" if getattr(ev, "account", None) else "stored",
                )
            )


def _replay(lines: list[bytes]) -> list[bytes]:
    engine = Engine(compile_pack(load_pack("two-step-100k")))
    return sorted(ENCODER.encode(d) for d in engine.feed([DECODER.decode(x) for x in lines]))


def _stored(Session) -> list[bytes]:
    with Session() as s:
        return sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))


@pytest.fixture
def lines() -> list[bytes]:
    return list(generate(SPEC))


def test_the_worker_decides_exactly_what_replay_decides(db_url, lines):
    engine = make_engine(db_url)
    Session = sessions(engine)
    _load(Session, lines)
    report = EvaluationWorker(Session, batch=200).run_until_idle()
    expected = _replay(lines)
    assert expected, "the synthetic firm should produce decisions"
    assert _stored(Session) == expected
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending")) == 0
        breached = {a.external_id for a in s.scalars(select(m.Account).where(m.Account.status == "breached"))}
        assert breached == {msgspec.json.decode(b)["account"] for b in expected if b'"kind":"breach"' in b}
        kinds = {k for (k,) in s.execute(select(m.OutboxMessage.kind))}
        assert {"platform_command", "notify"} <= kinds
        assert audit.verify(s).ok
    assert report.events > 0
    engine.dispose()


def test_a_crash_mid_pass_loses_nothing_and_doubles_nothing(db_url, lines, monkeypatch):
    """The database fails while a pass writes (what a crash looks like from inside the transaction): the
    pass rolls back whole and is retried. (Any other error while writing is one account's problem: it
    sets that account's events aside, see test_evaluation_isolation.py.)"""
    engine = make_engine(db_url)
    Session = sessions(engine)
    _load(Session, lines)
    worker = EvaluationWorker(Session, batch=150)
    calls = {"n": 0}
    original = worker._record

    def crash_sometimes(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 7 == 0:
            raise OperationalError("simulated crash inside the transaction", None, Exception("crash"))
        return original(*args, **kwargs)

    monkeypatch.setattr(worker, "_record", crash_sometimes)
    crashed = committed = 0
    for _ in range(400):
        try:
            report = worker.run_pass(max_accounts=3)  # small passes: some commit, some crash
        except OperationalError:
            crashed += 1
            continue
        committed += 1
        if report.accounts == 0:
            break
    assert crashed and committed > 1
    monkeypatch.setattr(worker, "_record", original)
    worker.run_until_idle()
    assert _stored(Session) == _replay(lines)
    engine.dispose()


def test_effects_go_to_the_outbox_and_a_pass_opens_the_next_phase(db_url):
    lines = list(generate(FirmSpec(accounts=20, days=5, seed=3, equity_every_s=1800)))
    engine = make_engine(db_url)
    Session = sessions(engine)
    _load(Session, lines)
    EvaluationWorker(Session).run_until_idle()
    with Session() as s:
        passed = list(s.scalars(select(m.Decision).where(m.Decision.kind == "phase_passed")))
        breaches = list(s.scalars(select(m.Decision).where(m.Decision.kind == "breach")))
        outbox = list(s.scalars(select(m.OutboxMessage)))
        commands = [(o.payload["command"], o.payload["account"]) for o in outbox if o.kind == "platform_command"]
        for d in breaches:
            account = s.get(m.Account, d.account_id)
            assert ("disable", account.external_id) in commands
        assert passed, "the synthetic firm has traders who pass"
        for d in passed:
            account = s.get(m.Account, d.account_id)
            successor = s.scalars(select(m.Account).where(m.Account.external_id == f"{account.external_id}.phase-2")).one()
            assert successor.phase == "phase-2" and successor.pack_version_id == account.pack_version_id
            assert ("create_account", successor.external_id) in commands
        assert len({o.dedupe_key for o in outbox}) == len(outbox)
    engine.dispose()


def test_equal_event_ids_from_two_platforms_are_two_events(db_url):
    """Event ids are unique per source: the worker must not take one platform's id for another's."""
    engine = make_engine(db_url)
    Session = sessions(engine)
    line = (b'{"id":"7","type":"trade_opened","account":"A1","ts":"2026-03-02T09:00:00Z","position":"%s",'
            b'"symbol":"EURUSD","side":"buy","lots":"%s","price":"1.1"}')
    with Session.begin() as s:
        ensure_firm(s, firm_id=FIRM)
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        account = create_account(s, firm_id=FIRM, external_id="A1", pack_version_id=version.id).id
        for source, position, lots in (("mt5", b"p1", b"1"), ("ctrader", b"p2", b"2")):
            body = line % (position, lots)
            s.add(m.RawEvent(firm_id=FIRM, source=source, event_id="7", account_id=account, type="trade_opened",
                             ts=DECODER.decode(body).ts, body=body))
    EvaluationWorker(Session).run_until_idle()
    with Session() as s:
        assert {r.status for r in s.scalars(select(m.RawEvent))} == {"applied"}
        state = msgspec.msgpack.decode(s.get(m.AccountState, account).state)
        assert sorted(state["positions"]) == ["p1", "p2"]
    engine.dispose()
