"""One timeline per trader: what was sent to them, what staff noted, what was said.

Anything sent to a trader goes through the outbox (``notify``: in-app, and e-mail/webhook when
configured), exactly like the engine's decisions, and is logged here with the outbox row's id.
The timeline merges these rows with the decision notifications the evaluation worker wrote for the
trader's accounts and with the trader's lifecycle transitions, newest first. A trader sees their
own timeline without staff notes.

The rules (``Correspondence``) work over a storage seam (``CommunicationStore``, shared with the support inbox):
``SqlCommunicationStore`` on the caller's session, an in-memory fake in the unit tests. The timeline itself is a
read query.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Communication, StageChange, SupportConversation
from . import audit
from .errors import Invalid, NotFound

UTC = dt.timezone.utc
KINDS = ("notification", "note", "message_in", "message_out")  # stored; the timeline adds "email" and "stage"
MAX_BODY = 10_000


def _text(name: str, value: str, limit: int) -> str:
    text = (value or "").strip() if isinstance(value, str) else ""
    if not 1 <= len(text) <= limit:
        raise Invalid(f"{name}: 1 to {limit} characters are required")
    if "\x00" in text:
        raise Invalid(f"{name}: must not contain NUL characters")
    return text


# the seam: what the rules of the timeline and the support inbox (services/support.py) need of storage.
# ``SqlCommunicationStore`` is the adapter over a session (the caller's unit of work); tests/support/fakes.py has
# the in-memory one the unit tests use (tests/unit/test_communications.py), and
# tests/integration/test_communication_store.py holds both to one contract. Lookups are by id or key only: which
# firm a row belongs to, and who may hold a conversation, are the rules' — checked on the fake too.
class CommunicationStore(Protocol):
    def trader(self, trader_id: int) -> m.Trader | None: ...

    def user(self, user_id: int) -> m.User | None: ...

    def conversation(self, conversation_id: int, *, for_update: bool = False) -> SupportConversation | None:
        """A conversation by id (``for_update``: locked until the unit of work ends, on PostgreSQL)."""

    def conversation_of(self, firm_id: str, trader_id: int, *, for_update: bool = False) -> SupportConversation | None:
        """The trader's conversation (one per trader)."""

    def add_conversation(self, row: SupportConversation) -> None:
        """Store a new conversation and give it its id."""

    def add_communication(self, row: Communication) -> None:
        """Store a new timeline row and give it its id."""

    def add_outbox(self, row: m.OutboxMessage) -> None:
        """Store a new outbox row (delivered after commit by the dispatcher) and give it its id."""

    def outbox_by_key(self, dedupe_key: str) -> m.OutboxMessage | None: ...

    def communication_of_outbox(self, outbox_id: int) -> Communication | None: ...

    def audit(self, **entry: Any) -> None:
        """Append to the audit log in the same unit of work (``services/audit.append``'s arguments)."""


class SqlCommunicationStore:
    """:class:`CommunicationStore` on a SQLAlchemy session (SQLite or PostgreSQL)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def trader(self, trader_id: int) -> m.Trader | None:
        return self.session.get(m.Trader, trader_id)

    def user(self, user_id: int) -> m.User | None:
        return self.session.get(m.User, user_id)

    def conversation(self, conversation_id: int, *, for_update: bool = False) -> SupportConversation | None:
        query = select(SupportConversation).where(SupportConversation.id == conversation_id)
        return self.session.scalar(query.with_for_update() if for_update else query)

    def conversation_of(self, firm_id: str, trader_id: int, *, for_update: bool = False) -> SupportConversation | None:
        query = select(SupportConversation).where(SupportConversation.firm_id == firm_id,
                                                  SupportConversation.trader_id == trader_id)
        return self.session.scalar(query.with_for_update() if for_update else query)

    def add_conversation(self, row: SupportConversation) -> None:
        self.session.add(row)
        self.session.flush()

    def add_communication(self, row: Communication) -> None:
        self.session.add(row)
        self.session.flush()

    def add_outbox(self, row: m.OutboxMessage) -> None:
        self.session.add(row)
        self.session.flush()

    def outbox_by_key(self, dedupe_key: str) -> m.OutboxMessage | None:
        return self.session.scalar(select(m.OutboxMessage).where(m.OutboxMessage.dedupe_key == dedupe_key))

    def communication_of_outbox(self, outbox_id: int) -> Communication | None:
        return self.session.scalar(select(Communication).where(Communication.outbox_id == outbox_id))

    def audit(self, **entry: Any) -> None:
        audit.append(self.session, **entry)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


class Correspondence:
    """The timeline's rules over a :class:`CommunicationStore`: anything sent to a trader goes through the
    outbox and is logged; notes stay staff-only; a message keeps the trader's support conversation in step;
    every note and message is audited."""

    def __init__(self, store: CommunicationStore, *, clock: Callable[[], dt.datetime] = _now) -> None:
        self.store, self.clock = store, clock

    def trader_in_firm(self, *, firm_id: str, trader_id: int, trader_scope: int | None = None) -> m.Trader:
        trader = self.store.trader(trader_id)
        if trader is None or trader.firm_id != firm_id or (trader_scope is not None and trader_scope != trader_id):
            raise NotFound(f"no trader {trader_id}")
        return trader

    def notify_trader(self, *, firm_id: str, trader_id: int, kind: str, title: str, message: str, key: str,
                      account: str | None = None, author: str = "system") -> Communication:
        """Send the trader a notification (through the outbox) and log it on their timeline.

        ``key`` makes the outbox row idempotent (``lifecycle:<key>``): the same event never notifies twice.
        """
        dedupe = f"lifecycle:{key}"[:200]
        existing = self.store.outbox_by_key(dedupe)
        if existing is not None:
            found = self.store.communication_of_outbox(existing.id)
            if found is not None:
                return found
        outbox = m.OutboxMessage(
            firm_id=firm_id, kind="notify", dedupe_key=dedupe,
            payload={"kind": kind, "title": title[:200], "message": message, "account": account,
                     "trader_id": trader_id, "rule": kind, "source": "lifecycle"},
        )
        self.store.add_outbox(outbox)
        row = Communication(firm_id=firm_id, trader_id=trader_id, kind="notification", subject=title[:200],
                            body=message, author=author, outbox_id=outbox.id, created_at=self.clock())
        self.store.add_communication(row)
        return row

    def add_note(self, *, firm_id: str, trader_id: int, text: str, actor: str) -> Communication:
        """A staff note: on the timeline for staff, never shown to the trader."""
        self.trader_in_firm(firm_id=firm_id, trader_id=trader_id)
        body = _text("text", text, MAX_BODY)
        row = Communication(firm_id=firm_id, trader_id=trader_id, kind="note", subject="note", body=body,
                            author=actor, created_at=self.clock())
        self.store.add_communication(row)
        self.store.audit(actor=actor, action="trader.note", entity="trader", entity_id=str(trader_id),
                         after={"communication": row.id}, firm_id=firm_id)
        return row

    def add_message(self, *, firm_id: str, trader_id: int, subject: str, text: str, actor: str,
                    from_trader: bool, trader_scope: int | None = None) -> Communication:
        """A message from the trader to the firm (``message_in``) or from staff to the trader (``message_out``,
        also delivered through the outbox so it reaches their in-app list and e-mail)."""
        self.trader_in_firm(firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
        subject = _text("subject", subject, 200)
        body = _text("text", text, MAX_BODY)
        outbox_id = None
        if not from_trader:
            outbox = m.OutboxMessage(
                firm_id=firm_id, kind="notify", dedupe_key=f"lifecycle:message:{trader_id}:{secrets.token_hex(8)}",
                payload={"kind": "message", "title": subject, "message": body, "account": None,
                         "trader_id": trader_id, "rule": "message", "source": "lifecycle"},
            )
            self.store.add_outbox(outbox)
            outbox_id = outbox.id
        row = Communication(firm_id=firm_id, trader_id=trader_id, kind="message_in" if from_trader else "message_out",
                            subject=subject, body=body, author=actor, outbox_id=outbox_id, created_at=self.clock())
        self.store.add_communication(row)
        self.touch_conversation(firm_id=firm_id, trader_id=trader_id, from_trader=from_trader, at=row.created_at)
        self.store.audit(actor=actor, action="trader.message", entity="trader", entity_id=str(trader_id),
                         after={"communication": row.id, "direction": "in" if from_trader else "out"},
                         firm_id=firm_id)
        return row

    def touch_conversation(self, *, firm_id: str, trader_id: int, from_trader: bool,
                           at: dt.datetime) -> SupportConversation | None:
        """Keep the support inbox (services/support.py) in step with a message: a trader's message opens their
        conversation (again) and puts the firm on turn; staff's answer puts the trader on turn. A message staff
        start with no conversation open does not open one."""
        row = self.store.conversation_of(firm_id, trader_id, for_update=True)
        if row is None:
            if not from_trader:
                return None
            row = SupportConversation(firm_id=firm_id, trader_id=trader_id, status="open", assigned_user_id=None,
                                      last_message_at=at, waiting_on="firm", updated_at=at)
            self.store.add_conversation(row)
            return row
        if from_trader:
            if row.status == "closed":
                row.status, row.closed_at = "open", None
            row.waiting_on = "firm"
        else:
            row.waiting_on = "trader"
        row.last_message_at = row.updated_at = at
        return row


# the service's functions on the caller's session (the routes' and the other services' entry points)
def trader_in_firm(session: Session, *, firm_id: str, trader_id: int, trader_scope: int | None = None) -> m.Trader:
    return Correspondence(SqlCommunicationStore(session)).trader_in_firm(firm_id=firm_id, trader_id=trader_id,
                                                                         trader_scope=trader_scope)


def notify_trader(
    session: Session,
    *,
    firm_id: str,
    trader_id: int,
    kind: str,
    title: str,
    message: str,
    key: str,
    account: str | None = None,
    author: str = "system",
) -> Communication:
    """:meth:`Correspondence.notify_trader` on the caller's session."""
    return Correspondence(SqlCommunicationStore(session)).notify_trader(
        firm_id=firm_id, trader_id=trader_id, kind=kind, title=title, message=message, key=key, account=account,
        author=author)


def add_note(session: Session, *, firm_id: str, trader_id: int, text: str, actor: str) -> Communication:
    """A staff note: on the timeline for staff, never shown to the trader."""
    return Correspondence(SqlCommunicationStore(session)).add_note(firm_id=firm_id, trader_id=trader_id, text=text,
                                                                   actor=actor)


def add_message(session: Session, *, firm_id: str, trader_id: int, subject: str, text: str, actor: str,
                from_trader: bool, trader_scope: int | None = None) -> Communication:
    """:meth:`Correspondence.add_message` on the caller's session."""
    return Correspondence(SqlCommunicationStore(session)).add_message(
        firm_id=firm_id, trader_id=trader_id, subject=subject, text=text, actor=actor, from_trader=from_trader,
        trader_scope=trader_scope)


def touch_conversation(session: Session, *, firm_id: str, trader_id: int, from_trader: bool,
                       at: dt.datetime) -> SupportConversation | None:
    """:meth:`Correspondence.touch_conversation` on the caller's session."""
    row = Correspondence(SqlCommunicationStore(session)).touch_conversation(
        firm_id=firm_id, trader_id=trader_id, from_trader=from_trader, at=at)
    session.flush()
    return row


def timeline(session: Session, *, firm_id: str, trader_id: int, trader_scope: int | None = None,
             limit: int = 200) -> list[dict[str, Any]]:
    """Everything on the trader's timeline, newest first (a trader: without staff notes)."""
    trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    items: list[dict[str, Any]] = []
    query = select(Communication).where(Communication.firm_id == firm_id, Communication.trader_id == trader_id)
    if trader_scope is not None:
        query = query.where(Communication.kind != "note")
    for row in session.scalars(query.order_by(Communication.id.desc()).limit(limit)):
        status = None
        if row.outbox_id is not None:
            status = session.scalar(select(m.OutboxMessage.status).where(m.OutboxMessage.id == row.outbox_id))
        items.append({"at": row.created_at, "kind": row.kind, "subject": row.subject, "body": row.body,
                      "author": row.author if trader_scope is None else None, "delivery": status,
                      "ref": f"communication:{row.id}"})
    # the engine's notifications about the trader's accounts (decisions), from the outbox
    notices = select(m.OutboxMessage).where(
        m.OutboxMessage.firm_id == firm_id, m.OutboxMessage.kind == "notify",
        m.OutboxMessage.dedupe_key.like("decision:%"),
        m.OutboxMessage.payload["trader_id"].as_integer() == trader_id,
    ).order_by(m.OutboxMessage.id.desc()).limit(limit)
    for row in session.scalars(notices):
        payload = row.payload or {}
        items.append({"at": row.created_at, "kind": "notification",
                      "subject": f"{payload.get('kind')} on {payload.get('account')}: {payload.get('rule')}",
                      "body": payload.get("message") or "", "author": None if trader_scope is not None else "engine",
                      "delivery": row.status, "ref": f"outbox:{row.id}"})
    # e-mails the dispatcher sent (or is sending) to the trader, for decisions and lifecycle messages alike
    emails = select(m.OutboxMessage).where(
        m.OutboxMessage.firm_id == firm_id, m.OutboxMessage.kind == "notify_email",
        m.OutboxMessage.payload["trader_id"].as_integer() == trader_id,
        m.OutboxMessage.payload["audience"].as_string() == "trader",
    ).order_by(m.OutboxMessage.id.desc()).limit(limit)
    for row in session.scalars(emails):
        payload = row.payload or {}
        items.append({"at": row.created_at, "kind": "email",
                      "subject": payload.get("title") or f"{payload.get('kind')} on {payload.get('account')}",
                      "body": payload.get("message") or "", "author": None if trader_scope is not None else "dispatcher",
                      "delivery": row.status, "ref": f"outbox:{row.id}"})
    for row in session.scalars(select(StageChange).where(StageChange.firm_id == firm_id,
                                                          StageChange.trader_id == trader_id)
                               .order_by(StageChange.id.desc()).limit(limit)):
        items.append({"at": row.created_at, "kind": "stage", "subject": f"{row.from_stage} → {row.to_stage}",
                      "body": row.reason, "author": row.actor if trader_scope is None else None, "delivery": None,
                      "ref": f"stage:{row.id}"})
    items.sort(key=lambda item: (item["at"], item["ref"]), reverse=True)
    return items[:limit]


__all__ = ["KINDS", "CommunicationStore", "Correspondence", "SqlCommunicationStore", "add_message", "add_note",
           "notify_trader", "timeline", "touch_conversation", "trader_in_firm"]
