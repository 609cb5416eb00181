"""Tables of the platform connections (issue 20): how a firm reaches its trading platforms.

``platform_connections`` — one row per connected platform server of a firm. ``name`` is what the firm's
accounts call their platform (``accounts.platform``) and what the events' ``source`` is; ``family``
names the connector (``mt5-web``, ``mt5-manager``, ``matchtrader``). ``settings`` holds what is not
secret (URL, manager login, groups, time zone, intervals) and ``secret`` the sealed credentials
(:mod:`propcrm.adapters.platforms.secrets`): never shown, never logged. ``cursor`` is the position to
resume the platform's stream from; it moves in the same transaction as the events it covers.

``platform_logins`` — the platform login of each account on a connection (both ways unique).

``calendar_sources`` — economic calendars fetched on a schedule (a file or a URL), feeding ``news``
events through ingestion.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UtcDateTime, utcnow


class PlatformConnection(Base):
    __tablename__ = "platform_connections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    settings: Mapped[Any] = mapped_column(JSON)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "name"),)


class PlatformLogin(Base):
    __tablename__ = "platform_logins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("platform_connections.id"), index=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    login: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("connection_id", "login", name="uq_platform_logins_connection_login"),
                      UniqueConstraint("connection_id", "account_id", name="uq_platform_logins_connection_account"))


class CalendarSource(Base):
    __tablename__ = "calendar_sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)  # an https:// URL or a file path
    format: Mapped[str] = mapped_column(String(16))  # auto | json | xml | csv | ics
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # for times without an offset
    interval_s: Mapped[int] = mapped_column(Integer, default=3600)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_fetched_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "name"),)
