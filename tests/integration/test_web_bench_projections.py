"""``propcrm bench web`` builds its big firm's projections beside the engine and bulk-inserts them
(:class:`propcrm.tools.bench_web._Projections`): here they are held equal to what the evaluation worker
writes from the same stored events (SQLite; the rows compared without their ids)."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from sqlalchemy import delete, select, update

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.services.evaluation import EvaluationWorker
from propcrm.tools.bench_web import build

TABLES = {
    "trades": ("account_id", "position", "symbol", "side", "lots", "open_ts", "open_price", "open_event_id", "order_ts",
               "as_sent", "closed_lots", "close_ts", "close_price", "profit", "commission", "swap", "net", "closes",
               "held_s", "status"),
    "trade_closes": ("account_id", "event_id", "event_seq", "ts", "lots", "price", "profit", "commission", "swap", "net",
                     "reason", "as_sent"),
    "account_activity": ("account_id", "kind", "ts", "ip", "device"),
    "equity_points": ("account_id", "minute", "ts", "equity", "balance", "daily_floor", "max_loss", "decisions"),
}


def _rows(session) -> dict[str, list[tuple]]:
    out = {}
    for name, columns in TABLES.items():
        table = m.Base.metadata.tables[name]
        rows = session.execute(select(*(table.c[c] for c in columns))).all()
        out[name] = sorted((tuple(Decimal(v).normalize() if isinstance(v, Decimal) else v for v in row) for row in rows),
                           key=repr)
    return out


def test_the_bench_projections_are_what_the_worker_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    report = build(url, n_accounts=12, n_events=12 * 40, console=Console(quiet=True))
    assert report["events"] == 480
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            built = _rows(s)
        assert len(built["trades"]) == 12 * 10 and len(built["trade_closes"]) == 12 * 10
        assert len(built["account_activity"]) == 12 * 20 and len(built["equity_points"]) == 480
        assert any(row[-1] for row in built["equity_points"])  # decisions are on their points
        # the same stored events, evaluated again by the worker from nothing
        with sessions(engine).begin() as s:
            for name in ("trade_closes", "trades", "account_activity", "equity_points", "decisions", "account_states"):
                s.execute(delete(m.Base.metadata.tables[name]))
            s.execute(update(m.RawEvent).values(status="pending"))
            s.execute(update(m.Account).values(status="active"))
        EvaluationWorker(sessions(engine)).run_until_idle(firm_id="bench")
        with sessions(engine)() as s:
            assert s.scalar(select(m.RawEvent.seq).where(m.RawEvent.status != "applied").limit(1)) is None
            again = _rows(s)
    finally:
        engine.dispose()
    for name in TABLES:
        assert again[name] == built[name], name
