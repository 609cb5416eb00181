"""Invariants of the engine over generated histories (hypothesis)."""

from __future__ import annotations

import random

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.decisions import to_ndjson
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import RulePack
from propcrm.engine.evaluate import apply
from propcrm.engine.runner import Engine

from support.packs import parsed
from support.strategies import histories

EVERYTHING = """
id: everything
version: 1
currency: USD
initial_balance: "100000"
timezone: America/Chicago
day_start: "17:00"
phases:
  - name: eval
    rules:
      - {kind: daily_loss, amount: {pct_initial: 4}, base: max_balance_equity, on_breach: pause, comparator: at_or_below}
      - {kind: daily_loss, id: hard_daily, amount: {pct_base: 8}, base: equity}
      - {kind: max_loss, amount: {absolute: "6000"}, trailing: equity_intraday, lock: {initial_plus: 100}, comparator: at_or_below}
      - {kind: max_loss, id: eod_trail, amount: {pct_initial: 9}, trailing: balance_eod, lock: target}
      - {kind: max_loss, id: bal_trail, amount: {pct_initial: 12}, trailing: balance_intraday, lock: initial}
      - {kind: per_trade_loss, amount: {pct_initial: 2}}
      - {kind: profit_target, amount: {pct_initial: 8}}
      - {kind: min_trading_days, days: 2}
      - {kind: min_trading_days, id: profitable_days, days: 1, counts: {profitable_pct_initial: 0.5}}
      - {kind: max_duration, days: 30}
      - {kind: inactivity, days: 2}
      - {kind: consistency, max_best_day_pct: 40}
      - {kind: max_lots, per_position: 20, total: 30, per_symbol: {XAUUSD: 3}}
      - {kind: max_open_positions, count: 3}
      - {kind: max_trades_per_day, count: 4}
      - {kind: stop_loss_required}
      - {kind: hedging}
      - {kind: min_holding_time, seconds: 60, max_share_pct: 50, min_trades: 2}
      - {kind: lot_escalation, factor: 2}
      - {kind: news, before_s: 120, after_s: 120, impact: [high], action: partial_profit, profit_counted_pct: 25}
      - {kind: news, id: news_strict, before_s: 30, after_s: 30, impact: [high], action: violation}
      - {kind: weekend_holding, weekend_start: {weekday: friday, time: "17:00", timezone: America/New_York}}
      - {kind: overnight_holding}
      - {kind: trading_hours, timezone: Europe/London, windows: [{days: [monday, tuesday, wednesday, thursday, friday], start: "01:00", end: "22:00"}]}
      - {kind: early_warning, at_pct: [50, 80]}
"""

PACKS = ["two-step-100k", EVERYTHING]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pack(which: str) -> RulePack:
    return parsed(which)


def _run(pack, events, chunks=None):
    engine = Engine(compile_pack(pack) if isinstance(pack, RulePack) else pack)
    out = []
    if not chunks:
        out.extend(engine.feed(events))
        return engine, out
    start = 0
    for cut in chunks + [len(events)]:
        out.extend(engine.feed(events[start:cut]))
        blob = engine.snapshot()
        fresh = Engine(engine.program_for.__self__ if hasattr(engine.program_for, "__self__") else compile_pack(pack))
        fresh.program_for = engine.program_for
        fresh.restore(blob)
        fresh.stats = engine.stats
        engine = fresh
        start = cut
    return engine, out


@FAST
@given(histories(), st.sampled_from(PACKS))
def test_replaying_the_same_history_gives_identical_decisions(events, which):
    pack = _pack(which)
    _, first = _run(pack, events)
    _, second = _run(pack, events)
    assert to_ndjson(first) == to_ndjson(second)


@FAST
@given(histories(), st.sampled_from(PACKS), st.data())
def test_splitting_a_history_into_chunks_changes_nothing(events, which, data):
    pack = _pack(which)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(events)), max_size=4))))
    _, whole = _run(pack, events)
    _, pieces = _run(pack, events, chunks=cuts)
    assert to_ndjson(whole) == to_ndjson(pieces)


@FAST
@given(histories(), st.randoms(use_true_random=False))
def test_the_order_of_rules_in_a_pack_does_not_change_the_decisions(events, rnd: random.Random):
    pack = parsed(EVERYTHING)
    phases = []
    for phase in pack.phases:
        rules = list(phase.rules)
        rnd.shuffle(rules)
        phases.append(msgspec.structs.replace(phase, rules=rules))
    shuffled = msgspec.structs.replace(pack, phases=phases)
    _, a = _run(pack, events)
    _, b = _run(shuffled, events)
    assert to_ndjson(a) == to_ndjson(b)


@FAST
@given(histories(), st.sampled_from(PACKS))
def test_the_fast_path_decides_exactly_what_full_evaluation_decides(events, which):
    """The engine's in-band shortcut against applying every event through the full rule set."""
    compiled = compile_pack(_pack(which))
    engine, fast = _run(compiled, events)
    reference = Engine(compiled)
    program = compiled.phase(None)
    slow = []
    for ev in events:
        account = getattr(ev, "account", None)
        if type(ev).__name__ in ("Clock", "News", "Price") or account is None:
            slow.extend(reference.feed([ev]))
            continue
        st_ = reference.states.get(account) or reference._open_account(account)
        if st_.last_ts is not None and ev.ts < st_.last_ts:
            continue
        if st_.status not in ("active", "paused"):
            st_.last_ts = ev.ts
            reference.seen.add(ev.id)
            continue
        reference.seen.add(ev.id)
        new, decisions = apply(st_, ev, program, reference.market)
        reference.states[account] = new
        slow.extend(decisions)
    assert to_ndjson(fast) == to_ndjson(slow)
    for account, st_ in engine.states.items():
        other = reference.states[account]
        assert (st_.status, st_.balance, st_.equity, st_.levels) == (other.status, other.balance, other.equity, other.levels)


@FAST
@given(histories())
def test_a_static_floor_never_moves_and_trailing_levels_never_decrease(events):
    compiled = compile_pack(parsed(EVERYTHING.replace("trailing: balance_intraday, lock: initial", "trailing: none")))
    program = compiled.phase(None)
    static_slots = [r.slot for r in program.limits if getattr(r, "trailing", None) == "none"]
    trailing_slots = [r.slot for r in program.limits if getattr(r, "trailing", "none") != "none"]
    assert static_slots and trailing_slots
    engine = Engine(compiled)
    history: dict[str, list[list]] = {}
    for ev in events:
        engine.feed([ev])
        for account, st_ in engine.states.items():
            history.setdefault(account, []).append(list(st_.levels))
    for levels in history.values():
        for slot in static_slots:
            assert len({row[slot] for row in levels}) == 1
        for slot in trailing_slots:
            column = [row[slot] for row in levels]
            assert column == sorted(column)


@FAST
@given(histories(max_events=40))
def test_apply_never_changes_the_state_it_is_given(events):
    compiled = compile_pack(parsed(EVERYTHING))
    program = compiled.phase(None)
    engine = Engine(compiled)
    for ev in events:
        account = getattr(ev, "account", None)
        if account is None or type(ev).__name__ == "Clock":
            engine.feed([ev])
            continue
        st_ = engine.states.get(account) or engine._open_account(account)
        if st_.last_ts is not None and ev.ts < st_.last_ts:
            continue
        before = msgspec.msgpack.encode(st_)
        new, _ = apply(st_, ev, program, engine.market)
        assert msgspec.msgpack.encode(st_) == before
        engine.states[account] = new
