"""Investigation cases as other use cases see them: which accounts are under investigation, who is linked.

This module is the contract between abuse analytics (which opens and updates cases) and whatever
decides about money (payouts, scaling): an account may not be paid while a case on it, or on any
account linked to it, is still open or under review.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_analytics import (CASE_OPEN_STATUSES, CASE_STATUSES, AccountLink, Case, CaseAccount,
                                            CaseNote, RiskScore)
from . import audit
from .communications import notify_trader
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc


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


def accounts_with_open_cases(session: Session, *, firm_id: str, account_ids: Iterable[int],
                             include_linked: bool = True, chunk: int = 500) -> set[int]:
    """Which of ``account_ids`` :func:`open_cases_touching` would find a case for, asked of them all at once: the
    link clusters walked together (one read per step of the walk, not per account), then one read of the open
    cases' accounts among them. For a page of payouts: 3 queries a row before."""
    given = set(account_ids)
    if not given:
        return set()
    parent: dict[int, int] = {a: a for a in given}  # union-find over the links seen: a cluster is a component

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    frontier = set(given) if include_linked else set()
    while frontier:
        ids = sorted(frontier)
        found: set[int] = set()
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            for a, b in session.execute(select(AccountLink.account_a, AccountLink.account_b).where(
                    AccountLink.firm_id == firm_id, or_(AccountLink.account_a.in_(part), AccountLink.account_b.in_(part)))):
                for x in (a, b):
                    if x not in parent:
                        parent[x] = x
                        found.add(x)
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[ra] = rb
        frontier = found
    members = sorted(parent)
    cased: set[int] = set()
    for start in range(0, len(members), chunk):
        cased.update(session.scalars(
            select(CaseAccount.account_id).join(Case, Case.id == CaseAccount.case_id)
            .where(Case.firm_id == firm_id, Case.status.in_(CASE_OPEN_STATUSES),
                   CaseAccount.account_id.in_(members[start:start + chunk])).distinct()))
    cased_roots = {root(a) for a in cased}
    return {a for a in given if root(a) in cased_roots}


def risk_score_of(session: Session, *, firm_id: str, account_id: int) -> int | None:
    """The account's latest behavioural risk score (0–100), or None when it was never scored."""
    return session.scalar(select(RiskScore.score).where(RiskScore.firm_id == firm_id, RiskScore.account_id == account_id))


# --------------------------------------------------------------------------------------------------
# the case workflow (issue 4): opened or updated by the analysis, moved along by a risk officer

#: status -> the statuses a risk officer may move it to
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("under_review", "dismissed"),
    "under_review": ("confirmed", "dismissed", "open"),
    "confirmed": ("under_review",),  # an appeal: look again (enforcement already done stays done)
    "dismissed": ("open",),  # reopened by a person; the analysis never reopens a dismissed case by itself
}
MIN_TEXT, MAX_TEXT = 3, 4000
MAX_EVIDENCE_NOTES = 200


def _text(value: str, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not MIN_TEXT <= len(text) <= MAX_TEXT:
        raise Invalid(f"`{what}`: {MIN_TEXT} to {MAX_TEXT} characters are required")
    return text


def get_case(session: Session, *, firm_id: str, case_id: int, for_update: bool = False) -> Case:
    query = select(Case).where(Case.id == case_id, Case.firm_id == firm_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    case = session.scalars(query).one_or_none()
    if case is None:
        raise NotFound(f"no case {case_id}")
    return case


def case_accounts(session: Session, case: Case) -> list[m.Account]:
    return list(session.scalars(
        select(m.Account).join(CaseAccount, CaseAccount.account_id == m.Account.id)
        .where(CaseAccount.case_id == case.id).order_by(m.Account.external_id)))


def case_view(session: Session, case: Case, *, notes: bool = True) -> dict[str, Any]:
    """The case as the API shows it: accounts by id and external id, evidence, the timeline."""
    out: dict[str, Any] = {
        "id": case.id, "detector": case.detector, "fingerprint": case.fingerprint, "status": case.status,
        "allowed_transitions": list(TRANSITIONS.get(case.status, ())), "title": case.title, "summary": case.summary,
        "score": case.score, "assigned_user_id": case.assigned_user_id, "resolution": case.resolution,
        "opened_at": case.opened_at, "updated_at": case.updated_at, "closed_at": case.closed_at,
        "accounts": [{"id": a.id, "external_id": a.external_id, "status": a.status} for a in case_accounts(session, case)],
    }
    if notes:
        out["evidence"] = case.evidence
        out["notes"] = [{"id": n.id, "kind": n.kind, "text": n.text, "author_user_id": n.author_user_id,
                         "created_at": n.created_at}
                        for n in session.scalars(select(CaseNote).where(CaseNote.case_id == case.id).order_by(CaseNote.id))]
    return out


#: the case list's order, strongest evidence first (the API, the cases page and the CSV export)
STRONGEST_FIRST = (Case.score.desc(), Case.id.desc())


def cases_where(*, firm_id: str, statuses: tuple[str, ...] | None = None, detector: str | None = None,
                account_id: int | None = None, assigned_user_id: int | None = None) -> Select[tuple[Case]]:
    """The firm's cases with these filters (``None``: not applied): the one read model of the case list, which
    the API's ``/cases`` (:func:`list_cases`) and the cases page (``web/queries_cases.case_list``: its counts and
    pages) order by :data:`STRONGEST_FIRST` and page."""
    query = select(Case).where(Case.firm_id == firm_id)
    if statuses is not None:
        query = query.where(Case.status.in_(statuses))
    if detector is not None:
        query = query.where(Case.detector == detector)
    if account_id is not None:
        query = query.where(Case.id.in_(select(CaseAccount.case_id).where(CaseAccount.account_id == account_id,
                                                                            CaseAccount.firm_id == firm_id)))
    if assigned_user_id is not None:
        query = query.where(Case.assigned_user_id == assigned_user_id)
    return query


def list_cases(session: Session, *, firm_id: str, status: str | None = None, detector: str | None = None,
               account_id: int | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    if not 1 <= limit <= 500:
        raise Invalid("`limit`: between 1 and 500")
    if offset < 0:
        raise Invalid("`offset`: must not be negative")
    if status is not None and status not in CASE_STATUSES:
        raise Invalid(f"`status`: one of {', '.join(CASE_STATUSES)}")
    query = cases_where(firm_id=firm_id, statuses=None if status is None else (status,), detector=detector,
                        account_id=account_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(*STRONGEST_FIRST).limit(limit).offset(offset))
    return {"total": total, "limit": limit, "offset": offset, "items": [case_view(session, c, notes=False) for c in rows]}


# --------------------------------------------------------------------------------------------------
# the seam: what the case workflow needs of storage. ``SqlCaseStore`` is the adapter over a session (one
# unit of work: the caller commits or rolls back); tests/support/fakes.py holds an in-memory one, so the
# workflow's rules are unit-tested without a database (tests/unit/test_case_workflow.py) and the adapter
# on SQLite and PostgreSQL (tests/integration/test_case_store.py).


class CaseStore(Protocol):
    def get(self, firm_id: str, case_id: int, *, for_update: bool = False) -> Case:
        """The case of this firm; :class:`NotFound` otherwise."""

    def by_fingerprint(self, firm_id: str, fingerprint: str) -> Case | None: ...

    def open_sharing(self, firm_id: str, detector: str, account_ids: list[int]) -> Case | None:
        """The oldest open or under-review case of ``detector`` holding any of ``account_ids``."""

    def add(self, case: Case, account_ids: list[int]) -> None:
        """Store a new case (it gets its id) with its accounts."""

    def members(self, case: Case) -> set[int]: ...

    def add_members(self, case: Case, account_ids: list[int]) -> None: ...

    def accounts(self, case: Case) -> list[m.Account]:
        """The case's accounts, by external id."""

    def add_note(self, case: Case, *, kind: str, text: str, author_user_id: int | None) -> CaseNote:
        """Append a note; it has its id when this returns."""

    def note_count(self, case: Case) -> int: ...

    def active_user(self, firm_id: str, user_id: int) -> m.User | None: ...

    def audit(self, **entry: Any) -> None:
        """Append an audit entry (``audit.append``'s keyword arguments)."""

    def emergency_stop(self, *, firm_id: str, account_id: int, reason: str, actor_user_id: int, actor: str) -> None: ...

    def notify_trader(self, **message: Any) -> None:
        """Tell a trader (``communications.notify_trader``'s keyword arguments): outbox and timeline."""


class SqlCaseStore:
    """:class:`CaseStore` on a SQLAlchemy session (SQLite or PostgreSQL)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, firm_id: str, case_id: int, *, for_update: bool = False) -> Case:
        return get_case(self.session, firm_id=firm_id, case_id=case_id, for_update=for_update)

    def by_fingerprint(self, firm_id: str, fingerprint: str) -> Case | None:
        return self.session.scalars(select(Case).where(Case.firm_id == firm_id,
                                                       Case.fingerprint == fingerprint)).one_or_none()

    def open_sharing(self, firm_id: str, detector: str, account_ids: list[int]) -> Case | None:
        return self.session.scalars(
            select(Case).where(Case.firm_id == firm_id, Case.detector == detector, Case.status.in_(CASE_OPEN_STATUSES),
                               Case.id.in_(select(CaseAccount.case_id).where(CaseAccount.firm_id == firm_id,
                                                                             CaseAccount.account_id.in_(account_ids))))
            .order_by(Case.id).limit(1)).first()

    def add(self, case: Case, account_ids: list[int]) -> None:
        self.session.add(case)
        self.session.flush()
        self.add_members(case, account_ids)

    def members(self, case: Case) -> set[int]:
        return set(self.session.scalars(select(CaseAccount.account_id).where(CaseAccount.case_id == case.id)))

    def add_members(self, case: Case, account_ids: list[int]) -> None:
        for account_id in account_ids:
            self.session.add(CaseAccount(case_id=case.id, account_id=account_id, firm_id=case.firm_id))

    def accounts(self, case: Case) -> list[m.Account]:
        return case_accounts(self.session, case)

    def add_note(self, case: Case, *, kind: str, text: str, author_user_id: int | None) -> CaseNote:
        note = CaseNote(case_id=case.id, firm_id=case.firm_id, author_user_id=author_user_id, kind=kind, text=text)
        self.session.add(note)
        self.session.flush()
        return note

    def note_count(self, case: Case) -> int:
        return self.session.scalar(select(func.count()).select_from(CaseNote).where(CaseNote.case_id == case.id)) or 0

    def active_user(self, firm_id: str, user_id: int) -> m.User | None:
        return self.session.scalars(select(m.User).where(m.User.id == user_id, m.User.firm_id == firm_id,
                                                         m.User.active.is_(True))).one_or_none()

    def audit(self, **entry: Any) -> None:
        audit.append(self.session, **entry)

    def emergency_stop(self, *, firm_id: str, account_id: int, reason: str, actor_user_id: int, actor: str) -> None:
        from .overrides import emergency_stop

        emergency_stop(self.session, firm_id=firm_id, account_id=account_id, actor_user_id=actor_user_id,
                       actor=actor, reason=reason)

    def notify_trader(self, **message: Any) -> None:
        notify_trader(self.session, **message)


class CaseWorkflow:
    """The case workflow's rules over a :class:`CaseStore`: opened or updated by the analysis, moved along
    by a risk officer. The module's functions of the same names run it on a session."""

    def __init__(self, store: CaseStore, *, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    def record_finding(self, *, firm_id: str, detector: str, fingerprint: str, account_ids: list[int], title: str,
                       score: int, evidence: dict, summary: str = "", now: dt.datetime | None = None) -> tuple[Case, str]:
        store = self.store
        now = now or self.clock()
        case = store.by_fingerprint(firm_id, fingerprint)
        if case is None and account_ids:
            case = store.open_sharing(firm_id, detector, account_ids)
        if case is None:
            case = Case(firm_id=firm_id, detector=detector, fingerprint=fingerprint, status="open", title=title[:300],
                        summary=summary, score=int(score), evidence=evidence, opened_at=now, updated_at=now)
            store.add(case, sorted(set(account_ids)))
            store.add_note(case, kind="evidence", text=f"opened by the analysis: {title}", author_user_id=None)
            store.audit(actor="analysis", action="case.opened", entity="case", entity_id=str(case.id),
                        after={"detector": detector, "accounts": sorted(set(account_ids)), "score": int(score)},
                        firm_id=firm_id)
            return case, "opened"
        new_members = sorted(set(account_ids) - store.members(case))
        if case.evidence == evidence and not new_members and case.score == int(score):
            return case, "unchanged"
        if case.fingerprint != fingerprint and not new_members:
            # part of a group the case already holds (an incremental pass saw only some of its accounts):
            # the case's evidence of the whole group stays
            return case, "unchanged"
        if case.status not in CASE_OPEN_STATUSES:
            if store.note_count(case) < MAX_EVIDENCE_NOTES:
                store.add_note(case, kind="evidence", text=f"new evidence after the case was {case.status}: {title}",
                               author_user_id=None)
            return case, "noted"
        store.add_members(case, new_members)
        before = case.score
        case.title, case.summary, case.score, case.evidence, case.updated_at = title[:300], summary, int(score), evidence, now
        if case.fingerprint != fingerprint and new_members and store.by_fingerprint(firm_id, fingerprint) is None:
            case.fingerprint = fingerprint
        store.add_note(case, kind="evidence",
                       text=f"evidence updated by the analysis (score {before} → {int(score)})"
                            + (f"; accounts added: {', '.join(map(str, new_members))}" if new_members else ""),
                       author_user_id=None)
        store.audit(actor="analysis", action="case.updated", entity="case", entity_id=str(case.id),
                    before={"score": before}, after={"score": int(score), "accounts_added": new_members},
                    firm_id=firm_id)
        return case, "updated"

    def transition(self, *, firm_id: str, case_id: int, status: str, reason: str, actor_user_id: int, actor: str,
                   enforce: bool = False) -> Case:
        store = self.store
        if status not in CASE_STATUSES:
            raise Invalid(f"`status`: one of {', '.join(CASE_STATUSES)}")
        text = _text(reason, "reason")
        case = store.get(firm_id, case_id, for_update=True)
        allowed = TRANSITIONS.get(case.status, ())
        if status not in allowed:
            raise Conflict(f"case {case.id} is {case.status}: it cannot become {status}; allowed: "
                           f"{', '.join(allowed) if allowed else 'none'}")
        if enforce and status != "confirmed":
            raise Invalid("`enforce`: only a confirmation enforces")
        before = case.status
        now = self.clock()
        case.status, case.updated_at = status, now
        if status in ("confirmed", "dismissed"):
            case.resolution, case.closed_at = text, now
        else:
            case.closed_at = None
        store.add_note(case, kind="status", text=f"{before} → {status}: {text}", author_user_id=actor_user_id)
        stopped = []
        if enforce:
            for account in store.accounts(case):
                if account.status in ("suspended", "closed"):
                    continue
                store.emergency_stop(firm_id=firm_id, account_id=account.id, actor_user_id=actor_user_id, actor=actor,
                                     reason=f"case {case.id} confirmed ({case.detector}): {text}"[:2000])
                stopped.append(account.external_id)
            if stopped:
                store.add_note(case, kind="status", text=f"emergency stop of {', '.join(stopped)}",
                               author_user_id=actor_user_id)
                self._tell_stopped_traders(case, stopped, actor)
        store.audit(actor=actor, action="case.status", entity="case", entity_id=str(case.id),
                    before={"status": before}, after={"status": status, "reason": text, "stopped": stopped},
                    firm_id=firm_id)
        return case

    def _tell_stopped_traders(self, case: Case, stopped: list[str], actor: str) -> None:
        """Each trader whose accounts a confirmed case stopped is told (through the outbox, on their timeline),
        in plain words and without the detector's findings, which stay with the firm."""
        by_trader: dict[int, list[str]] = {}
        for account in self.store.accounts(case):
            if account.external_id in stopped and account.trader_id is not None:
                by_trader.setdefault(account.trader_id, []).append(account.external_id)
        for trader_id, externals in sorted(by_trader.items()):
            names = ", ".join(externals)
            plural = "s" if len(externals) > 1 else ""
            self.store.notify_trader(
                firm_id=case.firm_id, trader_id=trader_id, kind="stop", key=f"case:{case.id}:stop:{trader_id}",
                account=externals[0] if len(externals) == 1 else None, title=f"Account{plural} {names} stopped",
                message=(f"After a review of trading activity the firm has stopped your account{plural} {names}: "
                         "trading is disabled. Reply to this message or contact support if you have questions."),
                author=actor)

    def add_note(self, *, firm_id: str, case_id: int, text: str, actor_user_id: int, actor: str) -> CaseNote:
        case = self.store.get(firm_id, case_id)
        note = self.store.add_note(case, kind="note", text=_text(text, "text"), author_user_id=actor_user_id)
        case.updated_at = self.clock()
        self.store.audit(actor=actor, action="case.note", entity="case", entity_id=str(case.id),
                         after={"note": note.id}, firm_id=firm_id)
        return note

    def assign(self, *, firm_id: str, case_id: int, user_id: int | None, actor_user_id: int, actor: str) -> Case:
        case = self.store.get(firm_id, case_id, for_update=True)
        if user_id is not None:
            user = self.store.active_user(firm_id, user_id)
            if user is None or user.role not in ("admin", "risk"):
                raise Invalid(f"`user_id`: no active risk or admin user {user_id} in this firm")
        before = case.assigned_user_id
        case.assigned_user_id, case.updated_at = user_id, self.clock()
        self.store.add_note(case, kind="assign", text=f"assigned to user {user_id}" if user_id else "unassigned",
                            author_user_id=actor_user_id)
        self.store.audit(actor=actor, action="case.assign", entity="case", entity_id=str(case.id),
                         before={"assigned_user_id": before}, after={"assigned_user_id": user_id}, firm_id=firm_id)
        return case


def record_finding(session: Session, *, firm_id: str, detector: str, fingerprint: str, account_ids: list[int],
                   title: str, score: int, evidence: dict, summary: str = "",
                   now: dt.datetime | None = None) -> tuple[Case, str]:
    """Open a case for a detection, or update the one that already holds it; never bans anyone.

    The same finding (``fingerprint``: detector + accounts) updates its case. A group that grew or shrank
    (a copy group with a new follower) updates the open case of the same detector that shares an
    account, adding the new accounts. A dismissed or confirmed case is not reopened by the analysis:
    the new evidence is attached as a note for the person who decided. Returns the case and what
    happened: ``opened``, ``updated``, ``unchanged`` or ``noted``.
    """
    return CaseWorkflow(SqlCaseStore(session)).record_finding(
        firm_id=firm_id, detector=detector, fingerprint=fingerprint, account_ids=account_ids, title=title, score=score,
        evidence=evidence, summary=summary, now=now)


def transition(session: Session, *, firm_id: str, case_id: int, status: str, reason: str, actor_user_id: int,
               actor: str, enforce: bool = False) -> Case:
    """Move a case along its workflow (see :data:`TRANSITIONS`), with a reason that goes on its timeline.

    ``enforce`` with ``confirmed``: every account of the case that still trades is emergency-stopped
    through :func:`propcrm.services.overrides.emergency_stop` (the platform command goes through the
    outbox, the override and the audit entry are written as for a stop by hand).
    """
    return CaseWorkflow(SqlCaseStore(session)).transition(firm_id=firm_id, case_id=case_id, status=status,
                                                          reason=reason, actor_user_id=actor_user_id, actor=actor,
                                                          enforce=enforce)


def add_note(session: Session, *, firm_id: str, case_id: int, text: str, actor_user_id: int, actor: str) -> CaseNote:
    return CaseWorkflow(SqlCaseStore(session)).add_note(firm_id=firm_id, case_id=case_id, text=text,
                                                        actor_user_id=actor_user_id, actor=actor)


def assign(session: Session, *, firm_id: str, case_id: int, user_id: int | None, actor_user_id: int,
           actor: str) -> Case:
    """Give the case to a risk officer (or admin) of the firm; ``None`` leaves it unassigned."""
    return CaseWorkflow(SqlCaseStore(session)).assign(firm_id=firm_id, case_id=case_id, user_id=user_id,
                                                      actor_user_id=actor_user_id, actor=actor)


__all__ = ["TRANSITIONS", "CaseRef", "CaseStore", "CaseWorkflow", "SqlCaseStore", "accounts_with_open_cases", "add_note", "assign", "case_view", "get_case", "linked_accounts", "list_cases",
           "open_cases_touching", "record_finding", "risk_score_of", "transition"]
