"""The lifecycle API's edges, on SQLite and PostgreSQL: signed provider webhooks, discount codes, resets,
suspension, the dual approval of large payouts, violations that block a payout, what a trader sees,
and firm isolation."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Order
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account, provider_key, signed_post
from support.routes_lifecycle import _product, _violation


def _order(world, who="trader", **extra):
    body = {"trader_id": world.traders["t1"], "product_id": _product(world), **extra}
    return world.client.post("/api/v1/orders", json=body, headers=world.headers(who))


def test_provider_webhooks_are_signed_by_the_right_provider_and_idempotent(world):
    payments, mt5, kyc = (provider_key(world, platform=p) for p in ("payments", "mt5", "kyc"))
    order = _order(world).json()
    body = {"order_id": order["id"], "status": "paid", "amount": "99"}
    assert world.client.post("/api/v1/webhooks/payments", json=body).status_code == 401  # unsigned
    assert signed_post(world, "/api/v1/webhooks/payments", body, (payments[0], "wrong")).status_code == 401
    assert signed_post(world, "/api/v1/webhooks/payments", body, mt5).status_code == 401  # a platform's key
    assert signed_post(world, "/api/v1/webhooks/payments", body, kyc).status_code == 401  # another provider's key
    stale = signed_post(world, "/api/v1/webhooks/payments", body, payments, ts=int(time.time()) - 3600)
    assert stale.status_code == 401 and "stale" in stale.json()["error"]
    assert signed_post(world, "/api/v1/webhooks/payments", b"not json", payments).status_code == 422
    assert signed_post(world, "/api/v1/webhooks/payments", {"order_id": "x", "status": "paid"},
                       payments).json()["error"].startswith("order_id")
    assert signed_post(world, "/api/v1/webhooks/payments", {**body, "order_id": 999999}, payments).status_code == 404
    wrong_amount = signed_post(world, "/api/v1/webhooks/payments", {**body, "amount": "1.00"}, payments)
    assert wrong_amount.status_code == 409 and "order is for 99" in wrong_amount.json()["error"]
    paid = signed_post(world, "/api/v1/webhooks/payments", body, payments)
    assert paid.status_code == 200 and paid.json()["status"] == "paid" and paid.json()["account_id"]
    assert signed_post(world, "/api/v1/webhooks/payments", body, payments).json() == paid.json()  # again: no change
    back = signed_post(world, "/api/v1/webhooks/payments", {**body, "status": "failed"}, payments)
    assert back.status_code == 409 and back.json()["allowed"] == ["refunded"]
    # a refund closes the challenge account and tells the trader
    refunded = signed_post(world, "/api/v1/webhooks/payments", {**body, "status": "refunded", "reason": "chargeback"},
                           payments)
    assert refunded.json()["status"] == "refunded" and refunded.json()["refund_reason"] == "chargeback"
    assert world.status_of(paid.json()["account_id"]) == "closed"
    # another firm's key cannot touch this firm's order
    other = provider_key(world, firm="fb", platform="payments")
    assert signed_post(world, "/api/v1/webhooks/payments", body, other).status_code == 404
    # KYC: approved with an expiry; once expired, reading the trader says so
    t1 = world.traders["t1"]
    ok = signed_post(world, "/api/v1/webhooks/kyc", {"trader_id": t1, "status": "approved", "reference": "idv-1",
                                                     "expires_at": "2020-01-01T00:00:00Z"}, kyc)
    assert ok.status_code == 200
    seen = world.client.get(f"/api/v1/traders/{t1}", headers=world.headers("trader")).json()
    assert seen["kyc"]["status"] == "expired"
    assert signed_post(world, "/api/v1/webhooks/kyc", {"trader_id": t1, "status": "maybe"}, kyc).status_code == 422


def test_discount_codes_are_limited_and_rounded_down(world):
    finance = world.headers("finance")
    assert world.client.post("/api/v1/discount-codes", json={"code": "ONCE", "percent_off": "33.333", "max_uses": 1},
                             headers=finance).status_code == 201
    both = world.client.post("/api/v1/discount-codes", json={"code": "BAD", "percent_off": "1", "amount_off": "1"},
                             headers=finance)
    assert both.status_code == 422 and "exactly one" in both.json()["error"]
    order = _order(world, discount_code="once").json()
    assert (order["discount"], order["amount"]) == ("32.99", "66.01")  # 33.333% of 99 = 32.99967 → 32.99
    payments = provider_key(world, platform="payments")
    signed_post(world, "/api/v1/webhooks/payments", {"order_id": order["id"], "status": "paid"}, payments)
    again = _order(world, discount_code="ONCE")
    assert again.status_code == 422 and again.json()["error"].startswith("discount_code: ONCE has been used 1 of 1")


def test_a_failed_account_is_reset_by_a_paid_reset_order(world):
    payments = provider_key(world, platform="payments")
    order = _order(world).json()
    account_id = signed_post(world, "/api/v1/webhooks/payments", {"order_id": order["id"], "status": "paid"},
                             payments).json()["account_id"]
    t1 = world.traders["t1"]
    refused = _order(world, reset_account_id=account_id)
    assert refused.status_code == 409 and "only a failed (breached) account can be reset" in refused.json()["error"]
    with world.sessions.begin() as s:
        s.get(m.Account, account_id).status = "breached"
        for a in s.scalars(select(m.Account).where(m.Account.trader_id == t1, m.Account.id != account_id)):
            a.status = "closed"
    me = world.headers("trader")
    assert world.client.get(f"/api/v1/traders/{t1}", headers=me).json()["stage"] == "failed"
    reset = _order(world, reset_account_id=account_id).json()
    assert reset["kind"] == "reset" and reset["replaces_account_id"] == account_id
    fresh = signed_post(world, "/api/v1/webhooks/payments", {"order_id": reset["id"], "status": "paid"},
                        payments).json()["account_id"]
    assert world.status_of(account_id) == "closed" and world.status_of(fresh) == "active"
    assert world.client.get(f"/api/v1/traders/{t1}", headers=me).json()["stage"] == "evaluation"


def test_suspending_a_trader_stops_their_accounts_and_reinstating_lifts_the_stop(world):
    t1 = world.traders["t1"]
    risk = world.headers("risk")
    stopped = world.client.post(f"/api/v1/traders/{t1}/transition", json={"to": "suspended", "reason": "chargebacks"},
                                headers=risk)
    assert stopped.status_code == 200 and stopped.json()["stage"] == "suspended"
    assert world.status_of(world.accounts["A1"]) == "suspended"
    blocked = _order(world)
    assert blocked.status_code == 409 and "suspended" in blocked.json()["error"]
    back = world.client.post(f"/api/v1/traders/{t1}/transition", json={"to": "evaluation", "reason": "resolved"},
                             headers=risk).json()
    assert back["stage"] == "evaluation" and world.status_of(world.accounts["A1"]) == "active"
    stages = [e.after["stage"] for e in world.audit("trader.stage")]
    assert stages[-2:] == ["suspended", "evaluation"]
    terminated = world.client.post(f"/api/v1/traders/{t1}/transition", json={"to": "terminated", "reason": "fraud"},
                                   headers=risk).json()
    assert terminated["allowed_transitions"] == [] and world.status_of(world.accounts["A1"]) == "closed"
    final = world.client.post(f"/api/v1/traders/{t1}/transition", json={"to": "registered", "reason": "undo"},
                              headers=risk)
    assert final.status_code == 409 and final.json()["allowed"] == []


def test_a_large_payout_needs_two_approvers_and_a_rejection_reason_reaches_the_trader(world):
    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    assert world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"},
                             headers=world.headers("admin")).status_code == 200
    f2, f3 = (world.headers(add_user(world, firm="fa", role="finance", name=n)) for n in ("f2", "f3"))
    finance, me = world.headers("finance"), world.headers("trader")
    big = funded_account(world.sessions, firm="fa", version_id=version, external_id="BIG", trader_id=world.traders["t1"],
                         balance=Decimal("10500"), deductions=Decimal("100"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": big}, headers=me).json()
    assert payout["status"] == "requested" and payout["trader_amount"] == "320"  # (500 − 100 deducted) × 80%
    bad = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={"deduction": "10"}, headers=finance)
    assert bad.status_code == 422 and "deduction_reason" in bad.json()["error"]
    prepared = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare",
                                 json={"deduction": "10", "deduction_reason": "wire fee"}, headers=finance).json()
    assert (prepared["trader_amount"], prepared["approvals_needed"]) == ("312", 2)
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).json()["status"] == "prepared"
    twice = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2)
    assert twice.status_code == 409 and "already approved" in twice.json()["error"]
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f3).json()["status"] == "approved"
    # a second account's request is rejected with a reason the trader reads
    small = funded_account(world.sessions, firm="fa", version_id=version, external_id="SMALL",
                           trader_id=world.traders["t1"], balance=Decimal("10100"))
    other = world.client.post("/api/v1/payouts", json={"account_id": small}, headers=finance).json()
    world.client.post(f"/api/v1/payouts/{other['id']}/reject", json={"reason": "bank account name mismatch"},
                      headers=f2)
    seen = world.client.get(f"/api/v1/payouts/{other['id']}", headers=me).json()
    assert seen["status"] == "rejected" and seen["reason"] == "bank account name mismatch"
    assert seen["requested_by"] is None and seen["approved_by_user_ids"] == []  # staff identities stay with staff
    # the other trader, and another firm, see nothing of it
    t2 = world.headers(add_user(world, firm="fa", role="trader", name="t2u", trader_id=world.traders["t2"]))
    assert world.client.get(f"/api/v1/payouts/{other['id']}", headers=t2).status_code == 404
    assert world.client.get("/api/v1/payouts", headers=t2).json() == []
    fb = world.headers("fb:admin")
    for url in (f"/api/v1/payouts/{other['id']}", f"/api/v1/traders/{world.traders['t1']}",
                f"/api/v1/accounts/{small}/payout-eligibility", f"/api/v1/traders/{world.traders['t1']}/timeline"):
        assert world.client.get(url, headers=fb).status_code == 404, url
    assert world.client.post(f"/api/v1/payouts/{other['id']}/reject", json={"reason": "not yours"},
                             headers=fb).status_code == 404
    assert world.client.post("/api/v1/payouts", json={"account_id": small}, headers=fb).status_code == 404


def test_an_unresolved_violation_blocks_a_payout_until_risk_resolves_it(world):
    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="V1",
                             trader_id=world.traders["t1"], balance=Decimal("10400"))
    world.accounts["A1"] = account  # _violation puts its decision on "A1"
    decision = _violation(world, "risk")
    me = world.headers("trader")
    check = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=me).json()
    assert [f["name"] for f in check["failed_checks"]] == ["no_unresolved_violation"]
    assert f"#{decision} violation" in check["failed_checks"][0]["reason"]
    resolved = world.client.post(f"/api/v1/decisions/{decision}/resolve", json={"reason": "platform glitch"},
                                 headers=world.headers("risk"))
    assert resolved.status_code == 201
    assert world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=me).json()["eligible"]
    assert world.client.post(f"/api/v1/decisions/{decision}/resolve", json={"reason": "again"},
                             headers=world.headers("risk")).status_code == 409


def test_the_lifecycle_commands(world, db_url):
    from typer.testing import CliRunner

    from propcrm.cli import app

    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="CLI1",
                             trader_id=world.traders["t1"], balance=Decimal("10250.999"))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["lifecycle", *args, "--firm", "fa", "--database-url", db_url])
        assert result.exit_code == 0, result.output
        return result.stdout

    check = json.loads(run("eligibility", str(account)))
    assert check["eligible"] and check["trader_amount"] == "200.79"  # 250.999 × 80% = 200.7992 → 200.79
    numbers = json.loads(run("numbers"))
    assert numbers["open_liability"]["total"] == "200.79"
    assert json.loads(run("settings", "--scaling-mode", "auto"))["scaling_mode"] == "auto"
    assert "trader(s) moved" in run("sync")
    assert json.loads(run("trader", str(world.traders["t1"])))["stage"] == "funded"
    assert json.loads(run("scale"))[0]["result"] == "not eligible"  # no payout yet
    bad = runner.invoke(app, ["lifecycle", "eligibility", "999999", "--firm", "fa", "--database-url", db_url])
    assert bad.exit_code == 2 and "no account 999999" in bad.output


def test_in_auto_mode_an_eligible_account_is_scaled_at_once_and_e_mails_reach_the_timeline(world):
    from propcrm.services.dispatch import Dispatcher
    from support.routes_lifecycle import _scalable

    class Mailbox:
        notify_traders, risk_address, risk_kinds = True, None, ()

        def __init__(self):
            self.sent = []

        def send(self, **message):
            self.sent.append(message)

    assert world.client.post("/api/v1/lifecycle/settings", json={"scaling_mode": "auto"},
                             headers=world.headers("admin")).json()["scaling_mode"] == "auto"
    account = int(_scalable(world))
    scaled = world.client.post(f"/api/v1/accounts/{account}/scale", headers=world.headers("risk"))
    assert scaled.status_code == 201 and scaled.json()["status"] == "applied"
    assert world.status_of(account) == "closed" and world.status_of(scaled.json()["new_account_id"]) == "funded"
    again = world.client.post(f"/api/v1/accounts/{account}/scale", headers=world.headers("risk"))
    assert again.status_code == 409 and "funded_and_active" in again.json()["allowed"]
    mailbox = Mailbox()
    dispatcher = Dispatcher(world.sessions, connectors={"*": type("C", (), {"send": lambda self, p: None})()},
                            email=mailbox)
    dispatcher.run_once()
    dispatcher.run_once()
    assert any("scaled to 12,500.00" in m["subject"] for m in mailbox.sent)
    timeline = world.client.get(f"/api/v1/traders/{world.traders['t1']}/timeline",
                                headers=world.headers("trader")).json()
    emails = [item for item in timeline if item["kind"] == "email"]
    assert emails and all(item["delivery"] == "sent" for item in emails)


def test_an_account_that_changed_after_preparation_is_prepared_again_before_it_is_paid(world):
    from propcrm.services.evaluation import STATE_DECODER, STATE_ENCODER

    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="CH1",
                             trader_id=world.traders["t1"], balance=Decimal("10200"))
    f2 = world.headers(add_user(world, firm="fa", role="finance", name="f2"))
    finance = world.headers("finance")
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={},
                             headers=finance).json()["trader_amount"] == "160"
    with world.sessions.begin() as s:  # the account lost 100 meanwhile
        row = s.get(m.AccountState, account)
        st = STATE_DECODER.decode(row.state)
        st.balance = st.equity = Decimal("10100")
        row.state, row.balance, row.equity = STATE_ENCODER.encode(st), st.balance, st.equity
    changed = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2)
    assert changed.status_code == 409 and "prepare it again" in changed.json()["error"]
    again = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=f2).json()
    assert again["trader_amount"] == "80" and again["prepared_by_user_id"] == world.user_ids["fa:f2"]
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).status_code == 409
    paid = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=finance).json()
    assert (paid["status"], paid["trader_amount"], paid["withdrawal"]) == ("approved", "80", "100")


def test_profit_made_in_a_news_window_is_deducted_from_the_payout_and_the_deduction_resets(world):
    from propcrm.services.catalog import create_account

    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    with world.sessions.begin() as s:
        account = create_account(s, firm_id="fa", external_id="NEWS1", pack_version_id=version, phase="funded",
                                 trader_id=world.traders["t1"]).id
    world.ingest(
        {"id": "nfp", "type": "news", "ts": "2026-03-06T13:30:00Z", "title": "US Non-Farm Payrolls",
         "currency": "USD", "impact": "high"},
        {"id": "n-o", "type": "trade_opened", "account": "NEWS1", "ts": "2026-03-06T13:29:00Z", "position": "p1",
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08"},
        {"id": "n-c", "type": "trade_closed", "account": "NEWS1", "ts": "2026-03-06T15:00:00Z", "position": "p1",
         "lots": "1", "price": "1.09", "profit": "1000"},
    )
    world.evaluate()
    me, finance = world.headers("trader"), world.headers("finance")
    f2 = world.headers(add_user(world, firm="fa", role="finance", name="f2"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=me).json()
    assert payout["status"] == "requested", payout["failed_checks"]
    steps = {step["label"]: step["amount"] for step in payout["steps"]}
    assert steps["profit since the last payout"] == "1000" and steps["deducted profit (penalties)"] == "-500"
    assert (payout["penalties"], payout["trader_amount"], payout["withdrawal"]) == ("500", "400", "1000")
    world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=finance)
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).json()["status"] == "approved"
    world.evaluate()
    after = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=me).json()
    steps = {step["label"]: step["amount"] for step in after["steps"]}
    assert steps["profit since the last payout"] == "0" and steps["deducted profit (penalties)"] == "0"


def test_a_product_on_a_retired_version_is_not_sold_and_a_paid_order_always_gets_its_account(world):
    """Issue 19: after its pack version was retired a product stayed on sale; the order was taken (201) and
    its payment then refused (409): a paid order with no account."""
    payments = provider_key(world, platform="payments")
    product = _product(world)
    pending = _order(world)  # taken while the version is live
    assert pending.status_code == 201, pending.text
    with world.sessions.begin() as s:
        version_id = s.get(m.Product, product).pack_version_id
        label = f"{s.get(m.RulePackVersion, version_id).pack_id} v{s.get(m.RulePackVersion, version_id).version}"
    retired = world.client.post(f"/api/v1/packs/{version_id}/retire", headers=world.headers("admin"))
    assert retired.status_code == 200, retired.text

    refused = _order(world)
    assert refused.status_code == 409
    assert refused.json()["error"] == (
        f"product Challenge 10k is not on sale: rule pack {label} is retired; sell a product on the pack's live version"
    )
    catalog = world.client.get("/api/v1/products?on_sale=true", headers=world.headers("finance")).json()
    assert product not in [p["id"] for p in catalog]
    listed = {p["id"]: p for p in world.client.get("/api/v1/products", headers=world.headers("finance")).json()}
    assert listed[product]["active"] is True and listed[product]["on_sale"] is False

    # the order taken before the retirement is paid: it gets its account, on the version it was sold
    paid = signed_post(world, "/api/v1/webhooks/payments", {"order_id": pending.json()["id"], "status": "paid"},
                       payments)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid" and paid.json()["account_id"] is not None
    with world.sessions.begin() as s:
        assert s.get(m.Account, paid.json()["account_id"]).pack_version_id == version_id
        no_account = s.scalars(select(Order).where(Order.status == "paid", Order.account_id.is_(None))).all()
    assert no_account == []
