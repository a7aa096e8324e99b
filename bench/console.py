"""How long the console takes to answer the profile page of a person with many merged profiles.

A fresh database gets one person whose profile absorbed ``--merged`` others (bench.console_people:
each merge a write through the CDP API), then the app answers ``GET /console/profiles/{ucid}``
(and the graph page) ``--requests`` times in-process: the whole ASGI stack (middlewares, session
lookup, profile read, history and merge causes, template), no socket, so the figure is the
server's own time. The same-run baseline is ``GET /cdp/v1/users/{ucid}``, the API's read of the
same person. The goal is a profile page under 200 ms with 50 merged profiles.

    .venv/bin/python -m bench.console [--backend sqlite|postgres] [--merged 50] [--requests 50]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from fastapi.testclient import TestClient

from bench.backends import fresh_database
from bench.console_people import merged_person
from bench.machine import command_line, exclusive_run, load_note
from profilehub.app import create_app
from profilehub.auth import CredentialKind, create_credential
from profilehub.config import Settings
from profilehub.orgs import create_org

OUT = Path(__file__).resolve().parent / "out"
ORG_ID = 4242
GOAL_MS = 200.0


def _timed(client: TestClient, path: str, requests: int, **headers: str) -> list[float]:
    client.get(path, headers=headers)  # warm: templates compiled, caches filled
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        r = client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")
    return times


def _line(name: str, times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1]
    return f"  {name:<34} median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms   max {max(times):7.1f} ms"


def run(backend: str, merged: int, requests: int) -> None:
    OUT.mkdir(exist_ok=True)
    with fresh_database(backend, OUT) as url:
        app = create_app(Settings(database_url=url))
        db = app.state.db
        db.write(lambda c: create_org(c, ORG_ID, "bench", ["EU"]))
        key = db.write(
            lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, "profile.read,profile.write")
        ).secret
        with TestClient(app) as client:
            started = time.perf_counter()
            person = merged_person(client, key, ORG_ID, merged, "bench.person@example.org")
            made = time.perf_counter() - started
            ucid = person["ucid"]
            linked = len(person["ids"]["linkedUcid"])
            form = client.get("/console/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            client.post("/console/sign-in", data={"credential": key, "csrf": token.group(1)})
            api = _timed(
                client, f"/cdp/v1/users/{ucid}?orgId={ORG_ID}", requests, apikey=key, scopes="profile.read"
            )
            page = _timed(client, f"/console/profiles/{ucid}", requests)
            graph = _timed(client, f"/console/profiles/{ucid}/graph", requests)
        db.close()
    print(f"bench.console on {backend}: one person with {linked} merged profiles ({made:.1f} s to write)")
    print(f"  {load_note()}")
    print(_line("baseline GET /cdp/v1/users/{ucid}", api))
    print(_line("GET /console/profiles/{ucid}", page))
    print(_line("GET /console/profiles/{ucid}/graph", graph))
    verdict = "meets" if statistics.median(page) < GOAL_MS else "MISSES"
    print(f"  profile page {verdict} the {GOAL_MS:.0f} ms goal ({requests} requests each, in-process)")
    print(
        f"  reproduce: .venv/bin/python -m bench.console --backend {backend} --merged {merged} --requests {requests}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--merged", type=int, default=50)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with exclusive_run(command_line()):
        for backend in args.backend or ["sqlite", "postgres"]:
            run(backend, args.merged, args.requests)


if __name__ == "__main__":
    main()
