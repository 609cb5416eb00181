"""Who may do what, on both backends: every endpoint × every role, firm isolation, a trader's own view.

The table below is the permission matrix of the API. A test checks that it names every route under
``/api/v1`` (a new route without a row fails), then calls each route as each role and as nobody:
allowed → 2xx, not allowed → 403, anonymous → 401.
"""

from __future__ import annotations

from typing import Any

import pytest

from support import routes_analytics, routes_firms, routes_governance, routes_lifecycle, routes_people
from support import routes_leaderboard
from support.routes import A1, ADMIN, ALL, EVERYONE, FINANCE, RISK, Route
from support.routes_lifecycle import STAFF
from support.staff import PASSWORD, ROLES, World

NOT_IN_TABLE = {("POST", "/api/v1/events")}  # signed by platform API keys, not users (test_api_events.py)
NOT_IN_TABLE |= routes_analytics.NOT_IN_TABLE | routes_lifecycle.NOT_IN_TABLE


@pytest.fixture
def world(world):
    """The shared world (conftest.py), plus the installation's operator (its own firm ``ops``)."""
    return routes_firms.seed_operator(world)


TABLE = [
    Route("POST", "/api/v1/login", EVERYONE, anonymous_ok=True,
          body=lambda w, who: {"firm": "ops" if who == "operator" else "fa",
                               "email": "operator@ops.example" if who == "operator" else f"{who or 'admin'}@fa.example",
                               "password": PASSWORD}),
    Route("POST", "/api/v1/logout", EVERYONE, fresh_token=True),
    Route("GET", "/api/v1/me", EVERYONE),
    Route("GET", "/api/v1/accounts", ALL),
    Route("POST", "/api/v1/accounts", ADMIN,
          body=lambda w, who: {"external_id": f"N{next(w.counter)}", "pack": "two-step-100k"}),
    Route("GET", "/api/v1/accounts/{account_id}", ALL, path=A1),
    Route("GET", "/api/v1/accounts/{account_id}/decisions", ALL, path=A1),
    Route("GET", "/api/v1/decisions", ALL),
    Route("GET", "/api/v1/trades", STAFF),
    Route("GET", "/api/v1/trades.csv", STAFF),
    Route("GET", "/api/v1/accounts/{account_id}/overrides", RISK, path=A1),
    Route("POST", "/api/v1/accounts/{account_id}/overrides", RISK,
          path=lambda w, who: str(w.new_account(status="breached")), body=lambda w, who: {"reason": "false positive"}),
    Route("POST", "/api/v1/accounts/{account_id}/emergency-stop", RISK,
          path=lambda w, who: str(w.new_account()), body=lambda w, who: {"reason": "copy trading ring"}),
    Route("GET", "/api/v1/packs", RISK),
    Route("GET", "/api/v1/packs/{version_id}", RISK, path=lambda w, who: str(w.version["fa"])),
    Route("POST", "/api/v1/packs", ADMIN, body=lambda w, who: w.pack_body()),
    Route("POST", "/api/v1/packs/{version_id}/activate", ADMIN, path=lambda w, who: str(w.new_version())),
    Route("POST", "/api/v1/packs/{version_id}/retire", ADMIN, path=lambda w, who: str(w.new_version())),
    Route("GET", "/api/v1/products", FINANCE),
    Route("POST", "/api/v1/products", FINANCE,
          body=lambda w, who: {"name": "2-Step 100k", "pack_version_id": w.version["fa"], "price": "540.00"}),
    Route("GET", "/api/v1/users", ADMIN),
    Route("POST", "/api/v1/users", ADMIN,
          body=lambda w, who: {"email": f"new{next(w.counter)}@fa.example", "password": PASSWORD, "role": "support"}),
    Route("GET", "/api/v1/api-keys", ADMIN),
    Route("POST", "/api/v1/api-keys", ADMIN, body=lambda w, who: {"platform": "ctrader"}),
    Route("POST", "/api/v1/api-keys/{key_id}/revoke", ADMIN, path=lambda w, who: w.new_key()),
    Route("GET", "/api/v1/quarantine", RISK),
    Route("GET", "/api/v1/quarantine/{entry_id}", RISK, path=lambda w, who: str(w.quarantine["fa"])),
    Route("POST", "/api/v1/quarantine/resubmit", RISK, body=lambda w, who: {"ids": [w.quarantine["fa"]]}),
    Route("GET", "/api/v1/symbols", RISK),
    Route("PUT", "/api/v1/symbols", RISK,
          body=lambda w, who: {"symbols": [{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"}]}),
    Route("POST", "/api/v1/symbols/import", RISK,
          body=lambda w, who: [{"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"}]),
]
TABLE += routes_analytics.ROUTES + routes_lifecycle.ROUTES + routes_people.ROUTES + routes_governance.ROUTES
TABLE += routes_firms.ROUTES + routes_leaderboard.ROUTES


def call(world: World, route: Route, who: str | None, *, headers: dict | None = None):
    arg = route.path(world, who)
    url = route.template.split("{")[0] + arg + (route.template.split("}", 1)[1] if "{" in route.template else "")
    body = route.body(world, who)
    kwargs: dict[str, Any] = {"headers": headers if headers is not None else world.headers(who)}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    return world.client.request(route.method, url, **kwargs)


def test_the_table_names_every_route_of_the_api(world):
    paths = world.client.app.openapi()["paths"]
    routes = {(method.upper(), path) for path, item in paths.items() if path.startswith("/api/v1") for method in item}
    named = {(r.method, r.template) for r in TABLE}
    assert routes - NOT_IN_TABLE == named, "routes without a row, or rows without a route"


def test_every_endpoint_for_every_role(world):
    wrong = []
    for route in TABLE:
        for who in (*ROLES, "operator", None):
            headers = None
            if route.fresh_token and who is not None:
                headers = {"Authorization": f"Bearer {world.fresh_token(who)}"}
            world.client.cookies.clear()
            response = call(world, route, who, headers=headers)
            if who is None:
                expected = "2xx" if route.anonymous_ok else "401"
            else:
                expected = "2xx" if who in route.allowed else "403"
            got = response.status_code
            ok = 200 <= got < 300 if expected == "2xx" else got == int(expected)
            if not ok:
                wrong.append(f"{route.method} {route.template} as {who or 'anonymous'}: expected {expected}, "
                             f"got {got} {response.text[:160]}")
            if not 200 <= got < 300:
                assert "error" in response.json(), (route.template, who, response.text)
    assert not wrong, "\n".join(wrong)


def test_a_user_of_another_firm_gets_404_for_this_firms_ids(world):
    a1 = world.accounts["A1"]
    breached = world.new_account(status="breached")
    other = []
    cases = [
        ("GET", f"/api/v1/accounts/{a1}", None),
        ("GET", f"/api/v1/accounts/{a1}/decisions", None),
        ("GET", f"/api/v1/decisions?account_id={a1}", None),
        ("GET", f"/api/v1/accounts/{a1}/overrides", None),
        ("POST", f"/api/v1/accounts/{breached}/overrides", {"reason": "not yours"}),
        ("POST", f"/api/v1/accounts/{a1}/emergency-stop", {"reason": "not yours"}),
        ("GET", f"/api/v1/packs/{world.version['fa']}", None),
        ("POST", f"/api/v1/packs/{world.version['fa']}/retire", None),
        ("POST", f"/api/v1/packs/{world.new_version()}/activate", None),
        ("GET", f"/api/v1/quarantine/{world.quarantine['fa']}", None),
        ("POST", "/api/v1/quarantine/resubmit", {"ids": [world.quarantine["fa"]]}),
        ("POST", f"/api/v1/api-keys/{world.key['fa']}/revoke", None),
    ]
    for method, url, body in cases:
        response = world.client.request(method, url, json=body, headers=world.headers("fb:admin"))
        if response.status_code != 404:
            other.append(f"{method} {url}: {response.status_code} {response.text[:120]}")
    assert not other, "\n".join(other)
    # references to another firm's pack version in a body are refused, not followed
    for url, body in (("/api/v1/products", {"name": "x", "pack_version_id": world.version["fa"], "price": "1"}),
                      ("/api/v1/accounts", {"external_id": "Z1", "pack_version_id": world.version["fa"]})):
        response = world.client.post(url, json=body, headers=world.headers("fb:admin"))
        assert response.status_code == 422 and "no rule pack version" in response.json()["error"]
    # lists show the caller's firm only
    fb = world.headers("fb:admin")
    assert [a["external_id"] for a in world.client.get("/api/v1/accounts", headers=fb).json()["items"]] == ["B1"]
    assert {d["account"] for d in world.client.get("/api/v1/decisions", headers=fb).json()["items"]} == {"B1"}
    assert {u["email"] for u in world.client.get("/api/v1/users", headers=fb).json()} == {
        "admin@fb.example", "risk@fb.example", "trader@fb.example"}
    assert [k["id"] for k in world.client.get("/api/v1/api-keys", headers=fb).json()] == [world.key["fb"]]
    assert [p["id"] for p in world.client.get("/api/v1/packs", headers=fb).json()] == [world.version["fb"]]
    assert [q["id"] for q in world.client.get("/api/v1/quarantine", headers=fb).json()["items"]] == [world.quarantine["fb"]]
    # and nothing of firm fa changed
    assert world.status_of(a1) == "active" and world.status_of(breached) == "breached"
    with world.sessions() as s:
        from propcrm.adapters.db import models as m

        assert s.get(m.ApiKey, world.key["fa"]).active
        assert s.get(m.RulePackVersion, world.version["fa"]).status == "active"


def test_a_trader_sees_only_their_own_accounts_and_decisions(world):
    mine = world.headers("trader")
    listed = world.client.get("/api/v1/accounts", headers=mine).json()
    assert listed["total"] == 2 and {a["external_id"] for a in listed["items"]} == {"A1", "A3"}
    assert world.client.get(f"/api/v1/accounts/{world.accounts['A1']}", headers=mine).status_code == 200
    for url in (f"/api/v1/accounts/{world.accounts['A2']}", f"/api/v1/accounts/{world.accounts['A2']}/decisions",
                f"/api/v1/decisions?account_id={world.accounts['A2']}", f"/api/v1/accounts/{world.accounts['B1']}"):
        response = world.client.get(url, headers=mine)
        assert response.status_code == 404, url
    decisions = world.client.get("/api/v1/decisions", headers=mine).json()
    assert decisions["total"] == 2 and {d["account"] for d in decisions["items"]} == {"A1", "A3"}
    # the search cannot reach around the scope either
    assert world.client.get("/api/v1/accounts?search=A2", headers=mine).json()["total"] == 0
    # a support user sees the whole firm
    assert world.client.get("/api/v1/accounts", headers=world.headers("support")).json()["total"] == 3
