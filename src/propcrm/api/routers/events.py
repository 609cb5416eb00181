"""``POST /api/v1/events``: signed event batches from trading platforms.

The router checks the key, the timestamp and the signature's form before it reads a byte of the body
(an unknown caller cannot make it take in 32 MiB), then reads the body (bounded), checks the signature
over it and hands the bytes to :func:`propcrm.services.ingest.ingest` with the key's platform as the
events' source and scope (a platform key writes only to its platform's accounts; a provider key is for
its webhook only; a reserved source is refused). Every answer is JSON and no input produces a 500.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ...adapters.db import models as m
from ...services.apikeys import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    check_body,
    check_key,
    provider_of,
    reserved_source_refusal,
)
from ...services.ingest import IngestReport, PreparedBatch, ingest, prepare_for_bus, publish_prepared
from ...services import users as user_service
from ...http.signed import read_body, signature_headers

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
UTC = dt.timezone.utc

router = APIRouter(tags=["ingestion"])


class LineResult(BaseModel):
    line: int = Field(description="NDJSON line number, or array index + 1")
    status: Literal["accepted", "duplicate", "rejected"]
    id: str | None = Field(None, description="the event id, when the line could be read")
    reason: str | None = Field(None, description="why a line was rejected: the field and the problem (a bound of "
                               "money, prices or lots, a time ahead of the server's clock), an unknown account, or "
                               "an account on another platform than the key's")
    quarantine_id: int | None = Field(None, description="where a rejected line is kept for inspection and re-submission")


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    lines: list[LineResult]


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong with the request")


_SIGNING = (
    f"Sign every request with the platform's API key: `{KEY_HEADER}` is the key id, `{TIMESTAMP_HEADER}` "
    f"the unix time in seconds (refused when more than 5 minutes off), `{SIGNATURE_HEADER}` is "
    "`sha256=` + hex HMAC-SHA256(secret, timestamp + \".\" + body)."
)
_HEADERS = [
    {"name": KEY_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
     "description": "API key id (`propcrm keys create`)"},
    {"name": TIMESTAMP_HEADER, "in": "header", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
     "description": "unix time of signing, seconds"},
    {"name": SIGNATURE_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
     "description": "`sha256=<hex HMAC-SHA256 of timestamp + \".\" + body>`"},
]
_BODY = {
    "required": True,
    "description": "Events of GUIDE §2: NDJSON (one JSON object a line) or a JSON array, at most 32 MiB.",
    "content": {
        "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
    },
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@dataclass(frozen=True)
class _Caller:
    """The key a request claims, checked but for the body (never logged: it holds the secret)."""

    key_id: str
    firm_id: str
    platform: str
    secret: str

    def __repr__(self) -> str:
        return f"_Caller({self.key_id!r}, firm {self.firm_id!r}, platform {self.platform!r})"


@router.post(
    "/events",
    summary="Ingest a batch of platform events",
    description=(
        "Stores each event once (idempotent on source + event id) and answers per line: accepted, "
        "duplicate, or rejected with the reason. Rejected lines are quarantined, not lost. The key is "
        "checked before the body is read; a platform's key writes only to the accounts on its platform. "
        + _SIGNING
    ),
    response_model=None,
    responses={
        200: {"model": IngestResult, "description": "per-line outcome of the batch"},
        400: {"model": ErrorBody, "description": "unreadable request (e.g. a bad Content-Length)"},
        401: {"model": ErrorBody, "description": "missing or bad key, timestamp or signature"},
        403: {"model": ErrorBody, "description": "a provider's key (for its webhook only), or a key whose platform "
                                                 "name is reserved for propcrm's own events"},
        413: {"model": ErrorBody, "description": "body larger than 32 MiB"},
        503: {"model": ErrorBody, "description": "storage or event bus busy or unavailable; the request may be retried as is"},
    },
    openapi_extra={"parameters": _HEADERS, "requestBody": _BODY},
)
async def post_events(request: Request) -> Response:
    response, answered = await _post_events(request)
    metrics = request.app.state.metrics
    metrics.requests.labels(str(response.status_code)).inc()
    if answered is not None:
        metrics.seconds.observe(time.perf_counter() - answered)
    return response


async def _post_events(request: Request) -> tuple[Response, float | None]:
    """The answer, and when the checked body started being answered (for the latency metric)."""
    headers, missing = signature_headers(request)
    if missing:
        return _error(401, f"missing header{'s' if len(missing) > 1 else ''} {', '.join(missing)}. {_SIGNING}"), None
    try:  # who is calling, before a byte of the body is read
        caller = await run_in_threadpool(_caller, request.app.state.read_sessions, headers)
    except OperationalError as exc:
        log.warning("ingestion failed on storage: %s", str(exc).splitlines()[0])
        return _error(503, "storage busy or unavailable; retry the request (it is idempotent)"), None
    if isinstance(caller, Response):
        return caller, None
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            return _error(400, "malformed Content-Length header"), None
        if int(declared) > MAX_BODY_BYTES:
            return _error(413, f"body of {int(declared):,} bytes is over the limit of {MAX_BODY_BYTES:,} bytes"), None
    body = await read_body(request, MAX_BODY_BYTES)
    if body is None:
        return _error(413, f"body is over the limit of {MAX_BODY_BYTES:,} bytes"), None
    try:
        check_body(caller.secret, key_id=caller.key_id, timestamp=headers[TIMESTAMP_HEADER], body=body,
                   signature=headers[SIGNATURE_HEADER])
    except AuthError as exc:
        log.info("refused event batch for key %r: %s", caller.key_id, exc)
        return _error(401, str(exc)), None
    started = time.perf_counter()
    return await _answer(request, caller, body), started


def _caller(sessions: sessionmaker[Session], headers: dict) -> _Caller | Response:
    """The key, the timestamp and the signature's form (a read: it waits for no writer), and what the
    key may do here: a provider's key is for its webhook, a reserved name is propcrm's own."""
    key_id = headers[KEY_HEADER]
    with sessions() as session:
        try:
            key = check_key(session, key_id=key_id, timestamp=headers[TIMESTAMP_HEADER],
                            signature=headers[SIGNATURE_HEADER], now=dt.datetime.now(UTC))
        except AuthError as exc:
            log.info("refused event batch for key %r: %s", key_id[:48], exc)
            return _error(401, str(exc))
        caller = _Caller(key.id, key.firm_id, key.platform, key.secret)
        suspended = user_service.suspension(session, key.firm_id)
    if suspended is not None:  # nothing is read further, nothing stored
        return _error(403, f"API key {caller.key_id} cannot post events: {suspended}")
    provider = provider_of(caller.platform)
    if provider is not None:
        return _error(403, f"API key {caller.key_id} is a {provider} provider's key ({caller.platform!r}): it may "
                           f"only call POST /api/v1/webhooks/{provider}, not post events")
    refusal = reserved_source_refusal(caller.platform)
    if refusal is not None:
        return _error(403, f"API key {caller.key_id} cannot post events: {refusal}")
    return caller


async def _answer(request: Request, caller: _Caller, body: bytes) -> Response:
    if request.app.state.bus is not None:
        return await _publish_signed(request, caller, body)
    try:
        return await run_in_threadpool(
            _ingest_signed,
            request.app.state.sessions,
            caller=caller,
            body=body,
            content_type=request.headers.get("content-type"),
            metrics=request.app.state.metrics,
            max_ahead=request.app.state.max_ahead,
        )
    except OperationalError as exc:  # locked SQLite, lost connection, deadlock: retrying is safe (idempotent)
        log.warning("ingestion failed on storage: %s", str(exc).splitlines()[0])
        return _error(503, "storage busy or unavailable; retry the request (it is idempotent)")


def _still_active(session: Session, caller: _Caller) -> m.ApiKey | Response:
    """The key again, in the write transaction: one revoked while its request was on the way is refused."""
    key = session.get(m.ApiKey, caller.key_id)
    if key is None or not key.active:
        return _error(401, f"API key {caller.key_id} is inactive")
    return key


def _ingest_signed(
    sessions: sessionmaker[Session], *, caller: _Caller, body: bytes, content_type: str | None, metrics=None,
    max_ahead: dt.timedelta | None = None,
) -> Response:
    now = dt.datetime.now(UTC)
    with sessions.begin() as session:
        key = _still_active(session, caller)
        if isinstance(key, Response):
            return key
        report = ingest(session, firm_id=key.firm_id, source=key.platform, body=body, content_type=content_type,
                        max_ahead=max_ahead, only_platform=key.platform)
        key.last_used_at = now
    if metrics is not None:
        _count(metrics, report)
    return Response(report.to_json(), media_type="application/json")


def _count(metrics, report: IngestReport) -> None:
    for status, n in (("accepted", report.accepted), ("duplicate", report.duplicates), ("rejected", report.rejected)):
        if n:
            metrics.lines.labels(status).inc(n)


# ------------------------------------------------------------------------------ scale-out ingest node
async def _publish_signed(request: Request, caller: _Caller, body: bytes) -> Response:
    """Check as always (quarantine included, committed first), then publish the lines to the
    partitioned JetStream stream; answer per line once JetStream has acknowledged them."""
    from ...adapters.bus.jetstream import BusError

    try:
        prepared = await run_in_threadpool(
            _prepare_signed, request.app.state.sessions, caller=caller, body=body,
            content_type=request.headers.get("content-type"), max_ahead=request.app.state.max_ahead,
        )
    except OperationalError as exc:
        log.warning("ingestion failed on storage: %s", str(exc).splitlines()[0])
        return _error(503, "storage busy or unavailable; retry the request (it is idempotent)")
    if isinstance(prepared, Response):
        return prepared
    try:
        report = await publish_prepared(request.app.state.bus, prepared)
    except BusError as exc:
        log.warning("ingestion failed on the bus: %s", exc)
        return _error(503, "event bus busy or unavailable; retry the request as is (it is de-duplicated)")
    _count(request.app.state.metrics, report)
    return Response(report.to_json(), media_type="application/json")


def _prepare_signed(
    sessions: sessionmaker[Session], *, caller: _Caller, body: bytes, content_type: str | None,
    max_ahead: dt.timedelta | None = None,
) -> Response | PreparedBatch:
    now = dt.datetime.now(UTC)
    with sessions.begin() as session:
        key = _still_active(session, caller)
        if isinstance(key, Response):
            return key
        prepared = prepare_for_bus(session, firm_id=key.firm_id, source=key.platform, body=body,
                                   content_type=content_type, max_ahead=max_ahead, only_platform=key.platform)
        key.last_used_at = now
    return prepared
