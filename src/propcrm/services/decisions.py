"""The engine's decisions as people read them: per firm or per account, each with any override beside it.

A decision is never edited or removed; clearing a breach adds an ``overrides`` row that points at it,
and both are shown together here.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.decisions import KIND_ORDER
from .accounts import MAX_PAGE, Page, get_account, money
from .errors import Invalid

KINDS = tuple(KIND_ORDER)


def list_decisions(
    session: Session,
    *,
    firm_id: str,
    trader_id: int | None = None,
    account_id: int | None = None,
    kind: str | None = None,
    rule: str | None = None,
    order: str = "desc",
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Decisions of the firm, of one trader's accounts, or of one account (of one ``kind``, of one ``rule``);
    newest first by default. The one read model of the list: the API and the decisions page both use it."""
    if kind is not None and kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    if order not in ("asc", "desc"):
        raise Invalid("order must be asc or desc")
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise Invalid("offset must not be negative")
    if account_id is not None:
        get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)  # NotFound outside scope
    conditions = [m.Decision.firm_id == firm_id, m.Account.firm_id == firm_id]
    if trader_id is not None:
        conditions.append(m.Account.trader_id == trader_id)
    if account_id is not None:
        conditions.append(m.Decision.account_id == account_id)
    if kind is not None:
        conditions.append(m.Decision.kind == kind)
    if rule is not None:
        conditions.append(m.Decision.rule == rule)
    joined = select(func.count()).select_from(m.Decision).join(m.Account, m.Account.id == m.Decision.account_id)
    total = session.scalar(joined.where(*conditions)) or 0
    direction = (lambda c: c.desc()) if order == "desc" else (lambda c: c.asc())
    rows = session.execute(
        select(m.Decision, m.Account.external_id)
        .join(m.Account, m.Account.id == m.Decision.account_id)
        .where(*conditions)
        .order_by(direction(m.Decision.ts), direction(m.Decision.id))
        .limit(limit)
        .offset(offset)
    ).all()
    # a trader sees that a decision was overridden and when, not the risk desk's note or who wrote it
    overrides = overrides_of(session, firm_id=firm_id, decision_ids=[d.id for d, _ in rows],
                             redact=trader_id is not None)
    items = [decision_view(d, external_id, overrides.get(d.id, [])) for d, external_id in rows]
    return Page(total=total, limit=limit, offset=offset, items=items)


def overrides_of(
    session: Session, *, firm_id: str, decision_ids: list[int], redact: bool = False
) -> dict[int, list[dict[str, Any]]]:
    if not decision_ids:
        return {}
    found: dict[int, list[dict[str, Any]]] = {}
    for row in session.scalars(
        select(m.Override)
        .where(m.Override.firm_id == firm_id, m.Override.decision_id.in_(decision_ids))
        .order_by(m.Override.id)
    ):
        view = override_view(row)
        if redact:
            view.update(reason=None, actor_user_id=None)
        found.setdefault(row.decision_id, []).append(view)
    return found


def override_view(row: m.Override) -> dict[str, Any]:
    return {"id": row.id, "account_id": row.account_id, "decision_id": row.decision_id, "action": row.action,
            "reason": row.reason, "actor_user_id": row.actor_user_id, "created_at": row.created_at}


def decision_view(row: m.Decision, external_id: str, overrides: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        recorded = json.loads(row.body)
    except (ValueError, TypeError):
        recorded = {}
    return {
        "id": row.id,
        "account_id": row.account_id,
        "account": external_id,
        "event_id": row.event_id,
        "event_seq": row.event_seq,
        "ts": row.ts,
        "kind": row.kind,
        "rule": row.rule,
        "phase": row.phase,
        "message": row.message,
        "value": money(row.value),
        "threshold": money(row.threshold),
        "comparator": recorded.get("comparator") if isinstance(recorded, dict) else None,
        "details": recorded.get("details", {}) if isinstance(recorded, dict) else {},
        "overrides": overrides,
        "superseded_at": row.superseded_at,  # a re-bind's replay under another version no longer makes it
    }
