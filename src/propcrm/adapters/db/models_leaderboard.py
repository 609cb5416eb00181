"""The leaderboard's entries: which traders take part, under which pseudonym, and whether staff hid them.

A row exists once a trader has opted in; opting out keeps it (``opted_in`` false) so that a staff hide
outlives an opt-out and a re-opt-in (services/leaderboard.py).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from .models import Account, Base, UtcDateTime, utcnow


class LeaderboardEntry(Base):
    __tablename__ = "leaderboard_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"))
    pseudonym: Mapped[str] = mapped_column(String(40))
    pseudonym_key: Mapped[str] = mapped_column(String(40))  # casefolded: unique per firm
    opted_in: Mapped[bool] = mapped_column(Boolean, default=True)
    opted_in_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    hidden_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    hidden_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    hidden_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "trader_id", name="uq_leaderboard_entries_trader"),
                      UniqueConstraint("firm_id", "pseudonym_key", name="uq_leaderboard_entries_pseudonym"),
                      Index("ix_leaderboard_entries_listed", "firm_id", "opted_in", "hidden_at"),
                      Index("ix_leaderboard_entries_changed", "firm_id", "updated_at"))


class LeaderboardSettings(Base):
    """A firm's fairness thresholds (migration 0024); no row: the defaults of services/leaderboard.py."""

    __tablename__ = "leaderboard_settings"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    min_trades: Mapped[int] = mapped_column(Integer)  # closes in the period to be ranked
    min_days: Mapped[int] = mapped_column(Integer)  # distinct trading days with a close in the period
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


# A pseudonym may not be one of the firm's account ids or logins, compared without case: these expression
# indexes make that check two index probes instead of a walk of the firm's accounts (migration 0024).
_accounts = Account.__table__
Index("ix_accounts_external_id_folded", _accounts.c.firm_id, func.lower(_accounts.c.external_id))
Index("ix_accounts_login_folded", _accounts.c.firm_id, func.lower(_accounts.c.login))

__all__ = ["LeaderboardEntry", "LeaderboardSettings"]
