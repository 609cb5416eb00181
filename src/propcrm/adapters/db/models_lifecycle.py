"""Tables of the trader lifecycle: leads, stages and their history, orders and discount codes, the
communication log, payouts with their approvals, scalings, and a firm's lifecycle settings.

Money is :class:`Money` (exact), times :class:`UtcDateTime` (aware UTC), as everywhere.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, Money, UtcDateTime, utcnow


class LifecycleSettings(Base):
    """Per firm: the amount above which a payout needs two approvers, and how scaling is applied."""

    __tablename__ = "lifecycle_settings"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    dual_approval_over: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # None: never two
    scaling_mode: Mapped[str] = mapped_column(String(16), default="approval")  # auto | approval
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    source: Mapped[str] = mapped_column(String(64))  # where the lead came from: web, affiliate:xyz, event…
    consent: Mapped[bool] = mapped_column(Boolean)  # agreed to be contacted
    consent_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | converted | lost
    lost_reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)  # migration 0022
    trader_id: Mapped[int | None] = mapped_column(ForeignKey("traders.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "email"),)


class TraderStage(Base):
    """Where a trader stands in the firm (see ``domain.lifecycle``), and KYC's details beside ``traders.kyc_status``."""

    __tablename__ = "trader_stages"
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16), default="registered")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    kyc_reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    kyc_updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    kyc_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class StageChange(Base):
    """Every lifecycle transition: from, to, who, why (also in the audit chain)."""

    __tablename__ = "stage_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"), index=True)
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class DiscountCode(Base):
    __tablename__ = "discount_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    percent_off: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    amount_off: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "code"),)


class Order(Base):
    """A purchase (or a reset) of a product; its payment status is set by the payment provider's webhook."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    kind: Mapped[str] = mapped_column(String(16), default="purchase")  # purchase | reset
    replaces_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    list_price: Mapped[Decimal] = mapped_column(Money)
    discount_code_id: Mapped[int | None] = mapped_column(ForeignKey("discount_codes.id"), nullable=True)
    discount: Mapped[Decimal] = mapped_column(Money)
    amount: Mapped[Decimal] = mapped_column(Money)  # what the trader pays
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|paid|failed|refunded
    provider_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    platform: Mapped[str] = mapped_column(String(64), default="demo")  # where the challenge account is created
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    refund_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    refunded_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Communication(Base):
    """The trader's timeline: notifications and e-mails sent (through the outbox), staff notes, messages."""

    __tablename__ = "communications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"))
    kind: Mapped[str] = mapped_column(String(16))  # notification | note | message_in | message_out
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))  # actor text of the user, or "system"
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (Index("ix_communications_trader", "firm_id", "trader_id", "id"),)


class KycDocument(Base):
    """A file a trader's identity is checked from (services/kyc_documents.py). The bytes live in the
    document store outside the web root under ``storage_key``; the row says what it is and how it was judged."""

    __tablename__ = "kyc_documents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"))
    kind: Mapped[str] = mapped_column(String(32))  # id_document | proof_of_address | selfie | other
    filename: Mapped[str] = mapped_column(String(200))  # as uploaded, cleaned; never a path
    content_type: Mapped[str] = mapped_column(String(64))  # from the file's own bytes, not the browser's word
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(80), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | approved | rejected
    uploaded_by: Mapped[str] = mapped_column(String(200))
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    review_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    __table_args__ = (Index("ix_kyc_documents_trader", "firm_id", "trader_id", "id"),
                      Index("ix_kyc_documents_status", "firm_id", "status"))


class SupportConversation(Base):
    """A trader's conversation with the firm's support desk (services/support.py): one a trader, opened
    (again) by the trader's message, given to a staff member, closed when answered."""

    __tablename__ = "support_conversations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    last_message_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    waiting_on: Mapped[str] = mapped_column(String(16), default="firm")  # firm | trader: whose turn it is
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "trader_id"),
                      Index("ix_support_conversations_inbox", "firm_id", "status", "last_message_at"))


class Payout(Base):
    """A payout request and everything decided about it.

    ``open_slot`` is 1 while the request is open (requested or prepared) and NULL after: the unique
    constraint lets an account have at most one open request, on every backend.
    """

    __tablename__ = "payouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    trader_id: Mapped[int | None] = mapped_column(ForeignKey("traders.id"), nullable=True, index=True)
    lineage: Mapped[str] = mapped_column(String(200))  # the challenge account's external id
    status: Mapped[str] = mapped_column(String(16), default="requested", index=True)
    # requested | prepared | approved | rejected | refused (a request that failed its checks)
    open_slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    prepared_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    profit: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    penalties: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    manual_deduction: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    deduction_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    split_pct: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # the account's split
    # of the payable profit, the part carried over by a scaling and paid at the split it was earned at
    # (the first payout of a scaled account; see ``steps`` for each part and its split)
    carried_profit: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    trader_amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    firm_amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    withdrawal: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    approvals_needed: Mapped[int] = mapped_column(Integer, default=1)
    checks: Mapped[Any] = mapped_column(JSON, nullable=True)
    steps: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # a rejection's reason, shown to the trader
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the withdrawal's balance event
    state_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)  # account_states.last_seq when prepared
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    prepared_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # how the trader is paid (migration 0015): the method and destination the trader gave with the
    # request, and finance's "sent" step after approval with the payment's reference
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)  # services.payouts.METHODS
    destination: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payment_reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    sent_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    __table_args__ = (UniqueConstraint("firm_id", "account_id", "open_slot", name="one_open_per_account"),)


class Certificate(Base):
    """A certificate of an achievement (a phase passed, funded, a payout), shareable: its ``id`` is an
    unguessable token, and ``GET /verify/{id}`` shows anyone its ``facts`` (migration 0015). One per
    achievement (``subject``: ``decision:<id>``, ``account:<id>``, ``payout:<id>``)."""

    __tablename__ = "certificates"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    trader_id: Mapped[int] = mapped_column(ForeignKey("traders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # phase_passed | funded | payout
    subject: Mapped[str] = mapped_column(String(64))
    facts: Mapped[Any] = mapped_column(JSON)
    issued_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("firm_id", "kind", "subject", name="one_certificate_per_achievement"),)


class PayoutApproval(Base):
    __tablename__ = "payout_approvals"
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class Scaling(Base):
    """A capital scaling of a funded account: from which account and pack version to which, and why."""

    __tablename__ = "scalings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    lineage: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | applied | rejected
    open_slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_size: Mapped[Decimal] = mapped_column(Money)
    to_size: Mapped[Decimal] = mapped_column(Money)
    from_split: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    to_split: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    to_pack_version_id: Mapped[int | None] = mapped_column(ForeignKey("rule_pack_versions.id"), nullable=True)
    new_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    carried_profit: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    # the carried profit by the split it is paid at, the split in force when it was earned (the old
    # account's, tier included): [{"amount": "300", "split_pct": "80", "source": "CH-1.phase-2.funded"}]
    carried_parts: Mapped[Any] = mapped_column(JSON, nullable=True)
    checks: Mapped[Any] = mapped_column(JSON, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    __table_args__ = (UniqueConstraint("firm_id", "account_id", "open_slot", name="one_open_scaling"),)


class ProviderDelivery(Base):
    """A signed provider webhook already taken (its key and signature): the same signed request
    delivered again inside the timestamp window is recognised and changes nothing."""

    __tablename__ = "provider_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(80))
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("key_id", "signature", name="one_delivery"),)


LIFECYCLE_TABLES = ("lifecycle_settings", "leads", "trader_stages", "stage_changes", "discount_codes", "orders",
                    "communications", "payouts", "payout_approvals", "scalings", "provider_deliveries")

__all__ = ["LIFECYCLE_TABLES", "Communication", "DiscountCode", "Lead", "LifecycleSettings", "Order", "Payout", "PayoutApproval",
           "ProviderDelivery", "Scaling", "StageChange", "TraderStage"]


class StaffTask(Base):
    """A piece of staff work (services/tasks.py): attached to a trader, an account or a case, given to a staff
    member, due on a day, done once. Firms track follow-ups here instead of in notes."""

    __tablename__ = "staff_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    title: Mapped[str] = mapped_column(String(200))
    details: Mapped[str | None] = mapped_column(Text, nullable=True)
    trader_id: Mapped[int | None] = mapped_column(ForeignKey("traders.id"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    due_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # a calendar day, no time of day
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | done
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    done_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    done_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    __table_args__ = (Index("ix_staff_tasks_open", "firm_id", "status", "due_on"),
                      Index("ix_staff_tasks_trader", "firm_id", "trader_id"),
                      # the "done" view, newest done first, a page at a time (migration 0025)
                      Index("ix_staff_tasks_done", "firm_id", "status", "done_at", "id"))


class NearBreachSettings(Base):
    """Per firm: how close to a loss limit an account comes before risk staff are alerted (services/near_breach.py):
    a distance as a percentage of equity (as the accounts list's "near" filter) and/or an amount; None: off."""

    __tablename__ = "near_breach_settings"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    within_pct: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    within_amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class NearBreachAlert(Base):
    """An account came within the firm's alert distance of a loss limit: once per account, limit and trading day."""

    __tablename__ = "near_breach_alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    limit_rule: Mapped[str] = mapped_column(String(16))  # daily_loss | max_loss
    trading_day: Mapped[dt.date] = mapped_column(Date)
    equity: Mapped[Decimal] = mapped_column(Money)
    level: Mapped[Decimal] = mapped_column(Money)
    distance: Mapped[Decimal] = mapped_column(Money)
    # (migration 0026) when the batch's worst point was reached: the time of the event whose equity is named
    reached_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    seen_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    seen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    __table_args__ = (UniqueConstraint("account_id", "limit_rule", "trading_day"),
                      Index("ix_near_breach_alerts_firm", "firm_id", "id"))
