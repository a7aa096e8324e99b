"""Concurrent writers of one person still yield one person holding every update."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from profilehub.app import create_app
from profilehub.config import Settings
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from tests.conftest import OrgFixture, run_concurrently


def _write(org: OrgFixture, n: int, ids: dict[str, str]) -> dict[str, Any]:
    return {"orgId": org.org_id, "region": "EU", "ids": ids, "upsert": {"profile": {f"attr_{n}": n}}}


def test_48_concurrent_writes_of_a_new_person_make_one_profile(app: FastAPI, org: OrgFixture) -> None:
    def calls(ac: httpx.AsyncClient) -> list[Any]:
        return [
            ac.post(
                "/cdp/v1/users", json=_write(org, n, {"email": "new.person@acme.com"}), headers=org.headers()
            )
            for n in range(48)
        ]

    responses = run_concurrently(app, calls)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert len({r.json()[0]["ucid"] for r in responses}) == 1
    found = app.state.profiles.search(org.org_id, None, {"email": ["new.person@acme.com"]})
    assert len(found) == 1
    assert {f"attr_{n}" for n in range(48)} <= set(found[0]["profile"])


def test_concurrent_writes_with_different_ids_of_one_person_merge_into_one(
    app: FastAPI, org: OrgFixture
) -> None:
    # Each write links the shared crm_id with a new AdId and a new attribute: however the
    # writes interleave, the result is one profile (AdIds beyond the limit of 5 are evicted).
    def calls(ac: httpx.AsyncClient) -> list[Any]:
        return [
            ac.post(
                "/cdp/v1/users",
                json=_write(org, n, {"crm_id": "C-1", "AdId": f"ad-{n}"}),
                headers=org.headers(),
            )
            for n in range(48)
        ]

    responses = run_concurrently(app, calls)
    assert {r.status_code for r in responses} == {200}
    [profile] = app.state.profiles.search(org.org_id, None, {"crm_id": ["C-1"]})
    assert {f"attr_{n}" for n in range(48)} <= set(profile["profile"])
    assert len(profile["ids"]["maid"]) == 5


def test_two_processes_writing_one_person_make_one_profile(
    database_url: str, app: FastAPI, org: OrgFixture
) -> None:
    """Two independent database handles in one process: on SQLite the BEGIN IMMEDIATE lock, on
    PostgreSQL the advisory lock, keeps the writers apart. Two real server processes are in
    test_cdp_multiprocess.py."""
    other = create_app(Settings(database_url=database_url))
    try:
        services = [app.state.profiles, other.state.profiles]
        errors: list[BaseException] = []

        def writer(service: ProfileService, offset: int) -> None:
            try:
                for n in range(offset, 48, 2):
                    [result] = service.write_batch(
                        [
                            ProfileWrite(
                                org.org_id, "EU", {"email": "twice@acme.com"}, {"profile": {f"attr_{n}": n}}
                            )
                        ],
                        "test",
                    )
                    assert not isinstance(result, Exception), result
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s, i)) for i, s in enumerate(services)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        found = app.state.profiles.search(org.org_id, None, {"email": ["twice@acme.com"]})
        assert len(found) == 1
        assert {f"attr_{n}" for n in range(48)} <= set(found[0]["profile"])
    finally:
        other.state.db.close()


@pytest.mark.parametrize("handles", [3, 8])
def test_schema_upgrade_is_safe_when_processes_start_together(database_url: str, handles: int) -> None:
    opened: list[Database] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(Database(database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in opened:
        d.close()
    assert not errors and len(opened) == handles
