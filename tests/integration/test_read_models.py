"""One read model per list, used by the API and the pages alike (issue 13): the same filters give the same rows
in the same order, whichever door they are asked through. Decisions and accounts share their service query;
cases share ``services.cases.cases_where`` and its order (the page adds counts and pages)."""

from __future__ import annotations

import datetime as dt

from propcrm.adapters.db.models_analytics import Case, CaseAccount
from propcrm.services import cases as case_service
from propcrm.web import queries_cases

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)


def _cases(world) -> dict[str, int]:
    """Cases of both firms, of two detectors and every status, with tied scores (the order's tie-break)."""
    made = {}
    with world.sessions.begin() as s:
        account = next(iter(world.accounts.values()))
        for n, (firm, detector, status, score) in enumerate((
                ("fa", "copy", "open", 70), ("fa", "copy", "under_review", 90), ("fa", "hedge", "open", 70),
                ("fa", "hedge", "dismissed", 95), ("fa", "copy", "confirmed", 10), ("fb", "copy", "open", 99))):
            case = Case(firm_id=firm, detector=detector, fingerprint=f"{detector}:{n}", status=status, title=f"c{n}",
                        summary="", score=score, evidence={}, opened_at=T0, updated_at=T0)
            s.add(case)
            s.flush()
            if firm == "fa" and n % 2 == 0:
                s.add(CaseAccount(case_id=case.id, account_id=account, firm_id="fa"))
            made[f"c{n}"] = case.id
    return made


def test_the_case_list_is_the_same_through_the_api_and_the_page(world):
    made = _cases(world)
    risk = world.headers("risk")

    def api(**params) -> list[int]:
        answer = world.client.get("/api/v1/cases", headers=risk, params={**params, "limit": 500})
        assert answer.status_code == 200, answer.text
        return [row["id"] for row in answer.json()["items"]]

    def page(**filters) -> list[int]:
        with world.sessions() as s:
            return [row["id"] for row in queries_cases.case_list(s, firm_id="fa", **filters).rows]

    assert page(status="all") == api()
    for status in ("open", "under_review", "confirmed", "dismissed"):
        assert page(status=status) == api(status=status), status
    assert page(status="all", kind="hedge") == api(detector="hedge") == [made["c3"], made["c2"]]
    assert page(status="active") == [made["c1"], made["c2"], made["c0"]]  # strongest first, then the newest
    assert made["c5"] not in api()  # another firm's
    with world.sessions() as s:  # the filter is one function: the page's "mine" and the API's account alike
        assert {c.id for c in s.scalars(case_service.cases_where(firm_id="fa", account_id=next(iter(
            world.accounts.values()))))} == {made["c0"], made["c2"], made["c4"]}


def test_the_decisions_and_accounts_lists_are_the_same_through_the_api_and_the_page(world):
    from propcrm.web import queries_accounts

    with world.sessions() as s:
        feed = queries_accounts.decisions_feed(s, firm_id="fa", limit=200)
        rows = queries_accounts.list_rows(s, firm_id="fa", sort="-id", limit=200)
    risk = world.headers("risk")
    api_decisions = world.client.get("/api/v1/decisions", headers=risk, params={"limit": 200}).json()
    assert [(d["id"], d["kind"], d["rule"]) for d in api_decisions["items"]] == \
        [(d["id"], d["kind"], d["rule"]) for d in feed.to_dict()["items"]]
    assert api_decisions["total"] == feed.total > 0
    api_accounts = world.client.get("/api/v1/accounts", headers=risk, params={"sort": "-id", "limit": 200}).json()
    assert [a["id"] for a in api_accounts["items"]] == [a["id"] for a in rows.to_dict()["items"]]
    assert api_accounts["total"] == rows.total > 0
