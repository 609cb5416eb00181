"""Accounts, their decisions, overrides and the emergency stop.

Who may: every role reads accounts and decisions (a trader only their own); risk and admin read
overrides, clear breaches and emergency-stop; admin creates accounts.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ...adapters.db import models as m
from ...services import accounts as account_service
from ...services import decisions as decision_service
from ...services import overrides as override_service
from ...services.accounts import COUNT_CAP, MAX_PAGE, SORT_KEYS, STATUSES
from ...services.decisions import KINDS, override_view
from ...services.errors import Invalid
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...roles import ADMIN, ALL_ROLES, RISK
from ..auth import ErrorOut

MAX_ID = 2_147_483_647
MAX_OFFSET = 1_000_000_000

AccountId = Annotated[int, Path(ge=1, le=MAX_ID, description="the account's id (not its platform id)")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
AnyUser = Annotated[Principal, Depends(require_roles(*ALL_ROLES))]
RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]
AdminUser = Annotated[Principal, Depends(require_roles(*ADMIN))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this"},
    404: {"model": ErrorOut, "description": "no such account in the user's firm (or, for a trader, of theirs)"},
    422: {"model": ErrorOut, "description": "a bad parameter or body"},
}

router = APIRouter(tags=["accounts"], responses=ERRORS)


# --------------------------------------------------------------------------------------------------
# shapes


class AccountBase(BaseModel):
    id: int
    external_id: str
    platform: str
    login: str
    trader_id: int | None
    product_id: int | None
    pack_version_id: int
    phase: str
    status: str
    created_at: dt.datetime
    balance: str | None = Field(None, description="last evaluated balance (decimal text); null before any event")
    equity: str | None = None


class AccountItem(AccountBase):
    daily_floor: str | None = Field(None, description="the daily loss floor; null before the first trading day or event")
    daily_distance: str | None = Field(None, description="equity − daily floor")
    max_loss_level: str | None = None
    max_loss_distance: str | None = Field(None, description="equity − max-loss level")
    nearest_pct: str | None = Field(
        None, description="the smaller distance (daily floor, max-loss level) as % of equity, two places")
    target_pct: str | None = Field(None, description="profit target progress in %, two places")
    trading_days: int | None = None
    trading_days_required: int | None = None
    risk_score: int | None = Field(None, description="latest behavioural risk score 0–100; null when never scored")
    trader_name: str | None = None
    updated_at: dt.datetime | None = Field(None, description="when the state was last written")


class AccountPage(BaseModel):
    total: int
    limit: int
    offset: int
    total_capped: bool = Field(False, description=f"more than {COUNT_CAP:,} matches: total is {COUNT_CAP + 1:,}")
    items: list[AccountItem]


class Level(BaseModel):
    rule: str
    level: str | None = Field(description="null until the first trading day sets it")
    distance: str | None = Field(description="equity − level: how much equity may still fall")


class LossLimit(BaseModel):
    rule: str
    kind: str
    comparator: str
    level: str | None
    distance: str | None
    distance_pct_of_equity: str | None


class Target(BaseModel):
    rule: str
    balance: str | None
    measured: str | None
    remaining: str | None
    progress_pct: str | None
    met: bool


class TradingDays(BaseModel):
    count: int
    required: int | None


class PackRef(BaseModel):
    version_id: int
    pack_id: str
    version: int
    status: str
    content_hash: str


class Evaluated(BaseModel):
    last_event_seq: int
    updated_at: dt.datetime
    last_event_at: dt.datetime | None


class AccountDetail(AccountBase):
    pack: PackRef
    currency: str
    initial_balance: str | None
    evaluated: Evaluated | None
    engine_status: str
    open_positions: int
    open_lots: str | None
    trading_day: str | None
    paused_until: dt.datetime | None
    daily_floor: Level | None
    max_loss_level: Level | None
    limits: list[LossLimit]
    target: Target | None
    trading_days: TradingDays


class AccountIn(BaseModel):
    external_id: str = Field(min_length=1, max_length=200, description="what the platform's events call the account")
    pack_version_id: int | None = Field(None, ge=1, le=MAX_ID)
    pack: str | None = Field(None, max_length=80, description="PACK_ID or PACK_ID:VERSION (default: the active version)")
    phase: str | None = Field(None, max_length=64)
    platform: str = Field("demo", min_length=1, max_length=64)
    login: str | None = Field(None, max_length=200)
    trader_id: int | None = Field(None, ge=1, le=MAX_ID)
    product_id: int | None = Field(None, ge=1, le=MAX_ID)


class OverrideView(BaseModel):
    id: int
    account_id: int
    decision_id: int | None
    action: str
    reason: str | None
    actor_user_id: int | None
    created_at: dt.datetime


class DecisionItem(BaseModel):
    id: int
    account_id: int
    account: str
    event_id: str
    event_seq: int | None
    ts: dt.datetime
    kind: str
    rule: str
    phase: str
    message: str
    value: str | None
    threshold: str | None
    comparator: str | None
    details: dict[str, Any]
    overrides: list[OverrideView]
    superseded_at: dt.datetime | None = Field(
        None, description="when a re-bind to another pack version replayed the history and no longer made it (kept)")


class DecisionPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[DecisionItem]


class OverrideIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why: recorded beside the decision and audited")
    action: Literal["clear_breach", "lift_stop"] = Field(
        "clear_breach", description="clear_breach: a breached account trades again; lift_stop: undo an emergency stop")
    decision_id: int | None = Field(None, ge=1, le=MAX_ID, description="the breach being cleared (default: the latest)")


class StopIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class OverrideResult(BaseModel):
    override: OverrideView
    account: AccountBase


# --------------------------------------------------------------------------------------------------
# routes


@router.get("/accounts", response_model=AccountPage, summary="Accounts: filter, sort, paginate")
def list_accounts(
    user: AnyUser,
    session: Db,
    status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    phase: Annotated[str | None, Query(max_length=64)] = None,
    search: Annotated[str | None, Query(
        max_length=200, description="part of the external id, login, trader's name or e-mail")] = None,
    near: Annotated[str | None, Query(
        max_length=8, description="a percentage of equity (e.g. 5): accounts whose distance to the daily floor "
                                  "or the max-loss level is at most that")] = None,
    near_amount: Annotated[str | None, Query(
        max_length=20, description="an amount of the account's currency (e.g. 500): accounts whose distance to the "
                                   "daily floor or the max-loss level is at most that")] = None,
    sort: Annotated[str, Query(description=f"one of {', '.join(SORT_KEYS)}; '-' in front for descending")] = "id",
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict:
    return account_service.list_accounts(
        session, firm_id=user.firm_id, trader_id=user.trader_scope, status=status, phase=phase, search=search,
        near=near, near_amount=near_amount, sort=sort, limit=limit, offset=offset,
    ).to_dict()


@router.post("/accounts", response_model=AccountBase, status_code=201, summary="Create an account bound to a pack version",
             responses={409: {"model": ErrorOut}})
def create_account(body: AccountIn, user: AdminUser, session: Db) -> dict:
    if (body.pack_version_id is None) == (body.pack is None):
        raise Invalid("give either pack_version_id or pack (PACK_ID or PACK_ID:VERSION)")
    version_id = body.pack_version_id
    if version_id is None:
        version_id = account_service.resolve_pack_version(session, firm_id=user.firm_id, **_pack_ref(body.pack)).id
    account = account_service.create_account(
        session, firm_id=user.firm_id, external_id=body.external_id, pack_version_id=version_id, phase=body.phase,
        platform=body.platform, login=body.login, trader_id=body.trader_id, product_id=body.product_id,
        actor=user.actor,
    )
    return {**account_service.account_summary(account), "balance": None, "equity": None}


def _pack_ref(text: str) -> dict:
    pack_id, sep, version = text.partition(":")
    if not pack_id or (sep and not version.isdigit()) or (sep and not 1 <= int(version) <= MAX_ID):
        raise Invalid("pack must be PACK_ID or PACK_ID:VERSION")
    return {"pack_id": pack_id, "version": int(version) if sep else None}


@router.get("/accounts/{account_id}", response_model=AccountDetail,
            summary="One account: balance, equity, every limit and the distance to it, target, trading days")
def get_account(account_id: AccountId, user: AnyUser, session: Db) -> dict:
    return account_service.account_detail(session, firm_id=user.firm_id, account_id=account_id,
                                          trader_id=user.trader_scope)


@router.get("/accounts/{account_id}/decisions", response_model=DecisionPage, summary="Decisions of one account")
def account_decisions(
    account_id: AccountId,
    user: AnyUser,
    session: Db,
    kind: Annotated[Literal[KINDS] | None, Query()] = None,  # type: ignore[valid-type]
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict:
    return decision_service.list_decisions(
        session, firm_id=user.firm_id, trader_id=user.trader_scope, account_id=account_id, kind=kind, order=order,
        limit=limit, offset=offset,
    ).to_dict()


@router.get("/decisions", response_model=DecisionPage, summary="Decisions of the firm (a trader: of their accounts)")
def list_decisions(
    user: AnyUser,
    session: Db,
    kind: Annotated[Literal[KINDS] | None, Query()] = None,  # type: ignore[valid-type]
    account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict:
    return decision_service.list_decisions(
        session, firm_id=user.firm_id, trader_id=user.trader_scope, account_id=account_id, kind=kind, order=order,
        limit=limit, offset=offset,
    ).to_dict()


@router.get("/accounts/{account_id}/overrides", response_model=list[OverrideView], summary="Overrides of an account")
def list_overrides(account_id: AccountId, user: RiskUser, session: Db) -> list[dict]:
    rows = override_service.list_overrides(session, firm_id=user.firm_id, account_id=account_id)
    return [override_view(row) for row in rows]


@router.post("/accounts/{account_id}/overrides", response_model=OverrideResult, status_code=201,
             summary="Clear a breach (or lift an emergency stop) with a reason; the decision stays",
             responses={409: {"model": ErrorOut, "description": "the account is not breached (or not suspended)"}})
def override(account_id: AccountId, body: OverrideIn, user: RiskUser, session: Db) -> dict:
    row = override_service.override_account(
        session, firm_id=user.firm_id, account_id=account_id, reason=body.reason, action=body.action,
        decision_id=body.decision_id, actor_user_id=user.user_id, actor=user.actor,
    )
    return _override_result(session, user, row)


@router.post("/accounts/{account_id}/emergency-stop", response_model=OverrideResult, status_code=201,
             summary="Suspend an account now and ask its platform to disable it",
             responses={409: {"model": ErrorOut, "description": "already suspended or closed"}})
def emergency_stop(account_id: AccountId, body: StopIn, user: RiskUser, session: Db) -> dict:
    row = override_service.emergency_stop(
        session, firm_id=user.firm_id, account_id=account_id, reason=body.reason, actor_user_id=user.user_id,
        actor=user.actor,
    )
    return _override_result(session, user, row)


def _override_result(session, user: Principal, row) -> dict:
    account = account_service.get_account(session, firm_id=user.firm_id, account_id=row.account_id)
    state = session.get(m.AccountState, account.id)
    return {
        "override": override_view(row),
        "account": {**account_service.account_summary(account),
                    "balance": account_service.money(state.balance) if state else None,
                    "equity": account_service.money(state.equity) if state else None},
    }
