"""A few words for the CDP tests: write, search and delete through the HTTP API."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import OrgFixture


class Cdp:
    def __init__(self, client: TestClient, org: OrgFixture) -> None:
        self.client = client
        self.org = org
        self.last_notices: list[dict[str, Any]] = []

    def write(
        self,
        ids: dict[str, Any] | None = None,
        upsert: dict[str, Any] | None = None,
        region: str = "EU",
        ucid: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "orgId": self.org.org_id,
            "region": region,
            "ids": ids or {},
            "upsert": upsert or {},
        }
        if ucid:
            body["ucid"] = ucid
        r = self.client.post("/cdp/v1/users", json=body, headers=self.org.headers())
        assert r.status_code == 200, r.text
        self.last_notices = json.loads(r.headers.get("X-Profilehub-Notices", "[]"))
        [profile] = r.json()
        return dict(profile)

    def notice_codes(self) -> list[str]:
        return [n["code"] for n in self.last_notices]

    def search(self, search: dict[str, list[Any]], regions: list[str] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"orgId": self.org.org_id, "search": search}
        if regions:
            body["regions"] = regions
        r = self.client.post("/cdp/v1/users/_search", json=body, headers=self.org.headers())
        assert r.status_code == 200, r.text
        return list(r.json())

    def delete(self, ids: dict[str, list[Any]], region: str = "EU") -> dict[str, Any]:
        r = self.client.post(
            "/cdp/v1/users/_delete",
            json={"orgId": self.org.org_id, "region": region, "ids": ids},
            headers=self.org.headers(),
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


def id_values(profile: dict[str, Any], id_type: str) -> list[str]:
    return [
        rec[id_type]
        for recs in profile["ids"].values()
        if isinstance(recs, list)
        for rec in recs
        if isinstance(rec, dict) and id_type in rec
    ]
