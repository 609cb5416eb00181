"""Users and platform API keys of a firm: admin only."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from ...services import apikey_admin
from ...services import users as user_service
from ...services.users import ROLES, Principal
from ..auth import ADMIN, Db, ErrorOut, require_roles
from .accounts import MAX_ID

AdminUser = Annotated[Principal, Depends(require_roles(*ADMIN))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "only an admin may do this"},
    422: {"model": ErrorOut, "description": "a bad parameter or body"},
}

router = APIRouter(responses=ERRORS)


class UserRow(BaseModel):
    id: int
    email: str
    role: str
    trader_id: int | None
    active: bool
    created_at: dt.datetime


class UserIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=user_service.MIN_PASSWORD, max_length=user_service.MAX_PASSWORD)
    role: Literal[ROLES]  # type: ignore[valid-type]
    trader_id: int | None = Field(None, ge=1, le=MAX_ID, description="required for (and only for) a trader user")


class ApiKeyOut(BaseModel):
    id: str
    platform: str
    active: bool
    created_at: dt.datetime
    last_used_at: dt.datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="shown this once: store it in the platform bridge now")


class ApiKeyIn(BaseModel):
    platform: str = Field(min_length=1, max_length=64, description="the events' source, e.g. mt5")


def user_row(row) -> dict:
    return {"id": row.id, "email": row.email, "role": row.role, "trader_id": row.trader_id, "active": row.active,
            "created_at": row.created_at}


@router.get("/users", response_model=list[UserRow], tags=["users"], summary="Users of the firm")
def list_users(user: AdminUser, session: Db) -> list[dict]:
    return [user_row(row) for row in user_service.list_users(session, firm_id=user.firm_id)]


@router.post("/users", response_model=UserRow, status_code=201, tags=["users"], summary="Create a user",
             responses={409: {"model": ErrorOut, "description": "the e-mail is taken in this firm"}})
def create_user(body: UserIn, user: AdminUser, session: Db) -> dict:
    row = user_service.create_user(session, firm_id=user.firm_id, email=body.email, password=body.password,
                                   role=body.role, trader_id=body.trader_id, actor=user.actor)
    return user_row(row)


@router.get("/api-keys", response_model=list[ApiKeyOut], tags=["api keys"], summary="Platform API keys (no secrets)")
def list_keys(user: AdminUser, session: Db) -> list[dict]:
    return [apikey_admin.key_view(row) for row in apikey_admin.list_keys(session, firm_id=user.firm_id)]


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201, tags=["api keys"],
             summary="Create a platform API key; the secret is in this answer only")
def create_key(body: ApiKeyIn, user: AdminUser, session: Db) -> dict:
    row, secret = apikey_admin.issue_key(session, firm_id=user.firm_id, platform=body.platform, actor=user.actor)
    return {**apikey_admin.key_view(row), "secret": secret}


@router.post("/api-keys/{key_id}/revoke", response_model=ApiKeyOut, tags=["api keys"],
             summary="Revoke a key: batches signed with it are refused from now on",
             responses={404: {"model": ErrorOut, "description": "no such key in the firm"}})
def revoke_key(key_id: Annotated[str, Path(max_length=40)], user: AdminUser, session: Db) -> dict:
    return apikey_admin.key_view(apikey_admin.revoke_key(session, firm_id=user.firm_id, key_id=key_id, actor=user.actor))
