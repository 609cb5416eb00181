"""Rows of the permission matrix for the lifecycle feature's routes (see support/routes.py).

Each row that changes something builds what it acts on afresh for every call (a lead to convert, a
payout ready to prepare or approve, an account ready to scale), so every allowed role gets a 2xx.
"""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import update

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Payout
from propcrm.services import lifecycle, payouts, scaling
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account
from support.routes import ADMIN, ALL, FINANCE, RISK, Route  # noqa: F401
from support.staff import World

STAFF = ("admin", "risk", "finance", "support")
SUPPORT = ("admin", "support")
KYC = ("admin", "risk", "support")
ORDERING = ("admin", "support", "trader")
REQUESTING = ("admin", "finance", "trader")
SCALING_READERS = ("admin", "risk", "finance")


def _memo(w: World, name: str, make):
    store = w.__dict__.setdefault("_lifecycle", {})
    if name not in store:
        store[name] = make()
    return store[name]


def _t1(w: World, who) -> str:
    return str(w.traders["t1"])


def _life(w: World) -> int:
    return _memo(w, "life", lambda: add_life_pack(w.sessions, "fa"))


def _product(w: World) -> int:
    def make():
        with w.sessions.begin() as s:
            from propcrm.services.products import create_product

            return create_product(s, firm_id="fa", name="Challenge 10k", pack_version_id=_life(w), price="99",
                                  actor="test").id
    return _memo(w, "product", make)


def _new_lead(w: World, who) -> str:
    with w.sessions.begin() as s:
        return str(lifecycle.capture_lead(s, firm_id="fa", name="Lead", email=f"lead{next(w.counter)}@x.example",
                                          source="web", consent=True, actor="test").id)


def _lost_lead(w: World, who) -> str:
    lead_id = _new_lead(w, who)
    with w.sessions.begin() as s:
        lifecycle.mark_lead_lost(s, firm_id="fa", lead_id=int(lead_id), reason="not interested", actor="test")
    return lead_id


def _new_trader(w: World, who) -> str:
    with w.sessions.begin() as s:
        trader = m.Trader(firm_id="fa", name="T", email=f"t{next(w.counter)}@traders.example")
        s.add(trader)
        s.flush()
        return str(trader.id)


def _order(w: World, *, paid: bool) -> int:
    with w.sessions.begin() as s:
        order = lifecycle.create_order(s, firm_id="fa", trader_id=w.traders["t1"], product_id=_product(w), actor="test")
        if paid:
            lifecycle.payment_update(s, firm_id="fa", order_id=order.id, status="paid", provider_ref="x", amount=None,
                                     actor="test")
        return order.id


def _funded(w: World) -> int:
    approve_kyc(w.sessions, w.traders["t1"])
    return funded_account(w.sessions, firm="fa", version_id=_life(w), external_id=f"F{next(w.counter)}",
                          trader_id=w.traders["t1"], balance=Decimal("10500"))


def _payout(w: World, *, prepared: bool) -> str:
    account_id = _funded(w)
    preparer = _memo(w, "preparer", lambda: add_user(w, firm="fa", role="finance", name="preparer"))
    with w.sessions.begin() as s:
        row = payouts.request_payout(s, firm_id="fa", account_id=account_id, actor="test")
        assert row.status == "requested", row.checks
        if prepared:
            payouts.prepare_payout(s, firm_id="fa", payout_id=row.id, user_id=w.user_ids[preparer], actor="test")
        return str(row.id)


def _approved_payout(w: World) -> str:
    """An approved payout of a funded account, not sent yet (as finance's approval leaves it)."""
    account_id = _funded(w)
    with w.sessions.begin() as s:
        account = s.get(m.Account, account_id)
        row = Payout(firm_id="fa", account_id=account_id, trader_id=account.trader_id,
                     lineage=payouts.lineage_of(account.external_id), status="approved", requested_by="test",
                     manual_deduction=Decimal(0), withdrawal=Decimal(100), trader_amount=Decimal(80),
                     method="wise", destination="t1@traders.example")
        s.add(row)
        s.flush()
        return str(row.id)


def _scalable(w: World, who=None) -> str:
    """A funded account with one paid-out payout and unpaid profit: eligible for its plan's scaling."""
    account_id = _funded(w)
    with w.sessions.begin() as s:
        account = s.get(m.Account, account_id)
        event_id = f"payout-test-{account_id}"
        body = json.dumps({"id": event_id, "type": "balance", "account": account.external_id,
                           "ts": "2026-01-05T00:00:00Z", "amount": "-100", "reason": "payout"}).encode() + b"\n"
        from propcrm.services.ingest import ingest

        ingest(s, firm_id="fa", source=payouts.SOURCE, body=body)
        s.execute(update(m.RawEvent).where(m.RawEvent.event_id == event_id).values(status="applied"))
        s.add(Payout(firm_id="fa", account_id=account_id, trader_id=account.trader_id,
                     lineage=payouts.lineage_of(account.external_id), status="approved", requested_by="test",
                     manual_deduction=Decimal(0), withdrawal=Decimal(100), trader_amount=Decimal(80),
                     approvals_needed=1, event_id=event_id))
    return str(account_id)


def _pending_scaling(w: World, who) -> str:
    account_id = int(_scalable(w))
    with w.sessions.begin() as s:
        row = scaling.scale_account(s, firm_id="fa", account_id=account_id, actor="test")
        assert not isinstance(row, lifecycle.Refusal), row.reason
        return str(row.id)


def _violation(w: World, who) -> str:
    with w.sessions.begin() as s:
        account = s.get(m.Account, w.accounts["A1"])
        body = {"account": "A1", "event_id": "v", "ts": "2026-03-02T10:00:00Z", "kind": "violation",
                "rule": "max_lots", "phase": account.phase, "message": "too many lots"}
        from support.staff import _decision

        row = _decision(account, "violation")
        row.body = json.dumps(body).encode()
        s.add(row)
        s.flush()
        return str(row.id)


def _refused_payout(w: World) -> str:
    def make():
        with w.sessions.begin() as s:
            return str(payouts.request_payout(s, firm_id="fa", account_id=w.accounts["A1"], actor="test").id)
    return _memo(w, "refused", make)


ROUTES: list[Route] = [
    Route("POST", "/api/v1/leads", SUPPORT,
          body=lambda w, who: {"name": "Lee", "email": f"lee{next(w.counter)}@x.example", "source": "web",
                               "consent": True}),
    Route("GET", "/api/v1/leads", SUPPORT),
    Route("POST", "/api/v1/leads/{lead_id}/convert", SUPPORT, path=_new_lead),
    Route("POST", "/api/v1/leads/{lead_id}/lost", SUPPORT, path=_new_lead, body=lambda w, who: {"reason": "no budget"}),
    Route("POST", "/api/v1/leads/{lead_id}/reopen", SUPPORT, path=_lost_lead),
    Route("GET", "/api/v1/traders", STAFF),
    Route("GET", "/api/v1/traders/{trader_id}", ALL, path=_t1),
    Route("POST", "/api/v1/traders/{trader_id}/transition", RISK, path=_new_trader,
          body=lambda w, who: {"to": "suspended", "reason": "chargeback under review"}),
    Route("POST", "/api/v1/traders/{trader_id}/kyc", KYC, path=_t1,
          body=lambda w, who: {"status": "approved", "reason": "documents checked"}),
    Route("GET", "/api/v1/traders/{trader_id}/timeline", ALL, path=_t1),
    Route("POST", "/api/v1/traders/{trader_id}/notes", STAFF, path=_t1, body=lambda w, who: {"text": "called"}),
    Route("POST", "/api/v1/traders/{trader_id}/messages", ORDERING, path=_t1,
          body=lambda w, who: {"subject": "Hello", "text": "About my account"}),
    Route("GET", "/api/v1/discount-codes", FINANCE),
    Route("POST", "/api/v1/discount-codes", FINANCE,
          body=lambda w, who: {"code": f"CODE{next(w.counter)}", "percent_off": "10"}),
    Route("POST", "/api/v1/orders", ORDERING,
          body=lambda w, who: {"trader_id": w.traders["t1"], "product_id": _product(w)}),
    Route("GET", "/api/v1/orders", ALL),
    Route("GET", "/api/v1/orders/{order_id}", ALL, path=lambda w, who: str(_memo(w, "order", lambda: _order(w, paid=False)))),
    Route("POST", "/api/v1/orders/{order_id}/refund", FINANCE, path=lambda w, who: str(_order(w, paid=True)),
          body=lambda w, who: {"reason": "asked within 14 days"}),
    Route("GET", "/api/v1/lifecycle/settings", FINANCE),
    Route("POST", "/api/v1/lifecycle/settings", ADMIN, body=lambda w, who: {"dual_approval_over": "5000"}),
    Route("GET", "/api/v1/accounts/{account_id}/payout-eligibility", ALL, path=lambda w, who: str(w.accounts["A1"])),
    Route("POST", "/api/v1/payouts", REQUESTING, body=lambda w, who: {"account_id": w.accounts["A1"]}),
    Route("GET", "/api/v1/payouts", ALL),
    Route("GET", "/api/v1/payouts/{payout_id}", ALL, path=lambda w, who: _refused_payout(w)),
    Route("POST", "/api/v1/payouts/{payout_id}/prepare", FINANCE, path=lambda w, who: _payout(w, prepared=False),
          body=lambda w, who: {}),
    Route("POST", "/api/v1/payouts/{payout_id}/approve", FINANCE, path=lambda w, who: _payout(w, prepared=True)),
    Route("POST", "/api/v1/payouts/{payout_id}/reject", FINANCE, path=lambda w, who: _payout(w, prepared=False),
          body=lambda w, who: {"reason": "bank details missing"}),
    Route("POST", "/api/v1/payouts/{payout_id}/sent", FINANCE, path=lambda w, who: _approved_payout(w),
          body=lambda w, who: {"reference": "WISE-TX-1"}),
    Route("POST", "/api/v1/decisions/{decision_id}/resolve", RISK, path=_violation,
          body=lambda w, who: {"reason": "platform glitch"}),
    Route("GET", "/api/v1/accounts/{account_id}/scaling", ALL, path=lambda w, who: str(w.accounts["A1"])),
    Route("POST", "/api/v1/accounts/{account_id}/scale", RISK, path=_scalable),
    Route("POST", "/api/v1/scaling/run", RISK),
    Route("GET", "/api/v1/scalings", SCALING_READERS),
    Route("POST", "/api/v1/scalings/{scaling_id}/approve", RISK, path=_pending_scaling),
    Route("POST", "/api/v1/scalings/{scaling_id}/reject", RISK, path=_pending_scaling,
          body=lambda w, who: {"reason": "review the risk score first"}),
    Route("GET", "/api/v1/metrics/business", FINANCE),
]
# routes not called by users (signed provider webhooks), each tested on its own (test_lifecycle_api.py)
NOT_IN_TABLE: set[tuple[str, str]] = {("POST", "/api/v1/webhooks/payments"), ("POST", "/api/v1/webhooks/kyc")}
