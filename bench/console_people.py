"""People to look at in the console: one person made of many merged profiles, written through the
CDP API (any httpx client: a TestClient, or one talking to a served process).

Profiles that share no primary id are first written apart, each with its own Google Analytics
client id; then one write per profile carries the person's email with that client id, so each
write finds the person (by email) and that profile (by client id) and merges them. Client ids are
secondary ids (limit 5), so the merges are never refused.
"""

from __future__ import annotations

from typing import Any

import httpx

SCOPES = "profile.write"


def _write(client: httpx.Client, apikey: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/cdp/v1/users", json=body, headers={"apikey": apikey, "scopes": SCOPES})
    if r.status_code != 200:
        raise RuntimeError(f"write refused: {r.status_code} {r.text}")
    [profile] = r.json()
    return dict(profile)


def merged_person(
    client: httpx.Client,
    apikey: str,
    org_id: int,
    merged: int,
    email: str,
    tag: str = "p",
    region: str = "EU",
) -> dict[str, Any]:
    """A person whose profile absorbed ``merged`` others; returns the final profile."""
    base = {"orgId": org_id, "region": region}
    cities = ("Lisbon", "Leeds", "Lyon", "Linz", "Lund")
    for i in range(merged + 1):
        _write(
            client,
            apikey,
            {
                **base,
                "ids": {"ga_clientid": f"GA1.2.{tag}{i}.1700000000", "AdId": f"{tag}-ad-{i:04d}"},
                "upsert": {
                    "profile": {"visits": i + 1, "city": cities[i % len(cities)]},
                    "mkt_preferences": {"newsletter": "weekly" if i % 2 else "monthly"},
                },
            },
        )
    person: dict[str, Any] = {}
    for i in range(merged + 1):
        person = _write(
            client,
            apikey,
            {
                **base,
                "ids": {"email": email, "ga_clientid": f"GA1.2.{tag}{i}.1700000000"},
                "upsert": {
                    "profile": {"first_name": "Ada", "last_name": "Lovelace", "plan": "pro"},
                    "consent": {"email": "yes", "sms": "no"},
                },
            },
        )
    return person
