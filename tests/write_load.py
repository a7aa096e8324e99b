"""A write load that keeps its receipts: client threads write new people through a served
profilehub, each write a person of its own, and log every answer. Writes take turns over three
routes: a CDP write and a CDP ``_bulk`` of one (``crm_id`` ``ack-<n>``, attribute ``n``), and a
CRM person create (email ``ack-<n>@load.example``, its id kept from the answer). What was
acknowledged (2xx) must be found later, whatever happened to the server or the database
meanwhile."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.conftest import OrgFixture


@dataclass
class Answer:
    n: int
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    retry_after: str | None = None
    error: str = ""
    crm_id: str = ""  # the created CRM person's id
    at: float = field(default_factory=time.monotonic)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def write_body(org_id: int, n: int) -> dict[str, object]:
    return {
        "orgId": org_id,
        "region": "EU",
        "ids": {"crm_id": f"ack-{n}"},
        "upsert": {"profile": {"n": n, "word": f"w{n}"}},
    }


class WriteLoad:
    """``clients`` threads writing to ``base`` until ``stop()``; ``answers`` in arrival order."""

    def __init__(self, base: str, org: OrgFixture, clients: int = 8, timeout: float = 60) -> None:
        self.base = base
        self._org = org
        self._timeout = timeout
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def start(self) -> WriteLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self._timeout + 30)
            assert not t.is_alive(), "a client is still waiting for an answer"

    def _send(self, client: httpx.Client, n: int) -> Answer:
        org = self._org
        if n % 3 == 2:
            person = {"firstName": f"n{n}", "emails": [f"ack-{n}@load.example"]}
            r = client.post("/v2/crm/people", json=person, headers=org.bearer)
            created = r.json()["person"]["id"] if r.status_code == 201 else ""
            return Answer(n, r.status_code, r.headers.get("retry-after"), r.text[:300], created)
        if n % 3 == 1:
            r = client.post("/cdp/v1/users/_bulk", json=[write_body(org.org_id, n)], headers=org.headers())
            status = r.status_code
            if status == 200 and r.json()[0]["status"] != 200:
                status = r.json()[0]["status"]  # the record's own answer
            return Answer(n, status, r.headers.get("retry-after"), r.text[:300])
        r = client.post("/cdp/v1/users", json=write_body(org.org_id, n), headers=org.headers())
        return Answer(n, r.status_code, r.headers.get("retry-after"), r.text[:300])

    def _client(self) -> None:
        with httpx.Client(base_url=self.base, timeout=self._timeout) as client:
            while not self._stop.is_set():
                n = next(self._numbers)
                try:
                    answer = self._send(client, n)
                except httpx.TransportError as exc:
                    answer = Answer(n, None, error=f"{type(exc).__name__}: {exc}")
                    time.sleep(0.01)  # a dead server refuses at once: do not spin
                with self._lock:
                    self.answers.append(answer)

    def acknowledged(self) -> list[Answer]:
        return [a for a in self.answers if a.acknowledged]

    def wait_for_acks(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} writes acknowledged: {self.answers[-5:]}"
            time.sleep(0.02)


def missing_acknowledged(base: str, org: OrgFixture, answers: list[Answer]) -> list[str]:
    """What is wrong with each acknowledged write as the server at ``base`` finds it (empty: all
    present, one profile or person each, with their attributes)."""
    problems: list[str] = []
    acknowledged = [a.n for a in answers if not a.crm_id]
    with httpx.Client(base_url=base, timeout=60) as client:
        for a in answers:
            if a.crm_id:
                got = client.get(f"/v2/crm/people/{a.crm_id}", headers=org.bearer)
                person = got.json().get("person") if got.status_code == 200 else None
                if person is None or (person["firstName"], person["emails"]) != (
                    f"n{a.n}",
                    [f"ack-{a.n}@load.example"],
                ):
                    problems.append(f"person ack-{a.n}: {got.status_code} {got.text[:200]}")
        for start in range(0, len(acknowledged), 500):
            chunk = acknowledged[start : start + 500]
            found = client.post(
                "/cdp/v1/users/_search",
                json={"orgId": org.org_id, "search": {"crm_id": [f"ack-{n}" for n in chunk]}},
                headers=org.headers("profile.read"),
            )
            assert found.status_code == 200, found.text
            by_n: dict[int, list[dict[str, object]]] = {}
            for profile in found.json():
                by_n.setdefault(int(profile["profile"]["n"]), []).append(profile["profile"])
            for n in chunk:
                profiles = by_n.get(n, [])
                if len(profiles) != 1:
                    problems.append(f"ack-{n}: {len(profiles)} profiles")
                elif {k: profiles[0].get(k) for k in ("n", "word")} != {"n": n, "word": f"w{n}"}:
                    problems.append(f"ack-{n}: attributes {profiles[0]}")
    return problems
