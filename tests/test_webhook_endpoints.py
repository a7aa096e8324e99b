"""Managing webhook endpoints: `profilehub webhook …` and the admin HTTP API, bad input included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.cli import main
from profilehub.config import Settings
from tests.conftest import assert_error, make_org, migrated_url

ADMIN = "admin-token-for-tests"


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", migrated_url(database_url))
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> tuple[str, str]:
        result = runner.invoke(main, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.stdout, result.output

    invoke("org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU")
    return invoke


def test_create_prints_the_id_then_the_secret_last_and_list_shows_the_state(run) -> None:  # type: ignore[no-untyped-def]
    out, _ = run(
        "webhook",
        "create",
        "--org-id",
        "1234",
        "--url",
        "https://hooks.example.com/in",
        "--event",
        "profile.created",
    )
    lines = out.strip().splitlines()
    assert lines[0].startswith("wh_1234_") and lines[-1].startswith("whsec_")
    endpoint_id = lines[0]
    listed, _ = run("webhook", "list", "--org-id", "1234")
    assert endpoint_id in listed and "hooks.example.com" in listed and "enabled" in listed
    assert lines[-1] not in listed, "the secret is shown once"

    out, _ = run("webhook", "disable", "--id", endpoint_id)
    assert "disabled" in out
    listed, _ = run("webhook", "list", "--org-id", "1234")
    assert "disabled since" in listed and "disabled by cli" in listed
    assert "enabled" in run("webhook", "enable", "--id", endpoint_id)[0]
    assert "replaying the events after 0" in run("webhook", "replay", "--id", endpoint_id, "--after", "0")[0]
    run("webhook", "delete", "--id", endpoint_id)
    assert endpoint_id not in run("webhook", "list", "--org-id", "1234")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("webhook", "create", "--org-id", "1234", "--url", "ftp://example.com/x"),
            "url: 'ftp://example.com/x' must",
        ),
        (("webhook", "create", "--org-id", "1234", "--url", "https://"), "url: 'https://' has no host"),
        (("webhook", "create", "--org-id", "1234", "--url", "example.com/hook"), "url:"),
        (
            ("webhook", "create", "--org-id", "1234", "--url", "http://127.0.0.1:65536/hook"),
            "port 65536: a port is 1 to 65535",
        ),
        (
            (
                "webhook",
                "create",
                "--org-id",
                "1234",
                "--url",
                "https://x.example",
                "--event",
                "profile.exploded",
            ),
            "events: unknown event type(s) 'profile.exploded'",
        ),
        (("webhook", "create", "--org-id", "999", "--url", "https://x.example"), "unknown org 999"),
        (("webhook", "disable", "--id", "wh_1234_000000000000"), "no webhook endpoint"),
        (("webhook", "enable", "--id", "nope"), "is not a webhook endpoint id"),
        (("webhook", "replay", "--id", "wh_1234_000000000000", "--after", "abc"), "--after"),
    ],
)
def test_bad_input_is_a_clear_cli_error(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    _, output = run(*args, ok=False)
    assert message in output
    assert "Traceback" not in output


@pytest.fixture
def admin_app(database_url: str) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=migrated_url(database_url), admin_token=ADMIN))
    make_org(app.state.db)
    yield app
    app.state.db.close()


def test_the_admin_api_manages_endpoints(admin_app: FastAPI) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(admin_app) as client:
        r = client.post(
            "/admin/v1/webhooks",
            json={"orgId": 1234, "url": "http://127.0.0.1:9/in", "events": ["person.created"]},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        made = r.json()
        endpoint_id = made["webhook"]["id"]
        assert made["secret"].startswith("whsec_") and made["webhook"]["events"] == ["person.created"]
        listed = client.get("/admin/v1/webhooks", params={"orgId": 1234}, headers=auth).json()["webhooks"]
        assert [w["id"] for w in listed] == [endpoint_id] and "secret" not in listed[0]
        r = client.post(f"/admin/v1/webhooks/{endpoint_id}/disable", headers=auth)
        assert r.json()["webhook"]["state"] == "disabled"
        r = client.post(f"/admin/v1/webhooks/{endpoint_id}/enable", headers=auth)
        assert r.json()["webhook"]["state"] == "enabled"
        r = client.post(f"/admin/v1/webhooks/{endpoint_id}/replay", json={"after": "0"}, headers=auth)
        assert r.status_code == 200 and r.json()["webhook"]["cursor"] == "0"
        assert client.delete(f"/admin/v1/webhooks/{endpoint_id}", headers=auth).status_code == 200
        assert_error(client.get(f"/admin/v1/webhooks/{endpoint_id}", headers=auth), 404, "id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"orgId": 1234, "url": "mailto:someone@example.com"}, "url"),
        ({"orgId": 1234, "url": "http:///path-only"}, "url"),
        ({"orgId": 1234, "url": "http://127.0.0.1:99999/in"}, "url"),
        ({"orgId": 1234, "url": "http://127.0.0.1:0/in"}, "url"),
        ({"orgId": 1234, "url": "https://x.example", "events": ["profile.created", "nope"]}, "events"),
        ({"orgId": 1234, "url": "https://x.example", "secret": "mine"}, "secret"),
        ({"orgId": 4321, "url": "https://x.example"}, "orgId"),
    ],
)
def test_bad_admin_input_is_a_4xx_naming_the_field(
    admin_app: FastAPI, body: dict[str, object], field: str
) -> None:
    with TestClient(admin_app) as client:
        r = client.post("/admin/v1/webhooks", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
        assert_error(r, 404 if field == "orgId" else 400, field)
        listed = client.get(
            "/admin/v1/webhooks", params={"orgId": 1234}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert listed.json()["webhooks"] == [], "nothing was written"


def test_the_admin_api_needs_the_admin_token(admin_app: FastAPI, database_url: str) -> None:
    org = make_org(admin_app.state.db, org_id=77)
    with TestClient(admin_app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {org.token}"}):
            assert_error(
                client.get("/admin/v1/webhooks", params={"orgId": 77}, headers=headers), 401, "Authorization"
            )
    off = create_app(Settings(database_url=database_url))
    try:
        with TestClient(off) as client:
            r = client.get(
                "/admin/v1/webhooks", params={"orgId": 77}, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert "PROFILEHUB_ADMIN_TOKEN" in assert_error(r, 401, "Authorization")["message"]
    finally:
        off.state.db.close()


def test_metrics_show_each_endpoints_backlog(admin_app: FastAPI) -> None:
    """Nothing delivers here (no deliverer runs): every write adds to the endpoint's backlog."""
    org = make_org(admin_app.state.db, org_id=55)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(admin_app) as client:
        made = client.post(
            "/admin/v1/webhooks", json={"orgId": 55, "url": "http://127.0.0.1:9/in"}, headers=auth
        )
        endpoint_id = made.json()["webhook"]["id"]
        for n in range(3):
            body = {"orgId": 55, "region": "EU", "ids": {"crm_id": f"M-{n}"}, "upsert": {"profile": {"n": n}}}
            assert client.post("/cdp/v1/users", json=body, headers=org.headers()).status_code == 200
        text = client.get("/metrics").text
    assert f'profilehub_webhook_backlog_events{{endpoint="{endpoint_id}"}} 3.0' in text


def test_pending_counts_the_types_an_endpoint_takes_and_the_backlog_every_type(admin_app: FastAPI) -> None:
    """An endpoint's `pending` is what it will be sent; its /metrics backlog what its deliverer still
    has to read, other types included."""
    org = make_org(admin_app.state.db, org_id=56)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(admin_app) as client:
        made = {
            name: client.post(
                "/admin/v1/webhooks",
                json={"orgId": 56, "url": f"http://127.0.0.1:9/{name}", "events": events},
                headers=auth,
            ).json()["webhook"]["id"]
            for name, events in (("all", []), ("merges", ["profile.merged"]))
        }
        for n in range(2):
            body = {"orgId": 56, "region": "EU", "ids": {"crm_id": f"P-{n}"}, "upsert": {"profile": {"n": n}}}
            assert client.post("/cdp/v1/users", json=body, headers=org.headers()).status_code == 200
        listed = client.get("/admin/v1/webhooks", params={"orgId": 56}, headers=auth).json()["webhooks"]
        one = client.get(f"/admin/v1/webhooks/{made['merges']}", headers=auth).json()["webhook"]
        text = client.get("/metrics").text
    assert {w["id"]: w["pending"] for w in listed} == {made["all"]: 2, made["merges"]: 0}
    assert one["pending"] == 0
    for endpoint_id in made.values():
        assert f'profilehub_webhook_backlog_events{{endpoint="{endpoint_id}"}} 2.0' in text


def test_a_replay_past_the_cursor_is_refused_and_moves_nothing(admin_app: FastAPI) -> None:
    """A replay "after" an id the endpoint has not reached would skip the events in between, and
    past the org's newest event every event committed from now up to that id: refused."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(admin_app) as client:
        made = client.post(
            "/admin/v1/webhooks", json={"orgId": 1234, "url": "http://127.0.0.1:9/in"}, headers=auth
        ).json()["webhook"]
        r = client.post(f"/admin/v1/webhooks/{made['id']}/replay", json={"after": "99999"}, headers=auth)
        assert "cursor" in assert_error(r, 400, "after")["message"]
        got = client.get(f"/admin/v1/webhooks/{made['id']}", headers=auth).json()["webhook"]
        assert got["cursor"] == made["cursor"]
        r = client.post(
            f"/admin/v1/webhooks/{made['id']}/replay", json={"after": made["cursor"]}, headers=auth
        )
        assert r.status_code == 200, r.text
