"""The timeline's and the support inbox's storage seam: the SQL adapter (SQLite and PostgreSQL) and the in-memory
fake the unit tests use (tests/unit/test_communications.py) answer the same contract, checked here by the same
function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from support.fakes import FakeCommunicationStore
from support.stores import sql_traders, sql_user

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Communication, SupportConversation
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.services.catalog import ensure_firm
from propcrm.services.communications import Correspondence, SqlCommunicationStore
from propcrm.services.errors import Conflict, Invalid, NotFound
from propcrm.services.support import SupportDesk

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
STAFF = "user:1:support@fa.example"


@dataclass
class Setup:
    traders: dict[str, int]  # "fa:t1" -> id
    users: dict[str, int]  # "fa:support" -> id


def check_contract(store: Any, setup: Setup) -> int:
    """The store's answers, then the rules over it; returns the id of the conversation it closed."""
    t1, t2, tb = setup.traders["fa:t1"], setup.traders["fa:t2"], setup.traders["fb:tb"]
    assert store.trader(t1).firm_id == "fa" and store.trader(tb).firm_id == "fb" and store.trader(10**9) is None
    assert store.user(setup.users["fa:support"]).role == "support" and store.user(10**9) is None
    assert store.conversation(10**9) is None and store.conversation_of("fa", t1) is None
    assert store.outbox_by_key("lifecycle:none") is None and store.communication_of_outbox(10**9) is None
    # what is added gets an id and is found again, by id and by key
    outbox = m.OutboxMessage(firm_id="fa", kind="notify", dedupe_key="lifecycle:contract", payload={"trader_id": t2})
    store.add_outbox(outbox)
    assert outbox.id is not None and store.outbox_by_key("lifecycle:contract") is outbox
    note = Communication(firm_id="fa", trader_id=t2, kind="notification", subject="s", body="b", author="system",
                         outbox_id=outbox.id, created_at=T0)
    store.add_communication(note)
    assert note.id is not None and store.communication_of_outbox(outbox.id) is note
    opened = SupportConversation(firm_id="fa", trader_id=t2, status="open", assigned_user_id=None,
                                 last_message_at=T0, waiting_on="firm", updated_at=T0)
    store.add_conversation(opened)
    assert opened.id is not None and store.conversation(opened.id) is opened
    assert store.conversation_of("fa", t2, for_update=True) is opened and store.conversation_of("fb", t2) is None
    store.audit(actor="test", action="trader.note", entity="trader", entity_id=str(t2), after={}, firm_id="fa")
    # the rules over it
    mail, desk = Correspondence(store, clock=lambda: T0), SupportDesk(store, clock=lambda: T0)
    asked = mail.add_message(firm_id="fa", trader_id=t1, subject="Payout?", text="When?", actor="trader",
                             from_trader=True, trader_scope=t1)
    conversation = store.conversation_of("fa", t1)
    assert conversation.waiting_on == "firm" and asked.kind == "message_in"
    with pytest.raises(NotFound):
        mail.add_message(firm_id="fa", trader_id=tb, subject="x", text="y", actor=STAFF, from_trader=False)
    with pytest.raises(Invalid, match="user_id"):
        desk.assign(firm_id="fa", conversation_id=conversation.id, user_id=setup.users["fa:finance"], actor=STAFF)
    with pytest.raises(Invalid, match="user_id"):
        desk.assign(firm_id="fa", conversation_id=conversation.id, user_id=setup.users["fb:support"], actor=STAFF)
    with pytest.raises(NotFound):
        desk.assign(firm_id="fb", conversation_id=conversation.id, user_id=setup.users["fb:support"], actor=STAFF)
    desk.assign(firm_id="fa", conversation_id=conversation.id, user_id=setup.users["fa:support"], actor=STAFF)
    answer = desk.reply(firm_id="fa", conversation_id=conversation.id, subject="Re: Payout?", text="Friday.",
                        actor=STAFF, close=True)
    assert store.outbox_by_key(store_key(store, answer)).kind == "notify"
    assert (conversation.status, conversation.waiting_on) == ("closed", "trader")
    with pytest.raises(Conflict):
        desk.set_status(firm_id="fa", conversation_id=conversation.id, status="closed", actor=STAFF)
    first = mail.notify_trader(firm_id="fa", trader_id=t1, kind="stage", title="Funded", message="m", key="k:1")
    assert mail.notify_trader(firm_id="fa", trader_id=t1, kind="stage", title="Funded", message="m", key="k:1") is first
    return conversation.id


def store_key(store: Any, message: Communication) -> str:
    """The dedupe key of a message's outbox row (the fake keeps rows by id; the adapter reads the session)."""
    if isinstance(store, FakeCommunicationStore):
        return store.outbox[message.outbox_id].dedupe_key
    return store.session.get(m.OutboxMessage, message.outbox_id).dedupe_key


def test_the_fake_keeps_the_contract():
    store = FakeCommunicationStore()
    store.add_trader(id=1, name="t1")
    store.add_trader(id=2, name="t2")
    store.add_trader(id=3, firm_id="fb", name="tb")
    store.add_user(id=1, role="support")
    store.add_user(id=2, role="finance")
    store.add_user(id=3, role="support", firm_id="fb")
    closed = check_contract(store, Setup(traders={"fa:t1": 1, "fa:t2": 2, "fb:tb": 3},
                                         users={"fa:support": 1, "fa:finance": 2, "fb:support": 3}))
    assert store.conversations[closed].status == "closed"
    assert [a["action"] for a in store.audits] == ["trader.note", "trader.message", "support.assign",
                                                   "trader.message", "support.close"]


def test_the_sql_store_keeps_the_contract(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    try:
        with factory.begin() as s:
            setup = Setup(traders={}, users={})
            for firm in ("fa", "fb"):
                ensure_firm(s, firm_id=firm)
            setup.traders.update(sql_traders(s, ("fa:t1", "fa:t2", "fb:tb")))
            for key in ("fa:support", "fa:finance", "fb:support"):
                setup.users[key] = sql_user(s, key, role=key.split(":")[1])
        with factory.begin() as s:
            closed = check_contract(SqlCommunicationStore(s), setup)
        with factory() as s:  # what the adapter wrote is in the database after the commit
            row = s.get(SupportConversation, closed)
            assert (row.status, row.assigned_user_id) == ("closed", setup.users["fa:support"])
            assert s.scalars(select(m.AuditEntry.action).where(m.AuditEntry.action.like("trader.%")
                                                               | m.AuditEntry.action.like("support.%"))
                             .order_by(m.AuditEntry.seq)).all() == ["trader.note", "trader.message", "support.assign",
                                                                    "trader.message", "support.close"]
            assert s.scalar(select(Communication.kind).where(Communication.trader_id == setup.traders["fa:t1"])
                            .order_by(Communication.id.desc()).limit(1)) == "notification"
    finally:
        engine.dispose()
