"""The numbers a firm's owner asks for: pass rates, time to pass, breaches by rule, payout ratio,
open payout liability. Read-only; every amount exact (decimal text), ratios to 4 decimals.
"""

from __future__ import annotations

import statistics
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Payout
from ..domain.money import ZERO
from .accounts import money
from .lifecycle import paid_revenue
from .payouts import open_liability

RATIO = Decimal("0.0001")


def _ratio(part: Decimal, whole: Decimal) -> str | None:
    if not whole:
        return None
    return format((part / whole).quantize(RATIO, rounding=ROUND_HALF_EVEN), "f")


def business_numbers(session: Session, *, firm_id: str) -> dict[str, Any]:
    products = {p.id: p.name for p in session.scalars(select(m.Product).where(m.Product.firm_id == firm_id))}
    accounts = {a.id: a for a in session.scalars(select(m.Account).where(m.Account.firm_id == firm_id))}
    outcome: dict[int, tuple[str, Any]] = {}
    for account_id, kind, ts in session.execute(
            select(m.Decision.account_id, m.Decision.kind, m.Decision.ts).where(
                m.Decision.firm_id == firm_id, m.Decision.kind.in_(("phase_passed", "breach")))
            .order_by(m.Decision.id)):
        outcome.setdefault(account_id, (kind, ts))
    starts = dict(session.execute(
        select(m.RawEvent.account_id, func.min(m.RawEvent.ts)).where(
            m.RawEvent.firm_id == firm_id, m.RawEvent.account_id.is_not(None),
            m.RawEvent.type != "session").group_by(m.RawEvent.account_id)).all())
    groups: dict[tuple[Any, str], dict[str, Any]] = {}
    for account in accounts.values():
        key = (account.product_id, account.phase)
        group = groups.setdefault(key, {"product_id": account.product_id,
                                        "product": products.get(account.product_id), "phase": account.phase,
                                        "accounts": 0, "passed": 0, "failed": 0, "days": []})
        group["accounts"] += 1
        found = outcome.get(account.id)
        if found is None:
            continue
        kind, ts = found
        if kind == "phase_passed":
            group["passed"] += 1
            start = starts.get(account.id)
            if start is not None:
                group["days"].append((ts - start).total_seconds() / 86400)
        else:
            group["failed"] += 1
    pass_rates = []
    for key in sorted(groups, key=lambda k: (k[0] or 0, k[1])):
        g = groups[key]
        decided = g["passed"] + g["failed"]
        days = g.pop("days")
        pass_rates.append({**g, "in_progress": g["accounts"] - decided,
                           "pass_rate": _ratio(Decimal(g["passed"]), Decimal(decided)),
                           "days_to_pass_median": round(statistics.median(days), 2) if days else None,
                           "days_to_pass_mean": round(statistics.fmean(days), 2) if days else None})
    breaches = [{"rule": rule, "phase": phase, "count": n} for rule, phase, n in session.execute(
        select(m.Decision.rule, m.Decision.phase, func.count()).where(
            m.Decision.firm_id == firm_id, m.Decision.kind == "breach")
        .group_by(m.Decision.rule, m.Decision.phase).order_by(func.count().desc(), m.Decision.rule))]
    paid_out = ZERO
    for amount in session.scalars(select(Payout.trader_amount).where(Payout.firm_id == firm_id,
                                                                     Payout.status == "approved")):
        paid_out += amount or ZERO
    revenue = paid_revenue(session, firm_id=firm_id)
    liability, by_account = open_liability(session, firm_id=firm_id)
    return {
        "pass_rates": pass_rates,
        "breaches_by_rule": breaches,
        "payouts": {"paid": money(paid_out), "challenge_revenue": money(revenue),
                    "payout_ratio": _ratio(paid_out, revenue)},
        "open_liability": {"total": money(liability), "accounts": by_account,
                           "basis": "each funded account's trader amount if paid now (profit − penalties) × split, "
                                    "rounded down to the cent"},
    }


__all__ = ["business_numbers"]
