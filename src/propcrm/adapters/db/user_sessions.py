"""Staff and trader login sessions: only a SHA-256 of each token is stored (migration ``0002``).

Kept beside :mod:`models` rather than in it so that the sessions table can evolve with the API
without touching the core schema; it shares the models' ``Base`` (and so their metadata and naming).
A token itself is never stored: a copy of this table does not let anyone log in.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UtcDateTime, utcnow


class UserSession(Base):
    """One login: a bearer token or session cookie, until it expires or is revoked (logout)."""

    __tablename__ = "user_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the token
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
