"""GET /metrics: Prometheus text whose values move by what the requests did, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from profilehub.app import create_app
from profilehub.cli import main
from profilehub.config import Settings
from tests.cdp_client import Cdp
from tests.conftest import OrgFixture
from tests.serve_process import free_port, new_org, serve

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(client: TestClient, **headers: str) -> dict[Sample, float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_counts_and_latency_move_by_the_requests_made(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    before = scrape(client)
    for i in range(3):
        cdp.write({"email": f"p{i}@acme.com"})
    for _ in range(2):
        assert client.get("/cdp/v1/users/not-a-route/x").status_code in (404, 405)
    r = client.post("/cdp/v1/users", json={"orgId": org.org_id}, headers=org.headers())
    assert r.status_code == 400
    after = scrape(client)

    write = {"method": "POST", "route": "/cdp/v1/users"}
    assert (
        value(after, "profilehub_http_requests_total", **write, status="200")
        - value(before, "profilehub_http_requests_total", **write, status="200")
        == 3
    )
    assert (
        value(after, "profilehub_http_requests_total", **write, status="400")
        - value(before, "profilehub_http_requests_total", **write, status="400")
        == 1
    )
    assert (
        value(after, "profilehub_http_request_duration_seconds_count", **write)
        - value(before, "profilehub_http_request_duration_seconds_count", **write)
        == 4
    )
    # Seconds were measured, and every request fits the largest finite bucket.
    assert value(after, "profilehub_http_request_duration_seconds_sum", **write) > value(
        before, "profilehub_http_request_duration_seconds_sum", **write
    )
    assert value(after, "profilehub_http_request_duration_seconds_bucket", **write, le="+Inf") == value(
        after, "profilehub_http_request_duration_seconds_count", **write
    )
    # Paths the router does not know share one label (no id-bearing path becomes a series).
    unmatched = value(after, "profilehub_http_requests_total", method="GET", route="unmatched", status="404")
    assert (
        unmatched
        - value(before, "profilehub_http_requests_total", method="GET", route="unmatched", status="404")
        == 2
    )
    assert "/cdp/v1/users/not-a-route/x" not in client.get("/metrics").text
    # Routes outside the API too: the OpenAPI document is no unmatched path.
    assert client.get("/openapi.json").status_code == 200
    assert (
        value(
            scrape(client),
            "profilehub_http_requests_total",
            method="GET",
            route="/openapi.json",
            status="200",
        )
        == 1
    )
    # The previous scrape itself is counted under its own route.
    assert value(after, "profilehub_http_requests_total", method="GET", route="/metrics", status="200") >= 1


def test_writer_batches_and_queue_depth(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    before = scrape(client)
    for i in range(4):
        cdp.write({"email": f"q{i}@acme.com"})
    r = client.post(
        "/cdp/v1/users/_bulk",
        json=[
            {"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"email": f"b{i}@acme.com"}}
            for i in range(5)
        ],
        headers=org.headers(),
    )
    assert r.status_code == 200, r.text
    after = scrape(client)
    # One request after another: each write (the bulk request too) is a transaction of one job.
    assert (
        value(after, "profilehub_write_batch_size_count") - value(before, "profilehub_write_batch_size_count")
        == 5
    )
    assert (
        value(after, "profilehub_write_batch_size_sum") - value(before, "profilehub_write_batch_size_sum")
        == 5
    )
    assert value(after, "profilehub_write_queue_depth") == 0


def test_merges_and_refused_merges_are_counted(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    before = scrape(client)
    cdp.write({"email": "jane@acme.com"})
    cdp.write({"crm_id": "C-1"})
    cdp.write({"email": "jane@acme.com", "crm_id": "C-1"})  # one merge
    cdp.write({"email": "john@acme.com"})
    cdp.write({"crm_id": "C-1", "email": "john@acme.com"})  # two emails: refused
    assert "merge_refused" in cdp.notice_codes()
    after = scrape(client)
    assert value(after, "profilehub_merges_total") - value(before, "profilehub_merges_total") == 1
    assert (
        value(after, "profilehub_merges_refused_total") - value(before, "profilehub_merges_refused_total")
        == 1
    )


@pytest.fixture
def settings_app(request: pytest.FixtureRequest, database_url: str) -> Iterator[FastAPI]:
    application = create_app(Settings(database_url=database_url, **request.param))
    yield application
    application.state.db.close()


@pytest.mark.parametrize("settings_app", [{"metrics_token": "s3cret-scrape"}], indirect=True)
def test_a_metrics_token_is_required_when_set(settings_app: FastAPI) -> None:
    with TestClient(settings_app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.json()["success"] is False
            assert "Authorization" in r.json()["message"]
        assert value(scrape(client, Authorization="Bearer s3cret-scrape"), "profilehub_merges_total") == 0


@pytest.mark.parametrize("settings_app", [{"metrics": False}], indirect=True)
def test_metrics_off_is_a_404(settings_app: FastAPI) -> None:
    with TestClient(settings_app) as client:
        assert client.get("/metrics").status_code == 404


def _requests_counted(base: str, labels: dict[str, str]) -> float:
    """``profilehub_http_requests_total`` of ``labels`` in the server's /metrics at ``base``."""
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    return value(samples, "profilehub_http_requests_total", **labels)


def test_several_workers_answer_the_sum_over_all_of_them(tmp_path: Path) -> None:
    # A scrape reaches one worker; each must answer for all (prometheus-client multiprocess mode).
    health = {"method": "GET", "route": "/healthz", "status": "200"}

    def healthz_count(base: str) -> float:
        return _requests_counted(base, health)

    with serve(f"sqlite:///{tmp_path / 'workers.db'}", tmp_path, "--workers", "2") as server:
        before = healthz_count(server.base)
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(f"{server.base}/healthz").status_code == 200
        assert {healthz_count(server.base) - before for _ in range(8)} == {40}
        assert server.stop() == 0


def test_several_workers_drop_a_deleted_webhooks_backlog_and_log_only_json(
    database_url: str, tmp_path: Path
) -> None:
    # A scrape used to leave two plain warning lines on stderr (prometheus-client's "Clearing
    # labels has not been implemented in multi-process mode"), and a deleted endpoint's backlog
    # stayed in every scrape until a restart.
    org = new_org(database_url)
    admin = {"Authorization": "Bearer admin-token-for-metrics"}

    def backlog_lines(base: str) -> list[str]:
        r = httpx.get(f"{base}/metrics")
        assert r.status_code == 200
        return [line for line in r.text.splitlines() if line.startswith("profilehub_webhook_backlog_events{")]

    with serve(
        database_url, tmp_path, "--workers", "2", PROFILEHUB_ADMIN_TOKEN="admin-token-for-metrics"
    ) as server:
        made = httpx.post(
            f"{server.base}/admin/v1/webhooks",
            json={"orgId": org.org_id, "url": "http://127.0.0.1:9/in"},  # nobody listens there
            headers=admin,
        )
        assert made.status_code == 201, made.text
        endpoint = made.json()["webhook"]["id"]
        write = {"orgId": org.org_id, "region": "EU", "ids": {"crm_id": "W-1"}, "upsert": {}}
        assert httpx.post(f"{server.base}/cdp/v1/users", json=write, headers=org.headers()).status_code == 200
        # Each scrape is a new connection, which the kernel gives to either worker.
        seen = [backlog_lines(server.base) for _ in range(8)]
        assert all(
            lines == [f'profilehub_webhook_backlog_events{{endpoint="{endpoint}"}} 1.0'] for lines in seen
        )
        gone = httpx.delete(
            f"{server.base}/admin/v1/webhooks/{endpoint}", params={"orgId": org.org_id}, headers=admin
        )
        assert gone.status_code in (200, 204), gone.text
        assert [backlog_lines(server.base) for _ in range(8)] == [[]] * 8
        assert server.stop() == 0
    # After the start-up lines (stdout's), every line is one JSON object of the log on stderr.
    lines = server.log.read_text().splitlines()
    started = next(n for n, line in enumerate(lines) if line.startswith("API docs: "))
    assert [json.loads(line)["logger"] for line in lines[started + 1 :]], lines


def test_an_operators_metrics_folder_starts_each_run_from_zero(tmp_path: Path) -> None:
    """prometheus-client sums every process file in PROMETHEUS_MULTIPROC_DIR: files left by the
    previous run's workers made the next run report their counts on top of its own."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "README").write_text("the operator's own file: kept")
    readyz = {"method": "GET", "route": "/readyz", "status": "200"}

    def readyz_count(base: str) -> float:
        return _requests_counted(base, readyz)

    database = f"sqlite:///{tmp_path / 'runs.db'}"
    for run in (1, 2):
        with serve(database, tmp_path, "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(folder)) as server:
            assert readyz_count(server.base) == 0, f"run {run}"
            for _ in range(5):
                assert httpx.get(f"{server.base}/readyz").status_code == 200
            assert readyz_count(server.base) == 5
            assert server.stop() == 0
    assert (folder / "README").read_text() == "the operator's own file: kept"


def test_a_metrics_folder_serve_cannot_use_is_refused_with_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "metrics.txt"
    not_a_folder.write_text("")
    result = CliRunner().invoke(
        main,
        ["serve", "--port", str(free_port())],
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(not_a_folder),
            "PROFILEHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}",
        },
    )
    assert result.exit_code == 1, result.output
    assert f"PROMETHEUS_MULTIPROC_DIR: cannot keep /metrics' files in {not_a_folder}" in result.output
    assert not (tmp_path / "never.db").exists()  # refused before touching the database


def test_a_file_of_the_operators_own_in_the_metrics_folder_is_left_out_of_metrics(tmp_path: Path) -> None:
    """prometheus-client reads every ``*.db`` in the folder as one of its process files: an empty
    foo.db there made every scrape a 500 with a traceback."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "foo.db").write_bytes(b"")
    (folder / "cache.db").write_bytes(b"SQLite format 3\x00" + bytes(4080))
    readyz = {"method": "GET", "route": "/readyz", "status": "200"}
    database = f"sqlite:///{tmp_path / 'stray.db'}"
    with serve(database, tmp_path, "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(folder)) as server:
        for _ in range(3):
            assert httpx.get(f"{server.base}/readyz").status_code == 200
        assert _requests_counted(server.base, readyz) == 3
        assert server.stop() == 0
    assert (folder / "foo.db").read_bytes() == b""  # not ours to remove
    log = server.log.read_text()
    assert "Traceback" not in log
    assert f"PROMETHEUS_MULTIPROC_DIR: ignoring {folder / 'cache.db'}, {folder / 'foo.db'}" in log, log
