"""The fast path of PUT /v2/crm/people answers exactly as the FastAPI route does.

As tests/test_cdp_fast_write.py for CDP writes: the same requests go to an app with the fast
path and to one without it, each on its own fresh database; statuses, headers and bodies must
match once the values that differ by nature (ids, ucids, timestamps) are masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args, get_type_hints

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from profilehub.crm.fast import FastUpsertPerson
from profilehub.crm.models import PersonWrite, Socials, read_person_json
from tests.conftest import OrgFixture
from tests.fast_path import JSON, UUID, Apps, answer, fast_and_framework, spy_on_answers
from tests.fast_path import as_json as _json

P = "/v2/crm/people"

ANA = {"firstName": "Ana", "emails": ["Ana@Example.com"], "phoneNumber": "+4930123456"}
# (label, query, body bytes, extra headers, send the org's token)
CASES: list[tuple[str, str, bytes, dict[str, str], bool]] = [
    ("created", "?matchingAttribute=email", _json(ANA), JSON, True),
    ("updated", "?matchingAttribute=email", _json({**ANA, "jobTitle": "CTO"}), JSON, True),
    ("default matching", "", _json({"lastName": "Bo", "emails": ["bo@example.com"]}), JSON, True),
    ("emails slug", "?matchingAttribute=emails", _json({"lastName": "Bo", "emails": ["bo@example.com", "b2@example.com"]}), JSON, True),
    ("by phone", "?matchingAttribute=phone_number", _json({"firstName": "Cy", "phoneNumber": "+4930999999"}), JSON, True),
    ("charset", "", _json({"firstName": "Di", "emails": ["di@example.com"]}), {"Content-Type": "application/json; charset=utf-8"}, True),
    ("form type", "", _json({"firstName": "Ed", "emails": ["ed@example.com"]}), {"Content-Type": "application/x-www-form-urlencoded"}, True),
    ("unknown matching", "?matchingAttribute=shoe", _json(ANA), JSON, True),
    ("empty matching", "?matchingAttribute=", _json(ANA), JSON, True),
    ("two matchings", "?matchingAttribute=email&matchingAttribute=phone_number", _json(ANA), JSON, True),
    ("no name", "", _json({"emails": ["x@example.com"]}), JSON, True),
    ("bad email", "", _json({"firstName": "X", "emails": ["nope"]}), JSON, True),
    ("email of another", "?matchingAttribute=phone_number", _json({"firstName": "Z", "phoneNumber": "+4930123456", "emails": ["bo@example.com"]}), JSON, True),
    ("emails not a list", "", _json({"firstName": "X", "emails": "x@example.com"}), JSON, True),
    ("unknown field", "", _json({"firstName": "X", "emails": ["u@example.com"], "shoe": 1}), JSON, True),
    ("array body", "", _json([ANA]), JSON, True),
    ("not JSON", "", b"{nope", JSON, True),
    ("empty body", "", b"", JSON, True),
    ("NUL", "", b'{"firstName":"A\\u0000","emails":["n@example.com"]}', JSON, True),
    ("lone surrogate", "", b'{"firstName":"A\\ud800","emails":["s@example.com"]}', JSON, True),
    ("byte order mark", "", b"\xef\xbb\xbf" + _json({"firstName": "Bom", "emails": ["bom@example.com"]}), JSON, True),
    ("a key twice", "", b'{"firstName":"A","firstName":"B","emails":["twice@example.com"]}', JSON, True),
    ("big number", "", _json({"firstName": "N", "emails": ["big@example.com"], "shoe": 2**70}), JSON, True),
    ("no token", "", _json(ANA), JSON, False),
    ("unknown token", "", _json(ANA), {**JSON, "Authorization": "Bearer pht_1234_nope"}, False),
    ("apikey as token", "", _json(ANA), {**JSON, "Authorization": "Bearer <apikey>"}, False),
    ("basic scheme", "", _json(ANA), {**JSON, "Authorization": "Basic abc"}, False),
]  # fmt: skip

# Successful upserts the fast path leaves to the framework (the rest must take it).
FRAMEWORK_ONLY = {"two matchings", "form type", "byte order mark"}

_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _ISO.sub("<ts>", UUID.sub("<uuid>", value))
    return value


def _answer(
    client: TestClient, org: OrgFixture, query: str, body: bytes, headers: dict[str, str], auth: bool
) -> Any:
    sent = {k: v.replace("<apikey>", org.apikey) for k, v in headers.items()}
    if auth:
        sent = {**org.bearer, **sent}
    return answer(client.put(P + query, content=body, headers=sent), _mask)


@pytest.fixture
def apps(database_url: str) -> Iterator[Apps]:
    with fast_and_framework(database_url, FastUpsertPerson) as both:
        yield both


def test_fast_path_answers_as_the_framework_route(apps: Apps, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, framework, fast_org, framework_org = apps
    answered = spy_on_answers(monkeypatch, FastUpsertPerson)
    for label, query, body, headers, auth in CASES:
        answered.clear()
        ours = _answer(fast, fast_org, query, body, headers, auth)
        theirs = _answer(framework, framework_org, query, body, headers, auth)
        assert ours == theirs, label
        if ours[0] in (200, 201) and label not in FRAMEWORK_ONLY:
            assert answered == [True], label


def _as_model(body: bytes) -> Any:
    try:
        return PersonWrite.model_validate_json(body).model_dump(exclude_unset=True)
    except ValidationError:
        return "refused"


def _as_dict(body: bytes) -> Any:
    try:
        return read_person_json(body)
    except ValidationError:
        return "refused"


def test_the_fast_path_reads_a_body_as_the_route_s_model() -> None:
    """The fast path reads bodies into a dict (``read_person_json``), not the model: the same
    fields, the same values in the same order, and the same bodies refused."""
    fields = get_type_hints(read_person_json.__globals__["_PersonFields"])
    assert list(fields) == list(PersonWrite.model_fields)
    socials = get_type_hints(get_args(fields["socials"])[0])
    assert list(socials) == list(Socials.model_fields)
    bodies = [body for _, _, body, _, _ in CASES] + [
        _json({"zz": 1, "jobTitle": "x", "socials": {"instagram": "i", "linkedin": "l"}, "firstName": "F"}),
        _json({"firstName": None, "socials": None, "emails": None, "customAttributes": {"k": {"z": [1, 2]}}}),
        _json({"socials": {"myspace": "x"}}),
        _json({"firstName": 5}),
        _json({"emails": ["a@b.c", 7]}),
        _json({"customAttributes": []}),
        _json({"firstName": "A", "x": 1.5, "y": True, "n": None}),
    ]
    for body in bodies:
        found = _as_dict(body)
        assert found == _as_model(body), body
        if isinstance(found, dict):
            assert list(found) == list(_as_model(body)), body
