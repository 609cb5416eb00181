"""Reads of the trade journal pages (the trader portal and the back office's account page): closed trades
with paging, statistics, the daily P/L calendar in the pack's timezone, and an account's time context
(start, phase deadline, today's P/L, the next daily reset).

Everything comes from the trade-history projection (:mod:`propcrm.services.trades`) and the engine's
stored state; nothing reads ``raw_events``. The caller scopes the account (``get_account``) first.
"""

from __future__ import annotations

import calendar as month_calendar
import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.program import PhaseProgram
from ..domain.rules.progress import MaxDurationRule
from ..domain.state import AccountState
from ..services import trades as trade_service
from ..services.accounts import compiled_pack
from ..services.evaluation import STATE_DECODER

UTC = dt.timezone.utc
ZERO = Decimal(0)
TRADES_PER_PAGE = 50
MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def program_and_state(session: Session, account: m.Account) -> tuple[PhaseProgram, AccountState | None]:
    """The account's compiled phase and its stored engine state (``None`` before its first event)."""
    version = session.get(m.RulePackVersion, account.pack_version_id)
    program = compiled_pack(version).phase(account.phase)
    row = session.get(m.AccountState, account.id)
    return program, (STATE_DECODER.decode(row.state) if row is not None else None)


@dataclass
class Timing:
    """When the account started its phase, when the phase runs out, today's P/L and the next daily reset."""

    started: dt.datetime
    deadline: dt.datetime | None
    trading_day: dt.date
    reset_at: dt.datetime  # UTC: the end of the current trading day
    timezone: str
    day_start: str
    today_pnl: Decimal  # equity now − equity at the start of today's trading day (floating included)
    today_closed: Decimal  # closed today, net of costs
    now: dt.datetime

    @property
    def reset_in(self) -> str:
        """Time left until the reset as ``h:mm:ss`` (what portal.js keeps counting down, second by second)."""
        return clock_text(max(int((self.reset_at - self.now).total_seconds()), 0))

    @property
    def reset_local(self) -> str:
        from ..domain.calendar import zone

        local = self.reset_at.astimezone(zone(self.timezone))
        return f"{local:%a %d %b %H:%M} {self.timezone} ({local:%Z})"


def timing(account: m.Account, program: PhaseProgram, st: AccountState | None, now: dt.datetime) -> Timing:
    """The account's time context at ``now``. Today's figures are those of the state's trading day when
    it is today's; once the day has rolled over and nothing arrived since, today is flat (0)."""
    trading_day, _start, end = program.calendar.session(now)
    started = (st.phase_start if st is not None and st.phase_start is not None else account.created_at)
    deadline = None
    for rule in program.hook["deadline"]:
        if isinstance(rule, MaxDurationRule):
            deadline = started + rule.span
    today_pnl = today_closed = ZERO
    if st is not None and st.trading_day == trading_day:
        today_pnl = st.equity - st.day_start_equity
        today_closed = st.day_profit
    return Timing(started=started, deadline=deadline, trading_day=trading_day, reset_at=end,
                  timezone=program.pack.timezone, day_start=program.pack.day_start, today_pnl=today_pnl,
                  today_closed=today_closed, now=now)


def clock_text(seconds: int) -> str:
    """``5:07:03`` for 5 h 7 min 3 s."""
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def hours(seconds: int | None) -> str:
    """A holding time in words: ``3 d 4 h``, ``2 h 05 min``, ``45 s``."""
    if seconds is None:
        return "—"
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    minutes, s = divmod(rest, 60)
    if days:
        return f"{days} d {h} h"
    if h:
        return f"{h} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {s:02d} s"
    return f"{s} s"


def month_of(text: str | None, default: dt.date) -> tuple[int, int]:
    match = MONTH.match(text or "")
    if match and 1 <= int(match.group(2)) <= 12 and 1970 <= int(match.group(1)) <= 9999:
        return int(match.group(1)), int(match.group(2))
    return default.year, default.month


def _shift(year: int, month: int, by: int) -> str:
    index = year * 12 + month - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def pnl_calendar(session: Session, account: m.Account, program: PhaseProgram, year: int, month: int) -> dict[str, Any]:
    """The month's trading days (Monday first) with their net closed result and number of closes."""
    first = dt.date(year, month, 1)
    days_in = month_calendar.monthrange(year, month)[1]
    lo = dt.datetime.combine(first - dt.timedelta(days=2), dt.time(), tzinfo=UTC)
    hi = dt.datetime.combine(first + dt.timedelta(days=days_in + 2), dt.time(), tzinfo=UTC)
    closes = trade_service.closes_between(session, firm_id=account.firm_id, account_id=account.id, start=lo, end=hi)
    session_of = program.calendar.session
    results = trade_service.daily_results(closes, lambda ts: session_of(ts)[0])
    weeks: list[list[dict | None]] = []
    week: list[dict | None] = [None] * first.weekday()
    total = ZERO
    for day in range(1, days_in + 1):
        date = dt.date(year, month, day)
        net, count = results.get(date, (ZERO, 0))
        total += net
        week.append({"date": date, "net": net, "count": count,
                     "state": "none" if not count else "up" if net > 0 else "down" if net < 0 else "flat"})
        if len(week) == 7:
            weeks.append(week)
            week = []
    if week:
        weeks.append(week + [None] * (7 - len(week)))
    return {"label": f"{month_calendar.month_name[month]} {year}", "weeks": weeks, "total": total,
            "previous": _shift(year, month, -1), "next": _shift(year, month, 1), "month": f"{year:04d}-{month:02d}"}


def journal_view(session: Session, account: m.Account, *, offset: int, month: str | None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything a journal page shows: a page of closed trades, the statistics and the P/L calendar."""
    now = now or dt.datetime.now(UTC)
    program, st = program_and_state(session, account)
    page = trade_service.journal(session, firm_id=account.firm_id, account_id=account.id,
                                 limit=TRADES_PER_PAGE, offset=offset)
    stats = trade_service.statistics(session, firm_id=account.firm_id, account_id=account.id)
    year, number = month_of(month, program.calendar.session(now)[0])
    return {"page": page, "stats": stats, "calendar": pnl_calendar(session, account, program, year, number),
            "timing": timing(account, program, st, now), "hours": hours,
            "account": {"id": account.id, "external_id": account.external_id, "status": account.status,
                        "currency": program.pack.currency}}
