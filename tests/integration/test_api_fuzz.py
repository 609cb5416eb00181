"""The whole people-facing API fuzzed from its own OpenAPI document with schemathesis, on both backends.

Every operation gets a small, derandomized batch of generated requests (valid and invalid input) sent
as firm ``fa``'s admin, so they reach the handlers; each answer must not be a 5xx and must match what
the document says (status code, content type, body schema, headers). ``POST /api/v1/logout`` is sent
with a fresh token each time, so the admin's token survives the run.

Not fuzzed here: ``POST /api/v1/events`` (signed with HMAC headers; it has its own hypothesis fuzz
tests in ``test_api_events.py``).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from propcrm.api import create_app
from support.staff import build_world, seed

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        yield seed(world)
    app.state.engine.dispose()  # schemathesis keeps the app's lifespan open; free the connections now


# The document does not depend on the database: read it once from an app that never connects, so pytest
# collects one test per operation. (``schemathesis.pytest.from_fixture`` would load it per test, but its
# lazy runner does not work with pytest 9.) Each request goes to the seeded app of the test's backend.
schema = schemathesis.openapi.from_dict(create_app("sqlite://").openapi()).exclude(
    path="/api/v1/events",  # HMAC-signed; fuzzed on its own in test_api_events.py
)


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_and_never_with_a_server_error(case, world):
    who = world.fresh_token("admin") if case.path == "/api/v1/logout" else world.tokens["fa:admin"]
    case.call_and_validate(app=world.client.app, headers={"Authorization": f"Bearer {who}"}, checks=CHECKS)
