"""The timeline's and the support inbox's rules (services/communications.py ``Correspondence``,
services/support.py ``SupportDesk``) on the in-memory store: notes stay staff-only, anything sent to a trader
goes through the outbox once, a message keeps the trader's conversation in step, the inbox is the firm's own and
given only to its support desk, each change audited. The same store contract holds on SQLite and PostgreSQL
(tests/integration/test_communication_store.py); the pages' and API's wiring: tests/integration/test_web_crm.py,
test_web_portal.py, test_lifecycle_e2e.py."""

from __future__ import annotations

import datetime as dt

import pytest
from support.fakes import FakeCommunicationStore

from propcrm.services.communications import MAX_BODY, Correspondence
from propcrm.services.errors import Conflict, Invalid, NotFound
from propcrm.services.support import SupportDesk

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
STAFF = "user:1:support@fa.example"


@pytest.fixture
def store() -> FakeCommunicationStore:
    store = FakeCommunicationStore()
    store.add_trader(id=1, name="t1")
    store.add_trader(id=2, name="t2")
    store.add_trader(id=9, firm_id="fb", name="tb")
    store.add_user(id=1, role="support")
    store.add_user(id=2, role="admin")
    store.add_user(id=3, role="finance")
    store.add_user(id=4, role="support", active=False)
    store.add_user(id=8, role="support", firm_id="fb")
    return store


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


def mail(store, clock=None) -> Correspondence:
    return Correspondence(store, clock=clock or Clock())


def desk(store, clock=None) -> SupportDesk:
    return SupportDesk(store, clock=clock or Clock())


def test_a_note_is_for_staff_is_audited_and_sends_nothing(store):
    note = mail(store).add_note(firm_id="fa", trader_id=1, text="  called, no answer  ", actor=STAFF)
    assert (note.kind, note.body, note.outbox_id, note.author) == ("note", "called, no answer", None, STAFF)
    assert store.outbox == {} and store.conversations == {}
    assert store.audits == [{"actor": STAFF, "action": "trader.note", "entity": "trader", "entity_id": "1",
                             "after": {"communication": note.id}, "firm_id": "fa"}]


@pytest.mark.parametrize(("trader_id", "scope"), [(9, None), (404, None), (1, 2)])
def test_another_firms_or_another_traders_timeline_is_not_found(store, trader_id, scope):
    with pytest.raises(NotFound, match=f"no trader {trader_id}"):
        mail(store).add_message(firm_id="fa", trader_id=trader_id, subject="Hi", text="x", actor="t",
                                from_trader=True, trader_scope=scope)
    if scope is None:  # notes are staff's: no trader scope
        with pytest.raises(NotFound):
            mail(store).add_note(firm_id="fa", trader_id=trader_id, text="x", actor=STAFF)
    assert store.communications == {} and store.audits == []


@pytest.mark.parametrize(("subject", "text", "field"), [("", "body", "subject"), ("s" * 201, "body", "subject"),
                                                        ("Hi", "   ", "text"), ("Hi", "x" * (MAX_BODY + 1), "text"),
                                                        ("Hi", "a\x00b", "text")])
def test_a_message_needs_a_subject_and_a_text(store, subject, text, field):
    with pytest.raises(Invalid, match=field):
        mail(store).add_message(firm_id="fa", trader_id=1, subject=subject, text=text, actor=STAFF, from_trader=False)
    assert store.outbox == {} and store.communications == {}


def test_a_traders_message_opens_their_conversation_and_staffs_answer_goes_through_the_outbox(store):
    clock = Clock()
    asked = mail(store, clock).add_message(firm_id="fa", trader_id=1, subject="Payout?", text="When?", actor="trader:1",
                                           from_trader=True, trader_scope=1)
    assert asked.kind == "message_in" and asked.outbox_id is None and store.outbox == {}
    (conversation,) = store.conversations.values()
    assert (conversation.status, conversation.waiting_on, conversation.last_message_at) == ("open", "firm",
                                                                                           asked.created_at)
    answer = mail(store, clock).add_message(firm_id="fa", trader_id=1, subject="Re: Payout?", text="Friday.",
                                            actor=STAFF, from_trader=False)
    outbox = store.outbox[answer.outbox_id]
    assert outbox.kind == "notify" and outbox.payload["trader_id"] == 1 and outbox.payload["title"] == "Re: Payout?"
    assert conversation.waiting_on == "trader" and conversation.last_message_at == answer.created_at
    assert [a["after"]["direction"] for a in store.audits] == ["in", "out"]


def test_staff_starting_a_conversation_opens_no_inbox_entry(store):
    mail(store).add_message(firm_id="fa", trader_id=2, subject="Welcome", text="Hello", actor=STAFF, from_trader=False)
    assert store.conversations == {} and len(store.outbox) == 1


def test_a_closed_conversation_reopens_when_the_trader_writes_again(store):
    clock = Clock()
    mail(store, clock).add_message(firm_id="fa", trader_id=1, subject="Q", text="?", actor="t", from_trader=True)
    (conversation,) = store.conversations.values()
    desk(store, clock).set_status(firm_id="fa", conversation_id=conversation.id, status="closed", actor=STAFF)
    assert conversation.status == "closed" and conversation.closed_at is not None
    mail(store, clock).add_message(firm_id="fa", trader_id=1, subject="Q again", text="?", actor="t", from_trader=True)
    assert len(store.conversations) == 1
    assert (conversation.status, conversation.closed_at, conversation.waiting_on) == ("open", None, "firm")


def test_a_notification_is_sent_once_per_key(store):
    first = mail(store).notify_trader(firm_id="fa", trader_id=1, kind="stage", title="Funded!", message="Well done",
                                      key="stage:1:funded", account="A1")
    again = mail(store).notify_trader(firm_id="fa", trader_id=1, kind="stage", title="Funded!", message="Well done",
                                      key="stage:1:funded", account="A1")
    assert again is first and len(store.outbox) == 1 and len(store.communications) == 1
    outbox = store.outbox[first.outbox_id]
    assert outbox.dedupe_key == "lifecycle:stage:1:funded" and outbox.payload["account"] == "A1"
    assert first.kind == "notification" and first.author == "system"


def test_the_conversation_is_given_only_to_the_firms_active_support_desk(store):
    mail(store).add_message(firm_id="fa", trader_id=1, subject="Q", text="?", actor="t", from_trader=True)
    (conversation,) = store.conversations.values()
    for user_id in (3, 4, 8, 404):  # finance is not the desk; inactive; another firm's; nobody
        with pytest.raises(Invalid, match="user_id"):
            desk(store).assign(firm_id="fa", conversation_id=conversation.id, user_id=user_id, actor=STAFF)
    assert conversation.assigned_user_id is None
    for user_id in (1, 2, None):
        desk(store).assign(firm_id="fa", conversation_id=conversation.id, user_id=user_id, actor=STAFF)
        assert conversation.assigned_user_id == user_id
    assigned = [a for a in store.audits if a["action"] == "support.assign"]
    assert [a["after"]["assigned_user_id"] for a in assigned] == [1, 2, None]
    assert [a["before"]["assigned_user_id"] for a in assigned] == [None, 1, 2]


def test_another_firms_conversation_is_not_found(store):
    mail(store).add_message(firm_id="fb", trader_id=9, subject="Q", text="?", actor="t", from_trader=True)
    (conversation,) = store.conversations.values()
    for act in (lambda d: d.assign(firm_id="fa", conversation_id=conversation.id, user_id=1, actor=STAFF),
                lambda d: d.reply(firm_id="fa", conversation_id=conversation.id, subject="x", text="y", actor=STAFF),
                lambda d: d.set_status(firm_id="fa", conversation_id=conversation.id, status="closed", actor=STAFF)):
        with pytest.raises(NotFound, match=f"no conversation {conversation.id}"):
            act(desk(store))
    assert conversation.status == "open" and conversation.assigned_user_id is None


def test_a_reply_is_a_staff_message_and_may_close_the_conversation(store):
    clock = Clock()
    mail(store, clock).add_message(firm_id="fa", trader_id=1, subject="Q", text="?", actor="t", from_trader=True)
    (conversation,) = store.conversations.values()
    message = desk(store, clock).reply(firm_id="fa", conversation_id=conversation.id, subject="Re: Q", text="Done.",
                                       actor=STAFF, close=True)
    assert message.kind == "message_out" and message.outbox_id in store.outbox
    assert (conversation.status, conversation.waiting_on, conversation.closed_at) == ("closed", "trader",
                                                                                     conversation.updated_at)
    assert [a["action"] for a in store.audits] == ["trader.message", "trader.message", "support.close"]
    with pytest.raises(Conflict, match="already closed"):
        desk(store, clock).set_status(firm_id="fa", conversation_id=conversation.id, status="closed", actor=STAFF)
    with pytest.raises(Invalid, match="status"):
        desk(store, clock).set_status(firm_id="fa", conversation_id=conversation.id, status="snoozed", actor=STAFF)
    desk(store, clock).set_status(firm_id="fa", conversation_id=conversation.id, status="open", actor=STAFF)
    assert conversation.status == "open" and conversation.closed_at is None
    assert store.audits[-1]["action"] == "support.reopen"
