"""The pure core: ``apply(state, event, program, market) -> (state', decisions)``.

No clock, no I/O: time comes from the event. ``apply`` never changes the state it is given: it
evaluates a copy, which replaces the state only once the whole event has been applied.

The engine's hot loop (``engine.runner.Engine.feed``) adds one shortcut that changes no result: an
equity update inside the state's watch band (above every floor and warning level, below every
equity target, before the next deadline, with the balance unchanged) only records the new equity,
and moves an intraday trailing level when it is a new peak. The property tests hold the shortcut to
this function event by event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..domain.decisions import Decision
from ..domain.market import Market
from ..domain.program import PhaseProgram
from ..domain.rules.base import Ctx
from ..domain.state import AccountState

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
