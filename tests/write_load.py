"""A write load that keeps its receipts: client threads write new people through a served
profilehub, each write a person of its own (``crm_id`` ``ack-<n>``, attribute ``n``), and log
every answer. What was acknowledged (2xx) must be found later, whatever happened to the server or
the database meanwhile."""

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
    at: float = field(default_factory=time.monotonic)


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

    def _client(self) -> None:
        headers = {**self._org.headers(), "Content-Type": "application/json"}
        with httpx.Client(base_url=self.base, timeout=self._timeout) as client:
            while not self._stop.is_set():
                n = next(self._numbers)
                try:
                    r = client.post("/cdp/v1/users", json=write_body(self._org.org_id, n), headers=headers)
                    answer = Answer(n, r.status_code, r.headers.get("retry-after"), r.text[:300])
                except httpx.TransportError as exc:
                    answer = Answer(n, None, error=f"{type(exc).__name__}: {exc}")
                    time.sleep(0.01)  # a dead server refuses at once: do not spin
                with self._lock:
                    self.answers.append(answer)

    def acknowledged(self) -> list[int]:
        return [a.n for a in self.answers if a.status is not None and 200 <= a.status < 300]

    def wait_for_acks(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} writes acknowledged: {self.answers[-5:]}"
            time.sleep(0.02)


def missing_acknowledged(base: str, org: OrgFixture, acknowledged: list[int]) -> list[str]:
    """What is wrong with each acknowledged write as the server at ``base`` finds it (empty: all
    present, one profile each, with their attributes)."""
    problems: list[str] = []
    with httpx.Client(base_url=base, timeout=60) as client:
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
