"""Investigation cases as other use cases see them: which accounts are under investigation, who is linked.

This module is the contract between abuse analytics (which opens and updates cases) and whatever
decides about money (payouts, scaling): an account may not be paid while a case on it, or on any
account linked to it, is still open or under review.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..adapters.db.models_analytics import CASE_OPEN_STATUSES, AccountLink, Case, CaseAccount, RiskScore


@dataclass(frozen=True, slots=True)
class CaseRef:
    id: int
    detector: str
    status: str
    title: str
    account_ids: tuple[int, ...]


def linked_accounts(session: Session, *, firm_id: str, account_id: int) -> set[int]:
    """Every account connected to ``account_id`` through stored links (the whole cluster), itself excluded."""
    seen = {account_id}
    frontier = {account_id}
    while frontier:
        rows = session.execute(
            select(AccountLink.account_a, AccountLink.account_b).where(
                AccountLink.firm_id == firm_id,
                or_(AccountLink.account_a.in_(frontier), AccountLink.account_b.in_(frontier)),
            )
        ).all()
        found = {a for pair in rows for a in pair} - seen
        seen |= found
        frontier = found
    return seen - {account_id}


def open_cases_touching(
    session: Session, *, firm_id: str, account_ids: Iterable[int], include_linked: bool = True
) -> list[CaseRef]:
    """Open or under-review cases on any of ``account_ids`` (and, by default, on any account linked to them)."""
    wanted = set(account_ids)
    if include_linked:
        for account_id in list(wanted):
            wanted |= linked_accounts(session, firm_id=firm_id, account_id=account_id)
    if not wanted:
        return []
    case_ids = session.scalars(
        select(CaseAccount.case_id)
        .join(Case, Case.id == CaseAccount.case_id)
        .where(Case.firm_id == firm_id, Case.status.in_(CASE_OPEN_STATUSES), CaseAccount.account_id.in_(wanted))
        .distinct()
    ).all()
    refs = []
    for case in session.scalars(select(Case).where(Case.id.in_(case_ids)).order_by(Case.id)):
        members = tuple(sorted(session.scalars(select(CaseAccount.account_id).where(CaseAccount.case_id == case.id))))
        refs.append(CaseRef(case.id, case.detector, case.status, case.title, members))
    return refs


def risk_score_of(session: Session, *, firm_id: str, account_id: int) -> int | None:
    """The account's latest behavioural risk score (0–100), or None when it was never scored."""
    return session.scalar(select(RiskScore.score).where(RiskScore.firm_id == firm_id, RiskScore.account_id == account_id))


__all__ = ["CaseRef", "linked_accounts", "open_cases_touching", "risk_score_of"]
