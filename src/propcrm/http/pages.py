"""What every page of the web application shares: templates, the logged-in user, roles, CSRF, flashes, error pages.

Part of the HTTP kernel (:mod:`propcrm.http`): the pages in :mod:`propcrm.web` and the features build on it;
it imports neither of them.

Pages are rendered on the server (Jinja2, autoescaped) and work without JavaScript; scripts add live
updates (server-sent events, ``live.py``) and charts (Chart.js, installed by ``make`` from npm into
``static/vendor``). A page route declares who may see it::

    @router.get("/office/accounts")
    def accounts(request: Request, user: Annotated[Principal, Depends(page_roles(*STAFF))], session: Db): ...

and every form posts back with a CSRF token (``{{ csrf_field() }}`` in the template, ``Depends(csrf)``
on the route).

- not logged in: a page redirects to ``/login?next=…`` (a POST answers 401);
- logged in with a role that may not: 403 page, and no link to it in the navigation;
- data of another firm (or, for a trader, another trader): 404, exactly like data that does not exist.

The session is the API's (``propcrm_session`` cookie, ``HttpOnly``, ``SameSite=Lax``). The CSRF
token of a session is HMAC-SHA256(session token, "csrf"): unforgeable without the cookie, which
scripts cannot read, and it needs no storage. Forms of a logged-out visitor (the login form) use a
double-submit token in a ``SameSite=Strict`` cookie. Writes also refuse a foreign ``Origin``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup, escape

from ..roles import ADMIN, CRM, FINANCE, KYC, LEADERBOARD, MANAGERS, OPERATOR, RISK, STAFF, SUPPORT_DESK, TRADER
from .auth import COOKIE_NAME, PASSWORD_CHANGE_PATHS, Db, reading_session, same_origin, secure_cookie
from ..services import users as user_service
from ..services.users import Principal

HERE = Path(__file__).parent.parent / "web"  # templates and static files live with the pages
STATIC = HERE / "static"
VENDOR = STATIC / "vendor"
FLASH_COOKIE = "propcrm_flash"
LOGIN_CSRF_COOKIE = "propcrm_login_csrf"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")

templates = Jinja2Templates(directory=str(HERE / "templates"))


# --------------------------------------------------------------------------------------------------
# navigation: what each role sees (the routes check the same roles; the menu only mirrors them)

NAV: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Dashboard", "/office/dashboard", MANAGERS),
    ("Accounts", "/office/accounts", STAFF),
    ("Traders", "/office/traders", CRM),
    ("Support inbox", "/office/support", SUPPORT_DESK),
    ("KYC review", "/office/kyc", KYC),
    ("Leads", "/office/leads", SUPPORT_DESK),  # issue 16
    ("Tasks", "/office/tasks", STAFF),  # issue 16
    ("Decisions", "/office/decisions", STAFF),
    ("Cases", "/office/cases", RISK),
    ("Alerts", "/office/alerts", RISK),  # issue 16: near-breach alerts
    ("Payouts", "/office/payouts", MANAGERS),
    ("Scalings", "/office/scalings", MANAGERS),
    ("Products", "/office/products", FINANCE),  # issue 16: and discount codes
    ("Rule packs", "/office/packs", RISK),
    ("Halts", "/office/halts", RISK),  # issue 19: the kill switch
    ("Audit log", "/office/audit", RISK),
    ("Calendar", "/office/calendar", STAFF),  # issue 20
    ("Platforms", "/office/platforms", RISK),  # issue 20
    ("Leaderboard", "/office/leaderboard", LEADERBOARD),  # issue 17
    ("Users", "/office/users", ADMIN),
    ("API keys", "/office/api-keys", ADMIN),
    ("Firm settings", "/office/firm", ADMIN),  # issue 16: tenants
    ("Firms", "/operator/firms", OPERATOR),
    ("My accounts", "/portal", TRADER),
    ("Payouts", "/portal/payouts", TRADER),
    ("Certificates", "/portal/certificates", TRADER),
    ("Leaderboard", "/portal/leaderboard", TRADER),
    ("Messages", "/portal/messages", TRADER),
    ("Profile & KYC", "/portal/profile", TRADER),
)


def wants_html(path: str) -> bool:
    """Errors on these paths are pages, not JSON (everything outside the API and the operations routes)."""
    return not (path.startswith("/api/") or path in ("/healthz", "/metrics") or path.startswith("/static/"))


def nav_for(role: str) -> list[tuple[str, str]]:
    return [(label, href) for label, href, roles in NAV if role in roles]


def home_of(role: str) -> str:
    return {"trader": "/portal", "operator": "/operator/firms"}.get(role, "/office/accounts")


# --------------------------------------------------------------------------------------------------
# who is asking


class LoginRequired(Exception):
    """Raised by page dependencies when no live session cookie came with the request."""


class PasswordChangeRequired(Exception):
    """Raised by page dependencies while the user's password is a one-time one: every page but the
    password change (and logout) redirects there."""


class PageForbidden(Exception):
    def __init__(self, role: str, allowed: tuple[str, ...]):
        super().__init__(f"a {role} user may not open this page (allowed: {', '.join(allowed)})")


def web_user(request: Request, session: Db) -> Principal:
    """The user of the session cookie (a bearer header is not a browser session and is ignored here)."""
    token = request.cookies.get(COOKIE_NAME)
    principal = user_service.resolve_token(session, token=token) if token else None
    if principal is None:
        raise LoginRequired()
    request.state.token = token
    request.state.principal = principal
    if principal.must_change_password and request.url.path not in PASSWORD_CHANGE_PATHS:
        raise PasswordChangeRequired()
    return principal


WebUser = Annotated[Principal, Depends(web_user)]


def web_user_reading(request: Request,
                     session: Annotated[Any, Depends(reading_session, scope="function")]) -> Principal:
    """:func:`web_user` resolved in a read-only unit of work, for a form that must not hold a write
    transaction while it works (checking a password with argon2); the route opens its own."""
    return web_user(request, session)


WebUserReading = Annotated[Principal, Depends(web_user_reading)]


def page_roles(*roles: str):
    """A dependency that lets only users with one of ``roles`` open the page (403 page for the others)."""
    allowed = tuple(roles)

    def check(user: WebUser) -> Principal:
        if user.role not in allowed:
            raise PageForbidden(user.role, allowed)
        return user

    check.__name__ = f"page_{'_'.join(allowed)}"
    return check


def Role(*roles: str):  # noqa: N802 - reads as a type in route signatures
    return Annotated[Principal, Depends(page_roles(*roles))]


# --------------------------------------------------------------------------------------------------
# CSRF


def csrf_token(request: Request) -> str:
    token = getattr(request.state, "token", None) or request.cookies.get(COOKIE_NAME)
    if token:
        return hmac.new(token.encode(), b"propcrm-csrf", hashlib.sha256).hexdigest()
    return request.cookies.get(LOGIN_CSRF_COOKIE) or getattr(request.state, "login_csrf", "")


async def checked_form(request: Request, *, max_files: int = 0, max_part_size: int = 1024 * 1024,
                       max_fields: int = 200) -> Any:
    """A form post (multipart with up to ``max_files`` files) whose origin and CSRF token are checked."""
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    form = await request.form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
    sent = form.get("csrf")
    expected = csrf_token(request)
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(status_code=403, detail="the form has expired or did not come from this site; "
                                                    "reload the page and try again")
    return form


async def csrf(request: Request) -> dict[str, str]:
    """Checks a form post's CSRF token and origin; returns the form's fields (single values, text)."""
    form = await checked_form(request)
    return {key: value for key, value in form.items() if isinstance(value, str) and key != "csrf"}


Form = Annotated[dict[str, str], Depends(csrf)]


def same_site_navigation(request: Request) -> None:
    """For GET pages that cost real work (a what-if back-test, verifying the audit chain): refuse a
    navigation another site started. ``SameSite=Lax`` still sends the session cookie on a cross-site
    top-level GET; browsers say where a request came from in ``Sec-Fetch-Site``."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(status_code=403, detail="open this page from propcrm itself, not from a link on another site")


SameSiteOnly = Depends(same_site_navigation)


def new_login_csrf(request: Request) -> str:
    value = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    request.state.login_csrf = value
    return value


# --------------------------------------------------------------------------------------------------
# rendering


def render(request: Request, name: str, context: dict[str, Any] | None = None, *, status: int = 200) -> HTMLResponse:
    """A page with the layout's context: user, navigation, CSRF token, one-shot flash message."""
    user: Principal | None = getattr(request.state, "principal", None)
    flash = request.cookies.get(FLASH_COOKIE)
    ctx = {
        "user": user,
        "nav": nav_for(user.role) if user else [],
        "path": request.url.path,
        "csrf": csrf_token(request),
        "flash": unquote(flash)[:500] if flash else None,
        "charts": (VENDOR / "chart.umd.js").exists(),
        "brand": brand_of(request),
        **(context or {}),
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


BRAND_TTL = 2.0  # seconds a firm's branding is reused by this process before it is read again


def brand_of(request: Request) -> Any:
    """The branding of the logged-in user's firm (services/firms.py), or the installation's default;
    read through a short per-process cache so that a page costs no extra query most of the time."""
    from ..services import firms

    user: Principal | None = getattr(request.state, "principal", None)
    if user is None:
        return firms.Branding(firm_id="", name="")
    cache = getattr(request.app.state, "brands", None)
    if cache is None:
        cache = request.app.state.brands = {}
    now = time.monotonic()
    hit = cache.get(user.firm_id)
    if hit is not None and now - hit[0] < BRAND_TTL:
        return hit[1]
    factory = getattr(request.app.state, "read_sessions", None) or request.app.state.sessions
    with factory() as session:
        brand = firms.branding(session, user.firm_id)
    cache[user.firm_id] = (now, brand)
    return brand


def forget_brand(request: Request, firm_id: str) -> None:
    """After a firm's settings change: this process shows the new branding on its next page."""
    getattr(request.app.state, "brands", {}).pop(firm_id, None)


def redirect(request: Request, to: str, *, flash: str | None = None) -> RedirectResponse:
    """Post/redirect/get: 303 to a local path, with an optional one-shot message for the next page."""
    response = RedirectResponse(safe_next(to), status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, quote(flash[:500]), max_age=60, path="/", httponly=True,
                            samesite="lax", secure=secure_cookie(request))
    return response


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site (never ``//host`` or ``https://…``): no open redirect after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def error_page(request: Request, status: int, message: str) -> Response:
    if status == 401 or isinstance(message, LoginRequired):
        response = RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        if request.cookies.get(COOKIE_NAME):  # a dead session's cookie: forget it
            response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=secure_cookie(request))
        return response
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check the form", 503: "Busy"}
    return render(request, "error.html", {"status": status, "title": titles.get(status, "Error"),
                                          "message": message}, status=status)


# --------------------------------------------------------------------------------------------------
# filters for templates


def fmt_money(value: Any, places: int = 2) -> str:
    """``Decimal``/text money with thousands separators, two places, never through float."""
    if value is None or value == "":
        return "—"
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        return "—"
    if number.adjusted() >= 26:  # only in a state stored before events were bounded: shown, not written out
        return f"{number:.6E}"
    return f"{number.quantize(Decimal(1).scaleb(-places)):,}"


def fmt_ts(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def fmt_amount(value: Any, currency: str | None = None, places: int = 2) -> str:
    """Money for reading: ``12,345.60 USD`` (``—`` when there is none)."""
    text = fmt_money(value, places)
    return f"{text} {currency}" if currency and text != "—" else text


def fmt_actor(value: Any) -> str:
    """Who did it, as a person reads it: the audit log's ``user:<id>:<email>`` is the e-mail, ``trader:<id>``
    the trader."""
    text = str(value or "")
    if text.startswith("user:"):
        parts = text.split(":", 2)
        if len(parts) == 3 and parts[2]:
            return parts[2]
    if text.startswith("trader:") and text[7:].isdigit():
        return "the trader"
    return text or "—"


ENTITY_PAGES = {"trader": "/office/traders/{}", "case": "/office/cases/{}", "payout": "/office/payouts/{}",
                "account": "/office/accounts?q={}"}


def entity_link(entity: str, entity_id: Any) -> str | None:
    """The page of an audited thing, when it has one (an account's entity id is its external id: a search)."""
    pattern = ENTITY_PAGES.get(entity or "")
    text = str(entity_id or "")
    if pattern is None or not text or len(text) > 64:
        return None
    if entity != "account" and not text.isdigit():
        return None
    return pattern.format(quote(text, safe=""))


LABELS = {"at_or_below": "at or below", "below": "below", "funded_and_active": "funded and active",
          "message_in": "from the trader", "message_out": "to the trader", "id_document": "identity document",
          "proof_of_address": "proof of address", "selfie": "selfie with document", "balance_eod": "closed balance at day end",
          "equity_intraday": "peak equity intraday", "balance_intraday": "peak closed balance intraday",
          "flat": "no open positions"}


def fmt_label(value: Any) -> str:
    """An enum as words (``at_or_below`` → ``at or below``)."""
    text = str(value if value is not None else "")
    return LABELS.get(text, text.replace("_", " "))


@pass_context
def csrf_input(ctx) -> Markup:
    """``{{ csrf_input() }}`` inside every ``<form method="post">``."""
    return Markup('<input type="hidden" name="csrf" value="{}">').format(escape(ctx.get("csrf", "")))


templates.env.filters["money"] = fmt_money
templates.env.filters["ts"] = fmt_ts
templates.env.filters["amount"] = fmt_amount
templates.env.filters["actor"] = fmt_actor
templates.env.filters["label"] = fmt_label
templates.env.globals["STAFF"] = STAFF
templates.env.globals["csrf_input"] = csrf_input
templates.env.globals["entity_link"] = entity_link
