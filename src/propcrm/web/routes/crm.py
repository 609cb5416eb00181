"""Back office CRM, continued: leads (capture, convert to a trader), products and discount codes (list,
create, edit, retire) and staff tasks (attached to a trader, an account or a case; assign; done).

Who may (``roles.py``, the API's roles for the same services): the support desk (admin, support) captures and
converts leads, as ``POST /api/v1/leads``; finance and admin run products and discount codes, as
``/api/v1/products`` and ``/api/v1/discount-codes``; every staff role keeps tasks. Every action is the service's
function, audited there; a refusal comes back as the page's one-shot message naming the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy import select

from ...adapters.db import models as m
from ...http.auth import Db
from ...http.pages import Form, Role, redirect, render
from ...roles import FINANCE, STAFF, SUPPORT_DESK
from ...services import lifecycle as lifecycle_service
from ...services import products as product_service
from ...services import tasks as task_service
from ...services.errors import Conflict, Invalid
from .accounts import int_param

router = APIRouter()

MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
LEAD_STATUSES = ("new", "converted", "lost")
PAGE = 50  # leads and discount codes a page
TASK_PAGE = 50
TASK_VIEWS = (("open", "Open"), ("mine", "Mine"), ("overdue", "Overdue"), ("done", "Done"), ("all", "All"))


def optional_id(form: dict[str, str], name: str) -> int | None:
    """A form's id field: empty is none; anything but a positive whole number names the field."""
    text = (form.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise Invalid(f"{name}: a whole number from 1 up, not {text[:40]!r}")
    return int(text)


def optional_expiry(text: str | None) -> dt.datetime | None:
    """A discount code's last day (``YYYY-MM-DD``): it works until the end of that day, UTC."""
    day = task_service.parse_due(text) if (text or "").strip() else None
    if day is None:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def _done(request: Request, session, back: str, action, ok: str, refused: str = "Not done") -> Response:
    try:
        with session.begin_nested():
            result = action()
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"{refused}: {exc}")
    return redirect(request, back, flash=ok.format(result=result))


# --------------------------------------------------------------------------------------------------
# leads


@router.get("/office/leads")
def leads_page(request: Request, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    status = request.query_params.get("status")
    status = status if status in LEAD_STATUSES else None
    offset = int_param(request.query_params.get("offset"), 0, 0, 1_000_000_000)
    # a page, newest first: a firm captures leads by the hundred thousand (the CSV export has them all)
    rows = lifecycle_service.list_leads(session, firm_id=user.firm_id, status=status, limit=PAGE, offset=offset,
                                        newest_first=True)
    total = lifecycle_service.count_leads(session, firm_id=user.firm_id, status=status)

    def link(**changes: Any) -> str:
        merged = {"status": status, **changes}
        return "/office/leads?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    return render(request, "crm/leads.html", {
        "leads": rows, "status": status, "statuses": LEAD_STATUSES, "total": total, "offset": offset,
        "prev_href": link(offset=max(offset - PAGE, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + PAGE) if offset + PAGE < total else None,
    })


@router.post("/office/leads")
def capture_lead(request: Request, form: Form, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    country = (form.get("country") or "").strip().upper() or None
    return _done(request, session, "/office/leads", lambda: lifecycle_service.capture_lead(
        session, firm_id=user.firm_id, name=form.get("name", ""), email=form.get("email", ""),
        source=form.get("source", ""), consent=form.get("consent") == "yes",
        consent_text=(form.get("consent_text") or "").strip()[:2000] or None, country=country, actor=user.actor),
        "Lead {result.name} saved.", "Not saved")


@router.post("/office/leads/{lead_id}/convert")
def convert_lead(request: Request, lead_id: Id, form: Form, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    try:
        with session.begin_nested():
            trader = lifecycle_service.convert_lead(session, firm_id=user.firm_id, lead_id=lead_id, actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/leads", flash=f"Not converted: {exc}")
    return redirect(request, f"/office/traders/{trader.id}", flash=f"Lead converted: {trader.name} is a trader now.")


@router.post("/office/leads/{lead_id}/lost")
def lead_lost(request: Request, lead_id: Id, form: Form, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    return _done(request, session, "/office/leads", lambda: lifecycle_service.mark_lead_lost(
        session, firm_id=user.firm_id, lead_id=lead_id, reason=form.get("reason", ""), actor=user.actor),
        "Lead {result.name} marked lost.", "Not marked lost")


@router.post("/office/leads/{lead_id}/reopen")
def lead_reopen(request: Request, lead_id: Id, form: Form, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    return _done(request, session, "/office/leads", lambda: lifecycle_service.reopen_lead(
        session, firm_id=user.firm_id, lead_id=lead_id, actor=user.actor),
        "Lead {result.name} reopened.", "Not reopened")


# --------------------------------------------------------------------------------------------------
# products and discount codes


@router.get("/office/products")
def products_page(request: Request, user: Role(*FINANCE), session: Db) -> Response:
    products = [product_service.product_view(row, session)
                for row in product_service.list_products(session, firm_id=user.firm_id)]
    versions = {v.id: v for v in session.scalars(select(m.RulePackVersion).where(
        m.RulePackVersion.firm_id == user.firm_id).order_by(m.RulePackVersion.pack_id, m.RulePackVersion.version))}
    for p in products:
        v = versions.get(p["pack_version_id"])
        p["pack"] = f"{v.pack_id} v{v.version}" if v else "—"
    offset = int_param(request.query_params.get("codes_offset"), 0, 0, 1_000_000_000)
    # the codes a page at a time, newest first: affiliate programmes make them by the thousand
    codes = [lifecycle_service.discount_view(row)
             for row in lifecycle_service.list_discount_codes(session, firm_id=user.firm_id, limit=PAGE,
                                                              offset=offset, newest_first=True)]
    codes_total = lifecycle_service.count_discount_codes(session, firm_id=user.firm_id)
    for c in codes:
        c["last_day"] = (c["expires_at"] - dt.timedelta(days=1)).date() if c["expires_at"] else None
    return render(request, "crm/products.html", {
        "products": products, "codes": codes, "codes_total": codes_total, "codes_offset": offset,
        "prev_href": f"/office/products?codes_offset={max(offset - PAGE, 0)}#codes" if offset > 0 else None,
        "next_href": f"/office/products?codes_offset={offset + PAGE}#codes" if offset + PAGE < codes_total else None,
        "sellable": [v for v in versions.values() if v.status != "retired"],
    })


@router.post("/office/products")
def create_product(request: Request, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    def action():
        version = optional_id(form, "pack_version_id")
        if version is None:
            raise Invalid("pack_version_id: choose the rule pack version the product sells")
        return product_service.create_product(session, firm_id=user.firm_id, name=form.get("name", ""),
                                              pack_version_id=version, price=form.get("price", ""), actor=user.actor)

    return _done(request, session, "/office/products", action, "Product {result.name} created.", "Not created")


@router.post("/office/products/{product_id}")
def edit_product(request: Request, product_id: Id, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    product_service.get_product(session, firm_id=user.firm_id, product_id=product_id)
    return _done(request, session, "/office/products", lambda: product_service.update_product(
        session, firm_id=user.firm_id, product_id=product_id, name=form.get("name", ""),
        price=form.get("price", ""), actor=user.actor), "Product {result.name} saved.", "Not saved")


@router.post("/office/products/{product_id}/retire")
def retire_product(request: Request, product_id: Id, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    product_service.get_product(session, firm_id=user.firm_id, product_id=product_id)
    if form.get("confirm") != "yes":
        return redirect(request, "/office/products", flash="Not done: tick the box to confirm retiring the product.")
    return _done(request, session, "/office/products", lambda: product_service.retire_product(
        session, firm_id=user.firm_id, product_id=product_id, actor=user.actor),
        "Product {result.name} retired: it is no longer sold.")


def _max_uses(form: dict[str, str]) -> int | None:
    return optional_id(form, "max_uses")


@router.post("/office/discount-codes")
def create_code(request: Request, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    def action():
        kind, value = form.get("off_kind"), (form.get("off") or "").strip()
        if kind not in ("percent", "amount"):
            raise Invalid("off_kind: percent or amount")
        if not value:
            raise Invalid("off: how much the code takes off is required")
        return lifecycle_service.create_discount_code(
            session, firm_id=user.firm_id, code=(form.get("code") or "").strip(),
            percent_off=value if kind == "percent" else None, amount_off=value if kind == "amount" else None,
            max_uses=_max_uses(form), expires_at=optional_expiry(form.get("last_day")), actor=user.actor)

    return _done(request, session, "/office/products#codes", action, "Discount code {result.code} created.",
                 "Not created")


@router.post("/office/discount-codes/{code_id}")
def edit_code(request: Request, code_id: Id, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    lifecycle_service.get_discount_code(session, firm_id=user.firm_id, code_id=code_id)
    return _done(request, session, "/office/products#codes", lambda: lifecycle_service.update_discount_code(
        session, firm_id=user.firm_id, code_id=code_id, max_uses=_max_uses(form),
        expires_at=optional_expiry(form.get("last_day")), actor=user.actor),
        "Discount code {result.code} saved.", "Not saved")


@router.post("/office/discount-codes/{code_id}/retire")
def retire_code(request: Request, code_id: Id, form: Form, user: Role(*FINANCE), session: Db) -> Response:
    lifecycle_service.get_discount_code(session, firm_id=user.firm_id, code_id=code_id)
    return _done(request, session, "/office/products#codes", lambda: lifecycle_service.retire_discount_code(
        session, firm_id=user.firm_id, code_id=code_id, actor=user.actor),
        "Discount code {result.code} retired: it no longer works.")


# --------------------------------------------------------------------------------------------------
# tasks


def task_filters(params, user) -> tuple[str, dict[str, Any]]:
    """The list's view and the service's filters for it (shared with the CSV export)."""
    view = params.get("view") if params.get("view") in dict(TASK_VIEWS) else "open"
    filters: dict[str, Any] = {"status": {"all": None, "done": "done"}.get(view, "open")}
    if view == "mine":
        filters["assigned_user_id"] = user.user_id
    if view == "overdue":
        filters["overdue_on"] = dt.datetime.now(dt.timezone.utc).date()
    trader = int_param(params.get("trader"), 0, 0, MAX_ID)
    if trader:
        filters["trader_id"] = trader
    return view, filters


@router.get("/office/tasks")
def tasks_page(request: Request, user: Role(*STAFF), session: Db) -> Response:
    view, filters = task_filters(request.query_params, user)
    offset = int_param(request.query_params.get("offset"), 0, 0, 1_000_000_000)
    page = task_service.list_tasks(session, firm_id=user.firm_id, limit=TASK_PAGE, offset=offset, **filters)

    def link(**changes: Any) -> str:
        merged = {"view": view if view != "open" else None, "trader": filters.get("trader_id"), **changes}
        return "/office/tasks?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    return render(request, "crm/tasks.html", {
        "page": page, "view": view, "views": TASK_VIEWS, "trader_filter": filters.get("trader_id"),
        "staff": task_service.assignees(session, firm_id=user.firm_id),
        "today": dt.datetime.now(dt.timezone.utc).date(), "query": request.url.query,
        "prefill": {"trader": request.query_params.get("trader", "")[:12],
                    "account": request.query_params.get("account", "")[:200],
                    "case": request.query_params.get("case", "")[:12]},
        "prev_href": link(offset=max(offset - TASK_PAGE, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + TASK_PAGE) if offset + TASK_PAGE < page.total else None,
    })


def _task_back(form: dict[str, str]) -> str:
    """Back to where the form was (a trader's profile or the task list), never elsewhere."""
    back = form.get("back") or ""
    if back.startswith("/office/traders/") and back[len("/office/traders/"):].split("#")[0].isdigit():
        return back
    return "/office/tasks"


@router.post("/office/tasks")
def create_task(request: Request, form: Form, user: Role(*STAFF), session: Db) -> Response:
    def action():
        return task_service.create_task(
            session, firm_id=user.firm_id, title=form.get("title", ""), details=form.get("details"),
            trader_id=optional_id(form, "trader_id"), account=form.get("account"),
            case_id=optional_id(form, "case_id"), assigned_user_id=optional_id(form, "assigned_user_id"),
            due_on=task_service.parse_due(form.get("due_on")), actor=user.actor)

    return _done(request, session, _task_back(form), action, "Task “{result.title}” added.", "Not added")


@router.post("/office/tasks/{task_id}/assign")
def assign_task(request: Request, task_id: Id, form: Form, user: Role(*STAFF), session: Db) -> Response:
    task_service.get_task(session, firm_id=user.firm_id, task_id=task_id)
    return _done(request, session, _task_back(form), lambda: task_service.assign_task(
        session, firm_id=user.firm_id, task_id=task_id, user_id=optional_id(form, "assigned_user_id"),
        actor=user.actor), "Task “{result.title}” assigned.")


@router.post("/office/tasks/{task_id}/done")
def complete_task(request: Request, task_id: Id, form: Form, user: Role(*STAFF), session: Db) -> Response:
    task_service.get_task(session, firm_id=user.firm_id, task_id=task_id)
    return _done(request, session, _task_back(form), lambda: task_service.complete_task(
        session, firm_id=user.firm_id, task_id=task_id, actor=user.actor), "Task “{result.title}” done.")
