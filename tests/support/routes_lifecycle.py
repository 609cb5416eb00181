"""Rows of the permission matrix for the lifecycle feature's routes (see support/routes.py)."""

from __future__ import annotations

from support.routes import ADMIN, ALL, FINANCE, RISK, Route  # noqa: F401

ROUTES: list[Route] = []
# routes not called by users (e.g. signed provider webhooks), each tested on its own
NOT_IN_TABLE: set[tuple[str, str]] = set()
