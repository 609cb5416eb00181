"""Shared fixtures: databases.

``db_url`` runs a test on both SQLite (a fresh file) and PostgreSQL (a fresh schema in the ``test``
database at 127.0.0.1:5432, or ``PROPCRM_TEST_PG_URL``). Without a reachable PostgreSQL those
tests skip with the reason — except under ``CI=true``, where a missing PostgreSQL fails them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.pg import fresh_pg_schema
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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A migrated, empty database URL on each backend."""
    from propcrm.adapters.db.session import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'propcrm.db'}"
        migrate(url)
        yield url
        return
    with fresh_pg_schema(request.getfixturevalue("pg_base_url")) as url:
        yield url


BROWSER_TESTS = Path(__file__).parent / "browser"


def pytest_collection_modifyitems(session, config, items):
    """Real-browser tests run last: Playwright's sync API keeps an asyncio event loop running in the
    main thread while its (session-scoped) browser is open, and a later test's ``asyncio.run()``
    would refuse to start inside it."""
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(BROWSER_TESTS))  # stable: order kept otherwise
