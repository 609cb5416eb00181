"""Back office pages of the platforms feature (issue 20).

* ``POST /office/accounts/{id}/mt5-report`` — risk and admin upload the terminal's trade history
  report (HTML or Excel) of an account; its deals become the account's events through ingestion
  (``features/platforms/reports.py``). The form is multipart, so the CSRF token and the origin are
  checked here rather than by the text-only ``Form`` dependency.
* ``GET /office/platforms`` — admin and risk see the firm's platform connections (settings, which
  secrets are set — never their values —, mapped logins, the stream's position) and calendar sources.
* ``GET /office/calendar`` — every staff role sees the upcoming economic calendar, high impact first.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from ...http.auth import Db
from ...features.calendar.service import list_sources, upcoming
from ...features.platforms.connections import list_connections
from ...features.platforms.reports import MAX_REPORT_BYTES, import_mt5_report
from ...services import accounts as account_service
from ...services.errors import Invalid, NotFound
from ...http.pages import Role, checked_form, redirect, render
from ...roles import RISK, STAFF

router = APIRouter()
UTC = dt.timezone.utc


@router.post("/office/accounts/{account_id}/mt5-report")
async def upload_mt5_report(request: Request, account_id: int, user: Role(*RISK), session: Db) -> Response:
    form = await checked_form(request, max_files=1, max_part_size=MAX_REPORT_BYTES)
    if not 1 <= account_id <= 2_147_483_647:
        raise NotFound(f"no account {account_id}")
    account = account_service.get_account(session, firm_id=user.firm_id, account_id=account_id)
    back = f"/office/accounts/{account.id}"
    upload = form.get("report")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect(request, back, flash="Not imported: choose the report file (HTML or Excel).")
    data = await upload.read(MAX_REPORT_BYTES + 1)
    zone = form.get("server_timezone")
    try:
        report = import_mt5_report(session, firm_id=user.firm_id, account=account.external_id, data=data,
                                   filename=upload.filename, server_timezone=zone if isinstance(zone, str) and zone.strip() else None,
                                   actor=user.actor)
    except Invalid as exc:
        return redirect(request, back, flash=f"Not imported: {exc}")
    message = (f"{upload.filename}: {report.deals} deals → {report.accepted} events imported, "
               f"{report.duplicates} already there, {report.rejected} refused (source {report.source}, "
               f"server time {report.server_timezone}).")
    if report.warnings:
        message += f" {len(report.warnings)} row(s) skipped: {report.warnings[0]}"
    return redirect(request, back, flash=message)


@router.get("/office/platforms")
def platforms_page(request: Request, user: Role(*RISK), session: Db) -> Response:
    connections = list_connections(session, firm_id=user.firm_id)
    return render(request, "platforms/index.html", {
        "connections": connections, "sources": list_sources(session, firm_id=user.firm_id)})


@router.get("/office/calendar")
def calendar_page(request: Request, user: Role(*STAFF), session: Db) -> Response:
    impact = request.query_params.get("impact", "high")
    if impact not in ("high", "medium", "low", "all"):
        impact = "high"
    now = dt.datetime.now(UTC)
    entries = upcoming(session, firm_id=user.firm_id, since=now - dt.timedelta(hours=1),
                       impacts=None if impact == "all" else ("high",) if impact == "high" else
                       ("high", "medium") if impact == "medium" else ("high", "medium", "low"), limit=200)
    return render(request, "platforms/calendar.html", {"entries": entries, "impact": impact, "now": now})
