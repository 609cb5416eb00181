"""A payout's withdrawal is applied exactly once, on both backends.

The withdrawal is the balance event ``payout-<id>`` of source ``propcrm-payouts``, idempotent on its id
like every event. An event with that id stored before the approval — by anyone who could write to that
source — would make the withdrawal a silent "duplicate": the payout approved and paid, its profit never
taken out of the account, and so paid again by the next payout. These tests seed such an event straight
into the event log (not through the API, which reserves the source name: that is a second lock).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Payout, PayoutApproval
from propcrm.services import payouts as payout_service
from support.lifecycle import add_life_pack, approve_kyc, funded_account
from support.staff import build_world, seed

pytestmark = pytest.mark.usefixtures("cheap_argon2")
UTC = dt.timezone.utc


@pytest.fixture
def world(db_url):
    _, world = build_world(db_url)
    with world.client:
        seed(world)
        world.life = add_life_pack(world.sessions, "fa")
        approve_kyc(world.sessions, world.traders["t1"])
        yield world


def prepared_payout(world, account: int | None = None) -> tuple[int, int]:
    """A funded account of t1 with 500 profit (or ``account``) and a payout requested by the trader,
    prepared by finance."""
    if account is None:
        account = funded_account(world.sessions, firm="fa", version_id=world.life, external_id="P7",
                                 trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=world.headers("trader")).json()
    assert payout["status"] == "requested", payout
    prepared = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=world.headers("finance"))
    assert prepared.status_code == 200 and prepared.json()["approvals_needed"] == 1, prepared.text
    return account, payout["id"]


def store_event(world, *, account_id: int, event_id: str, body: dict) -> None:
    """An event written straight into the event log under the payouts' source."""
    with world.sessions.begin() as s:
        s.add(m.RawEvent(firm_id="fa", source=payout_service.SOURCE, event_id=event_id, account_id=account_id,
                         type="balance", ts=dt.datetime(2026, 1, 6, tzinfo=UTC),
                         body=json.dumps(body).encode(), status="pending"))


def withdrawals(world, payout_id: int) -> list[dict]:
    with world.sessions() as s:
        return [json.loads(body) for body in s.scalars(select(m.RawEvent.body).where(
            m.RawEvent.firm_id == "fa", m.RawEvent.event_id == f"payout-{payout_id}"))]


def payout_state(world, payout_id: int) -> tuple[str, int]:
    with world.sessions() as s:
        row = s.get(Payout, payout_id)
        approvals = s.scalar(select(func.count()).select_from(PayoutApproval).where(PayoutApproval.payout_id == payout_id))
        return row.status, approvals


def test_a_pre_seeded_event_with_the_withdrawals_id_fails_the_approval_loudly_and_pays_nothing(world):
    # the attack: the id of the next payout is predictable; an event with its withdrawal's id, a small
    # deposit, is stored and evaluated before the payout is requested
    account = funded_account(world.sessions, firm="fa", version_id=world.life, external_id="P7",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    with world.sessions() as s:
        payout = (s.scalar(select(func.max(Payout.id))) or 0) + 1
    store_event(world, account_id=account, event_id=f"payout-{payout}",
                body={"id": f"payout-{payout}", "type": "balance", "account": "P7", "ts": "2026-01-06T00:00:00Z",
                      "amount": "0.01", "reason": "deposit"})
    world.evaluate()
    assert prepared_payout(world, account=account)[1] == payout
    answer = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers("admin"))
    assert answer.status_code == 409, answer.text
    assert "not approved and nothing was withdrawn" in answer.json()["error"]
    assert f"payout-{payout}" in answer.json()["error"]
    assert payout_state(world, payout) == ("prepared", 0)  # unapproved, unpaid, no approval counted
    assert [w["amount"] for w in withdrawals(world, payout)] == ["0.01"]  # the seeded event only
    refused = world.audit("payout.withdrawal_refused")
    assert len(refused) == 1 and refused[0].entity_id == str(payout)
    assert "not this payout's withdrawal" in refused[0].after["reason"]
    assert world.audit("payout.approved") == [] and world.audit("payout.approval") == []
    # and it stays refused on every retry, by anyone
    again = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers("admin"))
    assert again.status_code == 409 and payout_state(world, payout) == ("prepared", 0)


def test_a_withdrawal_that_ingestion_refuses_fails_the_approval_and_leaves_nothing_behind(world, monkeypatch):
    account, payout = prepared_payout(world)
    real_line = payout_service._withdrawal_line
    # a withdrawal line ingestion cannot accept (its amount is not a number)
    monkeypatch.setattr(payout_service, "_withdrawal_line",
                        lambda row, acc, ts: real_line(row, acc, ts).replace(b'"amount": "-', b'"amount": "minus '))
    with world.sessions() as s:
        quarantined = s.scalar(select(func.count()).select_from(m.Quarantine))
    answer = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers("admin"))
    assert answer.status_code == 409, answer.text
    assert "ingestion refused the withdrawal event" in answer.json()["error"]
    assert "amount" in answer.json()["error"]
    assert payout_state(world, payout) == ("prepared", 0) and withdrawals(world, payout) == []
    with world.sessions() as s:  # not even quarantined, where it could be re-submitted without the payout
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == quarantined
    assert len(world.audit("payout.withdrawal_refused")) == 1
    monkeypatch.undo()
    paid = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers("admin"))
    assert paid.status_code == 200 and paid.json()["status"] == "approved"
    assert [w["amount"] for w in withdrawals(world, payout)] == ["-500"]


def test_the_approval_pays_once_however_often_it_is_sent(world):
    account, payout = prepared_payout(world)
    first = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers("admin"))
    assert first.status_code == 200 and first.json()["status"] == "approved"
    for who in ("admin", "fa:admin"):
        again = world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers(who))
        assert again.status_code == 409 and "is approved" in again.json()["error"]
    [withdrawal] = withdrawals(world, payout)
    assert (withdrawal["type"], withdrawal["reason"], withdrawal["amount"], withdrawal["payout"]) == \
        ("balance", "payout", "-500", payout)
    assert len(world.audit("payout.approved")) == 1
    world.evaluate()
    with world.sessions() as s:
        assert s.get(m.AccountState, account).balance == Decimal("10000")  # withdrawn once, exactly
