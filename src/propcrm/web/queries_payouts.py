"""Reads behind the payout pages: the queue with its derived state, and one payout with everything a
finance user needs to decide it.

Nothing here writes and nothing here decides: the checks and the amount come from
:func:`propcrm.services.payouts.assess` (``write=False``) and the stored payout; preparing, approving
and rejecting go through :mod:`propcrm.services.payouts` exactly as the JSON API does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Payout, PayoutApproval
from ..domain.money import ZERO
from ..services import business
from ..services import payouts as payout_service
from ..services.cases import accounts_with_open_cases, open_cases_touching
from ..services.lifecycle import settings_of
from ..http.pages import fmt_actor, fmt_money

PAGE_SIZE = 50
OPEN = payout_service.OPEN
# the queue's filters: label and what they select
FILTERS: tuple[tuple[str, str], ...] = (
    ("open", "Open (requested and prepared)"),
    ("requested", "Requested: to be prepared"),
    ("prepared", "Prepared: awaiting approval"),
    ("partially_approved", "Partially approved"),
    ("approved", "Approved (paid)"),
    ("rejected", "Rejected"),
    ("refused", "Refused at request"),
    ("all", "All"),
)
FILTER_NAMES = tuple(name for name, _ in FILTERS)


def _standing_count():
    """Approvals that still count (approver active now), per payout, as a correlated subquery."""
    return (select(func.count()).select_from(PayoutApproval)
            .join(m.User, m.User.id == PayoutApproval.user_id)
            .where(PayoutApproval.payout_id == Payout.id, m.User.active.is_(True))
            .correlate(Payout).scalar_subquery())


def state_of(status: str, approvals: int) -> str:
    """The queue's state: a prepared payout with some but not all approvals is partially approved."""
    if status == "prepared" and approvals > 0:
        return "partially_approved"
    return status


def actor_name(actor: str | None) -> str:
    """``user:3:finance@fa.example`` → ``finance@fa.example``, ``trader:5`` → ``the trader``."""
    return fmt_actor(actor)


@dataclass
class QueueRow:
    id: int
    status: str
    state: str
    account_id: int
    account: str
    trader: str | None
    created_at: dt.datetime
    prepared_at: dt.datetime | None
    decided_at: dt.datetime | None
    trader_amount: Decimal | None
    approvals: int
    approvals_needed: int
    blocking: int | None  # failed checks as stored; an open payout also no_open_case when a case touches it now
    blocking_names: list[str] = field(default_factory=list)


@dataclass
class Queue:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int
    status: str
    counts: dict[str, int]
    open_requested: Decimal
    open_prepared: Decimal
    liability: Decimal | None  # None: not for this reader (the dashboard's business numbers: admin, finance)
    liability_accounts: int | None
    liability_at: dt.datetime | None = None  # when the liability was computed (kept up to 30 s: services.firm_cache)


def _filtered(query, status: str, standing):
    if status == "open":
        return query.where(Payout.status.in_(OPEN))
    if status == "prepared":
        return query.where(Payout.status == "prepared", standing == 0)
    if status == "partially_approved":
        return query.where(Payout.status == "prepared", standing > 0)
    if status == "all":
        return query
    return query.where(Payout.status == status)


def queue(session: Session, *, firm_id: str, status: str = "open", page: int = 1,
          with_liability: bool = True) -> Queue:
    status = status if status in FILTER_NAMES else "open"
    standing = _standing_count()
    base = select(Payout.id).where(Payout.firm_id == firm_id)
    total = session.scalar(select(func.count()).select_from(_filtered(base, status, standing).subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    given = (select(func.count()).select_from(PayoutApproval).where(PayoutApproval.payout_id == Payout.id)
             .correlate(Payout).scalar_subquery())  # every approval given (an approved payout's record)
    query = _filtered(select(Payout, m.Account.external_id, m.Trader.name, standing, given)
                      .join(m.Account, m.Account.id == Payout.account_id)
                      .outerjoin(m.Trader, m.Trader.id == Payout.trader_id)
                      .where(Payout.firm_id == firm_id), status, standing)
    # open work oldest first (first come, first served); history newest first
    order = Payout.id.asc() if status in ("open", "requested", "prepared", "partially_approved") else Payout.id.desc()
    rows = []
    found = session.execute(query.order_by(order).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    # the open payouts' accounts an open case touches (or one linked to them), asked once for the page
    cased = accounts_with_open_cases(session, firm_id=firm_id, include_linked=True, account_ids=[
        payout.account_id for payout, *_ in found if payout.status in OPEN])
    for payout, external_id, trader_name, approvals, all_given in found:
        # the checks as stored (at the request, at preparation), and for an open payout whether an open
        # case touches the account or one linked to it now (what risk opens a case to stop). Assessing
        # every check of each open payout again took some 16 queries a row (one of them a scan of the
        # firm's accounts for the lineage): seconds a page at 100,000 accounts. The payout's own page
        # checks everything now, and preparing and approving check everything again.
        failed = [c.get("name", "?") for c in (payout.checks or []) if not c.get("ok")]
        if payout.status in OPEN and "no_open_case" not in failed and payout.account_id in cased:
            failed.append("no_open_case")
        if payout.status != "prepared":
            approvals = all_given
        rows.append(QueueRow(
            id=payout.id, status=payout.status, state=state_of(payout.status, approvals or 0),
            account_id=payout.account_id, account=external_id, trader=trader_name, created_at=payout.created_at,
            prepared_at=payout.prepared_at, decided_at=payout.decided_at, trader_amount=payout.trader_amount,
            approvals=approvals or 0, approvals_needed=payout.approvals_needed or 1, blocking=len(failed),
            blocking_names=failed))
    counts = {name: 0 for name in FILTER_NAMES}
    for st, n in session.execute(select(Payout.status, func.count()).where(Payout.firm_id == firm_id)
                                 .group_by(Payout.status)):
        counts[st] = n
        counts["all"] += n
    counts["open"] = counts.get("requested", 0) + counts.get("prepared", 0)
    counts["partially_approved"] = session.scalar(select(func.count()).select_from(Payout).where(
        Payout.firm_id == firm_id, Payout.status == "prepared", standing > 0)) or 0
    counts["prepared"] -= counts["partially_approved"]
    sums = {st: ZERO for st in OPEN}  # summed here: SQLite stores money as text, SUM would go through float
    for st, value in session.execute(select(Payout.status, Payout.trader_amount)
                                     .where(Payout.firm_id == firm_id, Payout.status.in_(OPEN))):
        sums[st] += value or ZERO
    liability = liable = liability_at = None
    if with_liability:
        (liability, liable), liability_at = business.cached_liability(session, firm_id=firm_id)
    return Queue(rows=rows, total=total, page=page, pages=pages, status=status, counts=counts,
                 open_requested=sums["requested"], open_prepared=sums["prepared"],
                 liability=liability, liability_accounts=None if liable is None else len(liable),
                 liability_at=liability_at)


# --------------------------------------------------------------------------------------------------
# one payout


def step_rows(steps: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """The amount's steps as stored, for reading: the split as a percentage, money with thousands
    separators and two places, and an exact figure with more places left exact (never rounded here)."""
    out = []
    for step in steps or []:
        text = str(step.get("amount", ""))
        try:
            value = Decimal(text)
        except ArithmeticError:
            value = None
        if value is None or not value.is_finite():
            shown = text
        elif str(step.get("label", "")).startswith("profit split"):
            shown = f"{value.normalize():f} %"
        elif value != value.quantize(Decimal("0.01")):
            shown = f"{value.normalize():,f}"
        else:
            shown = fmt_money(value)
        out.append({"label": str(step.get("label", "")), "amount": shown, "note": str(step.get("note", "")),
                    "negative": value is not None and value.is_finite() and value < 0})
    return out


@dataclass
class ApprovalRow:
    user_id: int
    email: str
    at: dt.datetime
    counts: bool  # the approver is still active (a disabled user's approval no longer completes a payout)


@dataclass
class Detail:
    payout: Payout
    account: m.Account
    trader: m.Trader | None
    state: str
    requested_by: str
    prepared_by: str | None
    approvals: list[ApprovalRow]
    standing: int
    checks_now: list[dict[str, Any]] | None  # an open payout: every check as it stands now
    steps_now: list[dict[str, Any]] | None
    amount_now: Decimal | None
    cases: list[Any]  # open cases blocking the payout (CaseRef: id, status, …)
    dual_threshold: Decimal | None
    failed_now: list[str] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.payout.status in OPEN

    @property
    def amount_changed(self) -> bool:
        """A prepared payout whose amount would differ now: approval would refuse it (prepare again)."""
        return (self.payout.status == "prepared" and self.amount_now is not None
                and self.amount_now != self.payout.trader_amount)


def detail(session: Session, *, firm_id: str, payout_id: int) -> Detail:
    row = payout_service.get_payout(session, firm_id=firm_id, payout_id=payout_id)
    account = session.get(m.Account, row.account_id)
    trader = session.get(m.Trader, row.trader_id) if row.trader_id is not None else None
    approvals = [ApprovalRow(user_id=a.user_id, email=email, at=a.created_at, counts=bool(active))
                 for a, email, active in session.execute(
                     select(PayoutApproval, m.User.email, m.User.active)
                     .join(m.User, m.User.id == PayoutApproval.user_id)
                     .where(PayoutApproval.payout_id == row.id)
                     .order_by(PayoutApproval.created_at, PayoutApproval.user_id))]
    prepared_by = None
    if row.prepared_by_user_id is not None:
        prepared_by = session.scalar(select(m.User.email).where(m.User.id == row.prepared_by_user_id))
    checks_now = steps_now = None
    amount_now = None
    failed: list[str] = []
    cases: list[Any] = []
    if row.status in OPEN:
        found = payout_service.assess(session, account=account, manual_deduction=row.manual_deduction or ZERO,
                                      manual_reason=row.deduction_reason, ignore_open=row.id, write=False)
        checks_now = [c.to_dict() for c in found.checks]
        failed = [c.name for c in found.failed]
        if found.amount is not None:
            steps_now = found.amount.steps_dicts()
            amount_now = found.amount.trader_amount
        if "no_open_case" in failed:
            ids = [a.id for a in payout_service.lineage_accounts(session, account)] or [account.id]
            cases = open_cases_touching(session, firm_id=firm_id, account_ids=ids, include_linked=True)
    standing = sum(1 for a in approvals if a.counts)
    return Detail(payout=row, account=account, trader=trader,
                  state=state_of(row.status, standing if row.status == "prepared" else 0),
                  requested_by=actor_name(row.requested_by), prepared_by=prepared_by, approvals=approvals,
                  standing=standing, checks_now=checks_now, steps_now=steps_now, amount_now=amount_now,
                  cases=cases, dual_threshold=settings_of(session, firm_id).dual_approval_over, failed_now=failed)


# --------------------------------------------------------------------------------------------------
# scaling reviews


@dataclass
class ScalingRow:
    row: Any  # models_lifecycle.Scaling
    account: str
    trader: str | None
    new_account: str | None
    failed: list[dict[str, Any]]


def scalings(session: Session, *, firm_id: str, history_limit: int = 100) -> tuple[list[ScalingRow], list[ScalingRow]]:
    """Pending scalings (oldest first) and the latest decided ones (newest first)."""
    from ..adapters.db.models_lifecycle import Scaling

    def rows(query) -> list[ScalingRow]:
        out = []
        for scaling, external_id, trader_name in session.execute(query):
            new = (session.scalar(select(m.Account.external_id).where(m.Account.id == scaling.new_account_id))
                   if scaling.new_account_id is not None else None)
            out.append(ScalingRow(row=scaling, account=external_id, trader=trader_name, new_account=new,
                                  failed=[c for c in (scaling.checks or []) if not c.get("ok")]))
        return out

    base = (select(Scaling, m.Account.external_id, m.Trader.name)
            .join(m.Account, m.Account.id == Scaling.account_id)
            .outerjoin(m.Trader, m.Trader.id == m.Account.trader_id)
            .where(Scaling.firm_id == firm_id))
    pending = rows(base.where(Scaling.status == "pending").order_by(Scaling.id.asc()))
    decided = rows(base.where(Scaling.status != "pending").order_by(Scaling.id.desc()).limit(history_limit))
    return pending, decided


__all__ = ["FILTERS", "FILTER_NAMES", "PAGE_SIZE", "Detail", "Queue", "QueueRow", "actor_name", "detail", "queue",
           "scalings", "state_of", "step_rows"]
