"""Firms as tenants (issue 16): the operator's firms, and a firm's own settings.

``/operator/firms…`` is the operator's (role ``operator``): list the firms, onboard one with its first admin
(the admin's password is in this answer only), read and change any firm's settings. ``/firm/settings`` is a
firm admin's: their own firm's settings, never another's. Secrets (``webhook_secret``, ``smtp_password``)
are write-only: the answers say whether one is set, never what it is. Every value of ``effective`` says
whether it is the firm's own or the process's default (services/firms.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from ...adapters.settings import Delivery
from ...http.auth import Db, require_roles
from ...roles import ADMIN, OPERATOR
from ...services import firms as firm_service
from ...services.users import Principal
from ..auth import ErrorOut

OperatorUser = Annotated[Principal, Depends(require_roles(*OPERATOR))]
AdminUser = Annotated[Principal, Depends(require_roles(*ADMIN))]
FirmId = Annotated[str, Path(min_length=1, max_length=64)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "not the operator (or, for /firm, not the firm's admin)"},
    422: {"model": ErrorOut, "description": "a bad parameter or body (the field is named)"},
}

router = APIRouter(responses=ERRORS, tags=["firms"])


class FirmOut(BaseModel):
    id: str
    name: str
    created_at: dt.datetime
    users: int
    accounts: int
    product_name: str
    suspended_at: dt.datetime | None = Field(None, description="set while the operator has the firm suspended")
    suspended_reason: str | None = None


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why (audited; the firm's users are told)")


class SettingsIn(BaseModel):
    """Only the fields sent change; an empty string clears one (the default applies again)."""

    name: str | None = Field(None, max_length=200, description="the firm's display name (e-mails, PDFs)")
    product_name: str | None = Field(None, max_length=80, description="the name in the header and page titles")
    accent_colour: str | None = Field(None, max_length=7, description="#rrggbb")
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | str | None = Field(None, description="1–65535; 587 speaks STARTTLS, 465 TLS")
    smtp_sender: str | None = Field(None, max_length=320, description="the From address of the firm's e-mail")
    smtp_user: str | None = Field(None, max_length=200)
    smtp_password: str | None = Field(None, max_length=500, description="write-only")
    risk_email: str | None = Field(None, max_length=320, description="the firm's risk desk")
    webhook_url: str | None = Field(None, max_length=500)
    webhook_secret: str | None = Field(None, max_length=500, description="write-only; signs the webhook's requests")


class Effective(BaseModel):
    value: Any
    source: str = Field(description="firm: the firm's own; default: the process's environment")


class SettingsOut(BaseModel):
    id: str
    name: str
    created_at: dt.datetime
    product_name: str | None
    accent_colour: str | None
    smtp_host: str | None
    smtp_port: int | None
    smtp_sender: str | None
    smtp_user: str | None
    risk_email: str | None
    webhook_url: str | None
    webhook_secret_set: bool
    smtp_password_set: bool
    has_logo: bool
    effective: dict[str, Effective]
    updated_at: dt.datetime | None
    updated_by: str | None


class OnboardIn(BaseModel):
    id: str = Field(min_length=3, max_length=64, description="the firm's id, typed at every login")
    name: str = Field(min_length=1, max_length=200)
    admin_email: str = Field(min_length=3, max_length=320, description="the firm's first admin")
    settings: SettingsIn | None = None


class OnboardOut(BaseModel):
    firm: SettingsOut
    admin_email: str
    admin_password: str = Field(description="the admin's first password: in this answer only; hand it over now")


def _defaults(request: Request) -> Delivery:
    """The deployment's delivery defaults, from the settings the app was created with."""
    return request.app.state.settings.delivery


Defaults = Annotated[Delivery, Depends(_defaults)]


def _describe(session, firm_id: str, defaults: Delivery) -> dict:
    return firm_service.describe(session, firm_id=firm_id, defaults=defaults)


@router.get("/operator/firms", response_model=list[FirmOut], summary="Every firm (operator)")
def list_firms(user: OperatorUser, session: Db) -> list[dict]:
    return [row.__dict__ for row in firm_service.list_firms(session)]


@router.post("/operator/firms", response_model=OnboardOut, status_code=201, summary="Onboard a firm and its first admin",
             responses={409: {"model": ErrorOut, "description": "the firm exists already"}})
def onboard(body: OnboardIn, user: OperatorUser, session: Db, defaults: Defaults) -> dict:
    settings = body.settings.model_dump(exclude_unset=True) if body.settings is not None else None
    made = firm_service.create_firm(session, firm_id=body.id, name=body.name, admin_email=body.admin_email,
                                    actor=user.actor, settings=settings)
    return {"firm": _describe(session, made.firm.id, defaults), "admin_email": made.admin.email, "admin_password": made.password}


@router.get("/operator/firms/{firm_id}/settings", response_model=SettingsOut, summary="A firm's settings (operator)",
            responses={404: {"model": ErrorOut, "description": "no such firm"}})
def firm_settings(firm_id: FirmId, user: OperatorUser, session: Db, defaults: Defaults) -> dict:
    return _describe(session, firm_id, defaults)


@router.put("/operator/firms/{firm_id}/settings", response_model=SettingsOut, summary="Change a firm's settings (operator)",
            responses={404: {"model": ErrorOut, "description": "no such firm"}})
def change_firm_settings(firm_id: FirmId, body: SettingsIn, user: OperatorUser, session: Db, defaults: Defaults) -> dict:
    firm_service.update_settings(session, firm_id=firm_id, changes=body.model_dump(exclude_unset=True), actor=user.actor)
    return _describe(session, firm_id, defaults)


def _row(session, firm_id: str) -> dict:
    return next(row.__dict__ for row in firm_service.list_firms(session) if row.id == firm_id)


@router.post("/operator/firms/{firm_id}/suspend", response_model=FirmOut, summary="Suspend a firm (operator)",
             responses={404: {"model": ErrorOut, "description": "no such firm"},
                        409: {"model": ErrorOut, "description": "the firm is suspended already"}})
def suspend_firm(firm_id: FirmId, body: ReasonIn, user: OperatorUser, session: Db) -> dict:
    """Its users cannot log in, its tokens, API keys, ingestion and platform connections are refused; its stored
    events are still evaluated (docs/tenants.md)."""
    firm_service.suspend_firm(session, firm_id=firm_id, reason=body.reason, actor=user.actor)
    return _row(session, firm_id)


@router.post("/operator/firms/{firm_id}/resume", response_model=FirmOut, summary="Lift a firm's suspension (operator)",
             responses={404: {"model": ErrorOut, "description": "no such firm"},
                        409: {"model": ErrorOut, "description": "the firm is not suspended"}})
def resume_firm(firm_id: FirmId, body: ReasonIn, user: OperatorUser, session: Db) -> dict:
    firm_service.resume_firm(session, firm_id=firm_id, reason=body.reason, actor=user.actor)
    return _row(session, firm_id)


@router.get("/firm/settings", response_model=SettingsOut, summary="Your firm's settings (admin)")
def own_settings(user: AdminUser, session: Db, defaults: Defaults) -> dict:
    return _describe(session, user.firm_id, defaults)


@router.put("/firm/settings", response_model=SettingsOut, summary="Change your firm's settings (admin)")
def change_own_settings(body: SettingsIn, user: AdminUser, session: Db, defaults: Defaults) -> dict:
    firm_service.update_settings(session, firm_id=user.firm_id, changes=body.model_dump(exclude_unset=True),
                                 actor=user.actor)
    return _describe(session, user.firm_id, defaults)


__all__ = ["router"]
