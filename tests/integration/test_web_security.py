"""The web application's locks, checked on every page and form route it has (found by walking the app):
log-in redirects, CSRF, foreign origins, security headers, the session cookie and the login redirect."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from support.routes_firms import seed_operator
from support.staff import PASSWORD, build_world, seed
from support.web import browse, csrf_for

from propcrm.web import wants_html

# the only pages a logged-out visitor may open; a certificate's verification page is public by design (its id
# is the secret: 144 random bits; it shows only the certificate's facts: test_web_payout_documents.py)
OPEN = {"/", "/login", "/verify/{certificate_id}",
        "/login/brand.css", "/login/logo"}  # a firm's login page branding (docs/tenants.md): product colour and logo only


@pytest.fixture
def world(tmp_path):
    app, world = build_world(f"sqlite:///{tmp_path / 'web.db'}")
    with world.client:
        world.app = app
        yield seed_operator(seed(world))


def web_routes(app, method: str) -> list[str]:
    """Every page (GET) or form (POST) route of the web application, path parameters set to 1."""
    from propcrm.web.routes import ROUTERS

    paths = []
    for route in (r for router in ROUTERS for r in router.routes):
        if isinstance(route, APIRoute) and method in route.methods and wants_html(route.path) and route.path not in OPEN:
            paths.append(re.sub(r"\{[^}]+\}", "1", route.path))
    return sorted(set(paths))


def test_the_web_application_has_pages_and_forms(world):
    assert web_routes(world.app, "GET"), "no page routes found"


def test_every_page_sends_a_logged_out_visitor_to_the_login_form_and_back(world):
    world.client.cookies.clear()
    for path in web_routes(world.app, "GET"):
        if path == "/live":
            continue
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/login?next={path.replace(':', '%3A')}", path


def test_every_form_refuses_a_logged_out_post_a_post_without_csrf_and_a_foreign_origin(world):
    posts = web_routes(world.app, "POST")
    assert "/logout" in posts
    for path in posts:
        world.client.cookies.clear()
        assert world.client.post(path, data={}, follow_redirects=False).status_code in (401, 403), path
        page = browse(world, "ops:operator" if path.startswith("/operator/") else "fa:admin")  # who may post it
        refused = page.post_form(path, {}, csrf=False)
        assert refused.status_code == 403, path
        assert "expired" in refused.text or "cross-site" in refused.text, path
        forged = page.post_form(path, {"csrf": "0" * 64})
        assert forged.status_code == 403, path
        foreign = page.post_form(path, {}, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "cross-site" in foreign.text, path


def test_a_form_token_belongs_to_its_session(world):
    other = world.tokens["fa:risk"]
    page = browse(world, "fa:admin")
    assert page.post_form("/logout", {"csrf": csrf_for(other)}).status_code == 403
    response = page.post_form("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert page.get("/office/accounts").status_code == 303  # the session really ended


def test_pages_carry_a_strict_content_security_policy_and_no_framing(world):
    response = world.client.get("/login")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text  # no inline script anywhere in the layout


def login(world, *, firm="fa", email="risk@fa.example", password=PASSWORD, next_path="", origin=None):
    world.client.cookies.clear()
    form = world.client.get("/login")
    token = form.cookies.get("propcrm_login_csrf")
    assert token and f'value="{token}"' in form.text
    headers = {"Origin": origin} if origin else {}
    return world.client.post("/login", data={"firm": firm, "email": email, "password": password, "csrf": token,
                                             "next": next_path}, headers=headers, follow_redirects=False)


def test_login_sets_an_httponly_samesite_session_cookie_and_goes_home(world):
    response = login(world)
    assert response.status_code == 303 and response.headers["location"] == "/office/accounts"
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("propcrm_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    trader = login(world, email="trader@fa.example")
    assert trader.headers["location"] == "/portal"


def test_login_refuses_wrong_passwords_without_saying_which_part_was_wrong_and_audits_it(world):
    response = login(world, password="Tr0ub4dor-and-3")
    assert response.status_code == 401
    assert "Wrong firm, e-mail or password." in response.text
    assert "propcrm_session" not in response.headers.get("set-cookie", "")
    failed = world.audit("user.login_failed")
    assert failed and "Tr0ub4dor-and-3" not in repr([(e.before, e.after) for e in failed])


def test_login_refuses_a_missing_token_and_a_foreign_origin(world):
    world.client.cookies.clear()
    response = world.client.post("/login", data={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD},
                                 follow_redirects=False)
    assert response.status_code == 403 and "propcrm_session" not in response.headers.get("set-cookie", "")
    assert login(world, origin="https://evil.example").status_code == 403


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_the_site(world, target):
    response = login(world, next_path=target)
    assert response.status_code == 303 and response.headers["location"] == "/office/accounts"


def test_login_goes_back_to_the_page_that_asked_for_it(world):
    assert login(world, next_path="/office/decisions?kind=breach").headers["location"] == "/office/decisions?kind=breach"


def test_the_login_form_escapes_what_was_typed(world):
    response = login(world, firm='"><script>alert(1)</script>')
    assert response.status_code == 401
    assert "<script>alert(1)</script>" not in response.text and "&lt;script&gt;" in response.text


@pytest.mark.parametrize("path", ["/office/audit/verify", "/office/packs/two-step-100k/whatif?run=1"])
def test_costly_pages_refuse_a_navigation_started_by_another_site(world, path):
    # SameSite=Lax still sends the session cookie on a cross-site top-level GET: the browser's
    # Sec-Fetch-Site header tells, and a what-if or a chain verification is not started for another site
    page = browse(world, "fa:admin")
    refused = page.get(path, headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and "another site" in refused.text
    assert page.get(path, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert page.get(path).status_code == 200  # not a browser, or a typed address: allowed
