"""What the fast-path tests share (tests/test_cdp_fast_write.py, tests/test_crm_fast_upsert.py):
the same requests go to an app with a fast path and to one without it (the FastAPI route alone),
each on its own fresh database, and their answers are compared once the values that differ by
nature (ids, timestamps) are masked by the caller."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.config import Settings
from tests.conftest import OrgFixture, _pg, make_org, migrated_url

JSON = {"Content-Type": "application/json"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Headers that differ between any two answers.
_VOLATILE = ("date", "server", "content-length", "x-request-id")

Apps = tuple[TestClient, TestClient, OrgFixture, OrgFixture]


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


@contextlib.contextmanager
def fast_and_framework(database_url: str, fast_path: type) -> Iterator[Apps]:
    """Two apps, each with an org: one as shipped, one without the ``fast_path`` middleware."""
    other = (
        database_url.replace("profilehub.db", "framework.db")
        if database_url.startswith("sqlite")
        else _pg.new_url()
    )
    fast = create_app(Settings(database_url=migrated_url(database_url), max_body_bytes=256 * 1024))
    framework = create_app(Settings(database_url=migrated_url(other), max_body_bytes=256 * 1024))
    framework.user_middleware = [m for m in framework.user_middleware if m.cls is not fast_path]
    orgs = make_org(fast.state.db), make_org(framework.state.db)
    try:
        with TestClient(fast) as a, TestClient(framework) as b:
            yield a, b, *orgs
    finally:
        fast.state.db.close()
        framework.state.db.close()


def answer(response: httpx.Response, mask: Callable[[Any], Any]) -> tuple[int, Any, Any]:
    """Status, headers and body of ``response``, with ``mask`` applied to the last two."""
    kept = {k: v for k, v in response.headers.items() if k.lower() not in _VOLATILE}
    try:
        content: Any = response.json()
    except ValueError:
        content = response.text
    return response.status_code, mask(kept), mask(content)


def spy_on_answers(monkeypatch: pytest.MonkeyPatch, fast_path: Any) -> list[bool]:
    """The list to which every ``fast_path.answer`` call appends whether the fast path answered."""
    answered: list[bool] = []
    original = fast_path.answer

    async def spy(*args: Any) -> bool:
        done = bool(await original(*args))
        answered.append(done)
        return done

    monkeypatch.setattr(fast_path, "answer", spy)
    return answered
