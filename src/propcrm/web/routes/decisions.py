"""Back office: the firm's decisions feed (breaches, pauses, warnings, passes…), newest first, live.

Who may: every staff role, as ``GET /api/v1/decisions``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...services.decisions import KINDS
from .. import queries_accounts as q
from ...http.pages import Role, render
from ...roles import STAFF
from .accounts import PAGE_SIZES, int_param, text_param

router = APIRouter()


@router.get("/office/decisions")
def decisions_page(request: Request, user: Role(*STAFF), session: Db) -> Response:
    params = request.query_params
    kind = params.get("kind") or None
    if kind not in (None, *KINDS):
        kind = None
    rules = q.rules_of_firm(session, firm_id=user.firm_id)
    rule = text_param(params.get("rule"), 64)
    limit = int_param(params.get("limit"), 50, 1, max(PAGE_SIZES))
    offset = int_param(params.get("offset"), 0, 0, 1_000_000_000)
    page = q.decisions_feed(session, firm_id=user.firm_id, kind=kind, rule=rule, limit=limit, offset=offset)
    state = {"kind": kind, "rule": rule, "limit": limit if limit != 50 else None}

    def link(**changes) -> str:
        merged = {**state, **changes}
        return "/office/decisions?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    return render(request, "decisions/feed.html", {
        "page": page, "kinds": KINDS, "rules": rules, "filters": state, "limit": limit, "page_sizes": PAGE_SIZES,
        "prev_href": link(offset=max(offset - limit, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + limit) if offset + limit < page.total else None,
        "first": offset + 1 if page.items else 0, "last": offset + len(page.items),
        "live": offset == 0,
    })
