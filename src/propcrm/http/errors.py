"""Errors of the whole app, in one place of the HTTP kernel: every error is a JSON ``{"error": …}`` with a
4xx code — or, on the web application's paths, a page with the same status and message.

Bad input never becomes a 500: validation problems are 422, refusals of the services are 404 / 409 /
422, a value the database cannot hold is 422, a busy or unreachable database is 503 (retry). Error
messages never carry SQL parameters (where a secret could sit).
"""

from __future__ import annotations

import json
import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..domain.rulepack import RulePackError
from ..services.errors import Conflict, Invalid, NotFound
from .pages import LoginRequired, PageForbidden, PasswordChangeRequired, error_page, redirect, wants_html

log = logging.getLogger("propcrm.api")


def install(app: FastAPI) -> None:
    """Every error of the app as JSON ``{"error": …}`` — or, on the web application's paths, as a page."""
    for kind, handler in (
        (StarletteHTTPException, _http_error),
        (RequestValidationError, _validation_error),
        (NotFound, _status(404)),
        (Conflict, _status(409)),
        (Invalid, _status(422)),
        (RulePackError, _status(422)),
        (DataError, _data_error),
        (IntegrityError, _integrity_error),
        (OperationalError, _storage_busy),
        (Exception, _unexpected),
    ):
        app.add_exception_handler(kind, _page_or_json(handler))
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(PageForbidden, _page_forbidden)
    app.add_exception_handler(PasswordChangeRequired, _password_change_required)


def _page_or_json(handler):
    """The API's JSON error, or — for the web application's paths — the same status and message as a page."""

    async def answer(request: Request, exc: Exception):
        response = await handler(request, exc)
        if not wants_html(request.url.path):
            return response
        if isinstance(exc, RequestValidationError) and any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):
            return error_page(request, 404, "There is no such page: the address names something that cannot exist.")
        try:
            message = json.loads(response.body).get("error", "")
        except ValueError:
            message = ""
        return error_page(request, response.status_code, message)

    return answer


async def _login_required(request: Request, exc: Exception):
    if wants_html(request.url.path) and request.method in ("GET", "HEAD"):
        return error_page(request, 401, "")
    return _error(401, "log in first", {"WWW-Authenticate": "Bearer"})


async def _password_change_required(request: Request, exc: Exception):
    if wants_html(request.url.path):
        return redirect(request, "/account/password",
                        flash="Choose your own password first: the one you logged in with was a one-time one.")
    return _error(403, "password change required: set your own password with POST /api/v1/me/password first")


async def _page_forbidden(request: Request, exc: Exception):
    return error_page(request, 403, str(exc))


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI answers 400 for a body it cannot read (e.g. not UTF-8): bad input, which is 422 here, as documented
    return _error(422 if exc.status_code == 400 else exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for item in exc.errors()[:20]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append({"at": where, "problem": str(item.get("msg", "invalid"))})
    summary = "; ".join(f"{p['at']}: {p['problem']}" for p in problems[:5]) or "invalid request"
    return JSONResponse({"error": summary, "problems": problems}, status_code=422)


def _status(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, str(exc.args[0]) if exc.args else type(exc).__name__)

    return handler


async def _data_error(request: Request, exc: DataError) -> JSONResponse:
    log.info("refused a value the database cannot store on %s %s: %s", request.method, request.url.path,
             type(getattr(exc, "orig", exc)).__name__)
    return _error(422, "a value in the request cannot be stored (out of range, or a forbidden character such as NUL)")


async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
    log.info("integrity conflict on %s %s: %s", request.method, request.url.path,
             type(getattr(exc, "orig", exc)).__name__)
    return _error(409, "the change conflicts with data stored meanwhile; reload and retry")


async def _storage_busy(request: Request, exc: OperationalError) -> JSONResponse:
    log.warning("storage busy or unavailable on %s %s: %s", request.method, request.url.path,
                type(getattr(exc, "orig", exc)).__name__)
    return _error(503, "storage busy or unavailable; retry the request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # the traceback's frames, not the exception's text: SQL parameters (secrets, hashes) stay out of logs
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
    return _error(500, "internal error; it has been logged")
