"""Who is asking, and may they: login, logout, ``/me`` and the dependencies every staff route declares.

A request is authenticated by ``Authorization: Bearer <token>`` or, in a browser, by the
``propcrm_session`` cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS) — the same random
token either way, issued by ``POST /api/v1/login`` and stored only as a SHA-256. Routes declare what
they need::

    @router.get("/products")
    def products(user: Annotated[Principal, Depends(require_roles("admin", "finance"))], session: Db): ...

No credentials (or a dead token) is 401; a role that may not is 403; data of another firm — or, for a
trader, of another trader — is 404, exactly like data that does not exist.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from ..services import users as user_service
from ..services.users import ROLES, SESSION_TTL, AuthenticationFailed, Principal

COOKIE_NAME = "propcrm_session"
SECURE_COOKIES_ENV = "PROPCRM_SECURE_COOKIES"  # "1": mark the cookie Secure even when TLS ends at a proxy
MAX_LOGIN_BYTES = 64 * 1024
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

ALL_ROLES = ROLES
STAFF = ("admin", "risk", "finance", "support")
RISK = ("admin", "risk")
FINANCE = ("admin", "finance")
ADMIN = ("admin",)


# --------------------------------------------------------------------------------------------------
# dependencies


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, rolled back on any error.

    Reads (GET, HEAD) take a read-only unit of work: on SQLite it begins deferred, so a page load never
    queues behind the evaluation worker's write transaction (WAL readers see the last commit).
    """
    factory = request.app.state.sessions
    if request.method in ("GET", "HEAD"):
        factory = getattr(request.app.state, "read_sessions", factory)
    with factory.begin() as session:
        yield session


Db = Annotated[Session, Depends(db_session, scope="function")]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def _presented_token(request: Request) -> tuple[str | None, str | None]:
    """``(token, how)``: from the Authorization header (``bearer``) or the session cookie (``cookie``)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip(), "bearer"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None, None


def _same_origin(request: Request) -> bool:
    """For cookie-authenticated writes: an ``Origin`` (or ``Referer``), when sent, must be this host.

    ``SameSite=Lax`` already keeps the cookie off cross-site POSTs in current browsers; this is the
    second lock on the door.
    """
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser, or a browser that says nothing: SameSite decides
    if origin == "null":
        return False  # sandboxed or privacy-masked origin: refuse rather than guess
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


# declared for OpenAPI (the "Authorize" button of /docs); the header and cookie are read by current_user
_BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="the token from POST /api/v1/login")
_COOKIE = APIKeyCookie(name=COOKIE_NAME, auto_error=False, scheme_name="session_cookie",
                       description="set by POST /api/v1/login (HttpOnly, SameSite=Lax)")


def current_user(
    request: Request,
    session: Db,
    _bearer: Annotated[Any, Security(_BEARER)] = None,
    _cookie: Annotated[Any, Security(_COOKIE)] = None,
) -> Principal:
    """The logged-in user of this request, or 401."""
    token, how = _presented_token(request)
    if token is None:
        raise _unauthorized("log in first: POST /api/v1/login, then send the token as 'Authorization: Bearer …' "
                            "or the session cookie")
    principal = user_service.resolve_token(session, token=token)
    if principal is None:
        raise _unauthorized("the session has expired or was ended; log in again")
    if how == "cookie" and request.method in UNSAFE_METHODS and not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site request refused")
    request.state.token = token
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require_roles(*roles: str):
    """A dependency that lets only users with one of ``roles`` through (403 for the others)."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    allowed = tuple(roles)

    def check(user: CurrentUser) -> Principal:
        if user.role not in allowed:
            raise HTTPException(status_code=403, detail=f"a {user.role} user may not do this "
                                                        f"(allowed: {', '.join(allowed)})")
        return user

    check.__name__ = f"require_{'_'.join(allowed)}"
    return check


def actor_of(user: Principal) -> str:
    return user.actor


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


async def _login_form(request: Request) -> dict[str, Any]:
    """The login fields from a JSON or an url-encoded form body (bounded); ``{}`` when unreadable."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > MAX_LOGIN_BYTES):
        raise HTTPException(status_code=413, detail=f"a login request is at most {MAX_LOGIN_BYTES:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            raise HTTPException(status_code=413, detail=f"a login request is at most {MAX_LOGIN_BYTES:,} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = bytes(body).decode("utf-8")
        if kind == "application/x-www-form-urlencoded":
            fields = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True, max_num_fields=20).items()}
        else:
            fields = json.loads(text) if text.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status_code=422, detail="send firm, email and password as JSON or as a form") from None
    if not isinstance(fields, dict):
        raise HTTPException(status_code=422, detail="send firm, email and password as JSON or as a form")
    missing = [name for name in ("firm", "email", "password") if not isinstance(fields.get(name), str)]
    if missing:
        raise HTTPException(status_code=422, detail=f"missing or not text: {', '.join(missing)}")
    return fields


_LOGIN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["firm", "email", "password"],
            "properties": {"firm": {"type": "string"}, "email": {"type": "string"}, "password": {"type": "string"}},
        }},
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["firm", "email", "password"],
            "properties": {"firm": {"type": "string"}, "email": {"type": "string"}, "password": {"type": "string"}},
        }},
    },
}


@router.post(
    "/login",
    summary="Log in with a password: a bearer token and a session cookie",
    response_model=LoginOut,
    responses={401: {"model": ErrorOut, "description": "wrong firm, e-mail or password"},
               413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    openapi_extra={"requestBody": _LOGIN_BODY},
)
def login(request: Request, session: Db, fields: Annotated[dict, Depends(_login_form)]):
    try:
        user = user_service.authenticate(session, firm_id=fields["firm"], email=fields["email"],
                                         password=fields["password"])
    except AuthenticationFailed as exc:
        # answered, not raised: the failed attempt's audit entry must be committed
        return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    token, expires_at = user_service.issue_token(session, user=user)
    principal = Principal.of(user)
    answer = LoginOut(token=token, expires_at=expires_at, user=user_out(principal))
    response = JSONResponse(answer.model_dump(mode="json"))
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or os.environ.get(SECURE_COOKIES_ENV, "").lower() in ("1", "true", "yes")


@router.post("/logout", summary="End this session (the token stops working) and clear the cookie",
             responses={401: {"model": ErrorOut}})
def logout(request: Request, user: CurrentUser, session: Db) -> JSONResponse:
    user_service.revoke_token(session, token=request.state.token, actor=user.actor)
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=_secure(request))
    return response


@router.get("/me", summary="The logged-in user", response_model=UserOut, responses={401: {"model": ErrorOut}})
def me(user: CurrentUser) -> UserOut:
    return user_out(user)
