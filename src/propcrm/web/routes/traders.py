"""Back office CRM: the trader list, a trader's profile, KYC documents and the compliance review queue.

Who may (``roles.py``): every staff role reads the list and profiles and writes notes (``CRM``); the support
desk (admin, support) writes to the trader; the KYC roles (admin, risk, support) upload documents, read
them and approve or reject a verification from them; risk and admin suspend a trader, after ticking the
confirmation. Each action is the service the JSON API uses (``api/routers/lifecycle.py``), audited there.

Documents are never under ``/static``: ``GET /office/traders/{id}/documents/{doc}`` reads them from the
document store after the role and firm checks, as a download that the browser may not run or sniff.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from ...domain import lifecycle as machine
from ...http.auth import Db
from ...http.pages import Form, Role, checked_form, redirect, render
from ...roles import CRM, KYC, RISK, SUPPORT_DESK
from ...services import communications as comms
from ...services import kyc_documents as documents
from ...services import lifecycle as lifecycle_service
from ...services import support as support_service
from ...services import tasks as task_service
from ...services.errors import Conflict, Invalid
from ...services.lifecycle import Refusal
from .. import queries_traders as q
from .accounts import int_param, text_param

router = APIRouter()

MAX_ID = 2**31 - 1
TraderId = Annotated[int, Path(ge=1, le=MAX_ID)]
DocumentId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE_SIZES = (25, 50, 100, 200)


@router.get("/office/traders")
def traders_page(request: Request, user: Role(*CRM), session: Db) -> Response:
    params = request.query_params
    search = text_param(params.get("q"))
    stage = params.get("stage") if params.get("stage") in machine.STAGES else None
    kyc = params.get("kyc") if params.get("kyc") in machine.KYC_STATUSES else None
    limit = int_param(params.get("limit"), q.PAGE_SIZE, 1, max(PAGE_SIZES))
    offset = int_param(params.get("offset"), 0, 0, 1_000_000_000)
    page = q.list_traders(session, firm_id=user.firm_id, search=search, stage=stage, kyc=kyc, limit=limit,
                          offset=offset)
    state = {"q": search, "stage": stage, "kyc": kyc, "limit": limit if limit != q.PAGE_SIZE else None}

    def link(**changes: Any) -> str:
        merged = {**state, **changes}
        return "/office/traders?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    return render(request, "traders/list.html", {
        "page": page, "filters": state, "stages": machine.STAGES, "kyc_statuses": machine.KYC_STATUSES,
        "limit": limit, "page_sizes": PAGE_SIZES, "first": offset + 1 if page.rows else 0,
        "last": offset + len(page.rows),
        "prev_href": link(offset=max(offset - limit, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + limit) if offset + limit < page.total else None,
    })


@router.get("/office/traders/{trader_id}")
def trader_page(request: Request, trader_id: TraderId, user: Role(*CRM), session: Db) -> Response:
    trader = comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=trader_id)
    view = lifecycle_service.trader_view(session, firm_id=user.firm_id, trader_id=trader.id)
    return render(request, "traders/profile.html", {
        "trader": view,
        "accounts": q.trader_accounts(session, firm_id=user.firm_id, trader_id=trader.id),
        "orders": q.trader_orders(session, firm_id=user.firm_id, trader_id=trader.id),
        "documents": documents.documents_of(session, firm_id=user.firm_id, trader_id=trader.id)
        if user.role in KYC else None,
        "document_kinds": documents.KINDS, "max_mb": documents.MAX_BYTES // (1024 * 1024),
        "timeline": comms.timeline(session, firm_id=user.firm_id, trader_id=trader.id),
        "conversation": support_service.conversation_of(session, firm_id=user.firm_id, trader_id=trader.id),
        "can": {"kyc": user.role in KYC, "message": user.role in SUPPORT_DESK, "suspend": user.role in RISK},
        "history": lifecycle_service.stage_history(session, firm_id=user.firm_id, trader_id=trader.id),
        "tasks": task_service.list_tasks(session, firm_id=user.firm_id, trader_id=trader.id, status=None, limit=100),
        "staff": task_service.assignees(session, firm_id=user.firm_id), "today": task_service.today(),
    })


def _back(trader_id: int, anchor: str = "") -> str:
    return f"/office/traders/{trader_id}{anchor}"


@router.post("/office/traders/{trader_id}/notes")
def add_note(request: Request, trader_id: TraderId, form: Form, user: Role(*CRM), session: Db) -> Response:
    try:
        with session.begin_nested():
            comms.add_note(session, firm_id=user.firm_id, trader_id=trader_id, text=form.get("text", ""),
                           actor=user.actor)
    except Invalid as exc:
        return redirect(request, _back(trader_id, "#timeline"), flash=f"Not saved: {exc}")
    return redirect(request, _back(trader_id, "#timeline"), flash="Note saved (staff only).")


@router.post("/office/traders/{trader_id}/messages")
def send_message(request: Request, trader_id: TraderId, form: Form, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    try:
        with session.begin_nested():
            comms.add_message(session, firm_id=user.firm_id, trader_id=trader_id, subject=form.get("subject", ""),
                              text=form.get("text", ""), actor=user.actor, from_trader=False)
    except Invalid as exc:
        return redirect(request, _back(trader_id, "#timeline"), flash=f"Not sent: {exc}")
    return redirect(request, _back(trader_id, "#timeline"), flash="Message sent to the trader.")


@router.post("/office/traders/{trader_id}/suspend")
def suspend(request: Request, trader_id: TraderId, form: Form, user: Role(*RISK), session: Db) -> Response:
    comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=trader_id)
    if form.get("confirm") != "yes":
        return redirect(request, _back(trader_id), flash="Not done: tick the box to confirm the suspension.")
    return suspend_and_tell(request, session, user, trader_id, form.get("reason", ""), _back(trader_id))


def suspend_and_tell(request: Request, session, user, trader_id: int, reason: str, back: str) -> Response:
    """Suspend the trader (every live account of theirs is emergency-stopped; the trader is told) and
    come back to ``back`` with what happened."""
    try:
        with session.begin_nested():
            result = lifecycle_service.transition(session, firm_id=user.firm_id, trader_id=trader_id, to="suspended",
                                                  reason=reason, actor=user.actor, actor_user_id=user.user_id)
            if isinstance(result, Refusal):
                raise Conflict(result.reason)
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    return redirect(request, back, flash="Trader suspended: their live accounts are emergency-stopped and they are told.")


# --------------------------------------------------------------------------------------------------
# KYC documents and the review queue


@router.post("/office/traders/{trader_id}/documents")
async def upload_document(request: Request, trader_id: TraderId, user: Role(*KYC), session: Db) -> Response:
    form = await checked_form(request, max_files=1, max_part_size=documents.MAX_BYTES + 1024)
    back = _back(trader_id, "#kyc")
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect(request, back, flash="Not uploaded: choose a file (PDF, PNG or JPEG).")
    data = await upload.read(documents.MAX_BYTES + 1)
    kind = form.get("kind")
    try:
        with session.begin_nested():
            row = documents.upload(session, request.app.state.documents, firm_id=user.firm_id, trader_id=trader_id,
                                   kind=kind if isinstance(kind, str) else "", filename=upload.filename, data=data,
                                   actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not uploaded: {exc}")
    return redirect(request, back, flash=f"{row.filename} uploaded; it awaits review.")


@router.get("/office/traders/{trader_id}/documents/{document_id}")
def download_document(request: Request, trader_id: TraderId, document_id: DocumentId, user: Role(*KYC),
                      session: Db) -> Response:
    row = documents.get_document(session, firm_id=user.firm_id, document_id=document_id)
    if row.trader_id != trader_id:
        return render(request, "error.html", {"status": 404, "title": "Not found",
                                              "message": f"no document {document_id}"}, status=404)
    data = request.app.state.documents.read(row.storage_key)
    inline = request.query_params.get("view") == "1" and row.content_type != "application/pdf"
    disposition = "inline" if inline else "attachment"
    return Response(data, media_type=row.content_type, headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(row.filename)}",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@router.get("/office/kyc")
def kyc_queue(request: Request, user: Role(*KYC), session: Db) -> Response:
    return render(request, "traders/kyc_queue.html", {"queue": documents.review_queue(session, firm_id=user.firm_id)})


@router.post("/office/traders/{trader_id}/kyc-review")
def kyc_review(request: Request, trader_id: TraderId, form: Form, user: Role(*KYC), session: Db) -> Response:
    decision = form.get("decision", "")
    try:
        with session.begin_nested():
            reviewed = documents.review(session, firm_id=user.firm_id, trader_id=trader_id, decision=decision,
                                        reason=form.get("reason", ""), actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, _back(trader_id, "#kyc"), flash=f"Not done: {exc}")
    return redirect(request, "/office/kyc",
                    flash=f"Verification {decision} from {len(reviewed)} document(s); the trader is told.")
