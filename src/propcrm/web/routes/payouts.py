"""The payout queue of the back office: the queue, one payout with its checks and amount, and the
maker-checker actions (prepare, approve, reject).

Roles exactly as the JSON API (``api/routers/payouts.py``): admin, risk and finance read the queue;
admin and finance prepare, approve and reject. Every action is the service's own
(:mod:`propcrm.services.payouts`): a refusal (the preparer approving, an account that changed since
preparation, a missing deduction reason…) comes back to the page as a flash with the service's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...http.auth import Db
from ...services import payouts as payout_service
from ...services import scaling as scaling_service
from ...services.errors import Conflict, Invalid
from ...services.lifecycle import Refusal
from ...http.pages import Form, Role, fmt_money, redirect, render
from ...roles import FINANCE, MANAGERS, RISK
from .. import queries_payouts as q
from ..documents import pdf_response, statement_pdf

router = APIRouter()

READERS = MANAGERS  # GET /api/v1/payouts minus support (the menu's "Payouts")
BUSINESS_NUMBERS = FINANCE  # as the dashboard's (GET /api/v1/metrics/business): admin, finance
MAX_ID = 2**31 - 1  # the id columns are 32-bit integers (as the API bounds them)
PayoutId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_DEDUCTION_TEXT = 40  # as the API's PrepareIn.deduction
MAX_REASON_TEXT = 2000


@router.get("/office/payouts")
def payout_queue(request: Request, user: Role(*READERS), session: Db,
                 status: Annotated[str, Query(max_length=40)] = "open",
                 page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    # the firm's liability is one of the business numbers: shown to the roles the dashboard shows it to
    found = q.queue(session, firm_id=user.firm_id, status=status, page=page,
                    with_liability=user.role in BUSINESS_NUMBERS)
    return render(request, "payouts/queue.html", {"q": found, "filters": q.FILTERS,
                                                  "can_act": user.role in FINANCE})


@router.get("/office/payouts/{payout_id}")
def payout_detail(request: Request, payout_id: PayoutId, user: Role(*READERS), session: Db) -> Response:
    d = q.detail(session, firm_id=user.firm_id, payout_id=payout_id)
    approver_ids = {a.user_id for a in d.approvals}
    can_act = user.role in FINANCE
    you_prepared = d.payout.prepared_by_user_id == user.user_id
    you_approved = user.user_id in approver_ids
    not_independent = None
    if can_act and d.payout.status == "prepared" and not you_prepared and not you_approved:
        refusal = payout_service.independence_refusal(session, d.payout, user.user_id,
                                                      {a.user_id for a in d.approvals if a.counts})
        not_independent = refusal.reason if refusal is not None else None
    return render(request, "payouts/detail.html", {
        "d": d, "p": d.payout, "can_act": can_act, "you_prepared": you_prepared, "you_approved": you_approved,
        "not_independent": not_independent,
        "can_approve": (can_act and d.payout.status == "prepared" and not you_prepared and not you_approved
                        and not_independent is None),
        "can_see_cases": user.role in RISK, "steps": q.step_rows(d.payout.steps),
        "steps_now": q.step_rows(d.steps_now),
    })


def _act(request: Request, session: Session, payout_id: int, done: Callable[[Any], str], action: Callable[[], Any],
         *, back: str | None = None) -> Response:
    """Runs one service action; its refusal, or a rejected value, goes back to the page as a flash.

    A raised ``Invalid``/``Conflict`` rolls back to a savepoint first, so that nothing of a half-done
    action is committed (the JSON API rolls back the whole request in that case)."""
    back = back or f"/office/payouts/{payout_id}"
    try:
        with session.begin_nested():
            result = action()
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    if isinstance(result, Refusal):
        return redirect(request, back, flash=f"Refused: {result.reason}")
    return redirect(request, back, flash=done(result))


@router.post("/office/payouts/{payout_id}/prepare")
def prepare(request: Request, payout_id: PayoutId, user: Role(*FINANCE), session: Db, form: Form) -> Response:
    deduction = form.get("deduction", "").strip()
    reason = form.get("deduction_reason", "").strip()
    if len(deduction) > MAX_DEDUCTION_TEXT or len(reason) > MAX_REASON_TEXT:
        return redirect(request, f"/office/payouts/{payout_id}",
                        flash=f"Not done: the deduction is at most {MAX_DEDUCTION_TEXT} characters and its reason "
                              f"at most {MAX_REASON_TEXT}")
    return _act(request, session, payout_id,
                lambda row: (f"Payout {row.id} prepared: the trader's amount is {fmt_money(row.trader_amount)}; "
                             f"it needs {row.approvals_needed} approval(s) by someone else"),
                lambda: payout_service.prepare_payout(session, firm_id=user.firm_id, payout_id=payout_id,
                                                      user_id=user.user_id, actor=user.actor,
                                                      deduction=deduction or None, deduction_reason=reason or None))


@router.post("/office/payouts/{payout_id}/approve")
def approve(request: Request, payout_id: PayoutId, user: Role(*FINANCE), session: Db, form: Form) -> Response:
    def done(row) -> str:
        if row.status == "approved":
            return f"Payout {row.id} approved: {fmt_money(row.trader_amount)} is paid and withdrawn from the account"
        return f"Your approval of payout {row.id} is recorded; it needs {row.approvals_needed} distinct approvers"

    return _act(request, session, payout_id, done,
                lambda: payout_service.approve_payout(session, firm_id=user.firm_id, payout_id=payout_id,
                                                      user_id=user.user_id, actor=user.actor))


@router.post("/office/payouts/{payout_id}/reject")
def reject(request: Request, payout_id: PayoutId, user: Role(*FINANCE), session: Db, form: Form) -> Response:
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON_TEXT:
        return redirect(request, f"/office/payouts/{payout_id}",
                        flash=f"Not done: give the reason the trader will read (1 to {MAX_REASON_TEXT} characters)")
    return _act(request, session, payout_id,
                lambda row: f"Payout {row.id} rejected; the trader is told why",
                lambda: payout_service.reject_payout(session, firm_id=user.firm_id, payout_id=payout_id,
                                                     reason=reason, actor=user.actor))


@router.post("/office/payouts/{payout_id}/sent")
def sent(request: Request, payout_id: PayoutId, user: Role(*FINANCE), session: Db, form: Form) -> Response:
    """After approval: finance records that the money is sent, with the payment's reference (audited)."""
    reference = form.get("reference", "").strip()
    if not 3 <= len(reference) <= payout_service.MAX_REFERENCE:
        return redirect(request, f"/office/payouts/{payout_id}",
                        flash=f"Not done: reference: 3 to {payout_service.MAX_REFERENCE} characters are required")
    return _act(request, session, payout_id,
                lambda row: f"Payout {row.id} is marked sent (reference {row.payment_reference}); the trader is told",
                lambda: payout_service.mark_sent(session, firm_id=user.firm_id, payout_id=payout_id,
                                                 reference=reference, actor=user.actor))


@router.get("/office/payouts/{payout_id}/statement.pdf")
def statement(payout_id: PayoutId, user: Role(*READERS), session: Db) -> Response:
    row = payout_service.get_payout(session, firm_id=user.firm_id, payout_id=payout_id)
    return pdf_response(statement_pdf(session, row), f"payout-{row.id}-statement.pdf")


# --------------------------------------------------------------------------------------------------
# scaling reviews: read by admin, risk and finance (GET /api/v1/scalings); decided by admin and risk


@router.get("/office/scalings")
def scaling_queue(request: Request, user: Role(*READERS), session: Db) -> Response:
    pending, decided = q.scalings(session, firm_id=user.firm_id)
    return render(request, "payouts/scalings.html", {"pending": pending, "decided": decided,
                                                     "can_decide": user.role in RISK})


@router.post("/office/scalings/{scaling_id}/approve")
def approve_scaling(request: Request, scaling_id: PayoutId, user: Role(*RISK), session: Db, form: Form) -> Response:
    return _act(request, session, scaling_id, lambda row: f"Scaling {row.id} approved: the account is scaled to "
                                                          f"{fmt_money(row.to_size)}",
                lambda: scaling_service.approve_scaling(session, firm_id=user.firm_id, scaling_id=scaling_id,
                                                        actor=user.actor),
                back="/office/scalings")


@router.post("/office/scalings/{scaling_id}/reject")
def reject_scaling(request: Request, scaling_id: PayoutId, user: Role(*RISK), session: Db, form: Form) -> Response:
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON_TEXT:
        return redirect(request, "/office/scalings",
                        flash=f"Not done: give the reason for rejecting scaling {scaling_id} (1 to {MAX_REASON_TEXT} "
                              "characters)")
    return _act(request, session, scaling_id, lambda row: f"Scaling {row.id} rejected",
                lambda: scaling_service.reject_scaling(session, firm_id=user.firm_id, scaling_id=scaling_id,
                                                       reason=reason, actor=user.actor),
                back="/office/scalings")
