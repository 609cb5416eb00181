"""Tables of abuse analytics: account links, investigation cases with their accounts and notes, risk scores.

A case is never a ban: it is a risk officer's work item (open → under_review → confirmed | dismissed).
Payouts read open cases through :mod:`propcrm.services.cases`, so an account under investigation, or
linked to one that is, cannot be paid before a person has looked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, RawEvent, UtcDateTime, utcnow

CASE_OPEN_STATUSES = ("open", "under_review")
CASE_STATUSES = ("open", "under_review", "confirmed", "dismissed")


class AccountLink(Base):
    """Two accounts that share something: a trader, an IP (IPv4 exact, IPv6 by /64), a device, a payment method.

    Stored once per pair and shared value with ``account_a < account_b``; ``evidence`` says where it was seen.
    """

    __tablename__ = "account_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_a: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    account_b: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    via: Mapped[str] = mapped_column(String(16))  # trader | ip | device | payment
    value: Mapped[str] = mapped_column(String(200))  # the shared IP (or /64), device id, payment fingerprint, trader id
    first_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    evidence: Mapped[Any] = mapped_column(JSON, nullable=True)
    __table_args__ = (
        UniqueConstraint("firm_id", "account_a", "account_b", "via", "value"),
        Index("ix_account_links_a", "firm_id", "account_a"),
        Index("ix_account_links_b", "firm_id", "account_b"),
    )


class Case(Base):
    """An investigation: what a detector (or a person) found, the evidence, and where the review stands.

    ``fingerprint`` identifies the finding (detector + the accounts involved) so that a later analysis
    updates the same case instead of opening a duplicate.
    """

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    detector: Mapped[str] = mapped_column(String(32))  # linkage | hedging | copy | latency | risk_score | manual
    fingerprint: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # see CASE_STATUSES
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[int] = mapped_column(Integer, default=0)  # 0–100, how strong the evidence is
    evidence: Mapped[Any] = mapped_column(JSON, nullable=True)
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)  # the reason given on confirm / dismiss
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    __table_args__ = (UniqueConstraint("firm_id", "fingerprint"),)


class CaseAccount(Base):
    """The accounts a case is about."""

    __tablename__ = "case_accounts"
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True, index=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))


class CaseNote(Base):
    """The case's timeline: staff notes, status changes, new evidence from a later analysis."""

    __tablename__ = "case_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)  # None: the analysis
    kind: Mapped[str] = mapped_column(String(16))  # note | status | evidence | assign
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class RiskScore(Base):
    """An account's latest behavioural risk score (0–100) with its explanation (top features, percentiles)."""

    __tablename__ = "risk_scores"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    score: Mapped[int] = mapped_column(Integer)
    explanation: Mapped[Any] = mapped_column(JSON)
    computed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (Index("ix_risk_scores_firm_score", "firm_id", "score", "account_id"),)  # sort by risk (0007)


class AccountFingerprint(Base):
    """What identifies whoever uses an account: each IP (IPv4, or IPv6 /64), device, payment method seen.

    The linkage index: an incremental analysis finds every account sharing a new value with one query
    instead of re-reading the firm's history. Rebuilt by a full analysis.
    """

    __tablename__ = "account_fingerprints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    via: Mapped[str] = mapped_column(String(16))  # ip | device | payment
    value: Mapped[str] = mapped_column(String(200))
    first_seen: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (
        UniqueConstraint("firm_id", "via", "value", "account_id"),
        Index("ix_account_fingerprints_value", "firm_id", "via", "value"),
    )


class AnalysisWatermark(Base):
    """Where the firm's incremental analysis stands: the last ``raw_events.seq`` it has read, and the
    population the last full analysis saw (quantiles of each risk feature, to place a new score)."""

    __tablename__ = "analysis_watermarks"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    full_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    population: Mapped[Any] = mapped_column(JSON, nullable=True)


# the incremental analysis reads a firm's trades by time (counterparts of new trades inside a window)
Index("ix_raw_events_type_ts", RawEvent.firm_id, RawEvent.type, RawEvent.ts)

__all__ = ["CASE_OPEN_STATUSES", "CASE_STATUSES", "AccountFingerprint", "AccountLink", "AnalysisWatermark", "Case", "CaseAccount", "CaseNote", "RiskScore"]
