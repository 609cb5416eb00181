"""The worst point of a batch: per watched account, limit and trading day, the event that brought equity
nearest a loss limit while inside a distance — what near-breach alerts report (``services/near_breach``).

An evaluation batch ends with one state per account; a dip towards a floor and a recovery inside the batch
leave no trace in it. The engine (:class:`~propcrm.engine.runner.Engine`) therefore notes, for the accounts
it is told to watch (:meth:`Engine.watch_lows`), every applied event whose equity lies within the
:class:`Zone` of the first daily-loss or max-loss level (the levels the accounts list and the chart show),
keeping the one with the smallest distance per (limit, trading day) — with the level as it stood at that
event, so a trailing floor that moved and a day that rolled over inside the batch are both measured right.
The driver drains the records after each batch (:meth:`Engine.drain_lows`).

Cost: nothing when no zone is set (the engine's fast path tests one local for ``None``). With a zone, an
event costs one dictionary look-up and one Decimal comparison against :attr:`Low.below` — the equity under
which the event could be a new worst point inside the zone — and only an event under it is measured.

Pure: no clock, no I/O; the same events give the same records.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Context, Decimal
from typing import NamedTuple

from ..domain.program import LIVE, PhaseProgram
from ..domain.rules.limits import DailyLossRule, MaxLossRule
from ..domain.state import AccountState

HUNDRED = Decimal(100)
INFINITY = Decimal("Infinity")
_UP = Context(prec=40, rounding=ROUND_CEILING)  # a ceiling on the safe side: the zone test itself is exact


class Zone(NamedTuple):
    """How near a limit counts: within ``within_pct`` % of equity and/or ``within_amount`` of money
    (either suffices; both ``None``: nothing is near)."""

    within_pct: Decimal | None
    within_amount: Decimal | None

    def within(self, distance: Decimal, equity: Decimal) -> bool:
        """Near but not crossed: ``0 < distance`` and within the amount or the percentage of equity."""
        if distance <= 0:
            return False
        amount, pct = self.within_amount, self.within_pct
        if amount is not None and distance <= amount:
            return True
        return pct is not None and equity > 0 and distance * HUNDRED <= pct * equity

    def ceiling(self, level: Decimal) -> Decimal:
        """An equity at or above which nothing is within the zone of ``level`` (rounded up)."""
        top = -INFINITY
        if self.within_amount is not None:
            top = _UP.add(level, self.within_amount)
        pct = self.within_pct
        if pct is not None:
            if pct >= HUNDRED:
                return INFINITY
            # distance·100 <= pct·equity with equity = level + distance  ⇔  equity <= level·100 / (100 − pct)
            top = max(top, _UP.divide(_UP.multiply(level, HUNDRED), HUNDRED - pct))
        return top


class LowPoint(NamedTuple):
    """The worst point of one limit on one trading day: the event, its equity, the level then, the distance."""

    rule: str  # daily_loss | max_loss
    trading_day: dt.date | None
    distance: Decimal
    equity: Decimal
    level: Decimal
    ts: dt.datetime
    event_id: str


_SLOTS: dict[int, tuple[PhaseProgram, tuple[tuple[str, int], ...]]] = {}


def limit_slots(program: PhaseProgram) -> tuple[tuple[str, int], ...]:
    """The (limit name, level slot) of the program's first daily-loss and first max-loss rule."""
    found = _SLOTS.get(id(program))
    if found is None or found[0] is not program:
        if len(_SLOTS) > 1024:
            _SLOTS.clear()
        slots = []
        for name, kind in (("daily_loss", DailyLossRule), ("max_loss", MaxLossRule)):
            rule = next((r for r in program.limits if isinstance(r, kind)), None)
            if rule is not None:
                slots.append((name, rule.slot))
        found = _SLOTS[id(program)] = (program, tuple(slots))
    return found[1]


class Low:
    """One watched account's worst points since the last drain, and the equity under which to look."""

    __slots__ = ("slots", "zone", "points", "below", "tops")

    def __init__(self, slots: tuple[tuple[str, int], ...], zone: Zone, st: AccountState) -> None:
        self.slots = slots
        self.zone = zone
        self.points: dict[tuple[str, dt.date | None], LowPoint] = {}
        self.below = INFINITY
        self.tops: dict[Decimal, Decimal] = {}  # level → the zone's ceiling for it (levels rarely move)
        self.refresh(st)

    def refresh(self, st: AccountState) -> None:
        """Recompute :attr:`below` for the state's levels and day: the highest equity that could still be
        a new worst point of some limit inside its zone (a level moved, a day began, a point was noted)."""
        below = -INFINITY
        if st.status in LIVE:
            levels, day, points, zone = st.levels, st.trading_day, self.points, self.zone
            for name, slot in self.slots:
                level = levels[slot]
                if not level.is_finite():
                    continue
                top = self.tops.get(level)
                if top is None:
                    if len(self.tops) > 8:
                        self.tops.clear()
                    top = self.tops[level] = zone.ceiling(level)
                best = points.get((name, day))
                if best is not None:
                    top = min(top, level + best.distance)
                if top > below:
                    below = top
        self.below = below

    def note(self, st: AccountState, ts: dt.datetime, event_id: str) -> None:
        """Measure the state an event left (call it when ``st.equity <= self.below``)."""
        if st.status in LIVE:
            equity, levels, day, points, zone = st.equity, st.levels, st.trading_day, self.points, self.zone
            for name, slot in self.slots:
                level = levels[slot]
                if not level.is_finite():
                    continue
                distance = equity - level
                best = points.get((name, day))
                if (best is None or distance < best.distance) and zone.within(distance, equity):
                    points[(name, day)] = LowPoint(name, day, distance, equity, level, ts, event_id)
        self.refresh(st)


__all__ = ["Low", "LowPoint", "Zone", "limit_slots"]
