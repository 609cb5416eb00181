"""The evaluation's group commit at the driver (``adapters/db/bulk.py``, issue 14) against SQLAlchemy's
executemany: the same synthetic firm (trades opened and closed, equity, clocks, news, ticks), ingested
request by request into two SQLite databases, one evaluated with the driver-level writes and one without,
leaves exactly the same rows — values and SQLite storage types — in every table the worker writes:
states and their figures, decisions, equity points, trades and closes, activity, events' statuses,
outbox and audit (only the wall-clock columns of the writes differ)."""

from __future__ import annotations

import sqlite3

import pytest

from propcrm.adapters.db import bulk
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest
from propcrm.synth.firm import FirmSpec, generate
from propcrm.tools.bench_service import seed

TABLES = ("account_states", "decisions", "equity_points", "trades", "trade_closes", "account_activity",
          "raw_events", "outbox", "audit_log", "accounts", "quarantine")
#: when a row was written (the clock of the run), not what was evaluated
WALL_CLOCK = {"created_at", "updated_at", "next_attempt_at", "received_at"}


def _run(tmp_path, name: str, fast: bool, monkeypatch) -> dict[str, list[tuple]]:
    monkeypatch.setattr(bulk, "ENABLED", fast)
    url = f"sqlite:///{tmp_path / name}.db"
    spec = FirmSpec(accounts=24, days=2, seed=11, equity_every_s=600, prices=True, account_prefix="T")
    seed(url, [spec])
    engine = make_engine(url)
    factory = sessions(engine)
    worker = EvaluationWorker(factory)
    lines = list(generate(spec))
    for start in range(0, len(lines), 400):
        with factory.begin() as session:
            ingest(session, firm_id="bench", source="bench", body=b"".join(lines[start : start + 400]))
        worker.run_pass()
    worker.run_until_idle()
    engine.dispose()
    dump: dict[str, list[tuple]] = {}
    with sqlite3.connect(tmp_path / f"{name}.db") as db:
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in TABLES:
            if table not in present:
                continue
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})") if row[1] not in WALL_CLOCK]
            listed = ", ".join(f"typeof({c}), {c}" for c in columns)
            dump[table] = db.execute(f"SELECT {listed} FROM {table} ORDER BY rowid").fetchall()
    return dump


def test_driver_level_writes_store_exactly_what_sqlalchemy_stores(tmp_path, monkeypatch):
    fast = _run(tmp_path, "fast", True, monkeypatch)
    reference = _run(tmp_path, "reference", False, monkeypatch)
    assert set(fast) == set(reference)
    for table in ("decisions", "equity_points", "trades", "trade_closes", "account_activity", "account_states"):
        assert reference[table], f"the workload wrote no {table}: the comparison would say nothing"
    for table in reference:
        assert fast[table] == reference[table], table


@pytest.mark.parametrize("fast", [True, False])
def test_the_driver_level_path_is_taken_only_when_enabled(tmp_path, monkeypatch, fast):
    monkeypatch.setattr(bulk, "ENABLED", fast)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with sessions(engine).begin() as session:
        assert bulk.applies(session) is fast
    engine.dispose()


@pytest.mark.parametrize("fast", [True, False])
def test_a_value_its_type_refuses_fails_as_it_did(tmp_path, monkeypatch, fast):
    """A refused value (here a float for money) raises SQLAlchemy's ``StatementError`` with the same words
    on both paths: the worker's isolation sets the account aside with the reason it always gave."""
    from decimal import Decimal

    from sqlalchemy import Column, Integer, MetaData, Table, insert
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.orm import Session

    from propcrm.adapters.db.models import Money

    monkeypatch.setattr(bulk, "ENABLED", fast)
    engine = make_engine(f"sqlite:///{tmp_path / 'money.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("amount", Money))
    table.metadata.create_all(engine)
    statement = insert(table)
    with Session(engine) as session, session.begin():
        bulk.executemany(session, statement, [{"amount": Decimal("1.50")}])
        with pytest.raises(sa_exc.StatementError, match="money must be a Decimal, got float"):
            bulk.executemany(session, statement, [{"amount": Decimal("2")}, {"amount": 2.5}])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT typeof(amount), amount FROM t").all() == [("text", "1.50")]
    engine.dispose()
