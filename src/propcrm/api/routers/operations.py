"""``/healthz`` and ``/metrics``: see :mod:`propcrm.api.operations` for who may read what."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

router = APIRouter(include_in_schema=False)

_LOOPBACK = {"127.0.0.1", "::1"}  # peer addresses; a host name is never one


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    state = request.app.state

    def database_ok() -> bool:
        try:
            with state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - unreachable is "unhealthy"
            return False

    db = await run_in_threadpool(database_ok)
    body: dict = {"role": "api", "database": db}
    ok = db
    if state.bus is not None:
        connected = bool(state.nats is not None and state.nats.is_connected)
        body["nats_connected"] = connected
        body["mode"] = "bus"
        ok = ok and connected
    else:
        body["mode"] = "embedded"
    return JSONResponse({"ok": ok, **body}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "metrics need Authorization: Bearer <PROPCRM_METRICS_TOKEN>"},
                                status_code=401)
    elif request.client is None or request.client.host not in _LOOPBACK:
        return JSONResponse({"error": "metrics are served to loopback clients only unless "
                                      "PROPCRM_METRICS_TOKEN is set"}, status_code=403)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
