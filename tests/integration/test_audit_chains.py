"""The audit log's per-firm chains (issue 14), on both backends: two firms append without waiting on each
other (PostgreSQL); a tampered entry is reported as its firm's and the other firms verify clean; anchors
record every chain's tail; entries and anchors written before migration 0027 still verify exactly."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time

import pytest
from alembic import command
from sqlalchemy import delete, select, text, update
from typer.testing import CliRunner

from propcrm.adapters.db.models import AuditEntry
from propcrm.adapters.db.session import alembic_config, make_engine, sessions
from propcrm.cli import app
from propcrm.services import audit, audit_anchors
from support.tamper import attacker

UTC = dt.timezone.utc
KEY = "k" * 8 + "-a-test-audit-key-of-enough-length-0123456789"
LOG = AuditEntry.__table__
T0 = dt.datetime(2026, 3, 2, 14, 3, 11, 123456, tzinfo=UTC)


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    yield engine, sessions(engine)
    engine.dispose()


@pytest.fixture
def keyed(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv(audit_anchors.KEY_ENV, KEY)
    monkeypatch.setenv(audit_anchors.DIR_ENV, str(tmp_path / "anchors"))
    audit_anchors.forget_configuration()
    engine = make_engine(db_url)
    yield engine, sessions(engine), tmp_path / "anchors"
    engine.dispose()
    audit_anchors.forget_configuration()



def append(Session, firm_id, n: int = 1, start: int = 0) -> None:
    for i in range(start, start + n):
        with Session.begin() as s:
            audit.append(s, actor="user:1", action="account.status", entity="account", entity_id=str(i),
                         after={"n": i}, firm_id=firm_id)


def test_two_firms_append_concurrently_without_waiting_on_each_other(db):
    engine, Session = db
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer per database by design")
    append(Session, "fa")
    append(Session, "fb")
    holder = Session()
    holder.begin()
    audit.append(holder, actor="slow", action="x", entity="e", firm_id="fa")
    audit._lock_tail(holder, ["fa"])  # as its commit does: fa's chain locked until the commit ends
    done: dict[str, float] = {}

    def other(firm_id: str) -> None:
        started = time.monotonic()
        with Session.begin() as s:
            audit.append(s, actor="other", action="y", entity="e", firm_id=firm_id)
        done[firm_id] = time.monotonic() - started

    try:
        fb = threading.Thread(target=other, args=("fb",))
        fb.start()
        fb.join(timeout=10)
        assert "fb" in done and done["fb"] < 5, "firm fb's append waited on firm fa's open transaction"
        fa = threading.Thread(target=other, args=("fa",))  # the same firm does wait: the lock is real
        fa.start()
        fa.join(timeout=1.0)
        assert "fa" not in done
        holder.commit()
        fa.join(timeout=10)
        assert "fa" in done
    finally:
        holder.close()
    with Session() as s:
        result = audit.verify(s)
        rows = s.execute(select(LOG.c.firm_id, LOG.c.chain_seq, LOG.c.actor).order_by(LOG.c.seq)).all()
    assert result.ok and result.entries == 5, result.problem
    assert [(r.firm_id, r.chain_seq) for r in rows if r.firm_id == "fa"] == [("fa", 1), ("fa", 2), ("fa", 3)]
    assert [r.actor for r in rows if r.firm_id == "fa"] == ["user:1", "slow", "other"]


def test_transactions_appending_to_two_chains_in_opposite_orders_never_deadlock(db):
    """One transaction appends for firm fa, then (a separate call) for fb; another does fb, then fa. Both
    hold their first append while the other makes its second: with a lock per append this is a deadlock
    (PostgreSQL aborts one); with the chains locked together at the commit, in one order, both complete."""
    engine, Session = db
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer per database: no two transactions hold chain locks at once")
    both_appended_once = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def writer(first: str, second: str) -> None:
        try:
            with Session.begin() as s:
                audit.append(s, actor="w", action="first", entity="e", firm_id=first)
                both_appended_once.wait()  # each holds whatever its first append took
                audit.append(s, actor="w", action="second", entity="e", firm_id=second)
                audit.append(s, actor="w", action="operators", entity="e")  # and a third chain
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            both_appended_once.abort()

    threads = [threading.Thread(target=writer, args=pair) for pair in (("fa", "fb"), ("fb", "fa"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    with Session() as s:
        result = audit.verify(s)
        rows = s.execute(select(LOG.c.firm_id, LOG.c.action)).all()
    assert result.ok and result.entries == 6, result.problem
    assert sorted((r.firm_id or "", r.action) for r in rows) == [
        ("", "operators"), ("", "operators"), ("fa", "first"), ("fa", "second"), ("fb", "first"), ("fb", "second")]


def test_append_many_chains_each_firm_in_the_order_given(db):
    engine, Session = db
    append(Session, "fa", 2)
    with Session.begin() as s:
        entries = audit.append_many(s, [dict(actor="w", action="a", entity="e", entity_id=str(i), firm_id=firm)
                                        for i, firm in enumerate(["fb", "fa", None, "fb", "fa"])])
    seqs = [entry.seq for entry in entries]  # numbered by the commit
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    with Session() as s:
        rows = s.execute(select(LOG.c.firm_id, LOG.c.chain_seq, LOG.c.entity_id).where(LOG.c.seq.in_(seqs))
                         .order_by(LOG.c.seq)).all()
        result = audit.verify(s)
    assert [(r.firm_id, r.chain_seq) for r in rows] == [("fb", 1), ("fa", 3), (None, 1), ("fb", 2), ("fa", 4)]
    assert result.ok and result.entries == 7 and set(result.heads) == {None, "fa", "fb"}


def test_a_tampered_entry_is_reported_as_its_firms_and_the_other_firm_verifies_clean(db):
    engine, Session = db
    for i in range(4):
        append(Session, "fa", start=i)
        append(Session, "fb", start=i)
    append(Session, None)
    with Session() as s:
        target = s.execute(select(LOG.c.seq).where(LOG.c.firm_id == "fa", LOG.c.chain_seq == 3)).scalar()
    with attacker(engine) as conn:
        conn.execute(update(LOG).where(LOG.c.seq == target).values(actor="mallory"))
    with Session() as s:
        result = audit.verify(s)
    assert not result.ok and result.first_bad_seq == target
    assert result.broken_firm == "fa" and result.broken_chain == "firm fa's chain"
    assert result.problems == (f"firm fa's chain: entry #{target} was altered: " + result.problem.split(": ", 1)[1],)
    assert result.entries == 2 + 4 + 1  # fa's intact prefix, all of fb's and the operators'
    assert result.heads["fb"][0] == 4 and result.heads["fa"][0] == 2
    out = CliRunner().invoke(app, ["audit", "verify", "--database-url", str(engine.url.render_as_string(False))])
    assert out.exit_code == 1 and f"firm fa's chain: entry #{target} was altered" in out.output
    assert "firm fb's chain" not in out.output


def test_anchors_record_every_chains_tail_and_catch_one_chain_truncated(keyed, db_url):
    engine, Session, directory = keyed
    append(Session, "fa", 3)
    append(Session, "fb", 2)
    append(Session, None, 1)
    with sessions(engine, readonly=True)() as s:
        written = audit_anchors.write_anchor(s, audit_anchors.config_for(db_url)).written
    assert {firm: tail[0] for firm, tail in written.chains.items()} == {"fa": 3, "fb": 2, None: 1}
    [line] = [json.loads(raw) for raw in next(directory.glob("anchors-*.ndjson")).read_text().splitlines()]
    assert [chain[:2] for chain in line["chains"]] == [[None, 1], ["fa", 3], ["fb", 2]]
    append(Session, "fa", 1, start=3)  # only fa grew: the next anchor still records every chain
    with sessions(engine, readonly=True)() as s:
        again = audit_anchors.write_anchor(s, audit_anchors.config_for(db_url)).written
    assert {firm: tail[0] for firm, tail in again.chains.items()} == {"fa": 4, "fb": 2, None: 1}
    with attacker(engine) as conn:  # fb's newest entry removed: its chain alone still links
        conn.execute(delete(LOG).where(LOG.c.firm_id == "fb", LOG.c.chain_seq == 2))
    with Session() as s:
        assert audit.verify(s, key=KEY.encode()).ok
        check = audit_anchors.check_anchors(s, audit_anchors.config_for(db_url))
    assert not check.ok and len(check.problems) == 1
    assert check.problems[0].startswith("firm fb's chain: #2 in the chain is missing")


def _legacy_rows(n: int, key: bytes) -> list[dict]:
    """Entries as the code before migration 0027 wrote them: one global chain, format 1, ``seq`` hashed."""
    rows, prev = [], audit.GENESIS
    for seq in range(1, n + 1):
        fields = dict(seq=seq, firm_id=["fa", "fb", None][seq % 3], ts=T0 + dt.timedelta(seconds=seq),
                      actor="user:1", action="account.status", entity="account", entity_id=str(seq),
                      before=None, after={"n": seq}, prev_hash=prev)
        prev = audit.entry_hash(**fields)
        rows.append({**fields, "hash": prev, "mac": audit.entry_mac(key, prev)})
    return rows


def test_entries_and_anchors_from_before_migration_0027_verify_exactly_after_it(keyed, db_url):
    engine, Session, directory = keyed
    config = audit_anchors.config_for(db_url)
    command.downgrade(alembic_config(db_url), "0024")
    with engine.begin() as conn:  # the log as it stood, with a format-1 anchor line on its 5th entry
        conn.execute(LOG.delete())
        rows = _legacy_rows(6, KEY.encode())
        conn.execute(text("INSERT INTO audit_log (seq, firm_id, ts, actor, action, entity, entity_id, before, after, "
                          "prev_hash, hash, mac) VALUES (:seq, :firm_id, :ts, :actor, :action, :entity, :entity_id, "
                          ":before, :after, :prev_hash, :hash, :mac)"),
                     [{**r, "before": None, "after": json.dumps(r["after"])} for r in rows])
    record = {"v": 1, "seq": 5, "hash": rows[4]["hash"], "anchored_at": "2026-03-02T15:00:00.000000Z",
              "key_id": config.key_id, "writer": "old/1"}
    record["mac"] = hmac.new(KEY.encode(), audit.canonical_json(record), hashlib.sha256).hexdigest()
    directory.mkdir(parents=True)
    (directory / "anchors-2026-03-02.ndjson").write_text(json.dumps(record) + "\n")
    engine.dispose()
    command.upgrade(alembic_config(db_url), "head")
    with Session() as s:
        assert s.execute(select(LOG.c.hash).order_by(LOG.c.seq)).scalars().all() == [r["hash"] for r in rows]
        result = audit.verify(s, key=KEY.encode())
        assert result.ok and result.entries == 6 and result.legacy_head == (6, rows[-1]["hash"])
        assert audit_anchors.check_anchors(s, config).ok
    append(Session, "fa", 2)  # new entries: firm chains from genesis, numbered after the old ones
    with Session() as s:
        new = s.execute(select(LOG.c.seq, LOG.c.chain_seq).where(LOG.c.chain_seq.is_not(None))
                        .order_by(LOG.c.seq)).all()
        assert [r.chain_seq for r in new] == [1, 2] and new[0].seq > 6
        assert audit.verify(s, key=KEY.encode()).ok
    with sessions(engine, readonly=True)() as s:  # the next anchor starts from the format-1 one
        written = audit_anchors.write_anchor(s, config).written
    assert (written.seq, written.hash) == (6, rows[-1]["hash"]) and written.chains["fa"][0] == 2
    out = CliRunner().invoke(app, ["audit", "verify", "--database-url", db_url])
    assert out.exit_code == 0, out.output
    assert "2 anchor(s)" in out.output and "pre-upgrade chain: head entry #6" in out.output
    with attacker(engine) as conn:  # an old entry rewritten is reported as the pre-upgrade chain's
        conn.execute(update(LOG).where(LOG.c.seq == 3).values(actor="mallory"))
    with Session() as s:
        result = audit.verify(s, key=KEY.encode())
    assert (result.ok, result.first_bad_seq, result.broken_chain) == (False, 3, "the pre-upgrade chain")
    assert result.heads["fa"][0] == 2  # the new chains still verify
