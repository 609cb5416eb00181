"""Payment instruments reach linkage analysis: through the payment provider's webhook and through the API
(issue 18), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import AccountFingerprint, Case, CaseAccount
from support.lifecycle import provider_key, signed_post
from support.routes_lifecycle import _product


pytestmark = pytest.mark.usefixtures("cheap_argon2")  # conftest.py; `world` comes from there too


def _payment_values(world, account_id):
    with world.sessions() as s:
        return set(s.scalars(select(AccountFingerprint.value).where(AccountFingerprint.account_id == account_id,
                                                                     AccountFingerprint.via == "payment")))


def _linkage_cases(world):
    with world.sessions() as s:
        out = []
        for case in s.scalars(select(Case).where(Case.firm_id == "fa", Case.detector == "linkage")):
            out.append(sorted(s.scalars(select(m.Account.external_id).join(
                CaseAccount, CaseAccount.account_id == m.Account.id).where(CaseAccount.case_id == case.id))))
        return out


def test_one_card_paying_two_traders_orders_through_the_webhook_links_their_accounts(world):
    payments = provider_key(world, platform="payments")
    accounts = []
    for trader in ("t1", "t2"):
        order = world.client.post("/api/v1/orders", json={"trader_id": world.traders[trader], "product_id": _product(world)},
                                  headers=world.headers("admin"))
        assert order.status_code == 201, order.text
        paid = signed_post(world, "/api/v1/webhooks/payments",
                           {"order_id": order.json()["id"], "status": "paid", "amount": "99",
                            "payment_method": {"kind": "card", "fingerprint": "fp_9f3ac1"}}, payments)
        assert paid.status_code == 200, paid.text
        accounts.append(paid.json()["account_id"])
    assert all(_payment_values(world, a) == {"card:fp_9f3ac1"} for a in accounts)
    # a malformed instrument is refused naming the field, and changes nothing
    order = world.client.post("/api/v1/orders", json={"trader_id": world.traders["t1"], "product_id": _product(world)},
                              headers=world.headers("admin")).json()
    bad = signed_post(world, "/api/v1/webhooks/payments", {"order_id": order["id"], "status": "paid", "amount": "99",
                                                           "payment_method": {"kind": "cash", "fingerprint": "x"}}, payments)
    assert bad.status_code == 422 and "kind" in bad.text
    run = world.client.post("/api/v1/analysis/run", json={"full": True}, headers=world.headers("risk"))
    assert run.status_code == 200, run.text
    with world.sessions() as s:
        names = sorted(s.scalar(select(m.Account.external_id).where(m.Account.id == a)) for a in accounts)
    assert any(set(names) <= set(case) for case in _linkage_cases(world)), _linkage_cases(world)


def test_the_payment_method_endpoint_is_for_risk_finance_and_admin_of_the_accounts_firm_and_audited(world):
    a1, b1 = world.accounts["A1"], world.accounts["B1"]
    body = {"kind": "wallet", "fingerprint": "wal_77e0"}
    for who in ("support", "trader"):
        assert world.client.post(f"/api/v1/accounts/{a1}/payment-methods", json=body,
                                 headers=world.headers(who)).status_code == 403
    assert world.client.post(f"/api/v1/accounts/{a1}/payment-methods", json=body).status_code in (401, 403)
    assert world.client.post(f"/api/v1/accounts/{b1}/payment-methods", json=body,
                             headers=world.headers("risk")).status_code == 404  # another firm's account
    assert _payment_values(world, b1) == set()
    bad = world.client.post(f"/api/v1/accounts/{a1}/payment-methods", json={"kind": "cash", "fingerprint": "x"},
                            headers=world.headers("risk"))
    assert bad.status_code == 422
    for who in ("risk", "finance"):
        made = world.client.post(f"/api/v1/accounts/{a1}/payment-methods", json=body, headers=world.headers(who))
        assert made.status_code == 201 and made.json() == {"account_id": a1, "value": "wallet:wal_77e0"}
    assert _payment_values(world, a1) == {"wallet:wal_77e0"}
    with world.sessions() as s:
        entries = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "account.payment_method")).all()
        assert len(entries) == 2 and all(e.firm_id == "fa" for e in entries)
