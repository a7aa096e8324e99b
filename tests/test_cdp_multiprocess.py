"""Two ``profilehub serve`` processes on one database, written to at once by many clients.

Each server has its own writer thread; between the processes only the database keeps writers of
one org and region apart (SQLite's ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock). People are
written through both servers at once, each write carrying some of the person's ids, so new people
are created and merged concurrently in both processes. The outcome must be one profile per
person, holding every id and every attribute written.
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
from tests.cdp_client import id_values
from tests.conftest import OrgFixture
from tests.serve_process import new_org, send_all_at_once, serve_several

PEOPLE = 8
WRITES_PER_PERSON = 24
CLIENTS = 48
# Which of a person's ids each write carries, in turn: single ids create profiles in parallel,
# pairs link them, so the person's profiles must merge whatever the interleaving.
SUBSETS = [
    ("email",),
    ("crm_id",),
    ("cellphone",),
    ("AdId",),
    ("email", "crm_id"),
    ("crm_id", "cellphone"),
    ("AdId", "email"),
    ("cellphone",),
]


@pytest.fixture
def two_servers(database_url: str, tmp_path: Path) -> Iterator[tuple[OrgFixture, list[str]]]:
    org = new_org(database_url)  # the schema exists before the servers start
    with serve_several(2, database_url, tmp_path, access_log=True) as servers:
        yield org, [s.base for s in servers]


def _person(p: int) -> dict[str, str]:
    return {
        "email": f"person{p}@multi.example",
        "crm_id": f"crm-{p}",
        "cellphone": f"+49301234{p:04d}",
        "AdId": f"ad-{p}",
    }


async def _write_all(org: OrgFixture, bases: list[str]) -> list[httpx.Response]:
    writes = [(p, k) for p in range(PEOPLE) for k in range(WRITES_PER_PERSON)]
    random.Random(19).shuffle(writes)  # every client writes several people; people overlap in time
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for w in writes:
        queue.put_nowait(w)

    async def send(ac: httpx.AsyncClient, n: int, write: tuple[int, int]) -> httpx.Response:
        p, k = write
        person = _person(p)
        body: dict[str, Any] = {
            "orgId": org.org_id,
            "region": "EU",
            "ids": {t: person[t] for t in SUBSETS[k % len(SUBSETS)]},
            "upsert": {"profile": {f"attr_{p}_{k}": k}},
        }
        return await ac.post("/cdp/v1/users", json=body, headers=org.headers())

    # Every client takes from the one queue; half the clients on each server.
    return await send_all_at_once(CLIENTS, lambda n: queue, send, bases)


def test_concurrent_writers_across_two_server_processes_make_one_profile_per_person(
    two_servers: tuple[OrgFixture, list[str]], database_url: str
) -> None:
    org, bases = two_servers
    responses = asyncio.run(_write_all(org, bases))
    assert len(responses) == PEOPLE * WRITES_PER_PERSON
    assert [r.text for r in responses if r.status_code != 200] == []
    # Both servers took writes.
    assert {str(r.request.url).rsplit("/cdp", 1)[0] for r in responses} == set(bases)

    with httpx.Client(base_url=bases[0], timeout=30) as ac:
        for p in range(PEOPLE):
            person = _person(p)
            found = ac.post(
                "/cdp/v1/users/_search",
                json={"orgId": org.org_id, "search": {t: [v] for t, v in person.items()}},
                headers=org.headers("profile.read"),
            )
            assert found.status_code == 200, found.text
            profiles = found.json()
            assert len(profiles) == 1, f"person {p} is in {len(profiles)} profiles"
            [profile] = profiles
            want = {f"attr_{p}_{k}" for k in range(WRITES_PER_PERSON)}
            assert want - set(profile["profile"]) == set(), f"person {p} lost updates"
            assert {k for k in profile["profile"] if k.startswith("attr_")} == want, "another person's data"
            assert id_values(profile, "crm_id") == [person["crm_id"]]
            assert id_values(profile, "AdId") == [person["AdId"]]
            assert id_values(profile, "cellphone_number_e164_sha256"), profile["ids"]
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
