"""Investigation cases, account risk and analysis runs — for risk officers and admins only.

A case is a work item, never a ban: the analysis opens and updates cases; a person reviews, confirms
(optionally emergency-stopping the accounts through the normal override path) or dismisses them.
Traders, support and finance see nothing of it (403); another firm's case is 404.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ...services import analysis as analysis_service
from ...services import cases as case_service
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...roles import RISK
from ..auth import ErrorOut
from .accounts import MAX_ID, Limit, Offset

RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]
# payment instruments come from finance's records as well as from risk's investigations
PaymentUser = Annotated[Principal, Depends(require_roles(*RISK, "finance"))]
CaseId = Annotated[int, Path(ge=1, le=MAX_ID)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this (risk and admin only)"},
    404: {"model": ErrorOut, "description": "no such case or account in the user's firm"},
    422: {"model": ErrorOut, "description": "a bad parameter or body"},
}

router = APIRouter(tags=["cases"], responses=ERRORS)


class CaseAccountOut(BaseModel):
    id: int
    external_id: str
    status: str


class NoteOut(BaseModel):
    id: int
    kind: str
    text: str
    author_user_id: int | None
    created_at: dt.datetime


class CaseSummaryOut(BaseModel):
    id: int
    detector: str
    fingerprint: str
    status: str
    allowed_transitions: list[str]
    title: str
    summary: str
    score: int
    assigned_user_id: int | None
    resolution: str | None
    opened_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    accounts: list[CaseAccountOut]


class CaseOut(CaseSummaryOut):
    evidence: Any = Field(description="what the detector found: the exact trades, times, prices, links")
    notes: list[NoteOut]


class CasePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CaseSummaryOut]


class StatusIn(BaseModel):
    status: Literal["open", "under_review", "confirmed", "dismissed"]
    reason: str = Field(min_length=3, max_length=4000)
    enforce: bool = Field(False, description="with confirmed: emergency-stop every account of the case")


class NoteIn(BaseModel):
    text: str = Field(min_length=3, max_length=4000)


class AssignIn(BaseModel):
    user_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(description="a risk or admin user; null unassigns")


class RunIn(BaseModel):
    full: bool = Field(False, description="re-analyse the whole history instead of the events since the last pass")


class RunOut(BaseModel):
    mode: str
    events_read: int
    accounts_analysed: int
    trades: int
    findings: dict[str, int]
    cases: dict[str, int]
    scores_written: int
    links_written: int
    last_seq: int
    undecodable: int
    seconds: float


class LinkOut(BaseModel):
    account_id: int
    via: str
    value: str
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None


class OpenCaseOut(BaseModel):
    id: int
    detector: str
    status: str
    title: str
    account_ids: list[int]


class RiskOut(BaseModel):
    account_id: int
    external_id: str
    score: int | None
    explanation: Any
    computed_at: dt.datetime | None
    links: list[LinkOut]
    linked_accounts: list[int]
    open_cases: list[OpenCaseOut]


@router.get("/cases", response_model=CasePage, summary="Investigation cases, strongest evidence first")
def list_cases(
    user: RiskUser,
    session: Db,
    status: Annotated[Literal["open", "under_review", "confirmed", "dismissed"] | None, Query()] = None,
    detector: Annotated[str | None, Query(max_length=32)] = None,
    account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict:
    return case_service.list_cases(session, firm_id=user.firm_id, status=status, detector=detector,
                                   account_id=account_id, limit=limit, offset=offset)


@router.get("/cases/{case_id}", response_model=CaseOut, summary="One case with its evidence and timeline")
def get_case(case_id: CaseId, user: RiskUser, session: Db) -> dict:
    return case_service.case_view(session, case_service.get_case(session, firm_id=user.firm_id, case_id=case_id))


@router.post("/cases/{case_id}/status", response_model=CaseOut,
             responses={409: {"model": ErrorOut, "description": "not allowed from the case's status; names the allowed ones"}},
             summary="Move a case: open → under_review → confirmed | dismissed (with a reason)")
def set_status(case_id: CaseId, body: StatusIn, user: RiskUser, session: Db) -> dict:
    case = case_service.transition(session, firm_id=user.firm_id, case_id=case_id, status=body.status,
                                   reason=body.reason, actor_user_id=user.user_id, actor=user.actor,
                                   enforce=body.enforce)
    return case_service.case_view(session, case)


@router.post("/cases/{case_id}/notes", response_model=CaseOut, summary="Add a note to a case's timeline")
def add_note(case_id: CaseId, body: NoteIn, user: RiskUser, session: Db) -> dict:
    case_service.add_note(session, firm_id=user.firm_id, case_id=case_id, text=body.text,
                          actor_user_id=user.user_id, actor=user.actor)
    return case_service.case_view(session, case_service.get_case(session, firm_id=user.firm_id, case_id=case_id))


@router.post("/cases/{case_id}/assign", response_model=CaseOut, summary="Give a case to a risk officer")
def assign(case_id: CaseId, body: AssignIn, user: RiskUser, session: Db) -> dict:
    case = case_service.assign(session, firm_id=user.firm_id, case_id=case_id, user_id=body.user_id,
                               actor_user_id=user.user_id, actor=user.actor)
    return case_service.case_view(session, case)


@router.get("/accounts/{account_id}/risk", response_model=RiskOut,
            summary="An account's risk score with its explanation, its links and open cases")
def account_risk(account_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: RiskUser, session: Db) -> dict:
    return analysis_service.account_risk(session, firm_id=user.firm_id, account_id=account_id)


class PaymentMethodIn(BaseModel):
    kind: Literal["card", "wallet", "bank"]
    fingerprint: str = Field(min_length=1, max_length=180, description="the payment provider's hash of the "
                             "card, wallet or bank account — never the number itself")


class PaymentMethodOut(BaseModel):
    account_id: int
    value: str


@router.post("/accounts/{account_id}/payment-methods", response_model=PaymentMethodOut, status_code=201,
             summary="Record a payment instrument (card, wallet or bank account fingerprint) of an account, for linkage",
             responses={403: {"model": ErrorOut, "description": "the user's role may not do this (risk, finance and admin)"}})
def add_payment_method(account_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: PaymentMethodIn,
                       user: PaymentUser, session: Db) -> dict:
    value = analysis_service.record_payment_method(session, firm_id=user.firm_id, account_id=account_id,
                                                   kind=body.kind, fingerprint=body.fingerprint, actor=user.actor)
    return {"account_id": account_id, "value": value}


@router.post("/analysis/run", response_model=RunOut,
             summary="Analyse the events stored since the last pass (or everything) now")
def run_analysis(user: RiskUser, session: Db, body: RunIn | None = None) -> dict:
    return analysis_service.run(session, firm_id=user.firm_id, full=bool(body and body.full)).to_dict()


routers: tuple[APIRouter, ...] = (router,)
