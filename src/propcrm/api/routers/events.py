"""``POST /api/v1/events``: signed event batches from trading platforms.

The router only reads the raw body (bounded), checks the signature and hands the bytes to
:func:`propcrm.services.ingest.ingest`; every answer is JSON and no input produces a 500.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ...services.apikeys import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, AuthError, verify_signature
from ...services.ingest import IngestReport, PreparedBatch, ingest, prepare_for_bus, publish_prepared

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
UTC = dt.timezone.utc

router = APIRouter(tags=["ingestion"])


class LineResult(BaseModel):
    line: int = Field(description="NDJSON line number, or array index + 1")
    status: Literal["accepted", "duplicate", "rejected"]
    id: str | None = Field(None, description="the event id, when the line could be read")
    reason: str | None = Field(None, description="why a line was rejected: the field and the problem, or the unknown account")
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


@router.post(
    "/events",
    summary="Ingest a batch of platform events",
    description=(
        "Stores each event once (idempotent on source + event id) and answers per line: accepted, "
        "duplicate, or rejected with the reason. Rejected lines are quarantined, not lost. " + _SIGNING
    ),
    response_model=None,
    responses={
        200: {"model": IngestResult, "description": "per-line outcome of the batch"},
        400: {"model": ErrorBody, "description": "unreadable request (e.g. a bad Content-Length)"},
        401: {"model": ErrorBody, "description": "missing or bad key, timestamp or signature"},
        413: {"model": ErrorBody, "description": "body larger than 32 MiB"},
        503: {"model": ErrorBody, "description": "storage or event bus busy or unavailable; the request may be retried as is"},
    },
    openapi_extra={"parameters": _HEADERS, "requestBody": _BODY},
)
async def post_events(request: Request) -> Response:
    headers = {name: request.headers.get(name) for name in (KEY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    missing = [name for name, value in headers.items() if not value]
    if missing:
        return _error(401, f"missing header{'s' if len(missing) > 1 else ''} {', '.join(missing)}. {_SIGNING}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            return _error(400, "malformed Content-Length header")
        if int(declared) > MAX_BODY_BYTES:
            return _error(413, f"body of {int(declared):,} bytes is over the limit of {MAX_BODY_BYTES:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"body is over the limit of {MAX_BODY_BYTES:,} bytes")
    started = time.perf_counter()
    response = await _answer(request, headers, bytes(body))
    metrics = request.app.state.metrics
    metrics.requests.labels(str(response.status_code)).inc()
    metrics.seconds.observe(time.perf_counter() - started)
    return response


async def _answer(request: Request, headers: dict, body: bytes) -> Response:
    if request.app.state.bus is not None:
        return await _publish_signed(request, headers, body)
    try:
        return await run_in_threadpool(
            _ingest_signed,
            request.app.state.sessions,
            key_id=headers[KEY_HEADER],
            timestamp=headers[TIMESTAMP_HEADER],
            signature=headers[SIGNATURE_HEADER],
            body=body,
            content_type=request.headers.get("content-type"),
            metrics=request.app.state.metrics,
        )
    except OperationalError as exc:  # locked SQLite, lost connection, deadlock: retrying is safe (idempotent)
        log.warning("ingestion failed on storage: %s", str(exc).splitlines()[0])
        return _error(503, "storage busy or unavailable; retry the request (it is idempotent)")


def _ingest_signed(
    sessions: sessionmaker[Session], *, key_id: str, timestamp: str, signature: str, body: bytes,
    content_type: str | None, metrics=None,
) -> Response:
    now = dt.datetime.now(UTC)
    with sessions.begin() as session:
        try:
            key = verify_signature(session, key_id=key_id, timestamp=timestamp, body=body, signature=signature, now=now)
        except AuthError as exc:
            log.info("refused event batch for key %r: %s", key_id[:48], exc)
            return _error(401, str(exc))
        report = ingest(session, firm_id=key.firm_id, source=key.platform, body=body, content_type=content_type)
        key.last_used_at = now
    if metrics is not None:
        _count(metrics, report)
    return Response(report.to_json(), media_type="application/json")


def _count(metrics, report: IngestReport) -> None:
    for status, n in (("accepted", report.accepted), ("duplicate", report.duplicates), ("rejected", report.rejected)):
        if n:
            metrics.lines.labels(status).inc(n)


# ------------------------------------------------------------------------------ scale-out ingest node
async def _publish_signed(request: Request, headers: dict, body: bytes) -> Response:
    """Verify and check as always (quarantine included, committed first), then publish the lines to
    the partitioned JetStream stream; answer per line once JetStream has acknowledged them."""
    from ...adapters.bus.jetstream import BusError

    try:
        prepared = await run_in_threadpool(
            _prepare_signed, request.app.state.sessions, key_id=headers[KEY_HEADER],
            timestamp=headers[TIMESTAMP_HEADER], signature=headers[SIGNATURE_HEADER], body=body,
            content_type=request.headers.get("content-type"),
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
    sessions: sessionmaker[Session], *, key_id: str, timestamp: str, signature: str, body: bytes,
    content_type: str | None,
) -> Response | PreparedBatch:
    now = dt.datetime.now(UTC)
    with sessions.begin() as session:
        try:
            key = verify_signature(session, key_id=key_id, timestamp=timestamp, body=body, signature=signature, now=now)
        except AuthError as exc:
            log.info("refused event batch for key %r: %s", key_id[:48], exc)
            return _error(401, str(exc))
        prepared = prepare_for_bus(session, firm_id=key.firm_id, source=key.platform, body=body,
                                   content_type=content_type)
        key.last_used_at = now
    return prepared
