"""The quarantine: lines that could not be accepted, for risk and admin to inspect and re-submit."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ...services import quarantine as quarantine_service
from ...services.quarantine import MAX_RESUBMIT
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...roles import RISK
from ..auth import ErrorOut
from .accounts import MAX_ID, Limit, Offset

RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this"},
    404: {"model": ErrorOut, "description": "no such quarantine entry in the user's firm"},
    422: {"model": ErrorOut, "description": "a bad parameter or body"},
}

router = APIRouter(tags=["quarantine"], responses=ERRORS)


class Entry(BaseModel):
    id: int
    source: str
    line: int | None
    reason: str
    received_at: dt.datetime
    resolved_at: dt.datetime | None
    body_bytes: int
    body: str = Field(description="the line as received (UTF-8, undecodable bytes replaced); cut in lists")
    body_truncated: bool


class EntryPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Entry]


class ResubmitIn(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=MAX_RESUBMIT)


class ResubmitLine(BaseModel):
    line: int
    status: str
    id: str | None = None
    reason: str | None = None
    quarantine_id: int | None = None


class ResubmitOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    lines: list[ResubmitLine]


@router.get("/quarantine", response_model=EntryPage, summary="Quarantined lines, newest first")
def list_entries(
    user: RiskUser,
    session: Db,
    resolved: Annotated[bool | None, Query(description="false (default): still open; true: resolved; omit with all=true")] = False,
    all: Annotated[bool, Query(description="both open and resolved entries")] = False,  # noqa: A002
    source: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict:
    return quarantine_service.list_entries(session, firm_id=user.firm_id, resolved=None if all else resolved,
                                           source=source, limit=limit, offset=offset).to_dict()


@router.get("/quarantine/{entry_id}", response_model=Entry, summary="One quarantined line, whole")
def get_entry(entry_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: RiskUser, session: Db) -> dict:
    row = quarantine_service.get_entry(session, firm_id=user.firm_id, entry_id=entry_id)
    return quarantine_service.entry_view(row, preview=False)


@router.post("/quarantine/resubmit", response_model=ResubmitOut,
             summary="Ingest quarantined lines again (e.g. after creating their account)")
def resubmit(body: ResubmitIn, user: RiskUser, session: Db) -> dict:
    return quarantine_service.resubmit(session, firm_id=user.firm_id, ids=body.ids, actor=user.actor)
