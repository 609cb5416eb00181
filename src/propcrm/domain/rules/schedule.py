"""Rules about *when*: news windows, weekend and overnight holding, trading hours."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from ..calendar import next_weekly, zone
from ..money import HUNDRED, fmt, fmt_pct
from ..rulepack import WEEKDAYS, NewsWindow, OvernightHolding, TradingHours, WeekendHolding, parse_hhmm
from .base import CompiledRule, Ctx, describe_time

if TYPE_CHECKING:  # pragma: no cover
    from ..events import TradeClosed, TradeOpened
    from ..market import NewsEntry
    from ..state import AccountState, Position


def _news_words(entry: NewsEntry) -> str:
    what = entry.currency or ",".join(entry.symbols or ())
    return f"{entry.impact}-impact {what} news “{entry.title}” at {entry.ts:%Y-%m-%d %H:%M:%S} UTC"


class NewsRule(CompiledRule):
    kind = "news"

    def __init__(self, cfg: NewsWindow):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.impacts = frozenset(cfg.impact)
        self.before = dt.timedelta(seconds=cfg.before_s)
        self.after = dt.timedelta(seconds=cfg.after_s)
        self.kept_share = cfg.profit_counted_pct / HUNDRED

    def _find(self, symbol: str, instant: dt.datetime, ctx: Ctx) -> NewsEntry | None:
        return ctx.market.news_around(
            symbol, instant, self.cfg.before_s, self.cfg.after_s, self.impacts, self.cfg.symbol_currencies
        )

    def _window(self, entry: NewsEntry) -> str:
        return f"the window {self.cfg.before_s} s before to {self.cfg.after_s} s after the {_news_words(entry)}"

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        entry = self._find(ev.symbol, ev.ts, ctx)
        if entry is not None:
            self._opened_inside(st, ev.position, ev.symbol, ev.ts, entry, ctx)

    def _opened_inside(
        self, st: AccountState, position: str, symbol: str, when: dt.datetime, entry: NewsEntry, ctx: Ctx
    ) -> None:
        if self.cfg.action == "partial_profit":
            pos = st.positions.get(position)
            if pos is not None and not pos.in_news:
                st.positions = {**st.positions, position: msgspec.structs.replace(pos, in_news=True)}
            return
        ctx.offence(
            st,
            self.rule_id,
            self.cfg.action,
            f"position {position} ({symbol}) was opened {when:%H:%M:%S} UTC inside {self._window(entry)}",
            position=position,
            symbol=symbol,
            news=entry.title,
            news_ts=entry.ts,
            news_event=entry.event_id,
        )

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None:
        entry = self._find(pos.symbol, ev.ts, ctx)
        self._closed(st, ev.position, pos.symbol, ev.ts, pos.realised - before, pos.in_news, entry, ctx)

    def _closed(
        self,
        st: AccountState,
        position: str,
        symbol: str,
        when: dt.datetime,
        net: Decimal,
        opened_in_news: bool,
        entry: NewsEntry | None,
        ctx: Ctx,
    ) -> None:
        if self.cfg.action == "partial_profit":
            if (entry is None and not opened_in_news) or net <= 0:
                return
            deducted = net * (1 - self.kept_share)
            st.deductions += deducted
            # A close's profit is deducted once: news published later must not deduct it again.
            st.recent = [
                msgspec.structs.replace(a, net=Decimal(0))
                if a.action == "close" and a.position == position and a.ts == when and a.net == net
                else a
                for a in st.recent
            ]
            where = (
                f"closed {when:%H:%M:%S} UTC inside {self._window(entry)}"
                if entry is not None
                else "opened inside a news window"
            )
            ctx.decide(
                st,
                "violation",
                self.rule_id,
                f"position {position} ({symbol}) {where}: of its profit {fmt(net)} only "
                f"{fmt_pct(self.cfg.profit_counted_pct)} counts, {fmt(deducted)} is deducted",
                value=net,
                deducted=deducted,
                counted_pct=self.cfg.profit_counted_pct,
                position=position,
                symbol=symbol,
                news=entry.title if entry else None,
                news_ts=entry.ts if entry else None,
            )
            return
        if entry is None:
            return
        ctx.offence(
            st,
            self.rule_id,
            self.cfg.action,
            f"position {position} ({symbol}) was closed {when:%H:%M:%S} UTC inside {self._window(entry)}",
            position=position,
            symbol=symbol,
            news=entry.title,
            news_ts=entry.ts,
            news_event=entry.event_id,
        )

    def on_news(self, st: AccountState, entry: NewsEntry, ctx: Ctx) -> None:
        """News published after trades in its window: judge the recent trades retroactively.

        Judged as if the news had been known in advance: with ``partial_profit`` a position opened
        inside the window and closed since has its closes' profit deducted. ``st.recent`` keeps its
        length and order while deductions zero the remembered profit, so indices stay valid.
        """
        if entry.impact not in self.impacts:
            return
        low, high = entry.ts - self.before, entry.ts + self.after
        partial = self.cfg.action == "partial_profit"
        for index in range(len(st.recent)):
            action = st.recent[index]
            if not (low <= action.ts <= high):
                continue
            if not ctx.market.affects(entry, action.symbol, self.cfg.symbol_currencies):
                continue
            if action.action == "open" and partial and action.position not in st.positions:
                for later in list(st.recent):
                    if later.action == "close" and later.position == action.position and later.ts >= action.ts:
                        self._closed(st, later.position, later.symbol, later.ts, later.net or Decimal(0), True, None, ctx)
            elif action.action == "open":
                self._opened_inside(st, action.position, action.symbol, action.ts, entry, ctx)
            else:
                action = st.recent[index]  # its profit may just have been deducted above
                self._closed(st, action.position, action.symbol, action.ts, action.net or Decimal(0), False, entry, ctx)


class WeekendHoldingRule(CompiledRule):
    kind = "weekend_holding"

    def __init__(self, cfg: WeekendHolding):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        start = cfg.weekend_start
        self.weekday = WEEKDAYS.index(start.weekday)
        self.at = parse_hhmm(start.time)
        self.tz = zone(start.timezone)

    def next_start(self, after: dt.datetime) -> dt.datetime:
        return next_weekly(after, self.weekday, self.at, self.tz)

    def on_phase_start(self, st: AccountState) -> None:
        # the first moment is set by the program once the phase's first event time is known
        pass

    def deadline(self, st: AccountState) -> dt.datetime | None:
        return st.next_weekend

    def on_deadline(self, st: AccountState, when: dt.datetime, ctx: Ctx) -> None:
        st.next_weekend = self.next_start(when)
        if st.positions:
            ids = sorted(st.positions)
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"{len(ids)} position(s) ({', '.join(ids)}) were open at the weekend start "
                f"{describe_time(when, self.tz)}; the account must be flat before it",
                positions=ids,
                weekend_start=when,
            )


class OvernightHoldingRule(CompiledRule):
    kind = "overnight_holding"

    def __init__(self, cfg: OvernightHolding):
        self.cfg = cfg
        self.rule_id = cfg.rule_id

    def on_day_end(self, st: AccountState, ctx: Ctx) -> None:
        if st.positions:
            ids = sorted(st.positions)
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"{len(ids)} position(s) ({', '.join(ids)}) were held over the end of trading day "
                f"{st.trading_day} ({st.day_end_at:%Y-%m-%d %H:%M} UTC)",
                positions=ids,
                day_end=st.day_end_at,
            )


class TradingHoursRule(CompiledRule):
    kind = "trading_hours"

    def __init__(self, cfg: TradingHours):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.tz = zone(cfg.timezone)
        self.windows = [
            (frozenset(WEEKDAYS.index(d) for d in w.days), parse_hhmm(w.start), parse_hhmm(w.end), w)
            for w in cfg.windows
        ]

    def allowed(self, instant: dt.datetime) -> bool:
        local = instant.astimezone(self.tz)
        weekday, clock = local.weekday(), local.time().replace(tzinfo=None)
        return any(weekday in days and start <= clock < end for days, start, end, _ in self.windows)

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        if not self.allowed(ev.ts):
            ctx.offence(
                st,
                self.rule_id,
                self.cfg.action,
                f"position {ev.position} was opened {describe_time(ev.ts, self.tz)}, outside the allowed trading "
                "hours ("
                + "; ".join(f"{', '.join(w.days)} {w.start}–{w.end}" for *_, w in self.windows)
                + f" {self.cfg.timezone})",
                position=ev.position,
                symbol=ev.symbol,
            )
