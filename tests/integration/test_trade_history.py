"""The trade-history projection: written by the one outcome write path in both deployments (the embedded
worker and the partitioned workers), in the decisions' transaction, and rebuilt the same by the backfill."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cluster.partition import PartitionStore
from propcrm.domain.events import DECODER, TradeClosed, TradeOpened
from propcrm.services import trades
from propcrm.services.evaluation import EvaluationWorker
from propcrm.synth.firm import FirmSpec, generate
from propcrm.tools.bench_service import seed as _seed

from integration.test_evaluation_worker import FIRM, _load
from integration.test_partition_store import P, _messages

SPEC = FirmSpec(accounts=12, days=3, seed=5, equity_every_s=900)


def _expected(lines: list[bytes]) -> dict[tuple[str, str], dict]:
    """Straight from the events: per (account, position) its open side and the sums of its closes."""
    out: dict[tuple[str, str], dict] = {}
    for line in lines:
        ev = DECODER.decode(line)
        if isinstance(ev, TradeOpened):
            out[(ev.account, ev.position)] = {"symbol": ev.symbol, "side": ev.side, "lots": ev.lots, "open_ts": ev.ts,
                                              "closed_lots": Decimal(0), "net": Decimal(0), "closes": 0}
        elif isinstance(ev, TradeClosed):
            row = out.setdefault((ev.account, ev.position), {"symbol": None, "side": None, "lots": None,
                                                             "open_ts": None, "closed_lots": Decimal(0),
                                                             "net": Decimal(0), "closes": 0})
            row["closed_lots"] += ev.lots
            row["net"] += ev.profit + ev.commission + ev.swap
            row["closes"] += 1
    return out


def _stored(Session) -> dict[tuple[str, str], dict]:
    with Session() as s:
        rows = s.execute(select(m.Account.external_id, m.Trade).join(m.Account, m.Account.id == m.Trade.account_id))
        out = {}
        for external_id, t in rows:
            assert (external_id, t.position) not in out, "one row per position"
            out[(external_id, t.position)] = {"symbol": t.symbol, "side": t.side, "lots": t.lots, "open_ts": t.open_ts,
                                              "closed_lots": t.closed_lots, "net": t.net, "closes": t.closes}
            assert t.net == t.profit + t.commission + t.swap
            assert t.status == ("closed" if t.lots is not None and t.closed_lots >= t.lots else "open")
        closes = defaultdict(int)
        for trade_id, in s.execute(select(m.TradeClose.trade_id)):
            closes[trade_id] += 1
        for t in s.scalars(select(m.Trade)):
            assert closes[t.id] == t.closes
    return out


def _expected_activity(lines: list[bytes]) -> list[tuple]:
    """Each trade and login event as the account activity should hold it (account, kind, time, network, device)."""
    from propcrm.analytics.frame import network_of
    from propcrm.domain.events import Session as Login

    out = []
    for line in lines:
        ev = DECODER.decode(line)
        kind = {TradeOpened: "opened", TradeClosed: "closed", Login: "session"}.get(type(ev))
        if kind is not None:
            ip = getattr(ev, "ip", None)
            out.append((ev.account, kind, ev.ts, network_of(ip) if ip else None, getattr(ev, "device", None) or None))
    return sorted(out)


def _activity(Session) -> list[tuple]:
    with Session() as s:
        rows = s.execute(select(m.Account.external_id, m.AccountActivity.kind, m.AccountActivity.ts,
                                m.AccountActivity.ip, m.AccountActivity.device)
                         .join(m.Account, m.Account.id == m.AccountActivity.account_id))
        return sorted(tuple(row) for row in rows)


def test_the_embedded_worker_projects_every_trade_and_the_backfill_rebuilds_the_same(db_url):
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    Session = sessions(make_engine(db_url))
    _load(Session, lines)
    EvaluationWorker(Session, batch=150).run_until_idle()  # many batches: positions close in a later one
    expected = _expected(lines)
    assert any(row["closes"] for row in expected.values()), "the synthetic firm should close trades"
    assert _stored(Session) == expected
    activity = _expected_activity(lines)
    assert any(kind == "session" for _, kind, *_ in activity) and any(ip for *_, ip, _ in activity)
    assert _activity(Session) == activity
    with Session.begin() as s:
        report = trades.backfill(s, firm_id=FIRM)
    assert report.events == sum(1 for x in lines if b'"trade_' in x)
    assert _stored(Session) == expected
    assert _activity(Session) == activity


def test_the_partitioned_workers_project_the_same_trades(db_url):
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    Session = sessions(make_engine(db_url))
    store = PartitionStore(Session, "S", P, "w1", snapshot_interval_s=0)
    for p, messages in _messages(lines).items():
        run = store.take(p)
        for i in range(0, len(messages), 4):
            result = store.apply([(run, messages[i:i + 4])])
            assert not result.failed, result.error
    assert _stored(Session) == _expected(lines)
    assert _activity(Session) == _expected_activity(lines)


def _event(Session, account_id: int, seq: int, line: str) -> None:
    with Session.begin() as s:
        ev = DECODER.decode(line)
        s.add(m.RawEvent(firm_id=FIRM, source="mt5", event_id=ev.id, account_id=account_id,
                         type=type(ev).__struct_config__.tag, ts=ev.ts, body=line.encode(), status="pending"))


def test_partial_closes_costs_and_a_position_opened_before_propcrm_saw_the_account(db_url):
    opened = ('{"id":"o1","type":"trade_opened","account":"A1","ts":"2026-03-02T09:00:00Z","position":"p1",'
              '"symbol":"EURUSD","side":"buy","lots":"2","price":"1.08000"}')
    _load(sessions(make_engine(db_url)), [opened.encode()])
    Session = sessions(make_engine(db_url))
    worker = EvaluationWorker(Session)
    worker.run_until_idle()
    with Session() as s:
        account_id = s.scalar(select(m.Account.id).where(m.Account.external_id == "A1"))
        (trade,) = s.scalars(select(m.Trade)).all()
        assert (trade.status, trade.lots, trade.closed_lots, trade.symbol) == ("open", Decimal(2), Decimal(0), "EURUSD")
    for line in (
        '{"id":"c1","type":"trade_closed","account":"A1","ts":"2026-03-02T10:00:00Z","position":"p1","lots":"0.5",'
        '"price":"1.08100","profit":"50","commission":"-3.5","swap":"0"}',
        '{"id":"c2","type":"trade_closed","account":"A1","ts":"2026-03-02T11:30:00Z","position":"p1","lots":"1.5",'
        '"price":"1.08200","profit":"300","commission":"-10.5","swap":"-1.25"}',
        '{"id":"c3","type":"trade_closed","account":"A1","ts":"2026-03-02T12:00:00Z","position":"old","lots":"1",'
        '"price":"1.2","profit":"-20"}',
    ):
        _event(Session, account_id, 0, line)
    worker.run_until_idle()
    with Session() as s:
        rows = {t.position: t for t in s.scalars(select(m.Trade))}
        p1 = rows["p1"]
        assert (p1.status, p1.closed_lots, p1.closes) == ("closed", Decimal(2), 2)
        assert p1.close_price == Decimal("1.08175")  # (0.5 * 1.081 + 1.5 * 1.082) / 2
        assert (p1.profit, p1.commission, p1.swap, p1.net) == (Decimal(350), Decimal("-14"), Decimal("-1.25"),
                                                               Decimal("334.75"))
        assert p1.held_s == 2 * 3600 + 30 * 60
        old = rows["old"]
        assert (old.status, old.symbol, old.open_ts, old.net) == ("closed", None, None, Decimal(-20))
        closes = s.scalars(select(m.TradeClose).order_by(m.TradeClose.ts)).all()
        assert [(c.event_id, c.lots, c.net) for c in closes] == [
            ("c1", Decimal("0.5"), Decimal("46.5")), ("c2", Decimal("1.5"), Decimal("288.25")),
            ("c3", Decimal(1), Decimal(-20))]
        assert all(c.event_seq for c in closes)


def test_the_backfill_command_rebuilds_the_history_of_every_firm(db_url):
    from typer.testing import CliRunner

    from propcrm.cli.main import app

    lines = [x.rstrip(b"\n") for x in generate(FirmSpec(accounts=4, days=2, seed=3))]
    Session = sessions(make_engine(db_url))
    _load(Session, lines)
    EvaluationWorker(Session).run_until_idle()
    before = _stored(Session)
    charts = _charts(Session)  # the chart points the worker wrote
    assert sum(len(points) for points in charts.values()) > 0
    with Session.begin() as s:  # a database evaluated before the projections existed
        s.execute(m.TradeClose.__table__.delete())
        s.execute(m.Trade.__table__.delete())
        s.execute(m.EquityPoint.__table__.delete())
    result = CliRunner().invoke(app, ["trades", "backfill", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "rebuilt the trade history of 4 accounts" in result.output
    assert _stored(Session) == before == _expected(lines)
    # the replay of the log gives the points the worker wrote (the same events, the same rule)
    assert _charts(Session) == charts


def _charts(Session) -> dict[int, list[dict]]:
    from propcrm.services import equity_points

    with Session() as s:
        return {a.id: equity_points.read(s, firm_id=a.firm_id, account_id=a.id)
                for a in s.scalars(select(m.Account).order_by(m.Account.id))}
