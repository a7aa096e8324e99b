"""Screenshots of every console page for docs/console/, taken in Debian's chromium (Playwright)
from a real ``profilehub serve`` on a throwaway SQLite database with made-up people.

    scripts/console-screenshots            # writes docs/console/*.png
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_people import merged_person  # noqa: E402

from profilehub.auth import CredentialKind, create_credential  # noqa: E402
from profilehub.delivery.endpoints import create_endpoint, set_enabled  # noqa: E402
from profilehub.orgs import create_org  # noqa: E402
from profilehub.store.database import Database  # noqa: E402

OUT = ROOT / "docs" / "console"
ORG_ID = 1234
VIEWPORT = {"width": 1280, "height": 820}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _org(url: str) -> tuple[str, str]:
    db = Database(url)
    try:
        db.write(lambda c: create_org(c, ORG_ID, "Example Ltd", ["EU", "UK"]))
        scopes = "profile.read,profile.write,profile.delete"
        key = db.write(lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, scopes, name="support"))
        token = db.write(
            lambda c: create_credential(c, ORG_ID, CredentialKind.TOKEN, "crm:read,crm:write", name="sales")
        )
        # Loopback addresses where nothing listens: the server's deliveries fail (shown as such)
        # and reach no other machine.
        db.write(lambda c: create_endpoint(c, ORG_ID, "http://127.0.0.1:9/crm-sync", ["profile.merged"]))
        paused = db.write(lambda c: create_endpoint(c, ORG_ID, "http://127.0.0.1:9/warehouse"))
        db.write(lambda c: set_enabled(c, paused.endpoint.endpoint_id, False))
        return key.secret, token.secret
    finally:
        db.close()


def _people(api: httpx.Client, key: str, token: str) -> str:
    person = merged_person(api, key, ORG_ID, merged=4, email="ada.lovelace@example.org")
    # A visitor not yet known to be Ada, for the explain page.
    api.post(
        "/cdp/v1/users",
        json={"orgId": ORG_ID, "region": "EU", "ids": {"ga_clientid": "GA1.2.99.1700000099"}, "upsert": {}},
        headers={"apikey": key, "scopes": "profile.write"},
    ).raise_for_status()
    crm = {"Authorization": f"Bearer {token}"}
    companies = {}
    for name, domain in (("Analytical Engines", "engines.example"), ("Difference Ltd", "difference.example")):
        r = api.put(
            "/v2/crm/companies?matchingAttribute=domain", json={"name": name, "domain": domain}, headers=crm
        )
        companies[domain] = r.json()["company"]["id"]
    for first, last, email, title, domain in (
        ("Grace", "Hopper", "grace@engines.example", "Rear admiral", "engines.example"),
        ("Charles", "Babbage", "charles@difference.example", "Inventor", "difference.example"),
        ("Mary", "Somerville", "mary@engines.example", "Scientist", "engines.example"),
    ):
        r = api.put(
            "/v2/crm/people?matchingAttribute=email",
            json={
                "firstName": first,
                "lastName": last,
                "emails": [email],
                "jobTitle": title,
                "companyId": companies[domain],
            },
            headers=crm,
        )
        r.raise_for_status()
    return str(person["ucid"])


def _shot(page: Page, name: str, full: bool = False) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
    print(f"  docs/console/{name}.png")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/screens.db"
        key, token = _org(url)
        port = _port()
        env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
        server = subprocess.Popen(
            [str(ROOT / ".venv/bin/profilehub"), "serve", "--port", str(port), "--no-access-log"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=30) as api:
                ucid = _people(api, key, token)
            _browse(base, key, token, ucid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _browse(base: str, key: str, token: str, ucid: str) -> None:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(base_url=base, viewport=VIEWPORT)
        page.goto("/console/sign-in")
        _shot(page, "sign-in")
        page.fill("#credential", key)
        page.click("button[type=submit]")
        page.fill("#q", "Ada.Lovelace@Example.org")
        page.click("form.search button[type=submit]")
        _shot(page, "search")
        page.click(f"#results a:has-text('{ucid}')")
        _shot(page, "profile", full=True)
        page.click("text=Identity graph")
        page.wait_for_selector("#graph[data-drawn]")
        _shot(page, "graph")
        page.click("text=Erase…")
        _shot(page, "erase")
        page.click("text=Unmerge…")
        page.check("input[aria-label='unlink ga_clientid GA1.2.p2.1700000000']")
        _shot(page, "unmerge")
        page.click("#unmerge-button")
        _shot(page, "unmerged")
        page.goto("/console/explain")
        page.fill("input[name=value_1]", "ada.lovelace@example.org")
        page.select_option("select[name=id_type_1]", "email")
        page.select_option("select[name=id_type_2]", "ga_clientid")
        page.fill("input[name=value_2]", "GA1.2.99.1700000099")
        page.click("#explain-form button[type=submit]")
        _shot(page, "explain")
        page.goto("/console/admin")
        _shot(page, "org", full=True)
        page.goto("/console/profiles/00000000-0000-4000-8000-000000000000")
        _shot(page, "not-found")
        page.goto("/console/sign-in")
        page.fill("#credential", token)
        page.click("button[type=submit]")
        _shot(page, "crm-people")
        page.click("#people a >> nth=0")
        _shot(page, "crm-person")
        page.goto("/console/companies")
        _shot(page, "crm-companies")
        browser.close()


if __name__ == "__main__":
    main()
