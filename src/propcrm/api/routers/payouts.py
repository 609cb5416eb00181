"""Payouts, capital scaling and the firm's business numbers.

Who may: a trader requests payouts from their own funded accounts and sees their own payouts and
scaling; finance (and admin) request on a trader's behalf, prepare, approve and reject — the one who
prepared never approves, and above the firm's threshold two approvers are needed; risk (and admin)
resolve violations and run, approve and reject scaling; admin and finance read the business
numbers. A request that fails its checks is stored as ``refused`` with the failed checks; any other
refusal is 409 with the reason.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ...services import business, payouts, scaling
from ...services.lifecycle import Refusal
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...roles import ALL_ROLES, MANAGERS, RISK
from .accounts import MAX_ID
from .common import ERRORS, Id, refused

AnyUser = Annotated[Principal, Depends(require_roles(*ALL_ROLES))]
RequestUser = Annotated[Principal, Depends(require_roles("admin", "finance", "trader"))]
FinanceUser = Annotated[Principal, Depends(require_roles("admin", "finance"))]
RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]
ScalingReader = Annotated[Principal, Depends(require_roles(*MANAGERS))]

router = APIRouter(tags=["payouts"], responses=ERRORS)
scaling_router = APIRouter(tags=["scaling"], responses=ERRORS)
numbers_router = APIRouter(tags=["business numbers"], responses=ERRORS)


def _view(session, row, user: Principal) -> dict:
    return payouts.payout_view(session, row, for_trader=user.role == "trader")


@router.get("/accounts/{account_id}/payout-eligibility",
            summary="What a payout request of this account meets now: every check and the amount, step by step")
def eligibility(account_id: Id, user: AnyUser, session: Db) -> dict:
    return payouts.preview(session, firm_id=user.firm_id, account_id=account_id, trader_scope=user.trader_scope)


class PayoutIn(BaseModel):
    account_id: int = Field(ge=1, le=MAX_ID)
    method: Literal["bank_transfer", "wise", "paypal", "crypto_usdt"] | None = Field(
        None, description="how the trader is paid (with `destination`)")
    destination: str | None = Field(None, min_length=3, max_length=200,
                                    description="IBAN, Wise or PayPal e-mail, or wallet address")


@router.post("/payouts", status_code=201,
             summary="Request a payout: stored as requested, or as refused with the checks that failed")
def request_payout(body: PayoutIn, user: RequestUser, session: Db) -> dict:
    row = payouts.request_payout(session, firm_id=user.firm_id, account_id=body.account_id, actor=user.actor,
                                 trader_scope=user.trader_scope, method=body.method, destination=body.destination)
    return _view(session, row, user)


@router.get("/payouts", summary="Payouts (a trader: their own)")
def list_payouts(user: AnyUser, session: Db,
                 status: Literal["requested", "prepared", "approved", "rejected", "refused"] | None = None,
                 account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[dict]:
    rows = payouts.list_payouts(session, firm_id=user.firm_id, trader_scope=user.trader_scope, status=status,
                                account_id=account_id)
    return [_view(session, row, user) for row in rows]


@router.get("/payouts/{payout_id}", summary="One payout: checks, amount steps, approvals, reasons")
def get_payout(payout_id: Id, user: AnyUser, session: Db) -> dict:
    return _view(session, payouts.get_payout(session, firm_id=user.firm_id, payout_id=payout_id,
                                             trader_scope=user.trader_scope), user)


class PrepareIn(BaseModel):
    deduction: str | None = Field(None, max_length=40, description="an amount deducted from the payable profit")
    deduction_reason: str | None = Field(None, max_length=2000, description="required with a deduction; the trader sees it")


@router.post("/payouts/{payout_id}/prepare", summary="Check again, apply a deduction with its reason, freeze the amount")
def prepare(payout_id: Id, body: PrepareIn, user: FinanceUser, session: Db):
    result = payouts.prepare_payout(session, firm_id=user.firm_id, payout_id=payout_id, user_id=user.user_id,
                                    actor=user.actor, deduction=body.deduction, deduction_reason=body.deduction_reason)
    return refused(result) if isinstance(result, Refusal) else _view(session, result, user)


@router.post("/payouts/{payout_id}/approve",
             summary="Approve (not the preparer; two approvers above the threshold); the last approval pays")
def approve(payout_id: Id, user: FinanceUser, session: Db):
    result = payouts.approve_payout(session, firm_id=user.firm_id, payout_id=payout_id, user_id=user.user_id,
                                    actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else _view(session, result, user)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/payouts/{payout_id}/reject", summary="Reject a payout with the reason the trader sees")
def reject(payout_id: Id, body: ReasonIn, user: FinanceUser, session: Db):
    result = payouts.reject_payout(session, firm_id=user.firm_id, payout_id=payout_id, reason=body.reason,
                                   actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else _view(session, result, user)


class SentIn(BaseModel):
    reference: str = Field(min_length=3, max_length=200, description="the payment's reference (transfer id, tx hash)")


@router.post("/payouts/{payout_id}/sent",
             summary="Record that an approved payout's money is sent, with the payment's reference (once; audited)")
def sent(payout_id: Id, body: SentIn, user: FinanceUser, session: Db):
    result = payouts.mark_sent(session, firm_id=user.firm_id, payout_id=payout_id, reference=body.reference,
                               actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else _view(session, result, user)


@router.post("/decisions/{decision_id}/resolve", status_code=201,
             summary="Resolve a violation so it no longer blocks payouts or scaling (the decision stays)")
def resolve(decision_id: Id, body: ReasonIn, user: RiskUser, session: Db):
    result = payouts.resolve_violation(session, firm_id=user.firm_id, decision_id=decision_id, reason=body.reason,
                                       actor_user_id=user.user_id, actor=user.actor)
    if isinstance(result, Refusal):
        return refused(result)
    return {"override_id": result.id, "decision_id": result.decision_id, "action": result.action}


# --------------------------------------------------------------------------------------------------
# scaling


@scaling_router.get("/accounts/{account_id}/scaling", summary="The scaling review of an account now, and its history")
def scaling_review(account_id: Id, user: AnyUser, session: Db) -> dict:
    from ...services.accounts import get_account

    account = get_account(session, firm_id=user.firm_id, account_id=account_id, trader_id=user.trader_scope)
    found = scaling.review(session, account=account)
    history = scaling.history(session, firm_id=user.firm_id, account_id=account_id, trader_scope=user.trader_scope)
    return {**found.to_dict(),
            "history": [scaling.scaling_view(row, for_trader=user.role == "trader") for row in history]}


@scaling_router.post("/accounts/{account_id}/scale", status_code=201,
                     summary="Scale an eligible account now or queue it for approval (the firm's scaling mode)")
def scale(account_id: Id, user: RiskUser, session: Db):
    result = scaling.scale_account(session, firm_id=user.firm_id, account_id=account_id, actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else scaling.scaling_view(result)


@scaling_router.post("/scaling/run", summary="Review every funded account with a scaling plan")
def run(user: RiskUser, session: Db) -> list[dict]:
    return scaling.run(session, firm_id=user.firm_id, actor=user.actor)


@scaling_router.get("/scalings", summary="Scalings of the firm: pending, applied, rejected")
def list_scalings(user: ScalingReader, session: Db) -> list[dict]:
    return [scaling.scaling_view(row) for row in scaling.history(session, firm_id=user.firm_id)]


@scaling_router.post("/scalings/{scaling_id}/approve", summary="Approve a pending scaling (checked again)")
def approve_scaling(scaling_id: Id, user: RiskUser, session: Db):
    result = scaling.approve_scaling(session, firm_id=user.firm_id, scaling_id=scaling_id, actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else scaling.scaling_view(result)


@scaling_router.post("/scalings/{scaling_id}/reject", summary="Reject a pending scaling with a reason")
def reject_scaling(scaling_id: Id, body: ReasonIn, user: RiskUser, session: Db):
    result = scaling.reject_scaling(session, firm_id=user.firm_id, scaling_id=scaling_id, reason=body.reason,
                                    actor=user.actor)
    return refused(result) if isinstance(result, Refusal) else scaling.scaling_view(result)


@numbers_router.get("/metrics/business",
                    summary="Pass rate per product and phase, time to pass, breaches by rule, payout ratio, liability")
def numbers(user: FinanceUser, session: Db) -> dict:
    return business.business_numbers(session, firm_id=user.firm_id)


routers = (router, scaling_router, numbers_router)
