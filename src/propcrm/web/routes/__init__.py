"""Every router of the web application, in one list (``propcrm.web.mount`` includes them).

One module per area; each owns its templates under ``templates/<area>/``.
"""

from __future__ import annotations

from . import accounts, audit, cases, dashboard, decisions, halts, live, packs, payouts, people, portal, session
from . import platforms  # issue 20
from . import alerts, crm, exports, support, traders  # issue 16
from . import leaderboard  # issue 17
from . import firms  # issue 16: tenants

ROUTERS = [module.router for module in (session, live, accounts, decisions, cases, payouts, packs, audit,
                                        dashboard, portal, people, platforms, halts, traders, support, crm, alerts,
                                        exports, leaderboard, firms)]
