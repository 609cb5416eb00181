"""The equity-points downsampling rule and the sampler the embedded driver feeds the engine through."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

from propcrm.domain.rules.limits import DailyLossRule
from propcrm.services.equity_points import DECISION_POINTS, PER_MINUTE, Point, Sampler, keep, minute_of

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)


def _p(i: int, equity: int, decisions=()) -> Point:
    return Point(T0 + dt.timedelta(seconds=i / 100), Decimal(equity), Decimal(100000), None, None, decisions)


def test_keep_takes_ends_extremes_and_the_earliest_decision_points_only():
    points = [_p(i, 100000 + (i * 37) % 500) for i in range(1000)]
    points[10] = _p(10, 1)
    points[20] = _p(20, 10**7)
    for i in range(100, 110):
        points[i] = _p(i, 100100, (("warning", "daily_loss"),))
    chosen = keep(points)
    assert len(chosen) <= PER_MINUTE
    assert {0, 999, 10, 20} <= chosen
    assert sorted(chosen - {0, 999, 10, 20}) == list(range(100, 100 + DECISION_POINTS))
    assert keep(points[:2]) == {0, 1} and keep([]) == set()


def test_minute_of_is_utc_minutes_since_the_epoch():
    assert minute_of(T0) == 1772445600 // 60  # 2026-03-02T10:00:00Z
    assert minute_of(T0 + dt.timedelta(seconds=59.999)) == minute_of(T0)
    assert minute_of(T0.replace(tzinfo=None)) == minute_of(T0)


class _Engine:
    """Applies equity events to one state, as the engine does, pulling them from the iterator it gets."""

    def __init__(self) -> None:
        self.states = {}

    def feed(self, events):
        for ev in events:
            if ev.account == "A1":
                st = self.states.setdefault("A1", SimpleNamespace(balance=Decimal(100000), levels=[Decimal(95000)],
                                                                  status="active", equity=None))
                st.equity = ev.equity
            elif ev.account is None and "A1" in self.states:  # a firm clock: moves the floor once
                self.states["A1"].levels = [Decimal(96000)]


def test_the_sampler_keeps_the_own_events_and_the_firm_events_with_decisions_as_the_replay_did():
    program = SimpleNamespace(limits=[])
    rule = object.__new__(DailyLossRule)  # only its type and slot matter here
    rule.slot = 0
    program.limits = [rule]
    engine = _Engine()
    sampler = Sampler(engine, "A1", program)

    def ev(eid, account, seconds, equity=None):
        return SimpleNamespace(id=eid, account=account, ts=T0 + dt.timedelta(seconds=seconds), equity=equity)

    engine.feed(sampler.watch([ev("c0", None, 0), ev("e1", "A1", 1, Decimal(99000)), ev("c1", None, 2),
                               ev("c2", None, 3), ev("e2", "A1", 4, Decimal(98000)), ev("e3", "A1", 5, Decimal(1))]))
    decisions = [SimpleNamespace(event_id=eid, kind="warning", rule="daily_loss") for eid in ("c1", "e2", "e2")]
    points = sampler.finish(decisions, refused=["e3"])
    # c0: no state yet; c1 caused a decision; c2 none; e3 was refused
    assert [(p.event_id, p.equity, p.daily_floor, p.decisions) for p in points] == [
        ("e1", Decimal(99000), Decimal(95000), ()),
        ("c1", Decimal(99000), Decimal(96000), (("warning", "daily_loss"),)),
        ("e2", Decimal(98000), Decimal(96000), (("warning", "daily_loss"),) * 2),
    ]
