"""In-memory fakes of the storage seams of the services, for unit tests without a database.

Each fake keeps the contract its SQL adapter keeps (the same ``Protocol``); ``tests/integration/
test_case_store.py``, ``test_task_store.py`` and ``test_communication_store.py`` run one set of contract checks on both the fake and the
adapter (SQLite and PostgreSQL), so a rule proven on the fake holds on the database.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import CASE_OPEN_STATUSES, Case, CaseNote
from propcrm.adapters.db.models_lifecycle import Communication, StaffTask, SupportConversation
from propcrm.services.errors import NotFound

UTC = dt.timezone.utc


class FakeCaseStore:
    """:class:`propcrm.services.cases.CaseStore` in memory. Accounts and users are transient ORM objects
    the test adds (``add_account``, ``add_user``); what the workflow wrote is in ``cases``, ``notes``,
    ``audits``, ``stops`` and ``messages``."""

    def __init__(self) -> None:
        self.cases: dict[int, Case] = {}
        self.case_members: dict[int, set[int]] = {}
        self.notes: list[CaseNote] = []
        self.accounts_by_id: dict[int, m.Account] = {}
        self.users: dict[int, m.User] = {}
        self.audits: list[dict[str, Any]] = []
        self.stops: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._note_ids = itertools.count(1)

    # what a test sets up
    def add_account(self, *, id: int, external_id: str, firm_id: str = "fa", status: str = "active",
                    trader_id: int | None = None) -> m.Account:
        account = m.Account(id=id, firm_id=firm_id, external_id=external_id, status=status, trader_id=trader_id)
        self.accounts_by_id[id] = account
        return account

    def add_user(self, *, id: int, role: str, firm_id: str = "fa", active: bool = True) -> m.User:
        user = m.User(id=id, firm_id=firm_id, email=f"{role}{id}@{firm_id}.example", role=role, active=active)
        self.users[id] = user
        return user

    def notes_of(self, case_id: int) -> list[CaseNote]:
        return [n for n in self.notes if n.case_id == case_id]

    # the CaseStore protocol
    def get(self, firm_id: str, case_id: int, *, for_update: bool = False) -> Case:
        case = self.cases.get(case_id)
        if case is None or case.firm_id != firm_id:
            raise NotFound(f"no case {case_id}")
        return case

    def by_fingerprint(self, firm_id: str, fingerprint: str) -> Case | None:
        return next((c for c in self.cases.values() if c.firm_id == firm_id and c.fingerprint == fingerprint), None)

    def open_sharing(self, firm_id: str, detector: str, account_ids: list[int]) -> Case | None:
        wanted = set(account_ids)
        found = [c for c in self.cases.values() if c.firm_id == firm_id and c.detector == detector
                 and c.status in CASE_OPEN_STATUSES and self.case_members[c.id] & wanted]
        return min(found, key=lambda c: c.id, default=None)

    def add(self, case: Case, account_ids: list[int]) -> None:
        case.id = next(self._ids)
        self.cases[case.id] = case
        self.case_members[case.id] = set(account_ids)

    def members(self, case: Case) -> set[int]:
        return set(self.case_members[case.id])

    def add_members(self, case: Case, account_ids: list[int]) -> None:
        self.case_members[case.id] |= set(account_ids)

    def accounts(self, case: Case) -> list[m.Account]:
        return sorted((self.accounts_by_id[i] for i in self.case_members[case.id] if i in self.accounts_by_id),
                      key=lambda a: a.external_id)

    def add_note(self, case: Case, *, kind: str, text: str, author_user_id: int | None) -> CaseNote:
        note = CaseNote(id=next(self._note_ids), case_id=case.id, firm_id=case.firm_id, author_user_id=author_user_id,
                        kind=kind, text=text, created_at=dt.datetime.now(UTC))
        self.notes.append(note)
        return note

    def note_count(self, case: Case) -> int:
        return len(self.notes_of(case.id))

    def active_user(self, firm_id: str, user_id: int) -> m.User | None:
        user = self.users.get(user_id)
        return user if user is not None and user.firm_id == firm_id and user.active else None

    def audit(self, **entry: Any) -> None:
        self.audits.append(entry)

    def emergency_stop(self, *, firm_id: str, account_id: int, reason: str, actor_user_id: int, actor: str) -> None:
        self.stops.append({"firm_id": firm_id, "account_id": account_id, "reason": reason,
                           "actor_user_id": actor_user_id, "actor": actor})
        self.accounts_by_id[account_id].status = "suspended"

    def notify_trader(self, **message: Any) -> None:
        self.messages.append(message)


class FakeTaskStore:
    """:class:`propcrm.services.tasks.TaskStore` in memory. Traders, accounts, cases and users are transient
    ORM objects the test adds; what the rules wrote is in ``tasks`` and ``audits``."""

    def __init__(self) -> None:
        self.tasks: dict[int, StaffTask] = {}
        self.traders: dict[int, m.Trader] = {}
        self.accounts_by_id: dict[int, m.Account] = {}
        self.cases: dict[int, Case] = {}
        self.users: dict[int, m.User] = {}
        self.audits: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    # what a test sets up
    def add_trader(self, *, id: int, firm_id: str = "fa", name: str = "t") -> m.Trader:
        self.traders[id] = m.Trader(id=id, firm_id=firm_id, name=name, email=f"{name}@traders.example")
        return self.traders[id]

    def add_account(self, *, id: int, external_id: str, firm_id: str = "fa", trader_id: int | None = None) -> m.Account:
        self.accounts_by_id[id] = m.Account(id=id, firm_id=firm_id, external_id=external_id, trader_id=trader_id)
        return self.accounts_by_id[id]

    def add_case(self, *, id: int, firm_id: str = "fa") -> Case:
        self.cases[id] = Case(id=id, firm_id=firm_id, detector="copy", fingerprint=f"copy:{id}", status="open",
                              title="c", summary="", score=50, evidence={})
        return self.cases[id]

    def add_user(self, *, id: int, role: str, firm_id: str = "fa", active: bool = True) -> m.User:
        self.users[id] = m.User(id=id, firm_id=firm_id, email=f"{role}{id}@{firm_id}.example", role=role,
                                active=active)
        return self.users[id]

    # the TaskStore protocol
    def task(self, task_id: int) -> StaffTask | None:
        return self.tasks.get(task_id)

    def add(self, task: StaffTask) -> None:
        task.id = next(self._ids)
        self.tasks[task.id] = task

    def trader(self, trader_id: int) -> m.Trader | None:
        return self.traders.get(trader_id)

    def account_named(self, firm_id: str, external_id: str) -> m.Account | None:
        return next((a for a in self.accounts_by_id.values()
                     if a.firm_id == firm_id and a.external_id == external_id), None)

    def case(self, case_id: int) -> Case | None:
        return self.cases.get(case_id)

    def user(self, user_id: int) -> m.User | None:
        return self.users.get(user_id)

    def audit(self, **entry: Any) -> None:
        self.audits.append(entry)


class FakeCommunicationStore:
    """:class:`propcrm.services.communications.CommunicationStore` in memory (the timeline's and the support
    inbox's rules). Traders and users are transient ORM objects the test adds; what the rules wrote is in
    ``communications``, ``conversations``, ``outbox`` and ``audits``."""

    def __init__(self) -> None:
        self.traders: dict[int, m.Trader] = {}
        self.users: dict[int, m.User] = {}
        self.conversations: dict[int, SupportConversation] = {}
        self.communications: dict[int, Communication] = {}
        self.outbox: dict[int, m.OutboxMessage] = {}
        self.audits: list[dict[str, Any]] = []
        self._conversation_ids, self._communication_ids, self._outbox_ids = (itertools.count(1) for _ in range(3))

    # what a test sets up
    def add_trader(self, *, id: int, firm_id: str = "fa", name: str = "t") -> m.Trader:
        self.traders[id] = m.Trader(id=id, firm_id=firm_id, name=name, email=f"{name}@traders.example")
        return self.traders[id]

    def add_user(self, *, id: int, role: str, firm_id: str = "fa", active: bool = True) -> m.User:
        self.users[id] = m.User(id=id, firm_id=firm_id, email=f"{role}{id}@{firm_id}.example", role=role,
                                active=active)
        return self.users[id]

    # the CommunicationStore protocol
    def trader(self, trader_id: int) -> m.Trader | None:
        return self.traders.get(trader_id)

    def user(self, user_id: int) -> m.User | None:
        return self.users.get(user_id)

    def conversation(self, conversation_id: int, *, for_update: bool = False) -> SupportConversation | None:
        return self.conversations.get(conversation_id)

    def conversation_of(self, firm_id: str, trader_id: int, *, for_update: bool = False) -> SupportConversation | None:
        return next((c for c in self.conversations.values() if c.firm_id == firm_id and c.trader_id == trader_id), None)

    def add_conversation(self, row: SupportConversation) -> None:
        if self.conversation_of(row.firm_id, row.trader_id) is not None:  # the table's unique (firm, trader)
            raise ValueError(f"trader {row.trader_id} has a conversation already")
        row.id = next(self._conversation_ids)
        self.conversations[row.id] = row

    def add_communication(self, row: Communication) -> None:
        row.id = next(self._communication_ids)
        self.communications[row.id] = row

    def add_outbox(self, row: m.OutboxMessage) -> None:
        if self.outbox_by_key(row.dedupe_key) is not None:  # the table's unique dedupe key
            raise ValueError(f"outbox key {row.dedupe_key!r} is taken")
        row.id = next(self._outbox_ids)
        self.outbox[row.id] = row

    def outbox_by_key(self, dedupe_key: str) -> m.OutboxMessage | None:
        return next((o for o in self.outbox.values() if o.dedupe_key == dedupe_key), None)

    def communication_of_outbox(self, outbox_id: int) -> Communication | None:
        return next((c for c in self.communications.values() if c.outbox_id == outbox_id), None)

    def audit(self, **entry: Any) -> None:
        self.audits.append(entry)
