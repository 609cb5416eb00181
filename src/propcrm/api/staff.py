"""Mounts the people-facing API (login, accounts, decisions, overrides, packs, products, users, keys,
quarantine, cases, lifecycle, trading halts) under ``/api/v1``. Errors are answered by :mod:`propcrm.http.errors`.
"""

from __future__ import annotations

from fastapi import FastAPI

from . import auth
from .routers import accounts, admin, cases, halts, lifecycle, packs, payouts, quarantine, symbols, trades
from .routers import firms  # issue 16: tenants
from .routers import leaderboard  # issue 17: the leaderboard's API

PREFIX = "/api/v1"


def mount(app: FastAPI) -> None:
    for router in (auth.router, accounts.router, packs.router, halts.router, admin.router, quarantine.router,
                   symbols.router, trades.router, firms.router, leaderboard.router,
                   *cases.routers, *lifecycle.routers, *payouts.routers):
        app.include_router(router, prefix=PREFIX)
