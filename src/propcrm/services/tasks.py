"""Staff tasks: follow-ups of the back office ("call back about KYC on Friday", "check this account after the
news"), attached to a trader, an account or an abuse case, given to a staff member, due on a calendar day, done
once. Every staff role keeps tasks; each creation, assignment and completion is audited in the caller's unit of
work. Nothing here knows about pages: the back office (``web/routes/crm.py``) and the CSV export call it.

The rules (``TaskDesk``) work over a storage seam (``TaskStore``): ``SqlTaskStore`` on the caller's session, an
in-memory fake in the unit tests (tests/unit/test_staff_tasks.py). The list (``list_tasks``) is a read query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from ..adapters.db import models as m
from ..adapters.db.models_analytics import Case
from ..adapters.db.models_lifecycle import StaffTask
from ..roles import STAFF
from . import audit
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
STATUSES = ("open", "done")
MAX_TITLE, MAX_DETAILS = 200, 4000
LATEST_DUE = dt.date(2100, 12, 31)


@dataclass(frozen=True)
class TaskPage:
    rows: list[dict[str, Any]]
    total: int


def _title(value: str) -> str:
    text = (value or "").strip() if isinstance(value, str) else ""
    if not 3 <= len(text) <= MAX_TITLE or not text.isprintable():
        raise Invalid(f"title: 3 to {MAX_TITLE} printable characters are required")
    return text


def _details(value: str | None) -> str | None:
    text = (value or "").strip() if isinstance(value, str) else ""
    if len(text) > MAX_DETAILS or "\x00" in text:
        raise Invalid(f"details: at most {MAX_DETAILS} characters")
    return text or None


def parse_due(value: str | None) -> dt.date | None:
    """A due day as typed in a form (``YYYY-MM-DD``) or nothing; a task is due on a day, not at an instant."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"due_on: a date such as 2026-03-02, not {text[:40]!r}") from None
    if not dt.date(2000, 1, 1) <= day <= LATEST_DUE:
        raise Invalid(f"due_on: between 2000-01-01 and {LATEST_DUE.isoformat()}")
    return day


def assignees(session: Session, *, firm_id: str) -> list[m.User]:
    """Who a task may be given to: the firm's active staff."""
    return list(session.scalars(select(m.User).where(m.User.firm_id == firm_id, m.User.active.is_(True),
                                                     m.User.role.in_(STAFF)).order_by(m.User.email)))


# the seam: what the task rules need of storage. ``SqlTaskStore`` is the adapter over a session (the caller's
# unit of work); tests/support/fakes.py has the in-memory one the unit tests use, and
# tests/integration/test_task_store.py holds both to one contract. Lookups are by id only: which firm a row
# belongs to, and whether a user may hold tasks, are the rules' (``TaskDesk``), checked on the fake too.
class TaskStore(Protocol):
    def task(self, task_id: int) -> StaffTask | None: ...

    def add(self, task: StaffTask) -> None:
        """Store a new task and give it its id."""

    def trader(self, trader_id: int) -> m.Trader | None: ...

    def account_named(self, firm_id: str, external_id: str) -> m.Account | None: ...

    def case(self, case_id: int) -> Case | None: ...

    def user(self, user_id: int) -> m.User | None: ...

    def audit(self, **entry: Any) -> None:
        """Append to the audit log in the same unit of work (``services/audit.append``'s arguments)."""


class SqlTaskStore:
    """:class:`TaskStore` on a SQLAlchemy session (SQLite or PostgreSQL)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def task(self, task_id: int) -> StaffTask | None:
        return self.session.get(StaffTask, task_id)

    def add(self, task: StaffTask) -> None:
        self.session.add(task)
        self.session.flush()

    def trader(self, trader_id: int) -> m.Trader | None:
        return self.session.get(m.Trader, trader_id)

    def account_named(self, firm_id: str, external_id: str) -> m.Account | None:
        return self.session.scalar(select(m.Account).where(m.Account.firm_id == firm_id,
                                                           m.Account.external_id == external_id))

    def case(self, case_id: int) -> Case | None:
        return self.session.get(Case, case_id)

    def user(self, user_id: int) -> m.User | None:
        return self.session.get(m.User, user_id)

    def audit(self, **entry: Any) -> None:
        audit.append(self.session, **entry)


class TaskDesk:
    """The task rules over a :class:`TaskStore`: what a task is about (the firm's own trader, account or case),
    who may hold it (the firm's active staff), open → done once, every change audited."""

    def __init__(self, store: TaskStore, *, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC)) -> None:
        self.store, self.clock = store, clock

    def _assignee(self, firm_id: str, user_id: int | None) -> int | None:
        if user_id is None:
            return None
        user = self.store.user(user_id)
        if user is None or user.firm_id != firm_id or not user.active or user.role not in STAFF:
            raise Invalid(f"assigned_user_id: no active staff user {user_id} in this firm")
        return user.id

    def resolve_subject(self, *, firm_id: str, trader_id: int | None = None, account: str | None = None,
                        case_id: int | None = None) -> dict[str, int | None]:
        """What the task is about, checked to be the firm's: a trader by id, an account by its platform name,
        a case by id. At least one is required; the account's trader is filled in when none was given."""
        found: dict[str, int | None] = {"trader_id": None, "account_id": None, "case_id": None}
        if trader_id is not None:
            trader = self.store.trader(trader_id)
            if trader is None or trader.firm_id != firm_id:
                raise Invalid(f"trader: no trader {trader_id} in this firm")
            found["trader_id"] = trader.id
        account = (account or "").strip()
        if account:
            row = self.store.account_named(firm_id, account[:200])
            if row is None:
                raise Invalid(f"account: no account {account[:80]!r} in this firm")
            found["account_id"] = row.id
            if found["trader_id"] is None:
                found["trader_id"] = row.trader_id
        if case_id is not None:
            case_row = self.store.case(case_id)
            if case_row is None or case_row.firm_id != firm_id:
                raise Invalid(f"case: no case {case_id} in this firm")
            found["case_id"] = case_row.id
        if not any(found.values()):
            raise Invalid("a task is about a trader, an account or a case: give at least one")
        return found

    def create(self, *, firm_id: str, title: str, details: str | None = None, trader_id: int | None = None,
               account: str | None = None, case_id: int | None = None, assigned_user_id: int | None = None,
               due_on: dt.date | None = None, actor: str) -> StaffTask:
        title, details = _title(title), _details(details)
        subject = self.resolve_subject(firm_id=firm_id, trader_id=trader_id, account=account, case_id=case_id)
        row = StaffTask(firm_id=firm_id, title=title, details=details, due_on=due_on,
                        assigned_user_id=self._assignee(firm_id, assigned_user_id), status="open",
                        created_by=actor, created_at=self.clock(), **subject)
        self.store.add(row)
        self.store.audit(actor=actor, action="task.create", entity="task", entity_id=str(row.id),
                         after={"title": row.title, "due_on": due_on.isoformat() if due_on else None,
                                "assigned_user_id": row.assigned_user_id, **subject}, firm_id=firm_id)
        return row

    def get(self, *, firm_id: str, task_id: int) -> StaffTask:
        row = self.store.task(task_id)
        if row is None or row.firm_id != firm_id:
            raise NotFound(f"no task {task_id}")
        return row

    def assign(self, *, firm_id: str, task_id: int, user_id: int | None, actor: str) -> StaffTask:
        row = self.get(firm_id=firm_id, task_id=task_id)
        if row.status != "open":
            raise Conflict(f"task {row.id} is done")
        new = self._assignee(firm_id, user_id)
        if new == row.assigned_user_id:
            return row
        before, row.assigned_user_id = row.assigned_user_id, new
        self.store.audit(actor=actor, action="task.assign", entity="task", entity_id=str(row.id),
                         before={"assigned_user_id": before}, after={"assigned_user_id": new}, firm_id=firm_id)
        return row

    def complete(self, *, firm_id: str, task_id: int, actor: str) -> StaffTask:
        row = self.get(firm_id=firm_id, task_id=task_id)
        if row.status == "done":
            raise Conflict(f"task {row.id} was already done by {row.done_by}")
        row.status, row.done_by, row.done_at = "done", actor, self.clock()
        self.store.audit(actor=actor, action="task.done", entity="task", entity_id=str(row.id),
                         before={"status": "open"}, after={"status": "done"}, firm_id=firm_id)
        return row


# the service's functions on the caller's session (the routes' and exports' entry points)
def resolve_subject(session: Session, *, firm_id: str, trader_id: int | None = None, account: str | None = None,
                    case_id: int | None = None) -> dict[str, int | None]:
    return TaskDesk(SqlTaskStore(session)).resolve_subject(firm_id=firm_id, trader_id=trader_id, account=account,
                                                           case_id=case_id)


def create_task(session: Session, *, firm_id: str, title: str, details: str | None = None,
                trader_id: int | None = None, account: str | None = None, case_id: int | None = None,
                assigned_user_id: int | None = None, due_on: dt.date | None = None, actor: str) -> StaffTask:
    return TaskDesk(SqlTaskStore(session)).create(
        firm_id=firm_id, title=title, details=details, trader_id=trader_id, account=account, case_id=case_id,
        assigned_user_id=assigned_user_id, due_on=due_on, actor=actor)


def get_task(session: Session, *, firm_id: str, task_id: int) -> StaffTask:
    return TaskDesk(SqlTaskStore(session)).get(firm_id=firm_id, task_id=task_id)


def assign_task(session: Session, *, firm_id: str, task_id: int, user_id: int | None, actor: str) -> StaffTask:
    return TaskDesk(SqlTaskStore(session)).assign(firm_id=firm_id, task_id=task_id, user_id=user_id, actor=actor)


def complete_task(session: Session, *, firm_id: str, task_id: int, actor: str) -> StaffTask:
    return TaskDesk(SqlTaskStore(session)).complete(firm_id=firm_id, task_id=task_id, actor=actor)


def list_tasks(session: Session, *, firm_id: str, status: str | None = "open", assigned_user_id: int | None = None,
               trader_id: int | None = None, account_id: int | None = None, case_id: int | None = None,
               overdue_on: dt.date | None = None, limit: int = 50, offset: int = 0) -> TaskPage:
    """Tasks with the names of what they are about and who has them: open ones by due day (undated last),
    done ones newest first. ``overdue_on``: only those due before that day."""
    assignee = aliased(m.User)
    where = [StaffTask.firm_id == firm_id]
    if status in STATUSES:
        where.append(StaffTask.status == status)
    for column, value in ((StaffTask.assigned_user_id, assigned_user_id), (StaffTask.trader_id, trader_id),
                          (StaffTask.account_id, account_id), (StaffTask.case_id, case_id)):
        if value is not None:
            where.append(column == value)
    if overdue_on is not None:
        where.append(StaffTask.due_on < overdue_on)
    total = session.scalar(select(func.count()).select_from(StaffTask).where(*where)) or 0
    order = ([StaffTask.done_at.desc(), StaffTask.id.desc()] if status == "done"
             else [case((StaffTask.due_on.is_(None), 1), else_=0), StaffTask.due_on, StaffTask.id])
    query = (select(StaffTask, m.Trader.name, m.Account.external_id, Case.title, assignee.email)
             .outerjoin(m.Trader, m.Trader.id == StaffTask.trader_id)
             .outerjoin(m.Account, m.Account.id == StaffTask.account_id)
             .outerjoin(Case, Case.id == StaffTask.case_id)
             .outerjoin(assignee, assignee.id == StaffTask.assigned_user_id)
             .where(*where).order_by(*order).limit(limit).offset(offset))
    rows = [{"id": t.id, "title": t.title, "details": t.details, "status": t.status, "due_on": t.due_on,
             "trader_id": t.trader_id, "trader_name": trader, "account_id": t.account_id, "account": account,
             "case_id": t.case_id, "case_title": case_title, "assigned_user_id": t.assigned_user_id,
             "assignee": email, "created_by": t.created_by, "created_at": t.created_at, "done_by": t.done_by,
             "done_at": t.done_at}
            for t, trader, account, case_title, email in session.execute(query)]
    return TaskPage(rows=rows, total=int(total))


__all__ = ["STATUSES", "SqlTaskStore", "TaskDesk", "TaskPage", "TaskStore", "assign_task", "assignees", "complete_task", "create_task", "get_task", "today",
           "list_tasks", "parse_due", "resolve_subject"]


def today() -> dt.date:
    """Today's date in UTC: what "overdue" is measured against."""
    return dt.datetime.now(UTC).date()
