"""Users and platform API keys of a firm: admin only.

An admin creates users, disables and enables them (a disabled user's sessions end at once), resets a
password (the user's sessions end; a password is generated when none is given, and shown once), changes
a staff user's role and ends a user's sessions. The admin who creates a user, resets their password or
sets their role is recorded as the user's sponsor (the maker-checker rule of payouts, docs/lifecycle.md).
An admin cannot disable themselves, change their own role or reset their own password this way.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from ...services import apikey_admin
from ...services import users as user_service
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...roles import ADMIN, FIRM_ROLES
from ..auth import ErrorOut
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
    created_by_user_id: int | None = Field(description="the admin who created the user; null: the operator")
    password_set_by_user_id: int | None = Field(description="the admin who last reset the password; null: the "
                                                            "operator, or the admin who created the user's first")
    role_set_by_user_id: int | None = Field(description="the admin who last set the role; null: the operator")
    sponsors: list[int] = Field(description="every user who sponsored this one, directly or through others")
    live_sessions: int


class UserIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(max_length=user_service.MAX_PASSWORD,
                          description="at least 12 characters, not easy to guess, without the e-mail address")
    role: Literal[FIRM_ROLES]  # type: ignore[valid-type]  # an operator is made on the command line
    trader_id: int | None = Field(None, ge=1, le=MAX_ID, description="required for (and only for) a trader user")


class PasswordResetIn(BaseModel):
    password: str | None = Field(None, max_length=user_service.MAX_PASSWORD,
                                 description="the new password; omitted: a random one is generated and answered once")


class PasswordResetOut(BaseModel):
    user: UserRow
    password: str | None = Field(description="the generated password (only when none was given): hand it over now")


class RoleIn(BaseModel):
    role: Literal[user_service.STAFF_ROLES]  # type: ignore[valid-type]


class SessionsEndedOut(BaseModel):
    ended: int


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


def user_row(session, row) -> dict:
    return {"id": row.id, "email": row.email, "role": row.role, "trader_id": row.trader_id, "active": row.active,
            "created_at": row.created_at, "created_by_user_id": row.created_by_user_id,
            "password_set_by_user_id": row.password_set_by_user_id, "role_set_by_user_id": row.role_set_by_user_id,
            "sponsors": sorted(user_service.sponsor_chain(session, row.id)),
            "live_sessions": user_service.live_sessions(session, user_id=row.id)}


UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such user in the firm"}}
REFUSED = {409: {"model": ErrorOut, "description": "not possible now (yourself, or already so)"}}


@router.get("/users", response_model=list[UserRow], tags=["users"], summary="Users of the firm")
def list_users(user: AdminUser, session: Db) -> list[dict]:
    return [user_row(session, row) for row in user_service.list_users(session, firm_id=user.firm_id)]


@router.post("/users", response_model=UserRow, status_code=201, tags=["users"], summary="Create a user",
             responses={409: {"model": ErrorOut, "description": "the e-mail is taken in this firm"}})
def create_user(body: UserIn, user: AdminUser, session: Db) -> dict:
    row = user_service.create_user(session, firm_id=user.firm_id, email=body.email, password=body.password,
                                   role=body.role, trader_id=body.trader_id, actor=user.actor, by_user_id=user.user_id)
    return user_row(session, row)


@router.post("/users/{user_id}/disable", response_model=UserRow, tags=["users"],
             summary="Disable a user: their sessions end now and they cannot log in",
             responses={**NOT_FOUND, **REFUSED})
def disable_user(user_id: UserId, user: AdminUser, session: Db) -> dict:
    row = user_service.set_active(session, firm_id=user.firm_id, user_id=user_id, active=False, actor=user.actor,
                                  by_user_id=user.user_id)
    return user_row(session, row)


@router.post("/users/{user_id}/enable", response_model=UserRow, tags=["users"], summary="Enable a disabled user",
             responses={**NOT_FOUND, **REFUSED})
def enable_user(user_id: UserId, user: AdminUser, session: Db) -> dict:
    row = user_service.set_active(session, firm_id=user.firm_id, user_id=user_id, active=True, actor=user.actor,
                                  by_user_id=user.user_id)
    return user_row(session, row)


@router.post("/users/{user_id}/password", response_model=PasswordResetOut, tags=["users"],
             summary="Reset a user's password (their sessions end); without one, a generated password is answered once",
             responses={**NOT_FOUND, **REFUSED})
def reset_password(user_id: UserId, body: PasswordResetIn, user: AdminUser, session: Db) -> dict:
    row, generated = user_service.reset_password(session, firm_id=user.firm_id, user_id=user_id,
                                                 password=body.password, actor=user.actor, by_user_id=user.user_id)
    return {"user": user_row(session, row), "password": generated}


@router.post("/users/{user_id}/role", response_model=UserRow, tags=["users"],
             summary="Change a staff user's role (to another staff role)", responses={**NOT_FOUND, **REFUSED})
def set_role(user_id: UserId, body: RoleIn, user: AdminUser, session: Db) -> dict:
    row = user_service.set_role(session, firm_id=user.firm_id, user_id=user_id, role=body.role, actor=user.actor,
                                by_user_id=user.user_id)
    return user_row(session, row)


@router.post("/users/{user_id}/sessions/end", response_model=SessionsEndedOut, tags=["users"],
             summary="End every session of a user (they must log in again)", responses=NOT_FOUND)
def end_sessions(user_id: UserId, user: AdminUser, session: Db) -> dict:
    return {"ended": user_service.end_sessions(session, firm_id=user.firm_id, user_id=user_id, actor=user.actor)}


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
