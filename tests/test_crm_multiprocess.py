"""Two ``profilehub serve`` processes (or one's two workers) upserting the same CRM people by
email at once.

Each server has its own writer thread; between the processes only the database keeps writers of
one org apart (SQLite's ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), as ``serve --workers 2``
runs. One server sets each person's first name, the other the job title and phone number (both the last name), many
times over, interleaved: the outcome must be one person per email holding both servers' fields,
linked to one profile that the email and the phone number both find.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from profilehub.store.database import Database
from tests.conftest import OrgFixture
from tests.serve_process import new_org, send_all_at_once, serve_several

PEOPLE = 8
WRITES_PER_SERVER = 10
CLIENTS = 32
UPSERT = "/v2/crm/people?matchingAttribute=email"


@pytest.fixture(params=["two servers", "serve --workers 2"])
def two_servers(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[OrgFixture, list[str]]]:
    """Two servers, or one with two workers (which take turns at writing on PostgreSQL too; the
    kernel spreads the clients' connections over them): the bases the two streams write to."""
    org = new_org(database_url)  # the schema exists before the servers start
    if request.param == "two servers":
        with serve_several(2, database_url, tmp_path) as servers:
            yield org, [s.base for s in servers]
    else:
        with serve_several(1, database_url, tmp_path, "--workers", "2") as [server]:
            yield org, [server.base, server.base]
            server.stop()  # not killed: the server removes its turns' folder as it exits


def _email(p: int) -> str:
    return f"crm.person{p}@multi.example"


def _phone(p: int) -> str:
    return f"+49301234{p:04d}"


def _body(server: int, p: int, k: int) -> dict[str, Any]:
    if server == 0:
        return {"emails": [_email(p)], "firstName": f"First{p}", "lastName": f"Last{p}"}
    # A new person needs a name: the last name is both servers' (the same), the rest is theirs.
    return {"emails": [_email(p)], "lastName": f"Last{p}", "jobTitle": f"Title{p}", "phoneNumber": _phone(p)}


async def _upsert_all(org: OrgFixture, bases: list[str]) -> list[httpx.Response]:
    writes = [(s, p, k) for s in (0, 1) for p in range(PEOPLE) for k in range(WRITES_PER_SERVER)]
    random.Random(23).shuffle(writes)  # both servers write each person, interleaved
    queues: list[asyncio.Queue[tuple[int, int]]] = [asyncio.Queue(), asyncio.Queue()]
    for s, p, k in writes:
        queues[s].put_nowait((p, k))

    async def send(ac: httpx.AsyncClient, n: int, write: tuple[int, int]) -> httpx.Response:
        p, k = write
        return await ac.put(UPSERT, json=_body(n % 2, p, k), headers=org.bearer)

    # Half the clients on each server, each taking that server's writes.
    return await send_all_at_once(CLIENTS, lambda n: queues[n % 2], send, bases)


def test_two_server_processes_upserting_the_same_people_make_one_person_and_one_profile_each(
    two_servers: tuple[OrgFixture, list[str]], database_url: str
) -> None:
    org, bases = two_servers
    responses = asyncio.run(_upsert_all(org, bases))
    assert len(responses) == 2 * PEOPLE * WRITES_PER_SERVER
    assert [r.text for r in responses if r.status_code not in (200, 201)] == []
    # Each person was created once, by whichever server came first.
    assert sum(r.status_code == 201 for r in responses) == PEOPLE

    with httpx.Client(base_url=bases[1], timeout=30) as ac:
        people = ac.get("/v2/crm/people", params={"limit": 100}, headers=org.bearer).json()
        assert people["pagination"]["total"] == PEOPLE
        by_email = {p["emails"][0]: p for p in people["collection"]}
        assert set(by_email) == {_email(p) for p in range(PEOPLE)}
        for p in range(PEOPLE):
            person = by_email[_email(p)]
            # Both servers' updates, neither lost to the other's.
            assert (person["firstName"], person["jobTitle"]) == (f"First{p}", f"Title{p}"), person
            assert person["phoneNumber"] == _phone(p)
            assert person["ucid"] is not None
            for search in ({"email": [_email(p)]}, {"cellphone": [_phone(p)]}):
                found = ac.post(
                    "/cdp/v1/users/_search",
                    json={"orgId": org.org_id, "search": search},
                    headers=org.headers("profile.read"),
                )
                assert found.status_code == 200, found.text
                assert [f["ucid"] for f in found.json()] == [person["ucid"]], search
                assert [c["crm_person_id"] for c in found.json()[0]["ids"]["crm"]] == [person["id"]]
    db = Database(database_url)
    try:
        with db.read() as conn:
            masters = conn.execute(
                sa.text("SELECT count(*) FROM profiles WHERE org_id = :o AND merged_into IS NULL"),
                {"o": org.org_id},
            ).scalar()
    finally:
        db.close()
    assert masters == PEOPLE
