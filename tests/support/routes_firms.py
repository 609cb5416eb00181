"""Rows of the permission matrix for firms as tenants (issue 16): the operator's firms, a firm admin's own
settings. The operator (firm ``ops``, made by :func:`seed_operator`) is in no other row: it sees firms,
never a firm's business."""

from __future__ import annotations

from propcrm.services import users
from propcrm.services.catalog import ensure_firm
from support.routes import ADMIN, Route
from support.staff import PASSWORD, World

OPERATOR = ("operator",)


def seed_operator(world: World) -> World:
    with world.sessions.begin() as s:
        ensure_firm(s, firm_id="ops", name="The operator")
        user = users.create_user(s, firm_id="ops", email="operator@ops.example", password=PASSWORD, role="operator")
        world.user_ids["ops:operator"] = user.id
        world.tokens["ops:operator"], _ = users.issue_token(s, user=user)
    return world


ROUTES = [
    Route("GET", "/api/v1/operator/firms", OPERATOR),
    Route("POST", "/api/v1/operator/firms", OPERATOR,
          body=lambda w, who: {"id": f"new-{next(w.counter)}", "name": "New Prop", "admin_email": "boss@new.example"}),
    Route("GET", "/api/v1/operator/firms/{firm_id}/settings", OPERATOR, path=lambda w, who: "fb"),
    Route("PUT", "/api/v1/operator/firms/{firm_id}/settings", OPERATOR, path=lambda w, who: "fb",
          body=lambda w, who: {"product_name": "B Prop"}),
    # suspend, then resume (in this order: the table runs on one world)
    Route("POST", "/api/v1/operator/firms/{firm_id}/suspend", OPERATOR, path=lambda w, who: "fb",
          body=lambda w, who: {"reason": "role matrix"}),
    Route("POST", "/api/v1/operator/firms/{firm_id}/resume", OPERATOR, path=lambda w, who: "fb",
          body=lambda w, who: {"reason": "role matrix"}),
    Route("GET", "/api/v1/firm/settings", ADMIN),
    Route("PUT", "/api/v1/firm/settings", ADMIN, body=lambda w, who: {"risk_email": "desk@fa.example"}),
]
