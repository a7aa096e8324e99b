"""A full writer queue: a write is answered 503 with Retry-After at once, writes nothing, and the
writes already queued are done; on both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.config import Settings
from tests.conftest import OrgFixture, assert_error, make_org

QUEUE_MAX = 3


@pytest.fixture
def small_queue_app(database_url: str) -> Iterator[FastAPI]:
    application = create_app(Settings(database_url=database_url, write_queue_max=QUEUE_MAX))
    yield application
    application.state.db.close()


def _write(org: OrgFixture, email: str) -> dict[str, Any]:
    return {"orgId": org.org_id, "region": "EU", "ids": {"email": email}, "upsert": {"profile": {"n": 1}}}


def test_a_full_write_queue_answers_503_at_once_and_writes_nothing(small_queue_app: FastAPI) -> None:
    db = small_queue_app.state.db
    org = make_org(db)
    started, release = threading.Event(), threading.Event()

    def blocker(_: Any) -> None:
        started.set()
        assert release.wait(60)

    with TestClient(small_queue_app) as client:
        held = db.submit(blocker)
        assert started.wait(30)  # the writer is busy with it: the queue is now empty
        waiting: list[Future[Any]] = [db.submit(lambda c: None) for _ in range(QUEUE_MAX)]
        try:
            for what, send in (
                (
                    "CDP write",
                    lambda: client.post(
                        "/cdp/v1/users", json=_write(org, "x@acme.com"), headers=org.headers()
                    ),
                ),
                (
                    "CDP bulk",
                    lambda: client.post(
                        "/cdp/v1/users/_bulk", json=[_write(org, "y@acme.com")], headers=org.headers()
                    ),
                ),
                (
                    "CRM create",
                    lambda: client.post(
                        "/v2/crm/people", json={"emails": ["z@acme.com"]}, headers=org.bearer
                    ),
                ),
            ):
                r = send()
                body = assert_error(r, 503)
                assert r.headers["Retry-After"] == "1", what
                assert "overloaded" in body["message"] and str(QUEUE_MAX) in body["message"], (what, body)
        finally:
            release.set()
        held.result(timeout=30)
        for fut in waiting:
            fut.result(timeout=30)
        # Nothing of the refused writes was stored; the queue takes writes again.
        found = client.post(
            "/cdp/v1/users/_search",
            json={"orgId": org.org_id, "search": {"email": ["x@acme.com", "y@acme.com"]}},
            headers=org.headers(),
        )
        assert found.status_code == 200 and found.json() == []
        people = client.get("/v2/crm/people", headers=org.bearer)
        assert people.status_code == 200 and people.json()["pagination"]["total"] == 0, people.text
        assert (
            client.post("/cdp/v1/users", json=_write(org, "x@acme.com"), headers=org.headers()).status_code
            == 200
        )
