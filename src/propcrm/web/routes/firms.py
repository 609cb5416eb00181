"""Firms as tenants (issue 16): the operator's firm list and onboarding, and a firm's settings page.

``/operator/firms`` (operator): every firm, and a form that onboards one with its first admin — whose password
is shown on that answer only. ``/operator/firms/{id}`` (operator) and ``/office/firm`` (the firm's admin, their
own firm only) are the same settings page: branding (display name, product name, accent colour, logo),
notifications (SMTP, risk e-mail) and the firm webhook, each with the default it falls back to; secrets are
write-only (a field left empty keeps the one set; a box clears it). ``/brand.css`` and ``/brand/logo`` give
the logged-in user's firm its colour and logo (a stylesheet, not an inline style: the CSP stays strict).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from ...http.auth import Db
from ...http.pages import Form, Role, WebUser, checked_form, forget_brand, redirect, render
from ...roles import ADMIN, OPERATOR
from ...services import firms as firm_service
from ...services.errors import Conflict, Invalid, NotFound

router = APIRouter()
FirmId = Annotated[str, Path(min_length=1, max_length=64)]
TEXT_FIELDS = ("name", "product_name", "accent_colour", "smtp_host", "smtp_port", "smtp_sender", "smtp_user",
               "risk_email", "webhook_url")
ONBOARD_SETTINGS = ("product_name", "accent_colour", "smtp_host", "smtp_port", "smtp_sender", "risk_email",
                    "webhook_url", "webhook_secret")


def _store(request: Request):
    return request.app.state.documents


# --------------------------------------------------------------------------------------------------
# branding of the logged-in user's firm


@router.get("/brand.css")
def brand_css(request: Request, user: WebUser, session: Db) -> Response:
    brand = firm_service.branding(session, user.firm_id)
    # the colour is checked (#rrggbb) when it is set: nothing else reaches the stylesheet
    css = f":root {{ --accent: {brand.accent}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "private, max-age=300"})


@router.get("/brand/logo")
def brand_logo(request: Request, user: WebUser, session: Db) -> Response:
    found = firm_service.logo(session, firm_id=user.firm_id, store=_store(request))
    if found is None:
        return Response(status_code=404)
    data, kind = found
    return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=300",
                                                    "X-Content-Type-Options": "nosniff"})


# the login page of a firm (/login?firm=<id>): public, and the same for an unknown firm as for one
# without settings (the default colour; no logo)


@router.get("/login/brand.css")
def login_brand_css(request: Request, session: Db, firm: str = "") -> Response:
    brand = firm_service.login_branding(session, firm)
    return Response(f":root {{ --accent: {brand.accent}; }}\n", media_type="text/css",
                    headers={"Cache-Control": "public, max-age=300"})


@router.get("/login/logo")
def login_logo(request: Request, session: Db, firm: str = "") -> Response:
    brand = firm_service.login_branding(session, firm)
    found = firm_service.logo(session, firm_id=firm, store=_store(request)) if brand.has_logo else None
    if found is None:
        return Response(status_code=404)
    data, kind = found
    return Response(data, media_type=kind, headers={"Cache-Control": "public, max-age=300",
                                                    "X-Content-Type-Options": "nosniff"})


# --------------------------------------------------------------------------------------------------
# the operator's firms


@router.get("/operator/firms")
def firms_page(request: Request, user: Role(*OPERATOR), session: Db) -> Response:
    return _firms_page(request, session)


def _firms_page(request: Request, session, *, onboarded: dict | None = None, form: dict | None = None,
                error: str | None = None, status: int = 200) -> Response:
    return render(request, "firms/list.html", {"firms": firm_service.list_firms(session), "onboarded": onboarded,
                                               "form": form or {}, "error": error}, status=status)


@router.post("/operator/firms")
def onboard(request: Request, user: Role(*OPERATOR), session: Db, form: Form) -> Response:
    settings = {field: form[field] for field in ONBOARD_SETTINGS if form.get(field, "").strip()}
    try:
        with session.begin_nested():
            made = firm_service.create_firm(session, firm_id=form.get("id", ""), name=form.get("name", ""),
                                            admin_email=form.get("admin_email", ""), actor=user.actor,
                                            settings=settings)
    except (Invalid, Conflict, NotFound) as exc:
        kept = {k: v for k, v in form.items() if k not in ("webhook_secret",)}
        return _firms_page(request, session, form=kept, error=str(exc), status=422)
    # the first admin's password: on this answer only (never in a cookie, a URL or the log)
    return _firms_page(request, session, onboarded={"firm": made.firm.id, "name": made.firm.name,
                                                    "email": made.admin.email, "password": made.password})


@router.post("/operator/firms/{firm_id}/suspend")
def suspend(request: Request, firm_id: FirmId, user: Role(*OPERATOR), session: Db, form: Form) -> Response:
    return _suspension(request, session, firm_id, form, user, firm_service.suspend_firm, "suspended")


@router.post("/operator/firms/{firm_id}/resume")
def resume(request: Request, firm_id: FirmId, user: Role(*OPERATOR), session: Db, form: Form) -> Response:
    return _suspension(request, session, firm_id, form, user, firm_service.resume_firm, "resumed")


def _suspension(request: Request, session, firm_id: str, form: dict[str, str], user, change, done: str) -> Response:
    try:
        with session.begin_nested():
            change(session, firm_id=firm_id, reason=form.get("reason", ""), actor=user.actor)
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Not found", "message": str(exc)}, status=404)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/operator/firms", flash=f"Not {done}: {exc}")
    forget_brand(request, firm_id)
    return redirect(request, "/operator/firms", flash=f"Firm {firm_id} {done}.")


@router.get("/operator/firms/{firm_id}")
def operator_settings_page(request: Request, firm_id: FirmId, user: Role(*OPERATOR), session: Db) -> Response:
    return _settings_page(request, session, firm_id, base=f"/operator/firms/{firm_id}")


@router.post("/operator/firms/{firm_id}")
def operator_save(request: Request, firm_id: FirmId, user: Role(*OPERATOR), session: Db, form: Form) -> Response:
    return _save(request, session, firm_id, form, actor=user.actor, base=f"/operator/firms/{firm_id}")


@router.post("/operator/firms/{firm_id}/logo")
async def operator_logo(request: Request, firm_id: FirmId, user: Role(*OPERATOR), session: Db) -> Response:
    return await _logo(request, session, firm_id, actor=user.actor, base=f"/operator/firms/{firm_id}")


# --------------------------------------------------------------------------------------------------
# the firm admin's own settings


@router.get("/office/firm")
def own_settings_page(request: Request, user: Role(*ADMIN), session: Db) -> Response:
    return _settings_page(request, session, user.firm_id, base="/office/firm")


@router.post("/office/firm")
def own_save(request: Request, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _save(request, session, user.firm_id, form, actor=user.actor, base="/office/firm")


@router.post("/office/firm/logo")
async def own_logo(request: Request, user: Role(*ADMIN), session: Db) -> Response:
    return await _logo(request, session, user.firm_id, actor=user.actor, base="/office/firm")


# --------------------------------------------------------------------------------------------------
# shared


def _settings_page(request: Request, session, firm_id: str, *, base: str) -> Response:
    try:
        settings = firm_service.describe(session, firm_id=firm_id,
                                         defaults=request.app.state.settings.delivery)
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Not found", "message": str(exc)}, status=404)
    return render(request, "firms/settings.html", {"s": settings, "base": base,
                                                   "max_logo_kb": firm_service.MAX_LOGO_BYTES // 1024})


def _save(request: Request, session, firm_id: str, form: dict[str, str], *, actor: str, base: str) -> Response:
    changes: dict[str, str] = {field: form.get(field, "") for field in TEXT_FIELDS if field in form}
    for secret in ("webhook_secret", "smtp_password"):
        if form.get(f"clear_{secret}"):
            changes[secret] = ""
        elif form.get(secret):
            changes[secret] = form[secret]
    try:
        with session.begin_nested():
            firm_service.update_settings(session, firm_id=firm_id, changes=changes, actor=actor)
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Not found", "message": str(exc)}, status=404)
    except (Invalid, Conflict) as exc:
        return redirect(request, base, flash=f"Not saved: {exc}")
    forget_brand(request, firm_id)
    return redirect(request, base, flash="Settings saved")


async def _logo(request: Request, session, firm_id: str, *, actor: str, base: str) -> Response:
    form = await checked_form(request, max_files=1, max_part_size=firm_service.MAX_LOGO_BYTES + 1024)
    upload = form.get("logo")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect(request, base, flash="Not saved: logo: choose an image file")
    data = await upload.read(firm_service.MAX_LOGO_BYTES + 1)
    try:
        with session.begin_nested():
            firm_service.set_logo(session, firm_id=firm_id, store=_store(request), data=data, actor=actor)
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Not found", "message": str(exc)}, status=404)
    except Invalid as exc:
        return redirect(request, base, flash=f"Not saved: {exc}")
    forget_brand(request, firm_id)
    return redirect(request, base, flash="Logo saved")
