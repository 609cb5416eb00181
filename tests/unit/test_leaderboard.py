"""The leaderboard's pure parts: the size filter ranks within the size, query values fall back to defaults
instead of failing, and the per-process board cache keeps a board for its TTL while the firm's entries
are unchanged, computes once for many readers and forgets a firm's boards on demand."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from propcrm.services import leaderboard
from propcrm.services.errors import Invalid
from propcrm.services.leaderboard import Board, BoardCache, Standing

UTC = dt.timezone.utc


def standing(rank: int, name: str, size: str, pct: str) -> Standing:
    return Standing(rank=rank, pseudonym=name, kind="challenge", size=Decimal(size), currency="USD",
                    return_pct=Decimal(pct), net=Decimal(pct) * 1000, trades=1, entry_id=rank)


BOARD = Board(period="30d", since=None, computed_at=dt.datetime(2026, 12, 1, tzinfo=UTC),
              rows=(standing(1, "A", "100000", "3.1"), standing(2, "B", "50000", "2.0"),
                    standing(3, "C", "100000", "-1.0")))


def test_a_size_filter_ranks_within_that_size_and_a_limit_cuts_the_tail():
    assert [(r.rank, r.pseudonym) for r in BOARD.filtered(Decimal("100000"))] == [(1, "A"), (2, "C")]
    assert [(r.rank, r.pseudonym) for r in BOARD.filtered(None)] == [(1, "A"), (2, "B"), (3, "C")]
    assert [r.pseudonym for r in BOARD.filtered(None, limit=2)] == ["A", "B"]
    assert BOARD.filtered(Decimal("25000")) == ()


def test_query_values_fall_back_to_defaults():
    assert leaderboard.period_of("7d") == "7d"
    for bad in ("", "8d", None, "all; drop", 7):
        assert leaderboard.period_of(bad) == leaderboard.DEFAULT_PERIOD
    assert leaderboard.size_of("100000") == Decimal("100000")
    for bad in ("", "1e5", "-5", "10.5", "１００", "9" * 16, None):
        assert leaderboard.size_of(bad) is None, bad


def test_the_cache_keeps_a_board_for_its_ttl_and_forgets_a_firm(monkeypatch):
    now = [0.0]
    computed = []

    def compute(session, *, firm_id, period):
        computed.append((firm_id, period))
        return BOARD

    monkeypatch.setattr(leaderboard, "compute", compute)
    version = {"fa": (1, 1), "fb": (1, 1)}
    cache = BoardCache(ttl=60, clock=lambda: now[0], version=lambda session, firm_id: version[firm_id])
    for _ in range(3):
        assert cache.board(None, firm_id="fa", period="30d") is BOARD
    cache.board(None, firm_id="fb", period="30d")
    assert computed == [("fa", "30d"), ("fb", "30d")]
    now[0] = 59.9
    cache.board(None, firm_id="fa", period="30d")
    assert len(computed) == 2
    now[0] = 60.0
    cache.board(None, firm_id="fa", period="30d")
    cache.board(None, firm_id="fb", period="30d")
    assert computed[2:] == [("fa", "30d"), ("fb", "30d")]
    cache.forget("fa")
    cache.board(None, firm_id="fa", period="30d")
    cache.board(None, firm_id="fb", period="30d")
    assert computed[4:] == [("fa", "30d")]
    version["fb"] = (2, 2)  # an entry of fb changed (in any process): its board is computed again
    cache.board(None, firm_id="fa", period="30d")
    cache.board(None, firm_id="fb", period="30d")
    assert computed[5:] == [("fb", "30d")]


def test_a_trader_with_several_accounts_appears_once_with_their_best():
    rows = (replace(standing(1, "A", "100000", "3.1"), entry_id=7), replace(standing(2, "B", "50000", "2.0"), entry_id=8),
            replace(standing(3, "A", "50000", "1.0"), entry_id=7), replace(standing(4, "C", "100000", "-1.0"), entry_id=9))
    board = Board(period="30d", since=None, computed_at=dt.datetime(2026, 12, 1, tzinfo=UTC), rows=rows)
    assert [(r.rank, r.pseudonym, r.return_pct) for r in board.filtered(None)] == [
        (1, "A", Decimal("3.1")), (2, "B", Decimal("2.0")), (3, "C", Decimal("-1.0"))]
    # within one size, the trader's best of that size
    assert [(r.rank, r.pseudonym, r.return_pct) for r in board.filtered(Decimal("50000"))] == [
        (1, "B", Decimal("2.0")), (2, "A", Decimal("1.0"))]


def test_a_trading_day_starts_at_the_packs_day_start_in_its_timezone():
    day = leaderboard.trading_day
    ny = "America/New_York"
    # 17:00 New York: 21:59 UTC in summer is 17:59 local, already the next trading day; 20:59 UTC is not
    assert day(dt.datetime(2026, 7, 1, 20, 59, tzinfo=UTC), zone=ny, day_start="17:00") == dt.date(2026, 6, 30)
    assert day(dt.datetime(2026, 7, 1, 21, 0, tzinfo=UTC), zone=ny, day_start="17:00") == dt.date(2026, 7, 1)
    # in winter the same local boundary is 22:00 UTC
    assert day(dt.datetime(2026, 12, 1, 21, 59, tzinfo=UTC), zone=ny, day_start="17:00") == dt.date(2026, 11, 30)
    assert day(dt.datetime(2026, 12, 1, 22, 0, tzinfo=UTC), zone=ny, day_start="17:00") == dt.date(2026, 12, 1)
    assert day(dt.datetime(2026, 12, 1, 0, 0, tzinfo=UTC), zone="UTC", day_start="00:00") == dt.date(2026, 12, 1)


def test_fairness_thresholds_are_checked_before_anything_is_written():
    session = object()  # never touched: every refusal comes first
    for trades, days, field in ((0, 1, "min_trades"), (5, 0, "min_days"), (True, 1, "min_trades"),
                                ("5", 2, "min_trades"), (5, 2.0, "min_days"), (1001, 2, "min_trades"),
                                (2, 3, "min_days")):
        with pytest.raises(Invalid, match=field):
            leaderboard.set_fairness(session, firm_id="fa", min_trades=trades, min_days=days, actor="t")
    assert leaderboard.Fairness() == leaderboard.Fairness(min_trades=5, min_days=2)
