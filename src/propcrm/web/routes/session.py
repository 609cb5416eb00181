"""Log in, log out, and ``/`` (the home page of the user's role)."""

from __future__ import annotations

import datetime as dt
import hmac
import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from starlette.concurrency import run_in_threadpool

from ...http.auth import COOKIE_NAME, Db, cross_site, secure_cookie, client_address
from ...services import firms as firm_service
from ...services import logins, totp
from ...services import users as user_service
from ...services.users import SESSION_TTL, Principal
from ...http.pages import LOGIN_CSRF_COOKIE, Form, WebUser, home_of, redirect, render, safe_next

router = APIRouter()
CHALLENGE_COOKIE = "propcrm_login_challenge"  # the second step's ticket (path /login, SameSite=Strict)
FIRM_COOKIE = "propcrm_login_firm"  # the firm of the last login in this browser: the login form's firm and branding
FIRM_COOKIE_AGE = dt.timedelta(days=365)


@router.get("/")
def home(request: Request, session: Db) -> Response:
    token = request.cookies.get(COOKIE_NAME)
    principal = user_service.resolve_token(session, token=token) if token else None
    return RedirectResponse(home_of(principal.role) if principal else "/login", status_code=303)


def _login_page(request: Request, *, error: str | None = None, firm: str = "", email: str = "",
                next_path: str = "", status: int = 200) -> Response:
    value = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    request.state.login_csrf = value
    firm = firm.strip().lower()[:64]
    factory = getattr(request.app.state, "read_sessions", None) or request.app.state.sessions
    with factory() as session:  # the firm's product name, colour and logo (default for an unknown firm)
        brand = firm_service.login_branding(session, firm)
    # the login form's token is always the login cookie's: a dead session cookie must not replace it
    response = render(request, "login.html", {"error": error, "firm": firm, "email": email, "next": next_path,
                                              "csrf": value, "brand": brand, "login_firm": firm}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, value, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=secure_cookie(request))
    return response


@router.get("/login")
def login_page(request: Request, next: str = "", firm: str = "") -> Response:  # noqa: A002 - the query parameter
    """``/login?firm=<id>``: the firm's login page (its branding, the firm filled in); without it, the firm of
    this browser's last login."""
    firm = (firm if isinstance(firm, str) else "") or request.cookies.get(FIRM_COOKIE, "")
    return _login_page(request, next_path=safe_next(next, ""), firm=firm)


async def _login_form(request: Request) -> dict[str, str] | Response:
    """A login step's form fields, once the post is same-site and carries the login form's CSRF token;
    otherwise the answer to give (403: a cross-site post, or the login page again: an expired form)."""
    if cross_site(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    form = await request.form(max_files=0, max_fields=20)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(fields.get("csrf", ""), expected):
        return _login_page(request, error="The form expired; please log in again.", status=403)
    return fields


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await _login_form(request)
    if isinstance(fields, Response):
        return fields
    firm, email, password = fields.get("firm", "").strip(), fields.get("email", "").strip(), fields.get("password", "")
    next_path = safe_next(fields.get("next"), "")
    missing = [label for label, value in (("firm", firm), ("e-mail", email), ("password", password)) if not value]
    if missing:
        return _login_page(request, error=f"Enter your {', '.join(missing)}.", firm=firm, email=email,
                           next_path=next_path, status=422)
    app = request.app
    # argon2 and the database in a worker thread: the event loop keeps serving other requests
    result = await run_in_threadpool(logins.log_in, app.state.sessions, app.state.read_sessions,
                                     app.state.login_throttle, firm_id=firm, email=email, password=password,
                                     address=client_address(request))
    if result.throttled is not None:
        response = _login_page(request, error=f"Too many failed logins; try again in {result.throttled.retry_after} "
                                              "seconds.", firm=firm, email=email, next_path=next_path, status=429)
        response.headers["Retry-After"] = str(result.throttled.retry_after)
        return response
    if result.challenge is not None:  # two-factor on: the code is the second step (/login/code)
        response = _code_page(request, next_path=next_path)
        response.set_cookie(CHALLENGE_COOKIE, result.challenge, max_age=int(totp.CHALLENGE_TTL.total_seconds()),
                            path="/login", httponly=True, samesite="strict", secure=secure_cookie(request))
        return response
    if result.refused is not None:  # the right password of a suspended firm's user
        return _login_page(request, error=f"Not logged in: {result.refused}.", firm=firm, email=email,
                           next_path=next_path, status=403)
    if not result.ok:  # the failed attempt is counted (and audited when it says something new)
        return _login_page(request, error="Wrong firm, e-mail or password.", firm=firm, email=email,
                           next_path=next_path, status=401)
    return _logged_in(request, result, next_path)


def _logged_in(request: Request, result, next_path: str) -> Response:
    principal = Principal.of(result.user)
    response = RedirectResponse(next_path or home_of(principal.role), status_code=303)
    response.set_cookie(COOKIE_NAME, result.token, max_age=int(SESSION_TTL.total_seconds()), path="/", httponly=True,
                        samesite="lax", secure=secure_cookie(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    response.delete_cookie(CHALLENGE_COOKIE, path="/login")
    response.set_cookie(FIRM_COOKIE, principal.firm_id, max_age=int(FIRM_COOKIE_AGE.total_seconds()), path="/login",
                        httponly=True, samesite="lax", secure=secure_cookie(request))
    return response


def _code_page(request: Request, *, next_path: str = "", error: str | None = None, status: int = 200) -> Response:
    value = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    request.state.login_csrf = value
    response = render(request, "login_code.html", {"error": error, "next": next_path, "csrf": value}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, value, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=secure_cookie(request))
    return response


@router.post("/login/code")
async def login_code(request: Request) -> Response:
    """The second step of a login with two-factor on (services/totp.py): the ticket is the cookie the
    password step set; the code is the authenticator's or a recovery code."""
    fields = await _login_form(request)
    if isinstance(fields, Response):
        return fields
    next_path = safe_next(fields.get("next"), "")
    ticket = request.cookies.get(CHALLENGE_COOKIE, "")
    app = request.app
    result = await run_in_threadpool(logins.complete_second_factor, app.state.sessions, app.state.read_sessions,
                                     app.state.login_throttle, ticket=ticket, code=fields.get("code", ""),
                                     address=client_address(request))
    if result.throttled is not None:
        response = _code_page(request, next_path=next_path, status=429,
                              error=f"Too many failed logins; try again in {result.throttled.retry_after} seconds.")
        response.headers["Retry-After"] = str(result.throttled.retry_after)
        return response
    if result.ok:
        return _logged_in(request, result, next_path)
    if result.challenge is None:  # expired or used up: from the start
        response = _login_page(request, error=f"Not logged in: {result.problem}.", next_path=next_path, status=401)
        response.delete_cookie(CHALLENGE_COOKIE, path="/login")
        return response
    return _code_page(request, next_path=next_path, error="Wrong code; try the one your app shows now.", status=401)


@router.post("/logout")
def logout(request: Request, user: WebUser, session: Db, form: Form) -> Response:
    user_service.revoke_token(session, token=request.state.token, actor=user.actor)
    response = redirect(request, "/login", flash="You are logged out.")
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=secure_cookie(request))
    return response
