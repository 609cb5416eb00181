"""Who is asking, and may they: login, logout, ``/me`` and the dependencies every staff route declares.

A request is authenticated by ``Authorization: Bearer <token>`` or, in a browser, by the
``propcrm_session`` cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS) — the same random
token either way, issued by ``POST /api/v1/login`` and stored only as a SHA-256. Routes declare what
they need::

    @router.get("/products")
    def products(user: Annotated[Principal, Depends(require_roles("admin", "finance"))], session: Db): ...

No credentials (or a dead token) is 401; a role that may not is 403; data of another firm — or, for a
trader, of another trader — is 404, exactly like data that does not exist.

``POST /api/v1/login`` takes JSON only (``Content-Type: application/json``, which a page of another site
cannot send without the browser asking this server first, and it does not agree) and refuses a request a
browser says comes from another site (``Origin``, ``Sec-Fetch-Site``): no login CSRF. The web login form
posts to ``/login`` with its own double-submit token. Logins are throttled per account and per address
(429 with ``Retry-After``) and the password is verified outside any write transaction
(:mod:`propcrm.services.logins`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..http.auth import (  # noqa: F401 - the route dependencies, re-exported for code that imported them from here
    COOKIE_NAME, MAX_LOGIN_BYTES, SECURE_COOKIES_ENV, UNSAFE_METHODS, CurrentUser, Db, actor_of, client_address,
    cross_site, current_user, current_user_reading, db_session, require_roles, secure_cookie,
)
from ..roles import ADMIN, ALL_ROLES, FINANCE, RISK, STAFF  # noqa: F401 - re-exported
from ..services import logins
from ..services import users as user_service
from ..services.users import SESSION_TTL, Principal

# --------------------------------------------------------------------------------------------------
# login, logout, me

router = APIRouter(tags=["auth"])


class UserOut(BaseModel):
    id: int
    email: str
    role: str
    firm_id: str
    trader_id: int | None = None


class LoginOut(BaseModel):
    token: str = Field(description="send as 'Authorization: Bearer <token>'; the same token is set as the session cookie")
    token_type: str = "bearer"
    expires_at: dt.datetime
    user: UserOut


class ErrorOut(BaseModel):
    error: str


def user_out(user: Principal) -> UserOut:
    return UserOut(id=user.user_id, email=user.email, role=user.role, firm_id=user.firm_id, trader_id=user.trader_id)


class TooManyLogins(BaseModel):
    error: str
    retry_after: int = Field(description="seconds until a login may be tried again (also the Retry-After header)")


async def _login_form(request: Request) -> dict[str, Any]:
    """The login fields from a JSON body (bounded), from this site only."""
    if cross_site(request):
        raise HTTPException(status_code=403, detail="cross-site login refused: log in from propcrm's own pages "
                                                    "or from a program that is not a browser page of another site")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(status_code=415, detail="send firm, email and password as JSON "
                                                    "(Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > MAX_LOGIN_BYTES):
        raise HTTPException(status_code=413, detail=f"a login request is at most {MAX_LOGIN_BYTES:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            raise HTTPException(status_code=413, detail=f"a login request is at most {MAX_LOGIN_BYTES:,} bytes")
    try:
        text = bytes(body).decode("utf-8")
        fields = json.loads(text) if text.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status_code=422, detail="send firm, email and password as a JSON object") from None
    if not isinstance(fields, dict):
        raise HTTPException(status_code=422, detail="send firm, email and password as a JSON object")
    missing = [name for name in ("firm", "email", "password") if not isinstance(fields.get(name), str)]
    if missing:
        raise HTTPException(status_code=422, detail=f"missing or not text: {', '.join(missing)}")
    return fields


_LOGIN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["firm", "email", "password"],
            "properties": {"firm": {"type": "string"}, "email": {"type": "string"}, "password": {"type": "string"},
                           "code": {"type": "string", "description": "with two-factor login on: the "
                                                                     "authenticator's code or a recovery code"}},
        }},
    },
}


def throttled_response(throttled: logins.Throttled) -> JSONResponse:
    what = "this account" if throttled.which == "account" else "your address"
    return JSONResponse({"error": f"too many failed logins for {what}; try again in {throttled.retry_after} s",
                         "retry_after": throttled.retry_after},
                        status_code=429, headers={"Retry-After": str(throttled.retry_after)})


@router.post(
    "/login",
    summary="Log in with a password: a bearer token and a session cookie",
    response_model=LoginOut,
    responses={401: {"model": ErrorOut, "description": "wrong firm, e-mail or password"},
               403: {"model": ErrorOut, "description": "a browser page of another site sent it"},
               413: {"model": ErrorOut}, 415: {"model": ErrorOut, "description": "not JSON"},
               422: {"model": ErrorOut},
               429: {"model": TooManyLogins, "description": "too many failed logins for the account or the address"}},
    openapi_extra={"requestBody": _LOGIN_BODY},
)
def login(request: Request, fields: Annotated[dict, Depends(_login_form)]):
    app = request.app
    result = logins.log_in(app.state.sessions, app.state.read_sessions, app.state.login_throttle,
                           firm_id=fields["firm"], email=fields["email"], password=fields["password"],
                           address=client_address(request))
    second_step = result.challenge is not None
    if second_step:  # two-factor on: the code travels in the same request ("code")
        code = fields.get("code")
        if not isinstance(code, str) or not code.strip():
            return JSONResponse({"error": "this account has two-factor login: send the authenticator's code "
                                          "(or a recovery code) as \"code\""}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        result = logins.complete_second_factor(app.state.sessions, app.state.read_sessions, app.state.login_throttle,
                                               ticket=result.challenge, code=code, address=client_address(request))
    if result.throttled is not None:
        return throttled_response(result.throttled)
    if result.refused is not None:  # the right password of a suspended firm's user
        return JSONResponse({"error": result.refused}, status_code=403)
    if not result.ok:
        return JSONResponse({"error": result.problem if second_step else "wrong firm, e-mail or password"},
                            status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    principal = Principal.of(result.user)
    answer = LoginOut(token=result.token, expires_at=result.expires_at, user=user_out(principal))
    response = JSONResponse(answer.model_dump(mode="json"))
    response.set_cookie(
        COOKIE_NAME,
        result.token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookie(request),
    )
    return response


@router.post("/logout", summary="End this session (the token stops working) and clear the cookie",
             responses={401: {"model": ErrorOut}})
def logout(request: Request, user: CurrentUser, session: Db) -> JSONResponse:
    user_service.revoke_token(session, token=request.state.token, actor=user.actor)
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=secure_cookie(request))
    return response


@router.get("/me", summary="The logged-in user", response_model=UserOut, responses={401: {"model": ErrorOut}})
def me(user: CurrentUser) -> UserOut:
    return user_out(user)


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=user_service.MAX_PASSWORD)
    new_password: str = Field(min_length=1, max_length=user_service.MAX_PASSWORD,
                              description="at least 12 characters, not easy to guess, without the e-mail address "
                                          "(docs/api.md)")


class SessionsEnded(BaseModel):
    ended: int = Field(description="sessions that were live and are ended now")


@router.post("/me/password", summary="Change your own password (the current one is needed); your other sessions end",
             response_model=SessionsEnded,
             responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut, "description": "wrong current password"},
                        409: {"model": ErrorOut}, 422: {"model": ErrorOut, "description": "the new password is refused"},
                        429: {"model": TooManyLogins}})
def change_password(request: Request, body: PasswordChangeIn,
                    user: Annotated[Principal, Depends(current_user_reading)]) -> JSONResponse:
    app = request.app
    verified, throttled = logins.check_current_password(
        app.state.read_sessions, app.state.login_throttle, user_id=user.user_id, firm_id=user.firm_id,
        email=user.email, password=body.current_password, address=client_address(request))
    if throttled is not None:
        return throttled_response(throttled)
    if verified is None:
        return JSONResponse({"error": "the current password is wrong"}, status_code=403)
    with app.state.sessions.begin() as session:
        ended = user_service.change_own_password(session, user_id=user.user_id, verified_hash=verified,
                                                 new_password=body.new_password, actor=user.actor,
                                                 keep_token=request.state.token)
    return JSONResponse({"ended": ended})


@router.post("/me/sessions/end", summary="End your other sessions (this one stays)", response_model=SessionsEnded,
             responses={401: {"model": ErrorOut}})
def end_my_other_sessions(request: Request, user: CurrentUser, session: Db) -> dict:
    ended = user_service.end_sessions(session, firm_id=user.firm_id, user_id=user.user_id, actor=user.actor,
                                      keep_token=request.state.token)
    return {"ended": ended}
