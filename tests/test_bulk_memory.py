"""What bounds a server's memory under ``_bulk`` bodies: one parsed at a time, none kept after."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Connection

from profilehub.cdp import bulk
from profilehub.cdp.bulk_turns import BULK_AT_ONCE
from profilehub.store.database import Database
from tests.conftest import OrgFixture, run_concurrently


def test_bulk_bodies_are_handled_one_at_a_time(
    app: FastAPI, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four clients sending ``_bulk`` at once: at most ``BULK_AT_ONCE`` bodies are being parsed
    and written at any moment (each a hundred MB of objects at 1,000 wide records), and every
    client still gets its full answer."""
    active = 0
    most = 0
    answered = bulk.answered

    async def counting(*args: Any) -> Any:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(0.05)  # a long write: another body would start here
            return await answered(*args)
        finally:
            active -= 1

    monkeypatch.setattr(bulk, "answered", counting)
    headers = org.headers("profile.write")

    def records(client: int) -> list[dict[str, Any]]:
        return [
            {"orgId": org.org_id, "region": "EU", "ids": {"crm_id": f"c{client}-{i}"}, "upsert": {}}
            for i in range(3)
        ]

    def calls(ac: httpx.AsyncClient) -> list[Awaitable[httpx.Response]]:
        return [ac.post("/cdp/v1/users/_bulk", json=records(c), headers=headers) for c in range(4)]

    responses = run_concurrently(app, calls)
    assert [r.status_code for r in responses] == [200] * 4
    assert all([item["status"] for item in r.json()] == [200] * 3 for r in responses)
    assert most == BULK_AT_ONCE == 1


class Held:
    """An object a weak reference can watch (a job's input or result)."""


def test_the_writer_keeps_nothing_of_a_finished_write(db: Database) -> None:
    """Once a write is answered, its input and result are freed though no other write follows
    (the writer thread held its last batch until the next one: a 1,000-record ``_bulk`` kept
    about 100 MB of the server alive while idle)."""
    given, result = Held(), Held()
    watch_given, watch_result = weakref.ref(given), weakref.ref(result)

    def job(conn: Connection, held: Held = given, out: Held = result) -> Held:
        return out

    answer = db.submit(job).result(timeout=30)
    assert answer is result
    del job, given, result, answer
    gc.collect()
    assert watch_given() is None
    assert watch_result() is None
