"""Abuse cases in the back office: the case list, one case with its evidence (linked-account graph,
matched trades on one time axis, latency fills against the reference prices, risk-score explanations,
timeline) and the risk officer's actions (assign, note, move the status, run the analysis).

Roles exactly as the JSON API (``api/routers/cases.py``): admin and risk only, for reading and for every
action; finance, support and traders get the 403 page. Another firm's case is 404. Every action is the
service's own (:mod:`propcrm.services.cases`), which writes the timeline note and the audit entry; a
refusal (an illegal transition, a too-short reason, a user who may not be assigned) comes back to the
case page as a flash in the service's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...http.auth import Db
from ...services import analysis as analysis_service
from ...services import cases as case_service
from ...services.errors import Conflict, Invalid
from .. import queries_cases as q
from ...http.pages import Form, Role, redirect, render
from ...roles import RISK

router = APIRouter()

MAX_ID = 2**31 - 1  # the id columns are 32-bit integers (as the API bounds them)
CaseId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_TEXT = case_service.MAX_TEXT
MIN_TEXT = case_service.MIN_TEXT


@router.get("/office/cases")
def case_list(request: Request, user: Role(*RISK), session: Db,
              status: Annotated[str, Query(max_length=20)] = "active",
              kind: Annotated[str, Query(max_length=32)] = "",
              mine: Annotated[str, Query(max_length=5)] = "",
              page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    found = q.case_list(session, firm_id=user.firm_id, status=status, kind=kind.strip(),
                        mine_user_id=user.user_id if mine else None, page=page)
    return render(request, "cases/list.html", {"q": found, "filters": q.STATUS_FILTERS, "kinds": q.KIND_LABELS,
                                               "labels": q.STATUS_LABELS})


@router.get("/office/cases/{case_id}")
def case_page(request: Request, case_id: CaseId, user: Role(*RISK), session: Db) -> Response:
    d = q.case_detail(session, firm_id=user.firm_id, case_id=case_id)
    return render(request, "cases/detail.html", {"d": d, "c": d.view, "labels": q.STATUS_LABELS,
                                                 "min_text": MIN_TEXT, "max_text": MAX_TEXT})


def _act(request: Request, session: Session, case_id: int, done: str | Callable[[Any], str],
         action: Callable[[], Any]) -> Response:
    """One service action; a refusal goes back to the case page as a flash, with nothing half-done kept."""
    back = f"/office/cases/{case_id}"
    try:
        with session.begin_nested():
            result = action()
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    return redirect(request, back, flash=done(result) if callable(done) else done)


@router.post("/office/cases/{case_id}/assign")
def assign(request: Request, case_id: CaseId, user: Role(*RISK), session: Db, form: Form) -> Response:
    raw = form.get("user_id", "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ID):
        return redirect(request, f"/office/cases/{case_id}", flash="Not done: choose a risk or admin user from the list")
    target = int(raw) if raw else None
    return _act(request, session, case_id,
                "Case assigned" if target else "Case unassigned",
                lambda: case_service.assign(session, firm_id=user.firm_id, case_id=case_id, user_id=target,
                                            actor_user_id=user.user_id, actor=user.actor))


@router.post("/office/cases/{case_id}/notes")
def add_note(request: Request, case_id: CaseId, user: Role(*RISK), session: Db, form: Form) -> Response:
    return _act(request, session, case_id, "Note added to the timeline",
                lambda: case_service.add_note(session, firm_id=user.firm_id, case_id=case_id,
                                              text=form.get("text", ""), actor_user_id=user.user_id,
                                              actor=user.actor))


@router.post("/office/cases/{case_id}/status")
def set_status(request: Request, case_id: CaseId, user: Role(*RISK), session: Db, form: Form) -> Response:
    status = form.get("status", "").strip()
    enforce = form.get("enforce", "") in ("1", "on", "true", "yes")

    def done(case) -> str:
        text = f"Case {case.id} is now {q.STATUS_LABELS.get(case.status, case.status)}"
        if enforce:
            text += "; every account of the case that still traded is emergency-stopped"
        return text

    return _act(request, session, case_id, done,
                lambda: case_service.transition(session, firm_id=user.firm_id, case_id=case_id, status=status,
                                                reason=form.get("reason", ""), actor_user_id=user.user_id,
                                                actor=user.actor, enforce=enforce))


@router.post("/office/cases/analyse")
def run_analysis(request: Request, user: Role(*RISK), session: Db, form: Form) -> Response:
    """The API's ``POST /analysis/run`` (incremental): judge the events stored since the last pass now."""
    full = form.get("full", "") in ("1", "on", "true")
    result = analysis_service.run(session, firm_id=user.firm_id, full=full)
    cases = ", ".join(f"{n} {what}" for what, n in sorted(result.cases.items()) if n) or "no case changed"
    return redirect(request, "/office/cases",
                    flash=f"Analysis ({result.mode}) read {result.events_read} event(s): {cases}")

