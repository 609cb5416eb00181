"""Fixtures the integration tests of the web pages and the staff API share.

- ``cheap_argon2``: argon2 at its cheapest parameters. The whole session already hashes that way
  (``tests/conftest.py``: ``cheap_password_hashing``); this name stays for the modules that ask for it
  and asserts the session's parameters are in force.
- ``world``: the two-firm World of ``support/staff.py`` behind a real app, on the ``db_url``
  backend (SQLite and PostgreSQL). A test module may define its own ``world`` instead.

The World is seeded once per session and backend (``seeded_template``: firms, packs, traders, accounts,
users and their tokens, keys) into a template database; each test's ``db_url`` is a copy of it, so a test
still has a database of its own and starts from exactly the state ``seed`` leaves, without paying for it.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import fields

import pytest
from support.pg import drop_database
from support.staff import World, build_world, seed

#: what seed() records on the World (ids, tokens, keys): copied into each test's World
SEEDED = tuple(f.name for f in fields(World) if f.name not in ("client", "sessions", "counter"))


@pytest.fixture
def cheap_argon2(cheap_password_hashing):
    from propcrm.services import users

    assert users.hash_password("x" * 12).startswith("$argon2id$v=19$m=1024,t=1,p=1$")


def _seed_into(url: str) -> World:
    from propcrm.adapters.db.session import make_engine, sessions

    engine = make_engine(url)
    try:
        return seed(World(client=None, sessions=sessions(engine)))
    finally:
        engine.dispose()  # no connection may stay open: the database is a template now


@pytest.fixture(scope="session")
def seeded_template(request, tmp_path_factory):
    """``backend -> template`` (SQLite: a file; PostgreSQL: a database name, or None without CREATEDB, when
    every test seeds its own) of a database that holds the seeded World; the World's fields in ``.worlds``."""
    made: dict[str, object] = {}
    worlds: dict[str, World] = {}
    databases: list[tuple[str, str]] = []  # (server, database) to drop at the end

    def template(backend: str):
        if backend in made:
            return made[backend]
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("seeded") / "propcrm.db"
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            worlds[backend] = _seed_into(f"sqlite:///{path}")
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                conn.close()
            made[backend] = path
        else:
            from support.pg import create_template

            base = request.getfixturevalue("pg_base_url")
            name = create_template(base)
            if name is not None:
                databases.append((base, name))
                from support.pg import database_url

                worlds[backend] = _seed_into(database_url(base, name))
            made[backend] = name
        return made[backend]

    template.worlds = worlds
    yield template
    for base, name in databases:
        drop_database(base, name)


@pytest.fixture
def world(db_url, seeded_template):
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    _, world = build_world(db_url)
    seeded = seeded_template.worlds.get(backend)
    with world.client:
        if seeded is None:  # PostgreSQL without CREATEDB: a migrated schema per test, seeded here
            yield seed(world)
            return
        for name in SEEDED:
            value = getattr(seeded, name)
            setattr(world, name, dict(value) if isinstance(value, dict) else value)
        yield world
