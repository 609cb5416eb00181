"""The roles of propcrm's users and the groups of them that routes and pages allow — one place.

The API (:func:`propcrm.http.auth.require_roles`) and the pages (:func:`propcrm.http.pages.Role`) check the
same tuples, and the navigation mirrors them, so a role that may call an endpoint also sees its page.

``operator`` stands above the firms (docs/tenants.md): it onboards firms and manages each firm's settings,
and sees no firm's business data; a firm's ``admin`` manages only its own firm.
"""

from __future__ import annotations

FIRM_ROLES = ("admin", "risk", "finance", "support", "trader")  # the people of one firm
OPERATOR = ("operator",)  # the installation's operator (white label): onboards firms, sets their settings
ROLES = (*FIRM_ROLES, *OPERATOR)  # every role a user may have
ALL_ROLES = FIRM_ROLES  # "any user of a firm": an operator sees firms, never a firm's accounts or traders
STAFF = ("admin", "risk", "finance", "support")
STAFF_ROLES = STAFF
RISK = ("admin", "risk")
FINANCE = ("admin", "finance")
ADMIN = ("admin",)
TRADER = ("trader",)
MANAGERS = ("admin", "risk", "finance")  # dashboards, payouts and scalings: staff minus support
KYC = ("admin", "risk", "support")  # review identity documents and set KYC: the firm's compliance work
SUPPORT_DESK = ("admin", "support")  # the support inbox: answer traders, assign and close conversations
LEADERBOARD = ("admin", "risk", "support")  # see every leaderboard entry and hide one (moderation)
CRM = STAFF  # trader list and profile (read); notes by every staff role, messages by SUPPORT_DESK

FIRM_SETTINGS = ("admin", "operator")  # a firm's own settings: its admin, or the operator for any firm

__all__ = ["ADMIN", "ALL_ROLES", "CRM", "FINANCE", "FIRM_ROLES", "FIRM_SETTINGS", "KYC", "LEADERBOARD", "MANAGERS",
           "OPERATOR", "RISK", "ROLES", "STAFF", "STAFF_ROLES", "SUPPORT_DESK", "TRADER"]
