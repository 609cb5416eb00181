"""SQLAlchemy 2 models: the service's tables.

Every row that belongs to a firm carries ``firm_id`` and every repository query filters on it: one
firm never sees another's data. Money is :class:`Money` — NUMERIC on PostgreSQL, exact decimal text
on SQLite (whose NUMERIC affinity would turn it into a binary float). Times are timezone-aware UTC
(:class:`UtcDateTime` stores them naive in UTC on SQLite and restores the zone).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

UTC = dt.timezone.utc

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Money(TypeDecorator):
    """Exact decimal money: NUMERIC(24, 8) on PostgreSQL, decimal text on SQLite."""

    impl = Numeric(24, 8)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(24, 8, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, got {type(value).__name__}")
        if not value.is_finite():
            raise ValueError(f"money must be finite, got {value}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) if not isinstance(value, Decimal) else value


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Firm(Base):
    __tablename__ = "firms"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # suspended by the operator (migration 0022, services/firms.py): no login, token, API key or ingestion
    suspended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    suspended_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class Trader(Base):
    __tablename__ = "traders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    kyc_status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "email"),)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # admin | risk | finance | support | trader | operator
    trader_id: Mapped[int | None] = mapped_column(ForeignKey("traders.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # a one-time password (onboarding, a reset) must be replaced before anything else (migration 0022)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the user's sponsors (migration 0010): who created them, last reset their password, last set
    # their role; NULL = the installation's operator (command line, demo seed). services/users.py
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    password_set_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    role_set_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # two-factor login (migration 0014, services/totp.py): the base32 TOTP secret once enrolment starts;
    # the login asks for a code only after ``totp_enabled_at`` (the user proved their authenticator works);
    # sealed with the secret store's key since migration 0017 (services/totp.py), never in plain text
    totp_secret: Mapped[str | None] = mapped_column(String(400), nullable=True)
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # a code is used once
    __table_args__ = (UniqueConstraint("firm_id", "email"),)


class LoginChallenge(Base):
    """A login whose password was right and that waits for its second factor (services/totp.py): only a
    SHA-256 of the ticket (an HttpOnly cookie) is kept; it expires in minutes and allows a few codes."""

    __tablename__ = "login_challenges"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class RecoveryCode(Base):
    """One-time codes that stand in for a lost authenticator: only their argon2 hash is kept."""

    __tablename__ = "user_recovery_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    """A platform's credentials: the key id travels in a header, the secret signs each request."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    platform: Mapped[str] = mapped_column(String(64))
    secret: Mapped[str] = mapped_column(String(128))  # needed to verify HMACs; never logged or returned
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RulePackVersion(Base):
    __tablename__ = "rule_pack_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    pack_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | active | retired
    content_hash: Mapped[str] = mapped_column(String(80))
    body: Mapped[str] = mapped_column(Text)  # canonical JSON of the pack
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "pack_id", "version"),)


class SymbolTable(Base):
    """A firm's symbol table (domain.market.SymbolTable as canonical JSON): how its ticks become money."""

    __tablename__ = "symbol_tables"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    body: Mapped[str] = mapped_column(Text)  # {"symbols": [...]}, sorted by symbol
    symbols: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    pack_version_id: Mapped[int] = mapped_column(ForeignKey("rule_pack_versions.id"))
    account_size: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Account(Base):
    """A trading account on a platform; ``external_id`` is what the platform's events call it."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(String(64))
    login: Mapped[str] = mapped_column(String(200))
    trader_id: Mapped[int | None] = mapped_column(ForeignKey("traders.id"), nullable=True, index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"), nullable=True)
    pack_version_id: Mapped[int] = mapped_column(ForeignKey("rule_pack_versions.id"))
    phase: Mapped[str] = mapped_column(String(64))
    # active | paused | breached | passed | funded | suspended | halted | closed
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # the trading halt that stopped the account (status ``halted``; migration 0016, services/halts.py)
    halt_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    __table_args__ = (UniqueConstraint("firm_id", "external_id"),)


class RawEvent(Base):
    """Every accepted event, once: unique per firm, source and event id (the idempotency key)."""

    __tablename__ = "raw_events"
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # pending | applied | rejected (out of order, after the account's end, …) with the reason
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (
        UniqueConstraint("firm_id", "source", "event_id"),
        Index("ix_raw_events_pending", "status", "account_id", "seq"),
        # the worker's reads: an account's (or the firm's account-less) events after a position,
        # and the firm's news calendar
        Index("ix_raw_events_stream", "firm_id", "account_id", "seq"),
        Index("ix_raw_events_by_type", "firm_id", "type", "seq"),
    )


class Quarantine(Base):
    """Lines that could not be accepted (malformed, unknown account): kept, inspectable, re-submittable."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AccountState(Base):
    """The engine's state of an account (msgpack) and the last raw event it reflects."""

    __tablename__ = "account_states"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    balance: Mapped[Decimal] = mapped_column(Money)
    equity: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The figures the accounts list sorts and filters on, written with the state (migration 0007;
    # services.accounts.stored_figures). NULL: no such level yet (a daily floor before the first
    # trading day), no such rule, or a row written before 0007 (`propcrm accounts refresh-figures`).
    # The *_cents copies are the exact value floored to the cent (for indexes); *_bp are percentages
    # with two places as integer basis points (12.50 % -> 1250).
    daily_floor: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    daily_distance: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    daily_distance_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_loss_level: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    max_loss_distance: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    max_loss_distance_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nearest_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)  # min distance % of equity
    target_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)  # target progress %
    trading_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # (migration 0016) bumped whenever anything but the evaluation worker rewrites ``state`` (a re-bind to
    # another pack version, a cleared breach): a copy of the state kept in memory is stale once it differs
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # (migration 0020) when time alone can next change the state (PhaseProgram.next_due / news_until): a
    # firm ``clock`` before ``next_due`` and a ``news`` entry later than ``news_until`` (NULL: none can)
    # leave it as it is, so the worker catches the account up only once one can. ``next_due`` NULL:
    # unknown (a row written before 0020): always caught up.
    next_due: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    news_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # (firm_id, figure, account_id): a sorted page of the list is a walk along one index
    __table_args__ = (
        Index("ix_account_states_changed", "firm_id", "updated_at"),
        Index("ix_account_states_daily", "firm_id", "daily_distance_cents", "account_id"),
        Index("ix_account_states_max_loss", "firm_id", "max_loss_distance_cents", "account_id"),
        Index("ix_account_states_nearest", "firm_id", "nearest_bp", "account_id"),
        Index("ix_account_states_target", "firm_id", "target_bp", "account_id"),
        Index("ix_account_states_days", "firm_id", "trading_days", "account_id"),
    )


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    event_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    event_id: Mapped[str] = mapped_column(String(200))
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    threshold: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the decision as the engine's NDJSON line
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # (migration 0016) set when a re-bind's replay under the new pack version no longer makes this decision
    superseded_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # (migration 0008) the dashboard's recent decisions of a firm, by time; and an account's decisions
    # by time — without the second, SQLite (no planner statistics) walks the first, the whole firm's
    # decisions, to page one account's newest first
    __table_args__ = (
        Index("ix_decisions_firm_ts", "firm_id", "ts"),
        Index("ix_decisions_account_ts", "firm_id", "account_id", "ts"),
    )


class Trade(Base):
    """One position of an account as the platform traded it (the trade-history projection, migration 0015).

    Written by the evaluation write path (:mod:`propcrm.services.trades`) in the transaction of the
    batch's decisions, in both deployments, from the trade events the engine accepted: opened with
    ``trade_opened``, each ``trade_closed`` (partial closes included) adds its lots, price, profit and
    costs and is kept in :class:`TradeClose`. ``status`` is ``open`` until the closed lots reach the
    opened lots. A close of a position opened before propcrm saw the account has no open side (NULL).
    Money sums are exact; ``net`` = profit + commission + swap (costs signed, a charge < 0)."""

    __tablename__ = "trades"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    position: Mapped[str] = mapped_column(String(200))
    symbol: Mapped[str | None] = mapped_column(String(200), nullable=True)
    side: Mapped[str | None] = mapped_column(String(4), nullable=True)  # buy | sell
    lots: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # opened
    open_ts: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    open_price: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    open_event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: when the platform received the order (``trade_opened.order_ts``; the latency analysis compares it
    #: with the fill), NULL when not sent (migration 0021)
    order_ts: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: the open's lots and price as the platform wrote them ("0.50 2040.50"; NUMERIC(24, 8) keeps the
    #: value, not the text), for evidence a trader recognises (migration 0021)
    as_sent: Mapped[str | None] = mapped_column(String(80), nullable=True)
    closed_lots: Mapped[Decimal] = mapped_column(Money)
    close_ts: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)  # the last close
    close_price: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # lot-weighted over the closes
    profit: Mapped[Decimal] = mapped_column(Money)
    commission: Mapped[Decimal] = mapped_column(Money)
    swap: Mapped[Decimal] = mapped_column(Money)
    net: Mapped[Decimal] = mapped_column(Money)
    closes: Mapped[int] = mapped_column(Integer, default=0)
    held_s: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # open to final close, seconds
    status: Mapped[str] = mapped_column(String(8))  # open | closed
    __table_args__ = (
        # a journal page (closed, newest first) and an open position's lookup by the write path
        Index("ix_trades_journal", "firm_id", "account_id", "status", "close_ts", "id"),
        Index("ix_trades_position", "account_id", "position", "status"),
    )


class TradeClose(Base):
    """One ``trade_closed`` event of a :class:`Trade` (a partial or the final close)."""

    __tablename__ = "trade_closes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    trade_id: Mapped[int] = mapped_column(ForeignKey("trades.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(200))
    event_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    lots: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    profit: Mapped[Decimal] = mapped_column(Money)
    commission: Mapped[Decimal] = mapped_column(Money)
    swap: Mapped[Decimal] = mapped_column(Money)
    net: Mapped[Decimal] = mapped_column(Money)
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    as_sent: Mapped[str | None] = mapped_column(String(80), nullable=True)  # lots and price as written (0021)
    # the daily P/L calendar and today's closed P/L: an account's closes by time
    __table_args__ = (Index("ix_trade_closes_account_ts", "firm_id", "account_id", "ts"),)


class AccountActivity(Base):
    """What an account did, in the order it was evaluated: each accepted ``trade_opened``,
    ``trade_closed`` and ``session`` (login) event, one row (migration 0021).

    Written by the evaluation write path with the trade projection (:mod:`propcrm.services.trades`), in
    the transaction of the batch's decisions, in both deployments. The abuse analysis reads it instead of
    the event log: ``id`` is its watermark (what is new since the last pass), the opens' ``ts`` find the
    counterparts in time of new trades, and ``ip``/``device`` (a login's, or an open's when the platform
    sent them) are the linkage evidence. ``ip`` is the network accounts are linked by (an IPv4 address,
    an IPv6 /64: :func:`propcrm.analytics.frame.network_of`); both are clipped to the column."""

    __tablename__ = "account_activity"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(8))  # opened | closed | session
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ip: Mapped[str | None] = mapped_column(String(200), nullable=True)
    device: Mapped[str | None] = mapped_column(String(200), nullable=True)
    __table_args__ = (
        Index("ix_account_activity_firm", "firm_id", "id"),
        Index("ix_account_activity_account", "account_id", "id"),
        Index("ix_account_activity_kind_ts", "firm_id", "kind", "ts"),
    )


class EquityPoint(Base):
    """The account chart's series: equity, balance and the levels the chart draws after an evaluated event,
    downsampled as written (migration 0023, :mod:`propcrm.services.equity_points`).

    Written by the evaluation write path in the transaction of the batch's decisions, in both deployments.
    Per account and UTC minute (``minute``: minutes since the epoch) at most the first, the last, the
    lowest- and the highest-equity point and up to four points that carry decisions are kept; ``decisions``
    holds those as ``kind: rule`` lines."""

    __tablename__ = "equity_points"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    minute: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    equity: Mapped[Decimal] = mapped_column(Money)
    balance: Mapped[Decimal] = mapped_column(Money)
    daily_floor: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    max_loss: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    decisions: Mapped[str | None] = mapped_column(String(400), nullable=True)
    __table_args__ = (Index("ix_equity_points_account", "account_id", "minute", "ts"),)


class EquityRollup(Base):
    """How far an account's equity points are rolled up (migration 0028,
    :mod:`propcrm.services.equity_rollup`): before ``hours_until`` a stored hour of a trading day keeps only
    its first, last and extreme points and the points with decisions; before ``days_until`` a trading day
    does. Both are minute numbers (``EquityPoint.minute``); only ever moved forward.

    No foreign keys, on purpose: inserting a row that references ``accounts`` takes a key-share lock on the
    account's row on PostgreSQL, and the evaluation worker claims accounts with ``FOR UPDATE SKIP LOCKED`` —
    it would skip the account while a roll-up chunk is open."""

    __tablename__ = "equity_rollups"
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    firm_id: Mapped[str] = mapped_column(String(64))
    hours_until: Mapped[int] = mapped_column(BigInteger, default=0)
    days_until: Mapped[int] = mapped_column(BigInteger, default=0)
    rolled_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class Override(Base):
    """A risk officer clearing a decision (the decision stays) or stopping an account, with a reason."""

    __tablename__ = "overrides"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(32))  # clear_breach | emergency_stop
    reason: Mapped[str] = mapped_column(Text)
    actor_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditEntry(Base):
    """Append-only, hash-chained: each entry carries the previous hash and a SHA-256 of itself."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    firm_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC-SHA256(audit key, hash) when an audit key is configured (migration 0011)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the entry's place in its firm's chain (firm_id NULL: the operators' chain); NULL: written before
    # migration 0027, in the one global chain linked by seq (services/audit.py)
    chain_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    # the audit viewer's filters, newest first: by action, by entity, by time (migration 0008)
    __table_args__ = (
        Index("ix_audit_log_firm_action", "firm_id", "action", "seq"),
        Index("ix_audit_log_firm_entity", "firm_id", "entity", "entity_id", "seq"),
        Index("ix_audit_log_firm_ts", "firm_id", "ts"),
        # one entry per place in a chain; the tail read and the per-chain walk of verify (migration 0027)
        Index("ux_audit_log_chain", text("coalesce(firm_id, '')"), "chain_seq", unique=True),
    )


class OutboxMessage(Base):
    """A side effect to perform after commit: platform command, e-mail, webhook, in-app notification."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSON)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | sent | dead | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TradingHalt(Base):
    """A kill switch thrown on a group of a firm's accounts (scope, who, why, how many) and its resume."""

    __tablename__ = "trading_halts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    scope: Mapped[Any] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    accounts: Mapped[int] = mapped_column(Integer)  # accounts the halt stopped
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    resumed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    resumed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    resume_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    resumed: Mapped[int | None] = mapped_column(Integer, nullable=True)  # accounts the resume let trade again


class Notification(Base):
    """The in-app list per user."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    read_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


# Feature tables live beside this module and share its metadata; importing them here registers them.
from . import models_analytics, models_cluster, models_lifecycle  # noqa: E402,F401
from . import models_platforms  # noqa: E402,F401  (issue 20: platform connections)
from . import models_leaderboard  # noqa: E402,F401  (issue 17: the opt-in leaderboard)
from . import models_tenants  # noqa: E402,F401  (issue 16: a firm's own settings)
