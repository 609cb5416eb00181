"""A rule pack compiled for evaluation: per phase, the rules sorted into the hooks they implement.

``compile_pack`` resolves every amount to money, loads timezones and assigns each rule its slots in
the account state. ``PhaseProgram.apply`` applies one account event to a state *in place*; callers
that need the old state intact copy first (``engine.evaluate.apply``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from collections.abc import Callable
from sys import intern
from typing import Any

import msgspec

from .calendar import TradingCalendar
from .events import Balance, Equity, Session, TradeClosed, TradeOpened
from .market import Market, NewsEntry
from .money import fmt
from .rulepack import (
    Consistency,
    DailyLoss,
    EarlyWarning,
    Hedging,
    Inactivity,
    LotEscalation,
    MaxDuration,
    MaxLoss,
    MaxLots,
    MaxOpenPositions,
    MaxTradesPerDay,
    MinHoldingTime,
    MinTradingDays,
    NewsWindow,
    OvernightHolding,
    PayoutPolicy,
    PerTradeLoss,
    Phase,
    ProfitTarget,
    RulePack,
    StopLossRequired,
    TradingHours,
    WeekendHolding,
    content_hash,
    parse_hhmm,
)
from .rules.base import CompiledRule, Ctx
from .rules.exposure import (
    HedgingRule,
    LotEscalationRule,
    MaxLotsRule,
    MaxOpenPositionsRule,
    MaxTradesPerDayRule,
    StopLossRequiredRule,
)
from .rules.limits import DailyLossRule, MaxLossRule, PerTradeLossRule
from .rules.progress import (
    ConsistencyRule,
    InactivityRule,
    MaxDurationRule,
    MinHoldingTimeRule,
    MinTradingDaysRule,
    ProfitTargetRule,
)
from .rules.schedule import NewsRule, OvernightHoldingRule, TradingHoursRule, WeekendHoldingRule
from .state import FAR_FUTURE, MAX_RECENT, AccountState, Position, RecentAction

ZERO = Decimal(0)
INFINITY = Decimal("Infinity")
NEG_INFINITY = Decimal("-Infinity")
LIVE = ("active", "paused")


def _overrides(rule: CompiledRule, hook: str) -> bool:
    return getattr(type(rule), hook) is not getattr(CompiledRule, hook)


class Slots:
    """What compiling a phase hands out, in the order its rules are written: a state slot per loss
    limit (``levels``), counter slots (``counts``) and early-warning bits."""

    def __init__(self, *, initial: Decimal, warnings: dict[str, tuple[Decimal, ...]],
                 target: ProfitTargetRule | None) -> None:
        self.initial = initial
        self.warnings = warnings
        self.target = target
        self.levels = self.counts = self.warn_bit = 0

    def level(self) -> int:
        self.levels += 1
        return self.levels - 1

    def count(self, n: int = 1) -> int:
        self.counts += n
        return self.counts - n

    def warn(self, limit: str) -> dict[str, Any]:
        """The early-warning thresholds set for ``limit`` and the first of the bits they take."""
        at = self.warnings.get(limit, ())
        self.warn_bit += len(at)
        return {"warn_at": at, "warn_bit": self.warn_bit - len(at)}


# Every rule kind of the pack format, by its configuration struct: how it compiles. A new kind is a
# struct in rulepack.py (member of AnyRule), a CompiledRule in rules/, and one line here
# (docs/architecture.md, "Adding a rule kind"); tests/unit/rules/test_rule_table.py holds the table
# to the union.
COMPILERS: dict[type, Callable[[Any, Slots], CompiledRule | None]] = {
    DailyLoss: lambda cfg, s: DailyLossRule(cfg, slot=s.level(), initial=s.initial, **s.warn("daily_loss")),
    MaxLoss: lambda cfg, s: MaxLossRule(
        cfg, slot=s.level(), initial=s.initial, target_balance=s.target.target_balance if s.target else None,
        **s.warn("max_loss")),
    PerTradeLoss: lambda cfg, s: PerTradeLossRule(cfg, initial=s.initial),
    ProfitTarget: lambda cfg, s: s.target,
    MinTradingDays: lambda cfg, s: MinTradingDaysRule(cfg, slot=s.count(), initial=s.initial),
    MaxDuration: lambda cfg, s: MaxDurationRule(cfg),
    Inactivity: lambda cfg, s: InactivityRule(cfg),
    Consistency: lambda cfg, s: ConsistencyRule(cfg, initial=s.initial),
    MaxLots: lambda cfg, s: MaxLotsRule(cfg),
    MaxOpenPositions: lambda cfg, s: MaxOpenPositionsRule(cfg),
    MaxTradesPerDay: lambda cfg, s: MaxTradesPerDayRule(cfg),
    StopLossRequired: lambda cfg, s: StopLossRequiredRule(cfg),
    Hedging: lambda cfg, s: HedgingRule(cfg),
    MinHoldingTime: lambda cfg, s: MinHoldingTimeRule(cfg, slot=s.count(2)),
    LotEscalation: lambda cfg, s: LotEscalationRule(cfg),
    NewsWindow: lambda cfg, s: NewsRule(cfg),
    WeekendHolding: lambda cfg, s: WeekendHoldingRule(cfg),
    OvernightHolding: lambda cfg, s: OvernightHoldingRule(cfg),
    TradingHours: lambda cfg, s: TradingHoursRule(cfg),
    EarlyWarning: lambda cfg, s: None,  # folded into the limits it names
}


class PhaseProgram:
    """One phase of one pack, ready to evaluate."""

    def __init__(self, pack: RulePack, index: int, calendar: TradingCalendar) -> None:
        phase: Phase = pack.phases[index]
        self.pack = pack
        self.phase = phase
        self.name = phase.name
        self.index = index
        self.calendar = calendar
        self.initial = pack.initial_balance
        self.next_phase = pack.phases[index + 1].name if index + 1 < len(pack.phases) else None
        self.payout_policy: PayoutPolicy = phase.payout or PayoutPolicy()
        self.currency = pack.currency

        warnings: dict[str, tuple[Decimal, ...]] = {}
        for cfg in phase.rules:
            if isinstance(cfg, EarlyWarning):
                for limit in cfg.limits:
                    warnings[limit] = tuple(sorted(set(warnings.get(limit, ()) + tuple(cfg.at_pct))))
        target_cfg = next((r for r in phase.rules if isinstance(r, ProfitTarget)), None)
        self.target: ProfitTargetRule | None = (
            ProfitTargetRule(target_cfg, initial=self.initial) if target_cfg is not None else None
        )

        slots = Slots(initial=self.initial, warnings=warnings, target=self.target)
        rules: list[CompiledRule] = []
        for cfg in phase.rules:
            build = COMPILERS.get(type(cfg))
            if build is None:  # pragma: no cover - the table covers the union (tests/unit/rules/test_rule_table.py)
                raise TypeError(f"unknown rule {cfg!r}")
            rule = build(cfg, slots)
            if rule is not None:
                rules.append(rule)
        levels, counts, warn_bit = slots.levels, slots.counts, slots.warn_bit
        if warn_bit > 62:
            raise ValueError(f"phase {phase.name}: too many early-warning thresholds")

        # A fixed evaluation order that does not depend on the order rules are written in the pack.
        rules.sort(key=lambda r: (r.kind, r.rule_id))
        self.rules = rules
        self.n_levels, self.n_counts = levels, counts
        self.limits = [r for r in rules if isinstance(r, (DailyLossRule, MaxLossRule))]
        self.hook = {
            hook: [r for r in rules if _overrides(r, hook)]
            for hook in (
                "on_phase_start",
                "on_open",
                "on_close",
                "on_day_end",
                "on_day_start",
                "on_balance",
                "on_equity",
                "watch",
                "deadline",
            )
        }
        self.equity_trailers = [r for r in self.limits if isinstance(r, MaxLossRule) and r.trailing == "equity_intraday"]
        self.minimums = [r for r in rules if isinstance(r, MinTradingDaysRule)]
        self.blockers = [r for r in rules if _overrides(r, "blocker")]
        self.news_rules = [r for r in rules if isinstance(r, NewsRule)]
        self.weekend = next((r for r in rules if isinstance(r, WeekendHoldingRule)), None)
        # Trades are remembered long enough for a calendar entry that arrives up to late_s after its
        # own time to judge every trade in its window (an entry known in time needs after_s).
        self.keep_recent = (
            dt.timedelta(seconds=max(r.cfg.before_s + max(r.cfg.after_s, r.cfg.late_s) for r in self.news_rules))
            if self.news_rules
            else None
        )
        # What a remembered close must carry: its opening (opened_and_closed) and the position's result
        # and deduction (profit_scope: position); left out otherwise, to keep the state small.
        self.remember_opening = any(r.both for r in self.news_rules)
        self.remember_total = any(r.whole for r in self.news_rules)
        self.news_reach = (
            dt.timedelta(seconds=max(r.cfg.before_s for r in self.news_rules)) if self.news_rules else None
        )

    # ------------------------------------------------------------------ state lifecycle
    def new_state(self, account: str) -> AccountState:
        st = AccountState(
            account=account,
            phase=self.name,
            phase_index=self.index,
            status="active",
            balance=self.initial,
            equity=self.initial,
            day_start_balance=self.initial,
            day_start_equity=self.initial,
            levels=[NEG_INFINITY] * self.n_levels,
            peaks=[self.initial] * self.n_levels,
            counts=[0] * self.n_counts,
            low_watch=INFINITY,  # the first event always takes the full path
        )
        for rule in self.hook["on_phase_start"]:
            rule.on_phase_start(st)
        return st

    def _begin(self, st: AccountState, ts: dt.datetime, ctx: Ctx) -> None:
        st.phase_start = ts
        if self.weekend is not None:
            st.next_weekend = self.weekend.next_start(ts)
        self._start_day(st, ts, ctx)

    def _start_day(self, st: AccountState, ts: dt.datetime, ctx: Ctx) -> None:
        st.trading_day, st.day_start_at, st.day_end_at = self.calendar.session(ts)
        st.day_start_balance = st.balance
        st.day_start_equity = st.equity
        st.day_profit = Decimal(0)
        st.trades_today = 0
        st.opened_today = False
        st.warned = 0
        if st.status == "paused":
            st.status = "active"
            st.paused_until = None
        for rule in self.hook["on_day_start"]:
            rule.on_day_start(st, ctx)

    def _end_day(self, st: AccountState, ctx: Ctx) -> None:
        for rule in self.hook["on_day_end"]:
            rule.on_day_end(st, ctx)
        if st.day_profit > st.best_day_profit:
            st.best_day_profit = st.day_profit

    def advance(self, st: AccountState, ts: dt.datetime, ctx: Ctx) -> None:
        """Handle every deadline at or before ``ts``, earliest first (rollovers, weekend, duration…)."""
        while st.next_deadline <= ts and st.status in LIVE and not ctx.breached:
            when = st.next_deadline
            if when == st.day_end_at:
                self._end_day(st, ctx)
                if st.status not in LIVE:
                    break
                # Straight to the trading day that holds ts: days without events change nothing else.
                self._start_day(st, max(ts, when), ctx)
                self.check_limits(st, ctx)  # a carried floating loss can breach the new day's floor
            else:
                for rule in self.hook["deadline"]:
                    if rule.deadline(st) == when:
                        rule.on_deadline(st, when, ctx)
                        if ctx.breached:
                            break
            self.refresh_deadline(st)

    # ------------------------------------------------------------------ events
    def apply(self, st: AccountState, ev: Any, ctx: Ctx) -> None:
        """Apply one account event to ``st`` in place, appending decisions to ``ctx``."""
        ts = ev.ts
        settled = True  # nothing that limits or watch levels read has moved (yet)
        moved = False
        if st.phase_start is None:
            self._begin(st, ts, ctx)
            settled = False
        elif ts >= st.next_deadline:
            self.advance(st, ts, ctx)
            settled = False
        if st.status not in LIVE:
            st.last_ts = ts
            self.refresh_watch(st)
            return
        cls = type(ev)
        if cls is Equity:
            self._equity(st, ev, ctx)
            settled = False
        elif cls is TradeOpened:
            if self._open(st, ev, ctx):  # only a position marked at once moves equity
                settled = False
        elif cls is TradeClosed:
            self._close(st, ev, ctx)
            settled = False
        elif cls is Balance and ev.reason == "payout" and ev.amount < 0:
            self._payout(st, -ev.amount)  # moves every level with the money: nothing to check
            moved = True  # …but the watch band must follow the moved levels
        elif cls is Balance:
            st.balance += ev.amount
            st.equity += ev.amount
            self._balance_moved(st, ctx)
            self._equity_moved(st, ctx)
            settled = False
        if not ctx.breached and not settled:
            self.check_limits(st, ctx)
        if not ctx.breached and st.status == "active" and self.target is not None:
            self.check_pass(st, ctx)
        st.last_ts = ts
        self.refresh_deadline(st)
        if not settled or moved or ctx.breached or ctx.decisions:
            self.refresh_watch(st)

    def on_clock(self, st: AccountState, ts: dt.datetime, ctx: Ctx) -> None:
        if st.phase_start is None or st.status not in LIVE:
            return
        if ts >= st.next_deadline:
            self.advance(st, ts, ctx)
            if not ctx.breached and st.status == "active" and self.target is not None:
                self.check_pass(st, ctx)
            self.refresh_deadline(st)
            self.refresh_watch(st)
        if st.last_ts is None or ts > st.last_ts:
            st.last_ts = ts

    def news_may_concern(self, st: AccountState, entry: NewsEntry) -> bool:
        """Cheap test before a copy: has the account any remembered trade late enough for the window?"""
        until = self.news_until(st)
        return until is not None and entry.ts <= until

    # ------------------------------------------------------------------ when time alone acts
    def next_due(self, st: AccountState) -> dt.datetime:
        """The first instant at which a ``clock`` event can change ``st``: its next deadline while it is
        live (the trading day's end in the pack's timezone, DST included — which also ends a pause and
        counts minimum trading days —, a maximum duration, inactivity, the weekend start), never
        (``FAR_FUTURE``) otherwise. A clock before it leaves ``st`` exactly as it is (``Engine._clock``
        touches only the accounts whose ``next_deadline`` it reached), so a driver may hold such clocks
        back until the account is due or has an event of its own."""
        return st.next_deadline if st.status in LIVE else FAR_FUTURE

    def news_until(self, st: AccountState) -> dt.datetime | None:
        """The latest calendar time of a ``news`` entry that can still change ``st`` (a window reaching a
        remembered trade), or ``None`` when none can: the engine hands an entry to the news rules only
        then (:meth:`news_may_concern`)."""
        if not self.news_rules or st.status not in LIVE or not st.recent or self.news_reach is None:
            return None
        return st.recent[-1].ts + self.news_reach

    def on_news(self, st: AccountState, entry: NewsEntry, ctx: Ctx) -> None:
        if st.status not in LIVE or not st.recent:
            return
        for rule in self.news_rules:
            rule.on_news(st, entry, ctx)
        if not ctx.breached and st.status == "active" and self.target is not None:
            self.check_pass(st, ctx)
        self.refresh_watch(st)

    def on_tick(self, st: AccountState, ts: dt.datetime, delta: Decimal, ctx: Ctx) -> None:
        """A price tick moved the marks of ``st``'s positions (already in ``st.positions``) by ``delta``:
        equity follows, and every limit, trailing level and equity target is checked at the tick.

        Deadlines due by the tick are handled first (a tick after the day's end belongs to the next
        day, whose start equity is the one before the tick). A tick does not move ``last_ts`` unless it
        rolled a deadline over (as a ``clock`` does): an account event a little older still applies.
        """
        if st.phase_start is None or st.status not in LIVE:
            return
        st.marked = True
        if ts >= st.next_deadline:
            self.advance(st, ts, ctx)
            if st.last_ts is None or ts > st.last_ts:
                st.last_ts = ts
        if st.status in LIVE and not ctx.breached:
            st.equity += delta
            self._equity_moved(st, ctx)
            self.check_limits(st, ctx)
            if not ctx.breached and st.status == "active" and self.target is not None:
                self.check_pass(st, ctx)
        self.refresh_deadline(st)
        self.refresh_watch(st)

    def remark(self, st: AccountState, symbol: str, market: Market) -> tuple[dict[str, Position] | None, Decimal]:
        """The positions of ``st`` re-valued after a tick of ``symbol`` (None: no mark changed) and the
        change of their total floating P/L. ``st`` is not changed."""
        currency = self.currency
        positions: dict[str, Position] | None = None
        delta = ZERO
        for key, pos in st.positions.items():
            if pos.symbol != symbol and symbol not in market.moves(pos.symbol, currency):
                continue
            mark = market.mark(pos.symbol, pos.side, pos.lots, pos.price, currency)
            if mark is None or mark == pos.mark:
                continue
            if positions is None:
                positions = dict(st.positions)
            positions[key] = msgspec.structs.replace(pos, mark=mark)
            delta += mark - (pos.mark if pos.mark is not None else ZERO)
        return positions, delta

    def _equity(self, st: AccountState, ev: Equity, ctx: Ctx) -> None:
        if st.marked:
            st.tick_drift = ev.equity - st.equity  # the platform's figure is the truth; keep how far we were
        if ev.balance != st.balance:
            st.balance = ev.balance  # the broker's figures are the truth
            self._balance_moved(st, ctx)
        st.equity = ev.equity
        self._equity_moved(st, ctx)

    def _payout(self, st: AccountState, withdrawn: Decimal) -> None:
        """A payout withdrawal: the trader's profit leaves the account, which is not a trading loss.

        Balance and equity fall by ``withdrawn``, and so does everything measured from the balance:
        the day-start balance and equity, the daily floors (except those based on the initial
        balance) and trailing max-loss peaks and levels (never below where they started). Static
        levels stay where they are. Then the counters the pack's ``payout.resets`` names start again.
        """
        st.balance -= withdrawn
        st.equity -= withdrawn
        st.day_start_balance -= withdrawn
        st.day_start_equity -= withdrawn
        for rule in self.limits:
            rule.on_payout(st, withdrawn)
        resets = self.payout_policy.resets
        if "trading_days" in resets:
            st.active_days = 0
            st.opened_today = False
            for rule in self.minimums:
                rule.reset(st)
        if "best_day" in resets:
            st.best_day_profit = Decimal(0)
            st.day_profit = Decimal(0)
        if "deductions" in resets:
            st.deductions = Decimal(0)

    def _balance_moved(self, st: AccountState, ctx: Ctx) -> None:
        for rule in self.hook["on_balance"]:
            rule.on_balance(st, ctx)

    def _equity_moved(self, st: AccountState, ctx: Ctx) -> None:
        for rule in self.hook["on_equity"]:
            rule.on_equity(st, ctx)

    def _remember(self, st: AccountState, action: RecentAction) -> None:
        if self.keep_recent is None:
            return
        horizon = action.ts - self.keep_recent
        recent = st.recent
        drop = len(recent) + 1 - MAX_RECENT if len(recent) >= MAX_RECENT else 0
        while drop < len(recent) and recent[drop].ts < horizon:  # oldest first: actions come in time order
            drop += 1
        st.recent = recent[drop:] + [action]

    def _open(self, st: AccountState, ev: TradeOpened, ctx: Ctx) -> bool:
        """Record the position; True when it was marked at once (its symbol has a spec and a price),
        which moves equity by the mark — a buy opened at the ask is worth the bid."""
        if st.status == "paused":
            ctx.decide(
                st,
                "violation",
                "pause",
                f"position {ev.position} was opened while trading is paused until "
                f"{st.paused_until:%Y-%m-%d %H:%M} UTC",
                position=ev.position,
            )
        symbol = intern(ev.symbol)  # one string per symbol, not one per remembered trade and position
        position = Position(
            symbol=symbol,
            side=ev.side,
            lots=ev.lots,
            opened_lots=ev.lots,
            opened_at=ev.ts,
            price=ev.price,
            sl=ev.sl,
        )
        mark = ctx.market.mark(ev.symbol, ev.side, ev.lots, ev.price, self.currency) if ctx.market.symbols else None
        if mark is not None:
            position.mark = mark
            st.marked = True
            st.equity += mark
        st.positions = {**st.positions, ev.position: position}
        st.trades_today += 1
        if not st.opened_today:
            st.opened_today = True
            st.active_days += 1
        st.last_trade_at = st.last_open_at = ev.ts
        self._remember(st, RecentAction(ts=ev.ts, action="open", position=ev.position, symbol=symbol))
        for rule in self.hook["on_open"]:
            rule.on_open(st, ev, ctx)
            if ctx.breached:
                break
        return mark is not None

    def _close(self, st: AccountState, ev: TradeClosed, ctx: Ctx) -> None:
        net = ev.profit + ev.commission + ev.swap
        st.balance += net
        st.day_profit += net
        st.last_trade_at = st.last_close_at = ev.ts
        pos = st.positions.get(ev.position)
        if pos is not None:
            before = pos.realised
            remaining = pos.lots - ev.lots
            if remaining < 0:
                remaining = Decimal(0)
            closed_mark = ZERO
            if pos.mark is not None:  # the closed part leaves the floating P/L; the rest is re-marked
                rest = (
                    ctx.market.mark(pos.symbol, pos.side, remaining, pos.price, self.currency)
                    if remaining > 0 else ZERO
                )
                rest = ZERO if rest is None else rest
                closed_mark = pos.mark - rest
                pos = msgspec.structs.replace(pos, lots=remaining, realised=before + net, mark=rest)
            else:
                pos = msgspec.structs.replace(pos, lots=remaining, realised=before + net)
            if remaining > 0:
                positions = dict(st.positions)
                positions[ev.position] = pos
            else:  # (built without it: a dict emptied by deletion keeps its table, 3× an empty one's size)
                positions = {k: p for k, p in st.positions.items() if k != ev.position}
            st.positions = positions
        if not st.positions:
            st.equity = st.balance  # flat: nothing floats
            st.marked = False
        elif pos is not None and pos.mark is not None:
            # Marked: equity held the closed part at its mark; it now holds the realised result instead.
            st.equity += net - closed_mark
        else:
            # The closed part's profit already floated in equity; its commission and swap are charged
            # now, while the rest still floats (FTMO: equity includes commissions and swaps).
            st.equity += ev.commission + ev.swap
        self._balance_moved(st, ctx)
        self._equity_moved(st, ctx)
        if pos is None:
            return  # opened before propcrm saw the account: the balance counts, per-position rules cannot
        self._remember(
            st,
            RecentAction(
                ts=ev.ts,
                action="close",
                position=ev.position,
                symbol=pos.symbol,
                net=net,
                opened_at=pos.opened_at if self.remember_opening else None,
                total=pos.realised if self.remember_total else None,
                deducted=pos.news_deducted,
            ),
        )
        for rule in self.hook["on_close"]:
            rule.on_close(st, ev, pos, before, ctx)
            if ctx.breached:
                return

    # ------------------------------------------------------------------ checks
    def check_limits(self, st: AccountState, ctx: Ctx) -> None:
        for rule in self.limits:
            rule.check(st, ctx)
            if ctx.breached:
                return  # the account has failed: one breach, as everywhere else in an event

    def check_pass(self, st: AccountState, ctx: Ctx) -> None:
        target = self.target
        assert target is not None
        if not target.met(st):
            return
        # Every blocker of the pass, together: the minimum days first, then the blocker rules.
        held = [(m, m.shortfall(st)) for m in self.minimums if not m.met(st)]
        held += [(rule, found) for rule in self.blockers if (found := rule.blocker(st)) is not None]
        if held:
            key = " | ".join(message for _, (message, _) in held)
            if key != st.blocked_key:
                st.blocked_key = key
                for rule, (message, numbers) in held:
                    ctx.decide(st, "blocked", rule.rule_id, f"target met but {message}", **numbers)
            return
        st.status = "passed"
        met = [target.describe(st)] + [m.describe(st) for m in self.minimums]
        ctx.decide(
            st,
            "phase_passed",
            target.rule_id,
            f"{self.name} passed: {'; '.join(met)}"
            + (f"; next: {self.next_phase}" if self.next_phase else ""),
            value=target.measured(st),
            threshold=target.target_balance,
            comparator="at_or_above",
            next_phase=self.next_phase,
            trading_days=st.active_days,
        )

    def refresh_deadline(self, st: AccountState) -> None:
        deadline = st.day_end_at
        for rule in self.hook["deadline"]:
            when = rule.deadline(st)
            if when is not None and when < deadline:
                deadline = when
        st.next_deadline = deadline if st.status in LIVE else FAR_FUTURE

    def refresh_watch(self, st: AccountState) -> None:
        """Recompute the equity band inside which an equity update cannot change anything."""
        if st.status not in LIVE:
            st.low_watch, st.high_watch, st.peak_watch = INFINITY, NEG_INFINITY, INFINITY
            return
        low, high = NEG_INFINITY, INFINITY
        for rule in self.hook["watch"]:
            rule_low, rule_high = rule.watch(st)
            if rule_low is not None and rule_low > low:
                low = rule_low
            if rule_high is not None and rule_high < high:
                high = rule_high
        peak = INFINITY
        for rule in self.equity_trailers:
            rule_peak = rule.trail_watch(st)
            if rule_peak is not None and rule_peak < peak:
                peak = rule_peak
        st.low_watch, st.high_watch, st.peak_watch = low, high, peak

    def peak_line(self, st: AccountState) -> tuple[Decimal, Decimal | None, Decimal] | None:
        """With one intraday trailing level: how a new peak moves the low watch (see
        ``MaxLossRule.peak_line``); None otherwise."""
        if len(self.equity_trailers) != 1:
            return None
        return self.equity_trailers[0].peak_line(st)

    def raise_peak(self, st: AccountState) -> None:
        """Equity rose above an intraday trailing peak (and stays inside the band): move the levels.

        A new peak raises levels that stay below it, so no rule can decide anything: this is the
        full evaluation of such an update, done in place. Only the trailers' own watch values move.
        """
        low, peak = st.low_watch, INFINITY
        for rule in self.equity_trailers:
            rule._move(st, st.equity)
            rule_low = rule.low_watch(st)
            if rule_low > low:
                low = rule_low
            rule_peak = rule.trail_watch(st)
            if rule_peak is not None and rule_peak < peak:
                peak = rule_peak
        st.low_watch, st.peak_watch = low, peak

    # ------------------------------------------------------------------ reading
    def summary(self, st: AccountState) -> dict[str, Any]:
        """Limits and progress in numbers, for dashboards and reports."""
        out: dict[str, Any] = {
            "account": st.account,
            "phase": st.phase,
            "status": st.status,
            "balance": st.balance,
            "equity": st.equity,
            "trading_days": st.active_days,
        }
        if st.tick_drift is not None:
            out["tick_drift"] = st.tick_drift  # platform equity − tick-level equity at its last report
        for rule in self.limits:
            level = st.levels[rule.slot]
            out[rule.rule_id] = {"level": level, "distance": st.equity - level}
        if self.target is not None:
            out["target"] = {"balance": self.target.target_balance, "progress": self.target.measured(st)}
        return out


class CompiledPack:
    def __init__(self, pack: RulePack) -> None:
        self.pack = pack
        self.id = pack.id
        self.version = pack.version
        self.hash = content_hash(pack)
        self.calendar = TradingCalendar(pack.timezone, parse_hhmm(pack.day_start))
        self.phases = [PhaseProgram(pack, i, self.calendar) for i in range(len(pack.phases))]
        self.by_name = {p.name: p for p in self.phases}

    def phase(self, name: str | None) -> PhaseProgram:
        if name is None:
            return self.phases[0]
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(
                f"pack {self.id} v{self.version} has no phase {name!r} (phases: {', '.join(self.by_name)})"
            ) from None

    def describe(self) -> str:
        return f"{self.id} v{self.version} ({self.hash[:19]}…)"


def compile_pack(pack: RulePack) -> CompiledPack:
    return CompiledPack(pack)


__all__ = ["CompiledPack", "PhaseProgram", "compile_pack", "fmt"]
