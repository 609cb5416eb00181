"""When time alone can change an account (issue 14): ``PhaseProgram.next_due`` / ``news_until`` and the
worker's thinned feed (``feed_due_clocks``) against the engine fed every clock (hypothesis)."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.decisions import to_ndjson
from propcrm.domain.events import Clock, News
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack, parse_pack
from propcrm.domain.state import FAR_FUTURE
from propcrm.engine.runner import Engine
from propcrm.services.evaluation import feed_due_clocks

from support.strategies import histories

# Every rule kind that time alone moves (day ends in a DST-changing timezone: pauses ending, trailing
# at the end of the day, minimum and profitable days, overnight holding, consistency; max duration;
# inactivity; the weekend; trading hours; news published after the trades) beside the limits.
TIMED = """
id: timed
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
      - {kind: max_loss, id: eod_trail, amount: {pct_initial: 9}, trailing: balance_eod, lock: target}
      - {kind: profit_target, amount: {pct_initial: 8}}
      - {kind: min_trading_days, days: 2}
      - {kind: min_trading_days, id: profitable_days, days: 1, counts: {profitable_pct_initial: 0.5}}
      - {kind: max_duration, days: 4}
      - {kind: inactivity, days: 2}
      - {kind: consistency, max_best_day_pct: 40}
      - {kind: news, before_s: 120, after_s: 120, impact: [high], action: partial_profit, profit_counted_pct: 25}
      - {kind: news, id: news_strict, before_s: 30, after_s: 30, impact: [high], action: violation}
      - {kind: weekend_holding, weekend_start: {weekday: friday, time: "17:00", timezone: America/New_York}}
      - {kind: overnight_holding}
      - {kind: trading_hours, timezone: Europe/London, windows: [{days: [monday, tuesday, wednesday, thursday, friday], start: "01:00", end: "22:00"}]}
      - {kind: early_warning, at_pct: [50, 80]}
"""

PACKS = {"timed": parse_pack(TIMED), "two-step-standard-100k": load_pack("two-step-standard-100k")}
PROGRAMS = {name: compile_pack(pack) for name, pack in PACKS.items()}
CASES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODE = msgspec.msgpack.encode


def _engine(pack: str, phase: str | None, account: str) -> Engine:
    program = PROGRAMS[pack].phase(phase)
    return Engine(lambda external: program if external == account else None, dedupe=False)


def _stream(events, account: str) -> list:
    """One account's stream as the worker builds it: its own events and the firm's clocks and news."""
    return [ev for ev in events if getattr(ev, "account", None) in (None, account)]


@st.composite
def streams(draw):
    """Histories crossing a weekend and the EU and US DST changes, with some firm clocks set back in time
    (a platform clock that jumped back: the engine refuses such a clock as out of order)."""
    events = draw(histories(max_events=120, accounts=3))
    out = []
    for ev in events:
        if type(ev) is Clock and draw(st.integers(0, 3)) == 0:
            ev = msgspec.structs.replace(ev, ts=ev.ts - dt.timedelta(hours=draw(st.integers(1, 30))))
        out.append(ev)
        if type(ev) is not Clock and draw(st.integers(0, 2)) == 0:
            # dense clocks on the hour (so some fall exactly on a day's end): most change nothing
            hour = ev.ts.replace(minute=0, second=0, microsecond=0)
            back = dt.timedelta(hours=draw(st.integers(0, 8))) if draw(st.integers(0, 4)) == 0 else dt.timedelta(0)
            for step in range(draw(st.integers(1, 30))):
                out.append(Clock(id=f"{ev.id}-c{step}", ts=hour + dt.timedelta(hours=step + 1) - back))
    return out


@CASES
@given(streams(), st.sampled_from(sorted(PACKS)), st.sampled_from([None, "funded"]))
def test_feeding_only_the_clocks_an_account_is_due_at_gives_what_every_clock_gives(events, pack, phase):
    if phase is not None and phase not in PROGRAMS[pack].by_name:
        phase = None
    for account in sorted({ev.account for ev in events if getattr(ev, "account", None)}):
        stream = _stream(events, account)
        every, thinned = _engine(pack, phase, account), _engine(pack, phase, account)
        expected = every.feed(stream, lines=range(len(stream)))
        got = feed_due_clocks(thinned, account, stream)
        assert to_ndjson(got) == to_ndjson(expected)
        assert ENCODE(thinned.states.get(account)) == ENCODE(every.states.get(account))
        kept = [(r.line, r.kind, r.reason) for r in every.rejected
                if not (r.kind == "out_of_order" and type(stream[r.line]) is Clock)]
        assert [(r.line, r.kind, r.reason) for r in thinned.rejected] == kept


@CASES
@given(histories(max_events=100, accounts=2), st.sampled_from(sorted(PACKS)), st.sampled_from([None, "funded"]))
def test_a_clock_before_next_due_and_news_after_news_until_change_nothing_and_next_due_is_when_one_can(
        events, pack, phase):
    if phase is not None and phase not in PROGRAMS[pack].by_name:
        phase = None
    for account in sorted({ev.account for ev in events if getattr(ev, "account", None)}):
        engine = _engine(pack, phase, account)
        engine.feed(_stream(events, account))
        state = engine.states.get(account)
        if state is None:
            continue
        program = engine.programs[account]
        due, until = program.next_due(state), program.news_until(state)
        before = ENCODE(state)
        if due < FAR_FUTURE and (state.last_ts is None or due - dt.timedelta(seconds=1) > state.last_ts):
            assert engine.feed([Clock(id="early", ts=due - dt.timedelta(seconds=1))]) == []
            assert ENCODE(engine.states[account]) == before
            engine.last_clock = None
        if until is not None:
            late = News(id="late", ts=until + dt.timedelta(seconds=1), title="CPI", impact="high", currency="USD")
            assert engine.feed([late]) == []
            assert ENCODE(engine.states[account]) == before
        if due < FAR_FUTURE and (state.last_ts is None or due > state.last_ts):
            # at next_due itself the account is due: the engine hands it the clock (its deadline rolls)
            engine.feed([Clock(id="due", ts=due)])
            after = engine.states[account]
            assert after.next_deadline > due or after.status not in ("active", "paused")
