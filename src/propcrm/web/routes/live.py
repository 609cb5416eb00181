"""``GET /live``: the server-sent event stream of live decisions and account rows (``web/live.py``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...roles import ALL_ROLES
from ...services import users as user_service

from ...http.pages import WebUser
from ..live import Scope, Subscriber, hub_for, parse_params, stream

router = APIRouter()


@router.get("/live")
async def live(request: Request, user: WebUser, decisions: str = "", accounts: str = "") -> StreamingResponse:
    """Any user of a firm; each event is filtered to what the user may see (firm, a trader's own). The
    operator sees no firm's business (roles.py)."""
    if user.role not in ALL_ROLES:
        raise HTTPException(status_code=403, detail=f"a {user.role} user has no live decisions")
    try:
        mode, ids = parse_params(decisions, accounts)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    sub = Subscriber(scope=Scope(firm_id=user.firm_id, trader_id=user.trader_scope), decisions=mode, accounts=ids)
    token, factory = request.state.token, getattr(request.app.state, "read_sessions", request.app.state.sessions)

    def session_alive() -> bool:
        with factory.begin() as session:
            principal = user_service.resolve_token(session, token=token)
        return principal is not None and principal.user_id == user.user_id and principal.role == user.role

    async def authorized() -> bool:
        return await run_in_threadpool(session_alive)

    return StreamingResponse(
        stream(hub_for(request.app), sub, request.is_disconnected, authorized=authorized),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
