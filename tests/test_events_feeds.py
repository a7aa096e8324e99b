"""``GET /cdp/v1/changes`` and ``GET /v2/crm/changes``: what writes, bulk writes and imports show,
paging by cursor, long polls that wake on a write, bad parameters, and org isolation."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub import feeds
from profilehub.cli import main
from profilehub.feeds import FeedQuery, pull
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from profilehub.store.events import event_json, read_events
from tests.conftest import OrgFixture, assert_error, make_org, run_concurrently

OTHER_ORG = 77


def cdp_changes(client: TestClient, org: OrgFixture, **params: Any) -> httpx.Response:
    return client.get(
        "/cdp/v1/changes", params={"orgId": org.org_id, **params}, headers=org.headers("profile.read")
    )


def crm_changes(client: TestClient, org: OrgFixture, **params: Any) -> httpx.Response:
    return client.get("/v2/crm/changes", params=params, headers=org.bearer)


def _page(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert set(page) == {"changes", "next"}
    return page


def _write(client: TestClient, org: OrgFixture, ids: dict[str, Any], region: str = "EU") -> dict[str, Any]:
    body = {"orgId": org.org_id, "region": region, "ids": ids, "upsert": {"profile": {"n": 1}}}
    r = client.post("/cdp/v1/users", json=body, headers=org.headers())
    assert r.status_code == 200, r.text
    [profile] = r.json()
    return dict(profile)


def test_writes_and_bulk_writes_are_followed_page_by_page(client: TestClient, org: OrgFixture) -> None:
    first = _write(client, org, {"email": "a@example.com"})
    records = [
        {"orgId": org.org_id, "region": "UK", "ids": {"email": "b@example.com"}, "upsert": {}},
        {"orgId": org.org_id, "region": "EU", "ids": {"email": "not an email"}, "upsert": {}},  # refused
        {
            "orgId": org.org_id,
            "region": "EU",
            "ids": {"email": "a@example.com", "AdId": "ad-1"},
            "upsert": {},
        },
    ]
    r = client.post("/cdp/v1/users/_bulk", json=records, headers=org.headers())
    assert r.status_code == 200, r.text
    answers = r.json()
    client.post("/v2/crm/people", json={"firstName": "Crm"}, headers=org.bearer)  # another feed's

    seen: list[dict[str, Any]] = []
    after = "0"
    pages = 0
    while page := _page(cdp_changes(client, org, after=after, limit=2))["changes"]:
        seen += page
        after = page[-1]["id"]
        pages += 1
    assert pages == 2
    assert [e["type"] for e in seen] == ["profile.created", "profile.created", "profile.updated"]
    assert [e["data"]["profile"] for e in seen] == [first, answers[0]["profile"], answers[2]["profile"]]
    assert [e["region"] for e in seen] == ["EU", "UK", "EU"]
    assert all(e["orgId"] == org.org_id for e in seen)
    [person] = _page(crm_changes(client, org))["changes"]
    assert person["type"] == "person.created" and person["data"]["person"]["firstName"] == "Crm"
    assert "region" not in person and int(person["id"]) > int(seen[-1]["id"])
    # At the end, next moves past the other feed's events (not read again), then stays.
    assert _page(cdp_changes(client, org, after=after)) == {"changes": [], "next": person["id"]}
    assert _page(cdp_changes(client, org, after=person["id"])) == {"changes": [], "next": person["id"]}
    # A region's feed has that region's events only, and moves past the others' too.
    assert _page(cdp_changes(client, org, region="uk")) == {"changes": [seen[1]], "next": person["id"]}
    assert _page(cdp_changes(client, org, region="uk", limit=1)) == {
        "changes": [seen[1]],
        "next": seen[1]["id"],
    }


def test_an_import_is_in_the_feed(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    try:
        org = make_org(db)
        lines = [{"ids": {"email": f"p{i}@example.com"}, "upsert": {"profile": {"i": i}}} for i in range(3)]
        path = tmp_path / "people.ndjson"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        args = ["import", "cdp", str(path), "--org-id", str(org.org_id), "--region", "EU", "--quiet"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        with db.read() as conn:
            events = [event_json(e) for e in read_events(conn, org.org_id, 0, 100)]
    finally:
        db.close()
    assert [e["type"] for e in events] == ["profile.created"] * 3
    assert [e["data"]["profile"]["profile"]["i"] for e in events] == [0, 1, 2]


BAD_PARAMETERS = [
    ({"after": "x"}, "after"),
    ({"after": "-1"}, "after"),
    ({"after": "9" * 30}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"wait": "31"}, "wait"),
    ({"wait": "-1"}, "wait"),
    ({"wait": "soon"}, "wait"),
]


def test_bad_parameters_are_400s_naming_them(client: TestClient, org: OrgFixture) -> None:
    for params, field in BAD_PARAMETERS:
        assert_error(cdp_changes(client, org, **params), 400, field)
        assert_error(crm_changes(client, org, **params), 400, field)


def test_feeds_are_scoped_and_org_isolated(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    other = make_org(app.state.db, OTHER_ORG)
    _write(client, org, {"email": "mine@example.com"})
    client.post("/v2/crm/people", json={"firstName": "Mine"}, headers=org.bearer)
    _write(client, other, {"email": "theirs@example.com"})
    client.post("/v2/crm/people", json={"firstName": "Theirs"}, headers=other.bearer)

    [mine] = _page(cdp_changes(client, org))["changes"]
    [theirs] = _page(cdp_changes(client, other))["changes"]
    assert mine["orgId"] == org.org_id and theirs["orgId"] == OTHER_ORG
    assert [e["data"]["person"]["firstName"] for e in _page(crm_changes(client, org))["changes"]] == ["Mine"]
    assert [e["data"]["person"]["firstName"] for e in _page(crm_changes(client, other))["changes"]] == [
        "Theirs"
    ]
    # Another org's id, a missing scope, a CRM token on the CDP feed: refused.
    r = client.get("/cdp/v1/changes", params={"orgId": OTHER_ORG}, headers=org.headers("profile.read"))
    assert_error(r, 403)
    assert_error(cdp_changes(client, org, region="US"), 400, "region")
    assert_error(
        client.get("/cdp/v1/changes", params={"orgId": org.org_id}, headers=org.headers("profile.write")), 403
    )
    assert_error(client.get("/cdp/v1/changes", params={"orgId": org.org_id}, headers=org.bearer), 401)
    assert_error(client.get("/v2/crm/changes"), 401)


def test_a_long_poll_answers_when_a_write_lands(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    _write(client, org, {"email": "before@example.com"})
    after = _page(cdp_changes(client, org))["next"]

    async def poll(ac: httpx.AsyncClient) -> httpx.Response:
        params = {"orgId": org.org_id, "after": after, "wait": 30}
        return await ac.get("/cdp/v1/changes", params=params, headers=org.headers("profile.read"))

    async def write_soon(ac: httpx.AsyncClient) -> httpx.Response:
        await asyncio.sleep(0.3)  # the poll is waiting by then (were it not, it finds the event at once)
        body = {"orgId": org.org_id, "region": "EU", "ids": {"email": "during@example.com"}, "upsert": {}}
        return await ac.post("/cdp/v1/users", json=body, headers=org.headers())

    polled, written = run_concurrently(app, lambda ac: [poll(ac), write_soon(ac)])
    assert written.status_code == 200, written.text
    [event] = _page(polled)["changes"]
    assert event["data"]["profile"] == written.json()[0]


def test_a_long_poll_sees_another_processs_write(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    """A write of another process (here another database handle, as the importer's) rings no bell
    in this one: the wait finds it by looking again."""
    other = Database(app.state.db.url)

    async def poll(ac: httpx.AsyncClient) -> httpx.Response:
        params = {"orgId": org.org_id, "wait": 30}
        return await ac.get("/cdp/v1/changes", params=params, headers=org.headers("profile.read"))

    async def write_elsewhere(ac: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.3)
        writes = [ProfileWrite(org.org_id, "EU", {"email": "elsewhere@example.com"}, {})]
        await asyncio.to_thread(ProfileService(other).write_batch, writes, "elsewhere")

    try:
        polled, _ = run_concurrently(app, lambda ac: [poll(ac), write_elsewhere(ac)])
    finally:
        other.close()
    [event] = _page(polled)["changes"]
    assert event["type"] == "profile.created"


WAITERS = 50


def _counted_reads(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that grows by one at every read ``db`` hands out (each is a look at the database)."""
    reads: list[None] = []
    real = db.read

    @contextmanager
    def counted() -> Iterator[Any]:
        reads.append(None)
        with real() as conn:
            yield conn

    monkeypatch.setattr(db, "read", counted)
    return reads


async def _all_waiting(reads: list[None]) -> None:
    """Until every wait has made its first look (and found nothing, so it waits)."""
    while len(reads) < WAITERS:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


def test_many_waits_look_once_per_write_not_once_each(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit of this process wakes the org's waits: they look at the database together,
    once, rather than each on its own (300 waits did 300 reads per wake-up, queued on the thread
    pool, and the last answered ~9 s after a write)."""
    org = make_org(db)
    make_org(db, OTHER_ORG)
    monkeypatch.setattr(feeds, "POLL_SECONDS", 60.0)  # only the commits below wake the waits
    reads = _counted_reads(db, monkeypatch)
    commits = 5

    async def elsewhere() -> None:
        await _all_waiting(reads)
        for i in range(commits):  # another org's: rings this process's bell, adds nothing here
            writes = [ProfileWrite(OTHER_ORG, "EU", {"email": f"other{i}@example.com"}, {})]
            await asyncio.to_thread(ProfileService(db).write_batch, writes, "elsewhere")
            await asyncio.sleep(0.1)

    async def main() -> list[bytes]:
        query = FeedQuery(after=0, limit=100, wait=3)
        waits = [pull(db, org.org_id, "cdp", query) for _ in range(WAITERS)]
        *pages, _ = await asyncio.gather(*waits, elsewhere())
        return pages

    pages = asyncio.run(main())
    assert all(orjson.loads(p) == {"changes": [], "next": "0"} for p in pages)
    # Each wait's first look is its own (it answers at once when there is something); after that,
    # at most one look per commit for all of them.
    assert len(reads) - WAITERS <= commits + 1


def test_waits_of_an_org_do_not_look_at_other_orgs_commits(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of this process wakes the watches of the orgs it wrote events of, not every org's:
    with many orgs' feeds followed, each write made every org's watch look at the database."""
    org = make_org(db)
    make_org(db, OTHER_ORG)
    monkeypatch.setattr(feeds, "POLL_SECONDS", 60.0)  # only commits could wake the waits
    reads = _counted_reads(db, monkeypatch)

    async def elsewhere() -> int:
        await _all_waiting(reads)
        for i in range(5):  # another org's writes, in this process
            writes = [ProfileWrite(OTHER_ORG, "EU", {"email": f"other{i}@example.com"}, {})]
            await asyncio.to_thread(ProfileService(db).write_batch, writes, "elsewhere")
        looked = len(reads)
        writes = [ProfileWrite(org.org_id, "EU", {"email": "here@example.com"}, {})]
        await asyncio.to_thread(ProfileService(db).write_batch, writes, "here")
        return looked

    async def main() -> tuple[list[bytes], int]:
        query = FeedQuery(after=0, limit=100, wait=30)
        waits = [pull(db, org.org_id, "cdp", query) for _ in range(WAITERS)]
        *pages, looked = await asyncio.gather(*waits, elsewhere())
        return pages, looked

    pages, looked = asyncio.run(main())
    # The waits' own first looks and the watch's first: none for the other org's five commits.
    assert looked - WAITERS <= 1, looked - WAITERS
    # The org's own write still wakes them at once (the poll is a minute away).
    assert all([e["type"] for e in orjson.loads(p)["changes"]] == ["profile.created"] for p in pages)


def test_many_waits_all_get_another_processs_write(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write of another process rings no bell here: the waits find it at their next look, one
    look (and one read of the page) for all of them rather than one each per second."""
    org = make_org(db)
    other = Database(db.url)
    reads = _counted_reads(db, monkeypatch)

    async def elsewhere() -> None:
        await _all_waiting(reads)
        writes = [ProfileWrite(org.org_id, "EU", {"email": "elsewhere@example.com"}, {})]
        await asyncio.to_thread(ProfileService(other).write_batch, writes, "elsewhere")

    async def main() -> list[bytes]:
        query = FeedQuery(after=0, limit=100, wait=30)
        waits = [pull(db, org.org_id, "cdp", query) for _ in range(WAITERS)]
        *pages, _ = await asyncio.gather(*waits, elsewhere())
        return pages

    try:
        pages = asyncio.run(main())
    finally:
        other.close()
    answers = [orjson.loads(p) for p in pages]
    assert all([e["type"] for e in a["changes"]] == ["profile.created"] for a in answers)
    assert len({a["changes"][0]["id"] for a in answers}) == 1
    # One look a second for all of them and one read of the page they share; each wait looking
    # for itself made one a second each.
    assert len(reads) - WAITERS < WAITERS // 2


def test_waits_end_at_shutdown_and_when_the_asker_leaves(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waits whose asker has gone stop, the others go on and get the next event; at shutdown every
    wait answers what it has rather than holding the server for its whole ``wait``."""
    org = make_org(db)
    monkeypatch.setattr(feeds, "_stopping", False)  # put back after: stop_waiting sets it
    left = asyncio.Event()

    async def gone() -> bool:
        return left.is_set()

    async def main() -> list[bytes]:
        query = FeedQuery(after=0, limit=100, wait=30)
        leaving = [asyncio.create_task(pull(db, org.org_id, "cdp", query, gone=gone)) for _ in range(5)]
        staying = [asyncio.create_task(pull(db, org.org_id, "cdp", query)) for _ in range(5)]
        await asyncio.sleep(0.3)
        left.set()
        # Answered though nothing came: long before their 30 s (the bound only fails a hang).
        assert [orjson.loads(p)["changes"] for p in await asyncio.wait_for(asyncio.gather(*leaving), 10)] == [
            []
        ] * 5
        assert not any(t.done() for t in staying)
        await asyncio.to_thread(
            ProfileService(db).write_batch,
            [ProfileWrite(org.org_id, "EU", {"email": "a@example.com"}, {})],
            "t",
        )
        written = [orjson.loads(p) for p in await asyncio.wait_for(asyncio.gather(*staying), 10)]
        assert all(len(a["changes"]) == 1 for a in written)
        after = FeedQuery(after=int(written[0]["next"]), limit=100, wait=30)
        waiting = [asyncio.create_task(pull(db, org.org_id, "cdp", after)) for _ in range(5)]
        await asyncio.sleep(0.3)
        feeds.stop_waiting()
        return list(await asyncio.wait_for(asyncio.gather(*waiting), 10))

    stopped = asyncio.run(main())
    assert all(orjson.loads(p)["changes"] == [] for p in stopped)


def test_a_write_during_a_waits_read_wakes_it(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait woken by another region's event reads its page; an event of its own region that
    commits while that read is under way (and the watch looks at it) must still wake it at once,
    not at the next look (the next commit or second; here, with no poll, its whole ``wait``)."""
    org = make_org(db)
    monkeypatch.setattr(feeds, "POLL_SECONDS", 60.0)  # only the commits below wake the wait
    release = threading.Event()
    reading = threading.Event()
    held: list[int] = []
    looks: list[int] = []
    real_look, real_newest = feeds._look, feeds._newest

    def look(*args: Any) -> tuple[list[Any], int]:
        found, cursor = real_look(*args)
        if not found and cursor > 0 and not held:  # the page read the EU event woke: it saw no UK event
            held.append(cursor)
            reading.set()
            release.wait(30)
        return found, cursor

    def newest(*args: Any) -> int:
        looks.append(real_newest(*args))
        return looks[-1]

    monkeypatch.setattr(feeds, "_look", look)
    monkeypatch.setattr(feeds, "_newest", newest)

    def write(region: str, email: str) -> None:
        ProfileService(db).write_batch([ProfileWrite(org.org_id, region, {"email": email}, {})], "t")

    async def main() -> bytes:
        wait = asyncio.create_task(pull(db, org.org_id, "cdp", FeedQuery(0, 100, 30), region="UK"))
        try:
            while not looks:  # the wait's watch has made its first look
                await asyncio.sleep(0.01)
            await asyncio.to_thread(write, "EU", "eu@example.com")
            await asyncio.to_thread(reading.wait, 10)
            await asyncio.to_thread(write, "UK", "uk@example.com")
            while looks[-1] <= held[0]:  # the watch has seen the UK event
                await asyncio.sleep(0.01)
        finally:
            release.set()
        # Long before its 30 s (the bound only fails a hang).
        return await asyncio.wait_for(wait, 10)

    [event] = orjson.loads(asyncio.run(main()))["changes"]
    assert event["region"] == "UK"
