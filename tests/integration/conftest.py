"""Fixtures the integration tests of the web pages and the staff API share.

- ``cheap_argon2``: argon2 at its cheapest parameters. The whole session already hashes that way
  (``tests/conftest.py``: ``cheap_password_hashing``); this name stays for the modules that ask for it
  and asserts the session's parameters are in force.
- ``world``: the two-firm World of ``support/staff.py`` behind a real app, on the ``db_url``
  backend (SQLite and PostgreSQL). A test module may define its own ``world`` instead.
"""

from __future__ import annotations

import pytest
from support.staff import build_world, seed


@pytest.fixture
def cheap_argon2(cheap_password_hashing):
    from propcrm.services import users

    assert users.hash_password("x" * 12).startswith("$argon2id$v=19$m=1024,t=1,p=1$")


@pytest.fixture
def world(db_url):
    _, world = build_world(db_url)
    with world.client:
        yield seed(world)
