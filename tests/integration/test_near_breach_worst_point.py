"""Near-breach alerts see the worst point of an evaluation batch, not only the state it ends with (issue 16):
a dip into the firm's distance and a recovery inside one batch alert once, naming the dip's equity, level and
time — through the embedded worker and through the partitioned workers (exact and vector tick paths); a dip
that stays outside the distance alerts nothing; an account alerts at most once per limit and trading day."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from propcrm.adapters.bus.partitions import split_into_messages
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import NearBreachAlert
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cluster.partition import PartitionStore, StreamMessage
from propcrm.domain.events import DECODER
from propcrm.services import near_breach
from propcrm.synth.firm import FirmSpec, traders
from propcrm.tools.bench_service import seed as bench_seed
from support.staff import build_world, seed

pytestmark = pytest.mark.usefixtures("cheap_argon2")
UTC = dt.timezone.utc


def equity(eid, account, ts, value, balance="100000"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


def stored_alerts(sessions_) -> list[tuple]:
    with sessions_() as s:
        rows = s.execute(select(m.Account.external_id, NearBreachAlert.limit_rule, NearBreachAlert.trading_day,
                                NearBreachAlert.equity, NearBreachAlert.level, NearBreachAlert.distance,
                                NearBreachAlert.reached_at)
                         .join(m.Account, m.Account.id == NearBreachAlert.account_id).order_by(NearBreachAlert.id))
        return [(a, rule, day.isoformat(), format(eq.normalize(), "f"), format(level.normalize(), "f"),
                 format(dist.normalize(), "f"), at.astimezone(UTC).isoformat() if at else None)
                for a, rule, day, eq, level, dist, at in rows]


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        with world.sessions.begin() as s:
            near_breach.update_settings(s, firm_id="fa", within_pct=None, within_amount="1000", actor="test")
        yield world


def test_a_dip_and_a_recovery_inside_one_batch_alert_once_naming_the_dip(world):
    # one batch: A1 (daily floor 95,000) dips to 700 above it at 10:30 and recovers to 3,000 above by the end
    world.ingest(equity("e1", "A1", "2026-03-02T10:00:00Z", "98000"), equity("e2", "A1", "2026-03-02T10:30:00Z", "95900"),
                 equity("e3", "A1", "2026-03-02T10:31:00Z", "95700"), equity("e4", "A1", "2026-03-02T11:00:00Z", "98000"))
    world.evaluate()
    assert stored_alerts(world.sessions) == [
        ("A1", "daily_loss", "2026-03-02", "95700", "95000", "700", "2026-03-02T10:31:00+00:00")]
    [entry] = world.audit("near_breach.alert")
    assert entry.after["reached_at"] == "2026-03-02T10:31:00+00:00" and entry.after["equity"] == "95700"
    # a deeper dip the same day, in a later batch: still the one alert for this limit and day
    world.ingest(equity("e5", "A1", "2026-03-02T12:00:00Z", "95200"), equity("e6", "A1", "2026-03-02T12:01:00Z", "98000"))
    world.evaluate()
    assert len(stored_alerts(world.sessions)) == 1
    # the next day is a new day; a dip that stays outside the distance (1,100 above the floor) alerts nothing
    world.ingest(equity("e7", "A1", "2026-03-03T10:00:00Z", "96100"), equity("e8", "A1", "2026-03-03T10:05:00Z", "98000"))
    world.evaluate()
    assert len(stored_alerts(world.sessions)) == 1


# ---------------------------------------------------------------------------------------------- partitions
SPEC = FirmSpec(accounts=6, days=1, seed=5, equity_every_s=900)
P = 2


def _messages(lines: list[bytes], first_seq: int = 0) -> dict[int, list[StreamMessage]]:
    out: dict[int, list[StreamMessage]] = {p: [] for p in range(P)}
    seq = first_seq
    chunk = [(getattr(DECODER.decode(x), "account", None), x) for x in lines]
    for message in split_into_messages("bench", "bench", chunk, P):
        seq += 1
        out[message.partition].append(StreamMessage(message.partition, seq, {
            "Propcrm-Firm": "bench", "Propcrm-Source": "bench", "Propcrm-Count": str(message.count)}, message.body))
    return out


def _line(account: str, eid: str, ts: str, value: str) -> bytes:
    return (f'{{"id":"{eid}","type":"equity","account":"{account}","ts":"{ts}","equity":"{value}",'
            f'"balance":"100000"}}').encode()


@pytest.mark.parametrize("vector", [False, True], ids=["exact", "vector"])
def test_the_partitioned_workers_alert_on_the_worst_point_of_a_batch(db_url, vector):
    bench_seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    from propcrm.domain.market import parse_symbol_table
    from propcrm.services.symbols import set_table

    with Session.begin() as s:
        near_breach.update_settings(s, firm_id="bench", within_pct="1", within_amount=None, actor="test")
        set_table(s, firm_id="bench", actor="test", table=parse_symbol_table(
            [{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"}]))
    dip, outside, ticked = (t.account for t in traders(SPEC)[:3])
    lines = [
        # within 1 % of equity: 95,700 is 700 (0.73 %) above the daily floor 95,000; it recovers in the batch
        _line(dip, "d1", "2026-03-02T10:00:00Z", "98000"), _line(dip, "d2", "2026-03-02T10:30:00Z", "95700"),
        _line(dip, "d3", "2026-03-02T11:00:00Z", "99000"),
        # 96,100 is 1,100 (1.14 %) above it: outside
        _line(outside, "o1", "2026-03-02T10:00:00Z", "98000"), _line(outside, "o2", "2026-03-02T10:30:00Z", "96100"),
        _line(outside, "o3", "2026-03-02T11:00:00Z", "99000"),
        # a position marked by ticks: 10 lots lose 4,500 at bid 1.09550 and win it back at the next tick
        b'{"id":"p1","type":"price","ts":"2026-03-02T09:00:00Z","symbol":"EURUSD","bid":"1.10000","ask":"1.10000"}',
        (b'{"id":"t1","type":"trade_opened","account":"%s","ts":"2026-03-02T09:00:01Z","position":"q1",'
         b'"symbol":"EURUSD","side":"buy","lots":"10","price":"1.10000"}' % ticked.encode()),
        b'{"id":"p2","type":"price","ts":"2026-03-02T09:00:02Z","symbol":"EURUSD","bid":"1.09550","ask":"1.09550"}',
        b'{"id":"p3","type":"price","ts":"2026-03-02T09:00:03Z","symbol":"EURUSD","bid":"1.09900","ask":"1.09900"}',
    ]
    stream = _messages(lines)
    store = PartitionStore(Session, "S", P, "w", snapshot_interval_s=0, vector=vector)
    for p in range(P):
        run = store.take(p)
        result = store.apply([(run, stream[p])])
        assert not result.failed, result.error
    found = stored_alerts(Session)
    assert sorted(found) == sorted([
        (dip, "daily_loss", "2026-03-02", "95700", "95000", "700", "2026-03-02T10:30:00+00:00"),
        (ticked, "daily_loss", "2026-03-02", "95500", "95000", "500", "2026-03-02T09:00:02+00:00"),
    ])
    # the same day again, deeper, in another batch: no second alert per account, limit and day
    again = _messages([_line(dip, "d4", "2026-03-02T12:00:00Z", "95300"),
                       _line(dip, "d5", "2026-03-02T12:01:00Z", "99000")], first_seq=100)
    for p in range(P):
        if stream[p] or again[p]:
            run = store.take(p)
            assert not store.apply([(run, again[p])]).failed
    assert len(stored_alerts(Session)) == 2
    # the next day, ticks alone (no event of the account's own) move the holder in place, inside its band: the
    # first dip (a warning at 80 % of the daily loss) with alerts as good as off, the second with them on again
    def tick(eid: str, ts: str, bid: str) -> bytes:
        return (f'{{"id":"{eid}","type":"price","ts":"2026-03-03T{ts}Z","symbol":"EURUSD","bid":"{bid}",'
                f'"ask":"{bid}"}}').encode()

    with Session.begin() as s:
        near_breach.update_settings(s, firm_id="bench", within_pct=None, within_amount="0.01", actor="test")
    store = PartitionStore(Session, "S", P, "w2", snapshot_interval_s=0, vector=vector)
    warned = _messages([tick("p4", "09:00:00", "1.09900"), tick("p5", "09:00:01", "1.09580"),
                        tick("p6", "09:00:02", "1.09900")], first_seq=200)
    for p in range(P):
        assert not store.apply([(store.take(p), warned[p])]).failed
    with Session.begin() as s:
        near_breach.update_settings(s, firm_id="bench", within_pct="1", within_amount=None, actor="test")
    store = PartitionStore(Session, "S", P, "w3", snapshot_interval_s=0, vector=vector)
    ticks = _messages([tick("p7", "10:00:00", "1.09560"), tick("p8", "10:00:01", "1.09900")], first_seq=300)
    for p in range(P):
        assert not store.apply([(store.take(p), ticks[p])]).failed
    assert stored_alerts(Session)[2:] == [
        (ticked, "daily_loss", "2026-03-03", "95600", "95000", "600", "2026-03-03T10:00:00+00:00")]
    engine.dispose()
