"""Schema-driven fuzzing (schemathesis): generated requests, valid and invalid, never get a 5xx,
every error keeps the one error shape, and every answer conforms to the OpenAPI document (status,
media type, headers, body). Runs with a valid key, so generated cases reach the core, not just
auth; each operation is also sent once without credentials, with a body over the limit and with a
non-JSON media type, whose answers must be documented too."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from profilehub.app import create_app
from profilehub.config import Settings
from tests.conftest import OrgFixture, make_org

MAX_BODY = 8 * 1024
# Per operation and mode: 43 operations x (12 + 6) make some 770 generated requests per database,
# besides each operation's 401/413/415 edge requests, and still reach 200, 400 and 422 (asserted
# below). 20 + 10 took 1.6x as long (180 s against 114 s on SQLite at load 14-16), the extra cases
# coming after the simplest ones Hypothesis tries first (empty, zero, optional fields left out).
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 6}
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = ("apikey", "authorization")
# A generated object slug equal to one of these reaches the route of that name (``/v2/crm/people``
# is the people list, not a record list), whose documented answer is another one.
ROUTED_SLUGS = {"people", "companies", "objects", "changes"}


@pytest.fixture
def fuzz_app(database_url: str) -> Iterator[tuple[FastAPI, OrgFixture]]:
    app = create_app(Settings(database_url=database_url, max_body_bytes=MAX_BODY))
    org = make_org(app.state.db)
    yield app, org
    app.state.db.close()


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _check(case: Any, response: Any, headers: dict[str, str], statuses: Counter[int]) -> None:
    statuses[response.status_code] += 1
    label = (case.operation.label, case.body, response.status_code, response.text[:500])
    assert response.status_code < 500, label
    case.validate_response(response, checks=CONFORMANCE, headers=headers)
    if response.status_code >= 400:
        body = response.json()
        assert body["success"] is False and body["status"] == response.status_code, label
        assert isinstance(body["message"], str) and body["message"], label


def _edges(case: Any, headers: dict[str, str], statuses: Counter[int]) -> None:
    """The answers every route gives before its own code runs: 401, 413, 415."""
    sent_headers, sent_body = case.headers, case.body
    raw = case.operation.definition.raw
    if not raw.get("security"):
        return  # /healthz: nothing to refuse
    try:
        case.headers = {k: v for k, v in (sent_headers or {}).items() if k.lower() not in AUTH}
        anonymous = {k: v for k, v in headers.items() if k.lower() not in AUTH}
        response = case.call(headers=anonymous)
        assert response.status_code == 401, response.text
        _check(case, response, anonymous, statuses)
        case.headers = sent_headers
        if "requestBody" not in raw:
            return
        case.body = {"pad": "x" * (MAX_BODY + 1)}
        response = case.call(headers=headers)
        assert response.status_code == 413, response.text
        _check(case, response, headers, statuses)
        case.body = sent_body
        plain = {**headers, "Content-Type": "text/plain"}
        response = case.call(headers=plain)
        assert response.status_code == 415, response.text
        _check(case, response, plain, statuses)
    finally:
        case.headers, case.body = sent_headers, sent_body


def _fuzz_mode(
    operation: Any, mode: GenerationMode, org: OrgFixture, headers: dict[str, str], statuses: Counter[int]
) -> bool:
    """Run ``EXAMPLES[mode]`` generated cases; in positive mode, the edge requests after the first."""
    edges_sent = mode != GenerationMode.POSITIVE

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: Any) -> None:
        nonlocal edges_sent
        assume((case.path_parameters or {}).get("objectSlug") not in ROUTED_SLUGS)
        if isinstance(case.body, dict) and "orgId" in case.body:
            case.body["orgId"] = org.org_id  # reach the core, not only the org check
        if isinstance(case.query, dict) and "orgId" in case.query:
            case.query["orgId"] = org.org_id
        wait = case.query.get("wait") if isinstance(case.query, dict) else None
        with contextlib.suppress(TypeError, ValueError):
            if wait is not None and float(wait) > 0:
                # A long poll on a quiet feed answers when its wait is over, in the same shape at
                # once with 0 (the waiting itself is tested in test_events_feeds.py).
                case.query["wait"] = "0"
        _check(case, case.call(headers=headers), headers, statuses)
        if not edges_sent:
            edges_sent = True
            _edges(case, headers, statuses)

    try:
        check()
    except Exception as exc:
        # An operation may have nothing invalid to generate (no parameters, no body).
        if mode != GenerationMode.NEGATIVE or type(exc).__name__ != "Unsatisfiable":
            raise
    return edges_sent


def test_generated_requests_conform_to_the_documented_answers(fuzz_app: tuple[FastAPI, OrgFixture]) -> None:
    app, org = fuzz_app
    headers = {
        "apikey": org.apikey,
        "scopes": "profile.read,profile.write,profile.delete",
        "Authorization": f"Bearer {org.token}",
    }
    operations = _operations(app)
    assert len(operations) >= 30
    statuses: Counter[int] = Counter()
    for operation in operations:
        for mode in EXAMPLES:
            assert _fuzz_mode(operation, mode, org, headers, statuses), operation.label
    # The generator reached the core: some requests succeeded, some were refused as bad input.
    assert statuses[200] > 0 and statuses[400] > 0 and statuses[422] > 0, statuses
    assert statuses[401] and statuses[413] and statuses[415], statuses
