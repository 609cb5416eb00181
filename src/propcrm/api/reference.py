"""The API reference at ``/docs``: Swagger UI over ``/openapi.json``, served entirely by this app.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; the web application's
Content Security Policy (``script-src 'self'``, see :mod:`propcrm.web`) blocks both, so that page was blank.
Here the assets come from ``/static/vendor`` (npm ``swagger-ui-dist``, pinned by package-lock.json and copied
by ``make``) and the page starts them with ``/static/api-reference.js``. ReDoc and the OAuth2 redirect page
are turned off in ``create_app`` (a CDN script, and an inline script for an OAuth2 flow the API does not have).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import escape

from ..http.pages import VENDOR

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — API reference</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui.css">
<link rel="icon" type="image/png" href="/static/vendor/swagger-ui-favicon.png">
</head>
<body>
<noscript>The API reference needs JavaScript; the OpenAPI document itself is at <a href="{openapi}">{openapi}</a>.</noscript>
<div id="swagger-ui" data-openapi-url="{openapi}">{missing}</div>
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/api-reference.js"></script>
</body>
</html>
"""

_MISSING = ("<p>Swagger UI is not installed (run <code>make run</code>, which copies it from npm into "
            "static/vendor); the OpenAPI document is at <a href=\"{openapi}\">{openapi}</a>.</p>")


@router.get("/docs", response_class=HTMLResponse)
def api_reference(request: Request) -> HTMLResponse:
    openapi = escape(request.app.openapi_url or "/openapi.json")
    missing = "" if (VENDOR / "swagger-ui-bundle.js").exists() else _MISSING.format(openapi=openapi)
    return HTMLResponse(_PAGE.format(title=escape(request.app.title), openapi=openapi, missing=missing))


__all__ = ["router"]
