"""Web pages through a TestClient: act as a seeded user (session cookie) and post forms with CSRF.

    from support.staff import build_world, seed
    from support.web import browse

    page = browse(world, "fa:risk")           # the client now carries fa's risk user's session cookie
    page.get("/office/accounts")              # HTML
    page.post_form("/office/accounts/3/override", {"status": "active", "reason": "..."})  # csrf added

One client per World: ``browse`` swaps the cookie, so use one user at a time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from propcrm.api.auth import COOKIE_NAME


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"propcrm-csrf", hashlib.sha256).hexdigest()


@dataclass
class Browser:
    client: Any
    token: str

    def get(self, path: str, **kwargs):
        return self.client.get(path, follow_redirects=kwargs.pop("follow_redirects", False), **kwargs)

    def post_form(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs):
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf", csrf_for(self.token))
        return self.client.post(path, data=fields, follow_redirects=kwargs.pop("follow_redirects", False), **kwargs)


def browse(world, who: str) -> Browser:
    """``who`` like ``"fa:risk"`` or ``"risk"`` (firm fa); the World's own token of that user."""
    key = who if ":" in who else f"fa:{who}"
    token = world.tokens[key]
    world.client.cookies.clear()
    world.client.cookies.set(COOKIE_NAME, token)
    return Browser(world.client, token)
