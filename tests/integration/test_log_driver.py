"""The embedded log driver (cluster/embedded.py: the partition driver over ``raw_events``) decides exactly
what ``propcrm replay`` decides, keeps the embedded mode's row statuses and states, and survives a crash
or a restart at any batch with the same decisions and states."""

from __future__ import annotations

import time

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cluster.embedded import LogDriver
from propcrm.cluster.eventlog import TableLog
from propcrm.domain.decisions import ENCODER
from propcrm.domain.events import DECODER
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.engine.runner import Engine
from propcrm.services import audit
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.outcomes import STATE_DECODER, STATE_ENCODER
from propcrm.synth.firm import FirmSpec, generate

FIRM = "demo"
SPEC = FirmSpec(accounts=24, days=3, seed=11, equity_every_s=900)


def _load(Session, lines: list[bytes], *, accounts: dict | None = None) -> dict:
    accounts = {} if accounts is None else accounts
    with Session.begin() as s:
        if not accounts:
            ensure_firm(s, firm_id=FIRM)
            version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
            accounts["_version"] = version.id
        for line in lines:
            ev = DECODER.decode(line)
            account = getattr(ev, "account", None)
            if account and account not in accounts:
                accounts[account] = create_account(s, firm_id=FIRM, external_id=account,
                                                   pack_version_id=accounts["_version"]).id
        for line in lines:
            ev = DECODER.decode(line)
            account = getattr(ev, "account", None)
            s.add(m.RawEvent(firm_id=FIRM, source="mt5", event_id=ev.id, account_id=accounts.get(account),
                             type=type(ev).__struct_config__.tag, ts=ev.ts, body=line.rstrip(b"\n"),
                             status="pending" if account else "stored"))
    return accounts


def _replay(lines: list[bytes]) -> tuple[list[bytes], dict[str, bytes]]:
    engine = Engine(compile_pack(load_pack("two-step-100k")))
    decisions = sorted(ENCODER.encode(d) for d in engine.feed([DECODER.decode(x) for x in lines]))
    return decisions, {account: STATE_ENCODER.encode(engine.state(account)) for account in engine.states}


def _stored(Session) -> tuple[list[bytes], dict[str, bytes]]:
    with Session() as s:
        decisions = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
        states = {external: STATE_ENCODER.encode(STATE_DECODER.decode(bytes(blob))) for external, blob in s.execute(
            select(m.Account.external_id, m.AccountState.state).join(m.Account, m.Account.id == m.AccountState.account_id))}
    return decisions, states


@pytest.fixture
def lines() -> list[bytes]:
    return list(generate(SPEC))


@pytest.mark.parametrize("partitions", [1, 4])
def test_the_log_driver_decides_and_stores_exactly_what_replay_does(db_url, lines, partitions):
    engine = make_engine(db_url)
    Session = sessions(engine)
    _load(Session, lines)
    report = LogDriver(Session, partitions=partitions, batch=300, states="batch").run_until_idle()
    decisions, states = _replay(lines)
    assert decisions, "the synthetic firm should produce decisions"
    assert report.events > 0
    assert _stored(Session) == (decisions, states)
    with Session() as s:
        statuses = dict(s.execute(select(m.RawEvent.status, func.count()).group_by(m.RawEvent.status)).all())
        assert "pending" not in statuses and statuses["applied"] > 0
        # every decision links to its stored event (the one whose id it names)
        linked = s.execute(select(m.Decision.event_seq, m.Decision.body)).all()
        assert linked and all(seq is not None for seq, _ in linked)
        ids = dict(s.execute(select(m.RawEvent.seq, m.RawEvent.event_id)).all())
        assert all(ids[seq] == msgspec.json.decode(body)["event_id"] for seq, body in linked)
        breached = {a.external_id for a in s.scalars(select(m.Account).where(m.Account.status == "breached"))}
        assert breached == {msgspec.json.decode(b)["account"] for b in decisions if b'"kind":"breach"' in b}
        kinds = {k for (k,) in s.execute(select(m.OutboxMessage.kind))}
        assert {"platform_command", "notify"} <= kinds
        assert s.scalar(select(func.count()).select_from(m.EquityPoint)) > 0
        assert audit.verify(s).ok
    engine.dispose()


@pytest.mark.parametrize("states", ["batch", "interval"])
def test_a_restart_mid_stream_gives_the_decisions_and_states_of_replay(db_url, lines, states, monkeypatch):
    """Crashes inside a batch's transaction (rolled back, partitions taken over again) and a driver dropped
    mid-stream without a word (a killed process: a new one takes over from the checkpoint and the last
    snapshot, replaying the rest silently) lose nothing and double nothing."""
    engine = make_engine(db_url)
    Session = sessions(engine)
    half = len(lines) // 2
    accounts = _load(Session, lines[:half])
    driver = LogDriver(Session, partitions=3, batch=97, states=states, snapshot_interval_s=3600)
    calls = {"n": 0}
    original = driver._mark

    def crash_sometimes(*args):
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise OperationalError("simulated crash inside the transaction", None, Exception("crash"))
        return original(*args)

    monkeypatch.setattr(driver.store, "commit_hook", crash_sometimes)
    crashed = 0
    for _ in range(6):
        try:
            driver.run_pass()
        except RuntimeError:
            crashed += 1
    assert crashed
    del driver  # killed: nothing is flushed
    _load(Session, lines[half:], accounts=accounts)
    again = LogDriver(Session, partitions=3, batch=211, states=states, snapshot_interval_s=3600)
    again.run_until_idle()
    LogDriver(Session, partitions=3, states=states).run_until_idle()  # a second restart finds nothing to do
    decisions, expected_states = _replay(lines)
    stored_decisions, stored_states = _stored(Session)
    assert stored_decisions == decisions
    if states == "batch":
        assert stored_states == expected_states
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending")) == 0
    engine.dispose()


def test_the_first_start_over_the_pass_workers_database_rebuilds_its_engines_from_the_log(db_url, lines):
    """Switching ``PROPCRM_EMBEDDED_DRIVER`` from poll to log on a database in use: the pass worker's
    decisions stay, nothing is decided twice, and what follows is decided as replay decides it."""
    engine = make_engine(db_url)
    Session = sessions(engine)
    half = len(lines) // 2
    accounts = _load(Session, lines[:half])
    EvaluationWorker(Session, batch=200).run_until_idle()
    _load(Session, lines[half:], accounts=accounts)
    LogDriver(Session, partitions=2, batch=500, states="batch").run_until_idle()
    assert _stored(Session) == _replay(lines)
    engine.dispose()


def test_the_table_log_routes_firm_wide_rows_to_every_partition_and_skips_rows_set_aside(db_url, lines):
    engine = make_engine(db_url)
    Session = sessions(engine)
    _load(Session, lines[:200])
    with Session.begin() as s:
        first = s.scalar(select(func.min(m.RawEvent.seq)).where(m.RawEvent.account_id.is_not(None)))
        s.get(m.RawEvent, first).status = "rejected"
    log = TableLog(Session, 4)
    read = log.read(0, 10_000)
    firm_wide = [line for line in lines[:200] if getattr(DECODER.decode(line), "account", None) is None]
    assert len(read.messages) == (200 - len(firm_wide) - 1) + 4 * len(firm_wide)
    assert first not in {message.seq for message in read.messages}
    assert read.reached == log.head()
    seqs = [message.seq for message in read.messages]
    assert seqs == sorted(seqs)
    engine.dispose()


@pytest.mark.parametrize("driver_kind", ["log", "poll"])
def test_a_cleared_breach_is_taken_over_not_written_back(db_url, lines, driver_kind):
    """Staff clear a breach (services/overrides.py rewrites the state and bumps its generation): the
    driver takes the stored state over before its next batch instead of going on from — and storing
    again — the breached copy it holds; as the pass worker does."""
    from propcrm.services import users
    from propcrm.services.overrides import override_account

    engine = make_engine(db_url)
    Session = sessions(engine)
    accounts = _load(Session, lines)
    driver = LogDriver(Session, partitions=2, states="batch") if driver_kind == "log" else EvaluationWorker(Session)
    driver.run_until_idle()
    with Session.begin() as s:
        breached = s.scalars(select(m.Account).where(m.Account.status == "breached").order_by(m.Account.id)).first()
        assert breached is not None
        user = users.create_user(s, firm_id=FIRM, email="risk@demo.example", password="correct horse battery staple",
                                 role="risk", actor="test")
        override_account(s, firm_id=FIRM, account_id=breached.id, reason="broker error", actor_user_id=user.id,
                         actor="test")
        external, last_ts = breached.external_id, STATE_DECODER.decode(
            s.get(m.AccountState, breached.id).state).last_ts
    later = last_ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    line = (f'{{"id":"after-clear","type":"equity","account":"{external}","ts":"{later}",'
            f'"equity":"100000.00","balance":"100000.00"}}\n').encode()
    _load(Session, [line], accounts=accounts)
    driver.run_until_idle()
    with Session() as s:
        # evaluated in full from the cleared state: the loss still there breaches again, on this event (from
        # a breached copy held in memory the event would change nothing and decide nothing)
        decided = s.scalars(select(m.Decision.body).where(m.Decision.account_id == breached.id)).all()
        assert any(b'"event_id":"after-clear"' in body and b'"kind":"breach"' in body for body in decided)
        assert s.scalar(select(m.RawEvent.status).where(m.RawEvent.event_id == "after-clear")) == "applied"
    engine.dispose()


@pytest.mark.parametrize("partitions", [1, 2])
def test_a_breach_cleared_between_the_reload_check_and_the_commit_is_not_overwritten(db_url, lines, partitions,
                                                                                     monkeypatch):
    """Staff clear a breach after the driver's check for rewritten states and before its batch commits
    (here: while it reads the batch's rows): the batch's write of that account is conditional on the
    generation it holds, so the account's partition is left out of the commit, taken over again and
    redone — its event decided once, from the cleared state — while the rest commits once."""
    from propcrm.services import users
    from propcrm.services.overrides import override_account

    engine = make_engine(db_url)
    Session = sessions(engine)
    accounts = _load(Session, lines)
    driver = LogDriver(Session, partitions=partitions, states="batch")
    driver.run_until_idle()
    with Session.begin() as s:
        breached = s.scalars(select(m.Account).where(m.Account.status == "breached").order_by(m.Account.id)).first()
        assert breached is not None
        user = users.create_user(s, firm_id=FIRM, email="risk@demo.example", password="correct horse battery staple",
                                 role="risk", actor="test")
        breached_id, external, user_id = breached.id, breached.external_id, user.id
        last_ts = STATE_DECODER.decode(s.get(m.AccountState, breached.id).state).last_ts
        others = [a.external_id for a in s.scalars(select(m.Account).where(m.Account.status != "breached")
                                                    .order_by(m.Account.id))]
    later = last_ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    batch = [(f'{{"id":"after-clear","type":"equity","account":"{external}","ts":"{later}",'
              f'"equity":"100000.00","balance":"100000.00"}}\n').encode()]
    batch += [(f'{{"id":"other-{n}","type":"equity","account":"{other}","ts":"{later}",'
               f'"equity":"1.00","balance":"1.00"}}\n').encode() for n, other in enumerate(others[:6])]
    _load(Session, batch, accounts=accounts)
    read = driver.log.read
    calls = {"n": 0}

    def read_then_clear(*args, **kwargs):  # after the reload check, before the batch's transaction
        calls["n"] += 1
        if calls["n"] == 1:
            with Session.begin() as s:
                override_account(s, firm_id=FIRM, account_id=breached_id, reason="broker error",
                                 actor_user_id=user_id, actor="test")
        return read(*args, **kwargs)

    monkeypatch.setattr(driver.log, "read", read_then_clear)
    driver.run_until_idle()
    assert calls["n"] >= 2
    with Session() as s:
        # evaluated in full from the cleared state: the loss still there breaches again, on this event, once
        decided = s.scalars(select(m.Decision.body).where(m.Decision.event_id == "after-clear")).all()
        assert len(decided) == 1 and b'"kind":"breach"' in decided[0]
        assert s.scalar(select(m.Account.status).where(m.Account.id == breached_id)) == "breached"
        assert STATE_DECODER.decode(s.get(m.AccountState, breached_id).state).status == "breached"
        # the other accounts' events: evaluated (applied, or refused as out of order), nothing decided twice
        for n in range(len(others[:6])):
            assert s.scalar(select(m.RawEvent.status).where(m.RawEvent.event_id == f"other-{n}")) != "pending"
        kinds = s.execute(select(m.Decision.event_id, m.Decision.account_id, m.Decision.kind, m.Decision.rule)).all()
        assert len(kinds) == len(set(kinds))
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending")) == 0
        assert audit.verify(s).ok
    engine.dispose()


def test_the_table_log_never_passes_a_row_committed_late_with_a_lower_seq(db_url, lines):
    """PostgreSQL numbers rows before they commit: a row numbered first and committed last is still
    read (the reader waits at the hole); a hole a rolled-back insert leaves is passed once its
    transaction has ended. (On SQLite one writer numbers and commits in order.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite numbers and commits rows in order (one writer)")
    engine = make_engine(db_url)
    Session = sessions(engine)
    accounts = _load(Session, lines[:3])
    log = TableLog(Session, 1)
    start = log.head()

    def settled(after: int):  # a filled hole is read at once; one left for good is passed once every
        read = log.read(after, 100)  # writer running when it was seen has ended (seen again without them)
        if read.hole:
            read = log.read(after, 100)
        assert not read.hole, "the reader stayed at a hole whose transaction ended"
        return read

    def row(event_id: str) -> m.RawEvent:
        return m.RawEvent(firm_id=FIRM, source="mt5", event_id=event_id, account_id=accounts["A7"] if "A7" in accounts
                          else next(v for k, v in accounts.items() if k != "_version"), type="clock",
                          ts=DECODER.decode(lines[0]).ts, body=lines[0].rstrip(b"\n"), status="pending")

    slow = Session()
    slow.begin()
    _writer(slow)
    slow.add(row("slow"))
    slow.flush()  # numbered, not committed
    with Session.begin() as s:
        s.add(row("fast"))
    first = log.read(start, 100)
    assert first.messages == [] and first.hole and first.reached == start
    slow.commit()
    slow.close()
    second = settled(start)
    assert len(second.messages) == 2
    doomed = Session()
    doomed.begin()
    _writer(doomed)
    doomed.add(row("doomed"))
    doomed.flush()
    with Session.begin() as s:
        s.add(row("after"))
    assert log.read(second.reached, 100).hole
    doomed.rollback()
    doomed.close()
    third = settled(second.reached)
    assert [message.seq for message in third.messages] == [third.reached]
    engine.dispose()


def _writer(session) -> None:
    """What ingestion does in its transaction before it draws seq numbers (PostgreSQL)."""
    from propcrm.adapters.db.models_cluster import LOG_WRITERS_LOCK

    session.execute(select(func.pg_advisory_xact_lock_shared(*LOG_WRITERS_LOCK)))


def test_a_long_transaction_that_writes_no_events_never_stalls_the_table_log(db_url, lines):
    """The reader waits at a hole for this database's ingest writers only: a long transaction of another
    database of the server, or one of this database that stores no event, does not hold it back, while
    an ingest transaction holding a lower seq still does."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite numbers and commits rows in order (one writer)")
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = make_engine(db_url)
    Session = sessions(engine)
    accounts = _load(Session, lines[:3])
    account_id = next(v for k, v in accounts.items() if k != "_version")
    log = TableLog(Session, 1)
    start = log.head()
    elsewhere = make_engine(make_url(db_url).set(database="postgres").render_as_string(hide_password=False))
    other_db = elsewhere.connect()
    other_db.begin()
    assert other_db.scalar(text("SELECT txid_current()"))  # a transaction id, held for the whole test
    here = engine.connect()
    here.begin()
    assert here.scalar(text("SELECT txid_current()"))  # this database's, storing no event

    def row(event_id: str) -> m.RawEvent:
        return m.RawEvent(firm_id=FIRM, source="mt5", event_id=event_id, account_id=account_id, type="clock",
                          ts=DECODER.decode(lines[0]).ts, body=lines[0].rstrip(b"\n"), status="pending")

    try:
        doomed = Session()
        doomed.begin()
        _writer(doomed)
        doomed.add(row("doomed"))
        doomed.flush()  # numbered
        with Session.begin() as s:
            _writer(s)
            s.add(row("after"))
        assert log.read(start, 100).hole
        assert log.read(start, 100).hole  # its writer is still running: no reading past it
        doomed.rollback()
        doomed.close()
        passed = log.read(start, 100)  # its writer gone: passed, the other transactions still running
        assert not passed.hole and [message.seq for message in passed.messages] == [passed.reached]
    finally:
        here.rollback()
        here.close()
        other_db.rollback()
        other_db.close()
        elsewhere.dispose()
        engine.dispose()
