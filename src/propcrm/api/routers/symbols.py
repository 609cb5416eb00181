"""The firm's symbol table (issue 15): contract size, tick size and value, profit currency per symbol.

Who may: risk and admin read it, replace it (PUT, JSON) and import into it (POST, JSON or CSV).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ...http.auth import Db, require_roles
from ...roles import RISK
from ...services import symbols as symbol_service
from ...services.users import Principal
from ..auth import ErrorOut
from .packs import bounded_body

RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]

router = APIRouter(responses={
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this"},
    413: {"model": ErrorOut, "description": "the body is too large"},
    422: {"model": ErrorOut, "description": "a bad table: the entry (or CSV line) and the field are named"},
})


class SymbolOut(BaseModel):
    symbol: str
    profit_currency: str
    contract_size: str | None = None
    tick_size: str | None = None
    tick_value: str | None = None
    digits: int | None = None


class SymbolTableOut(BaseModel):
    symbols: list[SymbolOut]
    updated_at: dt.datetime | None = Field(description="when it was last set or imported")
    updated_by: str | None


_BODY = {
    "required": True,
    "description": "`{\"symbols\": [{\"symbol\": \"EURUSD\", \"profit_currency\": \"USD\", \"contract_size\": "
                   "\"100000\"}, …]}` (or the bare list) as JSON; for import also CSV with a header row "
                   f"({', '.join(symbol_service.CSV_COLUMNS)}). Decimals as strings. At most 2 MiB.",
    "content": {"application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}},
}


async def table_body(request: Request) -> tuple[bytes, str]:
    """The body (at most :data:`~propcrm.services.symbols.MAX_TABLE_BYTES`) and its format."""
    body = await bounded_body(request, symbol_service.MAX_TABLE_BYTES, "a symbol table")
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    return body, "csv" if kind == "text/csv" else "json"


Body = Annotated[tuple[bytes, str], Depends(table_body)]


@router.get("/symbols", response_model=SymbolTableOut, tags=["symbols"], summary="The firm's symbol table")
def get_symbols(user: RiskUser, session: Db) -> dict[str, Any]:
    return symbol_service.table_view(session, firm_id=user.firm_id)


@router.put("/symbols", response_model=SymbolTableOut, tags=["symbols"],
            summary="Replace the firm's symbol table", openapi_extra={"requestBody": _BODY})
def put_symbols(user: RiskUser, session: Db, body: Body) -> dict[str, Any]:
    table = symbol_service.read_table(body[0], fmt=body[1])
    symbol_service.set_table(session, firm_id=user.firm_id, table=table, actor=user.actor)
    return symbol_service.table_view(session, firm_id=user.firm_id)


@router.post("/symbols/import", response_model=SymbolTableOut, tags=["symbols"],
             summary="Add symbols to the table or update them (others stay)", openapi_extra={"requestBody": _BODY})
def import_symbols(user: RiskUser, session: Db, body: Body) -> dict[str, Any]:
    table = symbol_service.read_table(body[0], fmt=body[1])
    symbol_service.set_table(session, firm_id=user.firm_id, table=table, actor=user.actor, merge=True)
    return symbol_service.table_view(session, firm_id=user.firm_id)
