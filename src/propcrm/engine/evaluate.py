"""The pure core: ``apply(state, event, program, market) -> (state', decisions)``.

No clock, no I/O: time comes from the event. ``apply`` never changes the state it is given. The
engine's hot loop uses :func:`step`, which is the same function with two shortcuts that do not change
any result: an equity update that stays inside the state's watch band (above every floor and
warning level, below every trailing peak and equity target, before the next deadline, with the
balance unchanged) only records the new equity; anything else is evaluated on a copy that replaces
the state only when the whole event has been applied.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..domain.decisions import Decision
from ..domain.events import Equity
from ..domain.market import Market
from ..domain.program import PhaseProgram
from ..domain.rules.base import Ctx
from ..domain.state import AccountState

_NO_DECISIONS: list[Decision] = []


def copy_state(st: AccountState) -> AccountState:
    """A copy that shares nothing mutable with ``st`` (positions are replaced, never mutated)."""
    new = msgspec.structs.replace(st)
    new.levels = list(st.levels)
    new.peaks = list(st.peaks)
    new.counts = list(st.counts)
    return new


def apply(st: AccountState, ev: Any, program: PhaseProgram, market: Market) -> tuple[AccountState, list[Decision]]:
    """Apply one account event; returns the new state and the decisions, in their deterministic order."""
    new = copy_state(st)
    ctx = Ctx(ev.id, ev.ts, market)
    program.apply(new, ev, ctx)
    return new, ctx.finish()


def step(st: AccountState, ev: Any, program: PhaseProgram, market: Market) -> tuple[AccountState, list[Decision]]:
    """:func:`apply` with the in-band shortcut; may return ``st`` itself, updated."""
    if type(ev) is Equity:
        equity = ev.equity
        if (
            ev.ts < st.next_deadline
            and st.low_watch < equity < st.high_watch
            and ev.balance == st.balance
        ):
            st.equity = equity
            st.last_ts = ev.ts
            return st, _NO_DECISIONS
    return apply(st, ev, program, market)
