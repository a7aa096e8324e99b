"""Per-org rate limits: 429 with Retry-After and RateLimit-* headers, across both dialects, on the
fast write path too, per process or shared through Redis. The limiter's clock is scripted, so a
"burst in one second" is exactly that whatever the machine's speed."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.cli import main
from profilehub.config import Settings
from profilehub.ratelimit import set_rate_limit
from tests.conftest import OrgFixture, assert_error, make_org

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now: float = 1_800_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limit(app: FastAPI, org: OrgFixture, per_second: int | None, per_minute: int | None = None) -> None:
    app.state.db.write(lambda c: set_rate_limit(c, org.org_id, per_second, per_minute))
    app.state.rate_limiter.limits.invalidate()


def scripted(app: FastAPI) -> Clock:
    clock = Clock()
    app.state.rate_limiter.clock = clock
    return clock


def cdp_write(client: TestClient, org: OrgFixture, n: int = 0) -> httpx.Response:
    body = {"orgId": org.org_id, "region": "EU", "ids": {"email": f"p{n}@example.com"}, "upsert": {}}
    return client.post("/cdp/v1/users", json=body, headers=org.headers())


def crm_list(client: TestClient, org: OrgFixture) -> httpx.Response:
    return client.get("/v2/crm/people", headers=org.bearer)


def test_a_burst_over_the_per_second_limit_gets_exactly_the_excess_refused(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    limit(app, org, per_second=5)
    scripted(app)
    answers = [cdp_write(client, org, i) for i in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    assert [r.headers["RateLimit-Remaining"] for r in answers[:5]] == ["4", "3", "2", "1", "0"]
    for r in answers[:5]:
        assert r.headers["RateLimit-Limit"] == "5" and r.headers["RateLimit-Reset"] == "1"
    for r in answers[5:]:
        body = assert_error(r, 429)
        assert "rate limit of 5 requests per second" in body["message"]
        assert r.headers["Retry-After"] == "1"
        assert r.headers["RateLimit-Limit"] == "5"
        assert r.headers["RateLimit-Remaining"] == "0"
        assert r.headers["RateLimit-Reset"] == "1"
    # Refused writes wrote nothing: five people exist.
    search = {"orgId": org.org_id, "search": {"email": [f"p{i}@example.com" for i in range(8)]}}
    found = client.post("/cdp/v1/users/_search", json=search, headers=org.headers())
    assert found.status_code == 429  # the search is a request of the same org, in the same second


def test_the_budget_is_the_orgs_across_both_dialects(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    limit(app, org, per_second=4)
    scripted(app)
    assert cdp_write(client, org, 1).status_code == 200
    assert crm_list(client, org).status_code == 200
    assert client.put(
        "/v2/crm/people",
        params={"matchingAttribute": "email"},
        json={"firstName": "A", "emails": ["a@example.com"]},
        headers=org.bearer,
    ).status_code in (200, 201)
    assert cdp_write(client, org, 2).status_code == 200
    assert_error(crm_list(client, org), 429)
    assert_error(cdp_write(client, org, 3), 429)
    # Another org has its own budget, and an unlimited org gets no RateLimit headers.
    other = make_org(app.state.db, org_id=4321)
    free = cdp_write(client, other)
    assert free.status_code == 200 and "RateLimit-Limit" not in free.headers


def test_steady_traffic_under_the_limit_is_never_refused_and_a_new_window_resets(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    limit(app, org, per_second=5)
    clock = scripted(app)
    for i in range(40):  # 4 per second for 10 seconds
        assert cdp_write(client, org, i).status_code == 200
        clock.now += 0.25
    clock.now = float(int(clock.now) + 1) + 0.9  # late in a fresh second
    assert [cdp_write(client, org).status_code for _ in range(6)] == [200] * 5 + [429]
    clock.now += 0.1  # the next second
    r = cdp_write(client, org)
    assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "4"


def test_per_minute_limit_answers_when_the_minute_ends(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    limit(app, org, per_second=100, per_minute=3)
    clock = scripted(app)
    clock.now = 1_800_000_000.0 + 10.5  # 1_800_000_000 is a whole minute
    assert [crm_list(client, org).status_code for _ in range(3)] == [200] * 3
    clock.now += 20
    r = crm_list(client, org)
    assert_error(r, 429)
    assert "per minute" in r.json()["message"]
    assert r.headers["Retry-After"] == "30" and r.headers["RateLimit-Limit"] == "3"
    clock.now += 30
    assert crm_list(client, org).status_code == 200


def test_removing_the_limit_stops_refusals(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    limit(app, org, per_second=1)
    scripted(app)
    assert cdp_write(client, org).status_code == 200
    assert cdp_write(client, org).status_code == 429
    limit(app, org, None)
    r = cdp_write(client, org)
    assert r.status_code == 200 and "RateLimit-Limit" not in r.headers


def test_the_cli_sets_shows_and_removes_a_limit(
    database_url: str, monkeypatch: pytest.MonkeyPatch, app: FastAPI, org: OrgFixture
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)

    def run(*args: str, ok: bool = True) -> str:
        result = CliRunner().invoke(main, ["org", "rate-limit", "--org-id", str(org.org_id), *args])
        assert (result.exit_code == 0) == ok, result.output
        return str(result.output)

    assert "rate limit: none" in run()
    assert "rate limit: 10/s, 600/min" in run("--per-second", "10", "--per-minute", "600")
    assert "rate limit: 10/s, 600/min" in run()
    assert "--per-second" in run("--per-second", "0", ok=False)
    assert "--off" in run("--off", "--per-second", "3", ok=False)
    assert "rate limit: none" in run("--off")
    result = CliRunner().invoke(main, ["org", "rate-limit", "--org-id", "999", "--per-second", "3"])
    assert result.exit_code != 0 and "unknown org 999" in result.output


# --- several processes ---


@pytest.fixture
def two_apps(database_url: str, request: pytest.FixtureRequest) -> Iterator[tuple[FastAPI, FastAPI]]:
    """Two app instances on one database, like two server processes; with Redis when asked."""
    shared = getattr(request, "param", "redis") == "redis"
    prefix = f"profilehub-test-{uuid.uuid4().hex}"
    settings = Settings(database_url=database_url, redis_url=REDIS_URL if shared else "", redis_prefix=prefix)
    apps = (create_app(settings), create_app(settings))
    yield apps
    for a in apps:
        a.state.db.close()
    if shared:
        r: Any = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
        r.close()


def _burst(apps: tuple[FastAPI, FastAPI]) -> list[int]:
    org = make_org(apps[0].state.db)
    for a in apps:
        limit(a, org, per_second=4)
        scripted(a)
    statuses = []
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        for i in range(3):
            statuses.append(cdp_write(first, org, i).status_code)
            statuses.append(crm_list(second, org).status_code)
    return statuses


@pytest.mark.parametrize("two_apps", ["redis"], indirect=True)
def test_with_redis_two_processes_share_one_budget(two_apps: tuple[FastAPI, FastAPI]) -> None:
    assert _burst(two_apps) == [200, 200, 200, 200, 429, 429]


@pytest.mark.parametrize("two_apps", ["redis"], indirect=True)
def test_with_redis_both_windows_of_a_limit_hold(two_apps: tuple[FastAPI, FastAPI]) -> None:
    """A per-second and a per-minute limit together: the refusal at the first window still reads
    the second (Redis's reply ended at its unread count, and the limiter took that for Redis down
    and let every request through)."""
    org = make_org(two_apps[0].state.db)
    for a in two_apps:
        limit(a, org, per_second=4, per_minute=1000)
        scripted(a)
    with TestClient(two_apps[0]) as first, TestClient(two_apps[1]) as second:
        statuses = [cdp_write((first, second)[i % 2], org, i).status_code for i in range(10)]
        refused = cdp_write(first, org, 10)
    assert statuses == [200] * 4 + [429] * 6, statuses
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1", refused.headers


@pytest.mark.parametrize("two_apps", ["redis"], indirect=True)
def test_with_redis_budget_taken_in_blocks_never_exceeds_the_limit(two_apps: tuple[FastAPI, FastAPI]) -> None:
    """A large limit is taken from Redis in blocks (here 5 of a limit of 10): each process serves
    its block, and together they let through exactly the limit."""
    org = make_org(two_apps[0].state.db)
    for a in two_apps:
        limit(a, org, per_second=10)
        scripted(a)
        a.state.rate_limiter.counters.share = 2
    with TestClient(two_apps[0]) as first, TestClient(two_apps[1]) as second:
        assert cdp_write(first, org).status_code == 200
        r: Any = redis.Redis.from_url(REDIS_URL)
        [key] = r.keys(f"{two_apps[0].state.settings.redis_prefix}:rl:{org.org_id}:1:*")
        assert r.get(key) == b"5"  # one request took a block of 5 from Redis
        # The key expires after its window by the limiter's clock (here months ahead), not after a
        # couple of real seconds: a slow run once saw its counts vanish mid-burst.
        assert r.ttl(key) > 3600
        r.close()
        statuses = [200] + [cdp_write((second, first)[i % 2], org, i).status_code for i in range(15)]
    assert statuses.count(200) == 10 and statuses.count(429) == 6
    assert statuses[:10] == [200] * 10


@pytest.mark.parametrize("two_apps", ["local"], indirect=True)
def test_without_redis_each_process_counts_alone(two_apps: tuple[FastAPI, FastAPI]) -> None:
    # As documented: N processes without Redis allow up to N times the limit.
    assert _burst(two_apps) == [200] * 6


def test_redis_down_serves_unlimited(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        org = make_org(app.state.db)
        limit(app, org, per_second=1)
        with TestClient(app) as client:
            assert [cdp_write(client, org, i).status_code for i in range(3)] == [200] * 3
    finally:
        app.state.db.close()


def test_serve_with_several_workers_warns_when_limits_are_counted_per_process(
    database_url: str, monkeypatch: pytest.MonkeyPatch, app: FastAPI, org: OrgFixture
) -> None:
    import uvicorn

    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    # Several workers on Linux: profilehub's own supervisor (profilehub.workers), not uvicorn's.
    monkeypatch.setattr("profilehub.cli.run_workers", lambda *a, **k: 0)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])

    def serve(workers: int) -> str:
        result = CliRunner().invoke(main, ["serve", "--port", port, "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        return str(result.output)

    assert "rate limits" not in serve(2)  # no org is limited
    limit(app, org, per_second=100)
    # A warning of the server's JSON log, as its other lines are.
    [warning] = [json.loads(line) for line in serve(2).splitlines() if "rate limits" in line]
    assert (warning["level"], warning["logger"]) == ("warning", "profilehub.serve"), warning
    assert "2 workers allow up to 2x each org's limit" in warning["msg"]
    assert "rate limits" not in serve(1)
    monkeypatch.setenv("PROFILEHUB_REDIS_URL", REDIS_URL)
    assert "rate limits" not in serve(2)
