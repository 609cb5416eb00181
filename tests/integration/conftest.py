"""Fixtures the integration tests of the web pages and the staff API share.

- ``cheap_argon2``: argon2 at its cheapest parameters for tests that create or log in many users
  (the hash is still argon2id; only the cost differs). Opt in with
  ``pytestmark = pytest.mark.usefixtures("cheap_argon2")``.
- ``world``: the two-firm World of ``support/staff.py`` behind a real app, on the ``db_url``
  backend (SQLite and PostgreSQL). A test module may define its own ``world`` instead.
"""

from __future__ import annotations

import pytest
from support.staff import build_world, seed


@pytest.fixture
def cheap_argon2(monkeypatch):
    from argon2 import PasswordHasher

    from propcrm.services import users

    monkeypatch.setattr(users, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def world(db_url):
    _, world = build_world(db_url)
    with world.client:
        yield seed(world)
