"""The engine-speed work of issue 15 changes no result: ids kept and rejected around the fast path as
before, the collector tuned for a batch replay, trading days, weekend starts and symbols shared between
accounts, emptied position dicts at their smallest, and the generic-engine peer of ``propcrm bench engine``."""

from __future__ import annotations

import datetime as dt
import gc
import sys
from decimal import Decimal as D
from pathlib import Path

from propcrm.domain.events import Equity, TradeOpened
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.engine.runner import Engine, batch_gc
from propcrm.tools.bench_engine import BENCH_PACK, run_peer

UTC = dt.timezone.utc


def at(hhmm: str, day: int = 3) -> dt.datetime:
    return dt.datetime(2026, 3, day, int(hhmm[:2]), int(hhmm[3:]), tzinfo=UTC)


def equity(eid: str, account: str, ts: dt.datetime, value: str) -> Equity:
    return Equity(id=eid, ts=ts, account=account, equity=D(value), balance=D("100000"))


PACK = compile_pack(parse_pack(BENCH_PACK))


def test_an_event_id_rejected_out_of_order_is_not_taken_as_applied():
    engine = Engine(PACK)
    engine.feed([equity("a-1", "A1", at("10:00"), "100100")])
    engine.feed([equity("x", "A1", at("09:00"), "100200")])  # out of order: not applied, id not kept
    assert engine.stats.out_of_order == 1 and "x" not in engine.seen
    engine.feed([equity("x", "A2", at("09:30"), "100300")])  # the same id, now applicable
    assert engine.stats.duplicates == 0
    assert engine.states["A2"].equity == D("100300")
    engine.feed([equity("x", "A2", at("09:40"), "100400")])  # …and now a duplicate
    assert engine.stats.duplicates == 1
    assert engine.states["A2"].equity == D("100300")


def test_the_fast_path_keeps_the_id_and_rejects_its_repeat():
    engine = Engine(PACK)
    engine.feed([equity("a-1", "A1", at("10:00"), "100100")])
    engine.feed([equity("a-2", "A1", at("10:05"), "100150")])
    assert engine.stats.fast_path == 1 and "a-2" in engine.seen
    engine.feed([equity("a-2", "A1", at("10:06"), "100900")])
    assert engine.stats.duplicates == 1
    assert engine.states["A1"].equity == D("100150")


def test_without_dedupe_equal_ids_of_two_sources_are_both_applied():
    engine = Engine(PACK, dedupe=False)
    engine.feed([equity("e-1", "A1", at("10:00"), "100100"), equity("e-1", "A1", at("10:05"), "100200")])
    engine.feed([equity("e-1", "A1", at("10:10"), "100300")])
    assert engine.stats.duplicates == 0
    assert engine.stats.fast_path == 2
    assert engine.states["A1"].equity == D("100300")


def test_accounts_share_their_trading_days_and_weekend_start():
    engine = Engine(PACK)
    engine.feed([equity("a", "A1", at("10:00"), "100100"), equity("b", "A2", at("11:00"), "100200")])
    one, two = engine.states["A1"], engine.states["A2"]
    assert one.day_end_at == two.day_end_at and one.day_end_at is two.day_end_at
    assert one.day_start_at is two.day_start_at and one.trading_day is two.trading_day
    assert one.next_weekend is two.next_weekend


def test_remembered_trades_share_the_symbol_string():
    engine = Engine(PACK)
    symbol = "".join(["EUR", "USD"])  # a fresh string, as a decoder makes one per line
    opened = [
        TradeOpened(id=f"o-{i}", ts=at("10:00"), account=f"A{i}", position=f"p{i}", symbol=symbol[:3] + symbol[3:],
                    side="buy", lots=D(1), price=D("1.1"))
        for i in range(2)
    ]
    assert opened[0].symbol is not opened[1].symbol
    engine.feed(opened)
    one, two = engine.states["A0"], engine.states["A1"]
    assert one.positions["p0"].symbol is two.positions["p1"].symbol is two.recent[-1].symbol


def test_batch_gc_freezes_and_restores_the_collector():
    before = gc.get_threshold()
    with batch_gc(threshold=123_456):
        assert gc.get_threshold()[0] == 123_456
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_peer_is_reported_missing_when_its_interpreter_lacks_zen(tmp_path: Path):
    try:
        import zen  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - zen-engine is not a dependency of propcrm
        return
    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"id":"a","type":"equity","account":"A1","ts":"2026-03-03T10:00:00Z","equity":"1","balance":"1"}\n')
    assert run_peer(sys.executable, path) is None


def test_closing_the_last_position_leaves_an_empty_dict_of_an_empty_dicts_size():
    from propcrm.domain.events import TradeClosed

    engine = Engine(PACK)
    engine.feed([
        TradeOpened(id="o", ts=at("10:00"), account="A1", position="p1", symbol="EURUSD", side="buy", lots=D(1),
                    price=D("1.1")),
        TradeOpened(id="o2", ts=at("10:01"), account="A1", position="p2", symbol="EURUSD", side="buy", lots=D(1),
                    price=D("1.1")),
        TradeClosed(id="c", ts=at("10:05"), account="A1", position="p1", lots=D(1), price=D("1.2"), profit=D("10")),
    ])
    assert list(engine.states["A1"].positions) == ["p2"]
    engine.feed([TradeClosed(id="c2", ts=at("10:06"), account="A1", position="p2", lots=D(1), price=D("1.2"),
                             profit=D("10"))])
    positions = engine.states["A1"].positions
    assert positions == {} and sys.getsizeof(positions) == sys.getsizeof({})
