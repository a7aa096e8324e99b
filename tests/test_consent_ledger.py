"""The consent ledger and ``POST /cdp/v1/users/_consent`` over HTTP, both databases: every consent
value written is kept with time, actor and source; answers "as of" a time; the ledger follows
merges and unmerges, is org-isolated, and is erased with the person."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.ingest.cdp import cdp_sink
from tests.cdp_client import Cdp
from tests.conftest import OrgFixture, make_org
from tests.console_client import sign_in

T = 1_700_000_000_000  # in the past: `at` defaults to the wall clock


@pytest.fixture
def ticking(app: FastAPI) -> Iterator[None]:
    """Writes at T + 1000, T + 2000, ...: one distinct, known millisecond each."""
    clock = itertools.count(T + 1000, 1000)
    app.state.profiles.clock = lambda: next(clock)
    yield
    app.state.profiles.clock = None


def _consent(client: TestClient, org: OrgFixture, ucid: str, **extra: Any) -> httpx.Response:
    scopes = extra.pop("scopes", "profile.read")
    body = {"orgId": org.org_id, "region": "EU", "ucid": ucid, **extra}
    return client.post("/cdp/v1/users/_consent", json=body, headers=org.headers(scopes))


def _ledger_rows(app: FastAPI) -> int:
    with app.state.db.read() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM consent_ledger")).scalar_one())


@pytest.mark.usefixtures("ticking")
def test_every_consent_value_is_kept_and_answered_as_of_a_time(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    p = cdp.write({"email": "ann@example.org"}, {"consent": {"email": "yes", "sms": True}})  # T+1000
    cdp.write({"email": "ann@example.org"}, {"consent": {"email": "no"}, "profile": {"x": 1}})  # T+2000
    r = client.post(  # T+3000, by the bulk endpoint
        "/cdp/v1/users/_bulk",
        json=[
            {
                "orgId": org.org_id,
                "region": "EU",
                "ids": {"email": "ann@example.org"},
                "upsert": {"consent": {"sms": None}},
            }
        ],
        headers=org.headers("profile.write"),
    )
    assert r.status_code == 200 and r.json()[0]["status"] == 200, r.text
    cdp_sink(app.state.profiles, org.org_id, "EU", "import:consent.ndjson")(  # T+4000, an import
        [{"ids": {"email": "ann@example.org"}, "upsert": {"consent": {"email": "Yes"}}}]
    )

    now = _consent(client, org, p["ucid"])
    assert now.status_code == 200, now.text
    answer = now.json()
    assert answer["ucid"] == p["ucid"] and answer["consent"] == {"email": "Yes"}
    actor = answer["history"][0]["actor"]
    assert actor.startswith("apikey:")
    assert answer["history"] == [
        {"attribute": "email", "value": "yes", "ts": T + 1000, "actor": actor, "source": "api"},
        {"attribute": "sms", "value": True, "ts": T + 1000, "actor": actor, "source": "api"},
        {"attribute": "email", "value": "no", "ts": T + 2000, "actor": actor, "source": "api"},
        {"attribute": "sms", "value": None, "ts": T + 3000, "actor": actor, "source": "bulk"},
        {
            "attribute": "email",
            "value": "Yes",
            "ts": T + 4000,
            "actor": "import:consent.ndjson",
            "source": "import",
        },
    ]
    as_of = {
        at: _consent(client, org, p["ucid"], at=at).json() for at in (T + 999, T + 1000, T + 2500, T + 3000)
    }
    assert as_of[T + 999] == {"ucid": p["ucid"], "consent": {}, "history": []}
    assert as_of[T + 1000]["consent"] == {"email": "yes", "sms": True}
    assert as_of[T + 2500]["consent"] == {"email": "no", "sms": True}
    assert as_of[T + 3000]["consent"] == {"email": "no"} and len(as_of[T + 3000]["history"]) == 4


@pytest.mark.usefixtures("ticking")
def test_the_ledger_follows_the_person_through_a_merge_and_an_unmerge(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a = cdp.write({"email": "ann@example.org"}, {"consent": {"email": "no"}})  # T+1000
    b = cdp.write({"crm_id": "crm-1"}, {"consent": {"email": "yes", "sms": "yes"}})  # T+2000
    cdp.write({"email": "ann@example.org", "crm_id": "crm-1"})  # T+3000: B merges into A, "no" kept
    by_b = _consent(client, org, b["ucid"]).json()  # any ucid of the person answers the person
    assert by_b["ucid"] == a["ucid"] and by_b["consent"] == {"email": "no", "sms": "yes"}
    assert [(e["attribute"], e["value"], e["ts"], e["source"]) for e in by_b["history"]] == [
        ("email", "no", T + 1000, "api"),
        ("email", "yes", T + 2000, "api"),  # B's own, before the merge
        ("sms", "yes", T + 2000, "api"),
        ("sms", "yes", T + 3000, "merge"),  # what the merge brought to A
    ]
    # Before the merge, the person's consent is what its master held then.
    assert _consent(client, org, b["ucid"], at=T + 2000).json()["consent"] == {"email": "no"}
    # The console's profile page shows the same ledger, newest first.
    sign_in(client, org.apikey)
    page = client.get(f"/console/profiles/{b['ucid']}").text
    assert page.count('id="consent-ledger"') == 1 and "Linked ucids (1)" in page  # the whole page
    section = page.split('id="consent-ledger"', 1)[1].split("</section>", 1)[0]
    rows = [r.split("</tr>", 1)[0] for r in section.split("<tr><td")[1:]]
    assert [("merge" in r, "sms" in r, b["ucid"][-12:] in r) for r in rows] == [
        (True, True, False),
        (False, True, True),  # B's own entries, marked with B's ucid
        (False, False, True),
        (False, False, False),
    ]

    r = client.post(
        "/cdp/v1/users/_unmerge",
        json={"orgId": org.org_id, "region": "EU", "ucid": a["ucid"], "ids": {"crm_id": ["crm-1"]}},
        headers=org.headers("profile.write"),
    )
    assert r.status_code == 200, r.text
    again_b = _consent(client, org, b["ucid"]).json()
    again_a = _consent(client, org, a["ucid"]).json()
    assert again_b["ucid"] == b["ucid"] and again_b["consent"] == {"email": "yes", "sms": "yes"}
    assert again_a["consent"] == {"email": "no"}
    assert [e["source"] for e in again_a["history"] + again_b["history"]] == ["api", "api", "api"]


def test_the_ledger_is_erased_with_the_person(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a = cdp.write({"email": "ann@example.org"}, {"consent": {"email": "no"}})
    b = cdp.write({"crm_id": "crm-1"}, {"consent": {"email": "yes"}})
    cdp.write({"email": "ann@example.org", "crm_id": "crm-1"})
    other = cdp.write({"crm_id": "crm-2"}, {"consent": {"email": "yes"}})
    before = _ledger_rows(app)
    cdp.delete({"email": ["ann@example.org"]})
    for ucid in (a["ucid"], b["ucid"]):
        gone = _consent(client, org, ucid)
        assert gone.status_code == 404 and gone.json()["errors"] == {"ucid": gone.json()["message"]}
    assert _ledger_rows(app) == before - 2  # the other person's entry stays
    assert _consent(client, org, other["ucid"]).json()["consent"] == {"email": "yes"}


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"ucid": "not-a-ucid"}, 400, "ucid"),
        ({"at": "yesterday"}, 400, "at"),
        ({"at": -1}, 400, "at"),
        ({"at": True}, 400, "at"),
        ({"region": "US"}, 400, "region"),
        ({"orgId": "1234"}, 400, "orgId"),
        ({"extra": 1}, 400, "extra"),
        ({"ucid": "00000000-0000-4000-8000-0000000000ff"}, 404, "ucid"),
        ({"region": "UK"}, 404, "ucid"),  # the person is in EU
        ({"orgId": 999}, 403, "orgId"),
        ({"scopes": "profile.write"}, 403, None),
    ],
)
def test_bad_consent_requests_name_the_field(
    app: FastAPI, client: TestClient, change: dict[str, Any], status: int, field: str | None
) -> None:
    org = make_org(app.state.db)
    p = Cdp(client, org).write({"email": "ann@example.org"}, {"consent": {"email": "no"}})
    body = {"ucid": p["ucid"], **change}
    r = _consent(client, org, body.pop("ucid"), **body)
    assert r.status_code == status, r.text
    if field is not None:
        assert field in r.json()["errors"], r.text
