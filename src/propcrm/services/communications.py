"""One timeline per trader: what was sent to them, what staff noted, what was said.

Anything sent to a trader goes through the outbox (``notify``: in-app, and e-mail/webhook when
configured), exactly like the engine's decisions, and is logged here with the outbox row's id.
The timeline merges these rows with the decision notifications the evaluation worker wrote for the
trader's accounts and with the trader's lifecycle transitions, newest first. A trader sees their
own timeline without staff notes.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

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


def trader_in_firm(session: Session, *, firm_id: str, trader_id: int, trader_scope: int | None = None) -> m.Trader:
    trader = session.get(m.Trader, trader_id)
    if trader is None or trader.firm_id != firm_id or (trader_scope is not None and trader_scope != trader_id):
        raise NotFound(f"no trader {trader_id}")
    return trader


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
    """Send the trader a notification (through the outbox) and log it on their timeline.

    ``key`` makes the outbox row idempotent (``lifecycle:<key>``): the same event never notifies twice.
    """
    dedupe = f"lifecycle:{key}"[:200]
    existing = session.scalar(select(m.OutboxMessage).where(m.OutboxMessage.dedupe_key == dedupe))
    if existing is not None:
        found = session.scalar(select(Communication).where(Communication.outbox_id == existing.id))
        if found is not None:
            return found
    outbox = m.OutboxMessage(
        firm_id=firm_id, kind="notify", dedupe_key=dedupe,
        payload={"kind": kind, "title": title[:200], "message": message, "account": account, "trader_id": trader_id,
                 "rule": kind, "source": "lifecycle"},
    )
    session.add(outbox)
    session.flush()
    row = Communication(firm_id=firm_id, trader_id=trader_id, kind="notification", subject=title[:200], body=message,
                        author=author, outbox_id=outbox.id, created_at=dt.datetime.now(UTC))
    session.add(row)
    session.flush()
    return row


def add_note(session: Session, *, firm_id: str, trader_id: int, text: str, actor: str) -> Communication:
    """A staff note: on the timeline for staff, never shown to the trader."""
    trader_in_firm(session, firm_id=firm_id, trader_id=trader_id)
    body = _text("text", text, MAX_BODY)
    row = Communication(firm_id=firm_id, trader_id=trader_id, kind="note", subject="note", body=body, author=actor,
                        created_at=dt.datetime.now(UTC))
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="trader.note", entity="trader", entity_id=str(trader_id),
                 after={"communication": row.id}, firm_id=firm_id)
    return row


def add_message(session: Session, *, firm_id: str, trader_id: int, subject: str, text: str, actor: str,
                from_trader: bool, trader_scope: int | None = None) -> Communication:
    """A message from the trader to the firm (``message_in``) or from staff to the trader (``message_out``,
    also delivered through the outbox so it reaches their in-app list and e-mail)."""
    trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    subject = _text("subject", subject, 200)
    body = _text("text", text, MAX_BODY)
    outbox_id = None
    if not from_trader:
        outbox = m.OutboxMessage(
            firm_id=firm_id, kind="notify", dedupe_key=f"lifecycle:message:{trader_id}:{secrets.token_hex(8)}",
            payload={"kind": "message", "title": subject, "message": body, "account": None, "trader_id": trader_id,
                     "rule": "message", "source": "lifecycle"},
        )
        session.add(outbox)
        session.flush()
        outbox_id = outbox.id
    row = Communication(firm_id=firm_id, trader_id=trader_id, kind="message_in" if from_trader else "message_out",
                        subject=subject, body=body, author=actor, outbox_id=outbox_id, created_at=dt.datetime.now(UTC))
    session.add(row)
    session.flush()
    touch_conversation(session, firm_id=firm_id, trader_id=trader_id, from_trader=from_trader, at=row.created_at)
    audit.append(session, actor=actor, action="trader.message", entity="trader", entity_id=str(trader_id),
                 after={"communication": row.id, "direction": "in" if from_trader else "out"}, firm_id=firm_id)
    return row


def touch_conversation(session: Session, *, firm_id: str, trader_id: int, from_trader: bool,
                       at: dt.datetime) -> SupportConversation | None:
    """Keep the support inbox (services/support.py) in step with a message: a trader's message opens their
    conversation (again) and puts the firm on turn; staff's answer puts the trader on turn. A message staff
    start with no conversation open does not open one."""
    row = session.scalar(select(SupportConversation).where(SupportConversation.firm_id == firm_id,
                                                           SupportConversation.trader_id == trader_id)
                         .with_for_update())
    if row is None:
        if not from_trader:
            return None
        row = SupportConversation(firm_id=firm_id, trader_id=trader_id, status="open", assigned_user_id=None,
                                  last_message_at=at, waiting_on="firm", updated_at=at)
        session.add(row)
    elif from_trader:
        if row.status == "closed":
            row.status, row.closed_at = "open", None
        row.waiting_on = "firm"
    else:
        row.waiting_on = "trader"
    row.last_message_at = row.updated_at = at
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


__all__ = ["KINDS", "add_message", "add_note", "notify_trader", "timeline", "touch_conversation", "trader_in_firm"]
