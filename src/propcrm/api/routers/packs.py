"""Rule pack versions and products.

Who may: risk and admin read pack versions and move accounts to another version of their pack (the
audited re-bind, preview first); admin adds, activates and retires them; finance and admin list and
create products.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...services import products as product_service
from ...services import rebind as rebind_service
from ...services import rulepacks as pack_service
from ...services.rulepacks import MAX_PACK_BYTES
from ...services.users import Principal
from ...http.auth import Db, require_roles
from ...http.signed import read_body
from ...roles import ADMIN, FINANCE, RISK
from ..auth import ErrorOut
from .accounts import MAX_ID

VersionId = Annotated[int, Path(ge=1, le=MAX_ID)]
PackReader = Annotated[Principal, Depends(require_roles(*RISK))]
AdminUser = Annotated[Principal, Depends(require_roles(*ADMIN))]
FinanceUser = Annotated[Principal, Depends(require_roles(*FINANCE))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this"},
    404: {"model": ErrorOut, "description": "no such pack version in the user's firm"},
    409: {"model": ErrorOut, "description": "the version is not in a state that allows this"},
    422: {"model": ErrorOut, "description": "a bad parameter or body"},
}

router = APIRouter(responses=ERRORS)


class PackVersionOut(BaseModel):
    id: int
    pack_id: str
    version: int
    status: str
    content_hash: str
    created_at: dt.datetime


class PackVersionDetail(PackVersionOut):
    pack: dict[str, Any] = Field(description="the pack as stored (canonical JSON)")


class PackAdded(PackVersionOut):
    created: bool = Field(description="false when this exact version was already stored")


class ProductOut(BaseModel):
    id: int
    name: str
    pack_version_id: int
    account_size: str | None
    price: str | None
    currency: str
    active: bool
    on_sale: bool = Field(description="active and on a rule pack version that is not retired: what may be ordered")


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    pack_version_id: int = Field(ge=1, le=MAX_ID)
    price: Decimal = Field(ge=0, le=Decimal("1000000000"), allow_inf_nan=False, description="decimal text, e.g. \"540.00\"")


async def bounded_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, at most ``limit`` bytes (413 "``what`` is at most … bytes" beyond)."""
    declared = request.headers.get("content-length")
    body = None
    if declared is None or (declared.strip().isdigit() and int(declared) <= limit):
        body = await read_body(request, limit)
    if body is None:
        raise HTTPException(status_code=413, detail=f"{what} is at most {limit:,} bytes")
    return body


async def pack_body(request: Request) -> bytes:
    """The request body, at most :data:`MAX_PACK_BYTES` (413 beyond)."""
    return await bounded_body(request, MAX_PACK_BYTES, "a rule pack")


_PACK_BODY = {
    "required": True,
    "description": "A rule pack (GUIDE §3) as YAML or JSON, at most 1 MiB.",
    "content": {
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}},
    },
}


@router.get("/packs", response_model=list[PackVersionOut], tags=["rule packs"], summary="Rule pack versions")
def list_packs(
    user: PackReader,
    session: Db,
    pack_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["draft", "active", "retired"] | None, Query()] = None,
) -> list[dict]:
    rows = pack_service.list_versions(session, firm_id=user.firm_id, pack_id=pack_id, status=status)
    return [pack_service.version_view(row) for row in rows]


@router.get("/packs/{version_id}", response_model=PackVersionDetail, tags=["rule packs"],
            summary="One pack version with its content")
def get_pack(version_id: VersionId, user: PackReader, session: Db) -> dict:
    row = pack_service.get_version(session, firm_id=user.firm_id, version_id=version_id)
    return pack_service.version_view(row, with_body=True)


@router.post("/packs", response_model=PackAdded, status_code=201, tags=["rule packs"],
             summary="Add a pack version (a draft, or active with ?activate=true)",
             openapi_extra={"requestBody": _PACK_BODY}, responses={413: {"model": ErrorOut}})
def add_pack(
    user: AdminUser,
    session: Db,
    body: Annotated[bytes, Depends(pack_body)],
    activate: Annotated[bool, Query(description="make it the pack's active version at once")] = False,
):
    pack = pack_service.read_pack(body)
    row, created = pack_service.add_version(session, firm_id=user.firm_id, pack=pack, activate=activate,
                                            actor=user.actor)
    answer = {**pack_service.version_view(row), "created": created}
    if not created:
        return JSONResponse(PackAdded(**answer).model_dump(mode="json"), status_code=200)
    return answer


@router.post("/packs/{version_id}/activate", response_model=PackVersionOut, tags=["rule packs"],
             summary="Make a version its pack's active one (the previous active version retires)")
def activate_pack(version_id: VersionId, user: AdminUser, session: Db) -> dict:
    row = pack_service.activate_version(session, firm_id=user.firm_id, version_id=version_id, actor=user.actor)
    return pack_service.version_view(row)


@router.post("/packs/{version_id}/retire", response_model=PackVersionOut, tags=["rule packs"],
             summary="Retire a version: no new accounts or products; bound accounts keep it")
def retire_pack(version_id: VersionId, user: AdminUser, session: Db) -> dict:
    row = pack_service.retire_version(session, firm_id=user.firm_id, version_id=version_id, actor=user.actor)
    return pack_service.version_view(row)


@router.get("/products", response_model=list[ProductOut], tags=["products"], summary="Products")
def list_products(
    user: FinanceUser,
    session: Db,
    on_sale: Annotated[bool | None, Query(description="true: only what may be ordered (the catalog)")] = None,
) -> list[dict]:
    views = [product_service.product_view(row, session)
             for row in product_service.list_products(session, firm_id=user.firm_id)]
    return [v for v in views if on_sale is None or v["on_sale"] is on_sale]


@router.post("/products", response_model=ProductOut, status_code=201, tags=["products"],
             summary="Create a product: a live pack version (its size and currency) for a price")
def create_product(body: ProductIn, user: FinanceUser, session: Db) -> dict:
    row = product_service.create_product(session, firm_id=user.firm_id, name=body.name,
                                         pack_version_id=body.pack_version_id, price=body.price, actor=user.actor)
    return product_service.product_view(row, session)


# --------------------------------------------------------------------------------------------------
# re-bind: move accounts to another version of their pack (risk, admin; services/rebind.py)

RiskUser = Annotated[Principal, Depends(require_roles(*RISK))]


class RebindSelectionIn(BaseModel):
    account_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=rebind_service.MAX_ACCOUNTS, description="accounts by id")
    external_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=rebind_service.MAX_ACCOUNTS, description="accounts by the platform's name")
    from_version_id: int | None = Field(None, ge=1, le=MAX_ID, description="only accounts bound to this version")
    product_id: int | None = Field(None, ge=1, le=MAX_ID, description="only accounts sold as this product")
    phase: str | None = Field(None, min_length=1, max_length=64, description="only accounts in this phase")

    def selection(self) -> rebind_service.Selection:
        return rebind_service.Selection(account_ids=tuple(self.account_ids), external_ids=tuple(self.external_ids),
                                        from_version_id=self.from_version_id, product_id=self.product_id,
                                        phase=self.phase)


class RebindIn(RebindSelectionIn):
    reason: str = Field(min_length=1, max_length=2000, description="why: audited with each account's move")
    expect: str | None = Field(None, max_length=64,
                               description="the preview's digest: refused (409) when the outcome changed since")


class RebindAccountOut(BaseModel):
    id: int
    external_id: str
    phase: str
    from_version: dict[str, int]
    status_now: str
    status_after: str
    events_replayed: int
    decisions_lost: list[dict[str, Any]] = Field(description="decisions it has that the new version would not make")
    decisions_gained: list[dict[str, Any]] = Field(description="decisions the new version adds to its history")
    problem: str | None = Field(description="why it cannot be moved (then nothing is moved)")


class RebindOut(BaseModel):
    target: dict[str, Any]
    digest: str = Field(description="pass as `expect` when confirming: the move is refused if its outcome changed")
    accounts: list[RebindAccountOut]
    changed: int = Field(description="accounts whose status or decisions the move changes")
    problems: int


@router.post("/packs/{version_id}/rebind/preview", response_model=RebindOut, tags=["rule packs"],
             summary="What-if of moving accounts to this version: each history replayed; nothing changes")
def rebind_preview(version_id: VersionId, body: RebindSelectionIn, user: RiskUser, session: Db) -> dict:
    plan = rebind_service.preview(session, firm_id=user.firm_id, version_id=version_id, selection=body.selection())
    return rebind_service.plan_view(plan)


@router.post("/packs/{version_id}/rebind", response_model=RebindOut, tags=["rule packs"],
             summary="Move accounts to this version (same pack, not retired): replayed, re-decided, audited")
def rebind(version_id: VersionId, body: RebindIn, user: RiskUser, session: Db) -> dict:
    plan = rebind_service.apply(session, firm_id=user.firm_id, version_id=version_id, selection=body.selection(),
                                reason=body.reason, actor=user.actor, expect=body.expect)
    return rebind_service.plan_view(plan)
