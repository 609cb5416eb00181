"""The permission matrix's vocabulary: a route, who may call it, how to build its path and body.

``tests/integration/test_api_roles.py`` holds the core rows; each feature adds its rows in its own
module here (``routes_analytics.py``, ``routes_lifecycle.py``) so features do not edit one list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support.staff import ROLES, World

ALL = ROLES  # every user of a firm
EVERYONE = (*ROLES, "operator")  # and the installation's operator (roles.py): login, logout, their own password
RISK = ("admin", "risk")
FINANCE = ("admin", "finance")
ADMIN = ("admin",)


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    allowed: tuple[str, ...]
    path: Callable[[World, str], str] = lambda w, who: ""
    body: Callable[[World, str], Any] = lambda w, who: None
    anonymous_ok: bool = False
    fresh_token: bool = False  # the call ends the caller's session (logout)


def A1(w: World, who: str) -> str:
    return str(w.accounts["A1"])  # the trader user's own account
