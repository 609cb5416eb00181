"""The HTTP kernel's authentication: who is asking, and may they — the dependencies every route declares.

A request is authenticated by ``Authorization: Bearer <token>`` or, in a browser, by the
``propcrm_session`` cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS) — the same random
token either way, issued by ``POST /api/v1/login`` (:mod:`propcrm.api.auth`) and stored only as a SHA-256.
Routes declare what they need::

    @router.get("/products")
    def products(user: Annotated[Principal, Depends(require_roles("admin", "finance"))], session: Db): ...

No credentials (or a dead token) is 401; a role that may not is 403; data of another firm — or, for a
trader, of another trader — is 404, exactly like data that does not exist.

This module is part of :mod:`propcrm.http`, which the API and the pages build on; it imports services and
adapters, never :mod:`propcrm.api` or :mod:`propcrm.web`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer
from sqlalchemy.orm import Session

from ..adapters.settings import SECURE_COOKIES_ENV
from ..roles import ROLES
from ..services import users as user_service
from ..services.users import Principal

COOKIE_NAME = "propcrm_session"
MAX_LOGIN_BYTES = 64 * 1024
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# all a user with a one-time password may use until they set their own (users.must_change_password)
PASSWORD_CHANGE_PATHS = frozenset({"/api/v1/me", "/api/v1/me/password", "/api/v1/logout", "/account/password",
                                   "/logout", "/brand.css", "/brand/logo"})


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


def unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def presented_token(request: Request) -> tuple[str | None, str | None]:
    """``(token, how)``: from the Authorization header (``bearer``) or the session cookie (``cookie``)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip(), "bearer"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None, None


def client_address(request: Request) -> str:
    """The client's address as this server sees it (uvicorn applies trusted proxies' headers)."""
    return request.client.host if request.client is not None else "unknown"


def cross_site(request: Request) -> bool:
    """A browser says this request was started by a page of another site (``Sec-Fetch-Site``), or its
    ``Origin``/``Referer`` names another host."""
    fetched_from = request.headers.get("sec-fetch-site")
    if fetched_from is not None and fetched_from.lower() not in ("same-origin", "none"):
        return True
    return not same_origin(request)


def same_origin(request: Request) -> bool:
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
    return _principal(request, session)


def reading_session(request: Request) -> Iterator[Session]:
    """A read-only unit of work (on SQLite it never takes the write lock), for routes that must not hold
    a write transaction while they work (verifying a password with argon2)."""
    with request.app.state.read_sessions() as session:
        yield session


def current_user_reading(
    request: Request,
    session: Annotated[Session, Depends(reading_session, scope="function")],
    _bearer: Annotated[Any, Security(_BEARER)] = None,
    _cookie: Annotated[Any, Security(_COOKIE)] = None,
) -> Principal:
    """:func:`current_user`, resolved in a read-only unit of work; the route opens its own write one."""
    return _principal(request, session)


def _principal(request: Request, session: Session) -> Principal:
    token, how = presented_token(request)
    if token is None:
        raise unauthorized("log in first: POST /api/v1/login, then send the token as 'Authorization: Bearer …' "
                            "or the session cookie")
    principal = user_service.resolve_token(session, token=token)
    if principal is None:
        refused = user_service.token_refusal(session, token=token)
        if refused is not None:  # a suspended firm: said, not disguised as an expired session
            raise HTTPException(status_code=403, detail=refused)
        raise unauthorized("the session has expired or was ended; log in again")
    if how == "cookie" and request.method in UNSAFE_METHODS and not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site request refused")
    if principal.must_change_password and request.url.path not in PASSWORD_CHANGE_PATHS:
        raise HTTPException(status_code=403, detail="password change required: your password is a one-time one; "
                                                    "set your own with POST /api/v1/me/password first")
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


def secure_cookie(request: Request) -> bool:
    """Mark the cookie ``Secure``: over HTTPS, or always when the settings say TLS ends at a proxy."""
    return request.url.scheme == "https" or request.app.state.settings.secure_cookies
