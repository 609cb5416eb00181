"""The support inbox: every trader's conversation with the firm, who has it, and closing it.

Messages themselves are the trader's timeline (:mod:`.communications`): a trader's message opens their
conversation, a staff answer goes out through the outbox like every message (in-app, e-mail when
configured) and shows in the trader's portal. Here: the inbox list, assignment to a staff member who may
answer (:data:`propcrm.roles.SUPPORT_DESK`), the reply, and closing — each audited.

The rules (``SupportDesk``) work over the timeline's storage seam (``communications.CommunicationStore``):
``SqlCommunicationStore`` on the caller's session, an in-memory fake in the unit tests. The inbox, the messages
and the desk are read queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Communication, SupportConversation
from ..roles import SUPPORT_DESK
from .communications import CommunicationStore, Correspondence, SqlCommunicationStore
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
STATUSES = ("open", "closed")


class SupportDesk:
    """The support inbox's rules over a :class:`~.communications.CommunicationStore`: a conversation is the firm's
    own, it is given only to the firm's active support desk (:data:`propcrm.roles.SUPPORT_DESK`), a reply is a
    staff message (outbox, portal, audit), open ⇄ closed with each change audited."""

    def __init__(self, store: CommunicationStore, *, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC)) -> None:
        self.store, self.clock = store, clock

    def get(self, *, firm_id: str, conversation_id: int, for_update: bool = False) -> SupportConversation:
        row = self.store.conversation(conversation_id, for_update=for_update)
        if row is None or row.firm_id != firm_id:
            raise NotFound(f"no conversation {conversation_id}")
        return row

    def assign(self, *, firm_id: str, conversation_id: int, user_id: int | None, actor: str) -> SupportConversation:
        row = self.get(firm_id=firm_id, conversation_id=conversation_id, for_update=True)
        if user_id is not None:
            user = self.store.user(user_id)
            if user is None or user.firm_id != firm_id or not user.active or user.role not in SUPPORT_DESK:
                raise Invalid(f"user_id: no active {', '.join(SUPPORT_DESK)} user {user_id} in this firm")
        before = row.assigned_user_id
        row.assigned_user_id, row.updated_at = user_id, self.clock()
        self.store.audit(actor=actor, action="support.assign", entity="trader", entity_id=str(row.trader_id),
                         before={"assigned_user_id": before},
                         after={"assigned_user_id": user_id, "conversation": row.id}, firm_id=firm_id)
        return row

    def reply(self, *, firm_id: str, conversation_id: int, subject: str, text: str, actor: str,
              close: bool = False) -> Communication:
        """Answer the trader (a staff message: outbox, portal, audit); ``close`` closes the conversation in the
        same unit of work."""
        row = self.get(firm_id=firm_id, conversation_id=conversation_id, for_update=True)
        message = Correspondence(self.store, clock=self.clock).add_message(
            firm_id=firm_id, trader_id=row.trader_id, subject=subject, text=text, actor=actor, from_trader=False)
        if close:
            self.set_status(firm_id=firm_id, conversation_id=row.id, status="closed", actor=actor)
        return message

    def set_status(self, *, firm_id: str, conversation_id: int, status: str, actor: str) -> SupportConversation:
        if status not in STATUSES:
            raise Invalid(f"status: one of {', '.join(STATUSES)}")
        row = self.get(firm_id=firm_id, conversation_id=conversation_id, for_update=True)
        if row.status == status:
            raise Conflict(f"the conversation is already {status}")
        before = row.status
        now = self.clock()
        row.status, row.updated_at = status, now
        row.closed_at = now if status == "closed" else None
        self.store.audit(actor=actor, action=f"support.{'close' if status == 'closed' else 'reopen'}",
                         entity="trader", entity_id=str(row.trader_id), before={"status": before},
                         after={"status": status, "conversation": row.id}, firm_id=firm_id)
        return row


# the service's functions on the caller's session (the API's and the pages' entry points)
def get_conversation(session: Session, *, firm_id: str, conversation_id: int,
                     for_update: bool = False) -> SupportConversation:
    return SupportDesk(SqlCommunicationStore(session)).get(firm_id=firm_id, conversation_id=conversation_id,
                                                           for_update=for_update)


def conversation_of(session: Session, *, firm_id: str, trader_id: int) -> SupportConversation | None:
    return SqlCommunicationStore(session).conversation_of(firm_id, trader_id)


def inbox(session: Session, *, firm_id: str, status: str = "open", assigned_user_id: int | None = None,
          unassigned: bool = False, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Conversations (newest message first) with the trader's name and the last message; and how many match."""
    if status not in STATUSES + ("all",):
        raise Invalid(f"status: one of {', '.join(STATUSES)}, all")
    where = [SupportConversation.firm_id == firm_id]
    if status != "all":
        where.append(SupportConversation.status == status)
    if unassigned:
        where.append(SupportConversation.assigned_user_id.is_(None))
    elif assigned_user_id is not None:
        where.append(SupportConversation.assigned_user_id == assigned_user_id)
    total = session.scalar(select(func.count()).select_from(SupportConversation).where(*where)) or 0
    rows = session.execute(
        select(SupportConversation, m.Trader.name, m.Trader.email, m.User.email)
        .join(m.Trader, m.Trader.id == SupportConversation.trader_id)
        .outerjoin(m.User, m.User.id == SupportConversation.assigned_user_id)
        .where(*where).order_by(SupportConversation.last_message_at.desc(), SupportConversation.id.desc())
        .limit(limit).offset(offset)).all()
    out = []
    for row, name, email, assignee in rows:
        last = session.scalar(select(Communication).where(
            Communication.firm_id == firm_id, Communication.trader_id == row.trader_id,
            Communication.kind.in_(("message_in", "message_out"))).order_by(Communication.id.desc()).limit(1))
        out.append({"id": row.id, "trader_id": row.trader_id, "trader": name, "trader_email": email,
                    "status": row.status, "waiting_on": row.waiting_on, "assigned_to": assignee,
                    "assigned_user_id": row.assigned_user_id, "last_message_at": row.last_message_at,
                    "last_subject": last.subject if last else "", "last_kind": last.kind if last else None})
    return out, total


def messages(session: Session, *, firm_id: str, trader_id: int, limit: int = 200) -> list[Communication]:
    """The conversation's messages, oldest first (notes are on the trader's profile)."""
    rows = list(session.scalars(select(Communication).where(
        Communication.firm_id == firm_id, Communication.trader_id == trader_id,
        Communication.kind.in_(("message_in", "message_out"))).order_by(Communication.id.desc()).limit(limit)))
    return rows[::-1]


def desk(session: Session, *, firm_id: str) -> list[m.User]:
    """Who a conversation may be given to: the firm's active users of the support desk's roles."""
    return list(session.scalars(select(m.User).where(m.User.firm_id == firm_id, m.User.active.is_(True),
                                                     m.User.role.in_(SUPPORT_DESK)).order_by(m.User.email)))


def assign(session: Session, *, firm_id: str, conversation_id: int, user_id: int | None, actor: str) -> SupportConversation:
    return SupportDesk(SqlCommunicationStore(session)).assign(firm_id=firm_id, conversation_id=conversation_id,
                                                              user_id=user_id, actor=actor)


def reply(session: Session, *, firm_id: str, conversation_id: int, subject: str, text: str, actor: str,
          close: bool = False) -> Communication:
    """:meth:`SupportDesk.reply` on the caller's session."""
    return SupportDesk(SqlCommunicationStore(session)).reply(firm_id=firm_id, conversation_id=conversation_id,
                                                             subject=subject, text=text, actor=actor, close=close)


def set_status(session: Session, *, firm_id: str, conversation_id: int, status: str, actor: str) -> SupportConversation:
    return SupportDesk(SqlCommunicationStore(session)).set_status(firm_id=firm_id, conversation_id=conversation_id,
                                                                  status=status, actor=actor)


__all__ = ["STATUSES", "SupportDesk", "assign", "conversation_of", "desk", "get_conversation", "inbox", "messages", "reply",
           "set_status"]
