"""The leaderboard's entries: which traders take part, under which pseudonym, and whether staff hid them.

A row exists once a trader has opted in; opting out keeps it (``opted_in`` false) so that a staff hide
outlives an opt-out and a re-opt-in (services/leaderboard.py).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UtcDateTime, utcnow


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


__all__ = ["LeaderboardEntry"]
