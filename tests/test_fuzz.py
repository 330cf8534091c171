"""Property-based fuzzing of the whole API from its OpenAPI schema: no input may cause a 5xx answer, and
every status code answered is one the OpenAPI description documents for that operation."""
from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error, status_code_conformance
from hypothesis import HealthCheck, settings

from .conftest import close_stack, make_stack

_stack = make_stack("fuzz", with_worker=False, reconcile=False)  # the schema is read at import time
schema = schemathesis.openapi.from_asgi("/openapi.json", _stack.client.app)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_stack():
    _stack.activate()
    from .helpers import upload

    upload(_stack.client, name="fuzz-target")  # something real for ids to hit
    yield
    close_stack(_stack)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case):
    _stack.activate()
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
    if response.status_code >= 400:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and detail, "errors must carry a readable detail"
