"""The firm dashboard: the business numbers as charts, with every chart's data as a table.

Roles: admin, risk and finance open the page. The business numbers (pass rates, days to pass,
breaches by rule, payout ratio, open liability) are ``services.business.business_numbers``, the
same function as ``GET /api/v1/metrics/business``, and shown only to the API's roles for it (admin,
finance). Everyone on the page sees accounts by status and decisions per day (counts of what every
staff role may list through ``/api/v1/accounts`` and ``/api/v1/decisions``).

Charts are drawn by ``static/dashboard.js`` from JSON embedded in the page; amounts are shown as
exact decimal text and turned into numbers only for drawing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...services import business
from ...http.pages import Role, render
from ...roles import MANAGERS
from .. import queries_audit as q

router = APIRouter()

READERS = MANAGERS
NUMBERS = ("admin", "finance")  # GET /api/v1/metrics/business
DEFAULT_DAYS, MAX_DAYS = 30, 366


def _percent(ratio: str | None) -> str | None:
    """``"0.6667"`` → ``"66.67"`` (exact: a shift of the decimal point)."""
    return None if ratio is None else format(Decimal(ratio).scaleb(2), "f")


def _charts(numbers: dict[str, Any] | None, statuses: list[tuple[str, int]], per_day: dict[str, Any]) -> dict:
    data: dict[str, Any] = {
        "statuses": {"labels": [s for s, _ in statuses], "counts": [n for _, n in statuses]},
        "decisions": per_day,
    }
    if numbers is not None:
        groups = numbers["pass_rates"]
        data["pass_rates"] = {
            "labels": [f"{g['product'] or 'no product'} · {g['phase']}" for g in groups],
            "percent": [_percent(g["pass_rate"]) for g in groups],
            "passed": [g["passed"] for g in groups], "failed": [g["failed"] for g in groups],
            "median": [g["days_to_pass_median"] for g in groups], "mean": [g["days_to_pass_mean"] for g in groups],
        }
        rules = sorted({b["rule"] for b in numbers["breaches_by_rule"]},
                       key=lambda r: -sum(b["count"] for b in numbers["breaches_by_rule"] if b["rule"] == r))
        phases = sorted({b["phase"] or "" for b in numbers["breaches_by_rule"]})
        counts = {(b["rule"], b["phase"] or ""): b["count"] for b in numbers["breaches_by_rule"]}
        data["breaches"] = {"labels": rules,
                            "phases": {p: [counts.get((r, p), 0) for r in rules] for p in phases}}
    return data


def date_range(first: str | None, last: str | None, *, today: dt.date) -> tuple[dt.date, dt.date, str | None]:
    """The decisions chart's days from the form's ``from``/``to`` (``YYYY-MM-DD``, UTC days, both included):
    by default the last 30 days; at most ``MAX_DAYS``. A bad value is named and the default used instead."""
    try:
        end = dt.date.fromisoformat(last) if last else today
        start = dt.date.fromisoformat(first) if first else end - dt.timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        return today - dt.timedelta(days=DEFAULT_DAYS - 1), today, "from and to: dates such as 2026-03-02"
    if start > end:
        return today - dt.timedelta(days=DEFAULT_DAYS - 1), today, "from: must not be after to"
    if (end - start).days + 1 > MAX_DAYS:
        return end - dt.timedelta(days=MAX_DAYS - 1), end, f"at most {MAX_DAYS} days at once: shown up to {end}"
    return start, end, None


@router.get("/office/dashboard")
def dashboard(request: Request, user: Role(*READERS), session: Db) -> Response:
    # the business numbers as computed at most 30 s ago with nothing audited or decided since
    # (services.firm_cache: reading the firm's sets costs 150-260 ms of CPU at 100,000 accounts)
    numbers, numbers_at = (business.cached_numbers(session, firm_id=user.firm_id) if user.role in NUMBERS
                           else (None, None))
    statuses = q.accounts_by_status(session, firm_id=user.firm_id)
    params = request.query_params
    first, last, problem = date_range((params.get("from") or "")[:10], (params.get("to") or "")[:10],
                                      today=dt.datetime.now(dt.timezone.utc).date())
    per_day = q.decisions_per_day(session, firm_id=user.firm_id, days=(last - first).days + 1, today=last)
    return render(request, "dashboard/dashboard.html", {
        "n": numbers, "numbers_at": numbers_at, "statuses": statuses, "per_day": per_day, "total_accounts": sum(c for _, c in statuses),
        "chart_data": _charts(numbers, statuses, per_day), "percent": _percent,
        "decisions_in_range": sum(per_day["totals"]), "range": {"from": first, "to": last, "problem": problem},
    })
