"""Today's P/L, the daily reset and the phase's time on a trader's card: in the pack's timezone, across DST."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.web.queries_trades import clock_text, hours, timing

UTC = dt.timezone.utc
OPENED = SimpleNamespace(created_at=dt.datetime(2026, 3, 1, tzinfo=UTC))


def test_the_reset_is_local_midnight_and_moves_with_daylight_saving_time():
    program = compile_pack(load_pack("two-step-100k")).phase("phase-1")  # Europe/Prague, 00:00
    winter = timing(OPENED, program, None, dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert winter.reset_at == dt.datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
    summer = timing(OPENED, program, None, dt.datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert summer.reset_at == dt.datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # 00:00 CEST: a 23-hour day
    assert summer.reset_in == "10:00:00" and "(CEST)" in summer.reset_local
    assert (winter.today_pnl, winter.started, winter.deadline) == (Decimal(0), OPENED.created_at, None)


def test_a_futures_session_resets_at_five_pm_chicago_in_both_seasons():
    program = compile_pack(load_pack("futures-eod-50k")).phases[0]
    before = timing(OPENED, program, None, dt.datetime(2026, 3, 6, 20, 0, tzinfo=UTC))  # CST
    after = timing(OPENED, program, None, dt.datetime(2026, 3, 10, 20, 0, tzinfo=UTC))  # CDT
    assert before.reset_at == dt.datetime(2026, 3, 6, 23, 0, tzinfo=UTC)
    assert after.reset_at == dt.datetime(2026, 3, 10, 22, 0, tzinfo=UTC)


def test_todays_figures_come_from_the_state_of_today_only():
    program = compile_pack(load_pack("two-step-100k")).phase("phase-1")
    now = dt.datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    st = program.new_state("A1")
    st.trading_day, st.equity = dt.date(2026, 3, 3), Decimal("100250")
    st.day_start_equity, st.day_profit = Decimal("100000"), Decimal("180")
    st.phase_start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    today = timing(OPENED, program, st, now)
    assert (today.today_pnl, today.today_closed, today.started) == (Decimal(250), Decimal(180), st.phase_start)
    st.trading_day = dt.date(2026, 3, 2)  # nothing arrived since the day rolled over: today is flat
    assert timing(OPENED, program, st, now).today_pnl == 0


def test_times_in_words():
    assert clock_text(5 * 3600 + 7 * 60 + 3) == "5:07:03" and clock_text(0) == "0:00:00"
    assert hours(None) == "—" and hours(45) == "45 s" and hours(125) == "2 min 05 s"
    assert hours(3 * 3600 + 5 * 60) == "3 h 05 min" and hours(2 * 86400 + 3600) == "2 d 1 h"
