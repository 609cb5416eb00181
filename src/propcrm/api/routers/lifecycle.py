"""The trader's lifecycle: leads, traders and their stage, KYC, the timeline (notes, messages), discount
codes, orders, refunds, and the signed webhooks of the payment and KYC providers.

Who may: support and admin capture and convert leads, write notes and messages, place orders for a
trader; risk and admin suspend, reinstate and terminate; admin, risk and support set KYC; admin and
finance run discount codes and refunds; a trader sees their own trader record, timeline (without
staff notes) and orders, orders for themselves and writes to the firm. Refusals are 409 with the
reason and, for a lifecycle transition, the allowed stages.

The provider webhooks are signed like platform events (``X-Propcrm-Key``/``-Timestamp``/``-Signature``,
HMAC-SHA256 of ``timestamp.body``) with an API key whose platform name starts with ``payments``
(payment provider) or ``kyc`` (KYC provider): ``propcrm keys create --platform payments``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ...domain import lifecycle as machine
from ...services import communications as comms
from ...services import lifecycle as service
from ...services import users as user_service
from ...services.apikeys import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, AuthError, verify_signature
from ...services.errors import Conflict, Invalid, NotFound
from ...services.lifecycle import Refusal
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...http.signed import read_body, signature_headers
from ...roles import ALL_ROLES, KYC, RISK, STAFF
from ..auth import ErrorOut
from .accounts import MAX_ID
from .common import ERRORS, Id, refused

UTC = dt.timezone.utc
MAX_WEBHOOK_BYTES = 64 * 1024

AnyUser = Annotated[Principal, Depends(require_roles(*ALL_ROLES))]
Staff = Annotated[Principal, Depends(require_roles(*STAFF))]
SupportUser = Annotated[Principal, Depends(require_roles("admin", "support"))]
RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]
KycUser = Annotated[Principal, Depends(require_roles(*KYC))]
FinanceUser = Annotated[Principal, Depends(require_roles("admin", "finance"))]
OrderUser = Annotated[Principal, Depends(require_roles("admin", "support", "trader"))]
AdminUser = Annotated[Principal, Depends(require_roles("admin"))]

router = APIRouter(tags=["lifecycle"], responses=ERRORS)
webhooks = APIRouter(tags=["provider webhooks"])


# --------------------------------------------------------------------------------------------------
# leads and traders


class LeadIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    source: str = Field(min_length=1, max_length=64, description="web, affiliate:NAME, event:NAME, …")
    consent: bool = Field(description="the person agreed to be contacted")
    consent_text: str | None = Field(None, max_length=2000, description="what they agreed to, as shown to them")
    country: str | None = Field(None, min_length=2, max_length=2)


@router.post("/leads", status_code=201, summary="Capture a lead (source and consent recorded)")
def capture_lead(body: LeadIn, user: SupportUser, session: Db) -> dict:
    lead = service.capture_lead(session, firm_id=user.firm_id, name=body.name, email=body.email, source=body.source,
                                consent=body.consent, consent_text=body.consent_text, country=body.country,
                                actor=user.actor)
    return service.lead_view(lead)


@router.get("/leads", summary="Leads of the firm")
def list_leads(user: SupportUser, session: Db,
               status: Literal["new", "converted", "lost"] | None = None) -> list[dict]:
    return [service.lead_view(row) for row in service.list_leads(session, firm_id=user.firm_id, status=status)]


@router.post("/leads/{lead_id}/convert", status_code=201, summary="Convert a lead into a trader (stage registered)")
def convert_lead(lead_id: Id, user: SupportUser, session: Db) -> dict:
    trader = service.convert_lead(session, firm_id=user.firm_id, lead_id=lead_id, actor=user.actor)
    return service.trader_view(session, firm_id=user.firm_id, trader_id=trader.id)


class LostIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why the lead is lost (audited)")


@router.post("/leads/{lead_id}/lost", summary="Mark a new lead lost, with the reason")
def lose_lead(lead_id: Id, body: LostIn, user: SupportUser, session: Db) -> dict:
    return service.lead_view(service.mark_lead_lost(session, firm_id=user.firm_id, lead_id=lead_id,
                                                    reason=body.reason, actor=user.actor))


@router.post("/leads/{lead_id}/reopen", summary="Make a lost lead new again (it can be converted)")
def reopen_lead(lead_id: Id, user: SupportUser, session: Db) -> dict:
    return service.lead_view(service.reopen_lead(session, firm_id=user.firm_id, lead_id=lead_id, actor=user.actor))


@router.get("/traders", summary="Traders of the firm with their stage")
def list_traders(user: Staff, session: Db) -> list[dict]:
    from sqlalchemy import select

    from ...adapters.db import models as m

    ids = session.scalars(select(m.Trader.id).where(m.Trader.firm_id == user.firm_id).order_by(m.Trader.id))
    return [service.trader_view(session, firm_id=user.firm_id, trader_id=i) for i in list(ids)]


@router.get("/traders/{trader_id}", summary="A trader: stage (brought up to date), allowed transitions, KYC, accounts")
def get_trader(trader_id: Id, user: AnyUser, session: Db, request: Request) -> dict:
    comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=trader_id, trader_scope=user.trader_scope)
    if not service.behind(session, firm_id=user.firm_id, trader_id=trader_id):
        return service.trader_view(session, firm_id=user.firm_id, trader_id=trader_id, trader_scope=user.trader_scope)
    # a GET's unit of work is a read (deferred on SQLite: it cannot write once another connection has
    # committed): catching the stage up is a write unit of work of its own, and the view is read there
    with request.app.state.sessions.begin() as writer:
        service.sync(writer, firm_id=user.firm_id, trader_id=trader_id)
        return service.trader_view(writer, firm_id=user.firm_id, trader_id=trader_id, trader_scope=user.trader_scope)


class TransitionIn(BaseModel):
    to: Literal[machine.STAGES] = Field(  # type: ignore[valid-type]
        description="the stage: suspended, terminated, or back from suspended")
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/traders/{trader_id}/transition", summary="Move a trader along an allowed transition (audited)")
def transition(trader_id: Id, body: TransitionIn, user: RiskUser, session: Db):
    result = service.transition(session, firm_id=user.firm_id, trader_id=trader_id, to=body.to, reason=body.reason,
                                actor=user.actor, actor_user_id=user.user_id)
    if isinstance(result, Refusal):
        return refused(result)
    return service.trader_view(session, firm_id=user.firm_id, trader_id=trader_id)


class KycIn(BaseModel):
    status: Literal["pending", "approved", "rejected", "expired"]
    reason: str = Field(min_length=1, max_length=2000)
    reference: str | None = Field(None, max_length=200)
    expires_at: dt.datetime | None = None


@router.post("/traders/{trader_id}/kyc", summary="Set a trader's KYC status (audited; the trader is told)")
def set_kyc(trader_id: Id, body: KycIn, user: KycUser, session: Db) -> dict:
    service.set_kyc(session, firm_id=user.firm_id, trader_id=trader_id, status=body.status, reason=body.reason,
                    reference=body.reference, expires_at=body.expires_at, actor=user.actor)
    return service.trader_view(session, firm_id=user.firm_id, trader_id=trader_id)


@router.get("/traders/{trader_id}/timeline",
            summary="The trader's timeline: notifications and e-mails sent, notes, messages, stage changes")
def timeline(trader_id: Id, user: AnyUser, session: Db) -> list[dict]:
    return comms.timeline(session, firm_id=user.firm_id, trader_id=trader_id, trader_scope=user.trader_scope)


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=comms.MAX_BODY)


@router.post("/traders/{trader_id}/notes", status_code=201, summary="A staff note on the trader's timeline")
def add_note(trader_id: Id, body: NoteIn, user: Staff, session: Db) -> dict:
    row = comms.add_note(session, firm_id=user.firm_id, trader_id=trader_id, text=body.text, actor=user.actor)
    return {"id": row.id, "kind": row.kind, "created_at": row.created_at}


class MessageIn(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=comms.MAX_BODY)


@router.post("/traders/{trader_id}/messages", status_code=201,
             summary="A message: from the trader to the firm, or from staff to the trader (sent through the outbox)")
def add_message(trader_id: Id, body: MessageIn, user: Annotated[Principal, Depends(require_roles(
        "admin", "support", "trader"))], session: Db) -> dict:
    row = comms.add_message(session, firm_id=user.firm_id, trader_id=trader_id, subject=body.subject, text=body.text,
                            actor=user.actor, from_trader=user.role == "trader", trader_scope=user.trader_scope)
    return {"id": row.id, "kind": row.kind, "created_at": row.created_at}


# --------------------------------------------------------------------------------------------------
# discount codes, orders


class DiscountIn(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    percent_off: str | None = Field(None, max_length=40)
    amount_off: str | None = Field(None, max_length=40)
    max_uses: int | None = Field(None, ge=1, le=MAX_ID)
    expires_at: dt.datetime | None = None


@router.get("/discount-codes", summary="Discount codes")
def list_codes(user: FinanceUser, session: Db) -> list[dict]:
    return [service.discount_view(row) for row in service.list_discount_codes(session, firm_id=user.firm_id)]


@router.post("/discount-codes", status_code=201, summary="Create a discount code (percent or amount off)")
def create_code(body: DiscountIn, user: FinanceUser, session: Db) -> dict:
    row = service.create_discount_code(session, firm_id=user.firm_id, code=body.code, percent_off=body.percent_off,
                                       amount_off=body.amount_off, max_uses=body.max_uses, expires_at=body.expires_at,
                                       actor=user.actor)
    return service.discount_view(row)


class OrderIn(BaseModel):
    trader_id: int | None = Field(None, ge=1, le=MAX_ID, description="staff: whose order; a trader orders for themselves")
    product_id: int | None = Field(None, ge=1, le=MAX_ID)
    discount_code: str | None = Field(None, max_length=64)
    platform: str = Field("demo", min_length=1, max_length=64)
    reset_account_id: int | None = Field(None, ge=1, le=MAX_ID, description="reset this failed account (same product)")


@router.post("/orders", status_code=201, summary="Order a product (or a reset); paid through the payment provider")
def create_order(body: OrderIn, user: OrderUser, session: Db):
    trader_id = user.trader_id if user.role == "trader" else body.trader_id
    if trader_id is None:
        raise Invalid("trader_id: required")
    result = service.create_order(session, firm_id=user.firm_id, trader_id=trader_id, product_id=body.product_id,
                                  discount_code=body.discount_code, platform=body.platform,
                                  reset_account_id=body.reset_account_id, actor=user.actor,
                                  trader_scope=user.trader_scope)
    if isinstance(result, Refusal):
        return refused(result)
    return service.order_view(result)


def _json(document: dict) -> Any:
    return json.loads(json.dumps(document, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v)))


@router.get("/orders", summary="Orders (a trader: their own)")
def list_orders(user: AnyUser, session: Db) -> list[dict]:
    return [service.order_view(o) for o in service.list_orders(session, firm_id=user.firm_id,
                                                                trader_id=user.trader_scope)]


@router.get("/orders/{order_id}", summary="One order")
def get_order(order_id: Id, user: AnyUser, session: Db) -> dict:
    return service.order_view(service.get_order(session, firm_id=user.firm_id, order_id=order_id,
                                                trader_scope=user.trader_scope))


class RefundIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/orders/{order_id}/refund", summary="Refund a paid order: its challenge account is closed")
def refund(order_id: Id, body: RefundIn, user: FinanceUser, session: Db):
    result = service.refund(session, firm_id=user.firm_id, order_id=order_id, reason=body.reason, actor=user.actor)
    if isinstance(result, Refusal):
        return refused(result)
    return service.order_view(result)


class SettingsIn(BaseModel):
    dual_approval_over: str | None = Field(None, max_length=40,
                                           description="a payout whose trader amount is above this needs two approvers")
    scaling_mode: Literal["auto", "approval"] | None = None


def _settings_view(row) -> dict:
    from ...services.accounts import money

    return {"dual_approval_over": money(row.dual_approval_over), "scaling_mode": row.scaling_mode}


@router.get("/lifecycle/settings", summary="Payout approval threshold and scaling mode of the firm")
def get_settings(user: FinanceUser, session: Db) -> dict:
    return _settings_view(service.settings_of(session, user.firm_id))


@router.post("/lifecycle/settings", summary="Set the payout approval threshold and the scaling mode")
def put_settings(body: SettingsIn, user: AdminUser, session: Db) -> dict:
    return _settings_view(service.update_settings(session, firm_id=user.firm_id,
                                                  dual_approval_over=body.dual_approval_over,
                                                  scaling_mode=body.scaling_mode, actor=user.actor))


# --------------------------------------------------------------------------------------------------
# signed provider webhooks

_WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or bad key, timestamp or signature, or a key of another provider"},
    404: {"model": ErrorOut}, 409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut},
}


async def _signed(request: Request, provider: str, handle) -> JSONResponse:
    headers, missing = signature_headers(request)
    if missing:
        return JSONResponse({"error": f"missing header(s) {', '.join(missing)}"}, status_code=401)
    body = await read_body(request, MAX_WEBHOOK_BYTES)
    if body is None:
        return JSONResponse({"error": f"body is over {MAX_WEBHOOK_BYTES:,} bytes"}, status_code=413)
    return await run_in_threadpool(_webhook, request.app.state.sessions, headers, body, provider, handle)


def _webhook(sessions: sessionmaker[Session], headers: dict, body: bytes, provider: str, handle) -> JSONResponse:
    with sessions.begin() as session:
        try:
            key = verify_signature(session, key_id=headers[KEY_HEADER], timestamp=headers[TIMESTAMP_HEADER],
                                   body=body, signature=headers[SIGNATURE_HEADER], now=dt.datetime.now(UTC))
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        if not key.platform.startswith(provider):
            return JSONResponse({"error": f"key {key.id} is not a {provider} provider's key"}, status_code=401)
        suspended = user_service.suspension(session, key.firm_id)
        if suspended is not None:
            return JSONResponse({"error": f"key {key.id} cannot be used: {suspended}"}, status_code=403)
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
        try:
            result = handle(session, key, document, headers)
        except (Invalid, ValueError, TypeError) as exc:
            session.rollback()
            return JSONResponse({"error": str(exc)}, status_code=422)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except Conflict as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        if isinstance(result, Refusal):
            return JSONResponse({"error": result.reason, "allowed": result.allowed}, status_code=409)
        return JSONResponse(_json(result))


def _field(document: dict, name: str, kind: type, required: bool = True):
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise Invalid(f"{name}: {'required, ' if required else ''}must be {kind.__name__}")
    if kind is int and not 1 <= value <= MAX_ID:  # an id: a larger one cannot even be looked up
        raise Invalid(f"{name}: must be an id from 1 to {MAX_ID}")
    return value


def _payment(session: Session, key, document: dict, headers: dict):
    # a repeated delivery is harmless here: the order's states only move forward (paid → refunded)
    order_id = _field(document, "order_id", int)
    amount = document.get("amount")
    result = service.payment_update(session, firm_id=key.firm_id, order_id=order_id,
                                    status=_field(document, "status", str),
                                    provider_ref=_field(document, "provider_ref", str, required=False),
                                    amount=str(amount) if amount is not None else None,
                                    actor=f"provider:{key.platform}",
                                    reason=_field(document, "reason", str, required=False),
                                    payment_methods=_payment_methods(document))
    return result if isinstance(result, Refusal) else service.order_view(result)


def _payment_methods(document: dict) -> list[tuple[str, str]]:
    """``payment_method`` {"kind": "card"|"wallet"|"bank", "fingerprint": "<provider's hash>"} or a list of them
    in ``payment_methods``: the instruments that paid, for linkage analysis."""
    one, many = document.get("payment_method"), document.get("payment_methods")
    if one is None and many is None:
        return []
    items = ([one] if one is not None else []) + (many if isinstance(many, list) else [] if many is None else [None])
    out = []
    for item in items[:10]:
        if not isinstance(item, dict):
            raise Invalid("payment_method: an object with kind and fingerprint")
        kind, fingerprint = item.get("kind"), item.get("fingerprint")
        if not isinstance(kind, str) or not isinstance(fingerprint, str):
            raise Invalid("payment_method: kind and fingerprint must be strings")
        out.append((kind, fingerprint))
    return out


def _kyc(session: Session, key, document: dict, headers: dict):
    # KYC statuses move both ways (approved ↔ rejected), so the same signed request taken twice would
    # undo whatever happened in between: a replay (or a provider's retry) changes nothing
    trader_id = _field(document, "trader_id", int)
    if not service.first_delivery(session, firm_id=key.firm_id, key_id=key.id, timestamp=headers[TIMESTAMP_HEADER],
                                  signature=headers[SIGNATURE_HEADER]):
        view = service.trader_view(session, firm_id=key.firm_id, trader_id=trader_id)
        return {**view, "duplicate": True}
    expires = _field(document, "expires_at", str, required=False)
    try:
        expires_at = dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None
    except ValueError:
        raise Invalid("expires_at: RFC 3339 time with an offset") from None
    service.set_kyc(session, firm_id=key.firm_id, trader_id=trader_id, status=_field(document, "status", str),
                    reason=_field(document, "reason", str, required=False) or f"reported by {key.platform}",
                    reference=_field(document, "reference", str, required=False), expires_at=expires_at,
                    actor=f"provider:{key.platform}")
    return service.trader_view(session, firm_id=key.firm_id, trader_id=trader_id)


@webhooks.post("/webhooks/payments", summary="Payment provider: an order is paid, failed or refunded (signed)",
               responses=_WEBHOOK_RESPONSES)
async def payment_webhook(request: Request) -> JSONResponse:
    """Body: ``{"order_id": 12, "status": "paid"|"failed"|"refunded", "provider_ref": "…", "amount": "540.00"}``.
    Delivered again, the same news changes nothing."""
    return await _signed(request, "payments", _payment)


@webhooks.post("/webhooks/kyc", summary="KYC provider: a trader's verification status (signed)",
               responses=_WEBHOOK_RESPONSES)
async def kyc_webhook(request: Request) -> JSONResponse:
    """Body: ``{"trader_id": 7, "status": "approved"|"rejected"|"expired"|"pending", "reference": "…",
    "reason": "…", "expires_at": "2027-11-24T00:00:00Z"}``."""
    return await _signed(request, "kyc", _kyc)


routers: tuple[APIRouter, ...] = (router, webhooks)  # payouts.routers are mounted after these (api/staff.py)
