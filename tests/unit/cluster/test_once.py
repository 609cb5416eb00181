"""Once-by-id for platform events in the partition worker (cluster/once.py): repeats are refused, and
what is kept stays bounded by the window and the per-account cap, however long the history."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from propcrm.cluster.once import RecentIds
from propcrm.domain.events import Balance, Equity

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


def deal(i: int, at: dt.datetime, account: str = "A1") -> Balance:
    return Balance(id=f"deal-{i}", ts=at, account=account, amount=Decimal("1"), reason="deposit")


def reading(ms: int, account: str = "A1") -> Equity:
    return Equity(id=f"eq-0badcafe-{ms}", ts=T0, account=account, equity=Decimal("100000"), balance=Decimal("100000"))


def test_a_repeated_deal_is_refused_even_restamped_and_another_account_s_is_its_own():
    recent = RecentIds(window_s=60)
    assert recent.first("A1", deal(1, T0))
    assert not recent.first("A1", deal(1, T0))
    assert not recent.first("A1", deal(1, T0 + dt.timedelta(seconds=5)))  # re-read, stamped later by the runner
    assert recent.first("A2", deal(1, T0, account="A2"))


def test_an_equity_reading_at_or_below_the_last_number_is_a_repeat():
    recent = RecentIds()
    assert recent.first("A1", reading(1000))
    assert not recent.first("A1", reading(1000))
    assert not recent.first("A1", reading(999))
    assert recent.first("A1", reading(1001))
    assert len(recent) == 0  # readings keep one number per account, never their ids


def test_the_snapshot_round_trip_keeps_the_window_and_forgets_what_is_outside_it():
    recent = RecentIds(window_s=60)
    recent.first("A1", deal(1, T0))
    recent.first("A1", deal(2, T0 + dt.timedelta(seconds=30)))
    recent.first("A1", deal(3, T0 + dt.timedelta(seconds=90)))  # deal 1 is now 90 s behind: outside
    recent.first("A1", reading(5))
    back = RecentIds.load(recent.dump(), window_s=60)
    assert not back.first("A1", deal(2, T0)) and not back.first("A1", deal(3, T0)) and not back.first("A1", reading(5))
    assert back.first("A1", deal(1, T0 + dt.timedelta(seconds=91)))  # forgotten: the cost stays bounded


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5_000)), min_size=1, max_size=600),
       st.integers(1, 50))
def test_memory_is_bounded_and_a_repeat_inside_the_window_is_always_refused(steps, cap):
    recent = RecentIds(window_s=10, per_account=cap)
    clock = T0
    seen: dict[str, list[tuple[str, dt.datetime]]] = {}
    for number, (account_no, gap_ms) in enumerate(steps):
        clock += dt.timedelta(milliseconds=gap_ms)
        account = f"A{account_no}"
        assert recent.first(account, deal(number, clock, account))
        seen.setdefault(account, []).append((f"deal-{number}", clock))
        assert len(recent.ids[account]) <= 2 * cap
    recent.prune()
    for account, ids in seen.items():
        held = recent.ids.get(account, {})
        assert len(held) <= cap
        newest = ids[-1][1]
        # the newest ones (up to the cap) within the window are still refused
        for event_id, at in ids[-min(cap, len(ids)):]:
            if newest - at <= dt.timedelta(seconds=10):
                assert event_id in held
                number = int(event_id.split("-")[1])
                assert not recent.first(account, deal(number, newest, account))
