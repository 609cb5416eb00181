"""The numbers a firm's owner asks for: pass rates, time to pass, breaches by rule, payout ratio,
open payout liability. Read-only; every amount exact (decimal text), ratios to 4 decimals.
"""

from __future__ import annotations

import datetime as dt
import statistics
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Order, Payout
from ..domain.money import ZERO
from .accounts import money
from .firm_cache import FirmCache
from .payouts import open_liability

RATIO = Decimal("0.0001")


def _ratio(part: Decimal, whole: Decimal) -> str | None:
    if not whole:
        return None
    return format((part / whole).quantize(RATIO, rounding=ROUND_HALF_EVEN), "f")


def _total(session: Session, column: Any, *conditions: Any) -> Decimal:
    """The exact sum of a money column over the rows matching ``conditions`` (NULL counts as 0): the
    database counts each distinct amount (prices and discounts repeat), Python adds them as Decimals —
    never the database's SUM, which is binary floating point on SQLite, where money is text."""
    total = ZERO
    for amount, count in session.execute(select(column, func.count()).where(*conditions).group_by(column)):
        if amount is not None:
            total += amount * count
    return total


def business_numbers(session: Session, *, firm_id: str) -> dict[str, Any]:
    products = {p.id: p.name for p in session.scalars(select(m.Product).where(m.Product.firm_id == firm_id))}
    groups: dict[tuple[Any, str], dict[str, Any]] = {}
    # the accounts per product and phase, counted by the database
    for product_id, phase, count in session.execute(
            select(m.Account.product_id, m.Account.phase, func.count()).where(m.Account.firm_id == firm_id)
            .group_by(m.Account.product_id, m.Account.phase)):
        groups[(product_id, phase)] = {"product_id": product_id, "product": products.get(product_id), "phase": phase,
                                       "accounts": count, "passed": 0, "failed": 0, "days": []}
    # each decided account's outcome: its first pass or breach (by decision id); for a pass, the days
    # from its first trade to the pass
    # (SQLite has no planner statistics: an indexable firm_id term sends it down a (firm_id, …) index —
    # every decision of the firm, a random table read each — rather than ix_decisions_kind, which reads
    # only passes and breaches; ``firm_id || ''`` keeps the term a plain filter there)
    firm_term = m.Decision.firm_id == firm_id
    if session.get_bind().dialect.name == "sqlite":
        firm_term = m.Decision.firm_id.concat("") == firm_id
    first = (select(m.Decision.account_id, func.min(m.Decision.id).label("decision_id"))
             .where(firm_term, m.Decision.kind.in_(("phase_passed", "breach")))
             .group_by(m.Decision.account_id).subquery())
    # the start of an account's trading: its first trade opened or closed (the account activity the
    # evaluation projects in both deployments, not the embedded event log; logins do not count)
    start = (select(func.min(m.AccountActivity.ts)).where(
        m.AccountActivity.account_id == m.Account.id, m.AccountActivity.kind != "session")
        .correlate(m.Account).scalar_subquery())
    passed = m.Decision.kind == "phase_passed"
    # (plain rows from the connection: nothing ORM to load; the session has flushed at its first query)
    for product_id, phase, kind, ts, started in session.connection().execute(
            select(m.Account.product_id, m.Account.phase, m.Decision.kind, case((passed, m.Decision.ts), else_=None),
                   case((passed, start), else_=None))
            .join(first, first.c.account_id == m.Account.id).join(m.Decision, m.Decision.id == first.c.decision_id)
            .where(m.Account.firm_id == firm_id)):  # in any order: the median and fmean (fsum) do not depend on it
        group = groups.get((product_id, phase))
        if group is None:  # an account added since the count: counted at the next call
            continue
        if kind == "phase_passed":
            group["passed"] += 1
            if started is not None:
                group["days"].append((ts - started).total_seconds() / 86400)
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
    paid_out = _total(session, Payout.trader_amount, Payout.firm_id == firm_id, Payout.status == "approved")
    # challenge revenue, as lifecycle.paid_revenue counts it: what paid (not refunded) orders brought in
    revenue = _total(session, Order.amount, Order.firm_id == firm_id, Order.status == "paid")
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


# the web pages' copies: kept while the firm's audit log, decisions and accounts are unchanged, at most
# ``firm_cache.CACHE_SECONDS`` (see ``services.firm_cache``); the API computes afresh
NUMBERS: FirmCache[dict[str, Any]] = FirmCache(business_numbers)
LIABILITY: FirmCache[tuple[Decimal, list[dict[str, Any]]]] = FirmCache(open_liability)


def cached_numbers(session: Session, *, firm_id: str) -> tuple[dict[str, Any], dt.datetime]:
    """:func:`business_numbers` as computed at most ``CACHE_SECONDS`` ago with nothing audited or decided since,
    and when."""
    return NUMBERS.get(session, firm_id=firm_id)


def cached_liability(session: Session, *, firm_id: str) -> tuple[tuple[Decimal, list[dict[str, Any]]], dt.datetime]:
    """:func:`~propcrm.services.payouts.open_liability`, kept as :func:`cached_numbers` is."""
    return LIABILITY.get(session, firm_id=firm_id)


__all__ = ["LIABILITY", "NUMBERS", "business_numbers", "cached_liability", "cached_numbers"]
