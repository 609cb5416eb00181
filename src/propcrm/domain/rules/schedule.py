"""Rules about *when*: news windows, weekend and overnight holding, trading hours."""

from __future__ import annotations

import bisect
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
    """Trades around news: an offence, or profit that counts only partly (per close or per position).

    ``inside`` says which trades the window catches (opened or closed inside it, or opened and closed
    inside the same window); ``profit_scope`` whether a partial-profit deduction takes one close or the
    whole position. News known in advance is judged on the trade events; news published afterwards
    is judged on the remembered trades (``on_news``) as if it had been known.
    """

    kind = "news"

    def __init__(self, cfg: NewsWindow):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        self.impacts = frozenset(cfg.impact)
        self.before = dt.timedelta(seconds=cfg.before_s)
        self.after = dt.timedelta(seconds=cfg.after_s)
        self.kept_share = cfg.profit_counted_pct / HUNDRED
        self.partial = cfg.action == "partial_profit"
        self.both = cfg.inside == "opened_and_closed"
        self.whole = cfg.profit_scope == "position"

    def _find(self, symbol: str, instant: dt.datetime, ctx: Ctx, since: dt.datetime | None = None) -> NewsEntry | None:
        return ctx.market.news_around(
            symbol, instant, self.cfg.before_s, self.cfg.after_s, self.impacts, self.cfg.symbol_currencies, since
        )

    def _window(self, entry: NewsEntry) -> str:
        return f"the window {self.cfg.before_s} s before to {self.cfg.after_s} s after the {_news_words(entry)}"

    def on_open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> None:
        if self.both:
            return  # judged at the close, when both ends are known
        entry = self._find(ev.symbol, ev.ts, ctx)
        if entry is not None:
            self._opened_inside(st, ev.position, ev.symbol, ev.ts, entry, ctx)

    def _opened_inside(
        self, st: AccountState, position: str, symbol: str, when: dt.datetime, entry: NewsEntry, ctx: Ctx
    ) -> None:
        where = f"was opened {when:%H:%M:%S} UTC inside {self._window(entry)}"
        if self.whole:
            self._whole(st, position, symbol, where, entry, ctx)
            return
        if self.partial:
            pos = st.positions.get(position)
            if pos is not None and not pos.in_news:
                st.positions = {**st.positions, position: msgspec.structs.replace(pos, in_news=True)}
            return
        self._offence(st, position, symbol, where, entry, ctx)

    def _offence(
        self, st: AccountState, position: str, symbol: str, where: str, entry: NewsEntry, ctx: Ctx
    ) -> None:
        """A position traded inside a release's window, judged by the rule's action (block, violation, breach)."""
        ctx.offence(
            st,
            self.rule_id,
            self.cfg.action,
            f"position {position} ({symbol}) {where}",
            position=position,
            symbol=symbol,
            news=entry.title,
            news_ts=entry.ts,
            news_event=entry.event_id,
        )

    def on_close(self, st: AccountState, ev: TradeClosed, pos: Position, before: Decimal, ctx: Ctx) -> None:
        if self.both:
            entry = self._find(pos.symbol, ev.ts, ctx, since=pos.opened_at)
            if entry is not None:
                self._both_inside(st, ev.position, pos.symbol, pos.opened_at, ev.ts, pos.realised - before, entry, ctx)
            elif self.whole and pos.in_news:
                self._whole(st, ev.position, pos.symbol, "was judged inside a news window", None, ctx)
            return
        entry = self._find(pos.symbol, ev.ts, ctx)
        if self.whole:
            if entry is not None:
                where = f"was closed {ev.ts:%H:%M:%S} UTC inside {self._window(entry)}"
                self._whole(st, ev.position, pos.symbol, where, entry, ctx)
            elif pos.in_news:
                self._whole(st, ev.position, pos.symbol, "was traded inside a news window", None, ctx)
            return
        self._closed(st, ev.position, pos.symbol, ev.ts, pos.realised - before, pos.in_news, entry, ctx)

    def _both_inside(
        self,
        st: AccountState,
        position: str,
        symbol: str,
        opened: dt.datetime,
        closed: dt.datetime,
        net: Decimal,
        entry: NewsEntry,
        ctx: Ctx,
    ) -> None:
        where = f"was opened {opened:%H:%M:%S} and closed {closed:%H:%M:%S} UTC inside {self._window(entry)}"
        if self.whole:
            self._whole(st, position, symbol, where, entry, ctx)
        elif self.partial:
            self._closed(st, position, symbol, closed, net, False, entry, ctx, where=where)
        else:
            self._offence(st, position, symbol, where, entry, ctx)

    def _whole(
        self, st: AccountState, position: str, symbol: str, where: str, entry: NewsEntry | None, ctx: Ctx
    ) -> None:
        """The whole position counts only partly: bring what it has had deducted to its share of the profit.

        Idempotent: the position (or, once it is closed, its last remembered close) keeps what has been
        deducted, so later closes and later news deduct only the difference.
        """
        pos = st.positions.get(position)
        last = None
        for index in range(len(st.recent) - 1, -1, -1):
            action = st.recent[index]
            if action.action == "close" and action.position == position:
                last = index
                break
        if pos is not None:
            total, already = pos.realised, pos.news_deducted
        elif last is not None:
            action = st.recent[last]
            total, already = action.total or Decimal(0), action.deducted
        else:
            return
        due = total * (1 - self.kept_share) if total > 0 else Decimal(0)
        if pos is not None:
            st.positions = {**st.positions, position: msgspec.structs.replace(pos, in_news=True, news_deducted=due)}
        if last is not None and st.recent[last].deducted != due:
            recent = list(st.recent)
            recent[last] = msgspec.structs.replace(recent[last], deducted=due)
            st.recent = recent
        delta = due - already
        if delta == 0:
            return
        st.deductions += delta
        counted = fmt_pct(self.cfg.profit_counted_pct)
        if delta > 0:
            text = f"of the whole position's profit {fmt(total)} only {counted} counts, {fmt(delta)} is deducted"
        else:
            text = f"the whole position's profit is now {fmt(total)}, {fmt(-delta)} of its deduction is returned"
        ctx.decide(
            st,
            "violation",
            self.rule_id,
            f"position {position} ({symbol}) {where}: {text}",
            value=total,
            deducted=delta,
            counted_pct=self.cfg.profit_counted_pct,
            scope="position",
            position=position,
            symbol=symbol,
            news=entry.title if entry else None,
            news_ts=entry.ts if entry else None,
        )

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
        where: str | None = None,
    ) -> None:
        if self.partial:
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
            where = where or (
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
        """News published after trades in its window: judge the remembered trades retroactively.

        Judged as if the news had been known in advance: with ``partial_profit`` a position opened
        inside the window and closed since has its closes' profit deducted. ``st.recent`` keeps its
        length and order while deductions update remembered actions, so indices stay valid.
        """
        if entry.impact not in self.impacts:
            return
        low, high = entry.ts - self.before, entry.ts + self.after
        partial = self.partial
        start = bisect.bisect_left(st.recent, low, key=_action_ts)  # remembered in time order
        for index in range(start, len(st.recent)):
            action = st.recent[index]
            if action.ts > high:
                break
            if not ctx.market.affects(entry, action.symbol, self.cfg.symbol_currencies):
                continue
            if self.both:
                opened = action.opened_at
                if action.action == "close" and opened is not None and low <= opened:
                    self._both_inside(
                        st, action.position, action.symbol, opened, action.ts, action.net or Decimal(0), entry, ctx
                    )
            elif self.whole:
                verb = "opened" if action.action == "open" else "closed"
                where = f"was {verb} {action.ts:%H:%M:%S} UTC inside {self._window(entry)}"
                self._whole(st, action.position, action.symbol, where, entry, ctx)
            elif action.action == "open" and partial and action.position not in st.positions:
                for later in list(st.recent):
                    if later.action == "close" and later.position == action.position and later.ts >= action.ts:
                        self._closed(st, later.position, later.symbol, later.ts, later.net or Decimal(0), True, None, ctx)
            elif action.action == "open":
                self._opened_inside(st, action.position, action.symbol, action.ts, entry, ctx)
            else:
                action = st.recent[index]  # its profit may just have been deducted above
                self._closed(st, action.position, action.symbol, action.ts, action.net or Decimal(0), False, entry, ctx)


def _action_ts(action) -> dt.datetime:
    return action.ts


class WeekendHoldingRule(CompiledRule):
    kind = "weekend_holding"

    def __init__(self, cfg: WeekendHolding):
        self.cfg = cfg
        self.rule_id = cfg.rule_id
        start = cfg.weekend_start
        self.weekday = WEEKDAYS.index(start.weekday)
        self.at = parse_hhmm(start.time)
        self.tz = zone(start.timezone)
        self._moments: dict[dt.datetime, dt.datetime] = {}

    def next_start(self, after: dt.datetime) -> dt.datetime:
        moment = next_weekly(after, self.weekday, self.at, self.tz)
        return self._moments.setdefault(moment, moment)  # one object for every account (all in UTC)

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
