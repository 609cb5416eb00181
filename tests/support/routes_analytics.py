"""Rows of the permission matrix for the analytics feature's routes (see support/routes.py)."""

from __future__ import annotations

from support.analytics import new_case
from support.routes import A1, ADMIN, ALL, FINANCE, RISK, Route  # noqa: F401


def _case(w, who):
    return str(new_case(w))


ROUTES: list[Route] = [
    Route("GET", "/api/v1/cases", RISK),
    Route("GET", "/api/v1/cases/{case_id}", RISK, path=_case),
    Route("POST", "/api/v1/cases/{case_id}/status", RISK, path=_case,
          body=lambda w, who: {"status": "under_review", "reason": "looking at the trades"}),
    Route("POST", "/api/v1/cases/{case_id}/notes", RISK, path=_case, body=lambda w, who: {"text": "called the trader"}),
    Route("POST", "/api/v1/cases/{case_id}/assign", RISK, path=_case,
          body=lambda w, who: {"user_id": w.user_ids["fa:risk"]}),
    Route("GET", "/api/v1/accounts/{account_id}/risk", RISK, path=A1),
    Route("POST", "/api/v1/analysis/run", RISK, body=lambda w, who: {}),
    Route("POST", "/api/v1/accounts/{account_id}/payment-methods", ("admin", "risk", "finance"), path=A1,
          body=lambda w, who: {"kind": "card", "fingerprint": f"fp-{who}"}),
]
# routes not called by users (e.g. signed provider webhooks), each tested on its own
NOT_IN_TABLE: set[tuple[str, str]] = set()
