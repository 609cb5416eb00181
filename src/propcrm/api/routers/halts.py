"""The firm-wide kill switch: halt trading on all or a group of the firm's accounts, and resume.

Who may: risk and admin. A halt is previewed first (the count of accounts it stops), then confirmed with
that count (``expected_count``); see :mod:`propcrm.services.halts`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ...http.auth import Db, require_roles
from ...roles import RISK
from ...services import halts as halt_service
from ...services.users import Principal
from .accounts import MAX_ID
from .common import ERRORS, Id

RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]

router = APIRouter(responses=ERRORS, tags=["trading halts"])


class ScopeIn(BaseModel):
    all: bool = Field(False, description="every account of the firm (no filter may be given then)")
    product_id: int | None = Field(None, ge=1, le=MAX_ID)
    pack_id: str | None = Field(None, min_length=1, max_length=64)
    pack_version_id: int | None = Field(None, ge=1, le=MAX_ID)
    phase: str | None = Field(None, min_length=1, max_length=64)
    accounts: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=halt_service.MAX_LIST, description="external ids")

    def scope(self) -> halt_service.HaltScope:
        return halt_service.HaltScope(everything=self.all, product_id=self.product_id, pack_id=self.pack_id,
                                      pack_version_id=self.pack_version_id, phase=self.phase,
                                      accounts=tuple(self.accounts))


class HaltIn(BaseModel):
    scope: ScopeIn
    reason: str = Field(min_length=1, max_length=2000)
    expected_count: int | None = Field(None, ge=0, description="the count the person confirmed (409 if it moved)")


class ResumeIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class HaltPreviewOut(BaseModel):
    scope: dict[str, Any]
    count: int = Field(description="trading accounts (active, paused, funded) the halt would stop")
    shown: list[str] = Field(description="the first of them")
    unknown: list[str] = Field(description="listed accounts the firm does not have")
    not_trading: int = Field(description="accounts in scope already stopped: not part of the halt")


class HaltOut(BaseModel):
    id: int
    scope: dict[str, Any]
    reason: str
    actor: str
    accounts: int = Field(description="accounts the halt stopped")
    created_at: dt.datetime
    resumed_at: dt.datetime | None
    resumed_by: str | None
    resume_reason: str | None
    resumed: int | None = Field(description="accounts the resume let trade again")
    still_halted: int | None = Field(description="accounts still halted by it")


@router.post("/halts/preview", response_model=HaltPreviewOut, summary="How many accounts a halt would stop")
def preview(body: ScopeIn, user: RiskUser, session: Db) -> dict:
    result = halt_service.preview_halt(session, firm_id=user.firm_id, scope=body.scope())
    return {"scope": result.scope.to_dict(), "count": result.count, "shown": result.shown,
            "unknown": result.unknown, "not_trading": result.not_trading}


@router.post("/halts", response_model=HaltOut, status_code=201,
             summary="Halt trading on the accounts of a scope: disable commands, status halted, audited")
def halt(body: HaltIn, user: RiskUser, session: Db) -> dict:
    row = halt_service.halt(session, firm_id=user.firm_id, scope=body.scope.scope(), reason=body.reason,
                            actor=user.actor, expected_count=body.expected_count)
    return halt_service.halt_view(row, still=row.accounts)


@router.get("/halts", response_model=list[HaltOut], summary="The firm's trading halts, newest first")
def list_halts(user: RiskUser, session: Db) -> list[dict]:
    return [halt_service.halt_view(row, still=halt_service.still_halted(session, firm_id=user.firm_id, halt_id=row.id))
            for row in halt_service.list_halts(session, firm_id=user.firm_id)]


@router.post("/halts/{halt_id}/resume", response_model=HaltOut,
             summary="Resume: the accounts this halt stopped trade again (not those breached or stopped meanwhile)")
def resume(halt_id: Id, body: ResumeIn, user: RiskUser, session: Db) -> dict:
    row = halt_service.resume(session, firm_id=user.firm_id, halt_id=halt_id, reason=body.reason, actor=user.actor)
    return halt_service.halt_view(row, still=0)
