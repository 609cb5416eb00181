"""Shared fixtures: databases.

``db_url`` runs a test on both SQLite (a fresh file) and PostgreSQL (a fresh database on the server of
the ``test`` database at 127.0.0.1:5432, or ``PROPCRM_TEST_PG_URL``). Without a reachable PostgreSQL
those tests skip with the reason — except under ``CI=true``, where a missing PostgreSQL fails them.

The schema is migrated once per session on each backend, into a template; every test gets its own copy
(SQLite: the file copied; PostgreSQL: ``CREATE DATABASE … TEMPLATE``), so isolation is what it was with
a migration per test, at a fraction of the setup time. A role that may not create databases gets a
migrated schema per test instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from support.pg import create_template, drop_database, fresh_pg_database, fresh_pg_schema
from sqlalchemy import create_engine, text

# the secret store's key (platform credentials, firm secrets, staff TOTP secrets): one per test run, so no
# test writes a key file into the working directory; servers the tests start inherit it
os.environ.setdefault("PROPCRM_SECRET_KEY", "6Nq3Y1T8y0oQw5l0m9dJ2u3VbXy7cS4pZk1aH8rN2eE=")
# uploaded documents (KYC files, logos) of tests on PostgreSQL, which has no database file to keep them beside:
# a directory of this run, not ./propcrm-documents in the checkout (files landed in a commit that way)
if "PROPCRM_DOCUMENTS_DIR" not in os.environ:
    import tempfile

    os.environ["PROPCRM_DOCUMENTS_DIR"] = tempfile.mkdtemp(prefix="propcrm-test-documents-")

PG_URL = os.environ.get("PROPCRM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    problem = _pg_available()
    if problem is not None:
        message = f"PostgreSQL is not reachable at {PG_URL} ({problem})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; under CI=true this is a failure, not a skip")
        pytest.skip(message)
    return PG_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One SQLite file migrated to the latest schema, its WAL folded in: copying it is a migrated database."""
    from propcrm.adapters.db.session import migrate

    path = tmp_path_factory.mktemp("template") / "propcrm.db"
    migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")  # one file; make_engine turns WAL on again in each copy
    finally:
        conn.close()
    return path


@pytest.fixture(scope="session")
def pg_template(pg_base_url):
    """A PostgreSQL database migrated once per session (None if this role may not create databases)."""
    name = create_template(pg_base_url)
    yield name
    if name is not None:
        drop_database(pg_base_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A migrated, empty database URL on each backend, of this test alone.

    A test that uses ``seeded_template`` (the shared ``world`` of tests/integration/conftest.py does) gets a
    copy of that template instead: migrated *and* seeded once per session, still a database of its own."""
    seeded = (request.getfixturevalue("seeded_template")(request.param)
              if "seeded_template" in request.fixturenames else None)
    if request.param == "sqlite":
        path = tmp_path / "propcrm.db"
        shutil.copyfile(seeded or request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    base = request.getfixturevalue("pg_base_url")
    template = seeded or request.getfixturevalue("pg_template")
    fresh = fresh_pg_schema(base) if template is None else fresh_pg_database(base, template)
    with fresh as url:
        yield url


@pytest.fixture(autouse=True)
def process_settings():
    """Each test starts without installed process settings (``adapters/settings.current()`` reads the
    environment at its first use in the test); an app a test builds installs its own."""
    from propcrm.adapters.settings import forget

    forget()
    yield
    forget()


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing():
    """argon2id at its cheapest cost for the whole session (every ``world`` seeds nine users; production's
    default parameters cost ~0.15 s a hash). The hashes verify the same way; tests of the production
    parameters ask ``users.use_password_hasher`` for them."""
    from argon2 import PasswordHasher

    from propcrm.services import users

    previous = users.use_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    users.use_password_hasher(previous)


BROWSER_TESTS = Path(__file__).parent / "browser"


def pytest_collection_modifyitems(session, config, items):
    """Real-browser tests run last: Playwright's sync API keeps an asyncio event loop running in the
    main thread while its (session-scoped) browser is open, and a later test's ``asyncio.run()``
    would refuse to start inside it."""
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(BROWSER_TESTS))  # stable: order kept otherwise
