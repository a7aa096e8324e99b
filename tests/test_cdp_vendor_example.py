"""The vendor page's example, sent verbatim, gets an answer of the documented shape."""

from __future__ import annotations

from fastapi.testclient import TestClient

from profilehub.cdp.models import VENDOR_EXAMPLE
from tests.conftest import OrgFixture


def test_vendor_example_verbatim_gets_documented_shape(client: TestClient, org: OrgFixture) -> None:
    r = client.post("/cdp/v1/users", json=VENDOR_EXAMPLE, headers=org.headers())
    assert r.status_code == 200, r.text
    [profile] = r.json()
    assert set(profile) == {
        "ucid",
        "region",
        "created_ts",
        "updated_ts",
        "profile",
        "mkt_preferences",
        "consent",
        "ids",
    }
    assert isinstance(profile["created_ts"], int) and isinstance(profile["updated_ts"], int)
    assert profile["region"] == "EU"
    assert profile["profile"]["user_gender"] == "M"
    assert profile["mkt_preferences"]["sms_optin"] == "yes"
    assert profile["consent"]["gdpr_advertising"] == "yes"
    for category in ("profile", "mkt_preferences", "consent"):
        assert profile[category]["_ts"] == str(profile["updated_ts"])
    [email] = profile["ids"]["email"]
    assert email == {"email_sha256_lowercase": "0a0601cfc9d014580fcf0b0", "_ts": str(profile["updated_ts"])}
    assert profile["ids"]["linkedUcid"] == []
    # The unknown ucid of the example is reported, not fatal: the write resolved by its ids.
    assert "ucid_not_found" in r.headers["X-Profilehub-Notices"]


def test_vendor_example_twice_updates_the_same_profile(client: TestClient, org: OrgFixture) -> None:
    first = client.post("/cdp/v1/users", json=VENDOR_EXAMPLE, headers=org.headers()).json()[0]
    again = client.post("/cdp/v1/users", json=VENDOR_EXAMPLE, headers=org.headers()).json()[0]
    assert again["ucid"] == first["ucid"]
    assert again["created_ts"] == first["created_ts"]
