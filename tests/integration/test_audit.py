"""The audit log on both backends: the hash chain, tampering of every kind, money, the CLI, concurrency."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from propcrm.adapters.db.models import AuditEntry
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.services import audit
from support.tamper import attacker

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 14, 3, 11, 123456, tzinfo=UTC)
LOG = AuditEntry.__table__
FIELDS = ("seq", "firm_id", "ts", "actor", "action", "entity", "entity_id", "before", "after", "prev_hash")


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    yield engine, sessions(engine)
    engine.dispose()


def seed(Session, n: int = 5, firms: tuple[str | None, ...] = ("f1",)) -> list[AuditEntry]:
    """``n`` entries of assorted shapes, each appended in its own transaction, to ``firms``' chains in turn
    (one chain by default: ``seq`` and ``chain_seq`` are then the same)."""
    out = []
    for i in range(n):
        with Session.begin() as s:
            out.append(audit.append(
                s, actor=f"user:{i % 3}", action="account.status", entity="account", entity_id=str(100 + i),
                before={"status": "active", "balance": Decimal("100000.00")},
                after={"status": "breached", "balance": Decimal("94999.005") - i, "at": T0},
                firm_id=firms[i % len(firms)], ts=T0 + dt.timedelta(seconds=i),
            ))
    return out



def check(Session, **kwargs) -> audit.VerifyResult:
    with Session() as s:
        return audit.verify(s, **kwargs)


def hashed(row) -> str:
    """An entry's hash recomputed from its row (format 2: ``seq`` is its place in its chain)."""
    return audit.entry_hash(**{f: getattr(row, f) for f in FIELDS} | {"seq": row.chain_seq}, v=2)


def test_a_chain_of_entries_verifies_and_every_hash_can_be_recomputed_from_the_rows(db):
    engine, Session = db
    assert check(Session) == audit.VerifyResult(ok=True, entries=0)  # an empty log is intact
    entries = seed(Session, 10, firms=(None, "f1"))
    with Session() as s:
        rows = s.execute(select(LOG).order_by(LOG.c.seq)).all()
    assert [r.seq for r in rows] == list(range(1, 11))
    for firm in (None, "f1"):  # each firm's entries form a chain of their own
        chain = [r for r in rows if r.firm_id == firm]
        assert [r.chain_seq for r in chain] == [1, 2, 3, 4, 5]
        assert chain[0].prev_hash == audit.GENESIS == "0" * 64
        for prev, row in zip(chain, chain[1:]):
            assert row.prev_hash == prev.hash
    for row, entry in zip(rows, entries):
        assert row.hash == entry.hash == hashed(row)
        assert len(row.hash) == 64 and int(row.hash, 16) >= 0
    for page_size in (1, 3, 10, 1000):  # paging never changes the answer
        result = check(Session, page_size=page_size)
        assert result.ok and result.entries == 10 and result.first_bad_seq is None and result.problem is None
        assert result.head_hash == rows[-1].hash
        assert result.heads == {None: (5, rows[-2].hash), "f1": (5, rows[-1].hash)}


def test_the_hash_is_over_the_documented_canonical_json(db):
    engine, Session = db
    with Session.begin() as s:
        entry = audit.append(s, actor="admin@f1", action="pack.activate", entity="rule_pack", entity_id="p/3",
                             after={"ä": Decimal("1.50"), "b": [1, True, None]}, firm_id="f1", ts=T0)
    import hashlib

    document = (  # format 2: "seq" is the place in the firm's chain, "v" says the format
        '{"action":"pack.activate","actor":"admin@f1","after":{"b":[1,true,null],"ä":"1.50"},"before":null,'
        '"entity":"rule_pack","entity_id":"p/3","firm_id":"f1","prev_hash":"' + "0" * 64 + '","seq":1,'
        '"ts":"2026-03-02T14:03:11.123456Z","v":2}'
    )
    assert entry.hash == hashlib.sha256(document.encode("utf-8")).hexdigest()


def test_appends_belong_to_the_callers_transaction(db):
    engine, Session = db
    with Session.begin() as s:  # several appends in one transaction chain onto each other
        a = audit.append(s, actor="a", action="x", entity="e")
        with s.begin_nested():  # a savepoint released: its entry stays
            b = audit.append(s, actor="a", action="y", entity="e")
        savepoint = s.begin_nested()  # a savepoint rolled back takes its entry along
        audit.append(s, actor="a", action="gone", entity="e")
        savepoint.rollback()
        assert a.seq is None  # numbered when the transaction commits
    assert (a.seq, b.seq, b.prev_hash) == (1, 2, a.hash)
    with pytest.raises(RuntimeError):
        with Session.begin() as s:
            audit.append(s, actor="a", action="z", entity="e")
            raise RuntimeError("the unit of work fails")
    with Session.begin() as s:  # the rolled-back entry left no trace and no gap in the chain
        c = audit.append(s, actor="a", action="w", entity="e")
    assert (c.chain_seq, c.prev_hash) == (3, b.hash)
    # (the rolled-back entries never reached the database: they took no log-wide number either)
    assert c.seq == 3
    assert check(Session).entries == 3


def test_the_postgresql_trigger_refuses_update_and_delete(db):
    engine, Session = db
    if engine.dialect.name != "postgresql":
        pytest.skip("the append-only trigger exists on PostgreSQL only (SQLite relies on verify)")
    seed(Session, 3)
    with pytest.raises(DBAPIError, match="append-only: UPDATE refused"):
        with engine.begin() as conn:
            conn.execute(update(LOG).where(LOG.c.seq == 2).values(actor="mallory"))
    with pytest.raises(DBAPIError, match="append-only: DELETE refused"):
        with engine.begin() as conn:
            conn.execute(delete(LOG).where(LOG.c.seq == 2))
    assert check(Session).entries == 3


ALTERATIONS = {
    "firm_id": "f2",
    "ts": T0 + dt.timedelta(seconds=2, microseconds=1),
    "actor": "mallory",
    "action": "override.clear_breach",
    "entity": "user",
    "entity_id": "999",
    "before": {"status": "active", "balance": "100000.01"},
    "after": None,
    "prev_hash": "f" * 64,
    "hash": "e" * 64,
}


@pytest.mark.parametrize("field", list(ALTERATIONS))
def test_altering_any_field_of_an_entry_is_caught_and_named(db, field):
    engine, Session = db
    seed(Session, 5)
    with attacker(engine) as conn:
        assert conn.execute(update(LOG).where(LOG.c.seq == 3).values({field: ALTERATIONS[field]})).rowcount == 1
    result = check(Session, page_size=2)
    assert not result.ok
    if field == "firm_id":  # moved to firm f2's chain: a hole in f1's, an entry f2's chain cannot own
        assert result.first_bad_seq == 4 and result.broken_firm == "f1" and result.entries == 2
        assert result.problem.startswith("#3 in the chain is missing: entry #4 (#4 in the chain) follows")
        assert result.problems[1].startswith("firm f2's chain: #1–#2 in the chain are missing")
        return
    assert result.first_bad_seq == 3 and result.entries == 2
    assert result.problem.startswith("entry #3 was altered")
    assert result.broken_firm == "f1" and result.problems == (f"firm f1's chain: {result.problem}",)


def test_a_subtle_money_edit_in_before_after_is_caught(db):
    engine, Session = db
    seed(Session, 3)
    with attacker(engine) as conn:  # one cent, written as the same kind of value
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(
            after={"status": "breached", "balance": "94998.015", "at": "2026-03-02T14:03:11.123456Z"}))
    result = check(Session)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_an_altered_entry_whose_hash_was_recomputed_is_named_by_the_broken_link(db):
    engine, Session = db
    seed(Session, 5)
    with Session() as s:
        row = s.execute(select(LOG).where(LOG.c.seq == 2)).one()
    forged = {f: getattr(row, f) for f in FIELDS} | {"actor": "mallory", "seq": row.chain_seq}
    with attacker(engine) as conn:
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(actor="mallory", hash=audit.entry_hash(**forged, v=2)))
    result = check(Session)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)
    assert "entry #2 was altered and its hash recomputed" in result.problem
    assert "entry #3 recorded the previous hash" in result.problem


@pytest.mark.parametrize(
    ("removed", "first_bad", "intact", "wording"),
    [  # first_bad: the entry after the hole (a removed entry's log-wide number is gone with it)
        ([3], 4, 2, "#3 in the chain is missing: entry #4 (#4 in the chain) follows entry #2 (#2)"),
        ([1], 2, 0, "#1 in the chain is missing: the chain starts at entry #2 (#2 in the chain)"),
        ([2, 3], 4, 1, "#2–#3 in the chain are missing: entry #4 (#4 in the chain) follows entry #1 (#1)"),
    ],
)
def test_deleting_entries_is_caught_and_the_first_missing_one_named(db, removed, first_bad, intact, wording):
    engine, Session = db
    seed(Session, 5)
    with attacker(engine) as conn:
        conn.execute(delete(LOG).where(LOG.c.seq.in_(removed)))
    result = check(Session)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, first_bad, intact)
    assert result.problem.startswith(wording)


def test_deleting_and_renumbering_to_hide_the_gap_is_caught(db):
    engine, Session = db
    seed(Session, 5)
    with attacker(engine) as conn:
        conn.execute(delete(LOG).where(LOG.c.seq == 2))
        for seq in (3, 4, 5):  # renumbered in the log and in the chain
            conn.execute(update(LOG).where(LOG.c.seq == seq).values(seq=seq - 1, chain_seq=seq - 1))
    result = check(Session)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "was altered" in result.problem and "moved" in result.problem


def test_reordering_entries_is_caught(db):
    engine, Session = db
    seed(Session, 5)
    with attacker(engine) as conn:  # swap #2 and #4 in the chain, through a free number
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(seq=1000, chain_seq=1000))
        conn.execute(update(LOG).where(LOG.c.seq == 4).values(seq=2, chain_seq=2))
        conn.execute(update(LOG).where(LOG.c.seq == 1000).values(seq=4, chain_seq=4))
    result = check(Session)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)
    with attacker(engine) as conn:  # put the chain back, then swap only their log-wide numbers (not hashed)
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(seq=1000, chain_seq=1000))
        conn.execute(update(LOG).where(LOG.c.seq == 4).values(seq=2, chain_seq=2))
        conn.execute(update(LOG).where(LOG.c.seq == 1000).values(seq=4, chain_seq=4))
    assert check(Session).ok
    with attacker(engine) as conn:
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(seq=1000))
        conn.execute(update(LOG).where(LOG.c.seq == 4).values(seq=2))
        conn.execute(update(LOG).where(LOG.c.seq == 1000).values(seq=4))
    result = check(Session)  # the order along the chain contradicts the log's numbering
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)
    assert result.problem.startswith("entry #3 was moved")


def test_only_the_first_of_several_tamperings_is_named(db):
    engine, Session = db
    seed(Session, 8)
    with attacker(engine) as conn:
        conn.execute(update(LOG).where(LOG.c.seq == 7).values(actor="mallory"))
        conn.execute(delete(LOG).where(LOG.c.seq == 5))
        conn.execute(update(LOG).where(LOG.c.seq == 3).values(entity_id="x"))
    result = check(Session, page_size=2)
    assert (result.first_bad_seq, result.entries) == (3, 2)
    with attacker(engine) as conn:  # put #3 back as it was: now the deletion is the first problem
        conn.execute(update(LOG).where(LOG.c.seq == 3).values(entity_id="102"))
    result = check(Session, page_size=2)
    assert (result.first_bad_seq, result.entries) == (6, 4)
    assert result.problem.startswith("#5 in the chain is missing")


def test_an_undecodable_stored_value_is_reported_not_crashed_on(db):
    engine, Session = db
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column types refuse undecodable values on write")
    seed(Session, 4)
    with attacker(engine) as conn:
        conn.execute(text("UPDATE audit_log SET ts = :ts WHERE seq = :seq"), {"ts": "not a time", "seq": 3})
    result = check(Session)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)
    assert "can no longer be read" in result.problem
    with attacker(engine) as conn:
        conn.execute(text("UPDATE audit_log SET ts = :ts, after = :after WHERE seq = :seq"),
                     {"ts": "2026-03-02 14:03:13.123456", "after": "{broken json", "seq": 3})
    assert check(Session).first_bad_seq == 3


def test_money_and_times_in_before_and_after_round_trip_exactly(db):
    engine, Session = db
    before = {"balance": Decimal("100000.00"), "equity": Decimal("0.1") + Decimal("0.2"),
              "floor": Decimal("1E+5"), "tiny": Decimal("-0.00000001")}
    after = {"balance": Decimal("94999.005"), "levels": (Decimal("95000"), Decimal("90000.50")),
             "at": dt.datetime(2026, 3, 2, 16, 3, 11, tzinfo=dt.timezone(dt.timedelta(hours=2))),
             "day": dt.date(2026, 3, 2), "nested": {"pct": Decimal("2.5"), "lots": 3, "ratio": 0.25}}
    with Session.begin() as s:
        audit.append(s, actor="engine", action="decision.breach", entity="account", entity_id="A1",
                     before=before, after=after, firm_id="f1", ts=T0)
    with Session() as s:
        entry = s.scalars(select(AuditEntry)).one()
        assert entry.before == {"balance": "100000.00", "equity": "0.3", "floor": "100000", "tiny": "-0.00000001"}
        assert entry.after == {"balance": "94999.005", "levels": ["95000", "90000.50"],
                               "at": "2026-03-02T14:03:11.000000Z", "day": "2026-03-02",
                               "nested": {"pct": "2.5", "lots": 3, "ratio": 0.25}}
        assert {k: Decimal(v) for k, v in entry.before.items()} == before
        assert Decimal(entry.after["balance"]) == Decimal("94999.005")
        assert entry.ts == T0
    assert check(Session).ok


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"x": float("nan")}, ValueError, "before.x"),
        ({"x": Decimal("NaN")}, ValueError, "finite"),
        ({"at": dt.datetime(2026, 3, 2)}, ValueError, "timezone-aware"),
        ({"tags": {"a", "b"}}, TypeError, "set"),
        ({1: "a"}, TypeError, "keys must be text"),
    ],
)
def test_values_that_cannot_be_recorded_exactly_are_refused_and_nothing_is_appended(db, value, error, message):
    engine, Session = db
    with pytest.raises(error, match=message):
        with Session.begin() as s:
            audit.append(s, actor="a", action="x", entity="e", before=value)
    with pytest.raises(ValueError, match="timezone-aware"):
        with Session.begin() as s:
            audit.append(s, actor="a", action="x", entity="e", ts=dt.datetime(2026, 3, 2))
    assert check(Session).entries == 0


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROPCRM_DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "propcrm.cli", "audit", "verify", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_cli_reports_an_intact_log_and_names_the_first_broken_entry(db, db_url):
    engine, Session = db
    result = run_cli(db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "audit log intact: 0 entries"
    entries = seed(Session, 3)
    result = run_cli(db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["audit log intact: 3 entries",
                                              f"firm f1's chain: 3 entries, head hash {entries[-1].hash}"]
    assert result.stdout.splitlines()[2].startswith("NOT keyed: no audit key is configured")  # test_audit_anchors.py
    with attacker(engine) as conn:
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(actor="mallory"))
    result = run_cli(db_url)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("audit log broken at entry #2: entry #2 was altered")
    # --database-url wins over the environment
    overridden = subprocess.run(
        [sys.executable, "-m", "propcrm.cli", "audit", "verify", "--database-url", db_url],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PROPCRM_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"},
    )
    assert overridden.returncode == 1 and "entry #2" in overridden.stdout


def test_the_cli_reports_an_unreachable_database_without_a_traceback(tmp_path):
    result = run_cli(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    assert result.returncode == 2
    assert "cannot read the audit log" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("per_transaction", [1, 5])
def test_concurrent_writers_keep_the_chain_linear(db, per_transaction):
    engine, Session = db
    with Session.begin() as s:  # writers also do other work in their transactions
        audit.append(s, actor="setup", action="start", entity="test")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for start in range(0, 50, per_transaction):
                with Session.begin() as s:
                    s.execute(select(LOG.c.seq).limit(1)).all()  # a read before the append
                    for i in range(start, start + per_transaction):
                        audit.append(s, actor=name, action="tick", entity="counter", entity_id=str(i),
                                     after={"n": Decimal(i)})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    result = check(Session, page_size=7)
    assert result.ok and result.entries == 101, result.problem
    with Session() as s:
        rows = s.execute(select(LOG.c.actor, LOG.c.entity_id).order_by(LOG.c.seq)).all()
    for name in ("w1", "w2"):  # each writer's entries, in its own order, all there
        assert [int(r.entity_id) for r in rows if r.actor == name] == list(range(50))
