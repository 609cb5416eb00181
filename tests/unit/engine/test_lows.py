"""The worst point of a batch (engine/lows.py): what a watching engine notes equals the minimum over an
evaluation after every single event, on the exact path and through the vector tick screen, whatever the
stream (ticks, opens, closes, equity reports, deposits, day rollovers, a trailing floor) and wherever the
driver drains it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.events import Equity
from propcrm.domain.program import LIVE, compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.engine.lows import LowPoint, Zone, limit_slots
from propcrm.engine.runner import Engine

from support.packs import parsed

from .test_vector_marking import BANDS, TABLE, WIDE, streams

D = Decimal
UTC = dt.timezone.utc

ZONES = st.builds(Zone, st.sampled_from([None, D("0.5"), D("2.5"), D("5"), D("100")]),
                  st.sampled_from([None, D("300"), D("2000.00")]))


def measured(engine: Engine, best: dict, zone: Zone, ev) -> None:
    """The reference: every account's state measured after one event, the first smallest distance kept."""
    for account, state in engine.states.items():
        if state.status not in LIVE:
            continue
        for name, slot in limit_slots(engine.programs[account]):
            level = state.levels[slot]
            if not level.is_finite():
                continue
            distance = state.equity - level
            key = (account, name, state.trading_day)
            if zone.within(distance, state.equity) and (key not in best or distance < best[key].distance):
                best[key] = LowPoint(name, state.trading_day, distance, state.equity, level, ev.ts, ev.id)


def merged(pieces: list[dict]) -> dict:
    """Drained pieces put together: per account, limit and day the smallest distance, the earlier on a tie."""
    out: dict = {}
    for drained in pieces:
        for account, points in drained.items():
            for p in points:
                key = (account, p.rule, p.trading_day)
                if key not in out or p.distance < out[key].distance:
                    out[key] = p
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(), st.sampled_from([BANDS, WIDE]), ZONES, st.data())
def test_the_noted_worst_point_is_the_minimum_over_a_per_event_evaluation(events, pack, zone, data):
    """The reference measures every account after every single event (an account no event touched has not
    moved); the watching engines, exact and screened, drained anywhere, lose and invent nothing."""
    compiled = compile_pack(parsed(pack))
    reference, exact, vector = Engine(compiled), Engine(compiled), Engine(compiled, vector=True)
    for engine in (reference, exact, vector):
        engine.set_symbols(TABLE)
    exact.watch_lows(zone)
    vector.watch_lows(zone)
    drains = set(data.draw(st.lists(st.integers(0, len(events)), max_size=3)))
    best: dict = {}
    exact_pieces, vector_pieces = [], []
    for n, ev in enumerate(events):
        reference.feed([ev])
        exact.feed([ev])
        vector.feed([ev])
        measured(reference, best, zone, ev)
        if n in drains:
            exact_pieces.append(exact.drain_lows())
            vector_pieces.append(vector.drain_lows())
    exact_pieces.append(exact.drain_lows())
    vector_pieces.append(vector.drain_lows())
    assert merged(exact_pieces) == best
    assert merged(vector_pieces) == best
    assert vector_pieces == exact_pieces
    # watching changes nothing the engine decides or keeps
    assert vector.snapshot() == exact.snapshot() == reference.snapshot()


PACK = """
id: dip
version: 1
currency: USD
initial_balance: "100000"
timezone: UTC
day_start: "00:00"
phases:
  - name: eval
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}, base: balance, on_breach: fail}
      - {kind: max_loss, amount: {pct_initial: 10}, trailing: equity_intraday, lock: initial, comparator: below}
"""


def equity(n: int, ts: dt.datetime, value: str) -> Equity:
    return Equity(id=f"e{n}", ts=ts, account="A1", equity=D(value), balance=D("100000"))


def test_a_dip_and_a_recovery_inside_one_batch_names_the_dip_and_the_fast_path_stays_fast():
    engine = Engine(compile_pack(parse_pack(PACK)))
    engine.watch_lows(Zone(None, D("1500")))
    t = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
    engine.feed([equity(0, t, "99000")])  # the first event takes the full path (it computes the band)
    fast = engine.stats.fast_path
    engine.feed([equity(1, t + dt.timedelta(minutes=1), "96400"), equity(2, t + dt.timedelta(minutes=2), "96100"),
                 equity(3, t + dt.timedelta(minutes=3), "96300"), equity(4, t + dt.timedelta(minutes=4), "99500")])
    assert engine.stats.fast_path - fast == 4  # all four in the band: no full evaluation for the watch
    [point] = engine.drain_lows()["A1"]
    assert (point.rule, point.distance, point.equity, point.level, point.event_id) == (
        "daily_loss", D("1100"), D("96100"), D("95000"), "e2")
    assert engine.drain_lows() == {}  # drained
    # a trailing floor raised by a new peak inside the batch is measured as it stood at each event
    engine.feed([equity(5, t + dt.timedelta(minutes=5), "106000"), equity(6, t + dt.timedelta(minutes=6), "96900")])
    [point] = engine.drain_lows()["A1"]  # 1,900 above the daily floor: outside the zone
    assert (point.rule, point.level, point.distance, point.event_id) == ("max_loss", D("96000"), D("900"), "e6")


def test_without_a_zone_nothing_is_noted():
    engine = Engine(compile_pack(parse_pack(PACK)))
    t = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
    engine.feed([equity(0, t, "99000"), equity(1, t + dt.timedelta(minutes=1), "95100")])
    assert engine.lows is None and engine.drain_lows() == {}
    engine.watch_lows(Zone(None, None))
    assert engine.lows is None
