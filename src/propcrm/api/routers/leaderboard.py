"""The opt-in, pseudonymous leaderboard through the API (issue 17; services/leaderboard.py).

``GET /leaderboard``: the firm's traders and the staff roles that moderate it (``LEADERBOARD``) read the
same board as the pages, with the same filters (period, size), under pseudonyms only: never a name, an
e-mail or an account id. A trader's own rows are marked ``you``; staff also get each row's ``entry_id``
(what they hide by). ``POST /leaderboard/entries/{id}/hide|unhide``: staff take an entry off the board or
put it back, with a reason, audited. ``PUT /leaderboard/settings``: the firm's admin sets the fairness
thresholds (closed trades and trading days in the period before an account is ranked).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ...http.auth import Db, require_roles
from ...roles import ADMIN, LEADERBOARD, TRADER
from ...services import leaderboard
from ...services.users import Principal
from .common import ERRORS, Id

Reader = Annotated[Principal, Depends(require_roles(*TRADER, *LEADERBOARD))]
Moderator = Annotated[Principal, Depends(require_roles(*LEADERBOARD))]
Admin = Annotated[Principal, Depends(require_roles(*ADMIN))]

router = APIRouter(responses=ERRORS, tags=["leaderboard"])


class RowOut(BaseModel):
    rank: int
    pseudonym: str
    kind: str = Field(description="challenge | funded")
    size: Decimal = Field(description="the account's initial balance")
    currency: str
    return_pct: Decimal = Field(description="net closed result in the period over the initial balance, in %")
    trades: int = Field(description="closes in the period")
    days: int = Field(description="trading days with a close in the period")
    you: bool = Field(description="the caller's own row (traders)")
    entry_id: int | None = Field(None, description="staff only: what hide and unhide take")


class SizeOut(BaseModel):
    size: Decimal
    currency: str


class BoardOut(BaseModel):
    period: str
    since: dt.datetime | None
    computed_at: dt.datetime
    size: Decimal | None = Field(description="the size filter applied (none: every size)")
    min_trades: int = Field(description="closes in the period an account needs to be ranked")
    min_days: int = Field(description="trading days with a close in the period an account needs to be ranked")
    sizes: list[SizeOut]
    rows: list[RowOut]


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class EntryOut(BaseModel):
    id: int
    pseudonym: str
    opted_in: bool
    hidden: bool
    hidden_reason: str | None


class FairnessIn(BaseModel):
    min_trades: int = Field(ge=1, le=leaderboard.MAX_MINIMUM)
    min_days: int = Field(ge=1, le=leaderboard.MAX_MINIMUM)


class FairnessOut(BaseModel):
    min_trades: int
    min_days: int


@router.get("/leaderboard", response_model=BoardOut,
            summary="The firm's leaderboard (pseudonyms only): period 7d|30d|90d|all, optional size")
def get_board(user: Reader, session: Db, period: Annotated[str, Query(max_length=8)] = leaderboard.DEFAULT_PERIOD,
              size: Annotated[str, Query(max_length=16)] = "") -> dict:
    board = leaderboard.board(session, firm_id=user.firm_id, period=period)
    chosen = leaderboard.size_of(size)
    staff = user.role != "trader"
    mine = None
    if not staff:
        entry = leaderboard.entry_of(session, firm_id=user.firm_id, trader_id=user.trader_scope)
        mine = entry.id if entry is not None else None
    rows = [{"rank": row.rank, "pseudonym": row.pseudonym, "kind": row.kind, "size": row.size,
             "currency": row.currency, "return_pct": row.return_pct, "trades": row.trades, "days": row.days,
             "you": mine is not None and row.entry_id == mine, "entry_id": row.entry_id if staff else None}
            for row in board.filtered(chosen)]
    return {"period": board.period, "since": board.since, "computed_at": board.computed_at, "size": chosen,
            "min_trades": board.fair.min_trades, "min_days": board.fair.min_days,
            "sizes": [{"size": s, "currency": c} for s, c in board.sizes], "rows": rows}


def _entry_out(entry) -> dict:
    return {"id": entry.id, "pseudonym": entry.pseudonym, "opted_in": entry.opted_in,
            "hidden": entry.hidden_at is not None, "hidden_reason": entry.hidden_reason}


@router.post("/leaderboard/entries/{entry_id}/hide", response_model=EntryOut,
             summary="Take an entry off the board (staff), with a reason; audited")
def hide(entry_id: Id, body: ReasonIn, user: Moderator, session: Db) -> dict:
    return _entry_out(leaderboard.hide(session, firm_id=user.firm_id, entry_id=entry_id, reason=body.reason,
                                       actor=user.actor))


@router.post("/leaderboard/entries/{entry_id}/unhide", response_model=EntryOut,
             summary="Show a hidden entry again (while its trader is opted in), with a reason; audited")
def unhide(entry_id: Id, body: ReasonIn, user: Moderator, session: Db) -> dict:
    return _entry_out(leaderboard.unhide(session, firm_id=user.firm_id, entry_id=entry_id, actor=user.actor,
                                         reason=body.reason))


@router.put("/leaderboard/settings", response_model=FairnessOut,
            summary="The firm's fairness thresholds: closed trades and trading days before an account is ranked")
def put_settings(body: FairnessIn, user: Admin, session: Db) -> dict:
    fair = leaderboard.set_fairness(session, firm_id=user.firm_id, min_trades=body.min_trades,
                                    min_days=body.min_days, actor=user.actor)
    return {"min_trades": fair.min_trades, "min_days": fair.min_days}
