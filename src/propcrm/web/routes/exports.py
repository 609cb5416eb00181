"""CSV exports of every staff list: ``/office/<list>.csv`` with the list page's filters, for the roles that
may open that page (``csv_export.py``: streamed, formula-safe). Accounts, traders, decisions and the firm's
trades (every account's, ``/office/trades.csv``): every staff role; cases, near-breach alerts and the audit log:
admin and risk; payouts: admin, risk, finance.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...adapters.db import models as m
from ...adapters.db.models_lifecycle import Payout
from ...domain import lifecycle as machine
from ...http.pages import Role, SameSiteOnly
from ...roles import CRM, FINANCE, MANAGERS, RISK, STAFF, SUPPORT_DESK
from ...services import accounts as account_service
from ...services.accounts import money
from ...services import cases as case_service
from ...services import decisions as decision_service
from ...services import lifecycle as lifecycle_service
from ...services import near_breach
from ...services import payouts as payout_service
from ...services import products as product_service
from ...services import tasks as task_service
from ...services.decisions import KINDS
from ...services.accounts import STATUSES
from .. import queries_audit
from .. import queries_traders
from ..csv_export import BATCH, FIRST, batched, csv_response
from . import crm
from .accounts import NEAR_CHOICES, near_amount_param, text_param
from .audit import parse_when

router = APIRouter(dependencies=[SameSiteOnly])
Text = Annotated[str, Query(max_length=200)]


@router.get("/office/accounts.csv")
def accounts_csv(request: Request, user: Role(*STAFF)) -> Response:
    params = request.query_params
    status = params.get("status") if params.get("status") in STATUSES else None
    near = params.get("near") if params.get("near") in {v for v, _ in NEAR_CHOICES if v} else None
    sort = params.get("sort") or "id"
    if sort.lstrip("-") not in set(account_service.SORT_KEYS):
        sort = "id"
    filters = {k: v for k, v in {"status": status, "phase": text_param(params.get("phase"), 64),
                                 "search": text_param(params.get("q")), "near": near,
                                 "near_amount": near_amount_param(params.get("near_amount"))}.items()
               if v is not None}

    def produce(session):
        items = batched(lambda limit, offset: account_service.list_accounts(
            session, firm_id=user.firm_id, sort=sort, limit=limit, offset=offset, **filters).items)
        for a in items:
            yield (a["external_id"], a.get("login"), a.get("trader_name"), a["status"], a["phase"], a.get("balance"),
                   a.get("equity"), a.get("daily_floor"), a.get("daily_distance"), a.get("max_loss_level"),
                   a.get("max_loss_distance"), a.get("target_pct"), a.get("trading_days"), a.get("risk_score"))

    return csv_response(request, "accounts", ["account", "login", "trader", "status", "phase", "balance", "equity",
                                              "daily_floor", "to_daily_floor", "max_loss_level", "to_max_loss_level",
                                              "target_progress_pct", "trading_days", "risk_score"], produce)


@router.get("/office/traders.csv")
def traders_csv(request: Request, user: Role(*CRM)) -> Response:
    params = request.query_params
    stage = params.get("stage") if params.get("stage") in machine.STAGES else None
    kyc = params.get("kyc") if params.get("kyc") in machine.KYC_STATUSES else None
    search = text_param(params.get("q"))

    def produce(session):
        for t in batched(lambda limit, offset: queries_traders.list_traders(
                session, firm_id=user.firm_id, search=search, stage=stage, kyc=kyc, limit=limit, offset=offset).rows):
            yield (t["id"], t["name"], t["email"], t["country"], t["stage"], t["kyc"], t["accounts"],
                   t["documents_pending"], t["created_at"])

    return csv_response(request, "traders", ["id", "name", "email", "country", "stage", "kyc", "accounts",
                                             "documents_to_review", "created_at"], produce)


@router.get("/office/decisions.csv")
def decisions_csv(request: Request, user: Role(*STAFF)) -> Response:
    params = request.query_params
    kind = params.get("kind") if params.get("kind") in KINDS else None
    rule = text_param(params.get("rule"), 64)

    def produce(session):
        for d in batched(lambda limit, offset: decision_service.list_decisions(
                session, firm_id=user.firm_id, kind=kind, rule=rule, limit=limit, offset=offset).items):
            yield (d["id"], d["ts"], d["account"], d["kind"], d["rule"], d["phase"], d["value"], d["threshold"],
                   d["message"])

    return csv_response(request, "decisions", ["id", "time", "account", "kind", "rule", "phase", "value",
                                               "threshold", "message"], produce)


@router.get("/office/trades.csv")
def trades_csv(request: Request, user: Role(*STAFF)) -> Response:
    """Every trade of the firm (the trade-history projection, both deployments): ``status`` open/closed."""
    from ...services.trades import EXPORT_COLUMNS, TRADE_STATUSES, all_firm_trades

    status = request.query_params.get("status")
    status = status if status in TRADE_STATUSES else None

    def produce(session):
        for row in all_firm_trades(session, firm_id=user.firm_id, status=status):
            yield tuple(row[c] for c in EXPORT_COLUMNS)

    return csv_response(request, "trades", list(EXPORT_COLUMNS), produce)


@router.get("/office/cases.csv")
def cases_csv(request: Request, user: Role(*RISK)) -> Response:
    status = request.query_params.get("status")
    status = status if status in case_service.TRANSITIONS else None

    def produce(session):
        for c in batched(lambda limit, offset: case_service.list_cases(
                session, firm_id=user.firm_id, status=status, limit=limit, offset=offset)["items"]):
            yield (c["id"], c["status"], c["detector"], c["score"], c["title"],
                   " ".join(a["external_id"] for a in c["accounts"]), c["opened_at"], c["updated_at"],
                   c["closed_at"], c["resolution"])

    return csv_response(request, "cases", ["id", "status", "kind", "strength", "title", "accounts", "opened_at",
                                           "updated_at", "closed_at", "resolution"], produce)


@router.get("/office/payouts.csv")
def payouts_csv(request: Request, user: Role(*MANAGERS)) -> Response:
    status = request.query_params.get("status")

    def produce(session):
        def page(limit: int, offset: int):
            wanted = status[:32] if status and status not in ("all", "open") else None
            query = (payout_service.payouts_query(firm_id=user.firm_id, status=wanted)
                     .add_columns(m.Account.external_id, m.Trader.name)
                     .join(m.Account, m.Account.id == Payout.account_id)
                     .outerjoin(m.Trader, m.Trader.id == Payout.trader_id))
            return session.execute(query.order_by(Payout.id.desc()).limit(limit).offset(offset)).all()

        for p, account, trader in batched(page):
            yield (p.id, p.status, account, trader, p.profit, p.manual_deduction, p.trader_amount, p.firm_amount,
                   p.created_at, p.prepared_at, p.decided_at, p.reason)

    return csv_response(request, "payouts", ["id", "status", "account", "trader", "profit", "deduction",
                                             "trader_amount", "firm_amount", "requested_at", "prepared_at",
                                             "decided_at", "reason"], produce)


@router.get("/office/audit.csv")
def audit_csv(request: Request, user: Role(*RISK), actor: Text = "", action: Text = "", entity: Text = "",
              entity_id: Text = "", text: Text = "", since: Annotated[str, Query(max_length=40)] = "",
              until: Annotated[str, Query(max_length=40)] = "") -> Response:
    try:
        bounds = {"since": parse_when(since, end=False), "until": parse_when(until, end=True)}
    except ValueError:
        bounds = {"since": None, "until": None}
    filters = queries_audit.Filters(actor=actor.strip(), action=action.strip(), entity=entity.strip(),
                                    entity_id=entity_id.strip(), text=text.strip(), **bounds)

    def produce(session):
        before, limit = None, FIRST  # the first entries sent before the rest is read
        while True:
            found = queries_audit.search(session, firm_id=user.firm_id, filters=filters, before=before, limit=limit)
            limit = BATCH
            for e in found.entries:
                yield (e.seq, e.ts, e.actor, e.action, e.entity, e.entity_id, e.before, e.after, e.hash)
            if found.older is None:
                return
            before = found.older

    return csv_response(request, "audit", ["seq", "time", "actor", "action", "entity", "entity_id", "before",
                                           "after", "hash"], produce)


@router.get("/office/leads.csv")
def leads_csv(request: Request, user: Role(*SUPPORT_DESK)) -> Response:
    status = request.query_params.get("status")
    status = status if status in ("new", "converted", "lost") else None

    def produce(session):
        for lead in lifecycle_service.list_leads(session, firm_id=user.firm_id, status=status):
            yield (lead.id, lead.name, lead.email, lead.country, lead.source, lead.consent, lead.status,
                   lead.trader_id, lead.created_at)

    return csv_response(request, "leads", ["id", "name", "email", "country", "source", "consent", "status",
                                           "trader_id", "captured_at"], produce)


@router.get("/office/products.csv")
def products_csv(request: Request, user: Role(*FINANCE)) -> Response:
    def produce(session):
        for row in product_service.list_products(session, firm_id=user.firm_id):
            version = session.get(m.RulePackVersion, row.pack_version_id)
            yield (row.id, row.name, f"{version.pack_id} v{version.version}" if version else None,
                   money(row.account_size), money(row.price), row.currency, row.active, product_service.on_sale(session, row))

    return csv_response(request, "products", ["id", "name", "rule_pack", "account_size", "price", "currency",
                                              "active", "on_sale"], produce)


@router.get("/office/discount-codes.csv")
def discount_codes_csv(request: Request, user: Role(*FINANCE)) -> Response:
    def produce(session):
        for row in lifecycle_service.list_discount_codes(session, firm_id=user.firm_id):
            yield (row.code, money(row.percent_off), money(row.amount_off), row.uses, row.max_uses, row.active, row.expires_at,
                   row.created_at)

    return csv_response(request, "discount-codes", ["code", "percent_off", "amount_off", "uses", "max_uses", "active",
                                                    "expires_at", "created_at"], produce)


@router.get("/office/tasks.csv")
def tasks_csv(request: Request, user: Role(*STAFF)) -> Response:
    _, filters = crm.task_filters(request.query_params, user)

    def produce(session):
        for t in batched(lambda limit, offset: task_service.list_tasks(
                session, firm_id=user.firm_id, limit=limit, offset=offset, **filters).rows):
            yield (t["id"], t["title"], t["status"], t["due_on"].isoformat() if t["due_on"] else None,
                   t["trader_name"], t["account"], t["case_id"], t["assignee"], t["created_by"], t["created_at"],
                   t["done_by"], t["done_at"], t["details"])

    return csv_response(request, "tasks", ["id", "task", "status", "due_on", "trader", "account", "case", "assigned_to",
                                           "created_by", "created_at", "done_by", "done_at", "details"], produce)


@router.get("/office/alerts.csv")
def alerts_csv(request: Request, user: Role(*RISK)) -> Response:
    unseen = request.query_params.get("view") == "unseen"

    def produce(session):
        def page(limit: int, offset: int):
            return near_breach.list_alerts(session, firm_id=user.firm_id, unseen_only=unseen, limit=limit,
                                           offset=offset)[0]

        for a in batched(page):
            yield (a["id"], a["account"], a["trader"], a["rule"], a["trading_day"].isoformat(), money(a["equity"]),
                   money(a["level"]), money(a["distance"]), a["reached_at"], a["created_at"], a["seen_by"],
                   a["seen_at"])

    return csv_response(request, "near-breach-alerts", ["id", "account", "trader", "limit", "trading_day", "equity",
                                                        "level", "distance", "reached_at", "raised_at", "seen_by",
                                                        "seen_at"],
                        produce)
