"""The first payout of a scaled account, on SQLite and PostgreSQL: the profit a scaling carried over
is paid at the split in force when it was earned (80%), only the profit earned since scaling at the
scaled account's split (90%); a loss since scaling eats into the carried part. The firm once paid the
carried profit at 90%: 30 more on every 300 than its rules allowed when the profit was earned."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from propcrm.adapters.db import models as m
from propcrm.services import scaling
from propcrm.services.lifecycle import Refusal
from support.lifecycle import add_user
from support.routes_lifecycle import _scalable

UTC = dt.timezone.utc


def _scale(world) -> tuple[str, int, str]:
    """A funded account (10,000, one payout done, 500 unpaid at 80%) scaled to 12,500 at 90%."""
    account = int(_scalable(world))
    with world.sessions.begin() as s:
        old = s.get(m.Account, account).external_id
        row = scaling.scale_account(s, firm_id="fa", account_id=account, actor="risk")
        assert not isinstance(row, Refusal), row.reason
        row = scaling.approve_scaling(s, firm_id="fa", scaling_id=row.id, actor="risk")
        assert not isinstance(row, Refusal), row.reason
        assert (row.carried_profit, row.to_split) == (Decimal(500), Decimal(90))
        assert row.carried_parts == [{"amount": "500", "split_pct": "80", "source": old}]
        new_id, new_ext = row.new_account_id, s.get(m.Account, row.new_account_id).external_id
    world.evaluate()
    return old, new_id, new_ext


def _trade(world, account: str, tag: str, profit: str, day: int) -> None:
    at = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=5 - day)
    world.ingest(
        {"id": f"{tag}-o", "type": "trade_opened", "account": account, "ts": at.isoformat(), "position": tag,
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.1"},
        {"id": f"{tag}-c", "type": "trade_closed", "account": account,
         "ts": (at + dt.timedelta(hours=1)).isoformat(), "position": tag, "lots": "1", "price": "1.1",
         "profit": profit})
    world.evaluate()


def _pay(world, account_id: int, deduction: str | None = None) -> dict:
    c, finance = world.client, world.headers("finance")
    f2 = world.headers(add_user(world, firm="fa", role="finance", name=f"f2x{account_id}"))
    asked = c.post("/api/v1/payouts", json={"account_id": account_id}, headers=world.headers("trader")).json()
    assert asked["status"] == "requested", asked["failed_checks"]
    body = {"deduction": deduction, "deduction_reason": "chargeback"} if deduction else {}
    prepared = c.post(f"/api/v1/payouts/{asked['id']}/prepare", json=body, headers=finance)
    assert prepared.status_code == 200, prepared.text
    paid = c.post(f"/api/v1/payouts/{asked['id']}/approve", headers=f2).json()
    assert paid["status"] == "approved", paid
    world.evaluate()
    return paid


def test_a_loss_since_scaling_eats_into_the_carried_profit_which_keeps_its_split(world):
    old, new_id, new_ext = _scale(world)
    _trade(world, new_ext, "loss", "-200", 1)  # 500 carried − 200 lost since scaling
    me = world.headers("trader")
    owed = world.client.get(f"/api/v1/accounts/{new_id}/payout-eligibility", headers=me).json()
    steps = {s["label"]: (s["amount"], s["note"]) for s in owed["steps"]}
    assert steps["profit since the last payout"][0] == "300"
    assert steps[f"carried over from {old}"][0] == "500" and steps["earned since scaling"][0] == "-200"
    assert steps[f"carried over from {old} at 80%"] == (
        "240", "500.00 − 200.00 taken off = 300.00; 300.00 × 80% = 240.00")
    assert steps["earned since scaling at 90%"] == ("0", "0.00 × 90% = 0.00")
    assert owed["trader_amount"] == "240"  # not 270 (300 × 90%)
    paid = _pay(world, new_id)
    assert (paid["trader_amount"], paid["withdrawal"], paid["carried_profit"], paid["split_pct"]) == \
        ("240", "300", "300", "90")
    # the first payout withdrew the carried profit: from now on everything is earned at 90%
    _trade(world, new_ext, "after", "100", 3)
    again = world.client.get(f"/api/v1/accounts/{new_id}/payout-eligibility", headers=me).json()
    assert again["trader_amount"] == "90"
    assert not any("carried" in s["label"] for s in again["steps"])


def test_deductions_come_off_the_profit_earned_at_the_higher_split_first(world):
    old, new_id, new_ext = _scale(world)
    _trade(world, new_ext, "gain", "400", 1)  # 500 carried + 400 since scaling
    owed = world.client.get(f"/api/v1/accounts/{new_id}/payout-eligibility",
                            headers=world.headers("finance")).json()
    assert owed["trader_amount"] == "760"  # 500 × 80% + 400 × 90%
    paid = _pay(world, new_id, deduction="450")  # all 400 earned at 90% first, then 50 of the carried
    steps = {s["label"]: (s["amount"], s["note"]) for s in paid["steps"]}
    assert steps["earned since scaling at 90%"] == ("0", "400.00 − 400.00 taken off = 0.00; 0.00 × 90% = 0.00")
    assert steps[f"carried over from {old} at 80%"] == (
        "360", "500.00 − 50.00 taken off = 450.00; 450.00 × 80% = 360.00")
    assert (paid["trader_amount"], paid["withdrawal"], paid["carried_profit"]) == ("360", "900", "450")
    with world.sessions() as s:  # the whole profit, carried part included, left the account
        assert s.get(m.AccountState, new_id).balance == Decimal(12500)
