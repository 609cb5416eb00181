"""The audit log viewer: search the firm's entries, expand one to its before/after and hashes, and
verify the hash chain exactly as ``propcrm audit verify`` does.

Roles: admin and risk (the JSON API has no audit route; the menu's "Audit log"). A user sees the
entries of their own firm only. "Verify chain" is a GET: it reads the log and writes nothing (a
read-only unit of work); a navigation another site starts is refused (``Sec-Fetch-Site``), because
``SameSite=Lax`` still sends the cookie on a cross-site GET and the check costs seconds of work.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...http.pages import Role, SameSiteOnly, render
from ...roles import RISK
from .. import queries_audit as q

router = APIRouter()

UTC = dt.timezone.utc
MAX_SEQ = 2**63 - 1
Text = Annotated[str, Query(max_length=200)]
Seq = Annotated[int | None, Query(ge=0, le=MAX_SEQ)]
ACTIONS = ("account.", "decision.", "user.", "payout.", "pack.", "case.", "trader.", "order.", "scaling.",
           "api_key.", "platform.", "notification.", "quarantine.", "product.", "lead.", "discount.",
           "emergency_stop", "lift_stop", "resolve_violation", "outbox.dead")
ENTITIES = ("account", "user", "payout", "rule_pack", "case", "trader", "order", "scaling", "api_key", "product")


def parse_when(text: str, *, end: bool) -> dt.datetime | None:
    """``2026-03-02`` (a whole day: the end bound is the next midnight) or ``2026-03-02T14:05[:00]``, UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time(), tzinfo=UTC)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: a day past 9999-12-31 or before 0001-01-01 in UTC
        raise ValueError(f"“{text}” is not a date (2026-03-02) or a time (2026-03-02T14:05) "
                         "between the years 1 and 9999") from None


@router.get("/office/audit")
def audit_log(request: Request, user: Role(*RISK), session: Db,
              actor: Text = "", action: Text = "", entity: Text = "", entity_id: Text = "",
              since: Annotated[str, Query(max_length=40)] = "", until: Annotated[str, Query(max_length=40)] = "",
              text: Text = "", seq: Annotated[str, Query(max_length=40)] = "",
              before: Seq = None, after: Seq = None) -> Response:
    # every field may come empty from the search form, so all are text here
    form = {"actor": actor.strip(), "action": action.strip(), "entity": entity.strip(),
            "entity_id": entity_id.strip(), "since": since.strip(), "until": until.strip(), "text": text.strip(),
            "seq": seq.strip()}
    errors = []
    number = None
    if form["seq"]:
        if form["seq"].isascii() and form["seq"].isdigit() and int(form["seq"]) <= MAX_SEQ:
            number = int(form["seq"])
        else:
            errors.append(f"Entry #: “{form['seq']}” is not an entry number")
    bounds = {}
    for name in ("since", "until"):
        try:
            bounds[name] = parse_when(form[name], end=name == "until")
        except ValueError as exc:
            errors.append(f"{'From' if name == 'since' else 'To'}: {exc}")
    if errors:
        return render(request, "audit/log.html", {"form": form, "errors": errors, "found": None,
                                                  "actions": ACTIONS, "entities": ENTITIES, "query": ""},
                      status=422)
    filters = q.Filters(actor=form["actor"], action=form["action"], entity=form["entity"],
                        entity_id=form["entity_id"], since=bounds["since"], until=bounds["until"],
                        text=form["text"], seq=number)
    found = q.search(session, firm_id=user.firm_id, filters=filters, before=before, after=after)
    return render(request, "audit/log.html", {"form": form, "errors": [], "found": found, "filtered": filters.any(),
                                              "actions": ACTIONS, "entities": ENTITIES,
                                              "query": _query(request)})


def _query(request: Request) -> str:
    """The current filters as a query string (without the page position), for the pager's links."""
    return urlencode([(key, value) for key, value in request.query_params.multi_items()
                      if key not in ("before", "after") and value])


@router.get("/office/audit/verify", dependencies=[SameSiteOnly])
def verify_chain(request: Request, user: Role(*RISK), session: Db) -> Response:
    result = q.verify_bounded(session, firm_id=user.firm_id)
    status = 200
    if result is None:
        status = 503
    return render(request, "audit/verify.html", {"v": result, "budget": q.VERIFY_BUDGET_S}, status=status)
