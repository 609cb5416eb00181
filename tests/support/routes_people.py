"""Rows of the permission matrix for managing people (see support/routes.py): the admin's actions on a
user (each call acts on a fresh user of firm fa) and everyone's own password and sessions."""

from __future__ import annotations

from propcrm.services import users
from support.routes import ADMIN, EVERYONE, Route
from support.staff import PASSWORD, World


def _fresh_user(w: World, who) -> str:
    """A new support user of firm fa to act on (disable, reset, …)."""
    with w.sessions.begin() as s:
        return str(users.create_user(s, firm_id="fa", email=f"someone{next(w.counter)}@fa.example",
                                     password=PASSWORD, role="support").id)


def _disabled_user(w: World, who) -> str:
    user_id = _fresh_user(w, who)
    with w.sessions.begin() as s:
        users.set_active(s, firm_id="fa", user_id=int(user_id), active=False, actor="test")
    return user_id


ROUTES = [
    Route("POST", "/api/v1/users/{user_id}/disable", ADMIN, path=_fresh_user),
    Route("POST", "/api/v1/users/{user_id}/enable", ADMIN, path=_disabled_user),
    Route("POST", "/api/v1/users/{user_id}/password", ADMIN, path=_fresh_user, body=lambda w, who: {}),
    Route("POST", "/api/v1/users/{user_id}/role", ADMIN, path=_fresh_user, body=lambda w, who: {"role": "risk"}),
    Route("POST", "/api/v1/users/{user_id}/sessions/end", ADMIN, path=_fresh_user),
    # the same password again: it changes nothing, so every role's later calls still work
    Route("POST", "/api/v1/me/password", EVERYONE,
          body=lambda w, who: {"current_password": PASSWORD, "new_password": PASSWORD}),
    Route("POST", "/api/v1/me/sessions/end", EVERYONE),
]
