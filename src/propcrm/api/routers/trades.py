"""The firm's trade history: every account's positions, opened and closed, with costs (the trade-history
projection, filled by the evaluation in both deployments) — as JSON pages and as one CSV export.

Who may: the staff roles (admin, risk, finance, support). A trader reads their own accounts' journals in
the portal; the firm-wide list is not theirs.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ...http.auth import Db, require_roles
from ...roles import STAFF
from ...services import trades as trade_history
from ...services.users import Principal
from ...web.csv_export import csv_response
from .accounts import ERRORS, MAX_ID

router = APIRouter(tags=["trades"], responses=ERRORS)
StaffUser = Annotated[Principal, Depends(require_roles(*STAFF))]
Status = Annotated[Literal["open", "closed"] | None, Query(description="open or closed trades only")]
OpenedFrom = Annotated[dt.datetime | None, Query(description="opened at or after (RFC 3339, with an offset)")]
OpenedBefore = Annotated[dt.datetime | None, Query(description="opened before (RFC 3339, with an offset)")]
AccountFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="one account's trades (its id)")]


class TradeOut(BaseModel):
    id: int
    account: str = Field(description="the account's platform id")
    position: str
    symbol: str | None = Field(None, description="null: closed, never seen opened (traded before propcrm)")
    side: str | None
    lots: str | None
    order_ts: dt.datetime | None = Field(None, description="when the platform received the order, if sent")
    open_ts: dt.datetime | None
    open_price: str | None
    closed_lots: str
    close_ts: dt.datetime | None = Field(None, description="the last close (partial closes add up)")
    close_price: str | None = Field(None, description="lot-weighted over the closes")
    profit: str
    commission: str
    swap: str
    net: str = Field(description="profit + commission + swap (costs signed)")
    closes: int
    held_s: int | None
    status: str


class TradePage(BaseModel):
    items: list[TradeOut]
    next_after: int | None = Field(None, description="pass as `after` for the next page; null: the last page")


def _aware(name: str, value: dt.datetime | None) -> dt.datetime | None:
    from ...services.errors import Invalid

    if value is not None and value.tzinfo is None:
        raise Invalid(f"`{name}`: a time with an offset (e.g. 2026-03-02T00:00:00Z)")
    return value


def _text(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (format(v, "f") if hasattr(v, "as_tuple") else v) for k, v in row.items()}


@router.get("/trades", response_model=TradePage, summary="The firm's trades, every account (keyset pages)")
def list_trades(user: StaffUser, session: Db, status: Status = None, opened_from: OpenedFrom = None,
                opened_before: OpenedBefore = None, account_id: AccountFilter = None,
                after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    rows = trade_history.firm_trades(session, firm_id=user.firm_id, status=status, account_id=account_id,
                                     opened_from=_aware("opened_from", opened_from),
                                     opened_before=_aware("opened_before", opened_before), after_id=after, limit=limit)
    return {"items": [_text(r) for r in rows], "next_after": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/trades.csv", summary="The firm's trades as CSV (every account; the same filters)",
            response_class=Response, responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def export_trades(request: Request, user: StaffUser, status: Status = None, opened_from: OpenedFrom = None,
                  opened_before: OpenedBefore = None, account_id: AccountFilter = None) -> Response:
    filters = {"status": status, "account_id": account_id, "opened_from": _aware("opened_from", opened_from),
               "opened_before": _aware("opened_before", opened_before)}
    return trade_csv(request, user.firm_id, filters)


def trade_csv(request: Request, firm_id: str, filters: dict[str, Any]) -> Response:
    """The export, streamed from a read-only unit of work (the back office's ``/office/trades.csv`` is the same)."""
    columns = trade_history.EXPORT_COLUMNS

    def produce(session):
        for row in trade_history.all_firm_trades(session, firm_id=firm_id, **filters):
            yield tuple(row[c] for c in columns)

    return csv_response(request, "trades", list(columns), produce)
