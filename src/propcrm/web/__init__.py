"""The web application: back office (admin, risk, finance, support) and trader portal.

Server-rendered pages over the same services the JSON API uses (docs/web.md). ``mount(app)`` adds
the pages, ``/static`` and the live event stream to the FastAPI app that ``create_app`` builds.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..http.pages import STATIC, wants_html


SECURITY_HEADERS = [
    # scripts only from this site (no inline script, no eval); Chart.js styles its canvas from script,
    # which CSP allows; style attributes in the markup are allowed for the same reason
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                 b"form-action 'self'; base-uri 'none'; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer of the web application (pure ASGI: streams pass through)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not wants_html(scope.get("path", "")) and not scope.get("path", "").startswith("/static/"):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in present)]}
            await send(message)

        return await self.app(scope, receive, with_headers)


def mount(app: FastAPI) -> None:
    from .routes import ROUTERS

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)
    app.add_middleware(SecurityHeaders)


__all__ = ["mount", "wants_html"]
