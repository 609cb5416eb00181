"""Reads the accounts pages need beyond the services: display rows, the decisions feed with a rule
filter, open positions, and the equity/balance series of an account replayed through the engine.

Nothing here decides anything: figures come from ``services.accounts`` (the engine's stored state and
the account's compiled pack phase) and the series is the engine's own replay of the stored events.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Payout
from ..services import accounts as account_service
from ..services import decisions as decision_service
from ..services import equity_points
from ..services.accounts import MAX_PAGE, Page, compiled_pack, money
from ..services.errors import Invalid
from ..services.evaluation import STATE_DECODER
from ..http.pages import fmt_money

MAX_POINTS = 2000


# --------------------------------------------------------------------------------------------------
# account rows: the accounts service's items (stored figures, migration 0007)


def list_rows(session: Session, *, firm_id: str, trader_id: int | None = None, **filters: Any) -> Page:
    """``services.accounts.list_accounts`` (filters left as ``None`` are not applied)."""
    known = {k: v for k, v in filters.items() if v is not None}
    return account_service.list_accounts(session, firm_id=firm_id, trader_id=trader_id, **known)


def rows_for(session: Session, *, firm_id: str, trader_id: int | None, ids: list[int]) -> list[dict[str, Any]]:
    """The list items of these accounts (only those in the caller's scope), for live updates."""
    if not ids:
        return []
    return list(account_service.account_rows(session, firm_id=firm_id, trader_id=trader_id, ids=ids))


def _pct_text(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return f"{Decimal(str(value)).quantize(Decimal('0.1'))} %"


def meter_value(value: Any) -> str:
    """A target percentage clamped to 0–100 for a ``<meter>`` (text keeps the exact value)."""
    if value is None or value == "":
        return "0"
    number = min(max(Decimal(str(value)), Decimal(0)), Decimal(100))
    return format(number, "f")


def display(item: dict[str, Any]) -> dict[str, Any]:
    """A row as the page shows it: every field already text (the live updates send exactly this)."""
    required = item.get("trading_days_required")
    days = item.get("trading_days")
    score = item.get("risk_score")
    return {
        "id": item["id"],
        "status": item["status"],
        "external_id": item["external_id"],
        "trader": item.get("trader_name") or (f"trader {item['trader_id']}" if item.get("trader_id") else "—"),
        "phase": item["phase"],
        "balance": fmt_money(item.get("balance")),
        "equity": fmt_money(item.get("equity")),
        "daily_distance": fmt_money(item.get("daily_distance")),
        "daily_floor": fmt_money(item.get("daily_floor")),
        "max_loss_distance": fmt_money(item.get("max_loss_distance")),
        "max_loss_level": fmt_money(item.get("max_loss_level")),
        "target_pct": _pct_text(item.get("target_pct")),
        "target_meter": meter_value(item.get("target_pct")),
        "trading_days": "—" if days is None else (f"{days} / {required}" if required else str(days)),
        "risk_score": "—" if score is None else str(score),
        "nearest": item.get("nearest_pct"),  # the "nearest limit" sort's value (no column of its own)
    }


# --------------------------------------------------------------------------------------------------
# decisions: the firm's feed with a rule filter (the service filters by kind and account)


def decisions_feed(session: Session, *, firm_id: str, trader_id: int | None = None, kind: str | None = None,
                   rule: str | None = None, account_id: int | None = None, limit: int = 50, offset: int = 0) -> Page:
    """Decisions of the firm newest first: ``services.decisions.list_decisions`` (with its ``rule`` filter)."""
    return decision_service.list_decisions(session, firm_id=firm_id, trader_id=trader_id, account_id=account_id,
                                           kind=kind, rule=rule, limit=limit, offset=offset)


def rules_of_firm(session: Session, *, firm_id: str) -> list[str]:
    """The rule ids of the firm's live pack versions (for the feed's rule filter)."""
    found: set[str] = set()
    for version in session.scalars(select(m.RulePackVersion).where(
            m.RulePackVersion.firm_id == firm_id, m.RulePackVersion.status != "draft").limit(50)):
        try:
            compiled = compiled_pack(version)
        except Exception:  # noqa: BLE001 - an unreadable pack only loses its names in a filter
            continue
        for program in compiled.phases:
            for rule in getattr(program, "rules", ()):
                rule_id = getattr(rule, "rule_id", None)
                if rule_id:
                    found.add(rule_id)
            for rule in program.limits:
                found.add(rule.rule_id)
            if program.target is not None:
                found.add(program.target.rule_id)
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# the account page: open positions and the series


def open_positions(session: Session, account: m.Account) -> list[dict[str, Any]]:
    row = session.get(m.AccountState, account.id)
    if row is None:
        return []
    st = STATE_DECODER.decode(row.state)
    return [{"position": key, "symbol": p.symbol, "side": p.side, "lots": p.lots, "price": p.price, "sl": p.sl,
             "opened_at": p.opened_at, "realised": p.realised}
            for key, p in sorted(st.positions.items(), key=lambda kv: kv[1].opened_at)]


def _ms(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return int(ts.timestamp() * 1000)


def breach_marks(session: Session, account: m.Account) -> list[dict[str, Any]]:
    """The account's breach decisions that still stand (a re-bind's replay may supersede one), oldest first, as
    chart marks: time (epoch ms), the value that breached, the level it crossed, the rule and its explanation."""
    rows = session.execute(select(m.Decision.ts, m.Decision.rule, m.Decision.value, m.Decision.threshold,
                                  m.Decision.message)
                           .where(m.Decision.firm_id == account.firm_id, m.Decision.account_id == account.id,
                                  m.Decision.kind == "breach", m.Decision.superseded_at.is_(None))
                           .order_by(m.Decision.ts, m.Decision.id).limit(20))
    return [{"t": _ms(_aware(ts)), "time": _aware(ts).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
             "rule": rule, "value": money(value), "threshold": money(threshold), "message": message}
            for ts, rule, value, threshold, message in rows]


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.timezone.utc)


def _finite(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value.is_finite() else None


def downsample(points: list[dict[str, Any]], limit: int = MAX_POINTS) -> list[dict[str, Any]]:
    """At most ``limit`` points in time order, keeping the first, the last, every point with a decision
    and, per bucket, the lowest and the highest equity (so no breach or peak disappears)."""
    if len(points) <= limit:
        return points
    keep = {0, len(points) - 1}
    keep.update(i for i, p in enumerate(points) if p["decisions"])
    budget = max(limit - len(keep), 2)
    buckets = max(budget // 2, 1)
    size = len(points) / buckets
    for b in range(buckets):
        lo, hi = int(b * size), min(int((b + 1) * size), len(points))
        if lo >= hi:
            continue
        chunk = range(lo, hi)
        keep.add(min(chunk, key=lambda i: points[i]["equity"]))
        keep.add(max(chunk, key=lambda i: points[i]["equity"]))
    chosen = sorted(keep)
    if len(chosen) > limit:  # too many decisions: thin them evenly, keeping both ends
        step = len(chosen) / limit
        chosen = sorted({chosen[0], chosen[-1], *(chosen[int(i * step)] for i in range(limit - 2))})
    return [points[i] for i in chosen]


def series(session: Session, account: m.Account, *, limit: int = MAX_POINTS) -> dict[str, Any]:
    """The chart of an account: equity, balance, daily floor, max-loss level and target over time (money
    as decimal text; times in epoch milliseconds), plus the datasets in the shape ``app.js`` draws. The
    points are the equity-points projection the evaluation writes in both deployments
    (:mod:`propcrm.services.equity_points`; ``count``: the points stored), never a replay of the log."""
    version = session.get(m.RulePackVersion, account.pack_version_id)
    program = compiled_pack(version).phase(account.phase)
    points = equity_points.read(session, firm_id=account.firm_id, account_id=account.id)
    shown = downsample(points, limit)
    target = program.target.target_balance if program.target is not None else None
    texts: dict[Decimal, str | None] = {}

    def text(value: Decimal | None) -> str | None:
        """``services.accounts.money`` (decimal text without trailing zeros), memoised: levels repeat."""
        if value is None:
            return None
        found = texts.get(value)
        if found is None:
            if not value.is_finite():
                return None
            found = format(value, "f")
            if "." in found:
                found = found.rstrip("0").rstrip(".")
            if found in ("0", "-0"):
                found = "0"
            texts[value] = found
        return found

    rows = [{"t": p["t"], "equity": text(p["equity"]), "balance": text(p["balance"]),
             "daily_floor": text(p["daily_floor"]), "max_loss": text(p["max_loss"]),
             "decisions": [f"{kind}: {rule}" for kind, rule in p["decisions"]]} for p in shown]

    def line(key: str) -> list[list[Any]]:
        return [[row["t"], row[key]] for row in rows]

    datasets = [
        {"label": "Equity", "data": line("equity"), "color": "#1f5eff"},
        {"label": "Balance", "data": line("balance"), "color": "#137a3a", "stepped": True},
        {"label": "Daily floor", "data": line("daily_floor"), "color": "#a15c00", "dashed": True, "stepped": True},
        {"label": "Max-loss level", "data": line("max_loss"), "color": "#b3261e", "dashed": True, "stepped": True},
    ]
    if target is not None and shown:
        datasets.append({"label": "Target", "data": [[shown[0]["t"], money(target)], [shown[-1]["t"], money(target)]],
                         "color": "#6b21a8", "dashed": True})
    marks = breach_marks(session, account)
    if marks:
        # the breach moment: a marker at the breaching decision's time on the equity it saw, and the level it
        # crossed at that time, so the chart shows where the line went through the floor
        datasets.append({"label": "Breach", "data": [[b["t"], b["value"]] for b in marks], "color": "#b3261e",
                         "marker": "crossRot"})
        datasets.append({"label": "Breached level", "data": [[b["t"], b["threshold"]] for b in marks],
                         "color": "#b3261e", "marker": "line"})
    return {
        "breaches": marks,
        "account": account.external_id,
        "currency": program.pack.currency,
        "initial": money(program.initial),
        "target": money(target),
        "count": len(points),
        "shown": len(shown),
        "points": rows,
        "datasets": datasets,
        "y_label": program.pack.currency,
    }


__all__ = ["account_payouts", "breach_marks", "user_emails", "decisions_feed", "display", "downsample", "list_rows", "open_positions", "rows_for",
           "rules_of_firm", "series"]


# --------------------------------------------------------------------------------------------------
# the account page's related lists: payouts, and people by name


def account_payouts(session: Session, *, firm_id: str, account_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The account's payouts, newest first, with what the trader gets."""
    rows = session.scalars(select(Payout).where(Payout.firm_id == firm_id, Payout.account_id == account_id)
                           .order_by(Payout.id.desc()).limit(limit))
    return [{"id": p.id, "status": p.status, "trader_amount": p.trader_amount, "created_at": p.created_at,
             "decided_at": p.decided_at} for p in rows]


def user_emails(session: Session, *, firm_id: str, ids: set[int]) -> dict[int, str]:
    """Users of the firm by id → e-mail (for "by whom" columns that store a user id)."""
    if not ids:
        return {}
    return dict(session.execute(select(m.User.id, m.User.email).where(m.User.firm_id == firm_id,
                                                                       m.User.id.in_(ids))).all())
