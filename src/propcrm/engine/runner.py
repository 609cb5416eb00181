"""Applying a stream of events to many accounts, in order, exactly once.

The :class:`Engine` owns the account states, the market context and the set of applied event ids.
It rejects (and reports) duplicates and events older than the last one applied to their account,
fans ``clock`` and ``news`` events out to the accounts they concern, and never lets one bad event
stop the rest: an event that fails to apply leaves its account exactly as it was and is reported.
It is the same code whether it runs in ``propcrm replay``, in the service's worker or in a
partitioned worker on a bus: it knows nothing about where events come from.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import msgspec

from ..domain.decisions import Decision
from ..domain.events import Balance, Clock, Equity, News, Price, Rejected, Session
from ..domain.market import Market, NewsEntry, SymbolTable, Tick
from ..domain.program import LIVE, CompiledPack, PhaseProgram
from ..domain.rules.base import Ctx
from ..domain.state import AccountState
from .evaluate import apply, copy_state
from .lows import INFINITY, Low, LowPoint, Zone, limit_slots
from .marking import Marks


ProgramFor = Callable[[str], PhaseProgram | None]


def moved_by(st: AccountState, currency: str, market: Market) -> tuple[str, ...]:
    """The symbols whose ticks move the open positions of ``st`` (an account in ``currency``), sorted:
    each position's symbol and, for a profit currency other than the account's, its conversion pairs."""
    if st.status not in LIVE or not st.positions or not market.symbols:
        return ()
    moves = market.moves
    return tuple(sorted({s for pos in st.positions.values() for s in moves(pos.symbol, currency)}))


@contextmanager
def batch_gc(threshold: int = 200_000) -> Iterator[None]:
    """For a process that replays a file and exits (``propcrm replay``, the benches), not the service:
    what exists already is frozen out of the collector's sight, and the youngest generation is
    collected every ``threshold`` allocations instead of 700. The engine's states and events are not
    tracked by the collector at all (``gc=False`` structs); what a replay allocates and drops is
    mostly freed by reference counting, so the collector's passes found little and cost ~10%."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class Stats(msgspec.Struct):
    events: int = 0
    applied: int = 0
    fast_path: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unknown_account: int = 0
    after_end: int = 0
    failed: int = 0
    marked: int = 0  # account re-valuations by ticks
    exact_marked: int = 0  # …of which in Decimal, account by account (all of them without the vector screen)
    stale_ticks: int = 0  # ticks older than their symbol's last one: ignored
    decisions: Counter = msgspec.field(default_factory=Counter)
    by_rule: Counter = msgspec.field(default_factory=Counter)


class NoDedupe(set):
    """For callers whose store already applies each event once (the service's ``raw_events`` is
    unique per firm, source and id): event ids are then unique only per source, so the engine must
    not take two sources' equal ids for one event."""

    def __contains__(self, item: object) -> bool:
        return False

    def add(self, item: object) -> None:
        pass


class Snapshot(msgspec.Struct):
    """Everything an engine needs to continue exactly where it stopped."""

    states: list[AccountState]
    market: Market
    seen: list[str]
    last_clock: dt.datetime | None


class Engine:
    """``vector=True`` screens ticks with :mod:`.marking` (numpy, integers): the same decisions and
    states, far fewer Decimal re-valuations. States may then lag the last ticks until settled: read
    them through :meth:`state` (or call :meth:`settle` before reading ``states`` directly)."""

    def __init__(
        self,
        program_for: ProgramFor | CompiledPack,
        *,
        phase: str | None = None,
        dedupe: bool = True,
        vector: bool = False,
    ) -> None:
        if isinstance(program_for, CompiledPack):
            program = program_for.phase(phase)
            self.program_for: ProgramFor = lambda _account: program
        else:
            self.program_for = program_for
        self.states: dict[str, AccountState] = {}
        self.programs: dict[str, PhaseProgram] = {}
        self.market = Market()
        # symbol → accounts whose open positions its ticks move (visited in account order)
        self.holders: dict[str, dict[str, None]] = {}
        self.held: dict[str, tuple[str, ...]] = {}
        self.seen: set[str] = set() if dedupe else NoDedupe()
        self.last_clock: dt.datetime | None = None
        self.stats = Stats()
        self.rejected: list[Rejected] = []
        # near-breach watching (engine/lows.py): None = off, and the fast path pays nothing for it
        self.low_zone: Zone | None = None
        self.lows: dict[str, Low] | None = None
        self.marks: Marks | None = Marks(self) if vector else None

    # ------------------------------------------------------------------ state
    def state(self, account: str) -> AccountState | None:
        if self.marks is not None:
            self.marks.settle(account)
        return self.states.get(account)

    def settle(self) -> None:
        """Bring every state to the last tick (a no-op on the exact path)."""
        if self.marks is not None:
            self.marks.settle_all()

    def _open_account(self, account: str) -> AccountState | None:
        program = self.program_for(account)
        if program is None:
            return None
        st = program.new_state(account)
        self.states[account] = st
        self.programs[account] = program
        return st

    def snapshot(self) -> bytes:
        self.settle()
        return msgspec.msgpack.encode(
            Snapshot(
                states=list(self.states.values()),
                market=self.market.canonical(),
                seen=sorted(self.seen),
                last_clock=self.last_clock,
            )
        )

    def restore(self, blob: bytes) -> None:
        snap = msgspec.msgpack.decode(blob, type=Snapshot)
        self.states = {}
        self.programs = {}
        self.holders = {}
        self.held = {}
        self.market = snap.market
        for st in snap.states:
            program = self.program_for(st.account)
            if program is None or program.name != st.phase:
                raise ValueError(f"snapshot account {st.account}: no program for phase {st.phase}")
            self.adopt(st, program)
        self.seen = set(snap.seen)
        self.last_clock = snap.last_clock
        if self.lows is not None:
            self.lows = {}
        if self.marks is not None:
            self.marks.reset()

    # ------------------------------------------------------------------ worst points (engine/lows.py)
    def watch_lows(self, zone: Zone | None) -> None:
        """Note, for every account, the worst point within ``zone`` of its daily-loss and max-loss level per
        trading day (None: stop; what was noted is dropped)."""
        if zone is not None and zone.within_pct is None and zone.within_amount is None:
            zone = None
        if zone == self.low_zone:
            return
        self.low_zone = zone
        self.lows = None if zone is None else {}
        if self.marks is not None:  # the screen's thresholds follow
            for account in list(self.states):
                self.marks.touch(account)

    def drain_lows(self) -> dict[str, list[LowPoint]]:
        """The worst points noted since the last drain, per account (those with any), and start afresh."""
        lows = self.lows
        if not lows:
            return {}
        out = {account: list(low.points.values()) for account, low in lows.items() if low.points}
        self.lows = {}
        if self.marks is not None:  # their thresholds go back up to the zone's ceiling
            for account in lows:
                self.marks.touch(account)
        return out

    def _low(self, account: str, st: AccountState) -> Low:
        lows = self.lows
        assert lows is not None and self.low_zone is not None
        low = lows.get(account)
        if low is None:
            low = lows[account] = Low(limit_slots(self.programs[account]), self.low_zone, st)
        return low

    def low_below(self, account: str, st: AccountState) -> Decimal:
        """The equity at or under which an event of ``account`` must be measured (-Infinity: none)."""
        if self.lows is None:
            return -INFINITY
        return self._low(account, st).below

    def _note_low(self, account: str, st: AccountState, ts: dt.datetime, event_id: str) -> None:
        """Measure a state an evaluated event left (its levels or day may have moved)."""
        self._low(account, st).note(st, ts, event_id)

    def _note_low_fast(self, account: str, st: AccountState, ts: dt.datetime, event_id: str) -> None:
        """Measure an in-band equity update only when it is under the account's threshold."""
        low = self._low(account, st)
        if st.equity <= low.below:
            low.note(st, ts, event_id)

    # ------------------------------------------------------------------ events
    def _reject(self, ev: Any, kind: str, reason: str, line: int | None) -> None:
        self.rejected.append(
            Rejected(line=line, reason=reason, id=ev.id, account=getattr(ev, "account", None), kind=kind)  # type: ignore[arg-type]
        )

    def feed(self, events: Iterable[Any], lines: Sequence[int] | None = None) -> list[Decision]:
        """Apply events in order; returns the decisions they caused, in order.

        ``lines`` (the source line of each event) only serves the rejection reports.
        """
        out: list[Decision] = []
        states_get = self.states.get
        programs = self.programs
        seen = self.seen
        seen_add = seen.add
        stats = self.stats
        marks = self.marks
        lows = self.lows
        count = fast = 0
        for ev in events:
            count += 1
            eid = ev.id
            if eid in seen:
                stats.duplicates += 1
                self._reject(ev, "duplicate", "event id already applied; ignored", lines[count - 1] if lines else None)
                continue
            cls = type(ev)
            if cls is Equity:
                # The hot path. Inside the band nothing can be decided: record the equity (moving an
                # intraday trailing level on a new peak). The property tests hold this to apply().
                account = ev.account
                st = states_get(account)
                if st is not None:
                    if marks is not None:
                        marks.touch(account)
                    equity = ev.equity
                    ts = ev.ts
                    if (
                        st.low_watch < equity < st.high_watch
                        and st.last_ts <= ts < st.next_deadline
                        and ev.balance == st.balance
                    ):
                        seen_add(eid)
                        if st.marked:
                            st.tick_drift = equity - st.equity  # as PhaseProgram._equity records it
                        st.equity = equity
                        if equity > st.peak_watch:
                            programs[account].raise_peak(st)
                            if lows is not None and account in lows:
                                lows[account].refresh(st)  # a trailing level moved
                        st.last_ts = ts
                        fast += 1
                        if lows is not None:  # one look-up and one comparison unless it may be a new worst point
                            low = lows.get(ev.account)
                            if low is None or equity <= low.below:
                                self._note_low_fast(ev.account, st, ts, eid)
                        continue
            elif cls is Clock:
                seen_add(eid)
                self._clock(ev, lines[count - 1] if lines else None, out)
                continue
            elif cls is News:
                seen_add(eid)
                self._news(ev, out)
                continue
            elif cls is Price:
                seen_add(eid)
                self._price(ev, lines[count - 1] if lines else None, out)
                continue
            if self._account_event(ev, lines[count - 1] if lines else None, out):
                fast += 1
        stats.events += count
        stats.fast_path += fast
        stats.applied = stats.events - (
            stats.duplicates + stats.out_of_order + stats.unknown_account + stats.failed
        )
        return out

    # ------------------------------------------------------------------ ticks
    def set_symbols(self, table: SymbolTable | None) -> None:
        """Use ``table`` to mark positions to market (None: none is marked) and re-index the holders."""
        self.settle()
        self.market.set_symbols(table)
        self.holders = {}
        self.held = {}
        for account, st in self.states.items():
            self._reindex(account, st)
        if self.marks is not None:
            self.marks.reset()

    def adopt(self, st: AccountState, program: PhaseProgram) -> None:
        """Take over a stored state (the service's evaluation, a restore, a put-back), indexing its
        positions. The state it replaces is settled first: settling after would write that state's
        pending marks into ``st``."""
        if self.marks is not None:
            self.marks.touch(st.account)
        if self.lows is not None:  # its worst points so far were of the state it replaces
            self.lows.pop(st.account, None)
        self.states[st.account] = st
        self.programs[st.account] = program
        self._reindex(st.account, st)

    def drop(self, account: str) -> None:
        """Take ``account`` out of this engine (its state, program and index entries)."""
        if self.marks is not None:
            self.marks.touch(account)
        self.states.pop(account, None)
        self.programs.pop(account, None)
        if self.lows is not None:
            self.lows.pop(account, None)
        self._unindex(account)

    def _reindex(self, account: str, st: AccountState) -> None:
        """Keep ``holders`` (symbol → accounts whose positions a tick of it moves) true for ``account``."""
        symbols = moved_by(st, self.programs[account].currency, self.market)
        if self.marks is not None:
            self.marks.dirty.add(account)
        before = self.held.get(account, ())
        if symbols == before:
            return
        for symbol in before:
            if symbol not in symbols:
                holders = self.holders[symbol]
                del holders[account]
                if not holders:
                    del self.holders[symbol]
        for symbol in symbols:
            self.holders.setdefault(symbol, {})[account] = None
        if symbols:
            self.held[account] = symbols
        else:
            self.held.pop(account, None)

    def _unindex(self, account: str) -> None:
        if self.marks is not None:
            self.marks.touch(account)
        for symbol in self.held.pop(account, ()):
            holders = self.holders[symbol]
            holders.pop(account, None)
            if not holders:
                del self.holders[symbol]

    def _price(self, ev: Price, line: int | None, out: list[Decision]) -> None:
        """A tick: re-mark the positions it moves, for the accounts holding them only; inside the
        account's watch band only equity (and an intraday peak) moves, else every limit is checked."""
        tick = Tick(ev.ts, ev.bid, ev.ask, ev.id)
        market = self.market
        if not market.price(ev.symbol, tick):
            self.stats.stale_ticks += 1
            return
        if self.marks is not None:
            accounts = self.marks.tick(ev.symbol, ev.ts)
        else:
            holders = self.holders.get(ev.symbol)
            if not holders:
                return
            accounts = sorted(holders)  # in account order: the same after a snapshot is restored
        if self.marks is None:
            for account in accounts:
                self._tick_account(account, ev, tick, line, out)
            return
        resync = self.marks.resync
        for account in accounts:
            self._tick_account(account, ev, tick, line, out)
            resync(account)  # its rows take the new marks at once (else they are rebuilt at the next tick)

    def _tick_account(self, account: str, ev: Price, tick: Tick, line: int | None, out: list[Decision]) -> None:
        """The exact path of a tick for one holder: re-mark its positions in Decimal; inside its band
        only equity (and an intraday peak) moves, else every limit is checked."""
        st = self.states.get(account)
        if st is None:  # taken out of this engine by its owner (a set-aside account): forget it
            self._unindex(account)
            return
        if self.marks is not None:
            self.marks.touch(account)
        program = self.programs[account]
        if st.status not in LIVE:
            self._reindex(account, st)
            return
        market, stats, ts = self.market, self.stats, ev.ts
        positions, delta = program.remark(st, ev.symbol, market)
        if positions is None:
            return
        stats.marked += 1
        stats.exact_marked += 1
        equity = st.equity + delta
        if st.low_watch < equity < st.high_watch and ts < st.next_deadline and st.phase_start is not None:
            # Nothing can be decided inside the band: the same shortcut as an equity update.
            st.positions = positions
            st.marked = True
            st.equity = equity
            if equity > st.peak_watch:
                program.raise_peak(st)
                if self.lows is not None and account in self.lows:
                    self.lows[account].refresh(st)
            if self.lows is not None:
                self._note_low_fast(account, st, ts, ev.id)
            return
        new = copy_state(st)
        new.positions = positions
        ctx = Ctx(ev.id, ts, market, (ev.symbol, tick))
        try:
            program.on_tick(new, ts, delta, ctx)
        except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the tick
            stats.failed += 1
            self._reject(ev, "internal", f"tick not applied to {account}: {type(exc).__name__}: {exc}", line)
            return
        self.states[account] = new
        if self.lows is not None:
            self._note_low(account, new, ts, ev.id)
        decisions = ctx.finish()
        if decisions:
            self._count(decisions)
            out.extend(decisions)
        if new.status not in LIVE:
            self._reindex(account, new)

    def _account_event(self, ev: Any, line: int | None, out: list[Decision]) -> bool:
        """Everything but the in-band equity update; True when it took no evaluation at all."""
        account = ev.account
        if self.marks is not None:
            self.marks.touch(account)
        st = self.states.get(account)
        if st is None:
            st = self._open_account(account)
            if st is None:
                self.stats.unknown_account += 1
                self._reject(ev, "unknown_account", f"no rule pack is bound to account {account!r}", line)
                return False
        ts = ev.ts
        last = st.last_ts
        if last is not None and type(ev) is Balance and ev.at is not None:
            # applied at its place in the log: at the account's last event time, whatever its own stamp —
            # a replay of the same log applies it at the same point
            ev = msgspec.structs.replace(ev, ts=last)
            ts = last
        if last is not None and ts < last:
            self.stats.out_of_order += 1
            self._reject(
                ev,
                "out_of_order",
                f"event time {ts.isoformat()} is before the last event applied to {account} "
                f"({last.isoformat()}); not applied",
                line,
            )
            return False
        self.seen.add(ev.id)
        if st.status != "active" and st.status != "paused":
            self.stats.after_end += 1
            st.last_ts = ts
            return False
        if type(ev) is Session and ts < st.next_deadline:
            st.last_ts = ts  # logins feed the abuse analytics; no rule reads them
            return True
        try:
            new, decisions = apply(st, ev, self.programs[account], self.market)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
            self.stats.failed += 1
            self.seen.discard(ev.id)
            self._reject(ev, "internal", f"not applied: {type(exc).__name__}: {exc}", line)
            return False
        self.states[account] = new
        if self.lows is not None:
            self._note_low(account, new, ts, ev.id)
        if (new.positions is not st.positions or new.status != st.status) and (
            self.marks is not None or self.market.symbols or self.held
        ):  # (without a symbol table nothing is indexed: nothing to re-index)
            self._reindex(account, new)
        if decisions:
            self._count(decisions)
            out.extend(decisions)
        return False

    def _count(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.stats.decisions[d.kind] += 1
            self.stats.by_rule[(d.kind, d.rule)] += 1

    def _clock(self, ev: Clock, line: int | None, out: list[Decision]) -> None:
        ts = ev.ts
        if ev.account is not None:
            st = self.states.get(ev.account)
            due = [ev.account] if st is not None and st.next_deadline <= ts else []
        else:
            if self.last_clock is not None and ts < self.last_clock:
                self.stats.out_of_order += 1
                self.seen.discard(ev.id)
                self._reject(ev, "out_of_order", f"clock {ts.isoformat()} is before the last clock", line)
                return
            self.last_clock = ts
            # Only accounts with a deadline due are touched; the others have nothing to roll over.
            due = sorted(a for a, st in self.states.items() if st.next_deadline <= ts)
        for account in due:
            if self.marks is not None:
                self.marks.touch(account)
            st = self.states[account]
            if st.last_ts is not None and ts <= st.last_ts:
                continue
            new = copy_state(st)
            ctx = Ctx(ev.id, ts, self.market)
            try:
                self.programs[account].on_clock(new, ts, ctx)
            except Exception as exc:  # noqa: BLE001
                self.stats.failed += 1
                self._reject(ev, "internal", f"clock not applied to {account}: {type(exc).__name__}: {exc}", line)
                continue
            self.states[account] = new
            if self.lows is not None:
                self._note_low(account, new, ts, ev.id)
            decisions = ctx.finish()
            if decisions:
                self._count(decisions)
                out.extend(decisions)

    def _news(self, ev: News, out: list[Decision]) -> None:
        entry = NewsEntry.from_event(ev)
        if not self.market.add_news(entry):
            return
        for account in sorted(self.states):
            st = self.states[account]
            program = self.programs[account]
            if not program.news_rules or st.status not in ("active", "paused") or not program.news_may_concern(st, entry):
                continue
            if self.marks is not None:
                self.marks.touch(account)
                st = self.states[account]
            new = copy_state(st)
            ctx = Ctx(ev.id, ev.ts, self.market)
            program.on_news(new, entry, ctx)
            self.states[account] = new
            if self.lows is not None:
                self._note_low(account, new, ev.ts, ev.id)
            decisions = ctx.finish()
            if decisions:
                self._count(decisions)
                out.extend(decisions)
