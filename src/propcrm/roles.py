"""The roles of propcrm's users and the groups of them that routes and pages allow — one place.

The API (:func:`propcrm.http.auth.require_roles`) and the pages (:func:`propcrm.http.pages.Role`) check the
same tuples, and the navigation mirrors them, so a role that may call an endpoint also sees its page.
"""

from __future__ import annotations

ROLES = ("admin", "risk", "finance", "support", "trader")
ALL_ROLES = ROLES
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

__all__ = ["ADMIN", "ALL_ROLES", "CRM", "FINANCE", "KYC", "MANAGERS", "RISK", "ROLES", "STAFF", "STAFF_ROLES",
           "SUPPORT_DESK", "TRADER"]
