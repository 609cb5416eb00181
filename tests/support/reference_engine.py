"""The engine's event loop as it was before issue 15's fast equity path (main at 05d01aa), frozen: the
property tests of tests/unit/engine/test_engine_paths.py hold the engine's current loop to it —
the same decisions, the same states byte for byte, the same applied ids, rejections and counters.
Only ``feed`` and ``_account_event`` are frozen; everything they call is the engine's own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from propcrm.domain.decisions import Decision
from propcrm.domain.events import Clock, Equity, News, Price, Session
from propcrm.engine.evaluate import apply
from propcrm.engine.runner import Engine


class ReferenceEngine(Engine):
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

