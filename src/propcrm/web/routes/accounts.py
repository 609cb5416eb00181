"""Back office: the live accounts table and the account page with its chart, decisions and actions.

Who may: every staff role (admin, risk, finance, support) reads; admin and risk clear a breach, lift an
emergency stop, emergency-stop an account and suspend its trader — the same roles as the JSON API
(``api/routers/accounts.py``, ``api/routers/lifecycle.py``), through the same services.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...adapters.db import models as m
from ...domain.money import wide_context
from ...http.auth import Db
from ...services import accounts as account_service
from ...services import cases as case_service
from ...services import communications as comms
from ...services import decisions as decision_service
from ...services import lifecycle as lifecycle_service
from ...services import overrides as override_service
from ...services.accounts import STATUSES
from ...services.errors import Conflict, Invalid
from ...services.lifecycle import Refusal
from .. import queries_accounts as q
from ..queries_trades import journal_view
from ...http.pages import Form, Role, redirect, render
from ...roles import MANAGERS, RISK, STAFF

router = APIRouter()

PAGE_SIZES = (25, 50, 100, 200)
NEAR_CHOICES = (("", "Any distance"), ("1", "within 1 % of equity"), ("2", "within 2 % of equity"),
                ("5", "within 5 % of equity"))
# column -> (heading, sort key); a key the accounts service does not offer (yet) is shown unsortable
COLUMNS = (
    ("external_id", "Account", "external_id"),
    ("trader", "Trader", None),
    ("status", "Status", "status"),
    ("phase", "Phase", "phase"),
    ("balance", "Balance", "balance"),
    ("equity", "Equity", "equity"),
    ("daily_distance", "To daily floor", "daily_distance"),
    ("max_loss_distance", "To max-loss level", "max_loss_distance"),
    ("target_pct", "Target progress", "target_pct"),
    ("trading_days", "Trading days", "trading_days"),
    ("risk_score", "Risk score", "risk_score"),
)
DECISIONS_PER_PAGE = 20
MAX_ID = 2_147_483_647


def int_param(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        return default
    return min(max(number, low), high)


def near_amount_param(value: str | None) -> str | None:
    """The absolute distance filter as typed (``1,000`` reads as 1000); nothing when it is not an amount."""
    text = (value or "").replace(",", "").replace(" ", "").strip()[:20]
    try:
        return str(account_service.parse_near_amount(text)) if text else None
    except Invalid:
        return None


def text_param(value: str | None, limit: int = 200) -> str | None:
    value = (value or "").strip()
    return value[:limit] if value else None


@router.get("/office/accounts")
def accounts_page(request: Request, user: Role(*STAFF), session: Db) -> Response:
    params = request.query_params
    status = params.get("status") or None
    if status not in (None, *STATUSES):
        status = None
    phase = text_param(params.get("phase"), 64)
    search = text_param(params.get("q"))
    near = params.get("near") or None
    if near not in {value for value, _ in NEAR_CHOICES if value}:
        near = None
    near_amount = near_amount_param(params.get("near_amount"))
    sortable = set(account_service.SORT_KEYS)
    sort = params.get("sort") or "id"
    if sort.lstrip("-") not in sortable:
        sort = "id"
    limit = int_param(params.get("limit"), 50, 1, max(PAGE_SIZES))
    offset = int_param(params.get("offset"), 0, 0, 1_000_000_000)
    page = q.list_rows(session, firm_id=user.firm_id, status=status, phase=phase, search=search,
                       near=near, near_amount=near_amount, sort=sort, limit=limit, offset=offset)
    rows = [q.display(item) for item in page.items]
    state = {"status": status, "phase": phase, "q": search, "near": near, "near_amount": near_amount,
             "sort": sort if sort != "id" else None, "limit": limit if limit != 50 else None}

    def link(**changes: Any) -> str:
        merged = {**state, **changes}
        return "/office/accounts?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    headers = []
    for field, label, key in COLUMNS:
        if key is None or key not in sortable:
            headers.append({"field": field, "label": label, "href": None, "aria": None})
            continue
        current = sort.lstrip("-") == key
        descending = sort.startswith("-")
        aria = ("descending" if descending else "ascending") if current else None
        target = f"-{key}" if current and not descending else key
        headers.append({"field": field, "label": label, "href": link(sort=target, offset=None), "aria": aria})
    return render(request, "accounts/list.html", {
        "rows": rows, "page": page, "headers": headers, "statuses": STATUSES, "near_choices": NEAR_CHOICES,
        "page_sizes": PAGE_SIZES, "filters": state, "limit": limit, "sort": sort,
        "prev_href": link(offset=max(offset - limit, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + limit) if offset + limit < page.total else None,
        "first": offset + 1 if page.items else 0, "last": offset + len(page.items),
        "live_ids": ",".join(str(row["id"]) for row in rows),
    })


def _account(session, user, account_id: int) -> m.Account:
    if not 1 <= account_id <= MAX_ID:
        from ...services.errors import NotFound

        raise NotFound(f"no account {account_id}")
    return account_service.get_account(session, firm_id=user.firm_id, account_id=account_id)


@router.get("/office/accounts/{account_id}")
def account_page(request: Request, account_id: int, user: Role(*STAFF), session: Db) -> Response:
    with wide_context():  # a state stored before events were bounded (lots of 1e1000000) still shows
        return _account_page(request, account_id, user, session)


def _account_page(request: Request, account_id: int, user, session) -> Response:
    account = _account(session, user, account_id)
    detail = account_service.account_detail(session, firm_id=user.firm_id, account_id=account.id)
    row = q.display(q.rows_for(session, firm_id=user.firm_id, trader_id=None, ids=[account.id])[0])
    trader = session.get(m.Trader, account.trader_id) if account.trader_id else None
    doffset = int_param(request.query_params.get("doffset"), 0, 0, 1_000_000_000)
    decisions = decision_service.list_decisions(session, firm_id=user.firm_id, account_id=account.id,
                                                limit=DECISIONS_PER_PAGE, offset=doffset)
    may_act = user.role in RISK
    overrides = ([decision_service.override_view(o) for o in
                  override_service.list_overrides(session, firm_id=user.firm_id, account_id=account.id)]
                 if may_act else None)
    breaches = (decision_service.list_decisions(session, firm_id=user.firm_id, account_id=account.id, kind="breach",
                                                limit=20).items if may_act and account.status == "breached" else [])
    timeline = (comms.timeline(session, firm_id=user.firm_id, trader_id=trader.id, limit=50)
                if trader is not None else [])
    stage = None
    if trader is not None:
        from ...adapters.db.models_lifecycle import TraderStage

        found = session.get(TraderStage, trader.id)
        stage = found.stage if found is not None else None
    base = f"/office/accounts/{account.id}"
    cases = (case_service.list_cases(session, firm_id=user.firm_id, account_id=account.id, limit=50)["items"]
             if user.role in RISK else None)
    payouts = q.account_payouts(session, firm_id=user.firm_id, account_id=account.id) if user.role in MANAGERS else None
    return render(request, "accounts/detail.html", {
        "cases": cases, "payouts": payouts,
        "user_emails": q.user_emails(session, firm_id=user.firm_id,
                                     ids={o["actor_user_id"] for o in overrides or [] if o.get("actor_user_id")}),
        "account": account, "a": detail, "row": row, "trader": trader, "stage": stage,
        "positions": q.open_positions(session, account), "decisions": decisions,
        "dprev": f"{base}?doffset={max(doffset - DECISIONS_PER_PAGE, 0)}#decisions" if doffset > 0 else None,
        "dnext": (f"{base}?doffset={doffset + DECISIONS_PER_PAGE}#decisions"
                  if doffset + DECISIONS_PER_PAGE < decisions.total else None),
        "overrides": overrides, "breaches": breaches, "timeline": timeline, "may_act": may_act,
        "charts_src": f"{base}/series.json", "breach_marks": q.breach_marks(session, account),
    })


@router.get("/office/accounts/{account_id}/trades")
def account_trades(request: Request, account_id: int, user: Role(*STAFF), session: Db) -> Response:
    """The account's trade journal, as its trader sees it: statistics, daily P/L calendar, closed trades."""
    account = _account(session, user, account_id)
    offset = int_param(request.query_params.get("offset"), 0, 0, 10_000_000)
    journal = journal_view(session, account, offset=offset, month=text_param(request.query_params.get("month"), 7))
    return render(request, "accounts/trades.html", {"account": account, "a": journal["account"], "j": journal})


@router.get("/office/accounts/{account_id}/series.json")
def account_series(account_id: int, user: Role(*STAFF), session: Db) -> Response:
    account = _account(session, user, account_id)
    return JSONResponse(q.series(session, account), headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------------------------------
# actions (admin, risk — as the API)


@router.post("/office/accounts/{account_id}/override")
def override(request: Request, account_id: int, user: Role(*RISK), session: Db, form: Form) -> Response:
    account = _account(session, user, account_id)
    back = f"/office/accounts/{account.id}"
    action = form.get("action", "clear_breach")
    decision = form.get("decision_id") or None
    try:
        decision_id = int(decision) if decision else None
        if decision_id is not None and not 1 <= decision_id <= MAX_ID:
            raise ValueError
    except ValueError:
        return redirect(request, back, flash="Choose a breach decision from the list.")
    try:
        row = override_service.override_account(
            session, firm_id=user.firm_id, account_id=account.id, reason=form.get("reason", ""), action=action,
            decision_id=decision_id, actor_user_id=user.user_id, actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    what = "Breach cleared" if row.action == "clear_breach" else "Emergency stop lifted"
    return redirect(request, back, flash=f"{what}: {account.external_id} is now {account.status}.")


@router.post("/office/accounts/{account_id}/stop")
def emergency_stop(request: Request, account_id: int, user: Role(*RISK), session: Db, form: Form) -> Response:
    account = _account(session, user, account_id)
    back = f"/office/accounts/{account.id}"
    if form.get("confirm") != "yes":
        return redirect(request, back, flash="Not done: tick the box to confirm the emergency stop.")
    try:
        override_service.emergency_stop(session, firm_id=user.firm_id, account_id=account.id,
                                        reason=form.get("reason", ""), actor_user_id=user.user_id, actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    return redirect(request, back, flash=f"Emergency stop: {account.external_id} is suspended and its platform "
                                         "is asked to disable it.")


@router.post("/office/accounts/{account_id}/suspend-trader")
def suspend_trader(request: Request, account_id: int, user: Role(*RISK), session: Db, form: Form) -> Response:
    account = _account(session, user, account_id)
    back = f"/office/accounts/{account.id}"
    if account.trader_id is None:
        return redirect(request, back, flash="Not done: this account has no trader.")
    if form.get("confirm") != "yes":
        return redirect(request, back, flash="Not done: tick the box to confirm the suspension.")
    try:
        result = lifecycle_service.transition(session, firm_id=user.firm_id, trader_id=account.trader_id,
                                              to="suspended", reason=form.get("reason", ""), actor=user.actor,
                                              actor_user_id=user.user_id)
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    if isinstance(result, Refusal):
        return redirect(request, back, flash=f"Not done: {result.reason}")
    return redirect(request, back, flash="Trader suspended: their live accounts are emergency-stopped.")
