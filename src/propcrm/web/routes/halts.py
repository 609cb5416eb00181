"""The kill switch in the back office: halt trading on all or a group of the firm's accounts, and resume.

Roles as in the JSON API (``api/routers/halts.py``): risk and admin. A halt is previewed first — the page
shows how many accounts it stops — and confirmed by typing that count with a reason; the count must
still hold when it is confirmed (:func:`propcrm.services.halts.halt` with ``expected_count``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...http.pages import Form, Role, SameSiteOnly, redirect, render
from ...roles import RISK
from ...services import halts as halt_service
from ...services import rulepacks as pack_service
from ...services.errors import Conflict, Invalid
from ..queries_packs import parse_ids

router = APIRouter()
HaltId = Annotated[int, Path(ge=1, le=2**31 - 1)]
FIELDS = ("all", "pack", "version", "phase", "product", "accounts")


def _number(text: str) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _scope(values: dict[str, str]) -> halt_service.HaltScope:
    return halt_service.HaltScope(
        everything=values.get("all") == "true", pack_id=(values.get("pack") or "").strip()[:64] or None,
        pack_version_id=_number(values.get("version", "")), phase=(values.get("phase") or "").strip()[:64] or None,
        product_id=_number(values.get("product", "")), accounts=tuple(parse_ids(values.get("accounts", ""))))


def _page(request: Request, session, user, values: dict[str, str], *, preview=None, error: str | None = None,
          status: int = 200) -> Response:
    halts = [halt_service.halt_view(row, still=halt_service.still_halted(session, firm_id=user.firm_id, halt_id=row.id))
             for row in halt_service.list_halts(session, firm_id=user.firm_id)]
    packs = sorted({row.pack_id for row in pack_service.list_versions(session, firm_id=user.firm_id)})
    return render(request, "halts/index.html", {"values": values, "preview": preview, "error": error, "halts": halts,
                                                "packs": packs}, status=status)


@router.get("/office/halts", dependencies=[SameSiteOnly])
def halts_page(request: Request, user: Role(*RISK), session: Db,
               all: Annotated[str, Query(max_length=5)] = "",  # noqa: A002
               pack: Annotated[str, Query(max_length=64)] = "", version: Annotated[str, Query(max_length=12)] = "",
               phase: Annotated[str, Query(max_length=64)] = "", product: Annotated[str, Query(max_length=12)] = "",
               accounts: Annotated[str, Query(max_length=200_000)] = "", preview: bool = False) -> Response:
    values = {"all": all, "pack": pack, "version": version, "phase": phase, "product": product, "accounts": accounts}
    if not preview:
        return _page(request, session, user, values)
    try:
        result = halt_service.preview_halt(session, firm_id=user.firm_id, scope=_scope(values))
    except Invalid as exc:
        return _page(request, session, user, values, error=str(exc), status=422)
    return _page(request, session, user, values, preview=result)


@router.post("/office/halts")
def halt(request: Request, user: Role(*RISK), session: Db, form: Form) -> Response:
    values = {name: form.get(name, "") for name in FIELDS}
    typed = _number(form.get("confirm", ""))
    try:
        scope = _scope(values)
        if typed is None:
            raise Invalid("confirm: type the number of accounts to halt")
        row = halt_service.halt(session, firm_id=user.firm_id, scope=scope, reason=form.get("reason", ""),
                                actor=user.actor, expected_count=typed)
    except (Invalid, Conflict) as exc:  # refused before anything was written
        try:
            preview = halt_service.preview_halt(session, firm_id=user.firm_id, scope=_scope(values))
        except Invalid:
            preview = None
        return _page(request, session, user, values, preview=preview, error=f"Not halted: {exc}", status=422)
    return redirect(request, "/office/halts", flash=f"Halt {row.id}: trading halted on {row.accounts:,} account(s); "
                                                    "disable commands are on their way to the platforms.")


@router.post("/office/halts/{halt_id}/resume")
def resume(request: Request, halt_id: HaltId, user: Role(*RISK), session: Db, form: Form) -> Response:
    try:
        row = halt_service.resume(session, firm_id=user.firm_id, halt_id=halt_id, reason=form.get("reason", ""),
                                  actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/halts", flash=f"Not resumed: {exc}")
    return redirect(request, "/office/halts", flash=f"Halt {row.id} resumed: {row.resumed:,} of {row.accounts:,} "
                                                    "account(s) trade again.")
