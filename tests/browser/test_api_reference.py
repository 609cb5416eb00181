"""The API reference at /docs in a real browser: Swagger UI starts under the app's Content Security Policy
and lists the API's operations, loading nothing from another origin (it was a blank page when its assets
came from a CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit


def test_the_api_reference_renders_every_operation_from_this_site_alone(site, browser, shot):
    context = browser.new_context(base_url=site.url, viewport={"width": 1366, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        requested: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requested.append(request.url))
        page.goto("/docs")
        page.locator(".opblock").first.wait_for()
        assert page.locator(".info .title").first.inner_text().startswith("propcrm")
        operations = {(block.locator(".opblock-summary-method").inner_text().strip(),
                       block.locator(".opblock-summary-path").inner_text().replace("\u200b", "").strip())
                      for block in page.locator(".opblock").all()}
        assert ("POST", "/api/v1/login") in operations
        assert ("POST", "/api/v1/events") in operations
        assert ("GET", "/api/v1/accounts") in operations
        documented = site_openapi_operations(site)
        assert operations == documented
        # an operation opens with its parameters and a "Try it out" button
        page.locator(".opblock", has_text="/api/v1/accounts").first.locator(".opblock-summary").first.click()
        page.get_by_role("button", name="Try it out").first.wait_for()
        shot(page, "api-reference", full_page=False)
        assert errors == [], (errors, requested)
        site_origin = urlsplit(site.url).netloc
        foreign = [url for url in requested if urlsplit(url).scheme in ("http", "https")
                   and urlsplit(url).netloc != site_origin]
        assert foreign == []
    finally:
        context.close()


def site_openapi_operations(site) -> set[tuple[str, str]]:
    import httpx

    paths = httpx.get(f"{site.url}/openapi.json", timeout=10).json()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations
            if method in ("get", "post", "put", "patch", "delete", "head", "options")}


def _operation(page, method: str, path: str):
    return page.locator(".opblock").filter(
        has=page.locator(".opblock-summary-method", has_text=method)).filter(
        has=page.locator(f".opblock-summary-path[data-path='{path}']"))


def _try(page, method: str, path: str, body: str | None = None) -> str:
    """Open an operation, "Try it out", optionally type the JSON body, "Execute"; the answer's status code."""
    operation = _operation(page, method, path)
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    if body is not None:
        operation.locator("textarea.body-param__text").fill(body)
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for()
    return status.inner_text().strip()


def test_a_person_logs_in_and_calls_the_api_from_the_reference(site, browser):
    """"Try it out" works under the policy: the login's session cookie carries the next call (same origin)."""
    import json

    context = browser.new_context(base_url=site.url, viewport={"width": 1366, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto("/docs")
        page.locator(".opblock").first.wait_for()
        assert _try(page, "GET", "/api/v1/me") == "401"
        login = json.dumps({"firm": "acme", "email": site.email("risk"), "password": site.password})
        assert _try(page, "POST", "/api/v1/login", login) == "200"
        page.reload()
        page.locator(".opblock").first.wait_for()
        assert _try(page, "GET", "/api/v1/me") == "200"
        me = _operation(page, "GET", "/api/v1/me").locator(".live-responses-table .response-col_description pre").first
        assert "risk@acme.example" in me.inner_text()
    finally:
        context.close()
