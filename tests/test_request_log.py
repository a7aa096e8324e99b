"""Operations: one JSON access log line per request (no id or attribute value in it), request ids
echoed, unexpected errors logged with their traceback, and `profilehub serve`'s start-up."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from profilehub.ratelimit import set_rate_limit
from profilehub.request_log import JsonFormatter
from tests.conftest import OrgFixture, assert_error
from tests.serve_process import free_port

VENV_BIN = Path(sys.executable).parent
SECRET_EMAIL = "zelda.secret@example.org"
SECRET_VALUE = "Quetzalcoatl-7731"


def _lines(caplog: pytest.LogCaptureFixture, logger: str = "profilehub.access") -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == logger]


def test_each_request_logs_one_json_line_with_no_id_or_value(
    client: TestClient, org: OrgFixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    write = {
        "orgId": 1234,
        "region": "EU",
        "ids": {"email": SECRET_EMAIL},
        "upsert": {"profile": {"nick": SECRET_VALUE}},
    }
    sent = [
        client.post("/cdp/v1/users", json=write, headers=org.headers()),  # the fast path
        client.post("/cdp/v1/users/_search", json={"orgId": 1234, "search": {"email": [SECRET_EMAIL]}}, headers=org.headers()),
        client.put("/v2/crm/people", json={"emails": [SECRET_EMAIL], "lastName": SECRET_VALUE}, headers=org.bearer),
        client.get(f"/v2/crm/people/{SECRET_EMAIL}", headers=org.bearer),
        client.get("/v2/crm/people", headers={"Authorization": "Bearer nope"}),
        client.get(f"/no/such/{SECRET_EMAIL}"),
    ]  # fmt: skip
    assert [r.status_code for r in sent] == [200, 200, 201, 404, 401, 404], [r.text for r in sent]
    lines = _lines(caplog)
    assert [(line["method"], line["route"], line["status"], line["org_id"]) for line in lines] == [
        ("POST", "/cdp/v1/users", 200, 1234),
        ("POST", "/cdp/v1/users/_search", 200, 1234),
        ("PUT", "/v2/crm/people", 201, 1234),
        ("GET", "/v2/crm/people/{id}", 404, 1234),
        ("GET", "/v2/crm/people", 401, None),
        ("GET", None, 404, None),
    ]
    assert [line["request_id"] for line in lines] == [r.headers["X-Request-Id"] for r in sent]
    assert all(isinstance(line["ms"], float) and line["ms"] >= 0 for line in lines)
    # Everything the server logged (the test client's own httpx lines name the URLs it sent).
    server = [r for r in caplog.records if r.name.startswith(("profilehub", "uvicorn", "sqlalchemy"))]
    everything = "\n".join(JsonFormatter().format(r) for r in server)
    assert SECRET_EMAIL not in everything and SECRET_VALUE not in everything


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("trace:abc-123.4", True),
        ("has spaces in it", False),
        ('quote"inside', False),
        ("x" * 129, False),
        ("", False),
    ],
)
def test_the_request_id_is_echoed_when_sane_and_made_up_otherwise(
    client: TestClient, sent: str, kept: bool
) -> None:
    r = client.get("/healthz", headers={"X-Request-Id": sent})
    echoed = r.headers["X-Request-Id"]
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent and len(echoed) == 32 and echoed.isalnum()
    assert client.get("/healthz").headers["X-Request-Id"] != client.get("/healthz").headers["X-Request-Id"]


def test_an_unexpected_error_is_a_logged_500_with_its_request_id(
    client: TestClient,
    app: FastAPI,
    org: OrgFixture,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.profiles, "search", broken)
    search = {"orgId": 1234, "search": {"email": [SECRET_EMAIL]}}
    r = client.post("/cdp/v1/users/_search", json=search, headers={**org.headers(), "X-Request-Id": "req-1"})
    assert_error(r, 500)
    assert r.headers["X-Request-Id"] == "req-1"
    [error] = _lines(caplog, "profilehub.errors")
    assert error["request_id"] == "req-1" and error["route"] == "/cdp/v1/users/_search"
    assert "RuntimeError: a bug" in error["exc"] and "Traceback" in error["exc"]
    [access] = _lines(caplog)
    assert (access["status"], access["request_id"]) == (500, "req-1")


def test_answers_before_routing_name_their_route_and_org_in_the_log_and_metrics(
    app: FastAPI, client: TestClient, org: OrgFixture, caplog: pytest.LogCaptureFixture
) -> None:
    # The credential gate, the body limit and the rate limiter answer before the router runs;
    # their answers were logged with "route": null (and no org) and counted as route="unmatched".
    caplog.set_level(logging.INFO)
    write = {"orgId": 1234, "region": "EU", "ids": {"email": SECRET_EMAIL}, "upsert": {}}
    nobody = {"Authorization": "Bearer nope"}
    huge = json.dumps({**write, "upsert": {"profile": {"x": "y" * 300_000}}})  # over 256 KiB
    sent = [
        client.post("/cdp/v1/users", json=write),
        client.post("/cdp/v1/users/_bulk", json=[write]),
        client.post("/cdp/v1/users/_search", json={"orgId": 1234, "search": {"email": [SECRET_EMAIL]}}),
        client.put("/v2/crm/people", json={"emails": [SECRET_EMAIL]}, headers=nobody),
        client.patch(f"/v2/crm/people/{SECRET_EMAIL}", json={"lastName": "X"}, headers=nobody),
        client.post("/cdp/v1/users", content=huge, headers={**org.headers(), "Content-Type": "application/json"}),
        client.post(f"/cdp/v1/no-such/{SECRET_EMAIL}", json=write),  # no route serves it
    ]  # fmt: skip
    app.state.db.write(lambda c: set_rate_limit(c, org.org_id, 1, None))
    app.state.rate_limiter.limits.invalidate()
    app.state.rate_limiter.clock = lambda: 1_800_000_000.25  # all in one second
    sent += [
        client.get(f"/v2/crm/people/{SECRET_EMAIL}", headers=org.bearer),
        client.get(f"/v2/crm/people/{SECRET_EMAIL}", headers=org.bearer),
        client.post("/cdp/v1/users", json=write, headers=org.headers()),
    ]
    assert [r.status_code for r in sent] == [401] * 5 + [413, 401, 404, 429, 429], [r.text for r in sent]
    lines = _lines(caplog)
    assert [(line["method"], line["route"], line["status"], line["org_id"]) for line in lines] == [
        ("POST", "/cdp/v1/users", 401, None),
        ("POST", "/cdp/v1/users/_bulk", 401, None),
        ("POST", "/cdp/v1/users/_search", 401, None),
        ("PUT", "/v2/crm/people", 401, None),
        ("PATCH", "/v2/crm/people/{id}", 401, None),
        ("POST", "/cdp/v1/users", 413, 1234),
        ("POST", None, 401, None),
        ("GET", "/v2/crm/people/{id}", 404, 1234),
        ("GET", "/v2/crm/people/{id}", 429, 1234),
        ("POST", "/cdp/v1/users", 429, 1234),
    ]
    assert all(
        SECRET_EMAIL not in JsonFormatter().format(r)
        for r in caplog.records
        if r.name.startswith("profilehub")
    )
    counted = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "profilehub_http_requests_total"
    }
    assert counted[("POST", "/cdp/v1/users", "401")] == 1
    assert counted[("POST", "/cdp/v1/users/_bulk", "401")] == 1
    assert counted[("PUT", "/v2/crm/people", "401")] == 1
    assert counted[("POST", "/cdp/v1/users", "413")] == 1
    assert counted[("GET", "/v2/crm/people/{id}", "429")] == 1
    assert counted[("POST", "unmatched", "401")] == 1  # only the path no route serves


# --- `profilehub serve` as a user runs it ---


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PROFILEHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", **extra}


def test_a_taken_port_is_one_clear_error_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(VENV_BIN / "profilehub"), "serve", "--port", str(port)],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stderr.strip() == f"Error: port {port} is in use; choose another with --port"
    assert "http://" not in done.stdout
    assert not (tmp_path / "serve.db").exists()  # refused before the database was made


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PROFILEHUB_LOG_LEVEL", "verbose", "expected debug, info, warning or error, got 'verbose'"),
        ("PROFILEHUB_ACCESS_LOG", "maybe", "expected on or off, got 'maybe'"),
        ("PROFILEHUB_METRICS", "maybe", "expected on or off, got 'maybe'"),  # as every other setting
    ],
)
def test_a_bad_log_setting_is_one_line_naming_its_variable(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    # These two were a usage error naming --log-level / --access-log (options nobody typed), exit 2.
    done = subprocess.run(
        [str(VENV_BIN / "profilehub"), "serve", "--port", str(free_port())],
        env=_env(tmp_path, **{name: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr, done.stdout) == (1, f"Error: {name}: {expected}\n", "")


def test_deliver_takes_the_log_level_serve_takes(tmp_path: Path) -> None:
    # It ignored PROFILEHUB_LOG_LEVEL: a bad value ran on, a good one left its INFO lines on.
    done = subprocess.run(
        [str(VENV_BIN / "profilehub"), "deliver"],
        env=_env(tmp_path, PROFILEHUB_LOG_LEVEL="verbose"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    expected = "Error: PROFILEHUB_LOG_LEVEL: expected debug, info, warning or error, got 'verbose'\n"
    assert (done.returncode, done.stderr, done.stdout) == (1, expected, "")
    # On a new database each: its "created the schema" line is INFO, shown at info, not at warning.
    for level, shown in (("info", True), ("warning", False)):
        folder = tmp_path / level
        folder.mkdir()
        proc = subprocess.Popen(
            [str(VENV_BIN / "profilehub"), "deliver", "--log-level", level],
            env=_env(folder),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        said: list[str] = []
        try:
            while not said or "Ctrl-C stops" not in said[-1]:  # the line it prints once it runs
                line = proc.stderr.readline()
                assert line, said
                said.append(line)
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
        assert any(" INFO " in line and "created the schema" in line for line in said) is shown, said


@pytest.mark.parametrize("access_log", ["default", "off"])
def test_serve_prints_the_docs_url_and_logs_json_lines(tmp_path: Path, access_log: str) -> None:
    port = free_port()
    extra = {"PROFILEHUB_ACCESS_LOG": "0"} if access_log == "off" else {}
    proc = subprocess.Popen(
        [str(VENV_BIN / "profilehub"), "serve", "--port", str(port)],
        env=_env(tmp_path, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-Id": "probe-1"})
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and r.headers["X-Request-Id"] == "probe-1"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/docs" in out
    logged = [json.loads(line) for line in err.splitlines()]  # every stderr line is JSON
    access = [line for line in logged if line["logger"] == "profilehub.access"]
    if access_log == "off":
        assert access == []
    else:
        assert [(a["route"], a["status"], a["request_id"]) for a in access] == [("/healthz", 200, "probe-1")]
