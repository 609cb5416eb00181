"""Read queries of the CRM pages: the trader list (search, stage and KYC filters, paging) and a profile's
accounts and orders with the names a person reads (product, pack) rather than ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import KycDocument, Order, SupportConversation, TraderStage

PAGE_SIZE = 50


@dataclass(frozen=True)
class TraderPage:
    rows: list[dict[str, Any]]
    total: int


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_traders(session: Session, *, firm_id: str, search: str | None = None, stage: str | None = None,
                 kyc: str | None = None, limit: int = PAGE_SIZE, offset: int = 0) -> TraderPage:
    """Traders of the firm, newest first: name, e-mail, country, stage, KYC, accounts, documents awaiting
    review, whether their conversation waits on the firm. ``search`` matches name or e-mail (contains,
    any case) or the id exactly."""
    where = [m.Trader.firm_id == firm_id]
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        options = [func.lower(m.Trader.name).like(pattern, escape="\\"), func.lower(m.Trader.email).like(pattern, escape="\\")]
        if search.isdigit() and len(search) < 10:
            options.append(m.Trader.id == int(search))
        where.append(or_(*options))
    if kyc:
        where.append(m.Trader.kyc_status == kyc)
    stage_col = func.coalesce(TraderStage.stage, "registered")
    if stage:
        where.append(stage_col == stage)
    base = select(m.Trader.id).outerjoin(TraderStage, TraderStage.trader_id == m.Trader.id).where(*where)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    accounts = (select(func.count()).select_from(m.Account)
                .where(m.Account.firm_id == firm_id, m.Account.trader_id == m.Trader.id).scalar_subquery())
    pending = (select(func.count()).select_from(KycDocument)
               .where(KycDocument.firm_id == firm_id, KycDocument.trader_id == m.Trader.id,
                      KycDocument.status == "pending").scalar_subquery())
    rows = session.execute(
        select(m.Trader, stage_col, accounts, pending, SupportConversation.status, SupportConversation.waiting_on)
        .outerjoin(TraderStage, TraderStage.trader_id == m.Trader.id)
        .outerjoin(SupportConversation, (SupportConversation.trader_id == m.Trader.id)
                   & (SupportConversation.firm_id == firm_id))
        .where(*where).order_by(m.Trader.id.desc()).limit(limit).offset(offset)).all()
    return TraderPage(rows=[{"id": t.id, "name": t.name, "email": t.email, "country": t.country, "stage": st,
                             "kyc": t.kyc_status, "accounts": n, "documents_pending": p,
                             "waiting": conv_status == "open" and waiting == "firm", "created_at": t.created_at}
                            for t, st, n, p, conv_status, waiting in rows], total=total)


def trader_accounts(session: Session, *, firm_id: str, trader_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(m.Account, m.RulePackVersion.pack_id, m.RulePackVersion.version, m.RulePackVersion.body,
               m.AccountState.balance, m.AccountState.equity)
        .join(m.RulePackVersion, m.RulePackVersion.id == m.Account.pack_version_id)
        .outerjoin(m.AccountState, m.AccountState.account_id == m.Account.id)
        .where(m.Account.firm_id == firm_id, m.Account.trader_id == trader_id).order_by(m.Account.id)).all()
    return [{"id": a.id, "external_id": a.external_id, "status": a.status, "phase": a.phase, "platform": a.platform,
             "pack": f"{pack} v{version}", "currency": _currency(body), "balance": balance, "equity": equity}
            for a, pack, version, body, balance, equity in rows]


def _currency(body: str) -> str | None:
    try:
        value = json.loads(body).get("currency")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def trader_orders(session: Session, *, firm_id: str, trader_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Order, m.Product.name, m.Account.external_id)
        .join(m.Product, m.Product.id == Order.product_id)
        .outerjoin(m.Account, m.Account.id == Order.account_id)
        .where(Order.firm_id == firm_id, Order.trader_id == trader_id).order_by(Order.id.desc()).limit(200)).all()
    return [{"id": o.id, "kind": o.kind, "product": name, "amount": o.amount, "discount": o.discount,
             "currency": o.currency, "status": o.status, "created_at": o.created_at, "paid_at": o.paid_at,
             "account_id": o.account_id, "account": external} for o, name, external in rows]


__all__ = ["PAGE_SIZE", "TraderPage", "list_traders", "trader_accounts", "trader_orders"]
