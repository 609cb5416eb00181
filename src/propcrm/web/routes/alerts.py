"""Near-breach alerts (risk, admin): the accounts that came within the firm's distance of a loss limit, newest
first, each marked seen by whom; and the firm's alert distance. The alerts themselves are written by the
evaluation path (``services/near_breach.py``), once per account, limit and trading day, and also reach the
notification path (in-app, the risk desk's e-mail, the firm's webhook)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...http.pages import Form, Role, redirect, render
from ...roles import RISK
from ...services import near_breach as service
from ...services.errors import Conflict, Invalid
from .accounts import int_param

router = APIRouter()

MAX_ID = 2**31 - 1
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE = 100


def alert_filters(params) -> bool:
    return params.get("view") == "unseen"


@router.get("/office/alerts")
def alerts_page(request: Request, user: Role(*RISK), session: Db) -> Response:
    unseen = alert_filters(request.query_params)
    offset = int_param(request.query_params.get("offset"), 0, 0, 1_000_000_000)
    rows, total = service.list_alerts(session, firm_id=user.firm_id, unseen_only=unseen, limit=PAGE, offset=offset)
    view = "unseen" if unseen else "all"
    return render(request, "crm/alerts.html", {
        "rows": rows, "total": total, "view": view, "settings": service.settings_of(session, user.firm_id),
        "prev_href": f"/office/alerts?view={view}&offset={max(offset - PAGE, 0)}" if offset > 0 else None,
        "next_href": f"/office/alerts?view={view}&offset={offset + PAGE}" if offset + PAGE < total else None,
    })


@router.post("/office/alerts/settings")
def alert_settings(request: Request, form: Form, user: Role(*RISK), session: Db) -> Response:
    try:
        with session.begin_nested():
            row = service.update_settings(session, firm_id=user.firm_id, within_pct=(form.get("within_pct") or "").strip(),
                                          within_amount=(form.get("within_amount") or "").replace(",", "").strip(),
                                          actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/alerts", flash=f"Not saved: {exc}")
    if row.within_pct is None and row.within_amount is None:
        return redirect(request, "/office/alerts", flash="Near-breach alerts are off.")
    return redirect(request, "/office/alerts", flash="Alert distance saved.")


@router.post("/office/alerts/{alert_id}/seen")
def alert_seen(request: Request, alert_id: AlertId, form: Form, user: Role(*RISK), session: Db) -> Response:
    try:
        with session.begin_nested():
            service.mark_seen(session, firm_id=user.firm_id, alert_id=alert_id, actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/alerts", flash=f"Not done: {exc}")
    return redirect(request, "/office/alerts", flash="Alert marked seen.")
